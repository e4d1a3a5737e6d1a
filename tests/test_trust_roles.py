"""Roles on the writer process's services under mTLS (`onshi ingest-serve --pki`):
each role's allowed and denied calls, insurers only for their own numbers,
facilities only for their own code; and `--insecure-dev` on loopback only."""

from __future__ import annotations

import subprocess

import grpc
import pytest

from onshi.v1 import claims_pb2, claims_pb2_grpc, enrollment_pb2, enrollment_pb2_grpc
from tests.ingest_support import Proc, _env, onshi
from tests.trust_helpers import (
    FACILITY,
    INSURER_A,
    INSURER_B,
    OTHER_FACILITY,
    build_store,
    facility_stem,
    pki_dir,
    secure_channel,
)


@pytest.fixture(scope="module")
def ingest(tmp_path_factory):
    base = tmp_path_factory.mktemp("roles")
    build_store(str(base / "store"))
    proc = Proc(
        onshi(
            "ingest-serve",
            "--data",
            str(base / "store"),
            "--port",
            "0",
            "--port-file",
            str(base / "port"),
            "--pki",
            pki_dir(),
            "--audit-dir",
            str(base / "audit"),
        ),
        base / "port",
        base / "log",
    )
    yield proc.port
    proc.stop()


def code(call) -> grpc.StatusCode | None:
    try:
        call()
    except grpc.RpcError as err:
        return err.code()
    return None


def enrollment(port, stem):
    return enrollment_pb2_grpc.EnrollmentServiceStub(secure_channel(port, stem))


def claims(port, stem):
    return claims_pb2_grpc.ClaimServiceStub(secure_channel(port, stem))


def test_insurer_reads_its_own_notices_only(ingest):
    req = enrollment_pb2.ListNoticesRequest
    assert code(lambda: enrollment(ingest, "insurer-a").ListNotices(req(), timeout=10)) is None
    assert code(lambda: enrollment(ingest, "insurer-a").ListNotices(req(insurer_number=INSURER_A), timeout=10)) is None
    assert (
        code(lambda: enrollment(ingest, "insurer-a").ListNotices(req(insurer_number=INSURER_B), timeout=10))
        == grpc.StatusCode.PERMISSION_DENIED
    )
    # Declaring another insurer's number in metadata does not widen the certificate.
    assert (
        code(
            lambda: enrollment(ingest, "insurer-a").ListNotices(
                req(), timeout=10, metadata=(("x-onshi-insurer", INSURER_B),)
            )
        )
        == grpc.StatusCode.PERMISSION_DENIED
    )
    for stem in (facility_stem(), "review", "operator"):
        assert (
            code(lambda stem=stem: enrollment(ingest, stem).ListNotices(req(), timeout=10))
            == grpc.StatusCode.PERMISSION_DENIED
        ), stem


def test_registry_is_for_the_operator(ingest):
    req = enrollment_pb2.PutResidentsRequest()
    assert code(lambda: enrollment(ingest, "operator").PutResidents(req, timeout=10)) is None
    assert (
        code(lambda: enrollment(ingest, "insurer-a").PutResidents(req, timeout=10)) == grpc.StatusCode.PERMISSION_DENIED
    )


def test_card_linking_is_the_portals_not_a_facilitys(ingest):
    """DOMAIN.md §4: the person links card and number through the government
    portal (its backend: the operator role). A facility that holds a patient's
    number and a card serial must not link them, nor read whose card is whose."""
    links = enrollment_pb2_grpc.LinkServiceStub
    link = enrollment_pb2.LinkCardRequest(card_serial="ABCD", resident_id="10000000001", consent=True)
    notices = enrollment_pb2.ListLinkNoticesRequest(resident_id="10000000001")
    for stem in (facility_stem(), "insurer-a", "review"):
        assert (
            code(lambda stem=stem: links(secure_channel(ingest, stem)).LinkCard(link, timeout=10))
            == grpc.StatusCode.PERMISSION_DENIED
        ), stem
        assert (
            code(lambda stem=stem: links(secure_channel(ingest, stem)).ListLinkNotices(notices, timeout=10))
            == grpc.StatusCode.PERMISSION_DENIED
        ), stem
    assert code(lambda: links(secure_channel(ingest, "operator")).ListLinkNotices(notices, timeout=10)) is None


def _claim(facility):
    return claims_pb2.Claim(
        claim_id="c1",
        facility_code=facility,
        insurer_number=INSURER_A,
        symbol="A1",
        number="100",
        branch="00",
        birth_date={"year": 1970, "month": 1, "day": 2},
        first_visit_date={"year": 2024, "month": 4, "day": 2},
        last_visit_date={"year": 2024, "month": 4, "day": 2},
        kind=1,
        points=100,
    )


def verify(port, stem, facility):
    return list(
        claims(port, stem).VerifyClaims(iter([claims_pb2.VerifyClaimsRequest(claims=[_claim(facility)])]), timeout=10)
    )


def test_claims_review_body_and_facility_own_code(ingest):
    assert code(lambda: verify(ingest, "review", FACILITY)) is None
    assert code(lambda: verify(ingest, facility_stem(), FACILITY)) is None
    assert code(lambda: verify(ingest, facility_stem(), OTHER_FACILITY)) == grpc.StatusCode.PERMISSION_DENIED
    assert code(lambda: verify(ingest, "insurer-a", FACILITY)) == grpc.StatusCode.PERMISSION_DENIED
    apportion = claims_pb2.ApportionRequest(
        facility_code=FACILITY, first_month={"year": 2024, "month": 4}, last_month={"year": 2024, "month": 4}
    )
    assert code(lambda: claims(ingest, "review").Apportion(apportion, timeout=10)) is None
    assert (
        code(lambda: claims(ingest, facility_stem()).Apportion(apportion, timeout=10))
        == grpc.StatusCode.PERMISSION_DENIED
    )


def test_no_certificate_and_foreign_ca_never_reach_the_services(ingest):
    req = enrollment_pb2.ListNoticesRequest()
    assert code(lambda: enrollment(ingest, None).ListNotices(req, timeout=10)) == grpc.StatusCode.UNAVAILABLE
    s = enrollment_pb2_grpc.EnrollmentServiceStub(secure_channel(ingest, facility_stem(), rogue=True))
    assert code(lambda: s.ListNotices(req, timeout=10)) == grpc.StatusCode.UNAVAILABLE


def test_insecure_dev_refuses_a_non_loopback_address(tmp_path):
    build_store(str(tmp_path / "store"))
    for cmd in ("serve", "ingest-serve"):
        out = subprocess.run(
            onshi(cmd, "--data", str(tmp_path / "store"), "--host", "0.0.0.0", "--port", "0", "--insecure-dev"),
            env=_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode != 0 and "loopback" in out.stderr + out.stdout, cmd


def test_insecure_dev_warns_and_takes_roles_from_metadata(tmp_path):
    from onshi.v1 import eligibility_pb2, eligibility_pb2_grpc

    build_store(str(tmp_path / "store"))
    proc = Proc(
        onshi(
            "serve",
            "--data",
            str(tmp_path / "store"),
            "--port",
            "0",
            "--workers",
            "1",
            "--port-file",
            str(tmp_path / "port"),
            "--insecure-dev",
        ),
        tmp_path / "port",
        tmp_path / "log",
    )
    try:
        assert "INSECURE DEV MODE" in (tmp_path / "log").read_text()
        s = eligibility_pb2_grpc.EligibilityServiceStub(grpc.insecure_channel(proc.target))
        bare = eligibility_pb2.CheckByCardRequest(card_serial="1002")
        assert (
            code(lambda: s.CheckByCard(bare, timeout=10, metadata=(("x-onshi-role", "nobody"),)))
            == grpc.StatusCode.UNAUTHENTICATED
        )
        assert (
            code(
                lambda: s.CheckByCard(
                    bare, timeout=10, metadata=(("x-onshi-role", "facility"), ("x-onshi-facility", FACILITY))
                )
            )
            == grpc.StatusCode.PERMISSION_DENIED
        )  # facilities prove the card even in a demo
        assert s.CheckByCard(bare, timeout=10, metadata=(("x-onshi-role", "operator"),)).validity == 1
        assert s.CheckByCard(bare, timeout=10).validity == 1  # undeclared: no role checks (benchmarks, demos)
    finally:
        proc.stop()


def test_replay_to_another_worker_is_refused(tmp_path):
    """`onshi serve --workers 2`: the replay cache is shared by the workers."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from onshi.client.statuses import error_reason
    from onshi.v1 import eligibility_pb2_grpc
    from tests.trust_helpers import card_request

    build_store(str(tmp_path / "store"))
    proc = Proc(
        onshi(
            "serve",
            "--data",
            str(tmp_path / "store"),
            "--port",
            "0",
            "--workers",
            "2",
            "--port-file",
            str(tmp_path / "port"),
            "--pki",
            pki_dir(),
        ),
        tmp_path / "port",
        tmp_path / "log",
    )
    try:
        request = card_request("valid-2")
        first = secure_channel(proc.port, facility_stem())
        eligibility_pb2_grpc.EligibilityServiceStub(first).CheckByCard(request, timeout=10)
        workers = set()
        for _ in range(24):  # new connections spread over the workers (SO_REUSEPORT)
            channel = secure_channel(proc.port, facility_stem())
            _, call = health_pb2_grpc.HealthStub(channel).Check.with_call(health_pb2.HealthCheckRequest(), timeout=10)
            workers.add(dict(call.trailing_metadata()).get("onshi-worker-pid"))
            with pytest.raises(grpc.RpcError) as info:
                eligibility_pb2_grpc.EligibilityServiceStub(channel).CheckByCard(request, timeout=10)
            assert error_reason(info.value) == "CARD_PROOF_REPLAYED"
            channel.close()
        assert len(workers) == 2, "every connection landed on one worker; the test proved nothing"
    finally:
        proc.stop()
