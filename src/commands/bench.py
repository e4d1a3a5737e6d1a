"""`onshi bench NAME ...`: the benchmarks of bench/ (load, peers, scale, cost,
plot) from the command line. They live beside the source tree, not in the
package (they start servers, Redis and locust, and write bench/RESULTS.md), so
this only finds bench/ in the checkout and hands the arguments over.

    onshi bench load terminal --rate 1000 --duration 60
    onshi bench peers --persons 1000000
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

BENCHMARKS = {
    "load": "locust scenarios against servers started on loopback (terminal, review, insurer, mixed)",
    "peers": "the check chain in SQLite, Redis, and onshi's pure and native engines on the same data",
    "scale": "engine checks/s at 100k, 1M and 10M persons",
    "cost": "server CPU per check vs an empty handler; 1 vs 2 workers",
    "plot": "PNG plots from the recorded figures",
}


def bench_dir() -> Path | None:
    # src/commands/bench.py -> repository root (editable install / checkout)
    here = Path(__file__).resolve().parents[2] / "bench"
    return here if (here / "common.py").exists() else None


def register(subparsers) -> None:
    p = subparsers.add_parser("bench", help="run a benchmark of bench/ (see bench/README.md)",
                              description="Benchmarks (bench/README.md). Arguments after NAME go to "
                                          "bench/NAME.py; try `onshi bench NAME --help`.")
    p.add_argument("name", choices=sorted(BENCHMARKS), metavar="NAME",
                   help="; ".join(f"{k}: {v}" for k, v in BENCHMARKS.items()))
    p.add_argument("args", nargs=argparse.REMAINDER, help="arguments of bench/NAME.py")
    p.set_defaults(func=run)


def run(args) -> int:
    where = bench_dir()
    if where is None:
        print("onshi bench: bench/ not found (benchmarks run from a checkout: pip install -e .)",
              file=sys.stderr)
        return 2
    sys.path.insert(0, str(where))
    spec = importlib.util.spec_from_file_location(f"onshi_bench_{args.name}", where / f"{args.name}.py")
    if spec is None or spec.loader is None:
        print(f"onshi bench: cannot load bench/{args.name}.py", file=sys.stderr)
        return 2
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    saved = sys.argv
    sys.argv = [f"onshi bench {args.name}", *args.args]
    try:
        return int(module.main(args.args) or 0)
    finally:
        sys.argv = saved
