# cython: language_level=3, cdivision=True
"""The common claim in one native pass: a claim billed to the insurer
that covered every visit day (~95% of review) is decided OK here, over the
serialized VerifyClaimsRequest, without a Python object per claim.

The rules are onshi.core.claims (the reference, kept in Python): a claim is
*plain* when its fields fold to themselves (ASCII insurer/number/branch, a symbol
that is ASCII or already folded by Python), its dates are real, its period lies in
one month and it lists no visit days. Only plain claims are decided here, and only
as OK (`billed_covers` on the record's header); every other claim, and every plain
claim the header does not settle, goes back to Python, whose serialized verdicts
are spliced into the response in order. tests/test_claims_native.py demands
identical responses and ledger rows from this path and from Verifier.verify.

Wire format: protobuf's (varints, length-delimited fields). Anything unusual in a
claim (a field repeated, an unexpected wire type) only makes the claim not plain;
a request whose framing is broken returns None and the caller uses Python.
"""

from cpython.bytearray cimport PyByteArray_AS_STRING
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_Check, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.stdint cimport int32_t, int64_t, uint8_t, uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcmp, memcpy, memset

cdef extern from "<stdio.h>" nogil:
    int snprintf(char *buf, size_t size, const char *fmt, ...)

from onshi.ext.record cimport (E_ACQUISITION, E_HASH, E_LOSS, ENTRY_SIZE, H_BIRTH, H_COUNT, H_VERSION,
                               HEADER_SIZE, RECORD_VERSION, fnv1a64, rd16, rd32, rd64, read_varint,
                               varint_size, write_varint)

cdef enum:
    MAX_SYMBOL = 20       # onshi.core.identifiers
    MAX_NUMBER = 20
    MAX_LEDGER_FACILITY = 480  # onshi.core.claims
    MAX_SYMBOL_BYTES = 80  # a folded symbol of MAX_SYMBOL characters in UTF-8
    KEY_MAX = 160         # insurer 8 + symbol 80 + number 20 + branch 2 + separators, with room
    OUTCOME_OK = 1

cdef struct Span:
    Py_ssize_t off
    Py_ssize_t size


cdef struct Claim:
    Span claim_id
    Span facility
    Span insurer
    Span symbol
    Span number
    Span branch
    int32_t birth[3]   # year, month, day as sent
    int32_t first[3]
    int32_t last[3]
    int64_t points
    int has_visit_days
    unsigned int seen  # bit per field number: a repeated field makes the claim not plain
    bint plain
    bint late_elderly
    int birth_day, first_day, last_day
    int key_index      # position in keys (plain claims), else -1
    bint ok
    bint not_found     # plain claim whose number nobody holds: RETURN (Batch.not_found_tail)


cdef inline int next_varint(const uint8_t* p, Py_ssize_t end, Py_ssize_t* pos, uint64_t* out) noexcept nogil:
    """record.read_varint at *pos, advancing it; -1 if the varint is broken."""
    cdef Py_ssize_t after = read_varint(p, pos[0], end, out)
    if after < 0:
        return -1
    pos[0] = after
    return 0


cdef inline int skip_field(const uint8_t* p, Py_ssize_t end, Py_ssize_t* pos, int wire) noexcept nogil:
    cdef uint64_t v
    if wire == 0:
        return next_varint(p, end, pos, &v)
    if wire == 1:
        pos[0] += 8
    elif wire == 5:
        pos[0] += 4
    elif wire == 2:
        if next_varint(p, end, pos, &v) < 0 or v > <uint64_t>(end - pos[0]):
            return -1
        pos[0] += <Py_ssize_t>v
    else:  # groups: not in our protos
        return -1
    return 0 if pos[0] <= end else -1


cdef int parse_date(const uint8_t* p, Py_ssize_t start, Py_ssize_t end, int32_t* ymd) noexcept nogil:
    """google.type.Date: year 1, month 2, day 3 (int32 varints); -1: not plain."""
    cdef Py_ssize_t pos = start
    cdef uint64_t tag, v
    cdef int field, wire
    while pos < end:
        if next_varint(p, end, &pos, &tag) < 0:
            return -1
        field = <int>(tag >> 3)
        wire = <int>(tag & 7)
        if 1 <= field <= 3:
            if wire != 0 or next_varint(p, end, &pos, &v) < 0:
                return -1
            ymd[field - 1] = <int32_t>v  # int32 on the wire: the low 32 bits
        elif skip_field(p, end, &pos, wire) < 0:
            return -1
    return 0


cdef int day_number(const int32_t* ymd) noexcept nogil:
    """Days since 1970-01-01 (onshi.core.dates.to_day), or -2**31 for an impossible date."""
    cdef int y = ymd[0], m = ymd[1], d = ymd[2]
    cdef int dim
    if y < 1 or y > 9999 or m < 1 or m > 12 or d < 1:
        return -2147483648
    if m == 2:
        dim = 29 if (y % 4 == 0 and (y % 100 != 0 or y % 400 == 0)) else 28
    elif m == 4 or m == 6 or m == 9 or m == 11:
        dim = 30
    else:
        dim = 31
    if d > dim:
        return -2147483648
    # Howard Hinnant's days_from_civil
    y -= m <= 2
    cdef int era = (y if y >= 0 else y - 399) // 400
    cdef int yoe = y - era * 400
    cdef int doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    cdef int doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


cdef inline bint clean_ascii(const uint8_t* p, Span s, Py_ssize_t max_size) noexcept nogil:
    """Printable ASCII without spaces: NFKC folds it to itself and nothing is stripped."""
    cdef Py_ssize_t i
    if s.size > max_size:
        return False
    for i in range(s.size):
        if p[s.off + i] < 0x21 or p[s.off + i] > 0x7E:
            return False
    return True


cdef inline bint all_digits(const uint8_t* p, Span s) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(s.size):
        if p[s.off + i] < 0x30 or p[s.off + i] > 0x39:
            return False
    return True


cdef bint plain_insurer(const uint8_t* p, Span s) noexcept nogil:
    """identifiers.normalize_insurer_number of ASCII digits: 6 or 8 digits with the
    MHLW check digit; the 不詳 numbers 77777777/77777779 are never plain."""
    cdef Py_ssize_t i
    cdef int total = 0, digit, product
    if (s.size != 6 and s.size != 8) or not all_digits(p, s):
        return False
    if s.size == 8 and memcmp(p + s.off, b"7777777", 7) == 0 and (p[s.off + 7] == 0x37 or p[s.off + 7] == 0x39):
        return False
    for i in range(s.size - 1):  # weights 2,1,2,... from the digit before the check digit
        digit = p[s.off + s.size - 2 - i] - 0x30
        product = digit * (2 if i % 2 == 0 else 1)
        total += product // 10 + product % 10
    return (10 - total % 10) % 10 == p[s.off + s.size - 1] - 0x30


cdef int parse_claim(const uint8_t* p, Py_ssize_t start, Py_ssize_t end, Claim* c) noexcept nogil:
    """Fields of one Claim; -1: the framing is broken (the request is not parseable)."""
    cdef Py_ssize_t pos = start, vstart
    cdef uint64_t tag, v
    cdef int field, wire
    cdef Span* span
    cdef int32_t* ymd
    c.plain = True
    while pos < end:
        if next_varint(p, end, &pos, &tag) < 0:
            return -1
        field = <int>(tag >> 3)
        wire = <int>(tag & 7)
        if field == 10:  # visit_days (packed or not): Python's rule
            c.has_visit_days = 1
        if 1 <= field <= 14 and field != 10:
            if c.seen & (1u << field):
                c.plain = False
            c.seen |= 1u << field
        if field == 14 and wire == 0:
            if next_varint(p, end, &pos, &v) < 0:
                return -1
            c.points = <int64_t>v
            continue
        if 1 <= field <= 9 and wire == 2:
            if next_varint(p, end, &pos, &v) < 0 or v > <uint64_t>(end - pos):
                return -1
            vstart = pos
            pos += <Py_ssize_t>v
            if field <= 6:
                if field == 1:
                    span = &c.claim_id
                elif field == 2:
                    span = &c.facility
                elif field == 3:
                    span = &c.insurer
                elif field == 4:
                    span = &c.symbol
                elif field == 5:
                    span = &c.number
                else:
                    span = &c.branch
                span.off = vstart
                span.size = <Py_ssize_t>v
            else:
                if field == 7:
                    ymd = &c.birth[0]
                elif field == 8:
                    ymd = &c.first[0]
                else:
                    ymd = &c.last[0]
                if parse_date(p, vstart, pos, ymd) < 0:
                    c.plain = False
            continue
        if 1 <= field <= 9 or field == 14:  # a known field with another wire type
            c.plain = False
        if skip_field(p, end, &pos, wire) < 0:
            return -1
    return 0


cdef class Batch:
    """One parsed VerifyClaimsRequest: plain claims' number keys, then their OK
    verdicts, the response and the ledger rows around Python's verdicts."""

    cdef bytes raw
    cdef Claim* claims
    cdef Py_ssize_t n
    cdef public list keys          # number keys of the plain claims, in claim order
    cdef tuple own_keys            # the same, as parsed (the caller may change `keys`)
    cdef public Py_ssize_t denied  # first claim of another facility (pre-submission), or -1
    cdef bytes not_found_tail      # the serialized NUMBER_NOT_FOUND verdict after its claim_id

    def __cinit__(self):
        # also what a Batch() made from Python holds: no claims
        self.raw = b""
        self.claims = NULL
        self.n = 0
        self.keys = []
        self.own_keys = ()
        self.denied = -1

    def __dealloc__(self):
        free(self.claims)

    def __len__(self):
        return self.n

    cdef Claim* claim(self, Py_ssize_t i) except NULL:
        if i < 0 or i >= self.n:
            raise IndexError(f"claim index {i} out of range (batch of {self.n})")
        return &self.claims[i]

    def plain_indices(self):
        """Claim indices whose keys are `keys`, in the same order."""
        return [i for i in range(self.n) if self.claims[i].key_index >= 0]

    def other_indices(self):
        """Claim indices that are not plain (Python decides them)."""
        return [i for i in range(self.n) if self.claims[i].key_index < 0]

    def plain_outcomes(self, unsigned char ok, unsigned char not_found):
        """One byte per claim, as settle left them: `not_found` where this pass
        answers a number nobody holds, `ok` for every other claim (the caller
        overwrites those it decided). What the access log names as each verdict,
        without parsing the response."""
        cdef bytearray out = bytearray(self.n)
        cdef char* p = PyByteArray_AS_STRING(out)
        cdef Py_ssize_t i
        for i in range(self.n):
            p[i] = <char>(not_found if self.claims[i].not_found else ok)
        return out

    def days(self, Py_ssize_t i):
        """(birth, first, last) day numbers of a plain claim."""
        cdef Claim* c = self.claim(i)
        return c.birth_day, c.first_day, c.last_day

    def settle(self, list values, bytes not_found_tail=None):
        """Header-only coverage of each plain claim's history (values[k] answers
        keys[k]: bytes or None); returns the indices of plain claims NOT settled
        OK, with their key positions: [(claim index, k)], for Python's rules
        (claims.Verifier._settle). With `not_found_tail` (Python's serialized
        verdict for a number nobody holds, without claim_id), such claims are
        answered with it here instead."""
        cdef Py_ssize_t i, k
        cdef object value
        cdef list rest = []
        cdef tuple keys = self.own_keys
        if values is None or len(values) != len(keys):
            raise ValueError("one value per key")
        values = list(values)  # a copy: nothing else can change it while it is read
        self.not_found_tail = not_found_tail
        for i in range(self.n):
            k = self.claims[i].key_index
            if k < 0:
                continue
            self.claims[i].ok = False  # settled afresh by each call
            self.claims[i].not_found = False
            value = values[k]
            if PyBytes_Check(value) and covers(PyBytes_AS_STRING(value), PyBytes_GET_SIZE(value),
                                                keys[k], &self.claims[i]):
                self.claims[i].ok = True
            elif value is None and not_found_tail is not None:
                self.claims[i].not_found = True
            else:
                rest.append((i, k))
        return rest

    def response(self, list spliced):
        """Serialized VerifyClaimsResponse: verdicts[i] is spliced's bytes for the
        (index, serialized Verdict) pairs given (sorted by index), else OK (or
        the not-found verdict, see settle)."""
        cdef Py_ssize_t i, j = 0, total = 0, size, nspliced = len(spliced), previous = -1
        cdef const uint8_t* raw = <const uint8_t*>PyBytes_AS_STRING(self.raw)
        cdef list bodies = [None] * nspliced
        cdef list indices = [None] * nspliced
        cdef bytes body
        cdef char* out
        cdef Py_ssize_t pos = 0, next_index
        # Read the pairs once: the sizes below and the bytes written must come
        # from the same bodies, whatever the items do when read again.
        for j in range(nspliced):
            i, body = spliced[j]
            if i <= previous or i >= self.n:
                raise ValueError("spliced verdicts must be sorted, distinct and within the batch")
            previous = i
            indices[j] = i
            bodies[j] = body
            total += 1 + varint_size(PyBytes_GET_SIZE(body)) + PyBytes_GET_SIZE(body)
        j = 0
        next_index = indices[0] if nspliced else -1
        for i in range(self.n):
            if i == next_index:
                j += 1
                next_index = indices[j] if j < nspliced else -1
                continue
            size = self.verdict_size(&self.claims[i])
            total += 1 + varint_size(size) + size
        result = PyBytes_FromStringAndSize(NULL, total)
        out = PyBytes_AS_STRING(result)
        j = 0
        next_index = indices[0] if nspliced else -1
        for i in range(self.n):
            out[pos] = 0x0A  # VerifyClaimsResponse.verdicts
            pos += 1
            if i == next_index:
                body = bodies[j]
                pos = put_varint(out, pos, PyBytes_GET_SIZE(body))
                memcpy(out + pos, PyBytes_AS_STRING(body), PyBytes_GET_SIZE(body))
                pos += PyBytes_GET_SIZE(body)
                j += 1
                next_index = indices[j] if j < nspliced else -1
                continue
            pos = put_varint(out, pos, self.verdict_size(&self.claims[i]))
            if self.claims[i].claim_id.size:
                out[pos] = 0x0A  # Verdict.claim_id
                pos = put_varint(out, pos + 1, self.claims[i].claim_id.size)
                memcpy(out + pos, raw + self.claims[i].claim_id.off, self.claims[i].claim_id.size)
                pos += self.claims[i].claim_id.size
            if self.claims[i].not_found:  # the fields after claim_id, as Python serialized them
                memcpy(out + pos, PyBytes_AS_STRING(self.not_found_tail), PyBytes_GET_SIZE(self.not_found_tail))
                pos += PyBytes_GET_SIZE(self.not_found_tail)
                continue
            out[pos] = 0x10  # Verdict.outcome
            out[pos + 1] = OUTCOME_OK
            pos += 2
        return result

    cdef Py_ssize_t verdict_size(self, Claim* c):
        """Serialized size of Verdict(claim_id, outcome=OK), or of the not-found verdict."""
        cdef Py_ssize_t size = PyBytes_GET_SIZE(self.not_found_tail) if c.not_found else 2
        if c.claim_id.size:
            size += 1 + varint_size(c.claim_id.size) + c.claim_id.size
        return size

    def ledger(self, list recorded):
        """Ledger rows (onshi.core.claims.ledger_row: facility-month prefix, claim
        ID, payers) in claim order: `recorded` gives (index, prefix, claim ID,
        payers) for the claims Python decided (sorted by index); the plain claims
        settled OK get insurer \\x1f points here."""
        cdef Py_ssize_t i, j = 0, nrec = len(recorded)
        cdef Py_ssize_t next_index = recorded[0][0] if nrec else -1
        cdef list rows = []
        cdef const char* raw = PyBytes_AS_STRING(self.raw)
        cdef Claim* c
        cdef char num[24]
        cdef int numlen
        cdef unsigned int month
        cdef Py_ssize_t take
        cdef bytes prefix, value
        cdef char* kp
        for i in range(self.n):
            if i == next_index:
                item = recorded[j]
                rows.append((item[1], item[2], item[3]))
                j += 1
                next_index = recorded[j][0] if j < nrec else -1
                continue
            c = &self.claims[i]
            if not c.ok and not c.not_found:
                raise ValueError(f"claim {i} was not settled here and has no recorded row")
            # facility (cut at MAX_LEDGER_FACILITY bytes) \x1f month (u32 BE, YYYYMM of the first visit)
            take = c.facility.size if c.facility.size < MAX_LEDGER_FACILITY else MAX_LEDGER_FACILITY
            prefix = PyBytes_FromStringAndSize(NULL, take + 5)
            kp = PyBytes_AS_STRING(prefix)
            memcpy(kp, raw + c.facility.off, take)
            month = <unsigned int>(c.first[0] * 100 + c.first[1])
            kp[take] = 0x1F
            kp[take + 1] = <char>(month >> 24)
            kp[take + 2] = <char>(month >> 16)
            kp[take + 3] = <char>(month >> 8)
            kp[take + 4] = <char>month
            if c.not_found:  # RETURN: nobody pays
                rows.append((prefix, PyBytes_FromStringAndSize(raw + c.claim_id.off, c.claim_id.size), b""))
                continue
            numlen = snprintf(num, sizeof(num), "%lld", <long long>c.points)
            value = PyBytes_FromStringAndSize(NULL, c.insurer.size + 1 + numlen)
            memcpy(PyBytes_AS_STRING(value), raw + c.insurer.off, c.insurer.size)
            PyBytes_AS_STRING(value)[c.insurer.size] = 0x1F
            memcpy(PyBytes_AS_STRING(value) + c.insurer.size + 1, num, numlen)
            rows.append((prefix, PyBytes_FromStringAndSize(raw + c.claim_id.off, c.claim_id.size), value))
        if j != nrec:
            raise ValueError("recorded rows must be sorted, distinct and within the batch")
        return rows


cdef inline Py_ssize_t put_varint(char* out, Py_ssize_t pos, Py_ssize_t v) noexcept nogil:
    """record.write_varint at out[pos]; returns the position after it."""
    return pos + write_varint(<uint8_t*>out + pos, <uint64_t>v)


cdef bint covers(const char* value, Py_ssize_t size, bytes key, Claim* c) noexcept:
    """claims.billed_covers: the billed qualification (same person: birth date;
    one entry reached through the number index, or an entry of the number's hash)
    covers first..last."""
    cdef const uint8_t* rec = <const uint8_t*>value
    cdef const uint8_t* e
    cdef int32_t acq, loss
    cdef uint64_t h
    cdef Py_ssize_t i
    cdef int count
    if size < HEADER_SIZE:
        return False
    if rd16(rec + H_VERSION) != RECORD_VERSION or <int32_t>rd32(rec + H_BIRTH) != c.birth_day:
        return False
    count = rd16(rec + H_COUNT)
    if size < HEADER_SIZE + <Py_ssize_t>count * ENTRY_SIZE:
        return False
    if count == 1:
        e = rec + HEADER_SIZE
        acq = <int32_t>rd32(e + E_ACQUISITION)
        loss = <int32_t>rd32(e + E_LOSS)
        return acq <= c.first_day and c.last_day < loss
    h = fnv1a64(<const uint8_t*>PyBytes_AS_STRING(key), <size_t>PyBytes_GET_SIZE(key))
    for i in range(count):
        e = rec + HEADER_SIZE + i * ENTRY_SIZE
        acq = <int32_t>rd32(e + E_ACQUISITION)
        loss = <int32_t>rd32(e + E_LOSS)
        if rd64(e + E_HASH) == h and acq <= c.first_day and c.last_day < loss:
            return True
    return False


def parse(bytes raw not None, dict symbols not None, bytes facility=None):
    """Parse a serialized VerifyClaimsRequest and build the plain claims' number
    keys (identifiers.number_key). `symbols` maps a symbol as sent (UTF-8) to its
    folded form, for non-ASCII symbols Python has folded before. `facility`: the
    pre-submission caller's code (Batch.denied). None: broken framing."""
    cdef const uint8_t* p = <const uint8_t*>PyBytes_AS_STRING(raw)
    cdef Py_ssize_t end = PyBytes_GET_SIZE(raw), pos = 0, n = 0, i, vstart
    cdef uint64_t tag = 0, v = 0
    cdef Batch batch = Batch.__new__(Batch)
    cdef Claim* c
    cdef char key[KEY_MAX]
    cdef Py_ssize_t klen
    cdef object folded
    cdef const char* sym
    cdef Py_ssize_t symlen
    batch.raw = raw
    batch.keys = []
    batch.denied = -1
    # count the claims first (one allocation)
    while pos < end:
        if next_varint(p, end, &pos, &tag) < 0:
            return None
        if tag == 0x0A:
            n += 1
        if skip_field(p, end, &pos, <int>(tag & 7)) < 0:
            return None
    batch.claims = <Claim*>malloc(max(n, 1) * sizeof(Claim))
    if batch.claims == NULL:
        raise MemoryError()
    batch.n = n
    pos = 0
    i = 0
    while pos < end:
        next_varint(p, end, &pos, &tag)
        if tag != 0x0A:
            skip_field(p, end, &pos, <int>(tag & 7))
            continue
        next_varint(p, end, &pos, &v)
        vstart = pos
        pos += <Py_ssize_t>v
        c = &batch.claims[i]
        i += 1
        memset_claim(c)
        if parse_claim(p, vstart, pos, c) < 0:
            return None
    for i in range(n):
        c = &batch.claims[i]
        if facility is not None and batch.denied < 0 and (
                c.facility.size != PyBytes_GET_SIZE(facility)
                or memcmp(p + c.facility.off, PyBytes_AS_STRING(facility), c.facility.size) != 0):
            batch.denied = i
        if not c.plain or c.has_visit_days or not plain_insurer(p, c.insurer):
            continue
        c.birth_day = day_number(c.birth)
        c.first_day = day_number(c.first)
        c.last_day = day_number(c.last)
        if (c.birth_day == -2147483648 or c.first_day == -2147483648 or c.last_day == -2147483648
                or c.first[0] != c.last[0] or c.first[1] != c.last[1] or c.first_day > c.last_day):
            continue
        if c.number.size < 1 or not clean_ascii(p, c.number, MAX_NUMBER):
            continue
        if clean_ascii(p, c.symbol, MAX_SYMBOL):
            sym = <const char*>(p + c.symbol.off)
            symlen = c.symbol.size
        else:
            folded = symbols.get(raw[c.symbol.off:c.symbol.off + c.symbol.size])
            if folded is None or not PyBytes_Check(folded):
                continue
            sym = PyBytes_AS_STRING(folded)
            symlen = PyBytes_GET_SIZE(folded)
            if symlen > MAX_SYMBOL_BYTES:  # not a symbol Python would cache; never past `key`
                continue
        c.late_elderly = c.insurer.size == 8 and p[c.insurer.off] == 0x33 and p[c.insurer.off + 1] == 0x39
        # insurer \x1f symbol \x1f number \x1f branch (zero-padded); 後期高齢者: no symbol/branch
        memcpy(key, p + c.insurer.off, c.insurer.size)
        klen = c.insurer.size
        key[klen] = 0x1F
        klen += 1
        if not c.late_elderly:
            if c.branch.size < 1 or c.branch.size > 2 or not all_digits(p, c.branch):
                continue
            memcpy(key + klen, sym, symlen)
            klen += symlen
        key[klen] = 0x1F
        klen += 1
        memcpy(key + klen, p + c.number.off, c.number.size)
        klen += c.number.size
        key[klen] = 0x1F
        klen += 1
        if not c.late_elderly:
            if c.branch.size == 1:
                key[klen] = 0x30
                klen += 1
            memcpy(key + klen, p + c.branch.off, c.branch.size)
            klen += c.branch.size
        c.key_index = len(batch.keys)
        batch.keys.append(PyBytes_FromStringAndSize(key, klen))
    batch.own_keys = tuple(batch.keys)
    return batch


cdef inline void memset_claim(Claim* c) noexcept nogil:
    cdef Claim zero
    memset(&zero, 0, sizeof(Claim))
    zero.key_index = -1
    c[0] = zero



def split(bytes raw not None, int parts, double first_share=-1.0):
    """The request cut at claim boundaries into at most `parts` sub-requests:
    ([(sub-request bytes, index of its first claim)], claim count). The first
    part holds `first_share` of the claims (default: an equal share), the others
    share the rest equally. None when the framing is broken or the request has
    fields other than claims (then it is verified whole)."""
    cdef const uint8_t* p = <const uint8_t*>PyBytes_AS_STRING(raw)
    cdef Py_ssize_t end = PyBytes_GET_SIZE(raw), pos = 0, n = 0, k, lo, hi, first
    cdef uint64_t tag = 0
    cdef list starts = []
    while pos < end:
        starts.append(pos)
        if next_varint(p, end, &pos, &tag) < 0 or tag != 0x0A or skip_field(p, end, &pos, 2) < 0:
            return None
        n += 1
    starts.append(end)
    parts = max(1, min(parts, n))
    if not first_share >= 0.0:  # negative or NaN: the default (a NaN would become any index below)
        first_share = 1.0 / parts
    first = <Py_ssize_t>(n * min(max(first_share, 0.0), 1.0) + 0.5) if parts > 1 else n
    out = [(raw[starts[0]:starts[first]], 0)]
    for k in range(parts - 1):
        lo = first + k * (n - first) // (parts - 1)
        hi = first + (k + 1) * (n - first) // (parts - 1)
        out.append((raw[starts[lo]:starts[hi]], lo))
    return out, n
