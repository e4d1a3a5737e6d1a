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

import struct
from dataclasses import dataclass

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
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def qualification_number_key(q: qualification_pb2.Qualification) -> bytes:
    return identifiers.number_key(q.insurer_number, q.symbol, q.number, q.branch)


def _loss_day(q: qualification_pb2.Qualification) -> int:
    return dates.to_day(dates.from_proto(q.loss_date)) if q.HasField("loss_date") else dates.NEVER


def compile_history(person: qualification_pb2.Person,
                    qualifications: list[qualification_pb2.Qualification]) -> tuple[bytes, list[bytes]]:
    """Encode a person's qualifications; returns (value, number keys it indexes)."""
    if len(qualifications) > MAX_ENTRIES:
        raise ValueError(f"at most {MAX_ENTRIES} qualifications per person")
    rows = []
    keys = []
    for q in qualifications:
        q = _with_person(q, person)
        key = qualification_number_key(q)
        acq = dates.to_day(dates.from_proto(q.acquisition_date))
        loss = _loss_day(q)
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
