"""Where the trust layer's in-server cost comes from (issue 5): context switches
and CPU per check per configuration, at a fixed offered rate.

For each configuration of bench/trust.py (same server, same requests) this
drives `--rate` checks/s for `--checks` checks and reports, for the worker
process: CPU µs per check and context switches per check (voluntary +
nonvoluntary, summed over /proc/<pid>/task/*/status), interleaved over
`--rounds` rounds (median). With --perf, `perf stat -e
context-switches,cpu-migrations,task-clock` runs on the worker during the
last round of each configuration; PERF_EVENTS replaces the event list, e.g.
with GIL acquisitions after `perf probe -x <libpython3.11.so> --add take_gil`:
PERF_EVENTS=context-switches,task-clock,probe_libpython3:take_gil,syscalls:sys_enter_futex,syscalls:sys_enter_fdatasync
(a uprobe costs a trap per hit: read CPU from rounds without --perf).
--baseline ONSHI runs every configuration also on another checkout's server,
interleaved, for before/after figures from one session.

    .venv/bin/python bench/trust_switches.py [--rate 2000] [--checks 20000] [--rounds 2]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common
import trust


def switches(pid: int) -> int:
    """Voluntary + nonvoluntary context switches over all threads of pid."""
    total = 0
    task = Path(f"/proc/{pid}/task")
    for t in task.iterdir():
        try:
            for line in (t / "status").read_text().splitlines():
                if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                    total += int(line.split()[1])
        except FileNotFoundError:  # a thread that ended meanwhile
            continue
    return total


def per_thread(pid: int) -> dict[str, list[float]]:
    """Thread name (digits dropped) -> [run ns (schedstat), switches], summed."""
    out: dict[str, list[float]] = {}
    for t in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = "".join(c for c in (t / "comm").read_text().strip() if not c.isdigit())
            run_ns = int((t / "schedstat").read_text().split()[0])
            sw = 0
            for line in (t / "status").read_text().splitlines():
                if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                    sw += int(line.split()[1])
        except FileNotFoundError:
            continue
        acc = out.setdefault(name, [0.0, 0.0, 0])
        acc[0] += run_ns
        acc[1] += sw
        acc[2] += 1
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checks", type=int, default=20000)
    parser.add_argument("--rate", type=float, default=2000)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--configs", default="plain,mtls-serial,mtls-proof,mtls-proof-log,mtls-proof-nosync")
    parser.add_argument("--perf", action="store_true", help="perf stat on the worker in the last round")
    parser.add_argument("--perf-record", metavar="DIR", help="perf record -g on the worker in the last round, "
                        "one DIR/<config>.data per configuration")
    parser.add_argument("--baseline", metavar="ONSHI",
                        help="also run every configuration on this `onshi` executable (e.g. another checkout's "
                             ".venv/bin/onshi), named before:<config>, interleaved in the same rounds")
    args = parser.parse_args()
    wanted = args.configs.split(",")
    with tempfile.TemporaryDirectory(prefix="onshi-trust-switches-") as tmpdir:
        tmp = Path(tmpdir)
        s = trust.setup(tmp)
        store, keys, operator, facility, tls = s.store, s.keys, s.operator, s.facility, s.tls
        serial = trust.serial_requests(args.checks)
        all_configs = {
            "plain": ([], None, False),
            "mtls-serial": (tls, operator, False),
            "mtls-proof": (tls, facility, True),
            "mtls-proof-log": (tls + ["--audit-dir", str(tmp / "audit-sync")], facility, True),
            "mtls-proof-nosync": (tls + ["--audit-dir", str(tmp / "audit-nosync")], facility, True),
        }
        configs = [(name, *all_configs[name]) for name in wanted]
        started: list = []  # all stopped in the finally below, even if a later one fails to start

        def start(name, extra, creds):
            started.append(trust.Running(name, store, extra, creds, args.threads))
            return started[-1]

        rows: dict[str, list[tuple[float, float]]] = {}
        perf_out: dict[str, str] = {}
        split: dict[str, dict] = {}
        try:
            running = [start(name, extra, creds) for name, extra, creds, _ in configs]
            if args.baseline:
                own = common.onshi_cmd
                common.onshi_cmd = lambda: [args.baseline]
                try:
                    before = [(f"before:{name}", [e.replace("/audit-", "/before-audit-") for e in extra], creds,
                               proof) for name, extra, creds, proof in configs]
                    before_running = [start(name, extra, creds) for name, extra, creds, _ in before]
                finally:
                    common.onshi_cmd = own
                # Alternate in every round: before:x, x, before:y, y ...
                configs = [c for pair in zip(before, configs) for c in pair]
                running = [r for pair in zip(before_running, running) for r in pair]
            rows.update({name: [] for name, *_ in configs})
            for r, (_, _, _, proof) in zip(running, configs):
                trust.drive(r.calls, trust.proof_requests(keys, 300) if proof else serial[:300])
            for round_no in range(args.rounds):
                for r, (name, _, _, proof) in zip(running, configs):
                    reqs = trust.proof_requests(keys, args.checks) if proof else serial
                    worker = r.server.worker_pids()[0]
                    perf = None
                    if args.perf and round_no == args.rounds - 1:
                        perf = subprocess.Popen(["perf", "stat", "-e", os.environ.get("PERF_EVENTS", "context-switches,cpu-migrations,task-clock"),
                                                 "-p", str(worker)], stderr=subprocess.PIPE, text=True)
                    rec = None
                    if args.perf_record and round_no == args.rounds - 1:
                        os.makedirs(args.perf_record, exist_ok=True)
                        rec = subprocess.Popen(["perf", "record", "-g", "-o",
                                                os.path.join(args.perf_record, name + ".data"), "-p", str(worker)],
                                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                    s0, c0, t0 = switches(worker), common.cpu_seconds(worker), per_thread(worker)
                    trust.drive(r.calls, reqs, args.rate)
                    s1, c1, t1 = switches(worker), common.cpu_seconds(worker), per_thread(worker)
                    if round_no == args.rounds - 1:
                        split[name] = {k: ((v[0] - t0.get(k, [0, 0])[0]) / len(reqs) / 1e3,
                                           (v[1] - t0.get(k, [0, 0])[1]) / len(reqs), v[2])
                                       for k, v in t1.items()}
                    if rec is not None:
                        rec.send_signal(2)
                        rec.wait()
                    if perf is not None:
                        perf.send_signal(2)
                        perf_out[name] = perf.communicate()[1]
                    n = len(reqs)
                    rows[name].append(((c1 - c0) / n * 1e6, (s1 - s0) / n))
                    print(f"round {round_no + 1} {name:18s} {rows[name][-1][0]:6.0f} us CPU/check  "
                          f"{rows[name][-1][1]:5.2f} switches/check", flush=True)
        finally:
            for r in started:
                r.close()
    print(f"load average {os.getloadavg()[0]:.1f}; {common.now_utc()}; worker only; "
          f"{args.rate:.0f} checks/s offered, {args.checks} checks x {args.rounds} rounds")
    for name, vals in rows.items():
        cpu = sorted(v[0] for v in vals)[len(vals) // 2]
        sw = sorted(v[1] for v in vals)[len(vals) // 2]
        print(f"{name:18s} {cpu:6.0f} us CPU/check  {sw:5.2f} switches/check  (rounds "
              + ", ".join(f"{c:.0f}/{s:.1f}" for c, s in vals) + ")")
    for name, threads in split.items():
        print(f"--- per thread (last round) {name}: name(threads) us/check switches/check")
        for k, (us, sw, count) in sorted(threads.items(), key=lambda kv: -kv[1][0]):
            if us >= 0.5 or sw >= 0.05:
                print(f"    {k:24s}({count}) {us:6.1f} us {sw:5.2f} sw")
    for name, text in perf_out.items():
        print(f"--- perf stat {name}\n{text.strip()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
