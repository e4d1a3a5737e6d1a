"""`onshi gen`: a deterministic synthetic population into a new store (onshi.core.gen)."""

from __future__ import annotations

import json
import os
import sys

from ..core.gen import examples, generate


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "gen", help="generate a deterministic synthetic population into a store", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--persons", type=int, default=100_000, help="number of persons (default 100000)")
    p.add_argument("--out", required=True, help="store directory (must not hold a store yet)")
    p.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    p.add_argument("--progress", action="store_true", help="show the progress bar even when stderr is not a tty")
    p.add_argument("--show", action="store_true", help="only print how to query the store at --out (from gen.json)")
    p.set_defaults(func=_run)


def _run(args) -> int:
    if args.show:
        try:
            with open(os.path.join(args.out, "gen.json")) as f:
                print(examples(json.load(f)))
        except (OSError, ValueError) as exc:
            print(f"onshi gen: no gen.json in {args.out}: {exc}", file=sys.stderr)
            return 1
        return 0
    if args.persons < 1:
        print("onshi gen: --persons must be at least 1", file=sys.stderr)
        return 2
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        print(f"onshi gen: {args.out} is not a directory", file=sys.stderr)
        return 2
    if os.path.exists(os.path.join(args.out, "data.mdb")):
        print(f"onshi gen: {args.out} already holds a store; choose an empty directory", file=sys.stderr)
        return 2
    info = generate(args.out, args.persons, args.seed, progress=args.progress or sys.stderr.isatty())
    print(
        f"persons {info['persons']:,}  qualifications {info['qualifications']:,}  cards linked "
        f"{info['cards_linked']:,}  insurers {info['insurers']:,}"
    )
    print(
        f"bytes on disk {info['bytes']:,} ({info['bytes_per_person']:,} per person)  "
        f"{info['seconds']:,} s  {info['persons_per_second']:,} persons/s"
    )
    print(examples(info))
    return 0
