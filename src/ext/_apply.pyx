# cython: language_level=3
"""Native twins of the writer's byte work on history records (onshi.core.history).

Same interface and results as split_record_pure / number_fields_pure /
join_record_pure (tests/test_apply_native.py holds them to it): splitting a
record into its views' persons and qualification bodies, reading an insured
number's four fields off a body, joining rows back into a record. No LMDB, no
protobuf: bytes in, bytes/str out, every offset bounds-checked (a corrupt record
raises ValueError, never reads past its buffer).
"""

from libc.stdint cimport int32_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcmp, memcpy
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE

cdef enum:
    VERSION = 2
    HEADER_SIZE = 8    # <HHi
    ENTRY_SIZE = 32    # <iiQIIii
    QUALIFICATION_TAG = 0x12
    PERSON_TAG = 0x0A


cdef inline uint32_t rd32(const uint8_t *p) noexcept nogil:
    return p[0] | (<uint32_t>p[1] << 8) | (<uint32_t>p[2] << 16) | (<uint32_t>p[3] << 24)


cdef inline void wr32(uint8_t *p, uint32_t v) noexcept nogil:
    p[0] = v & 0xFF
    p[1] = (v >> 8) & 0xFF
    p[2] = (v >> 16) & 0xFF
    p[3] = (v >> 24) & 0xFF


cdef inline Py_ssize_t read_varint(const uint8_t *p, Py_ssize_t i, Py_ssize_t end, uint64_t *out) noexcept nogil:
    """Index after the varint at p[i], its value in *out; -1 if it runs past end."""
    cdef uint64_t value = 0
    cdef int shift = 0
    cdef uint8_t b
    while i < end and shift < 64:
        b = p[i]
        i += 1
        value |= (<uint64_t>(b & 0x7F)) << shift
        if not b & 0x80:
            out[0] = value
            return i
        shift += 7
    return -1


cdef inline Py_ssize_t varint_size(uint64_t n) noexcept nogil:
    cdef Py_ssize_t size = 1
    while n >= 0x80:
        n >>= 7
        size += 1
    return size


cdef inline Py_ssize_t write_varint(uint8_t *p, uint64_t n) noexcept nogil:
    cdef Py_ssize_t i = 0
    while n >= 0x80:
        p[i] = (n & 0x7F) | 0x80
        n >>= 7
        i += 1
    p[i] = n
    return i + 1


def split_record(bytes value not None):
    """(birth day, [(acquisition day, loss day, number hash, view first day,
    view end day, person bytes, body)] in stored order) of a history record."""
    cdef const uint8_t *p = <const uint8_t *>PyBytes_AS_STRING(value)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(value)
    cdef uint32_t count, i, off, length
    cdef Py_ssize_t start, end, at
    cdef uint64_t size, nhash
    cdef const uint8_t *e
    if n < HEADER_SIZE or (p[0] | (p[1] << 8)) != VERSION:
        raise ValueError("history record version not supported" if n >= HEADER_SIZE else "corrupt history record")
    count = p[2] | (p[3] << 8)
    if HEADER_SIZE + <Py_ssize_t>count * ENTRY_SIZE > n:
        raise ValueError("corrupt history record")
    out = []
    person = b""
    for i in range(count):
        e = p + HEADER_SIZE + i * ENTRY_SIZE
        nhash = (<uint64_t>rd32(e + 8)) | ((<uint64_t>rd32(e + 12)) << 32)
        off = rd32(e + 16)
        length = rd32(e + 20)
        end = <Py_ssize_t>off + length
        if length == 0 or end > n or p[off] != QUALIFICATION_TAG:
            raise ValueError("corrupt history record")
        start = read_varint(p, off + 1, end, &size)
        if start < 0:
            raise ValueError("corrupt history record")
        this_person = b""
        if start < end and p[start] == PERSON_TAG:
            at = read_varint(p, start + 1, end, &size)
            if at < 0 or <uint64_t>(end - at) < size:
                raise ValueError("corrupt history record")
            # The views of a person usually share one person: one bytes object.
            if PyBytes_GET_SIZE(person) == <Py_ssize_t>size and memcmp(PyBytes_AS_STRING(person), p + at, size) == 0:
                this_person = person
            else:
                this_person = person = PyBytes_FromStringAndSize(<const char *>p + at, <Py_ssize_t>size)
            start = at + <Py_ssize_t>size
        out.append((<int32_t>rd32(e), <int32_t>rd32(e + 4), nhash, <int32_t>rd32(e + 24), <int32_t>rd32(e + 28),
                    this_person, PyBytes_FromStringAndSize(<const char *>p + start, end - start)))
    return <int32_t>rd32(p + 4), out


def number_fields(bytes body not None):
    """insurer_number, symbol, number, branch (fields 2, 4, 5, 6) of a
    serialized Qualification, read straight off the wire (the last one wins)."""
    cdef const uint8_t *p = <const uint8_t *>PyBytes_AS_STRING(body)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(body)
    cdef Py_ssize_t i = 0
    cdef uint64_t tag, size, wire, field
    cdef Py_ssize_t spans[7][2]
    cdef int k
    for k in range(7):
        spans[k][0] = 0
        spans[k][1] = 0
    while i < n:
        i = read_varint(p, i, n, &tag)
        if i < 0:
            raise ValueError("corrupt qualification")
        field = tag >> 3
        wire = tag & 7
        if wire == 0:
            i = read_varint(p, i, n, &size)
            if i < 0:
                raise ValueError("corrupt qualification")
        elif wire == 2:
            i = read_varint(p, i, n, &size)
            if i < 0 or <uint64_t>(n - i) < size:
                raise ValueError("corrupt qualification")
            if field == 2 or field == 4 or field == 5 or field == 6:
                spans[field][0] = i
                spans[field][1] = <Py_ssize_t>size
            i += <Py_ssize_t>size
        elif wire == 1:
            i += 8
        elif wire == 5:
            i += 4
        else:
            raise ValueError("corrupt qualification")
    if i != n:
        raise ValueError("corrupt qualification")
    cdef const char *c = <const char *>p
    return (c[spans[2][0]:spans[2][0] + spans[2][1]].decode("utf-8"),
            c[spans[4][0]:spans[4][0] + spans[4][1]].decode("utf-8"),
            c[spans[5][0]:spans[5][0] + spans[5][1]].decode("utf-8"),
            c[spans[6][0]:spans[6][0] + spans[6][1]].decode("utf-8"))


def join_record(int birth_day, list entries not None):
    """The record for entries already in order: header, entries, payloads.
    entries: [(acquisition day, loss day, number hash, view first day, view end
    day, person field, body)]."""
    cdef Py_ssize_t count = len(entries)
    cdef Py_ssize_t total, offset, inner, i, pf
    cdef uint8_t *out
    cdef uint8_t *e
    cdef uint64_t nhash
    cdef bytes body, person_field
    cdef tuple entry
    # A copy nobody else holds: the record is sized in the first pass and filled
    # in the second, and a conversion in the second (an __int__) could otherwise
    # change the caller's list under it. The entries themselves are tuples.
    entries = list(entries)
    if count > 0xFFFF:
        raise ValueError("too many views")
    total = HEADER_SIZE + count * ENTRY_SIZE
    for item in entries:
        entry = <tuple?>item
        if len(entry) != 7:
            raise ValueError("an entry is 7 items")
        person_field = <bytes?>entry[5]
        body = <bytes?>entry[6]
        inner = PyBytes_GET_SIZE(person_field) + PyBytes_GET_SIZE(body)
        total += 1 + varint_size(inner) + inner
    if total > 0xFFFFFFFF:
        raise ValueError("history record too large")
    record = PyBytes_FromStringAndSize(NULL, total)
    out = <uint8_t *>PyBytes_AS_STRING(record)
    out[0] = VERSION
    out[1] = 0
    out[2] = count & 0xFF
    out[3] = (count >> 8) & 0xFF
    wr32(out + 4, <uint32_t><int32_t>birth_day)
    offset = HEADER_SIZE + count * ENTRY_SIZE
    for i in range(count):
        entry = <tuple>entries[i]
        acq, loss, number_hash, first, end, person_field, body = entry
        nhash = number_hash
        pf = PyBytes_GET_SIZE(person_field)
        inner = pf + PyBytes_GET_SIZE(body)
        e = out + HEADER_SIZE + i * ENTRY_SIZE
        wr32(e, <uint32_t><int32_t>acq)
        wr32(e + 4, <uint32_t><int32_t>loss)
        wr32(e + 8, <uint32_t>(nhash & 0xFFFFFFFF))
        wr32(e + 12, <uint32_t>(nhash >> 32))
        wr32(e + 16, <uint32_t>offset)
        wr32(e + 20, <uint32_t>(1 + varint_size(inner) + inner))
        wr32(e + 24, <uint32_t><int32_t>first)
        wr32(e + 28, <uint32_t><int32_t>end)
        out[offset] = QUALIFICATION_TAG
        offset += 1
        offset += write_varint(out + offset, <uint64_t>inner)
        memcpy(out + offset, PyBytes_AS_STRING(person_field), pf)
        offset += pf
        memcpy(out + offset, PyBytes_AS_STRING(body), PyBytes_GET_SIZE(body))
        offset += PyBytes_GET_SIZE(body)
    return record


def number_hash(bytes key not None):
    """FNV-1a 64 of a number key (identifiers.number_hash, the engines' hash)."""
    cdef const uint8_t *p = <const uint8_t *>PyBytes_AS_STRING(key)
    cdef Py_ssize_t i, n = PyBytes_GET_SIZE(key)
    cdef uint64_t h = 0xCBF29CE484222325ULL
    for i in range(n):
        h = (h ^ p[i]) * 0x100000001B3ULL
    return h
