"""The pure-Python engine over the `lmdb` package: the reference implementation,
the oracle in tests and the baseline in benchmarks. Same interface as the native
engine (onshi.ext._engine.NativeEngine)."""

from __future__ import annotations

import os

from onshi.core import history, identifiers
from onshi.core.store import open_env

_NO_RECORD = history.response(history.NO_RECORD)


class PureEngine:
    kind = "pure"

    def __init__(self, path: str | os.PathLike):
        self.env = open_env(path, readonly=True)
        # Opened outside any transaction: py-lmdb 3.0 handles opened inside a
        # read-only txn fail later with EINVAL under buffers=True.
        self._card = self.env.open_db(b"card", create=False)
        self._number = self.env.open_db(b"number", create=False)
        self._history = self.env.open_db(b"history", create=False)

    def close(self) -> None:
        self.env.close()

    def check_by_card(self, serial_key: bytes, as_of_day: int) -> bytes:
        with self.env.begin(buffers=True) as txn:
            return self._by_card(txn, serial_key, as_of_day)

    def check_by_number(self, number_key: bytes, birth_day: int, as_of_day: int) -> bytes:
        with self.env.begin(buffers=True) as txn:
            return self._by_number(txn, number_key, birth_day, as_of_day)

    def check_by_card_batch(self, serial_keys: list[bytes], as_of_day: int) -> list[bytes]:
        with self.env.begin(buffers=True) as txn:
            return [self._by_card(txn, k, as_of_day) for k in serial_keys]

    def check_by_number_batch(self, queries: list[tuple[bytes, int]], as_of_day: int) -> list[bytes]:
        with self.env.begin(buffers=True) as txn:
            return [self._by_number(txn, k, b, as_of_day) for k, b in queries]

    def _by_card(self, txn, serial_key, day):
        link = txn.get(serial_key, db=self._card)
        value = txn.get(link, db=self._history) if link is not None else None
        if value is None:
            return _NO_RECORD
        _, entries = history.parse_history(value)
        validity, chosen = history.choose_by_card(entries, day)
        return history.response(validity, [entries[i].payload for i in chosen])

    def _by_number(self, txn, number_key, birth_day, day):
        link = txn.get(number_key, db=self._number)
        value = txn.get(link, db=self._history) if link is not None else None
        if value is None:
            return _NO_RECORD
        person_birth, entries = history.parse_history(value)
        validity, chosen = history.choose_by_number(
            entries, person_birth, identifiers.number_hash(number_key), birth_day, day)
        return history.response(validity, [entries[i].payload for i in chosen])
