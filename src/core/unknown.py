"""不詳 claims (DOMAIN.md §6, seed 004 §3(4)): find the person from the
self-declaration (被保険者資格申立書) transcribed into the claim.

Seed 004: the review body identifies 「患者が医療機関等を受診等した当時の加入保険者等」,
so the declaration — written at the visit, with the name and address the
patient had then — is matched against the person's basic information in force
on a visit day (onshi.core.persons), not against today's: a patient who has
since married or moved is still found. The `basic4` index, maintained by the
writer from each person's timeline (put_persons and bulk_load both call
`basic4_rows`), maps the exact part of the basic 4 information to persons:

    basic4  birth day (u32 BE, offset 2**31) sex(u8) normalised kana \\0 link key(8)
            first day (u32 BE, offset 2**31)
            -> end day (u32 BE, offset 2**31) normalised address \\x1f postcode

one row per period of the person's details. Kana name, birth date and sex must
match exactly (after normalisation); the address (fuzzier: declared addresses
omit buildings, write 丁目 as a hyphen) filters the candidates, and a
declaration may give several (seed 004: 住所（複数存在する場合は全て）): one
matching is enough. Insurer number / insurer name / employer hints only break
ties between several candidates. Exactly one person left -> identified.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass

import lmdb

from ..v1 import claims_pb2, qualification_pb2
from . import dates, history, persons
from .store import link_id_of, link_key

_DAY_OFFSET = 1 << 31
MAX_KANA_BYTES = 300  # keeps the key under LMDB's 511-byte limit

_SMALL_KANA = str.maketrans("ァィゥェォッャュョヮヵヶ", "アイウエオツヤユヨワカケ")
_HYPHENS = re.compile(r"[‐‑‒–—―−－ｰ]")
_DIGIT_HYPHEN = re.compile(r"(?<=\d)ー(?=\d)")
_BLOCK = re.compile(r"(?<=\d)(?:丁目|番地|番|号|の)(?=\d)")
_BLOCK_END = re.compile(r"(?<=\d)(?:丁目|番地|番|号)$")


@functools.lru_cache(maxsize=1 << 16)  # the writer indexes every new person; names repeat
def normalize_kana(text: str) -> str:
    """Full/half width, hiragana/katakana, small/large kana and spacing all fold."""
    folded = unicodedata.normalize("NFKC", text)
    out = []
    for ch in folded:
        if ch.isspace() or ch in "・･.":
            continue
        code = ord(ch)
        if 0x3041 <= code <= 0x3096:  # hiragana -> katakana
            ch = chr(code + 0x60)
        out.append(ch)
    return "".join(out).translate(_SMALL_KANA)


@functools.lru_cache(maxsize=1 << 16)  # towns and streets repeat
def normalize_address(text: str) -> str:
    s = "".join(unicodedata.normalize("NFKC", text).split())
    s = _HYPHENS.sub("-", s)
    s = _DIGIT_HYPHEN.sub("-", s)
    s = _BLOCK.sub("-", s)
    return _BLOCK_END.sub("", s)


@functools.lru_cache(maxsize=1 << 16)  # postcodes repeat, as towns do
def normalize_postcode(text: str) -> str:
    return "".join(ch for ch in unicodedata.normalize("NFKC", text) if ch.isdigit())


def basic4_prefix(birth_day: int, sex: int, name_kana: str) -> bytes | None:
    kana = normalize_kana(name_kana).encode()
    if not kana or not sex:
        return None
    return (birth_day + _DAY_OFFSET).to_bytes(4, "big") + bytes((sex,)) + kana[:MAX_KANA_BYTES] + b"\0"


def _day_bytes(day: int) -> bytes:
    return (day + _DAY_OFFSET).to_bytes(4, "big")


def _day_of(raw: bytes) -> int:
    return int.from_bytes(raw, "big") - _DAY_OFFSET


def basic4_rows(link_id: int, timeline: persons.Timeline) -> list[tuple[bytes, bytes]]:
    """The index rows of a person: one per period of their details (a period
    whose details lack kana, sex or birth date has none)."""
    rows = []
    for first, end, raw in persons.periods(timeline):
        row = basic4_row(link_id, persons.person(raw), first, end)
        if row is not None:
            rows.append(row)
    return rows


def basic4_row(link_id: int, person: qualification_pb2.Person, first: int, end: int) -> tuple[bytes, bytes] | None:
    """The index row of one period of a person's details."""
    if not person.HasField("birth_date"):
        return None
    prefix = basic4_prefix(dates.proto_day(person.birth_date), person.sex, person.name_kana)
    if prefix is None:
        return None
    place = normalize_address(person.address) + "\x1f" + normalize_postcode(person.postcode)
    return prefix + link_key(link_id) + _day_bytes(first), _day_bytes(end) + place.encode()


def address_matches(declared: str, registered: str) -> bool:
    """Equal, or the declaration stops at a boundary of the registered address
    (a building omitted) — "1-1" must not match "1-10"."""
    if declared == registered:
        return True
    short, long_ = sorted((declared, registered), key=len)
    if not short or not long_.startswith(short):
        return False
    return not long_[len(short)].isdigit()


@dataclass(frozen=True, slots=True)
class Candidate:
    link_id: int
    address: str
    postcode: str


def matching(
    txn: lmdb.Transaction[bytes | memoryview],
    db: lmdb._Database,
    birth_day: int,
    sex: int,
    name_kana: str,
    addresses: list[str],
    postcode: str,
    first_day: int,
    last_day: int,
    limit: int | None = None,
) -> list[Candidate]:
    """Persons whose kana name, birth date and sex were theirs on some day of
    first_day..last_day, filtered by any of `addresses` (else the postcode)
    registered for them then; each person once."""
    prefix = basic4_prefix(birth_day, sex, name_kana)
    if prefix is None:
        return []
    found = []
    cursor = txn.cursor(db=db)
    if cursor.set_range(prefix):
        for key, value in cursor:
            key, value = bytes(key), bytes(value)
            if key[: len(prefix)] != prefix:
                break
            first = _day_of(key[len(prefix) + 8 : len(prefix) + 12])
            end = _day_of(value[:4])
            if first <= last_day and first_day < end:
                address, _, code = value[4:].decode().partition("\x1f")
                found.append(Candidate(link_id_of(key[len(prefix) : len(prefix) + 8]), address, code))
    declared = [a for a in dict.fromkeys(normalize_address(a) for a in addresses) if a]
    postcode = normalize_postcode(postcode)
    if declared:
        # An exact address outranks one that only agrees up to a building.
        exact = [c for c in found if c.address in declared]
        found = exact or [c for c in found if any(address_matches(a, c.address) for a in declared)]
    elif postcode:
        found = [c for c in found if c.postcode == postcode]
    out = list({c.link_id: c for c in found}.values())
    return out[:limit] if limit is not None else out


def candidates(
    txn: lmdb.Transaction[bytes | memoryview],
    db: lmdb._Database,
    birth_day: int,
    declaration: claims_pb2.SelfDeclaration,
    first_day: int,
    last_day: int,
) -> list[Candidate]:
    """Persons the declaration may name: `matching` with its addresses."""
    return matching(
        txn,
        db,
        birth_day,
        declaration.sex,
        declaration.name_kana,
        [declaration.address, *declaration.other_addresses],
        declaration.postcode,
        first_day,
        last_day,
    )


def _fold(text: str) -> str:
    return "".join(unicodedata.normalize("NFKC", text).split())


def break_ties(
    histories: dict[int, bytes], declaration: claims_pb2.SelfDeclaration, first_day: int, last_day: int
) -> list[int]:
    """Narrow several candidates with the insurer/employer hints, each applied
    only if it leaves someone. The hints are compared with the qualifications
    covering some day of the visit period."""
    remaining = list(histories)
    quals = {link: _covering(value, first_day, last_day) for link, value in histories.items()}
    hints = []
    if declaration.insurer_number:
        want = _fold(declaration.insurer_number)
        hints.append(lambda q: q.insurer_number == want)
    if declaration.insurer_name:
        want_name = _fold(declaration.insurer_name)
        hints.append(lambda q: want_name in _fold(q.insurer_name) or _fold(q.insurer_name) in want_name)
    if declaration.employer:
        # No employer field on a qualification: a 健保組合's name carries it.
        want_employer = _fold(declaration.employer)
        hints.append(lambda q: want_employer in _fold(q.insurer_name))
    for hint in hints:
        narrowed = [link for link in remaining if any(hint(q) for q in quals[link])]
        if narrowed:
            remaining = narrowed
        if len(remaining) == 1:
            break
    return remaining


def _covering(value: bytes, first_day: int, last_day: int) -> list[qualification_pb2.Qualification]:
    _, entries = history.parse_history(value)
    return [
        history.unframe(e.payload)
        for e in entries
        if e.acquisition_day <= last_day
        and first_day < e.loss_day
        and e.view_from <= last_day
        and first_day < e.view_until
    ]


def identify(
    txn: lmdb.Transaction[bytes | memoryview],
    basic4_db: lmdb._Database,
    history_by_link: Callable[[int], bytes | None],
    birth_day: int,
    declaration: claims_pb2.SelfDeclaration,
    first_day: int,
    last_day: int,
) -> tuple[int | None, bytes | None, str]:
    """(link ID, history) of the one person the declaration names, else
    (None, None, why)."""
    found = candidates(txn, basic4_db, birth_day, declaration, first_day, last_day)
    if not found:
        return None, None, "no person matches the declaration"
    histories = {}
    for c in found:
        value = history_by_link(c.link_id)
        if value is not None:
            histories[c.link_id] = value
    if len(histories) > 1:
        remaining = break_ties(histories, declaration, first_day, last_day)
    else:
        remaining = list(histories)
    if not remaining:
        return None, None, "no person matches the declaration"
    if len(remaining) > 1:
        return None, None, f"{len(remaining)} persons match the declaration"
    return remaining[0], histories[remaining[0]], ""
