"""The resident registry (the J-LIS stand-in) and the basic-information match.

Wrong-person links were the system's most damaging failure (DOMAIN.md §4): every
update is compared with the registry on kanji name, kana, birth date, sex and
address before it takes effect. The comparison forgives how Japanese is
*written*, never what it says. Per field, two levels:

* notation — width (全角/半角) and compatibility forms (NFKC), spaces,
  variation selectors (IVS); kana also hiragana/katakana and the middle dot;
  addresses also every dash character and a leading postcode. Equal at this
  level is a plain match.
* loose rules — equal only after them is a match the clerk is told about
  (`Verdict.loose`: which field, which rule, onshi.v1.MatchRule):
  - name and address: kanji variants (onshi.core.kanji): a character outside
    JIS X 0208 written with its usual substitute (髙→高, 﨑→崎, 𠮷→吉), an old
    form written in its new form (邊→辺, 澤→沢);
  - kana (onshi.core.kana): small kana written large (シルヴァ→シルヴア), old
    spellings (ヰ/ヱ/ヲ, ヴァ→バ);
  - address (onshi.core.address): block numbers in any notation (一丁目2番3号
    = 1-2-3, 番地, 号, kanji numerals), kana inside place names (茅ヶ崎 = 茅ケ崎).

Nothing fuzzier: another kanji (太郎/太朗), another kana (ジ/ヂ, サトウ/サトー), a
missing character, another block or room number, another birth date or sex is
a mismatch. Birth date and sex compare exactly.

Records live in the `registry` database of the store: resident ID -> serialized
onshi.v1.Resident (the record exactly as registered).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..v1 import enrollment_pb2, qualification_pb2
from . import address, dates, kana, kanji

if TYPE_CHECKING:
    from .writer import WriteTxn

Resident = enrollment_pb2.Resident
Reason = enrollment_pb2.QuarantineReason
Rule = enrollment_pb2.MatchRule

RESIDENT_ID_LEN = 11  # 住民票コード
_DIGITS = re.compile(r"[0-9]+")

_RULES = {
    kanji.SUBSTITUTE: Rule.MATCH_RULE_KANJI_SUBSTITUTE,
    kanji.OLD_FORM: Rule.MATCH_RULE_KANJI_OLD_FORM,
    kana.SMALL_WRITTEN_LARGE: Rule.MATCH_RULE_KANA_SMALL_WRITTEN_LARGE,
    kana.OLD_SPELLING: Rule.MATCH_RULE_KANA_OLD_SPELLING,
    address.BLOCK_NOTATION: Rule.MATCH_RULE_ADDRESS_BLOCK_NOTATION,
    address.PLACE_NAME_KANA: Rule.MATCH_RULE_ADDRESS_PLACE_NAME_KANA,
}


@dataclass(frozen=True, slots=True)
class Field:
    """How one text field of the basic information is compared."""

    name: str  # as in a LooseMatch: "person.name"
    reason: Reason  # when it differs
    notation: Callable[[str], str]
    steps: tuple[tuple[Rule, Callable[[str], str]], ...]  # (MatchRule, fold), in order

    def fold(self, text: str) -> str:
        for _, step in self.steps:
            text = step(text)
        return text

    def compare(self, registered: str, written: str) -> tuple[Rule, ...] | None:
        """None when the texts differ, else the loose rules the match took
        (empty: equal as notation). Both texts already at notation level."""
        if registered == written:
            return ()
        if self.fold(registered) != self.fold(written):
            return None
        return _rules_taken(self.steps, registered, written)


def _rules_taken(steps: tuple[tuple[Rule, Callable[[str], str]], ...], a: str, b: str) -> tuple[Rule, ...]:
    """The steps without which a and b would not match; if no single step is
    needed (two could each do it), the first that does it alone."""

    def folded(text: str, skip: int) -> str:
        for i, (_, step) in enumerate(steps):
            if i != skip:
                text = step(text)
        return text

    needed = tuple(rule for i, (rule, _) in enumerate(steps) if folded(a, i) != folded(b, i))
    if needed:
        return needed
    for rule, step in steps:
        if step(a) == step(b):
            return (rule,)
    return tuple(rule for rule, step in steps if step(a) != a or step(b) != b)


_KANJI_STEPS = tuple((_RULES[rule], step) for rule, step in kanji.LOOSE_FOLDS)
NAME = Field(
    "person.name",
    Reason.QUARANTINE_REASON_NAME_MISMATCH,
    functools.lru_cache(maxsize=1 << 16)(kana.strip_notation),
    _KANJI_STEPS,
)
KANA = Field(
    "person.name_kana",
    Reason.QUARANTINE_REASON_KANA_MISMATCH,
    kana.notation,
    tuple((_RULES[rule], step) for rule, step in kana.LOOSE_FOLDS),
)
ADDRESS = Field(
    "person.address",
    Reason.QUARANTINE_REASON_ADDRESS_MISMATCH,
    address.notation,
    tuple((_RULES[rule], step) for rule, step in address.LOOSE_FOLDS) + _KANJI_STEPS,
)


@functools.lru_cache(maxsize=1 << 16)  # names and towns repeat; the writer is one process
def normalize_name(text: str) -> str:
    """The key two kanji names share when they match (notation and loose rules)."""
    return NAME.fold(NAME.notation(text))


@functools.lru_cache(maxsize=1 << 16)
def normalize_kana(text: str) -> str:
    """The key two kana names share when they match."""
    return KANA.fold(KANA.notation(text))


@functools.lru_cache(maxsize=1 << 16)
def normalize_address(text: str) -> str:
    """The key two addresses share when they match."""
    return ADDRESS.fold(ADDRESS.notation(text))


@dataclass(frozen=True, slots=True)
class Verdict:
    """The registry match of one person against one record."""

    reasons: tuple[Reason, ...]  # per differing field
    loose: tuple[tuple[str, tuple[Rule, ...]], ...]  # (field, MatchRules) per loosely matched field

    def loose_matches(self) -> list[enrollment_pb2.LooseMatch]:
        return [enrollment_pb2.LooseMatch(field=f, rules=rules) for f, rules in self.loose]


def mismatches(registered: Resident, person: qualification_pb2.Person) -> list[Reason]:
    """QuarantineReason values for every field of `person` that differs from the record."""
    return list(_verdict(_matchable(registered), person).reasons)


def verdict(registered: Resident, person: qualification_pb2.Person) -> Verdict:
    return _verdict(_matchable(registered), person)


def stored_mismatches(raw: bytes, person: qualification_pb2.Person, person_bytes: bytes | None = None) -> list[Reason]:
    """`mismatches` against a record as stored (serialized)."""
    return list(stored_verdict(raw, person, person_bytes).reasons)


def stored_verdict(raw: bytes, person: qualification_pb2.Person, person_bytes: bytes | None = None) -> Verdict:
    """`verdict` against a record as stored (serialized): the writer checks every
    update against one. A resident's record is normalised once, not per update,
    and with `person_bytes` (person serialized, deterministic) the verdict for
    that record and that person is remembered: an insurer's updates of one
    person repeat the same basic information."""
    if person_bytes is None:
        return _verdict(_matchable_stored(raw), person)
    key = (raw, person_bytes)
    found = _verdicts.get(key)
    if found is None:
        found = _verdict(_matchable_stored(raw), person)
        if len(_verdicts) >= _MAX_VERDICTS:
            _verdicts.clear()
        _verdicts[key] = found
    return found


# (name, name at notation level), (kana, at notation level), (year, month, day), sex,
# (address, at notation level)
_Matchable = tuple[tuple[str, str], tuple[str, str], tuple[int, int, int], int, tuple[str, str]]

_MAX_VERDICTS = 1 << 16
_verdicts: dict[tuple[bytes, bytes], Verdict] = {}  # keyed by content, so never stale


def _matchable(r: Resident) -> _Matchable:
    """The record's fields as registered and at notation level (most insurers
    write a field exactly as registered: then no normalisation is needed)."""
    return (
        (r.name, NAME.notation(r.name)),
        (r.name_kana, KANA.notation(r.name_kana)),
        (r.birth_date.year, r.birth_date.month, r.birth_date.day),
        r.sex,
        (r.address, ADDRESS.notation(r.address)),
    )


@functools.lru_cache(maxsize=1 << 16)  # keyed by the stored bytes, so never stale
def _matchable_stored(raw: bytes) -> _Matchable:
    return _matchable(Resident.FromString(raw))


def _verdict(record: _Matchable, person: qualification_pb2.Person) -> Verdict:
    name, kana_name, birth, sex, addr = record
    reasons: list[Reason] = []
    loose: list[tuple[str, tuple[Rule, ...]]] = []
    _compare(NAME, name, person.name, reasons, loose)
    _compare(KANA, kana_name, person.name_kana, reasons, loose)
    b = person.birth_date
    if (b.year, b.month, b.day) != birth:
        reasons.append(Reason.QUARANTINE_REASON_BIRTH_DATE_MISMATCH)
    if person.sex != sex:
        reasons.append(Reason.QUARANTINE_REASON_SEX_MISMATCH)
    _compare(ADDRESS, addr, person.address, reasons, loose)
    return Verdict(tuple(reasons), tuple(loose))


def _compare(
    field: Field,
    registered: tuple[str, str],
    written: str,
    reasons: list[Reason],
    loose: list[tuple[str, tuple[Rule, ...]]],
) -> None:
    raw, notation = registered
    if written == raw:  # as registered: nothing to normalise
        return
    rules = field.compare(notation, field.notation(written))
    if rules is None:
        reasons.append(field.reason)
    elif rules:
        loose.append((field.name, rules))


@functools.lru_cache(maxsize=1 << 16)  # a resident's updates come in runs
def normalize_resident_id(text: str) -> str | None:
    """11 digits (width and spaces forgiven), or None when malformed."""
    value = kana.strip_notation(text)
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
    as_person = qualification_pb2.Person(
        name=resident.name,
        name_kana=resident.name_kana,
        sex=resident.sex,
        birth_date=resident.birth_date,
        address=resident.address,
    )
    return out + person_violations(as_person, prefix)


def get(wtxn: WriteTxn, resident_id: str) -> Resident | None:
    raw = wtxn.get("registry", resident_id.encode())
    return Resident.FromString(raw) if raw else None


def put(wtxn: WriteTxn, resident: Resident) -> None:
    """Store a record exactly as registered, keyed by its normalised resident ID."""
    record = Resident()
    record.CopyFrom(resident)
    record.resident_id = normalize_resident_id(resident.resident_id) or ""
    if not record.resident_id:
        raise ValueError("resident_id must be 11 digits")
    wtxn.put("registry", record.resident_id.encode(), record.SerializeToString(deterministic=True))
