"""Real `onshi serve --port 0 --workers 2` processes on a small hand-built store,
run against both engines: answers equal the engine's bytes, both workers
serve, health, reflection, bad input, graceful shutdown, worker restart."""

from __future__ import annotations

import datetime as dt
import os
import select
import signal
import subprocess
import sys
import threading
import time
from concurrent import futures

import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from onshi.client.statuses import field_violations
from onshi.core import dates, identifiers
from onshi.core.engine import open_engine
from onshi.core.writer import Writer
from onshi.v1 import eligibility_pb2, qualification_pb2

D = dates.to_proto
Q = qualification_pb2
E = eligibility_pb2
SERVICE = "onshi.v1.EligibilityService"
START_TIMEOUT = 30.0


# --- the store -------------------------------------------------------------------

from tests.builders import (  # noqa: E402  (shared with the other server tests)
    KYOKAI,
    LATE,
    MUTUAL,
    NHI,
    NON_JIS_NAME,
    PAYER,
    UNION,
    person,
    qual,
)
from tests.seams import SEAMS  # noqa: E402

PERSONS = {
    # card serial -> (person, qualifications)
    "A1": (
        person("山田 花子", "ヤマダ ハナコ", dt.date(1980, 5, 17)),
        [
            qual(
                UNION,
                "12",
                "3456",
                "00",
                dt.date(2020, 4, 1),
                limit_amount=Q.LimitAmountCertificate(
                    category="ウ",
                    valid_from=D(dt.date(2024, 8, 1)),
                    valid_until=D(dt.date(2025, 7, 31)),
                ),
                subsidies=[
                    Q.PublicExpenseSubsidy(
                        payer_number=PAYER,
                        recipient_number="1234566",
                        programme="難病",
                        burden_ratio_percent=20,
                        monthly_cap_yen=10000,
                    )
                ],
            ),
        ],
    ),
    "B2": (
        person("佐藤 一郎", "サトウ イチロウ", dt.date(1975, 1, 9), Q.SEX_MALE),
        [
            qual(
                KYOKAI,
                "7001",
                "88",
                "00",
                dt.date(2015, 4, 1),
                dt.date(2022, 4, 1),
                Q.LOSS_REASON_OTHER_INSURANCE,
            ),
            qual(NHI, "", "550011", "00", dt.date(2022, 4, 1)),
        ],
    ),
    "C3": (
        person("鈴木 次郎", "スズキ ジロウ", dt.date(1990, 2, 28), Q.SEX_MALE),
        [
            qual(UNION, "34", "777", "00", dt.date(2021, 1, 1)),
            qual(MUTUAL, "9", "123", "01", dt.date(2023, 6, 1)),
        ],
    ),
    "D4": (
        person("高橋 トメ", "タカハシ トメ", dt.date(1948, 3, 3)),
        [
            qual(
                KYOKAI,
                "5",
                "40",
                "01",
                dt.date(1990, 1, 1),
                dt.date(2023, 3, 3),
                Q.LOSS_REASON_OTHER,
            ),
            qual(
                LATE,
                "",
                "00012345",
                "",
                dt.date(2023, 3, 3),
                burden_ratio_percent=10,
                card_kind=Q.CARD_KIND_LATE_ELDERLY,
            ),
        ],
    ),
    "E5": (
        person(NON_JIS_NAME, "ヨシダ カツコ", dt.date(2001, 12, 31)),
        [
            qual(
                UNION,
                "56",
                "901",
                "02",
                dt.date(2019, 4, 1),
                dt.date(2024, 4, 1),
                Q.LOSS_REASON_OTHER,
            ),
        ],
    ),
}
AS_OF = [
    dt.date(2014, 1, 1),
    dt.date(2020, 4, 1),
    dt.date(2022, 3, 31),
    dt.date(2022, 4, 1),
    dt.date(2023, 6, 1),
    dt.date(2024, 3, 31),
    dt.date(2024, 4, 1),
    dt.date(2026, 11, 21),
]


def build_store(path) -> None:
    writer = Writer(path)
    try:
        for serial, (p, quals) in PERSONS.items():

            def change(t, p=p, quals=quals, serial=serial):
                link = t.new_link_id()
                t.put_history(link, p, quals)
                t.link_card(identifiers.card_serial_key(serial), link)

            writer.apply(change)
    finally:
        writer.close()


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("store")
    build_store(path)
    return str(path)


# --- real server processes ---------------------------------------------------------


class ServerProcess:
    def __init__(self, data, engine, *extra, workers=2, seams=()):
        """`seams`: test-only delays (tests/seams.py options) patched into the server."""
        env = dict(os.environ, ONSHI_ENGINE=engine, PYTHONUNBUFFERED="1")
        self.port_file = os.path.join(data, f"port-{os.getpid()}-{time.time_ns()}")
        onshi_argv = [sys.executable, SEAMS, *seams, "--"] if seams else [sys.executable, "-m", "onshi.cli"]
        self.proc = subprocess.Popen(
            [
                *onshi_argv,
                "serve",
                "--data",
                data,
                "--port",
                "0",
                "--workers",
                str(workers),
                "--engine",
                engine,
                "--port-file",
                self.port_file,
                *extra,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.stderr: list[str] = []
        threading.Thread(target=self._drain, daemon=True).start()
        line = self._first_line()
        # onshi: serving on 127.0.0.1:PORT workers=N engine=KIND pids=P1,P2
        fields = dict(f.split("=", 1) for f in line.split()[4:])
        self.target = line.split()[3]
        self.engine = fields["engine"]
        self.pids = {int(p) for p in fields["pids"].split(",")}
        assert fields["workers"] == str(workers) and len(self.pids) == workers

    def _drain(self):
        for line in self.proc.stderr:
            self.stderr.append(line)

    def _first_line(self) -> str:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.2)
            if ready:
                line = self.proc.stdout.readline()
                if line.startswith("onshi: serving on "):
                    return line.strip()
            if self.proc.poll() is not None:
                break
        self.proc.kill()
        raise AssertionError(f"server did not start: {''.join(self.stderr)}")

    def stop(self, timeout=20.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise

    def channel(self) -> grpc.Channel:
        return grpc.insecure_channel(self.target)


@pytest.fixture(scope="module")
def server(store, impl):
    srv = ServerProcess(store, impl)
    yield srv
    assert srv.stop() == 0, "".join(srv.stderr)


@pytest.fixture(scope="module")
def engine(store, impl):
    eng = open_engine(store, impl)
    yield eng
    eng.close()


@pytest.fixture(scope="module")
def channel(server):
    with server.channel() as ch:
        yield ch


def raw_call(channel, method, request: bytes, metadata=None):
    """Bytes in, bytes out: what the server sends, before any parsing."""
    call = channel.unary_unary(f"/{SERVICE}/{method}", request_serializer=None, response_deserializer=None)
    return call(request, timeout=5, metadata=metadata)


def invalid_argument(channel, method, request: bytes) -> list[tuple[str, str]]:
    with pytest.raises(grpc.RpcError) as info:
        raw_call(channel, method, request)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
    return field_violations(info.value)


# --- answers -------------------------------------------------------------------


def test_engine_is_the_one_asked_for(server, impl):
    assert server.engine == impl


def test_port_file_names_the_served_port(server):
    with open(server.port_file) as f:
        assert server.target == f"127.0.0.1:{int(f.read())}"


def test_only_workers_open_the_store(server, store):
    """LMDB environments must not cross a fork: the supervisor never opens one."""

    def maps(pid):
        with open(f"/proc/{pid}/maps") as f:
            return os.path.join(store, "data.mdb") in f.read()

    assert not maps(server.proc.pid)
    assert all(maps(pid) for pid in server.pids)


def test_card_answers_are_the_engines_bytes(channel, engine):
    seen = set()
    for serial in [*PERSONS, "a1", "0x00A1", "FFFF"]:
        for day in AS_OF:
            request = E.CheckByCardRequest(card_serial=serial, as_of=D(day)).SerializeToString()
            got = raw_call(channel, "CheckByCard", request)
            assert got == engine.check_by_card(identifiers.card_serial_key(serial), dates.to_day(day))
            seen.add(E.CheckResponse.FromString(got).validity)
    assert seen == {E.VALIDITY_VALID, E.VALIDITY_INVALID, E.VALIDITY_NO_RECORD, E.VALIDITY_MULTIPLE}


def test_number_answers_are_the_engines_bytes(channel, engine):
    seen = set()
    for p, quals in PERSONS.values():
        birth = dates.from_proto(p.birth_date)
        for q in quals:
            for claimed in (birth, birth + dt.timedelta(days=1)):
                for day in AS_OF:
                    request = E.CheckByNumberRequest(
                        insurer_number=q.insurer_number,
                        symbol=q.symbol,
                        number=q.number,
                        branch=q.branch,
                        birth_date=D(claimed),
                        as_of=D(day),
                    ).SerializeToString()
                    got = raw_call(channel, "CheckByNumber", request)
                    key = identifiers.number_key(q.insurer_number, q.symbol, q.number, q.branch)
                    assert got == engine.check_by_number(key, dates.to_day(claimed), dates.to_day(day))
                    seen.add(E.CheckResponse.FromString(got).validity)
    # (MULTIPLE by number would need one number twice in one person's history)
    assert seen == {
        E.VALIDITY_VALID,
        E.VALIDITY_INVALID,
        E.VALIDITY_INVALID_NEWER_EXISTS,
        E.VALIDITY_NO_RECORD,
    }


def test_typed_lost_number_hides_the_newer_insurer(channel):
    _, (old, _new) = PERSONS["B2"]
    request = E.CheckByNumberRequest(
        insurer_number=old.insurer_number,
        symbol=old.symbol,
        number=old.number,
        branch=old.branch,
        birth_date=D(dt.date(1975, 1, 9)),
        as_of=D(dt.date(2023, 1, 1)),
    )
    answer = E.CheckResponse.FromString(raw_call(channel, "CheckByNumber", request.SerializeToString()))
    assert answer.validity == E.VALIDITY_INVALID_NEWER_EXISTS
    assert [q.insurer_number for q in answer.qualifications] == [KYOKAI]
    assert NHI.encode() not in raw_call(channel, "CheckByNumber", request.SerializeToString())


def test_late_elderly_number_ignores_symbol_and_branch(channel):
    request = E.CheckByNumberRequest(
        insurer_number=LATE,
        symbol="x",
        number="00012345",
        branch="",
        birth_date=D(dt.date(1948, 3, 3)),
        as_of=D(dt.date(2024, 1, 1)),
    )
    answer = E.CheckResponse.FromString(raw_call(channel, "CheckByNumber", request.SerializeToString()))
    assert answer.validity == E.VALIDITY_VALID
    assert answer.qualifications[0].card_kind == Q.CARD_KIND_LATE_ELDERLY


def test_non_jis_name_and_ivs_arrive_byte_exact(channel):
    request = E.CheckByCardRequest(card_serial="E5", as_of=D(dt.date(2020, 1, 1)))
    got = raw_call(channel, "CheckByCard", request.SerializeToString())
    assert NON_JIS_NAME.encode("utf-8") in got
    assert E.CheckResponse.FromString(got).qualifications[0].person.name == NON_JIS_NAME


def test_absent_as_of_means_today_in_japan(channel, engine):
    key = identifiers.card_serial_key("B2")
    before = engine.check_by_card(key, dates.today_jst())
    got = raw_call(channel, "CheckByCard", E.CheckByCardRequest(card_serial="B2").SerializeToString())
    assert got in (before, engine.check_by_card(key, dates.today_jst()))  # midnight JST may pass


def test_stub_client_reads_the_answer(server):
    from onshi.client.connection import EligibilityClient

    with EligibilityClient(server.target) as client:
        answer = client.check_by_card("c3", dt.date(2024, 1, 1))
        assert answer.validity == E.VALIDITY_MULTIPLE
        assert len(answer.qualifications) == 2
        answer = client.check_by_number(UNION, "12", "3456", "00", dt.date(1980, 5, 17), dt.date(2025, 1, 1))
        assert answer.validity == E.VALIDITY_VALID
        assert answer.qualifications[0].subsidies[0].payer_number == PAYER


# --- workers, health, reflection ----------------------------------------------------


def worker_pid(channel) -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    response, call = stub.Check.with_call(health_pb2.HealthCheckRequest(service=SERVICE), timeout=5)
    assert response.status == health_pb2.HealthCheckResponse.SERVING
    return int(dict(call.trailing_metadata())["onshi-worker-pid"])


def test_both_workers_serve(server):
    seen = set()
    for i in range(64):  # SO_REUSEPORT hashes each new connection onto a worker
        # A distinct channel argument stops grpc from sharing one subchannel.
        with grpc.insecure_channel(server.target, options=[("onshi.test.nonce", f"{i}-{time.time_ns()}")]) as ch:
            seen.add(worker_pid(ch))
        if seen == server.pids:
            break
    assert seen == server.pids


def test_health_serving(channel):
    stub = health_pb2_grpc.HealthStub(channel)
    for service in ("", SERVICE):
        answer = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING


def test_reflection_lists_services(channel):
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    requests = iter(
        [
            reflection_pb2.ServerReflectionRequest(list_services=""),
            reflection_pb2.ServerReflectionRequest(file_containing_symbol=SERVICE),
        ]
    )
    listed, described = list(stub.ServerReflectionInfo(requests, timeout=5))
    names = {s.name for s in listed.list_services_response.service}
    assert {SERVICE, "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= names
    files = [
        descriptor_pb2.FileDescriptorProto.FromString(b)
        for b in described.file_descriptor_response.file_descriptor_proto
    ]
    methods = {m.name for f in files for s in f.service if s.name == "EligibilityService" for m in s.method}
    assert methods == {"CheckByCard", "CheckByNumber"}


# --- bad input --------------------------------------------------------------------


def card(**kw) -> bytes:
    kw.setdefault("card_serial", "A1")
    return E.CheckByCardRequest(**kw).SerializeToString()


def number(**kw) -> bytes:
    fields = dict(
        insurer_number=UNION,
        symbol="12",
        number="3456",
        branch="00",
        birth_date=D(dt.date(1980, 5, 17)),
    )
    fields.update(kw)
    return E.CheckByNumberRequest(**{k: v for k, v in fields.items() if v is not None}).SerializeToString()


def bad_date(y, m, d):
    from google.type import date_pb2

    return date_pb2.Date(year=y, month=m, day=d)


BAD_INPUT = [
    ("CheckByCard", card(card_serial="xyz"), "card_serial"),
    ("CheckByCard", card(card_serial=""), "card_serial"),
    ("CheckByCard", card(card_serial="1" * 41), "card_serial"),
    ("CheckByCard", card(card_serial="A" * 30_000), "card_serial"),
    ("CheckByCard", card(as_of=bad_date(2024, 13, 1)), "as_of.month"),
    ("CheckByCard", card(as_of=bad_date(2023, 2, 30)), "as_of.day"),
    ("CheckByCard", card(as_of=bad_date(0, 1, 1)), "as_of.year"),
    ("CheckByCard", card(as_of=bad_date(0, 0, 0)), "as_of.year"),
    ("CheckByCard", b"\xff\xff\xff", "request"),
    ("CheckByCard", b"\x0a\x02\xff\xfe", "request"),  # card_serial not UTF-8
    (
        "CheckByNumber",
        number(insurer_number=UNION[:-1] + str((int(UNION[-1]) + 1) % 10)),
        "insurer_number",
    ),
    ("CheckByNumber", number(insurer_number="0613001"), "insurer_number"),
    ("CheckByNumber", number(insurer_number="０６１３００１X"), "insurer_number"),
    ("CheckByNumber", number(branch=""), "branch"),
    ("CheckByNumber", number(branch="abc"), "branch"),
    ("CheckByNumber", number(number=""), "number"),
    ("CheckByNumber", number(number="9" * 21), "number"),
    ("CheckByNumber", number(symbol="記" * 21), "symbol"),
    ("CheckByNumber", number(birth_date=None), "birth_date"),
    ("CheckByNumber", number(birth_date=bad_date(1980, 2, 30)), "birth_date.day"),
    ("CheckByNumber", number(as_of=bad_date(2024, 13, 1)), "as_of.month"),
    ("CheckByNumber", b"\x0a\x02\xff\xfe", "request"),
]


@pytest.mark.parametrize(
    "method,request_bytes,field",
    BAD_INPUT,
    ids=[f"{m}-{f}-{i}" for i, (m, _, f) in enumerate(BAD_INPUT)],
)
def test_bad_input_is_invalid_argument_with_the_field(channel, method, request_bytes, field):
    violations = invalid_argument(channel, method, request_bytes)
    assert field in [f for f, _ in violations], violations


def test_every_violation_is_reported_at_once(channel):
    violations = invalid_argument(
        channel,
        "CheckByNumber",
        number(insurer_number="06130018", birth_date=None, as_of=bad_date(2023, 2, 29)),
    )
    assert {f for f, _ in violations} == {"insurer_number", "birth_date", "as_of.day"}


def test_card_proof_without_verifier_is_failed_precondition(channel):
    for request in (
        card(card_certificate=b"\x30\x82"),
        card(card_signature=b"sig"),
        card(challenge=E.CardChallenge(facility_code="1312345678")),
    ):
        with pytest.raises(grpc.RpcError) as info:
            raw_call(channel, "CheckByCard", request)
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "card proof verification not configured" in info.value.details()


def test_oversize_request_is_refused_not_internal(channel):
    with pytest.raises(grpc.RpcError) as info:
        raw_call(channel, "CheckByCard", card(card_certificate=b"\0" * 200_000))
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_server_still_answers_after_bad_input(channel, engine):
    got = raw_call(channel, "CheckByCard", card(as_of=D(dt.date(2024, 1, 1))))
    assert got == engine.check_by_card(identifiers.card_serial_key("A1"), dates.to_day(dt.date(2024, 1, 1)))


# --- onshi check --------------------------------------------------------------------


def onshi(*args):
    return subprocess.run([sys.executable, "-m", "onshi.cli", *args], capture_output=True, text=True, timeout=30)


def test_no_command_has_hidden_options():
    """Test and bench knobs are seams of the test or bench process
    (tests/seams.py, bench/seams.py), not options a server accepts unseen."""
    import argparse

    from onshi.cli import build_parser

    hidden = []

    def walk(parser, path):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, f"{path} {name}")
            elif action.help == argparse.SUPPRESS and action.option_strings != ["-h", "--help"]:
                hidden.append(f"{path} {'/'.join(action.option_strings)}")

    walk(build_parser(), "onshi")
    assert hidden == []


def test_onshi_check_cli(server):
    out = onshi("check", "--target", server.target, "--card", "E5", "--as-of", "2020-01-01")
    assert out.returncode == 0, out.stderr
    assert "有効" in out.stdout and "valid" in out.stdout and NON_JIS_NAME in out.stdout
    out = onshi(
        "check",
        "--target",
        server.target,
        "--number",
        KYOKAI,
        "7001",
        "88",
        "00",
        "--birth",
        "1975-01-09",
        "--as-of",
        "2023-01-01",
        "--json",
    )
    assert out.returncode == 10 + E.VALIDITY_INVALID_NEWER_EXISTS, out.stderr
    assert '"validity": "VALIDITY_INVALID_NEWER_EXISTS"' in out.stdout
    out = onshi("check", "--target", server.target, "--number", "06130018", "12", "3456", "00")
    assert out.returncode == 2
    assert "insurer_number" in out.stderr and "birth_date" in out.stderr
    out = onshi("check", "--target", server.target, "--card", "zz", "--as-of", "2023-02-29")
    assert out.returncode == 2
    assert "card_serial" in out.stderr and "as_of.day" in out.stderr
    out = onshi("check", "--target", server.target, "--card", "FFFF", "--as-of", "2023-02-28")
    assert out.returncode == 10 + E.VALIDITY_NO_RECORD and "該当資格なし" in out.stdout


# --- lifecycle (a server of their own) ---------------------------------------------


def test_killed_worker_is_reported_and_replaced(store, impl):
    srv = ServerProcess(store, impl)
    try:
        victim = min(srv.pids)
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 15
        while not any("restarted worker as" in line for line in srv.stderr):
            assert time.monotonic() < deadline, "".join(srv.stderr)
            time.sleep(0.05)
        assert any(f"worker {victim} killed by SIGKILL" in line for line in srv.stderr)
        new = int(next(line for line in srv.stderr if "restarted worker as" in line).split()[-1])
        seen = set()
        deadline = time.monotonic() + 15
        while new not in seen:
            assert time.monotonic() < deadline, f"replacement {new} never answered; saw {seen}"
            with grpc.insecure_channel(srv.target, options=[("onshi.test.nonce", str(time.time_ns()))]) as ch:
                seen.add(worker_pid(ch))
        assert victim not in seen
    finally:
        assert srv.stop() == 0, "".join(srv.stderr)


def test_sigterm_drains_in_flight_calls_and_exits_0(store, impl, engine):
    delay = 1.0
    srv = ServerProcess(
        store,
        impl,
        "--grace",
        "5",
        "--threads",
        "8",  # every call inside a handler at once, none queued
        seams=("--check-delay-ms", str(delay * 1000)),
    )
    channels = [grpc.insecure_channel(srv.target, options=[("onshi.test.nonce", str(i))]) for i in range(8)]
    watch_channel = srv.channel()
    try:
        statuses = []
        watch = health_pb2_grpc.HealthStub(watch_channel).Watch(
            health_pb2.HealthCheckRequest(service=SERVICE), timeout=20
        )

        def follow():
            for r in _until_cancelled(watch):
                statuses.append(r.status)
                if r.status == health_pb2.HealthCheckResponse.NOT_SERVING:
                    watch.cancel()  # else the open stream holds the stop for the whole grace

        watcher = threading.Thread(target=follow)
        watcher.start()
        for ch in channels:  # connected first, so the calls reach handlers at once
            grpc.channel_ready_future(ch).result(timeout=10)
        deadline = time.monotonic() + 10
        while not statuses:  # the watch is established before the stop
            assert time.monotonic() < deadline, "health Watch never answered"
            time.sleep(0.02)
        request = card(as_of=D(dt.date(2024, 1, 1)))
        expected = engine.check_by_card(identifiers.card_serial_key("A1"), dates.to_day(dt.date(2024, 1, 1)))
        with futures.ThreadPoolExecutor(len(channels)) as pool:
            calls = [pool.submit(raw_call, ch, "CheckByCard", request) for ch in channels]
            time.sleep(delay / 2)  # every call is now inside a handler
            in_flight = [c for c in calls if not c.done()]
            srv.proc.send_signal(signal.SIGTERM)
            answers = [c.result(timeout=10) for c in calls]
        assert in_flight, "every call was answered before the stop: nothing to hold"
        assert answers == [expected] * len(channels)  # those in flight were answered, not cut short
        assert srv.proc.wait(20) == 0, "".join(srv.stderr)
        watcher.join(10)
        assert statuses[0] == health_pb2.HealthCheckResponse.SERVING
        assert health_pb2.HealthCheckResponse.NOT_SERVING in statuses, statuses
        with pytest.raises(grpc.RpcError) as info:  # and nothing answers afterwards
            raw_call(grpc.insecure_channel(srv.target), "CheckByCard", request)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        for ch in (*channels, watch_channel):
            ch.close()
        if srv.proc.poll() is None:
            srv.proc.kill()


def _until_cancelled(stream):
    try:
        yield from stream
    except grpc.RpcError:
        return


def test_serve_refuses_a_taken_port_and_a_missing_store(store, tmp_path):
    import socket

    with socket.socket() as taken:  # bound without SO_REUSEPORT (not listening: the bind fails)
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        out = onshi("serve", "--data", store, "--port", str(port), "--workers", "1")
    assert out.returncode == 1 and "cannot serve" in out.stderr
    out = onshi("serve", "--data", str(tmp_path / "nowhere"), "--port", "0", "--workers", "1")
    assert out.returncode == 2 and "no store" in out.stderr


def test_serve_does_not_join_another_servers_port(server, store):
    # SO_REUSEPORT would accept it and split the first server's traffic.
    port = server.target.rsplit(":", 1)[1]
    out = onshi("serve", "--data", store, "--port", port, "--workers", "1")
    assert out.returncode == 1 and "another server is listening" in out.stderr
    with server.channel() as ch:
        assert worker_pid(ch) in server.pids


def test_grace_shorter_than_a_call_still_stops_cleanly(store, impl):
    """A call outliving the grace is cut (CANCELLED/UNAVAILABLE to the client), and
    the worker waits for its handler to leave the engine before closing it."""
    srv = ServerProcess(store, impl, "--grace", "0.2", workers=1, seams=("--check-delay-ms", "1000"))
    with srv.channel() as ch, futures.ThreadPoolExecutor(1) as pool:
        call = pool.submit(raw_call, ch, "CheckByCard", card(as_of=D(dt.date(2024, 1, 1))))
        time.sleep(0.3)
        srv.proc.send_signal(signal.SIGTERM)
        with pytest.raises(grpc.RpcError) as info:
            call.result(timeout=10)
        assert info.value.code() in (grpc.StatusCode.CANCELLED, grpc.StatusCode.UNAVAILABLE)
        assert srv.proc.wait(20) == 0, "".join(srv.stderr)
    assert "Traceback" not in "".join(srv.stderr)


# --- no client input is the server's fault -------------------------------------------

CLIENT_FAULTS = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION}


def _status(channel, method, body: bytes) -> grpc.StatusCode:
    try:
        raw_call(channel, method, body)
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


def test_arbitrary_bytes_never_answer_internal(channel):
    import random

    rng = random.Random(20261121)
    for _ in range(150):
        body = rng.randbytes(rng.randrange(0, 64))
        for method in ("CheckByCard", "CheckByNumber"):
            code = _status(channel, method, body)
            assert code in CLIENT_FAULTS | {grpc.StatusCode.OK}, (method, body, code)


def test_arbitrary_fields_never_answer_internal(channel):
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    dates_ = st.builds(
        bad_date,
        st.integers(-(2**31), 2**31 - 1),
        st.integers(-(2**31), 2**31 - 1),
        st.integers(-(2**31), 2**31 - 1),
    ) | st.builds(bad_date, st.integers(0, 10000), st.integers(0, 13), st.integers(0, 32))
    text = st.text(max_size=30) | st.from_regex(r"[0-9０-９ -]{0,10}", fullmatch=True)

    @settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))
    @given(text, text, text, text, st.none() | dates_, st.none() | dates_, text)
    def check(insurer, symbol, number_, branch, birth, as_of, serial):
        body = E.CheckByNumberRequest(
            insurer_number=insurer,
            symbol=symbol,
            number=number_,
            branch=branch,
            birth_date=birth,
            as_of=as_of,
        ).SerializeToString()
        assert _status(channel, "CheckByNumber", body) in CLIENT_FAULTS | {grpc.StatusCode.OK}
        body = E.CheckByCardRequest(card_serial=serial, as_of=as_of).SerializeToString()
        assert _status(channel, "CheckByCard", body) in CLIENT_FAULTS | {grpc.StatusCode.OK}

    check()


# --- the trust layer's hooks -------------------------------


def test_card_proof_and_audit_hooks_on_a_real_server(engine):
    """create_server(card_proof=, audit=): the hook's serial key is looked up, its
    extra bytes (CheckResponse.warnings) arrive appended, audit sees the answer
    and the key that was looked up; a bad as_of is refused before the proof is
    verified (no nonce spent)."""
    from onshi.server import app

    warning = E.Warning(code=E.WARNING_CODE_CARD_CERTIFICATE_EXPIRING, message="2 months left")
    extra = E.CheckResponse(warnings=[warning]).SerializeToString()
    proofs, audited, keys = [], [], []

    def card_proof(request, caller, context):
        proofs.append(request.card_signature)
        return identifiers.card_serial_key("A1"), extra

    def audit(context, caller, method, request, key, response):
        audited.append((method, response))
        keys.append(key)

    serving = app.create_server(engine, card_proof=card_proof, audit=audit)
    serving.server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{serving.port}") as ch:
            body = card(card_serial="", card_signature=b"sig", as_of=D(dt.date(2024, 1, 1)))
            got = raw_call(ch, "CheckByCard", body)
            answer = E.CheckResponse.FromString(got)
            assert answer.validity == E.VALIDITY_VALID
            assert list(answer.warnings) == [warning]
            assert got.startswith(
                engine.check_by_card(identifiers.card_serial_key("A1"), dates.to_day(dt.date(2024, 1, 1)))
            )
            assert audited == [("CheckByCard", got)]
            assert keys == [identifiers.card_serial_key("A1")]
            bad = card(card_signature=b"sig2", as_of=bad_date(2024, 2, 30))
            assert [f for f, _ in invalid_argument(ch, "CheckByCard", bad)] == ["as_of.day"]
            assert proofs == [b"sig"]
    finally:
        serving.server.stop(0).wait()
