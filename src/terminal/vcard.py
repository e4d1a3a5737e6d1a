"""A virtual My Number card (JPKI user-authentication AP) for tests and demos.

It speaks the vpcd protocol of vsmartcard: pcscd loads the vpcd driver, which
listens on TCP (default port 35963 = 0x8C7B, /etc/reader.conf.d/vpcd) and the
virtual card *connects* to it. Every message is a 2-byte big-endian length and
its payload; a 1-byte payload is a control code (00 power off, 01 power on,
02 reset, 04 ATR request), anything longer is a command APDU answered with a
response APDU. Closing the connection is "card removed".

The card implements only what the terminal uses (see onshi.terminal.jpki):
SELECT of the JPKI AP and of EFs 00 0A / 00 17 / 00 18, READ BINARY of the
certificate, VERIFY (with no data: tries left as 63 Cx), and the signature
80 2A 00 80 over a DigestInfo, as RSA PKCS#1 v1.5 with the card's key and only
after a correct PIN. Three wrong PINs block it (69 84) for good (or until the
process ends, unless --state keeps the counter in a file).

    python -m onshi.terminal.vcard --cert cards/valid-1.pem --key cards/valid-1.key.pem --pin 1234
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import struct
import sys
import time

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from . import jpki

VPCD_PORT = 0x8C7B  # 35963
CTRL_OFF, CTRL_ON, CTRL_RESET, CTRL_ATR = 0, 1, 2, 4
# The ATR a My Number card answers: T=1, no historical bytes (TCK 14 checks out).
ATR = bytes.fromhex("3BE000FF8131FE4514")


def _sw(sw: int, data: bytes = b"") -> bytes:
    return data + sw.to_bytes(2, "big")


def rsa_sign_pkcs1_v15_raw(key: rsa.RSAPrivateKey, digest_info: bytes) -> bytes:
    """EMSA-PKCS1-v1_5 over an already encoded DigestInfo, then the RSA private
    operation: what a card does. The card does not hash and does not care which
    hash the DigestInfo names (the terminal chose SHA-256)."""
    numbers = key.private_numbers()
    n = numbers.public_numbers.n
    k = (n.bit_length() + 7) // 8
    if len(digest_info) > k - 11:
        raise ValueError("DigestInfo too long for the key")
    em = b"\x00\x01" + b"\xff" * (k - 3 - len(digest_info)) + b"\x00" + digest_info
    return pow(int.from_bytes(em, "big"), numbers.d, n).to_bytes(k, "big")


class VirtualJpkiCard:
    """The card's state machine: APDU bytes in, response bytes out."""

    def __init__(
        self,
        cert_der: bytes,
        key: rsa.RSAPrivateKey,
        pin: str,
        *,
        tries_left: int = jpki.PIN_TRIES,
        state_path: str | None = None,
        aid: bytes = jpki.AID,
    ):
        if len(pin) != jpki.PIN_LENGTH or not pin.isdigit():
            raise ValueError("the user-authentication PIN is 4 digits")
        self.cert_der = cert_der
        self.key = key
        self.aid = aid  # another AID makes it "some other IC card" (not a My Number card)
        self._pin = pin.encode("ascii")
        self.state_path = state_path
        self.tries_left = tries_left
        if state_path and os.path.exists(state_path):
            with open(state_path) as f:
                self.tries_left = int(json.load(f)["tries_left"])
        self.reset()

    def reset(self) -> None:
        """Power-on state: nothing selected, PIN not verified (the counter stays)."""
        self.ap_selected = False
        self.current_ef: bytes | None = None
        self.verified = False

    def _save_tries(self) -> None:
        if self.state_path:
            tmp = self.state_path + ".tmp"
            with open(tmp, "w") as f:
                json.dump({"tries_left": self.tries_left}, f)
            os.replace(tmp, self.state_path)

    def process(self, apdu: bytes) -> bytes:
        if len(apdu) < 4:
            return _sw(jpki.SW_WRONG_LENGTH)
        cla, ins, p1, p2 = apdu[:4]
        body = apdu[4:]
        if cla not in (0x00, 0x80):
            return _sw(jpki.SW_CLA_NOT_SUPPORTED)
        if ins == 0xA4:
            return self._select(p1, p2, body)
        if ins == jpki.READ_BINARY:
            return self._read_binary(p1, p2, body)
        if ins == 0x20:
            return self._verify(p1, p2, body)
        if ins == 0x2A and cla == 0x80:
            return self._sign(p1, p2, body)
        return _sw(jpki.SW_INS_NOT_SUPPORTED)

    @staticmethod
    def _lc_data(body: bytes) -> bytes | None:
        """Data of a short APDU case 3/4 (Lc data [Le]); None if malformed."""
        if not body:
            return b""
        lc = body[0]
        data = body[1 : 1 + lc]
        if len(data) != lc or len(body) not in (1 + lc, 2 + lc):
            return None
        return data

    def _select(self, p1: int, p2: int, body: bytes) -> bytes:
        data = self._lc_data(body)
        if data is None:
            return _sw(jpki.SW_WRONG_LENGTH)
        if p1 == 0x04:  # by DF name (AID); selecting any application drops the PIN state
            self.verified = False
            self.current_ef = None
            self.ap_selected = data == self.aid
            return _sw(jpki.SW_OK if self.ap_selected else jpki.SW_FILE_NOT_FOUND)
        if p1 == 0x02:  # EF under the current DF
            if not self.ap_selected or data not in (
                jpki.EF_AUTH_CERT,
                jpki.EF_AUTH_KEY,
                jpki.EF_AUTH_PIN,
            ):
                return _sw(jpki.SW_FILE_NOT_FOUND)
            self.current_ef = data
            return _sw(jpki.SW_OK)
        return _sw(jpki.SW_WRONG_P1P2)

    def _read_binary(self, p1: int, p2: int, body: bytes) -> bytes:
        if self.current_ef != jpki.EF_AUTH_CERT:
            return _sw(jpki.SW_NO_CURRENT_EF)
        if p1 & 0x80:  # short-EF addressing: not used by the terminal
            return _sw(jpki.SW_WRONG_P1P2)
        if len(body) != 1:
            return _sw(jpki.SW_WRONG_LENGTH)
        offset = (p1 << 8) | p2
        le = body[0] or 256
        if offset > len(self.cert_der):
            return _sw(jpki.SW_OFFSET_OUTSIDE)
        return _sw(jpki.SW_OK, self.cert_der[offset : offset + le])

    def _verify(self, p1: int, p2: int, body: bytes) -> bytes:
        if self.current_ef != jpki.EF_AUTH_PIN or (p1, p2) != (0x00, 0x80):
            return _sw(jpki.SW_NO_CURRENT_EF if self.current_ef != jpki.EF_AUTH_PIN else jpki.SW_WRONG_P1P2)
        if self.tries_left <= 0:
            return _sw(jpki.SW_PIN_BLOCKED)
        if not body:  # no data: ask how many tries are left
            return _sw(jpki.SW_OK if self.verified else 0x63C0 | self.tries_left)
        pin = self._lc_data(body)
        if pin is None:
            return _sw(jpki.SW_WRONG_LENGTH)
        if pin == self._pin:
            self.tries_left = jpki.PIN_TRIES
            self.verified = True
            self._save_tries()
            return _sw(jpki.SW_OK)
        self.verified = False
        self.tries_left -= 1
        self._save_tries()
        return _sw(0x63C0 | self.tries_left)

    def _sign(self, p1: int, p2: int, body: bytes) -> bytes:
        if (p1, p2) != (0x00, 0x80):
            return _sw(jpki.SW_WRONG_P1P2)
        if self.current_ef != jpki.EF_AUTH_KEY:
            return _sw(jpki.SW_NO_CURRENT_EF)
        if not self.verified:
            return _sw(jpki.SW_SECURITY_NOT_SATISFIED)
        data = self._lc_data(body)
        if not data:
            return _sw(jpki.SW_WRONG_LENGTH)
        try:
            return _sw(jpki.SW_OK, rsa_sign_pkcs1_v15_raw(self.key, data))
        except ValueError:
            return _sw(jpki.SW_WRONG_DATA)


# --- vpcd transport ---------------------------------------------------------

_QUICKACK = getattr(socket, "TCP_QUICKACK", None)


def _recv_exact(sock: socket.socket, n: int, quickack: bool = True) -> bytes | None:
    buf = bytearray()
    while len(buf) < n:
        if quickack and _QUICKACK is not None:
            # vpcd writes the length and the APDU in two sends; with Nagle on its
            # side and a delayed ACK on ours every APDU would wait ~40 ms.
            sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)
        chunk = sock.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def _send_frame(sock: socket.socket, payload: bytes) -> None:
    sock.sendall(struct.pack(">H", len(payload)) + payload)


def connect(host: str, port: int, timeout: float) -> socket.socket:
    """Connect to vpcd, retrying while pcscd is still starting."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            sock = socket.create_connection((host, port), timeout=2.0)
            sock.settimeout(None)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return sock
        except OSError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.1)


def serve(card: VirtualJpkiCard, sock: socket.socket, *, quickack: bool = True) -> None:
    """Answer vpcd until it closes the connection."""
    while True:
        header = _recv_exact(sock, 2, quickack)
        if header is None:
            return
        (length,) = struct.unpack(">H", header)
        payload = _recv_exact(sock, length, quickack)
        if payload is None:
            return
        if length == 1:
            code = payload[0]
            if code == CTRL_ATR:
                _send_frame(sock, ATR)
            elif code in (CTRL_OFF, CTRL_RESET, CTRL_ON):
                card.reset()
            continue  # power/reset codes have no answer
        _send_frame(sock, card.process(payload))


def load_card(
    cert_path: str,
    key_path: str,
    pin: str,
    *,
    tries_left: int = jpki.PIN_TRIES,
    state_path: str | None = None,
    aid: bytes = jpki.AID,
) -> VirtualJpkiCard:
    with open(cert_path, "rb") as f:
        raw = f.read()
    cert = (
        x509.load_pem_x509_certificate(raw)
        if raw.lstrip().startswith(b"-----")
        else x509.load_der_x509_certificate(raw)
    )
    with open(key_path, "rb") as f:
        key = serialization.load_pem_private_key(f.read(), password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("JPKI card keys are RSA")
    return VirtualJpkiCard(
        cert.public_bytes(serialization.Encoding.DER),
        key,
        pin,
        tries_left=tries_left,
        state_path=state_path,
        aid=aid,
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m onshi.terminal.vcard",
        description="Virtual JPKI card for vpcd (vsmartcard). TEST ONLY.",
    )
    p.add_argument("--cert", required=True, help="card certificate (PEM or DER), e.g. from `onshi pki init`")
    p.add_argument("--key", required=True, help="card private key (PEM)")
    p.add_argument("--pin", required=True, help="4-digit user-authentication PIN")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=VPCD_PORT, help="vpcd port (default 35963, reader slot 0)")
    p.add_argument("--tries-left", type=int, default=jpki.PIN_TRIES)
    p.add_argument("--state", help="file keeping the PIN counter across restarts (like a real chip)")
    p.add_argument("--connect-timeout", type=float, default=30.0)
    p.add_argument(
        "--aid",
        default=jpki.AID.hex(),
        help="application ID the card answers to (another one: not a My Number card)",
    )
    p.add_argument(
        "--no-quickack",
        action="store_true",
        help="leave delayed ACKs on (only to measure what TCP_QUICKACK saves: bench/terminal_card.py)",
    )
    args = p.parse_args(argv)
    card = load_card(
        args.cert,
        args.key,
        args.pin,
        tries_left=args.tries_left,
        state_path=args.state,
        aid=bytes.fromhex(args.aid),
    )
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # SIGTERM = pull the card out
    sock = connect(args.host, args.port, args.connect_timeout)
    print(f"vcard: inserted into vpcd at {args.host}:{args.port}", flush=True)
    try:
        serve(card, sock, quickack=not args.no_quickack)
    finally:
        sock.close()
    print("vcard: vpcd closed the connection", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
