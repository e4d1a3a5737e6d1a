"""The virtual card's APDU state machine (no pcscd needed), checked against the
JPKI sequence the reader sends and against the trust layer's own signature."""

from __future__ import annotations

import os

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from onshi.core import cardproof
from onshi.terminal import jpki
from onshi.terminal.vcard import ATR, load_card
from tests.test_terminal_support import PIN, card_files, shared_pki


@pytest.fixture
def card():
    return load_card(*card_files(shared_pki(), "valid-1"), PIN)


def apdu(card, hexstr: str | bytes) -> tuple[bytes, int]:
    raw = bytes.fromhex(hexstr) if isinstance(hexstr, str) else hexstr
    out = card.process(raw)
    return out[:-2], int.from_bytes(out[-2:], "big")


def select_ap(card):
    return apdu(card, jpki.SELECT_DF + bytes([len(jpki.AID)]) + jpki.AID)


def select_ef(card, ef: bytes):
    return apdu(card, jpki.SELECT_EF + b"\x02" + ef)


def test_atr_is_well_formed():
    # TCK = XOR of T0..last interface byte, so pcscd accepts the ATR.
    tck = 0
    for b in ATR[1:-1]:
        tck ^= b
    assert ATR[0] == 0x3B and tck == ATR[-1]


def test_select_jpki_and_read_the_certificate_in_chunks(card):
    assert select_ap(card)[1] == jpki.SW_OK
    assert select_ef(card, jpki.EF_AUTH_CERT)[1] == jpki.SW_OK
    head, sw = apdu(card, "00B0000004")
    assert sw == jpki.SW_OK
    total = jpki.der_total_length(head)
    assert total > 256  # why the reader needs several READ BINARYs
    data = bytearray()
    while len(data) < total:
        n = min(256, total - len(data))
        chunk, sw = apdu(card, bytes([0, 0xB0, len(data) >> 8, len(data) & 0xFF, n & 0xFF]))
        assert sw == jpki.SW_OK and len(chunk) == n
        data += chunk
    cert = x509.load_der_x509_certificate(bytes(data))
    assert cert.serial_number == 0x1001


def test_unknown_application_and_files(card):
    assert apdu(card, "00A4040C05A000000001")[1] == jpki.SW_FILE_NOT_FOUND
    assert select_ef(card, jpki.EF_AUTH_CERT)[1] == jpki.SW_FILE_NOT_FOUND  # AP not selected
    select_ap(card)
    assert select_ef(card, b"\x00\x99")[1] == jpki.SW_FILE_NOT_FOUND
    assert apdu(card, "00B0000004")[1] == jpki.SW_NO_CURRENT_EF
    select_ef(card, jpki.EF_AUTH_KEY)
    assert apdu(card, "00B0000004")[1] == jpki.SW_NO_CURRENT_EF  # the key is never readable
    assert apdu(card, "00FF0000")[1] == jpki.SW_INS_NOT_SUPPORTED


def test_pin_counter_blocks_after_three_wrong_tries(card, tmp_path):
    select_ap(card)
    select_ef(card, jpki.EF_AUTH_PIN)
    assert apdu(card, jpki.VERIFY)[1] == 0x63C3
    assert apdu(card, jpki.VERIFY + b"\x040000")[1] == 0x63C2
    assert apdu(card, jpki.VERIFY + b"\x040000")[1] == 0x63C1
    assert apdu(card, jpki.VERIFY + b"\x04" + PIN.encode())[1] == jpki.SW_OK  # resets the counter
    assert card.tries_left == 3
    for left in (2, 1, 0):
        assert apdu(card, jpki.VERIFY + b"\x040000")[1] == 0x63C0 | left
    assert apdu(card, jpki.VERIFY)[1] == jpki.SW_PIN_BLOCKED
    assert apdu(card, jpki.VERIFY + b"\x04" + PIN.encode())[1] == jpki.SW_PIN_BLOCKED


def test_pin_counter_survives_a_restart_with_state(tmp_path):
    state = str(tmp_path / "card.json")
    files = card_files(shared_pki(), "valid-1")
    first = load_card(*files, PIN, state_path=state)
    select_ap(first)
    select_ef(first, jpki.EF_AUTH_PIN)
    apdu(first, jpki.VERIFY + b"\x040000")
    second = load_card(*files, PIN, state_path=state)
    assert second.tries_left == 2


def test_signature_needs_the_pin_and_matches_the_trust_layer(card):
    select_ap(card)
    digest_info = jpki.digest_info_sha256(b"x")
    select_ef(card, jpki.EF_AUTH_KEY)
    sign = jpki.SIGN + bytes([len(digest_info)]) + digest_info + b"\x00"
    assert apdu(card, sign)[1] == jpki.SW_SECURITY_NOT_SATISFIED
    select_ef(card, jpki.EF_AUTH_PIN)
    assert apdu(card, jpki.VERIFY + b"\x04" + PIN.encode())[1] == jpki.SW_OK
    select_ef(card, jpki.EF_AUTH_KEY)
    nonce = os.urandom(32)
    purpose = cardproof.PURPOSE_CHECK_BY_CARD
    message = cardproof.challenge_bytes(purpose, "1310000001", 1_790_000_000, nonce)
    digest_info = jpki.digest_info_sha256(message)
    signature, sw = apdu(card, jpki.SIGN + bytes([len(digest_info)]) + digest_info + b"\x00")
    assert sw == jpki.SW_OK
    # Bit-identical to what the trust layer's reference signer produces, and it verifies.
    assert signature == cardproof.sign_challenge(card.key, purpose, "1310000001", 1_790_000_000, nonce)
    card.key.public_key().verify(signature, message, padding.PKCS1v15(), hashes.SHA256())


def test_reset_forgets_the_verified_pin(card):
    select_ap(card)
    select_ef(card, jpki.EF_AUTH_PIN)
    apdu(card, jpki.VERIFY + b"\x04" + PIN.encode())
    card.reset()
    select_ap(card)
    select_ef(card, jpki.EF_AUTH_KEY)
    digest_info = jpki.digest_info_sha256(b"x")
    assert (
        apdu(card, jpki.SIGN + bytes([len(digest_info)]) + digest_info + b"\x00")[1] == jpki.SW_SECURITY_NOT_SATISFIED
    )


@pytest.mark.parametrize(
    "header, total",
    [
        (bytes.fromhex("3082037a"), 4 + 0x37A),
        (bytes.fromhex("30817f"), 3 + 0x7F),
        (bytes.fromhex("3005"), 7),
    ],
)
def test_der_length_from_the_header(header, total):
    assert jpki.der_total_length(header) == total


def test_der_length_refuses_what_is_not_a_certificate():
    with pytest.raises(ValueError):
        jpki.der_total_length(b"\x04\x05")
