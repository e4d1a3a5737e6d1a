"""Folder mode (`onshi terminal watch REQ_DIR RES_DIR`) against a real mTLS
server: every request answered exactly once, atomically, also when the watcher
is SIGKILLed in the middle of a batch and started again, and with two watchers
on one folder."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from tests.test_terminal_support import (
    KYOKAI,
    SATO,
    SUZUKI,
    UNION,
    YOSHIDA,
    Reader,
    cleanup_shared,
    shared_pki,
    shared_server,
    terminal_args,
)

KILL_BATCH = 300


@pytest.fixture(scope="session")
def pki_dir():
    yield shared_pki()
    cleanup_shared()  # at session end, whichever terminal module asked first


@pytest.fixture(scope="session")
def server(pki_dir):
    return shared_server()


@pytest.fixture
def dirs(tmp_path):
    req, res = tmp_path / "req", tmp_path / "res"
    req.mkdir()
    res.mkdir()
    return str(req), str(res)


def put_request(req_dir: str, name: str, doc) -> None:
    # As the HIS must: write a hidden temporary, then rename into place.
    tmp = os.path.join(req_dir, "." + name + ".tmp")
    with open(tmp, "w") as f:
        f.write(doc if isinstance(doc, str) else json.dumps(doc, ensure_ascii=False))
    os.rename(tmp, os.path.join(req_dir, name))


def number_request(who, index=0, birth=None):
    person, quals = who
    q = quals[index]
    b = person.birth_date
    return {
        "kind": "number",
        "insurer_number": q.insurer_number,
        "symbol": q.symbol,
        "number": q.number,
        "branch": q.branch,
        "birth_date": birth or f"{b.year:04d}-{b.month:02d}-{b.day:02d}",
    }


def watcher(server, pki_dir, req, res, *extra, env=None):
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "onshi.cli",
            "terminal",
            "watch",
            req,
            res,
            *terminal_args(server.target, pki_dir),
            "--interval",
            "0.05",
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(env or os.environ, PYTHONUNBUFFERED="1"),
    )


def results(res_dir: str) -> dict[str, dict]:
    out = {}
    for name in os.listdir(res_dir):
        if not name.startswith("."):
            with open(os.path.join(res_dir, name), encoding="utf-8") as f:
                out[name] = json.load(f)
    return out


def test_each_request_is_answered_once_with_its_outcome(server, pki_dir, dirs):
    req, res = dirs
    put_request(req, "001-valid.json", number_request(YOSHIDA))
    put_request(req, "002-lost.json", number_request(SUZUKI))
    put_request(req, "003-newer.json", number_request(SATO, 0))
    put_request(req, "004-birth-mismatch.json", number_request(YOSHIDA, birth="1999-01-01"))
    put_request(req, "005-check-digit.json", {**number_request(YOSHIDA), "insurer_number": UNION[:-1] + "0"})
    put_request(req, "006-garbage.json", "{not json")
    put_request(req, "007-no-birth.json", {"kind": "number", "insurer_number": KYOKAI, "number": "88"})
    put_request(req, ".hidden.json", number_request(YOSHIDA))  # a request still being written
    put_request(req, "notes.txt", "ignored")
    first = watcher(server, pki_dir, req, res, "--once")
    out, err = first.communicate(timeout=60)
    assert first.returncode == 0, err
    got = results(res)
    assert sorted(got) == [
        "001-valid.json",
        "002-lost.json",
        "003-newer.json",
        "004-birth-mismatch.json",
        "005-check-digit.json",
        "006-garbage.json",
        "007-no-birth.json",
    ]
    assert {n: d["outcome"] for n, d in got.items()} == {
        "001-valid.json": "valid",
        "002-lost.json": "invalid",
        "003-newer.json": "invalid_newer_exists",
        "004-birth-mismatch.json": "no_record",
        "005-check-digit.json": "input_rejected",
        "006-garbage.json": "request_invalid",
        "007-no-birth.json": "request_invalid",
    }
    assert got["001-valid.json"]["qualifications"][0]["person"]["name"] == YOSHIDA[0].name
    assert got["001-valid.json"]["exit_code"] == 0 and got["002-lost.json"]["exit_code"] == 12
    assert got["005-check-digit.json"]["field_errors"][0]["field"] == "insurer_number"
    assert all(d["request"] == n for n, d in got.items())
    assert out.splitlines()[0] == "answered 001-valid.json valid exit=0"  # name order
    assert not [n for n in os.listdir(res) if n.startswith(".")]  # no temporaries left
    # A second run finds nothing to do and touches nothing.
    before = {n: os.stat(os.path.join(res, n)).st_ino for n in got}
    second = watcher(server, pki_dir, req, res, "--once")
    out2, _ = second.communicate(timeout=60)
    assert second.returncode == 0 and out2 == ""
    assert {n: os.stat(os.path.join(res, n)).st_ino for n in got} == before


def test_sigkill_mid_batch_then_restart_answers_each_request_once(server, pki_dir, dirs):
    req, res = dirs
    people = [YOSHIDA, SUZUKI, SATO]
    names = [f"{i:04d}.json" for i in range(KILL_BATCH)]
    for i, name in enumerate(names):
        put_request(req, name, number_request(people[i % 3]))
    torn: list[str] = []
    stop = threading.Event()

    def read_results_while_written():
        # Atomicity as a reader sees it: any visible result parses in full.
        while not stop.is_set():
            for name in os.listdir(res):
                if name.startswith("."):
                    continue
                try:
                    with open(os.path.join(res, name), encoding="utf-8") as f:
                        json.load(f)
                except ValueError:
                    torn.append(name)
            time.sleep(0.005)

    observer = threading.Thread(target=read_results_while_written, daemon=True)
    observer.start()
    first = watcher(server, pki_dir, req, res)
    first_out = Reader(first.stdout)
    deadline = time.monotonic() + 60
    while len(first_out.lines) < 5 and time.monotonic() < deadline and first.poll() is None:
        time.sleep(0.002)
    first.send_signal(signal.SIGKILL)
    first.wait()
    first_out.join(5)
    done_at_kill = len([n for n in os.listdir(res) if not n.startswith(".")])
    assert 5 <= done_at_kill < KILL_BATCH, "the watcher must die in the middle of the batch"
    # A temporary left by a dead writer (as SIGKILL between write and link leaves one).
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    with open(os.path.join(res, f".{names[-1]}.{int(dead.stdout)}.tmp"), "w") as f:
        f.write('{"half": ')

    second = watcher(server, pki_dir, req, res, "--once")
    second_out, err = second.communicate(timeout=120)
    stop.set()
    observer.join(5)
    assert second.returncode == 0, err
    got = results(res)
    assert sorted(got) == names
    assert not [n for n in os.listdir(res) if n.startswith(".")]
    assert torn == []
    expected = {"valid", "invalid", "invalid_newer_exists"}
    assert {d["outcome"] for d in got.values()} == expected
    for i, name in enumerate(names):
        assert got[name]["request"] == name
        assert got[name]["outcome"] == ["valid", "invalid", "invalid_newer_exists"][i % 3]
    answered = [line.split()[1] for line in first_out.lines + second_out.splitlines()]
    assert len(answered) == len(set(answered))  # no request answered twice
    # The restart answered exactly what the first run had not published.
    assert len(second_out.splitlines()) == KILL_BATCH - done_at_kill


def test_two_watchers_on_one_folder_never_answer_twice(server, pki_dir, dirs):
    req, res = dirs
    names = [f"{i:03d}.json" for i in range(60)]
    for name in names:
        put_request(req, name, number_request(YOSHIDA))
    a = watcher(server, pki_dir, req, res, "--once")
    b = watcher(server, pki_dir, req, res, "--once")
    out_a, err_a = a.communicate(timeout=120)
    out_b, err_b = b.communicate(timeout=120)
    assert a.returncode == 0 and b.returncode == 0, err_a + err_b
    answered = [line.split()[1] for line in (out_a + out_b).splitlines()]
    assert sorted(answered) == names  # each published by exactly one watcher
    assert sorted(results(res)) == names


def test_fifo_device_directory_and_oversize_requests_never_block_the_watcher(server, pki_dir, dirs):
    """Whatever sits under a request name, the watcher answers it without
    waiting on it or reading without end: a FIFO no one writes to (opening it
    for reading would block forever), a link to /dev/zero (never ends), a
    directory, a file over the size bound. Each gets `request_invalid`; the
    real request beside them is answered."""
    from onshi.terminal.watch import MAX_REQUEST_BYTES

    req, res = dirs
    os.mkfifo(os.path.join(req, "001-fifo.json"))
    os.symlink("/dev/zero", os.path.join(req, "002-zero.json"))
    os.mkdir(os.path.join(req, "003-dir.json"))
    put_request(req, "004-huge.json", '{"kind": "number", "pad": "' + "x" * MAX_REQUEST_BYTES + '"}')
    put_request(req, "005-nested.json", "[" * 50_000)
    put_request(req, "006-valid.json", number_request(YOSHIDA))
    proc = watcher(server, pki_dir, req, res, "--once")
    try:
        _out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    got = results(res)
    assert {n: d["outcome"] for n, d in got.items()} == {
        "001-fifo.json": "request_invalid",
        "002-zero.json": "request_invalid",
        "003-dir.json": "request_invalid",
        "004-huge.json": "request_invalid",
        "005-nested.json": "request_invalid",
        "006-valid.json": "valid",
    }
    assert "regular file" in got["001-fifo.json"]["detail"]
    assert "at most" in got["004-huge.json"]["detail"]
