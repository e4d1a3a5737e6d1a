"""A caller can neither crash nor hang a server by cancelling its streams.

Real servers as the README runs them (`--pki`, an access log), real clients
that cancel while answers flow: every streaming RPC of both servers
(ClaimService.VerifyClaims, EnrollmentService.StreamUpdates and
StreamUpdateBatches, health Watch, server reflection), more times than either
server has handler threads, then ordinary calls must still be answered.

What went wrong before: `onshi ingest-serve` died with SIGSEGV after a few
cancelled VerifyClaims streams (a pool thread still verifying asked the
released call for its caller), and each cancelled stream left a pool thread
blocked for good, so after eight of them every VerifyClaims timed out. The same
cancellations run again with the native extensions built with ASan/UBSan.
"""

from __future__ import annotations

import datetime as dt
import threading

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from onshi.core import dates
from onshi.server import app, claim_service
from onshi.v1 import claims_pb2 as cpb
from onshi.v1 import claims_pb2_grpc, eligibility_pb2, eligibility_pb2_grpc, enrollment_pb2_grpc
from onshi.v1 import enrollment_pb2 as epb
from tests import ingest_support as s
from tests import sanitized
from tests.ingest_support import Proc, onshi
from tests.trust_helpers import FACILITY, INSURER_C, build_store, facility_stem, pki_dir, secure_channel

D = dt.date
CALL = 30.0  # seconds: a call that takes longer hangs


def start(base, env: dict | None = None) -> tuple[Proc, Proc]:
    """`onshi serve` and `onshi ingest-serve` with mTLS and an access log, on one store."""
    build_store(str(base / "store"))
    trust = ("--pki", pki_dir(), "--audit-dir", str(base / "audit"))
    serve = Proc(
        onshi(
            "serve",
            "--data",
            str(base / "store"),
            "--port",
            "0",
            "--workers",
            "1",
            "--port-file",
            str(base / "serve.port"),
            *trust,
        ),
        base / "serve.port",
        base / "serve.log",
        timeout=120,
        env=env,
    )
    try:
        ingest = Proc(
            onshi(
                "ingest-serve",
                "--data",
                str(base / "store"),
                "--port",
                "0",
                "--port-file",
                str(base / "ingest.port"),
                *trust,
            ),
            base / "ingest.port",
            base / "ingest.log",
            timeout=120,
            env=env,
        )
    except BaseException:
        serve.kill()
        raise
    return serve, ingest


def claim(i: int) -> cpb.Claim:
    return cpb.Claim(
        claim_id=f"c{i}",
        facility_code=FACILITY,
        insurer_number=INSURER_C,
        symbol="C1",
        number="400",
        branch="00",
        birth_date=dates.to_proto(D(1990, 5, 6)),
        first_visit_date=dates.to_proto(D(2024, 4, 2)),
        last_visit_date=dates.to_proto(D(2024, 4, 2)),
        kind=cpb.CLAIM_KIND_MEDICAL,
        points=100,
    )


BATCH = cpb.VerifyClaimsRequest(claims=[claim(i) for i in range(500)])


def cancel_after(call, responses: int) -> None:
    """Read `responses` answers (the server is mid-stream), then cancel."""
    for i, _ in enumerate(call):
        if i + 1 >= responses:
            break
    call.cancel()


def updates(stream: int, n: int = 2000):
    people = [s.resident(1000 + stream * n + i) for i in range(n)]
    for i, r in enumerate(people):
        yield s.acquisition(f"cancel-{stream}-{i}", s.EMPLOYEE, r, f"{stream * n + i}", "2024-04-01")


def cancel_every_stream(serve: Proc, ingest: Proc, rounds: int) -> None:
    claims_stub = claims_pb2_grpc.ClaimServiceStub(secure_channel(ingest.port, facility_stem()))
    enrollment = enrollment_pb2_grpc.EnrollmentServiceStub(secure_channel(ingest.port, "insurer-a"))
    for i in range(rounds):
        cancel_after(claims_stub.VerifyClaims(iter([BATCH] * 50), timeout=CALL), 1 + i % 3)
        if i % 2:
            cancel_after(enrollment.StreamUpdates(updates(i), timeout=CALL), 1)
        else:
            batches = (epb.StreamUpdateBatchesRequest(updates=list(updates(i, 200))) for _ in range(1))
            cancel_after(enrollment.StreamUpdateBatches(batches, timeout=CALL), 1)
        for proc in (serve, ingest):
            channel = secure_channel(proc.port, facility_stem())
            cancel_after(health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(), timeout=CALL), 1)
            cancel_after(
                reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
                    iter([reflection_pb2.ServerReflectionRequest(list_services="")] * 3), timeout=CALL
                ),
                1,
            )
            channel.close()
        assert serve.proc.poll() is None, "onshi serve died:\n" + serve.log.read_text()[-3000:]
        assert ingest.proc.poll() is None, "onshi ingest-serve died:\n" + ingest.log.read_text()[-3000:]


def assert_both_answer(serve: Proc, ingest: Proc) -> None:
    stub = claims_pb2_grpc.ClaimServiceStub(secure_channel(ingest.port, facility_stem()))
    answers = list(stub.VerifyClaims(iter([BATCH] * 3), timeout=CALL))
    assert [len(a.verdicts) for a in answers] == [500] * 3
    check = eligibility_pb2_grpc.EligibilityServiceStub(secure_channel(serve.port, facility_stem()))
    answer = check.CheckByNumber(
        eligibility_pb2.CheckByNumberRequest(
            insurer_number=INSURER_C, symbol="C1", number="400", branch="00", birth_date=dates.to_proto(D(1990, 5, 6))
        ),
        timeout=CALL,
    )
    assert answer.validity == eligibility_pb2.VALIDITY_VALID


def test_cancelled_streams_neither_crash_nor_hang_either_server(tmp_path):
    """More cancelled streams of every kind than ingest-serve has threads to
    verify claims on (a blocked thread each would leave none), then both
    servers still answer."""
    serve, ingest = start(tmp_path)
    try:
        cancel_every_stream(serve, ingest, rounds=2 * claim_service.VERIFY_THREADS + 2)
        assert_both_answer(serve, ingest)
    finally:
        serve.kill()
        ingest.kill()


def test_idle_streams_do_not_take_every_handler_thread(tmp_path):
    """Streams a caller opens and leaves idle: `onshi serve` runs checks on a
    few threads (app.DEFAULT_THREADS, app.WAITING_HANDLER_THREADS with an
    access log), so no number of health watchers may hold one, and open
    reflection streams only app.STREAM_SLOTS (further ones are refused);
    ingest-serve holds no thread for a stream waiting for its next batch."""
    serve, ingest = start(tmp_path)
    opened = []
    try:
        channel = secure_channel(serve.port, facility_stem())
        for _ in range(2 * app.WAITING_HANDLER_THREADS):
            watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(), timeout=CALL)
            next(watch)
            opened.append(watch)
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        list_services = reflection_pb2.ServerReflectionRequest(list_services="")
        for _ in range(app.STREAM_SLOTS):  # each answered once, so each holds its thread, then idle
            stream = reflection.ServerReflectionInfo(Idle(list_services), timeout=CALL)
            next(stream)
            opened.append(stream)
        refused = reflection.ServerReflectionInfo(Idle(list_services), timeout=CALL)
        opened.append(refused)
        with pytest.raises(grpc.RpcError) as info:
            next(refused)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        claims_stub = claims_pb2_grpc.ClaimServiceStub(secure_channel(ingest.port, facility_stem()))
        for _ in range(2 * claim_service.VERIFY_THREADS + 2):
            stream = claims_stub.VerifyClaims(Idle(BATCH), timeout=CALL)
            next(stream)
            opened.append(stream)
        assert_both_answer(serve, ingest)
    finally:
        for call in opened:
            call.cancel()
        Idle.end.set()
        serve.kill()
        ingest.kill()


class Idle:
    """A request stream that sends `first`, then nothing until the test ends."""

    end = threading.Event()

    def __init__(self, first):
        self.first = first

    def __iter__(self):
        return self

    def __next__(self):
        if self.first is not None:
            first, self.first = self.first, None
            return first
        self.end.wait(CALL)
        raise StopIteration


@pytest.mark.slow
@pytest.mark.skipif(sanitized.available() is not None, reason=str(sanitized.available()))
def test_cancelled_streams_under_asan_and_ubsan(tmp_path):
    """The same cancellations against servers whose native extensions are built
    with -fsanitize=address,undefined (libasan preloaded, Python's allocations
    through it): a use after free or an overrun ends the server with an ASan
    report instead of passing unseen."""
    env = sanitized.sanitized_env(str(tmp_path / "tree"))
    env["ONSHI_CLAIM_HELPERS"] = "0"
    serve, ingest = start(tmp_path, env=env)
    try:
        cancel_every_stream(serve, ingest, rounds=claim_service.VERIFY_THREADS + 2)
        assert_both_answer(serve, ingest)
    finally:
        serve.kill()
        ingest.kill()
    for log in ("serve.log", "ingest.log"):
        text = (tmp_path / log).read_text()
        assert "ERROR: AddressSanitizer" not in text and "runtime error:" not in text, text[-4000:]
