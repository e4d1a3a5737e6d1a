"""`onshi terminal check --number` against a real `onshi serve --pki` (mTLS) process,
no card reader needed: each answer's screen and exit code, bad input, a terminal
whose certificate the server refuses, an unreachable server. The CLI runs in
this process (onshi.cli.main) to keep the suite fast; test_terminal_e2e runs it
as a subprocess."""

from __future__ import annotations

import json
import os
from types import SimpleNamespace

import pytest

from onshi.cli import main
from tests.test_terminal_support import (
    FACILITY,
    KYOKAI,
    LATE,
    SATO,
    SUZUKI,
    TAKAHASHI,
    UNION,
    YOSHIDA,
    cleanup_shared,
    free_port,
    shared_pki,
    shared_server,
    terminal_args,
)


@pytest.fixture(scope="session")
def pki_dir():
    yield shared_pki()
    cleanup_shared()  # at session end, whichever terminal module asked first


@pytest.fixture(scope="session")
def server(pki_dir):
    return shared_server()


def number_args(who, index=0, birth=None):
    person, quals = who
    q = quals[index]
    b = person.birth_date
    return [
        "--number",
        q.insurer_number,
        q.symbol,
        q.number,
        q.branch,
        "--birth",
        birth or f"{b.year:04d}-{b.month:02d}-{b.day:02d}",
    ]


def run(capsys, args: list[str]) -> SimpleNamespace:
    capsys.readouterr()
    try:
        code = main(["terminal", *args])
    except SystemExit as exc:  # argparse and --birth/--as-of parsing
        code = exc.code
    out = capsys.readouterr()
    return SimpleNamespace(returncode=code, stdout=out.out, stderr=out.err)


def check(capsys, server, pki_dir, *args, target=None):
    return run(capsys, ["check", *args, *terminal_args(target or server.target, pki_dir)])


def test_valid_number(capsys, server, pki_dir):
    proc = check(capsys, server, pki_dir, *number_args(YOSHIDA))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "【資格有効】 Valid" in proc.stdout
    assert "確認方法 Method: 保険証番号 insurance number" in proc.stdout
    assert f"氏名 Name: {YOSHIDA[0].name}" in proc.stdout


def test_lost_number_is_invalid(capsys, server, pki_dir):
    proc = check(capsys, server, pki_dir, *number_args(SUZUKI))
    assert proc.returncode == 12
    assert "【資格無効】 Invalid (qualification lost)" in proc.stdout
    assert "・2024-04-01 に資格を喪失しています（99 その他）。" in proc.stdout


def test_lost_number_with_newer_qualification(capsys, server, pki_dir):
    proc = check(capsys, server, pki_dir, *number_args(SATO, 0))
    assert proc.returncode == 13
    assert "【資格無効（新しい資格あり）】 Invalid (a newer qualification exists)" in proc.stdout
    assert UNION not in proc.stdout  # the newer insurer is not revealed to a typed number


def test_late_elderly_and_birth_mismatch(capsys, server, pki_dir):
    ok = check(capsys, server, pki_dir, *number_args(TAKAHASHI, 1))
    assert ok.returncode == 0 and LATE in ok.stdout
    wrong_birth = check(capsys, server, pki_dir, *number_args(TAKAHASHI, 1, birth="1948-03-04"), "--json")
    assert wrong_birth.returncode == 14
    doc = json.loads(wrong_birth.stdout)
    assert doc["outcome"] == "no_record" and doc["method"] == "number"
    assert doc["next_steps"][0]["en"] == "Check the typed insurer number, symbol, number, branch and birth date."


def test_bad_check_digit_is_input_rejected_with_the_field(capsys, server, pki_dir):
    proc = check(
        capsys,
        server,
        pki_dir,
        "--number",
        KYOKAI[:-1] + str((int(KYOKAI[-1]) + 1) % 10),
        "7001",
        "88",
        "00",
        "--birth",
        "1975-01-09",
    )
    assert proc.returncode == 32, proc.stdout
    assert "【入力内容に誤りがあります】 Input rejected" in proc.stdout
    assert "・入力を確認してください: insurer_number — check digit does not match" in proc.stdout


def test_usage_errors_exit_2(capsys, server, pki_dir):
    assert check(capsys, server, pki_dir, "--number", KYOKAI, "", "88", "00").returncode == 2  # no --birth
    assert check(capsys, server, pki_dir, *number_args(YOSHIDA, birth="1980-13-01")).returncode == 2


def test_unreachable_server_by_number(capsys, server, pki_dir):
    proc = check(capsys, server, pki_dir, *number_args(YOSHIDA), "--json", target=f"127.0.0.1:{free_port()}")
    assert proc.returncode == 30
    doc = json.loads(proc.stdout)
    assert doc["outcome"] == "server_unreachable"
    assert doc["next_steps"][0]["ja"] == "【障害時の手順】資格確認ができないため、次の順に受け付けてください。"


def test_certificate_from_another_ca_is_refused(capsys, server, pki_dir):
    rogue = os.path.join(pki_dir, "rogue", f"facility-{FACILITY}")
    proc = run(
        capsys,
        [
            "check",
            *number_args(YOSHIDA),
            "--server",
            server.target,
            "--tls-ca",
            os.path.join(pki_dir, "onshi", "ca.pem"),
            "--tls-cert",
            rogue + ".pem",
            "--tls-key",
            rogue + ".key.pem",
        ],
    )
    # gRPC reports the failed handshake as UNAVAILABLE; the server is up, so it is a refusal.
    assert proc.returncode == 31, proc.stdout
    assert "【この端末は接続を拒否されました】 This terminal was refused" in proc.stdout
    assert "システム管理者に連絡してください" in proc.stdout


def test_non_facility_role_is_refused(capsys, server, pki_dir):
    base = os.path.join(pki_dir, "onshi", "insurer-a")
    proc = run(
        capsys,
        [
            "check",
            *number_args(YOSHIDA),
            "--server",
            server.target,
            "--facility",
            FACILITY,
            "--tls-ca",
            os.path.join(pki_dir, "onshi", "ca.pem"),
            "--tls-cert",
            base + ".pem",
            "--tls-key",
            base + ".key.pem",
        ],
    )
    assert proc.returncode == 31, proc.stdout
    assert "【この端末は接続を拒否されました】 This terminal was refused" in proc.stdout
    assert "PERMISSION_DENIED" in proc.stdout


@pytest.mark.parametrize(
    "card, outcome",
    [
        ("valid-1", None),
        ("expired", "card_certificate_expired"),
        ("revoked", "card_certificate_revoked"),
        ("not-yet-valid", "card_refused"),
        ("forged", "card_refused"),
    ],
)
def test_server_refusals_of_card_proofs_map_to_outcomes(server, pki_dir, card, outcome):
    """The server's verdict on each test card, as the terminal maps it (the E2E
    tests stop expired cards at the terminal before the PIN, so the server's
    CARD_CERTIFICATE_EXPIRED is checked here with a proof signed directly)."""
    import secrets
    import time

    import grpc
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    from onshi.core import cardproof
    from onshi.terminal.client import EligibilityConnection, ServerConfig, outcome_of_error
    from onshi.v1 import eligibility_pb2
    from tests.test_terminal_support import card_files

    cert_path, key_path = card_files(pki_dir, card)
    with open(cert_path, "rb") as f:
        der = x509.load_pem_x509_certificate(f.read()).public_bytes(serialization.Encoding.DER)
    with open(key_path, "rb") as f:
        key = serialization.load_pem_private_key(f.read(), password=None)
    challenge = eligibility_pb2.CardChallenge(
        facility_code=FACILITY, timestamp_unix=int(time.time()), nonce=secrets.token_bytes(32)
    )
    signature = cardproof.sign_challenge(
        key, cardproof.PURPOSE_CHECK_BY_CARD, FACILITY, challenge.timestamp_unix, challenge.nonce
    )
    config = ServerConfig.from_pki(pki_dir, FACILITY, target=server.target)
    with EligibilityConnection(config) as conn:
        try:
            response = conn.check_by_card(der, challenge, signature, None)
        except grpc.RpcError as exc:
            assert outcome is not None, exc.details()
            assert outcome_of_error(exc, server.target)[0].key == outcome
        else:
            assert outcome is None and response.validity == eligibility_pb2.VALIDITY_VALID


def test_card_check_without_a_pcsc_service_is_reader_unavailable(server, pki_dir, tmp_path):
    from tests.test_terminal_support import run_cli

    env = dict(os.environ, PCSCLITE_CSOCK_NAME=str(tmp_path / "no-pcscd.comm"))
    proc = run_cli(["check", "--card", *terminal_args(server.target, pki_dir)], env)
    assert proc.returncode == 28, proc.stdout + proc.stderr
    assert "【カードリーダーが使用できません】 Card reader unavailable" in proc.stdout
    assert "Enter the 4-digit PIN" not in proc.stderr


def test_insecure_dev_demo_server(capsys, tmp_path):
    """`onshi serve --insecure-dev` (loopback, plaintext, demo only): the terminal
    declares the facility role in metadata instead of a client certificate."""
    from tests.test_terminal_support import Server, build_store

    store = str(tmp_path / "store")
    build_store(store)
    demo = Server(store, None, "--insecure-dev")
    try:
        proc = run(
            capsys,
            [
                "check",
                *number_args(YOSHIDA),
                "--server",
                demo.target,
                "--insecure-dev",
                "--facility",
                FACILITY,
            ],
        )
    finally:
        demo.stop()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "【資格有効】 Valid" in proc.stdout
