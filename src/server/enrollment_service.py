"""EnrollmentService and LinkService (grpc.aio) over the group-committing writer.

A stream's updates are validated here, then queued as jobs for the committer
(onshi.server.writer_server.GroupWriter); each ack goes back only after the
transaction holding its update committed, so an ACCEPTED ack is never ahead of
the disk. Acks leave in request order (rejections wait their turn too), and
the committer hands a stream all of its acks from one commit in one wake-up.
"""

from __future__ import annotations

import asyncio
import functools
import threading
import time

import grpc
import lmdb

from ..core import enrollment, identifiers, registry
from ..core.identifiers import InvalidIdentifier
from ..core.writer import StoreFull
from ..v1 import enrollment_pb2 as pb
from ..v1 import enrollment_pb2_grpc as pb_grpc
from . import auth, handlers
from .access_log import EnrollmentAuditor
from .errors import bad_request_status

INSURER_METADATA = "x-onshi-insurer"
WINDOW = 8192  # updates in flight per stream before we stop reading (backpressure)
MAX_RESIDENTS_PER_CALL = 10_000
MAX_BATCH = 10_000  # updates per StreamUpdateBatches message
JOB_UPDATES = 256  # updates per committer job: per-job costs (queue, callback, wake-up) paid once per slice
DEFAULT_PAGE = 100
MAX_PAGE = 1000
LAST_ID = 2**64 - 1  # the largest uint64: quarantine and notice IDs are numbered below it


class StreamAborted(Exception):
    pass


class CallerRefused(Exception):
    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def caller_insurers(context) -> tuple[auth.Caller | None, frozenset[str]]:
    """Who calls (None on a server without trust options) and the insurer
    number(s) they may write for: under mTLS the certificate's, narrowed by
    x-onshi-insurer; on a plaintext server (or --insecure-dev) the numbers
    declared in metadata x-onshi-insurer (comma-separated)."""
    try:
        caller = auth.caller_if_any(context)
        if caller is not None and caller.via_tls:
            return caller, auth.caller_insurers(caller, context)
    except auth.AuthError as exc:
        raise CallerRefused(exc.code, exc.message) from None
    values = [v for k, v in context.invocation_metadata() if k == INSURER_METADATA]
    if not values:
        raise CallerRefused(
            grpc.StatusCode.UNAUTHENTICATED, f"declare the insurer number(s) in metadata {INSURER_METADATA}"
        )
    out = set()
    for part in ",".join(values).split(","):
        try:
            out.add(identifiers.normalize_insurer_number(part, INSURER_METADATA))
        except InvalidIdentifier as exc:
            raise CallerRefused(grpc.StatusCode.UNAUTHENTICATED, f"{exc.field}: {exc.description}") from exc
    return caller, frozenset(out)


async def _refuse(context, exc: Exception) -> None:
    if isinstance(exc, CallerRefused):
        await context.abort(exc.code, exc.message)
    if isinstance(exc, enrollment.Refused):
        if exc.code == "INVALID_ARGUMENT":
            await context.abort_with_status(bad_request_status(exc.violations, exc.message))
        await context.abort(getattr(grpc.StatusCode, exc.code), exc.message)
    if isinstance(exc, enrollment.Invalid):
        await context.abort_with_status(bad_request_status(exc.violations))
    if isinstance(exc, StoreFull):
        await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, f"store full: {exc}")
    if isinstance(exc, StreamAborted):
        await context.abort(grpc.StatusCode.ABORTED, str(exc))
    if isinstance(exc, lmdb.Error):  # nothing of that transaction was written
        await context.abort(grpc.StatusCode.UNAVAILABLE, f"store write failed: {exc}")
    raise exc


class _AckSink:
    """Acks from the committer thread to one stream's coroutine, one wake-up per commit."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.lock = threading.Lock()
        self.pending: list = []
        self.scheduled = False
        self.ready = asyncio.Event()

    def put(self, item) -> None:  # committer thread (or the loop itself)
        with self.lock:
            self.pending.append(item)
            if self.scheduled:
                return
            self.scheduled = True
        self.loop.call_soon_threadsafe(self.ready.set)

    async def take(self) -> list:
        await self.ready.wait()
        with self.lock:
            items, self.pending = self.pending, []
            self.scheduled = False
            self.ready.clear()
        return items


_END = object()


class EnrollmentServicer(pb_grpc.EnrollmentServiceServicer):
    def __init__(self, group, log=None):
        self.group = group
        self.log = log  # the access log (onshi.core.audit.AuditLog), if the trust layer has one

    async def StreamUpdates(self, request_iterator, context):
        stream = await self._stream(context, lambda update: (update,), _single_acks)
        async for acks in stream.answer(request_iterator, context):
            for ack in acks:
                yield ack

    async def StreamUpdateBatches(self, request_iterator, context):
        stream = await self._stream(context, _batch_updates, _batched_acks)
        async for responses in stream.answer(request_iterator, context):
            for response in responses:
                yield response

    async def _stream(self, context, updates_of, messages_of) -> _UpdateStream:
        try:
            caller, insurers = caller_insurers(context)
        except CallerRefused as exc:
            await _refuse(context, exc)
        # The writes go to the persons' access log, before their acks.
        auditor = EnrollmentAuditor(self.log, caller) if self.log is not None else None
        return _UpdateStream(self.group, insurers, auditor, updates_of, messages_of)

    async def PutResidents(self, request, context):
        if len(request.residents) > MAX_RESIDENTS_PER_CALL:
            await context.abort_with_status(
                bad_request_status([("residents", f"at most {MAX_RESIDENTS_PER_CALL} per call")])
            )
        v = []
        for i, r in enumerate(request.residents):
            v.extend(registry.resident_violations(r, f"residents[{i}]"))
        if v:
            await context.abort_with_status(bad_request_status(v[:100]))
        residents = list(request.residents)

        def fn(wtxn):
            for r in residents:
                registry.put(wtxn, r)
            return len(residents)

        try:
            stored = await self.group.apply_async(fn)
        except Exception as exc:  # noqa: BLE001
            await _refuse(context, exc)
        return pb.PutResidentsResponse(stored=stored)

    async def ListQuarantine(self, request, context):
        insurers = await self._insurers(context, request.insurer_number)
        limit = _page(request.page_size)
        if request.after_quarantine_id >= LAST_ID:  # nothing is numbered after the largest ID
            return pb.ListQuarantineResponse()
        entries = await _read(self.group, enrollment.list_quarantine, insurers, request.after_quarantine_id, limit)
        return pb.ListQuarantineResponse(updates=entries)

    async def ResolveQuarantine(self, request, context):
        try:
            _, insurers = caller_insurers(context)
            v = []
            if request.resolution == pb.RESOLUTION_UNSPECIFIED:
                v.append(("resolution", "required: RESOLUTION_APPLY or RESOLUTION_DISCARD"))
            if request.resolution == pb.RESOLUTION_DISCARD and not request.reason.strip():
                v.append(("reason", "required when discarding"))
            if request.HasField("corrected_person"):
                v.extend(registry.person_violations(request.corrected_person, "corrected_person"))
            if v:
                raise enrollment.Invalid(v)
            now = time.time()
            return await self.group.apply_async(lambda wtxn: enrollment.resolve(wtxn, request, insurers, now))
        except Exception as exc:  # noqa: BLE001
            await _refuse(context, exc)

    async def ListNotices(self, request, context):
        insurers = await self._insurers(context, request.insurer_number)
        if request.after_notice_id >= LAST_ID:
            return pb.ListNoticesResponse()
        notices = await _read(
            self.group, enrollment.list_notices, insurers, request.after_notice_id, _page(request.page_size)
        )
        return pb.ListNoticesResponse(notices=notices)

    async def AcknowledgeNotices(self, request, context):
        try:
            _, insurers = caller_insurers(context)
            ids = list(request.notice_ids)
            count = await self.group.apply_async(lambda wtxn: enrollment.acknowledge_notices(wtxn, ids, insurers))
        except Exception as exc:  # noqa: BLE001
            await _refuse(context, exc)
        return pb.AcknowledgeNoticesResponse(acknowledged=count)

    async def _insurers(self, context, wanted: str) -> list[str]:
        try:
            _, insurers = caller_insurers(context)
            if not wanted:
                return sorted(insurers)
            insurer = identifiers.normalize_insurer_number(wanted)
        except CallerRefused as exc:
            await _refuse(context, exc)
        except InvalidIdentifier as exc:
            await context.abort_with_status(bad_request_status([(exc.field, exc.description)]))
        if insurer not in insurers:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, "not one of the caller's insurers")
        return [insurer]


class _UpdateStream:
    """One StreamUpdates / StreamUpdateBatches call: the updates it reads are
    checked and queued for the committer in slices (one job each), and their
    acks go back in request order as commits return. The committer hands back
    acks serialized; `messages_of(raw acks)` makes the serialized responses to
    send (gRPC sends them as they are)."""

    def __init__(self, group, insurers: frozenset[str], auditor, updates_of, messages_of):
        self.group = group
        self.insurers = insurers
        self.auditor = auditor
        self.updates_of = updates_of
        self.messages_of = messages_of
        self.sink = _AckSink(asyncio.get_running_loop())
        self.room = asyncio.Event()  # set when acks went out: the reader may queue more
        self.submitted = 0  # updates queued
        self.sent = 0  # acks sent
        # Set on the committer thread when one of this stream's writes failed (store
        # full): its later updates must not apply without it, so they fail too.
        self.aborted = False

    async def answer(self, request_iterator, context):
        """The call's response messages, a list per wake-up, until every queued
        update has its ack and the request stream ended."""
        reader = asyncio.ensure_future(self.read(request_iterator))
        ended = False
        try:
            while not (ended and self.sent == self.submitted):
                acks = []
                for item in await self.sink.take():
                    if item is _END:
                        ended = True
                        continue
                    if isinstance(item, BaseException):
                        # The store is full (or broken): nothing of that commit was
                        # written; the client re-sends what has no ack.
                        if acks:
                            yield await self.messages(acks)
                        await _refuse(context, item)
                    acks.extend(item)  # one job's acks
                self.sent += len(acks)
                if acks:
                    yield await self.messages(acks)
                self.room.set()
            try:
                await reader  # surfaces a read error (client cancel...)
            except CallerRefused as exc:
                await _refuse(context, exc)
        finally:
            reader.cancel()

    async def read(self, request_iterator) -> None:
        """Queue each request's updates, at most WINDOW of them without an ack."""
        try:
            async for request in request_iterator:
                while self.submitted - self.sent >= WINDOW:
                    self.room.clear()
                    await self.room.wait()
                now = time.time()
                updates = self.updates_of(request)
                if self.auditor is not None:
                    self.auditor.note(updates)
                slices = [updates[i : i + JOB_UPDATES] for i in range(0, len(updates), JOB_UPDATES)]
                self.submitted += len(updates)
                self.group.submit_many(
                    [(self.job(part, now), self.done) for part in slices], [len(part) for part in slices]
                )
        finally:
            self.sink.put(_END)  # after every job of this stream was queued

    def job(self, updates, now: float):
        """One committer job for a slice of the stream's updates: their acks, in
        order. It writes all of them or (if it raises) none."""
        work: list = []
        for update in updates:
            try:
                work.append(enrollment.check_update(update, self.insurers))
            except enrollment.Invalid as exc:  # no write, but its ack keeps its place in order
                work.append(
                    enrollment.rejected_ack(update.update_id, exc.violations).SerializeToString(deterministic=True)
                )
        return functools.partial(self.write, work, now)

    def write(self, work: list, now: float, wtxn) -> list[bytes]:
        """On the committer thread, inside the batch's transaction."""
        if self.aborted:
            raise StreamAborted("an earlier update of this stream was not written")
        apply = enrollment.apply_update_raw
        return [c if c.__class__ is bytes else apply(wtxn, c, now) for c in work]

    def done(self, result, exc) -> None:
        """On the committer thread, after the commit: a job's acks (or its failure)."""
        if exc is not None:
            self.aborted = True
        self.sink.put(result if exc is None else exc)

    async def messages(self, raw: list[bytes]) -> list[bytes]:
        if self.auditor is not None:  # durable before the acks leave
            await self.auditor.flush([pb.EnrollmentAck.FromString(a) for a in raw])
        return self.messages_of(raw)


async def _read(group, fn, *args):
    """fn(read view, *args) on a pool thread: a listing reads every open entry
    of the caller's insurers, which must not stall the event loop (and every
    other call of this process) however many there are."""

    def run():
        with group.read() as r:
            return fn(r, *args)

    return await asyncio.get_running_loop().run_in_executor(None, run)


def _single_acks(raw: list[bytes]) -> list[bytes]:
    return raw  # each a serialized EnrollmentAck, sent as it is


def _batched_acks(raw: list[bytes]) -> list[bytes]:
    """One serialized StreamUpdateBatchesResponse per MAX_BATCH acks, the acks'
    bytes framed in one go (no ack message is built)."""
    return [enrollment.frame_acks(raw[i : i + MAX_BATCH]) for i in range(0, len(raw), MAX_BATCH)]


def _batch_updates(request: pb.StreamUpdateBatchesRequest):
    if len(request.updates) > MAX_BATCH:
        raise CallerRefused(grpc.StatusCode.INVALID_ARGUMENT, f"at most {MAX_BATCH} updates per message")
    return request.updates


def _page(size: int) -> int:
    return DEFAULT_PAGE if size <= 0 else min(size, MAX_PAGE)


class LinkServicer(pb_grpc.LinkServiceServicer):
    """Called by the government portal for the person (who consented there)."""

    def __init__(self, group):
        self.group = group

    async def LinkCard(self, request, context):
        now = time.time()
        try:
            return await self.group.apply_async(lambda wtxn: enrollment.link_card(wtxn, request, now))
        except Exception as exc:  # noqa: BLE001
            await _refuse(context, exc)

    async def ListLinkNotices(self, request, context):
        resident_id = registry.normalize_resident_id(request.resident_id)
        if resident_id is None:
            await context.abort_with_status(bad_request_status([("resident_id", "must be 11 digits")]))
        return pb.ListLinkNoticesResponse(notices=await _read(self.group, enrollment.list_link_notices, resident_id))


def add_to_server(server, group, trust=None) -> list[str]:
    """`trust`: the process's trust_setup.IngestTrust, or None."""
    enrollment.open_dbs(group)
    log = trust.log if trust is not None else None
    # The streams' acks leave as the committer serialized them.
    handlers.sending_bytes(
        pb_grpc.add_EnrollmentServiceServicer_to_server,
        EnrollmentServicer(group, log),
        server,
        ("StreamUpdates", "StreamUpdateBatches"),
    )
    pb_grpc.add_LinkServiceServicer_to_server(LinkServicer(group), server)
    return [
        pb.DESCRIPTOR.services_by_name["EnrollmentService"].full_name,
        pb.DESCRIPTOR.services_by_name["LinkService"].full_name,
    ]
