# cython: language_level=3
"""The two per-check steps of a card proof that would otherwise release the GIL
(see onshi.core.cardproof, the reference for both):

* RsaPublicKey: the RSA PKCS#1 v1.5 / SHA-256 signature check, through
  libcrypto, with the GIL held.
* NonceTable: the replay table shared by every worker process, locked with a
  process-shared robust pthread mutex instead of two fcntl() calls.

Why: `cryptography`'s verify releases the GIL (and so does fcntl.lockf) for its ~15 us, and in a
threaded gRPC server every release lets another handler thread take the GIL,
so the verifying thread then waits to get it back: two context switches per
check, which cost this server more CPU than the RSA arithmetic itself.
Holding the GIL for 15 us (well under the 5 ms switch interval) costs nothing.

The pure-Python code stays the reference (cardproof.py falls back to it when
this module is not built); tests/test_cardproof_native.py checks both agree.
"""

from cpython.bytearray cimport PyByteArray_AS_STRING
from libc.stdint cimport uint8_t
from libc.string cimport memcmp, memcpy, memset

import os

cdef extern from "openssl/evp.h":
    ctypedef struct EVP_PKEY
    ctypedef struct EVP_MD
    ctypedef struct ENGINE
    int EVP_PKEY_RSA
    void EVP_PKEY_free(EVP_PKEY *pkey)
    int EVP_PKEY_get_base_id(const EVP_PKEY *pkey)
    EVP_MD *EVP_MD_fetch(void *libctx, const char *algorithm, const char *properties)
    int EVP_Digest(const void *data, size_t count, unsigned char *md, unsigned int *size, const EVP_MD *type,
                   ENGINE *impl)

cdef extern from "openssl/bn.h":
    ctypedef struct BIGNUM
    ctypedef struct BN_CTX
    ctypedef struct BN_MONT_CTX
    BIGNUM *BN_new()
    void BN_free(BIGNUM *a)
    BN_CTX *BN_CTX_new()
    void BN_CTX_free(BN_CTX *c)
    BN_MONT_CTX *BN_MONT_CTX_new()
    void BN_MONT_CTX_free(BN_MONT_CTX *mont)
    int BN_MONT_CTX_set(BN_MONT_CTX *mont, const BIGNUM *mod, BN_CTX *ctx)
    int BN_num_bytes(const BIGNUM *a)
    int BN_num_bits(const BIGNUM *a)
    int BN_is_odd(const BIGNUM *a)
    int BN_is_one(const BIGNUM *a)
    int BN_is_negative(const BIGNUM *a)
    int BN_cmp(const BIGNUM *a, const BIGNUM *b)
    BIGNUM *BN_bin2bn(const unsigned char *s, int len, BIGNUM *ret)
    int BN_bn2binpad(const BIGNUM *a, unsigned char *to, int tolen)
    int BN_mod_exp_mont(BIGNUM *r, const BIGNUM *a, const BIGNUM *p, const BIGNUM *m, BN_CTX *ctx,
                        BN_MONT_CTX *m_ctx)

cdef extern from "openssl/core_names.h":
    const char *OSSL_PKEY_PARAM_RSA_N
    const char *OSSL_PKEY_PARAM_RSA_E

cdef extern from "openssl/evp.h":
    int EVP_PKEY_get_bn_param(const EVP_PKEY *pkey, const char *key_name, BIGNUM **bn)

cdef extern from "openssl/x509.h":
    EVP_PKEY *d2i_PUBKEY(EVP_PKEY **a, const unsigned char **pp, long length)

cdef extern from "openssl/err.h":
    void ERR_clear_error()


# SHA-256 fetched from the provider once: OpenSSL 3 looks the algorithm up
# (locks, a name-map walk) on every init given the legacy EVP_sha256() object.
cdef EVP_MD *SHA256_MD = EVP_MD_fetch(NULL, b"SHA256", NULL)
if SHA256_MD == NULL:
    raise ImportError("libcrypto has no SHA256")

# DER DigestInfo header for SHA-256 (RFC 8017 §9.2 note 1).
cdef bytes SHA256_DIGEST_INFO = bytes.fromhex("3031300d060960864801650304020105000420")
cdef enum:
    MAX_MODULUS = 1024  # bytes: RSA-8192; JPKI cards use 2048 bits


cdef object bn_int(const BIGNUM *a):
    """The magnitude of a BIGNUM as a Python int."""
    cdef int size = BN_num_bytes(a)
    cdef bytearray raw = bytearray(size)
    if size and BN_bn2binpad(a, <unsigned char *>PyByteArray_AS_STRING(raw), size) != size:
        raise MemoryError()
    return int.from_bytes(raw, "big")


def _der(tag: int, body: bytes) -> bytes:
    n = len(body)
    size = bytes((n,)) if n < 0x80 else bytes((0x80 | (n.bit_length() + 7) // 8,)) + n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((tag,)) + size + body


def rsa_spki_der(n: int, e: int) -> bytes:
    """SubjectPublicKeyInfo { rsaEncryption, NULL } of RSAPublicKey { n, e } (RFC 8017 A.1.1)."""
    def integer(v):
        return _der(0x02, v.to_bytes(v.bit_length() // 8 + 1, "big"))  # a leading 0 keeps it positive
    algorithm = _der(0x30, RSA_ENCRYPTION_OID + b"\x05\x00")
    return _der(0x30, algorithm + _der(0x03, b"\x00" + _der(0x30, integer(n) + integer(e))))


RSA_ENCRYPTION_OID = bytes.fromhex("06092a864886f70d010101")  # 1.2.840.113549.1.1.1


cdef class RsaPublicKey:
    """An RSA public key from its DER SubjectPublicKeyInfo.

    Verification is RFC 8017 §8.2.2 "encode and compare": s^e mod n, then a
    byte comparison with the one valid PKCS#1 v1.5 encoding of the SHA-256
    DigestInfo, nothing parsed out of the signature. Directly on libcrypto's
    Montgomery exponentiation, with the key's Montgomery context and the
    scratch numbers made once per key: OpenSSL 3's EVP verify path (provider
    dispatch, a BN_CTX and padding layers per call) cost ~4 µs more of each
    ~18 µs check. Not for concurrent use; every call holds the GIL, which
    serialises them."""

    cdef BIGNUM *n
    cdef BIGNUM *e
    cdef BIGNUM *s
    cdef BIGNUM *m
    cdef BN_CTX *ctx
    cdef BN_MONT_CTX *mont
    cdef int k                        # modulus length in bytes

    def __cinit__(self, bytes spki_der not None):
        cdef const unsigned char *start = spki_der
        cdef const unsigned char *p = start
        cdef EVP_PKEY *pkey = d2i_PUBKEY(NULL, &p, len(spki_der))
        if pkey == NULL:
            ERR_clear_error()
            raise ValueError("not a DER SubjectPublicKeyInfo")
        try:
            # rsaEncryption only: an RSA-PSS key (its own base id) is not for PKCS#1 v1.5
            if EVP_PKEY_get_base_id(pkey) != EVP_PKEY_RSA:
                raise ValueError("not an RSA (rsaEncryption) key")
            if (EVP_PKEY_get_bn_param(pkey, OSSL_PKEY_PARAM_RSA_N, &self.n) != 1
                    or EVP_PKEY_get_bn_param(pkey, OSSL_PKEY_PARAM_RSA_E, &self.e) != 1):
                ERR_clear_error()
                raise ValueError("RSA key without modulus or exponent")
        finally:
            EVP_PKEY_free(pkey)
        # The numbers as read must be the key as encoded: libcrypto hands a
        # negative INTEGER over as its two's complement bytes (-3 as 253), and
        # BER leniencies would let two encodings name one key. The one DER
        # encoding of (n, e) must be exactly the bytes given.
        if spki_der != rsa_spki_der(bn_int(self.n), bn_int(self.e)):
            raise ValueError("not the DER SubjectPublicKeyInfo of an RSA key (n, e)")
        self.k = BN_num_bytes(self.n)
        # 11 bytes of padding at least (00 01 FF*8 00), then DigestInfo + digest.
        if (BN_is_negative(self.n) or not BN_is_odd(self.n) or self.k < 11 + 19 + 32
                or self.k > MAX_MODULUS):
            raise ValueError("RSA modulus unusable for PKCS#1 v1.5 / SHA-256")
        # RFC 8017 §3.1: 3 <= e <= n - 1, and e odd (coprime to an even lambda(n)).
        # e = 1 would make s^e = s: any s equal to the expected block would verify.
        if BN_is_one(self.e):
            raise ValueError("RSA public exponent 1 verifies anything")
        if (BN_is_negative(self.e) or BN_num_bits(self.e) < 2 or not BN_is_odd(self.e)
                or BN_cmp(self.e, self.n) >= 0):
            raise ValueError("RSA public exponent must be odd, at least 3 and below the modulus")
        self.s, self.m, self.ctx, self.mont = BN_new(), BN_new(), BN_CTX_new(), BN_MONT_CTX_new()
        if self.s == NULL or self.m == NULL or self.ctx == NULL or self.mont == NULL:
            raise MemoryError()
        if BN_MONT_CTX_set(self.mont, self.n, self.ctx) != 1:
            ERR_clear_error()
            raise ValueError("RSA modulus refused")

    def __dealloc__(self):
        BN_free(self.n)  # each free accepts NULL
        BN_free(self.e)
        BN_free(self.s)
        BN_free(self.m)
        BN_CTX_free(self.ctx)
        BN_MONT_CTX_free(self.mont)

    def verify_pkcs1v15_sha256(self, const unsigned char[::1] signature not None,
                               const unsigned char[::1] message not None) -> bool:
        """True if `signature` is a PKCS#1 v1.5 signature of SHA-256(message)."""
        cdef unsigned char em[MAX_MODULUS]
        cdef unsigned char expected[MAX_MODULUS]  # 00 01 FF..FF 00 DigestInfo digest
        cdef unsigned int digest_len = 0
        cdef int fill = self.k - 3 - 19 - 32
        if signature.shape[0] != self.k:  # RFC 8017 §8.2.2 step 1
            return False
        expected[0] = 0x00
        expected[1] = 0x01
        memset(&expected[2], 0xFF, fill)
        expected[2 + fill] = 0x00
        memcpy(&expected[3 + fill], <const unsigned char *>SHA256_DIGEST_INFO, 19)
        if EVP_Digest(&message[0] if message.shape[0] else NULL, message.shape[0], &expected[self.k - 32],
                      &digest_len, SHA256_MD, NULL) != 1:
            ERR_clear_error()
            raise MemoryError()
        if BN_bin2bn(&signature[0], self.k, self.s) == NULL:
            ERR_clear_error()
            raise MemoryError()
        if BN_cmp(self.s, self.n) >= 0:  # RSAVP1: the representative must be < n
            return False
        if (BN_mod_exp_mont(self.m, self.s, self.e, self.n, self.ctx, self.mont) != 1
                or BN_bn2binpad(self.m, em, self.k) != self.k):
            ERR_clear_error()
            return False
        return memcmp(em, expected, self.k) == 0


cdef extern from "<sys/mman.h>":
    void *mmap(void *addr, size_t length, int prot, int flags, int fd, long offset)
    int munmap(void *addr, size_t length)
    int PROT_READ, PROT_WRITE, MAP_SHARED, MAP_ANONYMOUS, MAP_POPULATE
    void *MAP_FAILED

cdef extern from "<errno.h>":
    int EOWNERDEAD, EBUSY

cdef extern from "<stdint.h>":
    size_t SIZE_MAX

cdef extern from "<pthread.h>" nogil:
    ctypedef struct pthread_mutex_t:
        pass
    ctypedef struct pthread_mutexattr_t:
        pass
    int pthread_mutexattr_init(pthread_mutexattr_t *attr)
    int pthread_mutexattr_destroy(pthread_mutexattr_t *attr)
    int pthread_mutexattr_setpshared(pthread_mutexattr_t *attr, int pshared)
    int pthread_mutexattr_setrobust(pthread_mutexattr_t *attr, int robust)
    int pthread_mutex_init(pthread_mutex_t *m, const pthread_mutexattr_t *attr)
    int pthread_mutex_lock(pthread_mutex_t *m)
    int pthread_mutex_trylock(pthread_mutex_t *m)
    int pthread_mutex_unlock(pthread_mutex_t *m)
    int pthread_mutex_consistent(pthread_mutex_t *m)
    int PTHREAD_PROCESS_SHARED, PTHREAD_MUTEX_ROBUST

DEF DIGEST = 16
DEF HEADER = 64  # the mutex, on its own cache line before the slots

cdef packed struct Slot:  # as SharedReplayCache.SLOT: <16sd
    uint8_t digest[16]
    double expires


cdef class NonceTable:
    """SharedReplayCache's table in shared memory: anonymous (make it before
    fork), or mapped from `fd` at `offset` so unrelated processes (both servers
    of a deployment) share it; `init_lock` only for the first of them.

    add(digest, now, expires) -> 1 new (remembered until `expires`), 0 seen
    and not yet expired, -1 no free slot in the probe window. Same probing as
    the reference: slots start..start+probe-1 with start = first 8 digest
    bytes (little endian) mod (slots - probe); the first slot holding the
    digest decides (live: seen; expired: reused), else the first expired or
    free slot takes it.
    """

    cdef char *base
    cdef size_t size
    cdef readonly unsigned long long slots
    cdef readonly unsigned long long probe

    def __cinit__(self, unsigned long long slots, unsigned long long probe, int fd=-1, long long offset=0,
                  bint init_lock=True):
        cdef pthread_mutexattr_t attr
        cdef int rc
        if slots <= probe or probe == 0:
            raise ValueError("slots must exceed probe")
        if slots > (SIZE_MAX - HEADER) // sizeof(Slot):  # the byte size would wrap around
            raise ValueError(f"a nonce table of {slots} slots does not fit in memory")
        self.slots, self.probe = slots, probe
        self.size = HEADER + slots * sizeof(Slot)
        # MAP_POPULATE: fault the pages in now (before fork), not one by one on
        # the hot path (measured ~10 us of a check while a fresh table filled).
        cdef void *p = mmap(NULL, self.size, PROT_READ | PROT_WRITE,
                            MAP_SHARED | MAP_POPULATE | (MAP_ANONYMOUS if fd < 0 else 0), fd, offset)
        if p == MAP_FAILED:
            raise MemoryError("mmap")
        self.base = <char *>p  # new: zero-filled, every slot free (expires 0.0)
        if not init_lock:  # another process made the lock and uses it
            return
        rc = pthread_mutexattr_init(&attr)
        if rc:
            raise OSError(rc, "replay table: pthread_mutexattr_init")
        rc = pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED)
        # Robust: a worker killed while holding the lock does not wedge the others.
        if rc == 0:
            rc = pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST)
        if rc == 0:
            rc = pthread_mutex_init(<pthread_mutex_t *>self.base, &attr)
        pthread_mutexattr_destroy(&attr)
        if rc:
            raise OSError(rc, "replay table: cannot make its process-shared robust lock")

    def __dealloc__(self):
        if self.base != NULL:
            munmap(self.base, self.size)

    cdef int _lock(self) except -1:
        """Take the table's lock, or raise OSError: a lock that cannot be taken
        (a damaged or unrecoverable mutex) refuses the proof rather than letting
        two workers write the table at once."""
        cdef pthread_mutex_t *m = <pthread_mutex_t *>self.base
        cdef int rc = pthread_mutex_trylock(m)
        if rc == EBUSY:  # another process holds it: wait without the GIL
            with nogil:
                rc = pthread_mutex_lock(m)
        if rc == EOWNERDEAD:  # its holder died; a slot it half wrote is at worst a stale entry
            rc = pthread_mutex_consistent(m)
            if rc:
                pthread_mutex_unlock(m)
        if rc:
            raise OSError(rc, f"replay table lock failed: {os.strerror(rc)}")
        return 0

    def hold_lock(self) -> None:
        """Tests only: take the lock and keep it (a worker that dies inside it)."""
        self._lock()

    def _scribble_lock(self) -> None:
        """Tests only: overwrite the lock with garbage, as a stray write by a
        worker into the shared memory would."""
        memset(self.base, 0xFF, HEADER)

    def add(self, const unsigned char[::1] digest not None, double now, double expires) -> int:
        if digest.shape[0] != DIGEST:
            raise ValueError("digest must be 16 bytes")
        cdef unsigned long long start = 0
        cdef int i
        for i in range(8):
            start |= (<unsigned long long>digest[i]) << (8 * i)
        start %= self.slots - self.probe
        cdef Slot *window = <Slot *>(self.base + HEADER) + start
        cdef Slot *target = NULL
        cdef unsigned long long j
        cdef int result = 1
        self._lock()  # raises if not taken: nothing below runs unlocked
        try:
            for j in range(self.probe):
                if memcmp(window[j].digest, &digest[0], DIGEST) == 0:
                    if window[j].expires >= now:
                        result = 0
                    else:
                        target = &window[j]
                    break
            if result == 1 and target == NULL:
                for j in range(self.probe):
                    if window[j].expires < now:
                        target = &window[j]
                        break
                else:
                    result = -1
            if result == 1:
                memcpy(target.digest, &digest[0], DIGEST)
                target.expires = expires
        finally:
            pthread_mutex_unlock(<pthread_mutex_t *>self.base)
        return result
