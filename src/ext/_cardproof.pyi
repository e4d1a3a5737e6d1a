"""Typed stub of the native card-proof steps (src/ext/_cardproof.pyx); the
pure-Python references are onshi.core.cardproof's (signature_checker,
SharedReplayCache with kind="pure")."""

RSA_ENCRYPTION_OID: bytes  # DER of 1.2.840.113549.1.1.1

def _der(tag: int, body: bytes) -> bytes:
    """One DER TLV (tests build keys with it)."""

def rsa_spki_der(n: int, e: int) -> bytes:
    """SubjectPublicKeyInfo { rsaEncryption, NULL } of RSAPublicKey { n, e }."""

class RsaPublicKey:
    """An RSA public key from its DER SubjectPublicKeyInfo; ValueError for a key
    that is not PKCS#1 RSA with 3 <= e < n, e odd, or whose bytes are not the one
    DER encoding of (n, e)."""

    def __init__(self, spki_der: bytes) -> None: ...
    def verify_pkcs1v15_sha256(self, signature: bytes, message: bytes) -> bool:
        """True if `signature` is a PKCS#1 v1.5 signature of SHA-256(message)."""

class NonceTable:
    """SharedReplayCache's table in shared memory: anonymous (fd -1, made before
    fork) or mapped from `fd` at `offset`; `init_lock` only for its first opener."""

    slots: int
    probe: int
    def __init__(self, slots: int, probe: int, fd: int = -1, offset: int = 0, init_lock: bool = True) -> None: ...
    def add(self, digest: bytes, now: float, expires: float) -> int:
        """1 new (remembered until `expires`), 0 seen and live, -1 no free slot in the window."""
    def hold_lock(self) -> None:
        """Tests only: take the lock and keep it."""
    def _scribble_lock(self) -> None:
        """Tests only: overwrite the lock with garbage."""
