"""Cost of the trust layer (issue 5), each configuration paired with the bare
service under the same conditions.

bench/trust.py measures configurations one after another; on this shared
2-core VM the cost of the *same* plain check moves by ±20 % between rounds a
few seconds apart, as much as the trust layer itself. Here every round runs
the bare service (`plain`) and one trust configuration *at the same time*,
each offered `--rate` checks/s from its own client threads, so whatever the
machine does meanwhile falls on both. Per pair:

    share = (CPU/check of the configuration - CPU/check of plain) / CPU/check of the configuration

(server CPU: supervisor + worker, /proc utime+stime). The median over
`--rounds` is reported per configuration; `mtls-proof-log` is the whole trust
layer (mTLS + roles + card proof with a cached certificate + durable access
log); target <= 30 %.

    .venv/bin/python bench/trust_paired.py [--rate 1000] [--checks 3000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common
import trust
from onshi.core import audit

SECTION = "Trust (issue 5)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=1000.0, help="checks/s offered to each server of a pair")
    parser.add_argument("--checks", type=int, default=3000, help="checks per server per pair")
    parser.add_argument("--threads", type=int, default=8, help="client threads per server")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-results", action="store_true", help="print only; do not append to RESULTS.md")
    args = parser.parse_args()
    if not 100 <= args.checks <= 50_000 or not 10 <= args.rate <= 20_000:
        parser.error("--checks must be 100-50000 and --rate 10-20000")
    with tempfile.TemporaryDirectory(prefix="onshi-trust-paired-") as tmpdir:
        tmp = Path(tmpdir)
        s = trust.setup(tmp)
        store, keys = s.store, s.keys
        configs = {"plain": ([], None, False),
                   "mtls-serial": (s.tls, s.operator, False),
                   "mtls-proof": (s.tls, s.facility, True),
                   "mtls-proof-log": (s.tls + ["--audit-dir", str(tmp / "audit")], s.facility, True)}
        running = {}
        try:
            for name, (extra, creds, _) in configs.items():
                running[name] = trust.Running(name, store, extra, creds, args.threads)
            for name, (_, _, proof) in configs.items():  # warm-up: connections, certificate cache
                trust.drive(running[name].calls, trust.proof_requests(keys, 200) if proof
                            else trust.serial_requests(200))
            serial = trust.serial_requests(args.checks)
            pairs: dict[str, list[tuple[float, float]]] = {name: [] for name in configs if name != "plain"}
            for round_no in range(args.rounds):
                for name in pairs:
                    requests = trust.proof_requests(keys, args.checks) if configs[name][2] else serial
                    cpu = pair(running["plain"], serial, running[name], requests, args.rate)
                    pairs[name].append(cpu)
                    print(f"round {round_no + 1}/{args.rounds} plain {cpu[0]:.0f} us, {name} {cpu[1]:.0f} us "
                          f"per check: share {(cpu[1] - cpu[0]) / cpu[1]:.0%}", flush=True)
            errors = {name: r.rounds and sum(x["errors"] for x in r.rounds) for name, r in running.items()}
            kept = {name: min(x["rate"] for x in r.rounds) for name, r in running.items() if r.rounds}
        finally:
            for r in running.values():
                r.close()
        report = audit.verify(str(tmp / "audit"))
    rows = []
    for name, values in pairs.items():
        shares = sorted((c - p) / c for p, c in values)
        rows.append({"config": name, "share": median(shares), "shares": [(c - p) / c for p, c in values],
                     "cpu_us": median(sorted(c for _, c in values)),
                     "plain_us": median(sorted(p for p, _ in values)), "errors": errors.get(name, 0),
                     "min_rate": kept.get(name, 0.0)})
        print(f"{name:16s} {rows[-1]['cpu_us']:6.0f} us/check vs plain {rows[-1]['plain_us']:6.0f} us in the same "
              f"runs: share median {rows[-1]['share']:.0%} (rounds " +
              ", ".join(f"{s:.0%}" for s in rows[-1]["shares"]) + ")", flush=True)
    whole = rows[-1]["share"]
    slowest = min(kept.values())
    print(f"whole trust layer (mtls-proof-log) share {whole:.0%} (target <= 30 %); access log verify "
          f"ok={report.ok} ({report.records} records); slowest round kept {slowest:.0f}/s of {args.rate:.0f}/s")
    if slowest < 0.95 * args.rate:
        print("WARNING: a server did not keep up with the offered rate; the load was not equal "
              "(more --threads)", flush=True)
    if args.no_results:
        return 0
    when = common.now_utc()
    cmd = common.command_line()
    header = ["date", "command", "config", "server CPU µs/check (median)", "plain in the same runs µs",
              "share per round", "share (median)"]
    intro = ("Paired runs (bench/trust_paired.py): each round serves the bare service and one trust "
             "configuration at the same time, each at the offered rate from its own client threads, so the "
             "machine's drift falls on both; share = (configuration − plain) / configuration, per round; "
             "median over rounds. `mtls-proof-log` is the whole trust layer; target ≤ 30 %.")
    for r in rows:
        common.append_results(SECTION + " — paired", intro, header, [
            when, f"`{cmd}`", r["config"], f"{r['cpu_us']:.0f}", f"{r['plain_us']:.0f}",
            " / ".join(f"{s:.0%}" for s in r["shares"]), f"**{r['share']:.0%}**"])
    common.append_note(SECTION + " — paired", (
        f"{when}, {common.machine()}, load average {os.getloadavg()[0]:.1f}, {args.rate:.0f} checks/s offered "
        f"to each server of a pair, {args.rounds} rounds (every server kept ≥ {slowest:.0f} checks/s in every "
        f"round): the whole trust layer costs **{whole:.0%}** of server CPU per check "
        f"({'meets' if whole <= 0.30 else 'misses'} the ≤ 30 % target)."))
    common.record("trust_paired", {"date": when, "command": cmd, "rows": rows})
    return 0


def pair(plain: trust.Running, plain_requests: list[bytes], other: trust.Running, requests: list[bytes],
         rate: float) -> tuple[float, float]:
    """Drive both servers at once; (plain, other) server CPU µs per check."""
    out: dict[str, float] = {}

    def run(r: trust.Running, reqs: list[bytes]) -> None:
        before = common.total_cpu(r.server.pids())
        wall, _, errors = trust.drive(r.calls, reqs, rate)
        out[r.name] = (common.total_cpu(r.server.pids()) - before) / len(reqs) * 1e6
        # Equal load only if both kept up: a client thread waits for its answer.
        r.rounds.append({"errors": errors, "rate": len(reqs) / wall})

    threads = [threading.Thread(target=run, args=(plain, plain_requests)),
               threading.Thread(target=run, args=(other, requests))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out[plain.name], out[other.name]


def median(values: list[float]) -> float:
    values = sorted(values)
    return values[len(values) // 2]


if __name__ == "__main__":
    sys.exit(main())
