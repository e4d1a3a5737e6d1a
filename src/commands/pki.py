"""`onshi pki init|card|revoke`: the test PKI (onshi.core.pki) from the command line."""

from __future__ import annotations

import argparse
import datetime as dt
import os

from cryptography import x509

from ..core.pki import (
    CALLER_CRL,
    init,
    issue_card,
    load_issued,
    now_utc,
    revoke_callers,
    save_issued,
)


def _cmd_init(args: argparse.Namespace) -> int:
    if os.path.exists(os.path.join(args.out, "manifest.json")) and not args.force:
        print(f"{args.out} already holds a test PKI (use --force to replace it)")
        return 1
    manifest = init(args.out)
    print(
        f"test PKI written to {args.out}: {len(manifest['cards'])} cards, "
        f"{len(manifest['clients'])} client certificates (TEST ONLY: never use in production)"
    )
    return 0


def _cmd_card(args: argparse.Namespace) -> int:
    """Issue one more card certificate for a serial already linked in a store."""
    jpki = load_issued(os.path.join(args.pki, "jpki", "ca.pem"), os.path.join(args.pki, "jpki", "ca.key.pem"))
    now = now_utc()
    serial = int(args.serial, 16)
    card = issue_card(jpki, serial, now - dt.timedelta(days=1), now + dt.timedelta(days=args.days))
    save_issued(os.path.join(args.pki, "cards"), args.name or f"serial-{serial:X}", card, der=True)
    return 0


def _cmd_revoke(args: argparse.Namespace) -> int:
    """Revoke caller certificates (facility, insurer, review body, operator)."""
    serials = []
    for path in args.cert or ():
        try:
            with open(path, "rb") as f:
                serials.append(x509.load_pem_x509_certificate(f.read()).serial_number)
        except (OSError, ValueError) as exc:
            print(f"onshi pki revoke: {path}: not a readable PEM certificate ({exc})")
            return 2
    for text in args.serial or ():
        try:
            serials.append(int(text, 16))
        except ValueError:
            print(f"onshi pki revoke: --serial {text}: not a hexadecimal serial")
            return 2
    if not serials:
        print("onshi pki revoke: name a certificate (--cert PEM) or a serial (--serial HEX)")
        return 2
    path = args.crl or os.path.join(args.pki, CALLER_CRL)
    try:
        revoked = revoke_callers(args.pki, serials, path)
    except (OSError, ValueError) as exc:
        print(f"onshi pki revoke: {exc}")
        return 2
    print(
        f"revoked {', '.join(format(s, 'x') for s in serials)}; {path} now lists {len(revoked)} "
        "caller certificates (servers given it as --caller-crl reload it within a second, or on SIGHUP)"
    )
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("pki", help="test PKI: JPKI card certificates, onshi CA, client certificates")
    sub = p.add_subparsers(dest="pki_command", required=True)
    i = sub.add_parser("init", help="create a test JPKI CA, cards, onshi CA, server and client certificates")
    i.add_argument("--out", required=True, help="directory to write (layout in docs/TRUST.md)")
    i.add_argument("--force", action="store_true", help="replace an existing test PKI")
    i.set_defaults(func=_cmd_init)
    c = sub.add_parser("card", help="issue a card certificate for a given serial (hex)")
    c.add_argument("--pki", required=True)
    c.add_argument("--serial", required=True)
    c.add_argument("--name")
    c.add_argument("--days", type=int, default=365 * 5)
    c.set_defaults(func=_cmd_card)
    r = sub.add_parser("revoke", help="revoke caller certificates: add them to the onshi CA's CRL and write it")
    r.add_argument("--pki", required=True, help="the PKI directory holding onshi/ca.pem and ca.key.pem")
    r.add_argument("--cert", action="append", help="a caller certificate (PEM) to revoke; repeatable")
    r.add_argument("--serial", action="append", help="a certificate serial (hex) to revoke; repeatable")
    r.add_argument("--crl", help=f"the CRL file to update (default: PKI/{CALLER_CRL})")
    r.set_defaults(func=_cmd_revoke)
