"""Two builds of the native extensions, A/B, on the engine's and the claims pass's
hot paths: processes alternate between the builds so the machine's drift falls on
both (a shared 2-core machine drifts more than a compiler directive moves).

    onshi bench ab_build --other DIR [--persons 300000] [--pairs 6]

DIR holds another build as a package tree (DIR/onshi/ext/*.so beside a copy of
src/); "this" is the checkout's own src/ext. Each process measures, in CPU time
of its thread, card checks in batches of 1,000 and single card checks over the
bench store (`onshi gen`, as bench/engine.py), and the claims pass
(`Verifier.verify_serialized`: native parse, histories, settle, response, ledger
rows) over claims drawn from the same store (as bench/claims.py). Prints the
best and median per build and the ratio this/other; nothing is written.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def measure(store: str, rounds: int) -> dict:
    """One process: ns per check / per claim, best of `rounds`."""
    from pathlib import Path

    import claims as claims_bench  # bench/claims.py
    import engine as engine_bench  # bench/engine.py

    from onshi.core import claims as rules
    from onshi.core.store import open_env
    from onshi.ext import _engine
    from onshi.ext._engine import NativeEngine

    cards, _, _ = engine_bench.sample_queries(Path(store), 50_000, 7)
    claims = claims_bench.sample_claims(Path(store), 20_000, dt.date(2026, 11, 1))
    batches = claims_bench.batches_of(claims, 5_000)
    out = {"file": _engine.__file__}
    env = open_env(store, readonly=True)  # before the native env (one env per store per process)
    native = NativeEngine(store)
    verifier = rules.Verifier(native, env)
    assert verifier.native is not None
    for b in batches[:2]:
        verifier.verify_serialized(b, None, True)
    best = {"batch": [], "single": [], "claims": []}
    for _ in range(rounds):
        t = time.thread_time()
        for i in range(0, len(cards), 1000):
            native.check_by_card_batch(cards[i : i + 1000], 20778)
        best["batch"].append((time.thread_time() - t) / len(cards) * 1e9)
        t = time.thread_time()
        for key in cards[:20_000]:
            native.check_by_card(key, 20778)
        best["single"].append((time.thread_time() - t) / 20_000 * 1e9)
        t = time.thread_time()
        for b in batches:
            verifier.verify_serialized(b, None, True)
        best["claims"].append((time.thread_time() - t) / len(claims) * 1e9)
    for k, v in best.items():
        out[k] = min(v)
    return out


def main(argv: list[str] | None = None) -> int:
    random.seed(1)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--other", required=True, help="package tree of the other build (DIR/onshi/ext/*.so)")
    ap.add_argument("--persons", type=int, default=300_000)
    ap.add_argument("--pairs", type=int, default=6, help="processes per build, alternating")
    ap.add_argument("--rounds", type=int, default=3, help="rounds per process (best kept)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(measure(args.child, args.rounds)))
        return 0
    import common

    store = str(common.dataset(args.persons))
    runs: dict[str, list[dict]] = {"this": [], "other": []}
    for i in range(2 * args.pairs):
        which = ("this", "other")[i % 2]
        env = dict(os.environ)
        if which == "other":
            env["PYTHONPATH"] = os.pathsep.join([os.path.abspath(args.other), env.get("PYTHONPATH", "")])
        done = subprocess.run(
            [sys.executable, __file__, "--other", args.other, "--rounds", str(args.rounds), "--child", store],
            env=env,
            capture_output=True,
            text=True,
            check=True,
            cwd=ROOT,
        )
        runs[which].append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(f"ab: {which:5} {runs[which][-1]}", flush=True)
    print(f"store {store}, {args.pairs} processes per build, {args.rounds} rounds each; CPU ns, best (median)")
    for k, what in (
        ("batch", "card check, batches of 1,000"),
        ("single", "card check, single calls"),
        ("claims", "claim, verify_serialized (native pass)"),
    ):
        a = [r[k] for r in runs["this"]]
        b = [r[k] for r in runs["other"]]
        print(
            f"  {what:40} this {min(a):8.0f} ({statistics.median(a):8.0f})   other {min(b):8.0f} "
            f"({statistics.median(b):8.0f})   this/other best {min(a) / min(b):.3f}, "
            f"median {statistics.median(a) / statistics.median(b):.3f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
