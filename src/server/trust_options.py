"""The trust layer's command-line options, shared by `onshi serve` and `onshi
ingest-serve`, and the checks made on them before serving: a server that
cannot run as asked stops at once with one line, before any worker starts.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import NoReturn

from ..core import audit, cardproof
from . import auth


def add_arguments(parser, relay: bool = False) -> None:
    auth.add_arguments(parser)
    g = parser.add_argument_group("trust (card proof, access log)")
    if relay:
        g.add_argument("--relay-key", help="relay Ed25519 signing key (default with --pki: PKI/relay/signing.key.pem)")
        g.add_argument(
            "--insurer-cert",
            action="append",
            default=[],
            help="insurer client certificate(s) whose keys relay tokens are sealed to "
            "(default with --pki: PKI/onshi/insurer-*.pem)",
        )
    g.add_argument(
        "--jpki-ca",
        action="append",
        default=[],
        help="JPKI CA certificate(s) for card proofs (default with --pki: PKI/jpki/ca.pem)",
    )
    g.add_argument("--crl", help="card revocation list file (default with --pki: PKI/jpki/crl.der)")
    g.add_argument(
        "--replay-table",
        help="card-proof replay table shared by every server of this deployment on this host "
        f"(default: DATA/{cardproof.REPLAY_TABLE_FILE}; give both servers the same file)",
    )
    g.add_argument("--audit-dir", help="access log directory (each process writes its own stream)")
    g.add_argument(
        "--audit-key",
        help="audit key file (`onshi audit keygen`; keep it off the log's disk): MACs "
        "the heads and the manifest so deletions cannot be covered up",
    )
    g.add_argument(
        "--audit-retention-days",
        type=float,
        default=audit.DEFAULT_RETENTION_DAYS,
        help="drop access-log segments older than this (default 5 years), at start and daily",
    )
    g.add_argument(
        "--audit-sync-interval-ms",
        type=_sync_interval,
        default=audit.DEFAULT_SYNC_INTERVAL_MS,
        help="at most one fdatasync of the access log per interval (default "
        f"{audit.DEFAULT_SYNC_INTERVAL_MS:g} ms; 0: sync each batch at once): under load a "
        "sync carries more records, for at most this much added latency",
    )


def _sync_interval(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= audit.MAX_SYNC_INTERVAL_MS:
        raise argparse.ArgumentTypeError(f"must be a number of milliseconds, 0-{audit.MAX_SYNC_INTERVAL_MS:g}")
    return value


def requested(args) -> bool:
    """Any trust option given: without one, a server stays plain (loopback only)."""
    return bool(
        getattr(args, "pki", None)
        or getattr(args, "tls_cert", None)
        or getattr(args, "insecure_dev", False)
        or getattr(args, "audit_dir", None)
        or getattr(args, "jpki_ca", None)
    )


def card_ca_files(args) -> tuple[list[str], str | None]:
    """The JPKI CA certificates and card revocation list the options name."""
    cas = list(args.jpki_ca or [])
    crl = args.crl
    if getattr(args, "pki", None):
        cas = cas or [os.path.join(args.pki, "jpki", "ca.pem")]
        crl = crl or os.path.join(args.pki, "jpki", "crl.der")
    return cas, crl


def audit_key(args) -> bytes | None:
    path = getattr(args, "audit_key", None)
    return audit.load_key(path) if path else None


def refuse(line: str) -> NoReturn:
    """A server option that names a file with the wrong content: one line, exit 2
    (as the CLI does for a path that cannot be read)."""
    print(line, file=sys.stderr, flush=True)
    raise SystemExit(2)


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
                raise ValueError(
                    f"the audit key {args.audit_key} is inside the access log directory: "
                    "whoever can rewrite the log could then forge its MACs"
                )
            os.makedirs(log_dir, exist_ok=True)
            if os.stat(key_path).st_dev == os.stat(log_dir).st_dev:
                print(
                    f"onshi: WARNING the audit key {args.audit_key} is on the same file system as "
                    f"{args.audit_dir}: keep it on another medium (docs/TRUST.md)",
                    file=sys.stderr,
                    flush=True,
                )
        audit.check_manifest(args.audit_dir, key)
    except (ValueError, audit.ManifestError) as exc:
        refuse(f"onshi: access log: {exc}")


def check_serve_args(args, host: str) -> None:
    """In the parent, before fork: refuse bad combinations, print the dev warning.
    Without any trust option the server stays as before (no TLS, no roles), and
    then only on loopback."""
    if getattr(args, "insecure_dev", False):
        auth.check_insecure_bind(host)
        check_audit_args(args)
        return
    if not requested(args):
        if not auth.is_loopback(host):
            raise SystemExit(
                f"onshi: without mTLS (--pki or --tls-cert/--tls-key/--client-ca) the server "
                f"binds loopback only, not {host}"
            )
        print(
            "onshi: WARNING no mTLS configured: plaintext, callers not authenticated, no access log "
            "(loopback only; use --pki DIR for the trust layer)",
            file=sys.stderr,
            flush=True,
        )
        return
    if not (args.pki or (args.tls_cert and args.tls_key and args.client_ca)):
        raise SystemExit(
            "onshi: mTLS needs --tls-cert, --tls-key and --client-ca (or --pki DIR); "
            "--insecure-dev for a loopback-only demo"
        )
    auth.check_caller_crl(args)
    check_audit_args(args)
