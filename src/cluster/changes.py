"""The one byte layout of a replicated commit: the LMDB operations it made.

A message on the log is one writer commit (or one part of a large one) as the
exact operations on the store, so a read node applies bytes and runs no
registry or quarantine logic, and every replica ends byte-identical. Each
message carries the digest of the message before it, so a read node that
checks the chain knows it applied every message, in order, unaltered by
anything between the writer and it (the log engine included).

    message  = MAGIC (4) | flags (1) | previous digest (32) | count (u32 BE) | change * count
    change   = op (1) | name length (1) | database name | key length (u16 BE) | key
               | put only: value length (u32 BE) | value
    op       = 0 put, 1 delete
    flags    = bit 0: this message ends its writer commit; other bits are 0

A database is named, not numbered, so a reordering of store.DATABASES cannot
make one replica write into another database; a name outside that table is
refused. Digests are BLAKE2b-256 over the whole message. Every length is
checked against what is left before it is read: hostile bytes raise
ValueError, never anything else.
"""

from __future__ import annotations

import hashlib
import itertools
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ..core import store

MAGIC = b"ONC\x01"  # the layout's version is its last byte
DIGEST_SIZE = 32
GENESIS = bytes(DIGEST_SIZE)  # the "previous digest" of the first message on a log
MAX_KEY = 511  # LMDB's default maximum key size (mdb_env_get_maxkeysize)
MAX_VALUE = 0xFFFF_FFFF

PUT, DELETE = 0, 1
FINAL = 0x01

_HEAD = struct.Struct(">4sB32sI")
_KEY_LEN = struct.Struct(">H")
_VALUE_LEN = struct.Struct(">I")


@dataclass(frozen=True, slots=True)
class Change:
    """One LMDB operation: put `value` under `key` in database `db`, or delete `key` (value None)."""

    db: bytes
    key: bytes
    value: bytes | None

    def check(self) -> None:
        if self.db not in store.BY_NAME:
            raise ValueError(f"unknown database {self.db!r}")
        if not 0 < len(self.key) <= MAX_KEY:
            raise ValueError(f"key of {len(self.key)} bytes (LMDB takes 1..{MAX_KEY})")
        if self.value is not None and len(self.value) > MAX_VALUE:
            raise ValueError(f"value of {len(self.value)} bytes")

    def size(self) -> int:
        """Its encoded length in bytes."""
        n = 1 + 1 + len(self.db) + _KEY_LEN.size + len(self.key)
        return n if self.value is None else n + _VALUE_LEN.size + len(self.value)


@dataclass(frozen=True, slots=True)
class Message:
    previous: bytes  # digest of the message before this one on the log (GENESIS for the first)
    final: bool  # this message ends its writer commit
    changes: tuple[Change, ...]


HEADER_SIZE = _HEAD.size


def encode(changes: Iterable[Change], *, previous: bytes, final: bool = True) -> bytes:
    """The message holding `changes`, chained to the message whose digest is `previous`."""
    if len(previous) != DIGEST_SIZE:
        raise ValueError(f"previous digest of {len(previous)} bytes, not {DIGEST_SIZE}")
    parts = [b""]
    count = 0
    for change in changes:
        change.check()
        parts.append(bytes((DELETE if change.value is None else PUT, len(change.db))))
        parts += (change.db, _KEY_LEN.pack(len(change.key)), change.key)
        if change.value is not None:
            parts += (_VALUE_LEN.pack(len(change.value)), change.value)
        count += 1
    parts[0] = _HEAD.pack(MAGIC, FINAL if final else 0, previous, count)
    return b"".join(parts)


def decode(data: bytes) -> Message:
    """The message in `data`; ValueError for anything that is not exactly one well-formed message."""
    view = memoryview(data)
    if len(view) < _HEAD.size:
        raise ValueError(f"message of {len(view)} bytes is shorter than its header ({_HEAD.size})")
    magic, flags, previous, count = _HEAD.unpack_from(view)
    if magic != MAGIC:
        raise ValueError(f"not a change message (magic {bytes(magic)!r})")
    if flags & ~FINAL:
        raise ValueError(f"unknown flags {flags:#04x}")
    pos = _HEAD.size
    # Anything parsed as a change takes at least 4 bytes (op, name length, key
    # length): a count the rest cannot hold is refused before any work for it.
    if count > (len(view) - pos) // 4:
        raise ValueError(f"{count} changes cannot fit in {len(view) - pos} bytes")

    def take(n: int) -> bytes:
        nonlocal pos
        if n > len(view) - pos:
            raise ValueError(f"truncated at byte {pos}: {n} more wanted, {len(view) - pos} left")
        out = bytes(view[pos : pos + n])
        pos += n
        return out

    changes = []
    for _ in range(count):
        op, name_len = take(2)
        if op not in (PUT, DELETE):
            raise ValueError(f"unknown operation {op} at byte {pos - 2}")
        db = take(name_len)
        (key_len,) = _KEY_LEN.unpack(take(_KEY_LEN.size))
        key = take(key_len)
        value = None
        if op == PUT:
            (value_len,) = _VALUE_LEN.unpack(take(_VALUE_LEN.size))
            value = take(value_len)
        change = Change(db, key, value)
        change.check()
        changes.append(change)
    if pos != len(view):
        raise ValueError(f"{len(view) - pos} bytes after the last change")
    return Message(bytes(previous), bool(flags & FINAL), tuple(changes))


def digest(data: bytes) -> bytes:
    """What the next message names as its previous: BLAKE2b-256 of this message's bytes."""
    return hashlib.blake2b(data, digest_size=DIGEST_SIZE).digest()


class ChainBroken(ValueError):
    """A message does not name the digest of the message before it."""


def follow(previous: bytes, data: bytes) -> tuple[Message, bytes]:
    """Check that message `data` comes right after the one whose digest is `previous`:
    (the message, its digest, which the next one must name). ChainBroken if not."""
    message = decode(data)
    if message.previous != previous:
        raise ChainBroken(f"message names previous {message.previous.hex()[:16]}…, expected {previous.hex()[:16]}…")
    return message, digest(data)


def verify_chain(previous: bytes, messages: Iterable[bytes]) -> bytes:
    """Check `messages` follow each other from `previous`; the digest of the last one."""
    for data in messages:
        _, previous = follow(previous, data)
    return previous


def split(changes: Sequence[Change], starts: Sequence[int], limit: int) -> list[tuple[Change, ...]]:
    """`changes` in parts of at most `limit` encoded bytes, cut only where a group starts.

    `starts` are the indices at which a group (one person's changes) begins; a
    part holds whole groups, in order. Changes before the first start form a
    group of their own. A group that alone exceeds the limit is an error: a
    person is never applied in halves.
    """
    if limit < _HEAD.size:
        raise ValueError(f"limit {limit} is below the header's {_HEAD.size} bytes")
    cuts = sorted(set(starts) | {0})
    if cuts[0] < 0 or cuts[-1] > len(changes):
        raise ValueError(f"group starts must lie in 0..{len(changes)}")
    cuts.append(len(changes))
    parts: list[tuple[Change, ...]] = []
    current: list[Change] = []
    size = _HEAD.size
    for begin, end in itertools.pairwise(cuts):
        group = changes[begin:end]
        group_size = sum(c.size() for c in group)
        if _HEAD.size + group_size > limit:
            raise ValueError(f"the group of changes {begin}..{end} takes {group_size} bytes, over the limit {limit}")
        if size + group_size > limit:
            parts.append(tuple(current))
            current, size = [], _HEAD.size
        current.extend(group)
        size += group_size
    if current or not parts:
        parts.append(tuple(current))
    return parts


def encode_commit(changes: Sequence[Change], starts: Sequence[int], *, previous: bytes, limit: int) -> list[bytes]:
    """One writer commit as its chained messages: split at group starts under `limit`,
    only the last part marked final."""
    parts = split(changes, starts, limit)
    out = []
    for i, part in enumerate(parts):
        data = encode(part, previous=previous, final=i == len(parts) - 1)
        out.append(data)
        previous = digest(data)
    return out
