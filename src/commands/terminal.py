"""`onshi terminal check` and `onshi terminal watch`: the reception desk's tool.

Exit codes are the outcome's (onshi.terminal.screen.Outcome, docs/TERMINAL.md):
0 valid, 12-15 the other 資格有効性 answers (10 + the code, as `onshi check`),
20-28 card/PIN/reader, 30-33 network/server/input, 1 unexpected, 2 usage.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys

EXIT_USAGE = 2


def _server_arguments(p: argparse.ArgumentParser) -> None:
    env = os.environ.get
    g = p.add_argument_group("eligibility service (mTLS)")
    g.add_argument("--server", default=env("ONSHI_SERVER", "127.0.0.1:50051"), help="host:port ($ONSHI_SERVER)")
    g.add_argument(
        "--pki",
        default=env("ONSHI_PKI"),
        help="an `onshi pki init` directory: uses onshi/ca.pem and onshi/facility-<CODE>.pem ($ONSHI_PKI)",
    )
    g.add_argument(
        "--facility",
        default=env("ONSHI_FACILITY"),
        help="this facility's 10-digit code (医療機関コード) ($ONSHI_FACILITY); "
        "read from the client certificate when not given",
    )
    g.add_argument("--tls-ca", default=env("ONSHI_TLS_CA"), help="CA of the server certificate (PEM)")
    g.add_argument("--tls-cert", default=env("ONSHI_TLS_CERT"), help="this terminal's client certificate (PEM)")
    g.add_argument("--tls-key", default=env("ONSHI_TLS_KEY"), help="its private key (PEM)")
    g.add_argument(
        "--insecure-dev",
        action="store_true",
        help="plaintext to an `onshi serve --insecure-dev` demo server on loopback",
    )
    g.add_argument("--timeout", type=float, default=5.0, help="seconds per call (default 5)")


def _config(args):
    from ..terminal.client import ServerConfig

    if args.pki and args.facility and not args.tls_cert:
        config = ServerConfig.from_pki(args.pki, args.facility, target=args.server, timeout=args.timeout)
    else:
        config = ServerConfig(target=args.server, facility_code=args.facility, timeout=args.timeout)
    if args.pki and not args.tls_ca:
        config.ca = os.path.join(args.pki, "onshi", "ca.pem")
    config.ca = args.tls_ca or config.ca
    config.cert = args.tls_cert or config.cert
    config.key = args.tls_key or config.key
    config.insecure_dev = args.insecure_dev
    return config


def _date(text: str | None, name: str) -> dt.date | None:
    if text is None:
        return None
    try:
        return dt.date.fromisoformat(text.strip())
    except ValueError:
        print(f"onshi terminal: {name} must be YYYY-MM-DD, not {text!r}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE) from None


def register(subparsers) -> None:
    t = subparsers.add_parser(
        "terminal", help="clinic terminal: read a My Number card or a typed number, show the result"
    )
    sub = t.add_subparsers(dest="terminal_command", required=True, metavar="COMMAND")

    c = sub.add_parser(
        "check",
        help="check one patient (card + PIN, or typed insurance number)",
        description="Exit codes: 0 valid; 12 invalid; 13 invalid, newer exists; 14 no record; "
        "15 multiple; 20 no card; 21 card removed; 22 not a My Number card; 23 PIN "
        "incorrect; 24 PIN blocked; 25 certificate expired; 26 certificate revoked; "
        "27 card not verified; 28 reader unavailable; 30 service unreachable; 31 "
        "terminal refused; 32 input rejected; 1 unexpected error; 2 usage.",
    )
    what = c.add_mutually_exclusive_group(required=True)
    what.add_argument("--card", action="store_true", help="read the My Number card on the reader (asks the PIN)")
    what.add_argument(
        "--number",
        nargs=4,
        metavar=("INSURER", "SYMBOL", "NUMBER", "BRANCH"),
        help='insurance-card number; pass "" for an absent symbol or branch',
    )
    c.add_argument("--birth", metavar="YYYY-MM-DD", help="birth date (required with --number)")
    c.add_argument("--as-of", metavar="YYYY-MM-DD", help="visit date (default: today in Japan)")
    c.add_argument(
        "--reader",
        help="use the reader whose name contains this text (default: the first with a card)",
    )
    c.add_argument("--json", action="store_true", help="print the result as JSON for receipt/HIS systems")
    _server_arguments(c)
    c.set_defaults(func=_check)

    w = sub.add_parser(
        "watch",
        help="folder mode: answer each request file in REQ_DIR with a result file in RES_DIR",
    )
    w.add_argument("req_dir", metavar="REQ_DIR")
    w.add_argument("res_dir", metavar="RES_DIR")
    w.add_argument("--once", action="store_true", help="answer what is there, then exit")
    w.add_argument("--interval", type=float, default=0.5, help="seconds between scans when idle")
    _server_arguments(w)
    w.set_defaults(func=_watch)


def _check(args) -> int:
    from ..terminal import check, screen

    as_of = _date(args.as_of, "--as-of")
    config = _config(args)
    if args.card:
        if args.birth:
            print("onshi terminal check: --birth goes with --number", file=sys.stderr)
            return EXIT_USAGE
        result = check.check_card(config, reader_name=args.reader, as_of=as_of)
    else:
        birth = _date(args.birth, "--birth")
        if birth is None:
            print("onshi terminal check: --number needs --birth YYYY-MM-DD", file=sys.stderr)
            return EXIT_USAGE
        insurer_number, symbol, number, branch = args.number  # nargs=4
        result = check.check_number(config, insurer_number, symbol, number, branch, birth, as_of=as_of)
    sys.stdout.write(screen.to_json(result) if args.json else screen.render_text(result))
    sys.stdout.flush()
    return result.exit_code


def _watch(args) -> int:
    from ..terminal import watch

    return watch.watch(args.req_dir, args.res_dir, _config(args), once=args.once, interval=args.interval)
