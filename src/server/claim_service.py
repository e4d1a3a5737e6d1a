"""ClaimService (DOMAIN.md §6) in the writer process (`onshi ingest-serve`), beside ingestion.

VerifyClaims is a bidirectional stream on the writer process's grpc.aio server: the
handler (an async generator on the event loop) reads one batch, has it verified
on a pool thread and yields its verdicts. gRPC asks for the next verdicts only
after the previous message went to the transport, which hands it over only
within the HTTP/2 flow-control window, so a client that reads slowly stops the
handler from reading further batches: at most one batch being verified plus
the transport windows are in flight, never an unbounded queue
(tests/test_claims_server.py checks it with a slow reader).

Nothing outlives the call: the caller is read from the call once, at its
start, and passed on (to the access log); the pool thread gets bytes and the
caller, never the call's context (grpc.aio releases the call when the caller
cancels; a thread asking it for the peer then would crash the process); and a
cancelled stream's batch stops at the next step, so its thread is back in the
pool at once. (gRPC's bridge for sync generator handlers on grpc.aio kept one
pool thread per cancelled stream blocked for good.)

Review-body streams are recorded in the ledger (onshi.core.claims) for
Apportion by the group committer, behind the verdicts (_Recording: the stream's
OK status waits for every commit); a facility's pre-submission check is not
recorded. Each batch may be split between this process and claim helper
processes (claim_helpers).

VerifyClaims is registered on serialized bytes (add_to_server): the batch is
parsed, verified and serialized by the verifier, so nothing is decoded twice.
"""

from __future__ import annotations

import asyncio
import threading
from collections import defaultdict
from concurrent import futures
from typing import TYPE_CHECKING

import grpc

from ..core import claims as rules
from ..core import store
from ..core.pure import PureEngine
from ..core.writer import StoreFull
from ..v1 import claims_pb2
from . import access_log, auth, claim_helpers
from .errors import StatusError, bad_request_status, refused

if TYPE_CHECKING:  # the writer process imports this module
    from .writer_server import GroupWriter

SERVICE_NAME = claims_pb2.DESCRIPTOR.services_by_name["ClaimService"].full_name
FACILITY_KEY = "x-onshi-facility"
# Threads verifying batches (and waiting for their ledger commits), shared by
# every stream; a stream has at most one batch on them at a time.
VERIFY_THREADS = 8
MIN_MONTH = 1_01  # year 1 month 1 .. year 9999 month 12, as YYYYMM
MAX_MONTH = 9999_12


# --- who is calling ------------------------------------------------------------


def caller_facility(caller: auth.Caller | None, context) -> str | None:
    """The facility code of a facility caller (pre-submission check), or None for
    a review body: the mTLS identity, or on a plaintext server (no trust
    options, or --insecure-dev) the x-onshi-facility metadata. Raises AuthError
    or StatusError."""
    if caller is not None and caller.via_tls:
        return auth.caller_facility(caller, context) if caller.role == auth.FACILITY else None
    for key, value in context.invocation_metadata() or ():
        if key == FACILITY_KEY:
            code = value.strip() if isinstance(value, str) else ""
            if len(code) != 10 or not code.isdigit():
                raise StatusError(bad_request_status([(FACILITY_KEY, "must be a 10-digit facility code")]))
            return code
    return None


def engine_beside(writer):
    """The read engine inside the writer's process: it must read through the
    writer's own LMDB environment. LMDB allows one environment per path per
    process: a second open takes the lock file as if no one else held it (fcntl
    locks are per process) and closing either drops every lock the process holds,
    so readers elsewhere could lose their slots. So no native engine here: the
    claim helpers (claim_helpers), each with its own environment, use the other cores."""
    return PureEngine.over_env(writer.env)


# --- the servicer ------------------------------------------------------------------


class ClaimServicer:
    """VerifyClaims works on serialized batches (see add_to_server); Apportion on messages."""

    def __init__(self, writer, engine=None, log=None):
        """`log`: the access log (onshi.core.audit.AuditLog), if the trust layer has one."""
        self.writer = writer
        self.log = log
        # The engine reads the same files the writer writes; it stays open for the
        # process's lifetime (closing a second LMDB env in a process drops the
        # process's lock-file locks, so it is only closed with the writer).
        self.engine = engine if engine is not None else engine_beside(writer)
        self.verifier = rules.Verifier(self.engine, writer.env)
        # Each batch is split between this process and helper processes (claim_helpers).
        self.helpers = claim_helpers.Helpers(writer.path, self.verifier)
        self.record_db = rules.open_ledger(writer)
        self.pool = futures.ThreadPoolExecutor(VERIFY_THREADS, thread_name_prefix="onshi-claims")
        self.batches_verified = 0

    async def VerifyClaims(self, request_iterator, context):
        """Raw handler: serialized VerifyClaimsRequest in, serialized response out.

        While batch i's verdicts are being sent (context.write waits for the
        transport), batch i+1 is read and verified: one send in flight at a
        time, in order."""
        caller = auth.caller_if_any(context)  # the call's context is read here only
        facility = caller_facility(caller, context)
        loop = asyncio.get_running_loop()
        recording = _Recording(self.writer, self.record_db) if facility is None else None
        ended = threading.Event()  # the call is over: a batch still on a thread stops there
        sending = None
        try:
            async for raw in request_iterator:
                try:
                    if recording is not None and recording.error is not None:
                        raise _unrecorded(recording.error)
                    response = await loop.run_in_executor(
                        self.pool, self._batch, raw, facility, recording, caller, ended
                    )
                finally:  # the verdicts before go out before this batch's answer or error status
                    if sending is not None:
                        sending, previous = None, sending
                        await previous
                sending = asyncio.ensure_future(context.write(response))
            if sending is not None:
                sending, previous = None, sending
                await previous
            # The stream ends OK only once every verdict it carried is durably recorded.
            if recording is not None and await loop.run_in_executor(self.pool, recording.wait_all) is not None:
                raise _unrecorded(recording.error)
        finally:
            ended.set()
            if sending is not None:
                sending.cancel()
            if recording is not None:  # ended early (an abort, a cancelled call): record what was answered
                recording.close()

    def _batch(
        self,
        raw: bytes,
        facility: str | None,
        recording: _Recording | None,
        caller: auth.Caller | None,
        ended: threading.Event,
    ) -> bytes:
        """On a pool thread: verify, queue the ledger rows, write the access log;
        the verdicts (or StatusError). Never touches the call."""
        result = self.helpers.verify(raw, facility, recording is not None)
        kind = result[0]
        if kind == "denied":
            raise refused(grpc.StatusCode.PERMISSION_DENIED, result[1])
        if kind == "invalid":
            raise StatusError(bad_request_status(result[1], "invalid claim batch"))
        _, response, items, outcomes = result
        if ended.is_set():  # cancelled meanwhile: nobody receives these verdicts
            return response
        if recording is not None and items:
            try:
                recording.put(items)
            except Exception as exc:  # noqa: BLE001 - an earlier batch's commit failed
                raise _unrecorded(exc) from None
        if self.log is not None:  # whom each claim is about: read from the request here (a helper verified it)
            access_log.write_claims(self.log, caller, claims_pb2.VerifyClaimsRequest.FromString(raw).claims, outcomes)
        self.batches_verified += 1
        return response

    async def Apportion(self, request, context):
        violations = []
        code = request.facility_code.strip()
        if len(code) != 10 or not code.isdigit():
            violations.append(("facility_code", "must be 10 digits"))
        months = []
        for name in ("first_month", "last_month"):
            m = getattr(request, name)
            month = m.year * 100 + m.month
            if not request.HasField(name) or not (1 <= m.month <= 12) or not MIN_MONTH <= month <= MAX_MONTH:
                violations.append((name, "required: year (1-9999) and month (day ignored)"))
            months.append(month)
        if not violations and months[0] > months[1]:
            violations.append(("last_month", "must not be before first_month"))
        if violations:
            raise StatusError(bad_request_status(violations))
        loop = asyncio.get_running_loop()
        unresolved_points, unresolved_claims, paid = await loop.run_in_executor(
            self.pool, self.totals, code, months[0], months[1]
        )
        if unresolved_points and not paid:
            raise refused(
                grpc.StatusCode.FAILED_PRECONDITION,
                "no recorded payments to this facility in the period to apportion by",
            )
        response = claims_pb2.ApportionResponse(
            unresolved_points=unresolved_points, unresolved_claims=unresolved_claims, paid_points=sum(paid.values())
        )
        for insurer, paid_points, share in rules.apportion(unresolved_points, paid):
            response.shares.add(insurer_number=insurer, paid_points=paid_points, share_points=share)
        return response

    # -- the ledger ---------------------------------------------------------------
    def totals(self, facility_code: str, first_month: int, last_month: int) -> tuple[int, int, dict[str, int]]:
        """(unresolved points, unresolved claims, paid points per insurer) of the
        facility's recorded claims in the months: one range scan, each claim's
        last recorded entry counted (onshi.core.claims, the ledger)."""
        start = rules.month_prefix(facility_code, first_month)
        stop = rules.month_prefix(facility_code, last_month + 1)
        latest: dict[tuple[bytes, bytes], bytes] = {}  # (month, claim ID) -> payers
        with self.writer.env.begin() as txn:
            cursor = txn.cursor(db=self.record_db)
            if cursor.set_range(start):
                for key, value in cursor:
                    if key >= stop:
                        break
                    month = key[len(start) - 4 : len(start)]
                    for claim_id, payers in rules.unpack_entries(value):
                        latest[month, claim_id] = payers
        unresolved_points = unresolved_claims = 0
        paid: dict[str, int] = defaultdict(int)
        for payers in latest.values():
            for insurer, points in rules.decode_payers(payers):
                if insurer == rules.UNRESOLVED_INSURER:
                    unresolved_points += points
                    unresolved_claims += 1
                else:
                    paid[insurer] += points
        return unresolved_points, unresolved_claims, dict(paid)


def _unrecorded(exc: BaseException) -> StatusError:
    if isinstance(exc, StoreFull):
        return refused(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            f"store full: the verdicts of this stream from the first unrecorded batch on were "
            f"not recorded; send them again ({exc})",
        )
    return refused(grpc.StatusCode.UNAVAILABLE, f"recording the verdicts failed; send them again ({exc})")


class _Recording:
    """One review stream's ledger rows, written by the group committer behind the
    verdicts: one job per batch (one value per facility-month, onshi.core.claims),
    handed over BATCHES_PER_COMMIT at a time so that they share one transaction:
    its pages are the same few hundred facility-month leaves whether it holds one
    batch or four, so each claim costs a quarter of the page writes and fsyncs.

    Contract: the stream's final OK is sent only after every job committed; a
    failed job fails the stream (RESOURCE_EXHAUSTED when the store is full), and
    since the committer commits the longest prefix of jobs that fits, what is
    recorded is always whole batches from the stream's start. At most
    MAX_UNRECORDED batches are verified ahead of their commit (memory stays
    bounded); a stream that ends early still hands over what it holds (close)."""

    BATCHES_PER_COMMIT = 4
    MAX_UNRECORDED = 8

    def __init__(self, writer: GroupWriter, record_db: object) -> None:
        self.writer = writer
        self.record_db = record_db
        self.error: BaseException | None = None
        self._outstanding = 0  # held here or queued, not yet committed
        self._held: list = []
        self._cv = threading.Condition()

    def put(self, groups: list[tuple[bytes, bytes]]) -> None:
        """Queue a batch's packed ledger values (rules.pack_ledger); raises the
        first failure of an earlier batch."""
        record_db = self.record_db

        def change(t):
            meta = t.dbs["meta"]
            last = t.txn.get(rules.LEDGER_SEQ_KEY, db=meta)
            seq = store.seq_key(store.seq_of(last) + 1 if last else 1)
            t.txn.put(rules.LEDGER_SEQ_KEY, seq, db=meta)
            t.txn.cursor(db=record_db).putmulti([(prefix + seq, entries) for prefix, entries in groups], append=False)

        if getattr(self.writer, "submit_many", None) is None:  # a bare Writer: record in line
            self.writer.apply(change)
            return
        with self._cv:
            while self._outstanding >= self.MAX_UNRECORDED and self.error is None:
                self._cv.wait()
            if self.error is not None:
                raise self.error
            self._outstanding += 1
            self._held.append(change)
            if len(self._held) < self.BATCHES_PER_COMMIT:
                return
        self.close()

    def close(self) -> None:
        """Hand what is held to the committer (in order, in one go)."""
        with self._cv:
            held, self._held = self._held, []
        if held:
            self.writer.submit_many([(change, self._done) for change in held])

    def _done(self, result, exc) -> None:  # on the committer thread, after the commit
        with self._cv:
            self._outstanding -= 1
            if exc is not None and self.error is None:
                self.error = exc
            self._cv.notify_all()

    def wait_all(self) -> BaseException | None:
        """Hand over what is held, block until every batch is committed; the first failure, if any."""
        self.close()
        with self._cv:
            while self._outstanding:
                self._cv.wait()
            return self.error


def add_to_server(server: grpc.Server, writer, trust=None, engine=None) -> list[str]:
    """Register ClaimService (VerifyClaims on serialized bytes: the handler parses
    and serializes itself); returns its service names (for health and
    reflection). `onshi ingest-serve` loads this module; `trust` is its
    trust_setup.IngestTrust, or None."""
    servicer = ClaimServicer(writer, engine, trust.log if trust is not None else None)
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                SERVICE_NAME,
                {
                    "VerifyClaims": grpc.stream_stream_rpc_method_handler(
                        servicer.VerifyClaims, request_deserializer=None, response_serializer=None
                    ),
                    "Apportion": grpc.unary_unary_rpc_method_handler(
                        servicer.Apportion,
                        request_deserializer=claims_pb2.ApportionRequest.FromString,
                        response_serializer=claims_pb2.ApportionResponse.SerializeToString,
                    ),
                },
            ),
        )
    )
    return [SERVICE_NAME]
