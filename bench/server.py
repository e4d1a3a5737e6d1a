"""Server stacks compared: grpc's threaded server vs grpc.aio on uvloop, each
with the real EligibilityService handlers and with an empty handler (the
floor the gRPC stack itself sets), on the same engine and data.

One server process (one worker) and one closed-loop client process (grpc.aio
on uvloop, --concurrency calls outstanding, card checks on random existing
serials); server CPU per check comes from the server process's own accounting
(utime + stime of all its threads, /proc/PID/stat) over the client's measured
window. Runs are interleaved and repeated (--rounds); medians are reported.

    .venv/bin/python bench/server.py [--persons 50000] [--seconds 3] [--rounds 5] [--engine native]
    .venv/bin/python bench/server.py --profile-handler [--engine pure]   # the handler's own steps
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

AREA = "Server"
METHOD = "/onshi.v1.EligibilityService/CheckByCard"


# --- data -------------------------------------------------------------------


def dataset(persons: int) -> Path:
    """A simple population (one qualification each, every person with a card),
    loaded through the writer; cached under bench/out/."""
    path = common.OUT / f"server-{persons}"
    if (path / ".complete").exists():
        return path
    import datetime as dt
    import shutil

    from onshi.core import dates, identifiers
    from onshi.core.writer import Writer
    from onshi.v1 import qualification_pb2 as Q

    shutil.rmtree(path, ignore_errors=True)
    rng = random.Random(2)
    insurer = identifiers.with_check_digit("0613001")

    def persons_iter():
        for link in range(1, persons + 1):
            birth = dt.date(1940, 1, 1) + dt.timedelta(days=rng.randrange(30000))
            person = Q.Person(
                name="山田 花子",
                name_kana="ヤマダ ハナコ",
                sex=Q.SEX_FEMALE,
                birth_date=dates.to_proto(birth),
                address="東京都千代田区千代田1-1",
                postcode="100-0001",
            )
            qual = Q.Qualification(
                insurer_number=insurer,
                insurer_name="オンシ健康保険組合",
                symbol="12",
                number=str(link),
                branch="00",
                relationship=Q.RELATIONSHIP_INSURED,
                acquisition_date=dates.to_proto(dt.date(2020, 4, 1)),
                burden_ratio_percent=30,
                card_kind=Q.CARD_KIND_EMPLOYEE,
            )
            yield link, person, [qual], identifiers.card_serial_key(format(link * 7919 + 1, "X"))

    writer = Writer(path)
    try:
        writer.bulk_load(persons_iter())
    finally:
        writer.close()
    (path / ".complete").touch()
    return path


def requests(persons: int, count: int = 4096) -> list[bytes]:
    from onshi.v1 import eligibility_pb2

    rng = random.Random(7)
    return [
        eligibility_pb2.CheckByCardRequest(
            card_serial=format(rng.randrange(1, persons + 1) * 7919 + 1, "X")
        ).SerializeToString()
        for _ in range(count)
    ]


# --- the server process ---------------------------------------------------------


class _AnswerWithoutLookup:
    """Engine stand-in returning a fixed answer with the GIL held (diagnostic only)."""

    kind = "none"

    def __init__(self, answer: bytes):
        self.answer = answer

    def check_by_card(self, serial_key, day):
        return self.answer

    def check_by_number(self, number_key, birth_day, day):
        return self.answer


def diagnostic_handler(name: str, engine, sample: bytes):
    """Threaded stack handlers between the floor and the real check:
    empty    fixed answer, request not looked at (the floor)
    gil      the floor + one GIL release around a ~1 µs syscall, as an engine lookup does
    nolookup the real handler's Python work (parse, validate) with the lookup replaced by
             a fixed answer, GIL held throughout
    check    the real handler"""
    import select

    import grpc
    from empty_server import empty_handlers

    from onshi.server import eligibility_service

    if name == "empty":
        return empty_handlers(sample)
    if name == "gil":

        def released(raw, context):
            select.select((), (), (), 0)  # releases and re-takes the GIL
            return sample

        h = grpc.unary_unary_rpc_method_handler(released)
        return grpc.method_handlers_generic_handler(
            eligibility_service.SERVICE_NAME, {"CheckByCard": h, "CheckByNumber": h}
        )
    if name == "nolookup":
        return eligibility_service.build_eligibility_handlers(_AnswerWithoutLookup(sample))
    return eligibility_service.build_eligibility_handlers(engine)


async def create_aio_server(engine, *, address: str = "127.0.0.1:0", empty_response: bytes | None = None):
    """The grpc.aio stack: the same handlers (or the empty ones), the same
    options, health and reflection."""
    import grpc
    from empty_server import empty_handlers
    from grpc_health.v1 import _async as health_async
    from grpc_health.v1 import health_pb2_grpc
    from grpc_reflection.v1alpha import reflection

    from onshi.server import app, eligibility_service

    server = grpc.aio.server(options=app.SERVER_OPTIONS)
    if empty_response is not None:
        server.add_generic_rpc_handlers((empty_handlers(empty_response, asyncio=True),))
    else:
        server.add_generic_rpc_handlers((eligibility_service.build_eligibility_handlers(engine, asyncio=True),))
    health_servicer = health_async.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(app.SERVICE_NAMES, server)
    port = server.add_insecure_port(address)
    return server, health_servicer, port


def serve(args) -> None:
    from onshi.core import identifiers
    from onshi.core.dates import today_jst
    from onshi.core.engine import open_engine
    from onshi.server import app

    engine = open_engine(args.data, args.engine)
    # The empty handler answers what a real check answers, so both send the same bytes.
    sample = engine.check_by_card(identifiers.card_serial_key(format(7919 + 1, "X")), today_jst())
    empty = sample if args.handler == "empty" else None
    if args.stack == "threaded":
        handler = diagnostic_handler(args.handler, engine, sample)
        serving = app.threaded_server(handler, address="127.0.0.1:0", threads=args.threads)
        serving.server.start()
        print(f"port {serving.port} engine={engine.kind}", flush=True)
        sys.stdin.read()  # the bench closes stdin to stop us
        serving.server.stop(0)
    else:
        import uvloop

        async def main():
            server, _, port = await create_aio_server(engine, address="127.0.0.1:0", empty_response=empty)
            await server.start()
            print(f"port {port} engine={engine.kind}", flush=True)
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
            await server.stop(0)

        uvloop.install()
        asyncio.run(main())


# --- the client process ---------------------------------------------------------


def client(args) -> None:
    import grpc
    import uvloop

    bodies = requests(args.persons)

    async def main():
        async with grpc.aio.insecure_channel(args.target) as channel:
            call = channel.unary_unary(METHOD, request_serializer=None, response_deserializer=None)
            state = {"count": 0, "run": True}

            async def loop(i):
                j = i
                while state["run"]:
                    await call(bodies[j % len(bodies)], timeout=10)
                    j += args.concurrency
                    state["count"] += 1

            tasks = [asyncio.create_task(loop(i)) for i in range(args.concurrency)]
            await asyncio.sleep(args.warmup)
            start_count, start = state["count"], time.perf_counter()
            print("start", flush=True)
            await asyncio.sleep(args.seconds)
            count, elapsed = state["count"] - start_count, time.perf_counter() - start
            print(json.dumps({"calls": count, "seconds": elapsed}), flush=True)
            state["run"] = False
            await asyncio.gather(*tasks)

    uvloop.install()
    asyncio.run(main())


# --- where the handler's own time goes (in process, no gRPC) --------------------------


def profile_handler(args) -> None:
    import timeit

    from onshi.core import dates, identifiers
    from onshi.core.engine import open_engine
    from onshi.server import eligibility_service
    from onshi.v1 import eligibility_pb2

    engine = open_engine(dataset(args.persons), args.engine)
    bodies = requests(args.persons)[:2000]
    msgs = [eligibility_pb2.CheckByCardRequest.FromString(b) for b in bodies]
    keys = [identifiers.card_serial_key(m.card_serial) for m in msgs]
    day = dates.today_jst()
    answers = eligibility_service.EligibilityAnswers(engine)
    steps = [
        (
            "whole handler logic (EligibilityAnswers.check_by_card)",
            lambda: [answers.check_by_card(b, None) for b in bodies],
        ),
        (
            "  parse CheckByCardRequest",
            lambda: [eligibility_service.CheckByCardRequest.FromString(b) for b in bodies],
        ),
        (
            "  card_serial_key (hex -> 20-byte key)",
            lambda: [identifiers.card_serial_key(m.card_serial) for m in msgs],
        ),
        ("  card proof fields present?", lambda: [eligibility_service._has_card_proof(m) for m in msgs]),
        (
            "  as_of present? + today_jst()",
            lambda: [m.HasField("as_of") or dates.today_jst() for m in msgs],
        ),
        (
            f"  {engine.kind} engine check_by_card",
            lambda: [engine.check_by_card(k, day) for k in keys],
        ),
    ]
    print(f"engine={engine.kind}, {args.persons:,} persons, best of 5 x 10 x {len(bodies)} checks")
    print("| step | µs per check |")
    print("|---|---:|")
    for name, fn in steps:
        best = min(timeit.repeat(fn, number=10, repeat=5)) / (10 * len(bodies))
        print(f"| {name} | {best * 1e6:.2f} |")
    engine.close()


# --- the bench ------------------------------------------------------------------


def run_one(args, data: Path, stack: str, handler: str) -> dict:
    me = [sys.executable, __file__]
    server = subprocess.Popen(
        [
            *me,
            "_serve",
            "--stack",
            stack.split(":")[0],
            "--handler",
            handler,
            "--data",
            str(data),
            "--engine",
            args.engine,
            "--threads",
            stack.split(":")[1] if ":" in stack else str(args.threads),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        port_line = server.stdout.readline().split()
        port, kind = port_line[1], port_line[2].split("=")[1]
        client_proc = subprocess.Popen(
            [
                *me,
                "_client",
                "--target",
                f"127.0.0.1:{port}",
                "--persons",
                str(args.persons),
                "--seconds",
                str(args.seconds),
                "--warmup",
                str(args.warmup),
                "--concurrency",
                str(args.concurrency),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert client_proc.stdout.readline().strip() == "start"
        cpu0, sw0 = common.cpu_seconds(server.pid), common.switches(server.pid)
        result = json.loads(client_proc.stdout.readline())
        cpu1, sw1 = common.cpu_seconds(server.pid), common.switches(server.pid)
        client_proc.wait(30)
    finally:
        server.stdin.close()
        server.wait(30)
    calls = result["calls"]
    return {
        "stack": stack,
        "handler": handler,
        "engine": kind,
        "calls": calls,
        "checks_per_s": calls / result["seconds"],
        "cpu_us_per_check": (cpu1 - cpu0) / calls * 1e6,
        "server_cpu_util": (cpu1 - cpu0) / result["seconds"],
        "switches_per_check": (sw1 - sw0) / calls,
    }


def bench(args) -> None:
    data = dataset(args.persons)
    stacks = args.stacks.split(",")
    handlers = args.handlers.split(",")
    runs: dict[tuple[str, str], list[dict]] = {}
    for r in range(args.rounds):
        for stack in stacks:
            for handler in handlers if stack.startswith("threaded") else ("empty", "check"):
                res = run_one(args, data, stack, handler)
                runs.setdefault((stack, handler), []).append(res)
                print(
                    f"round {r + 1} {stack:8} {handler:5} {res['checks_per_s']:8.0f} checks/s "
                    f"{res['cpu_us_per_check']:6.1f} µs CPU/check  "
                    f"{res['switches_per_check']:5.2f} switches/check  "
                    f"server CPU {res['server_cpu_util']:.2f}  load {os.getloadavg()[0]:.1f}",
                    flush=True,
                )
    fields = ("checks_per_s", "cpu_us_per_check", "switches_per_check")
    med = {k: {f: statistics.median(x[f] for x in v) for f in fields} for k, v in runs.items()}
    engine = runs[(stacks[0], "check")][0]["engine"]
    intro = (
        f"Median of {args.rounds} rounds, {args.persons:,} persons, engine={engine}, "
        f"{args.seconds:g} s windows, concurrency {args.concurrency}, {args.threads} handler threads."
    )
    # Ratios are taken within each round (empty and check ran back to back), then
    # the median: robust to other load on a shared machine drifting between rounds.
    rows, figures = [], []
    for stack in stacks:
        for handler in handlers if stack.startswith("threaded") else ("empty", "check"):
            m = med[(stack, handler)]
            ratio = statistics.median(
                c["cpu_us_per_check"] / e["cpu_us_per_check"]
                for e, c in zip(runs[(stack, "empty")], runs[(stack, handler)], strict=True)
            )
            rows.append(
                (
                    stack,
                    handler,
                    f"{m['checks_per_s']:,.0f}",
                    f"{m['cpu_us_per_check']:.1f}",
                    f"{ratio:.2f}×",
                    f"{m['switches_per_check']:.2f}",
                )
            )
            if handler == "check":
                threads = stack.split(":")[1] if ":" in stack else args.threads
                name = f"threaded, {threads} handler threads" if stack.startswith("threaded") else "aio + uvloop"
                figures.append(
                    (
                        f"server CPU per check ÷ empty handler, {name}, one process in a closed loop",
                        f"{ratio:.2f}× ({m['cpu_us_per_check']:.0f} µs)",
                        f"≤ 1.1×: {'met' if ratio <= 1.1 else '**not met**'}",
                    )
                )
    body = (
        intro
        + "\n\n"
        + common.md_table(
            [
                "stack",
                "handler",
                "checks/s",
                "server CPU µs/check",
                "CPU vs empty handler (median of rounds)",
                "voluntary switches/check",
            ],
            rows,
        )
    )
    if len(stacks) == 2:
        a, b = (runs[(s, "check")] for s in stacks)
        rate = statistics.median(x["checks_per_s"] / y["checks_per_s"] for x, y in zip(a, b, strict=True))
        cpu = statistics.median(x["cpu_us_per_check"] / y["cpu_us_per_check"] for x, y in zip(a, b, strict=True))
        body += (
            f"\n\n{stacks[0]} / {stacks[1]} (check, median of rounds): {rate:.2f}× checks/s, {cpu:.2f}× CPU per check"
        )
        figures.append(
            (f"{stacks[0]} ÷ {stacks[1]} server: checks/s · CPU per check", f"{rate:.2f}× · {cpu:.2f}×", "—")
        )
    print("\n" + body)
    if args.record:
        common.record_run(AREA, figures, body)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="mode")
    s = sub.add_parser("_serve")
    s.add_argument("--stack", choices=("threaded", "aio"))
    s.add_argument("--handler", choices=("empty", "gil", "nolookup", "check"))
    s.add_argument("--data")
    s.add_argument("--engine")
    s.add_argument("--threads", type=int)
    c = sub.add_parser("_client")
    for p in (parser, c):
        p.add_argument("--persons", type=int, default=50_000)
        p.add_argument("--seconds", type=float, default=3.0)
        p.add_argument("--warmup", type=float, default=1.0)
        p.add_argument("--concurrency", type=int, default=32)
    c.add_argument("--target")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--stacks", default="threaded,aio", help="threaded, threaded:THREADS, aio (comma-separated)")
    parser.add_argument(
        "--handlers",
        default="empty,check",
        help="threaded stack handlers, from empty,gil,nolookup,check (see diagnostic_handler)",
    )
    parser.add_argument("--engine", default=os.environ.get("ONSHI_ENGINE", "native"))
    parser.add_argument("--threads", type=int, default=2, help="threaded server handler threads (onshi serve: 2)")
    parser.add_argument(
        "--profile-handler",
        action="store_true",
        help="time the handler's steps in process, no gRPC",
    )
    common.add_record_flag(parser)
    args = parser.parse_args(argv)
    if args.profile_handler:
        profile_handler(args)
    elif args.mode == "_serve":
        serve(args)
    elif args.mode == "_client":
        client(args)
    else:
        bench(args)


if __name__ == "__main__":
    main()
