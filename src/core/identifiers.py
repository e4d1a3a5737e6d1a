"""Identifiers of DOMAIN.md §2: check digits, insurance-number keys, card serials.

One place for each rule: every caller (engines, writer, server, CLI) normalises
through these functions, so a number typed full-width at a reception desk and
the same number streamed by an insurer meet on the same key.
"""

from __future__ import annotations

import functools
import re
import unicodedata

LATE_ELDERLY_SCHEME = "39"
UNKNOWN_INSURERS = frozenset({"77777777", "77777779"})  # 不詳 claims, DOMAIN.md §6
MAX_SERIAL_HEX = 40  # RFC 5280 serials are at most 20 octets
SERIAL_KEY_LEN = 20
MAX_SYMBOL = 20
MAX_NUMBER = 20

_HEX = re.compile(rf"[0-9A-Fa-f]{{1,{MAX_SERIAL_HEX}}}")
_DIGITS = re.compile(r"[0-9]+")


class InvalidIdentifier(ValueError):
    """A malformed identifier; `field` names the request field at fault."""

    def __init__(self, field: str, description: str):
        super().__init__(f"{field}: {description}")
        self.field = field
        self.description = description


def check_digit(body: str) -> int:
    """MHLW check digit over the digits before it (weights 2,1,2,... from the last)."""
    total = 0
    for i, ch in enumerate(reversed(body)):
        product = int(ch) * (2 if i % 2 == 0 else 1)
        total += product // 10 + product % 10
    return (10 - total % 10) % 10


def has_valid_check_digit(number: str) -> bool:
    return len(number) >= 2 and number.isdigit() and check_digit(number[:-1]) == int(number[-1])


def with_check_digit(body: str) -> str:
    return body + str(check_digit(body))


def _fold(text: str) -> str:
    # NFKC folds full-width digits/letters and half-width kana; spaces never matter.
    return "".join(unicodedata.normalize("NFKC", text).split())


@functools.lru_cache(maxsize=1 << 12)  # a few thousand insurers; every update names one
def normalize_insurer_number(text: str, field: str = "insurer_number") -> str:
    value = _fold(text)
    if not _DIGITS.fullmatch(value) or len(value) not in (6, 8):
        raise InvalidIdentifier(field, "must be 8 digits (6 for municipal NHI)")
    if not has_valid_check_digit(value):
        raise InvalidIdentifier(field, "check digit does not match (MHLW numbering rule)")
    return value


def is_late_elderly(insurer_number: str) -> bool:
    return len(insurer_number) == 8 and insurer_number.startswith(LATE_ELDERLY_SCHEME)


@functools.lru_cache(maxsize=1 << 16)  # the writer re-keys a person's numbers on every update
def number_key(insurer_number: str, symbol: str, number: str, branch: str) -> bytes:
    """The individual insured number as an index key (raises InvalidIdentifier).

    後期高齢者 numbers are already per person: symbol and branch are dropped.
    """
    insurer = normalize_insurer_number(insurer_number)
    sym = _fold(symbol)
    num = _fold(number)
    br = _fold(branch)
    if len(sym) > MAX_SYMBOL:
        raise InvalidIdentifier("symbol", f"at most {MAX_SYMBOL} characters")
    if not num:
        raise InvalidIdentifier("number", "required")
    if len(num) > MAX_NUMBER:
        raise InvalidIdentifier("number", f"at most {MAX_NUMBER} characters")
    if is_late_elderly(insurer):
        sym, br = "", ""
    else:
        if not br:
            raise InvalidIdentifier("branch", "required (2 digits, e.g. 00)")
        if not _DIGITS.fullmatch(br) or len(br) > 2:
            raise InvalidIdentifier("branch", "must be 1-2 digits")
        br = br.zfill(2)
    return "\x1f".join((insurer, sym, num, br)).encode()


def card_serial_key(card_serial: str) -> bytes:
    """Hex certificate serial -> fixed 20-byte big-endian key (raises InvalidIdentifier)."""
    text = card_serial.strip()
    if text[:2] in ("0x", "0X"):
        text = text[2:]
    if not _HEX.fullmatch(text):
        raise InvalidIdentifier("card_serial", f"must be 1-{MAX_SERIAL_HEX} hex digits")
    return int(text, 16).to_bytes(SERIAL_KEY_LEN, "big")


def card_serial_text(key: bytes) -> str:
    return format(int.from_bytes(key, "big"), "X")


FNV_OFFSET = 0xCBF29CE484222325
FNV_PRIME = 0x100000001B3


@functools.lru_cache(maxsize=1 << 16)  # the writer re-hashes a person's numbers on every update
def number_hash(key: bytes) -> int:
    """FNV-1a 64 of a number key; history entries carry it so engines can pick a
    number's entries without decoding payloads (the native engine computes the same)."""
    h = FNV_OFFSET
    for b in key:
        h = ((h ^ b) * FNV_PRIME) & 0xFFFFFFFFFFFFFFFF
    return h
