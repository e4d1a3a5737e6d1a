"""The LMDB environment: one file set, named databases for the lookup chain.

    card     card serial key (20 bytes)  -> link key
    card_of  link key                    -> card serial key (reverse, for re-issue)
    card_former  link key + card serial key -> b"" (serials a re-issued card replaced:
             the access log names a person by the cards they presented)
    number   number key                  -> link key
    history  link key (8 bytes, big-endian link ID) -> history record (history.py)
    person   link key -> the person's basic information over time (persons.py)
    meta     b"next_link_id"             -> 8-byte big-endian counter

Readers (engines) open it read-only after fork; the writer module is the only
code that writes it.
"""

from __future__ import annotations

import os

import lmdb

DB_NAMES = (b"card", b"card_of", b"card_former", b"number", b"history", b"person", b"meta")
MAX_DBS = 32  # room for the ingest, claims and audit databases
MAX_READERS = 1024  # threads x worker processes
DATA_FILE = "data.mdb"


def link_key(link_id: int) -> bytes:
    return link_id.to_bytes(8, "big")


def link_id_of(key: bytes) -> int:
    return int.from_bytes(key, "big")


def open_env(path: str | os.PathLike, *, readonly: bool, map_size: int = 1 << 30) -> lmdb.Environment:
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
