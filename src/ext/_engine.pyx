# cython: language_level=3, cdivision=True
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
from libc.errno cimport ENOMEM
from libc.stdlib cimport calloc, free, malloc, realloc
from libc.string cimport memcmp, memcpy, memset

# The liblmdb declarations, included textually: a `cimport lmdb` would resolve to
# py-lmdb's Python package, and the module's package (onshi) maps onto src/.
include "lmdb.pxd"

from onshi.ext.record cimport (E_ACQUISITION, E_HASH, E_LENGTH, E_LOSS, E_OFFSET, E_VIEW_END, E_VIEW_FIRST,
                               ENTRY_SIZE, H_BIRTH, H_COUNT, H_VERSION, HEADER_SIZE, MAX_ENTRIES,
                               RECORD_VERSION, fnv1a64, rd16, rd32, rd64)

import os

cdef extern from "<unistd.h>" nogil:
    int usleep(unsigned int usec)

cdef enum:
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

class LmdbError(RuntimeError):
    """An unexpected liblmdb error (the message is mdb_strerror's)."""

    def __init__(self, what, code):
        super().__init__(f"{what}: {mdb_strerror(code).decode(errors='replace')} ({code})")
        self.code = code


# --- records (layout: onshi.ext.record, onshi.core.history) -------------------

cdef struct Choice:
    # What to answer from one history record: the validity and the chosen
    # payloads' offsets and lengths, read once while deciding: the answer is
    # written from these, so its size cannot disagree with what is copied.
    const uint8_t *rec
    int validity
    uint32_t nchosen
    uint32_t off[MAX_ENTRIES]
    uint32_t len[MAX_ENTRIES]
    size_t size


cdef inline bint shown(const uint8_t *e, int64_t day) noexcept nogil:
    """history.shown: the view of its qualification a check on `day` looks at."""
    cdef int64_t loss = <int32_t>rd32(e + E_LOSS)
    cdef int64_t d = day if day < loss else loss - 1
    return <int32_t>rd32(e + E_VIEW_FIRST) <= d and d < <int32_t>rd32(e + E_VIEW_END)


cdef inline void choose(Choice *ch, const uint8_t *e) noexcept nogil:
    ch.off[ch.nchosen] = rd32(e + E_OFFSET)
    ch.len[ch.nchosen] = rd32(e + E_LENGTH)
    ch.size += ch.len[ch.nchosen]
    ch.nchosen += 1


cdef int decide(const uint8_t *rec, size_t size, bint by_number, uint64_t number_hash,
                int64_t claimed_birth, int64_t day, Choice *ch) noexcept nogil:
    """history.choose_by_card / choose_by_number over the headers; validates the
    record first so a corrupt value raises instead of reading past it."""
    cdef uint32_t count, i, off, length
    cdef const uint8_t *e
    cdef int64_t acq
    cdef int nvalid = 0
    cdef int last_started = -1
    ch.rec = rec
    ch.nchosen = 0
    ch.size = 2
    ch.validity = NO_RECORD
    if size < HEADER_SIZE:
        return ERR_SHORT
    if rd16(rec + H_VERSION) != RECORD_VERSION:
        return ERR_VERSION
    count = rd16(rec + H_COUNT)
    if count > MAX_ENTRIES or HEADER_SIZE + <size_t>ENTRY_SIZE * count > size:
        return ERR_ENTRIES
    for i in range(count):
        e = rec + HEADER_SIZE + ENTRY_SIZE * i
        off = rd32(e + E_OFFSET)
        length = rd32(e + E_LENGTH)
        if <uint64_t>off + length > size:
            return ERR_PAYLOAD
    if by_number and <int64_t><int32_t>rd32(rec + H_BIRTH) != claimed_birth:
        return 0
    for i in range(count):
        e = rec + HEADER_SIZE + ENTRY_SIZE * i
        if by_number and rd64(e + E_HASH) != number_hash:
            continue
        acq = <int32_t>rd32(e + E_ACQUISITION)
        if acq <= day and shown(e, day):
            last_started = i
            if day < <int32_t>rd32(e + E_LOSS):
                nvalid += 1
                choose(ch, e)
    if nvalid:
        ch.validity = VALID if nvalid == 1 else MULTIPLE
        return 0
    if last_started < 0:
        return 0
    e = rec + HEADER_SIZE + ENTRY_SIZE * last_started
    choose(ch, e)
    ch.validity = INVALID
    if by_number:
        # a lost number never reveals the newer qualification, only that it exists
        acq = <int32_t>rd32(e + E_ACQUISITION)
        for i in range(count):
            if <int32_t>rd32(rec + HEADER_SIZE + ENTRY_SIZE * i + E_ACQUISITION) > acq:
                ch.validity = INVALID_NEWER_EXISTS
                break
    return 0


cdef void write_response(const Choice *ch, char *out) noexcept nogil:
    """b"\\x08" + validity + the chosen framed payloads, in entry order: exactly
    ch.size bytes."""
    cdef uint32_t i
    out[0] = 0x08
    out[1] = <char>ch.validity
    out += 2
    for i in range(ch.nchosen):
        memcpy(out, ch.rec + ch.off[i], ch.len[i])
        out += ch.len[i]


# --- key order -------------------------------------------------------------

cdef extern from *:
    """
    static inline uint64_t onshi_be64(const void *p) { uint64_t v; memcpy(&v, p, 8); return __builtin_bswap64(v); }
    static inline uint32_t onshi_be32(const void *p) { uint32_t v; memcpy(&v, p, 4); return __builtin_bswap32(v); }
    """
    uint64_t be64 "onshi_be64"(const void *p) noexcept nogil
    uint32_t be32 "onshi_be32"(const void *p) noexcept nogil


cdef int compare_keys(const MDB_val *a, const MDB_val *b) noexcept nogil:
    """LMDB's default key order (memcmp, then shorter first), as word compares for
    the fixed-size keys of the card (20 bytes) and history (8 bytes) databases:
    the order is identical, so the writer's default-ordered B-trees search right."""
    cdef const uint8_t *x = <const uint8_t *>a.mv_data
    cdef const uint8_t *y = <const uint8_t *>b.mv_data
    cdef uint64_t u, v
    cdef uint32_t s, t
    cdef size_t n
    cdef int c
    if a.mv_size == b.mv_size:
        if a.mv_size == 8:
            u = be64(x)
            v = be64(y)
            return (u > v) - (u < v)
        if a.mv_size == 20:
            u = be64(x)
            v = be64(y)
            if u == v:
                u = be64(x + 8)
                v = be64(y + 8)
                if u == v:
                    s = be32(x + 16)
                    t = be32(y + 16)
                    return (s > t) - (s < t)
            return (u > v) - (u < v)
    n = a.mv_size if a.mv_size < b.mv_size else b.mv_size
    c = memcmp(x, y, n)
    if c:
        return c
    return (a.mv_size > b.mv_size) - (a.mv_size < b.mv_size)


# --- batches ---------------------------------------------------------------

cdef struct Query:
    # One check of a batch; the pointers into the map live until the txn reset.
    const uint8_t *key
    size_t key_len
    int64_t birth_day
    const uint8_t *link       # card/number -> link value
    size_t link_len
    const uint8_t *rec        # link -> history record
    size_t rec_size
    size_t out_off            # the answer, in the batch's arena
    size_t out_len


cdef struct Batch:
    Query *qs
    size_t n
    # Visit order: (32 bits of the key past the batch's common prefix) << 32 | query
    # index, radix-sorted, so neighbouring lookups follow LMDB's key order and share
    # branch and leaf pages. Sorting is only for locality, never for correctness.
    uint64_t *order
    uint64_t *spare
    size_t cap                # queries the buffers hold
    char *arena               # the answers, copied out of the map
    size_t arena_len
    size_t arena_cap


cdef inline uint32_t window32(const uint8_t *p, size_t n, size_t skip) noexcept nogil:
    cdef uint32_t v = 0
    cdef size_t i
    for i in range(skip, skip + 4):
        v = (v << 8) | (p[i] if i < n else 0)
    return v


cdef void radix_sort_high32(uint64_t *items, uint64_t *spare, size_t n) noexcept nogil:
    """LSD radix sort on the high 32 bits, 8 bits a pass; result lands in `items`."""
    cdef size_t count[256]
    cdef size_t i, total, c
    cdef int shift
    cdef uint64_t *src = items
    cdef uint64_t *dst = spare
    cdef uint64_t *t
    for shift in range(32, 64, 8):
        memset(count, 0, sizeof(count))
        for i in range(n):
            count[(src[i] >> shift) & 0xFF] += 1
        if count[(src[0] >> shift) & 0xFF] == n:
            continue  # every key has the same byte here
        total = 0
        for i in range(256):
            c = count[i]
            count[i] = total
            total += c
        for i in range(n):
            c = (src[i] >> shift) & 0xFF
            dst[count[c]] = src[i]
            count[c] += 1
        t = src
        src = dst
        dst = t
    if src != items:
        memcpy(items, src, n * sizeof(uint64_t))


cdef size_t order_by_key(Batch *b) noexcept nogil:
    cdef size_t i, j, m, common
    cdef Query *qs = b.qs
    common = qs[0].key_len
    for i in range(1, b.n):
        m = common if common < qs[i].key_len else qs[i].key_len
        j = 0
        while j < m and qs[i].key[j] == qs[0].key[j]:
            j += 1
        common = j
    for i in range(b.n):
        b.order[i] = (<uint64_t>window32(qs[i].key, qs[i].key_len, common) << 32) | i
    radix_sort_high32(b.order, b.spare, b.n)
    return b.n


cdef size_t order_by_link(Batch *b) noexcept nogil:
    """Only the queries whose key was found; returns how many."""
    cdef size_t i, j, m = 0, common = 0
    cdef Query *qs = b.qs
    cdef const uint8_t *first = NULL
    cdef size_t first_len = 0
    for i in range(b.n):
        if qs[i].link == NULL:
            continue
        if first == NULL:
            first = qs[i].link
            first_len = common = qs[i].link_len
        else:
            j = 0
            while j < common and j < qs[i].link_len and qs[i].link[j] == first[j]:
                j += 1
            common = j
        b.order[m] = i
        m += 1
    for j in range(m):
        i = b.order[j]
        b.order[j] = (<uint64_t>window32(qs[i].link, qs[i].link_len, common) << 32) | i
    if m:
        radix_sort_high32(b.order, b.spare, m)
    return m


cdef char *arena_take(Batch *b, size_t size) noexcept nogil:
    cdef size_t cap
    cdef char *grown
    if b.arena_len + size > b.arena_cap:
        cap = b.arena_cap * 2 if b.arena_cap else 4096
        while cap < b.arena_len + size:
            cap *= 2
        grown = <char *>realloc(b.arena, cap)
        if grown == NULL:
            return NULL
        b.arena = grown
        b.arena_cap = cap
    grown = b.arena + b.arena_len
    b.arena_len += size
    return grown


cdef int batch_init(Batch *b, size_t n, size_t answer_guess) noexcept nogil:
    """Size a (possibly reused) batch for n queries; the callers set every field of
    the n queries they use. Reusing buffers spares page faults on fresh memory."""
    cdef size_t want = n * answer_guess
    if n > b.cap:
        batch_free(b)
        b.qs = <Query *>malloc(n * sizeof(Query))
        b.order = <uint64_t *>malloc(n * sizeof(uint64_t))
        b.spare = <uint64_t *>malloc(n * sizeof(uint64_t))
        if b.qs == NULL or b.order == NULL or b.spare == NULL:
            batch_free(b)
            return -1
        b.cap = n
    if want > b.arena_cap:
        free(b.arena)
        b.arena = <char *>malloc(want)
        b.arena_cap = want if b.arena != NULL else 0
        if b.arena == NULL:
            return -1
    b.n = n
    b.arena_len = 0
    return 0


cdef void batch_free(Batch *b) noexcept nogil:
    free(b.qs)
    free(b.order)
    free(b.spare)
    free(b.arena)
    memset(b, 0, sizeof(Batch))


# --- leaf-page directory: prefetching the pages a batch will walk ------------------
#
# A batch walks random leaf pages; each cold page costs a chain of dependent cache
# and TLB misses inside LMDB's binary search, one walk after another. The directory
# maps key ranges to the leaf pages that held them when it was built (the page of a
# key is where mdb_cursor_get's key pointer lies), so a batch can prefetch the page
# of the check D places ahead while walking the current one and the misses overlap.
# It is only a hint: lookups always go through mdb_cursor_get, a stale entry costs a
# wasted prefetch, entries are corrected from the walks, and a directory that
# mispredicts too often is rebuilt.

cdef enum:
    PREFETCH_AHEAD = 3        # checks between a prefetch and its walk
    DIR_NONE = 0
    DIR_BUILDING = 1
    DIR_READY = 2
    DIR_USELESS = 3           # mispredicted even when fresh: keys too alike in 16 bytes


cdef extern from *:
    """
    #define onshi_prefetch(p) __builtin_prefetch((p), 0, 3)
    """
    void prefetch "onshi_prefetch"(const void *p) noexcept nogil


cdef struct Window:
    # 16 bytes of a key past the database's common prefix, as two big-endian words:
    # enough to tell apart the pages of keys that share their first 8 bytes (number
    # keys begin with the 8 insurer digits).
    uint64_t hi
    uint64_t lo


cdef struct Fence:
    Window key                # of the page's first key
    const uint8_t *page       # the leaf page (in the same cache line as its fence)


cdef struct Directory:
    Fence *fence
    size_t pages
    size_t skip               # bytes every key of the database shares
    size_t psize
    size_t mispredicted       # walks that ended on another page than predicted
    size_t predicted
    bint fresh                # not judged since it was built


cdef inline Window window_of(const uint8_t *p, size_t n, size_t skip) noexcept nogil:
    cdef Window w
    w.hi = window64(p, n, skip)
    w.lo = window64(p, n, skip + 8)
    return w


cdef inline bint win_le(Window a, Window b) noexcept nogil:
    return a.hi < b.hi or (a.hi == b.hi and a.lo <= b.lo)


cdef inline double win_frac(Window w, Window a, Window b) noexcept nogil:
    """Where w lies between a < b, in [0, 1] (interpolation)."""
    cdef double span, off
    if not win_le(a, w):
        return 0.0
    if not win_le(w, b):
        return 1.0
    span = <double>(b.hi - a.hi) * 18446744073709551616.0 + (<double>b.lo - <double>a.lo)
    off = <double>(w.hi - a.hi) * 18446744073709551616.0 + (<double>w.lo - <double>a.lo)
    if span <= 0:
        return 0.0
    off /= span
    return 0.0 if off < 0 else (1.0 if off > 1 else off)


cdef inline uint64_t window64(const uint8_t *p, size_t n, size_t skip) noexcept nogil:
    cdef uint64_t v = 0
    cdef size_t i
    for i in range(skip, skip + 8):
        v = (v << 8) | (p[i] if i < n else 0)
    return v


cdef inline const uint8_t *page_of(const void *p, size_t psize) noexcept nogil:
    return <const uint8_t *>(<size_t>p & ~(psize - 1))


cdef extern from "<sys/mman.h>" nogil:
    int madvise(void *addr, size_t length, int advice)
    enum: MADV_HUGEPAGE

cdef extern from "<stdlib.h>" nogil:
    int posix_memalign(void **memptr, size_t alignment, size_t size)


cdef void *alloc_huge(size_t size) noexcept nogil:
    """Memory a directory lives in: 2 MiB-aligned and advised for transparent huge
    pages, so its lookups do not add TLB misses to the leaf pages' own."""
    cdef void *p = NULL
    cdef size_t huge = 2 << 20
    if size < huge // 2:
        return malloc(size)
    size = (size + huge - 1) & ~(huge - 1)
    if posix_memalign(&p, huge, size):
        return NULL
    madvise(p, size, MADV_HUGEPAGE)  # advice only: fine if THP is off
    return p


cdef void dir_free(Directory *d) noexcept nogil:
    free(d.fence)
    d.fence = NULL
    d.pages = 0


cdef int dir_build(Directory *d, MDB_txn *txn, MDB_dbi dbi) noexcept nogil:
    """One pass over the database in key order, noting where each leaf page starts."""
    cdef MDB_stat st
    cdef MDB_cursor *cur = NULL
    cdef MDB_val k, v, last
    cdef size_t cap, i, m
    cdef const uint8_t *base
    cdef const uint8_t *prev = NULL
    cdef int rc
    dir_free(d)
    d.mispredicted = d.predicted = 0
    d.fresh = True
    rc = mdb_stat(txn, dbi, &st)
    if rc:
        return rc
    d.psize = st.ms_psize
    cap = st.ms_leaf_pages + 16
    d.fence = <Fence *>alloc_huge(cap * sizeof(Fence))
    if d.fence == NULL:
        dir_free(d)
        return ENOMEM
    rc = mdb_cursor_open(txn, dbi, &cur)
    if rc:
        dir_free(d)
        return rc
    rc = mdb_cursor_get(cur, &last, &v, MDB_LAST)
    if rc == 0:
        rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST)
    if rc == 0:
        m = k.mv_size if k.mv_size < last.mv_size else last.mv_size
        i = 0
        while i < m and (<const uint8_t *>k.mv_data)[i] == (<const uint8_t *>last.mv_data)[i]:
            i += 1
        d.skip = i
    while rc == 0 and d.pages < cap:
        base = page_of(k.mv_data, d.psize)
        if base != prev:
            d.fence[d.pages].key = window_of(<const uint8_t *>k.mv_data, k.mv_size, d.skip)
            d.fence[d.pages].page = base
            d.pages += 1
            prev = base
        rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)
    mdb_cursor_close(cur)
    return 0 if rc == MDB_NOTFOUND or rc == 0 else rc


cdef inline size_t dir_guess(const Directory *d, Window w) noexcept nogil:
    """Where interpolation puts the window `w`: card serials and link IDs spread
    evenly, so this lands on or next to the right fence."""
    cdef size_t guess
    if d.pages < 2:
        return 0
    guess = <size_t>(win_frac(w, d.fence[0].key, d.fence[d.pages - 1].key) * (d.pages - 1))
    return guess if guess < d.pages - 1 else d.pages - 2


cdef inline size_t dir_find(const Directory *d, Window w, size_t guess) noexcept nogil:
    """Index of the page whose range holds window `w` (the last fence <= w),
    galloping from the guess (one or two cache lines of a directory of megabytes,
    where a binary search takes a dozen misses)."""
    cdef size_t step = 1, lo, hi, mid
    if d.pages < 2 or win_le(w, d.fence[0].key):
        return 0
    if win_le(d.fence[d.pages - 1].key, w):
        return d.pages - 1
    # bracket [lo, hi) with fence[lo] <= w < fence[hi]
    if win_le(d.fence[guess].key, w):
        lo = guess
        hi = guess + 1
        while hi < d.pages and win_le(d.fence[hi].key, w):
            lo = hi
            hi += step
            step <<= 1
        if hi > d.pages:
            hi = d.pages
    else:
        hi = guess
        lo = guess - 1 if guess else 0
        while lo > 0 and not win_le(d.fence[lo].key, w):
            hi = lo
            lo = lo - step if lo > step else 0
            step <<= 1
    while hi - lo > 1:
        mid = (lo + hi) >> 1
        if win_le(d.fence[mid].key, w):
            lo = mid
        else:
            hi = mid
    return lo


# The batch techniques below are always on in the module a server loads. Each can
# be left out of a variant build only (ONSHI_ENGINE_VARIANT, setup.py), so that
# bench/engine.py measures what it buys without a switch in production code.
cdef extern from *:
    """
    #ifdef ONSHI_NO_DIRECTORIES
    #define ONSHI_DIRECTORIES 0
    #else
    #define ONSHI_DIRECTORIES 1
    #endif
    #ifdef ONSHI_WHOLE_PAGE_PREFETCH
    #define ONSHI_TARGETED_PREFETCH 0
    #else
    #define ONSHI_TARGETED_PREFETCH 1
    #endif
    #ifdef ONSHI_MEMCMP_KEYS
    #define ONSHI_WORD_COMPARE 0
    #else
    #define ONSHI_WORD_COMPARE 1
    #endif
    """
    const bint directories_enabled "ONSHI_DIRECTORIES"  # batch prefetch directories
    const bint targeted "ONSHI_TARGETED_PREFETCH"       # prefetch only the lines LMDB's search will read
    const bint word_compare "ONSHI_WORD_COMPARE"        # compare fixed-size keys a word at a time

cdef enum:
    PREFETCH_BYTES = 1 << 30  # of a page (all of it: pages are 4 KiB)
    PREFETCH_STRIDE = 64      # a cache line


def variant() -> str:
    """The techniques this build leaves out ("" for the production build)."""
    left = [name for name, on in (("no-directories", directories_enabled), ("whole-page-prefetch", targeted),
                                  ("memcmp-keys", word_compare)) if not on]
    return ",".join(left)


# LMDB 0.9's page layout (mdb.c: MDB_page, MDB_node), read only to aim prefetches:
# a stale or misread page costs a useless prefetch, never a wrong answer, and every
# offset is clamped to the page.
cdef enum:
    PAGE_HEADER = 16          # pgno(8) pad(2) flags(2) lower(2) upper(2), then mp_ptrs
    P_LEAF = 0x02
    NODE_HEADER = 8           # lo(2) hi(2) flags(2) ksize(2), then key, then data
    RECORD_LINES = 10         # lines prefetched from a history node: header + record


cdef inline uint16_t page_u16(const uint8_t *page, size_t off) noexcept nogil:
    cdef uint16_t v
    memcpy(&v, page + off, 2)
    return v


cdef inline void prefetch_search(const uint8_t *page, size_t psize, Window w, Window lo_f,
                                 Window hi_f, bint record) noexcept nogil:
    """With the page header and pointer array in cache, prefetch the nodes LMDB's
    binary search visits on its way to where interpolation puts `w` on the page,
    and that node's neighbourhood (for a history record: its whole extent)."""
    cdef size_t nkeys, k, lo, hi, i, off, line
    if not (page_u16(page, 10) & P_LEAF):
        return
    nkeys = (page_u16(page, 12) - PAGE_HEADER) >> 1
    if nkeys == 0 or nkeys > (psize - PAGE_HEADER) // 2:
        return
    k = <size_t>(win_frac(w, lo_f, hi_f) * nkeys)
    if k >= nkeys:
        k = nkeys - 1
    lo = 0
    hi = nkeys - 1
    while lo <= hi:  # mdb_node_search's probes, had the key been node k
        i = (lo + hi) >> 1
        off = page_u16(page, PAGE_HEADER + 2 * i)
        if off < psize:
            prefetch(page + off)
        if i == k:
            break
        if i < k:
            lo = i + 1
        else:
            if i == 0:
                break
            hi = i - 1
    off = page_u16(page, PAGE_HEADER + 2 * k)
    if off >= psize:
        return
    if record:
        for line in range(1, RECORD_LINES):
            if off + 64 * line < psize:
                prefetch(page + off + 64 * line)
    else:  # interpolation is off by a few nodes: their lines too
        for i in range(k - 3 if k >= 3 else 0, k + 4 if k + 4 <= nkeys else nkeys):
            off = page_u16(page, PAGE_HEADER + 2 * i)
            if off < psize:
                prefetch(page + off)


cdef inline void prefetch_page(const uint8_t *page, size_t psize) noexcept nogil:
    cdef size_t off
    cdef size_t end = psize if psize < PREFETCH_BYTES else PREFETCH_BYTES
    off = 0
    while off < end:
        prefetch(page + off)
        off += PREFETCH_STRIDE


cdef int walk(MDB_cursor *cur, const uint8_t *key, size_t key_len,
              const uint8_t **value, size_t *value_len, const void **stored_key) noexcept nogil:
    """MDB_SET_KEY on a cursor: for sorted keys LMDB skips the descent from the root
    while the next key lies on the current leaf page. `stored_key` is the key in
    its leaf page (for the directory)."""
    cdef MDB_val k, v
    cdef int rc
    k.mv_data = <void *>key
    k.mv_size = key_len
    rc = mdb_cursor_get(cur, &k, &v, MDB_SET_KEY)
    if rc == 0:
        value[0] = <const uint8_t *>v.mv_data
        value_len[0] = v.mv_size
        stored_key[0] = k.mv_data
    else:
        value[0] = NULL
        value_len[0] = 0
        stored_key[0] = NULL
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
    cdef int acquiring     # threads inside _acquire (it may wait without the GIL)
    cdef bint resizing
    cdef bint closing
    cdef readonly int remaps  # times the map was remapped after the writer grew it
    cdef Directory dirs[3]    # leaf-page directories of card, number, history
    cdef int dir_state[3]
    cdef Batch *idle_batch    # buffers of the last batch, kept for the next one
    cdef readonly str path

    def __cinit__(self, path):
        self.env = NULL
        self.pool_len = 0
        self.active = 0
        self.acquiring = 0
        memset(self.dirs, 0, sizeof(self.dirs))
        memset(self.dir_state, 0, sizeof(self.dir_state))
        self.idle_batch = NULL

    def __init__(self, path):
        cdef MDB_txn *txn = NULL
        cdef int rc
        if self.env != NULL or self.closing:  # a second __init__ would leak or swap the map under readers
            raise RuntimeError("NativeEngine is already initialised")
        self.path = os.fspath(path)
        if not os.path.exists(os.path.join(self.path, "data.mdb")):
            raise FileNotFoundError(f"no onshi store at {self.path} (run `onshi gen` or ingest first)")
        rc = mdb_env_create(&self.env)
        if rc:
            self.env = NULL
            raise LmdbError("mdb_env_create", rc)
        rc = mdb_env_set_maxdbs(self.env, MAX_DBS)
        if rc == 0:
            rc = mdb_env_set_maxreaders(self.env, MAX_READERS)
        if rc:
            mdb_env_close(self.env)
            self.env = NULL
            raise LmdbError("configuring the environment", rc)
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
        if rc == 0 and word_compare:
            rc = mdb_set_compare(txn, self.card_dbi, compare_keys)
        if rc == 0 and word_compare:
            rc = mdb_set_compare(txn, self.history_dbi, compare_keys)
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
        if self.idle_batch != NULL:
            batch_free(self.idle_batch)
            free(self.idle_batch)
            self.idle_batch = NULL
        for i in range(3):
            dir_free(&self.dirs[i])
            self.dir_state[i] = DIR_NONE
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
        # Every thread that may still touch the environment is counted in one of
        # these (each GIL release inside the pool is a point where close can run):
        # slot holders, threads in _acquire, and a remap in progress.
        while self.active or self.acquiring or self.resizing:
            with nogil:
                usleep(50)
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
        """A slot with an idle (reset) transaction, counted in `active`. The caller
        is counted in `acquiring` meanwhile, so close() cannot shut the
        environment down under it while it waits without the GIL."""
        cdef Slot *slot
        self.acquiring += 1
        try:
            slot = self._new_or_pooled()
        finally:
            self.acquiring -= 1
        self.active += 1
        return slot

    cdef Slot *_new_or_pooled(self) except NULL:
        cdef Slot *slot
        cdef int rc
        while True:
            while self.resizing:
                with nogil:
                    usleep(50)
            # checked again after every wait: close() may have begun meanwhile
            if self.env == NULL or self.closing:
                raise ValueError("NativeEngine is closed")
            if self.pool_len:
                self.pool_len -= 1
                return self.pool[self.pool_len]
            slot = <Slot *>calloc(1, sizeof(Slot))
            if slot == NULL:
                raise MemoryError()
            rc = mdb_txn_begin(self.env, NULL, MDB_RDONLY, &slot.txn)
            if rc == MDB_MAP_RESIZED:
                free(slot)  # no transaction was begun
                self._remap()
                continue
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
        cdef int rc, i
        if self.resizing:  # another thread is doing it; the caller retries after
            while self.resizing:
                with nogil:
                    usleep(50)
            return 0
        self.resizing = True  # close() waits for it: the environment stays open meanwhile
        try:
            self._drain()
            rc = mdb_env_set_mapsize(self.env, 0)
            if rc:
                raise LmdbError("remapping the grown store", rc)
            self.remaps += 1
            for i in range(3):  # the map may have moved: directories point at nothing
                dir_free(&self.dirs[i])
                self.dir_state[i] = DIR_NONE
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

    # -- leaf-page directories (GIL held; see Directory) -------------------------------

    cdef Directory *_directory(self, Slot *slot, int which):
        """The directory of one database, built first if there is none and no other
        check is in flight (so nobody still reads the one being replaced)."""
        cdef int rc
        cdef MDB_dbi dbi = (self.card_dbi, self.number_dbi, self.history_dbi)[which]
        if not directories_enabled:
            return NULL
        if self.dir_state[which] == DIR_NONE and self.active == 1:
            self.dir_state[which] = DIR_BUILDING
            with nogil:
                rc = dir_build(&self.dirs[which], slot.txn, dbi)
            if rc:
                dir_free(&self.dirs[which])
                self.dir_state[which] = DIR_NONE
                return NULL
            self.dir_state[which] = DIR_READY
        return &self.dirs[which] if self.dir_state[which] == DIR_READY else NULL

    cdef void _judge_directory(self, int which):
        """A directory that mispredicts more than a quarter of its walks is rebuilt
        later (when no check is in flight): the writer has moved many pages. If its
        first judgement after a build already fails, the keys are too alike in the
        16 bytes it compares; it is dropped for good, so no batch pays for rebuilds."""
        cdef Directory *d = &self.dirs[which]
        if self.dir_state[which] != DIR_READY or d.predicted < 4096:
            return
        if d.mispredicted * 4 > d.predicted:
            if d.fresh:
                self.dir_state[which] = DIR_USELESS  # freed at close: others may still read it
            else:
                self.dir_state[which] = DIR_NONE
        d.fresh = False
        d.predicted = d.mispredicted = 0

    cdef Batch *_take_batch(self, size_t n, size_t answer_guess) except NULL:
        cdef Batch *b = self.idle_batch
        self.idle_batch = NULL
        if b == NULL:
            b = <Batch *>calloc(1, sizeof(Batch))
        if b == NULL or batch_init(b, n, answer_guess):
            if b != NULL:
                batch_free(b)
                free(b)
            raise MemoryError()
        return b

    cdef void _give_batch(self, Batch *b) noexcept:
        # keep modest buffers only: one huge batch must not pin its memory for good
        if self.idle_batch == NULL and b.cap <= 65536 and b.arena_cap <= (64 << 20) and not self.closing:
            self.idle_batch = b
        else:
            batch_free(b)
            free(b)

    def _directory_stats(self):
        """{database: (state, pages, predicted, mispredicted)} — for tests and bench."""
        names = ("card", "number", "history")
        states = ("none", "building", "ready", "useless")
        return {names[i]: (states[self.dir_state[i]], self.dirs[i].pages, self.dirs[i].predicted,
                           self.dirs[i].mispredicted) for i in range(3)}

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
                    ch.nchosen = 0
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
        """One transaction for the batch: keys visited in key order, then records in
        link order, so neighbouring walks share pages; the GIL is released for all
        the lookups and decisions, and answers are copied out before the reset."""
        cdef Py_ssize_t n = PyTuple_GET_SIZE(items)
        cdef Py_ssize_t i
        cdef Batch *b = NULL
        cdef int rc = 0
        cdef object key, item
        cdef Directory *index_dir
        cdef Directory *history_dir
        cdef list result = PyList_New(n)
        cdef list keep = []
        cdef Slot *slot = NULL
        if n == 0:
            return result
        check_batch_size(n)
        b = self._take_batch(n, 512)
        try:
            for i in range(n):
                item = <object>PyTuple_GET_ITEM(items, i)
                if by_number:
                    key, birth = item  # (number_key, birth_day), as the pure engine unpacks
                    b.qs[i].birth_day = birth
                else:
                    key = item
                    b.qs[i].birth_day = 0
                if not PyBytes_Check(key):
                    raise TypeError(f"keys must be bytes, not {type(key).__name__}")
                self._check_key(key, "number_key" if by_number else "serial_key")
                # The queries point into the key objects while the GIL is released:
                # `keep` holds each one, as an item may make its key afresh when
                # unpacked (then nothing else does).
                keep.append(key)
                b.qs[i].key = <const uint8_t *>PyBytes_AS_STRING(key)
                b.qs[i].key_len = PyBytes_GET_SIZE(key)
                b.qs[i].link = NULL
                b.qs[i].rec = NULL
            slot = self._begin(True)
            index_dir = self._directory(slot, 1 if by_number else 0)
            history_dir = self._directory(slot, 2)
            with nogil:
                rc = lookup_batch(slot, b, by_number, day, index_dir, history_dir)
            self._judge_directory(1 if by_number else 0)
            self._judge_directory(2)
            if rc:
                raise_for(rc, NULL, 0)
            self._release(slot)  # the answers are in the arena now
            slot = NULL
            for i in range(n):
                out = PyBytes_FromStringAndSize(b.arena + b.qs[i].out_off, b.qs[i].out_len)
                Py_INCREF(out)
                PyList_SET_ITEM(result, i, out)
            return result
        finally:
            if slot != NULL:
                self._release(slot)
            self._give_batch(b)

    # -- raw records for the claims service -----------------------------------------

    def history_by_link(self, uint64_t link_id):
        """The raw history record (history.parse_history's input) of a link ID, or None."""
        cdef uint8_t key[8]
        cdef MDB_val kv, rec
        cdef int rc, i
        for i in range(8):  # store.link_key: 8 bytes, big-endian
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
        cdef Batch *b = NULL
        cdef int rc = 0
        cdef size_t found = 0
        cdef list result = PyList_New(n)
        cdef Slot *slot = NULL
        if n == 0:
            return result
        check_batch_size(n)
        b = self._take_batch(n, 0)
        try:
            for i in range(n):
                key = <object>PyTuple_GET_ITEM(items, i)
                if not PyBytes_Check(key):
                    raise TypeError(f"keys must be bytes, not {type(key).__name__}")
                self._check_key(key, "number_key")
                b.qs[i].key = <const uint8_t *>PyBytes_AS_STRING(key)
                b.qs[i].key_len = PyBytes_GET_SIZE(key)
                b.qs[i].link = NULL
                b.qs[i].rec = NULL
            slot = self._begin(True)
            with nogil:
                rc = walk_batch(slot.number, slot.history, b, &found, NULL, NULL)
            if rc:
                raise LmdbError("reading history", rc)
            for i in range(n):  # copied while the transaction is live
                if b.qs[i].rec == NULL:
                    out = None
                else:
                    out = PyBytes_FromStringAndSize(<char *>b.qs[i].rec, b.qs[i].rec_size)
                Py_INCREF(out)
                PyList_SET_ITEM(result, i, out)
            return result
        finally:
            if slot != NULL:
                self._release(slot)
            self._give_batch(b)


cdef int check_batch_size(Py_ssize_t n) except -1:
    # Batch.order packs a query's index in 32 bits
    if n > 0xFFFFFFFF:
        raise ValueError("a batch holds at most 2**32 - 1 checks")
    return 0


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


cdef int walk_ordered(MDB_cursor *cur, Batch *b, size_t m, bint by_link, Directory *d) noexcept nogil:
    """Walk the first m queries of b.order. With a directory this is a pipeline,
    A = PREFETCH_AHEAD: 3A checks ahead, prefetch the directory line interpolation
    points at; 2A ahead, find the leaf page there and prefetch its header and
    pointer array; A ahead, prefetch the nodes the search will read (or the whole
    page); then walk, and correct the directory from where the walk ended."""
    cdef size_t j, jj, slot
    cdef int rc
    cdef Query *q
    cdef const void *stored
    cdef const uint8_t *page
    cdef const uint8_t *last_prefetched = NULL
    cdef const uint8_t *actual
    cdef size_t *slots = NULL
    cdef size_t ahead = 0
    cdef Window w, hi_f
    if d != NULL and d.pages:
        slots = <size_t *>malloc(m * sizeof(size_t))
        if slots != NULL:
            ahead = PREFETCH_AHEAD
    for j in range(m + 3 * ahead):
        if ahead and j < m:
            q = &b.qs[<uint32_t>b.order[j]]
            slot = dir_guess(d, query_window(q, by_link, d.skip))
            slots[j] = slot
            prefetch(&d.fence[slot])
        if ahead and ahead <= j < m + ahead:
            jj = j - ahead
            q = &b.qs[<uint32_t>b.order[jj]]
            slot = dir_find(d, query_window(q, by_link, d.skip), slots[jj])
            slots[jj] = slot
            page = d.fence[slot].page
            if targeted:
                prefetch(page)
                prefetch(page + 64)
                if not by_link:  # card pages hold ~100 keys: 4 lines of pointers
                    prefetch(page + 128)
                    prefetch(page + 192)
            elif page != last_prefetched:
                last_prefetched = page
                prefetch_page(page, d.psize)
        if ahead and targeted and 2 * ahead <= j < m + 2 * ahead:
            jj = j - 2 * ahead
            q = &b.qs[<uint32_t>b.order[jj]]
            slot = slots[jj]
            w = query_window(q, by_link, d.skip)
            hi_f = d.fence[slot + 1].key if slot + 1 < d.pages else d.fence[slot].key
            prefetch_search(d.fence[slot].page, d.psize, w, d.fence[slot].key, hi_f, by_link)
        if j < 3 * ahead:
            continue
        jj = j - 3 * ahead
        q = &b.qs[<uint32_t>b.order[jj]]
        if by_link:
            rc = walk(cur, q.link, q.link_len, &q.rec, &q.rec_size, &stored)
        else:
            rc = walk(cur, q.key, q.key_len, &q.link, &q.link_len, &stored)
        if rc:
            free(slots)
            return rc
        if ahead and stored != NULL:
            actual = page_of(stored, d.psize)
            d.predicted += 1
            if d.fence[slots[jj]].page != actual:
                d.mispredicted += 1
                d.fence[slots[jj]].page = actual  # a benign race between threads: a hint
    free(slots)
    return 0


cdef inline Window query_window(const Query *q, bint by_link, size_t skip) noexcept nogil:
    return window_of(q.link, q.link_len, skip) if by_link else window_of(q.key, q.key_len, skip)


cdef int walk_batch(MDB_cursor *index, MDB_cursor *history, Batch *b, size_t *found,
                    Directory *index_dir, Directory *history_dir) noexcept nogil:
    """Key -> link -> record for every query, in key order then in link order;
    leaves the `found` queries with a link first in b.order, in link order."""
    cdef size_t m
    cdef int rc
    m = order_by_key(b)
    rc = walk_ordered(index, b, m, False, index_dir)
    if rc:
        return rc
    m = order_by_link(b)
    rc = walk_ordered(history, b, m, True, history_dir)
    if rc:
        return rc
    found[0] = m
    return 0


cdef int lookup_batch(Slot *slot, Batch *b, bint by_number, int64_t day,
                      Directory *index_dir, Directory *history_dir) noexcept nogil:
    """Walks, decisions, and each answer copied into the arena right after its
    decision, while the record is still in cache."""
    cdef size_t i, j, m = 0
    cdef int rc
    cdef Query *q
    cdef Choice ch
    cdef char *out
    rc = walk_batch(slot.number if by_number else slot.card, slot.history, b, &m, index_dir, history_dir)
    if rc:
        return rc
    for j in range(m):
        q = &b.qs[<uint32_t>b.order[j]]
        if q.rec == NULL:
            continue  # a link without a record (history deleted): no record, below
        rc = decide(q.rec, q.rec_size, by_number, fnv1a64(q.key, q.key_len) if by_number else 0,
                    q.birth_day, day, &ch)
        if rc:
            return rc
        out = arena_take(b, ch.size)
        if out == NULL:
            return ENOMEM
        q.out_off = out - b.arena
        q.out_len = ch.size
        write_response(&ch, out)
    for i in range(b.n):
        q = &b.qs[i]
        if q.rec == NULL:
            out = arena_take(b, 2)
            if out == NULL:
                return ENOMEM
            q.out_off = out - b.arena
            q.out_len = 2
            out[0] = 0x08
            out[1] = NO_RECORD
    return 0


cdef int raise_for(int rc, const void *link, size_t link_len) except -1:
    if rc in (ERR_SHORT, ERR_VERSION, ERR_ENTRIES, ERR_PAYLOAD):
        what = {ERR_SHORT: "shorter than its header",
                ERR_VERSION: "has an unsupported version",
                ERR_ENTRIES: "entry table runs past the value",
                ERR_PAYLOAD: "payload offsets run past the value"}[rc]
        where = ""
        if link != NULL and link_len == 8:
            where = f" of link {be64(link)}"  # a link key: store.link_id_of
        raise ValueError(f"corrupt history record{where}: {what}")
    raise LmdbError("lookup", rc)
