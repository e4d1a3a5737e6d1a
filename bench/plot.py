"""Plots from the recorded figures (bench/data/*.jsonl, appended by the
benchmarks), written beside bench/RESULTS.md:

  * load-terminal.png - terminal check latency percentiles (p50, p95, p99, max)
    against offered load, from the latest sweep (`bench/load.py terminal
    --sweep ...`) or every terminal run on record, with the 10 ms target;
  * peers.png - card checks/s of each peer from the latest peers run (log
    scale), with bytes per person.

    python bench/plot.py                       (or: onshi bench plot)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="onshi bench plot", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--out", type=Path, default=common.BENCH, help="directory for the PNGs (default bench/)")
    return p.parse_args(argv)


def latest_sweep(runs: list[dict]) -> list[dict]:
    """Terminal runs of the most recent sweep command (same command line), else
    the latest run per offered rate."""
    terminal = [r for r in runs if r.get("scenario") == "terminal" and r.get("count")]
    if not terminal:
        return []
    sweeps = [r for r in terminal if "--sweep" in r.get("command", "")]
    if sweeps:
        last = sweeps[-1]["command"]
        chosen = [r for r in sweeps if r["command"] == last]
        # the last occurrence of that sweep only
        chosen = chosen[-len(last.split("--sweep", 1)[1].split()[0].split(",")) :]
    else:
        by_rate = {}
        for r in terminal:
            by_rate[r["offered"]] = r
        chosen = list(by_rate.values())
    return sorted(chosen, key=lambda r: r["offered"])


def plot_load(runs: list[dict], out: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = latest_sweep(runs)
    if not points:
        print("plot: no terminal load runs recorded yet (bench/load.py terminal --sweep ...)")
        return None
    x = [r["offered"] for r in points]
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    for key, style in (("p50", "o-"), ("p95", "s-"), ("p99", "^-"), ("max", "x:")):
        ax.plot(x, [r[key] for r in points], style, label=key)
    ax.axhline(10, color="red", linestyle="--", linewidth=1, label="target p99 ≤ 10 ms")
    ax.axvline(1000, color="grey", linestyle=":", linewidth=1)
    ax.set_yscale("log")
    ax.set_xlabel("offered load, checks/s (terminal mix; locust on the same 2 cores)")
    ax.set_ylabel("latency, ms (log)")
    first = points[0]
    data = f"{first['persons']:,} persons" if first.get("persons") else "custom store"
    if first.get("terminals"):
        data += (
            f", {first['terminals']} locust users"
            if len({r.get("terminals") for r in points}) == 1
            else ", locust users = rate/10"
        )
    ax.set_title(
        f"terminal: latency vs offered load — {first['workers']} workers, {data}\n{first['date']}, {first['machine']}",
        fontsize=8,
    )
    for r in points:
        ax.annotate(
            f"{r['achieved']:.0f}/s",
            (r["offered"], r["p50"]),
            textcoords="offset points",
            xytext=(0, -12),
            ha="center",
            fontsize=7,
            color="dimgray",
        )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = out / "load-terminal.png"
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_peers(runs: list[dict], out: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not runs:
        print("plot: no peers run recorded yet (bench/peers.py)")
        return None
    r = runs[-1]
    order = ["native batch", "native", "pure", "SQLite", "Redis pipelined", "Redis"]
    names = [n for n in order if n in r["checks_per_s"]]
    values = [r["checks_per_s"][n] for n in names]
    colors = ["#1f77b4" if n.startswith("native") else "#7f7f7f" if n == "pure" else "#ff7f0e" for n in names]
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    bars = ax.barh(names[::-1], values[::-1], color=colors[::-1])
    for bar, v in zip(bars, values[::-1], strict=True):
        ax.text(v, bar.get_y() + bar.get_height() / 2, f" {v:,.0f}/s", va="center", fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("card checks per CPU-second (log); answers ready to send")
    b = r["bytes_per_person"]
    sizes = ", ".join(f"{k} {v:,.0f}" for k, v in b.items())
    ax.set_title(
        f"peers on {r['persons']:,} persons — native ÷ SQLite {r['native_over_sqlite']}×, "
        f"÷ Redis pipelined {r['native_over_redis_pipelined']}×\nbytes/person: {sizes}; "
        f"{r['date']}",
        fontsize=8,
    )
    ax.set_xlim(right=max(values) * 4)
    fig.tight_layout()
    path = out / "peers.png"
    fig.savefig(path)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    made = [
        p
        for p in (plot_load(common.load_records("load"), args.out), plot_peers(common.load_records("peers"), args.out))
        if p
    ]
    for p in made:
        print(f"plot: wrote {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
