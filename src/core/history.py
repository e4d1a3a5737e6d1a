"""The history record: one LMDB value per link ID, laid out so an engine can pick
the qualifications for `as_of` from fixed-size headers and answer by copying
pre-serialized bytes, never decoding protobuf on the hot path.

    header   <HHi   version, entry count, birth day of the person
    entries  <iiQII acquisition day, loss day (NEVER if not lost),
                    FNV-1a 64 of the entry's number key, payload offset, payload length
    payloads        each a framed CheckResponse field 2 (tag 0x12, varint length,
                    serialized Qualification), so a response is b"\\x08" + validity
                    + the chosen payloads concatenated.

Entries are sorted by (acquisition day, loss day): the last entry begun on or
before a day is the latest qualification as of that day.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from typing import NamedTuple

from onshi.core import dates, identifiers
from onshi.v1 import eligibility_pb2, qualification_pb2

VERSION = 1
HEADER = struct.Struct("<HHi")
ENTRY = struct.Struct("<iiQII")
MAX_ENTRIES = 255  # far above any real person; keeps engine buffers fixed-size

VALID = eligibility_pb2.VALIDITY_VALID
INVALID = eligibility_pb2.VALIDITY_INVALID
INVALID_NEWER_EXISTS = eligibility_pb2.VALIDITY_INVALID_NEWER_EXISTS
NO_RECORD = eligibility_pb2.VALIDITY_NO_RECORD
MULTIPLE = eligibility_pb2.VALIDITY_MULTIPLE

QUALIFICATION_TAG = b"\x12"  # CheckResponse.qualifications, wire type 2


@dataclass(frozen=True, slots=True)
class Entry:
    acquisition_day: int
    loss_day: int
    number_hash: int
    payload: bytes  # framed, ready to append to a CheckResponse


def varint(n: int) -> bytes:
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


def _loss_day(q: qualification_pb2.Qualification) -> int:
    return dates.proto_day(q.loss_date) if q.HasField("loss_date") else dates.NEVER


# --- the writer's side: rows kept encoded ------------------------------------------
#
# A payload is the Qualification with the person set, serialized; upb writes
# fields in number order, so that is the person field (1) followed by the
# qualification's other fields (the "body"). The writer splits records into
# person bytes and bodies and joins them back, so an update decodes and
# re-encodes only the qualification it changes. `compile_history_reference` and
# `decode_reference` build and read records the obvious way; tests hold the two
# ways to the same bytes and messages. The byte work has a native twin
# (onshi.ext._apply) with the same interface as the pure functions below.

PERSON_TAG = b"\x0a"  # Qualification.person: field 1, wire type 2


class Row(NamedTuple):
    """One encoded qualification of a record, reusable while it is unchanged."""
    acquisition_day: int
    loss_day: int
    number_hash: int
    number_key: bytes
    body: bytes  # the serialized Qualification without its person


def _read_varint(buf: bytes, i: int, end: int | None = None) -> tuple[int, int]:
    """(value, index after it) of the varint at buf[i]; it must end before `end`."""
    end = len(buf) if end is None else end
    value = shift = 0
    while True:
        if i >= end or shift >= 64:  # at most 10 bytes, as protobuf
            raise ValueError("corrupt varint")
        b = buf[i]
        value |= (b & 0x7F) << shift
        i += 1
        if not b & 0x80:
            return value, i
        shift += 7


def split_record_pure(value: bytes) -> tuple[bytes, list[tuple[int, int, int, bytes]]]:
    """(person bytes of the first entry, [(acquisition day, loss day, number hash,
    body)] in stored order) of a history record."""
    if len(value) < HEADER.size:
        raise ValueError("corrupt history record")
    version, count, _ = HEADER.unpack_from(value, 0)
    if version != VERSION:
        raise ValueError(f"history record version {version} not supported")
    if HEADER.size + count * ENTRY.size > len(value):
        raise ValueError("corrupt history record")
    person = b""
    out = []
    for i, (acq, loss, nhash, off, length) in enumerate(
            ENTRY.iter_unpack(value[HEADER.size:HEADER.size + count * ENTRY.size])):
        end = off + length
        if length == 0 or end > len(value) or value[off] != QUALIFICATION_TAG[0]:
            raise ValueError("corrupt history record")
        _, start = _read_varint(value, off + 1, end)  # the payload length
        if start < end and value[start] == PERSON_TAG[0]:
            size, at = _read_varint(value, start + 1, end)
            if at + size > end:
                raise ValueError("corrupt history record")
            if i == 0:
                person = value[at:at + size]
            start = at + size
        out.append((acq, loss, nhash, value[start:end]))
    return person, out


def number_fields_pure(body: bytes) -> tuple[str, str, str, str]:
    """insurer_number, symbol, number, branch (fields 2, 4, 5, 6) of a
    serialized Qualification, read straight off the wire (the last one wins)."""
    found = {2: b"", 4: b"", 5: b"", 6: b""}
    i, n = 0, len(body)
    while i < n:
        tag, i = _read_varint(body, i)
        field, wire = tag >> 3, tag & 7
        if wire == 0:
            _, i = _read_varint(body, i)
        elif wire == 2:
            size, i = _read_varint(body, i)
            if i + size > n:
                raise ValueError("corrupt qualification")
            if field in found:
                found[field] = body[i:i + size]
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


def join_record_pure(birth_day: int, person_field: bytes, rows: list[tuple[int, int, int, bytes]]) -> bytes:
    """The record for rows already in entry order: header, entries, payloads."""
    offset = HEADER.size + ENTRY.size * len(rows)
    head = [HEADER.pack(VERSION, len(rows), birth_day)]
    payloads = []
    for acq, loss, nhash, body in rows:
        size = len(person_field) + len(body)
        payload = QUALIFICATION_TAG + varint(size) + person_field + body
        head.append(ENTRY.pack(acq, loss, nhash, offset, len(payload)))
        offset += len(payload)
        payloads.append(payload)
    return b"".join(head) + b"".join(payloads)


_PURE = (split_record_pure, number_fields_pure, join_record_pure, identifiers.number_hash)
if os.environ.get("ONSHI_PURE_APPLY") == "1":  # the reference, e.g. to compare
    split_record, number_fields, join_record, number_hash = _PURE
else:
    try:
        from onshi.ext._apply import join_record, number_fields, number_hash, split_record
    except ImportError:  # not built: the pure twins
        split_record, number_fields, join_record, number_hash = _PURE


def decode_rows(value: bytes) -> tuple[bytes | None, list[Row]]:
    """(stored person bytes, rows) of a record; no qualification is decoded."""
    person, entries = split_record(value)
    known = _body_keys.get
    rows = [Row(acq, loss, nhash, known(body) or _body_key(body), body) for acq, loss, nhash, body in entries]
    return (person if rows else None), rows


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
    """The qualification of a row (without its person)."""
    return qualification_pb2.Qualification.FromString(row.body)


def encode_row(q: qualification_pb2.Qualification, number_key: bytes | None = None) -> Row:
    """The Row of a qualification; `number_key`, if the caller has it, must be
    qualification_number_key(q) (the writer knows it from the update or the row)."""
    if q.HasField("person"):
        q = _without_person(q)
    key = qualification_number_key(q) if number_key is None else number_key
    acq = dates.proto_day(q.acquisition_date)
    loss = _loss_day(q)
    if loss <= acq:
        raise ValueError("loss_date must be after acquisition_date")
    body = q.SerializeToString(deterministic=True)
    _remember_body_key(body, key)  # the next update of this person reads it back
    return Row(acq, loss, number_hash(key), key, body)


def compile_history(person: qualification_pb2.Person,
                    qualifications: list[qualification_pb2.Qualification | None],
                    kept: list[Row | None] | None = None,
                    person_bytes: bytes | None = None) -> tuple[bytes, list[bytes]]:
    """Encode a person's qualifications; returns (value, number keys it indexes).

    `kept[i]`, when given and not None, is qualification i's Row, already
    encoded (from the stored record, unchanged since, or by `encode_row`): used
    as is (qualifications[i] may then be None).
    `person_bytes`: the person already serialized (deterministic), if at hand.
    """
    if len(qualifications) > MAX_ENTRIES:
        raise ValueError(f"at most {MAX_ENTRIES} qualifications per person")
    if person_bytes is None:
        person_bytes = person.SerializeToString(deterministic=True)
    rows = [(kept[i] if kept is not None and kept[i] is not None else encode_row(q))
            for i, q in enumerate(qualifications)]
    keys = [r.number_key for r in rows]
    rows.sort(key=lambda r: (r.acquisition_day, r.loss_day))
    record = join_record(dates.proto_day(person.birth_date), PERSON_TAG + varint(len(person_bytes)) + person_bytes,
                         [(r.acquisition_day, r.loss_day, r.number_hash, r.body) for r in rows])
    return record, keys


def compile_history_reference(person: qualification_pb2.Person,
                              qualifications: list[qualification_pb2.Qualification]) -> tuple[bytes, list[bytes]]:
    """The record built the obvious way (copy, set the person, serialize): the
    oracle `compile_history` is tested against."""
    if len(qualifications) > MAX_ENTRIES:
        raise ValueError(f"at most {MAX_ENTRIES} qualifications per person")
    rows = []
    keys = []
    for q in qualifications:
        q = _with_person(q, person)
        key = qualification_number_key(q)
        acq = dates.to_day(dates.from_proto(q.acquisition_date))
        loss = dates.to_day(dates.from_proto(q.loss_date)) if q.HasField("loss_date") else dates.NEVER
        if loss <= acq:
            raise ValueError("loss_date must be after acquisition_date")
        body = q.SerializeToString(deterministic=True)
        rows.append((acq, loss, identifiers.number_hash(key), QUALIFICATION_TAG + varint(len(body)) + body))
        keys.append(key)
    rows.sort(key=lambda r: (r[0], r[1]))
    birth_day = dates.to_day(dates.from_proto(person.birth_date))
    offset = HEADER.size + ENTRY.size * len(rows)
    head = [HEADER.pack(VERSION, len(rows), birth_day)]
    for acq, loss, nhash, payload in rows:
        head.append(ENTRY.pack(acq, loss, nhash, offset, len(payload)))
        offset += len(payload)
    return b"".join(head) + b"".join(r[3] for r in rows), keys


def _with_person(q, person):
    out = qualification_pb2.Qualification()
    out.CopyFrom(q)
    out.person.CopyFrom(person)
    return out


def _without_person(q):
    out = qualification_pb2.Qualification()
    out.CopyFrom(q)
    out.ClearField("person")
    return out


def parse_history(value: bytes | memoryview) -> tuple[int, list[Entry]]:
    version, count, birth_day = HEADER.unpack_from(value, 0)
    if version != VERSION:
        raise ValueError(f"history record version {version} not supported")
    entries = []
    for i in range(count):
        acq, loss, nhash, off, length = ENTRY.unpack_from(value, HEADER.size + i * ENTRY.size)
        entries.append(Entry(acq, loss, nhash, bytes(value[off:off + length])))
    return birth_day, entries


def unframe(payload: bytes) -> qualification_pb2.Qualification:
    i = 1  # skip the tag, then the varint length
    while payload[i] & 0x80:
        i += 1
    return qualification_pb2.Qualification.FromString(payload[i + 1:])


def decode(value: bytes | memoryview) -> tuple[qualification_pb2.Person | None, list[qualification_pb2.Qualification]]:
    """The writer's view: person and qualifications (with person cleared)."""
    person, rows = decode_rows(bytes(value))
    if person is None:
        return None, []
    return qualification_pb2.Person.FromString(person), [qualification(r) for r in rows]


def decode_reference(value: bytes | memoryview) -> tuple[qualification_pb2.Person | None,
                                                           list[qualification_pb2.Qualification]]:
    """`decode` the obvious way (parse whole payloads, move the person out): its oracle."""
    _, entries = parse_history(value)
    quals = [unframe(e.payload) for e in entries]
    person = None
    if quals:
        person = qualification_pb2.Person()
        person.CopyFrom(quals[0].person)
    for q in quals:
        q.ClearField("person")
    return person, quals


def response(validity: int, payloads: list[bytes] = ()) -> bytes:
    return b"\x08" + bytes((validity,)) + b"".join(payloads)


# --- the decision rules of DOMAIN.md §3, over headers only -----------------

def choose_by_card(entries: list[Entry], day: int) -> tuple[int, list[int]]:
    """Card: every qualification covering `day`; else the latest begun, lost."""
    valid = [i for i, e in enumerate(entries) if e.acquisition_day <= day < e.loss_day]
    if len(valid) == 1:
        return VALID, valid
    if valid:
        return MULTIPLE, valid
    started = [i for i, e in enumerate(entries) if e.acquisition_day <= day]
    if not started:
        return NO_RECORD, []
    return INVALID, [started[-1]]


def choose_by_number(entries: list[Entry], birth_day: int, number_hash: int,
                     claimed_birth_day: int, day: int) -> tuple[int, list[int]]:
    """Typed number: only the presented number's qualification is ever shown."""
    if birth_day != claimed_birth_day:
        return NO_RECORD, []
    mine = [i for i, e in enumerate(entries) if e.number_hash == number_hash]
    valid = [i for i in mine if entries[i].acquisition_day <= day < entries[i].loss_day]
    if len(valid) == 1:
        return VALID, valid
    if valid:
        return MULTIPLE, valid
    started = [i for i in mine if entries[i].acquisition_day <= day]
    if not started:
        return NO_RECORD, []
    latest = started[-1]
    newer = any(e.acquisition_day > entries[latest].acquisition_day for e in entries)
    return (INVALID_NEWER_EXISTS if newer else INVALID), [latest]
