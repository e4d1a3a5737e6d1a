"""The LMDB environment: one file set, and every named database in it.

`DATABASES` below is the one table of them: each database's name, the module
that keeps it (and opens it with its siblings: `names(keeper)`) and what it
holds. tests/test_store.py demands that a store every service has written holds
exactly these. Readers (engines) open the environment read-only after fork;
writer.py is the only code that writes the lookup chain.

Two encodings recur in keys: a link key is a link ID as 8 bytes big-endian
(`link_key`/`link_id_of`), so LMDB's byte order is the numeric one; a sequence
key (`seq_key`/`seq_of`: quarantine, notice and ledger batch numbers) is the same.
"""

from __future__ import annotations

import os
from typing import NamedTuple

import lmdb


class Database(NamedTuple):
    name: bytes
    keeper: str  # the module that writes it: writer, enrollment or claims
    holds: str  # key -> value


DATABASES: tuple[Database, ...] = (
    # The lookup chain, opened by every Writer; engines read card, number and history.
    Database(b"card", "writer", "card serial key (20 bytes) -> link key"),
    Database(b"card_of", "writer", "link key -> card serial key (reverse, for re-issue)"),
    Database(
        b"card_former",
        "writer",
        "link key + card serial key -> b'' (serials a re-issued card "
        "replaced: the access log names a person by every card they presented)",
    ),
    Database(b"number", "writer", "number key (identifiers.number_key) -> link key"),
    Database(b"history", "writer", "link key -> history record (onshi.core.history)"),
    Database(b"person", "writer", "link key -> the person's basic information over time (onshi.core.persons)"),
    Database(
        b"basic4",
        "writer",
        "birth day, sex, kana, link key, first day -> end day, address (the 不詳 index, onshi.core.unknown)",
    ),
    Database(
        b"meta",
        "writer",
        "b'next_link_id' -> link key of the next link ID; "
        "b'seq:' + counter -> seq key of its last value (writer.next_sequence); "
        "b'claim_ledger_seq' -> seq key of the last ledger batch",
    ),
    # Insurers' updates (onshi.core.enrollment.open_dbs); keys use \x1f between parts.
    Database(b"registry", "enrollment", "resident ID -> Resident (onshi.core.registry)"),
    Database(b"resident_link", "enrollment", "resident ID -> link key (one link ID per resident)"),
    Database(b"applied", "enrollment", "insurer \\x1f update_id -> EnrollmentAck of the first outcome"),
    Database(b"quarantine", "enrollment", "quarantine ID (seq key) -> QuarantinedUpdate (kept after resolution)"),
    Database(b"quarantine_open", "enrollment", "insurer \\x1f quarantine ID -> resident ID (open entries)"),
    Database(
        b"quarantine_held", "enrollment", "insurer \\x1f resident ID \\x1f quarantine ID -> b'' (order per resident)"
    ),
    Database(b"quarantine_done", "enrollment", "quarantine ID -> EnrollmentAck of the resolution"),
    Database(b"notice", "enrollment", "notice ID (seq key) -> InsurerNotice"),
    Database(b"notice_open", "enrollment", "insurer \\x1f notice ID -> b''"),
    Database(b"link_notice", "enrollment", "resident ID \\x1f link notice ID -> LinkNotice"),
    # Claims (the writer process's ClaimService).
    Database(
        b"claim_ledger",
        "claims",
        "facility \\x1f month (u32 BE) + batch seq key -> the batch's "
        "ledger entries of that facility-month (onshi.core.claims)",
    ),
)
BY_NAME = {d.name: d for d in DATABASES}


def names(keeper: str) -> tuple[bytes, ...]:
    """The databases a module keeps, opened together."""
    found = tuple(d.name for d in DATABASES if d.keeper == keeper)
    if not found:
        raise KeyError(f"no database is kept by {keeper!r}")
    return found


NEXT_LINK_ID = b"next_link_id"  # in meta
MAX_DBS = 32  # room for every database above
MAX_READERS = 1024  # threads x worker processes
DATA_FILE = "data.mdb"


def link_key(link_id: int) -> bytes:
    return link_id.to_bytes(8, "big")


def link_id_of(key: bytes) -> int:
    return int.from_bytes(key, "big")


def seq_key(n: int) -> bytes:
    return n.to_bytes(8, "big")


def seq_of(key: bytes) -> int:
    return int.from_bytes(key, "big")


def open_env(path: str | os.PathLike[str], *, readonly: bool, map_size: int = 1 << 30) -> lmdb.Environment:
    path = os.fspath(path)
    if not readonly:
        os.makedirs(path, exist_ok=True)
    elif not os.path.exists(os.path.join(path, DATA_FILE)):
        raise FileNotFoundError(f"no onshi store at {path} (run `onshi gen` or ingest first)")
    return lmdb.open(
        path,
        readonly=readonly,
        map_size=map_size if not readonly else 0,
        max_dbs=MAX_DBS,
        max_readers=MAX_READERS,
        subdir=True,
        readahead=False,  # random lookups: readahead only evicts useful pages
    )
