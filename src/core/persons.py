"""A person's basic information over time: name, kana, birth date, sex, address.

Each qualification shows the person as its own insurer registered them
(history.py); this is the person's own line of details, as the registry-checked
registrations (acquisitions, dependent additions, basic information changes)
set them, each from the day it took effect. A 不詳 claim is matched against the
details in force on its visit days (seed 004: 「受診等した当時の加入保険者等」を
特定する), not against today's, and the system-failure-mode lookup against
today's.

    person   link key -> entries in day order, each: i32 LE first day,
             u32 LE length, serialized Person (deterministic)

The first entry begins at MIN_DAY: details known at all were in force before
anyone registered them.
"""

from __future__ import annotations

import struct

from ..v1 import qualification_pb2 as qpb
from . import dates

MIN_DAY = -(2**31)
_ENTRY = struct.Struct("<iI")

Timeline = list[tuple[int, bytes]]  # (first day, serialized Person), first days increasing


def encode(timeline: Timeline) -> bytes:
    return b"".join(_ENTRY.pack(first, len(person)) + person for first, person in timeline)


def decode(value: bytes | memoryview | None) -> Timeline:
    if not value:
        return []
    value = bytes(value)
    out: Timeline = []
    i, n = 0, len(value)
    while i < n:
        if i + _ENTRY.size > n:
            raise ValueError("corrupt person timeline")
        first, size = _ENTRY.unpack_from(value, i)
        i += _ENTRY.size
        if i + size > n:
            raise ValueError("corrupt person timeline")
        out.append((first, value[i : i + size]))
        i += size
    return out


def add(timeline: Timeline, first_day: int, person: bytes) -> Timeline:
    """The timeline with `person` in force from `first_day` on. Details cannot
    take effect before the latest known ones did (they would rewrite what was
    registered later): such a day is moved up to it, replacing it."""
    if not timeline:
        return [(MIN_DAY, person)]
    if timeline[-1][1] == person:
        return timeline
    last_first = timeline[-1][0]
    if first_day <= last_first:
        return [*timeline[:-1], (last_first, person)]
    return [*timeline, (first_day, person)]


def current(timeline: Timeline) -> bytes | None:
    return timeline[-1][1] if timeline else None


def in_force(timeline: Timeline, day: int) -> bytes | None:
    found = None
    for first, person in timeline:
        if first > day:
            break
        found = person
    return found


def periods(timeline: Timeline) -> list[tuple[int, int, bytes]]:
    """(first day, end day, person) of each entry; the last one never ends."""
    out = []
    for i, (first, person) in enumerate(timeline):
        end = timeline[i + 1][0] if i + 1 < len(timeline) else dates.NEVER
        out.append((first, end, person))
    return out


def person(raw: bytes) -> qpb.Person:
    return qpb.Person.FromString(raw)
