# cython: language_level=3
"""The access log's group commit in C (onshi.core.audit is the reference and
owns everything else: opening, segments, rotation, verify).

Why: in the threaded gRPC server every handler parks until its record is
durable. The Python group commit parks it on a threading.Condition and the
leader drops the GIL for each pwrite/fdatasync, each lock hand-off and a
yield: a dozen thread switches per check. Here a handler copies its record
body in, then waits on a pthread condition with the GIL released, once; the
leader chains (SHA-256, as audit.chain), writes, fdatasyncs and updates the
head file without the GIL, then wakes the batch that is done and hands the
next batch to one waiter of it.

The bytes written are audit.py's exactly (record := u32 len, body, hash;
head := JSON line padded to HEAD_SIZE, with an HMAC-SHA256 "mac" when the log
has a key: audit.head_line); tests/test_audit_native.py compares segments and
heads written by both.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from libc.errno cimport errno
from libc.stdint cimport uint32_t
from libc.stdio cimport snprintf
from libc.stdlib cimport calloc, free, realloc
from libc.string cimport memcpy, memset

cdef extern from "<unistd.h>" nogil:
    ssize_t pwrite(int fd, const void *buf, size_t count, long offset)
    int fdatasync(int fd)

cdef extern from "<time.h>" nogil:
    ctypedef int clockid_t
    cdef struct timespec:
        long tv_sec
        long tv_nsec
    clockid_t CLOCK_MONOTONIC
    int clock_gettime(clockid_t clk, timespec *tp)


cdef long long mono_ns() noexcept nogil:
    cdef timespec t
    clock_gettime(CLOCK_MONOTONIC, &t)
    return t.tv_sec * 1000000000 + t.tv_nsec


cdef extern from "<pthread.h>" nogil:
    ctypedef struct pthread_mutex_t:
        pass
    ctypedef struct pthread_cond_t:
        pass
    int pthread_mutex_init(pthread_mutex_t *m, void *attr)
    int pthread_mutex_destroy(pthread_mutex_t *m)
    int pthread_mutex_lock(pthread_mutex_t *m)
    int pthread_mutex_trylock(pthread_mutex_t *m)
    int pthread_mutex_unlock(pthread_mutex_t *m)
    ctypedef struct pthread_condattr_t:
        pass
    int pthread_condattr_init(pthread_condattr_t *a)
    int pthread_condattr_setclock(pthread_condattr_t *a, clockid_t clk)
    int pthread_condattr_destroy(pthread_condattr_t *a)
    int pthread_cond_timedwait(pthread_cond_t *c, pthread_mutex_t *m, const timespec *abstime)
    int pthread_cond_init(pthread_cond_t *c, void *attr)
    int pthread_cond_destroy(pthread_cond_t *c)
    int pthread_cond_wait(pthread_cond_t *c, pthread_mutex_t *m)
    int pthread_cond_signal(pthread_cond_t *c)
    int pthread_cond_broadcast(pthread_cond_t *c)

cdef extern from "<openssl/evp.h>" nogil:
    ctypedef struct EVP_MD_CTX
    ctypedef struct EVP_MD
    ctypedef struct ENGINE
    EVP_MD_CTX *EVP_MD_CTX_new()
    void EVP_MD_CTX_free(EVP_MD_CTX *ctx)
    EVP_MD *EVP_MD_fetch(void *libctx, const char *algorithm, const char *properties)
    int EVP_DigestInit_ex(EVP_MD_CTX *ctx, const EVP_MD *type, ENGINE *impl)
    int EVP_DigestUpdate(EVP_MD_CTX *ctx, const void *d, size_t cnt)
    int EVP_DigestFinal_ex(EVP_MD_CTX *ctx, unsigned char *md, unsigned int *s)
    int EVP_MD_CTX_copy_ex(EVP_MD_CTX *out, const EVP_MD_CTX *inp)

# SHA-256 fetched once: with the legacy EVP_sha256() object OpenSSL 3 looks
# the algorithm up (locks, a name-map walk) on every DigestInit.
cdef EVP_MD *SHA256_MD = EVP_MD_fetch(NULL, b"SHA256", NULL)
if SHA256_MD == NULL:
    raise ImportError("libcrypto has no SHA256")

DEF HASH = 32
DEF HEAD_SIZE = 256  # audit.HEAD_SIZE
DEF MAC_BLOCK = 64   # SHA-256's block: HMAC pads the key to it (audit keys are 32 bytes)
DEF MAC_MSG = 256    # "onshi/v1/audit-head\n" stream "\n" seq "\n" records "\n" hash-hex

# append() results
cdef enum:
    C_DURABLE = 0
    C_ROTATE = 1  # durable, and the caller now leads a rotation: call rotated() or fail()
DURABLE = C_DURABLE
ROTATE = C_ROTATE


cdef struct Buf:
    char *data
    size_t len
    size_t cap
    size_t count


cdef int buf_reserve(Buf *b, size_t extra) noexcept nogil:
    cdef size_t want = b.len + extra
    cdef size_t cap = b.cap if b.cap else 4096
    cdef char *p
    if want <= b.cap:
        return 0
    while cap < want:
        cap *= 2
    p = <char *>realloc(b.data, cap)
    if p == NULL:
        return -1
    b.data, b.cap = p, cap
    return 0


cdef int write_all(int fd, const char *data, size_t n, long offset) noexcept nogil:
    cdef ssize_t w
    while n:
        w = pwrite(fd, data, n, offset)
        if w < 0:
            return errno
        data += w
        n -= <size_t>w
        offset += w
    return 0


cdef class GroupCommit:
    """The hot half of one AuditLog stream: pending record bodies, the chain
    head and the file offsets. The fds stay owned by AuditLog."""

    cdef pthread_mutex_t mutex
    cdef pthread_cond_t turn[2]     # waiters of batch b wait on turn[b & 1]
    cdef Buf pending                # u32 len + body, per record, of the open batch
    cdef Buf spare
    cdef Buf out
    cdef unsigned long long open_batch, done_batch
    cdef bint writing, closing
    cdef bint rotating              # a caller got ROTATE and owes rotated() or fail()
    cdef int error                  # errno of a failed write: fail-stop
    cdef EVP_MD_CTX *sha
    cdef char *zeros
    # chain and file state (the leader's, or under the mutex)
    # read-only from Python: the writer's own state (preallocate is the size of `zeros`)
    cdef readonly int fd, head_fd
    cdef readonly long long size, allocated, seq, total, segment_bytes, preallocate
    cdef readonly bint durable
    cdef public bint force_rotate
    # At most one fdatasync per interval (as AuditLog.sync_interval_ns): the
    # leader of a batch that comes sooner waits for the rest of the interval
    # while the batch keeps filling. Syncs then carry more records under load;
    # a lone record after a quiet interval is synced at once.
    cdef public long long sync_interval_ns
    cdef long long last_sync_ns
    # The leader stops waiting once the batch holds this many records (the
    # handler threads that can append: no more can come); 0 = the whole interval.
    cdef public int batch_target
    cdef readonly bint gathering
    cdef pthread_cond_t fill        # a gathering leader waits here (CLOCK_MONOTONIC)
    cdef unsigned char last[HASH]
    cdef readonly unsigned long long batches, records
    # How batches closed (as AuditLog.batches_filled / batches_timed): full
    # within the interval, or when the interval ran out.
    cdef readonly unsigned long long batches_filled, batches_timed
    # HMAC-SHA256 of the head (audit.head_mac), when the log has a key: the
    # inner and outer digests with the padded key already absorbed.
    cdef EVP_MD_CTX *mac_inner
    cdef EVP_MD_CTX *mac_outer
    cdef char mac_prefix[MAC_MSG]
    cdef int mac_prefix_len

    def __cinit__(self):
        pthread_mutex_init(&self.mutex, NULL)
        pthread_cond_init(&self.turn[0], NULL)
        pthread_cond_init(&self.turn[1], NULL)
        cdef pthread_condattr_t attr
        pthread_condattr_init(&attr)
        pthread_condattr_setclock(&attr, CLOCK_MONOTONIC)
        pthread_cond_init(&self.fill, &attr)
        pthread_condattr_destroy(&attr)
        self.sha = EVP_MD_CTX_new()
        if self.sha == NULL:
            raise MemoryError()
        self.open_batch = 1

    def __init__(self, int fd, int head_fd, long long size, long long allocated, long long seq, long long total,
                 bytes last_hash not None, bint durable, long long segment_bytes, long long preallocate,
                 bytes mac_key=b"", bytes stream=b""):
        if self.zeros != NULL:
            raise RuntimeError("GroupCommit is already initialised")
        if preallocate <= 0 or segment_bytes <= 0 or size < 0 or allocated < size:
            # preallocate 0 would make the zero-fill loop spin for ever
            raise ValueError("sizes must be positive (preallocate, segment_bytes) and 0 <= size <= allocated")
        self.fd, self.head_fd, self.durable = fd, head_fd, durable
        self.size, self.allocated, self.seq, self.total = size, allocated, seq, total
        self.segment_bytes, self.preallocate = segment_bytes, preallocate
        if len(last_hash) != HASH:
            raise ValueError("hash must be 32 bytes")
        memcpy(self.last, PyBytes_AS_STRING(last_hash), HASH)
        self.zeros = <char *>calloc(preallocate, 1)
        if self.zeros == NULL:
            raise MemoryError()
        if mac_key:
            self._set_mac_key(mac_key, b"onshi/v1/audit-head\n" + (stream or b"") + b"\n")

    cdef _set_mac_key(self, bytes key, bytes prefix):
        cdef unsigned char pad[MAC_BLOCK]
        cdef int i
        if len(key) > MAC_BLOCK or len(prefix) > MAC_MSG - 100:
            raise ValueError("audit key or stream name too long")
        memcpy(self.mac_prefix, PyBytes_AS_STRING(prefix), len(prefix))
        self.mac_prefix_len = len(prefix)
        self.mac_inner, self.mac_outer = EVP_MD_CTX_new(), EVP_MD_CTX_new()
        if self.mac_inner == NULL or self.mac_outer == NULL:
            raise MemoryError()
        for i in range(MAC_BLOCK):  # RFC 2104: K xor ipad, K xor opad
            pad[i] = (<unsigned char>PyBytes_AS_STRING(key)[i] if i < len(key) else 0) ^ 0x36
        if EVP_DigestInit_ex(self.mac_inner, SHA256_MD, NULL) != 1 or \
                EVP_DigestUpdate(self.mac_inner, pad, MAC_BLOCK) != 1:
            raise MemoryError()
        for i in range(MAC_BLOCK):
            pad[i] ^= 0x36 ^ 0x5C
        if EVP_DigestInit_ex(self.mac_outer, SHA256_MD, NULL) != 1 or \
                EVP_DigestUpdate(self.mac_outer, pad, MAC_BLOCK) != 1:
            raise MemoryError()

    def __dealloc__(self):
        free(self.pending.data)
        free(self.spare.data)
        free(self.out.data)
        free(self.zeros)
        if self.sha != NULL:
            EVP_MD_CTX_free(self.sha)
        if self.mac_inner != NULL:
            EVP_MD_CTX_free(self.mac_inner)
        if self.mac_outer != NULL:
            EVP_MD_CTX_free(self.mac_outer)
        pthread_cond_destroy(&self.turn[0])
        pthread_cond_destroy(&self.turn[1])
        pthread_cond_destroy(&self.fill)
        pthread_mutex_destroy(&self.mutex)

    @property
    def last_hash(self) -> bytes:
        return self.last[:HASH]


    def append(self, list bodies) -> int:
        """Queue encoded record bodies; return once they are durable (DURABLE),
        or durable with the caller now leading a rotation (ROTATE). Raises
        OSError if writing failed (then and for every later call)."""
        cdef size_t need = 0
        cdef object body
        # A snapshot: the GIL is released below before the bodies are copied,
        # and the list could change meanwhile (the copy must match `need`).
        cdef tuple items = tuple(bodies)
        if self.zeros == NULL:
            raise RuntimeError("GroupCommit was not initialised")
        for body in items:
            if type(body) is not bytes:
                raise TypeError("bodies must be bytes")
            if PyBytes_GET_SIZE(body) > 0xFFFFFFFF:  # its length is a u32
                raise ValueError("an access-log record body must be under 4 GiB")
            need += 4 + <size_t>PyBytes_GET_SIZE(body)
        cdef unsigned long long mine
        cdef uint32_t n
        cdef int rc = 0, err = 0
        cdef bint lead = False
        # Each GIL release with another thread waiting for it is a hand-off
        # (two thread switches on this server): take an uncontended mutex
        # without releasing it.
        if pthread_mutex_trylock(&self.mutex) != 0:
            with nogil:
                pthread_mutex_lock(&self.mutex)
        if self.closing or self.error:
            err = self.error
            pthread_mutex_unlock(&self.mutex)
            if err:
                raise OSError(err, "audit log write failed earlier")
            raise RuntimeError("audit log closed")
        if buf_reserve(&self.pending, need) != 0:
            pthread_mutex_unlock(&self.mutex)
            raise MemoryError()
        for body in items:  # with the GIL: the bodies are Python bytes
            n = <uint32_t>PyBytes_GET_SIZE(body)
            memcpy(self.pending.data + self.pending.len, &n, 4)  # little endian, as struct "<I"
            memcpy(self.pending.data + self.pending.len + 4, PyBytes_AS_STRING(body), n)
            self.pending.len += 4 + n
            self.pending.count += 1
        if self.gathering and self._filled():
            pthread_cond_signal(&self.fill)
        mine = self.open_batch
        if not self.durable and not self.writing:
            # Not synced: the leader's writes go to the page cache in a few
            # microseconds, less than a GIL hand-off; lead with the GIL held.
            # (writing: a rotation is under way, wait for it below.) The mutex
            # stays held through the write: a thread holding the GIL must never
            # block on the mutex, as a thread that took the mutex with the GIL
            # released may be waiting for the GIL while holding it.
            rc = self._lead(True, NULL)
            if rc == C_ROTATE or self.error or self.done_batch >= mine:
                err = self.error
                pthread_mutex_unlock(&self.mutex)
                if err:
                    raise OSError(err, "audit log write failed")
                return rc
        cdef unsigned long long wake[2]
        wake[0] = 0
        with nogil:
            while True:
                if self.error:
                    err = self.error
                    break
                if self.done_batch >= mine:
                    break
                if not self.writing:  # our batch is the open one and nobody writes: lead it
                    rc = self._lead(False, wake)
                    if rc == C_ROTATE:  # stay the writer until rotated()/fail()
                        break
                    continue
                pthread_cond_wait(&self.turn[mine & 1], &self.mutex)
            pthread_mutex_unlock(&self.mutex)
            if wake[0]:
                # Woken after the unlock: a waiter woken while the leader still
                # held the mutex would block on it at once (two more switches).
                # No wake-up is lost: waiters test done_batch under the mutex.
                pthread_cond_broadcast(&self.turn[wake[0] & 1])
                if wake[1]:  # one waiter of the next batch leads it
                    pthread_cond_signal(&self.turn[(wake[0] + 1) & 1])
        if err:
            raise OSError(err, "audit log write failed")
        return rc

    cdef int _lead(self, bint keep_locked, unsigned long long *wake) noexcept nogil:
        """With the mutex held; returns with it held. Writes the open batch
        (with the mutex released meanwhile unless keep_locked). With `wake`,
        the batch's waiters are left for the caller to wake after it unlocks:
        wake[0] = the batch written, wake[1] = whether the next batch waits
        for a leader."""
        cdef Buf batch
        cdef unsigned long long number
        cdef int err
        cdef long long due
        cdef timespec until
        cdef int closed = 0  # 1: filled within the interval, 2: the interval ran out
        if self.durable and self.sync_interval_ns > 0 and not keep_locked:
            due = self.last_sync_ns + self.sync_interval_ns
            if mono_ns() < due and not self.closing:
                if not self._filled():
                    self.writing = True  # arrivals join this batch and wait; none leads
                    self.gathering = True
                    until.tv_sec = due // 1000000000
                    until.tv_nsec = due % 1000000000
                    while not self.closing and not self._filled():
                        if pthread_cond_timedwait(&self.fill, &self.mutex, &until) != 0:  # ETIMEDOUT (or an error)
                            break
                    self.gathering = False
                closed = 1 if self._filled() else (0 if self.closing else 2)
            self.last_sync_ns = mono_ns()
        batch = self.pending
        number = self.open_batch
        self.pending = self.spare
        self.pending.len = self.pending.count = 0
        self.open_batch += 1
        self.writing = True
        if not keep_locked:
            pthread_mutex_unlock(&self.mutex)
        err = self._write(&batch)
        if not keep_locked:
            pthread_mutex_lock(&self.mutex)
        batch.len = batch.count = 0
        self.spare = batch
        self.writing = False
        if err:
            self.error = err
            pthread_cond_broadcast(&self.turn[0])
            pthread_cond_broadcast(&self.turn[1])
            return C_DURABLE
        self.done_batch = number
        if closed == 1:
            self.batches_filled += 1
        elif closed == 2:
            self.batches_timed += 1
        if wake != NULL:
            wake[0], wake[1] = number, 0
        else:
            pthread_cond_broadcast(&self.turn[number & 1])
        if self.closing:  # close() waits on either turn
            pthread_cond_broadcast(&self.turn[(number + 1) & 1])
        if self.size >= self.segment_bytes or self.force_rotate:
            self.force_rotate = False
            self.writing = True  # the caller rotates; the next batch waits for it
            self.rotating = True
            return C_ROTATE
        if self.pending.count:  # one waiter of the next batch leads it
            if wake != NULL:
                wake[1] = 1
            else:
                pthread_cond_signal(&self.turn[(number + 1) & 1])
        return C_DURABLE

    cdef bint _filled(self) noexcept nogil:
        return self.batch_target > 0 and self.pending.count >= <size_t>self.batch_target

    cdef int _write(self, Buf *batch) noexcept nogil:
        """Chain, frame, write, sync, head: as AuditLog._write. Returns errno or 0."""
        cdef size_t pos = 0, n, grow
        cdef uint32_t body_len
        cdef unsigned int hlen
        cdef int err
        cdef char head[HEAD_SIZE + 1]
        cdef char hexd[2 * HASH + 1]
        cdef char machex[2 * HASH + 1]
        cdef char msg[MAC_MSG]
        cdef unsigned char mac[HASH]
        cdef int i, w, m
        if buf_reserve(&self.out, batch.len + batch.count * HASH) != 0:
            return 12  # ENOMEM
        self.out.len = 0
        while pos < batch.len:
            memcpy(&body_len, batch.data + pos, 4)
            n = 4 + body_len
            # hash := SHA-256(previous hash || u32 body_len || body); a failed digest
            # would chain garbage into the log: fail-stop (EIO) instead
            if (EVP_DigestInit_ex(self.sha, SHA256_MD, NULL) != 1
                    or EVP_DigestUpdate(self.sha, self.last, HASH) != 1
                    or EVP_DigestUpdate(self.sha, batch.data + pos, n) != 1):
                return 5  # EIO
            memcpy(self.out.data + self.out.len, batch.data + pos, n)
            if EVP_DigestFinal_ex(self.sha, self.last, &hlen) != 1 or hlen != HASH:
                return 5
            memcpy(self.out.data + self.out.len + n, self.last, HASH)
            self.out.len += n + HASH
            pos += n
        if self.size + <long long>self.out.len > self.allocated:  # zero-fill ahead, as _extend
            grow = self.size + self.out.len - self.allocated
            if grow < <size_t>self.preallocate:
                grow = self.preallocate
            while grow:
                n = grow if grow < <size_t>self.preallocate else <size_t>self.preallocate
                err = write_all(self.fd, self.zeros, n, self.allocated)
                if err:
                    return err
                self.allocated += n
                grow -= n
        err = write_all(self.fd, self.out.data, self.out.len, self.size)
        if err:
            return err
        if self.durable and fdatasync(self.fd) != 0:
            return errno
        self.size += self.out.len
        self.total += batch.count
        self.batches += 1
        self.records += batch.count
        # After the sync: head never claims more than is durable (as AuditLog._write).
        for i in range(HASH):
            snprintf(hexd + 2 * i, 3, "%02x", self.last[i])
        if self.mac_inner == NULL:
            w = snprintf(head, HEAD_SIZE + 1, '{"seq": %lld, "records": %lld, "hash": "%s"}',
                         self.seq, self.total, hexd)
        else:  # HMAC(key, prefix || seq "\n" records "\n" hash-hex), as audit.head_mac
            m = snprintf(msg, MAC_MSG, "%lld\n%lld\n%s", self.seq, self.total, hexd)
            if m < 0 or m >= MAC_MSG:
                return 75  # EOVERFLOW
            if (EVP_MD_CTX_copy_ex(self.sha, self.mac_inner) != 1
                    or EVP_DigestUpdate(self.sha, self.mac_prefix, self.mac_prefix_len) != 1
                    or EVP_DigestUpdate(self.sha, msg, m) != 1
                    or EVP_DigestFinal_ex(self.sha, mac, &hlen) != 1
                    or EVP_MD_CTX_copy_ex(self.sha, self.mac_outer) != 1
                    or EVP_DigestUpdate(self.sha, mac, HASH) != 1
                    or EVP_DigestFinal_ex(self.sha, mac, &hlen) != 1 or hlen != HASH):
                return 5  # EIO: a head without a valid MAC would read as tampering
            for i in range(HASH):
                snprintf(machex + 2 * i, 3, "%02x", mac[i])
            w = snprintf(head, HEAD_SIZE + 1, '{"seq": %lld, "records": %lld, "hash": "%s", "mac": "%s"}',
                         self.seq, self.total, hexd, machex)
        if w < 0 or w > HEAD_SIZE - 1:
            return 75  # EOVERFLOW
        memset(head + w, 0x20, HEAD_SIZE - 1 - w)
        head[HEAD_SIZE - 1] = 0x0A
        return write_all(self.head_fd, head, HEAD_SIZE, 0)

    def rotated(self, int fd, long long size, long long allocated, long long seq, long long total,
                bytes last_hash) -> None:
        """The rotating caller (append returned ROTATE) installs the new segment
        and hands the writer role on."""
        if last_hash is None or len(last_hash) != HASH:
            raise ValueError("hash must be 32 bytes")
        if size < 0 or allocated < size:
            raise ValueError("0 <= size <= allocated")
        with nogil:
            pthread_mutex_lock(&self.mutex)
        self._check_rotating()
        memcpy(self.last, PyBytes_AS_STRING(last_hash), HASH)
        self.fd, self.size, self.allocated, self.seq, self.total = fd, size, allocated, seq, total
        self._release()

    def fail(self, int err) -> None:
        """The rotating caller failed: fail-stop, as a failed write."""
        with nogil:
            pthread_mutex_lock(&self.mutex)
        self._check_rotating()
        self.error = err or 5  # EIO
        pthread_cond_broadcast(&self.turn[0])
        pthread_cond_broadcast(&self.turn[1])
        self._release()

    cdef int _check_rotating(self) except -1:
        """With the mutex held: only the caller that got ROTATE may hand the
        writer role on (anyone else would clear `writing` under a leader)."""
        if not self.rotating:
            pthread_mutex_unlock(&self.mutex)
            raise RuntimeError("no rotation is under way")
        return 0

    cdef void _release(self) noexcept:
        self.rotating = False
        self.writing = False
        pthread_cond_broadcast(&self.turn[0])  # rare (a rotation): wake everyone
        pthread_cond_broadcast(&self.turn[1])
        pthread_mutex_unlock(&self.mutex)

    def close(self) -> None:
        """Refuse new records and wait until queued ones are written."""
        with nogil:
            pthread_mutex_lock(&self.mutex)
            self.closing = True
            if self.gathering:  # a leader waiting for its batch to fill: write it now
                pthread_cond_signal(&self.fill)
            while (self.writing or self.pending.count) and not self.error:
                if not self.writing:
                    self._lead_for_close()
                    continue
                pthread_cond_wait(&self.turn[(self.open_batch - 1) & 1], &self.mutex)  # the batch being written
            pthread_mutex_unlock(&self.mutex)

    cdef void _lead_for_close(self) noexcept nogil:
        if self._lead(False, NULL) == C_ROTATE:  # no rotation while closing: the segment stays open
            self.writing = False
            self.rotating = False

    @property
    def failed(self) -> int:
        return self.error
