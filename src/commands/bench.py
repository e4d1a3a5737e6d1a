"""`onshi bench NAME ...`: the benchmarks of bench/ from the command line. They
live beside the source tree, not in the package (they start servers, Redis and
locust, and write bench/RESULTS.md with --record), so this only finds bench/ in
the checkout and hands the arguments over.

    onshi bench load terminal --rate 1000 --duration 60
    onshi bench peers --persons 1000000
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

BENCHMARKS = {
    "engine": "card and number checks/s: native, pure and SQLite on one store",
    "scale": "engine checks/s at 100k, 1M and 10M persons",
    "peers": "the check chain in SQLite, Redis, and onshi's pure and native engines on the same data",
    "server": "grpc's threaded server vs grpc.aio, each against an empty handler",
    "cost": "server CPU per check vs an empty handler; 1 vs 2 workers",
    "load": "locust scenarios against servers started on loopback (terminal, review, insurer, mixed)",
    "claims": "claims/s through one VerifyClaims stream, and in-process",
    "ingest": "durable updates/s through ingest-serve, and the visibility lag",
    "trust": "the trust layer's share of server CPU per check (paired, sequential, in-process)",
    "registry": "the registry match on a simulated stream with ground truth",
    "fuzz": "generated and garbage requests to every RPC of both servers",
    "terminal_card": "one card check through a private pcscd, vpcd and the virtual card (prints)",
    "ab_build": "two builds of the native extensions A/B on the engine's and the claims pass's hot paths (prints)",
    "plot": "PNG plots from the recorded figures",
}


def bench_dir() -> Path | None:
    # src/commands/bench.py -> repository root (editable install / checkout)
    here = Path(__file__).resolve().parents[2] / "bench"
    return here if (here / "common.py").exists() else None


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "bench",
        help="run a benchmark of bench/ (see bench/README.md)",
        description="Benchmarks (bench/README.md). Arguments after NAME go to "
        "bench/NAME.py; try `onshi bench NAME --help`.",
    )
    p.add_argument(
        "name", choices=sorted(BENCHMARKS), metavar="NAME", help="; ".join(f"{k}: {v}" for k, v in BENCHMARKS.items())
    )
    p.add_argument("args", nargs=argparse.REMAINDER, help="arguments of bench/NAME.py")
    p.set_defaults(func=run)


def run(args) -> int:
    where = bench_dir()
    if where is None:
        print("onshi bench: bench/ not found (benchmarks run from a checkout: pip install -e .)", file=sys.stderr)
        return 2
    sys.path.insert(0, str(where))
    spec = importlib.util.spec_from_file_location(f"onshi_bench_{args.name}", where / f"{args.name}.py")
    if spec is None or spec.loader is None:
        print(f"onshi bench: cannot load bench/{args.name}.py", file=sys.stderr)
        return 2
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # as an import would: dataclasses look their module up there
    spec.loader.exec_module(module)
    saved = sys.argv
    sys.argv = [f"onshi bench {args.name}", *args.args]
    try:
        return int(module.main(args.args) or 0)
    finally:
        sys.argv = saved
