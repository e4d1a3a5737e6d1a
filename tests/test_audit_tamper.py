"""What `onshi audit verify` catches when someone with write access to the
disk deletes evidence: the head (also with the last records cut), a whole
worker's stream directory, the manifest, an entry of it, leading segments
behind a made-up anchor; and what it can catch only with the audit key (a
recomputed head or manifest) or with an anchor kept elsewhere (files restored
from an earlier copy). docs/TRUST.md states the same, case by case."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from onshi.cli import main as onshi
from onshi.core import audit, twins
from onshi.core.audit import AuditLog
from tests.test_audit_log import offsets, rec, segment

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))


@pytest.fixture(autouse=True)
def writer(impl, monkeypatch):
    """Every test twice (conftest's impl): the native group commit and the Python
    reference, for every log the test opens (ONSHI_ENGINE)."""
    monkeypatch.setenv(twins.ENV, impl)
    return impl


def two_workers(directory, n: int = 10, key: bytes | None = None) -> None:
    """What two `onshi serve` workers leave: two streams, each rotated once, closed."""
    for stream in ("pid100", "pid200"):
        log = AuditLog(str(directory), stream, key=key)
        for i in range(n):
            log.append(rec(i))
        log.rotate()
        for i in range(n):
            log.append(rec(100 + i))
        log.close()


def problems(directory, key: bytes | None = None, against: dict | None = None) -> str:
    report = audit.verify(str(directory), key, against)
    return "" if report.ok else "\n".join(report.problems)


def cut_last_records(directory, stream: str, count: int, seq: int = 2) -> None:
    path = segment(directory, stream, seq)
    start, _ = offsets(path)[-count]
    with open(path, "r+b") as f:
        f.truncate(start)


def head_path(directory, stream: str) -> str:
    return os.path.join(str(directory), stream, "head")


def rewrite_head_to_match(directory, stream: str, key: bytes | None = None) -> None:
    """What an attacker writes after cutting records: a head that matches the
    stream as it now is (a MAC only if they had the key)."""
    path = segment(directory, stream, 2)
    scan = audit.scan_segment(path)
    with open(head_path(directory, stream), "wb") as f:
        f.write(audit.head_line(stream, 2, scan.records_before + scan.count, scan.last_hash, key))


def rewrite_manifest_without(directory, stream: str, key: bytes | None = None) -> None:
    """The manifest as an attacker would leave it: the stream's events dropped,
    sealed again (with the key only if they had it)."""
    m = audit.load_manifest(str(directory))
    audit._write_manifest(str(directory), [e for e in m.events if e.stream != stream], key)


# --- deletion, no key ------------------------------------------------------------------


def test_an_intact_log_verifies(tmp_path):
    two_workers(tmp_path)
    assert problems(tmp_path) == ""
    assert onshi(["audit", "verify", "--dir", str(tmp_path)]) == 0


def test_deleting_head_is_detected(tmp_path):
    two_workers(tmp_path)
    os.unlink(head_path(tmp_path, "pid200"))
    assert "pid200: head missing" in problems(tmp_path)


def test_deleting_head_with_the_last_records_cut_is_detected(tmp_path, capsys):
    two_workers(tmp_path)
    os.unlink(head_path(tmp_path, "pid200"))
    cut_last_records(tmp_path, "pid200", 3)
    found = problems(tmp_path)
    assert "pid200: head missing" in found
    assert "manifest close" in found and "records removed from the end" in found  # the close event counted them
    assert onshi(["audit", "verify", "--dir", str(tmp_path)]) == 1
    assert "TAMPERED: pid200" in capsys.readouterr().out


def test_deleting_a_whole_stream_directory_is_detected(tmp_path, capsys):
    two_workers(tmp_path)
    shutil.rmtree(tmp_path / "pid100")
    assert "pid100: directory missing, but the manifest open" in problems(tmp_path)
    assert onshi(["audit", "verify", "--dir", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "OK" not in out and "FAILED: 1 streams" in out


def test_deleting_every_stream_or_the_manifest_is_detected(tmp_path):
    two_workers(tmp_path)
    os.unlink(tmp_path / "manifest")
    assert "manifest missing" in problems(tmp_path)
    for stream in ("pid100", "pid200"):
        shutil.rmtree(tmp_path / stream)
    assert "no access log" in problems(tmp_path)
    assert problems(tmp_path / "never-written") != ""  # a wrong path is not "OK: 0 streams"


def test_an_edited_or_cut_manifest_is_detected(tmp_path):
    two_workers(tmp_path)
    with open(tmp_path / "manifest", "rb") as f:
        lines = f.read().split(b"\n")
    with open(tmp_path / "manifest", "wb") as f:  # the last event dropped, the seal left as it was
        f.write(b"\n".join(lines[:-3] + lines[-2:]))
    assert "manifest seal does not verify" in problems(tmp_path)


def test_leading_segments_removed_behind_a_made_up_anchor_are_detected(tmp_path):
    """Compaction writes an anchor; one written by hand (from the real chain,
    so it links) to hide the oldest records is not a compaction the manifest
    recorded."""
    two_workers(tmp_path)
    scan = audit.scan_segment(segment(tmp_path, "pid100", 1))
    os.unlink(segment(tmp_path, "pid100", 1))
    with open(tmp_path / "pid100" / "anchor", "w") as f:
        json.dump({"seq": 1, "records": scan.records_before + scan.count, "hash": scan.last_hash.hex()}, f)
    assert "anchor is not a compaction the manifest recorded" in problems(tmp_path)


def test_a_stream_added_by_hand_is_detected(tmp_path):
    two_workers(tmp_path)
    shutil.copytree(tmp_path / "pid100", tmp_path / "pid300")
    assert "pid300: not in the manifest" in problems(tmp_path)


# --- what the key adds ------------------------------------------------------------------


def test_without_a_key_a_recomputed_head_and_manifest_are_not_caught(tmp_path):
    """The limit of a keyless log, stated in docs/TRUST.md: SHA-256 chains have
    no secret, so whoever can write the files can cut records or drop a stream
    and write a head and manifest that match."""
    two_workers(tmp_path)
    cut_last_records(tmp_path, "pid200", 3)
    rewrite_head_to_match(tmp_path, "pid200")
    m = audit.load_manifest(str(tmp_path))
    audit._write_manifest(
        str(tmp_path), [e for e in m.events if not (e.stream == "pid200" and e.event == "close")], None
    )
    shutil.rmtree(tmp_path / "pid100")
    rewrite_manifest_without(tmp_path, "pid100")
    assert problems(tmp_path) == ""


def test_with_a_key_a_recomputed_head_is_caught(tmp_path):
    two_workers(tmp_path, key=KEY)
    assert problems(tmp_path, KEY) == ""
    cut_last_records(tmp_path, "pid200", 3)
    rewrite_head_to_match(tmp_path, "pid200")  # no MAC: the attacker has no key
    m = audit.load_manifest(str(tmp_path))
    audit._write_manifest(
        str(tmp_path), [e for e in m.events if not (e.stream == "pid200" and e.event == "close")], None
    )
    found = problems(tmp_path, KEY)
    assert "pid200: head carries no MAC" in found and "manifest is not sealed with the audit key" in found
    rewrite_head_to_match(tmp_path, "pid200", OTHER_KEY)  # a MAC under a key of their own
    assert "head MAC does not verify" in problems(tmp_path, KEY)


def test_with_a_key_a_deleted_stream_cannot_be_written_out_of_the_manifest(tmp_path):
    two_workers(tmp_path, key=KEY)
    shutil.rmtree(tmp_path / "pid100")
    rewrite_manifest_without(tmp_path, "pid100", OTHER_KEY)
    assert "manifest is sealed with another key" in problems(tmp_path, KEY)
    rewrite_manifest_without(tmp_path, "pid100", None)
    assert "manifest is not sealed with the audit key" in problems(tmp_path, KEY)


def test_with_a_key_verify_without_it_still_checks_the_rest_and_says_so(tmp_path, capsys):
    two_workers(tmp_path, key=KEY)
    report = audit.verify(str(tmp_path))
    assert report.ok and any("not checked without --key" in n for n in report.notes)
    key_file = tmp_path.parent / f"{tmp_path.name}.key"
    key_file.write_text(KEY.hex() + "\n")
    assert onshi(["audit", "verify", "--dir", str(tmp_path), "--key", str(key_file)]) == 0
    assert "OK (MACs checked)" in capsys.readouterr().out
    key_file.write_text(OTHER_KEY.hex() + "\n")
    assert onshi(["audit", "verify", "--dir", str(tmp_path), "--key", str(key_file)]) == 1
    key_file.write_text("not a key\n")
    assert onshi(["audit", "verify", "--dir", str(tmp_path), "--key", str(key_file)]) == 2


def test_files_restored_from_an_earlier_copy_are_caught_by_an_external_anchor(tmp_path):
    """With the key, cutting records needs a head (and manifest) copied earlier:
    the MACs then verify. An anchor taken later and kept elsewhere catches it."""
    log = AuditLog(str(tmp_path), "ingest", key=KEY)
    for i in range(5):
        log.append(rec(i))
    saved = {name: (tmp_path / name).read_bytes() for name in ("manifest", "ingest/head")}
    for i in range(5, 12):
        log.append(rec(i))
    log.close()
    anchor = audit.anchor_of(str(tmp_path))  # e.g. sent daily to the review body
    cut_last_records(tmp_path, "ingest", 7, seq=1)
    for name, data in saved.items():
        (tmp_path / name).write_bytes(data)
    assert problems(tmp_path, KEY) == ""  # the rollback itself verifies...
    found = problems(tmp_path, KEY, anchor)  # ...but not against the anchor
    assert "external anchor recorded 12 records" in found and "manifest: does not continue" in found


def test_audit_anchor_command_prints_a_usable_anchor(tmp_path, capsys):
    two_workers(tmp_path)
    capsys.readouterr()
    assert onshi(["audit", "anchor", "--dir", str(tmp_path)]) == 0
    anchor_file = tmp_path.parent / f"{tmp_path.name}.anchor.json"
    anchor_file.write_text(capsys.readouterr().out)
    assert onshi(["audit", "verify", "--dir", str(tmp_path), "--against", str(anchor_file)]) == 0
    shutil.rmtree(tmp_path / "pid200")
    rewrite_manifest_without(tmp_path, "pid200")
    assert onshi(["audit", "verify", "--dir", str(tmp_path), "--against", str(anchor_file)]) == 1
    assert onshi(["audit", "anchor", "--dir", str(tmp_path)]) == 0  # a keyless rewrite: only an anchor catches it


# --- writers never seal over evidence --------------------------------------------------


def test_a_writer_refuses_a_stream_whose_records_were_cut(tmp_path):
    log = AuditLog(str(tmp_path), "ingest")
    for i in range(10):
        log.append(rec(i))
    log.close()
    cut_last_records(tmp_path, "ingest", 3, seq=1)
    with pytest.raises(RuntimeError, match="records removed"):
        AuditLog(str(tmp_path), "ingest")
    os.unlink(head_path(tmp_path, "ingest"))
    with pytest.raises(RuntimeError, match="head missing"):
        AuditLog(str(tmp_path), "ingest")
    assert problems(tmp_path) != ""  # the evidence is still there for verify


def test_a_writer_refuses_a_damaged_or_missing_manifest_and_a_key_change(tmp_path):
    two_workers(tmp_path, key=KEY)
    with pytest.raises(audit.ManifestError, match="sealed with an audit key"):
        AuditLog(str(tmp_path), "pid300")  # no key: it would reseal the manifest without it
    with pytest.raises(audit.ManifestError, match="another key"):
        AuditLog(str(tmp_path), "pid300", key=OTHER_KEY)
    data = (tmp_path / "manifest").read_bytes()
    (tmp_path / "manifest").write_bytes(data.replace(b'"pid100"', b'"pid101"', 1))
    with pytest.raises(audit.ManifestError, match="seal does not verify"):
        AuditLog(str(tmp_path), "pid300", key=KEY)
    os.unlink(tmp_path / "manifest")
    with pytest.raises(audit.ManifestError, match="no manifest"):
        AuditLog(str(tmp_path), "pid300", key=KEY)
    assert not (tmp_path / "manifest").exists()


def test_seal_adopts_a_log_without_manifest_and_can_key_it(tmp_path, capsys):
    """A log from before manifests (or an unkeyed one to be keyed): `onshi
    audit seal` records every stream after checking it, servers stopped."""
    two_workers(tmp_path)
    os.unlink(tmp_path / "manifest")
    key_file = tmp_path.parent / f"{tmp_path.name}.key"
    assert onshi(["audit", "keygen", "--out", str(key_file)]) == 0
    assert onshi(["audit", "keygen", "--out", str(key_file)]) == 2  # never replaces a key
    assert onshi(["audit", "seal", "--dir", str(tmp_path), "--key", str(key_file)]) == 0
    key = audit.load_key(str(key_file))
    assert problems(tmp_path, key) == ""
    log = AuditLog(str(tmp_path), "pid100", key=key)  # continues under the key
    log.append(rec(999))
    log.close()
    assert problems(tmp_path, key) == ""
    held = AuditLog(str(tmp_path), "pid300", key=key)
    capsys.readouterr()
    assert onshi(["audit", "seal", "--dir", str(tmp_path), "--key", str(key_file)]) == 1  # already keyed
    held.close()


def test_seal_refuses_a_log_that_does_not_verify(tmp_path, capsys):
    two_workers(tmp_path)
    os.unlink(tmp_path / "manifest")
    cut_last_records(tmp_path, "pid100", 2)
    assert onshi(["audit", "seal", "--dir", str(tmp_path)]) == 1
    assert "records removed" in capsys.readouterr().out
    assert not (tmp_path / "manifest").exists()


def test_compaction_is_recorded_and_still_verifies_under_the_key(tmp_path):
    import time

    clock = [time.time_ns() - 6 * 365 * 86400 * 10**9]
    log = AuditLog(str(tmp_path), "s", clock=lambda: clock[0], key=KEY)
    for i in range(5):
        log.append(rec(i))
    log.rotate()
    clock[0] = time.time_ns()
    log.append(rec(10))
    log.rotate()
    assert log.compact() == 1
    log.close()
    assert problems(tmp_path, KEY) == ""
    assert [e.event for e in audit.load_manifest(str(tmp_path)).events].count("compact") == 1


# --- audit show ------------------------------------------------------------------------


def test_audit_show_on_a_garbage_segment_exits_2_with_one_line(tmp_path, capsys):
    two_workers(tmp_path, n=2)
    capsys.readouterr()
    with open(segment(tmp_path, "pid100", 1), "wb") as f:
        f.write(os.urandom(300))
    assert onshi(["audit", "show", "--dir", str(tmp_path)]) == 2
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 and "seg-00000001.log: not an onshi audit segment" in out[0]
    assert onshi(["audit", "show", "--dir", str(tmp_path / "nowhere")]) == 2
    assert "no such directory" in capsys.readouterr().out
