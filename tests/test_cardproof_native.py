"""The native card-proof steps (src/ext/_cardproof.pyx) against their
pure-Python references: the RSA signature check against `cryptography`, the
shared nonce table against SharedReplayCache's own table."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from onshi.core import cardproof, twins
from tests.conftest import require_native

require_native("_cardproof")
_cardproof = twins.load("_cardproof", "native")

KEYS = [
    rsa.generate_private_key(public_exponent=e, key_size=bits) for e, bits in ((65537, 2048), (3, 1024), (65537, 3072))
]


def checkers(key):
    return cardproof.signature_checker(key, kind="native"), cardproof.signature_checker(key, kind="pure")


@settings(max_examples=150, deadline=None)
@given(
    k=st.sampled_from(range(len(KEYS))),
    message=st.binary(max_size=300),
    flip=st.integers(min_value=-1),
    other=st.binary(max_size=300),
    how=st.sampled_from(["valid", "flip", "message", "truncate", "extend", "garbage", "other-key"]),
)
def test_signature_check_agrees_with_cryptography(k, message, flip, other, how):
    key = KEYS[k]
    signature = key.sign(message, padding.PKCS1v15(), hashes.SHA256())
    if how == "flip":
        i = flip % len(signature) if flip >= 0 else 0
        signature = signature[:i] + bytes([signature[i] ^ 0x01]) + signature[i + 1 :]
    elif how == "message":
        message = message + b"x" if other == message else other
    elif how == "truncate":
        signature = signature[:-1]
    elif how == "extend":
        signature = b"\0" + signature
    elif how == "garbage":
        signature = other
    elif how == "other-key":
        signature = KEYS[(k + 1) % len(KEYS)].sign(message, padding.PKCS1v15(), hashes.SHA256())
    native, reference = checkers(key.public_key())
    assert native(signature, message) == reference(signature, message)
    assert native(signature, message) == (how == "valid")


def test_signature_of_another_hash_or_padding_is_refused():
    key = KEYS[0]
    native, _ = checkers(key.public_key())
    message = b"onshi/v1/card-proof\n1310000001\n1700000000\n00"
    assert native(key.sign(message, padding.PKCS1v15(), hashes.SHA256()), message)
    assert not native(key.sign(message, padding.PKCS1v15(), hashes.SHA1()), message)
    assert not native(key.sign(message, padding.PSS(padding.MGF1(hashes.SHA256()), 32), hashes.SHA256()), message)


def test_one_key_checks_many_signatures_in_any_order():
    """The verify context is prepared once per key and reused: a refused
    signature leaves nothing behind that changes the next answer."""
    key = KEYS[0]
    native, reference = checkers(key.public_key())
    messages = [bytes([i]) * i for i in range(40)]
    signatures = [key.sign(m, padding.PKCS1v15(), hashes.SHA256()) for m in messages]
    for i, m in enumerate(messages):
        for j, sig in enumerate(signatures):
            assert native(sig, m) == reference(sig, m) == (i == j)
        assert not native(b"", m) and not native(signatures[i][:-1], m)
        assert native(signatures[i], m)


def test_non_rsa_key_is_refused():
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    spki = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    with pytest.raises(ValueError):
        _cardproof.RsaPublicKey(spki)
    with pytest.raises(ValueError):
        _cardproof.RsaPublicKey(b"\x30\x03garbage")


def test_signature_representative_out_of_range_is_refused():
    """s >= n is no signature (RSAVP1), even though s mod n would verify."""
    key = KEYS[0]
    native, reference = checkers(key.public_key())
    message = b"challenge"
    signature = key.sign(message, padding.PKCS1v15(), hashes.SHA256())
    n = key.public_key().public_numbers().n
    k = (n.bit_length() + 7) // 8
    s = int.from_bytes(signature, "big")
    for candidate in (n, n + s, (1 << (8 * k)) - 1, 0, 1):
        if candidate >= 1 << (8 * k):
            continue
        forged = candidate.to_bytes(k, "big")
        assert native(forged, message) == reference(forged, message) is False
    assert native(signature, message)


def test_keys_of_other_sizes_check_only_their_own_length():
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    native, reference = checkers(small.public_key())
    signature = small.sign(b"m", padding.PKCS1v15(), hashes.SHA256())
    assert native(signature, b"m") and reference(signature, b"m")
    assert not native(b"\0" * 128 + signature, b"m") and not native(signature[1:], b"m")
    from cryptography.hazmat.primitives import serialization

    # 61 bytes: too short for PKCS#1 v1.5 padding + the SHA-256 DigestInfo
    tiny = rsa.RSAPublicNumbers(65537, (1 << 487) + 12345).public_key()
    spki = tiny.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    with pytest.raises(ValueError):
        _cardproof.RsaPublicKey(spki)


@settings(max_examples=200, deadline=None)
@given(
    ops=st.lists(st.tuples(st.integers(0, 60), st.floats(0, 50)), max_size=200),
    slots=st.sampled_from([33, 40, 64, 200]),
)
def test_nonce_table_agrees_with_the_reference(ops, slots):
    """Same nonces at the same (non-decreasing) times into a small table, so
    collisions, expiry, slot reuse and a full window all happen: same answers."""
    native = cardproof.SharedReplayCache(10, slots=slots, kind="native")
    pure = cardproof.SharedReplayCache(10, slots=slots, kind="pure")
    now = 1.0
    for nonce_no, step in ops:
        now += step
        nonce = nonce_no.to_bytes(16, "big")
        answers = []
        for table in (native, pure):
            try:
                answers.append(table.add(nonce, now))
            except cardproof.ReplayCacheFull:
                answers.append("full")
        assert answers[0] == answers[1], (nonce_no, now)


def test_nonce_table_in_a_file_agrees_with_the_reference_and_is_shared(tmp_path):
    """The table mapped from a file (what both servers of a deployment open):
    the first opener makes the lock, a second maps the same slots without
    touching it; both see each other's nonces; the pure-Python table in its own
    file answers the same; reopened, the nonces are still there."""
    import random

    path, ref_path = str(tmp_path / "native"), str(tmp_path / "pure")
    first = cardproof.SharedReplayCache(10, slots=200, kind="native", path=path)
    second = cardproof.SharedReplayCache(10, slots=200, kind="native", path=path)  # not alone: lock left as made
    pure = cardproof.SharedReplayCache(10, slots=200, kind="pure", path=ref_path)
    rng = random.Random(7)
    now = 1.0
    for _ in range(2000):
        now += rng.random()
        nonce = rng.randrange(300).to_bytes(16, "big")
        answers = []
        for table in (rng.choice((first, second)), pure):
            try:
                answers.append(table.add(nonce, now))
            except cardproof.ReplayCacheFull:
                answers.append("full")
        assert answers[0] == answers[1]
    kept = b"kept-across-reopen"[:16]
    assert second.add(kept, now + 100)  # far on: every earlier entry expired, room for it
    first.close()
    second.close()
    again = cardproof.SharedReplayCache(10, slots=200, kind="native", path=path)
    assert not again.add(kept, now + 101)
    again.close()
    pure.close()
