"""Typed stub of the compiled native engine (src/ext/_engine.pyx)."""

import os
from collections.abc import Iterable
from typing import ClassVar

class LmdbError(RuntimeError):
    """An unexpected liblmdb error; `code` is its return code."""

    code: int
    def __init__(self, what: str, code: int) -> None: ...

class NativeEngine:
    """Read-only lookups over an onshi store, byte-identical to PureEngine.

    Raises FileNotFoundError for a missing store, ValueError after close() and
    for a corrupt history record, TypeError/ValueError for a non-bytes or empty key.
    """

    kind: ClassVar[str]  # "native"
    path: str
    remaps: int  # times the map was remapped after a writer grew it
    @property
    def closed(self) -> bool: ...
    def __init__(self, path: str | os.PathLike[str]) -> None: ...
    def close(self) -> None: ...
    def __enter__(self) -> NativeEngine: ...
    def __exit__(self, *exc: object) -> None: ...
    def check_by_card(self, serial_key: bytes, as_of_day: int) -> bytes: ...
    def check_by_number(self, number_key: bytes, birth_day: int, as_of_day: int) -> bytes: ...
    def check_by_card_batch(self, serial_keys: Iterable[bytes], as_of_day: int) -> list[bytes]: ...
    def check_by_number_batch(self, queries: Iterable[tuple[bytes, int]], as_of_day: int) -> list[bytes]: ...
    def histories_by_number(self, number_keys: Iterable[bytes]) -> list[bytes | None]: ...
    def history_by_link(self, link_id: int) -> bytes | None: ...
    def _directory_stats(self) -> dict[str, tuple[str, int, int, int]]:
        """{database: (state, pages, predicted, mispredicted)} of the batch prefetch directories."""

def _tune(
    *,
    directories: bool | None = None,
    prefetch_bytes_per_page: int | None = None,
    word_compare_keys: bool | None = None,
    prefetch_stride_bytes: int | None = None,
    targeted_prefetch: bool | None = None,
) -> None:
    """Benchmark knobs (bench/engine.py): turn each batch technique off to measure it.
    word_compare_keys applies to engines opened afterwards."""
