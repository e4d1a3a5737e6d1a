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

from libc.stdint cimport uint8_t
from libc.string cimport memcmp, memcpy, memset

cdef extern from "openssl/evp.h":
    ctypedef struct EVP_PKEY
    ctypedef struct EVP_MD
    ctypedef struct EVP_PKEY_CTX
    ctypedef struct ENGINE
    int EVP_PKEY_RSA
    void EVP_PKEY_free(EVP_PKEY *pkey)
    int EVP_PKEY_get_base_id(const EVP_PKEY *pkey)
    EVP_MD *EVP_MD_fetch(void *libctx, const char *algorithm, const char *properties)
    int EVP_Digest(const void *data, size_t count, unsigned char *md, unsigned int *size, const EVP_MD *type,
                   ENGINE *impl)
    EVP_PKEY_CTX *EVP_PKEY_CTX_new(EVP_PKEY *pkey, ENGINE *e)
    void EVP_PKEY_CTX_free(EVP_PKEY_CTX *ctx)
    int EVP_PKEY_verify_init(EVP_PKEY_CTX *ctx)
    int EVP_PKEY_verify(EVP_PKEY_CTX *ctx, const unsigned char *sig, size_t siglen,
                        const unsigned char *tbs, size_t tbslen)
    int EVP_PKEY_CTX_set_signature_md(EVP_PKEY_CTX *ctx, const EVP_MD *md)

cdef extern from "openssl/rsa.h":
    int RSA_PKCS1_PADDING
    int EVP_PKEY_CTX_set_rsa_padding(EVP_PKEY_CTX *ctx, int pad)

cdef extern from "openssl/x509.h":
    EVP_PKEY *d2i_PUBKEY(EVP_PKEY **a, const unsigned char **pp, long length)

cdef extern from "openssl/err.h":
    void ERR_clear_error()


# SHA-256 fetched from the provider once: OpenSSL 3 looks the algorithm up
# (locks, a name-map walk) on every init given the legacy EVP_sha256() object.
cdef EVP_MD *SHA256_MD = EVP_MD_fetch(NULL, b"SHA256", NULL)
if SHA256_MD == NULL:
    raise ImportError("libcrypto has no SHA256")


cdef class RsaPublicKey:
    """An RSA public key from its DER SubjectPublicKeyInfo.

    The verify context (key exported to the provider, PKCS#1 v1.5 padding,
    SHA-256 as the signed digest) is set up once per key, not per signature:
    OpenSSL 3's EVP_DigestVerifyInit fetches and exports on every call, a
    quarter of the check. A context is not for concurrent use; every call
    holds the GIL, which serialises them."""

    cdef EVP_PKEY *pkey
    cdef EVP_PKEY_CTX *verify_ctx

    def __cinit__(self, bytes spki_der):
        cdef const unsigned char *p = spki_der
        self.pkey = d2i_PUBKEY(NULL, &p, len(spki_der))
        if self.pkey == NULL:
            ERR_clear_error()
            raise ValueError("not a DER SubjectPublicKeyInfo")
        if EVP_PKEY_get_base_id(self.pkey) != EVP_PKEY_RSA:
            raise ValueError("not an RSA key")
        self.verify_ctx = EVP_PKEY_CTX_new(self.pkey, NULL)
        if self.verify_ctx == NULL:
            ERR_clear_error()
            raise MemoryError()
        if (EVP_PKEY_verify_init(self.verify_ctx) != 1
                or EVP_PKEY_CTX_set_rsa_padding(self.verify_ctx, RSA_PKCS1_PADDING) != 1
                or EVP_PKEY_CTX_set_signature_md(self.verify_ctx, SHA256_MD) != 1):
            ERR_clear_error()
            raise ValueError("RSA key refused for PKCS#1 v1.5 / SHA-256 verification")

    def __dealloc__(self):
        if self.verify_ctx != NULL:
            EVP_PKEY_CTX_free(self.verify_ctx)
        if self.pkey != NULL:
            EVP_PKEY_free(self.pkey)

    def verify_pkcs1v15_sha256(self, const unsigned char[::1] signature not None,
                               const unsigned char[::1] message not None) -> bool:
        """True if `signature` is a PKCS#1 v1.5 signature of SHA-256(message)."""
        cdef unsigned char digest[32]
        cdef unsigned int digest_len = 0
        cdef int ok = 0
        if EVP_Digest(&message[0] if message.shape[0] else NULL, message.shape[0], digest, &digest_len,
                      SHA256_MD, NULL) != 1:
            ERR_clear_error()
            raise MemoryError()
        # The prepared context checks the DigestInfo (SHA-256 OID + digest)
        # inside the PKCS#1 v1.5 block, as EVP_DigestVerify does.
        ok = EVP_PKEY_verify(self.verify_ctx, &signature[0] if signature.shape[0] else NULL, signature.shape[0],
                             digest, digest_len)
        if ok != 1:
            ERR_clear_error()
        return ok == 1


cdef extern from "<sys/mman.h>":
    void *mmap(void *addr, size_t length, int prot, int flags, int fd, long offset)
    int munmap(void *addr, size_t length)
    int PROT_READ, PROT_WRITE, MAP_SHARED, MAP_ANONYMOUS, MAP_POPULATE
    void *MAP_FAILED

cdef extern from "<errno.h>":
    int EOWNERDEAD, EBUSY

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
    """SharedReplayCache's table in shared anonymous memory: make it before fork.

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

    def __cinit__(self, unsigned long long slots, unsigned long long probe):
        cdef pthread_mutexattr_t attr
        if slots <= probe or probe == 0:
            raise ValueError("slots must exceed probe")
        self.slots, self.probe = slots, probe
        self.size = HEADER + slots * sizeof(Slot)
        # MAP_POPULATE: fault the pages in now (before fork), not one by one on
        # the hot path (measured ~10 us of a check while a fresh table filled).
        cdef void *p = mmap(NULL, self.size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS | MAP_POPULATE,
                            -1, 0)
        if p == MAP_FAILED:
            raise MemoryError("mmap")
        self.base = <char *>p  # zero-filled: every slot free (expires 0.0)
        pthread_mutexattr_init(&attr)
        pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED)
        # Robust: a worker killed while holding the lock does not wedge the others.
        pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST)
        pthread_mutex_init(<pthread_mutex_t *>self.base, &attr)
        pthread_mutexattr_destroy(&attr)

    def __dealloc__(self):
        if self.base != NULL:
            munmap(self.base, self.size)

    cdef void _lock(self) noexcept:
        cdef pthread_mutex_t *m = <pthread_mutex_t *>self.base
        cdef int rc = pthread_mutex_trylock(m)
        if rc == EBUSY:  # another process holds it: wait without the GIL
            with nogil:
                rc = pthread_mutex_lock(m)
        if rc == EOWNERDEAD:  # its holder died; a slot it half wrote is at worst a stale entry
            pthread_mutex_consistent(m)

    def hold_lock(self) -> None:
        """Tests only: take the lock and keep it (a worker that dies inside it)."""
        self._lock()

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
        self._lock()
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
