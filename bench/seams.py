"""`onshi` with bench-only changes to the trust layer, for comparisons that
production must never run with (bench/trust.py).

    python bench/seams.py [--no-sync] [--wait-ms MS] -- serve ...

The changes are patched into this process before the command runs (a worker
of `onshi serve` is forked from it and inherits them); the server has no
option for them.

* `--no-sync`: the access log is written but never fdatasync'ed (what the sync
  costs).
* `--wait-ms`: with `--audit-dir`, each check sleeps this long where it would
  write its access record, and writes none (what a handler that blocks costs
  the threaded gRPC server, whatever it waits for).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

SEAMS = str(Path(__file__).resolve())


def no_sync() -> None:
    from onshi.core import audit

    class UnsyncedLog(audit.AuditLog):
        def __init__(self, *args, **kwargs):
            kwargs["durable"] = False
            super().__init__(*args, **kwargs)

    audit.AuditLog = UnsyncedLog


def wait_instead_of_logging(seconds: float) -> None:
    from onshi.server.eligibility_trust import EligibilityTrust

    def audit(self, *args):
        time.sleep(seconds)

    EligibilityTrust.audit = audit


def main(argv: list[str]) -> int:
    if "--" not in argv:
        raise SystemExit("usage: seams.py [--no-sync] [--wait-ms MS] -- ONSHI-ARGS")
    cut = argv.index("--")
    parser = argparse.ArgumentParser(prog="seams.py")
    parser.add_argument("--no-sync", action="store_true")
    parser.add_argument("--wait-ms", type=float, default=0.0)
    args = parser.parse_args(argv[:cut])
    if args.no_sync:
        no_sync()
    if args.wait_ms:
        wait_instead_of_logging(args.wait_ms / 1000.0)
    from onshi.cli import main as onshi

    return onshi(argv[cut + 1 :])


if __name__ == "__main__":
    if sys.path and Path(sys.path[0]).resolve() == Path(SEAMS).parent:
        del sys.path[0]  # run as a script: the bench's own modules must not shadow anything
    sys.exit(main(sys.argv[1:]))
