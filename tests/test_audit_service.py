"""The access log through the real servers (`onshi serve` and `onshi
ingest-serve` with --pki and --audit-dir, as subprocesses): a person sees
exactly their own accesses, another card cannot read them, emergency lookups
are off by default and marked, a revocation list pushed through the ingest
service takes effect, and after SIGKILL of a busy server every answered check
has its record."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
import uuid

import grpc
import pytest

from onshi.client.statuses import error_reason
from onshi.core import audit
from onshi.v1 import audit_pb2, audit_pb2_grpc, eligibility_pb2_grpc, trust_pb2, trust_pb2_grpc
from onshi.v1 import eligibility_pb2 as epb
from tests.ingest_support import Proc, onshi
from tests.trust_helpers import (
    FACILITY,
    INSURER_A,
    OTHER_FACILITY,
    access_proof_fields,
    build_store,
    card_request,
    facility_stem,
    pki_dir,
    proof_fields,
    secure_channel,
)

NUMBER_OF_1 = epb.CheckByNumberRequest(
    insurer_number=INSURER_A, symbol="A1", number="100", branch="00", birth_date={"year": 1970, "month": 1, "day": 2}
)


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    base = tmp_path_factory.mktemp("audit-svc")
    store = base / "store"
    build_store(str(store))
    crl = base / "crl.der"  # a copy: PutRevocationList replaces it
    shutil.copy(os.path.join(pki_dir(), "jpki", "crl.der"), crl)
    common = ("--pki", pki_dir(), "--audit-dir", str(base / "audit"), "--crl", str(crl))
    elig = Proc(
        onshi(
            "serve",
            "--data",
            str(store),
            "--port",
            "0",
            "--workers",
            "1",
            "--engine",
            "pure",
            "--port-file",
            str(base / "serve.port"),
            *common,
        ),
        base / "serve.port",
        base / "serve.log",
    )
    ingest = Proc(
        onshi("ingest-serve", "--data", str(store), "--port", "0", "--port-file", str(base / "ingest.port"), *common),
        base / "ingest.port",
        base / "ingest.log",
    )
    yield elig.port, ingest.port, str(base / "audit")
    elig.stop()
    ingest.stop()


def check_card(port, card, facility=FACILITY):
    s = eligibility_pb2_grpc.EligibilityServiceStub(secure_channel(port, facility_stem(facility)))
    return s.CheckByCard(card_request(card, facility), timeout=10)


def my_access(port, card, facility=FACILITY, **kw):
    s = audit_pb2_grpc.AuditServiceStub(secure_channel(port, facility_stem(facility)))
    return s.ListMyAccess(audit_pb2.ListMyAccessRequest(**access_proof_fields(card, facility), **kw), timeout=10)


def trust_stub(port, stem):
    return trust_pb2_grpc.TrustServiceStub(secure_channel(port, stem))


def test_a_person_sees_exactly_their_own_accesses(servers):
    elig, ingest, _ = servers
    check_card(elig, "valid-1")
    check_card(elig, "valid-1", OTHER_FACILITY)
    check_card(elig, "valid-2")
    s = eligibility_pb2_grpc.EligibilityServiceStub(secure_channel(elig, facility_stem(OTHER_FACILITY)))
    s.CheckByNumber(NUMBER_OF_1, timeout=10, metadata=(("x-onshi-purpose", "pre-submission check"),))
    mine = my_access(ingest, "valid-1")
    seen = sorted((r.accessor_codes[0], r.action) for r in mine.records)
    assert seen == sorted(
        [(FACILITY, "CheckByCard"), (OTHER_FACILITY, "CheckByCard"), (OTHER_FACILITY, "CheckByNumber")]
    )
    assert all(r.accessor_role == audit_pb2.ACCESSOR_ROLE_FACILITY for r in mine.records)
    assert "pre-submission check" in {r.purpose for r in mine.records}
    theirs = my_access(ingest, "valid-2")
    assert [(r.accessor_codes[0], r.action) for r in theirs.records] == [(FACILITY, "CheckByCard")]
    # Reading one's own log is itself logged, but not listed back.
    assert all(r.action != "ListMyAccess" for r in my_access(ingest, "valid-1").records)


def test_claim_review_is_in_the_persons_log(servers):
    from onshi.v1 import claims_pb2, claims_pb2_grpc

    _, ingest, _ = servers
    claim = claims_pb2.Claim(
        claim_id="rv-1",
        facility_code=FACILITY,
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
    stub = claims_pb2_grpc.ClaimServiceStub(secure_channel(ingest, "review"))
    (answer,) = stub.VerifyClaims(iter([claims_pb2.VerifyClaimsRequest(claims=[claim])]), timeout=10)
    reviews = [r for r in my_access(ingest, "valid-1").records if r.action == "VerifyClaims"]
    assert len(reviews) == 1
    assert reviews[0].accessor_role == audit_pb2.ACCESSOR_ROLE_REVIEW_BODY and "rv-1" in reviews[0].items
    # the record names the verdict the review body was sent
    assert f"verdict={claims_pb2.Outcome.Name(answer.verdicts[0].outcome)}" in reviews[0].items
    assert not [r for r in my_access(ingest, "valid-2").records if r.action == "VerifyClaims"]


def test_enrollment_write_is_in_the_persons_log(servers):
    from onshi.v1 import enrollment_pb2, enrollment_pb2_grpc

    _, ingest, _ = servers
    update = enrollment_pb2.EnrollmentUpdate(
        update_id="u-ratio-1",
        insurer_number="01130012",
        resident_id="R2",
        burden_ratio_change=enrollment_pb2.BurdenRatioChange(
            insured_number=enrollment_pb2.InsuredNumber(symbol="B2", number="300", branch="01"), burden_ratio_percent=20
        ),
    )
    stub = enrollment_pb2_grpc.EnrollmentServiceStub(secure_channel(ingest, "insurer-b"))
    acks = list(stub.StreamUpdates(iter([update]), timeout=10))
    assert [a.update_id for a in acks] == ["u-ratio-1"]
    writes = [r for r in my_access(ingest, "valid-2").records if r.action == "EnrollmentUpdate"]
    assert len(writes) == 1 and writes[0].accessor_codes == ["01130012", "39131156"]
    assert "burden_ratio_change" in writes[0].items
    assert not [r for r in my_access(ingest, "valid-1").records if r.action == "EnrollmentUpdate"]


def test_another_card_cannot_read_someone_elses_log(servers):
    _, ingest, _ = servers
    fields = access_proof_fields("valid-2")
    fields["card_certificate"] = access_proof_fields("valid-1")["card_certificate"]  # 1's certificate, 2's signature
    s = audit_pb2_grpc.AuditServiceStub(secure_channel(ingest, facility_stem()))
    with pytest.raises(grpc.RpcError) as info:
        s.ListMyAccess(audit_pb2.ListMyAccessRequest(**fields), timeout=10)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error_reason(info.value) == "CARD_SIGNATURE_INVALID"
    # Not for insurers or operators either, whatever they hold.
    for stem in ("insurer-a", "operator", "review"):
        s = audit_pb2_grpc.AuditServiceStub(secure_channel(ingest, stem))
        with pytest.raises(grpc.RpcError) as info:
            s.ListMyAccess(audit_pb2.ListMyAccessRequest(**access_proof_fields("valid-1")), timeout=10)
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED


def _refusal(call) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value.code(), error_reason(info.value)


def test_a_check_proof_is_refused_by_list_my_access_and_the_other_way(servers):
    """A proof is good for the purpose it was signed for only: the same bytes
    sent to the other server's RPC fail the signature check, before and after
    their first use."""
    elig, ingest, _ = servers
    check = eligibility_pb2_grpc.EligibilityServiceStub(secure_channel(elig, facility_stem()))
    access = audit_pb2_grpc.AuditServiceStub(secure_channel(ingest, facility_stem()))
    for_check = proof_fields("valid-1")
    assert check.CheckByCard(epb.CheckByCardRequest(**for_check), timeout=10).qualifications
    assert _refusal(lambda: access.ListMyAccess(audit_pb2.ListMyAccessRequest(**for_check), timeout=10)) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "CARD_SIGNATURE_INVALID",
    )
    unused_for_check = proof_fields("valid-1")
    assert _refusal(lambda: access.ListMyAccess(audit_pb2.ListMyAccessRequest(**unused_for_check), timeout=10)) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "CARD_SIGNATURE_INVALID",
    )
    for_access = access_proof_fields("valid-1")
    access.ListMyAccess(audit_pb2.ListMyAccessRequest(**for_access), timeout=10)
    assert _refusal(lambda: check.CheckByCard(epb.CheckByCardRequest(**for_access), timeout=10)) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "CARD_SIGNATURE_INVALID",
    )
    # Each still works once for its own purpose, and only once.
    assert _refusal(lambda: check.CheckByCard(epb.CheckByCardRequest(**for_check), timeout=10)) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "CARD_PROOF_REPLAYED",
    )
    assert _refusal(lambda: access.ListMyAccess(audit_pb2.ListMyAccessRequest(**for_access), timeout=10)) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "CARD_PROOF_REPLAYED",
    )


def test_a_nonce_is_accepted_once_across_both_servers(servers):
    """Both servers share one replay table (a file under the data directory):
    a nonce a card signed for a check on `onshi serve` is refused by
    ingest-serve even in a correctly signed ListMyAccess proof, and the other way."""
    elig, ingest, _ = servers
    check = eligibility_pb2_grpc.EligibilityServiceStub(secure_channel(elig, facility_stem()))
    access = audit_pb2_grpc.AuditServiceStub(secure_channel(ingest, facility_stem()))
    nonce = os.urandom(16)
    check.CheckByCard(card_request("valid-2", nonce=nonce), timeout=10)
    assert _refusal(
        lambda: access.ListMyAccess(
            audit_pb2.ListMyAccessRequest(**access_proof_fields("valid-2", nonce=nonce)), timeout=10
        )
    ) == (grpc.StatusCode.UNAUTHENTICATED, "CARD_PROOF_REPLAYED")
    nonce = os.urandom(16)
    access.ListMyAccess(audit_pb2.ListMyAccessRequest(**access_proof_fields("valid-2", nonce=nonce)), timeout=10)
    assert _refusal(lambda: check.CheckByCard(card_request("valid-2", nonce=nonce), timeout=10)) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "CARD_PROOF_REPLAYED",
    )


def test_a_proof_used_on_one_eligibility_server_is_refused_by_another_and_after_restart(servers, tmp_path):
    """A second `onshi serve` on the same store (another process, not a fork of
    the first) shares the replay table; so does a server started again."""
    elig, _, audit_dir = servers
    store = os.path.join(os.path.dirname(audit_dir), "store")  # the fixture's layout
    second = Proc(
        onshi(
            "serve",
            "--data",
            store,
            "--port",
            "0",
            "--workers",
            "1",
            "--engine",
            "pure",
            "--port-file",
            str(tmp_path / "port"),
            "--pki",
            pki_dir(),
        ),
        tmp_path / "port",
        tmp_path / "log",
    )
    try:
        request = card_request("valid-3")
        first_stub = eligibility_pb2_grpc.EligibilityServiceStub(secure_channel(elig, facility_stem()))
        second_stub = eligibility_pb2_grpc.EligibilityServiceStub(secure_channel(second.port, facility_stem()))
        assert first_stub.CheckByCard(request, timeout=10).validity == epb.VALIDITY_VALID
        assert _refusal(lambda: second_stub.CheckByCard(request, timeout=10)) == (
            grpc.StatusCode.UNAUTHENTICATED,
            "CARD_PROOF_REPLAYED",
        )
        request = card_request("valid-3")
        assert second_stub.CheckByCard(request, timeout=10).validity == epb.VALIDITY_VALID
    finally:
        second.stop()
    second = Proc(
        onshi(
            "serve",
            "--data",
            store,
            "--port",
            "0",
            "--workers",
            "1",
            "--engine",
            "pure",
            "--port-file",
            str(tmp_path / "port"),
            "--pki",
            pki_dir(),
        ),
        tmp_path / "port",
        tmp_path / "log",
    )
    try:
        again = eligibility_pb2_grpc.EligibilityServiceStub(secure_channel(second.port, facility_stem()))
        assert _refusal(lambda: again.CheckByCard(request, timeout=10)) == (
            grpc.StatusCode.UNAUTHENTICATED,
            "CARD_PROOF_REPLAYED",
        )
    finally:
        second.stop()


def test_expired_card_cannot_read_its_log(servers):
    _, ingest, _ = servers
    with pytest.raises(grpc.RpcError) as info:
        my_access(ingest, "expired")
    assert error_reason(info.value) == "CARD_CERTIFICATE_EXPIRED"


def test_emergency_lookup_is_off_by_default_operator_switched_and_marked(servers):
    _, ingest, audit_dir = servers
    lookup = trust_pb2.LookupByBasicInfoRequest(
        name_kana="すずき いちろう",
        sex=1,
        birth_date={"year": 1990, "month": 5, "day": 6},
        address="東京都千代田区千代田1丁目1番",
    )
    facility = trust_stub(ingest, facility_stem())
    with pytest.raises(grpc.RpcError) as info:
        facility.LookupByBasicInfo(lookup, timeout=10)
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    with pytest.raises(grpc.RpcError) as info:
        facility.SetSystemFailureMode(trust_pb2.SetSystemFailureModeRequest(enabled=True, reason="x"), timeout=10)
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    operator = trust_stub(ingest, "operator")
    operator.SetSystemFailureMode(
        trust_pb2.SetSystemFailureModeRequest(enabled=True, reason="network outage"), timeout=10
    )
    try:
        answer = facility.LookupByBasicInfo(lookup, timeout=10)
        assert answer.validity == epb.VALIDITY_VALID
        assert answer.qualifications[0].person.name == "鈴木一郎"
        # Same kana, sex and birth date, two addresses: the address decides.
        twin = trust_pb2.LookupByBasicInfoRequest(
            name_kana="ナカムラロクロウ",
            sex=1,
            birth_date={"year": 1965, "month": 2, "day": 3},
            address="東京都港区芝公園4-2-9",
        )
        assert facility.LookupByBasicInfo(twin, timeout=10).qualifications[0].insurer_number == INSURER_A
        twin.address = "東京都港区"
        with pytest.raises(grpc.RpcError) as info:
            facility.LookupByBasicInfo(twin, timeout=10)
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION  # two persons: not guessed
        twin.name = "中村六郎"  # the kanji name tells them apart
        assert facility.LookupByBasicInfo(twin, timeout=10).qualifications[0].person.name == "中村六郎"
    finally:
        operator.SetSystemFailureMode(trust_pb2.SetSystemFailureModeRequest(enabled=False), timeout=10)
    records = my_access(ingest, "valid-3").records
    assert [r.emergency for r in records if r.action == "LookupByBasicInfo"] == [True]
    with pytest.raises(grpc.RpcError):
        facility.LookupByBasicInfo(lookup, timeout=10)  # off again
    switches = [r for r in audit.read(audit_dir) if r.action == "SetSystemFailureMode"]
    assert [r.items for r in switches] == ["enabled=True", "enabled=False"]


def test_revocation_list_pushed_through_ingest_takes_effect(servers):
    from cryptography.hazmat.primitives import serialization

    from onshi.core import pki

    elig, ingest, _ = servers
    assert check_card(elig, "valid-3").validity == epb.VALIDITY_VALID
    jpki = pki.load_issued(*(os.path.join(pki_dir(), "jpki", n) for n in ("ca.pem", "ca.key.pem")))
    crl = pki.make_crl(jpki, [pki.CARDS["revoked"][0], pki.CARDS["valid-3"][0]])
    with pytest.raises(grpc.RpcError) as info:
        trust_stub(ingest, "insurer-a").PutRevocationList(trust_pb2.PutRevocationListRequest(crl=b"x"), timeout=10)
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.RpcError) as info:
        trust_stub(ingest, "operator").PutRevocationList(trust_pb2.PutRevocationListRequest(crl=b"junk"), timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    answer = trust_stub(ingest, "operator").PutRevocationList(
        trust_pb2.PutRevocationListRequest(crl=crl.public_bytes(serialization.Encoding.DER)), timeout=10
    )
    assert answer.revoked_count == 2
    deadline = time.monotonic() + 10
    while True:
        try:
            check_card(elig, "valid-3")
        except grpc.RpcError as err:
            assert error_reason(err) == "CARD_CERTIFICATE_REVOKED"
            break
        assert time.monotonic() < deadline, "revocation not picked up"
        time.sleep(0.3)


def test_sigkill_of_a_busy_server_loses_no_answered_record(tmp_path):
    store = tmp_path / "store"
    build_store(str(store))
    audit_dir = tmp_path / "audit"
    elig = Proc(
        onshi(
            "serve",
            "--data",
            str(store),
            "--port",
            "0",
            "--workers",
            "1",
            "--engine",
            "pure",
            "--port-file",
            str(tmp_path / "port"),
            "--pki",
            pki_dir(),
            "--audit-dir",
            str(audit_dir),
        ),
        tmp_path / "port",
        tmp_path / "log",
    )
    answered: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def client(i):
        s = eligibility_pb2_grpc.EligibilityServiceStub(secure_channel(elig.port, facility_stem()))
        for _ in range(2000):  # bounded; stops at the kill
            if stop.is_set():
                return
            rid = uuid.uuid4().hex
            try:
                if i == 0:
                    request = card_request("valid-1")
                    s.CheckByCard(request, timeout=5)
                    rid = request.challenge.nonce.hex()
                else:
                    s.CheckByNumber(NUMBER_OF_1, timeout=5, metadata=(("x-request-id", rid),))
            except grpc.RpcError:
                return
            with lock:
                answered.append(rid)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    time.sleep(1.5)
    elig.kill()  # SIGKILL to the whole process group, mid-flight
    stop.set()
    for t in threads:
        t.join(timeout=30)
    assert len(answered) > 20
    logged = {r.request_id for r in audit.read(str(audit_dir))}
    missing = [rid for rid in answered if rid not in logged]
    assert not missing, f"{len(missing)} answered checks without a record"
    assert audit.verify(str(audit_dir)).ok


def test_servers_keep_a_keyed_log_across_sigkill_and_refuse_to_run_it_without_the_key(tmp_path):
    """`--audit-key`: heads and manifest are MACed by both servers; after
    SIGKILL the log verifies with the key; a restart without the key is
    refused with one line rather than resealing the log without it."""
    store = tmp_path / "store"
    build_store(str(store))
    audit_dir, key_dir = tmp_path / "audit", tmp_path / "keys"  # another directory (tests: same disk)
    key_dir.mkdir()
    key = key_dir / "audit.key"
    assert subprocess.run(onshi("audit", "keygen", "--out", str(key)), capture_output=True).returncode == 0
    common = ("--pki", pki_dir(), "--audit-dir", str(audit_dir), "--audit-key", str(key))
    elig = Proc(
        onshi(
            "serve",
            "--data",
            str(store),
            "--port",
            "0",
            "--workers",
            "2",
            "--engine",
            "pure",
            "--port-file",
            str(tmp_path / "serve.port"),
            *common,
        ),
        tmp_path / "serve.port",
        tmp_path / "serve.log",
    )
    ingest = Proc(
        onshi(
            "ingest-serve", "--data", str(store), "--port", "0", "--port-file", str(tmp_path / "ingest.port"), *common
        ),
        tmp_path / "ingest.port",
        tmp_path / "ingest.log",
    )
    for _ in range(5):
        check_card(elig.port, "valid-2")
    my_access(ingest.port, "valid-2")
    elig.kill()
    ingest.kill()
    verify = subprocess.run(
        onshi("audit", "verify", "--dir", str(audit_dir), "--key", str(key)), capture_output=True, text=True
    )
    assert verify.returncode == 0, verify.stdout
    assert "OK (MACs checked): 3 streams" in verify.stdout
    without = subprocess.run(
        onshi("ingest-serve", "--data", str(store), "--port", "0", "--pki", pki_dir(), "--audit-dir", str(audit_dir)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert without.returncode != 0 and "sealed with an audit key" in without.stderr
    assert "Traceback" not in without.stderr
    inside = audit_dir / "audit.key"
    shutil.copy(key, inside)
    refused = subprocess.run(
        onshi(
            "ingest-serve",
            "--data",
            str(store),
            "--port",
            "0",
            "--pki",
            pki_dir(),
            "--audit-dir",
            str(audit_dir),
            "--audit-key",
            str(inside),
        ),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode != 0 and "inside the access log directory" in refused.stderr
    os.unlink(inside)
    again = Proc(
        onshi(
            "ingest-serve", "--data", str(store), "--port", "0", "--port-file", str(tmp_path / "ingest.port"), *common
        ),
        tmp_path / "ingest.port",
        tmp_path / "ingest2.log",
    )
    my_access(again.port, "valid-2")
    again.stop()
    verify = subprocess.run(
        onshi("audit", "verify", "--dir", str(audit_dir), "--key", str(key)), capture_output=True, text=True
    )
    assert verify.returncode == 0, verify.stdout
