"""ClaimService (DOMAIN.md §6) in the secondary process, beside ingestion.

VerifyClaims is a bidirectional stream on gRPC's threaded server: the handler is
a generator that reads one batch, verifies it and yields its verdicts. gRPC
pulls the generator's next item only after the previous message has been handed
to the transport, and hands it over only within the HTTP/2 flow-control window,
so a client that reads slowly stops the handler from reading further batches:
at most one batch being verified plus the transport windows are in flight, never
an unbounded queue (tests/test_claims_server.py checks it with a slow reader).

Review-body streams are recorded per claim in the ledger (onshi.core.claims)
for Apportion; a facility's pre-submission check is not recorded.
"""

from __future__ import annotations

import os
from collections import defaultdict

import grpc
from onshi.core import claims as rules
from onshi.core import identifiers
from onshi.core.engine import open_engine
from onshi.core.pure import PureEngine
from onshi.core.writer import StoreFull
from onshi.server import trust
from onshi.server.errors import bad_request_status
from onshi.v1 import claims_pb2, claims_pb2_grpc

SERVICE_NAME = claims_pb2.DESCRIPTOR.services_by_name["ClaimService"].full_name
FACILITY_KEY = "x-onshi-facility"


def _abort_with_status(context, status: grpc.Status) -> None:
    # grpc.aio's context for sync handlers (the secondary process) has no
    # abort_with_status; abort() with the status's trailing metadata is the same.
    context.abort(status.code, status.details, status.trailing_metadata)


# --- who is calling ------------------------------------------------------------

def caller_facility(context) -> str | None:
    """The facility code of a facility caller (pre-submission check), or None for
    a review body. For now declared in metadata; issue 5 replaces this one
    function with the mTLS identity (onshi.server.auth)."""
    from onshi.server import auth  # issue 5: under mTLS the certificate decides

    try:
        identity = auth.tls_identity(context)
        if identity is not None:
            return auth.caller_facility(context) if identity.role == auth.FACILITY else None
    except auth.AuthError as exc:
        context.abort(exc.code, exc.message)
    for key, value in context.invocation_metadata() or ():
        if key == FACILITY_KEY:
            code = value.strip() if isinstance(value, str) else ""
            if len(code) != 10 or not code.isdigit():
                _abort_with_status(context, bad_request_status(
                    [(FACILITY_KEY, "must be a 10-digit facility code")]))
            return code
    return None


def engine_beside(writer):
    """A read engine in the writer's process: the native engine opens its own
    LMDB handle; the pure one must share the writer's py-lmdb environment
    (py-lmdb refuses to open one path twice in a process)."""
    kind = os.environ.get("ONSHI_ENGINE") or "auto"
    if kind in ("auto", "native"):
        try:
            engine = open_engine(writer.path, "native")
        except ImportError:
            if kind == "native":
                raise
        else:
            if hasattr(engine, "histories_by_number"):
                return engine
            engine.close()  # an older native build without the batch path
    return PureEngine.over_env(writer.env)


# --- the servicer ------------------------------------------------------------------

class ClaimServicer(claims_pb2_grpc.ClaimServiceServicer):
    def __init__(self, writer, engine=None):
        self.writer = writer
        # The engine reads the same files the writer writes; it stays open for the
        # process's lifetime (closing a second LMDB env in a process drops the
        # process's lock-file locks, so it is only closed with the writer).
        self.engine = engine if engine is not None else engine_beside(writer)
        self.verifier = rules.Verifier(self.engine, writer.env)
        self.record_db = writer.open_db(rules.RECORD_DB)
        self.batches_verified = 0
        self._normalized: dict[str, str] = {}  # insurer number as billed -> normalised

    def VerifyClaims(self, request_iterator, context):
        facility = caller_facility(context)
        for request in request_iterator:
            claims = request.claims
            if facility is not None:
                for i, c in enumerate(claims):
                    if c.facility_code != facility:
                        context.abort(grpc.StatusCode.PERMISSION_DENIED,
                                      f"claims[{i}]: facility {c.facility_code!r} is not the caller's ({facility})")
            try:
                response = self.verifier.verify(claims)
            except rules.ClaimError as exc:
                _abort_with_status(context, bad_request_status(exc.violations, "invalid claim batch"))
            if facility is None:
                try:
                    self._record(claims, response)
                except StoreFull as exc:  # nothing of this batch was written
                    context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, f"store full: {exc}")
            trust.audit_claims(context, claims, response)  # issue 5: durable before the verdicts leave
            self.batches_verified += 1
            yield response

    def Apportion(self, request, context):
        violations = []
        code = request.facility_code.strip()
        if len(code) != 10 or not code.isdigit():
            violations.append(("facility_code", "must be 10 digits"))
        months = []
        for name in ("first_month", "last_month"):
            m = getattr(request, name)
            if not request.HasField(name) or not (1 <= m.month <= 12) or m.year < 1:
                violations.append((name, "required: year and month (day ignored)"))
            months.append(m.year * 100 + m.month)
        if not violations and months[0] > months[1]:
            violations.append(("last_month", "must not be before first_month"))
        if violations:
            _abort_with_status(context, bad_request_status(violations))
        unresolved_points, unresolved_claims, paid = self.totals(code, months[0], months[1])
        if unresolved_points and not paid:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                          "no recorded payments to this facility in the period to apportion by")
        response = claims_pb2.ApportionResponse(unresolved_points=unresolved_points,
                                                unresolved_claims=unresolved_claims,
                                                paid_points=sum(paid.values()))
        for insurer, paid_points, share in rules.apportion(unresolved_points, paid):
            response.shares.add(insurer_number=insurer, paid_points=paid_points, share_points=share)
        return response

    # -- the ledger ---------------------------------------------------------------
    def totals(self, facility_code: str, first_month: int, last_month: int) -> tuple[int, int, dict[str, int]]:
        """(unresolved points, unresolved claims, paid points per insurer) of the
        facility's recorded claims in the months, by one prefix scan."""
        prefix = rules.ledger_prefix(facility_code)
        start = prefix + rules._MONTH.pack(first_month)
        unresolved_points = unresolved_claims = 0
        paid: dict[str, int] = defaultdict(int)
        with self.writer.env.begin() as txn:
            cursor = txn.cursor(db=self.record_db)
            if cursor.set_range(start):
                for key, value in cursor:
                    if not key.startswith(prefix) or rules.record_month(key, facility_code) > last_month:
                        break
                    for insurer, points in rules.decode_payers(value):
                        if insurer == rules.UNRESOLVED_INSURER:
                            unresolved_points += points
                            unresolved_claims += 1
                        else:
                            paid[insurer] += points
        return unresolved_points, unresolved_claims, dict(paid)

    def _record(self, claims, response: claims_pb2.VerifyClaimsResponse) -> None:
        """Record who pays what per claim, overwriting an earlier record of the
        same (facility, month, claim ID): one putmulti in one transaction."""
        ok, unresolved, returned = rules.OK, rules.UNRESOLVED, rules.RETURN
        month_pack = rules._MONTH.pack
        insurers = self._normalized
        records: dict[bytes, bytes] = {}  # the later of a claim twice in a batch wins
        for c, v in zip(claims, response.verdicts):
            outcome = v.outcome
            if outcome == ok:
                ins = insurers.get(c.insurer_number)
                if ins is None:
                    if len(insurers) > 100_000:  # bounded: a few thousand real insurers
                        insurers.clear()
                    ins = insurers[c.insurer_number] = identifiers.normalize_insurer_number(c.insurer_number)
                value = f"{ins}\x1f{c.points}".encode()
            elif outcome == unresolved:
                value = f"\x1f{c.points}".encode()
            elif outcome == returned:
                value = b""
            else:
                value = rules.encode_payers((seg.insurer_number, seg.points) for seg in v.segments)
            a = c.first_visit_date
            key = f"{c.facility_code}\x1f".encode() + month_pack(a.year * 100 + a.month) + c.claim_id.encode()
            records[key[:rules.MAX_RECORD_KEY]] = value
        items = sorted(records.items())  # key order: fewer page touches in the B-tree
        record_db = self.record_db

        def change(t):
            t.txn.cursor(db=record_db).putmulti(items)

        self.writer.apply(change)


def add_to_server(server: grpc.Server, writer, engine=None) -> list[str]:
    """Register ClaimService on a threaded grpc server; returns its service names
    (for health and reflection). `onshi ingest-serve` loads this module."""
    servicer = ClaimServicer(writer, engine)
    claims_pb2_grpc.add_ClaimServiceServicer_to_server(servicer, server)
    return [SERVICE_NAME]
