"""`scripts/run.sh`, the README's first command, with ONSHI_DATA pointing at
directories it did not make: it never deletes what it did not create (a file
kept there, a store made by `onshi gen --out` as docs/TERMINAL.md shows), it
serves a store it finds as it is, and its banner comes only once the server
answers SERVING, with the port the server really bound (also for a `--port`
passed through to `onshi serve`).

The serving tests run the whole script: scripts/setup.sh (idempotent: a second
of checks once installed), a server with mTLS on loopback, SIGINT to stop."""

from __future__ import annotations

import hashlib
import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.ingest_support import _env, onshi
from tests.trust_helpers import client_credentials, pki_dir

ROOT = Path(__file__).resolve().parents[1]
RUN = ROOT / "scripts" / "run.sh"
BANNER = re.compile(r"serving on 127\.0\.0\.1:(\d+) over mTLS")


def env_for(data: Path, **extra: str) -> dict:
    return {**_env(), "ONSHI_DATA": str(data), "ONSHI_PKI_DIR": pki_dir(), "ONSHI_PERSONS": "200", **extra}


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- refused before anything is done ------------------------------------------------------


def test_a_directory_with_foreign_files_is_refused_and_left_alone(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "notes.txt").write_text("my notes")
    (data / "kept").mkdir()
    (data / "kept" / "x").write_text("x")
    out = subprocess.run([str(RUN)], env=env_for(data), capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out.stderr
    assert "did not make" in out.stderr and "notes.txt" in out.stderr
    assert (data / "notes.txt").read_text() == "my notes"
    assert (data / "kept" / "x").read_text() == "x"
    assert sorted(os.listdir(data)) == ["kept", "notes.txt"]  # nothing added either


def test_an_unfinished_dataset_of_its_own_with_a_foreign_file_is_refused(tmp_path):
    """A dataset run.sh began (its marker) and did not finish, where the user
    has since put a file: run.sh would remake its own files, but not while
    something else lives there; nothing is deleted."""
    data = tmp_path / "data"
    data.mkdir()
    (data / ".onshi-run").touch()
    (data / "data.mdb").write_bytes(b"half")
    (data / "notes.txt").write_text("mine")
    out = subprocess.run([str(RUN)], env=env_for(data), capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "notes.txt" in out.stderr, out.stderr
    assert (data / "notes.txt").read_text() == "mine" and (data / "data.mdb").read_bytes() == b"half"


def test_a_file_as_data_directory_is_refused(tmp_path):
    (tmp_path / "afile").write_text("keep")
    out = subprocess.run([str(RUN)], env=env_for(tmp_path / "afile"), capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "not a directory" in out.stderr
    assert (tmp_path / "afile").read_text() == "keep"


# --- serving ---------------------------------------------------------------------------------------


class Run:
    """scripts/run.sh in its own session, stdout read line by line."""

    def __init__(self, env: dict, *args: str):
        self.proc = subprocess.Popen(
            [str(RUN), *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )

    def banner_port(self, timeout: float = 240) -> int:
        deadline = time.monotonic() + timeout
        seen = []
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                raise AssertionError(f"run.sh ended without a banner: {''.join(seen)}{self.proc.stderr.read()}")
            seen.append(line)
            if match := BANNER.search(line):
                return int(match.group(1))
        raise AssertionError("no banner in time:\n" + "".join(seen))

    def stop(self) -> int:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)  # Ctrl-C in its terminal
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=30)
        return self.proc.returncode


def serving_now(port: int) -> int:
    """Health over mTLS without waiting for a connection: answers only if the
    server has bound and serves at this moment."""
    with grpc.secure_channel(f"127.0.0.1:{port}", client_credentials("operator")) as channel:
        return (
            health_pb2_grpc.HealthStub(channel)
            .Check(health_pb2.HealthCheckRequest(), timeout=10, wait_for_ready=False)
            .status
        )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_a_store_from_onshi_gen_is_served_untouched_on_the_port_passed_through(tmp_path):
    data = tmp_path / "mystore"
    subprocess.run(
        onshi("gen", "--out", str(data), "--persons", "150"), env=_env(), check=True, capture_output=True, timeout=120
    )
    (data / "notes.txt").write_text("kept by the user")
    before = {name: digest(data / name) for name in ("data.mdb", "gen.json", "notes.txt")}
    port = free_port()
    run = Run(env_for(data), "--workers", "1", "--port", str(port))
    try:
        assert run.banner_port() == port  # the --port passed through, not ONSHI_PORT's 50051
        assert serving_now(port) == health_pb2.HealthCheckResponse.SERVING  # the banner came after binding
    finally:
        status = run.stop()
    assert status == 130
    assert {name: digest(data / name) for name in before} == before
    assert not (data / ".complete").exists() and not (data / ".onshi-run").exists()


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_a_new_directory_gets_a_dataset_and_the_banner_shows_the_bound_port(tmp_path):
    data = tmp_path / "new" / "demo"
    run = Run(env_for(data, ONSHI_PORT="0"), "--workers", "1")
    try:
        port = run.banner_port()
        assert port != 0
        assert serving_now(port) == health_pb2.HealthCheckResponse.SERVING
    finally:
        run.stop()
    assert {".onshi-run", ".complete", "data.mdb", "gen.json"} <= set(os.listdir(data))
