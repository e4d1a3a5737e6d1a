"""Typed stub of the writer's native byte work (src/ext/_record.pyx); the pure
twins with the same interface are in onshi.core.history (*_pure)."""

def split_record(value: bytes) -> tuple[int, list[tuple[int, int, int, int, int, bytes, bytes]]]:
    """(birth day, [(acquisition day, loss day, number hash, view first day, view end day,
    person bytes, body)]); ValueError for a corrupt record."""

def number_fields(body: bytes) -> tuple[str, str, str, str]:
    """insurer_number, symbol, number, branch of a serialized Qualification; ValueError if corrupt."""

def join_record(birth_day: int, entries: list[tuple[int, int, int, int, int, bytes, bytes]]) -> bytes:
    """A history record from entries (views) already in order, each with its person field."""

def number_hash(key: bytes) -> int:
    """FNV-1a 64 of a number key."""
