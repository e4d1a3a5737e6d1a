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
    return relay.open_token(
        token, relay_public_key=relay_public(), my_insurer_numbers=numbers, my_private_key=keys_of(stem)
    )


@pytest.fixture(scope="module")
def ingest(tmp_path_factory):
    base = tmp_path_factory.mktemp("relay")
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
        relay.open_token(
            token, relay_public_key=relay_public(), my_insurer_numbers={INSURER_B}, my_private_key=keys_of("insurer-c")
        )


def test_token_not_signed_by_the_relay_is_refused(ingest):
    from cryptography.hazmat.primitives.asymmetric import ed25519

    _proc, _ = ingest
    forger = relay.TokenSealer(ed25519.Ed25519PrivateKey.generate(), relay.insurer_keys_from_pki(pki_dir()))
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


# --- the published contract ------------------------------------------------------------

RELAY_PROTO = os.path.join(os.path.dirname(__file__), "..", "proto", "onshi", "v1", "relay.proto")


def published_parameters() -> dict[str, str]:
    """The `//   name: value` lines of relay.proto's opening comment."""
    import re

    params = {}
    with open(RELAY_PROTO, encoding="utf-8") as f:
        for line in f:
            m = re.match(r"^//   ([a-z-]+): (.+)$", line.rstrip("\n"))
            if m:
                params[m.group(1)] = m.group(2)
    return params


def quoted(text: str) -> bytes:
    """A double-quoted string of the contract (C escapes, UTF-8) as bytes."""
    import ast

    assert text.startswith('"') and text.endswith('"'), text
    return ast.literal_eval(text).encode("utf-8")


def published_messages(tmp_path):
    """RelayToken, RelayTokenPayload and SealedMember built from relay.proto alone
    (protoc -> a descriptor set -> a private pool), not from onshi's stubs."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
    from grpc_tools import protoc

    out = str(tmp_path / "relay.desc")
    proto_root = os.path.join(os.path.dirname(RELAY_PROTO), "..", "..")
    assert protoc.main(["protoc", f"-I{proto_root}", f"--descriptor_set_out={out}", "onshi/v1/relay.proto"]) == 0
    files = descriptor_pb2.FileDescriptorSet.FromString(open(out, "rb").read())
    pool = descriptor_pool.DescriptorPool()
    for file in files.file:
        pool.Add(file)
    return {
        name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"onshi.v1.{name}"))
        for name in ("RelayToken", "RelayTokenPayload", "SealedMember")
    }


def test_a_token_opens_with_the_published_parameters_alone(ingest, tmp_path):
    """A receiving insurer with only relay.proto (its comments and messages), the
    relay's public key and its own certificate key opens a real token with
    `cryptography` alone: every algorithm, the OAEP hash, MGF and label, and the
    exact signed bytes come from the proto comment, so a drift between the
    comment and the relay fails here."""
    import time

    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

    p = published_parameters()
    assert p["signature-scheme"] == "Ed25519"
    assert p["sealing-scheme"] == "RSAES-OAEP"
    hash_named = {"SHA-256": hashes.SHA256, "SHA-384": hashes.SHA384, "SHA-512": hashes.SHA512}
    oaep_hash = hash_named[p["oaep-hash"]]
    mgf_hash = hash_named[p["oaep-mgf"].removeprefix("MGF1 with ")]
    assert p["oaep-mgf"].startswith("MGF1 with ")
    prefix_text, _, signed_part = p["signed-bytes"].partition(" || ")
    assert signed_part == "RelayToken.payload"
    signed_prefix = quoted(prefix_text)
    label = quoted(p["oaep-label"])
    skew = int(p["clock-skew-seconds"])
    messages = published_messages(tmp_path)

    token = find(ingest[0].port, "insurer-a", MEMBER_A).matches[0].token
    with open(os.path.join(pki_dir(), "relay", "signing.pub.pem"), "rb") as f:
        relay_key = serialization.load_pem_public_key(f.read())
    with open(os.path.join(pki_dir(), "onshi", "insurer-b.key.pem"), "rb") as f:
        my_key = serialization.load_pem_private_key(f.read(), password=None)
    assert isinstance(relay_key, ed25519.Ed25519PublicKey) and isinstance(my_key, rsa.RSAPrivateKey)

    wrapper = messages["RelayToken"].FromString(token)
    relay_key.verify(wrapper.signature, signed_prefix + wrapper.payload)  # raises if not
    payload = messages["RelayTokenPayload"].FromString(wrapper.payload)
    assert payload.recipient_insurer_number in pki.INSURERS["insurer-b"]
    assert payload.issued_unix - skew <= time.time() <= payload.expires_unix
    plain = my_key.decrypt(
        payload.sealed_member, padding.OAEP(mgf=padding.MGF1(mgf_hash()), algorithm=oaep_hash(), label=label)
    )
    sealed = messages["SealedMember"].FromString(plain)
    assert sealed.token_id == payload.token_id
    assert sealed.recipient_insurer_number == payload.recipient_insurer_number
    m = sealed.member
    assert (m.insurer_number, m.symbol, m.number, m.branch) == (INSURER_B, "B1", "200", "00")
    assert payload.requester_insurer_number == INSURER_A
