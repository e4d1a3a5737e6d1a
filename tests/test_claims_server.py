"""ClaimService through the real writer process (`onshi ingest-serve`, killed
at the end) on 127.0.0.1 port 0: verdict streams, recording and apportionment,
pre-submission checks restricted to the facility, bad input as INVALID_ARGUMENT,
and flow control against a slow reader."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import grpc
import pytest

from onshi.client.statuses import field_violations
from onshi.server.claim_service import _Recording
from onshi.v1 import claims_pb2 as cpb
from onshi.v1 import claims_pb2_grpc
from onshi.v1 import qualification_pb2 as qpb
from tests.claims_helpers import (
    FACILITY,
    KUMIAI,
    KYOKAI,
    NHI,
    OTHER_FACILITY,
    D,
    claim,
    person,
    qual,
    unknown_claim,
    write_people,
)

TARO = D(1960, 5, 1)
HANAKO = D(1952, 2, 2)


class IngestServe:
    """`onshi ingest-serve --port 0` as a child process."""

    def __init__(self, data, tmp_path, *extra, engine: str | None = None, env: dict | None = None):
        port_file = tmp_path / "port"
        env = dict(os.environ, **(env or {}), **({"ONSHI_ENGINE": engine} if engine else {}))
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "onshi.cli",
                "ingest-serve",
                "--data",
                str(data),
                "--port",
                "0",
                "--port-file",
                str(port_file),
                "--grace",
                "1",
                *extra,
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=open(tmp_path / "serve.log", "wb"),
        )
        deadline = time.monotonic() + 30
        while not port_file.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.proc.kill()
                raise RuntimeError("ingest-serve did not start: " + (tmp_path / "serve.log").read_text())
            time.sleep(0.05)
        self.port = int(port_file.read_text())
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.port}")
        grpc.channel_ready_future(self.channel).result(timeout=30)
        self.stub = claims_pb2_grpc.ClaimServiceStub(self.channel)

    def stop(self) -> None:
        self.channel.close()
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)


def two_people(data):
    write_people(
        data,
        [
            (
                person("ヤマダ タロウ", TARO),
                [
                    qual(KYOKAI, "12", "345", "00", D(2020, 1, 1), D(2024, 4, 1)),
                    qual(KUMIAI, "A", "9", "00", D(2024, 4, 1)),
                ],
            ),
            (
                person("スズキ ハナコ", HANAKO, sex=2),
                [
                    qual(KYOKAI, "12", "777", "00", D(2015, 1, 1), D(2024, 4, 15)),
                    qual(NHI, "国", "1-2", "00", D(2024, 4, 15)),
                ],
            ),
        ],
    )


@pytest.fixture
def serve(tmp_path, impl):
    """ingest-serve reading through the native engine, or the pure one sharing
    the writer's environment (ONSHI_ENGINE)."""
    two_people(tmp_path / "store")
    server = IngestServe(tmp_path / "store", tmp_path, engine=impl)
    yield server
    server.stop()


@pytest.fixture
def serve_default(tmp_path):
    """ingest-serve with its default engine (for behaviour that does not depend on it)."""
    two_people(tmp_path / "store")
    server = IngestServe(tmp_path / "store", tmp_path)
    yield server
    server.stop()


def months(first=(2024, 4), last=(2024, 4)):
    from google.type import date_pb2

    return dict(
        first_month=date_pb2.Date(year=first[0], month=first[1]), last_month=date_pb2.Date(year=last[0], month=last[1])
    )


def verify(stub, batches, metadata=None):
    return list(
        stub.VerifyClaims(iter([cpb.VerifyClaimsRequest(claims=b) for b in batches]), metadata=metadata, timeout=30)
    )


def test_verdict_stream_records_and_apportions(serve):
    stub = serve.stub
    batch1 = [
        claim("k1", KYOKAI, "12", "345", "00", TARO, D(2024, 4, 2), points=1000),  # -> 組合
        claim("k2", KYOKAI, "12", "777", "00", HANAKO, D(2024, 4, 1), D(2024, 4, 10), points=3000),  # OK
        claim("k3", KYOKAI, "12", "777", "00", HANAKO, D(2024, 4, 14), D(2024, 4, 15), points=2000),  # split
    ]
    batch2 = [
        unknown_claim("u1", D(1999, 1, 1), D(2024, 4, 3), points=100, name_kana="ダレ", sex=qpb.SEX_MALE),
        unknown_claim("u2", D(1999, 1, 1), D(2024, 4, 4), points=1, name_kana="ダレ", sex=qpb.SEX_MALE),
        claim("k4", KYOKAI, "12", "999", "00", TARO, D(2024, 4, 2), points=500),  # return
    ]
    responses = verify(stub, [batch1, batch2])
    assert [[v.claim_id for v in r.verdicts] for r in responses] == [["k1", "k2", "k3"], ["u1", "u2", "k4"]]
    outcomes = [v.outcome for r in responses for v in r.verdicts]
    assert outcomes == [
        cpb.OUTCOME_REROUTE,
        cpb.OUTCOME_OK,
        cpb.OUTCOME_SPLIT,
        cpb.OUTCOME_UNRESOLVED,
        cpb.OUTCOME_UNRESOLVED,
        cpb.OUTCOME_RETURN,
    ]

    r = stub.Apportion(cpb.ApportionRequest(facility_code=FACILITY, **months()), timeout=10)
    # paid: 組合 1000, 協会 3000 + 1000 (split half), 国保 1000; unresolved 101 points in 2 claims
    assert (r.unresolved_points, r.unresolved_claims, r.paid_points) == (101, 2, 6000)
    assert [(s.insurer_number, s.paid_points) for s in r.shares] == sorted(
        [(KYOKAI, 4000), (KUMIAI, 1000), (NHI, 1000)]
    )
    assert sum(s.share_points for s in r.shares) == 101
    assert {s.insurer_number: s.share_points for s in r.shares} == {KYOKAI: 68, KUMIAI: 17, NHI: 16} or {
        s.insurer_number: s.share_points for s in r.shares
    } == {KYOKAI: 67, KUMIAI: 17, NHI: 17}

    # re-verifying the same claims replaces their records: totals do not double
    verify(stub, [batch1, batch2])
    again = stub.Apportion(cpb.ApportionRequest(facility_code=FACILITY, **months()), timeout=10)
    assert again == r
    # another month, another facility: nothing
    empty = stub.Apportion(cpb.ApportionRequest(facility_code=FACILITY, **months((2024, 5), (2024, 6))))
    assert (empty.unresolved_points, empty.paid_points, list(empty.shares)) == (0, 0, [])
    assert stub.Apportion(cpb.ApportionRequest(facility_code=OTHER_FACILITY, **months())).paid_points == 0


def test_same_claim_twice_in_a_batch_counts_once(serve):
    c = claim("twice", KYOKAI, "12", "777", "00", HANAKO, D(2024, 4, 2), points=70)
    later = claim("twice", KYOKAI, "12", "345", "00", TARO, D(2024, 4, 2), points=30)  # -> 組合
    verify(serve.stub, [[c, c, later]])
    r = serve.stub.Apportion(cpb.ApportionRequest(facility_code=FACILITY, **months()), timeout=10)
    assert r.paid_points == 30
    assert [(s.insurer_number, s.paid_points, s.share_points) for s in r.shares] == [(KUMIAI, 30, 0)]


def test_unresolved_without_payments_is_failed_precondition(serve):
    verify(
        serve.stub,
        [[unknown_claim("u", D(1999, 1, 1), D(2024, 4, 3), name_kana="ダレ", sex=1, facility=OTHER_FACILITY)]],
    )
    with pytest.raises(grpc.RpcError) as err:
        serve.stub.Apportion(cpb.ApportionRequest(facility_code=OTHER_FACILITY, **months()))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_pre_submission_check_is_own_facility_only_and_not_recorded(serve):
    md = (("x-onshi-facility", FACILITY),)
    (r,) = verify(serve.stub, [[claim("p1", KYOKAI, "12", "345", "00", TARO, D(2024, 4, 2), points=9)]], md)
    assert r.verdicts[0].outcome == cpb.OUTCOME_REROUTE
    assert serve.stub.Apportion(cpb.ApportionRequest(facility_code=FACILITY, **months())).paid_points == 0
    with pytest.raises(grpc.RpcError) as err:
        verify(serve.stub, [[claim("p2", KYOKAI, "12", "345", "00", TARO, D(2024, 4, 2), facility=OTHER_FACILITY)]], md)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.RpcError) as err:
        verify(serve.stub, [[]], (("x-onshi-facility", "12"),))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_bad_input_is_invalid_argument_with_fields(serve):
    bad = claim("b", KYOKAI, "12", "345", "00", TARO, D(2024, 3, 30), D(2024, 4, 2))
    good = claim("g", KYOKAI, "12", "345", "00", TARO, D(2024, 3, 2))
    calls = serve.stub.VerifyClaims(
        iter([cpb.VerifyClaimsRequest(claims=[good]), cpb.VerifyClaimsRequest(claims=[good, bad])]), timeout=10
    )
    first = next(calls)
    assert first.verdicts[0].outcome == cpb.OUTCOME_OK  # earlier batches are answered
    with pytest.raises(grpc.RpcError) as err:
        next(calls)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(err.value) == [("claims[1].last_visit_date", "the visit period must lie within one month")]
    with pytest.raises(grpc.RpcError) as err:
        serve.stub.Apportion(cpb.ApportionRequest(facility_code="x"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert {f for f, _ in field_violations(err.value)} == {"facility_code", "first_month", "last_month"}
    # the service still answers
    assert verify(serve.stub, [[good]])[0].verdicts[0].outcome == cpb.OUTCOME_OK


def test_slow_reader_holds_the_server_back(serve_default):
    """A client that stops reading stops the server: what it verified (and
    recorded) beyond what the client consumed stays within the HTTP/2
    flow-control windows (a few MiB), not the whole stream."""
    batches, size = 400, 500
    sent = []

    def make(b):
        return cpb.VerifyClaimsRequest(
            claims=[
                claim(f"slow-{b}-{i}-" + "x" * 100, KYOKAI, "12", "777", "00", HANAKO, D(2024, 4, 2), points=1)
                for i in range(size)
            ]
        )

    def requests():
        for b in range(batches):
            sent.append(b)
            yield make(b)

    calls = serve_default.stub.VerifyClaims(requests(), timeout=120)
    consumed = [next(calls) for _ in range(2)]
    response_bytes = consumed[0].ByteSize()
    time.sleep(2.0)  # the reader stalls; the server must stall too

    def verified() -> int:
        return (
            serve_default.stub.Apportion(
                cpb.ApportionRequest(facility_code=FACILITY, **months()), timeout=10
            ).paid_points
            // size
        )

    # wait (bounded) until the server stops: on a loaded machine it may still be
    # filling the transport windows after the first sleep
    ahead, deadline = verified(), time.monotonic() + 60
    while True:
        time.sleep(1.0)
        now = verified()
        if now == ahead or time.monotonic() > deadline:
            break
        ahead = now
    assert verified() == ahead, "server kept verifying while nobody read"
    held = (ahead - len(consumed)) * response_bytes
    assert held <= 16 << 20, f"{held} bytes of verdicts ran ahead of the reader"
    assert ahead < batches * 3 // 4 and len(sent) < batches, (ahead, len(sent))
    rest = list(calls)
    assert len(consumed) + len(rest) == batches
    assert verified() == batches


def test_full_store_is_resource_exhausted_and_keeps_what_was_recorded(tmp_path):
    two_people(tmp_path / "store")
    server = IngestServe(tmp_path / "store", tmp_path, "--map-size", str(1 << 20), "--max-map-size", str(1 << 21))
    try:

        def batch(b):
            return [
                claim(f"full-{b}-{i}-" + "y" * 300, KYOKAI, "12", "777", "00", HANAKO, D(2024, 4, 2), points=1)
                for i in range(1000)
            ]

        answered = 0
        with pytest.raises(grpc.RpcError) as err:
            for _ in serve_stream(server, (batch(b) for b in range(40))):
                answered += 1
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert 0 < answered < 40
        r = server.stub.Apportion(cpb.ApportionRequest(facility_code=FACILITY, **months()), timeout=10)
        # Recording runs behind the verdicts (at most _Recording.MAX_UNRECORDED batches): the
        # stream failed, so the last answered batches may be unrecorded, but what is recorded
        # is whole batches from the start (the committer commits the longest prefix that fits).
        recorded, partial = divmod(r.paid_points, 1000)
        assert partial == 0 and 0 < recorded <= answered
        assert answered - recorded <= _Recording.MAX_UNRECORDED + 1
        # still answering: a pre-submission check writes nothing
        (ok,) = verify(
            server.stub,
            [[claim("after", KYOKAI, "12", "777", "00", HANAKO, D(2024, 4, 2))]],
            (("x-onshi-facility", FACILITY),),
        )
        assert ok.verdicts[0].outcome == cpb.OUTCOME_OK
    finally:
        server.stop()


def serve_stream(server, batches):
    return server.stub.VerifyClaims((cpb.VerifyClaimsRequest(claims=b) for b in batches), timeout=60)


def test_reverifying_a_claim_keeps_only_its_later_verdict(serve_default):
    stub = serve_default.stub
    verify(stub, [[claim("again", KYOKAI, "12", "345", "00", TARO, D(2024, 4, 2), points=1000)]])  # -> 組合
    first = stub.Apportion(cpb.ApportionRequest(facility_code=FACILITY, **months()), timeout=10)
    assert [(s.insurer_number, s.paid_points) for s in first.shares] == [(KUMIAI, 1000)]
    verify(stub, [[claim("again", KYOKAI, "12", "777", "00", HANAKO, D(2024, 4, 2), points=50)]])  # OK
    later = stub.Apportion(cpb.ApportionRequest(facility_code=FACILITY, **months()), timeout=10)
    assert [(s.insurer_number, s.paid_points) for s in later.shares] == [(KYOKAI, 50)]


def mixed_batch(n: int, facility: str = FACILITY) -> list:
    kinds = [
        lambda i: claim(f"m{i}", KYOKAI, "12", "777", "00", HANAKO, D(2024, 4, 2), points=i, facility=facility),
        lambda i: claim(f"m{i}", KYOKAI, "12", "345", "00", TARO, D(2024, 4, 2), points=i, facility=facility),
        lambda i: claim(
            f"m{i}", KYOKAI, "12", "777", "00", HANAKO, D(2024, 4, 14), D(2024, 4, 15), points=i, facility=facility
        ),
        lambda i: unknown_claim(
            f"m{i}", HANAKO, D(2024, 4, 3), name_kana="スズキ ハナコ", sex=2, points=i, facility=facility
        ),
        lambda i: claim(f"m{i}", KYOKAI, "12", "999", "00", TARO, D(2024, 4, 2), points=i, facility=facility),
        lambda i: claim(
            f"m{i}", "０１１３００１２", "１２", "７７７", "0", HANAKO, D(2024, 4, 2), points=i, facility=facility
        ),
    ]
    return [kinds[i % len(kinds)](i) for i in range(n)]


def helper_pids(server) -> list[int]:
    out = []
    for task in os.listdir(f"/proc/{server.proc.pid}/task"):
        with open(f"/proc/{server.proc.pid}/task/{task}/children") as f:
            out += [int(p) for p in f.read().split()]
    return [p for p in out if b"spawn_main" in open(f"/proc/{p}/cmdline", "rb").read()]  # not the resource tracker


def cpu_ticks(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total


def test_a_batch_split_across_helpers_answers_as_one_process(tmp_path):
    """With claim helpers (claim_helpers), a batch is verified in parts by several
    processes: the verdicts are those of one Verifier over the whole batch, error
    indices are the whole batch's, and a killed helper costs nothing but time."""
    from onshi.core.claims import Verifier
    from onshi.core.pure import PureEngine

    two_people(tmp_path / "store")
    server = IngestServe(tmp_path / "store", tmp_path, env={"ONSHI_CLAIM_HELPERS": "2"})
    try:
        time.sleep(3)  # helpers take part once started (about a second)
        batch = mixed_batch(3000)
        (got,) = verify(server.stub, [batch])
        engine = PureEngine(tmp_path / "store")
        try:
            want = Verifier(engine, engine.env).verify(batch)
        finally:
            engine.close()
        assert got == want
        helpers = helper_pids(server)
        assert len(helpers) == 2
        busy = cpu_ticks(helpers)
        assert verify(server.stub, [batch] * 10) == [want] * 10
        assert cpu_ticks(helpers) > busy, "the helpers took no part"

        bad = mixed_batch(3000)
        bad[10].first_visit_date.month = 13
        bad[2500].last_visit_date.day = 40
        with pytest.raises(grpc.RpcError) as err:
            verify(server.stub, [bad])
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        fields = [f for f, _ in field_violations(err.value)]
        assert fields == ["claims[10].first_visit_date", "claims[2500].last_visit_date"]

        own = mixed_batch(3000)
        own[2600].facility_code = OTHER_FACILITY
        with pytest.raises(grpc.RpcError) as err:
            verify(server.stub, [own], (("x-onshi-facility", FACILITY),))
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "claims[2600]" in err.value.details()

        for pid in helper_pids(server):
            os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)
        (after,) = verify(server.stub, [batch])
        assert after == want
        r = server.stub.Apportion(cpb.ApportionRequest(facility_code=FACILITY, **months()), timeout=10)
        assert r.unresolved_claims == 0 and r.paid_points > 0
    finally:
        server.stop()


def test_an_ok_stream_survives_sigkill_right_after_its_status(tmp_path):
    """The verdicts are sent before their commit (docs/CLAIMS.md, durability
    contract), but the stream's OK status only once every batch is durably
    recorded: ingest-serve SIGKILLed as soon as the status arrives loses nothing."""
    from onshi.core import claims as rules
    from onshi.core.store import open_env

    two_people(tmp_path / "store")
    server = IngestServe(tmp_path / "store", tmp_path)
    try:
        batches = [
            [claim(f"d{b}-{i}", KYOKAI, "12", "777", "00", HANAKO, D(2024, 4, 2), points=1) for i in range(200)]
            for b in range(10)
        ]
        assert len(verify(server.stub, batches)) == 10
    finally:
        server.stop()  # SIGKILL
    env = open_env(tmp_path / "store", readonly=True)
    try:
        with env.begin() as txn:
            ledger = env.open_db(b"claim_ledger", txn=txn, create=False)
            ids = [cid for _, value in txn.cursor(db=ledger) for cid, _ in rules.unpack_entries(value)]
    finally:
        env.close()
    assert sorted(ids) == sorted(c.claim_id.encode() for b in batches for c in b)


def test_an_aborted_stream_still_records_the_batches_it_answered(serve_default):
    stub = serve_default.stub

    def batch(b, n=3):
        return [claim(f"d{b}-{i}", KYOKAI, "12", "777", "00", HANAKO, D(2024, 4, 2), points=1) for i in range(n)]

    bad = batch(99)
    bad[1].first_visit_date.month = 13
    answered = []
    with pytest.raises(grpc.RpcError) as err:
        for response in stub.VerifyClaims(
            iter([cpb.VerifyClaimsRequest(claims=b) for b in [batch(10), batch(11), bad, batch(12)]]), timeout=30
        ):
            answered.append(response)  # noqa: PERF402 - keeps what arrived before the error
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and len(answered) == 2
    deadline = time.monotonic() + 10
    while stub.Apportion(cpb.ApportionRequest(facility_code=FACILITY, **months())).paid_points != 6:
        assert time.monotonic() < deadline, "the answered batches of an aborted stream were not recorded"
        time.sleep(0.05)


def test_recording_waits_for_its_commits_behind_a_slow_one(tmp_path):
    """_Recording over the real group committer: with the committer held up by a
    slow write, the verdicts' rows are not yet committed when queued, and
    wait_all returns only once they are (what the stream's OK status waits for)."""
    import threading

    from onshi.core import claims as rules
    from onshi.core.writer import Writer
    from onshi.server.writer_server import GroupWriter

    writer = Writer(tmp_path / "store")
    group = GroupWriter(writer)
    try:
        ledger = rules.open_ledger(group)
        release = threading.Event()
        group.submit(lambda t: release.wait(10), lambda result, exc: None)  # holds the committer
        recording = _Recording(group, ledger)
        for b in range(6):
            rows = [(rules.month_prefix(FACILITY, 202404), f"r{b}-{i}".encode(), b"x\x1f1") for i in range(3)]
            recording.put(rules.pack_ledger(rows))

        def recorded() -> int:
            with writer.env.begin() as txn:
                return sum(1 for _, v in txn.cursor(db=ledger) for _ in rules.unpack_entries(v))

        assert recorded() == 0
        done = threading.Event()
        threading.Thread(target=lambda: (recording.wait_all(), done.set()), daemon=True).start()
        assert not done.wait(0.3), "wait_all returned before the rows were committed"
        release.set()
        assert done.wait(10)
        assert recorded() == 18 and recording.error is None
    finally:
        release.set()
        group.close()
        writer.close()


def test_unparseable_batch_is_invalid_argument(serve_default):
    call = serve_default.channel.stream_stream(
        "/onshi.v1.ClaimService/VerifyClaims", request_serializer=None, response_deserializer=None
    )
    with pytest.raises(grpc.RpcError) as err:
        list(call(iter([b"\x0a\x05abc"]), timeout=10))  # a claim cut short
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in field_violations(err.value)] == ["claims"]
