"""Real mTLS on loopback: the eligibility server with the trust hooks, every
role's allowed and denied calls, no client certificate, a certificate from
another CA, and each card-proof refusal as the clinic sees it."""

from __future__ import annotations

import os
import time

import grpc
import pytest

from onshi.client.statuses import error_reason, field_violations
from onshi.core import audit
from onshi.core.cardproof import CardVerifier
from onshi.core.engine import open_engine
from onshi.server import app, auth
from onshi.server.access_log import card_subject
from onshi.server.eligibility_trust import EligibilityTrust
from onshi.v1 import eligibility_pb2 as epb
from onshi.v1 import eligibility_pb2_grpc
from tests.trust_helpers import (
    FACILITY,
    INSURER_A,
    OTHER_FACILITY,
    build_store,
    card_request,
    facility_stem,
    pki_dir,
    secure_channel,
    serial_of,
    server_credentials,
)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    base = tmp_path_factory.mktemp("trust-tls")
    store = str(base / "store")
    build_store(store)
    engine = open_engine(store, "pure")
    jpki = os.path.join(pki_dir(), "jpki")
    verifier = CardVerifier.from_files([os.path.join(jpki, "ca.pem")], os.path.join(jpki, "crl.der"))
    log = audit.AuditLog(str(base / "audit"), "test")
    hooks = EligibilityTrust(verifier, log)
    serving = app.create_server(
        engine,
        credentials=server_credentials(),
        interceptors=auth.interceptors(),
        card_proof=hooks.card_proof,
        audit=hooks.audit,
    )
    serving.server.start()
    yield serving.port, str(base / "audit")
    serving.server.stop(0).wait()
    log.close()
    engine.close()


def stub(port, stem, **kw):
    return eligibility_pb2_grpc.EligibilityServiceStub(secure_channel(port, stem, **kw))


def code_of(call) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value


NUMBER_REQUEST = epb.CheckByNumberRequest(
    insurer_number=INSURER_A, symbol="A1", number="100", branch="00", birth_date={"year": 1970, "month": 1, "day": 2}
)


def test_facility_checks_by_card_proof(served):
    port, _ = served
    answer = stub(port, facility_stem()).CheckByCard(card_request("valid-1"), timeout=5)
    assert answer.validity == epb.VALIDITY_MULTIPLE  # insured with A and B (dual)
    assert {q.insurer_number for q in answer.qualifications} == {INSURER_A, "01130012"}
    assert not answer.warnings


def test_expiring_card_answers_with_warning(served):
    port, _ = served
    answer = stub(port, facility_stem()).CheckByCard(card_request("expiring"), timeout=5)
    assert answer.validity == epb.VALIDITY_VALID
    assert [w.code for w in answer.warnings] == [epb.WARNING_CODE_CARD_CERTIFICATE_EXPIRING]


@pytest.mark.parametrize(
    "card,code,reason",
    [
        ("expired", grpc.StatusCode.FAILED_PRECONDITION, "CARD_CERTIFICATE_EXPIRED"),
        ("revoked", grpc.StatusCode.FAILED_PRECONDITION, "CARD_CERTIFICATE_REVOKED"),
        ("not-yet-valid", grpc.StatusCode.FAILED_PRECONDITION, "CARD_CERTIFICATE_NOT_YET_VALID"),
        ("forged", grpc.StatusCode.UNAUTHENTICATED, "CARD_CERTIFICATE_UNTRUSTED"),
    ],
)
def test_card_certificate_refusals(served, card, code, reason):
    port, _ = served
    err = code_of(lambda: stub(port, facility_stem()).CheckByCard(card_request(card), timeout=5))
    assert err.code() == code
    assert error_reason(err) == reason


def test_bad_signature_stale_and_replay(served):
    port, _ = served
    s = stub(port, facility_stem())
    err = code_of(lambda: s.CheckByCard(card_request("valid-2", sign_facility=OTHER_FACILITY), timeout=5))
    assert (err.code(), error_reason(err)) == (grpc.StatusCode.UNAUTHENTICATED, "CARD_SIGNATURE_INVALID")
    err = code_of(lambda: s.CheckByCard(card_request("valid-2", timestamp=int(time.time()) - 3600), timeout=5))
    assert (err.code(), error_reason(err)) == (grpc.StatusCode.UNAUTHENTICATED, "CARD_PROOF_STALE")
    request = card_request("valid-2")
    assert s.CheckByCard(request, timeout=5).validity == epb.VALIDITY_VALID
    err = code_of(lambda: s.CheckByCard(request, timeout=5))
    assert (err.code(), error_reason(err)) == (grpc.StatusCode.UNAUTHENTICATED, "CARD_PROOF_REPLAYED")


def test_challenge_for_another_facility_is_denied(served):
    port, _ = served
    err = code_of(lambda: stub(port, facility_stem()).CheckByCard(card_request("valid-3", OTHER_FACILITY), timeout=5))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    # ...while that facility itself may.
    assert (
        stub(port, facility_stem(OTHER_FACILITY))
        .CheckByCard(card_request("valid-3", OTHER_FACILITY), timeout=5)
        .validity
        == epb.VALIDITY_VALID
    )


def test_malformed_proof_is_invalid_argument(served):
    port, _ = served
    request = card_request("valid-1")
    request.challenge.nonce = b"short"
    err = code_of(lambda: stub(port, facility_stem()).CheckByCard(request, timeout=5))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert ("challenge.nonce", "must be 16-32 bytes") in field_violations(err)


def test_bare_serial_only_for_internal_roles(served):
    port, _ = served
    bare = epb.CheckByCardRequest(card_serial=format(serial_of("valid-2"), "X"))
    err = code_of(lambda: stub(port, facility_stem()).CheckByCard(bare, timeout=5))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    for role in ("review", "operator"):
        assert stub(port, role).CheckByCard(bare, timeout=5).validity == epb.VALIDITY_VALID


def test_role_matrix_for_checks(served):
    port, _ = served
    assert stub(port, facility_stem()).CheckByNumber(NUMBER_REQUEST, timeout=5).validity == epb.VALIDITY_VALID
    assert stub(port, "review").CheckByNumber(NUMBER_REQUEST, timeout=5).validity == epb.VALIDITY_VALID
    err = code_of(lambda: stub(port, "insurer-a").CheckByNumber(NUMBER_REQUEST, timeout=5))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    err = code_of(lambda: stub(port, "insurer-a").CheckByCard(card_request("valid-1"), timeout=5))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED


def test_no_client_certificate_fails_the_handshake(served):
    port, _ = served
    err = code_of(lambda: stub(port, None).CheckByNumber(NUMBER_REQUEST, timeout=5))
    assert err.code() == grpc.StatusCode.UNAVAILABLE  # documented: TLS refuses before any handler


def test_certificate_from_another_ca_fails_the_handshake(served):
    port, _ = served
    err = code_of(lambda: stub(port, facility_stem(), rogue=True).CheckByNumber(NUMBER_REQUEST, timeout=5))
    assert err.code() == grpc.StatusCode.UNAVAILABLE


def test_server_certificate_as_client_fails_the_handshake(served):
    # Chains to the onshi CA but is not for client authentication (EKU).
    port, _ = served
    err = code_of(lambda: stub(port, "server").CheckByNumber(NUMBER_REQUEST, timeout=5))
    assert err.code() == grpc.StatusCode.UNAVAILABLE


def test_client_certificate_without_role_is_unauthenticated(served, tmp_path):
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    from onshi.core import pki

    port, _ = served
    ca = pki.load_issued(*(os.path.join(pki_dir(), "onshi", n) for n in ("ca.pem", "ca.key.pem")))
    key = pki.new_rsa_key()
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "nobody")]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca.key, hashes.SHA256())
    )
    creds = grpc.ssl_channel_credentials(pki.pem(ca.cert), pki.key_pem(key), pki.pem(cert))
    s = eligibility_pb2_grpc.EligibilityServiceStub(grpc.secure_channel(f"127.0.0.1:{port}", creds))
    err = code_of(lambda: s.CheckByNumber(NUMBER_REQUEST, timeout=5))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "no onshi role" in err.details()


def test_callers_are_told_apart_by_their_certificates_san_uris(served):
    """Callers are cached by the SAN identities gRPC hands each call: a renewed
    certificate (new key, other subject) with the same SANs is the same caller,
    and one naming another facility never inherits the first one's rights,
    also on connections opened one after the other."""
    from onshi.core import pki

    port, _ = served
    ca = pki.load_issued(*(os.path.join(pki_dir(), "onshi", n) for n in ("ca.pem", "ca.key.pem")))
    renewed = pki.issue_client(ca, "facility", (FACILITY,))
    other = pki.issue_client(ca, "facility", (OTHER_FACILITY,))
    for _ in range(2):
        for issued, facility in ((renewed, FACILITY), (other, OTHER_FACILITY)):
            creds = grpc.ssl_channel_credentials(pki.pem(ca.cert), pki.key_pem(issued.key), pki.pem(issued.cert))
            with grpc.secure_channel(f"127.0.0.1:{port}", creds) as channel:
                s = eligibility_pb2_grpc.EligibilityServiceStub(channel)
                assert s.CheckByCard(card_request("valid-3", facility), timeout=5).validity == epb.VALIDITY_VALID
                foreign = OTHER_FACILITY if facility == FACILITY else FACILITY
                err = code_of(lambda s=s, f=foreign: s.CheckByCard(card_request("valid-3", f), timeout=5))
                assert err.code() == grpc.StatusCode.PERMISSION_DENIED


def test_plaintext_client_cannot_talk_to_the_tls_port(served):
    port, _ = served
    s = eligibility_pb2_grpc.EligibilityServiceStub(grpc.insecure_channel(f"127.0.0.1:{port}"))
    err = code_of(lambda: s.CheckByNumber(NUMBER_REQUEST, timeout=5))
    assert err.code() == grpc.StatusCode.UNAVAILABLE


def test_health_needs_a_certificate_but_no_role(served):
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    port, _ = served
    h = health_pb2_grpc.HealthStub(secure_channel(port, "insurer-a"))
    assert h.Check(health_pb2.HealthCheckRequest(), timeout=5).status == health_pb2.HealthCheckResponse.SERVING


def test_every_answer_is_in_the_access_log(served):
    port, audit_dir = served
    request = card_request("valid-1")
    stub(port, facility_stem()).CheckByCard(request, timeout=5)
    records = list(audit.read(audit_dir, lambda r: r.request_id == request.challenge.nonce.hex()))
    assert len(records) == 1
    rec = records[0]
    assert rec.actor == f"facility:{FACILITY}" and rec.action == "CheckByCard"
    assert rec.subject == card_subject(serial_of("valid-1").to_bytes(20, "big"))
    assert rec.items == "validity=5 qualifications=2"


def test_tls13_is_negotiated(served):
    import socket
    import ssl

    port, _ = served
    ca, cert, key = auth.pki_paths(pki_dir(), facility_stem())
    ctx = ssl.create_default_context(cafile=ca)
    ctx.load_cert_chain(cert, key)
    ctx.set_alpn_protocols(["h2"])
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        assert tls.version() == "TLSv1.3"


def test_each_check_takes_its_caller_once_and_logs_the_key_it_looked_up(served, monkeypatch):
    """The role check takes the caller from the call and hands it to the card
    proof and the access record (nothing is kept on the call's context): one
    look at the caller per check; the record names the card the proof proved."""
    port, audit_dir = served
    looks = []
    take = auth.caller_of

    def counted(context):
        looks.append(1)
        return take(context)

    monkeypatch.setattr(auth, "caller_of", counted)
    s = stub(port, facility_stem())
    request = card_request("valid-2")
    assert s.CheckByCard(request, timeout=5).validity == epb.VALIDITY_VALID
    assert len(looks) == 1
    s.CheckByNumber(NUMBER_REQUEST, timeout=5)
    assert len(looks) == 2
    [rec] = audit.read(audit_dir, lambda r: r.request_id == request.challenge.nonce.hex())
    assert rec.subject == card_subject(serial_of("valid-2").to_bytes(20, "big"))
