# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The native lookup engine: liblmdb's C API, reused read transactions, the GIL
released for the B-tree walks and the decision, answers copied out as ready-to-send
CheckResponse bytes. Same interface and byte-identical output as
onshi.core.pure.PureEngine (the oracle); the record layout is onshi.core.history's.

Lifetimes: every pointer into the map is used only between mdb_txn_renew and
mdb_txn_reset of one pooled transaction, and payloads are copied into the result
bytes before the reset. A map resize (the writer grew the file) unmaps the old
region, so it waits until no transaction of this engine is live.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_Check, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.list cimport PyList_New, PyList_SET_ITEM
from cpython.ref cimport Py_INCREF
from cpython.tuple cimport PyTuple_GET_ITEM, PyTuple_GET_SIZE
from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free, malloc, qsort
from libc.string cimport memcmp, memcpy

# The liblmdb declarations, included textually: a `cimport lmdb` would resolve to
# py-lmdb's Python package, and the module's package (onshi) maps onto src/.
include "lmdb.pxd"

import os

cdef extern from "<unistd.h>" nogil:
    int usleep(unsigned int usec)

cdef enum:
    HEADER_SIZE = 8       # <HHi   version, entry count, birth day
    ENTRY_SIZE = 24       # <iiQII acquisition, loss, number hash, payload offset, length
    RECORD_VERSION = 1
    POOL_MAX = 16         # idle read transactions kept (each holds a reader slot)
    MAX_DBS = 32          # as onshi.core.store
    MAX_READERS = 1024

    # Validity codes (onshi.v1 Validity)
    VALID = 1
    INVALID = 2
    INVALID_NEWER_EXISTS = 3
    NO_RECORD = 4
    MULTIPLE = 5

    # Our own error codes; LMDB's are errno values or <= -30799.
    ERR_SHORT = -1001
    ERR_VERSION = -1002
    ERR_ENTRIES = -1003
    ERR_PAYLOAD = -1004

cdef extern from *:
    """
    #define ONSHI_FNV_OFFSET 0xCBF29CE484222325ULL
    #define ONSHI_FNV_PRIME 0x100000001B3ULL
    """
    const uint64_t FNV_OFFSET "ONSHI_FNV_OFFSET"
    const uint64_t FNV_PRIME "ONSHI_FNV_PRIME"


class LmdbError(RuntimeError):
    """An unexpected liblmdb error (the message is mdb_strerror's)."""

    def __init__(self, what, code):
        super().__init__(f"{what}: {mdb_strerror(code).decode(errors='replace')} ({code})")
        self.code = code


# --- records ---------------------------------------------------------------

cdef inline uint16_t rd16(const uint8_t *p) noexcept nogil:
    return <uint16_t>(p[0] | (<uint16_t>p[1] << 8))

cdef inline uint32_t rd32(const uint8_t *p) noexcept nogil:
    return p[0] | (<uint32_t>p[1] << 8) | (<uint32_t>p[2] << 16) | (<uint32_t>p[3] << 24)

cdef inline uint64_t rd64(const uint8_t *p) noexcept nogil:
    return rd32(p) | (<uint64_t>rd32(p + 4) << 32)


cdef inline uint64_t fnv1a64(const uint8_t *key, size_t n) noexcept nogil:
    """FNV-1a 64, as onshi.core.identifiers.number_hash."""
    cdef uint64_t h = FNV_OFFSET
    cdef size_t i
    for i in range(n):
        h = (h ^ key[i]) * FNV_PRIME
    return h


cdef struct Choice:
    # What to answer from one history record: the validity, and either one entry
    # (single >= 0) or every entry covering `day` (filtered by number hash when
    # by_number). `size` is the full response length.
    const uint8_t *rec
    uint32_t count
    int validity
    int single
    bint by_number
    uint64_t number_hash
    int64_t day
    size_t size


cdef int decide(const uint8_t *rec, size_t size, bint by_number, uint64_t number_hash,
                int64_t claimed_birth, int64_t day, Choice *ch) noexcept nogil:
    """history.choose_by_card / choose_by_number over the headers; validates the
    record first so a corrupt value raises instead of reading past it."""
    cdef uint32_t count, i, off, length
    cdef const uint8_t *e
    cdef int64_t acq, loss
    cdef int nvalid = 0
    cdef int last_started = -1
    cdef size_t valid_len = 0
    ch.rec = rec
    ch.by_number = by_number
    ch.number_hash = number_hash
    ch.day = day
    ch.single = -1
    if size < HEADER_SIZE:
        return ERR_SHORT
    if rd16(rec) != RECORD_VERSION:
        return ERR_VERSION
    count = rd16(rec + 2)
    ch.count = count
    if HEADER_SIZE + <size_t>ENTRY_SIZE * count > size:
        return ERR_ENTRIES
    for i in range(count):
        e = rec + HEADER_SIZE + ENTRY_SIZE * i
        off = rd32(e + 16)
        length = rd32(e + 20)
        if <uint64_t>off + length > size:
            return ERR_PAYLOAD
    if by_number and <int64_t><int32_t>rd32(rec + 4) != claimed_birth:
        ch.validity = NO_RECORD
        ch.size = 2
        return 0
    for i in range(count):
        e = rec + HEADER_SIZE + ENTRY_SIZE * i
        if by_number and rd64(e + 8) != number_hash:
            continue
        acq = <int32_t>rd32(e)
        if acq <= day:
            last_started = i
            loss = <int32_t>rd32(e + 4)
            if day < loss:
                nvalid += 1
                valid_len += rd32(e + 20)
    if nvalid:
        ch.validity = VALID if nvalid == 1 else MULTIPLE
        ch.size = 2 + valid_len
        return 0
    if last_started < 0:
        ch.validity = NO_RECORD
        ch.size = 2
        return 0
    ch.single = last_started
    e = rec + HEADER_SIZE + ENTRY_SIZE * last_started
    ch.size = 2 + rd32(e + 20)
    ch.validity = INVALID
    if by_number:
        # a lost number never reveals the newer qualification, only that it exists
        acq = <int32_t>rd32(e)
        for i in range(count):
            if <int32_t>rd32(rec + HEADER_SIZE + ENTRY_SIZE * i) > acq:
                ch.validity = INVALID_NEWER_EXISTS
                break
    return 0


cdef void write_response(const Choice *ch, char *out) noexcept nogil:
    """b"\\x08" + validity + the chosen framed payloads, in entry order."""
    cdef const uint8_t *e
    cdef uint32_t i, length
    cdef int64_t acq, loss
    out[0] = 0x08
    out[1] = <char>ch.validity
    out += 2
    if ch.validity == NO_RECORD:
        return
    if ch.single >= 0:
        e = ch.rec + HEADER_SIZE + ENTRY_SIZE * ch.single
        memcpy(out, ch.rec + rd32(e + 16), rd32(e + 20))
        return
    for i in range(ch.count):
        e = ch.rec + HEADER_SIZE + ENTRY_SIZE * i
        if ch.by_number and rd64(e + 8) != ch.number_hash:
            continue
        acq = <int32_t>rd32(e)
        loss = <int32_t>rd32(e + 4)
        if acq <= ch.day and ch.day < loss:
            length = rd32(e + 20)
            memcpy(out, ch.rec + rd32(e + 16), length)
            out += length


# --- batches ---------------------------------------------------------------

cdef struct Query:
    # One check of a batch. `order` is the sort key: 8 bytes of the lookup key past
    # the batch's common prefix, big-endian, so sorting follows LMDB's key order.
    uint64_t order
    const uint8_t *key
    size_t key_len
    uint32_t index            # position in the caller's list
    int64_t birth_day
    const uint8_t *link       # card/number -> link value (points into the map)
    size_t link_len
    const uint8_t *rec        # link -> history record (points into the map)
    size_t rec_size


cdef int cmp_query(const void *a, const void *b) noexcept nogil:
    cdef const Query *x = <const Query *>a
    cdef const Query *y = <const Query *>b
    cdef int c
    if x.order != y.order:
        return -1 if x.order < y.order else 1
    c = memcmp(x.key, y.key, x.key_len if x.key_len < y.key_len else y.key_len)
    if c:
        return c
    return (x.key_len > y.key_len) - (x.key_len < y.key_len)


cdef int cmp_link(const void *a, const void *b) noexcept nogil:
    cdef const Query *x = <const Query *>a
    cdef const Query *y = <const Query *>b
    cdef int c
    if x.link == NULL or y.link == NULL:  # misses last
        return (x.link == NULL) - (y.link == NULL)
    if x.order != y.order:
        return -1 if x.order < y.order else 1
    c = memcmp(x.link, y.link, x.link_len if x.link_len < y.link_len else y.link_len)
    if c:
        return c
    return (x.link_len > y.link_len) - (x.link_len < y.link_len)


cdef inline uint64_t be_prefix(const uint8_t *p, size_t n, size_t skip) noexcept nogil:
    cdef uint64_t v = 0
    cdef size_t i
    for i in range(skip, skip + 8):
        v = (v << 8) | (p[i] if i < n else 0)
    return v


cdef void sort_by_key(Query *qs, size_t n) noexcept nogil:
    cdef size_t common, i, j, m
    if n < 2:
        return
    common = qs[0].key_len
    for i in range(1, n):
        m = common if common < qs[i].key_len else qs[i].key_len
        j = 0
        while j < m and qs[i].key[j] == qs[0].key[j]:
            j += 1
        common = j
    for i in range(n):
        qs[i].order = be_prefix(qs[i].key, qs[i].key_len, common)
    qsort(qs, n, sizeof(Query), cmp_query)


cdef void sort_by_link(Query *qs, size_t n) noexcept nogil:
    cdef size_t i
    for i in range(n):
        qs[i].order = be_prefix(qs[i].link, qs[i].link_len, 0) if qs[i].link != NULL else 0
    qsort(qs, n, sizeof(Query), cmp_link)


cdef int walk(MDB_cursor *cur, const uint8_t *key, size_t key_len,
              const uint8_t **value, size_t *value_len) noexcept nogil:
    """MDB_SET on a cursor: for sorted keys LMDB skips the descent from the root
    while the next key lies on the current leaf page."""
    cdef MDB_val k, v
    cdef int rc
    k.mv_data = <void *>key
    k.mv_size = key_len
    rc = mdb_cursor_get(cur, &k, &v, MDB_SET)
    if rc == 0:
        value[0] = <const uint8_t *>v.mv_data
        value_len[0] = v.mv_size
    else:
        value[0] = NULL
        value_len[0] = 0
    return 0 if rc == MDB_NOTFOUND else rc


# --- the engine --------------------------------------------------------------

cdef struct Slot:
    # A pooled read transaction (reset while idle) and its cursors.
    MDB_txn *txn
    MDB_cursor *card
    MDB_cursor *number
    MDB_cursor *history
    bint live


cdef class NativeEngine:
    """Read-only lookups over an onshi store; safe to share between threads."""

    kind = "native"

    cdef MDB_env *env
    cdef MDB_dbi card_dbi, number_dbi, history_dbi
    cdef Slot *pool[POOL_MAX]
    cdef int pool_len
    cdef int active        # slots handed out; changed only with the GIL held
    cdef bint resizing
    cdef bint closing
    cdef readonly int remaps  # times the map was remapped after the writer grew it
    cdef readonly str path

    def __cinit__(self, path):
        self.env = NULL
        self.pool_len = 0
        self.active = 0

    def __init__(self, path):
        cdef MDB_txn *txn = NULL
        cdef int rc
        self.path = os.fspath(path)
        if not os.path.exists(os.path.join(self.path, "data.mdb")):
            raise FileNotFoundError(f"no onshi store at {self.path} (run `onshi gen` or ingest first)")
        rc = mdb_env_create(&self.env)
        if rc:
            self.env = NULL
            raise LmdbError("mdb_env_create", rc)
        mdb_env_set_maxdbs(self.env, MAX_DBS)
        mdb_env_set_maxreaders(self.env, MAX_READERS)
        cdef bytes raw = os.fsencode(self.path)
        # NOTLS: a reset transaction is not tied to the thread that began it, so the
        # pool can hand it to any thread; NORDAHEAD: lookups are random.
        rc = mdb_env_open(self.env, raw, MDB_RDONLY | MDB_NOTLS | MDB_NORDAHEAD, 0o644)
        if rc:
            mdb_env_close(self.env)
            self.env = NULL
            raise LmdbError(f"opening {self.path}", rc)
        while True:
            rc = mdb_txn_begin(self.env, NULL, MDB_RDONLY, &txn)
            if rc == MDB_MAP_RESIZED:
                mdb_env_set_mapsize(self.env, 0)
                continue
            break
        if rc == 0:
            rc = self._open_db(txn, b"card", &self.card_dbi)
        if rc == 0:
            rc = self._open_db(txn, b"number", &self.number_dbi)
        if rc == 0:
            rc = self._open_db(txn, b"history", &self.history_dbi)
        if rc == 0:
            rc = mdb_txn_commit(txn)  # a read-only commit keeps the DB handles
        elif txn != NULL:
            mdb_txn_abort(txn)
        if rc:
            mdb_env_close(self.env)
            self.env = NULL
            if rc == MDB_NOTFOUND:
                raise FileNotFoundError(f"{self.path} is not an onshi store (missing named databases)")
            raise LmdbError(f"opening databases in {self.path}", rc)

    cdef int _open_db(self, MDB_txn *txn, const char *name, MDB_dbi *dbi):
        return mdb_dbi_open(txn, name, 0, dbi)

    def __dealloc__(self):
        self._shutdown()

    cdef void _shutdown(self):
        cdef int i
        for i in range(self.pool_len):
            free_slot(self.pool[i])
        self.pool_len = 0
        if self.env != NULL:
            mdb_env_close(self.env)
            self.env = NULL

    def close(self):
        """Close the store; waits for checks in flight on other threads. Idempotent."""
        if self.env == NULL or self.closing:
            return
        self.closing = True
        self._drain()
        self._shutdown()

    @property
    def closed(self):
        return self.env == NULL or self.closing

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- transaction pool (all of it runs with the GIL held) --------------------

    cdef void _drain(self):
        while self.active:  # let the holders finish outside the GIL
            with nogil:
                usleep(50)

    cdef Slot *_acquire(self) except NULL:
        cdef Slot *slot
        cdef int rc
        while self.resizing:
            with nogil:
                usleep(50)
        if self.env == NULL or self.closing:
            raise ValueError("NativeEngine is closed")
        if self.pool_len:
            self.pool_len -= 1
            slot = self.pool[self.pool_len]
        else:
            slot = <Slot *>calloc(1, sizeof(Slot))
            if slot == NULL:
                raise MemoryError()
            while True:
                rc = mdb_txn_begin(self.env, NULL, MDB_RDONLY, &slot.txn)
                if rc == MDB_MAP_RESIZED:
                    self._remap()
                    continue
                break
            if rc == 0:
                rc = mdb_cursor_open(slot.txn, self.card_dbi, &slot.card)
            if rc == 0:
                rc = mdb_cursor_open(slot.txn, self.number_dbi, &slot.number)
            if rc == 0:
                rc = mdb_cursor_open(slot.txn, self.history_dbi, &slot.history)
            if rc:
                free_slot(slot)
                raise LmdbError("mdb_txn_begin", rc)
            mdb_txn_reset(slot.txn)  # idle until renewed by a check
        self.active += 1
        return slot

    cdef void _release(self, Slot *slot) noexcept:
        if slot.live:
            mdb_txn_reset(slot.txn)
            slot.live = False
        self.active -= 1
        if self.pool_len < POOL_MAX and not self.closing:
            self.pool[self.pool_len] = slot
            self.pool_len += 1
        else:
            free_slot(slot)

    cdef void _discard(self, Slot *slot) noexcept:
        self.active -= 1
        free_slot(slot)

    cdef int _remap(self) except -1:
        """The writer grew the map: remap at the new size once no transaction of
        this engine is live (mdb_env_set_mapsize unmaps the old region)."""
        cdef int rc
        if self.resizing:  # another thread is doing it; the caller retries after
            while self.resizing:
                with nogil:
                    usleep(50)
            return 0
        self.resizing = True
        try:
            self._drain()
            rc = mdb_env_set_mapsize(self.env, 0)
            if rc:
                raise LmdbError("remapping the grown store", rc)
            self.remaps += 1
        finally:
            self.resizing = False
        return 0

    cdef Slot *_begin(self, bint cursors) except NULL:
        """A renewed transaction seeing the newest committed data."""
        cdef Slot *slot
        cdef int rc
        cdef int attempts = 0
        while True:
            slot = self._acquire()
            with nogil:
                rc = mdb_txn_renew(slot.txn)
                if rc == 0:
                    slot.live = True
                    if cursors:
                        rc = mdb_cursor_renew(slot.txn, slot.card)
                        if rc == 0:
                            rc = mdb_cursor_renew(slot.txn, slot.number)
                        if rc == 0:
                            rc = mdb_cursor_renew(slot.txn, slot.history)
            if rc == MDB_MAP_RESIZED:
                self._release(slot)
                self._remap()
                continue
            if rc == MDB_BAD_RSLOT and attempts < 3:
                # Another environment on the same store in this process (LMDB forbids
                # it, yet a py-lmdb PureEngine opened beside us does it) re-initialised
                # the reader table and took our slot: drop the slot, begin afresh.
                attempts += 1
                self._discard(slot)
                continue
            if rc:
                self._release(slot)
                raise LmdbError("mdb_txn_renew", rc)
            return slot

    cdef int _check_key(self, bytes key, str what) except -1:
        # LMDB rejects an empty key; an over-long one simply is not in the store
        if PyBytes_GET_SIZE(key) == 0:
            raise ValueError(f"{what} must not be empty")
        return 0

    # -- checks ------------------------------------------------------------------

    def check_by_card(self, bytes serial_key not None, int64_t as_of_day):
        return self._single(serial_key, False, 0, as_of_day)

    def check_by_number(self, bytes number_key not None, int64_t birth_day, int64_t as_of_day):
        return self._single(number_key, True, birth_day, as_of_day)

    cdef bytes _single(self, bytes key, bint by_number, int64_t birth_day, int64_t day):
        cdef const uint8_t *k = <const uint8_t *>PyBytes_AS_STRING(key)
        cdef size_t n = PyBytes_GET_SIZE(key)
        cdef MDB_dbi index = self.number_dbi if by_number else self.card_dbi
        cdef MDB_val kv, link, rec
        cdef Choice ch
        link.mv_data = NULL
        link.mv_size = 0
        cdef int rc = 0
        cdef bytes out
        self._check_key(key, "number_key" if by_number else "serial_key")
        cdef Slot *slot = self._begin(False)
        try:
            with nogil:
                kv.mv_data = <void *>k
                kv.mv_size = n
                rc = mdb_get(slot.txn, index, &kv, &link)
                if rc == 0:
                    rc = mdb_get(slot.txn, self.history_dbi, &link, &rec)
                if rc == 0:
                    rc = decide(<const uint8_t *>rec.mv_data, rec.mv_size, by_number,
                                fnv1a64(k, n) if by_number else 0, birth_day, day, &ch)
                elif rc == MDB_NOTFOUND:
                    ch.validity = NO_RECORD
                    ch.size = 2
                    rc = 0
            if rc:
                raise_for(rc, link.mv_data, link.mv_size)
            out = PyBytes_FromStringAndSize(NULL, ch.size)
            write_response(&ch, PyBytes_AS_STRING(out))  # copied before the reset below
            return out
        finally:
            self._release(slot)

    def check_by_card_batch(self, serial_keys, int64_t as_of_day):
        return self._batch(tuple(serial_keys), False, as_of_day)

    def check_by_number_batch(self, queries, int64_t as_of_day):
        return self._batch(tuple(queries), True, as_of_day)

    cdef list _batch(self, tuple items, bint by_number, int64_t day):
        """One transaction for the batch: keys sorted, then links sorted, so the
        walks of neighbouring checks share pages; GIL released for all lookups."""
        cdef Py_ssize_t n = PyTuple_GET_SIZE(items)
        cdef Py_ssize_t i
        cdef Query *qs
        cdef Choice *choices
        cdef char **outs
        cdef int rc = 0
        cdef object key, item
        cdef list result = PyList_New(n)
        if n == 0:
            return result
        qs = <Query *>malloc(n * sizeof(Query))
        choices = <Choice *>malloc(n * sizeof(Choice))
        outs = <char **>malloc(n * sizeof(char *))
        if qs == NULL or choices == NULL or outs == NULL:
            free(qs); free(choices); free(outs)
            raise MemoryError()
        cdef Slot *slot = NULL
        try:
            # `items` keeps every key object alive while the GIL is released.
            for i in range(n):
                item = <object>PyTuple_GET_ITEM(items, i)
                if by_number:
                    key, birth = item  # (number_key, birth_day), as the pure engine unpacks
                    qs[i].birth_day = birth
                else:
                    key = item
                    qs[i].birth_day = 0
                if not PyBytes_Check(key):
                    raise TypeError(f"keys must be bytes, not {type(key).__name__}")
                self._check_key(key, "number_key" if by_number else "serial_key")
                qs[i].key = <const uint8_t *>PyBytes_AS_STRING(key)
                qs[i].key_len = PyBytes_GET_SIZE(key)
                qs[i].index = i
            slot = self._begin(True)
            with nogil:
                rc = lookup_batch(slot, qs, choices, n, by_number, day)
            if rc:
                raise_for(rc, NULL, 0)
            for i in range(n):  # allocate the answers; filled below without the GIL
                out = PyBytes_FromStringAndSize(NULL, choices[i].size)
                outs[i] = PyBytes_AS_STRING(out)
                Py_INCREF(out)
                PyList_SET_ITEM(result, i, out)
            with nogil:
                for i in range(n):
                    write_response(&choices[i], outs[i])
            return result
        finally:
            if slot != NULL:
                self._release(slot)
            free(qs)
            free(choices)
            free(outs)

    # -- raw records for the claims service -----------------------------------------

    def history_by_link(self, uint64_t link_id):
        """The raw history record (history.parse_history's input) of a link ID, or None."""
        cdef uint8_t key[8]
        cdef MDB_val kv, rec
        cdef int rc, i
        for i in range(8):
            key[i] = (link_id >> (56 - 8 * i)) & 0xFF
        kv.mv_data = key
        kv.mv_size = 8
        cdef Slot *slot = self._begin(False)
        try:
            with nogil:
                rc = mdb_get(slot.txn, self.history_dbi, &kv, &rec)
            if rc == MDB_NOTFOUND:
                return None
            if rc:
                raise LmdbError("reading history", rc)
            return PyBytes_FromStringAndSize(<char *>rec.mv_data, rec.mv_size)
        finally:
            self._release(slot)

    def histories_by_number(self, number_keys):
        """For each number key, the raw history record of the person owning it, or None."""
        cdef tuple items = tuple(number_keys)
        cdef Py_ssize_t n = PyTuple_GET_SIZE(items)
        cdef Py_ssize_t i
        cdef Query *qs
        cdef int rc = 0
        cdef list result = PyList_New(n)
        if n == 0:
            return result
        qs = <Query *>malloc(n * sizeof(Query))
        if qs == NULL:
            raise MemoryError()
        cdef Slot *slot = NULL
        try:
            for i in range(n):
                key = <object>PyTuple_GET_ITEM(items, i)
                if not PyBytes_Check(key):
                    raise TypeError(f"keys must be bytes, not {type(key).__name__}")
                self._check_key(key, "number_key")
                qs[i].key = <const uint8_t *>PyBytes_AS_STRING(key)
                qs[i].key_len = PyBytes_GET_SIZE(key)
                qs[i].index = i
            slot = self._begin(True)
            with nogil:
                rc = walk_batch(slot.number, slot.history, qs, n)
            if rc:
                raise LmdbError("reading history", rc)
            for i in range(n):
                if qs[i].rec == NULL:
                    out = None
                else:
                    out = PyBytes_FromStringAndSize(<char *>qs[i].rec, qs[i].rec_size)
                Py_INCREF(out)
                PyList_SET_ITEM(result, qs[i].index, out)
            return result
        finally:
            if slot != NULL:
                self._release(slot)
            free(qs)


cdef void free_slot(Slot *slot) noexcept:
    if slot == NULL:
        return
    if slot.card != NULL:
        mdb_cursor_close(slot.card)
    if slot.number != NULL:
        mdb_cursor_close(slot.number)
    if slot.history != NULL:
        mdb_cursor_close(slot.history)
    if slot.txn != NULL:
        mdb_txn_abort(slot.txn)
    free(slot)


cdef int walk_batch(MDB_cursor *index, MDB_cursor *history, Query *qs, size_t n) noexcept nogil:
    """Key -> link -> record for every query, in key order then in link order."""
    cdef size_t i
    cdef int rc
    sort_by_key(qs, n)
    for i in range(n):
        rc = walk(index, qs[i].key, qs[i].key_len, &qs[i].link, &qs[i].link_len)
        if rc:
            return rc
        qs[i].rec = NULL
        qs[i].rec_size = 0
    sort_by_link(qs, n)
    for i in range(n):
        if qs[i].link == NULL:
            break  # misses sort last
        rc = walk(history, qs[i].link, qs[i].link_len, &qs[i].rec, &qs[i].rec_size)
        if rc:
            return rc
    return 0


cdef int lookup_batch(Slot *slot, Query *qs, Choice *choices, size_t n,
                      bint by_number, int64_t day) noexcept nogil:
    cdef size_t i
    cdef int rc
    cdef Choice *ch
    rc = walk_batch(slot.number if by_number else slot.card, slot.history, qs, n)
    if rc:
        return rc
    for i in range(n):
        ch = &choices[qs[i].index]
        if qs[i].rec == NULL:
            ch.validity = NO_RECORD
            ch.size = 2
            continue
        rc = decide(qs[i].rec, qs[i].rec_size, by_number,
                    fnv1a64(qs[i].key, qs[i].key_len) if by_number else 0,
                    qs[i].birth_day, day, ch)
        if rc:
            return rc
    return 0


cdef int raise_for(int rc, const void *link, size_t link_len) except -1:
    if rc in (ERR_SHORT, ERR_VERSION, ERR_ENTRIES, ERR_PAYLOAD):
        what = {ERR_SHORT: "shorter than its header",
                ERR_VERSION: "has an unsupported version",
                ERR_ENTRIES: "entry table runs past the value",
                ERR_PAYLOAD: "payload offsets run past the value"}[rc]
        where = ""
        if link != NULL and link_len == 8:
            where = f" of link {int.from_bytes(PyBytes_FromStringAndSize(<const char *>link, 8), 'big')}"
        raise ValueError(f"corrupt history record{where}: {what}")
    raise LmdbError("lookup", rc)
