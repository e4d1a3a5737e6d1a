"""A full access-log disk: every call that would need a record answers
UNAVAILABLE with reason ACCESS_LOG_UNAVAILABLE (no answer leaves without its
record), and the clinic terminal shows its outage procedure for it.

The disk is a real tiny tmpfs (a real ENOSPC), so these tests need root to
mount one, as the full-store tests do (tests/test_ingest_full.py)."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import subprocess

import grpc
import pytest

from onshi.client.statuses import error_reason
from onshi.core import audit
from onshi.core.cardproof import CardVerifier
from onshi.core.engine import open_engine
from onshi.server import access_log, app, auth
from onshi.server.eligibility_trust import EligibilityTrust
from onshi.terminal import screen
from onshi.terminal.client import outcome_of_error
from onshi.terminal.screen import Outcome
from onshi.v1 import claims_pb2_grpc, eligibility_pb2, eligibility_pb2_grpc
from tests.ingest_support import Proc, onshi
from tests.test_cancelled_streams import claim
from tests.trust_helpers import (
    INSURER_C,
    build_store,
    facility_stem,
    pki_dir,
    secure_channel,
    server_credentials,
)

CHECK = eligibility_pb2.CheckByNumberRequest(
    insurer_number=INSURER_C, symbol="C1", number="400", branch="00", birth_date={"year": 1990, "month": 5, "day": 6}
)


@contextlib.contextmanager
def tiny_disk(path, size: str):
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("needs root to mount a tiny tmpfs")
    path.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)]).returncode != 0:
        pytest.skip("cannot mount tmpfs here")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)])


def fill(log: audit.AuditLog) -> OSError:
    """Append until the disk is full; the log is then failed for good (fail-stop)."""
    big = audit.AuditRecord(actor="system", action="Fill", purpose="x" * 60_000)
    for _ in range(1000):
        try:
            log.append(big)
        except OSError as exc:
            return exc
    raise AssertionError("the tmpfs never filled")


def test_a_check_answers_unavailable_and_the_terminal_shows_the_outage_procedure(tmp_path):
    build_store(str(tmp_path / "store"))
    with tiny_disk(tmp_path / "disk", "1200k") as disk:
        log = audit.AuditLog(str(disk / "audit"), "worker")
        engine = open_engine(str(tmp_path / "store"), "pure")
        jpki = os.path.join(pki_dir(), "jpki")
        hooks = EligibilityTrust(CardVerifier.from_files([os.path.join(jpki, "ca.pem")]), log)
        serving = app.create_server(
            engine,
            credentials=server_credentials(),
            interceptors=auth.interceptors(),
            card_proof=hooks.card_proof,
            audit=hooks.audit,
        )
        serving.server.start()
        target = f"127.0.0.1:{serving.port}"
        try:
            stub = eligibility_pb2_grpc.EligibilityServiceStub(secure_channel(serving.port, facility_stem()))
            assert stub.CheckByNumber(CHECK, timeout=10).validity == eligibility_pb2.VALIDITY_VALID
            assert fill(log).errno == errno.ENOSPC
            for _ in range(2):  # and every call after it
                with pytest.raises(grpc.RpcError) as info:
                    stub.CheckByNumber(CHECK, timeout=10)
                assert info.value.code() == grpc.StatusCode.UNAVAILABLE
                assert error_reason(info.value) == access_log.ACCESS_LOG_UNAVAILABLE
            outcome, detail, _ = outcome_of_error(info.value, target)
            assert outcome is Outcome.SERVER_UNREACHABLE  # the server is up, yet this is an outage
            text = screen.render_text(screen.Result(outcome, "number", detail=detail))
            assert "【障害時の手順】" in text and "[Failure procedure]" in text
            assert "access log" in text
        finally:
            serving.server.stop(0).wait()
            engine.close()
            log.close()


def test_ingest_serve_answers_unavailable_when_its_access_log_is_full(tmp_path):
    """A review body's batch of 10,000 claims needs more records than the disk
    holds: its stream ends UNAVAILABLE, and so does a later one."""
    from onshi.v1 import claims_pb2 as cpb

    build_store(str(tmp_path / "store"))
    with tiny_disk(tmp_path / "disk", "1100k") as disk:
        proc = Proc(
            onshi(
                "ingest-serve",
                "--data",
                str(tmp_path / "store"),
                "--port",
                "0",
                "--port-file",
                str(tmp_path / "port"),
                "--pki",
                pki_dir(),
                "--audit-dir",
                str(disk / "audit"),
            ),
            tmp_path / "port",
            tmp_path / "log",
            env={"ONSHI_CLAIM_HELPERS": "0"},
        )
        try:
            stub = claims_pb2_grpc.ClaimServiceStub(secure_channel(proc.port, "review"))
            batch = cpb.VerifyClaimsRequest(claims=[claim(i) for i in range(10_000)])
            for _ in range(2):
                with pytest.raises(grpc.RpcError) as info:
                    list(stub.VerifyClaims(iter([batch]), timeout=60))
                assert info.value.code() == grpc.StatusCode.UNAVAILABLE, info.value.details()
                assert error_reason(info.value) == access_log.ACCESS_LOG_UNAVAILABLE
            assert proc.proc.poll() is None
        finally:
            proc.kill()
