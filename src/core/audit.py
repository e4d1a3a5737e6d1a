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
    DIR/<stream>/head      last durable (segment, records, hash): a tripwire
                           for tail truncation, written after each sync
    DIR/<stream>/anchor    after compaction: where the kept chain starts

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
import json
import os
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

MAGIC = b"ONSHIAUD"
VERSION = 1
HEADER = struct.Struct("<8sIQQ32s")
LEN = struct.Struct("<I")
BODY_HEAD = struct.Struct("<BqQB")
HASH_LEN = 32
ZERO_HASH = b"\0" * HASH_LEN
SEP = "\x1f"
FLAG_EMERGENCY = 1      # system-failure-mode lookup by basic information (DOMAIN.md §5)
FLAG_RELAY = 2          # relay access between insurers (DOMAIN.md §7)
FLAG_SELF = 4           # the person reading their own log
DEFAULT_RETENTION_DAYS = 5 * 365 + 1
DEFAULT_SEGMENT_BYTES = 64 << 20
DEFAULT_SYNC_INTERVAL_MS = 4.0  # at most one fdatasync per 4 ms per stream (see AuditLog, docs/TRUST.md)
MAX_SYNC_INTERVAL_MS = 100.0

try:
    from onshi.ext._auditlog import ROTATE as _ROTATE
    from onshi.ext._auditlog import GroupCommit as _NativeGroupCommit
except ImportError:  # pragma: no cover - a checkout without the native build
    _NativeGroupCommit = None
MAX_BODY = 1 << 16
HEAD_SIZE = 160
PREALLOCATE = 1 << 20


@dataclass(frozen=True, slots=True)
class AuditRecord:
    actor: str              # who: role:code (facility code, insurer number...)
    action: str             # the RPC, e.g. CheckByCard
    subject: str = ""       # whom, as presented: "card:<hex>" / "number:<key>" / "link:<id>"
    link_id: int = 0        # whom, resolved (0 = not known at write time)
    items: str = ""         # what was returned
    purpose: str = ""       # why
    request_id: str = ""    # card-proof nonce or x-request-id
    flags: int = 0
    time_ns: int = 0        # when (server clock); filled by append if 0

    @property
    def emergency(self) -> bool:
        return bool(self.flags & FLAG_EMERGENCY)


def _clean(text: str) -> str:
    return text.replace(SEP, " ")


def encode(rec: AuditRecord, time_ns: int | None = None) -> bytes:
    """The record's body; `time_ns` (when the record has none) is the server clock."""
    fields = SEP.join((rec.actor, rec.action, rec.subject, rec.items, rec.purpose, rec.request_id))
    if fields.count(SEP) != 5:  # a separator inside a field (rare): clean each
        fields = SEP.join(_clean(f) for f in (rec.actor, rec.action, rec.subject, rec.items, rec.purpose,
                                              rec.request_id))
    body = BODY_HEAD.pack(VERSION, rec.time_ns or time_ns or 0, rec.link_id, rec.flags) + fields.encode()
    if len(body) > MAX_BODY:
        raise ValueError("audit record too large")
    return body


def decode(body: bytes) -> AuditRecord:
    version, time_ns, link_id, flags = BODY_HEAD.unpack_from(body, 0)
    if version != VERSION:
        raise ValueError(f"audit record version {version}")
    parts = body[BODY_HEAD.size:].decode().split(SEP)
    if len(parts) != 6:
        raise ValueError("audit record fields")
    actor, action, subject, items, purpose, request_id = parts
    return AuditRecord(actor, action, subject, link_id, items, purpose, request_id, flags, time_ns)


def chain(prev: bytes, body: bytes) -> bytes:
    return hashlib.sha256(prev + LEN.pack(len(body)) + body).digest()


def segment_name(seq: int) -> str:
    return f"seg-{seq:08d}.log"


def _segments(stream_dir: str) -> list[tuple[int, str]]:
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
        self.done = False     # written (and synced), or failed: see error
        self.error: BaseException | None = None
        self.cond = threading.Condition(lock)


class AuditLog:
    """One writer of one stream. `append` blocks until the record is durable."""

    yield_before_batch = True

    def __init__(self, directory: str, stream: str = "main", *, durable: bool = True,
                 segment_bytes: int = DEFAULT_SEGMENT_BYTES,
                 clock: Callable[[], int] = time.time_ns, native: bool = True,
                 sync_interval_ms: float = DEFAULT_SYNC_INTERVAL_MS):
        if not 0 <= sync_interval_ms <= MAX_SYNC_INTERVAL_MS:
            raise ValueError(f"sync_interval_ms must be 0-{MAX_SYNC_INTERVAL_MS:g}")
        self.directory = directory
        self.stream_dir = os.path.join(directory, stream)
        os.makedirs(self.stream_dir, exist_ok=True)
        self.durable = durable
        self.segment_bytes = segment_bytes
        self.clock = clock
        self._lockfile = open(os.path.join(self.stream_dir, "lock"), "a+b")
        try:
            fcntl.flock(self._lockfile, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lockfile.close()
            raise RuntimeError(f"audit stream {self.stream_dir} is in use by another process") from None
        self._open_tail()
        self._head_fd = os.open(os.path.join(self.stream_dir, "head"), os.O_WRONLY | os.O_CREAT, 0o640)
        self._lock = threading.Lock()
        self._batch = _Batch(self._lock)
        self._writing = False  # a leader is writing a batch
        self._idle = threading.Condition(self._lock)
        self._closing = False
        self._force_rotate = False
        self._failed: BaseException | None = None
        self._batches = 0
        self._records = 0
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
        self._core = _NativeGroupCommit(
            self.fd, self._head_fd, self.size, self.allocated, self.seq, self.total, self.last_hash, durable,
            segment_bytes, PREALLOCATE) if native and _NativeGroupCommit is not None else None
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

    # -- opening: find the tail, cut a torn record ------------------------------
    def _open_tail(self) -> None:
        segs = _segments(self.stream_dir)
        if not segs:
            prev, before = _anchor(self.stream_dir)
            self._start_segment(1 if prev == ZERO_HASH else _anchor_seq(self.stream_dir) + 1, before, prev)
            return
        seq, path = segs[-1]
        scan = _scan_segment(path)
        if scan.error and not _unacknowledged(scan, _head(self.stream_dir)):
            raise RuntimeError(f"audit segment {path} is damaged: {scan.error} (run `onshi audit verify`)")
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

    def append_many(self, records) -> None:
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
            if self._core.append(bodies) == _ROTATE:  # durable; this caller rotates
                self._rotate_native()
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
        if self.durable and self.sync_interval_ns:
            self._gather(self._last_sync_ns + self.sync_interval_ns)
            self._last_sync_ns = time.monotonic_ns()
        elif self.yield_before_batch:
            time.sleep(0)
        with self._lock:
            self._batch = _Batch(self._lock)
        try:
            self._write(batch.records)
        except BaseException as exc:  # disk full, EIO: every waiter learns it
            # Fail-stop: a partial write may be on disk, so nothing more is
            # appended after it; answers stop until an operator restarts.
            batch.error = exc
        with self._lock:
            if batch.error is not None:
                self._failed = batch.error
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

    def _gather(self, due_ns: int) -> None:
        """The leader, before closing its batch: wait until due_ns while the
        batch fills (ends early when full or closing)."""
        with self._lock:
            self._gathering = True
            try:
                while not self._closing and not self._filled():
                    left = (due_ns - time.monotonic_ns()) / 1e9
                    if left <= 0:
                        break
                    self._fill.wait(left)
            finally:
                self._gathering = False

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
        head = json.dumps({"seq": self.seq, "records": self.total, "hash": self.last_hash.hex()}).encode()
        os.pwrite(self._head_fd, head.ljust(HEAD_SIZE - 1) + b"\n", 0)

    def _rotate(self) -> None:
        os.ftruncate(self.fd, self.size)  # a sealed segment ends with its last record
        if self.durable:
            os.fsync(self.fd)
        os.close(self.fd)
        self._start_segment(self.seq + 1, self.total, self.last_hash)
        self._write_head()  # the new (empty) segment's chain value: what verify compares

    def _rotate_native(self) -> None:
        """The native group commit made this caller the writer for a rotation."""
        core = self._core
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
        dropped = compact_stream(self.stream_dir, retention_days, now_ns or self.clock(), keep_seq=self.seq)
        if dropped:
            self.append(AuditRecord(actor="system", action="AuditCompact",
                                    items=f"segments={dropped[0]}-{dropped[-1]}",
                                    purpose=f"retention {retention_days:g} days"))
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
        try:
            if self._failed is None:
                os.ftruncate(self.fd, self.size)  # drop the preallocated zeros
            if self.durable and self._failed is None:
                os.fsync(self.fd)
            os.close(self.fd)
        except OSError:
            pass  # already failed: every waiter was told
        os.close(self._head_fd)
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
    torn: bool = False          # the error is an incomplete last record only


def _scan_segment(path: str, visit: Callable[[int, bytes], None] | None = None) -> SegmentScan:
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
    h = hashlib.sha256(data[:HEADER.size]).digest()
    pos = HEADER.size
    scan.good_end = pos
    scan.last_hash = h
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
        body = data[pos + LEN.size:pos + LEN.size + n]
        h = chain(h, body)
        if h != data[end - HASH_LEN:end]:
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
        pos = end
        scan.good_end = pos
    return scan


def _head(stream_dir: str) -> dict | None:
    """The head tripwire: records acknowledged so far (None if absent/unreadable)."""
    try:
        with open(os.path.join(stream_dir, "head"), "rb") as f:
            raw = f.read().strip()
        return json.loads(raw) if raw else None
    except (OSError, ValueError):
        return None


def _unacknowledged(scan: SegmentScan, head: dict | None) -> bool:
    """A bad record at the end of the live segment is a crash mid-write only if
    no acknowledged record is lost: the head must not count past the good ones.
    Without a head only a plain truncation qualifies."""
    if head is None:
        return scan.torn
    return head["records"] <= scan.records_before + scan.count and head["seq"] <= scan.seq


def _anchor(stream_dir: str) -> tuple[bytes, int]:
    path = os.path.join(stream_dir, "anchor")
    if not os.path.exists(path):
        return ZERO_HASH, 0
    with open(path) as f:
        a = json.load(f)
    return bytes.fromhex(a["hash"]), a["records"]


def _anchor_seq(stream_dir: str) -> int:
    with open(os.path.join(stream_dir, "anchor")) as f:
        return json.load(f)["seq"]


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
    return sorted(os.path.join(directory, d) for d in os.listdir(directory)
                  if os.path.isdir(os.path.join(directory, d)))


def verify(directory: str) -> VerifyReport:
    """Check every stream's hash chain, segment links, anchor and head."""
    report = VerifyReport()
    for stream_dir in streams(directory):
        report.streams += 1
        name = os.path.basename(stream_dir)
        segs = _segments(stream_dir)
        prev_hash, before = _anchor(stream_dir)
        expect_seq = _anchor_seq(stream_dir) + 1 if prev_hash != ZERO_HASH else 1
        for i, (seq, path) in enumerate(segs):
            report.segments += 1
            scan = _scan_segment(path)
            where = f"{name}/{segment_name(seq)}"
            if seq != expect_seq:
                report.fail(f"{where}: expected segment {expect_seq} (a segment was removed or added)")
            if scan.prev_hash != prev_hash or scan.records_before != before:
                report.fail(f"{where}: does not continue the previous segment's chain")
            if scan.error:
                last = i == len(segs) - 1
                if last and _unacknowledged(scan, _head(stream_dir)):
                    report.notes.append(f"{where}: {scan.error} (after the last acknowledged record: "
                                        "a crash mid-write; cut when reopened)")
                else:
                    report.fail(f"{where}: {scan.error}")
            report.records += scan.count
            idx = index_path(path)
            if os.path.exists(idx) and not scan.error:
                with open(idx, "rb") as f:
                    if f.read() != build_index(path):
                        report.fail(f"{where}: index does not match the segment (delete it to rebuild)")
            prev_hash, before = scan.last_hash, scan.records_before + scan.count
            expect_seq = seq + 1
        head = _head(stream_dir)
        if head is not None:
            if head["records"] > before:
                report.fail(f"{name}: head says {head['records']} records, the log holds {before} "
                            "(records removed from the end)")
            elif head["records"] == before and head["hash"] != prev_hash.hex():
                report.fail(f"{name}: last hash differs from head")
    return report


def read(directory: str, match: Callable[[AuditRecord], bool] | None = None) -> Iterator[AuditRecord]:
    """Every readable record in every stream (chain-checked), optionally
    filtered: a linear scan (tests, `onshi audit show`). One person's records:
    `read_about`."""
    for stream_dir in streams(directory):
        for _, path in _segments(stream_dir):
            found: list[AuditRecord] = []

            def visit(_pos, body):
                rec = decode(body)
                if match is None or match(rec):
                    found.append(rec)

            _scan_segment(path, visit)
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

    def visit(pos, body):
        for key in subject_keys(decode(body)):
            entries.append((_key_digest(key), pos))

    scan = _scan_segment(segment_path, visit)
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
    body = data[pos + LEN.size:pos + LEN.size + n]
    prev = hashlib.sha256(data[:HEADER.size]).digest() if pos == HEADER.size else data[pos - HASH_LEN:pos]
    if chain(prev, body) != data[end - HASH_LEN:end]:
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
        segs = _segments(stream_dir)
        for i, (_, path) in enumerate(segs):
            if i == len(segs) - 1:  # live: scan
                found: list[AuditRecord] = []

                def visit(_pos, body, found=found):
                    rec = decode(body)
                    if subject_keys(rec) & keys:
                        found.append(rec)

                _scan_segment(path, visit)
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


def compact_stream(stream_dir: str, retention_days: float, now_ns: int, keep_seq: int | None = None) -> list[int]:
    """Delete leading sealed segments older than the retention; write the anchor
    first so that a crash in between leaves a chain that still verifies."""
    segs = _segments(stream_dir)
    if keep_seq is None:
        keep_seq = segs[-1][0] if segs else 0
    cutoff = now_ns - int(retention_days * 86400e9)
    drop: list[tuple[int, str, SegmentScan]] = []
    for seq, path in segs:
        if seq >= keep_seq:
            break
        scan = _scan_segment(path)
        if scan.error or scan.last_time_ns >= cutoff:
            break
        drop.append((seq, path, scan))
    if not drop:
        return []
    seq, _, scan = drop[-1]
    _write_atomic(os.path.join(stream_dir, "anchor"), json.dumps(
        {"seq": seq, "records": scan.records_before + scan.count, "hash": scan.last_hash.hex()}).encode())
    _fsync_dir(stream_dir)
    for _, path, _ in drop:
        os.unlink(path)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(index_path(path))
    _fsync_dir(stream_dir)
    return [d[0] for d in drop]


# --- CLI ---------------------------------------------------------------------

def _cmd_verify(args) -> int:
    report = verify(args.dir)
    for note in report.notes:
        print(f"note: {note}")
    for problem in report.problems:
        print(f"TAMPERED: {problem}")
    state = "OK" if report.ok else "FAILED"
    print(f"audit verify {state}: {report.streams} streams, {report.segments} segments, {report.records} records")
    return 0 if report.ok else 1


def _cmd_compact(args) -> int:
    total = 0
    for stream_dir in streams(args.dir):
        lock = open(os.path.join(stream_dir, "lock"), "a+b")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"{stream_dir}: in use by a running server (it compacts itself); skipped")
            lock.close()
            continue
        try:
            total += len(compact_stream(stream_dir, args.retention_days, time.time_ns()))
        finally:
            lock.close()
    print(f"dropped {total} segments older than {args.retention_days:g} days")
    return 0


def _cmd_show(args) -> int:
    link = args.link_id
    for rec in read(args.dir, (lambda r: r.link_id == link) if link else None):
        when = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(rec.time_ns / 1e9))
        flag = " EMERGENCY" if rec.emergency else ""
        print(f"{when}Z {rec.actor} {rec.action} link={rec.link_id} {rec.subject} [{rec.items}] "
              f"purpose={rec.purpose}{flag}")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("audit", help="the access log: verify, compact, show")
    sub = p.add_subparsers(dest="audit_command", required=True)
    v = sub.add_parser("verify", help="check the hash chains; exit 1 if anything was edited, removed or inserted")
    v.add_argument("--dir", required=True)
    v.set_defaults(func=_cmd_verify)
    c = sub.add_parser("compact", help="drop segments older than the retention (streams not in use)")
    c.add_argument("--dir", required=True)
    c.add_argument("--retention-days", type=float, default=DEFAULT_RETENTION_DAYS)
    c.set_defaults(func=_cmd_compact)
    s = sub.add_parser("show", help="print records (optionally one person's)")
    s.add_argument("--dir", required=True)
    s.add_argument("--link-id", type=int, default=0)
    s.set_defaults(func=_cmd_show)
