"""The one writer code path. The bulk loader (`onshi gen`) and the ingest service
both write through `Writer`, so index rules and record encoding live here only.

Every change to one person happens inside one LMDB write transaction, so a reader
sees a person either wholly before or wholly after the change.
"""

from __future__ import annotations

import heapq
import itertools
import os
import struct
import tempfile
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any, TypeVar

import lmdb

from ..v1 import qualification_pb2
from . import dates, history, identifiers, persons, store, unknown
from .history import Row
from .persons import Timeline
from .store import link_id_of, link_key, open_env

T = TypeVar("T")
SPILL_ROWS = 16_000_000  # bulk_load rows held in memory per index (~2 GB of tuples); 10M persons never spill
Person = qualification_pb2.Person
Qualification = qualification_pb2.Qualification


class NumberConflict(ValueError):
    """An insured number already belongs to another person."""

    def __init__(self, key: bytes, owner: int):
        super().__init__(f"number {key.decode().replace(chr(31), '/')} belongs to link {owner}")
        self.key = key
        self.owner = owner


class StoreFull(RuntimeError):
    """The disk has no room for the store to grow; nothing was written."""


class Writer:
    def __init__(self, path: str | os.PathLike[str], *, map_size: int = 1 << 30, max_map_size: int = 1 << 40):
        self.path = os.fspath(path)
        self.env = open_env(self.path, readonly=False, map_size=map_size)
        self.max_map_size = max_map_size
        with self.env.begin(write=True) as txn:
            # The lookup chain and the 不詳 index (onshi.core.unknown), kept by put_history and bulk_load.
            self.dbs = {name.decode(): self.env.open_db(name, txn=txn) for name in store.names("writer")}

    def open_db(self, name: bytes, **kwargs: Any) -> lmdb._Database:
        """A further named database for a service built on the writer (one of
        store.DATABASES: enrollment's, the claims ledger; a test's own)."""
        db = self.env.open_db(name, **kwargs)
        self.dbs[name.decode()] = db
        return db

    def close(self) -> None:
        self.env.close()

    def apply(self, change: Callable[[WriteTxn], T]) -> T:
        """Run `change` in one write transaction, committed durably before returning.

        The map grows on demand: on MDB_MAP_FULL the transaction is aborted, the map
        doubled and `change` run again from the start (so it must not have effects
        outside the transaction). If the disk itself is full, StoreFull is raised
        and nothing is written.
        """
        while True:
            try:
                with self.env.begin(write=True) as txn:
                    result = change(WriteTxn(txn, self.dbs))
                    try:
                        txn.commit()
                    except lmdb.MapFullError:
                        raise
                    except lmdb.Error as exc:
                        # ENOSPC while writing pages: py-lmdb reports it as a plain
                        # lmdb.Error ("Input/output error"). The meta page was not
                        # written, so LMDB keeps the old state.
                        raise StoreFull(f"commit failed, nothing written: {exc}") from exc
                    return result
            except lmdb.MapFullError:
                self._grow()
            except lmdb.DiskError as exc:  # ENOSPC on commit: LMDB leaves the old state
                raise StoreFull(str(exc)) from exc

    def _grow(self) -> None:
        size = self.env.info()["map_size"]
        if size * 2 > self.max_map_size:
            raise StoreFull(f"store map size would exceed {self.max_map_size} bytes")
        self.env.set_mapsize(size * 2)

    def bulk_load(
        self,
        persons_iter: Iterable[tuple[int, Person, list[Qualification], bytes | None]],
        *,
        spill_rows: int = SPILL_ROWS,
    ) -> int:
        """Load an empty store from persons sorted by link ID, using append mode.

        Random-order inserts collapse past tens of millions of keys; here history
        (and card_of, also keyed by link) is appended in link order and the other
        indexes are sorted then appended. Each index holds at most `spill_rows`
        rows in memory; beyond that sorted runs go to temp files and are merged
        (national scale would not fit in RAM otherwise). A number owned by two
        persons raises NumberConflict while the number index is written.
        Uses the same encoding as `WriteTxn.put_history`.
        """
        with self.env.begin() as txn:
            if txn.stat(self.dbs["history"])["entries"]:
                raise ValueError("bulk_load needs an empty store")
        tmpdir = self.path  # same disk as the store: the runs are about the index's size
        numbers = _SortedRows(spill_rows, tmpdir)
        cards = _SortedRows(spill_rows, tmpdir)
        basic4 = _SortedRows(spill_rows, tmpdir)
        batch: list[tuple[bytes, bytes]] = []
        person_batch: list[tuple[bytes, bytes]] = []
        card_batch: list[tuple[bytes, bytes]] = []
        last = 0
        count = 0

        def flush() -> None:
            self._put_sorted("history", batch)
            self._put_sorted("person", person_batch)
            self._put_sorted("card_of", card_batch)
            batch.clear()
            person_batch.clear()
            card_batch.clear()

        for link_id, person, quals, serial_key in persons_iter:
            if link_id <= last:
                raise ValueError("bulk_load needs persons in increasing link ID order")
            last = link_id
            lk = link_key(link_id)
            person_bytes = person.SerializeToString(deterministic=True)
            birth_day = dates.proto_day(person.birth_date)
            rows = [history.encode_row(q, person_bytes, birth_day) for q in quals]
            value, keys = history.compile_history(birth_day, rows)
            batch.append((lk, value))
            person_batch.append((lk, persons.encode([(persons.MIN_DAY, person_bytes)])))
            for k in keys:
                numbers.add((k, lk))
            row = unknown.basic4_row(link_id, person, persons.MIN_DAY, dates.NEVER)
            if row is not None:
                basic4.add(row)
            if serial_key is not None:
                cards.add((serial_key, lk))
                card_batch.append((lk, serial_key))  # link order is card_of's key order
            count += 1
            if len(batch) >= 50_000:
                flush()
        flush()
        try:
            self._put_sorted("number", _no_conflicts(numbers.sorted()))
            self._put_sorted("card", cards.sorted())
            self._put_sorted("basic4", basic4.sorted())
        finally:
            for rows_ in (numbers, cards, basic4):
                rows_.close()
        self.apply(lambda t: t.reserve_link_ids(last))
        self.env.sync(True)
        return count

    def _put_sorted(self, db: str, items: Iterable[tuple[bytes, bytes]], chunk: int = 200_000) -> None:
        rows = iter(items)
        while part := list(itertools.islice(rows, chunk)):
            self.apply(
                lambda t: t.txn.cursor(db=self.dbs[db]).putmulti(part, dupdata=False, overwrite=True, append=True)
            )


_RUN_ROW = struct.Struct("<HI")  # key length, value length


class _SortedRows:
    """(key, value) rows to append in key order, in bounded memory: every
    `limit` rows are sorted and spilled to a temp file (a sorted run); `sorted()`
    merges the runs with what is still in memory."""

    def __init__(self, limit: int, tmpdir: str):
        self.limit = max(1, limit)
        self.tmpdir = tmpdir
        self.rows: list[tuple[bytes, bytes]] = []
        self.runs: list[IO[bytes]] = []

    def add(self, row: tuple[bytes, bytes]) -> None:
        self.rows.append(row)
        if len(self.rows) >= self.limit:
            self._spill()

    def _spill(self) -> None:
        self.rows.sort()
        run = tempfile.TemporaryFile(dir=self.tmpdir, prefix="bulk-run-")  # noqa: SIM115 - read by sorted(), closed by close()
        pack, write = _RUN_ROW.pack, run.write
        for key, value in self.rows:
            write(pack(len(key), len(value)))
            write(key)
            write(value)
        run.seek(0)
        self.runs.append(run)
        self.rows = []

    @staticmethod
    def _read(run: IO[bytes]) -> Iterator[tuple[bytes, bytes]]:
        read, size, unpack = run.read, _RUN_ROW.size, _RUN_ROW.unpack
        while head := read(size):
            klen, vlen = unpack(head)
            yield read(klen), read(vlen)

    def sorted(self) -> Iterator[tuple[bytes, bytes]]:
        self.rows.sort()
        if not self.runs:
            return iter(self.rows)
        return heapq.merge(*(self._read(run) for run in self.runs), iter(self.rows))

    def close(self) -> None:
        for run in self.runs:
            run.close()
        self.runs = []
        self.rows = []


def _no_conflicts(numbers: Iterable[tuple[bytes, bytes]]) -> Iterator[tuple[bytes, bytes]]:
    """Pass sorted (number key, link key) rows through; a key owned by two links raises."""
    prev_key: bytes | None = None
    prev_owner = b""
    for key, owner in numbers:
        if key == prev_key and owner != prev_owner:
            raise NumberConflict(key, link_id_of(prev_owner))
        prev_key, prev_owner = key, owner
        yield key, owner


class WriteTxn:
    """One write transaction; every method keeps the indexes consistent."""

    def __init__(self, txn: lmdb.Transaction[bytes], dbs: dict[str, lmdb._Database]):
        self.txn = txn
        self.dbs = dbs
        self._cursors: dict[str, lmdb.Cursor[bytes]] = {}

    # -- link IDs ---------------------------------------------------------
    def new_link_id(self) -> int:
        raw = self.txn.get(store.NEXT_LINK_ID, db=self.dbs["meta"])
        link_id = link_id_of(raw) if raw else 1
        self.txn.put(store.NEXT_LINK_ID, link_key(link_id + 1), db=self.dbs["meta"])
        return link_id

    def reserve_link_ids(self, highest: int) -> None:
        raw = self.txn.get(store.NEXT_LINK_ID, db=self.dbs["meta"])
        current = link_id_of(raw) if raw else 1
        if highest + 1 > current:
            self.txn.put(store.NEXT_LINK_ID, link_key(highest + 1), db=self.dbs["meta"])

    # -- reads ------------------------------------------------------------
    def history(self, link_id: int) -> list[tuple[Person, Qualification]]:
        """Each qualification with its own person (as its first view shows it)."""
        value = self.txn.get(link_key(link_id), db=self.dbs["history"])
        return history.qualifications(value) if value else []

    def history_rows(self, link_id: int) -> tuple[int | None, list[Row]]:
        """(birth day, encoded rows) of a person's history, nothing decoded: for
        put_rows, which re-encodes only what changed."""
        value = self.txn.get(link_key(link_id), db=self.dbs["history"])
        return history.decode_rows(value) if value else (None, [])

    def persons(self, link_id: int) -> Timeline:
        return persons.decode(self.txn.get(link_key(link_id), db=self.dbs["person"]))

    def link_of_number(self, key: bytes) -> int | None:
        raw = self.txn.get(key, db=self.dbs["number"])
        return link_id_of(raw) if raw else None

    def link_of_card(self, serial_key: bytes) -> int | None:
        raw = self.txn.get(serial_key, db=self.dbs["card"])
        return link_id_of(raw) if raw else None

    def card_of_link(self, link_id: int) -> bytes | None:
        return self.txn.get(link_key(link_id), db=self.dbs["card_of"])

    # -- writes -----------------------------------------------------------
    def put_history(self, link_id: int, person: Person, quals: list[Qualification]) -> None:
        """Replace a person's whole history: every qualification shows `person`,
        whose details have always been these (a test, a tool; the ingest keeps
        each qualification's own person through put_rows and put_persons)."""
        person_bytes = person.SerializeToString(deterministic=True)
        rows = history.rows_of(person, quals)
        self.put_rows(link_id, dates.proto_day(person.birth_date), rows)
        self.put_persons(link_id, persons.add([], persons.MIN_DAY, person_bytes) if quals else [])

    def put_rows(
        self,
        link_id: int,
        birth_day: int,
        rows: list[Row],
        *,
        old_keys: set[bytes] | None = None,
        unowned: bytes | None = None,
    ) -> None:
        """Replace a person's qualifications, re-indexing their numbers.

        `old_keys`: the number keys of the stored rows, when the caller has just
        read them (the ingest does): saves reading the record again.
        `unowned`: a number key the caller has just found owned by no other
        person in this transaction (the ingest's acquisition): not looked up again.
        """
        lk = link_key(link_id)
        if old_keys is None:
            raw = self.txn.get(lk, db=self.dbs["history"])
            old_keys = {r.number_key for r in history.decode_rows(raw)[1]} if raw else set()
        if not rows:
            self.txn.delete(lk, db=self.dbs["history"])
            new_keys: set[bytes] = set()
        else:
            value, keys = history.compile_history(birth_day, rows)
            new_keys = set(keys)
            for key in new_keys - old_keys:
                if key == unowned:
                    continue
                owner = self.link_of_number(key)
                if owner is not None and owner != link_id:
                    raise NumberConflict(key, owner)
            self.txn.put(lk, value, db=self.dbs["history"])
        for key in old_keys - new_keys:
            self.txn.delete(key, db=self.dbs["number"])
        for key in new_keys - old_keys:
            self.txn.put(key, lk, db=self.dbs["number"])

    def put_persons(self, link_id: int, timeline: Timeline, old: Timeline | None = None) -> None:
        """Replace a person's basic information over time, keeping the 不詳 index
        (unknown.basic4_rows) in step. `old`: the stored timeline, if just read."""
        lk = link_key(link_id)
        if old is None:
            old = self.persons(link_id)
        if old == timeline:
            return
        old_rows = dict(unknown.basic4_rows(link_id, old))
        new_rows = dict(unknown.basic4_rows(link_id, timeline))
        for key in old_rows.keys() - new_rows.keys():
            self.txn.delete(key, db=self.dbs["basic4"])
        for key, value in new_rows.items():
            if old_rows.get(key) != value:
                self.txn.put(key, value, db=self.dbs["basic4"])
        if timeline:
            self.txn.put(lk, persons.encode(timeline), db=self.dbs["person"])
        else:
            self.txn.delete(lk, db=self.dbs["person"])

    def link_card(self, serial_key: bytes, link_id: int) -> bytes | None:
        """Link a card serial to a person; a re-issued card replaces the old serial,
        which then answers NO_RECORD. Returns the replaced serial, if any."""
        if len(serial_key) != identifiers.SERIAL_KEY_LEN:
            raise ValueError("serial key must be 20 bytes")
        lk = link_key(link_id)
        owner = self.txn.get(serial_key, db=self.dbs["card"])
        if owner is not None and owner != lk:
            raise ValueError("card serial already linked to another person")
        old = self.txn.get(lk, db=self.dbs["card_of"])
        if old is not None and old != serial_key:
            self.txn.delete(old, db=self.dbs["card"])
            self.txn.put(lk + old, b"", db=self.dbs["card_former"])
        self.txn.put(serial_key, lk, db=self.dbs["card"])
        self.txn.put(lk, serial_key, db=self.dbs["card_of"])
        return old if old != serial_key else None

    # -- databases of services built on the writer (opened with Writer.open_db) --
    def get(self, db: str, key: bytes) -> bytes | None:
        return self.txn.get(key, db=self.dbs[db])

    def put(self, db: str, key: bytes, value: bytes) -> None:
        self.txn.put(key, value, db=self.dbs[db])

    def delete(self, db: str, key: bytes) -> bool:
        return self.txn.delete(key, db=self.dbs[db])

    def first(self, db: str, prefix: bytes) -> tuple[bytes, bytes] | None:
        """The first item whose key starts with `prefix`, or None (one cursor per
        database per transaction, reused: the ingest asks this for every update)."""
        cursor = self._cursors.get(db)
        if cursor is None:
            cursor = self._cursors[db] = self.txn.cursor(db=self.dbs[db])
        if cursor.set_range(prefix):
            key = cursor.key()
            if key.startswith(prefix):
                return key, cursor.value()
        return None

    def scan(self, db: str, prefix: bytes = b"", start: bytes = b"") -> Iterator[tuple[bytes, bytes]]:
        """Items whose key starts with `prefix`, from `start` (inclusive) on, in key order."""
        cursor = self.txn.cursor(db=self.dbs[db])
        if not cursor.set_range(max(prefix, start)):
            return
        for key, value in cursor:
            if not key.startswith(prefix):
                return
            yield key, value

    def next_sequence(self, counter: bytes) -> int:
        """A durable counter in `meta` (quarantine IDs, notice IDs...): 1, 2, 3..."""
        key = b"seq:" + counter
        raw = self.txn.get(key, db=self.dbs["meta"])
        value = store.seq_of(raw) + 1 if raw else 1
        self.txn.put(key, store.seq_key(value), db=self.dbs["meta"])
        return value
