"""The history record: one LMDB value per link ID, laid out so an engine can pick
the qualifications for `as_of` from fixed-size headers and answer by copying
pre-serialized bytes, never decoding protobuf on the hot path.

    header   <HHi      version, entry count, birth day of the person
    entries  <iiQIIii  acquisition day, loss day (NEVER if not lost),
                       FNV-1a 64 of the entry's number key, payload offset,
                       payload length, view first day, view end day
    payloads           each a framed CheckResponse field 2 (tag 0x12, varint
                       length, serialized Qualification), so a response is
                       b"\\x08" + validity + the chosen payloads concatenated.

An entry is one *view* of a qualification: the qualification as shown on the
days [view first day, view end day) of its coverage (onshi.core.dated: ratio,
preschool, certificates in force). A qualification whose content never changes
has one view covering [acquisition, loss). The views of one qualification are
consecutive entries, in day order. Each payload carries the person as that
qualification's own insurer registered them.

Entries are sorted by (acquisition day, loss day, number hash, view first
day), so the views of a qualification are consecutive. A check on
day d looks, for each qualification, at the one view *shown* on d: the view
holding d, or for a qualification lost by d the view of its last covered day.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import NamedTuple

from ..v1 import eligibility_pb2, qualification_pb2
from . import dated as dated_parts
from . import dates, identifiers, twins

VERSION = 2
HEADER = struct.Struct("<HHi")
ENTRY = struct.Struct("<iiQIIii")
# The header and the first entry's acquisition and loss days, in one unpack: how
# the claims' fast path reads a record of one qualification.
HEADER_AND_FIRST_DAYS = struct.Struct("<HHiii")
MAX_ENTRIES = 1024  # views per person; keeps engine buffers fixed-size
MAX_QUALIFICATIONS = 255  # far above any real person

VALID = eligibility_pb2.VALIDITY_VALID
INVALID = eligibility_pb2.VALIDITY_INVALID
INVALID_NEWER_EXISTS = eligibility_pb2.VALIDITY_INVALID_NEWER_EXISTS
NO_RECORD = eligibility_pb2.VALIDITY_NO_RECORD
MULTIPLE = eligibility_pb2.VALIDITY_MULTIPLE

QUALIFICATION_TAG = b"\x12"  # CheckResponse.qualifications, wire type 2
PERSON_TAG = b"\x0a"  # Qualification.person: field 1, wire type 2


@dataclass(frozen=True, slots=True)
class Entry:
    acquisition_day: int
    loss_day: int
    number_hash: int
    payload: bytes  # framed, ready to append to a CheckResponse
    view_from: int
    view_until: int


def shown(e: Entry, day: int) -> bool:
    """Is `e` the view of its qualification a check on `day` looks at? (The view
    holding the day, or for a qualification lost by then its last view.)"""
    d = day if day < e.loss_day else e.loss_day - 1
    return e.view_from <= d < e.view_until


def varint(n: int) -> bytes:
    """Protobuf's varint of n >= 0 (the payloads' framing)."""
    if 0 <= n < 0x80:
        return _ONE_BYTE[n]  # most lengths here: a person, an ack
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


_ONE_BYTE = [bytes((n,)) for n in range(0x80)]


def qualification_number_key(q: qualification_pb2.Qualification) -> bytes:
    return identifiers.number_key(q.insurer_number, q.symbol, q.number, q.branch)


# --- the writer's side: rows kept encoded ------------------------------------------
#
# A payload is the Qualification with its person set, serialized; upb writes
# fields in number order, so that is the person field (1) followed by the
# qualification's other fields (the "body"). The writer splits records into
# persons and bodies and joins them back, so an update decodes and re-encodes
# only the qualification it changes. `compile_history_reference` and
# `decode_reference` build and read records the obvious way; tests hold the two
# ways to the same bytes and messages. The byte work has a native twin
# (onshi.ext._record) with the same interface as the pure functions below.


class View(NamedTuple):
    first_day: int
    end_day: int
    body: bytes  # the serialized Qualification without its person, as shown on these days


class Row(NamedTuple):
    """One encoded qualification of a record, reusable while it is unchanged."""

    acquisition_day: int
    loss_day: int
    number_hash: int
    number_key: bytes
    person: bytes  # its own Person, serialized: what its insurer registered
    views: tuple[View, ...]


def read_varint(buf: bytes, i: int, end: int | None = None) -> tuple[int, int]:
    """(value, index after it) of the varint at buf[i]; it must end before `end`."""
    if end is None:
        end = len(buf)
    value = shift = 0
    while i < end and shift < 64:  # at most 10 bytes, as protobuf
        b = buf[i]
        i += 1
        if b < 0x80:
            return value | (b << shift), i
        value |= (b & 0x7F) << shift
        shift += 7
    raise ValueError("corrupt varint")


def split_record_pure(value: bytes) -> tuple[int, list[tuple[int, int, int, int, int, bytes, bytes]]]:
    """(birth day, [(acquisition day, loss day, number hash, view first day,
    view end day, person bytes, body)] in stored order) of a history record."""
    if len(value) < HEADER.size:
        raise ValueError("corrupt history record")
    version, count, birth_day = HEADER.unpack_from(value, 0)
    if version != VERSION:
        raise ValueError(f"history record version {version} not supported")
    if HEADER.size + count * ENTRY.size > len(value):
        raise ValueError("corrupt history record")
    out = []
    for acq, loss, nhash, off, length, first, end_day in ENTRY.iter_unpack(
        value[HEADER.size : HEADER.size + count * ENTRY.size]
    ):
        end = off + length
        if length == 0 or end > len(value) or value[off] != QUALIFICATION_TAG[0]:
            raise ValueError("corrupt history record")
        _, start = read_varint(value, off + 1, end)  # the payload length
        person = b""
        if start < end and value[start] == PERSON_TAG[0]:
            size, at = read_varint(value, start + 1, end)
            if at + size > end:
                raise ValueError("corrupt history record")
            person = value[at : at + size]
            start = at + size
        out.append((acq, loss, nhash, first, end_day, person, value[start:end]))
    return birth_day, out


def number_fields_pure(body: bytes) -> tuple[str, str, str, str]:
    """insurer_number, symbol, number, branch (fields 2, 4, 5, 6) of a
    serialized Qualification, read straight off the wire (the last one wins)."""
    found = {2: b"", 4: b"", 5: b"", 6: b""}
    i, n = 0, len(body)
    while i < n:
        tag, i = read_varint(body, i)
        field, wire = tag >> 3, tag & 7
        if wire == 0:
            _, i = read_varint(body, i)
        elif wire == 2:
            size, i = read_varint(body, i)
            if i + size > n:
                raise ValueError("corrupt qualification")
            if field in found:
                found[field] = body[i : i + size]
            i += size
        elif wire == 1:
            i += 8
        elif wire == 5:
            i += 4
        else:
            raise ValueError("corrupt qualification")
    if i != n:
        raise ValueError("corrupt qualification")
    return found[2].decode(), found[4].decode(), found[5].decode(), found[6].decode()


def join_record_pure(birth_day: int, entries: list[tuple[int, int, int, int, int, bytes, bytes]]) -> bytes:
    """The record for entries already in order, each (acquisition day, loss day,
    number hash, view first day, view end day, person field, body): header,
    entries, payloads. A person field is PERSON_TAG + varint length + person."""
    offset = HEADER.size + ENTRY.size * len(entries)
    head = [HEADER.pack(VERSION, len(entries), birth_day)]
    payloads = []
    for acq, loss, nhash, first, end, person_field, body in entries:
        size = len(person_field) + len(body)
        payload = QUALIFICATION_TAG + varint(size) + person_field + body
        head.append(ENTRY.pack(acq, loss, nhash, offset, len(payload), first, end))
        offset += len(payload)
        payloads.append(payload)
    return b"".join(head) + b"".join(payloads)


# (acquisition day, loss day, number hash, view first day, view end day, person field, body)
RecordEntry = tuple[int, int, int, int, int, bytes, bytes]
Codec = tuple[
    Callable[[bytes], tuple[int, list[RecordEntry]]],  # split_record
    Callable[[bytes], tuple[str, str, str, str]],  # number_fields
    Callable[[int, list[RecordEntry]], bytes],  # join_record
    Callable[[bytes], int],
]  # number_hash


def codec(kind: str | None = None) -> Codec:
    """(split_record, number_fields, join_record, number_hash): the native twins
    (onshi.ext._record) or the pure ones above, as `kind` or ONSHI_ENGINE says (twins.load)."""
    native = twins.load("_record", kind)
    if native is None:
        return split_record_pure, number_fields_pure, join_record_pure, identifiers.number_hash
    return native.split_record, native.number_fields, native.join_record, native.number_hash


split_record, number_fields, join_record, number_hash = codec()  # chosen once, at import


def decode_rows(value: bytes) -> tuple[int, list[Row]]:
    """(birth day, rows) of a record; no qualification is decoded."""
    birth_day, entries = split_record(value)
    rows: list[Row] = []
    known = _body_keys.get
    last = None
    for acq, loss, nhash, first, end, person, body in entries:
        if last is not None and last.acquisition_day == acq and last.loss_day == loss and last.number_hash == nhash:
            last = rows[-1] = last._replace(views=(*last.views, View(first, end, body)))
            continue
        last = Row(acq, loss, nhash, known(body) or _body_key(body), person, (View(first, end, body),))
        rows.append(last)
    return birth_day, rows


_MAX_BODY_KEYS = 1 << 16
_body_keys: dict[bytes, bytes] = {}  # body -> number key; keyed by content, so never stale


def _body_key(body: bytes) -> bytes:
    """The number key of a qualification body, remembered: a person's unchanged
    qualifications come back with every update of that person."""
    key = identifiers.number_key(*number_fields(body))
    _remember_body_key(body, key)
    return key


def _remember_body_key(body: bytes, key: bytes) -> None:
    if len(_body_keys) >= _MAX_BODY_KEYS:
        _body_keys.clear()
    _body_keys[body] = key


def qualification(row: Row) -> qualification_pb2.Qualification:
    """The qualification of a row as its first view shows it (without person):
    for its numbers, insurer and dates."""
    return qualification_pb2.Qualification.FromString(row.views[0].body)


def dated(row: Row) -> dated_parts.Dated:
    """Everything the row's views show, to change and encode again."""
    return dated_parts.dated_of([(v.first_day, qualification_pb2.Qualification.FromString(v.body)) for v in row.views])


def plain_qualification(row: Row) -> qualification_pb2.Qualification | None:
    """The qualification of a row with nothing dated (one view, no ratio change,
    certificate, subsidy or preschool status), decoded; else None."""
    if len(row.views) != 1:
        return None
    q = qualification_pb2.Qualification.FromString(row.views[0].body)
    if (
        q.preschool
        or q.HasField("elderly_recipient")
        or q.HasField("limit_amount")
        or len(q.specific_diseases)
        or len(q.subsidies)
    ):
        return None
    return q


def person_of(row: Row) -> qualification_pb2.Person:
    return qualification_pb2.Person.FromString(row.person)


def encode_row(
    q: dated_parts.Dated | qualification_pb2.Qualification,
    person: bytes,
    birth_day: int,
    number_key: bytes | None = None,
) -> Row:
    """The Row of a qualification (a Qualification as registered, or its Dated
    account) with its own person (serialized, deterministic); `number_key`, if
    the caller has it, must be the qualification's (the writer knows it)."""
    views: tuple[View, ...]
    # Most qualifications have no dated part: one view, one serialization.
    if isinstance(q, qualification_pb2.Qualification) and (plain := _plain_body(q)) is not None:
        acq = dates.proto_day(q.acquisition_date)
        loss = dates.proto_day(q.loss_date) if q.HasField("loss_date") else dates.NEVER
        key = qualification_number_key(q) if number_key is None else number_key
        views = (View(acq, loss, plain),)
    else:
        d = q if isinstance(q, dated_parts.Dated) else dated_parts.of_qualification(q)
        key = qualification_number_key(d.qualification) if number_key is None else number_key
        acq, loss = d.acquisition_day, d.loss_day
        views = tuple(View(*v) for v in dated_parts.views(d, birth_day)) if loss > acq else ()
    if loss <= acq:
        raise ValueError("loss_date must be after acquisition_date")
    _remember_body_key(views[0].body, key)  # the next update of this person reads it back
    return Row(acq, loss, number_hash(key), key, person, views)


def _plain_body(q: qualification_pb2.Qualification) -> bytes | None:
    """The one view's body of a qualification without dated parts (what
    dated.views gives it, serialized once), else None."""
    if (
        q.preschool
        or q.HasField("elderly_recipient")
        or q.HasField("limit_amount")
        or len(q.specific_diseases)
        or len(q.subsidies)
    ):
        return None
    if q.HasField("person") or q.HasField("preschool_until"):
        out = qualification_pb2.Qualification()
        out.CopyFrom(q)
        out.ClearField("person")
        out.ClearField("preschool_until")
        q = out
    return q.SerializeToString(deterministic=True)


def person_field(person: bytes) -> bytes:
    return PERSON_TAG + varint(len(person)) + person


def compile_history(birth_day: int, rows: list[Row]) -> tuple[bytes, list[bytes]]:
    """The record of a person's rows; returns (value, number keys it indexes)."""
    if len(rows) > MAX_QUALIFICATIONS:
        raise ValueError(f"at most {MAX_QUALIFICATIONS} qualifications per person")
    ordered = sorted(rows, key=lambda r: (r.acquisition_day, r.loss_day, r.number_hash))
    entries = []
    fields: dict[bytes, bytes] = {}
    for r in ordered:
        pf = fields.get(r.person)
        if pf is None:
            pf = fields[r.person] = person_field(r.person)
        for v in r.views:
            entries.append((r.acquisition_day, r.loss_day, r.number_hash, v.first_day, v.end_day, pf, v.body))
    if len(entries) > MAX_ENTRIES:
        raise ValueError(f"at most {MAX_ENTRIES} dated views per person")
    return join_record(birth_day, entries), [r.number_key for r in rows]


def rows_of(person: qualification_pb2.Person, qualifications: list[qualification_pb2.Qualification]) -> list[Row]:
    """Rows of qualifications that all show `person` (a bulk load, a test)."""
    person_bytes = person.SerializeToString(deterministic=True)
    birth_day = dates.proto_day(person.birth_date)
    return [encode_row(q, person_bytes, birth_day) for q in qualifications]


def compile_history_reference(
    persons: list[qualification_pb2.Person], qualifications: list[qualification_pb2.Qualification], birth_day: int
) -> tuple[bytes, list[bytes]]:
    """The record built the obvious way (each view a copy with its person set,
    serialized whole): the oracle `compile_history` is tested against.
    persons[i] is qualification i's own person."""
    if len(qualifications) > MAX_QUALIFICATIONS:
        raise ValueError(f"at most {MAX_QUALIFICATIONS} qualifications per person")
    rows = []
    keys = []
    for person, q in zip(persons, qualifications, strict=True):
        key = qualification_number_key(q)
        d = dated_parts.of_qualification(q)
        acq, loss = d.acquisition_day, d.loss_day
        if loss <= acq:
            raise ValueError("loss_date must be after acquisition_date")
        for first, end, body in dated_parts.views(d, birth_day):
            shown_q = qualification_pb2.Qualification.FromString(body)
            shown_q.person.CopyFrom(person)
            payload = shown_q.SerializeToString(deterministic=True)
            rows.append(
                (
                    acq,
                    loss,
                    identifiers.number_hash(key),
                    first,
                    end,
                    QUALIFICATION_TAG + varint(len(payload)) + payload,
                )
            )
        keys.append(key)
    rows.sort(key=lambda r: r[:4])
    offset = HEADER.size + ENTRY.size * len(rows)
    head = [HEADER.pack(VERSION, len(rows), birth_day)]
    for acq, loss, nhash, first, end, payload in rows:
        head.append(ENTRY.pack(acq, loss, nhash, offset, len(payload), first, end))
        offset += len(payload)
    return b"".join(head) + b"".join(r[5] for r in rows), keys


def parse_history(value: bytes | memoryview) -> tuple[int, list[Entry]]:
    version, count, birth_day = HEADER.unpack_from(value, 0)
    if version != VERSION:
        raise ValueError(f"history record version {version} not supported")
    entries = []
    for i in range(count):
        acq, loss, nhash, off, length, first, end = ENTRY.unpack_from(value, HEADER.size + i * ENTRY.size)
        entries.append(Entry(acq, loss, nhash, bytes(value[off : off + length]), first, end))
    return birth_day, entries


def unframe(payload: bytes) -> qualification_pb2.Qualification:
    _, start = read_varint(payload, 1)  # after the tag, the varint length
    return qualification_pb2.Qualification.FromString(payload[start:])


def qualifications(value: bytes | memoryview) -> list[tuple[qualification_pb2.Person, qualification_pb2.Qualification]]:
    """Each qualification with its own person, as its first view shows it (a
    reader's view: numbers, insurer, dates)."""
    _, rows = decode_rows(bytes(value))
    return [(person_of(r), qualification(r)) for r in rows]


def qualifications_reference(
    value: bytes | memoryview,
) -> list[tuple[qualification_pb2.Person, qualification_pb2.Qualification]]:
    """`qualifications` the obvious way (parse whole payloads, move the person out): its oracle."""
    _, entries = parse_history(value)
    out = []
    seen = set()
    for e in entries:
        key = (e.acquisition_day, e.loss_day, e.number_hash)
        if key in seen:
            continue
        seen.add(key)
        q = unframe(e.payload)
        person = qualification_pb2.Person()
        person.CopyFrom(q.person)
        q.ClearField("person")
        out.append((person, q))
    return out


def response(validity: int, payloads: Iterable[bytes] = ()) -> bytes:
    return b"\x08" + bytes((validity,)) + b"".join(payloads)


# --- the decision rules of DOMAIN.md §3, over headers only -----------------


def choose_by_card(entries: list[Entry], day: int) -> tuple[int, list[int]]:
    """Card: every qualification covering `day`; else the latest begun, lost."""
    started = [i for i, e in enumerate(entries) if e.acquisition_day <= day and shown(e, day)]
    valid = [i for i in started if day < entries[i].loss_day]
    if len(valid) == 1:
        return VALID, valid
    if valid:
        return MULTIPLE, valid
    if not started:
        return NO_RECORD, []
    return INVALID, [started[-1]]


def choose_by_number(
    entries: list[Entry], birth_day: int, number_hash: int, claimed_birth_day: int, day: int
) -> tuple[int, list[int]]:
    """Typed number: only the presented number's qualification is ever shown."""
    if birth_day != claimed_birth_day:
        return NO_RECORD, []
    started = [
        i for i, e in enumerate(entries) if e.number_hash == number_hash and e.acquisition_day <= day and shown(e, day)
    ]
    valid = [i for i in started if day < entries[i].loss_day]
    if len(valid) == 1:
        return VALID, valid
    if valid:
        return MULTIPLE, valid
    if not started:
        return NO_RECORD, []
    latest = started[-1]
    newer = any(e.acquisition_day > entries[latest].acquisition_day for e in entries)
    return (INVALID_NEWER_EXISTS if newer else INVALID), [latest]
