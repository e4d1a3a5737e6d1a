"""The pure-Python engine over the `lmdb` package: the reference implementation,
the oracle in tests and the baseline in benchmarks. Same interface as the native
engine (onshi.ext._engine.NativeEngine)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any, Literal, overload

import lmdb

from . import history, identifiers
from .store import link_key, open_env

_NO_RECORD = history.response(history.NO_RECORD)


class PureEngine:
    kind = "pure"
    _owns_env = True  # False when over_env: close() leaves the environment to its owner

    def __init__(self, path: str | os.PathLike[str]):
        self.env = open_env(path, readonly=True)
        self._init_txn_count()
        # Opened outside any transaction: py-lmdb 3.0 handles opened inside a
        # read-only txn fail later with EINVAL under buffers=True.
        self._card = self.env.open_db(b"card", create=False)
        self._number = self.env.open_db(b"number", create=False)
        self._history = self.env.open_db(b"history", create=False)

    @classmethod
    def over_env(cls, env: lmdb.Environment) -> PureEngine:
        """A pure engine reading through an environment already open in this
        process (the writer process's): py-lmdb refuses to open
        one path twice. close() then leaves the environment to its owner."""
        self = cls.__new__(cls)
        self.env = env
        self._owns_env = False
        self._init_txn_count()
        self._card = env.open_db(b"card")
        self._number = env.open_db(b"number")
        self._history = env.open_db(b"history")
        return self

    def close(self) -> None:
        if self._owns_env:
            self.env.close()

    def _init_txn_count(self) -> None:
        self._lock = threading.Lock()
        self._live = 0  # read transactions open in this engine

    @overload
    def _read(self) -> AbstractContextManager[lmdb.Transaction[memoryview]]: ...
    @overload
    def _read(self, buffers: Literal[False]) -> AbstractContextManager[lmdb.Transaction[bytes]]: ...
    @contextmanager
    def _read(self, buffers: bool = True) -> Iterator[lmdb.Transaction[Any]]:
        """A read transaction. When the writer has grown the map (MDB_MAP_RESIZED),
        adopt the new size, which LMDB allows only with no transaction live here."""
        while True:
            with self._lock:
                try:
                    txn = self.env.begin(buffers=True) if buffers else self.env.begin()
                except lmdb.MapResizedError:
                    if self._live == 0:
                        self.env.set_mapsize(0)
                        continue
                    txn = None
                else:
                    self._live += 1
            if txn is not None:
                break
            time.sleep(0.0005)  # another thread's lookup is finishing
        try:
            yield txn
        finally:
            txn.abort()
            with self._lock:
                self._live -= 1

    def check_by_card(self, serial_key: bytes, as_of_day: int) -> bytes:
        with self._read() as txn:
            return self._by_card(txn, serial_key, as_of_day)

    def check_by_number(self, number_key: bytes, birth_day: int, as_of_day: int) -> bytes:
        with self._read() as txn:
            return self._by_number(txn, number_key, birth_day, as_of_day)

    def check_by_card_batch(self, serial_keys: list[bytes], as_of_day: int) -> list[bytes]:
        with self._read() as txn:
            return [self._by_card(txn, k, as_of_day) for k in serial_keys]

    def check_by_number_batch(self, queries: list[tuple[bytes, int]], as_of_day: int) -> list[bytes]:
        with self._read() as txn:
            return [self._by_number(txn, k, b, as_of_day) for k, b in queries]

    def histories_by_number(self, number_keys: list[bytes]) -> list[bytes | None]:
        """Raw history records of the persons holding these number keys, in input
        order (None for an unknown number); one read transaction for the batch.
        (Sorting the keys first cost more than it saved: 5,000 of a million keys
        share few leaf pages; docs/INVESTIGATIONS.md, Claims.)"""
        out: list[bytes | None] = []
        append = out.append
        with self._read(buffers=False) as txn:
            get = txn.get
            number_db, history_db = self._number, self._history
            for key in number_keys:
                link = get(key, None, number_db)
                append(get(link, None, history_db) if link is not None else None)
        return out

    def history_by_link(self, link_id: int) -> bytes | None:
        with self._read(buffers=False) as txn:
            return txn.get(link_key(link_id), db=self._history)

    def _by_card(self, txn: lmdb.Transaction[bytes | memoryview], serial_key: bytes, day: int) -> bytes:
        link = txn.get(serial_key, db=self._card)
        value = txn.get(link, db=self._history) if link is not None else None
        if value is None:
            return _NO_RECORD
        _, entries = history.parse_history(value)
        validity, chosen = history.choose_by_card(entries, day)
        return history.response(validity, [entries[i].payload for i in chosen])

    def _by_number(
        self, txn: lmdb.Transaction[bytes | memoryview], number_key: bytes, birth_day: int, day: int
    ) -> bytes:
        link = txn.get(number_key, db=self._number)
        value = txn.get(link, db=self._history) if link is not None else None
        if value is None:
            return _NO_RECORD
        person_birth, entries = history.parse_history(value)
        validity, chosen = history.choose_by_number(
            entries, person_birth, identifiers.number_hash(number_key), birth_day, day
        )
        return history.response(validity, [entries[i].payload for i in chosen])
