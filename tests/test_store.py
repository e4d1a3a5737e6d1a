"""The LMDB databases in one table (onshi.core.store.DATABASES): what every
keeper opens is exactly the table, every database name the code reads or
writes is in it, and the link and sequence keys have one encoding."""

from __future__ import annotations

import pathlib
import re

import pytest

from onshi.core import claims, enrollment, store
from onshi.core.writer import Writer

SRC = pathlib.Path(__file__).resolve().parent.parent / "src"

# How code names a database: a py-lmdb open, the writer's handle dict, a
# WriteTxn call, PersonDirectory's opener, the native engine's mdb_dbi_open.
_USES = re.compile(
    r"""open_db\(\s*b"(\w+)"|dbs\["(\w+)"\]|\b(?:wtxn|t|writer)\.(?:get|put|delete|first|scan|_put_sorted)\(\s*"(\w+)"|\bdb\("(\w+)"\)|_open_db\(txn,\s*b"(\w+)\""""
)


def _named_databases(env) -> set[bytes]:
    with env.begin() as txn:
        return {bytes(key) for key, _ in txn.cursor()}


def test_the_keepers_open_exactly_the_tables_databases(tmp_path):
    writer = Writer(tmp_path / "store")
    try:
        enrollment.open_dbs(writer)
        claims.open_ledger(writer)
        assert _named_databases(writer.env) == {d.name for d in store.DATABASES}
    finally:
        writer.close()


def test_every_database_the_code_names_is_in_the_table():
    used: dict[str, set[str]] = {}
    for path in SRC.rglob("*"):
        if path.suffix not in (".py", ".pyx") or "v1" in path.parts:
            continue
        for match in _USES.finditer(path.read_text(encoding="utf-8")):
            name = next(g for g in match.groups() if g)
            used.setdefault(name, set()).add(str(path.relative_to(SRC)))
    assert {"card", "history", "basic4", "registry", "quarantine_held", "meta"} <= used.keys()  # the scan sees them
    unknown = {name: sorted(where) for name, where in used.items() if name.encode() not in store.BY_NAME}
    assert unknown == {}


def test_names_are_by_keeper_and_an_unknown_keeper_fails():
    assert store.names("claims") == (b"claim_ledger",)
    assert b"history" in store.names("writer") and b"registry" in store.names("enrollment")
    with pytest.raises(KeyError):
        store.names("audit")


@pytest.mark.parametrize("n", [0, 1, 255, 256, 2**32, 2**64 - 1])
def test_link_and_sequence_keys_are_8_bytes_big_endian_in_numeric_order(n):
    assert store.link_key(n) == n.to_bytes(8, "big") == store.seq_key(n)
    assert store.link_id_of(store.link_key(n)) == n == store.seq_of(store.seq_key(n))
    if n:
        assert store.link_key(n - 1) < store.link_key(n)  # LMDB's byte order is the numeric one
