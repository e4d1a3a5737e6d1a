"""Opening the trust layer in a server process, from its options (trust_options).

`onshi serve`: the parent opens the card-proof replay table before fork (every
worker maps it, and so does every other server of the deployment); each
worker, after fork, makes its own `WorkerTrust` (TLS credentials, the role
interceptor, the card verifier, its own access-log stream and the
EligibilityService hooks over them).

`onshi ingest-serve`: `ingest_trust` gives the server's credentials and
interceptors and the `IngestTrust` its trust services (TrustService,
AuditService, RelayService) and the access-log records of ClaimService and
EnrollmentService receive through their constructors.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from dataclasses import dataclass

import grpc

from ..core import audit, cardproof
from ..core.cardproof import CardVerifier
from . import auth, trust_options
from .eligibility_trust import EligibilityTrust


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
        trust_options.refuse(
            f"onshi: card-proof replay table: {exc} (--replay-table FILE puts it elsewhere; "
            "every server of the deployment needs the same one)"
        )


def card_verifier(args, replays=None) -> CardVerifier | None:
    """The card-proof verifier, or None when no JPKI CA is configured."""
    cas, crl = trust_options.card_ca_files(args)
    return CardVerifier.from_files(cas, crl, replays=replays) if cas else None


def open_access_log(args, stream: str) -> audit.AuditLog | None:
    """This process's own stream of the access log (with its daily
    retention), or None without --audit-dir."""
    if not args.audit_dir:
        return None
    try:
        log = audit.AuditLog(
            args.audit_dir, stream, sync_interval_ms=args.audit_sync_interval_ms, key=trust_options.audit_key(args)
        )
    except (OSError, ValueError, RuntimeError) as exc:
        raise SystemExit(f"onshi: access log: {exc}") from None
    start_retention(log, args.audit_retention_days)
    return log


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


def _credentials(args, host: str) -> grpc.ServerCredentials | None:
    if args.insecure_dev:
        auth.enable_insecure_dev()
        return None
    return auth.credentials_from_args(args, host)


# --- `onshi serve` -----------------------------------------------------------------------


@dataclass
class WorkerTrust:
    """What one `onshi serve` worker serves with."""

    credentials: grpc.ServerCredentials | None
    interceptors: list
    hooks: EligibilityTrust
    log: audit.AuditLog | None


def worker_trust(args, host: str, replays) -> WorkerTrust:
    """In a worker, after fork (gRPC objects and the log's stream are the worker's own)."""
    credentials = _credentials(args, host)
    log = open_access_log(args, f"pid{os.getpid()}")
    return WorkerTrust(credentials, auth.interceptors(), EligibilityTrust(card_verifier(args, replays), log), log)


# --- `onshi ingest-serve` ----------------------------------------------------------------


@dataclass
class IngestTrust:
    """The trust layer of `onshi ingest-serve`, handed to its services."""

    verifier: CardVerifier | None = None
    log: audit.AuditLog | None = None  # this process's own stream
    audit_dir: str | None = None  # every stream, read by ListMyAccess
    sealer: object | None = None  # relay.TokenSealer
    crl_path: str | None = None
    failure_mode: bool = False  # switched by TrustService.SetSystemFailureMode
    failure_reason: str = ""


def ingest_trust(args, host: str) -> tuple[grpc.ServerCredentials | None, list, IngestTrust | None]:
    """(credentials, interceptors, trust) for `onshi ingest-serve`. Without
    trust options: no TLS, no roles, no trust services (loopback only)."""
    from ..core import relay

    trust_options.check_serve_args(args, host)
    if not trust_options.requested(args):
        return None, [], None
    credentials = _credentials(args, host)
    sealer = None
    key_path = args.relay_key or (os.path.join(args.pki, "relay", "signing.key.pem") if args.pki else None)
    if key_path:
        keys = (
            relay.insurer_keys_from_certificates(args.insurer_cert)
            if args.insurer_cert
            else relay.insurer_keys_from_pki(args.pki)
            if args.pki
            else {}
        )
        sealer = relay.TokenSealer(relay.load_signing_key(key_path), keys)
    trust = IngestTrust(
        verifier=card_verifier(args, replay_table(args, create_dir=True)),
        log=open_access_log(args, "ingest"),
        audit_dir=args.audit_dir,
        sealer=sealer,
        crl_path=trust_options.card_ca_files(args)[1],
    )
    return credentials, auth.interceptors(asyncio=True), trust
