"""`onshi` with test-only delays, for tests that need a call or an ack held open.

    python tests/seams.py [--check-delay-ms MS] [--ack-delay-ms MS] -- serve|ingest-serve ...

The delays are patched into this process before the command runs (a worker of
`onshi serve` is forked from it and inherits them); the servers themselves
have no option for them.

* `--check-delay-ms`: every EligibilityService check sleeps this long before
  it is answered (the graceful-shutdown tests need calls in flight).
* `--ack-delay-ms`: every store commit returns this much later, so acks wait
  after the commit that holds their updates (the crash test's SIGKILL lands
  between a commit and its acks).
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from pathlib import Path

SEAMS = str(Path(__file__).resolve())


def delay_checks(seconds: float) -> None:
    from onshi.server.eligibility_service import EligibilityAnswers

    for name in ("check_by_card", "check_by_number"):
        answer = getattr(EligibilityAnswers, name)

        @functools.wraps(answer)
        def slow(self, *args, _answer=answer, **kwargs):
            time.sleep(seconds)
            return _answer(self, *args, **kwargs)

        setattr(EligibilityAnswers, name, slow)


def delay_commits(seconds: float) -> None:
    from onshi.core.writer import Writer

    apply = Writer.apply

    @functools.wraps(apply)
    def late(self, change):
        result = apply(self, change)
        time.sleep(seconds)
        return result

    Writer.apply = late


def main(argv: list[str]) -> int:
    if "--" not in argv:
        raise SystemExit("usage: seams.py [--check-delay-ms MS] [--ack-delay-ms MS] -- ONSHI-ARGS")
    cut = argv.index("--")
    parser = argparse.ArgumentParser(prog="seams.py")
    parser.add_argument("--check-delay-ms", type=float, default=0.0)
    parser.add_argument("--ack-delay-ms", type=float, default=0.0)
    args = parser.parse_args(argv[:cut])
    if args.check_delay_ms:
        delay_checks(args.check_delay_ms / 1000.0)
    if args.ack_delay_ms:
        delay_commits(args.ack_delay_ms / 1000.0)
    from onshi.cli import main as onshi

    return onshi(argv[cut + 1 :])


if __name__ == "__main__":
    if sys.path and Path(sys.path[0]).resolve() == Path(SEAMS).parent:
        del sys.path[0]  # run as a script: the tests' own modules must not shadow anything
    sys.exit(main(sys.argv[1:]))
