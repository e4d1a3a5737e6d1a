"""Relay tokens (DOMAIN.md §7): insurer A asks through the real RelayService
(mTLS, `onshi ingest-serve`), forwards the token to B, B opens it; an altered
byte or a third insurer is refused; every relay access is in the person's log."""

from __future__ import annotations

import os

import grpc
import pytest
from onshi.core import audit, pki, relay
from onshi.v1 import relay_pb2, relay_pb2_grpc

from tests.ingest_support import Proc, onshi
from tests.trust_helpers import (
    INSURER_A,
    INSURER_B,
    INSURER_C,
    build_store,
    pki_dir,
    secure_channel,
)


def keys_of(stem: str):
    return relay.load_private_key(os.path.join(pki_dir(), "onshi", stem + ".key.pem"))


def relay_public():
    return relay.load_public_key(os.path.join(pki_dir(), "relay", "signing.pub.pem"))


def open_as(stem: str, token: bytes):
    numbers = set(pki.INSURERS[stem])
    return relay.open_token(token, relay_public_key=relay_public(), my_insurer_numbers=numbers,
                            my_private_key=keys_of(stem))


@pytest.fixture(scope="module")
def ingest(tmp_path_factory):
    base = tmp_path_factory.mktemp("relay")
    build_store(str(base / "store"))
    proc = Proc(onshi("ingest-serve", "--data", str(base / "store"), "--port", "0", "--port-file",
                      str(base / "port"), "--pki", pki_dir(), "--audit-dir", str(base / "audit")),
                base / "port", base / "log")
    yield proc, str(base / "audit")
    proc.stop()


def find(port, stem, member, legal_basis="高額介護合算療養費 (法第115条の2)"):
    s = relay_pb2_grpc.RelayServiceStub(secure_channel(port, stem))
    return s.FindInsurer(relay_pb2.FindInsurerRequest(own_member=member, legal_basis=legal_basis), timeout=10)


MEMBER_A = relay_pb2.MemberNumber(insurer_number=INSURER_A, symbol="A1", number="100", branch="00")


def test_round_trip_between_two_insurers(ingest):
    proc, audit_dir = ingest
    answer = find(proc.port, "insurer-a", MEMBER_A)
    assert [m.insurer_number for m in answer.matches] == [INSURER_B]
    member, payload = open_as("insurer-b", answer.matches[0].token)
    assert (member.insurer_number, member.symbol, member.number, member.branch) == (INSURER_B, "B1", "200", "00")
    assert payload.requester_insurer_number == INSURER_A
    records = [r for r in audit.read(audit_dir) if r.action == "RelayFindInsurer"]
    assert records and records[-1].link_id == 1 and records[-1].flags & audit.FLAG_RELAY
    assert records[-1].actor == f"insurer:{INSURER_A}" and "115" in records[-1].purpose


def test_altered_token_is_refused(ingest):
    proc, _ = ingest
    token = bytearray(find(proc.port, "insurer-a", MEMBER_A).matches[0].token)
    for where in (5, len(token) // 2, len(token) - 3):
        altered = bytearray(token)
        altered[where] ^= 0x01
        with pytest.raises(relay.RelayTokenError):
            open_as("insurer-b", bytes(altered))


def test_token_for_b_is_refused_by_a_third_insurer(ingest):
    proc, _ = ingest
    token = find(proc.port, "insurer-a", MEMBER_A).matches[0].token
    with pytest.raises(relay.RelayTokenError, match="addressed to"):
        open_as("insurer-c", token)
    # Even lying about its numbers, C's key cannot decrypt B's member number.
    with pytest.raises(relay.RelayTokenError, match="decrypted"):
        relay.open_token(token, relay_public_key=relay_public(), my_insurer_numbers={INSURER_B},
                         my_private_key=keys_of("insurer-c"))


def test_token_not_signed_by_the_relay_is_refused(ingest):
    from cryptography.hazmat.primitives.asymmetric import ed25519

    proc, _ = ingest
    forger = relay.TokenSealer(ed25519.Ed25519PrivateKey.generate(),
                               relay.insurer_keys_from_pki(pki_dir()))
    token = forger.seal(relay_pb2.MemberNumber(insurer_number=INSURER_B, number="200"), INSURER_A, "x")
    with pytest.raises(relay.RelayTokenError, match="signature"):
        open_as("insurer-b", token)


def test_only_about_own_members_and_only_insurers(ingest):
    proc, _ = ingest
    member_b = relay_pb2.MemberNumber(insurer_number=INSURER_B, symbol="B1", number="200", branch="00")
    with pytest.raises(grpc.RpcError) as info:
        find(proc.port, "insurer-a", member_b)
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    for stem in ("facility-1310000001", "review", "operator"):
        with pytest.raises(grpc.RpcError) as info:
            find(proc.port, stem, MEMBER_A)
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.RpcError) as info:
        find(proc.port, "insurer-a", MEMBER_A, legal_basis="")
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    unknown = relay_pb2.MemberNumber(insurer_number=INSURER_A, symbol="ZZ", number="1", branch="00")
    with pytest.raises(grpc.RpcError) as info:
        find(proc.port, "insurer-a", unknown)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_member_with_no_other_insurer_gets_no_match(ingest):
    proc, _ = ingest
    only_c = relay_pb2.MemberNumber(insurer_number=INSURER_C, symbol="C1", number="400", branch="00")
    assert list(find(proc.port, "insurer-c", only_c).matches) == []
