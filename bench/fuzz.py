"""Fuzz every RPC of both servers for as long as asked, and count the answers.

    .venv/bin/python bench/fuzz.py --examples 20000 [--seed 1] [--plaintext]

Starts `onshi serve` and `onshi ingest-serve` on a small store as the README
runs them (mTLS with --pki and an access log; `--plaintext`: without any trust
option too), sends `--examples` generated requests spread over every RPC the
servers list (the generator: tests/fuzz_support.py; the suite runs a bounded
share of it, tests/test_fuzz.py), and prints the status counts per server and
every INTERNAL/UNKNOWN with its body. At the end each server must still be up
and answer a known check exactly as before. Exit 1 on any INTERNAL/UNKNOWN, a
dead server or a changed answer. `--record` appends the figures to RESULTS.md.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))
sys.path.insert(0, str(BENCH))

import common  # noqa: E402

from tests import fuzz_support as fz  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=20_000, help="calls in all (default 20,000)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--plaintext", action="store_true", help="also fuzz both servers without trust options")
    parser.add_argument("--record", action="store_true", help="append the figures to bench/RESULTS.md")
    args = parser.parse_args(argv)
    failed = False
    lines = []
    setups = (True, False) if args.plaintext else (True,)
    with tempfile.TemporaryDirectory(prefix="onshi-fuzz-") as tmp:
        for secure in setups:
            base = Path(tmp) / ("tls" if secure else "plain")
            base.mkdir()
            targets = fz.start_servers(base, secure=secure)
            try:
                known = [fz.known_answer(t) for t in targets]
                report = fz.run(targets, args.examples // len(setups), args.seed, log=sys.stdout)
                fz.print_report(report)
                for t, before in zip(targets, known):
                    same = t.alive() and fz.known_answer(t) == before
                    print(f"  {t.name}: {'up' if t.alive() else 'DEAD'}, known check "
                          f"{'answered as before' if same else 'CHANGED'}")
                    failed |= not same
                failed |= bool(report.bad)
                lines.append(_row(report, secure))
            finally:
                for t in targets:
                    t.close()
    if args.record:
        _record(lines, failed)
    return 1 if failed else 0


def _row(report, secure: bool) -> str:
    codes = ", ".join(f"{c} {n:,}" for c, n in report.codes.most_common())
    return (f"| {'mTLS + access log' if secure else 'no trust options'} | {report.examples:,} | "
            f"{report.seconds:.0f} s | {codes} |")


def _record(lines: list[str], failed: bool) -> None:
    text = common.RESULTS.read_text()
    head = "\n".join([
        "## Fuzz: every RPC of both servers",
        "",
        f"{common.now_utc()}, {common.machine()}: `{common.command_line()}`"
        f" — {'FAILED' if failed else 'no INTERNAL/UNKNOWN, both servers up, known checks unchanged'}",
        "",
        "| servers | examples | time | statuses |",
        "|---|---:|---:|---|",
        *lines,
        "",
    ])
    title, _, rest = text.partition("\n\n")
    common.RESULTS.write_text(f"{title}\n\n{head}\n{rest}")


if __name__ == "__main__":
    raise SystemExit(main())
