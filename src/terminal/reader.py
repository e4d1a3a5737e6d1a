"""Reading a My Number card over PC/SC (pyscard's low-level `smartcard.scard`).

The sequence (onshi.terminal.jpki has the bytes):
  SELECT JPKI AP -> SELECT EF 00 0A -> READ BINARY (DER header, then the rest in
  chunks) -> SELECT EF 00 18, VERIFY without data (tries left) -> VERIFY PIN ->
  SELECT EF 00 17 -> 80 2A sign DigestInfo(SHA-256).

The PIN is passed straight into the VERIFY APDU and nowhere else: it is never
logged, never part of an exception message and never leaves this module. The
card is reset on disconnect so its "PIN verified" state does not outlive the
check. pyscard is imported lazily: `onshi terminal check --number` and the
server work without it (it is the optional extra onshi[terminal]).
"""

from __future__ import annotations

from dataclasses import dataclass

from . import jpki

READ_CHUNK = 256  # short APDU maximum (Le = 00)


class CardError(Exception):
    """Base of everything the reader reports to the screen."""


class PcscUnavailable(CardError):
    """pcscd is not running or pyscard is not installed."""


class NoReader(CardError):
    pass


class NoCard(CardError):
    """No card in any reader (or in the named one)."""


class CardRemoved(CardError):
    """The card went away in the middle of reading or signing."""


class NotJpkiCard(CardError):
    """The card has no JPKI user-authentication AP (not a My Number card)."""


class PinIncorrect(CardError):
    def __init__(self, tries_left: int):
        super().__init__(f"PIN incorrect, {tries_left} tries left")
        self.tries_left = tries_left


class PinBlocked(CardError):
    def __init__(self) -> None:
        super().__init__("PIN blocked (69 84)")


class CardProtocolError(CardError):
    def __init__(self, step: str, sw: int):
        super().__init__(f"{step}: card answered {sw:04X}")
        self.step = step
        self.sw = sw


@dataclass(frozen=True)
class CardProof:
    certificate_der: bytes
    signature: bytes


def _scard():
    try:
        from smartcard import scard
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise PcscUnavailable("pyscard is not installed: pip install 'onshi[terminal]'") from exc
    return scard


class JpkiCard:
    """One connection to one card; use as a context manager."""

    def __init__(self, reader_name: str | None = None):
        self._s = _scard()
        self.reader_name = reader_name
        self._context = None
        self._card = None
        self._pci = None

    # --- connection -----------------------------------------------------
    def __enter__(self) -> JpkiCard:
        s = self._s
        rc, self._context = s.SCardEstablishContext(s.SCARD_SCOPE_USER)
        if rc != s.SCARD_S_SUCCESS:
            raise PcscUnavailable(f"PC/SC service not available: {s.SCardGetErrorMessage(rc)}")
        try:
            self._connect()
        except BaseException:
            self._release()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self._release()

    def _release(self) -> None:
        s = self._s
        if self._card is not None:
            # Reset: the card forgets the verified PIN the moment we are done.
            s.SCardDisconnect(self._card, s.SCARD_RESET_CARD)
            self._card = None
        if self._context is not None:
            s.SCardReleaseContext(self._context)
            self._context = None

    def _connect(self) -> None:
        s = self._s
        rc, readers = s.SCardListReaders(self._context, [])
        if rc == s.SCARD_E_NO_READERS_AVAILABLE or (rc == s.SCARD_S_SUCCESS and not readers):
            raise NoReader("no card reader connected")
        if rc != s.SCARD_S_SUCCESS:
            raise PcscUnavailable(f"cannot list readers: {s.SCardGetErrorMessage(rc)}")
        if self.reader_name:
            readers = [r for r in readers if self.reader_name in r]
            if not readers:
                raise NoReader(f"no reader matching {self.reader_name!r}")
        last = None
        for name in readers:  # the first reader holding a card
            rc, card, protocol = s.SCardConnect(
                self._context,
                name,
                s.SCARD_SHARE_EXCLUSIVE,
                s.SCARD_PROTOCOL_T0 | s.SCARD_PROTOCOL_T1,
            )
            if rc == s.SCARD_S_SUCCESS:
                self._card = card
                self._pci = s.SCARD_PCI_T1 if protocol == s.SCARD_PROTOCOL_T1 else s.SCARD_PCI_T0
                self.reader_name = name
                return
            last = rc
        if last in (s.SCARD_E_NO_SMARTCARD, s.SCARD_W_REMOVED_CARD, s.SCARD_E_READER_UNAVAILABLE):
            raise NoCard("no card in the reader")
        raise NoCard(f"cannot connect to the card: {s.SCardGetErrorMessage(last)}")

    def transmit(self, apdu: bytes) -> tuple[bytes, int]:
        s = self._s
        rc, response = s.SCardTransmit(self._card, self._pci, list(apdu))
        if rc != s.SCARD_S_SUCCESS:
            if rc in (
                s.SCARD_W_REMOVED_CARD,
                s.SCARD_E_NO_SMARTCARD,
                s.SCARD_W_RESET_CARD,
                s.SCARD_W_UNPOWERED_CARD,
                s.SCARD_E_READER_UNAVAILABLE,
                s.SCARD_E_COMM_DATA_LOST,
                s.SCARD_W_UNRESPONSIVE_CARD,
                s.SCARD_E_NOT_TRANSACTED,
                s.SCARD_E_INVALID_HANDLE,
            ):
                raise CardRemoved("the card was removed")
            raise CardError(f"reader error: {s.SCardGetErrorMessage(rc)}")
        if len(response) < 2:
            raise CardRemoved("no answer from the card")
        return bytes(response[:-2]), (response[-2] << 8) | response[-1]

    def _expect_ok(self, step: str, apdu: bytes) -> bytes:
        data, sw = self.transmit(apdu)
        if sw != jpki.SW_OK:
            raise CardProtocolError(step, sw)
        return data

    # --- JPKI -----------------------------------------------------------
    def select_jpki(self) -> None:
        _, sw = self.transmit(jpki.SELECT_DF + bytes([len(jpki.AID)]) + jpki.AID)
        if sw != jpki.SW_OK:
            raise NotJpkiCard("the card has no JPKI application (is it a My Number card?)")

    def _select_ef(self, ef: bytes, step: str) -> None:
        self._expect_ok(step, jpki.SELECT_EF + bytes([len(ef)]) + ef)

    def _read(self, offset: int, length: int) -> bytes:
        apdu = bytes([0x00, jpki.READ_BINARY, (offset >> 8) & 0x7F, offset & 0xFF, length & 0xFF])
        return self._expect_ok("READ BINARY", apdu)

    def read_certificate(self) -> bytes:
        """The user-authentication certificate, DER. Its length comes from its header."""
        self._select_ef(jpki.EF_AUTH_CERT, "SELECT EF 00 0A")
        head = self._read(0, 4)
        total = jpki.der_total_length(head)
        if total > 0x7FFF:
            raise CardError("certificate larger than READ BINARY can address")
        out = bytearray(head[:total])
        while len(out) < total:
            chunk = self._read(len(out), min(READ_CHUNK, total - len(out)))
            if not chunk:
                raise CardProtocolError("READ BINARY", jpki.SW_OFFSET_OUTSIDE)
            out += chunk
        return bytes(out[:total])

    def pin_tries_left(self) -> int:
        """Tries left before the PIN blocks (VERIFY without data on EF 00 18)."""
        self._select_ef(jpki.EF_AUTH_PIN, "SELECT EF 00 18")
        _, sw = self.transmit(jpki.VERIFY)
        if sw == jpki.SW_PIN_BLOCKED:
            raise PinBlocked()
        tries = jpki.sw_pin_tries(sw)
        if tries is None:
            raise CardProtocolError("VERIFY (tries left)", sw)
        if tries == 0:
            raise PinBlocked()
        return tries

    def verify_pin(self, pin: str) -> None:
        if len(pin) != jpki.PIN_LENGTH or not pin.isdigit():
            raise ValueError("the PIN is 4 digits")  # checked before it costs a try
        self._select_ef(jpki.EF_AUTH_PIN, "SELECT EF 00 18")
        _, sw = self.transmit(jpki.VERIFY + bytes([len(pin)]) + pin.encode("ascii"))
        if sw == jpki.SW_OK:
            return
        if sw == jpki.SW_PIN_BLOCKED:
            raise PinBlocked()
        tries = jpki.sw_pin_tries(sw)
        if tries is None:
            raise CardProtocolError("VERIFY", sw)
        if tries == 0:
            raise PinBlocked()
        raise PinIncorrect(tries)

    def sign_digest_info(self, digest_info: bytes) -> bytes:
        self._select_ef(jpki.EF_AUTH_KEY, "SELECT EF 00 17")
        return self._expect_ok("SIGN", jpki.SIGN + bytes([len(digest_info)]) + digest_info + b"\x00")
