"""The replicated commit's byte layout (onshi.cluster.changes): what the writer
publishes is what a read node applies, the chain catches a lost, repeated,
reordered or altered message, and hostile bytes are a ValueError, never a crash."""

from __future__ import annotations

import contextlib
import itertools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from onshi.cluster import changes
from onshi.cluster.changes import GENESIS, ChainBroken, Change
from onshi.core import store

DB_NAMES = [d.name for d in store.DATABASES]

change_st = st.builds(
    Change,
    db=st.sampled_from(DB_NAMES),
    key=st.binary(min_size=1, max_size=64) | st.binary(min_size=changes.MAX_KEY, max_size=changes.MAX_KEY),
    value=st.none() | st.binary(max_size=300),
)
changes_st = st.lists(change_st, max_size=30)


@settings(max_examples=300, deadline=None)
@given(changes_st, st.binary(min_size=32, max_size=32), st.booleans())
def test_round_trip(ops, previous, final):
    data = changes.encode(ops, previous=previous, final=final)
    message = changes.decode(data)
    assert message == changes.Message(previous, final, tuple(ops))
    assert changes.encode(message.changes, previous=previous, final=final) == data  # one encoding per message
    assert len(data) == changes.HEADER_SIZE + sum(c.size() for c in ops)


def test_layout_is_the_documented_one():
    """The bytes of a put and a delete, written out by hand from the module's docstring."""
    data = changes.encode(
        [Change(b"history", b"\x00" * 7 + b"\x05", b"rec"), Change(b"card", b"k", None)], previous=GENESIS
    )
    assert data == (
        b"ONC\x01"
        + b"\x01"
        + bytes(32)
        + b"\x00\x00\x00\x02"
        + b"\x00\x07history\x00\x08"
        + b"\x00" * 7
        + b"\x05"
        + b"\x00\x00\x00\x03rec"
        + b"\x01\x04card\x00\x01k"
    )


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400))
def test_hostile_bytes_are_a_value_error(data):
    try:
        message = changes.decode(data)
    except ValueError:
        return
    assert changes.encode(message.changes, previous=message.previous, final=message.final) == data


@settings(max_examples=300, deadline=None)
@given(changes_st.filter(bool), st.data())
def test_any_altered_byte_is_refused_or_breaks_the_chain(ops, data):
    """One byte changed anywhere: decode refuses it, or it decodes to another
    message, whose digest the next message does not name."""
    first = changes.encode(ops, previous=GENESIS)
    second = changes.encode([], previous=changes.digest(first))
    i = data.draw(st.integers(0, len(first) - 1))
    altered = bytearray(first)
    altered[i] ^= data.draw(st.integers(1, 255))
    with pytest.raises(ValueError):
        changes.verify_chain(GENESIS, [bytes(altered), second])


@given(st.data())
@settings(max_examples=100, deadline=None)
def test_mutated_messages_never_crash(data):
    """Truncations and spliced bytes of a real message: ValueError or a valid message."""
    ops = data.draw(changes_st)
    encoded = changes.encode(ops, previous=GENESIS)
    cut = data.draw(st.integers(0, len(encoded)))
    spliced = encoded[:cut] + data.draw(st.binary(max_size=20)) + encoded[cut + data.draw(st.integers(0, 8)) :]
    for candidate in (encoded[:cut], spliced):
        with contextlib.suppress(ValueError):
            changes.decode(candidate)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "shorter than its header"),
        (b"XXXX" + bytes(37), "not a change message"),
        (b"ONC\x01\x02" + bytes(36), "unknown flags"),
        (b"ONC\x01\x01" + bytes(32) + b"\xff\xff\xff\xff", "cannot fit"),
        (b"ONC\x01\x01" + bytes(32) + b"\x00\x00\x00\x01" + b"\x02\x04card\x00\x01k", "unknown operation"),
        (b"ONC\x01\x01" + bytes(32) + b"\x00\x00\x00\x01" + b"\x01\x05cards\x00\x01k", "unknown database"),
        (b"ONC\x01\x01" + bytes(32) + b"\x00\x00\x00\x01" + b"\x01\x04card\x00\x00", "key of 0 bytes"),
        (b"ONC\x01\x01" + bytes(32) + b"\x00\x00\x00\x01" + b"\x00\x04card\x00\x01k\x00\x00\x01\x00v", "truncated"),
        (b"ONC\x01\x01" + bytes(32) + b"\x00\x00\x00\x01" + b"\x01\x04card\x00\x01k!", "after the last change"),
    ],
)
def test_each_malformation_is_named(data, reason):
    with pytest.raises(ValueError, match=reason):
        changes.decode(data)


def test_encode_refuses_what_lmdb_or_the_store_would():
    for bad in (Change(b"nope", b"k", b""), Change(b"card", b"", b"v"), Change(b"card", b"k" * 512, None)):
        with pytest.raises(ValueError):
            changes.encode([bad], previous=GENESIS)
    with pytest.raises(ValueError, match="previous digest"):
        changes.encode([], previous=b"short")


def test_the_chain_catches_a_lost_repeated_or_reordered_message():
    messages = []
    previous = GENESIS
    for n in range(4):
        data = changes.encode([Change(b"meta", b"n", bytes([n]))], previous=previous)
        messages.append(data)
        previous = changes.digest(data)
    assert changes.verify_chain(GENESIS, messages) == previous
    for broken in (messages[:1] + messages[2:], messages[:2] + messages[1:], [messages[1], messages[0], *messages[2:]]):
        with pytest.raises(ChainBroken):
            changes.verify_chain(GENESIS, broken)
    with pytest.raises(ChainBroken):  # a log that starts somewhere else
        changes.verify_chain(GENESIS, messages[1:])


def person(n, size):
    """A person's changes in a commit: a history record and its index entry."""
    key = store.link_key(n)
    return [Change(b"history", key, bytes(size)), Change(b"card", n.to_bytes(20, "big"), key)]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 400), min_size=1, max_size=25), st.integers(600, 3000))
def test_split_keeps_persons_whole_and_order(sizes, limit):
    ops, starts = [], []
    for n, size in enumerate(sizes):
        starts.append(len(ops))
        ops += person(n, size)
    parts = changes.split(ops, starts, limit)
    assert [c for part in parts for c in part] == ops  # nothing lost, nothing repeated, order kept
    for part in parts:
        assert changes.HEADER_SIZE + sum(c.size() for c in part) <= limit
        assert len(part) % 2 == 0 and all(part[i].db == b"history" for i in range(0, len(part), 2))  # whole persons
    for a, b in itertools.pairwise(parts):
        # greedy: the next part's first person did not fit in this one
        assert changes.HEADER_SIZE + sum(c.size() for c in a) + b[0].size() + b[1].size() > limit
    messages = changes.encode_commit(ops, starts, previous=GENESIS, limit=limit)
    assert all(len(m) <= limit for m in messages)
    decoded = [changes.decode(m) for m in messages]
    assert [m.final for m in decoded] == [False] * (len(parts) - 1) + [True]
    assert [m.changes for m in decoded] == parts
    changes.verify_chain(GENESIS, messages)


def test_a_person_over_the_limit_is_refused_not_halved():
    ops = person(1, 10) + person(2, 5000)
    with pytest.raises(ValueError, match=r"group of changes 2\.\.4"):
        changes.split(ops, [0, 2], 1000)


def test_split_of_an_empty_commit_is_one_empty_message():
    assert changes.split([], [], 100) == [()]
    (only,) = changes.encode_commit([], [], previous=GENESIS, limit=100)
    assert changes.decode(only) == changes.Message(GENESIS, True, ())


def test_split_refuses_starts_outside_the_commit():
    with pytest.raises(ValueError, match="group starts"):
        changes.split(person(1, 1), [3], 1000)
