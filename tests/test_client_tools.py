"""The command-line clients against secured servers as the README runs them
(`onshi ingest-serve --pki`, `onshi serve --pki`: real mTLS on loopback). Each
command picks its client certificate from the PKI (`--as`, or the one its work
needs), bulk updates go through StreamUpdateBatches as an insurer, and a server
that is not there — or accepts connections and never answers — ends every
command with exit 1 and one line once its --timeout has passed, never a hang
or a traceback."""

from __future__ import annotations

import csv
import socket
import subprocess
import threading

import grpc
import pytest

from onshi.client import connection
from onshi.commands.ingest import CSV_COLUMNS
from onshi.v1 import enrollment_pb2, enrollment_pb2_grpc
from tests import ingest_support as s
from tests.trust_helpers import FACILITY, INSURER_A, INSURER_B, build_store, pki_dir, secure_channel


@pytest.fixture(scope="module")
def secured(tmp_path_factory):
    base = tmp_path_factory.mktemp("client-tools")
    build_store(str(base / "store"))
    ingest = s.Proc(
        s.onshi(
            "ingest-serve",
            "--data",
            str(base / "store"),
            "--port",
            "0",
            "--port-file",
            str(base / "ingest.port"),
            "--pki",
            pki_dir(),
        ),
        base / "ingest.port",
        base / "ingest.log",
        env=s.INGEST_ENV,
    )
    try:
        serve = s.Proc(
            s.onshi(
                "serve",
                "--data",
                str(base / "store"),
                "--port",
                "0",
                "--workers",
                "1",
                "--port-file",
                str(base / "serve.port"),
                "--pki",
                pki_dir(),
            ),
            base / "serve.port",
            base / "serve.log",
            env=s.INGEST_ENV,
        )  # one deployment: one switch
    except Exception:
        ingest.stop()
        raise
    yield ingest, serve
    serve.stop()
    ingest.stop()


def run(*args, env=None, timeout=90):
    return subprocess.run(
        s.onshi(*args),
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**s._env(), "ONSHI_PKI": "", **(env or {})},
    )


def one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def registry_csv(path, residents):
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["resident_id", "name", "name_kana", "birth_date", "sex", "address", "postcode"])
        for r in residents:
            b = r.birth_date
            w.writerow(
                [
                    r.resident_id,
                    r.name,
                    r.name_kana,
                    f"{b.year:04d}-{b.month:02d}-{b.day:02d}",
                    r.sex,
                    r.address,
                    r.postcode,
                ]
            )


def updates_csv(path, residents, insurer):
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        w.writeheader()
        for i, r in enumerate(residents):
            b = r.birth_date
            w.writerow(
                dict(
                    update_id=f"tools-{r.resident_id}",
                    insurer_number=insurer,
                    resident_id=r.resident_id,
                    change="acquisition",
                    name=r.name,
                    name_kana=r.name_kana,
                    birth_date=f"{b.year:04d}-{b.month:02d}-{b.day:02d}",
                    sex=str(r.sex),
                    address=r.address,
                    postcode=r.postcode,
                    symbol="T1",
                    number=f"{700 + i}",
                    branch="00",
                    relationship="insured",
                    insurer_name="テスト健保",
                    card_kind="employee",
                    acquisition_date="2024-04-01",
                    burden_ratio="30",
                )
            )


CLAIMS_HEADER = [
    "claim_id",
    "facility_code",
    "insurer_number",
    "symbol",
    "number",
    "branch",
    "birth_date",
    "first_visit_date",
    "kind",
    "points",
]


def claims_csv(path):
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(CLAIMS_HEADER)
        w.writerow(["t1", FACILITY, INSURER_A, "A1", "100", "00", "1970-01-02", "2024-04-02", "medical", "100"])


# --- which certificate ---------------------------------------------------------------------


def test_callers_are_found_by_role_code_or_file_stem():
    pki = pki_dir()
    assert connection.find_identity(pki, "operator").files[1].endswith("/onshi/operator.pem")
    assert connection.find_identity(pki, f"insurer:{INSURER_A}").files[1].endswith("/onshi/insurer-a.pem")
    b = connection.find_identity(pki, f"insurer:{INSURER_B}")
    assert b.files[1].endswith("/onshi/insurer-b.pem") and INSURER_B in b.codes
    assert connection.find_identity(pki, f"facility:{FACILITY}").files[1].endswith(f"/onshi/facility-{FACILITY}.pem")
    assert connection.find_identity(pki, "insurer-c").files[1].endswith("/onshi/insurer-c.pem")
    with pytest.raises(connection.ConnectError, match="no client certificate for insurer:99999999"):
        connection.find_identity(pki, "insurer:99999999")
    with pytest.raises(connection.ConnectError, match="not a certificate"):
        connection.find_identity(pki, "nobody")
    with pytest.raises(connection.ConnectError, match="not an `onshi pki init` directory"):
        connection.find_identity(pki + "/nope", "operator")


# --- against the secured servers -------------------------------------------------------------


def test_stream_update_batches_is_an_insurers_method(secured):
    ingest, _ = secured

    def call(stem):
        stub = enrollment_pb2_grpc.EnrollmentServiceStub(secure_channel(ingest.port, stem))
        return list(stub.StreamUpdateBatches(iter([enrollment_pb2.StreamUpdateBatchesRequest()]), timeout=10))

    assert call("insurer-a") == []  # allowed: an empty batch has no acks
    for stem in ("review", "operator", f"facility-{FACILITY}"):
        with pytest.raises(grpc.RpcError) as err:
            call(stem)
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED, stem


def test_ingest_file_over_mtls_as_operator_then_as_the_files_insurer(secured, tmp_path):
    ingest, _ = secured
    residents = [s.resident(9100 + i) for i in range(3)]
    registry_csv(tmp_path / "registry.csv", residents)
    updates_csv(tmp_path / "updates.csv", residents, INSURER_A)
    env = {"ONSHI_PKI": pki_dir()}  # as the README's `export ONSHI_PKI=var/pki`
    out = run(
        "ingest-file", str(tmp_path / "registry.csv"), "--registry", "--target", ingest.target, "--no-progress", env=env
    )
    assert out.returncode == 0, out.stderr
    assert "3 registry records stored" in out.stdout
    # The bulk path (StreamUpdateBatches), with the certificate covering the file's insurer.
    out = run("ingest-file", str(tmp_path / "updates.csv"), "--target", ingest.target, "--no-progress", env=env)
    assert out.returncode == 0, out.stderr
    assert "3 of 3 updates: accepted 3" in out.stdout
    out = run(
        "ingest-file",
        str(tmp_path / "updates.csv"),
        "--target",
        ingest.target,
        "--no-progress",
        "--batch",
        "1",
        "--pki",
        pki_dir(),
    )
    assert out.returncode == 0 and "duplicate 3" in out.stdout, out.stderr
    # Another insurer's certificate may not send insurer A's updates: refused, one line, exit 2.
    out = run(
        "ingest-file",
        str(tmp_path / "updates.csv"),
        "--target",
        ingest.target,
        "--no-progress",
        "--as",
        f"insurer:{INSURER_B}",
        env=env,
    )
    assert out.returncode == 2
    assert "PERMISSION_DENIED" in one_line(out.stderr)
    # A file for an insurer the PKI has no certificate for: said before anything is sent.
    updates_csv(tmp_path / "other.csv", residents[:1], "06130017")
    out = run("ingest-file", str(tmp_path / "other.csv"), "--target", ingest.target, env=env)
    assert out.returncode == 2
    assert "no client certificate for insurer:06130017" in one_line(out.stderr)


def test_claims_verify_over_mtls_as_review_body_or_facility(secured, tmp_path):
    ingest, _ = secured
    claims_csv(tmp_path / "in.csv")
    for extra in ((), ("--facility", FACILITY)):
        out = run(
            "claims",
            "verify",
            str(tmp_path / "in.csv"),
            str(tmp_path / "out.csv"),
            "--target",
            ingest.target,
            "--pki",
            pki_dir(),
            *extra,
        )
        assert out.returncode == 0, out.stderr
        with open(tmp_path / "out.csv", newline="", encoding="utf-8") as f:
            assert [(r["claim_id"], r["outcome"]) for r in csv.DictReader(f)] == [("t1", "OK")]
    out = run(
        "claims",
        "verify",
        str(tmp_path / "in.csv"),
        str(tmp_path / "denied.csv"),
        "--target",
        ingest.target,
        "--pki",
        pki_dir(),
        "--as",
        "insurer-a",
    )
    assert out.returncode == 2
    assert "PERMISSION_DENIED" in one_line(out.stderr)
    assert not (tmp_path / "denied.csv").exists()  # no verdict file from a refused run


def test_check_and_health_over_mtls(secured):
    _, serve = secured
    out = run("check", "--card", "1002", "--target", serve.target, "--pki", pki_dir())
    assert out.returncode == 0, out.stderr  # valid-2's person, as the operator
    out = run("health", "--target", serve.target, "--pki", pki_dir(), "--wait")
    assert out.returncode == 0 and out.stdout.strip() == "SERVING", out.stderr
    # A facility must prove the card: the operator's shortcut is not theirs.
    out = run("check", "--card", "1002", "--target", serve.target, "--pki", pki_dir(), "--as", f"facility:{FACILITY}")
    assert out.returncode in (1, 2) and "PERMISSION_DENIED" in one_line(out.stderr)
    # Plaintext to an mTLS server: refused in the handshake, said in one line.
    out = run("check", "--card", "1002", "--target", serve.target)
    assert out.returncode == 1
    assert "may require mTLS" in one_line(out.stderr)


def test_mtls_to_a_plaintext_server_is_one_line(tmp_path):
    build_store(str(tmp_path / "store"))
    plain = s.Proc(
        s.onshi(
            "serve",
            "--data",
            str(tmp_path / "store"),
            "--port",
            "0",
            "--workers",
            "1",
            "--port-file",
            str(tmp_path / "port"),
        ),
        tmp_path / "port",
        tmp_path / "log",
    )
    try:
        out = run("check", "--card", "1002", "--target", plain.target, "--pki", pki_dir())
    finally:
        plain.stop()
    assert out.returncode == 1
    assert "closed the connection while setting up TLS: a plaintext server" in one_line(out.stderr)


# --- no answer ----------------------------------------------------------------------------------


def commands(tmp_path, target):
    registry_csv(tmp_path / "registry.csv", [s.resident(9200)])
    updates_csv(tmp_path / "updates.csv", [s.resident(9200)], INSURER_A)
    claims_csv(tmp_path / "in.csv")
    return {
        "check": ("check", "--card", "1002", "--target", target),
        "health": ("health", "--target", target),
        "ingest-file": ("ingest-file", str(tmp_path / "updates.csv"), "--target", target, "--no-progress"),
        "ingest-file --batch 1": (
            "ingest-file",
            str(tmp_path / "updates.csv"),
            "--target",
            target,
            "--batch",
            "1",
            "--no-progress",
        ),
        "ingest-file --registry": (
            "ingest-file",
            str(tmp_path / "registry.csv"),
            "--registry",
            "--target",
            target,
            "--no-progress",
        ),
        "claims verify": ("claims", "verify", str(tmp_path / "in.csv"), str(tmp_path / "out.csv"), "--target", target),
    }


NAMES = ["check", "health", "ingest-file", "ingest-file --batch 1", "ingest-file --registry", "claims verify"]


def dead_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("mtls", [True, False], ids=["mtls", "plaintext"])
@pytest.mark.parametrize("name", NAMES)
def test_unreachable_server_is_one_line_and_exit_1(tmp_path, name, mtls):
    argv = commands(tmp_path, f"127.0.0.1:{dead_port()}")[name]
    out = run(*argv, "--timeout", "3", *(("--pki", pki_dir()) if mtls else ()), timeout=60)
    assert out.returncode == 1, out.stderr
    assert "cannot reach 127.0.0.1:" in one_line(out.stderr)
    assert not (tmp_path / "out.csv").exists()


class SilentServer:
    """Accepts TCP connections and never says a word: a hung server, or a
    network that drops everything after the handshake."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)

    def close(self):
        self.sock.close()
        for conn in self.conns:
            conn.close()


@pytest.mark.parametrize("mtls", [True, False], ids=["mtls", "plaintext"])
@pytest.mark.parametrize("name", NAMES)
def test_silent_server_is_one_line_and_exit_1_after_the_timeout(tmp_path, name, mtls):
    silent = SilentServer()
    try:
        argv = commands(tmp_path, f"127.0.0.1:{silent.port}")[name]
        out = run(*argv, "--timeout", "2", *(("--pki", pki_dir()) if mtls else ()), timeout=60)
    finally:
        silent.close()
    assert out.returncode == 1, out.stderr
    line = one_line(out.stderr)
    assert f"127.0.0.1:{silent.port} within 2 s" in line, line
    assert not (tmp_path / "out.csv").exists()


def test_plaintext_only_to_loopback(tmp_path):
    for name, argv in commands(tmp_path, "192.0.2.1:50051").items():
        out = run(*argv, timeout=60)
        assert out.returncode == 2, (name, out.stderr)
        assert "plaintext only to loopback" in one_line(out.stderr)
