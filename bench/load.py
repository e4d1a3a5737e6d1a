"""Load benchmark: locust headless against servers this script starts itself on
loopback, exact latency percentiles, pass/fail against the targets, one row in
bench/RESULTS.md "Load".

    onshi bench load terminal --rate 1000 --duration 60
    python bench/load.py mixed --rate 1000 --duration 60
    python bench/load.py terminal --sweep 250,500,1000,1500 --duration 20   # for the plot

Scenarios (bench/locust/): terminal (checks), review (claim batches), insurer
(enrollment updates), mixed (all three). --rate is checks/s for terminal and
mixed, claims/s for review, updates/s for insurer.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common
from cost import py_spy, summarize_profile

SCENARIOS = ("terminal", "review", "insurer", "mixed")
VALIDITY = {1: "VALID", 2: "INVALID", 3: "INVALID_NEWER_EXISTS", 4: "NO_RECORD", 5: "MULTIPLE"}  # eligibility.proto
CHECKS = ("CheckByCard", "CheckByNumber")
TARGET_RATE = 1000  # checks/s: about the national weekday-morning peak
TARGET_SECONDS = 60
TARGET_P99_MS = 10.0
AREA = "Load"
HEADER = [
    "scenario",
    "persons",
    "server",
    "offered/s",
    "achieved/s",
    "p50",
    "p95",
    "p99",
    "max",
    "failures",
    "streams",
    "target",
    "CPU µs/check",
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="onshi bench load", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("scenario", choices=SCENARIOS)
    p.add_argument(
        "--rate",
        type=float,
        default=TARGET_RATE,
        help="checks/s (terminal, mixed), claims/s (review), updates/s (insurer); default 1000",
    )
    p.add_argument("--duration", type=float, default=TARGET_SECONDS, help="seconds of load (default 60)")
    p.add_argument("--sweep", help="comma-separated rates: one run per rate on the same servers")
    p.add_argument(
        "--persons",
        type=int,
        default=1_000_000,
        help="dataset size, generated once under bench/out/ (default 1,000,000)",
    )
    p.add_argument("--data", type=Path, help="use this store instead of a generated one (not modified)")
    p.add_argument("--workers", type=int, default=2, help="`onshi serve --workers` (default 2)")
    p.add_argument(
        "--terminals", type=int, help="terminal users; each paced at rate/terminals (default: rate/50, 1-200)"
    )
    p.add_argument(
        "--locust-processes",
        type=int,
        default=2,
        help="locust --processes (default 2: one gevent hub per core; with one, the hub's "
        "hand-offs to grpc's waiting threads add milliseconds at 1,000 checks/s)",
    )
    p.add_argument(
        "--stream-users",
        type=int,
        default=1,
        help="review / insurer users, each one stream (default 1); --rate is split over them",
    )
    p.add_argument("--claim-batch", type=int, default=1000, help="claims per VerifyClaims batch")
    p.add_argument("--claims-per-s", type=float, default=2000, help="background claims/s in mixed")
    p.add_argument("--update-batch", type=int, default=100, help="updates per StreamUpdates batch")
    p.add_argument("--updates-per-s", type=float, default=500, help="background updates/s in mixed")
    p.add_argument(
        "--warmup",
        type=float,
        default=2.0,
        help="seconds after the first answer left out of percentiles and rate (default 2)",
    )
    p.add_argument(
        "--nice",
        type=int,
        default=0,
        help="run servers and locust under `nice -n N` (negative needs root: gives the measured "
        "processes priority over other work on a shared machine; the row says so)",
    )
    p.add_argument(
        "--client",
        choices=("locust", "direct"),
        default="locust",
        help="terminal only: `direct` replaces locust with a plain grpc client (threads, no "
        "gevent) sending the same mix on --terminals connections at the same paced rate, "
        "to tell the server's latency from the load generator's",
    )
    p.add_argument(
        "--profile",
        action="store_true",
        help="py-spy locust and one server worker during the run (where the time goes)",
    )
    common.add_record_flag(p)
    p.add_argument("--out", type=Path, default=common.OUT / "load", help="CSV and raw latency directory")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.nice:
        common.NICE[:] = ["nice", "-n", str(args.nice)]
    rates = [float(r) for r in args.sweep.split(",")] if args.sweep else [args.rate]
    with servers(args) as (eligibility, secondary, data):
        ok = True
        for rate in rates:
            result = run_once(args, rate, eligibility, secondary, data)
            print_result(result)
            ok = ok and result["target_ok"] is not False
            if args.record:
                record(args, result)
    return 0 if ok else 1


# --- servers -------------------------------------------------------------------


@contextlib.contextmanager
def servers(args):
    data = args.data or common.dataset(args.persons)
    needs_secondary = args.scenario in ("review", "insurer", "mixed")
    writes = args.scenario in ("review", "insurer", "mixed")
    work = None
    if writes:
        # Insurer updates and recorded claim verdicts (the apportionment
        # ledger) write to the store: serve a private copy so the cached
        # dataset (and every later run on it) stays as generated.
        work = common.copy_dataset(Path(data), args.out / f"store-{os.getpid()}")
        data = work
    stack = contextlib.ExitStack()
    try:
        if needs_secondary and not common.has_command("ingest-serve"):
            raise SystemExit(
                f"{args.scenario}: `onshi ingest-serve` is not available in this build "
                "(the secondary server has not landed)"
            )
        secondary = stack.enter_context(common.serve_secondary(Path(data))) if needs_secondary else None
        eligibility = stack.enter_context(common.serve_eligibility(Path(data), args.workers))
        yield eligibility, secondary, Path(data)
    finally:
        stack.close()
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)


# --- one run -------------------------------------------------------------------


def run_once(args, rate: float, eligibility, secondary, data: Path) -> dict:
    run_id = time.strftime("%Y%m%d-%H%M%S") + f"-{args.scenario}-{int(rate)}"
    out = args.out / run_id
    raw_dir = out / "raw"
    raw_dir.mkdir(parents=True, exist_ok=True)
    queries = common.sample_queries(common.dataset_dir(args.persons) if args.data is None else args.data)
    queries_path = common.write_queries_file(data, queries, out / "queries.json")

    # The servers this bench starts run --insecure-dev: plaintext, roles declared in metadata.
    env = {
        **os.environ,
        "ONSHI_BENCH_QUERIES": str(queries_path),
        "ONSHI_BENCH_RAW": str(raw_dir),
        "ONSHI_BENCH_INSECURE": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(common.BENCH / "locust"), os.environ.get("PYTHONPATH")])),
    }
    users = 0
    terminals = 0
    if args.scenario in ("terminal", "mixed"):
        # Default: one user per 50 checks/s (20 at the 1,000/s target). Each
        # user is a gevent greenlet blocked in grpc through a thread hand-off;
        # with 100 users at 10/s the client itself added ~15 ms at p99 while the
        # server answered the same load within 1 ms (--client direct; the runs
        # are in docs/INVESTIGATIONS.md, "Load").
        terminals = args.terminals or int(min(200, max(1, rate // 50)))
        users += terminals
        env.update(ONSHI_BENCH_RATE=str(rate), ONSHI_BENCH_TERMINALS=str(terminals))
    if args.scenario in ("review", "mixed"):
        claims = rate if args.scenario == "review" else args.claims_per_s
        env.update(
            ONSHI_BENCH_CLAIM_BATCH=str(args.claim_batch),
            ONSHI_BENCH_CLAIM_RATE=str(claims / args.claim_batch / args.stream_users),
            ONSHI_BENCH_REVIEW_USERS=str(args.stream_users),
        )
        users += args.stream_users
    if args.scenario in ("insurer", "mixed"):
        updates = rate if args.scenario == "insurer" else args.updates_per_s
        env.update(
            ONSHI_BENCH_UPDATE_BATCH=str(args.update_batch),
            ONSHI_BENCH_UPDATE_RATE=str(updates / args.update_batch / args.stream_users),
            ONSHI_BENCH_INSURER_USERS=str(args.stream_users),
        )
        users += args.stream_users
    if secondary is not None:
        env["ONSHI_BENCH_SECONDARY"] = secondary.address

    if args.client == "direct":
        if args.scenario != "terminal":
            raise SystemExit("--client direct is for the terminal scenario")
        return run_direct(args, rate, terminals, eligibility, out, raw_dir)

    argv = [
        *common.locust_cmd(),
        "-f",
        str(common.BENCH / "locust" / f"{args.scenario}.py"),
        "--headless",
        "-u",
        str(users),
        "-r",
        str(users),
        "--run-time",
        f"{int(args.duration)}s",
        "--stop-timeout",
        "10",
        "--csv",
        str(out / "locust"),
        "--only-summary",
        "--host",
        eligibility.address,
        "--loglevel",
        "WARNING",
    ]
    if args.locust_processes > 1:
        # The forked workers talk to their master over a port: a free one on
        # loopback, not locust's default *:5557, or two runs on one machine
        # (a benchmark and someone's smoke test) adopt each other's workers.
        port = str(common.free_port())
        argv += [
            "--processes",
            str(args.locust_processes),
            "--master-bind-host",
            "127.0.0.1",
            "--master-bind-port",
            port,
            "--master-host",
            "127.0.0.1",
            "--master-port",
            port,
        ]
    server_pids = eligibility.worker_pids() + (secondary.pids() if secondary else [])
    cpu_before = {pid: common.total_cpu([pid]) for pid in server_pids}
    print(
        f"bench: {args.scenario} at {rate:g}/s for {args.duration:g} s, {users} users, "
        f"server {eligibility.address}" + (f", secondary {secondary.address}" if secondary else ""),
        flush=True,
    )
    started = time.monotonic()
    children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    profiles = {}
    with open(out / "locust.log", "w") as log:
        proc = subprocess.Popen(common.niced(argv), env=env, stdout=log, stderr=subprocess.STDOUT)
        spies = []
        if args.profile:
            # py-spy (--gil: Python work only) of locust and one eligibility
            # worker over the middle of the run: where a missed target's time goes.
            time.sleep(min(5.0, args.duration / 3))
            seconds = max(2, int(args.duration / 2))
            for who, pid in (("locust", proc.pid), ("server worker", eligibility.worker_pids()[0])):
                spy = py_spy(
                    pid,
                    seconds,
                    out / f"profile-{who.split()[0]}.txt",
                    subprocesses=who == "locust" and args.locust_processes > 1,
                )
                if spy:
                    spies.append((who, spy, out / f"profile-{who.split()[0]}.txt"))
        try:
            code = proc.wait(timeout=args.duration + 120)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
        for who, spy, path in spies:
            with contextlib.suppress(subprocess.TimeoutExpired):
                spy.wait(timeout=30)
            profiles[who] = summarize_profile(path)
    wall = time.monotonic() - started
    children1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    locust_cpu = (children1.ru_utime + children1.ru_stime) - (children0.ru_utime + children0.ru_stime)
    cpu_after = {pid: common.total_cpu([pid]) for pid in server_pids}
    result = summarize(args, rate, out, raw_dir, code, wall)
    result["client"] = "locust"
    result["loadavg"] = os.getloadavg()[0]
    result["eligibility_cpu_s"] = round(sum(cpu_after[p] - cpu_before[p] for p in eligibility.worker_pids()), 2)
    result["locust_cpu_s"] = round(locust_cpu, 2)
    result["profiles"] = profiles
    result["engine"] = _engine_of(eligibility)
    result["users"] = users
    result["terminals"] = terminals
    return result


def run_direct(args, rate: float, connections: int, eligibility, out: Path, raw_dir: Path) -> dict:
    """The terminal mix at the same paced rate from a plain grpc client: one
    sender thread, `connections` channels, futures, pre-serialized requests
    (bench/cost.py's mix), latency from send to answer bytes. No locust, no
    gevent: what is left is the server's (and loopback's) latency."""
    import threading

    import grpc
    from cost import CARD, requests_file

    rows = [
        (m, bytes.fromhex(r))
        for m, r in json.loads(
            requests_file(
                common.dataset_dir(args.persons) if args.data is None else args.data, out / "requests.json"
            ).read_text()
        )
    ]
    channels = [
        grpc.insecure_channel(eligibility.address, options=(("onshi.bench.channel", i),)) for i in range(connections)
    ]
    for ch in channels:
        grpc.channel_ready_future(ch).result(timeout=30)
    calls = [
        {m: ch.unary_unary(m, request_serializer=None, response_deserializer=None) for m in {m for m, _ in rows}}
        for ch in channels
    ]
    metadata = (("x-onshi-role", "operator"),)
    lock = threading.Lock()
    times: dict[str, list[float]] = {}
    samples: dict[str, list[float]] = {}
    answers: dict[str, int] = {}
    failures: dict[str, int] = {}

    def done(name, started):
        def callback(fut):
            ms = (time.perf_counter() - started) * 1000
            with lock:
                if fut.exception() is None:
                    samples.setdefault(name, []).append(ms)
                    times.setdefault(name, []).append(time.time())
                    body = fut.result()
                    validity = VALIDITY.get(body[1], str(body[1])) if len(body) > 1 else "?"
                    key = f"{name}={validity}"
                    answers[key] = answers.get(key, 0) + 1
                else:
                    what = f"{name}: {fut.exception().code().name}"
                    failures[what] = failures.get(what, 0) + 1

        return callback

    workers = eligibility.worker_pids()
    server0 = common.total_cpu(workers)
    cpu0 = time.process_time()
    began = time.perf_counter()
    sent = 0
    while (now := time.perf_counter()) - began < args.duration:
        due = int((now - began) * rate)
        while sent < due:
            method, body = rows[sent % len(rows)]
            name = "CheckByCard" if method == CARD else "CheckByNumber"
            fut = calls[sent % connections][method].future(body, metadata=metadata)
            fut.add_done_callback(done(name, time.perf_counter()))
            sent += 1
        time.sleep(0.0005)
    time.sleep(1.0)
    client_cpu = time.process_time() - cpu0
    server_cpu = common.total_cpu(workers) - server0
    for ch in channels:
        ch.close()
    (raw_dir / "raw-direct.json").write_text(
        json.dumps(
            {
                "pid": os.getpid(),
                "started": 0,
                "ended": 0,
                "samples": samples,
                "times": times,
                "failures": failures,
                "answers": answers,
            }
        )
    )
    result = summarize(args, rate, out, raw_dir, 0, args.duration)
    result.update(
        locust_cpu_s=round(client_cpu, 2),
        profiles={},
        engine=_engine_of(eligibility),
        users=connections,
        terminals=connections,
        client="direct",
        eligibility_cpu_s=round(server_cpu, 2),
        loadavg=os.getloadavg()[0],
    )
    return result


def _engine_of(server) -> str:
    """The engine the workers opened, from their `serving on ... engine=KIND` line."""
    if "engine=" in server.ready_line:
        return server.ready_line.split("engine=", 1)[1].split()[0]
    return "?"


def summarize(args, rate: float, out: Path, raw_dir: Path, code: int, wall: float) -> dict:
    timed: dict[str, list[tuple[float, float]]] = {}  # name -> (completion time, ms)
    failures: dict[str, int] = {}
    answers: dict[str, int] = {}
    for path in raw_dir.glob("raw-*.json"):
        raw = json.loads(path.read_text())
        for name, values in raw["samples"].items():
            timed.setdefault(name, []).extend(zip(raw["times"][name], values, strict=True))
        for what, n in raw["failures"].items():
            failures[what] = failures.get(what, 0) + n
        for what, n in raw["answers"].items():
            answers[what] = answers.get(what, 0) + n
    # The steady window: from `warmup` s after the first answer to the end of the
    # run time; spawning users and the stop are outside it (failures count throughout).
    first = min((t for pairs in timed.values() for t, _ in pairs), default=0.0)
    window = (first + args.warmup, first + args.duration)
    seconds = max(1e-9, window[1] - window[0])
    samples = {name: [ms for t, ms in pairs if window[0] <= t <= window[1]] for name, pairs in timed.items()}
    csv_failures = 0
    with contextlib.suppress(OSError), open(f"{out / 'locust'}_stats.csv") as f:
        for row in csv.DictReader(f):
            if row["Name"] == "Aggregated":
                csv_failures = int(row["Failure Count"])
    checks = sorted(v for name in CHECKS for v in samples.get(name, []))
    failed_checks = sum(n for what, n in failures.items() if what.split(":")[0] in CHECKS)
    n_failures = max(csv_failures, sum(failures.values()))
    streams = {}
    for name, kept in samples.items():
        if name not in CHECKS and kept:
            values = sorted(kept)
            streams[name] = {
                "count": len(values),
                "p50": common.percentile(values, 50),
                "p99": common.percentile(values, 99),
                "max": values[-1] if values else float("nan"),
            }
    has_checks = args.scenario in ("terminal", "mixed")
    batch_name = {"review": "VerifyClaims batch", "insurer": "StreamUpdates batch"}.get(args.scenario)
    primary = checks if has_checks else sorted(samples.get(batch_name, []))
    units = 1 if has_checks else (args.claim_batch if args.scenario == "review" else args.update_batch)
    achieved = len(primary) * units / seconds
    result = {
        "date": common.now_utc(),
        "scenario": args.scenario,
        "command": common.command_line(),
        "persons": args.persons if args.data is None else None,
        "data": str(args.data or ""),
        "workers": args.workers,
        "nice": args.nice,
        "offered": rate,
        "duration": args.duration,
        "warmup": args.warmup,
        "achieved": round(achieved, 1),
        "count": len(primary),
        "p50": common.percentile(primary, 50),
        "p95": common.percentile(primary, 95),
        "p99": common.percentile(primary, 99),
        "max": primary[-1] if primary else float("nan"),
        "failures": n_failures,
        "failed_checks": failed_checks,
        "failure_kinds": failures,
        "answers": answers,
        "streams": streams,
        "locust_exit": code,
        "wall_s": round(wall, 1),
        "machine": common.machine(),
        "out": str(out),
    }
    result["target_ok"], result["target"] = judge(args, rate, result)
    return result


def judge(args, rate: float, r: dict) -> tuple[bool | None, str]:
    if args.scenario not in ("terminal", "mixed"):
        return None, "no latency target (throughput figure)"
    at_target = rate >= TARGET_RATE and args.duration >= TARGET_SECONDS
    holds = r["achieved"] >= 0.97 * rate and r["p99"] <= TARGET_P99_MS and r["failures"] == 0 and r["count"] > 0
    why = []
    if r["achieved"] < 0.97 * rate:
        why.append(f"achieved {r['achieved']:.0f}/s < offered")
    if not r["p99"] <= TARGET_P99_MS:
        why.append(f"p99 {r['p99']:.1f} ms > {TARGET_P99_MS:g}")
    if r["failures"]:
        why.append(f"{r['failures']} failures")
    text = "holds" if holds else "missed: " + ", ".join(why)
    if not at_target:
        return None, f"below target load ({text} at this load)"
    return holds, ("**pass**" if holds else "**FAIL** (" + text.removeprefix("missed: ") + ")")


def print_result(r: dict) -> None:
    print(
        f"\n{r['scenario']}: offered {r['offered']:g}/s, achieved {r['achieved']:g}/s over "
        f"{r['duration'] - r['warmup']:g} s steady ({r['count']} timed {'checks' if r['scenario'] in ('terminal', 'mixed') else 'batches'})"
    )
    print(
        f"  latency ms  p50 {common.fmt_ms(r['p50'])}  p95 {common.fmt_ms(r['p95'])}  "
        f"p99 {common.fmt_ms(r['p99'])}  max {common.fmt_ms(r['max'])}"
    )
    for name, s in r["streams"].items():
        print(
            f"  {name}: {s['count']} round trips, p50 {common.fmt_ms(s['p50'])} ms, "
            f"p99 {common.fmt_ms(s['p99'])} ms, max {common.fmt_ms(s['max'])} ms"
        )
    print(
        f"  failures {r['failures']}"
        + "".join(f"\n    {n} × {what}" for what, n in sorted(r["failure_kinds"].items(), key=lambda x: -x[1])[:8])
    )
    if r["answers"]:
        print("  answers " + ", ".join(f"{k} {v}" for k, v in sorted(r["answers"].items())))
    total = max(1, r["count"] * r["duration"] / max(1e-9, r["duration"] - r["warmup"]))  # whole run, roughly
    print(
        f"  CPU: eligibility workers {r['eligibility_cpu_s']} s ({1e6 * r['eligibility_cpu_s'] / total:.0f} µs "
        f"per request), {'client' if r.get('client') == 'direct' else 'locust'} {r['locust_cpu_s']} s ({1e6 * r['locust_cpu_s'] / total:.0f} µs per request); "
        f"load avg {r['loadavg']:.1f}"
    )
    for who, top in r.get("profiles", {}).items():
        print(
            f"  py-spy {who} (share of Python time, self): "
            + "; ".join(f"{share:.0%} {name}" for name, share in top[:8])
        )
    print(f"  target: {r['target']}")
    print(f"  CSVs and raw latencies: {r['out']}")


def record(args, r: dict) -> None:
    streams = (
        "; ".join(
            f"{n}: {s['count']}× p50 {s['p50']:.0f} ms p99 {s['p99']:.0f} ms"
            for n, s in r["streams"].items()
            if r["scenario"] == "mixed"
        )
        or "—"
    )
    persons = f"{r['persons']:,}" if r["persons"] else r["data"]
    requests = max(1.0, r["count"] * r["duration"] / (r["duration"] - r["warmup"]))  # the whole run, roughly
    server_us = 1e6 * r["eligibility_cpu_s"] / requests
    locust_us = 1e6 * r["locust_cpu_s"] / requests
    client = "client" if r.get("client") == "direct" else "locust"
    scenario = r["scenario"] if r.get("client") != "direct" else f"{r['scenario']} (direct client, no locust)"
    scenario += f", {r['terminals']} terminals" if r.get("terminals") else ""
    row = [
        scenario,
        persons,
        f"{r['workers']} workers, {r['engine']}{f', nice {args.nice}' if args.nice else ''}",
        f"{r['offered']:g}",
        f"{r['achieved']:g}",
        common.fmt_ms(r["p50"]),
        common.fmt_ms(r["p95"]),
        common.fmt_ms(r["p99"]),
        common.fmt_ms(r["max"]),
        str(r["failures"]),
        streams,
        r["target"],
        f"server {server_us:.0f}, {client} {locust_us:.0f}",
    ]
    body = common.md_table(HEADER, [row])
    if r.get("profiles"):
        body += (
            "\n\nProfile, py-spy self time of Python work: "
            + " — ".join(
                f"{who}: " + "; ".join(f"{share:.0%} {name}" for name, share in top[:8])
                for who, top in r["profiles"].items()
            )
            + "."
        )
    users = (
        f"{r['terminals']} {'direct-client connections' if r.get('client') == 'direct' else 'locust users'}"
        if r.get("terminals")
        else ""
    )
    if r["scenario"] in ("terminal", "mixed"):
        what = (
            f"{r['scenario']}: check latency at {r['offered']:g} checks/s for {r['duration']:g} s, {users} "
            f"({persons} persons)"
        )
        measured = (
            f"p99 {common.fmt_ms(r['p99'])} ms (p50 {common.fmt_ms(r['p50'])}, max {common.fmt_ms(r['max'])}), "
            f"{r['achieved']:g}/s, {r['failures']} failures"
        )
    else:
        unit = "claims" if r["scenario"] == "review" else "updates"
        what = f"{r['scenario']}: {unit}/s through one stream, offered {r['offered']:g}/s ({persons} persons)"
        measured = f"{r['achieved']:g}/s, batch p99 {common.fmt_ms(r['p99'])} ms, {r['failures']} failures"
    common.record_run(
        AREA, [(what, measured, r["target"])], body, common.Run(command=r["command"], when=r["date"], load=r["loadavg"])
    )
    common.record("load", {k: v for k, v in r.items() if k != "out"})


if __name__ == "__main__":
    sys.exit(main())
