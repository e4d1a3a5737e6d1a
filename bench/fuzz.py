"""Fuzz every RPC of both servers for as long as asked, and count the answers.

    .venv/bin/python bench/fuzz.py --examples 20000 [--seed 1] [--plaintext]

Starts `onshi serve` and `onshi ingest-serve` on a small store as the README
runs them (mTLS with --pki and an access log; `--plaintext`: without any trust
option too), sends `--examples` generated requests spread over every RPC the
servers list (the generator: tests/fuzz_support.py; the suite runs a bounded
share of it, tests/test_fuzz.py), and prints the status counts per server and
every INTERNAL/UNKNOWN with its body. At the end each server must still be up
and answer a known check exactly as before. Exit 1 on any INTERNAL/UNKNOWN, a
dead server or a changed answer. `--record`: the figures into bench/RESULTS.md.
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
    common.add_record_flag(parser)
    args = parser.parse_args(argv)
    failed = False
    rows, bad = [], 0
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
                for t, before in zip(targets, known, strict=True):
                    same = t.alive() and fz.known_answer(t) == before
                    print(
                        f"  {t.name}: {'up' if t.alive() else 'DEAD'}, known check "
                        f"{'answered as before' if same else 'CHANGED'}"
                    )
                    failed |= not same
                failed |= bool(report.bad)
                bad += sum(report.codes[c] for c in ("INTERNAL", "UNKNOWN", "DEADLINE_EXCEEDED"))
                rows.append(
                    (
                        f"{'mTLS + access log' if secure else 'no trust options'}",
                        f"{report.examples:,}",
                        f"{report.seconds:.0f} s",
                        ", ".join(f"{c} {n:,}" for c, n in report.codes.most_common()),
                    )
                )
            finally:
                for t in targets:
                    t.close()
    if args.record:
        verdict = "no INTERNAL/UNKNOWN, both servers up, known checks unchanged" if not failed else "FAILED"
        examples = sum(int(r[1].replace(",", "")) for r in rows)
        common.record_run(
            "Fuzz",
            [
                (
                    f"generated, mutated and garbage requests to every RPC of both servers ({len(rows)} set-ups)",
                    f"{examples:,} calls: {bad:,} INTERNAL/UNKNOWN/DEADLINE_EXCEEDED; {verdict}",
                    f"none, servers up: {'met' if not failed else '**not met**'}",
                )
            ],
            f"{verdict}\n\n" + common.md_table(["servers", "examples", "time", "statuses"], rows),
        )
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
