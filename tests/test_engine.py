"""The engine suite, run against both engines (native and pure), plus
Hypothesis-generated populations where native, pure and the naive model agree."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from onshi.core import engine as facade
from onshi.core import identifiers
from onshi.core.engine import open_engine
from onshi.core.identifiers import InvalidIdentifier, with_check_digit
from onshi.v1 import eligibility_pb2 as epb
from onshi.v1 import qualification_pb2 as qpb
from tests import model
from tests.conftest import native_available
from tests.model import ModelPerson, Qual

D = dt.date
KYOKAI = with_check_digit("0113001")  # 協会けんぽ
KUMIAI = with_check_digit("0613002")  # 健保組合
SEAMEN = with_check_digit("0213001")  # 船員保険
ELDERLY = with_check_digit("3913001")  # 後期高齢者
NHI = with_check_digit("13101")  # municipal 国保, 6 digits
BIRTH = D(1960, 5, 1)


def check_card(engine, serial, day):
    return epb.CheckResponse.FromString(facade.check_card(engine, serial, day))


def check_number(engine, insurer, symbol, number, branch, birth, day):
    return epb.CheckResponse.FromString(facade.check_number(engine, insurer, symbol, number, branch, birth, day))


@pytest.fixture
def population():
    """Hand-built histories covering each rule of DOMAIN.md §3."""
    return [
        # 0: moved from 協会けんぽ to a 組合 on 4/1 (DOMAIN.md §6 example)
        ModelPerson(
            BIRTH,
            [
                Qual(KYOKAI, "12", "345", "00", D(2020, 1, 1), D(2024, 4, 1)),
                Qual(KUMIAI, "A", "9", "00", D(2024, 4, 1)),
            ],
            card="ABC123",
        ),
        # 1: dependent in the same household as 2 (branch 01 vs 00)
        ModelPerson(D(2015, 8, 8), [Qual(KYOKAI, "77", "100", "01", D(2015, 8, 8))], card="ff01"),
        ModelPerson(D(1985, 2, 2), [Qual(KYOKAI, "77", "100", "00", D(2010, 4, 1))], card="ff00"),
        # 3: dual enrollment, seamen + late-elderly
        ModelPerson(
            D(1948, 3, 3),
            [Qual(SEAMEN, "5", "66", "00", D(2010, 1, 1)), Qual(ELDERLY, "", "12345678", "", D(2023, 3, 3))],
            card="DEAD",
        ),
        # 4: lost, nothing newer (death)
        ModelPerson(D(1940, 1, 1), [Qual(NHI, "国", "1-2", "00", D(2000, 1, 1), D(2024, 2, 10))], card="beef"),
        # 5: registered, card linked, qualification starts in the future
        ModelPerson(D(1999, 9, 9), [Qual(KUMIAI, "B", "7", "00", D(2030, 1, 1))], card="c0ffee"),
    ]


@pytest.fixture
def store(tmp_path, population):
    model.store_population(tmp_path / "store", population)
    return tmp_path / "store"


def test_acquisition_day_and_loss_day(store, open_store_engine):
    engine = open_store_engine(store)
    # day before the change: still 協会けんぽ
    r = check_card(engine, "abc123", D(2024, 3, 31))
    assert r.validity == epb.VALIDITY_VALID
    assert [q.insurer_number for q in r.qualifications] == [KYOKAI]
    # loss day of the old one is the acquisition day of the new one
    r = check_card(engine, "ABC123", D(2024, 4, 1))
    assert r.validity == epb.VALIDITY_VALID
    assert [q.insurer_number for q in r.qualifications] == [KUMIAI]
    r = check_number(engine, KYOKAI, "12", "345", "00", BIRTH, D(2024, 3, 31))
    assert r.validity == epb.VALIDITY_VALID


def test_typed_lost_number_does_not_reveal_newer(store, open_store_engine):
    engine = open_store_engine(store)
    r = check_number(engine, KYOKAI, "12", "345", "00", BIRTH, D(2024, 4, 1))
    assert r.validity == epb.VALIDITY_INVALID_NEWER_EXISTS
    assert [q.insurer_number for q in r.qualifications] == [KYOKAI]
    assert r.qualifications[0].loss_date.month == 4
    assert KUMIAI.encode() not in r.SerializeToString()


def test_card_shows_latest_lost(store, open_store_engine):
    engine = open_store_engine(store)
    r = check_card(engine, "BEEF", D(2024, 2, 10))
    assert r.validity == epb.VALIDITY_INVALID
    assert r.qualifications[0].loss_reason == qpb.LOSS_REASON_OTHER_INSURANCE
    assert r.qualifications[0].loss_date.day == 10
    assert check_card(engine, "beef", D(2024, 2, 9)).validity == epb.VALIDITY_VALID
    r = check_number(engine, NHI, "国", "1-2", "00", D(1940, 1, 1), D(2024, 3, 1))
    assert r.validity == epb.VALIDITY_INVALID


def test_dual_enrollment_is_multiple(store, open_store_engine):
    engine = open_store_engine(store)
    r = check_card(engine, "dead", D(2024, 6, 1))
    assert r.validity == epb.VALIDITY_MULTIPLE
    assert sorted(q.insurer_number for q in r.qualifications) == sorted([SEAMEN, ELDERLY])
    # the day before the 75th birthday only the seamen's insurance applies
    assert check_card(engine, "dead", D(2023, 3, 2)).validity == epb.VALIDITY_VALID


def test_no_record(store, open_store_engine):
    engine = open_store_engine(store)
    assert check_card(engine, "1234", D(2024, 1, 1)).validity == epb.VALIDITY_NO_RECORD
    assert check_card(engine, "c0ffee", D(2024, 1, 1)).validity == epb.VALIDITY_NO_RECORD
    assert check_card(engine, "c0ffee", D(2030, 1, 1)).validity == epb.VALIDITY_VALID
    r = check_number(engine, KYOKAI, "12", "999", "00", BIRTH, D(2024, 1, 1))
    assert r.validity == epb.VALIDITY_NO_RECORD and not r.qualifications


def test_birth_date_mismatch_is_no_record(store, open_store_engine):
    engine = open_store_engine(store)
    r = check_number(engine, KYOKAI, "12", "345", "00", D(1960, 5, 2), D(2024, 1, 1))
    assert r.validity == epb.VALIDITY_NO_RECORD
    assert not r.qualifications


def test_branch_00_vs_01(store, open_store_engine):
    engine = open_store_engine(store)
    child = check_number(engine, KYOKAI, "77", "100", "01", D(2015, 8, 8), D(2024, 1, 1))
    parent = check_number(engine, KYOKAI, "77", "100", "00", D(1985, 2, 2), D(2024, 1, 1))
    assert child.validity == parent.validity == epb.VALIDITY_VALID
    assert child.qualifications[0].branch == "01" and parent.qualifications[0].branch == "00"
    # "1" typed for "01" is the same branch; the child's branch with the parent's birth is no record
    assert check_number(engine, KYOKAI, "77", "100", "1", D(2015, 8, 8), D(2024, 1, 1)).validity == 1
    assert check_number(engine, KYOKAI, "77", "100", "01", D(1985, 2, 2), D(2024, 1, 1)).validity == 4


def test_late_elderly_number_ignores_symbol_and_branch(store, open_store_engine):
    engine = open_store_engine(store)
    for symbol, branch in (("", ""), ("x", "03"), ("", "00")):
        r = check_number(engine, ELDERLY, symbol, "12345678", branch, D(1948, 3, 3), D(2024, 1, 1))
        assert r.validity == epb.VALIDITY_VALID
        assert r.qualifications[0].insurer_number == ELDERLY


def test_full_width_input_meets_the_same_key(store, open_store_engine):
    engine = open_store_engine(store)
    wide = KYOKAI.translate(str.maketrans("0123456789", "０１２３４５６７８９"))
    r = check_number(engine, wide, "１２", " ３４５", "００", BIRTH, D(2024, 1, 1))
    assert r.validity == epb.VALIDITY_VALID


def test_non_jis_name_is_byte_exact(tmp_path, open_store_engine):
    from onshi.core import dates
    from onshi.core.writer import Writer

    name = "𠮷田 髙﨑 葛\U000e0100"  # non-JIS X 0208 characters and an IVS
    writer = Writer(tmp_path / "s")
    person = qpb.Person(name=name, name_kana="ヨシダ", birth_date=dates.to_proto(BIRTH))
    q = qpb.Qualification(
        insurer_number=KYOKAI, symbol="1", number="2", branch="00", acquisition_date=dates.to_proto(D(2020, 1, 1))
    )

    def change(txn):
        link = txn.new_link_id()
        txn.put_history(link, person, [q])
        txn.link_card(identifiers.card_serial_key("0a"), link)

    writer.apply(change)
    writer.close()
    r = check_card(open_store_engine(tmp_path / "s"), "A", D(2024, 1, 1))
    assert r.qualifications[0].person.name == name
    assert "●" not in r.qualifications[0].person.name


def test_batches_equal_single_calls(store, open_store_engine):
    engine = open_store_engine(store)
    from onshi.core import dates

    serials = ["abc123", "ff01", "dead", "beef", "1234", "c0ffee", "ff00", "abc123"]
    keys = [identifiers.card_serial_key(s) for s in serials]
    as_of = dates.to_day(D(2024, 4, 1))
    assert engine.check_by_card_batch(keys, as_of) == [engine.check_by_card(k, as_of) for k in keys]
    queries = [
        (identifiers.number_key(KYOKAI, "12", "345", "00"), dates.to_day(BIRTH)),
        (identifiers.number_key(ELDERLY, "", "12345678", ""), dates.to_day(D(1948, 3, 3))),
        (identifiers.number_key(KYOKAI, "12", "000", "00"), dates.to_day(BIRTH)),
    ]
    assert engine.check_by_number_batch(queries, as_of) == [engine.check_by_number(k, b, as_of) for k, b in queries]
    assert engine.check_by_card_batch([], as_of) == []


def test_reissued_card_replaces_old_serial(store, open_store_engine):
    from onshi.core.writer import Writer

    writer = Writer(store)
    link = writer.apply(lambda t: t.link_of_card(identifiers.card_serial_key("abc123")))
    writer.apply(lambda t: t.link_card(identifiers.card_serial_key("abc124"), link))
    writer.close()
    engine = open_store_engine(store)
    assert check_card(engine, "abc123", D(2024, 1, 1)).validity == epb.VALIDITY_NO_RECORD
    assert check_card(engine, "abc124", D(2024, 1, 1)).validity == epb.VALIDITY_VALID


def test_bad_identifiers_raise_with_field(store):
    with pytest.raises(InvalidIdentifier) as e:
        identifiers.number_key("01130013", "1", "2", "00")  # wrong check digit
    assert e.value.field == "insurer_number"
    with pytest.raises(InvalidIdentifier) as e:
        identifiers.card_serial_key("xyz")
    assert e.value.field == "card_serial"
    with pytest.raises(InvalidIdentifier) as e:
        identifiers.number_key(KYOKAI, "1", "", "00")
    assert e.value.field == "number"
    with pytest.raises(InvalidIdentifier) as e:
        identifiers.number_key(KYOKAI, "1", "2", "")
    assert e.value.field == "branch"


def test_check_digit_example_from_the_rules():
    assert identifiers.check_digit("3312001") == 5
    assert identifiers.has_valid_check_digit("33120015")
    assert not identifiers.has_valid_check_digit("33120016")


def test_number_conflict_leaves_store_intact(store):
    from onshi.core import dates
    from onshi.core.writer import NumberConflict, Writer

    writer = Writer(store)
    person = qpb.Person(name="別人", birth_date=dates.to_proto(D(1970, 1, 1)))
    stolen = qpb.Qualification(
        insurer_number=KYOKAI, symbol="12", number="345", branch="00", acquisition_date=dates.to_proto(D(2024, 1, 1))
    )

    def change(txn):
        txn.put_history(txn.new_link_id(), person, [stolen])

    with pytest.raises(NumberConflict):
        writer.apply(change)
    writer.close()
    engine = open_engine(store, "pure")
    r = check_number(engine, KYOKAI, "12", "345", "00", BIRTH, D(2024, 1, 1))
    assert r.validity == epb.VALIDITY_VALID and r.qualifications[0].person.birth_date.year == 1960
    engine.close()


# --- differential: native, pure and the naive model agree -------------------

START = D(2024, 3, 1)
INSURERS = [KYOKAI, KUMIAI, SEAMEN, ELDERLY, NHI]


@st.composite
def populations(draw):
    persons = []
    used: dict[tuple, int] = {}
    for i in range(draw(st.integers(1, 6))):
        birth = draw(st.sampled_from([D(1950, 1, 1), D(1980, 6, 15), D(2018, 2, 28)]))
        quals = []
        for _ in range(draw(st.integers(0, 4))):
            insurer = draw(st.sampled_from(INSURERS))
            number = (
                draw(st.sampled_from(["1", "2", "10-3"]))
                if insurer != ELDERLY
                else draw(st.sampled_from(["11111111", "22222222"]))
            )
            branch = draw(st.sampled_from(["00", "01"]))
            acq = START + dt.timedelta(days=draw(st.integers(0, 40)))
            lost = None if draw(st.booleans()) else acq + dt.timedelta(days=draw(st.integers(1, 30)))
            q = Qual(insurer, "S", number, branch, acq, lost)
            owner = used.setdefault(model.norm(q), i)
            if owner == i:  # an insured number belongs to one person
                quals.append(q)
        card = draw(st.one_of(st.none(), st.just(format(0x1000 + i, "X"))))
        persons.append(ModelPerson(birth, quals, card))
    return persons


def interesting_days(persons):
    days = {START - dt.timedelta(days=1), START + dt.timedelta(days=80)}
    for p in persons:
        for q in p.quals:
            days.update({q.acquired - dt.timedelta(days=1), q.acquired})
            if q.lost:
                days.update({q.lost - dt.timedelta(days=1), q.lost})
    return sorted(days)


def summary(resp: epb.CheckResponse):
    return resp.validity, sorted(
        (q.insurer_number, q.number, q.branch, q.acquisition_date.day, q.acquisition_date.month)
        for q in resp.qualifications
    )


def model_summary(validity, quals):
    # stored payloads keep the branch as registered; only the lookup key drops it
    return validity, sorted((q.insurer, q.number, q.branch, q.acquired.day, q.acquired.month) for q in quals)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(persons=populations())
def test_engines_and_model_agree(tmp_path_factory, persons):
    path = tmp_path_factory.mktemp("pop")
    model.store_population(path, persons)
    engines = [open_engine(path, "pure")]
    if native_available():
        engines.append(open_engine(path, "native"))
    try:
        days = interesting_days(persons)
        cards = [p.card for p in persons if p.card] + ["FFFFFF"]
        keys = {model.norm(q): p for p in persons for q in p.quals}
        for day in days:
            for card in cards:
                expected_validity, expected = model.check_card(persons, card, day)
                answers = [check_card(e, card, day) for e in engines]
                assert len({a.SerializeToString() for a in answers}) == 1, "engines disagree"
                got = summary(answers[0])
                assert got[0] == expected_validity, (card, day)
                if expected_validity == model.INVALID:  # ties in "latest" are by (acquired, lost)
                    assert len(got[1]) == 1
                else:
                    assert got == model_summary(expected_validity, expected), (card, day)
            for key, person in keys.items():
                for birth in (person.birth, person.birth + dt.timedelta(days=1)):
                    expected_validity, expected = model.check_number(persons, key, birth, day)
                    answers = [check_number(e, key[0], key[1], key[2], key[3], birth, day) for e in engines]
                    assert len({a.SerializeToString() for a in answers}) == 1, "engines disagree"
                    got = summary(answers[0])
                    assert got[0] == expected_validity, (key, birth, day)
                    if expected_validity in (model.INVALID, model.NEWER):
                        assert all(q.insurer_number == key[0] for q in answers[0].qualifications)
                    else:
                        assert got == model_summary(expected_validity, expected), (key, birth, day)
    finally:
        for e in engines:
            e.close()
