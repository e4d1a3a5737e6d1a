"""The replicated log the writer publishes to and read nodes tail: the few
primitives onshi needs from an engine, so that another engine can be added
without touching the writer or the read nodes (docs/CLUSTER.md).

A message is opaque bytes here (onshi.cluster.changes gives them their
layout); the log gives each one a sequence number, 1, 2, 3, … in one total
order, durable on a quorum before publish returns. Every method is a
coroutine: the writer (ingest-serve) runs on asyncio, and so do the clients.

What each primitive asks of an engine, and what two other engines would use:

publish(message, msg_id, expected_last_sequence) -> sequence
    Append iff the log's last sequence is `expected_last_sequence` (fencing: a
    writer that was replaced appends nothing), at most once per `msg_id` (a
    retry after a lost acknowledgement returns the first append's sequence
    instead of appending again), durable on a quorum before it returns.
    Retries on its own until its deadline; then Unavailable. A wrong last
    sequence raises Deposed, and nothing was appended.
      Kafka: a transactional or idempotent producer gives dedup only within
      one producer session, and Kafka has no compare-and-append; fencing comes
      from the transactional.id's epoch (a new writer's init_transactions
      fences the old one), dedup across writer restarts needs the msg_id kept
      in the message and checked by the writer after it takes over (reading
      the tail), acks=all with min.insync.replicas=2 for durability; a
      single-partition topic for one total order; sequence = offset + 1.
      PostgreSQL with synchronous replication: one table (sequence bigint
      primary key, msg_id text unique, message bytea, at timestamptz); insert
      at sequence = expected + 1, so the primary key refuses a second append
      at the same place (Deposed) while msg_id's unique index answers a retry
      (look the row up by msg_id first, in the same transaction);
      synchronous_commit = on with synchronous_standby_names = 'ANY 1 (…)'
      for durability on a quorum; failover by an external manager (Patroni).

tail(from_sequence) -> async iterator of (sequence, message)
    Every message from `from_sequence` on, in order, waiting for new ones; it
    rides out a lost connection or server by resuming after the last message
    it yielded. Kafka: a consumer with assign + seek(offset); PostgreSQL:
    polling SELECT … WHERE sequence >= n ORDER BY sequence, woken by
    LISTEN/NOTIFY.

last_sequence() -> sequence of the newest message (0 for an empty log).
lag(applied) -> Lag: messages after `applied`, and the age in seconds of the
    oldest of them (0 when caught up). Kafka: end offsets and the record
    timestamp; PostgreSQL: max(sequence) and a timestamptz column.

put_snapshot(sequence, file) / get_snapshot(into) -> sequence or None
    Keep one snapshot of a read node's store (the newest) with the sequence
    it includes, read back whole into a file. Kafka has no blob store: an
    object store beside it (or a compacted topic of chunks); PostgreSQL: a
    large object or a table of chunks, in the same database.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import BinaryIO, NamedTuple, Protocol


class LogError(Exception):
    """The log could not do what was asked."""


class Deposed(LogError):
    """The log's last sequence is not the one the publisher expected: another
    writer has appended since. Nothing was appended; the publisher must stop
    writing and acknowledge nothing it had not already acknowledged."""


class Unavailable(LogError):
    """No answer within the deadline. A publish that raises this may or may not
    have been appended: the same msg_id re-published later finds out."""


class Lag(NamedTuple):
    messages: int  # messages on the log after the applied one
    seconds: float  # age of the oldest of them (0.0 when there are none)


class Log(Protocol):
    async def publish(self, message: bytes, msg_id: str, expected_last_sequence: int) -> int: ...

    def tail(self, from_sequence: int) -> AsyncIterator[tuple[int, bytes]]: ...

    async def last_sequence(self) -> int: ...

    async def lag(self, applied: int) -> Lag: ...

    async def put_snapshot(self, sequence: int, file: BinaryIO) -> None: ...

    async def get_snapshot(self, into: BinaryIO) -> int | None: ...

    async def close(self) -> None: ...
