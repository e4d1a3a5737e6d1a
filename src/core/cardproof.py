"""Card proof (DOMAIN.md §8): the My Number card signs a challenge after PIN entry
with the private key of its JPKI user-authentication certificate; the server
verifies the proof and derives the card serial itself, so a typed or replayed
serial proves nothing.

Checks, in order (each failure is a distinct `CardProofError.reason`):
    malformed certificate / challenge fields     -> INVALID_ARGUMENT (field violations)
    chain to a configured JPKI CA                -> CARD_CERTIFICATE_UNTRUSTED
    validity period                              -> CARD_CERTIFICATE_NOT_YET_VALID / _EXPIRED
    revocation list                              -> CARD_CERTIFICATE_REVOKED
    challenge facility == caller's mTLS facility -> CARD_PROOF_FACILITY_MISMATCH
    timestamp within +-FRESHNESS of server clock -> CARD_PROOF_STALE
    PKCS#1 v1.5 SHA-256 signature over the       -> CARD_SIGNATURE_INVALID
      purpose (the RPC), facility, time, nonce
    nonce never seen before (within the window,  -> CARD_PROOF_REPLAYED
      by any server sharing the replay table)
    (the replay table full / its lock unusable   -> CARD_PROOF_CAPACITY / _UNAVAILABLE: fail closed)

The chain check (an RSA verify by the CA key plus parsing) is the costly part and
is cached by SHA-256 of the DER; validity and revocation are re-checked on every
call because time passes and lists change. The signature is verified every time:
it is what proves the card is present.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import mmap
import os
import struct
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from ..v1 import audit_pb2, eligibility_pb2
from . import history, identifiers, pki, twins

if TYPE_CHECKING:
    from ..ext._cardproof import NonceTable

CHALLENGE_PREFIX = "onshi/v1/card-proof\n"
# What a proof is for: the gRPC method it was signed for, inside the signed
# bytes, so a proof for one cannot be presented to another (every RPC that
# takes a card proof is here).
PURPOSE_CHECK_BY_CARD = "/onshi.v1.EligibilityService/CheckByCard"
PURPOSE_LIST_MY_ACCESS = "/onshi.v1.AuditService/ListMyAccess"
PURPOSES = frozenset({PURPOSE_CHECK_BY_CARD, PURPOSE_LIST_MY_ACCESS})
REPLAY_TABLE_FILE = "card-proof-replays"  # under the data directory, shared by both servers
FRESHNESS_SECONDS = 300
NONCE_MIN, NONCE_MAX = 16, 32
EXPIRING_MONTHS = 3
CERT_CACHE_SIZE = 100_000
WARNING_CODE_CARD_CERTIFICATE_EXPIRING = 1  # eligibility.proto WarningCode
WARNING_CODE_CARD_CERTIFICATE_EXPIRED = 2
WARNING_CODE_CARD_CERTIFICATE_REVOKED = 3

# reason -> (grpc status name, what the clinic should do)
REASONS = {
    "CARD_CERTIFICATE_UNTRUSTED": (
        "UNAUTHENTICATED",
        ("the card certificate was not issued by the JPKI CA; do not accept this card, use the insurance card number"),
    ),
    "CARD_CERTIFICATE_EXPIRED": (
        "FAILED_PRECONDITION",
        (
            "the card's certificate has expired: the person must renew it at the municipality; "
            "check by insurance card number or portal screen"
        ),
    ),
    "CARD_CERTIFICATE_NOT_YET_VALID": (
        "FAILED_PRECONDITION",
        ("the card's certificate is not valid yet; check by insurance card number"),
    ),
    "CARD_CERTIFICATE_REVOKED": (
        "FAILED_PRECONDITION",
        (
            "the card's certificate is revoked (lost, stolen or re-issued); "
            "check by insurance card number or portal screen"
        ),
    ),
    "CARD_SIGNATURE_INVALID": ("UNAUTHENTICATED", "the card's signature does not verify; read the card again"),
    "CARD_PROOF_STALE": (
        "UNAUTHENTICATED",
        ("the challenge timestamp is too far from the server clock; check the terminal clock and read the card again"),
    ),
    "CARD_PROOF_REPLAYED": ("UNAUTHENTICATED", "this challenge was already used; read the card again"),
    "CARD_PROOF_CAPACITY": (
        "RESOURCE_EXHAUSTED",
        ("the server cannot remember more card proofs right now; read the card again shortly"),
    ),
    "CARD_PROOF_UNAVAILABLE": (
        "UNAVAILABLE",
        ("the server cannot check card proofs for replay right now; check by insurance card number"),
    ),
    "CARD_PROOF_FACILITY_MISMATCH": (
        "PERMISSION_DENIED",
        ("the challenge names another facility code than this terminal's certificate"),
    ),
}
# The eligibility.proto warning code that goes with a reason, for terminals that
# show warnings rather than statuses.
REASON_WARNING = {
    "CARD_CERTIFICATE_EXPIRED": WARNING_CODE_CARD_CERTIFICATE_EXPIRED,
    "CARD_CERTIFICATE_REVOKED": WARNING_CODE_CARD_CERTIFICATE_REVOKED,
}


class CardProofError(Exception):
    """The proof was refused; `reason` is one of REASONS, `code` a grpc.StatusCode name."""

    def __init__(self, reason: str, detail: str = ""):
        self.reason = reason
        self.code, self.advice = REASONS[reason]
        super().__init__(f"{reason}: {self.advice}" + (f" ({detail})" if detail else ""))


class MalformedProof(ValueError):
    """A missing or malformed field; `violations` are (field, description) pairs."""

    def __init__(self, violations: list[tuple[str, str]]):
        self.violations = violations
        super().__init__("; ".join(f"{f}: {d}" for f, d in violations))


def challenge_bytes(purpose: str, facility_code: str, timestamp_unix: int, nonce: bytes) -> bytes:
    """Exactly the bytes a card signs (eligibility.proto CardChallenge): the
    purpose (one of PURPOSES), the facility, the time and the nonce."""
    if purpose not in PURPOSES:
        raise ValueError(f"unknown card-proof purpose {purpose!r}")
    return (
        CHALLENGE_PREFIX + purpose + "\n" + facility_code + "\n" + str(int(timestamp_unix)) + "\n" + nonce.hex()
    ).encode()


def sign_challenge(
    private_key: rsa.RSAPrivateKey, purpose: str, facility_code: str, timestamp_unix: int, nonce: bytes
) -> bytes:
    """What the card does after PIN entry (tests, demos and the terminal simulator)."""
    return private_key.sign(
        challenge_bytes(purpose, facility_code, timestamp_unix, nonce), padding.PKCS1v15(), hashes.SHA256()
    )


def signature_checker(key: rsa.RSAPublicKey, kind: str | None = None) -> Callable[[bytes, bytes], bool]:
    """(signature, message) -> bool: PKCS#1 v1.5 over SHA-256 by this card key.

    Native (src/ext/_cardproof.pyx) as `kind` or ONSHI_ENGINE says (twins.load):
    cryptography's verify releases the GIL, which in the threaded server costs
    two thread switches per check."""
    native = twins.load("_cardproof", kind)
    if native is not None:
        checker: Callable[[bytes, bytes], bool] = native.RsaPublicKey(
            key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        ).verify_pkcs1v15_sha256
        return checker

    def check(signature: bytes, message: bytes) -> bool:
        try:
            key.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature:
            return False
        return True

    return check


def _minus_months(when: dt.datetime, months: int) -> dt.datetime:
    month = when.month - months
    year = when.year + (month - 1) // 12
    month = (month - 1) % 12 + 1
    for day in (when.day, 30, 29, 28):
        try:
            return when.replace(year=year, month=month, day=day)
        except ValueError:
            continue
    raise AssertionError("unreachable")


def warning_bytes(code: int, message: str) -> bytes:
    """A framed CheckResponse field 3 (Warning), to append to engine bytes."""
    msg = message.encode()
    body = b"\x08" + bytes((code,)) + b"\x12" + history.varint(len(msg)) + msg
    return b"\x1a" + history.varint(len(body)) + body


@dataclass(frozen=True, slots=True)
class VerifiedCard:
    """A certificate whose chain verified; kept in the cache by DER hash."""

    serial: int
    serial_key: bytes
    not_before: float
    not_after: float
    warn_from: float  # not_after minus 3 months
    public_key: rsa.RSAPublicKey
    expiring_warning: bytes  # framed CheckResponse.warnings entry
    signed_by_card: Callable[[bytes, bytes], bool]  # signature_checker(public_key)


@dataclass(frozen=True, slots=True)
class Proof:
    """A verified proof: the serial to look up and bytes to append to the answer."""

    card: VerifiedCard
    nonce: bytes
    warnings: bytes  # b"" or framed Warning(s)

    @property
    def serial_key(self) -> bytes:
        return self.card.serial_key


class RevocationList:
    """Revoked card serials from a CRL signed by one of the JPKI CAs.

    `from_file` watches the file: `check` reloads when its mtime changes (looked
    at no more than once a second), so a list pushed through the ingest service
    (which replaces the file atomically) takes effect without a restart.
    """

    def __init__(
        self,
        serials: frozenset[int] = frozenset(),
        path: str | None = None,
        ca_certs: list[x509.Certificate] | None = None,
    ):
        self.serials = serials
        self.path = path
        self.ca_certs = ca_certs or []
        self._mtime: int | None = None
        self._looked = 0.0
        if path:
            self._reload()

    @classmethod
    def from_file(cls, path: str, ca_certs: list[x509.Certificate]) -> RevocationList:
        return cls(path=path, ca_certs=ca_certs)

    @staticmethod
    def parse(data: bytes, ca_certs: list[x509.Certificate]) -> frozenset[int]:
        """Parse and verify a CRL (DER or PEM); raises ValueError if no CA signed it."""
        return pki.crl_serials(data, ca_certs, "a configured JPKI CA")

    def _reload(self) -> None:
        if not self.path:
            return
        try:
            mtime = os.stat(self.path).st_mtime_ns
        except FileNotFoundError:
            return  # no list yet: nothing revoked (kept as it was)
        if mtime != self._mtime:
            with open(self.path, "rb") as f:
                self.serials = self.parse(f.read(), self.ca_certs)
            self._mtime = mtime

    def is_revoked(self, serial: int, now: float) -> bool:
        if self.path and now - self._looked >= 1.0:
            self._looked = now
            self._reload()
        return serial in self.serials


def install_revocation_list(path: str, data: bytes, ca_certs: list[x509.Certificate]) -> int:
    """Verify a CRL and replace the file atomically (the ingest service's job).
    Returns the number of revoked serials."""
    serials = RevocationList.parse(data, ca_certs)
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dirfd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:
        os.fsync(dirfd)
    finally:
        os.close(dirfd)
    return len(serials)


class ReplayCache:
    """Nonces seen within the freshness window. A nonce older than the window
    cannot come back: its timestamp would be stale. One process only; `onshi
    serve` with several workers uses SharedReplayCache."""

    def __init__(self, window: float):
        self.window = window
        self._seen: dict[bytes, float] = {}
        self._order: deque[tuple[float, bytes]] = deque()
        self._lock = threading.Lock()

    def add(self, nonce: bytes, now: float) -> bool:
        """True if new (and now remembered), False on a replay."""
        with self._lock:
            order = self._order
            while order and order[0][0] < now:
                self._seen.pop(order.popleft()[1], None)
            if nonce in self._seen:
                return False
            expires = now + 2 * self.window
            self._seen[nonce] = expires
            order.append((expires, nonce))
            return True

    def __len__(self) -> int:
        return len(self._seen)


class SharedReplayCache:
    """The replay cache shared by every server process of a deployment on a host.

    Without `path`: anonymous MAP_SHARED memory made before fork, shared by the
    SO_REUSEPORT workers of one `onshi serve`. With `path` (what both servers
    use: one file under the data directory): the file is mapped by every
    process that opens it, so a proof accepted by `onshi serve` is refused by
    `ingest-serve` and the other way, by a second `onshi serve` on the same
    store, and after a restart.

    Open addressing over `slots` entries of (16-byte BLAKE2b of the nonce,
    expiry). A lookup reads its whole probe window and searches it in C
    (bytes.find), so an expired slot never hides a live entry behind it. A
    window with no expired slot left means the table is too small for the
    traffic: the proof is refused (ReplayCacheFull) rather than remembered
    badly.

    The file: FILE_HEADER (magic, version, lock kind, slots, probe) padded to
    TABLE_OFFSET, then the table as in memory: LOCK_AREA bytes for the lock (a
    process-shared robust pthread mutex natively; unused by the pure-Python
    lock, a POSIX record lock on the file), then the slots. Every process holds
    a shared flock on the file while it has the table; one that finds no other
    holder (it gets the exclusive flock) is alone and (re)initialises the
    lock, which a reboot or a killed process may have left in any state; the
    remembered nonces are kept. Both implementations never share a file at once.
    """

    SLOT = struct.Struct("<16sd")
    PROBE = 32
    FILE_HEADER = struct.Struct("<8sIIQQ")
    FILE_MAGIC = b"ONSHINCE"
    FILE_VERSION = 1
    LOCK_NATIVE, LOCK_RECORD = 1, 2
    TABLE_OFFSET = 4096  # page-aligned, so the table maps on its own
    LOCK_AREA = 64  # as _cardproof.pyx's HEADER

    def __init__(self, window: float, slots: int = 1 << 20, kind: str | None = None, path: str | None = None):
        """kind: native (a process-shared mutex, src/ext/_cardproof.pyx) or pure,
        as `kind` or ONSHI_ENGINE says (twins.load)."""
        import tempfile

        self.window = window
        self.slots = slots
        self.path = path
        ext = twins.load("_cardproof", kind)
        native = ext is not None
        size = self.LOCK_AREA + slots * self.SLOT.size
        self._file: io.FileIO | None = None
        self._mm: mmap.mmap | None = None
        init_lock = True
        if path is not None:
            self._file, init_lock = self._open_file(path, slots, native, size)
        # Native when built: the same table under a process-shared mutex, so a
        # check takes no fcntl() (each one releases the GIL: thread switches).
        self._native: NonceTable | None
        if ext is not None:
            self._native = (
                ext.NonceTable(slots, self.PROBE, self._file.fileno(), self.TABLE_OFFSET, init_lock)
                if self._file is not None
                else ext.NonceTable(slots, self.PROBE)
            )
            return
        self._native = None
        if self._file is not None:
            self._mm = mmap.mmap(self._file.fileno(), size, offset=self.TABLE_OFFSET)
            self._lock_file: io.FileIO | io.BufferedRandom = self._file
            self._lock_at = self.TABLE_OFFSET
        else:
            self._mm = mmap.mmap(-1, size)  # anonymous, shared with forked children
            # Between processes a POSIX record lock on an unlinked file: the kernel
            # drops it if a worker dies holding it (a semaphore would stay taken).
            self._lock_file = tempfile.TemporaryFile()  # noqa: SIM115 - the cache's lock, for its life
            self._lock_at = 0
        # POSIX locks do not exclude threads of one process: a thread lock too.
        self._thread_lock = threading.Lock()

    def _open_file(self, path: str, slots: int, native: bool, size: int) -> tuple[io.FileIO, bool]:
        import fcntl

        kind = self.LOCK_NATIVE if native else self.LOCK_RECORD
        f = open(os.open(path, os.O_RDWR | os.O_CREAT, 0o600), "r+b", buffering=0)  # noqa: SIM115 - mapped for the cache's life
        try:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                alone = True
            except BlockingIOError:
                fcntl.flock(f, fcntl.LOCK_SH)  # waits while the first opener sets it up
                alone = False
            header = os.pread(f.fileno(), self.FILE_HEADER.size, 0)
            ours = (self.FILE_MAGIC, self.FILE_VERSION, kind, slots, self.PROBE)
            theirs = None  # a new file, or one whose set-up was cut short (zeros)
            if header.strip(b"\0"):
                if len(header) < self.FILE_HEADER.size or header[:8] != self.FILE_MAGIC:
                    raise ValueError(f"{path} is not a card-proof replay table")
                theirs = self.FILE_HEADER.unpack(header)
            if not alone:
                if theirs is None or theirs[1:] != ours[1:]:
                    raise ValueError(
                        f"{path} is in use by a server with another replay table "
                        f"({'native' if theirs and theirs[2] == self.LOCK_NATIVE else 'pure-Python'} lock, "
                        f"{theirs[3] if theirs else '?'} slots): start every server of this deployment the same way "
                        "(the same ONSHI_ENGINE, the same table)"
                    )
                return f, False
            if theirs is None or theirs[1:] != ours[1:]:
                if theirs is not None and theirs[3:] != ours[3:]:
                    os.ftruncate(f.fileno(), 0)  # another size: start empty
                os.ftruncate(f.fileno(), self.TABLE_OFFSET + size)
                os.pwrite(f.fileno(), b"\0" * self.LOCK_AREA, self.TABLE_OFFSET)
                os.pwrite(f.fileno(), self.FILE_HEADER.pack(*ours), 0)
            try:  # allocate the blocks now, not on the hot path
                os.posix_fallocate(f.fileno(), 0, self.TABLE_OFFSET + size)
            except OSError:
                pass  # a file system without it: blocks come on first write
            fcntl.flock(f, fcntl.LOCK_SH)  # no longer alone once the lock is made
            return f, True
        except BaseException:
            f.close()
            raise

    def close(self) -> None:
        """Unmap the table and give up the file (its flock goes with it)."""
        self._native = None
        if self._mm is not None:
            self._mm.close()
            self._mm = None
        if self._file is not None:
            self._file.close()
            self._file = None

    def _locked(self) -> AbstractContextManager[None]:
        import contextlib
        import fcntl

        @contextlib.contextmanager
        def held() -> Iterator[None]:
            with self._thread_lock:
                fcntl.lockf(self._lock_file, fcntl.LOCK_EX, 1, self._lock_at)
                try:
                    yield
                finally:
                    fcntl.lockf(self._lock_file, fcntl.LOCK_UN, 1, self._lock_at)

        return held()

    def add(self, nonce: bytes, now: float) -> bool:
        digest = hashlib.blake2b(nonce, digest_size=16).digest()
        if self._native is not None:
            found = self._native.add(digest, now, now + 2 * self.window)
            if found < 0:
                raise ReplayCacheFull()
            return found == 1
        if self._mm is None:
            raise ValueError("the replay cache is closed")
        size = self.SLOT.size
        start = int.from_bytes(digest[:8], "little") % (self.slots - self.PROBE)
        lo, hi = self.LOCK_AREA + start * size, self.LOCK_AREA + (start + self.PROBE) * size
        with self._locked():
            window = self._mm[lo:hi]
            at = window.find(digest)
            while at != -1:
                if at % size == 0:
                    if self.SLOT.unpack_from(window, at)[1] >= now:
                        return False  # seen, and still within its window
                    break  # an expired entry of the same nonce: reuse its slot
                at = window.find(digest, at + 1)
            if at == -1:
                for i in range(self.PROBE):
                    if self.SLOT.unpack_from(window, i * size)[1] < now:  # free (0.0) or expired
                        at = i * size
                        break
                else:
                    raise ReplayCacheFull()
            self.SLOT.pack_into(self._mm, lo + at, digest, now + 2 * self.window)
            return True


class ReplayCacheFull(RuntimeError):
    """No room to remember a nonce: refuse the proof (fail closed)."""


class CardVerifier:
    def __init__(
        self,
        ca_certs: list[x509.Certificate],
        revocations: RevocationList | None = None,
        *,
        freshness: float = FRESHNESS_SECONDS,
        clock: Callable[[], float] = time.time,
        cache_size: int = CERT_CACHE_SIZE,
        replays: ReplayCache | SharedReplayCache | None = None,
    ):
        if not ca_certs:
            raise ValueError("at least one JPKI CA certificate is needed")
        self.ca_certs = list(ca_certs)
        self.revocations = revocations or RevocationList()
        self.freshness = freshness
        self.clock = clock
        self.replays = replays or ReplayCache(freshness)
        self._cache: OrderedDict[bytes, VerifiedCard] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    @classmethod
    def from_files(cls, ca_paths: list[str], crl_path: str | None = None, **kwargs: Any) -> CardVerifier:
        cas = []
        for p in ca_paths:
            with open(p, "rb") as f:
                data = f.read()
            cas.extend(
                x509.load_pem_x509_certificates(data)
                if b"-----BEGIN" in data
                else [x509.load_der_x509_certificate(data)]
            )
        revocations = RevocationList.from_file(crl_path, cas) if crl_path else None
        return cls(cas, revocations, **kwargs)

    # -- the chain, cached ----------------------------------------------------
    def card(self, certificate_der: bytes) -> VerifiedCard:
        """Parse and chain-check a card certificate (cached by DER hash)."""
        digest = hashlib.sha256(certificate_der).digest()
        cached = self._cache.get(digest)
        if cached is not None:
            return cached
        verified = self._verify_chain(certificate_der)
        with self._lock:
            self._cache[digest] = verified
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return verified

    def _verify_chain(self, der: bytes) -> VerifiedCard:
        try:
            cert = x509.load_der_x509_certificate(der)
        except (ValueError, x509.InvalidVersion) as exc:  # InvalidVersion is no ValueError
            raise MalformedProof([("card_certificate", f"not a DER X.509 certificate ({exc})")]) from None
        try:
            return self._verify_parsed(cert)
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            # Fields parsed on first use (extensions, key, names) that do not parse.
            raise CardProofError("CARD_CERTIFICATE_UNTRUSTED", f"certificate fields do not parse ({exc})") from None

    def _verify_parsed(self, cert: x509.Certificate) -> VerifiedCard:
        issuer = None
        for ca in self.ca_certs:
            if cert.issuer != ca.subject:
                continue
            try:
                cert.verify_directly_issued_by(ca)
            except (ValueError, TypeError, InvalidSignature):
                continue
            issuer = ca
            break
        if issuer is None:
            raise CardProofError("CARD_CERTIFICATE_UNTRUSTED", "no configured JPKI CA signed it")
        # A card key signs PKCS#1 v1.5: only an rsaEncryption key. An RSA-PSS key
        # (which cryptography loads as a plain RSA key) or any other is refused,
        # as is a key its parser or the native check refuses (e.g. exponent 1).
        if cert.public_key_algorithm_oid != x509.oid.PublicKeyAlgorithmOID.RSAES_PKCS1_v1_5:
            raise CardProofError("CARD_CERTIFICATE_UNTRUSTED", "not an RSA (rsaEncryption) key")
        try:
            key = cert.public_key()
            if not isinstance(key, rsa.RSAPublicKey):
                raise CardProofError("CARD_CERTIFICATE_UNTRUSTED", "not an RSA key")
            signed_by_card = signature_checker(key)
        except (ValueError, UnsupportedAlgorithm) as exc:
            raise CardProofError("CARD_CERTIFICATE_UNTRUSTED", f"unusable card key ({exc})") from None
        try:
            bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
            if bc.ca:
                raise CardProofError("CARD_CERTIFICATE_UNTRUSTED", "a CA certificate is not a card")
        except x509.ExtensionNotFound:
            pass
        serial = cert.serial_number
        serial_hex = format(serial, "X")
        if len(serial_hex) > identifiers.MAX_SERIAL_HEX or serial <= 0:
            raise CardProofError("CARD_CERTIFICATE_UNTRUSTED", "serial out of range")
        not_after = cert.not_valid_after_utc
        warn_from = _minus_months(not_after, EXPIRING_MONTHS)
        jst = not_after.astimezone(dt.timezone(dt.timedelta(hours=9))).date().isoformat()
        return VerifiedCard(
            serial=serial,
            serial_key=identifiers.card_serial_key(serial_hex),
            not_before=cert.not_valid_before_utc.timestamp(),
            not_after=not_after.timestamp(),
            warn_from=warn_from.timestamp(),
            public_key=key,
            signed_by_card=signed_by_card,
            expiring_warning=warning_bytes(
                WARNING_CODE_CARD_CERTIFICATE_EXPIRING, f"card certificate expires on {jst}: renew at the municipality"
            ),
        )

    # -- one proof ----------------------------------------------------------
    def verify(
        self,
        certificate_der: bytes,
        facility_code: str,
        timestamp_unix: int,
        nonce: bytes,
        signature: bytes,
        caller_facility: str | None,
        *,
        purpose: str,
    ) -> Proof:
        """Verify a card proof for `purpose` (the RPC being served, one of
        PURPOSES); raises MalformedProof or CardProofError.

        caller_facility is the facility code of the mTLS caller; None only for
        trusted callers that are not facilities (the person's own portal).
        """
        bad = []
        if not certificate_der:
            bad.append(("card_certificate", "required (DER of the JPKI user-authentication certificate)"))
        if len(facility_code) != 10 or not facility_code.isdigit():
            bad.append(("challenge.facility_code", "must be 10 digits"))
        if not NONCE_MIN <= len(nonce) <= NONCE_MAX:
            bad.append(("challenge.nonce", f"must be {NONCE_MIN}-{NONCE_MAX} bytes"))
        if not signature:
            bad.append(("card_signature", "required"))
        if bad:
            raise MalformedProof(bad)
        card = self.card(certificate_der)
        now = self.clock()
        if now < card.not_before:
            raise CardProofError("CARD_CERTIFICATE_NOT_YET_VALID")
        if now >= card.not_after:
            raise CardProofError("CARD_CERTIFICATE_EXPIRED")
        if self.revocations.is_revoked(card.serial, now):
            raise CardProofError("CARD_CERTIFICATE_REVOKED")
        if caller_facility is not None and facility_code != caller_facility:
            raise CardProofError("CARD_PROOF_FACILITY_MISMATCH")
        if abs(now - timestamp_unix) > self.freshness:
            raise CardProofError("CARD_PROOF_STALE", f"{int(timestamp_unix - now)} s from server clock")
        if not card.signed_by_card(signature, challenge_bytes(purpose, facility_code, timestamp_unix, nonce)):
            raise CardProofError("CARD_SIGNATURE_INVALID")
        # Only a correctly signed challenge consumes its nonce, so garbage cannot
        # burn nonces a real card is about to use.
        try:
            fresh = self.replays.add(nonce, now)
        except ReplayCacheFull:
            raise CardProofError("CARD_PROOF_CAPACITY") from None
        except OSError as exc:  # the table's lock cannot be taken: refuse (fail closed)
            raise CardProofError("CARD_PROOF_UNAVAILABLE", str(exc)) from None
        if not fresh:
            raise CardProofError("CARD_PROOF_REPLAYED")
        return Proof(card, nonce, card.expiring_warning if now >= card.warn_from else b"")

    def verify_request(
        self,
        request: eligibility_pb2.CheckByCardRequest | audit_pb2.ListMyAccessRequest,
        caller_facility: str | None,
        *,
        purpose: str,
    ) -> Proof:
        """Verify the proof fields of a CheckByCardRequest (or any message with
        card_certificate, challenge, card_signature) for `purpose`."""
        ch = request.challenge
        return self.verify(
            request.card_certificate,
            ch.facility_code,
            ch.timestamp_unix,
            ch.nonce,
            request.card_signature,
            caller_facility,
            purpose=purpose,
        )
