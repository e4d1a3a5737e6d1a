"""`onshi` command line. Each command group lives in onshi.commands and
registers its subcommands through `register(subparsers)`, so this file stays a
table of contents rather than a pile of handlers."""

from __future__ import annotations

import argparse
import os
import sys

from .commands import audit, bench, claims, gen, ingest, pki, serve, terminal

# gRPC's C core logs a refused TLS handshake at INFO on stderr, beside the one
# line a client command prints about it; its documented default is ERROR.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

# In the order `onshi --help` lists them; each subparser sets func=callable(args) -> int.
COMMANDS = (
    gen,  # onshi gen
    serve,  # onshi serve, onshi check
    claims,  # onshi claims verify
    ingest,  # onshi ingest-serve, onshi ingest-file
    pki,  # onshi pki init|card|revoke (test PKI)
    audit,  # onshi audit verify|anchor|compact|show|keygen|seal
    terminal,  # onshi terminal check|watch (clinic terminal)
    bench,  # onshi bench NAME
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="onshi", description="Online insurance-qualification checks (オンライン資格確認)."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    except OSError as exc:
        # A path given on the command line that cannot be read or written (a
        # missing PKI, a file where a directory belongs): one line, not a traceback.
        where = f": {exc.filename}" if exc.filename else ""
        print(f"onshi {args.command}: {exc.strerror or exc}{where}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
