"""Typed stub of the writer's native byte work (src/ext/_apply.pyx); the pure
twins with the same interface are in onshi.core.history (*_pure)."""

def split_record(value: bytes) -> tuple[bytes, list[tuple[int, int, int, bytes]]]:
    """(person bytes of the first entry, [(acquisition day, loss day, number hash, body)]);
    ValueError for a corrupt record."""

def number_fields(body: bytes) -> tuple[str, str, str, str]:
    """insurer_number, symbol, number, branch of a serialized Qualification; ValueError if corrupt."""

def join_record(birth_day: int, person_field: bytes, rows: list[tuple[int, int, int, bytes]]) -> bytes:
    """A history record from rows already in entry order."""

def number_hash(key: bytes) -> int:
    """FNV-1a 64 of a number key."""
