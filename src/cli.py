"""`onshi` command line. Each subsystem registers its own subcommands through a
`register(subparsers)` function listed in COMMAND_MODULES, so this file stays a
table of contents rather than a pile of handlers."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# gRPC's C core logs a refused TLS handshake at INFO on stderr, beside the one
# line a client command prints about it; its documented default is ERROR.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

# module -> it defines register(subparsers); each subparser sets func=callable(args) -> int
COMMAND_MODULES = (
    "onshi.core.gen",          # onshi gen
    "onshi.server.cli",        # onshi serve, onshi check
    "onshi.core.claims_file",  # onshi claims verify (issue 4)
    "onshi.server.ingest_cli", # onshi ingest-serve, onshi ingest-file (issue 3)
    "onshi.core.pki",          # onshi pki init (test PKI, issue 5)
    "onshi.core.audit",        # onshi audit verify|compact|show (issue 5)
    "onshi.terminal.cli",      # onshi terminal check|watch (clinic terminal, issue 6)
    "onshi.server.bench_cli",  # onshi bench NAME: the benchmarks of bench/
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="onshi", description="Online insurance-qualification checks (オンライン資格確認).")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            if exc.name != name:  # a real import error inside the module: show it
                raise
            continue  # subsystem not installed in this build
        module.register(sub)
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
