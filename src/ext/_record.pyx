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

from onshi.ext.record cimport (E_ACQUISITION, E_HASH, E_LENGTH, E_LOSS, E_OFFSET, E_VIEW_END, E_VIEW_FIRST,
                               ENTRY_SIZE, H_BIRTH, H_COUNT, H_VERSION, HEADER_SIZE, PERSON_TAG,
                               QUALIFICATION_TAG, RECORD_VERSION, fnv1a64, rd16, rd32, rd64, read_varint,
                               varint_size, wr16, wr32, wr64, write_varint)


def split_record(bytes value not None):
    """(birth day, [(acquisition day, loss day, number hash, view first day,
    view end day, person bytes, body)] in stored order) of a history record."""
    cdef const uint8_t *p = <const uint8_t *>PyBytes_AS_STRING(value)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(value)
    cdef uint32_t count, i, off, length
    cdef Py_ssize_t start, end, at
    cdef uint64_t size, nhash
    cdef const uint8_t *e
    if n < HEADER_SIZE or rd16(p + H_VERSION) != RECORD_VERSION:
        raise ValueError("history record version not supported" if n >= HEADER_SIZE else "corrupt history record")
    count = rd16(p + H_COUNT)
    if HEADER_SIZE + <Py_ssize_t>count * ENTRY_SIZE > n:
        raise ValueError("corrupt history record")
    out = []
    person = b""
    for i in range(count):
        e = p + HEADER_SIZE + i * ENTRY_SIZE
        nhash = rd64(e + E_HASH)
        off = rd32(e + E_OFFSET)
        length = rd32(e + E_LENGTH)
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
        out.append((<int32_t>rd32(e + E_ACQUISITION), <int32_t>rd32(e + E_LOSS), nhash,
                    <int32_t>rd32(e + E_VIEW_FIRST), <int32_t>rd32(e + E_VIEW_END),
                    this_person, PyBytes_FromStringAndSize(<const char *>p + start, end - start)))
    return <int32_t>rd32(p + H_BIRTH), out


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
    wr16(out + H_VERSION, RECORD_VERSION)
    wr16(out + H_COUNT, <uint16_t>count)
    wr32(out + H_BIRTH, <uint32_t><int32_t>birth_day)
    offset = HEADER_SIZE + count * ENTRY_SIZE
    for i in range(count):
        entry = <tuple>entries[i]
        acq, loss, number_hash, first, end, person_field, body = entry
        nhash = number_hash
        pf = PyBytes_GET_SIZE(person_field)
        inner = pf + PyBytes_GET_SIZE(body)
        e = out + HEADER_SIZE + i * ENTRY_SIZE
        wr32(e + E_ACQUISITION, <uint32_t><int32_t>acq)
        wr32(e + E_LOSS, <uint32_t><int32_t>loss)
        wr64(e + E_HASH, nhash)
        wr32(e + E_OFFSET, <uint32_t>offset)
        wr32(e + E_LENGTH, <uint32_t>(1 + varint_size(inner) + inner))
        wr32(e + E_VIEW_FIRST, <uint32_t><int32_t>first)
        wr32(e + E_VIEW_END, <uint32_t><int32_t>end)
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
    return fnv1a64(<const uint8_t *>PyBytes_AS_STRING(key), <size_t>PyBytes_GET_SIZE(key))
