"""End to end through real parts: a private pcscd with the vpcd driver, the
virtual JPKI card (`python -m onshi.terminal.vcard`, card certificates and keys
from `onshi pki init`), a real EligibilityService over mTLS that verifies the
card proof, and `onshi terminal check --card` as a subprocess reading the card
over PC/SC, asking the PIN and printing the result."""

from __future__ import annotations

import io
import json
import os
import pty
import select
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest

from onshi.cli import main
from tests.test_terminal_support import (
    FACILITY,
    NON_JIS_NAME,
    PIN,
    Reader,
    card_files,
    cleanup_shared,
    free_port,
    run_cli,
    shared_pki,
    shared_server,
    start_pcsc,
    terminal_args,
)

WRONG = "0000"


@pytest.fixture(scope="session")
def pki_dir():
    yield shared_pki()
    cleanup_shared()  # at session end, whichever terminal module asked first


@pytest.fixture(scope="session")
def server(pki_dir):
    return shared_server()


@pytest.fixture(scope="module")
def pcsc(tmp_path_factory):
    p = start_pcsc(str(tmp_path_factory.mktemp("pcsc")))
    yield p
    p.stop()


@pytest.fixture
def insert(pcsc, pki_dir):
    def _insert(name: str, *extra: str):
        pcsc.insert(*card_files(pki_dir, name), PIN, *extra)

    yield _insert
    pcsc.remove()


def check_card(pcsc, server, pki_dir, pin: str | None = PIN, *extra: str, target: str | None = None):
    """`onshi terminal check --card` as a subprocess, the PIN on its stdin."""
    args = ["check", "--card", *terminal_args(target or server.target, pki_dir), *extra]
    return run_cli(args, pcsc.env, stdin="" if pin is None else pin + "\n")


@pytest.fixture
def check_here(capsys, monkeypatch, pcsc, server, pki_dir):
    """The same command run by onshi.cli.main in this process, through the same
    pcscd, card and server: a Python start-up less per check on a loaded machine."""

    def run(pin: str | None = PIN, *extra: str, args: list[str] | None = None) -> SimpleNamespace:
        monkeypatch.setattr(sys, "stdin", io.StringIO("" if pin is None else pin + "\n"))
        capsys.readouterr()
        try:
            code = main(
                [
                    "terminal",
                    "check",
                    "--card",
                    *(args or terminal_args(server.target, pki_dir)),
                    *extra,
                ]
            )
        except SystemExit as exc:
            code = exc.code
        out = capsys.readouterr()
        return SimpleNamespace(returncode=code, stdout=out.out, stderr=out.err)

    return run


def expect(proc, code: int) -> None:
    assert proc.returncode == code, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"


def assert_no_pin_leak(proc, pin: str = PIN):
    assert pin not in proc.stdout and pin not in proc.stderr.replace("[残り", "")


def test_valid_card_prints_the_result(pcsc, server, pki_dir, insert):
    insert("valid-1")
    proc = check_card(pcsc, server, pki_dir)
    expect(proc, 0)
    out = proc.stdout
    assert "【資格有効】 Valid" in out
    assert "確認方法 Method: マイナンバーカード My Number card" in out
    assert f"氏名 Name: {NON_JIS_NAME}" in out and "●" not in out  # full Unicode, IVS kept
    assert "カナ Kana: ヨシダ カツコ" in out
    assert "負担割合 Burden ratio: 3割 30 %" in out
    assert "限度額適用認定証 Limit-amount certificate: 区分 ウ 2026-08-01 〜 2027-07-31" in out
    assert "公費 Subsidy: 難病" in out
    assert "次の対応 Next steps" not in out
    # The prompt went to stderr, with the tries left read from the card.
    assert "Enter the 4-digit PIN [残り3回 3 tries left]" in proc.stderr
    assert_no_pin_leak(proc)


def test_json_output_for_his(check_here, insert):
    insert("valid-1")
    proc = check_here(PIN, "--json")
    expect(proc, 0)
    doc = json.loads(proc.stdout)
    assert doc["outcome"] == "valid" and doc["exit_code"] == 0 and doc["validity"] == "VALIDITY_VALID"
    assert doc["card"]["serial"] == "1001"
    assert doc["qualifications"][0]["person"]["name"] == NON_JIS_NAME
    assert doc["next_steps"] == []
    assert_no_pin_leak(proc)


def test_wrong_pin_shows_tries_left_then_right_pin_resets(check_here, insert):
    insert("valid-1")
    first = check_here(WRONG)
    expect(first, 23)
    assert "【暗証番号が違います】 PIN incorrect" in first.stdout
    assert "残り回数 Tries left: 2" in first.stdout
    assert "・残り2回です。" in first.stdout and "2 tries left" in first.stdout
    second = check_here(WRONG, "--json")
    expect(second, 23)
    assert json.loads(second.stdout)["pin_tries_left"] == 1
    assert "[残り2回 2 tries left]" in second.stderr
    ok = check_here()
    expect(ok, 0)
    assert "[残り1回 1 tries left]" in ok.stderr
    again = check_here()  # a correct PIN restored the counter
    expect(again, 0)
    assert "[残り3回 3 tries left]" in again.stderr


def test_three_wrong_pins_block_the_card(check_here, insert):
    insert("valid-1", "--tries-left", "1")  # two wrong tries already spent
    third = check_here(WRONG)
    expect(third, 24)
    assert "【暗証番号がロックされています】 PIN blocked" in third.stdout
    assert "市区町村窓口で再設定" in third.stdout and "reset at the municipal office" in third.stdout
    blocked = check_here(PIN)  # even the right PIN: never asked
    expect(blocked, 24)
    assert "Enter the 4-digit PIN" not in blocked.stderr
    assert "被保険者資格申立書" in blocked.stdout


def test_no_card_in_the_reader(pcsc, server, pki_dir):
    pcsc.remove()
    proc = check_card(pcsc, server, pki_dir)
    expect(proc, 20)
    assert "【カードが読み取れません】 No card in the reader" in proc.stdout
    assert "Place the card on the reader again and retry." in proc.stdout


def test_card_removed_while_the_pin_is_asked(pcsc, server, pki_dir, insert):
    insert("valid-1")
    pin_read, pin_write = os.pipe()
    env = dict(pcsc.env, ONSHI_TERMINAL_PIN_FD=str(pin_read))
    child = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "onshi.cli",
            "terminal",
            "check",
            "--card",
            *terminal_args(server.target, pki_dir),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        pass_fds=(pin_read,),
    )
    os.close(pin_read)
    err = Reader(child.stderr)
    try:
        err.wait_for("Enter the 4-digit PIN")  # the certificate has been read
        pcsc.remove()
        os.write(pin_write, (PIN + "\n").encode())
        out, _ = child.communicate(timeout=30)
    finally:
        os.close(pin_write)
        if child.poll() is None:
            child.kill()
    assert child.returncode == 21, out
    assert "【カードが取り外されました】 Card removed while reading" in out


def test_expired_certificate_is_refused_before_the_pin(pcsc, server, pki_dir, insert):
    insert("expired")
    proc = check_card(pcsc, server, pki_dir)
    expect(proc, 25)
    assert "【電子証明書の有効期限切れ】 Card certificate expired" in proc.stdout
    assert "市区町村窓口で更新" in proc.stdout and "renew it at the municipal office" in proc.stdout
    assert "Enter the 4-digit PIN" not in proc.stderr  # no PIN try wasted


def test_revoked_certificate_is_refused_by_the_server(check_here, insert):
    insert("revoked")
    proc = check_here()
    expect(proc, 26)
    assert "【電子証明書が失効しています】 Card certificate revoked" in proc.stdout
    assert "CARD_CERTIFICATE_REVOKED" in proc.stdout  # the server's reason, in the detail line


def test_expiring_certificate_warns(check_here, insert):
    insert("expiring")
    proc = check_here()
    expect(proc, 0)
    assert "⚠ 注意 カードの電子証明書の有効期限が近づいています" in proc.stdout
    assert "Warning: The card certificate expires soon" in proc.stdout


def test_unlinked_card_has_no_record(check_here, insert):
    insert("valid-2")
    proc = check_here()
    expect(proc, 14)
    assert "【該当資格なし】 No record" in proc.stdout
    assert "初回紐づけ" in proc.stdout and "被保険者資格申立書" in proc.stdout


def test_dual_enrollment_by_card_is_multiple(check_here, insert):
    insert("valid-3")
    proc = check_here()
    expect(proc, 15)
    assert "【複数該当】 Multiple qualifications" in proc.stdout
    assert "資格 Qualification 1/2" in proc.stdout and "資格 Qualification 2/2" in proc.stdout


def test_unreachable_server_gives_the_failure_procedure(pcsc, server, pki_dir, insert):
    insert("valid-1")
    proc = check_card(pcsc, server, pki_dir, target=f"127.0.0.1:{free_port()}")
    expect(proc, 30)
    assert "【資格確認システムに接続できません】 Eligibility service unreachable" in proc.stdout
    assert "【障害時の手順】" in proc.stdout and "[Failure procedure]" in proc.stdout
    assert "基本4情報" in proc.stdout and "77777777" in proc.stdout
    assert_no_pin_leak(proc)


def test_pin_prompt_does_not_echo_on_a_terminal(pcsc, server, pki_dir, insert):
    insert("valid-1")
    leader, follower = pty.openpty()
    child = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "onshi.cli",
            "terminal",
            "check",
            "--card",
            *terminal_args(server.target, pki_dir),
        ],
        stdin=follower,
        stdout=follower,
        stderr=follower,
        env=pcsc.env,
        start_new_session=True,
    )
    os.close(follower)
    seen = b""
    try:
        deadline = time.monotonic() + 30
        sent = False
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 0.1)
            if ready:
                try:
                    chunk = os.read(leader, 4096)
                except OSError:  # the child closed the terminal
                    break
                if not chunk:
                    break
                seen += chunk
            if not sent and b"tries left]" in seen:
                time.sleep(0.2)  # let getpass switch echo off before typing
                os.write(leader, (PIN + "\n").encode())
                sent = True
            if child.poll() is not None and not ready:
                break
        child.wait(10)
    finally:
        os.close(leader)
        if child.poll() is None:
            child.kill()
    text = seen.decode("utf-8", "replace")
    assert child.returncode == 0, text
    assert "【資格有効】 Valid" in text
    assert PIN not in text  # typed on the terminal, never echoed


def test_facility_mismatch_is_refused(check_here, pki_dir, server, insert):
    insert("valid-1")
    cert = os.path.join(pki_dir, "onshi", f"facility-{FACILITY}")
    proc = check_here(
        PIN,
        args=[
            "--server",
            server.target,
            "--pki",
            pki_dir,
            "--facility",
            "1310000002",
            "--tls-cert",
            cert + ".pem",
            "--tls-key",
            cert + ".key.pem",
        ],
    )
    # The terminal refuses to sign a challenge for another facility than its certificate's.
    expect(proc, 1)
    assert "is not the certificate's" in proc.stdout


def test_folder_mode_card_request(pcsc, server, pki_dir, insert, tmp_path):
    insert("valid-1")
    req, res = tmp_path / "req", tmp_path / "res"
    req.mkdir()
    res.mkdir()
    (req / "0001.json").write_text('{"kind": "card"}')
    pin_read, pin_write = os.pipe()
    os.write(pin_write, (PIN + "\n").encode())
    os.close(pin_write)
    try:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "onshi.cli",
                "terminal",
                "watch",
                str(req),
                str(res),
                "--once",
                *terminal_args(server.target, pki_dir),
            ],
            check=False,
            env=dict(pcsc.env, ONSHI_TERMINAL_PIN_FD=str(pin_read)),
            pass_fds=(pin_read,),
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        os.close(pin_read)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "answered 0001.json valid exit=0\n"
    text = (res / "0001.json").read_text(encoding="utf-8")
    doc = json.loads(text)
    assert doc["outcome"] == "valid" and doc["method"] == "card" and doc["card"]["serial"] == "1001"
    assert doc["qualifications"][0]["person"]["name"] == NON_JIS_NAME
    del doc["answered_at"]  # microseconds could spell anything
    assert PIN not in json.dumps(doc, ensure_ascii=False)


def test_the_pin_never_leaves_the_terminal(check_here, insert, monkeypatch):
    """Every byte the terminal sends to the service, captured at the stub: the
    certificate, the challenge and the card's signature — no PIN."""
    from onshi.terminal import client

    sent: list[bytes] = []
    original_init = client.EligibilityConnection.__init__

    def capturing_init(self, config):
        original_init(self, config)
        call = self.stub.CheckByCard

        def check_by_card(request, **kw):
            sent.append(request.SerializeToString())
            return call(request, **kw)

        self.stub.CheckByCard = check_by_card

    monkeypatch.setattr(client.EligibilityConnection, "__init__", capturing_init)
    insert("valid-1")
    expect(check_here(), 0)
    assert len(sent) == 1
    assert PIN.encode() not in sent[0] and PIN.encode("utf-16-le") not in sent[0]


def test_other_ic_card_is_not_a_my_number_card(check_here, insert):
    insert("valid-1", "--aid", "A0000000031010")  # some other application, no JPKI AP
    proc = check_here()
    expect(proc, 22)
    assert "【マイナンバーカードではありません】 Not a My Number card" in proc.stdout
    assert "Enter the 4-digit PIN" not in proc.stderr


def test_reader_chosen_by_name(check_here, insert, server, pki_dir):
    insert("valid-1")
    expect(check_here(PIN, "--reader", "Virtual PCD"), 0)
    missing = check_here(PIN, "--reader", "No Such Reader")
    expect(missing, 28)
    assert "【カードリーダーが使用できません】 Card reader unavailable" in missing.stdout
    assert "no reader matching 'No Such Reader'" in missing.stdout
