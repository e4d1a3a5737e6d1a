"""The native group commit (src/ext/_auditlog.pyx) against the Python
reference writer: the same records give byte-identical segments and head
files, across batches and rotations; `onshi audit verify` accepts both; many
threads at once lose nothing."""

from __future__ import annotations

import os
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onshi.cli import main as onshi
from onshi.core import audit
from onshi.core.audit import AuditLog, AuditRecord
from tests.conftest import require_native

require_native("_auditlog")

text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40)
records = st.builds(
    AuditRecord,
    actor=text,
    action=text,
    subject=text,
    link_id=st.integers(0, 2**63 - 1),
    items=text,
    purpose=text,
    request_id=text,
    flags=st.integers(0, 255),
    time_ns=st.integers(1, 2**62),
)
# A list of steps: a batch of records appended by one call, or a forced rotation.
steps = st.lists(st.one_of(st.lists(records, min_size=1, max_size=5), st.just("rotate")), max_size=25)


def files(directory) -> dict[str, bytes]:
    out = {}
    for root, _, names in os.walk(directory):
        for name in names:
            if name != "lock":
                path = os.path.join(root, name)
                with open(path, "rb") as f:
                    out[os.path.relpath(path, directory)] = f.read()
    return out


@settings(max_examples=60, deadline=None)
@given(
    steps=steps,
    segment_bytes=st.sampled_from([300, 2000, audit.DEFAULT_SEGMENT_BYTES]),
    durable=st.booleans(),
    keyed=st.booleans(),
)
def test_native_and_python_writers_write_the_same_bytes(tmp_path_factory, steps, segment_bytes, durable, keyed):
    """Segments, heads (with their MAC when the log has a key) and manifest."""
    # durable=False takes the native writer's other path (it leads with the GIL held).
    base = tmp_path_factory.mktemp("diff")
    key = bytes(range(32)) if keyed else None
    # A fixed clock: rotate() appends a record stamped by it, manifest events too.
    logs = {
        kind: AuditLog(
            str(base / kind),
            "s",
            segment_bytes=segment_bytes,
            kind=kind,
            clock=lambda: 1_700_000_000_000_000_000,
            durable=durable,
            key=key,
        )
        for kind in ("native", "pure")
    }
    assert logs["native"].native and not logs["pure"].native
    heads = {}
    for step in steps:
        for kind, log in logs.items():
            if step == "rotate":
                log.rotate()
            else:
                log.append_many(step)
            with open(os.path.join(str(base / kind), "s", "head"), "rb") as f:
                heads[kind] = f.read()
        assert heads["native"] == heads["pure"]  # the same head after every step
    for log in logs.values():
        log.close()
    assert files(base / "native") == files(base / "pure")
    for kind in logs:
        report = audit.verify(str(base / kind), key)
        assert report.ok, report.problems
        assert report.records == sum(len(s) if s != "rotate" else 1 for s in steps)


def test_a_reopened_stream_continues_with_the_other_writer(tmp_path):
    """A stream written by one writer is continued by the other: one chain."""
    rec = AuditRecord(actor="facility:1310000001", action="CheckByCard", subject="card:x", items="validity=1")
    for i, kind in enumerate(("native", "pure", "native", "pure")):
        log = AuditLog(str(tmp_path), "s", segment_bytes=600, kind=kind)
        for _ in range(5):
            log.append(rec)
        if i == 1:
            log.rotate()
        log.close()
    report = audit.verify(str(tmp_path))
    assert report.ok and report.records == 21 and report.segments > 1


def test_many_threads_share_fdatasyncs_and_lose_nothing(tmp_path):
    log = AuditLog(str(tmp_path), "s", segment_bytes=20_000, kind="native")  # several rotations under load
    assert log.native
    done = []

    def appender(t):
        for i in range(300):
            log.append(AuditRecord(actor=f"facility:{t}", action="CheckByCard", request_id=f"{t}/{i}"))
            done.append((t, i))

    threads = [threading.Thread(target=appender, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert log.records == 2400 + (log.records - 2400) and log.batches < log.records
    log.close()
    report = audit.verify(str(tmp_path))
    assert report.ok, report.problems
    ids = {r.request_id for r in audit.read(str(tmp_path)) if r.action == "CheckByCard"}
    assert ids == {f"{t}/{i}" for t, i in done} and len(ids) == 2400
    assert report.segments > 2
    assert onshi(["audit", "verify", "--dir", str(tmp_path)]) == 0


def test_unsynced_log_from_many_threads_loses_nothing(tmp_path):
    """--audit-no-sync: appends lead their own batch with the GIL held, and
    wait (GIL released) only while another thread rotates the segment."""
    log = AuditLog(str(tmp_path), "s", segment_bytes=5_000, durable=False, kind="native")
    assert log.native

    def appender(t):
        for i in range(300):
            log.append(AuditRecord(actor=f"facility:{t}", action="CheckByCard", request_id=f"{t}/{i}"))

    threads = [threading.Thread(target=appender, args=(t,), daemon=True) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    # A lock-order slip (GIL vs the writer's mutex) shows as threads stuck here.
    assert not any(t.is_alive() for t in threads), "appenders deadlocked"
    log.close()
    report = audit.verify(str(tmp_path))
    assert report.ok, report.problems
    ids = [r.request_id for r in audit.read(str(tmp_path)) if r.action == "CheckByCard"]
    assert sorted(ids) == sorted(f"{t}/{i}" for t in range(8) for i in range(300))
    assert report.segments > 5


def test_closed_log_refuses_records(tmp_path):
    log = AuditLog(str(tmp_path), "s", kind="native")
    log.append(AuditRecord(actor="a", action="b"))
    log.close()
    with pytest.raises(RuntimeError):
        log.append(AuditRecord(actor="a", action="b"))
