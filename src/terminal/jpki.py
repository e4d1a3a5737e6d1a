"""The JPKI user-authentication application of the My Number card, as the
terminal and the virtual card both see it: AID, file IDs, status words, and
the DigestInfo the card signs (the signed bytes of a card proof are
onshi.core.cardproof.challenge_bytes, proto/onshi/v1/eligibility.proto).

One module for both sides so a typo cannot make the reader and the test card
agree with each other and disagree with a real card.
"""

from __future__ import annotations

import hashlib

# JPKI AP (公的個人認証 AP).
AID = bytes.fromhex("D392F000260100000001")
EF_AUTH_CERT = b"\x00\x0a"  # 利用者証明用電子証明書 (user-authentication certificate)
EF_AUTH_KEY = b"\x00\x17"  # its private key (signing only; never readable)
EF_AUTH_PIN = b"\x00\x18"  # 4-digit 利用者証明用パスワード

PIN_TRIES = 3
PIN_LENGTH = 4

# Command headers (CLA INS P1 P2).
SELECT_DF = bytes.fromhex("00A4040C")
SELECT_EF = bytes.fromhex("00A4020C")
READ_BINARY = 0xB0  # 00 B0 <offset hi> <offset lo> <Le>
VERIFY = bytes.fromhex("00200080")
SIGN = bytes.fromhex("802A0080")  # 80 2A 00 80 Lc <DigestInfo> 00

# Status words.
SW_OK = 0x9000
SW_WRONG_LENGTH = 0x6700
SW_SECURITY_NOT_SATISFIED = 0x6982
SW_PIN_BLOCKED = 0x6984  # reference data not usable: 3 wrong PINs
SW_CONDITIONS_NOT_SATISFIED = 0x6985
SW_NO_CURRENT_EF = 0x6986
SW_WRONG_DATA = 0x6A80
SW_FILE_NOT_FOUND = 0x6A82
SW_WRONG_P1P2 = 0x6A86
SW_OFFSET_OUTSIDE = 0x6B00
SW_INS_NOT_SUPPORTED = 0x6D00
SW_CLA_NOT_SUPPORTED = 0x6E00


def sw_pin_tries(sw: int) -> int | None:
    """63 Cx -> x tries left; anything else -> None."""
    return sw & 0x0F if sw & 0xFFF0 == 0x63C0 else None


# DER prefix of DigestInfo { AlgorithmIdentifier sha256 NULL, OCTET STRING(32) }.
SHA256_DIGEST_INFO_PREFIX = bytes.fromhex("3031300d060960864801650304020105000420")


def digest_info_sha256(message: bytes) -> bytes:
    return SHA256_DIGEST_INFO_PREFIX + hashlib.sha256(message).digest()


def der_total_length(header: bytes) -> int:
    """Length of a DER object (tag + length + content) from its first bytes.

    The certificate file is larger than one READ BINARY (256 bytes), so the
    reader learns how much to read from the SEQUENCE header first.
    """
    if len(header) < 2 or header[0] != 0x30:
        raise ValueError("not a DER SEQUENCE")
    first = header[1]
    if first < 0x80:
        return 2 + first
    n = first & 0x7F
    if n == 0 or n > 3 or len(header) < 2 + n:
        raise ValueError("unsupported DER length")
    return 2 + n + int.from_bytes(header[2 : 2 + n], "big")
