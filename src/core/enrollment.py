"""Applying insurers' updates to people's histories, inside one WriteTxn.

Every function here runs inside `Writer.apply` (usually many updates per
transaction, see onshi.server.writer_server): it reads and writes only through the
WriteTxn, never has effects outside it, and may be re-run from scratch when the
map grows. Checks come before writes, so an update either applies whole or
leaves nothing but its outcome record.

Order of the checks for one update (DOMAIN.md §4):
  1. idempotency: (insurer, update_id) seen before -> DUPLICATE, same outcome;
  2. an earlier update of this resident from this insurer waits in quarantine ->
     QUARANTINED (held behind it, so updates never apply out of order);
  3. a new registration (seed 004: 「すべての新規登録データ」 — acquisitions,
     dependent additions, basic information changes; card linking too) is
     checked against the registry: resident known, basic information matches
     -> else QUARANTINED. A loss, a dependent removal or an amendment ends or
     changes a qualification already registered: it is matched to that
     qualification instead (the resident's, by insured number; birth date and
     sex as registered with it), not to today's registry, so it takes effect
     after the person moved or married;
  4. the change against the history (a loss needs an open qualification, a
     number may not belong to another person...) -> REJECTED with violations;
  5. applied -> ACCEPTED; notices to other insurers still showing the person insured.

Databases: those store.DATABASES lists as kept by "enrollment" (opened by `open_dbs`).
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TypeVar

from google.protobuf import timestamp_pb2
from google.protobuf.message import Message
from google.type import date_pb2

from ..v1 import enrollment_pb2 as pb
from ..v1 import qualification_pb2 as qpb
from . import dated, dates, history, identifiers, persons, registry, store
from .identifiers import InvalidIdentifier
from .store import link_id_of, link_key
from .writer import Writer, WriteTxn

ACCEPTED = pb.ENROLLMENT_OUTCOME_ACCEPTED
DUPLICATE = pb.ENROLLMENT_OUTCOME_DUPLICATE
REJECTED = pb.ENROLLMENT_OUTCOME_REJECTED
QUARANTINED = pb.ENROLLMENT_OUTCOME_QUARANTINED
DISCARDED = pb.ENROLLMENT_OUTCOME_DISCARDED
HELD_BEHIND = pb.QUARANTINE_REASON_HELD_BEHIND

MAX_UPDATE_ID = 64
BURDEN_RATIOS = (10, 20, 30)
SEP = b"\x1f"

# change kinds that add a qualification / end one / amend one
ADDING = ("acquisition", "dependent_addition")
ENDING = ("loss", "dependent_removal")
AMENDING = ("burden_ratio_change", "certificates_change", "subsidies_change")
REGISTERING = (*ADDING, "basic_information_change")  # checked against the registry

_Entry = TypeVar("_Entry", bound=Message)  # a message kept in an LMDB database


def open_dbs(writer: Writer) -> None:
    for name in store.names("enrollment"):
        writer.open_db(name)


def bulk_load_residents(writer: Writer, residents: Iterable[tuple[int, pb.Resident]]) -> int:
    """For a bulk-loaded store (`onshi gen`): the registry records and resident ->
    link ID rows of its people, so insurers' updates find the same link IDs.
    Needs empty registry/resident_link databases; uses the writer's sorted
    append path, as Writer.bulk_load does."""
    open_dbs(writer)
    records, links = [], []
    for link_id, resident in residents:
        resident_id = registry.normalize_resident_id(resident.resident_id)
        if resident_id is None:
            raise ValueError(f"resident_id must be {registry.RESIDENT_ID_LEN} digits: {resident.resident_id!r}")
        record = pb.Resident()
        record.CopyFrom(resident)
        record.resident_id = resident_id
        records.append((resident_id.encode(), record.SerializeToString(deterministic=True)))
        links.append((resident_id.encode(), link_key(link_id)))
    records.sort()
    links.sort()
    for (a, _), (b, _) in itertools.pairwise(links):
        if a == b:
            raise ValueError(f"resident {a.decode()} appears twice")
    writer._put_sorted("registry", records)
    writer._put_sorted("resident_link", links)
    return len(records)


# --- stateless validation ----------------------------------------------------


@dataclass(slots=True)
class Checked:
    """An update that passed stateless validation, with its normalised keys."""

    update: pb.EnrollmentUpdate
    insurer_number: str
    resident_id: str
    kind: str
    number_key: bytes
    applied_key: bytes
    person_bytes: bytes = b""  # update.person serialized (deterministic), reused by the registry match and the record
    update_id: str = ""


class Invalid(ValueError):
    def __init__(self, violations: list[tuple[str, str]]):
        super().__init__("; ".join(f"{f}: {d}" for f, d in violations))
        self.violations = violations


# Field names for violations, built once (not per update).
_QUALIFICATION_PREFIX = {kind: f"{kind}.qualification" for kind in ADDING}
_ACQUISITION_DATE = {kind: f"{kind}.qualification.acquisition_date" for kind in ADDING}
_RATIO = {kind: f"{kind}.qualification.burden_ratio_percent" for kind in ADDING}
_NUMBER_PREFIX = {kind: f"{kind}.insured_number" for kind in ENDING + AMENDING}
_LOSS_DATE = {kind: f"{kind}.loss_date" for kind in ENDING}


def check_update(update: pb.EnrollmentUpdate, insurers: frozenset[str]) -> Checked:
    """Validate what can be validated without the store; raises Invalid."""
    v: list[tuple[str, str]] = []
    update_id = update.update_id
    if not update_id or len(update_id) > MAX_UPDATE_ID:
        v.append(("update_id", f"required, at most {MAX_UPDATE_ID} characters"))
    insurer = ""
    try:
        insurer = _insurer(update.insurer_number)
    except InvalidIdentifier as exc:
        v.append((exc.field, exc.description))
    else:
        if insurer not in insurers:
            v.append(
                (
                    "insurer_number",
                    "this stream may not write members of this insurer (declared insurers: x-onshi-insurer metadata)",
                )
            )
    resident_id = registry.normalize_resident_id(update.resident_id)
    if resident_id is None:
        v.append(("resident_id", f"must be {registry.RESIDENT_ID_LEN} digits"))
    person = update.person  # one wrapper for every read below (each attribute access builds one)
    person_bytes = b""
    if not update.HasField("person"):
        v.append(("person", "required (basic information for the registry check)"))
    else:
        person_bytes = person.SerializeToString(deterministic=True)
        v.extend(_person_violations(person, person_bytes))
    kind = update.WhichOneof("change") or ""
    number_key = b""
    if not kind:
        v.append(
            (
                "change",
                "one of acquisition, loss, dependent_addition, dependent_removal, "
                "burden_ratio_change, certificates_change, subsidies_change, "
                "basic_information_change is required",
            )
        )
    elif kind in ADDING:
        q = getattr(update, kind).qualification
        prefix = _QUALIFICATION_PREFIX[kind]
        q_insurer = q.insurer_number
        if q_insurer:
            try:
                if _insurer(q_insurer) != insurer:
                    v.append((f"{prefix}.insurer_number", "must be the update's insurer_number"))
            except InvalidIdentifier as exc:
                v.append((f"{prefix}.insurer_number", exc.description))
        number_key = _number_key(insurer, q.symbol, q.number, q.branch, prefix, v)
        _check_date(q.acquisition_date, _ACQUISITION_DATE[kind], v, required=True)
        if q.HasField("loss_date"):
            v.append((f"{prefix}.loss_date", "an acquisition carries no loss; send a loss update"))
        relationship = q.relationship
        if kind == "dependent_addition" and relationship == qpb.RELATIONSHIP_INSURED:
            v.append((f"{prefix}.relationship", "a dependent addition is RELATIONSHIP_DEPENDENT"))
        if kind == "acquisition" and relationship == qpb.RELATIONSHIP_UNSPECIFIED:
            v.append((f"{prefix}.relationship", "required (INSURED or DEPENDENT)"))
        _check_ratio(q.burden_ratio_percent, q.card_kind, _RATIO[kind], v)
        elderly = q.elderly_recipient if q.HasField("elderly_recipient") else None
        limit = q.limit_amount if q.HasField("limit_amount") else None
        diseases = q.specific_diseases
        if elderly is not None or limit is not None or diseases:  # most acquisitions carry none
            _check_certificates(elderly, limit, diseases, prefix, v)
        subsidies = q.subsidies
        if subsidies:
            _check_subsidies(subsidies, f"{prefix}.subsidies", v)
    elif kind != "basic_information_change":
        change = getattr(update, kind)
        n = change.insured_number
        number_key = _number_key(insurer, n.symbol, n.number, n.branch, _NUMBER_PREFIX[kind], v)
        if kind in ENDING:
            _check_date(change.loss_date, _LOSS_DATE[kind], v, required=True)
            if change.loss_reason not in (
                qpb.LOSS_REASON_DEATH,
                qpb.LOSS_REASON_PUBLIC_ASSISTANCE,
                qpb.LOSS_REASON_OTHER_INSURANCE,
                qpb.LOSS_REASON_OTHER,
            ):
                v.append((f"{kind}.loss_reason", "required: DEATH, PUBLIC_ASSISTANCE, OTHER_INSURANCE or OTHER"))
        elif kind == "burden_ratio_change":
            if change.burden_ratio_percent not in BURDEN_RATIOS:
                v.append((f"{kind}.burden_ratio_percent", "must be 10, 20 or 30"))
            _check_date(change.effective_date, f"{kind}.effective_date", v)
        elif kind == "certificates_change":
            _check_certificates(
                change.elderly_recipient if change.HasField("elderly_recipient") else None,
                change.limit_amount if change.HasField("limit_amount") else None,
                change.specific_diseases,
                kind,
                v,
            )
            _check_date(change.effective_date, f"{kind}.effective_date", v)
        elif kind == "subsidies_change":
            _check_subsidies(change.subsidies, f"{kind}.subsidies", v)
            _check_date(change.effective_date, f"{kind}.effective_date", v)
    elif update.basic_information_change.HasField("effective_date"):
        _check_date(update.basic_information_change.effective_date, "basic_information_change.effective_date", v)
    if v:
        raise Invalid(v)
    return Checked(
        update,
        insurer,
        resident_id or "",
        kind,
        number_key,
        insurer.encode() + SEP + update_id.encode(),
        person_bytes,
        update_id,
    )


_MAX_PERSON_VERDICTS = 1 << 16
_person_verdicts: dict[bytes, tuple[tuple[str, str], ...]] = {}  # keyed by content, so never stale


def _person_violations(person: qpb.Person, person_bytes: bytes) -> tuple[tuple[str, str], ...]:
    """registry.person_violations(person, "person"), remembered per serialized
    person: an insurer's updates of one person repeat the same basic information."""
    verdict = _person_verdicts.get(person_bytes)
    if verdict is None:
        verdict = tuple(registry.person_violations(person, "person"))
        if len(_person_verdicts) >= _MAX_PERSON_VERDICTS:
            _person_verdicts.clear()
        _person_verdicts[person_bytes] = verdict
    return verdict


@functools.lru_cache(maxsize=1 << 12)  # a stream repeats its few insurer numbers
def _insurer(text: str) -> str:
    return identifiers.normalize_insurer_number(text)


def _number_key(insurer: str, symbol: str, number: str, branch: str, prefix: str, v: list[tuple[str, str]]) -> bytes:
    if not insurer:
        return b""
    try:
        return identifiers.number_key(insurer, symbol, number, branch)
    except InvalidIdentifier as exc:
        v.append((f"{prefix}.{exc.field}", exc.description))
        return b""


def _check_date(d: date_pb2.Date, field: str, v: list[tuple[str, str]], required: bool = False) -> None:
    year, month, day = d.year, d.month, d.day
    if not required and (year, month, day) == (0, 0, 0):
        return
    try:
        dates.day_of(year, month, day)
    except ValueError:
        v.append((field, "required, a real calendar date" if required else "not a real calendar date"))


def _check_period(cert: dated.Certificate, prefix: str, v: list[tuple[str, str]]) -> None:
    _check_date(cert.valid_from, f"{prefix}.valid_from", v, required=True)
    _check_date(cert.valid_until, f"{prefix}.valid_until", v)
    if cert.HasField("valid_until") and (cert.valid_until.year, cert.valid_until.month, cert.valid_until.day) < (
        cert.valid_from.year,
        cert.valid_from.month,
        cert.valid_from.day,
    ):
        v.append((f"{prefix}.valid_until", "before valid_from"))


def _check_ratio(ratio: int, card_kind: int, field: str, v: list[tuple[str, str]]) -> None:
    # 資格証明書: the patient pays 100 % and claims back.
    allowed = (100,) if card_kind == qpb.CARD_KIND_ELIGIBILITY_CERTIFICATE else BURDEN_RATIOS
    if ratio not in allowed:
        v.append((field, "must be 10, 20 or 30 (100 for an eligibility certificate)"))


def _check_certificates(
    elderly: qpb.ElderlyRecipientCertificate | None,
    limit: qpb.LimitAmountCertificate | None,
    diseases: Iterable[qpb.SpecificDiseaseCertificate],
    prefix: str,
    v: list[tuple[str, str]],
) -> None:
    if elderly is not None:
        if elderly.burden_ratio_percent not in (10, 20, 30):
            v.append((f"{prefix}.elderly_recipient.burden_ratio_percent", "must be 10, 20 or 30"))
        _check_period(elderly, f"{prefix}.elderly_recipient", v)
    if limit is not None:
        if not limit.category.strip():
            v.append((f"{prefix}.limit_amount.category", "required"))
        _check_period(limit, f"{prefix}.limit_amount", v)
    for i, d in enumerate(diseases):
        if d.disease == qpb.SPECIFIC_DISEASE_UNSPECIFIED:
            v.append((f"{prefix}.specific_diseases[{i}].disease", "required"))
        if d.monthly_cap_yen < 0:
            v.append((f"{prefix}.specific_diseases[{i}].monthly_cap_yen", "must not be negative"))
        _check_period(d, f"{prefix}.specific_diseases[{i}]", v)


def _check_subsidies(subsidies: Iterable[qpb.PublicExpenseSubsidy], prefix: str, v: list[tuple[str, str]]) -> None:
    for i, s in enumerate(subsidies):
        f = f"{prefix}[{i}]"
        payer = identifiers._fold(s.payer_number)
        if len(payer) != 8 or not identifiers.has_valid_check_digit(payer):
            v.append((f"{f}.payer_number", "must be 8 digits with a valid check digit"))
        recipient = identifiers._fold(s.recipient_number)
        if len(recipient) != 7 or not recipient.isdigit():
            v.append((f"{f}.recipient_number", "must be 7 digits"))
        if not 0 <= s.burden_ratio_percent <= 30:
            v.append((f"{f}.burden_ratio_percent", "must be 0-30"))
        if s.monthly_cap_yen < 0:
            v.append((f"{f}.monthly_cap_yen", "must not be negative"))
        _check_period(s, f, v)


def rejected_ack(update_id: str, violations: list[tuple[str, str]]) -> pb.EnrollmentAck:
    return pb.EnrollmentAck(
        update_id=update_id,
        outcome=REJECTED,
        field_violations=[pb.FieldViolation(field=f, description=d) for f, d in violations],
        message="; ".join(f"{f}: {d}" for f, d in violations),
    )


# --- applying one update -------------------------------------------------------


def apply_update(wtxn: WriteTxn, checked: Checked, now: float) -> pb.EnrollmentAck:
    """Steps 1-5 of the module docstring for one update; returns its ack."""
    return pb.EnrollmentAck.FromString(apply_update_raw(wtxn, checked, now))


def apply_update_raw(wtxn: WriteTxn, checked: Checked, now: float) -> bytes:
    """`apply_update`, the ack serialized (deterministic): what the stream sends.
    The ingest service takes this one; acks stay bytes until a response message
    is parsed from them in one go (building messages per update costs more)."""
    first = wtxn.get("applied", checked.applied_key)
    if first is not None:
        return duplicate_ack(first).SerializeToString(deterministic=True)
    stored = _Stored(wtxn, checked.resident_id)
    ack = _registry_gate(wtxn, checked, now, stored)
    if ack is None:
        ack = _apply_change(wtxn, checked, now, stored)
    if ack is None and checked.kind in REGISTERING:
        loose = loose_matches(wtxn, checked.resident_id, checked.update.person, checked.person_bytes or None)
        if loose:
            ack = pb.EnrollmentAck(update_id=checked.update_id, outcome=ACCEPTED, loose_matches=loose)
    raw = accepted_ack_bytes(checked.update_id) if ack is None else ack.SerializeToString(deterministic=True)
    wtxn.put("applied", checked.applied_key, raw)
    return raw


_ACCEPTED_FIELD = b"\x10" + bytes((ACCEPTED,))  # EnrollmentAck.outcome (field 2, varint)


def accepted_ack_bytes(update_id: str) -> bytes:
    """EnrollmentAck(update_id=..., outcome=ACCEPTED) serialized, deterministic:
    fields in number order, an empty string omitted (proto3), as upb writes it
    (tests hold the two to the same bytes)."""
    uid = update_id.encode()
    if not uid:
        return _ACCEPTED_FIELD
    return b"\x0a" + history.varint(len(uid)) + uid + _ACCEPTED_FIELD


def frame_acks(acks: list[bytes]) -> bytes:
    """Serialized acks -> a serialized StreamUpdateBatchesResponse (field 1, repeated)."""
    return b"".join([_ACK_FRAME[len(a)] + a if len(a) < 128 else b"\x0a" + history.varint(len(a)) + a for a in acks])


_ACK_FRAME = [b"\x0a" + bytes((n,)) for n in range(128)]  # tag + one-byte length


def duplicate_ack(stored: bytes) -> pb.EnrollmentAck:
    ack = pb.EnrollmentAck.FromString(stored)
    ack.first_outcome = ack.outcome
    ack.outcome = DUPLICATE
    return ack


class _Stored:
    """A resident's link and history rows, read once per update in its
    transaction (the gate and the change both look at them)."""

    __slots__ = ("_read", "birth_day", "link_id", "resident_id", "rows", "wtxn")

    def __init__(self, wtxn: WriteTxn, resident_id: str):
        self.wtxn = wtxn
        self.resident_id = resident_id
        self._read = False

    def get(self) -> tuple[int | None, int | None, list[history.Row]]:
        if not self._read:
            self.link_id = link_of_resident(self.wtxn, self.resident_id)
            self.birth_day, self.rows = self.wtxn.history_rows(self.link_id) if self.link_id is not None else (None, [])
            self._read = True
        return self.link_id, self.birth_day, self.rows


def _registry_gate(
    wtxn: WriteTxn, checked: Checked, now: float, stored: _Stored | None = None
) -> pb.EnrollmentAck | None:
    """QUARANTINED ack if the update may not apply yet, else None."""
    held = wtxn.first("quarantine_held", _held_prefix(checked))
    if held is not None:
        blocker = store.seq_of(held[0][-8:])
        return quarantine(
            wtxn,
            checked.update,
            checked,
            [HELD_BEHIND],
            f"waits behind quarantined update {blocker} of the same resident",
            now,
        )
    reasons, message = gate_reasons(wtxn, checked, checked.update.person, checked.person_bytes or None, stored)
    if reasons:
        return quarantine(wtxn, checked.update, checked, reasons, message, now)
    return None


def gate_reasons(
    wtxn: WriteTxn,
    checked: Checked,
    person: qpb.Person,
    person_bytes: bytes | None = None,
    stored: _Stored | None = None,
) -> tuple[list[pb.QuarantineReason], str]:
    """Why an update may not apply yet: a registration against the registry, a
    change of a registered qualification against that qualification."""
    if checked.kind in REGISTERING:
        return registry_reasons(wtxn, checked.resident_id, person, person_bytes)
    return qualification_reasons(stored or _Stored(wtxn, checked.resident_id), checked, person)


def qualification_reasons(
    stored: _Stored, checked: Checked, person: qpb.Person
) -> tuple[list[pb.QuarantineReason], str]:
    """A loss or an amendment names its qualification by resident and insured
    number; the facts that never change — birth date and sex — must be those
    registered with it (name and address may have moved on since). A number the
    resident does not hold is step 4's rejection, not a mismatch."""
    _, _, rows = stored.get()
    index = _find(rows, checked.number_key, open_only=checked.kind in ENDING)
    if index is None:
        return [], ""
    registered_birth, registered_sex = _birth_and_sex(rows[index].person)
    reasons = []
    if (person.birth_date.year, person.birth_date.month, person.birth_date.day) != registered_birth:
        reasons.append(pb.QUARANTINE_REASON_BIRTH_DATE_MISMATCH)
    if person.sex != registered_sex:
        reasons.append(pb.QUARANTINE_REASON_SEX_MISMATCH)
    if not reasons:
        return [], ""
    names = [
        pb.QuarantineReason.Name(r).removeprefix("QUARANTINE_REASON_").removesuffix("_MISMATCH").lower()
        for r in reasons
    ]
    return reasons, "does not match the qualification it changes: " + ", ".join(names)


@functools.lru_cache(maxsize=1 << 14)  # a stream amends the same persons' rows again and again
def _birth_and_sex(person_bytes: bytes) -> tuple[tuple[int, int, int], int]:
    p = qpb.Person.FromString(person_bytes)
    return (p.birth_date.year, p.birth_date.month, p.birth_date.day), p.sex


def registry_reasons(
    wtxn: WriteTxn, resident_id: str, person: qpb.Person, person_bytes: bytes | None = None
) -> tuple[list[pb.QuarantineReason], str]:
    raw = wtxn.get("registry", resident_id.encode())
    if raw is None:
        return [pb.QUARANTINE_REASON_RESIDENT_UNKNOWN], "resident ID not in the registry"
    reasons = registry.stored_mismatches(raw, person, person_bytes)
    if not reasons:
        return reasons, ""
    names = [
        pb.QuarantineReason.Name(r).removeprefix("QUARANTINE_REASON_").removesuffix("_MISMATCH").lower()
        for r in reasons
    ]
    return reasons, "basic information does not match the registry: " + ", ".join(names)


def loose_matches(
    wtxn: WriteTxn, resident_id: str, person: qpb.Person, person_bytes: bytes | None = None
) -> list[pb.LooseMatch]:
    """The fields that matched the resident's record only by a loose rule (none
    when the person does not match at all): kept in the ACCEPTED ack for the
    insurer's clerk. The verdict is the one registry_reasons just made (cached)."""
    raw = wtxn.get("registry", resident_id.encode())
    if raw is None:
        return []
    verdict = registry.stored_verdict(raw, person, person_bytes)
    return [] if verdict.reasons else verdict.loose_matches()


def _held_prefix(checked: Checked) -> bytes:
    return checked.insurer_number.encode() + SEP + checked.resident_id.encode() + SEP


def _timestamp(now: float) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromNanoseconds(int(now * 1e9))
    return ts


def quarantine(
    wtxn: WriteTxn,
    update: pb.EnrollmentUpdate,
    checked: Checked,
    reasons: list[pb.QuarantineReason],
    message: str,
    now: float,
) -> pb.EnrollmentAck:
    qid = wtxn.next_sequence(b"quarantine")
    entry = pb.QuarantinedUpdate(
        quarantine_id=qid, update=update, reasons=reasons, message=message, received_time=_timestamp(now)
    )
    record = registry.get(wtxn, checked.resident_id)
    if record is not None:
        entry.registry_record.CopyFrom(record)
    wtxn.put("quarantine", store.seq_key(qid), entry.SerializeToString(deterministic=True))
    wtxn.put(
        "quarantine_open", checked.insurer_number.encode() + SEP + store.seq_key(qid), checked.resident_id.encode()
    )
    wtxn.put("quarantine_held", _held_prefix(checked) + store.seq_key(qid), b"")
    return pb.EnrollmentAck(
        update_id=update.update_id, outcome=QUARANTINED, quarantine_id=qid, quarantine_reasons=reasons, message=message
    )


def _own_numbers(checked: Checked) -> bytes:
    """The number-key prefix of the update's insurer: a row's insurer is read
    off its key (identifiers.number_key: normalised insurer first), no decoding."""
    return checked.insurer_number.encode() + SEP


def link_of_resident(wtxn: WriteTxn, resident_id: str) -> int | None:
    raw = wtxn.get("resident_link", resident_id.encode())
    return link_id_of(raw) if raw else None


def _find(rows: list[history.Row], number_key: bytes, open_only: bool) -> int | None:
    """Index of the latest qualification with this number (the open one if asked)."""
    found = None
    for i, row in enumerate(rows):
        if row.number_key != number_key:
            continue
        if open_only and row.loss_day != dates.NEVER:
            continue
        if found is None or row.acquisition_day >= rows[found].acquisition_day:
            found = i
    return found


def _day(d: date_pb2.Date) -> int:
    return dates.proto_day(d)


def apply_day(now: float) -> int:
    """The day (JST) an update is applied: when an undated change takes effect."""
    return int((now + 9 * 3600) // 86400)


def _effective(
    change: pb.BurdenRatioChange | pb.CertificatesChange | pb.SubsidiesChange | pb.BasicInformationChange, now: float
) -> int:
    return _day(change.effective_date) if change.HasField("effective_date") else apply_day(now)


def apply_change(wtxn: WriteTxn, checked: Checked, now: float) -> pb.EnrollmentAck:
    """Step 4-5: the change against the person's history (registry already checked)."""
    ack = _apply_change(wtxn, checked, now, _Stored(wtxn, checked.resident_id))
    return ack if ack is not None else pb.EnrollmentAck(update_id=checked.update_id, outcome=ACCEPTED)


def _apply_change(wtxn: WriteTxn, checked: Checked, now: float, stored: _Stored) -> pb.EnrollmentAck | None:
    """`apply_change`; None when accepted (written), else the REJECTED ack.

    The history stays encoded (history.Row): a qualification is decoded only
    when a rule needs more than its number and days, and only changed ones are
    re-encoded, with the number key already known. Each qualification keeps the
    person its own insurer registered; a registration also moves the person's
    own line of details (persons.py) on."""
    update, kind = checked.update, checked.kind
    link_id, birth_day, rows = stored.get()
    old_keys = {row.number_key for row in rows}  # numbers never change below
    rows = list(rows)
    notices: list[pb.InsurerNotice] = []
    timeline = old_timeline = wtxn.persons(link_id) if link_id is not None and kind in REGISTERING else None
    person_bytes = checked.person_bytes or update.person.SerializeToString(deterministic=True)

    def reject(field: str, description: str) -> pb.EnrollmentAck:
        return rejected_ack(update.update_id, [(field, description)])

    if kind in ADDING:
        source = getattr(update, kind).qualification
        prefix = _QUALIFICATION_PREFIX[kind]
        owner = wtxn.link_of_number(checked.number_key)
        if owner is not None and owner != link_id:
            return reject(f"{prefix}.number", "this insured number belongs to another person")
        new_acq = _day(source.acquisition_date)
        for row in rows:  # a row's loss day is NEVER while open
            if row.number_key == checked.number_key and row.loss_day > new_acq:
                return reject(
                    f"{prefix}.acquisition_date", "this person already holds this insured number on that date"
                )
        if len(rows) >= history.MAX_QUALIFICATIONS:
            return reject(prefix, "too many qualifications for one person")
        q = qpb.Qualification()
        q.CopyFrom(source)
        q.ClearField("person")
        q.insurer_number = checked.insurer_number
        if kind == "dependent_addition":
            q.relationship = qpb.RELATIONSHIP_DEPENDENT
        # Seed 001: another insurer still showing the person insured is told, so
        # it can stop billing premiums (dual enrolment is its call, not ours).
        own = _own_numbers(checked)
        for row in rows:
            if row.loss_day != dates.NEVER or row.number_key.startswith(own):
                continue
            other = history.qualification(row)
            notices.append(
                pb.InsurerNotice(
                    insurer_number=other.insurer_number,
                    insured_number=pb.InsuredNumber(symbol=other.symbol, number=other.number, branch=other.branch),
                    new_insurer_number=checked.insurer_number,
                    new_acquisition_date=source.acquisition_date,
                    created_time=_timestamp(now),
                )
            )
        timeline = persons.add(timeline or [], new_acq, person_bytes)
        birth_day = _day(update.person.birth_date) if birth_day is None else birth_day
        rows.append(history.encode_row(q, person_bytes, birth_day, checked.number_key))
    elif kind == "basic_information_change":
        own = _own_numbers(checked)
        mine = [i for i, row in enumerate(rows) if row.number_key.startswith(own)]
        if not mine:
            return reject("resident_id", "this insurer holds no qualification of this resident")
        today = apply_day(now)
        open_ = [i for i in mine if rows[i].loss_day > today]
        for i in open_ or [max(mine, key=lambda i: rows[i].acquisition_day)]:
            rows[i] = rows[i]._replace(person=person_bytes)
        timeline = persons.add(timeline or [], _effective(update.basic_information_change, now), person_bytes)
    else:
        change = getattr(update, kind)
        index = _find(rows, checked.number_key, open_only=kind in ENDING)
        if index is None:
            what = "no open qualification" if kind in ENDING else "no qualification"
            return reject(f"{kind}.insured_number", f"{what} with this insured number for this resident")
        row = rows[index]
        if kind in ENDING and _day(change.loss_date) <= row.acquisition_day:
            return reject(f"{kind}.loss_date", "must be after the acquisition date")
        # A qualification with nothing dated (most) is changed as a message; the
        # rest through its dated account (onshi.core.dated), which cuts its views.
        plain = history.plain_qualification(row)
        ratio_from_start = kind == "burden_ratio_change" and _effective(change, now) <= row.acquisition_day
        if plain is not None and (kind in ENDING or ratio_from_start):
            changed: qpb.Qualification | dated.Dated = plain
            static = plain
        else:
            changed = history.dated(row)
            static = changed.qualification
        if kind in ENDING:
            if kind == "dependent_removal" and static.relationship != qpb.RELATIONSHIP_DEPENDENT:
                return reject(f"{kind}.insured_number", "not a dependent's qualification (send a loss)")
            static.loss_date.CopyFrom(change.loss_date)
            static.loss_reason = change.loss_reason
        elif isinstance(changed, qpb.Qualification):
            changed.burden_ratio_percent = change.burden_ratio_percent
        elif kind == "burden_ratio_change":
            dated.change_ratio(changed, change.burden_ratio_percent, _effective(change, now))
        elif kind == "certificates_change":
            dated.change_certificates(
                changed,
                change.elderly_recipient if change.HasField("elderly_recipient") else None,
                change.limit_amount if change.HasField("limit_amount") else None,
                change.specific_diseases,
                _effective(change, now),
            )
        elif kind == "subsidies_change":
            dated.change_subsidies(changed, change.subsidies, _effective(change, now))
        # the number and the person never change here
        assert birth_day is not None  # the person has rows, so a stored birth day
        rows[index] = history.encode_row(changed, row.person, birth_day, row.number_key)

    # Accepted: every check passed; now write.
    if link_id is None:
        link_id = wtxn.new_link_id()
        wtxn.put("resident_link", checked.resident_id.encode(), link_key(link_id))
    if timeline is not None and timeline != old_timeline:
        current = persons.current(timeline)
        assert current is not None  # persons.add above: never empty
        birth_day = _day(persons.person(current).birth_date)
        wtxn.put_persons(link_id, timeline, old=old_timeline or [])
    assert birth_day is not None  # an acquisition gives one; any other change needs rows, which have one
    wtxn.put_rows(
        link_id, birth_day, rows, old_keys=old_keys, unowned=checked.number_key if kind in ADDING else None
    )  # its owner was checked above
    for notice in notices:
        notice.notice_id = wtxn.next_sequence(b"notice")
        wtxn.put("notice", store.seq_key(notice.notice_id), notice.SerializeToString(deterministic=True))
        wtxn.put("notice_open", notice.insurer_number.encode() + SEP + store.seq_key(notice.notice_id), b"")
    return None


# --- quarantine resolution ------------------------------------------------------


class Refused(Exception):
    """A request the store state refuses; `code` is the gRPC status code name."""

    def __init__(self, code: str, message: str, violations: list[tuple[str, str]] | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.violations = violations or []


def _checked_of(entry: pb.QuarantinedUpdate, update: pb.EnrollmentUpdate) -> Checked:
    c = check_update(update, frozenset({identifiers.normalize_insurer_number(update.insurer_number)}))
    return c


def _close(wtxn: WriteTxn, entry: pb.QuarantinedUpdate, checked: Checked, ack: pb.EnrollmentAck) -> None:
    qid = store.seq_key(entry.quarantine_id)
    wtxn.delete("quarantine_open", checked.insurer_number.encode() + SEP + qid)
    wtxn.delete("quarantine_held", _held_prefix(checked) + qid)
    wtxn.put("quarantine_done", qid, ack.SerializeToString(deterministic=True))
    wtxn.put("applied", checked.applied_key, ack.SerializeToString(deterministic=True))


def _try_apply(
    wtxn: WriteTxn, entry: pb.QuarantinedUpdate, update: pb.EnrollmentUpdate, now: float
) -> pb.EnrollmentAck:
    """Re-run the registry check and the change for a quarantined update."""
    checked = _checked_of(entry, update)
    reasons, message = gate_reasons(wtxn, checked, update.person)
    if reasons:
        entry.update.CopyFrom(update)
        del entry.reasons[:]
        entry.reasons.extend(reasons)
        entry.message = message
        record = registry.get(wtxn, checked.resident_id)
        entry.ClearField("registry_record")
        if record is not None:
            entry.registry_record.CopyFrom(record)
        wtxn.put("quarantine", store.seq_key(entry.quarantine_id), entry.SerializeToString(deterministic=True))
        return pb.EnrollmentAck(
            update_id=update.update_id,
            outcome=QUARANTINED,
            quarantine_id=entry.quarantine_id,
            quarantine_reasons=reasons,
            message=message,
        )
    ack = apply_change(wtxn, checked, now)
    ack.quarantine_id = entry.quarantine_id
    if ack.outcome == ACCEPTED and checked.kind in REGISTERING:
        ack.loose_matches.extend(loose_matches(wtxn, checked.resident_id, update.person))
    _close(wtxn, entry, checked, ack)
    return ack


def resolve(
    wtxn: WriteTxn, request: pb.ResolveQuarantineRequest, insurers: frozenset[str], now: float
) -> pb.ResolveQuarantineResponse:
    raw = wtxn.get("quarantine", store.seq_key(request.quarantine_id))
    if raw is None:
        raise Refused("NOT_FOUND", f"no quarantined update {request.quarantine_id}")
    entry = pb.QuarantinedUpdate.FromString(raw)
    checked = _checked_of(entry, entry.update)
    if checked.insurer_number not in insurers:
        raise Refused("PERMISSION_DENIED", "the quarantined update belongs to another insurer")
    if wtxn.get("quarantine_done", store.seq_key(entry.quarantine_id)) is not None:
        raise Refused("FAILED_PRECONDITION", f"quarantined update {entry.quarantine_id} is already resolved")
    first_held = next(wtxn.scan("quarantine_held", _held_prefix(checked)))
    if store.seq_of(first_held[0][-8:]) != entry.quarantine_id:
        raise Refused(
            "FAILED_PRECONDITION",
            f"resolve quarantined update {store.seq_of(first_held[0][-8:])} of this resident first",
        )
    response = pb.ResolveQuarantineResponse()
    if request.resolution == pb.RESOLUTION_DISCARD:
        ack = pb.EnrollmentAck(
            update_id=entry.update.update_id,
            outcome=DISCARDED,
            quarantine_id=entry.quarantine_id,
            message=request.reason.strip(),
        )
        _close(wtxn, entry, checked, ack)
    else:
        update = pb.EnrollmentUpdate()
        update.CopyFrom(entry.update)
        if request.HasField("corrected_person"):
            update.person.CopyFrom(request.corrected_person)
        ack = _try_apply(wtxn, entry, update, now)
    response.ack.CopyFrom(ack)
    if ack.outcome == QUARANTINED:
        return response
    # Release what waited behind it, in order, until one still does not match.
    for key, _ in list(wtxn.scan("quarantine_held", _held_prefix(checked))):
        waiting = pb.QuarantinedUpdate.FromString(_indexed(wtxn, "quarantine", key[-8:]))
        released = _try_apply(wtxn, waiting, waiting.update, now)
        if released.outcome == QUARANTINED:
            break
        response.released.append(released)
    return response


def _indexed(wtxn: WriteTxn, db: str, key: bytes) -> bytes:
    """The record an index entry points at (its absence is a corrupt store)."""
    raw = wtxn.get(db, key)
    if raw is None:
        raise ValueError(f"{db} {store.seq_of(key)} is indexed but not stored (corrupt store)")
    return raw


def _open_entries(
    wtxn: WriteTxn, index: str, db: str, message: type[_Entry], insurers: list[str], after: int
) -> list[_Entry]:
    """The insurers' open entries numbered after `after`, from index `index`
    (insurer SEP seq) into `db` (seq -> message); quarantine and notices alike."""
    out = []
    for insurer in sorted(insurers):
        prefix = insurer.encode() + SEP
        for key, _ in wtxn.scan(index, prefix, prefix + store.seq_key(after + 1)):
            out.append(message.FromString(_indexed(wtxn, db, key[-8:])))
    return out


def list_quarantine(wtxn: WriteTxn, insurers: list[str], after: int, limit: int) -> list[pb.QuarantinedUpdate]:
    """Open entries, each with the registry record as it is now (not as it was
    when the update was held: applying with a stale record would fail again)."""
    out = _open_entries(wtxn, "quarantine_open", "quarantine", pb.QuarantinedUpdate, insurers, after)
    out.sort(key=lambda e: e.quarantine_id)
    out = out[:limit]
    for entry in out:
        entry.ClearField("registry_record")
        resident_id = registry.normalize_resident_id(entry.update.resident_id)
        record = registry.get(wtxn, resident_id) if resident_id else None
        if record is not None:
            entry.registry_record.CopyFrom(record)
    return out


# --- notices to insurers ----------------------------------------------------------


def list_notices(wtxn: WriteTxn, insurers: list[str], after: int, limit: int) -> list[pb.InsurerNotice]:
    out = _open_entries(wtxn, "notice_open", "notice", pb.InsurerNotice, insurers, after)
    out.sort(key=lambda n: n.notice_id)
    return out[:limit]


def acknowledge_notices(wtxn: WriteTxn, notice_ids: list[int], insurers: frozenset[str]) -> int:
    """Close the caller's own notices; others' IDs are ignored (not even confirmed)."""
    done = 0
    for notice_id in notice_ids:
        raw = wtxn.get("notice", store.seq_key(notice_id))
        if raw is None:
            continue
        notice = pb.InsurerNotice.FromString(raw)
        if notice.insurer_number in insurers and wtxn.delete(
            "notice_open", notice.insurer_number.encode() + SEP + store.seq_key(notice_id)
        ):
            done += 1
    return done


# --- initial linking (初回紐づけ) ---------------------------------------------------


def link_card(wtxn: WriteTxn, request: pb.LinkCardRequest, now: float) -> pb.LinkCardResponse:
    """Link a card serial to the person holding the insured number. Raises Refused."""
    v: list[tuple[str, str]] = []
    resident_id = registry.normalize_resident_id(request.resident_id)
    if resident_id is None:
        v.append(("resident_id", f"must be {registry.RESIDENT_ID_LEN} digits"))
    serial_key = b""
    try:
        serial_key = identifiers.card_serial_key(request.card_serial)
    except InvalidIdentifier as exc:
        v.append((exc.field, exc.description))
    number_key = b""
    n = request.insured_number
    try:
        number_key = identifiers.number_key(request.insurer_number, n.symbol, n.number, n.branch)
    except InvalidIdentifier as exc:
        field = exc.field if exc.field == "insurer_number" else f"insured_number.{exc.field}"
        v.append((field, exc.description))
    if not request.HasField("person"):
        v.append(("person", "required"))
    else:
        v.extend(registry.person_violations(request.person, "person"))
    if not request.consent:
        v.append(("consent", "the person's consent is required"))
    if v or resident_id is None:
        raise Refused("INVALID_ARGUMENT", "invalid link request", v)
    reasons, message = registry_reasons(wtxn, resident_id, request.person)
    if reasons:
        raise Refused("FAILED_PRECONDITION", message)
    link_id = link_of_resident(wtxn, resident_id)
    if link_id is None or wtxn.link_of_number(number_key) != link_id:
        # Same answer whether the number is unknown or someone else's: no probing.
        raise Refused("FAILED_PRECONDITION", "this insured number is not registered for this resident")
    owner = wtxn.link_of_card(serial_key)
    if owner is not None and owner != link_id:
        raise Refused("ALREADY_EXISTS", "this card serial is linked to another person")
    replaced = wtxn.link_card(serial_key, link_id)
    notice_id = wtxn.next_sequence(b"link_notice")
    stamp = _timestamp(now)
    notice = pb.LinkNotice(
        link_notice_id=notice_id,
        resident_id=resident_id,
        card_serial=identifiers.card_serial_text(serial_key),
        insurer_number=identifiers.normalize_insurer_number(request.insurer_number),
        insured_number=request.insured_number,
        linked_time=stamp,
        consent_time=stamp,
    )
    wtxn.put(
        "link_notice",
        resident_id.encode() + SEP + store.seq_key(notice_id),
        notice.SerializeToString(deterministic=True),
    )
    return pb.LinkCardResponse(
        link_notice_id=notice_id,
        replaced_card_serial=identifiers.card_serial_text(replaced) if replaced else "",
        loose_matches=loose_matches(wtxn, resident_id, request.person),
    )


def list_link_notices(wtxn: WriteTxn, resident_id: str) -> list[pb.LinkNotice]:
    prefix = resident_id.encode() + SEP
    return [pb.LinkNotice.FromString(v) for _, v in wtxn.scan("link_notice", prefix)]
