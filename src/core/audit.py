"""The access log (DOMAIN.md §7-8): who looked at whose data, when, what and why.

Durable before the answer is sent, with group commit: handlers call
`AuditLog.append`, which returns once the record's batch is written and
fdatasync'ed. Leader/follower, no writer thread: one caller at a time writes
every record queued since the last sync with one write() and one fdatasync();
callers arriving meanwhile join the next batch, which the leader hands to one of
them. So a busy server pays one sync per batch, not per check.

The group commit runs in C when the extension is built (src/ext/_auditlog.pyx:
a waiting handler costs one wake-up, not a dozen GIL hand-offs); the Python
code below is the reference and writes the same bytes.

On disk, per stream (one per writing process):

    DIR/<stream>/seg-00000001.log, seg-00000002.log, ...
    DIR/<stream>/head      last durable (segment, records, hash[, mac]): a
                           tripwire for tail truncation, written after each sync
    DIR/<stream>/anchor    after compaction: where the kept chain starts

and for the whole directory:

    DIR/manifest           every stream that must exist and the points its
                           chain must pass through: one JSON line per event
                           (open, rotate, close, compact, adopt: seq, records,
                           hash), sealed by its last line, rewritten whole
                           (atomically, under DIR/manifest.lock) at each event

With an audit key (`--audit-key`, 32 bytes kept off the log's disk) each head
carries mac := HMAC-SHA256(key, "onshi/v1/audit-head\n" stream "\n" seq "\n"
records "\n" hash-hex) and the manifest's seal is HMAC-SHA256(key,
"onshi/v1/audit-manifest\n" || every line above the seal); without one the
seal is a plain SHA-256. docs/TRUST.md says what each protects against.

    segment  := header record*
    header   := b"ONSHIAUD" u32 version u64 seq u64 records_before bytes32 prev_hash
    record   := u32 body_len body bytes32 hash
    hash     := SHA-256(previous hash || u32 body_len || body); the first record's
                previous hash is SHA-256(header), and a header's prev_hash is the
                last hash of the previous segment (or the anchor / zeros).

Editing a byte, removing or inserting a record, or removing a segment breaks
the chain, and `verify` names where. A torn record at the very end of a stream
(a crash during write) was never acknowledged and is reported, not failed.

Body: <BqQB version, time_ns, link_id, flags> then \\x1f-separated UTF-8 fields
(actor, action, subject, items, purpose, request_id). link_id 0 = not resolved;
subject is what was presented (hex card serial key or number key).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import os
import struct
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypedDict, cast

from . import twins

if TYPE_CHECKING:
    from ..ext._auditlog import GroupCommit

MAGIC = b"ONSHIAUD"
VERSION = 1
HEADER = struct.Struct("<8sIQQ32s")
LEN = struct.Struct("<I")
BODY_HEAD = struct.Struct("<BqQB")
HASH_LEN = 32
ZERO_HASH = b"\0" * HASH_LEN
SEP = "\x1f"
FLAG_EMERGENCY = 1  # system-failure-mode lookup by basic information (DOMAIN.md §5)
FLAG_RELAY = 2  # relay access between insurers (DOMAIN.md §7)
FLAG_SELF = 4  # the person reading their own log
DEFAULT_RETENTION_DAYS = 5 * 365 + 1
DEFAULT_SEGMENT_BYTES = 64 << 20
DEFAULT_SYNC_INTERVAL_MS = 4.0  # at most one fdatasync per 4 ms per stream (see AuditLog, docs/TRUST.md)
MAX_SYNC_INTERVAL_MS = 100.0

MAX_BODY = 1 << 16
HEAD_SIZE = 256  # the head line, padded (native: _auditlog.pyx)
PREALLOCATE = 1 << 20
KEY_BYTES = 32
HEAD_MAC_CONTEXT = b"onshi/v1/audit-head\n"
MANIFEST_MAC_CONTEXT = b"onshi/v1/audit-manifest\n"
MANIFEST = "manifest"
MANIFEST_MAGIC = "onshi-audit-manifest 1"


class Point(TypedDict):
    """Where a stream's chain is: its segment, records so far, chain value (hex)."""

    seq: int
    records: int
    hash: str


class Head(Point, total=False):
    """The head file (head_line): a Point, with its MAC when the log is keyed."""

    mac: str


class ExternalAnchor(TypedDict):
    """What anchor_of gives and verify(against=) takes."""

    directory: str
    time_ns: int
    manifest_events: int
    manifest_digest: str
    streams: dict[str, Point]


class ManifestError(RuntimeError):
    """The directory's manifest is missing, damaged or sealed another way:
    writers refuse to extend it (that would seal over the evidence)."""


def load_key(path: str) -> bytes:
    """An audit key file: 64 hex digits (`onshi audit keygen`)."""
    with open(path, encoding="ascii", errors="replace") as f:
        text = f.read(1024).strip()
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) != KEY_BYTES:
        raise ValueError(f"{path}: an audit key is {2 * KEY_BYTES} hex digits (make one with `onshi audit keygen`)")
    return key


def key_id(key: bytes) -> str:
    """Names a key without revealing it (the manifest records which one sealed it)."""
    return hmac.new(key, b"onshi/v1/audit-key-id", hashlib.sha256).hexdigest()[:16]


def head_mac(key: bytes, stream: str, seq: int, records: int, hash_hex: str) -> str:
    return hmac.new(
        key, HEAD_MAC_CONTEXT + f"{stream}\n{seq}\n{records}\n{hash_hex}".encode(), hashlib.sha256
    ).hexdigest()


def head_line(stream: str, seq: int, records: int, last_hash: bytes, key: bytes | None = None) -> bytes:
    """The head file's bytes (the native writer writes the same)."""
    fields: Head = {"seq": seq, "records": records, "hash": last_hash.hex()}
    if key:
        fields["mac"] = head_mac(key, stream, seq, records, fields["hash"])
    return json.dumps(fields).encode().ljust(HEAD_SIZE - 1) + b"\n"


@dataclass(frozen=True, slots=True)
class AuditRecord:
    actor: str  # who: role:code (facility code, insurer number...)
    action: str  # the RPC, e.g. CheckByCard
    subject: str = ""  # whom, as presented: "card:<hex>" / "number:<key>" / "link:<id>"
    link_id: int = 0  # whom, resolved (0 = not known at write time)
    items: str = ""  # what was returned
    purpose: str = ""  # why
    request_id: str = ""  # card-proof nonce or x-request-id
    flags: int = 0
    time_ns: int = 0  # when (server clock); filled by append if 0

    @property
    def emergency(self) -> bool:
        return bool(self.flags & FLAG_EMERGENCY)


def _clean(text: str) -> str:
    return text.replace(SEP, " ")


def encode(rec: AuditRecord, time_ns: int | None = None) -> bytes:
    """The record's body; `time_ns` (when the record has none) is the server clock."""
    fields = SEP.join((rec.actor, rec.action, rec.subject, rec.items, rec.purpose, rec.request_id))
    if fields.count(SEP) != 5:  # a separator inside a field (rare): clean each
        fields = SEP.join(
            _clean(f) for f in (rec.actor, rec.action, rec.subject, rec.items, rec.purpose, rec.request_id)
        )
    body = BODY_HEAD.pack(VERSION, rec.time_ns or time_ns or 0, rec.link_id, rec.flags) + fields.encode()
    if len(body) > MAX_BODY:
        raise ValueError("audit record too large")
    return body


def decode(body: bytes) -> AuditRecord:
    version, time_ns, link_id, flags = BODY_HEAD.unpack_from(body, 0)
    if version != VERSION:
        raise ValueError(f"audit record version {version}")
    parts = body[BODY_HEAD.size :].decode().split(SEP)
    if len(parts) != 6:
        raise ValueError("audit record fields")
    actor, action, subject, items, purpose, request_id = parts
    return AuditRecord(actor, action, subject, link_id, items, purpose, request_id, flags, time_ns)


def chain(prev: bytes, body: bytes) -> bytes:
    return hashlib.sha256(prev + LEN.pack(len(body)) + body).digest()


def segment_name(seq: int) -> str:
    return f"seg-{seq:08d}.log"


def segment_files(stream_dir: str) -> list[tuple[int, str]]:
    out = []
    for name in os.listdir(stream_dir):
        if name.startswith("seg-") and name.endswith(".log"):
            out.append((int(name[4:-4]), os.path.join(stream_dir, name)))
    return sorted(out)


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomic(path: str, data: bytes, durable: bool = True) -> None:
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
        if durable:
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, path)


class _Batch:
    __slots__ = ("cond", "done", "error", "records")

    def __init__(self, lock: threading.Lock):
        self.records: list[bytes] = []  # encoded bodies
        self.done = False  # written (and synced), or failed: see error
        self.error: BaseException | None = None
        self.cond = threading.Condition(lock)


class AuditLog:
    """One writer of one stream. `append` blocks until the record is durable.

    Opening registers the stream in the directory's manifest (and refuses a
    stream or manifest that does not match its head or seal: a writer never
    seals over evidence); rotating and closing record where the chain got to.
    With `key` the head and the manifest are MACed (module docstring)."""

    yield_before_batch = True

    def __init__(
        self,
        directory: str,
        stream: str = "main",
        *,
        durable: bool = True,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        clock: Callable[[], int] = time.time_ns,
        kind: str | None = None,
        sync_interval_ms: float = DEFAULT_SYNC_INTERVAL_MS,
        key: bytes | None = None,
    ):
        """kind: the group commit in C (src/ext/_auditlog.pyx) or this module's,
        as `kind` or ONSHI_ENGINE says (twins.load)."""
        if not 0 <= sync_interval_ms <= MAX_SYNC_INTERVAL_MS:
            raise ValueError(f"sync_interval_ms must be 0-{MAX_SYNC_INTERVAL_MS:g}")
        if key is not None and len(key) != KEY_BYTES:
            raise ValueError(f"an audit key is {KEY_BYTES} bytes")
        self.directory = directory
        self.stream = stream
        self.key = key
        self.stream_dir = os.path.join(directory, stream)
        os.makedirs(self.stream_dir, exist_ok=True)
        self.durable = durable
        self.segment_bytes = segment_bytes
        self.clock = clock
        self._lockfile = open(os.path.join(self.stream_dir, "lock"), "a+b")  # noqa: SIM115 - the writer's lock, for its life
        try:
            fcntl.flock(self._lockfile, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lockfile.close()
            raise RuntimeError(f"audit stream {self.stream_dir} is in use by another process") from None
        self._head_fd = -1
        try:
            check_manifest(directory, key)  # before touching the stream
            self._open_tail()
            self._head_fd = os.open(os.path.join(self.stream_dir, "head"), os.O_WRONLY | os.O_CREAT, 0o640)
            # The head exists from the stream's start, then the manifest names it.
            self._write_head()
            os.fsync(self._head_fd)
            record_event(directory, "open", stream, self.seq, self.total, self.last_hash, key, clock())
        except BaseException:
            if self._head_fd >= 0:
                os.close(self._head_fd)
            if getattr(self, "fd", None) is not None:
                os.close(self.fd)
            self._lockfile.close()
            raise
        self._lock = threading.Lock()
        self._batch = _Batch(self._lock)
        self._writing = False  # a leader is writing a batch
        self._idle = threading.Condition(self._lock)
        self._closing = False
        self._force_rotate = False
        self._failed: BaseException | None = None
        self._batches = 0
        self._records = 0
        self._filled_batches = 0  # closed full within the interval (batches_filled)
        self._timed_batches = 0  # closed by the interval running out (batches_timed)
        # At most one fdatasync per interval: a batch's leader that comes sooner
        # waits out the rest while arrivals join its batch. Under load a sync
        # (the log's largest cost, docs/TRUST.md) then carries several records; a lone
        # check after a quiet interval is synced at once. Adds at most the
        # interval to an answer's latency.
        self.sync_interval_ns = int(sync_interval_ms * 1e6)
        self._last_sync_ns = 0
        self._gathering = False
        self._batch_target = 0
        self._fill = threading.Condition(self._lock)  # a gathering leader waits here
        native = twins.load("_auditlog", kind)
        self._rotate_code = native.ROTATE if native is not None else None
        self._core: GroupCommit | None = (
            native.GroupCommit(
                self.fd,
                self._head_fd,
                self.size,
                self.allocated,
                self.seq,
                self.total,
                self.last_hash,
                durable,
                segment_bytes,
                PREALLOCATE,
                key or b"",
                stream.encode(),
            )
            if native is not None
            else None
        )
        if self._core is not None:
            self._core.sync_interval_ns = self.sync_interval_ns

    @property
    def batch_target(self) -> int:
        """A leader waiting out the sync interval writes as soon as its batch
        holds this many records: the server sets its handler threads, the
        only appenders (0: always the whole interval)."""
        return self._core.batch_target if self._core is not None else self._batch_target

    @batch_target.setter
    def batch_target(self, value: int) -> None:
        self._batch_target = max(0, int(value))
        if self._core is not None:
            self._core.batch_target = self._batch_target

    @property
    def native(self) -> bool:
        return self._core is not None

    @property
    def batches(self) -> int:
        return self._core.batches if self._core is not None else self._batches

    @property
    def records(self) -> int:
        return self._core.records if self._core is not None else self._records

    @property
    def batches_filled(self) -> int:
        """Batches whose leader came within the sync interval and wrote them
        because they held batch_target records (at once, or while it waited)."""
        return self._core.batches_filled if self._core is not None else self._filled_batches

    @property
    def batches_timed(self) -> int:
        """Batches whose leader waited out the rest of the sync interval
        without the batch filling. The rest of `batches` were written at once:
        the interval had passed, the log is unsynced, or it was closing."""
        return self._core.batches_timed if self._core is not None else self._timed_batches

    @property
    def gathering(self) -> bool:
        """A leader is waiting out the interval while its batch fills."""
        return self._core.gathering if self._core is not None else self._gathering

    # -- opening: find the tail, cut a torn record ------------------------------
    def _open_tail(self) -> None:
        segs = segment_files(self.stream_dir)
        if not segs:
            prev, before = _anchor(self.stream_dir)
            self._start_segment(1 if prev == ZERO_HASH else _anchor_seq(self.stream_dir) + 1, before, prev)
            return
        seq, path = segs[-1]
        scan = scan_segment(path)
        head = _head(self.stream_dir)
        if scan.error and not _unacknowledged(scan, head):
            raise RuntimeError(f"audit segment {path} is damaged: {scan.error} (run `onshi audit verify`)")
        # Continuing a stream rewrites its head: only over one that matches it.
        total = scan.records_before + scan.count
        problem = head_problem(head, self.stream, self.key)
        if (
            problem is None
            and head is not None
            and (
                head["seq"] > seq
                or head["records"] > total
                or (head["records"] == total and head["seq"] == seq and head["hash"] != scan.last_hash.hex())
            )
        ):
            problem = f"head says {head['records']} records, the stream holds {total} (records removed?)"
        if problem is None and head is None and total:
            problem = "head missing"
        if problem:
            raise RuntimeError(
                f"audit stream {self.stream_dir}: {problem}; run `onshi audit verify` "
                "(the server does not write over it)"
            )
        self.seq = seq
        self.fd = os.open(path, os.O_WRONLY)
        # Whatever follows the last good record was never acknowledged: cut it,
        # then preallocate again.
        os.ftruncate(self.fd, scan.good_end)
        self.size = self.allocated = scan.good_end
        self.last_hash = scan.last_hash
        self.total = scan.records_before + scan.count
        self._extend(PREALLOCATE)

    def _extend(self, needed: int) -> None:
        """Zero-fill ahead: appends then overwrite allocated blocks and
        fdatasync need not journal a new file size each batch (measured on
        ext4: ~40 vs ~60 us CPU and ~0.6 vs 1-4 ms per sync)."""
        grow = max(PREALLOCATE, needed)
        os.pwrite(self.fd, b"\0" * grow, self.allocated)
        self.allocated += grow

    def _start_segment(self, seq: int, records_before: int, prev_hash: bytes) -> None:
        header = HEADER.pack(MAGIC, VERSION, seq, records_before, prev_hash)
        path = os.path.join(self.stream_dir, segment_name(seq))
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        os.write(fd, header)
        self.seq, self.fd, self.size = seq, fd, len(header)
        self.allocated = len(header)
        self._extend(PREALLOCATE)
        os.fsync(fd)
        _fsync_dir(self.stream_dir)
        self.last_hash = hashlib.sha256(header).digest()
        self.total = records_before

    # -- appending: leader/follower group commit -----------------------------------
    def append(self, record: AuditRecord) -> None:
        self.append_many((record,))

    def append_many(self, records: Sequence[AuditRecord]) -> None:
        """Add records and return once they are durable (raises if writing failed).

        No writer thread: the first caller finding nobody writing becomes the
        leader and writes the open batch (its own record, plus any that joined);
        callers arriving meanwhile join the next batch and wait; when the leader
        is done it hands that batch to one of them. So a lone caller pays no
        thread switch, and N concurrent callers share one fdatasync.
        """
        if not records:  # nothing to make durable
            return
        # Encoded by the caller, outside any lock; "when" is the server clock
        # at append (one reading for the records of one call).
        now = 0
        bodies = []
        for r in records:
            if not r.time_ns and not now:
                now = self.clock()
            bodies.append(encode(r, now))
        if self._core is not None:
            if self._core.append(bodies) == self._rotate_code:  # durable; this caller rotates
                self._rotate_native(self._core)
            return
        with self._lock:
            if self._closing:
                raise RuntimeError("audit log closed")
            if self._failed is not None:
                raise self._failed
            batch = self._batch
            batch.records.extend(bodies)
            if self._gathering and self._filled():
                self._fill.notify()
            while self._writing and not batch.done:
                batch.cond.wait()
            if batch.done:  # a leader wrote it
                if batch.error is not None:
                    raise batch.error
                return
            # Nobody writing and our batch is still the open one: lead it.
            self._writing = True
        # Let handlers that are about to append join this batch before it
        # closes: fewer, larger syncs (the sync interval, else one GIL switch).
        closed = ""
        if self.durable and self.sync_interval_ns:
            closed = self._gather(self._last_sync_ns + self.sync_interval_ns)
            self._last_sync_ns = time.monotonic_ns()
        elif self.yield_before_batch:
            time.sleep(0)
        with self._lock:
            self._batch = _Batch(self._lock)
        try:
            self._write(batch.records)
        except BaseException as exc:  # noqa: BLE001 - disk full, EIO: every waiter learns it
            # Fail-stop: a partial write may be on disk, so nothing more is
            # appended after it; answers stop until an operator restarts.
            batch.error = exc
        with self._lock:
            if batch.error is not None:
                self._failed = batch.error
            elif closed == "filled":
                self._filled_batches += 1
            elif closed == "timed":
                self._timed_batches += 1
            batch.done = True
            batch.cond.notify_all()
            self._writing = False
            following = self._batch
            if following.records:
                if self._failed is not None:
                    following.done, following.error = True, self._failed
                    following.cond.notify_all()
                    self._batch = _Batch(self._lock)
                else:
                    following.cond.notify()  # one of them leads the next batch
            self._idle.notify_all()
        if batch.error is not None:
            raise batch.error

    def _filled(self) -> bool:
        return 0 < self._batch_target <= len(self._batch.records)

    def _gather(self, due_ns: int) -> str:
        """The leader, before closing its batch: wait until due_ns while the
        batch fills (ends early when full or closing). Returns why the batch
        closes: "filled", "timed" (the interval ran out), or "" (the interval
        had passed already, or the log is closing)."""
        with self._lock:
            if time.monotonic_ns() >= due_ns or self._closing:
                return ""
            self._gathering = True
            try:
                while not self._closing and not self._filled():
                    left = (due_ns - time.monotonic_ns()) / 1e9
                    if left <= 0:
                        break
                    self._fill.wait(left)
            finally:
                self._gathering = False
            if self._filled():
                return "filled"
            return "" if self._closing else "timed"

    def _write(self, bodies: list[bytes]) -> None:
        out = []
        h = self.last_hash
        for body in bodies:
            h = chain(h, body)
            out.append(LEN.pack(len(body)) + body + h)
        data = b"".join(out)
        if self.size + len(data) > self.allocated:
            self._extend(self.size + len(data) - self.allocated)
        os.pwrite(self.fd, data, self.size)
        if self.durable:
            os.fdatasync(self.fd)
        self.last_hash = h
        self.size += len(data)
        self.total += len(bodies)
        self._batches += 1
        self._records += len(bodies)
        self._write_head()
        if self.size >= self.segment_bytes or self._force_rotate:
            self._force_rotate = False
            self._rotate()

    def _write_head(self) -> None:
        # After the sync: head never claims more than is durable. One pwrite of
        # a fixed-size line into an open file (a rename per batch cost ms here).
        # The native writer writes the same line (_auditlog.pyx).
        os.pwrite(self._head_fd, head_line(self.stream, self.seq, self.total, self.last_hash, self.key), 0)

    def _rotate(self) -> None:
        os.ftruncate(self.fd, self.size)  # a sealed segment ends with its last record
        if self.durable:
            os.fsync(self.fd)
        os.close(self.fd)
        self._start_segment(self.seq + 1, self.total, self.last_hash)
        self._write_head()  # the new (empty) segment's chain value: what verify compares
        record_event(
            self.directory, "rotate", self.stream, self.seq, self.total, self.last_hash, self.key, self.clock()
        )

    def _rotate_native(self, core: GroupCommit) -> None:
        """The native group commit made this caller the writer for a rotation."""
        self.size, self.allocated, self.total, self.last_hash = core.size, core.allocated, core.total, core.last_hash
        try:
            self._rotate()
        except BaseException as exc:
            core.fail(getattr(exc, "errno", None) or 5)
            raise
        core.rotated(self.fd, self.size, self.allocated, self.seq, self.total, self.last_hash)

    def rotate(self) -> None:
        """Seal the current segment now (tests, compaction)."""
        self._force_rotate = True
        if self._core is not None:
            self._core.force_rotate = True
        self.append(AuditRecord(actor="system", action="AuditRotate"))

    def compact(self, retention_days: float = DEFAULT_RETENTION_DAYS, now_ns: int | None = None) -> int:
        """Drop sealed segments whose newest record is older than the retention,
        keep an anchor so the rest still verifies, and log the compaction."""
        dropped = compact_stream(
            self.stream_dir, retention_days, now_ns or self.clock(), keep_seq=self.seq, key=self.key
        )
        if dropped:
            self.append(
                AuditRecord(
                    actor="system",
                    action="AuditCompact",
                    items=f"segments={dropped[0]}-{dropped[-1]}",
                    purpose=f"retention {retention_days:g} days",
                )
            )
        return len(dropped)

    def close(self) -> None:
        if self._core is not None:
            self._core.close()  # refuses new records, writes the queued ones
            if self._core.failed:
                self._failed = OSError(self._core.failed, "audit log write failed")
            self.size = self._core.size
        with self._lock:
            self._closing = True
            self._fill.notify()  # a gathering leader writes now
            while self._writing or self._batch.records:  # let queued records be written
                self._idle.wait()
        if self._core is not None:
            self.seq, self.total, self.last_hash = self._core.seq, self._core.total, self._core.last_hash
        try:
            if self._failed is None:
                os.ftruncate(self.fd, self.size)  # drop the preallocated zeros
            if self.durable and self._failed is None:
                os.fsync(self.fd)
            os.close(self.fd)
        except OSError:
            pass  # already failed: every waiter was told
        os.close(self._head_fd)
        try:
            if self._failed is None:  # where the chain ended, for verify
                record_event(
                    self.directory, "close", self.stream, self.seq, self.total, self.last_hash, self.key, self.clock()
                )
        finally:
            self._lockfile.close()


# --- reading and verifying ----------------------------------------------------


@dataclass
class SegmentScan:
    seq: int = 0
    records_before: int = 0
    prev_hash: bytes = ZERO_HASH
    count: int = 0
    last_hash: bytes = ZERO_HASH
    good_end: int = 0
    last_time_ns: int = 0
    error: str | None = None
    torn: bool = False  # the error is an incomplete last record only
    hashes: dict[int, bytes] = field(default_factory=dict)  # records -> chain value (the wanted ones)


def scan_segment(
    path: str, visit: Callable[[int, bytes], None] | None = None, want: set[int] | frozenset[int] = frozenset()
) -> SegmentScan:
    """Check one segment's chain; `want`: record counts (from the stream's
    start) whose chain value to keep in scan.hashes."""
    with open(path, "rb") as f:
        data = f.read()
    scan = SegmentScan()
    if len(data) < HEADER.size:
        scan.error, scan.torn = "short header", True
        return scan
    magic, version, seq, before, prev = HEADER.unpack_from(data, 0)
    if magic != MAGIC or version != VERSION:
        scan.error = "not an onshi audit segment"
        return scan
    scan.seq, scan.records_before, scan.prev_hash = seq, before, prev
    h = hashlib.sha256(data[: HEADER.size]).digest()
    pos = HEADER.size
    scan.good_end = pos
    scan.last_hash = h
    if before in want:
        scan.hashes[before] = h
    while pos < len(data):
        if pos + LEN.size > len(data):
            scan.error, scan.torn = f"torn record at byte {pos}", True
            return scan
        (n,) = LEN.unpack_from(data, pos)
        if n == 0:  # preallocated zeros: the end of the data
            if data[pos:].strip(b"\0"):
                scan.error, scan.torn = f"bytes after the end of the records at byte {pos}", True
            return scan
        end = pos + LEN.size + n + HASH_LEN
        if n > MAX_BODY:
            scan.error = f"record {scan.count} at byte {pos}: impossible length {n}"
            return scan
        if end > len(data):
            scan.error, scan.torn = f"torn record at byte {pos}", True
            return scan
        body = data[pos + LEN.size : pos + LEN.size + n]
        h = chain(h, body)
        if h != data[end - HASH_LEN : end]:
            scan.error = f"record {scan.count} at byte {pos}: hash chain broken (edited, removed or inserted)"
            return scan
        try:
            scan.last_time_ns = BODY_HEAD.unpack_from(body, 0)[1]
        except struct.error:
            scan.error = f"record {scan.count} at byte {pos}: body too short"
            return scan
        if visit is not None:
            visit(pos, body)
        scan.count += 1
        scan.last_hash = h
        if before + scan.count in want:
            scan.hashes[before + scan.count] = h
        pos = end
        scan.good_end = pos
    return scan


def _head(stream_dir: str) -> Head | None:
    """The head tripwire: records acknowledged so far (None if absent/unreadable)."""
    try:
        with open(os.path.join(stream_dir, "head"), "rb") as f:
            raw = f.read(4096).strip()
        head = json.loads(raw) if raw else None
    except (OSError, ValueError):
        return None
    if not (
        isinstance(head, dict)
        and isinstance(head.get("seq"), int)
        and isinstance(head.get("records"), int)
        and isinstance(head.get("hash"), str)
        and isinstance(head.get("mac", ""), str)
    ):
        return None
    return cast(Head, head)  # its fields checked above


def head_problem(head: Head | None, stream: str, key: bytes | None) -> str | None:
    """Why a head cannot be trusted under `key` (None: fine, or no head)."""
    if head is None:
        return None
    mac = head.get("mac")
    if key is None:
        return "head is sealed with an audit key: give the key" if mac else None
    if not mac:
        return "head carries no MAC although the log is keyed (rewritten without the key?)"
    if not hmac.compare_digest(mac, head_mac(key, stream, head["seq"], head["records"], head["hash"])):
        return "head MAC does not verify (forged, or another key)"
    return None


def _unacknowledged(scan: SegmentScan, head: Head | None) -> bool:
    """A bad record at the end of the live segment is a crash mid-write only if
    no acknowledged record is lost: the head must not count past the good ones.
    Without a head only a plain truncation qualifies."""
    if head is None:
        return scan.torn
    return head["records"] <= scan.records_before + scan.count and head["seq"] <= scan.seq


def _anchor_record(stream_dir: str) -> Point | None:
    """The compaction anchor {seq, records, hash}, None if there is none;
    ValueError if it is there but unreadable."""
    path = os.path.join(stream_dir, "anchor")
    try:
        with open(path, "rb") as f:
            a = json.loads(f.read(4096))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ValueError(f"anchor unreadable ({exc})") from None
    try:
        bytes.fromhex(a["hash"])
        if not (isinstance(a["seq"], int) and isinstance(a["records"], int)):
            raise TypeError
    except (KeyError, TypeError, ValueError):
        raise ValueError("anchor unreadable") from None
    return cast(Point, a)  # its fields checked above


def _anchor(stream_dir: str) -> tuple[bytes, int]:
    a = _anchor_record(stream_dir)
    return (bytes.fromhex(a["hash"]), a["records"]) if a else (ZERO_HASH, 0)


def _anchor_seq(stream_dir: str) -> int:
    a = _anchor_record(stream_dir)
    return a["seq"] if a else 0


# --- the manifest: which streams must exist, and where their chains passed ------------


@dataclass(frozen=True)
class StreamEvent:
    """One manifest line: `stream`'s chain value after `records` records is
    `hash`, in segment `seq` (the writer's state at that event)."""

    event: str  # open | rotate | close | compact | adopt
    stream: str
    seq: int
    records: int
    hash: str  # hex
    time_ns: int = 0

    def line(self) -> str:
        return json.dumps(
            {
                "event": self.event,
                "stream": self.stream,
                "seq": self.seq,
                "records": self.records,
                "hash": self.hash,
                "time_ns": self.time_ns,
            },
            sort_keys=True,
        )


@dataclass
class Manifest:
    exists: bool = False
    events: list[StreamEvent] = field(default_factory=list)
    keyed: bool = False
    key_id: str = ""
    problem: str | None = None  # does not parse or its seal does not verify
    note: str | None = None  # sealed with a key, not checked without it


def _seal(body: bytes, key: bytes | None) -> str:
    if key:
        return "hmac-sha256 " + hmac.new(key, MANIFEST_MAC_CONTEXT + body, hashlib.sha256).hexdigest()
    return "sha256 " + hashlib.sha256(body).hexdigest()


def load_manifest(directory: str, key: bytes | None = None) -> Manifest:
    """Read and check DIR/manifest: with `key` its seal must be that key's MAC."""
    m = Manifest()
    try:
        with open(os.path.join(directory, MANIFEST), "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return m
    m.exists = True
    cut = data.rfind(b"\nseal ")
    if not data.startswith(MANIFEST_MAGIC.encode()) or cut < 0 or not data.endswith(b"\n"):
        m.problem = "manifest does not parse (not an onshi audit manifest, or cut short)"
        return m
    body, seal = data[: cut + 1], data[cut + 1 :].decode(errors="replace").strip()
    lines = body.decode(errors="replace").splitlines()
    header = lines[0].split()
    m.key_id = header[2][4:] if len(header) == 3 and header[2].startswith("key=") else ""
    m.keyed = seal.startswith("seal hmac-sha256 ")
    if key is not None:
        if not m.keyed:
            m.problem = "manifest is not sealed with the audit key (written or rewritten without it)"
        elif m.key_id != key_id(key):
            m.problem = f"manifest is sealed with another key (key id {m.key_id}, this key is {key_id(key)})"
        elif not hmac.compare_digest(seal, "seal " + _seal(body, key)):
            m.problem = "manifest seal does not verify (edited, or entries removed)"
    elif m.keyed:
        m.note = "manifest and heads are sealed with an audit key; their MACs are not checked without --key"
    elif seal != "seal " + _seal(body, None):
        m.problem = "manifest seal does not verify (edited, or entries removed)"
    for line in lines[1:]:
        try:
            e = json.loads(line)
            m.events.append(StreamEvent(e["event"], e["stream"], e["seq"], e["records"], e["hash"], e["time_ns"]))
        except (ValueError, KeyError, TypeError):
            m.problem = m.problem or f"manifest line does not parse: {line[:80]!r}"
    return m


def _write_manifest(directory: str, events: list[StreamEvent], key: bytes | None) -> None:
    body = (f"{MANIFEST_MAGIC} key={key_id(key) if key else '-'}\n" + "".join(e.line() + "\n" for e in events)).encode()
    _write_atomic(os.path.join(directory, MANIFEST), body + f"seal {_seal(body, key)}\n".encode())
    _fsync_dir(directory)


@contextlib.contextmanager
def _manifest_locked(directory: str) -> Iterator[None]:
    with open(os.path.join(directory, MANIFEST + ".lock"), "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _holds_records(stream_dir: str) -> bool:
    segs = segment_files(stream_dir)
    if not segs:
        try:
            return _anchor(stream_dir)[1] > 0
        except ValueError:
            return True
    scan = scan_segment(segs[-1][1])
    return scan.records_before + scan.count > 0 or len(segs) > 1


def _writable_manifest(directory: str, key: bytes | None) -> Manifest:
    """The manifest a writer may extend, or ManifestError saying why not."""
    m = load_manifest(directory, key)
    if not m.exists:
        # A new log: every stream in it is being opened right now, empty.
        # Streams with records and no manifest: it was deleted (or the log
        # predates manifests); a writer must not seal what it cannot vouch for.
        held = [os.path.basename(d) for d in streams(directory) if _holds_records(d)]
        if held:
            raise ManifestError(
                f"{directory} holds access-log streams ({', '.join(held[:5])}) but no manifest (deleted, or "
                "written by an older onshi): check it with `onshi audit verify` and adopt it with `onshi audit seal`"
            )
        return m
    if m.problem:
        raise ManifestError(
            f"{directory}/{MANIFEST}: {m.problem}; run `onshi audit verify` (the server does not write over it)"
        )
    if m.keyed and key is None:
        raise ManifestError(f"{directory} is sealed with an audit key: start the server with --audit-key")
    return m


def check_manifest(directory: str, key: bytes | None = None) -> None:
    """Raise ManifestError unless a writer with `key` may open streams here."""
    if os.path.isdir(directory):
        with _manifest_locked(directory):
            _writable_manifest(directory, key)


def record_event(
    directory: str,
    event: str,
    stream: str,
    seq: int,
    records: int,
    last_hash: bytes,
    key: bytes | None = None,
    time_ns: int | None = None,
) -> None:
    """Append one event to the manifest (durable on return)."""
    with _manifest_locked(directory):
        m = _writable_manifest(directory, key)
        events = [*m.events, StreamEvent(event, stream, seq, records, last_hash.hex(), time_ns or time.time_ns())]
        _write_manifest(directory, events, key)


@dataclass
class VerifyReport:
    ok: bool = True
    streams: int = 0
    segments: int = 0
    records: int = 0
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def fail(self, text: str) -> None:
        self.ok = False
        self.problems.append(text)


def streams(directory: str) -> list[str]:
    if not os.path.isdir(directory):
        return []
    return sorted(
        os.path.join(directory, d) for d in os.listdir(directory) if os.path.isdir(os.path.join(directory, d))
    )


def verify(directory: str, key: bytes | None = None, against: ExternalAnchor | None = None) -> VerifyReport:
    """Check every stream's hash chain, segment links, anchor and head, and
    that every stream the manifest names exists and passes through each point
    the manifest (and `against`, an earlier `anchor_of`) recorded for it.
    With `key`: heads and the manifest must carry that key's MACs."""
    report = VerifyReport()
    on_disk = {os.path.basename(d): d for d in streams(directory)}
    m = load_manifest(directory, key)
    if not m.exists:
        report.fail(
            "manifest missing: streams cannot be checked for deletion (deleted?)"
            if on_disk
            else f"no access log at {directory} (no manifest, no streams)"
        )
    elif m.problem:
        report.fail(f"{MANIFEST}: {m.problem}")
    if m.note:
        report.notes.append(m.note)
    points: dict[str, list[tuple[int, int, str, str]]] = {}  # stream -> (seq, records, hash, what)
    compactions: dict[str, set[tuple[int, int, str]]] = {}
    for e in m.events:
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(e.time_ns / 1e9))
        points.setdefault(e.stream, []).append((e.seq, e.records, e.hash, f"manifest {e.event} at {when}"))
        if e.event in ("compact", "adopt-anchor"):
            compactions.setdefault(e.stream, set()).add((e.seq, e.records, e.hash))
    if against:
        for name, p in against.get("streams", {}).items():
            points.setdefault(name, []).append((p["seq"], p["records"], p["hash"], "external anchor"))
        _check_manifest_prefix(report, m, against)
    for name in sorted(set(points) - set(on_disk)):
        report.fail(f"{name}: directory missing, but the {points[name][0][3]} names it (stream deleted)")
    for name, stream_dir in sorted(on_disk.items()):
        _verify_stream(
            report,
            name,
            stream_dir,
            points.get(name, []),
            compactions.get(name, set()),
            key,
            registered=name in {e.stream for e in m.events} or not m.exists,
            keyed=m.keyed,
        )
    return report


def _check_manifest_prefix(report: VerifyReport, m: Manifest, against: ExternalAnchor) -> None:
    count = against.get("manifest_events", 0)
    digest = hashlib.sha256("".join(e.line() + "\n" for e in m.events[:count]).encode()).hexdigest()
    if len(m.events) < count or digest != against.get("manifest_digest"):
        report.fail(
            f"{MANIFEST}: does not continue the externally anchored one ({count} events then; "
            f"{len(m.events)} now): rewritten or rolled back"
        )


def _verify_stream(
    report: VerifyReport,
    name: str,
    stream_dir: str,
    points: list[tuple[int, int, str, str]],
    compactions: set[tuple[int, int, str]],
    key: bytes | None,
    registered: bool,
    keyed: bool,
) -> None:
    report.streams += 1
    segs = segment_files(stream_dir)
    head = _head(stream_dir)
    try:
        anchor = _anchor_record(stream_dir)
    except ValueError as exc:
        report.fail(f"{name}: {exc}")
        anchor = None
    if anchor is not None and registered and (anchor["seq"], anchor["records"], anchor["hash"]) not in compactions:
        report.fail(f"{name}: anchor is not a compaction the manifest recorded (segments removed?)")
    prev_hash, before = (bytes.fromhex(anchor["hash"]), anchor["records"]) if anchor else (ZERO_HASH, 0)
    expect_seq = anchor["seq"] + 1 if anchor else 1
    first_kept = expect_seq
    wanted = [p for p in points if p[0] >= first_kept]
    if head is not None:
        wanted.append((head["seq"], head["records"], head["hash"], "head"))
    want = {p[1] for p in wanted}
    found: dict[tuple[int, int], bytes] = {}
    if anchor is not None:
        found[(anchor["seq"], anchor["records"])] = prev_hash
    for i, (seq, path) in enumerate(segs):
        report.segments += 1
        scan = scan_segment(path, want=want)
        where = f"{name}/{segment_name(seq)}"
        if seq != expect_seq:
            report.fail(f"{where}: expected segment {expect_seq} (a segment was removed or added)")
        if scan.prev_hash != prev_hash or scan.records_before != before:
            report.fail(f"{where}: does not continue the previous segment's chain")
        if scan.error:
            last = i == len(segs) - 1
            if last and _unacknowledged(scan, head):
                report.notes.append(
                    f"{where}: {scan.error} (after the last acknowledged record: a crash mid-write; cut when reopened)"
                )
            else:
                report.fail(f"{where}: {scan.error}")
        report.records += scan.count
        found.update(((seq, n), h) for n, h in scan.hashes.items())
        idx = index_path(path)
        if os.path.exists(idx) and not scan.error:
            with open(idx, "rb") as f:
                if f.read() != build_index(path):
                    report.fail(f"{where}: index does not match the segment (delete it to rebuild)")
        prev_hash, before = scan.last_hash, scan.records_before + scan.count
        expect_seq = seq + 1
    last_seq = segs[-1][0] if segs else first_kept - 1
    if head is None:
        if registered or before:
            report.fail(f"{name}: head missing or unreadable (deleted?)")
    elif key is not None:
        problem = head_problem(head, name, key)
        if problem:
            report.fail(f"{name}: {problem}")
    elif keyed and not head.get("mac"):  # visible without the key: a keyed log's head lost its MAC
        report.fail(f"{name}: head carries no MAC although the manifest is keyed (rewritten without the key?)")
    if not registered:
        if before:
            report.fail(f"{name}: not in the manifest (a stream added, or the manifest rolled back)")
        else:
            report.notes.append(f"{name}: empty and not in the manifest yet (a writer stopped while opening)")
    for seq, records, hash_hex, what in wanted:
        got = found.get((seq, records))
        if got is None:
            if seq > last_seq or (seq == last_seq and records > before):
                report.fail(
                    f"{name}: the {what} recorded {records} records (segment {seq}), the stream "
                    f"holds {before} (records removed from the end)"
                )
            else:
                report.fail(
                    f"{name}: the {what} recorded segment {seq} at {records} records, "
                    "which the stream does not pass through (rewritten)"
                )
        elif got.hex() != hash_hex:
            report.fail(f"{name}: chain differs from the {what} at record {records} (rewritten)")


def read(directory: str, match: Callable[[AuditRecord], bool] | None = None) -> Iterator[AuditRecord]:
    """Every readable record in every stream (chain-checked), optionally
    filtered: a linear scan (tests, `onshi audit show`). One person's records:
    `read_about`."""
    for stream_dir in streams(directory):
        for _, path in segment_files(stream_dir):
            found: list[AuditRecord] = []

            def visit(_pos: int, body: bytes, found: list[AuditRecord] = found) -> None:
                rec = decode(body)
                if match is None or match(rec):
                    found.append(rec)

            scan_segment(path, visit)
            yield from found


# --- per-person index of sealed segments -----------------------------------------------

INDEX_ENTRY = struct.Struct(">QQ")  # 8-byte digest of a subject key, record offset


def subject_keys(rec: AuditRecord) -> set[str]:
    """The keys a record can be found under: its subject and its link ID."""
    keys = {rec.subject} if rec.subject else set()
    if rec.link_id:
        keys.add(f"link:{rec.link_id}")
    return keys


def _key_digest(key: str) -> int:
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big")


def index_path(segment_path: str) -> str:
    return segment_path[:-4] + ".idx"


def build_index(segment_path: str) -> bytes:
    """Sorted (subject digest, offset) entries of a sealed segment."""
    entries: list[tuple[int, int]] = []

    def visit(pos: int, body: bytes) -> None:
        for key in subject_keys(decode(body)):
            entries.append((_key_digest(key), pos))

    scan = scan_segment(segment_path, visit)
    if scan.error:
        raise ValueError(f"{segment_path}: {scan.error}")
    entries.sort()
    return b"".join(INDEX_ENTRY.pack(d, pos) for d, pos in entries)


def _index_of(segment_path: str) -> bytes:
    """The segment's index, built and saved on first use (a cache: derived from
    the chain-checked segment, re-checked by `verify`)."""
    path = index_path(segment_path)
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        data = build_index(segment_path)
        _write_atomic(path, data, durable=False)
        return data


def _lookup(index: bytes, digest: int) -> list[int]:
    n = len(index) // INDEX_ENTRY.size
    lo, hi = 0, n
    while lo < hi:  # first entry >= digest
        mid = (lo + hi) // 2
        if INDEX_ENTRY.unpack_from(index, mid * INDEX_ENTRY.size)[0] < digest:
            lo = mid + 1
        else:
            hi = mid
    out = []
    while lo < n:
        d, pos = INDEX_ENTRY.unpack_from(index, lo * INDEX_ENTRY.size)
        if d != digest:
            break
        out.append(pos)
        lo += 1
    return out


def _record_at(data: bytes, pos: int) -> AuditRecord | None:
    """The record at an indexed offset, if its stored hash links to the stored
    hash before it (a local check; `verify` checks the whole chain)."""
    if pos < HEADER.size or pos + LEN.size > len(data):
        return None
    (n,) = LEN.unpack_from(data, pos)
    end = pos + LEN.size + n + HASH_LEN
    if not n or end > len(data):
        return None
    body = data[pos + LEN.size : pos + LEN.size + n]
    prev = hashlib.sha256(data[: HEADER.size]).digest() if pos == HEADER.size else data[pos - HASH_LEN : pos]
    if chain(prev, body) != data[end - HASH_LEN : end]:
        return None
    return decode(body)


def _scan_tolerant(path: str, keys: set[str]) -> Iterator[AuditRecord]:
    """Every record of a damaged segment whose own hash link still holds."""
    with open(path, "rb") as f:
        data = f.read()
    pos = HEADER.size
    while pos + LEN.size <= len(data):
        (n,) = LEN.unpack_from(data, pos)
        if not n or n > MAX_BODY:
            break
        rec = _record_at(data, pos)
        if rec is not None and subject_keys(rec) & keys:
            yield rec
        pos += LEN.size + n + HASH_LEN


def read_about(directory: str, keys: set[str]) -> Iterator[AuditRecord]:
    """Records about one person (any of `keys`: link:<id>, card:/number: digests).

    Sealed segments are looked up through their index (built on first use);
    the live segment of each stream is scanned.
    """
    digests = {_key_digest(k) for k in keys}
    for stream_dir in streams(directory):
        segs = segment_files(stream_dir)
        for i, (_, path) in enumerate(segs):
            if i == len(segs) - 1:  # live: scan
                found: list[AuditRecord] = []

                def visit(_pos: int, body: bytes, found: list[AuditRecord] = found) -> None:
                    rec = decode(body)
                    if subject_keys(rec) & keys:
                        found.append(rec)

                scan_segment(path, visit)
                yield from found
                continue
            try:
                index = _index_of(path)
            except ValueError:  # a damaged segment (verify says where): no index,
                yield from _scan_tolerant(path, keys)  # serve what still checks out
                continue
            positions = sorted({p for d in digests for p in _lookup(index, d)})
            if not positions:
                continue
            with open(path, "rb") as f:
                data = f.read()
            for pos in positions:
                rec = _record_at(data, pos)
                if rec is not None and subject_keys(rec) & keys:
                    yield rec


def compact_stream(
    stream_dir: str, retention_days: float, now_ns: int, keep_seq: int | None = None, key: bytes | None = None
) -> list[int]:
    """Delete leading sealed segments older than the retention; record the
    compaction in the manifest and write the anchor first, so that a crash in
    between leaves a chain that still verifies."""
    segs = segment_files(stream_dir)
    if keep_seq is None:
        keep_seq = segs[-1][0] if segs else 0
    cutoff = now_ns - int(retention_days * 86400e9)
    drop: list[tuple[int, str, SegmentScan]] = []
    for seq, path in segs:
        if seq >= keep_seq:
            break
        scan = scan_segment(path)
        if scan.error or scan.last_time_ns >= cutoff:
            break
        drop.append((seq, path, scan))
    if not drop:
        return []
    seq, _, scan = drop[-1]
    record_event(
        os.path.dirname(os.path.abspath(stream_dir)),
        "compact",
        os.path.basename(stream_dir),
        seq,
        scan.records_before + scan.count,
        scan.last_hash,
        key,
        now_ns,
    )
    _write_atomic(
        os.path.join(stream_dir, "anchor"),
        json.dumps({"seq": seq, "records": scan.records_before + scan.count, "hash": scan.last_hash.hex()}).encode(),
    )
    _fsync_dir(stream_dir)
    for _, path, _ in drop:
        os.unlink(path)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(index_path(path))
    _fsync_dir(stream_dir)
    return [d[0] for d in drop]


# --- external anchors and adoption -------------------------------------------------


def anchor_of(directory: str) -> ExternalAnchor:
    """Where every stream's chain is now (its head) and how far the manifest
    goes: keep it off the host (printed by `onshi audit anchor`); `verify(...,
    against=it)` later fails if the log no longer reaches it."""
    m = load_manifest(directory)
    out: ExternalAnchor = {
        "directory": os.path.abspath(directory),
        "time_ns": time.time_ns(),
        "manifest_events": len(m.events),
        "manifest_digest": hashlib.sha256("".join(e.line() + "\n" for e in m.events).encode()).hexdigest(),
        "streams": {},
    }
    for stream_dir in streams(directory):
        head = _head(stream_dir)
        if head is not None:
            out["streams"][os.path.basename(stream_dir)] = Point(
                seq=head["seq"], records=head["records"], hash=head["hash"]
            )
    return out


def seal(directory: str, key: bytes | None = None) -> list[str]:
    """Adopt a log into a (new) manifest: a directory written by an onshi
    without manifests, or one sealed without a key that is to be keyed from now
    on. Every stream must be idle (its lock free) and verify; each is recorded
    at its current end (and anchor) and its head rewritten under `key`.
    Returns the problems that stopped it (nothing written then)."""
    report = verify(directory)  # chains and heads as they are, without the manifest's say
    problems = [p for p in report.problems if not p.startswith(MANIFEST) and "not in the manifest" not in p]
    m = load_manifest(directory)
    if m.exists and m.problem:
        problems.append(f"{MANIFEST}: {m.problem}")
    if m.keyed:
        problems.append(f"{MANIFEST}: already sealed with a key")
    if problems:
        return problems
    locks = []
    try:
        for stream_dir in streams(directory):
            lock = open(os.path.join(stream_dir, "lock"), "a+b")  # noqa: SIM115 - all held until sealed
            locks.append(lock)
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return [f"{stream_dir}: in use by a running server (stop the servers first)"]
        with _manifest_locked(directory):
            events = list(m.events)
            now = time.time_ns()
            for stream_dir in streams(directory):
                name = os.path.basename(stream_dir)
                a = _anchor_record(stream_dir)
                if a is not None:
                    events.append(StreamEvent("adopt-anchor", name, a["seq"], a["records"], a["hash"], now))
                segs = segment_files(stream_dir)
                if not segs:
                    continue
                scan = scan_segment(segs[-1][1])
                seq, records = segs[-1][0], scan.records_before + scan.count
                events.append(StreamEvent("adopt", name, seq, records, scan.last_hash.hex(), now))
                fd = os.open(os.path.join(stream_dir, "head"), os.O_WRONLY | os.O_CREAT, 0o640)
                try:
                    os.pwrite(fd, head_line(name, seq, records, scan.last_hash, key), 0)
                    os.fsync(fd)
                finally:
                    os.close(fd)
            _write_manifest(directory, events, key)
    finally:
        for lock in locks:
            lock.close()
    return []
