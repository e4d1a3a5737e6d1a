"""Ingest benchmark: durable updates/s through `onshi ingest-serve`
with group commit, and the visibility lag on a running `onshi serve`.

    .venv/bin/python bench/ingest.py --residents 20000 --updates 100000 --streams 3 [--record]

1. a fresh store; `onshi ingest-serve` on it; the registry loaded (PutResidents);
2. `onshi serve` (1 worker) opened on the same store, read-only;
3. one stream per insurer sends its share of the updates (acquisitions, burden
   ratio changes, losses, insurer changes with notices), `--window` unacked at most;
   updates/s = updates / (first send -> last ack). Every ack is ACCEPTED only
   after its transaction's fsync'd commit (LMDB sync on), so this is durable
   throughput. Commits are counted by the server (printed on its SIGTERM);
4. visibility: every `--sample`-th acquisition, when its ACCEPTED ack arrives, a
   checker thread asks the eligibility server CheckByNumber until VALID;
   lag = seen - ack. Also reported: send -> ack latency of the same updates.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import queue
import re
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # tests/ingest_support imports tests.seams
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

import common  # noqa: E402
import grpc  # noqa: E402
import ingest_support as s  # noqa: E402

from onshi.commands.ingest import UpdateStreamer  # noqa: E402
from onshi.v1 import (  # noqa: E402
    eligibility_pb2,
    eligibility_pb2_grpc,
    enrollment_pb2_grpc,
)
from onshi.v1 import enrollment_pb2 as pb  # noqa: E402

AREA = "Ingest"


def load_registry(target: str, residents: int) -> float:
    started = time.perf_counter()
    with grpc.insecure_channel(target) as channel:
        stub = enrollment_pb2_grpc.EnrollmentServiceStub(channel)
        for i in range(0, residents, 5000):
            page = [s.resident(j) for j in range(i, min(residents, i + 5000))]
            stub.PutResidents(pb.PutResidentsRequest(residents=page), wait_for_ready=True, timeout=120)
    return residents / (time.perf_counter() - started)


def run(args) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="onshi-bench-ingest-", dir=args.dir))
    data = tmp / "store"
    ingest = s.start_ingest(data, tmp)
    serve = None
    try:
        registry_rate = load_registry(ingest.target, args.residents)
        serve = s.start_eligibility(data, tmp) if s.eligibility_server_available() else None
        updates = s.script(args.residents, args.updates, seed=1)
        by_insurer: dict[str, list] = {}
        for u in updates:
            by_insurer.setdefault(u.insurer_number, []).append(u)
        streams = list(by_insurer.items())[: args.streams]
        sent_count = sum(len(us) for _, us in streams)

        sample_sent: dict[str, float] = {}
        latencies: list[float] = []
        lags: list[float] = []
        misses = [0]
        first_try = [0]  # seen by the very first check after the ack: visible when acked
        outcomes: dict[int, int] = {}
        checks: queue.Queue = queue.Queue()
        lock = threading.Lock()
        last_ack = [0.0]

        def sampled(u) -> bool:
            return u.WhichOneof("change") == "acquisition" and int(u.update_id[1:]) % args.sample == 0

        def feed(us):
            for u in us:
                if sampled(u):
                    sample_sent[u.update_id] = time.perf_counter()
                yield u

        def on_ack(u, ack):
            now = time.perf_counter()
            with lock:
                outcomes[ack.outcome] = outcomes.get(ack.outcome, 0) + 1
                last_ack[0] = now
                if u.update_id in sample_sent:
                    latencies.append(now - sample_sent[u.update_id])
                    q = u.acquisition.qualification
                    checks.put((now, u.insurer_number, q.symbol, q.number, q.branch, u.person.birth_date))

        def checker():
            if serve is None:
                return
            with grpc.insecure_channel(serve.target) as channel:
                stub = eligibility_pb2_grpc.EligibilityServiceStub(channel)
                while True:
                    item = checks.get()
                    if item is None:
                        return
                    acked, insurer, symbol, number, branch, birth = item
                    request = eligibility_pb2.CheckByNumberRequest(
                        insurer_number=insurer,
                        symbol=symbol,
                        number=number,
                        branch=branch,
                        birth_date=birth,
                        as_of=s.date("2030-01-01"),
                    )
                    deadline = acked + 5.0
                    attempt = 0
                    while True:
                        attempt += 1
                        response = stub.CheckByNumber(request, timeout=5)
                        if response.validity in (
                            eligibility_pb2.VALIDITY_VALID,
                            eligibility_pb2.VALIDITY_INVALID,
                            eligibility_pb2.VALIDITY_INVALID_NEWER_EXISTS,
                        ):
                            lags.append(time.perf_counter() - acked)
                            first_try[0] += attempt == 1
                            break
                        if time.perf_counter() > deadline:
                            misses[0] += 1
                            break

        checkers = [threading.Thread(target=checker, daemon=True) for _ in range(args.checkers)]
        for t in checkers:
            t.start()
        cpu_before = common.cpu_seconds(ingest.proc.pid)
        client_cpu_before = time.process_time()
        load_before = os.getloadavg()[0]
        started = time.perf_counter()
        senders = []
        for insurer, us in streams:
            streamer = UpdateStreamer(ingest.target, [insurer], window=args.window, batch=args.batch, retries=0)
            t = threading.Thread(target=streamer.run, args=(feed(us), on_ack), daemon=True)
            t.start()
            senders.append(t)
        for t in senders:
            t.join(timeout=args.timeout)
        elapsed = last_ack[0] - started
        server_cpu = common.cpu_seconds(ingest.proc.pid) - cpu_before
        client_cpu = time.process_time() - client_cpu_before  # includes the visibility checkers
        load_after = os.getloadavg()[0]
        for _ in checkers:
            checks.put(None)
        for t in checkers:
            t.join(timeout=30)
        acked = sum(outcomes.values())
        latencies.sort()
        lags.sort()
        ingest.stop()
        stats = re.search(
            r"(\d+) writes in (\d+) commits; ([\d.]+)s running writes, ([\d.]+)s committing", ingest.log.read_text()
        )
        writes, commits = (int(stats.group(1)), int(stats.group(2))) if stats else (0, 0)
        work_s, commit_s = (float(stats.group(3)), float(stats.group(4))) if stats else (0.0, 0.0)
        return {
            "registry_per_s": registry_rate,
            "rpc": "StreamUpdates" if args.batch == 1 else f"StreamUpdateBatches x{args.batch}",
            "updates": sent_count,
            "acked": acked,
            "streams": len(streams),
            "accepted": outcomes.get(pb.ENROLLMENT_OUTCOME_ACCEPTED, 0),
            "seconds": elapsed,
            "per_s": acked / elapsed if elapsed > 0 else 0.0,
            "server_cpu_s": server_cpu,
            "client_cpu_s": client_cpu,
            "per_cpu_s": acked / server_cpu if server_cpu > 0 else 0.0,
            "load": f"{load_before:.1f}->{load_after:.1f}",
            "commits": commits,
            "per_commit": writes / commits if commits else 0.0,
            "work_s": work_s,
            "commit_s": commit_s,
            "latency_p50_ms": 1000 * common.percentile(latencies, 50),
            "latency_p99_ms": 1000 * common.percentile(latencies, 99),
            "lag_p50_ms": 1000 * common.percentile(lags, 50),
            "lag_p99_ms": 1000 * common.percentile(lags, 99),
            "lag_max_ms": 1000 * max(lags) if lags else float("nan"),
            "lag_samples": len(lags),
            "lag_misses": misses[0],
            "first_try": first_try[0],
            "checked_by": "onshi serve" if serve else "none",
        }
    finally:
        ingest.kill()
        if serve is not None:
            serve.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def run_writer_only(args) -> dict:
    """The same updates through GroupWriter in this process, no gRPC: what the
    single writer itself sustains (validation + apply + fsync'd group commits)."""
    from onshi.core import enrollment, registry
    from onshi.core.writer import Writer
    from onshi.server.enrollment_service import JOB_UPDATES
    from onshi.server.writer_server import GroupWriter

    tmp = Path(tempfile.mkdtemp(prefix="onshi-bench-writer-", dir=args.dir))
    writer = Writer(tmp / "store")
    try:
        enrollment.open_dbs(writer)
        people = [s.resident(i) for i in range(args.residents)]
        writer.apply(lambda t: [registry.put(t, r) for r in people])
        updates = s.script(args.residents, args.updates, seed=1)
        group = GroupWriter(writer)
        insurers = frozenset(s.INSURERS)
        done = threading.Event()
        outcomes: dict[int, int] = {}
        count = [0]

        def finished(acks, exc):
            for raw in acks:
                outcome = pb.EnrollmentAck.FromString(raw).outcome
                outcomes[outcome] = outcomes.get(outcome, 0) + 1
            count[0] += len(acks)
            if count[0] == len(updates):
                done.set()

        def job(part, now):  # as the server's: one job per slice, acks serialized
            return lambda t: [enrollment.apply_update_raw(t, c, now) for c in part]

        cpu, started = time.process_time(), time.perf_counter()
        commits_before = group.commits
        for i in range(0, len(updates), 500):  # arrive in stream-sized messages, as at the server
            now = time.time()
            checked = [enrollment.check_update(u, insurers) for u in updates[i : i + 500]]
            slices = [checked[j : j + JOB_UPDATES] for j in range(0, len(checked), JOB_UPDATES)]
            group.submit_many([(job(part, now), finished) for part in slices], [len(part) for part in slices])
        done.wait(args.timeout)
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
        commits = group.commits - commits_before
        group.close()
        return {
            "updates": len(updates),
            "accepted": outcomes.get(pb.ENROLLMENT_OUTCOME_ACCEPTED, 0),
            "seconds": elapsed,
            "per_s": len(updates) / elapsed,
            "per_cpu_s": len(updates) / cpu,
            "commits": commits,
            "per_commit": len(updates) / max(commits, 1),
            "load": f"{os.getloadavg()[0]:.1f}",
        }
    finally:
        writer.close()
        shutil.rmtree(tmp, ignore_errors=True)


def report_writer_only(r: dict) -> str:
    return (
        f"  - writer alone (GroupWriter in process, no gRPC; validation + apply + fsync'd commits): "
        f"**{r['per_s']:,.0f} durable updates/s** ({r['accepted']:,} ACCEPTED, {r['seconds']:.2f} s, "
        f"{r['commits']} commits, {r['per_commit']:.0f} writes/commit), "
        f"{r['per_cpu_s']:,.0f} per CPU-second; load average {r['load']}"
    )


def _echo_server(stack: str, port_file: str) -> None:
    """A StreamUpdates server that does no work: one ack per update, nothing written."""
    from concurrent import futures

    if stack == "aio":
        import asyncio

        class AsyncEcho(enrollment_pb2_grpc.EnrollmentServiceServicer):
            async def StreamUpdates(self, updates, context):
                async for u in updates:
                    yield pb.EnrollmentAck(update_id=u.update_id, outcome=pb.ENROLLMENT_OUTCOME_ACCEPTED)

        async def main():
            server = grpc.aio.server()
            enrollment_pb2_grpc.add_EnrollmentServiceServicer_to_server(AsyncEcho(), server)
            port = server.add_insecure_port("127.0.0.1:0")
            await server.start()
            Path(port_file).write_text(str(port))
            await server.wait_for_termination()

        asyncio.run(main())
        return

    class Echo(enrollment_pb2_grpc.EnrollmentServiceServicer):
        def StreamUpdates(self, updates, context):
            for u in updates:
                yield pb.EnrollmentAck(update_id=u.update_id, outcome=pb.ENROLLMENT_OUTCOME_ACCEPTED)

    server = grpc.server(futures.ThreadPoolExecutor(4))
    enrollment_pb2_grpc.add_EnrollmentServiceServicer_to_server(Echo(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    Path(port_file).write_text(str(port))
    server.wait_for_termination()


def echo_floor(messages: int = 20_000) -> str:
    """gRPC Python's own cost per StreamUpdates message: an echo server, no work."""
    import subprocess

    updates = [s.acquisition(f"u{i}", s.EMPLOYEE, s.resident(i % 100), f"N{i}", "2024-04-01") for i in range(messages)]
    lines = []
    for stack in ("aio", "threaded"):
        with tempfile.TemporaryDirectory() as tmp:
            port_file = Path(tmp) / "port"
            proc = subprocess.Popen([sys.executable, __file__, "_echo", stack, str(port_file)])
            try:
                while not port_file.exists() or not port_file.read_text():
                    time.sleep(0.05)
                cpu, started = common.cpu_seconds(proc.pid), time.perf_counter()
                with grpc.insecure_channel(f"127.0.0.1:{port_file.read_text()}") as channel:
                    n = sum(1 for _ in enrollment_pb2_grpc.EnrollmentServiceStub(channel).StreamUpdates(iter(updates)))
                elapsed, cpu = time.perf_counter() - started, common.cpu_seconds(proc.pid) - cpu
            finally:
                proc.kill()
                proc.wait()
        lines.append(f"{stack}: {n / elapsed:,.0f} msgs/s, server CPU {cpu / n * 1e6:.0f} µs/message")
    return "  - gRPC floor, echo StreamUpdates doing no work (" + "; ".join(lines) + f"; {messages:,} messages)"


def report(r: dict) -> str:
    return "\n".join(
        [
            f"- {r['rpc']}: durable updates/s (group commit, fsync per commit): **{r['per_s']:,.0f}/s** "
            f"({r['acked']:,} acks, {r['accepted']:,} ACCEPTED, {r['streams']} streams, {r['seconds']:.2f} s; "
            f"{r['commits']:,} commits, {r['per_commit']:.0f} writes/commit; committer wall time {r['work_s']:.1f} s "
            f"running writes + {r['commit_s']:.1f} s committing/fsync)",
            f"  - ingest server CPU: {r['server_cpu_s']:.1f} s = **{r['per_cpu_s']:,.0f} updates per server CPU-second** "
            f"(what one free core would sustain; 1-min load average {r['load']} on 2 shared cores); "
            f"client process CPU {r['client_cpu_s']:.1f} s",
            f"  - send -> ACCEPTED ack latency p50 {r['latency_p50_ms']:.1f} ms, p99 {r['latency_p99_ms']:.1f} ms",
            f"  - visibility lag (ack -> seen by CheckByNumber on {r['checked_by']}): p50 {r['lag_p50_ms']:.2f} ms, "
            f"p99 {r['lag_p99_ms']:.2f} ms, max {r['lag_max_ms']:.2f} ms ({r['lag_samples']} samples, "
            f"{r['first_try']} seen by the first check after the ack, {r['lag_misses']} not seen within 5 s; "
            f"the lag is the check RPC's own latency on the loaded machine)",
            f"  - registry load (PutResidents, 5,000 per call): {r['registry_per_s']:,.0f} records/s",
        ]
    )


def figures(results: list[dict], writer: dict | None) -> list[tuple[str, str, str]]:
    out = []
    for r in results:
        batched = r["rpc"] != "StreamUpdates"
        out.append(
            (
                f"durable updates/s through ingest-serve, {r['rpc']}, {r['streams']} streams",
                f"{r['per_s']:,.0f} ({r['per_cpu_s']:,.0f} per server CPU-second)",
                f"≥ 20,000: {'met' if r['per_s'] >= 20_000 else '**not met**'}" if batched else "—",
            )
        )
        if r["lag_samples"]:
            met = r["lag_p99_ms"] <= 1000 and not r["lag_misses"]
            out.append(
                (
                    f"visibility lag, ack → seen by a check on `onshi serve`, p99 ({r['rpc']})",
                    f"{r['lag_p99_ms']:.0f} ms ({r['first_try']} of {r['lag_samples']} seen by the first check)",
                    f"≤ 1 s: {'met' if met else '**not met**'}",
                )
            )
    if writer:
        out.append(
            (
                "durable updates/s, the writer alone (GroupWriter in process, no gRPC)",
                f"{writer['per_s']:,.0f} ({writer['per_cpu_s']:,.0f} per CPU-second)",
                "—",
            )
        )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--residents", type=int, default=20_000)
    parser.add_argument("--updates", type=int, default=100_000)
    parser.add_argument("--streams", type=int, default=3, help="one per insurer, at most 3")
    parser.add_argument("--window", type=int, default=4096, help="unacked updates per stream")
    parser.add_argument(
        "--batch",
        default="1,500",
        help="updates per message, comma-separated runs: 1 = StreamUpdates, more = "
        "StreamUpdateBatches (each run on a fresh store)",
    )
    parser.add_argument("--sample", type=int, default=50, help="check every Nth acquisition for visibility")
    parser.add_argument("--checkers", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--dir", default=None, help="where the temporary store goes (default: $TMPDIR)")
    parser.add_argument(
        "--writer-only", action="store_true", help="also measure the writer alone (GroupWriter in process, no gRPC)"
    )
    parser.add_argument(
        "--echo",
        action="store_true",
        help="also measure gRPC's per-message floor (an echo StreamUpdates server, no work)",
    )
    common.add_record_flag(parser)
    args = parser.parse_args(argv)
    results = []
    for batch in [int(b) for b in str(args.batch).split(",")]:
        args_one = argparse.Namespace(**{**vars(args), "batch": batch})
        results.append(run(args_one))
    texts = [report(r) for r in results]
    writer = run_writer_only(args) if args.writer_only else None
    if writer:
        texts.append(report_writer_only(writer))
    if args.echo:
        texts.append(echo_floor())
    if len(results) > 1:
        base = results[0]
        texts.append(
            "  - ratios to the first run: "
            + ", ".join(
                f"{r['rpc']}: {r['per_s'] / base['per_s']:.2f}x updates/s, "
                f"{r['per_cpu_s'] / base['per_cpu_s']:.2f}x per server CPU-second"
                for r in results[1:]
            )
        )
    text = "\n".join(texts)
    print(text)
    if args.record:
        common.record_run(AREA, figures(results, writer), text)
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["_echo"]:
        _echo_server(sys.argv[2], sys.argv[3])
        sys.exit(0)
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
