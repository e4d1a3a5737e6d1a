"""The writer's record byte work (onshi.core.history): the fast path against the
obvious one, and the native twins (onshi.ext._apply) against the pure ones.

compile_history (rows kept encoded, person field spliced in) must give the same
bytes as compile_history_reference (copy, set the person, serialize), decode the
same messages as decode_reference, with or without kept rows, on either
implementation; a corrupt record raises ValueError on both, never crashes.
"""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onshi.core import dates, enrollment, history, identifiers, registry
from onshi.core.writer import Writer, WriteTxn
from onshi.v1 import qualification_pb2 as Q

from tests import ingest_support as s
from tests.builders import KYOKAI, LATE, NHI, PAYER, UNION

try:
    from onshi.ext import _apply
except ImportError:  # pragma: no cover - CI builds it; the pure path is still tested below
    _apply = None

IMPLS = [pytest.param((history.split_record_pure, history.number_fields_pure, history.join_record_pure), id="pure")]
if _apply is not None:
    IMPLS.append(pytest.param((_apply.split_record, _apply.number_fields, _apply.join_record), id="native"))

text = st.text(alphabet=st.sampled_from("0123456789ABｱｲ０１ 太郎𠮷\U000e0100-"), max_size=12)
days = st.dates(min_value=dt.date(1900, 1, 1), max_value=dt.date(2100, 12, 31))


@st.composite
def persons(draw) -> Q.Person:
    return Q.Person(name=draw(text), name_kana=draw(text), sex=draw(st.sampled_from([0, 1, 2])),
                    birth_date=dates.to_proto(draw(days)), address=draw(text), postcode=draw(text))


@st.composite
def qualifications(draw) -> Q.Qualification:
    insurer = draw(st.sampled_from([KYOKAI, UNION, NHI, LATE, "０" + KYOKAI[1:]]))
    acquired = draw(days)
    q = Q.Qualification(
        insurer_number=insurer, insurer_name=draw(text), symbol=draw(st.sampled_from(["", "K1", "記号 1"])),
        number=draw(st.sampled_from(["1", "N-2", "１２３", "9" * 20])), branch=draw(st.sampled_from(["00", "1", "０２"])),
        relationship=draw(st.sampled_from([0, 1, 2])), acquisition_date=dates.to_proto(acquired),
        burden_ratio_percent=draw(st.sampled_from([0, 10, 20, 30, 100])), preschool=draw(st.booleans()),
        card_kind=draw(st.sampled_from([0, 1, 2])))
    if draw(st.booleans()):
        q.loss_date.CopyFrom(dates.to_proto(acquired + dt.timedelta(days=draw(st.integers(1, 20000)))))
        q.loss_reason = draw(st.sampled_from([0, 1, 2, 3, 4]))
    if draw(st.booleans()):
        q.elderly_recipient.burden_ratio_percent = 20
        q.elderly_recipient.valid_from.CopyFrom(dates.to_proto(acquired))
    for _ in range(draw(st.integers(0, 2))):
        q.subsidies.add(payer_number=PAYER, recipient_number=draw(text), burden_ratio_percent=draw(st.integers(0, 30)),
                        monthly_cap_yen=draw(st.integers(0, 10**9)))
    if draw(st.booleans()):  # callers may hand qualifications still carrying a person
        q.person.CopyFrom(draw(persons()))
    return q


histories = st.tuples(persons(), st.lists(qualifications(), min_size=1, max_size=6))


def _valid(quals) -> bool:
    try:
        for q in quals:
            history.qualification_number_key(q)
    except identifiers.InvalidIdentifier:
        return False
    return True


@settings(max_examples=300, deadline=None)
@given(histories)
def test_compile_and_decode_match_the_reference(h):
    person, quals = h
    if not _valid(quals):
        return
    value, keys = history.compile_history(person, quals)
    assert (value, keys) == history.compile_history_reference(person, quals)
    assert history.decode(value) == history.decode_reference(value)
    stored_person, rows = history.decode_rows(value)
    assert stored_person == person.SerializeToString(deterministic=True)
    assert sorted(r.number_key for r in rows) == sorted(keys)


@settings(max_examples=200, deadline=None)
@given(histories, st.data())
def test_kept_rows_reencode_to_the_same_record(h, data):
    """Rows carried over from the stored record, others re-encoded, a new person:
    the same bytes as encoding everything afresh."""
    person, quals = h
    if not _valid(quals):
        return
    value, _ = history.compile_history(person, quals)
    _, rows = history.decode_rows(value)
    decoded = [history.qualification(r) for r in rows]
    new_person = data.draw(persons())
    keep = data.draw(st.lists(st.booleans(), min_size=len(rows), max_size=len(rows)))
    kept = [r if k else None for r, k in zip(rows, keep)]
    given_quals = [None if k else q for q, k in zip(decoded, keep)]
    assert history.compile_history(new_person, given_quals, kept) == history.compile_history_reference(new_person,
                                                                                                     decoded)


@pytest.mark.parametrize("impl", IMPLS)
@settings(max_examples=150, deadline=None)
@given(h=histories)
def test_byte_twins_agree(impl, h):
    split_record, number_fields, join_record = impl
    person, quals = h
    if not _valid(quals):
        return
    value, _ = history.compile_history_reference(person, quals)
    expected = history.split_record_pure(value)
    assert split_record(value) == expected
    for _, _, _, body in expected[1]:
        assert number_fields(body) == history.number_fields_pure(body)
        q = Q.Qualification.FromString(body)
        assert number_fields(body) == (q.insurer_number, q.symbol, q.number, q.branch)
    birth = history.HEADER.unpack_from(value, 0)[2]
    person_field = history.PERSON_TAG + history.varint(len(expected[0])) + expected[0]
    assert join_record(birth, person_field, expected[1]) == value == history.join_record_pure(birth, person_field,
                                                                                              expected[1])


@pytest.mark.parametrize("impl", IMPLS)
@settings(max_examples=300, deadline=None)
@given(h=histories, cut=st.integers(0, 400), flip=st.tuples(st.integers(0, 400), st.integers(0, 255)))
def test_corrupt_records_raise_value_error(impl, h, cut, flip):
    split_record, number_fields, _ = impl
    person, quals = h
    if not _valid(quals):
        return
    value, _ = history.compile_history_reference(person, quals)
    broken = [value[:cut % max(len(value), 1)]]
    mutated = bytearray(value)
    mutated[flip[0] % len(value)] = flip[1]
    broken.append(bytes(mutated))
    for record in broken:
        assert _outcome(split_record, record) == _outcome(history.split_record_pure, record)
        try:
            _, entries = split_record(record)
        except ValueError:
            continue
        for _, _, _, body in entries:  # what split cleanly may still be garbage
            assert _outcome(number_fields, body) == _outcome(history.number_fields_pure, body)


def _varint(n: int) -> bytes:
    return history.varint(n)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("body", [
    b"\x12\x01a\x08" + b"\xff" * 10 + b"\x01",        # an 11-byte varint: corrupt
    b"\x12\x01a\x08" + b"\xff" * 9 + b"\x01",         # 10 bytes: the longest allowed
    _varint(((1 << 32) + 2) << 3 | 2) + b"\x01z",       # field 2**32+2 is not field 2
    b"\x12\x05ab",                                     # runs past the end
    b"\x12\x02\xff\xfe",                                # not UTF-8
    b"\x0b",                                           # wire type 3
])
def test_number_fields_edge_cases_agree(impl, body):
    _, number_fields, _ = impl
    assert _outcome(number_fields, body) == _outcome(history.number_fields_pure, body)


def _outcome(fn, arg):
    try:
        return fn(arg)
    except ValueError:  # UnicodeDecodeError included
        return "ValueError"


@pytest.mark.skipif(_apply is None, reason="native module not built")
@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=80))
def test_native_number_hash_is_the_engines_fnv(key):
    assert _apply.number_hash(key) == identifiers.number_hash(key)


def test_native_twins_are_used_when_built():
    if _apply is None:
        pytest.skip("native module not built")
    import os
    if os.environ.get("ONSHI_PURE_APPLY") == "1":
        pytest.skip("pure twins forced")
    assert history.split_record is _apply.split_record
    assert history.join_record is _apply.join_record


@pytest.mark.parametrize("impl", IMPLS)
def test_a_scripted_stream_leaves_canonical_records_that_match_the_model(impl, tmp_path, monkeypatch):
    """Many updates per person through the writer's kept-rows path (either twin):
    every stored record is exactly what encoding its content afresh gives (no
    stale kept row), and holds what a model applying each update once holds."""
    split_record, number_fields, join_record = impl
    monkeypatch.setattr(history, "split_record", split_record)
    monkeypatch.setattr(history, "number_fields", number_fields)
    monkeypatch.setattr(history, "join_record", join_record)
    monkeypatch.setattr(history, "number_hash", identifiers.number_hash if impl[0] is history.split_record_pure
                        else _apply.number_hash)
    writer = Writer(tmp_path / "store")
    enrollment.open_dbs(writer)
    residents = [s.resident(i) for i in range(40)]
    writer.apply(lambda t: [registry.put(t, r) for r in residents])
    updates = s.script(len(residents), 600, seed=3)
    model = s.Model()
    for i in range(0, len(updates), 50):
        part = [enrollment.check_update(u, frozenset(s.INSURERS)) for u in updates[i:i + 50]]
        acks = writer.apply(lambda t, part=part: [enrollment.apply_update(t, c, 0.0) for c in part])
        assert {a.outcome for a in acks} == {enrollment.ACCEPTED}
    for u in updates:
        model.apply(u)
    with writer.env.begin() as txn:
        view = WriteTxn(txn, writer.dbs)
        for r in residents:
            link = enrollment.link_of_resident(view, r.resident_id)
            assert s.store_rows(view, link) == model.rows(r.resident_id)
            value = txn.get(link.to_bytes(8, "big"), db=writer.dbs["history"])
            person, quals = history.decode_reference(value)
            assert history.compile_history_reference(person, quals)[0] == value
            # the number keys the writer remembers per body are the bodies' own
            for row in history.decode_rows(value)[1]:
                assert row.number_key == identifiers.number_key(*history.number_fields_pure(row.body))
    writer.close()
