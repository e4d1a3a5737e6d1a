"""The trust layer plugged into the servers: card-proof and audit hooks for
EligibilityService (eligibility.py's `card_proof` / `audit`), statuses for
refused proofs, the person directory the trust services read, and the set-up
from command-line options shared by `onshi serve` and `onshi ingest-serve`.
"""

from __future__ import annotations

import hashlib
import os
import sys
import threading
import time
from dataclasses import dataclass

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status
from onshi.core import audit, cardproof, history, identifiers, persons
from onshi.core.cardproof import CardProofError, CardVerifier, MalformedProof
from onshi.server import auth
from onshi.server.errors import (  # noqa: F401 (re-exported)
    FieldErrors,
    StatusError,
    bad_request_status,
    error_reason,
    service_unavailable,
)

ERROR_DOMAIN = "onshi.v1"
PURPOSE_KEY = "x-onshi-purpose"
REQUEST_ID_KEY = "x-request-id"
DEFAULT_PURPOSE = {
    "CheckByCard": "qualification check at a visit",
    "CheckByNumber": "qualification check at a visit",
}


def card_proof_status(exc: CardProofError) -> grpc.Status:
    """A refused proof: its gRPC code, the advice as message, and ErrorInfo
    (reason = CARD_CERTIFICATE_EXPIRED ..., metadata warning_code when the
    eligibility.proto WarningCode names it) so a terminal can act on it."""
    metadata = {"advice": exc.advice}
    if exc.reason in cardproof.REASON_WARNING:
        metadata["warning_code"] = str(cardproof.REASON_WARNING[exc.reason])
    info = error_details_pb2.ErrorInfo(reason=exc.reason, domain=ERROR_DOMAIN, metadata=metadata)
    detail = any_pb2.Any()
    detail.Pack(info)
    code = getattr(code_pb2, exc.code)
    return rpc_status.to_status(status_pb2.Status(code=code, message=str(exc), details=[detail]))


def abort_trust(context, exc: Exception):
    """Threaded-server abort for the trust exceptions (never returns)."""
    if isinstance(exc, CardProofError):
        context.abort_with_status(card_proof_status(exc))
    if isinstance(exc, MalformedProof):
        context.abort_with_status(bad_request_status(exc.violations))
    if isinstance(exc, FieldErrors):
        context.abort_with_status(bad_request_status(exc.violations))
    if isinstance(exc, identifiers.InvalidIdentifier):
        context.abort_with_status(bad_request_status([(exc.field, exc.description)]))
    if isinstance(exc, auth.AuthError):
        context.abort(exc.code, exc.message)
    raise exc


ACCESS_LOG_UNAVAILABLE = "ACCESS_LOG_UNAVAILABLE"


def write_records(log: audit.AuditLog, records) -> None:
    """Append durably; a log that cannot write (disk full, I/O error: it is
    fail-stop, audit.AuditLog) refuses the call with UNAVAILABLE and reason
    ACCESS_LOG_UNAVAILABLE, since no answer may leave without its record."""
    try:
        log.append_many(records)
    except (OSError, RuntimeError) as exc:
        raise service_unavailable(
            ACCESS_LOG_UNAVAILABLE,
            f"the access log cannot be written ({exc}); no data is answered until an operator restores it",
            advice="follow the outage procedure (portal or paper, self-declaration); retry later") from None


# --- subjects: whom a record is about ----------------------------------------------

def _digest(key: bytes) -> str:
    # The log names persons by a digest of what was presented, not the number itself.
    return hashlib.blake2b(key, digest_size=12).hexdigest()


def card_subject(serial_key: bytes) -> str:
    return "card:" + _digest(serial_key)


def number_subject(number_key: bytes) -> str:
    return "number:" + _digest(number_key)


def link_subject(link_id: int) -> str:
    return f"link:{link_id}"


def describe_response(response: bytes) -> str:
    """What was returned, from CheckResponse bytes without parsing protobuf."""
    validity = response[1] if len(response) >= 2 and response[0] == 0x08 else 0
    quals = warnings = 0
    i = 2 if validity else 0
    n = len(response)
    while i < n:
        tag = response[i]
        i += 1
        length = 0
        shift = 0
        while True:
            b = response[i]
            i += 1
            length |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                break
        if tag == 0x12:
            quals += 1
        elif tag == 0x1A:
            warnings += 1
        i += length
    text = f"validity={validity} qualifications={quals}"
    return text + (f" warnings={warnings}" if warnings else "")


def _metadata_value(context, key: str) -> str:
    for k, v in context.invocation_metadata() or ():
        if k == key and isinstance(v, str):
            return v[:128]
    return ""


# --- EligibilityService hooks ---------------------------------------------------------

def _remember(context, serial_key: bytes) -> None:
    # The audit hook of the same call reads it back (no second hash of the DER).
    try:
        context._onshi_serial = serial_key
    except AttributeError:  # grpc.aio context: the audit hook recomputes
        pass


class EligibilityTrust:
    """card_proof and audit hooks for build_eligibility_handlers/create_server."""

    TRUSTED_BARE_SERIAL = frozenset({auth.REVIEW, auth.OPERATOR, auth.DEV})

    def __init__(self, verifier: CardVerifier | None, log: audit.AuditLog | None):
        self.verifier = verifier
        self.log = log

    def card_proof(self, request, context) -> tuple[bytes, bytes]:
        try:
            caller = auth.caller_of(context)
            if request.card_certificate or request.card_signature or request.HasField("challenge"):
                if self.verifier is None:
                    raise auth.AuthError(grpc.StatusCode.FAILED_PRECONDITION,
                                         "card proof verification is not configured on this server")
                facility = caller.facility_code if caller.role == auth.FACILITY else None
                if caller.role == auth.FACILITY and facility is None:
                    raise auth.denied("facility caller without a facility code")
                proof = self.verifier.verify_request(request, facility, purpose=cardproof.PURPOSE_CHECK_BY_CARD)
                _remember(context, proof.serial_key)
                return proof.serial_key, proof.warnings
            if caller.role not in self.TRUSTED_BARE_SERIAL:
                raise auth.denied("a bare card_serial is accepted only from internal roles; "
                                  "send the card proof (card_certificate, challenge, card_signature)")
            return identifiers.card_serial_key(request.card_serial), b""
        except (CardProofError, MalformedProof, auth.AuthError, identifiers.InvalidIdentifier) as exc:
            abort_trust(context, exc)

    def audit(self, context, method: str, request, response: bytes) -> None:
        if self.log is None:
            return
        try:
            caller = auth.caller_of(context)
            actor = caller.label
        except auth.AuthError:
            actor = "unknown"
        request_id = purpose = ""
        for k, v in context.invocation_metadata() or ():
            if k == REQUEST_ID_KEY and isinstance(v, str):
                request_id = v[:128]
            elif k == PURPOSE_KEY and isinstance(v, str):
                purpose = v[:128]
        if method == "CheckByCard":
            key = getattr(context, "_onshi_serial", None)
            if key is None and request.card_certificate and self.verifier is not None:
                key = self.verifier.card(request.card_certificate).serial_key  # cached by now
            if key is None:
                key = identifiers.card_serial_key(request.card_serial)
            elif not request_id:
                request_id = request.challenge.nonce.hex()
            subject = card_subject(key)
        else:
            subject = number_subject(identifiers.number_key(
                request.insurer_number, request.symbol, request.number, request.branch))
        purpose = purpose or DEFAULT_PURPOSE.get(method, method)
        # Blocks until durable (group commit): the answer leaves only after its record.
        write_records(self.log, (audit.AuditRecord(actor=actor, action=method, subject=subject,
                                                   items=describe_response(response), purpose=purpose,
                                                   request_id=request_id),))


# --- the person directory (reads for the trust services) -----------------------------

class PersonDirectory:
    """Read-only lookups over a py-lmdb environment: card -> link, number -> link,
    a person's history, and the subjects under which the log may name them."""

    def __init__(self, env, dbs: dict | None = None):
        """`dbs`: the writer's open handles (opening again in a writable env
        would take a write transaction)."""
        self.env = env
        dbs = dbs or {}

        def db(name: str):
            if name in dbs:
                return dbs[name]
            try:
                return env.open_db(name.encode(), create=False)
            except Exception:  # lmdb.NotFoundError: an older store without it
                return None

        self.card = db("card")
        self.card_of = db("card_of")
        self.card_former = db("card_former")
        self.number = db("number")
        self.history = db("history")
        self.person = db("person")
        self.basic4 = db("basic4")

    def link_of_card(self, serial_key: bytes) -> int | None:
        with self.env.begin() as txn:
            raw = txn.get(serial_key, db=self.card)
        return int.from_bytes(raw, "big") if raw else None

    def link_of_number(self, number_key: bytes) -> int | None:
        with self.env.begin() as txn:
            raw = txn.get(number_key, db=self.number)
        return int.from_bytes(raw, "big") if raw else None

    def history_value(self, link_id: int) -> bytes | None:
        with self.env.begin() as txn:
            return txn.get(link_id.to_bytes(8, "big"), db=self.history)

    def qualifications(self, link_id: int) -> list:
        """Each qualification with its own person (history.qualifications)."""
        value = self.history_value(link_id)
        return history.qualifications(value) if value else []

    def person_on(self, link_id: int, day: int):
        """The person's basic information in force on `day` (persons.py), or None."""
        if self.person is None:
            return None
        with self.env.begin() as txn:
            raw = persons.in_force(persons.decode(txn.get(link_id.to_bytes(8, "big"), db=self.person)), day)
        return persons.person(raw) if raw is not None else None

    def subjects(self, link_id: int) -> set[str]:
        """Every subject under which records about this person were written."""
        out = {link_subject(link_id)}
        lk = link_id.to_bytes(8, "big")
        serials = []
        with self.env.begin() as txn:
            serials.append(txn.get(lk, db=self.card_of))
            value = txn.get(lk, db=self.history)
            if self.card_former is not None:  # cards this person's re-issued cards replaced
                cursor = txn.cursor(db=self.card_former)
                if cursor.set_range(lk):
                    for key in cursor.iternext(values=False):
                        if not key.startswith(lk):
                            break
                        serials.append(key[len(lk):])
        out.update(card_subject(s) for s in serials if s)
        if value:
            for _, q in history.qualifications(value):
                try:
                    out.add(number_subject(history.qualification_number_key(q)))
                except identifiers.InvalidIdentifier:
                    continue
        return out


@dataclass
class TrustSetup:
    verifier: CardVerifier | None
    log: audit.AuditLog | None
    pki: str | None


_stream_lock = threading.Lock()


def add_arguments(parser, relay: bool = False) -> None:
    auth.add_arguments(parser)
    g = parser.add_argument_group("trust (card proof, access log)")
    if relay:
        g.add_argument("--relay-key", help="relay Ed25519 signing key (default with --pki: PKI/relay/signing.key.pem)")
        g.add_argument("--insurer-cert", action="append", default=[],
                       help="insurer client certificate(s) whose keys relay tokens are sealed to "
                            "(default with --pki: PKI/onshi/insurer-*.pem)")
    g.add_argument("--jpki-ca", action="append", default=[],
                   help="JPKI CA certificate(s) for card proofs (default with --pki: PKI/jpki/ca.pem)")
    g.add_argument("--crl", help="card revocation list file (default with --pki: PKI/jpki/crl.der)")
    g.add_argument("--replay-table",
                   help="card-proof replay table shared by every server of this deployment on this host "
                        f"(default: DATA/{cardproof.REPLAY_TABLE_FILE}; give both servers the same file)")
    g.add_argument("--audit-dir", help="access log directory (each process writes its own stream)")
    g.add_argument("--audit-key", help="audit key file (`onshi audit keygen`; keep it off the log's disk): MACs "
                                       "the heads and the manifest so deletions cannot be covered up")
    g.add_argument("--audit-retention-days", type=float, default=audit.DEFAULT_RETENTION_DAYS,
                   help="drop access-log segments older than this (default 5 years), at start and daily")
    g.add_argument("--audit-sync-interval-ms", type=_sync_interval, default=audit.DEFAULT_SYNC_INTERVAL_MS,
                   help="at most one fdatasync of the access log per interval (default "
                        f"{audit.DEFAULT_SYNC_INTERVAL_MS:g} ms; 0: sync each batch at once): under load a "
                        "sync carries more records, for at most this much added latency")
    g.add_argument("--audit-no-sync", action="store_true", help=argparse_suppress())
    # Bench only: instead of logging, every check waits this long (what does a
    # handler that blocks cost the threaded gRPC server, whatever it waits for?).
    g.add_argument("--test-wait-ms", type=float, default=0.0, help=argparse_suppress())


def _sync_interval(text: str) -> float:
    import argparse

    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= audit.MAX_SYNC_INTERVAL_MS:
        raise argparse.ArgumentTypeError(f"must be a number of milliseconds, 0-{audit.MAX_SYNC_INTERVAL_MS:g}")
    return value


def argparse_suppress():
    import argparse

    return argparse.SUPPRESS


def setup_from_args(args, stream: str | None = None, replays=None) -> TrustSetup:
    """Card verifier and access log for one worker process (call after fork)."""
    cas = list(args.jpki_ca or [])
    crl = args.crl
    if getattr(args, "pki", None):
        cas = cas or [os.path.join(args.pki, "jpki", "ca.pem")]
        crl = crl or os.path.join(args.pki, "jpki", "crl.der")
    verifier = CardVerifier.from_files(cas, crl, replays=replays) if cas else None
    log = None
    if args.audit_dir:
        try:
            log = audit.AuditLog(args.audit_dir, stream or f"pid{os.getpid()}",
                                 durable=not getattr(args, "audit_no_sync", False),
                                 sync_interval_ms=getattr(args, "audit_sync_interval_ms",
                                                          audit.DEFAULT_SYNC_INTERVAL_MS),
                                 key=audit_key(args))
        except (OSError, ValueError, RuntimeError) as exc:
            raise SystemExit(f"onshi: access log: {exc}") from None
        start_retention(log, getattr(args, "audit_retention_days", audit.DEFAULT_RETENTION_DAYS))
    return TrustSetup(verifier, log, getattr(args, "pki", None))


def refuse(line: str):
    """A server option that names a file with the wrong content: one line, exit 2
    (as the CLI does for a path that cannot be read)."""
    print(line, file=sys.stderr, flush=True)
    raise SystemExit(2)


def audit_key(args) -> bytes | None:
    path = getattr(args, "audit_key", None)
    return audit.load_key(path) if path else None


def check_audit_args(args) -> None:
    """Before fork / before serving: the access log can be opened as asked,
    or the server stops with one line."""
    if getattr(args, "audit_key", None) and not args.audit_dir:
        raise SystemExit("onshi: --audit-key needs --audit-dir")
    if not args.audit_dir:
        return
    try:
        key = audit_key(args)
        if key is not None:
            key_path = os.path.realpath(args.audit_key)
            log_dir = os.path.realpath(args.audit_dir)
            if key_path.startswith(log_dir + os.sep):
                raise ValueError(f"the audit key {args.audit_key} is inside the access log directory: "
                                 "whoever can rewrite the log could then forge its MACs")
            os.makedirs(log_dir, exist_ok=True)
            if os.stat(key_path).st_dev == os.stat(log_dir).st_dev:
                print(f"onshi: WARNING the audit key {args.audit_key} is on the same file system as "
                      f"{args.audit_dir}: keep it on another medium (docs/TRUST.md)", file=sys.stderr, flush=True)
        audit.check_manifest(args.audit_dir, key)
    except (ValueError, audit.ManifestError) as exc:
        refuse(f"onshi: access log: {exc}")


def replay_table(args, create_dir: bool = False) -> cardproof.SharedReplayCache | None:
    """The deployment's card-proof replay table (a file both servers map), or
    None when this server verifies no card proofs."""
    if not (getattr(args, "pki", None) or getattr(args, "jpki_ca", None)):
        return None
    path = getattr(args, "replay_table", None) or os.path.join(args.data, cardproof.REPLAY_TABLE_FILE)
    if create_dir:  # a path that cannot be made: one line from the CLI (exit 2)
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    try:
        return cardproof.SharedReplayCache(cardproof.FRESHNESS_SECONDS, path=path)
    except ValueError as exc:
        refuse(f"onshi: card-proof replay table: {exc} (--replay-table FILE puts it elsewhere; every server "
               "of the deployment needs the same one)")


def start_retention(log: audit.AuditLog, retention_days: float, every: float = 86400.0) -> threading.Thread:
    """Compact this process's stream now and then once a day (a daemon thread)."""
    def run() -> None:
        while True:
            try:
                log.compact(retention_days)
            except Exception as exc:  # noqa: BLE001 - retention must never stop the server
                print(f"onshi: access-log compaction failed: {exc}", file=sys.stderr, flush=True)
            time.sleep(every)

    thread = threading.Thread(target=run, name="audit-retention", daemon=True)
    thread.start()
    return thread


# --- what the trust services share in `onshi ingest-serve` -----------------------------

@dataclass
class TrustContext:
    """Configured once per process (`configure`), read by the trust services."""
    verifier: CardVerifier | None = None
    log: audit.AuditLog | None = None       # this process's own stream
    audit_dir: str | None = None            # every stream, read by ListMyAccess
    sealer: object | None = None            # relay.TokenSealer
    crl_path: str | None = None
    failure_mode: bool = False
    failure_reason: str = ""


_context: TrustContext | None = None


def configure(context: TrustContext | None) -> None:
    global _context
    _context = context


def configured() -> TrustContext | None:
    return _context


async def log_async(log: audit.AuditLog | None, record: audit.AuditRecord) -> None:
    """Durable append from a grpc.aio handler without blocking the event loop."""
    if log is None:
        return
    import asyncio

    await asyncio.get_running_loop().run_in_executor(None, write_records, log, (record,))


async def abort_trust_async(context, exc: Exception):
    if isinstance(exc, CardProofError):
        status = card_proof_status(exc)
        await context.abort(status.code, status.details, status.trailing_metadata)
    if isinstance(exc, (MalformedProof, FieldErrors)):
        status = bad_request_status(exc.violations)
        await context.abort(status.code, status.details, status.trailing_metadata)
    if isinstance(exc, identifiers.InvalidIdentifier):
        status = bad_request_status([(exc.field, exc.description)])
        await context.abort(status.code, status.details, status.trailing_metadata)
    if isinstance(exc, auth.AuthError):
        await context.abort(exc.code, exc.message)
    raise exc


# --- `onshi serve` with the trust layer -------------------------------------------

def trust_requested(args) -> bool:
    return bool(getattr(args, "pki", None) or getattr(args, "tls_cert", None) or getattr(args, "insecure_dev", False)
                or getattr(args, "audit_dir", None) or getattr(args, "jpki_ca", None))


def check_serve_args(args, host: str) -> None:
    """In the parent, before fork: refuse bad combinations, print the dev warning.
    Without any trust option the server stays as before (no TLS, no roles), and
    then only on loopback."""
    if getattr(args, "insecure_dev", False):
        auth.check_insecure_bind(host)
        check_audit_args(args)
        return
    if not trust_requested(args):
        if not auth.is_loopback(host):
            raise SystemExit(f"onshi: without mTLS (--pki or --tls-cert/--tls-key/--client-ca) the server "
                             f"binds loopback only, not {host}")
        print("onshi: WARNING no mTLS configured: plaintext, callers not authenticated, no access log "
              "(loopback only; use --pki DIR for the trust layer)", file=sys.stderr, flush=True)
        return
    if not (args.pki or (args.tls_cert and args.tls_key and args.client_ca)):
        raise SystemExit("onshi: mTLS needs --tls-cert, --tls-key and --client-ca (or --pki DIR); "
                         "--insecure-dev for a loopback-only demo")
    auth.check_caller_crl(args)
    check_audit_args(args)


def server_builder(args, host: str, threads: int):
    """build_server(engine, address) for app.serve: runs in each worker after fork.
    The replay table is opened here, before fork: every worker maps it, and so
    does every other server of the deployment (ingest-serve's ListMyAccess)."""
    replays = replay_table(args)

    def build(engine, address):
        from onshi.server import app

        insecure = getattr(args, "insecure_dev", False)
        if insecure:
            auth.enable_insecure_dev()
            credentials = None
        else:
            credentials = auth.credentials_from_args(args, host)
        setup = setup_from_args(args, replays=replays)
        if setup.log is not None:  # its appenders are the handler threads: a full batch goes at once
            setup.log.batch_target = threads or app.handler_threads(setup.log)
        hooks = EligibilityTrust(setup.verifier, setup.log)
        audit_hook = hooks.audit if setup.log else None
        wait = getattr(args, "test_wait_ms", 0.0) / 1000.0
        if wait:
            def audit_hook(context, method, request, response):
                time.sleep(wait)
        return app.create_server(engine, address=address, threads=threads, credentials=credentials,
                                 interceptors=auth.interceptors(), card_proof=hooks.card_proof,
                                 audit=audit_hook)
    return build


def configure_secondary(args, host: str):
    """`onshi ingest-serve`: (credentials, interceptors) and the TrustContext for
    TrustService, AuditService and RelayService. Without trust options: the
    services are not hosted and nothing changes (loopback only)."""
    from onshi.core import relay

    check_serve_args(args, host)
    if not trust_requested(args):
        return None, ()
    if args.insecure_dev:
        auth.enable_insecure_dev()
        credentials = None
    else:
        credentials = auth.credentials_from_args(args, host)
    setup = setup_from_args(args, stream="ingest", replays=replay_table(args, create_dir=True))
    sealer = None
    key_path = args.relay_key or (os.path.join(args.pki, "relay", "signing.key.pem") if args.pki else None)
    if key_path:
        keys = (relay.insurer_keys_from_certificates(args.insurer_cert) if args.insurer_cert
                else relay.insurer_keys_from_pki(args.pki) if args.pki else {})
        sealer = relay.TokenSealer(relay.load_signing_key(key_path), keys)
    crl = args.crl or (os.path.join(args.pki, "jpki", "crl.der") if args.pki else None)
    configure(TrustContext(verifier=setup.verifier, log=setup.log, audit_dir=args.audit_dir, sealer=sealer,
                           crl_path=crl))
    return credentials, auth.interceptors(asyncio=True)


# --- claims (ClaimService in ingest-serve) ---------------------------------------------

CLAIM_OUTCOMES = None


def audit_claims(caller: auth.Caller | None, claims, response) -> None:
    """One access-log record per verified claim, durable before the verdicts
    are sent (one group commit for the batch). Who: `caller`, taken from the
    call when it began (None: not authenticated). Whom: the digest of the
    billed insured number (a 不詳 claim names nobody yet: subject "unknown-claim")."""
    ctx = configured()
    if ctx is None or ctx.log is None:
        return
    global CLAIM_OUTCOMES
    if CLAIM_OUTCOMES is None:
        from onshi.v1 import claims_pb2

        CLAIM_OUTCOMES = {v.number: v.name for v in claims_pb2.Verdict.DESCRIPTOR.fields_by_name["outcome"]
                          .enum_type.values}
    if caller is not None:
        actor = caller.label
        purpose = "pre-submission claim check" if caller.role == auth.FACILITY else "claim review (審査)"
    else:
        actor, purpose = "unknown", "claim review"
    records = []
    for claim, verdict in zip(claims, response.verdicts):
        try:
            subject = number_subject(identifiers.number_key(claim.insurer_number, claim.symbol, claim.number,
                                                            claim.branch))
        except identifiers.InvalidIdentifier:
            subject = "unknown-claim"
        records.append(audit.AuditRecord(
            actor=actor, action="VerifyClaims", subject=subject,
            items=f"claim={claim.claim_id[:40]} verdict={CLAIM_OUTCOMES.get(verdict.outcome, verdict.outcome)}",
            purpose=purpose, request_id=f"{claim.facility_code[:10]}/{claim.claim_id[:40]}"))
    write_records(ctx.log, records)


# --- enrollment (EnrollmentService in ingest-serve) -------------------------------------

def _update_subject(update) -> str:
    """Whom an enrollment update is about: the digest of its insured number."""
    change = update.WhichOneof("change")
    msg = getattr(update, change) if change else None
    try:
        if msg is not None and hasattr(msg, "qualification") and msg.HasField("qualification"):
            q = msg.qualification
            return number_subject(identifiers.number_key(q.insurer_number or update.insurer_number,
                                                         q.symbol, q.number, q.branch))
        if msg is not None and hasattr(msg, "insured_number"):
            n = msg.insured_number
            return number_subject(identifiers.number_key(update.insurer_number, n.symbol, n.number, n.branch))
    except identifiers.InvalidIdentifier:
        pass
    return "resident:" + _digest(update.resident_id.encode())


class EnrollmentAuditor:
    """One stream's enrollment writes in the access log: noted as updates
    arrive, written (durably, one group commit per ack group) before the acks
    are sent."""

    def __init__(self, log: audit.AuditLog, actor: str):
        self.log = log
        self.actor = actor
        self.pending: dict[str, tuple[str, str]] = {}

    def note(self, updates) -> None:
        for u in updates:
            self.pending[u.update_id] = (_update_subject(u), u.WhichOneof("change") or "none")

    async def flush(self, acks) -> None:
        records = []
        for ack in acks:
            subject, change = self.pending.pop(ack.update_id, ("", "unknown"))
            if not subject:
                continue
            records.append(audit.AuditRecord(
                actor=self.actor, action="EnrollmentUpdate", subject=subject,
                items=f"{change} outcome={ack.outcome}", purpose="insurer registration (法定届出)",
                request_id=ack.update_id[:64]))
        if records:
            import asyncio

            await asyncio.get_running_loop().run_in_executor(None, write_records, self.log, records)


def enrollment_auditor(context) -> EnrollmentAuditor | None:
    ctx = configured()
    if ctx is None or ctx.log is None:
        return None
    try:
        actor = auth.caller_of(context).label
    except auth.AuthError:
        actor = "unknown"
    return EnrollmentAuditor(ctx.log, actor)
