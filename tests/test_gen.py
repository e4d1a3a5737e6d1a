"""`onshi gen`: a deterministic, realistic population written through the writer.

Every test reads the real LMDB store the generator wrote (no mocks): index
consistency, check digits, the domain rules of the population (75th birthday,
job changes, deaths...) and the answers the engine gives for gen.json's samples.
"""

from __future__ import annotations

import datetime as dt
import json

import lmdb
import pytest

from onshi.cli import main as cli_main
from onshi.core import dates, gen, history, identifiers, insurers
from onshi.core.pure import PureEngine
from onshi.core.store import link_id_of, link_key
from onshi.v1 import eligibility_pb2
from onshi.v1 import qualification_pb2 as pb

PERSONS = 2_000
SEED = 7


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("gen") / "store"
    info = gen.generate(path, PERSONS, seed=SEED)
    return path, info


def read_all(path) -> dict[str, list[tuple[bytes, bytes]]]:
    """Every named database of the store, as sorted (key, value) lists."""
    env = lmdb.open(str(path), readonly=True, max_dbs=32, lock=False)
    try:
        with env.begin() as txn:
            names = [bytes(k) for k, _ in txn.cursor()]
        out = {}
        for name in names:
            db = env.open_db(name, create=False)
            with env.begin() as txn:
                out[name.decode()] = [(bytes(k), bytes(v)) for k, v in txn.cursor(db=db)]
        return out
    finally:
        env.close()


@pytest.fixture(scope="module")
def content(store):
    return read_all(store[0])


def as_registered(row: history.Row) -> pb.Qualification:
    """A stored qualification back as gen registered it: its dated parts (each
    view shows only those in force) gathered again; gen gives each at most one
    elderly and one limit-amount certificate and one ratio."""
    d = history.dated(row)
    q = pb.Qualification()
    q.CopyFrom(d.qualification)
    q.burden_ratio_percent = d.ratios[0][1]
    q.preschool = d.preschool
    if d.elderly:
        q.elderly_recipient.CopyFrom(d.elderly[0])
    if d.limits:
        q.limit_amount.CopyFrom(d.limits[0])
    q.specific_diseases.extend(d.diseases)
    q.subsidies.extend(d.subsidies)
    return q


@pytest.fixture(scope="module")
def persons(content):
    """link ID -> (Person, [Qualification as registered]) decoded from the history database."""
    out = {}
    for k, v in content["history"]:
        _, rows = history.decode_rows(v)
        assert len({r.person for r in rows}) == 1  # gen registers one person for all
        out[link_id_of(k)] = (history.person_of(rows[0]), [as_registered(r) for r in rows])
    return out


def day(d) -> int:
    return dates.to_day(dates.from_proto(d))


def loss_day(q) -> int:
    return day(q.loss_date) if q.HasField("loss_date") else dates.NEVER


def covers(q, d: int) -> bool:
    return day(q.acquisition_date) <= d < loss_day(q)


# --- determinism and counts -----------------------------------------------------------


def test_same_seed_gives_an_identical_store(store, content, tmp_path):
    _, info = store
    again = gen.generate(tmp_path / "again", PERSONS, seed=SEED)
    assert read_all(tmp_path / "again") == content
    for key in ("persons", "qualifications", "cards_linked", "features", "samples"):
        assert again[key] == info[key]


def test_another_seed_gives_another_population(content, tmp_path):
    gen.generate(tmp_path / "other", 300, seed=SEED + 1)
    other = read_all(tmp_path / "other")
    assert other["card"] != content["card"][: len(other["card"])]
    assert other["history"] != content["history"][:300]


def test_summary_matches_the_store(store, content):
    _, info = store
    assert info["persons"] == PERSONS == len(content["history"])
    # Every qualification has its own individual number (branch or 後期高齢 number).
    assert info["qualifications"] == len(content["number"])
    assert info["cards_linked"] == len(content["card"]) == len(content["card_of"])
    assert 0 < info["cards_linked"] < PERSONS  # some persons have no card linked
    assert info["bytes"] > 0 and info["bytes_per_person"] == pytest.approx(info["bytes"] / PERSONS, abs=0.1)
    assert info["seconds"] > 0 and info["persons_per_second"] > 0
    with open(store[0] / "gen.json") as f:
        assert json.load(f)["persons"] == PERSONS


# --- identifiers ---------------------------------------------------------------------------


def test_catalogue_has_about_3000_insurers_with_valid_check_digits():
    import random

    cat = insurers.build_catalogue(random.Random(SEED))
    numbers = [i.number for i in cat.insurers]
    assert 2_800 <= len(numbers) <= 3_300
    assert len(set(numbers)) == len(numbers)
    for insurer in cat.insurers:
        assert identifiers.has_valid_check_digit(insurer.number), insurer
        assert identifiers.normalize_insurer_number(insurer.number) == insurer.number
    prefixes = {
        insurers.KYOKAI: ("01",),
        insurers.SEAMEN: ("02",),
        insurers.UNION: ("06",),
        insurers.MUTUAL_AID: ("31", "32", "33", "34"),
        insurers.LATE_ELDERLY: ("39",),
    }
    for scheme, members in cat.by_scheme.items():
        for insurer in members:
            if scheme in (insurers.NHI, insurers.NHI_UNION):
                assert len(insurer.number) == 6
            else:
                assert len(insurer.number) == 8 and insurer.number[:2] in prefixes[scheme]
    assert len(cat.by_scheme[insurers.KYOKAI]) == 47
    assert {m.late_elderly.name for m in cat.municipalities} >= {"東京都後期高齢者医療広域連合"}


def test_stored_insurer_and_payer_numbers_pass_the_check_digit(persons):
    payers = set()
    for _, quals in persons.values():
        for q in quals:
            assert identifiers.has_valid_check_digit(q.insurer_number), q.insurer_number
            for s in q.subsidies:
                assert len(s.payer_number) == 8 and identifiers.has_valid_check_digit(s.payer_number)
                assert len(s.recipient_number) == 7 and s.recipient_number.isdigit()
                payers.add(s.payer_number)
    assert payers


def test_every_number_key_resolves_to_its_person(content, persons):
    numbers = dict(content["number"])
    for key, link in content["number"]:
        _, quals = persons[link_id_of(link)]
        assert key in {history.qualification_number_key(q) for q in quals}
    for link_id, (_, quals) in persons.items():
        for q in quals:
            assert numbers[history.qualification_number_key(q)] == link_key(link_id)


def test_cards_resolve_both_ways(content, persons):
    card_of = dict(content["card_of"])
    for serial_key, link in content["card"]:
        assert len(serial_key) == identifiers.SERIAL_KEY_LEN
        assert card_of[link] == serial_key
        assert link_id_of(link) in persons
        bits = int.from_bytes(serial_key, "big").bit_length()
        assert 64 <= bits <= 128


def test_identifier_forms_are_realistic(persons):
    symbols, numbers = set(), set()
    for _, quals in persons.values():
        for q in quals:
            if identifiers.is_late_elderly(q.insurer_number):
                assert q.symbol == "" and q.branch == "" and len(q.number) == 8 and q.number.isdigit()
            else:
                assert len(q.branch) == 2 and q.branch.isdigit()
            symbols.add(q.symbol)
            numbers.add(q.number)
    assert "" in symbols  # absent symbols
    assert any(s and not s.isascii() for s in symbols)  # kanji / kana symbols
    assert any(s.isdigit() for s in symbols)
    assert any("-" in n for n in numbers)  # hyphenated numbers


# --- names -----------------------------------------------------------------------------------


def test_non_jis_names_survive_byte_exactly(persons):
    pop = gen.Population(SEED)
    expected = {}
    for link_id, person, _, _ in gen.persons_stream(pop, PERSONS, gen.Samples(), gen.Summary()):
        expected[link_id] = (person.name, person.name_kana)
    for link_id, (person, _) in persons.items():
        assert person.name.encode() == expected[link_id][0].encode()
        assert person.name_kana.encode() == expected[link_id][1].encode()
    names = "".join(p.name for p, _ in persons.values())
    for ch in ("髙", "𠮷", "﨑", "\U000e0100"):
        assert ch in names, f"no name with {ch!r}"


def test_non_jis_name_comes_back_through_the_engine(store, persons, content):
    card_of = dict(content["card_of"])
    link_id, (person, _) = next((i, v) for i, v in persons.items() if "𠮷" in v[0].name and link_key(i) in card_of)
    engine = PureEngine(store[0])
    try:
        raw = engine.check_by_card(card_of[link_key(link_id)], gen.R)
    finally:
        engine.close()
    answer = eligibility_pb2.CheckResponse.FromString(raw)
    assert answer.qualifications[0].person.name.encode() == person.name.encode()
    assert "𠮷".encode() in raw  # the bytes sent, not a ● substitute


# --- the population's domain rules -------------------------------------------------------------


def test_each_feature_is_present(store, persons, content):
    found = {
        k: 0
        for k in (
            "dependent",
            "death",
            "public_assistance",
            "other",
            "job_change",
            "late_elderly_move",
            "dual",
            "elderly_recipient",
            "limit_amount",
            "specific_disease",
            "subsidy",
            "preschool",
            "seamen",
            "nhi_union",
            "short_term",
        )
    }
    ratios = set()
    for _person, quals in persons.values():
        for q in quals:
            ratios.add(q.burden_ratio_percent)
            found["dependent"] += q.relationship == pb.RELATIONSHIP_DEPENDENT and q.branch != "00"
            found["death"] += q.loss_reason == pb.LOSS_REASON_DEATH
            found["public_assistance"] += q.loss_reason == pb.LOSS_REASON_PUBLIC_ASSISTANCE
            found["other"] += q.loss_reason == pb.LOSS_REASON_OTHER
            found["elderly_recipient"] += q.HasField("elderly_recipient")
            found["limit_amount"] += q.HasField("limit_amount")
            found["specific_disease"] += len(q.specific_diseases) > 0
            found["subsidy"] += len(q.subsidies) > 0
            found["preschool"] += q.preschool and q.burden_ratio_percent == 20
            found["seamen"] += q.insurer_number.startswith("02")
            found["nhi_union"] += len(q.insurer_number) == 6 and q.insurer_number[2] == "3"
            found["short_term"] += q.card_kind == pb.CARD_KIND_SHORT_TERM
        for a in quals:
            for b in quals:
                if (
                    a.loss_reason == pb.LOSS_REASON_OTHER_INSURANCE
                    and 0 <= day(b.acquisition_date) - loss_day(a) <= 1
                    and a.insurer_number[:2] in ("01", "06", "31", "32", "33", "34")
                    and b.insurer_number[:2] in ("01", "06", "31", "32", "33", "34")
                ):
                    found["job_change"] += 1
                if (
                    identifiers.is_late_elderly(b.insurer_number)
                    and not identifiers.is_late_elderly(a.insurer_number)
                    and loss_day(a) == day(b.acquisition_date)
                ):
                    found["late_elderly_move"] += 1
        if sum(covers(q, gen.R) for q in quals) >= 2:
            found["dual"] += 1
    missing = [k for k, v in found.items() if not v]
    assert not missing, found
    assert {10, 20, 30} <= ratios
    assert len(content["card"]) < len(persons)


def test_late_elderly_begins_on_the_75th_birthday(persons):
    moves = 0
    for person, quals in persons.values():
        birth = dates.from_proto(person.birth_date)
        b75 = dates.to_day(gen.add_years(birth, 75))
        late = [q for q in quals if identifiers.is_late_elderly(q.insurer_number)]
        for q in late:
            assert day(q.acquisition_date) == b75
            assert q.relationship == pb.RELATIONSHIP_INSURED and q.burden_ratio_percent in (10, 20, 30)
        if late:
            # Nothing but seamen's insurance or mutual aid stays open past the birthday.
            for q in quals:
                if q not in late and loss_day(q) > b75:
                    assert q.insurer_number[:2] in ("02", "31", "32", "33", "34"), q
            lost_that_day = [q for q in quals if loss_day(q) == b75]
            moves += bool(lost_that_day)
            for q in lost_that_day:
                assert q.loss_reason == pb.LOSS_REASON_OTHER_INSURANCE
        else:
            # No 後期高齢: not 75 by the horizon, or nothing was open any more (death, 02, 99).
            assert b75 > gen.HORIZON_DAY or all(loss_day(q) <= b75 for q in quals)
    assert moves


def test_dual_enrollment_is_seamen_or_mutual_aid_beside_late_elderly(persons):
    duals = 0
    for _, quals in persons.values():
        open_now = [q for q in quals if covers(q, gen.R)]
        if len(open_now) >= 2:
            duals += 1
            schemes = sorted(q.insurer_number[:2] for q in open_now)
            assert len(open_now) == 2 and schemes[1] == "39" and schemes[0] in ("02", "31", "32", "33", "34")
    assert duals


def test_deaths_end_everything_and_nothing_starts_after(persons):
    for _, quals in persons.values():
        deaths = [loss_day(q) for q in quals if q.loss_reason == pb.LOSS_REASON_DEATH]
        if deaths:
            assert len(set(deaths)) == 1
            assert all(loss_day(q) <= deaths[0] for q in quals)


def test_dependents_share_the_insured_number(persons):
    by_household = {}
    for _, quals in persons.values():
        for q in quals:
            if not identifiers.is_late_elderly(q.insurer_number):
                by_household.setdefault((q.insurer_number, q.symbol, q.number), []).append(q)
    households_with_dependents = 0
    for members in by_household.values():
        branches = [q.branch for q in members]
        assert len(set(branches)) == len(branches)
        if any(q.relationship == pb.RELATIONSHIP_DEPENDENT for q in members):
            households_with_dependents += 1
            assert "00" in branches
            assert all(q.relationship == pb.RELATIONSHIP_INSURED for q in members if q.branch == "00")
    assert households_with_dependents


def test_certificate_periods_fall_inside_the_qualification(persons):
    for _, quals in persons.values():
        for q in quals:
            start, end = day(q.acquisition_date), loss_day(q)
            for cert in (
                ([q.elderly_recipient] if q.HasField("elderly_recipient") else [])
                + ([q.limit_amount] if q.HasField("limit_amount") else [])
                + list(q.subsidies)
            ):
                assert start <= day(cert.valid_from) <= day(cert.valid_until) < end
            if q.HasField("limit_amount"):
                assert q.limit_amount.category in (
                    "ア",
                    "イ",
                    "ウ",
                    "エ",
                    "オ",
                    "現役並みⅠ",
                    "現役並みⅡ",
                    "区分Ⅰ",
                    "区分Ⅱ",
                )
            for sd in q.specific_diseases:
                assert sd.monthly_cap_yen in (10_000, 20_000)


# --- gen.json samples through the engine -----------------------------------------------------


def _answer(engine, kind: str, sample: dict, as_of: int) -> int:
    if kind == "card":
        raw = engine.check_by_card(identifiers.card_serial_key(sample["card_serial"]), as_of)
    else:
        key = identifiers.number_key(sample["insurer_number"], sample["symbol"], sample["number"], sample["branch"])
        raw = engine.check_by_number(key, dates.to_day(dt.date.fromisoformat(sample["birth_date"])), as_of)
    return eligibility_pb2.CheckResponse.FromString(raw).validity


def test_samples_answer_as_gen_json_claims(store):
    path, info = store
    samples = info["samples"]
    assert {c["kind"] for c in samples["cards"]} >= {
        "valid",
        "dual_enrolled",
        "late_elderly",
        "deceased",
        "job_change_latest",
        "unknown_card",
    }
    assert {n["kind"] for n in samples["numbers"]} >= {
        "valid_insured",
        "dependent",
        "lost_newer_exists",
        "late_elderly",
        "public_assistance",
    }
    as_of = dates.to_day(dt.date.fromisoformat(info["as_of"]))
    engine = PureEngine(path)
    try:
        # The claims hold from the reference date on (no event after it for these persons).
        for d in (as_of, as_of + 200, gen.HORIZON_DAY):
            for c in samples["cards"]:
                assert _answer(engine, "card", c, d) == eligibility_pb2.Validity.Value(c["expect"]), c
            for n in samples["numbers"]:
                assert _answer(engine, "number", n, d) == eligibility_pb2.Validity.Value(n["expect"]), n
    finally:
        engine.close()
    expects = {c["kind"]: c["expect"] for c in samples["cards"]} | {
        "n_" + n["kind"]: n["expect"] for n in samples["numbers"]
    }
    assert expects["dual_enrolled"] == "VALIDITY_MULTIPLE"
    assert expects["deceased"] == "VALIDITY_INVALID"
    assert expects["n_lost_newer_exists"] == "VALIDITY_INVALID_NEWER_EXISTS"
    assert expects["unknown_card"] == "VALIDITY_NO_RECORD"


# --- CLI ---------------------------------------------------------------------------------------


def test_cli_generates_prints_and_refuses_to_overwrite(tmp_path, capsys):
    out = tmp_path / "cli"
    assert cli_main(["gen", "--persons", "60", "--out", str(out), "--seed", "3"]) == 0
    printed = capsys.readouterr().out
    assert "persons 60" in printed and "per person" in printed and "onshi check --card" in printed
    before = read_all(out)
    assert cli_main(["gen", "--persons", "60", "--out", str(out)]) == 2
    assert "already holds a store" in capsys.readouterr().err
    assert read_all(out) == before
    assert cli_main(["gen", "--out", str(out), "--show"]) == 0
    assert "onshi check --number" in capsys.readouterr().out
    assert cli_main(["gen", "--persons", "0", "--out", str(tmp_path / "none")]) == 2


def test_progress_bar_goes_to_stderr_only_when_asked(tmp_path, capsys):
    gen.generate(tmp_path / "quiet", 50, seed=2)
    assert capsys.readouterr().err == ""
    gen.generate(tmp_path / "bar", 50, seed=2, progress=True)
    err = capsys.readouterr().err
    assert "100%" in err and "50/50 persons" in err and "indexes" in err


def test_spilled_sorted_runs_give_the_same_store(content, tmp_path):
    """Past `spill_rows` the writer sorts index rows in runs on disk and merges them
    (national scale does not fit in RAM); the store must be byte-identical."""
    gen.generate(tmp_path / "spilled", PERSONS, seed=SEED, spill_rows=97)
    assert read_all(tmp_path / "spilled") == content
    assert not [p for p in (tmp_path / "spilled").iterdir() if p.name.startswith("bulk-run-")]


@pytest.mark.parametrize("spill_rows", [1, 1_000])
def test_bulk_load_still_refuses_a_number_owned_by_two_persons(tmp_path, spill_rows):
    from onshi.core.writer import NumberConflict, Writer

    def person(name):
        return pb.Person(name=name, birth_date=dates.to_proto(dt.date(1970, 1, 1)))

    shared = pb.Qualification(
        insurer_number="01130012",
        symbol="1",
        number="2",
        branch="00",
        acquisition_date=dates.to_proto(dt.date(2024, 1, 1)),
    )
    other = pb.Qualification(
        insurer_number="01130012",
        symbol="1",
        number="3",
        branch="00",
        acquisition_date=dates.to_proto(dt.date(2024, 1, 1)),
    )
    writer = Writer(tmp_path / "conflict")
    try:
        with pytest.raises(NumberConflict):
            writer.bulk_load(
                [(1, person("甲"), [shared, other], None), (2, person("乙"), [shared], None)], spill_rows=spill_rows
            )
    finally:
        writer.close()


def test_same_store_in_processes_with_different_hash_seeds(tmp_path):
    """Nothing may depend on str hashing (set/dict order of names): two processes
    with different PYTHONHASHSEED write the same bytes."""
    import os
    import subprocess
    import sys

    for hash_seed in ("1", "4242"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        subprocess.run(
            [
                sys.executable,
                "-m",
                "onshi.cli",
                "gen",
                "--persons",
                "500",
                "--seed",
                "5",
                "--out",
                str(tmp_path / hash_seed),
            ],
            check=True,
            env=env,
            capture_output=True,
            timeout=120,
        )
    assert read_all(tmp_path / "1") == read_all(tmp_path / "4242")


def test_generated_people_are_in_the_resident_registry(tmp_path):
    """An insurer's update for a generated person must find a matching registry
    record (else it would be quarantined as an unknown resident)."""
    from onshi.core import enrollment, registry
    from onshi.core.writer import Writer

    out = tmp_path / "reg"
    gen.generate(out, 300, seed=5)
    writer = Writer(out)
    try:
        enrollment.open_dbs(writer)
        with writer.env.begin() as txn:
            assert txn.stat(writer.dbs["registry"])["entries"] == 300
            for link_id in (1, 150, 300):
                rid = gen.resident_id(link_id).encode()
                assert txn.get(rid, db=writer.dbs["resident_link"]) == link_id.to_bytes(8, "big")
        (person, _), *_ = writer.apply(lambda t: t.history(150))
        record = writer.apply(lambda t: registry.get(t, gen.resident_id(150)))
        assert registry.mismatches(record, person) == []
    finally:
        writer.close()
