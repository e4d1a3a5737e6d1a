"""The writer's record byte work (onshi.core.history): the fast path against the
obvious one, and the native twins (onshi.ext._record) against the pure ones.

compile_history (rows kept encoded, each view's person field spliced in) must
give the same bytes as compile_history_reference (each view a copy with its
person set, serialized whole), read the same messages as qualifications_reference;
a row rebuilt from its views (history.dated) encodes to the same views, on either
implementation; a corrupt record raises ValueError on both, never crashes.
"""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onshi.core import dates, enrollment, history, identifiers, registry, twins
from onshi.core.writer import Writer, WriteTxn
from onshi.v1 import qualification_pb2 as Q
from tests import ingest_support as s
from tests.builders import KYOKAI, LATE, NHI, PAYER, UNION
from tests.conftest import require_native

native_codec = twins.load("_record", "native") if twins.built("_record") else None

text = st.text(alphabet=st.sampled_from("0123456789ABｱｲ０１ 太郎𠮷\U000e0100-"), max_size=12)
days = st.dates(min_value=dt.date(1900, 1, 1), max_value=dt.date(2100, 12, 31))


@st.composite
def persons(draw) -> Q.Person:
    return Q.Person(
        name=draw(text),
        name_kana=draw(text),
        sex=draw(st.sampled_from([0, 1, 2])),
        birth_date=dates.to_proto(draw(days)),
        address=draw(text),
        postcode=draw(text),
    )


def _period(draw, start: dt.date, cert) -> None:
    first = start + dt.timedelta(days=draw(st.integers(-400, 4000)))
    cert.valid_from.CopyFrom(dates.to_proto(first))
    if draw(st.booleans()):
        cert.valid_until.CopyFrom(dates.to_proto(first + dt.timedelta(days=draw(st.integers(0, 800)))))


@st.composite
def qualifications(draw) -> Q.Qualification:
    insurer = draw(st.sampled_from([KYOKAI, UNION, NHI, LATE, "０" + KYOKAI[1:]]))
    acquired = draw(days)
    q = Q.Qualification(
        insurer_number=insurer,
        insurer_name=draw(text),
        symbol=draw(st.sampled_from(["", "K1", "記号 1"])),
        number=draw(st.sampled_from(["1", "N-2", "１２３", "9" * 20])),
        branch=draw(st.sampled_from(["00", "1", "０２"])),
        relationship=draw(st.sampled_from([0, 1, 2])),
        acquisition_date=dates.to_proto(acquired),
        burden_ratio_percent=draw(st.sampled_from([0, 10, 20, 30, 100])),
        preschool=draw(st.booleans()),
        card_kind=draw(st.sampled_from([0, 1, 2])),
    )
    if draw(st.booleans()):
        q.loss_date.CopyFrom(dates.to_proto(acquired + dt.timedelta(days=draw(st.integers(1, 20000)))))
        q.loss_reason = draw(st.sampled_from([0, 1, 2, 3, 4]))
    if draw(st.booleans()):
        q.elderly_recipient.burden_ratio_percent = draw(st.sampled_from([10, 20, 30]))
        _period(draw, acquired, q.elderly_recipient)
    if draw(st.booleans()):
        q.limit_amount.category = draw(st.sampled_from(["ア", "区分Ⅱ"]))
        _period(draw, acquired, q.limit_amount)
    for _ in range(draw(st.integers(0, 2))):
        _period(
            draw, acquired, q.specific_diseases.add(disease=draw(st.sampled_from([1, 2, 3])), monthly_cap_yen=10000)
        )
    for _ in range(draw(st.integers(0, 2))):
        sub = q.subsidies.add(
            payer_number=PAYER,
            recipient_number=draw(text),
            burden_ratio_percent=draw(st.integers(0, 30)),
            monthly_cap_yen=draw(st.integers(0, 10**9)),
        )
        if draw(st.booleans()):
            _period(draw, acquired, sub)
    if draw(st.booleans()):  # callers may hand qualifications still carrying a person
        q.person.CopyFrom(draw(persons()))
    return q


@st.composite
def histories(draw):
    """(birth day, [(own person, qualification)]): each qualification with the
    person its insurer registered."""
    quals = draw(st.lists(qualifications(), min_size=1, max_size=6))
    shared = draw(persons())
    owners = [shared if draw(st.booleans()) else draw(persons()) for _ in quals]
    return dates.to_day(draw(days)), list(zip(owners, quals, strict=True))


def _valid(pairs) -> bool:
    """Numbers that parse, and no number held twice over the same days (the
    writer refuses that)."""
    try:
        held = [
            (
                history.qualification_number_key(q),
                q.acquisition_date.SerializeToString(),
                q.loss_date.SerializeToString(),
            )
            for _, q in pairs
        ]
    except identifiers.InvalidIdentifier:
        return False
    return len(set(held)) == len(held)


def _record(birth, pairs):
    rows = [history.encode_row(q, p.SerializeToString(deterministic=True), birth) for p, q in pairs]
    return history.compile_history(birth, rows)


def _reference(birth, pairs):
    return history.compile_history_reference([p for p, _ in pairs], [q for _, q in pairs], birth)


@settings(max_examples=300, deadline=None)
@given(histories())
def test_compile_and_decode_match_the_reference(h):
    birth, pairs = h
    if not _valid(pairs):
        return
    value, keys = _record(birth, pairs)
    assert (value, keys) == _reference(birth, pairs)
    assert history.qualifications(value) == history.qualifications_reference(value)
    stored_birth, rows = history.decode_rows(value)
    assert stored_birth == birth
    assert sorted(r.person for r in rows) == sorted(p.SerializeToString(deterministic=True) for p, _ in pairs)
    assert sorted(r.number_key for r in rows) == sorted(keys)


@settings(max_examples=200, deadline=None)
@given(histories(), st.data())
def test_rows_rebuilt_from_their_views_encode_to_the_same_record(h, data):
    """A stored row's dated account, rebuilt from its views (what the writer
    changes and encodes again), gives back the same views: kept and re-encoded
    rows mix into the same bytes as encoding everything afresh."""
    birth, pairs = h
    if not _valid(pairs):
        return
    value, _ = _record(birth, pairs)
    _, rows = history.decode_rows(value)
    keep = data.draw(st.lists(st.booleans(), min_size=len(rows), max_size=len(rows)))
    mixed = [
        r if k else history.encode_row(history.dated(r), r.person, birth, r.number_key)
        for r, k in zip(rows, keep, strict=True)
    ]
    assert mixed == rows
    assert history.compile_history(birth, mixed)[0] == value


@settings(max_examples=150, deadline=None)
@given(h=histories())
def test_byte_twins_agree(impl, h):
    split_record, number_fields, join_record, _ = history.codec(impl)
    birth, pairs = h
    if not _valid(pairs):
        return
    value, _ = _reference(birth, pairs)
    expected = history.split_record_pure(value)
    assert split_record(value) == expected
    for *_, body in expected[1]:
        assert number_fields(body) == history.number_fields_pure(body)
        q = Q.Qualification.FromString(body)
        assert number_fields(body) == (q.insurer_number, q.symbol, q.number, q.branch)
    entries = [(*e[:5], history.person_field(e[5]), e[6]) for e in expected[1]]
    assert join_record(birth, entries) == value == history.join_record_pure(birth, entries)


@settings(max_examples=300, deadline=None)
@given(h=histories(), cut=st.integers(0, 400), flip=st.tuples(st.integers(0, 400), st.integers(0, 255)))
def test_corrupt_records_raise_value_error(impl, h, cut, flip):
    split_record, number_fields, _, _ = history.codec(impl)
    birth, pairs = h
    if not _valid(pairs):
        return
    value, _ = _reference(birth, pairs)
    broken = [value[: cut % max(len(value), 1)]]
    mutated = bytearray(value)
    mutated[flip[0] % len(value)] = flip[1]
    broken.append(bytes(mutated))
    for record in broken:
        assert _outcome(split_record, record) == _outcome(history.split_record_pure, record)
        try:
            _, entries = split_record(record)
        except ValueError:
            continue
        for *_, body in entries:  # what split cleanly may still be garbage
            assert _outcome(number_fields, body) == _outcome(history.number_fields_pure, body)


def _varint(n: int) -> bytes:
    return history.varint(n)


@pytest.mark.parametrize(
    "body",
    [
        b"\x12\x01a\x08" + b"\xff" * 10 + b"\x01",  # an 11-byte varint: corrupt
        b"\x12\x01a\x08" + b"\xff" * 9 + b"\x01",  # 10 bytes: the longest allowed
        _varint(((1 << 32) + 2) << 3 | 2) + b"\x01z",  # field 2**32+2 is not field 2
        b"\x12\x05ab",  # runs past the end
        b"\x12\x02\xff\xfe",  # not UTF-8
        b"\x0b",  # wire type 3
    ],
)
def test_number_fields_edge_cases_agree(impl, body):
    _, number_fields, _, _ = history.codec(impl)
    assert _outcome(number_fields, body) == _outcome(history.number_fields_pure, body)


def _outcome(fn, arg):
    try:
        return fn(arg)
    except ValueError:  # UnicodeDecodeError included
        return "ValueError"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=80))
def test_native_number_hash_is_the_engines_fnv(key):
    require_native("_record")
    assert native_codec.number_hash(key) == identifiers.number_hash(key)


def test_native_twins_are_used_when_built():
    require_native("_record")
    if twins.kind() == twins.PURE:
        pytest.skip("ONSHI_ENGINE=pure")
    assert history.split_record is native_codec.split_record
    assert history.join_record is native_codec.join_record


def test_a_scripted_stream_leaves_canonical_records_that_match_the_model(impl, tmp_path, monkeypatch):
    """Many updates per person through the writer's kept-rows path (either twin):
    every stored record is exactly what encoding its content afresh gives (no
    stale kept row), and holds what a model applying each update once holds."""
    split_record, number_fields, join_record, number_hash = history.codec(impl)
    monkeypatch.setattr(history, "split_record", split_record)
    monkeypatch.setattr(history, "number_fields", number_fields)
    monkeypatch.setattr(history, "join_record", join_record)
    monkeypatch.setattr(history, "number_hash", number_hash)
    writer = Writer(tmp_path / "store")
    enrollment.open_dbs(writer)
    residents = [s.resident(i) for i in range(40)]
    writer.apply(lambda t: [registry.put(t, r) for r in residents])
    updates = s.script(len(residents), 600, seed=3)
    model = s.Model()
    for i in range(0, len(updates), 50):
        part = [enrollment.check_update(u, frozenset(s.INSURERS)) for u in updates[i : i + 50]]
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
            birth, rows = history.decode_rows(value)
            fresh = [history.encode_row(history.dated(r), r.person, birth) for r in rows]
            assert history.compile_history(birth, fresh)[0] == value
            # the number keys the writer remembers per body are the bodies' own
            for row in rows:
                assert row.number_key == identifiers.number_key(*history.number_fields_pure(row.views[0].body))
    writer.close()
