# The history record's layout for the native modules, in one place: the Python
# definition is onshi.core.history (HEADER, ENTRY, VERSION and its docstring);
# tests/test_native.py, test_apply_native.py and test_claims_native.py hold the
# two to the same bytes. Also the two encodings the record is made of: FNV-1a 64
# (onshi.core.identifiers.number_hash) and protobuf varints.
#
# Only enums and inline functions: cimporting this file adds no runtime import.

from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t

cdef enum:
    RECORD_VERSION = 2
    HEADER_SIZE = 8       # <HHi      version, entry count, birth day
    ENTRY_SIZE = 32       # <iiQIIii  one view of a qualification
    MAX_ENTRIES = 1024    # views per person (history.MAX_ENTRIES)

    # header fields (offsets into the record)
    H_VERSION = 0         # u16
    H_COUNT = 2           # u16
    H_BIRTH = 4           # i32 birth day of the person

    # entry fields (offsets into an entry)
    E_ACQUISITION = 0     # i32 acquisition day
    E_LOSS = 4            # i32 loss day (history's NEVER if not lost)
    E_HASH = 8            # u64 FNV-1a 64 of the qualification's number key
    E_OFFSET = 16         # u32 payload offset in the record
    E_LENGTH = 20         # u32 payload length
    E_VIEW_FIRST = 24     # i32 first day of the view
    E_VIEW_END = 28       # i32 end day of the view (exclusive)

    # a payload: CheckResponse field 2 framed (tag, varint length, Qualification),
    # whose first field is the person (field 1)
    QUALIFICATION_TAG = 0x12
    PERSON_TAG = 0x0A


# --- little-endian fields ------------------------------------------------------

cdef inline uint16_t rd16(const uint8_t *p) noexcept nogil:
    return <uint16_t>(p[0] | (<uint16_t>p[1] << 8))


cdef inline uint32_t rd32(const uint8_t *p) noexcept nogil:
    return p[0] | (<uint32_t>p[1] << 8) | (<uint32_t>p[2] << 16) | (<uint32_t>p[3] << 24)


cdef inline uint64_t rd64(const uint8_t *p) noexcept nogil:
    return rd32(p) | (<uint64_t>rd32(p + 4) << 32)


cdef inline void wr16(uint8_t *p, uint16_t v) noexcept nogil:
    p[0] = v & 0xFF
    p[1] = (v >> 8) & 0xFF


cdef inline void wr32(uint8_t *p, uint32_t v) noexcept nogil:
    p[0] = v & 0xFF
    p[1] = (v >> 8) & 0xFF
    p[2] = (v >> 16) & 0xFF
    p[3] = (v >> 24) & 0xFF


cdef inline void wr64(uint8_t *p, uint64_t v) noexcept nogil:
    wr32(p, <uint32_t>v)
    wr32(p + 4, <uint32_t>(v >> 32))


# --- FNV-1a 64 -------------------------------------------------------------------

cdef inline uint64_t fnv1a64(const uint8_t *key, size_t n) noexcept nogil:
    """FNV-1a 64, as onshi.core.identifiers.number_hash."""
    cdef uint64_t h = 0xCBF29CE484222325ULL
    cdef size_t i
    for i in range(n):
        h = (h ^ key[i]) * 0x100000001B3ULL
    return h


# --- protobuf varints (history.read_varint / history.varint) ----------------------

cdef inline Py_ssize_t read_varint(const uint8_t *p, Py_ssize_t i, Py_ssize_t end, uint64_t *out) noexcept nogil:
    """Index after the varint at p[i], its value in *out; -1 if it runs past `end`
    or past 10 bytes (as protobuf)."""
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
    """Writes n at p; returns the bytes written (varint_size(n))."""
    cdef Py_ssize_t i = 0
    while n >= 0x80:
        p[i] = (n & 0x7F) | 0x80
        n >>= 7
        i += 1
    p[i] = n
    return i + 1
