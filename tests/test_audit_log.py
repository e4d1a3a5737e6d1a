"""The access log on disk: group commit, hash chain, `onshi audit verify`
catching an edited byte, a removed or inserted record, a removed segment or
tail; retention compaction that keeps the chain verifiable."""

from __future__ import annotations

import json
import os
import struct
import threading
import time

import pytest

from onshi.cli import main as onshi
from onshi.core import audit, twins
from onshi.core.audit import AuditLog, AuditRecord


@pytest.fixture(autouse=True)
def writer(impl, monkeypatch):
    """Every test twice (conftest's impl): the native group commit and the Python
    reference, for every log the test opens (ONSHI_ENGINE)."""
    monkeypatch.setenv(twins.ENV, impl)
    return impl


def rec(i: int, **kw) -> AuditRecord:
    return AuditRecord(
        actor="facility:1310000001",
        action="CheckByCard",
        subject=f"card:{i:04x}",
        items="validity=1 qualifications=1",
        purpose="visit",
        request_id=f"r{i}",
        **kw,
    )


def write(directory, n=20, stream="s", **kw) -> AuditLog:
    log = AuditLog(str(directory), stream, **kw)
    for i in range(n):
        log.append(rec(i))
    return log


def segment(directory, stream="s", seq=1) -> str:
    return os.path.join(str(directory), stream, audit.segment_name(seq))


def offsets(path) -> list[tuple[int, int]]:
    """(start, end) of each record in a segment."""
    with open(path, "rb") as f:
        data = f.read()
    out, pos = [], audit.HEADER.size
    while pos < len(data):
        (n,) = struct.unpack_from("<I", data, pos)
        if n == 0:  # preallocated zeros after the last record
            break
        end = pos + 4 + n + 32
        out.append((pos, end))
        pos = end
    return out


def verify_exit(directory) -> int:
    return onshi(["audit", "verify", "--dir", str(directory)])


HOUR_MS = 3_600_000


def gathering_log(tmp_path, monkeypatch, target: int) -> AuditLog:
    """A log whose sync interval no test outlives (an hour): after its first
    record every leader comes within the interval, so a batch closes only
    when it holds `target` records, or at close()."""
    monkeypatch.setattr(audit, "MAX_SYNC_INTERVAL_MS", HOUR_MS)
    log = AuditLog(str(tmp_path), "s", sync_interval_ms=HOUR_MS)
    log.batch_target = 1  # the first record is a full batch: written, the interval starts
    log.append(rec(9999))
    log.batch_target = target
    return log


def wait_for(condition, limit: float = 60.0) -> bool:
    """Poll until condition() holds; False if it still does not after `limit`
    seconds (a liveness limit for a state that, if reached at all, comes in
    milliseconds: not a bound on how fast)."""
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def run_appenders(target, count: int, barrier: threading.Barrier) -> list[threading.Thread]:
    """Start `count` appenders in lock-step; the ones still running after the
    liveness limit (the barrier is broken so none stays behind it)."""
    threads = [threading.Thread(target=target, args=(k,), daemon=True) for k in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    stuck = [t for t in threads if t.is_alive()]
    if stuck:
        barrier.abort()
    return stuck


def test_records_round_trip_and_verify(tmp_path):
    write(tmp_path).close()
    got = list(audit.read(str(tmp_path)))
    assert [r.request_id for r in got] == [f"r{i}" for i in range(20)]
    assert got[3].actor == "facility:1310000001" and got[3].time_ns > 0
    assert verify_exit(tmp_path) == 0


def test_group_commit_batches_concurrent_appenders(tmp_path):
    log = AuditLog(str(tmp_path), "s")
    threads = [
        threading.Thread(target=lambda k=k: [log.append(rec(k * 1000 + i)) for i in range(50)]) for k in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert log.records == 400
    assert log.batches < 400  # several appenders shared an fdatasync
    log.close()
    assert audit.verify(str(tmp_path)).records == 400


def test_syncs_are_spaced_by_the_sync_interval(tmp_path):
    """At most one fdatasync per interval: one appender after another waits
    out the rest of the interval (a lower bound, so a slow machine cannot
    break it); the first record after a quiet spell is not held back."""
    log = AuditLog(str(tmp_path), "s", sync_interval_ms=40)
    start = time.monotonic()
    for i in range(5):
        log.append(rec(i))
    assert time.monotonic() - start >= 4 * 0.040
    assert log.batches == 5
    log.close()
    assert audit.verify(str(tmp_path)).records == 5


def test_a_full_batch_is_written_without_waiting_out_the_interval(tmp_path, monkeypatch):
    """batch_target appenders (the server's handler threads) fill a batch: its
    leader writes it at once instead of waiting out the interval. The interval
    here is an hour, so a leader that waited for it would never return; the
    log's counts say how each batch closed."""
    log = gathering_log(tmp_path, monkeypatch, target=4)
    filled, batches = log.batches_filled, log.batches
    rounds = 20
    barrier = threading.Barrier(4)

    def appender(k):
        for i in range(rounds):
            barrier.wait()
            log.append(rec(k * 1000 + i))

    stuck = run_appenders(appender, 4, barrier=barrier)
    log.close()  # writes a batch a stuck leader still gathers
    assert not stuck, "a full batch waited for the interval"
    assert log.batches - batches == rounds  # one batch per round: the four records of each
    assert log.batches_filled - filled == rounds and log.batches_timed == 0
    assert audit.verify(str(tmp_path)).records == 1 + 4 * rounds


def test_gathering_filling_and_rotating_at_once_lose_nothing(tmp_path):
    """Free-running appenders with a short interval and a small batch target,
    in segments small enough to rotate every few batches: batches are closed
    by the timer, by the record that fills them and by rotations, in every
    order; each append returns with its record durable, and the chain holds."""
    log = AuditLog(str(tmp_path), "s", sync_interval_ms=1, segment_bytes=8192)
    log.batch_target = 3
    done: list[str] = []
    lock = threading.Lock()

    def appender(k):
        for i in range(150):
            log.append(rec(k * 1000 + i))
            with lock:
                done.append(f"r{k * 1000 + i}")

    threads = [threading.Thread(target=appender, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert log.records == 900 and log.batches < 900
    log.close()
    report = audit.verify(str(tmp_path))
    assert report.ok and report.records == 900
    assert sorted(r.request_id for r in audit.read(str(tmp_path))) == sorted(done)
    assert len(os.listdir(os.path.join(str(tmp_path), "s"))) > 3  # it rotated


def test_no_leader_waits_out_the_interval_for_a_batch_already_written(tmp_path, monkeypatch):
    """Free-running appenders (a server with requests queued): batches fill
    while the next batch's leader is already gathering, and every leader
    returns once its batch is written. With an hour's interval a leader left
    waiting after its batch was written would never return, and with fewer
    than batch_target appenders left the stream stops: the log would not get
    far. By the log's counts every batch closed full but the one close()
    wrote when the appenders stopped."""
    log = gathering_log(tmp_path, monkeypatch, target=4)
    filled, batches = log.batches_filled, log.batches
    stop = threading.Event()
    appended = [0] * 8

    def appender(k):
        for i in range(1000):
            if stop.is_set():
                return
            try:
                log.append(rec(k * 1000 + i))
            except RuntimeError:  # closed while this one was on its way in
                assert stop.is_set()
                return
            appended[k] += 1

    workers = [threading.Thread(target=appender, args=(k,), daemon=True) for k in range(len(appended))]
    for t in workers:
        t.start()
    reached = wait_for(lambda: log.records >= 400)
    stop.set()
    log.close()  # writes the batch the last appenders wait in: fewer than batch_target are left
    for t in workers:
        t.join(timeout=60)
    assert reached, f"appenders stopped at {log.records} records: a leader waited for a written batch"
    assert not any(t.is_alive() for t in workers)
    closed_otherwise = log.batches - batches - (log.batches_filled - filled)
    assert closed_otherwise <= 1 and log.batches_timed == 0, (log.batches, log.batches_filled, log.batches_timed)
    assert audit.verify(str(tmp_path)).records == 1 + sum(appended)


def test_close_writes_a_batch_that_is_still_gathering(tmp_path, monkeypatch):
    log = gathering_log(tmp_path, monkeypatch, target=4)  # a sync just happened
    t = threading.Thread(target=log.append, args=(rec(1),), daemon=True)
    t.start()
    assert wait_for(lambda: log.gathering), "the lone record's leader never gathered"
    log.close()
    t.join(timeout=60)
    assert not t.is_alive()
    assert log.batches_filled == log.batches_timed == 0  # written by close()
    assert [r.request_id for r in audit.read(str(tmp_path))] == ["r9999", "r1"]


def test_sync_interval_is_bounded(tmp_path):
    with pytest.raises(ValueError):
        AuditLog(str(tmp_path), "s", sync_interval_ms=1000)


def test_changed_byte_is_detected(tmp_path, capsys):
    write(tmp_path).close()
    path = segment(tmp_path)
    start, _end = offsets(path)[7]
    with open(path, "r+b") as f:
        f.seek(start + 20)
        byte = f.read(1)
        f.seek(start + 20)
        f.write(bytes([byte[0] ^ 1]))
    assert verify_exit(tmp_path) == 1
    assert "record 7" in capsys.readouterr().out


def test_removed_record_is_detected(tmp_path):
    write(tmp_path).close()
    path = segment(tmp_path)
    start, end = offsets(path)[5]
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[:start] + data[end:])
    report = audit.verify(str(tmp_path))
    assert not report.ok and "hash chain broken" in report.problems[0]


def test_inserted_record_is_detected(tmp_path):
    write(tmp_path).close()
    path = segment(tmp_path)
    _start, end = offsets(path)[5]
    with open(path, "rb") as f:
        data = f.read()
    # A well-formed record copied in (even with a correct-looking hash of its own).
    forged_body = audit.encode(rec(999, time_ns=time.time_ns()))
    forged = struct.pack("<I", len(forged_body)) + forged_body + audit.chain(b"\0" * 32, forged_body)
    with open(path, "wb") as f:
        f.write(data[:end] + forged + data[end:])
    assert not audit.verify(str(tmp_path)).ok
    assert verify_exit(tmp_path) == 1


def test_removed_tail_and_segment_are_detected(tmp_path):
    log = write(tmp_path, 10)
    log.rotate()
    for i in range(10):
        log.append(rec(100 + i))
    log.close()
    assert audit.verify(str(tmp_path)).ok
    # Removing the tail of the live segment: the head tripwire notices.
    path2 = segment(tmp_path, seq=2)
    start, _ = offsets(path2)[-2]
    with open(path2, "r+b") as f:
        f.truncate(start)
    assert not audit.verify(str(tmp_path)).ok
    # Removing a whole sealed segment breaks the link between segments.
    write(tmp_path / "b", 5).close()
    log = AuditLog(str(tmp_path / "b"), "s")
    log.rotate()
    log.append(rec(1))
    log.rotate()
    log.close()
    os.unlink(segment(tmp_path / "b", seq=2))
    report = audit.verify(str(tmp_path / "b"))
    assert not report.ok and any("segment" in p for p in report.problems)


def test_torn_tail_is_a_note_and_cut_on_reopen(tmp_path):
    write(tmp_path, 5).close()
    with open(segment(tmp_path), "ab") as f:
        f.write(b"\x40\x00\x00\x00partial")  # a crash in the middle of write()
    report = audit.verify(str(tmp_path))
    assert report.ok and report.notes
    log = AuditLog(str(tmp_path), "s")
    log.append(rec(5))
    log.close()
    report = audit.verify(str(tmp_path))
    assert report.ok and not report.notes and report.records == 6


def test_compaction_drops_old_segments_and_keeps_the_chain(tmp_path):
    clock = [time.time_ns() - 6 * 365 * 86400 * 10**9]  # six years ago
    log = AuditLog(str(tmp_path), "s", clock=lambda: clock[0])
    for i in range(5):
        log.append(rec(i))
    log.rotate()
    clock[0] = time.time_ns()
    for i in range(5):
        log.append(rec(10 + i))
    log.rotate()
    assert log.compact() == 1  # default retention: 5 years
    log.append(rec(20))
    log.close()
    report = audit.verify(str(tmp_path))
    assert report.ok, report.problems
    ids = [r.request_id for r in audit.read(str(tmp_path))]
    assert "r0" not in ids and "r10" in ids and "r20" in ids
    assert any(r.action == "AuditCompact" for r in audit.read(str(tmp_path)))
    with open(os.path.join(str(tmp_path), "s", "anchor")) as f:
        assert json.load(f)["seq"] == 1
    # The anchor is part of what is verified: a forged one is caught.
    with open(os.path.join(str(tmp_path), "s", "anchor"), "w") as f:
        json.dump({"seq": 1, "records": 7, "hash": "00" * 32}, f)
    assert not audit.verify(str(tmp_path)).ok


def test_one_writer_per_stream(tmp_path):
    log = AuditLog(str(tmp_path), "s")
    with pytest.raises(RuntimeError):
        AuditLog(str(tmp_path), "s")
    log.close()


def test_write_failure_reaches_every_waiter(tmp_path):
    log = AuditLog(str(tmp_path), "s")
    os.close(log.fd)  # the disk goes away under the writer
    with pytest.raises(OSError):
        log.append(rec(1))
    with pytest.raises(OSError):  # fail-stop: nothing is appended after a failed write
        log.append(rec(2))
    log.close()


def test_crash_mid_write_in_preallocated_space(tmp_path):
    import shutil

    live = AuditLog(str(tmp_path / "live"), "s")
    for i in range(5):
        live.append(rec(i))
    # The files as a crash would leave them (the writer still holds the stream).
    shutil.copytree(tmp_path / "live", tmp_path / "crashed")
    live.close()
    path = segment(tmp_path / "crashed")
    last_start, end = offsets(path)[-1]
    with open(path, "r+b") as f:  # half of an unacknowledged batch reached the disk
        f.seek(end)
        f.write(struct.pack("<I", 90) + b"partial record")
    os.unlink(os.path.join(str(tmp_path / "crashed"), "s", "lock"))
    report = audit.verify(str(tmp_path / "crashed"))
    assert report.ok and report.notes
    # Changing an acknowledged record is tampering, not a torn write.
    with open(path, "r+b") as f:
        f.seek(last_start + 10)
        f.write(b"\xff")
    assert not audit.verify(str(tmp_path / "crashed")).ok


def test_reopen_after_crash_cuts_the_unacknowledged_tail(tmp_path):
    import shutil

    live = AuditLog(str(tmp_path / "live"), "s")
    for i in range(3):
        live.append(rec(i))
    shutil.copytree(tmp_path / "live", tmp_path / "crashed")
    live.close()
    path = segment(tmp_path / "crashed")
    end = offsets(path)[-1][1]
    with open(path, "r+b") as f:
        f.seek(end + 100)  # a later page of the batch landed, an earlier one did not
        f.write(b"garbage")
    os.unlink(os.path.join(str(tmp_path / "crashed"), "s", "lock"))
    reopened = AuditLog(str(tmp_path / "crashed"), "s")
    reopened.append(rec(3))
    reopened.close()
    report = audit.verify(str(tmp_path / "crashed"))
    assert report.ok and not report.notes
    assert [r.request_id for r in audit.read(str(tmp_path / "crashed"))] == ["r0", "r1", "r2", "r3"]


def test_read_about_one_person_uses_the_index_of_sealed_segments(tmp_path):
    log = AuditLog(str(tmp_path), "s")
    for i in range(30):
        log.append(
            AuditRecord(actor="facility:1310000001", action="CheckByCard", subject=f"card:{i % 3}", request_id=f"a{i}")
        )
    log.rotate()
    log.append(
        AuditRecord(
            actor="insurer:06139992", action="RelayFindInsurer", subject="link:7", link_id=7, request_id="relay"
        )
    )
    log.rotate()
    log.append(AuditRecord(actor="facility:1310000002", action="CheckByCard", subject="card:1", request_id="live"))
    log.close()
    keys = {"card:1", "link:7"}
    got = sorted(r.request_id for r in audit.read_about(str(tmp_path), keys))
    expected = sorted(r.request_id for r in audit.read(str(tmp_path)) if audit.subject_keys(r) & keys)
    assert got == expected and "relay" in got and "live" in got and len(got) == 12
    assert os.path.exists(audit.index_path(segment(tmp_path, seq=1)))  # built on first use
    assert audit.verify(str(tmp_path)).ok
    # An index that hides records is caught by verify.
    with open(audit.index_path(segment(tmp_path, seq=1)), "r+b") as f:
        f.truncate(16)
    assert not audit.verify(str(tmp_path)).ok
    os.unlink(audit.index_path(segment(tmp_path, seq=1)))
    # An edited record is not served through the index (and verify fails).
    path = segment(tmp_path, seq=1)
    start, _ = offsets(path)[1]  # a4... record 1 is card:1
    with open(path, "r+b") as f:
        f.seek(start + 30)
        f.write(b"#")
    got = [r.request_id for r in audit.read_about(str(tmp_path), {"card:1"})]
    assert "a1" not in got and "a4" in got
    assert not audit.verify(str(tmp_path)).ok
