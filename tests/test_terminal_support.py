"""Shared parts of the terminal tests (no tests here): a private pcscd with the
vpcd driver, the virtual card processes, a small store whose persons are linked
to the `onshi pki init` card serials, a real `onshi serve --pki` process (mTLS +
card-proof verification), and a runner for the `onshi terminal` CLI.

pcscd 1.9.9 (Debian 12) always serves /run/pcscd/pcscd.comm; libpcsclite
honours PCSCLITE_CSOCK_NAME. So pcscd runs in a private mount namespace where a
tmp dir is bind-mounted over /run/pcscd (`unshare --mount`), and the clients
get PCSCLITE_CSOCK_NAME=<tmp>/pcscd.comm: the tests never touch a system pcscd
and vpcd gets a free TCP port from a private reader.conf.d (`pcscd -c DIR`).
Without the right to unshare (no CAP_SYS_ADMIN) pcscd runs on the system path
when no other pcscd is there; otherwise the card tests skip, saying why.
"""

from __future__ import annotations

import atexit
import datetime as dt
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from onshi.core import dates, identifiers
from onshi.core.writer import Writer
from onshi.v1 import qualification_pb2

Q = qualification_pb2
D = dates.to_proto
VPCD_DRIVER = "/usr/lib/pcsc/drivers/serial/libifdvpcd.so"
SYSTEM_SOCKET = "/run/pcscd/pcscd.comm"  # fixed in pcscd 1.9.9 (Debian 12)
PIN = "4721"  # appears nowhere in the data, so a leak would be visible
FACILITY = "1310000001"

# --- the store ---------------------------------------------------------------------

from tests.builders import (  # noqa: E402  (shared with the other server tests)
    KYOKAI,
    LATE,
    NON_JIS_NAME,
    PAYER,
    SEAMEN,
    UNION,
    person,
    qual,
)

YOSHIDA = (
    person(NON_JIS_NAME, "ヨシダ カツコ", dt.date(1980, 5, 17)),
    [
        qual(
            UNION,
            "12",
            "3456",
            "00",
            dt.date(2020, 4, 1),
            limit_amount=Q.LimitAmountCertificate(
                category="ウ",
                valid_from=D(dt.date(2026, 8, 1)),
                valid_until=D(dt.date(2027, 7, 31)),
            ),
            subsidies=[
                Q.PublicExpenseSubsidy(
                    payer_number=PAYER,
                    recipient_number="1234566",
                    programme="難病",
                    burden_ratio_percent=20,
                    monthly_cap_yen=10000,
                )
            ],
        ),
    ],
)
SATO = (
    person("佐藤 一郎", "サトウ イチロウ", dt.date(1975, 1, 9), Q.SEX_MALE),
    [
        qual(
            KYOKAI,
            "7001",
            "88",
            "00",
            dt.date(2015, 4, 1),
            dt.date(2022, 4, 1),
            Q.LOSS_REASON_OTHER_INSURANCE,
        ),
        qual(UNION, "34", "777", "00", dt.date(2022, 4, 1)),
    ],
)
TAKAHASHI = (
    person("高橋 トメ", "タカハシ トメ", dt.date(1948, 3, 3)),
    [
        qual(SEAMEN, "5", "40", "01", dt.date(2010, 1, 1), card_kind=Q.CARD_KIND_SEAMEN),
        qual(
            LATE,
            "",
            "00012345",
            "",
            dt.date(2023, 3, 3),
            burden_ratio_percent=10,
            card_kind=Q.CARD_KIND_LATE_ELDERLY,
        ),
    ],
)
SUZUKI = (
    person("鈴木 次郎", "スズキ ジロウ", dt.date(1990, 2, 28), Q.SEX_MALE),
    [
        qual(UNION, "56", "901", "02", dt.date(2019, 4, 1), dt.date(2024, 4, 1), Q.LOSS_REASON_OTHER),
    ],
)
# card serial (pki.CARDS) -> person. "valid-2" (1002) and "revoked" (1007) are
# deliberately not linked: a revoked card must be refused before any lookup.
CARD_PERSONS = {"1001": YOSHIDA, "1003": TAKAHASHI, "1004": SATO, "1005": SUZUKI}


def build_store(path: str) -> None:
    writer = Writer(path)
    try:
        for serial, (p, quals) in CARD_PERSONS.items():

            def change(t, p=p, quals=quals, serial=serial):
                link = t.new_link_id()
                t.put_history(link, p, quals)
                t.link_card(identifiers.card_serial_key(serial), link)

            writer.apply(change)
    finally:
        writer.close()


# --- the test PKI --------------------------------------------------------------------

# Shared by every terminal test module of one pytest run; `cleanup_shared` runs
# at session end (the modules' session fixtures) and at exit as a fallback.
_shared: dict = {}
_cleanups: list = []


def shared_pki() -> str:
    """One `onshi pki init` per test process (about 20 RSA keys: worth sharing)."""
    if "pki" not in _shared:
        import tempfile

        from onshi.core import pki

        base = tempfile.mkdtemp(prefix="onshi-terminal-pki-")
        _cleanups.append(lambda: shutil.rmtree(base, True))
        path = os.path.join(base, "pki")
        pki.init(path)
        _shared["pki"] = path
    return _shared["pki"]


def cleanup_shared() -> None:
    """Stop the shared server, remove the shared files (idempotent)."""
    while _cleanups:
        _cleanups.pop()()
    _shared.clear()


atexit.register(cleanup_shared)


def card_files(pki_dir: str, name: str) -> tuple[str, str]:
    return os.path.join(pki_dir, "cards", name + ".pem"), os.path.join(pki_dir, "cards", name + ".key.pem")


# --- a real eligibility server ---------------------------------------------------------


class Server:
    """A real `onshi serve --pki PKI` process on 127.0.0.1:0: mTLS with roles from
    client certificates and card-proof verification against the test JPKI CA and
    its revocation list (onshi.server.trust_options), one worker, this test's store."""

    def __init__(self, store_dir: str, pki_dir: str | None, *extra: str):
        self.proc = subprocess.Popen(
            # The pure engine: these tests are about the terminal, and must not
            # depend on the native build of the moment (the engine tests cover it).
            [
                sys.executable,
                "-m",
                "onshi.cli",
                "serve",
                "--data",
                store_dir,
                "--port",
                "0",
                "--workers",
                "1",
                "--engine",
                "pure",
                *(["--pki", pki_dir] if pki_dir else []),
                *extra,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=dict(os.environ, PYTHONUNBUFFERED="1"),
        )
        self.stderr = Reader(self.proc.stderr)
        deadline = time.monotonic() + 60
        line = ""
        while time.monotonic() < deadline and self.proc.poll() is None:
            line = self.proc.stdout.readline()
            if line.startswith("onshi: serving on "):
                break
        if not line.startswith("onshi: serving on "):
            self.proc.kill()
            raise AssertionError(f"onshi serve did not start: {''.join(self.stderr.lines)}")
        self.stdout = Reader(self.proc.stdout)
        self.target = line.split()[3]  # onshi: serving on 127.0.0.1:PORT workers=1 ...

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def shared_server() -> Server:
    """One server on one store for the whole test process (the terminal tests only
    read): `onshi serve` starts in seconds on a loaded 2-core machine."""
    if "server" not in _shared:
        import tempfile

        base = tempfile.mkdtemp(prefix="onshi-terminal-store-")
        build_store(base)
        _cleanups.append(lambda: shutil.rmtree(base, True))
        server = Server(base, shared_pki())
        _cleanups.append(server.stop)  # runs before the store is removed
        _shared["server"] = server
    return _shared["server"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- pcscd + vpcd + virtual cards --------------------------------------------------------


def _port_pair_free(port: int) -> bool:
    for p in (port, port + 1):  # vpcd opens two slots: port and port + 1
        with socket.socket() as s:
            try:
                s.bind(("0.0.0.0", p))
            except OSError:
                return False
    return True


def pcsc_missing() -> str | None:
    """Why the card tests cannot run here, or None."""
    if not shutil.which("pcscd"):
        return "pcscd is not installed (scripts/test.sh installs pcscd and vsmartcard-vpcd)"
    if not os.path.exists(VPCD_DRIVER):
        return f"vpcd driver missing: {VPCD_DRIVER} (apt-get install vsmartcard-vpcd)"
    try:
        import smartcard.scard  # noqa: F401
    except ImportError:
        return "pyscard is not installed (pip install 'onshi[terminal]')"
    return None


class Pcsc:
    """A private pcscd whose only reader is a vpcd slot on a free port."""

    def __init__(self, base: str):
        self.base = base
        self.run_dir = os.path.join(base, "run")
        self.conf_dir = os.path.join(base, "reader.conf.d")
        os.makedirs(self.run_dir)
        os.makedirs(self.conf_dir)
        for _ in range(50):
            port = free_port()
            if port < 65535 and _port_pair_free(port):
                break
        self.port = port
        with open(os.path.join(self.conf_dir, "vpcd"), "w") as f:
            f.write(
                f'FRIENDLYNAME "Virtual PCD"\nDEVICENAME /dev/null:0x{port:X}\n'
                f"LIBPATH {VPCD_DRIVER}\nCHANNELID 0x{port:X}\n"
            )
        self.socket = os.path.join(self.run_dir, "pcscd.comm")
        self.log_path = os.path.join(base, "pcscd.log")
        self.card: subprocess.Popen | None = None

    def start(self) -> None:
        """Private mount namespace first; without the right to unshare, pcscd on
        the system path when no other pcscd is running there."""
        script = (
            f"mkdir -p /run/pcscd && mount --bind {self.run_dir} /run/pcscd && "
            f"exec pcscd --foreground -c {self.conf_dir}"
        )
        why = self._launch(["unshare", "--mount", "--propagation", "private", "sh", "-c", script])
        if why is None:
            return
        if os.path.exists(SYSTEM_SOCKET):
            raise PcscUnavailableHere(
                f"cannot run a private pcscd ({why}) and {SYSTEM_SOCKET} belongs to "
                "another pcscd, which the tests must not use"
            )
        self.socket = SYSTEM_SOCKET
        why_direct = self._launch(["pcscd", "--foreground", "-c", self.conf_dir])
        if why_direct is not None:
            raise PcscUnavailableHere(f"pcscd cannot run here: private ({why}); system path ({why_direct})")

    def _launch(self, argv: list[str]) -> str | None:
        """Start pcscd; None once it serves, else why not."""
        with open(self.log_path, "ab") as log:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                with open(self.log_path, errors="replace") as f:
                    return f"{argv[0]} exited {self.proc.returncode}: {f.read()[-300:].strip()}"
            if os.path.exists(self.socket) and _listening(self.port):
                return None
            time.sleep(0.05)
        self.proc.kill()
        self.proc.wait()
        return "no socket within 10 s"

    def stop(self) -> None:
        self.remove()
        if os.environ.get("PCSCLITE_CSOCK_NAME") == self.socket:
            del os.environ["PCSCLITE_CSOCK_NAME"]
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    @property
    def env(self) -> dict:
        return dict(os.environ, PCSCLITE_CSOCK_NAME=self.socket, PYTHONUNBUFFERED="1")

    # -- cards ---------------------------------------------------------------
    def insert(self, cert: str, key: str, pin: str = PIN, *extra: str) -> None:
        """Start a virtual card and wait until pcscd reports it present."""
        self.remove()
        self.card = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "onshi.terminal.vcard",
                "--cert",
                cert,
                "--key",
                key,
                "--pin",
                pin,
                "--port",
                str(self.port),
                *extra,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=self.env,
        )
        self.wait_state(present=True)

    def remove(self) -> None:
        """Pull the card out (the virtual card's TCP connection closes)."""
        if self.card is not None:
            self.card.kill()
            self.card.wait()
            self.card = None
            self.wait_state(present=False)

    def wait_state(self, present: bool, timeout: float = 10.0) -> None:
        from smartcard import scard as s

        rc, ctx = s.SCardEstablishContext(s.SCARD_SCOPE_USER)
        assert rc == s.SCARD_S_SUCCESS, s.SCardGetErrorMessage(rc)
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                rc, readers = s.SCardListReaders(ctx, [])
                if rc == s.SCARD_S_SUCCESS and readers:
                    rc, states = s.SCardGetStatusChange(ctx, 100, [(readers[0], s.SCARD_STATE_UNAWARE)])
                    if rc == s.SCARD_S_SUCCESS:
                        is_present = bool(states[0][1] & s.SCARD_STATE_PRESENT)
                        if is_present == present:
                            return
                time.sleep(0.05)
        finally:
            s.SCardReleaseContext(ctx)
        raise AssertionError(f"card never became {'present' if present else 'absent'}")


class PcscUnavailableHere(RuntimeError):
    pass


def _listening(port: int) -> bool:
    # vpcd accepts only its one card: probe by bind (fails once vpcd holds the
    # port) rather than connect, which would pose as a card.
    with socket.socket() as s:
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return True
        return False


def start_pcsc(base: str) -> Pcsc:
    reason = pcsc_missing()
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(reason)  # the test command installs them: missing is a set-up bug in CI
        pytest.skip(reason)
    pcsc = Pcsc(base)
    try:
        pcsc.start()
    except PcscUnavailableHere as exc:
        pytest.skip(str(exc))
    # libpcsclite reads PCSCLITE_CSOCK_NAME when it first connects: the test
    # process (which watches card presence) talks to this pcscd only.
    os.environ["PCSCLITE_CSOCK_NAME"] = pcsc.socket
    return pcsc


# --- the CLI -------------------------------------------------------------------------


def terminal_args(server_target: str, pki_dir: str) -> list[str]:
    return ["--server", server_target, "--pki", pki_dir, "--facility", FACILITY, "--timeout", "5"]


def run_cli(args: list[str], env: dict, stdin: str = "", timeout: float = 30.0) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "onshi.cli", "terminal", *args],
        check=False,
        input=stdin,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


class Reader(threading.Thread):
    """Collects a pipe's lines in the background (so a child never blocks on a full pipe)."""

    def __init__(self, stream):
        super().__init__(daemon=True)
        self.stream = stream
        self.lines: list[str] = []
        self.start()

    def run(self) -> None:
        for line in self.stream:
            self.lines.append(line)

    def wait_for(self, text: str, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(text in line for line in self.lines):
                return
            time.sleep(0.02)
        raise AssertionError(f"{text!r} never appeared in {''.join(self.lines)!r}")
