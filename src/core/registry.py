"""The resident registry (the J-LIS stand-in) and the basic-information match.

Wrong-person links were the system's most damaging failure (DOMAIN.md §4): every
update is compared with the registry on kanji name, kana, birth date, sex and
address before it takes effect. The comparison forgives only how a string was
*written*, never what it says:

* width (全角/半角) and compatibility forms, via NFKC;
* spaces of any kind, anywhere (姓 名 vs 姓名);
* variation selectors (IVS), which pick a glyph, not a character;
* kana: hiragana vs katakana, small kana vs large (ァ/ア, ッ/ツ, ヶ/ケ...),
  old forms ヰ/ヱ/ヲ vs イ/エ/オ, ヴ-row vs バ-row (ヴァ/バ...);
* address: the many dash characters in block numbers (１－２−３ / 1-2-3).

Nothing fuzzier: a different kanji, a missing character, a changed digit or a
different birth date is a mismatch.

Records live in the `registry` database of the store: resident ID -> serialized
onshi.v1.Resident (the record exactly as registered).
"""

from __future__ import annotations

import functools
import re
import unicodedata

from onshi.core import dates
from onshi.v1 import enrollment_pb2, qualification_pb2

Resident = enrollment_pb2.Resident
Reason = enrollment_pb2.QuarantineReason

REGISTRY_DB = b"registry"
RESIDENT_ID_LEN = 11  # 住民票コード
_DIGITS = re.compile(r"[0-9]+")

# Variation selectors: VS1-16 and the ideographic variation sequences' VS17-256.
_VARIATION_SELECTORS = dict.fromkeys(list(range(0xFE00, 0xFE10)) + list(range(0xE0100, 0xE01F0)))

_SMALL_TO_LARGE = str.maketrans(
    "ァィゥェォッャュョヮヵヶㇰㇱㇲㇳㇴㇵㇶㇷㇸㇹㇺㇻㇼㇽㇾㇿ",
    "アイウエオツヤユヨワカケクシストヌハヒフヘホムラリルレロ",
)
_OLD_KANA = str.maketrans("ヰヱヲ", "イエオ")
# ヴ + small vowel first (after small->large they would read ヴア...), then bare ヴ.
_VU_PAIRS = (("ヴァ", "バ"), ("ヴィ", "ビ"), ("ヴェ", "ベ"), ("ヴォ", "ボ"), ("ヴュ", "ビュ"), ("ヴ", "ブ"))
_ROW_VA = str.maketrans("ヷヸヹヺ", "バビベボ")  # ワ゛ イ゛ エ゛ ヲ゛ (precomposed, rare)
_DASHES = re.compile("[\u2010\u2011\u2012\u2013\u2014\u2015\u2212\u30fc\uff70\u2500\u2501\u2043\ufe63]")


def _base(text: str) -> str:
    text = unicodedata.normalize("NFKC", text.translate(_VARIATION_SELECTORS))
    return "".join(text.split())


@functools.lru_cache(maxsize=1 << 16)  # names and towns repeat; the writer is one process
def normalize_name(text: str) -> str:
    """Kanji name for matching: width, spaces and variation selectors only."""
    return _base(text)


@functools.lru_cache(maxsize=1 << 16)  # names and towns repeat; the writer is one process
def normalize_kana(text: str) -> str:
    """Kana name for matching: also hiragana/katakana, small/large, old forms, ヴ."""
    text = _base(text)
    # Hiragana -> katakana (ぁ U+3041 .. ゖ U+3096 sit exactly 0x60 below).
    text = "".join(chr(ord(c) + 0x60) if "\u3041" <= c <= "\u3096" else c for c in text)
    text = text.replace("ゝ", "ヽ").replace("ゞ", "ヾ")
    for old, new in _VU_PAIRS:
        text = text.replace(old, new)
    return text.translate(_ROW_VA).translate(_OLD_KANA).translate(_SMALL_TO_LARGE)


@functools.lru_cache(maxsize=1 << 16)  # names and towns repeat; the writer is one process
def normalize_address(text: str) -> str:
    """Address for matching: width, spaces, and every dash written as '-'."""
    return _DASHES.sub("-", _base(text))


def mismatches(registered: Resident, person: qualification_pb2.Person) -> list[int]:
    """QuarantineReason values for every field of `person` that differs from the record."""
    return _differences(_matchable(registered), person)


def stored_mismatches(raw: bytes, person: qualification_pb2.Person, person_bytes: bytes | None = None) -> list[int]:
    """`mismatches` against a record as stored (serialized): the writer checks every
    update against one. A resident's record is normalised once, not per update,
    and with `person_bytes` (person serialized, deterministic) the verdict for
    that record and that person is remembered: an insurer's updates of one
    person repeat the same basic information."""
    if person_bytes is None:
        return _differences(_matchable_stored(raw), person)
    key = (raw, person_bytes)
    verdict = _verdicts.get(key)
    if verdict is None:
        verdict = tuple(_differences(_matchable_stored(raw), person))
        if len(_verdicts) >= _MAX_VERDICTS:
            _verdicts.clear()
        _verdicts[key] = verdict
    return list(verdict)


_MAX_VERDICTS = 1 << 16
_verdicts: dict[tuple[bytes, bytes], tuple[int, ...]] = {}  # keyed by content, so never stale


def _matchable(r: Resident) -> tuple:
    return (normalize_name(r.name), normalize_kana(r.name_kana),
            (r.birth_date.year, r.birth_date.month, r.birth_date.day), r.sex, normalize_address(r.address))


@functools.lru_cache(maxsize=1 << 16)  # keyed by the stored bytes, so never stale
def _matchable_stored(raw: bytes) -> tuple:
    return _matchable(Resident.FromString(raw))


def _differences(record: tuple, person: qualification_pb2.Person) -> list[int]:
    name, kana, birth, sex, address = record
    out = []
    if normalize_name(person.name) != name:
        out.append(Reason.QUARANTINE_REASON_NAME_MISMATCH)
    if normalize_kana(person.name_kana) != kana:
        out.append(Reason.QUARANTINE_REASON_KANA_MISMATCH)
    b = person.birth_date
    if (b.year, b.month, b.day) != birth:
        out.append(Reason.QUARANTINE_REASON_BIRTH_DATE_MISMATCH)
    if person.sex != sex:
        out.append(Reason.QUARANTINE_REASON_SEX_MISMATCH)
    if normalize_address(person.address) != address:
        out.append(Reason.QUARANTINE_REASON_ADDRESS_MISMATCH)
    return out


@functools.lru_cache(maxsize=1 << 16)  # a resident's updates come in runs
def normalize_resident_id(text: str) -> str | None:
    """11 digits (width and spaces forgiven), or None when malformed."""
    value = _base(text)
    if len(value) != RESIDENT_ID_LEN or not _DIGITS.fullmatch(value):
        return None
    return value


def person_violations(person: qualification_pb2.Person, prefix: str) -> list[tuple[str, str]]:
    """Field violations of basic information that cannot be checked at all."""
    out = []
    if not person.name.strip():
        out.append((f"{prefix}.name", "required"))
    if not person.name_kana.strip():
        out.append((f"{prefix}.name_kana", "required"))
    if person.sex not in (qualification_pb2.SEX_MALE, qualification_pb2.SEX_FEMALE):
        out.append((f"{prefix}.sex", "must be SEX_MALE or SEX_FEMALE"))
    try:
        dates.proto_day(person.birth_date)
    except ValueError:
        out.append((f"{prefix}.birth_date", "required, a real calendar date"))
    if not person.address.strip():
        out.append((f"{prefix}.address", "required"))
    return out


def resident_violations(resident: Resident, prefix: str = "residents") -> list[tuple[str, str]]:
    out = []
    if normalize_resident_id(resident.resident_id) is None:
        out.append((f"{prefix}.resident_id", f"must be {RESIDENT_ID_LEN} digits"))
    as_person = qualification_pb2.Person(name=resident.name, name_kana=resident.name_kana, sex=resident.sex,
                                         birth_date=resident.birth_date, address=resident.address)
    return out + person_violations(as_person, prefix)


def get(wtxn, resident_id: str) -> Resident | None:
    raw = wtxn.get("registry", resident_id.encode())
    return Resident.FromString(raw) if raw else None


def put(wtxn, resident: Resident) -> None:
    """Store a record exactly as registered, keyed by its normalised resident ID."""
    record = Resident()
    record.CopyFrom(resident)
    record.resident_id = normalize_resident_id(resident.resident_id) or ""
    if not record.resident_id:
        raise ValueError("resident_id must be 11 digits")
    wtxn.put("registry", record.resident_id.encode(), record.SerializeToString(deterministic=True))
