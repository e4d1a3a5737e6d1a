"""Claim verdicts over hand-built histories (DOMAIN.md §6), on both engines:
every outcome, the 4/1 change, a split month, dual enrollment, 不詳 resolved and
ambiguous, returns, certificate flags; the basic4 index kept by the one writer."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from onshi.core import claims as rules
from onshi.core import unknown
from onshi.core.engine import open_engine
from onshi.core.pure import PureEngine
from onshi.core.store import open_env
from onshi.core.writer import Writer
from onshi.v1 import claims_pb2 as cpb
from onshi.v1 import qualification_pb2 as qpb
from tests.claims_helpers import (
    ELDERLY,
    KUMIAI,
    KYOKAI,
    NHI,
    SEAMEN,
    D,
    Opened,
    claim,
    person,
    qual,
    segments,
    unknown_claim,
    write_people,
)

TARO = D(1960, 5, 1)


@pytest.fixture
def store(tmp_path):
    path = tmp_path / "store"
    write_people(
        path,
        [
            # 1: moved from 協会けんぽ to a 組合 on 4/1 (the DOMAIN.md §6 example), with
            # certificates that change with the insurer
            (
                person("ヤマダ タロウ", TARO),
                [
                    qual(
                        KYOKAI,
                        "12",
                        "345",
                        "00",
                        D(2020, 1, 1),
                        D(2024, 4, 1),
                        limit_amount=qpb.LimitAmountCertificate(category="ウ"),
                        specific_diseases=[qpb.SpecificDiseaseCertificate(disease=qpb.SPECIFIC_DISEASE_DIALYSIS)],
                    ),
                    qual(
                        KUMIAI,
                        "A",
                        "9",
                        "00",
                        D(2024, 4, 1),
                        name="東西電機健康保険組合",
                        limit_amount=qpb.LimitAmountCertificate(category="エ"),
                        specific_diseases=[qpb.SpecificDiseaseCertificate(disease=qpb.SPECIFIC_DISEASE_DIALYSIS)],
                    ),
                ],
            ),
            # 2: lost 協会けんぽ on 4/15, 国保 from 4/15 (a split month), elderly ratio changes
            (
                person("スズキ ハナコ", D(1952, 2, 2), sex=2, address="大阪府大阪市北区梅田2-2-2"),
                [
                    qual(
                        KYOKAI,
                        "12",
                        "777",
                        "00",
                        D(2015, 1, 1),
                        D(2024, 4, 15),
                        elderly_recipient=qpb.ElderlyRecipientCertificate(burden_ratio_percent=20),
                        burden_ratio_percent=20,
                    ),
                    qual(
                        NHI,
                        "国",
                        "1-2",
                        "00",
                        D(2024, 4, 15),
                        elderly_recipient=qpb.ElderlyRecipientCertificate(burden_ratio_percent=30),
                        burden_ratio_percent=30,
                    ),
                ],
            ),
            # 3: dual enrollment, seamen + late-elderly
            (
                person("カイ ジロウ", D(1948, 3, 3)),
                [
                    qual(SEAMEN, "5", "66", "00", D(2010, 1, 1)),
                    qual(ELDERLY, "", "12345678", "", D(2023, 3, 3)),
                ],
            ),
            # 4: lost 3/10 (death), nothing newer
            (
                person("サトウ イチロウ", D(1940, 1, 1)),
                [
                    qual(NHI, "国", "9-9", "00", D(2000, 1, 1), D(2024, 3, 10)),
                ],
            ),
            # 5 and 6: same kana, birth date, sex and address (twins-like ambiguity)
            (
                person("タナカ ミキ", D(1990, 7, 7), sex=2, address="福岡県福岡市中央区天神1丁目1番1号"),
                [
                    qual(KYOKAI, "30", "1", "00", D(2012, 4, 1), name="全国健康保険協会福岡支部"),
                ],
            ),
            (
                person("タナカ ミキ", D(1990, 7, 7), sex=2, address="福岡県福岡市中央区天神1-1-1 天神ハイツ201"),
                [
                    qual(KUMIAI, "B", "2", "00", D(2012, 4, 1), name="九州商事健康保険組合"),
                ],
            ),
        ],
    )
    return path


@pytest.fixture
def opened(store, impl):
    o = Opened(store, impl)
    yield o
    o.close()


def test_ok_when_billed_qualification_covers_every_day(opened):
    v = opened.one(claim("c1", KYOKAI, "12", "345", "00", TARO, D(2024, 3, 2), D(2024, 3, 31)))
    assert v.outcome == cpb.OUTCOME_OK and v.claim_id == "c1" and not v.segments and not v.flags


def test_april_first_change_reroutes(opened):
    # DOMAIN.md §6: moved A -> B on 4/1, visited 4/2 with A's card, the claim names A.
    v = opened.one(claim("c2", KYOKAI, "12", "345", "00", TARO, D(2024, 4, 2), points=420))
    assert v.outcome == cpb.OUTCOME_REROUTE
    assert segments(v) == [(KUMIAI, "9", "2024-04-02", "2024-04-02", 420)]
    assert v.segments[0].symbol == "A" and v.segments[0].insurer_name == "東西電機健康保険組合"
    # the day before the change is still A's (loss day is the first uncovered day)
    assert opened.one(claim("c3", KYOKAI, "12", "345", "00", TARO, D(2024, 3, 31))).outcome == cpb.OUTCOME_OK


def test_reroute_waits_for_the_new_insurer_to_register(tmp_path, impl):
    # Until B registers (5/10 in the example) the claim can only be returned;
    # once B's record is written, the same claim is re-routed. Reads go through
    # the writer's process as in the writer server.
    path = tmp_path / "s"
    taro = person("ヤマダ タロウ", TARO)
    old = qual(KYOKAI, "12", "345", "00", D(2020, 1, 1), D(2024, 4, 1))
    (link,) = write_people(path, [(taro, [old])])
    c = claim("c", KYOKAI, "12", "345", "00", TARO, D(2024, 4, 2))
    writer = Writer(path)
    engine = open_engine(path, "native") if impl == "native" else PureEngine.over_env(writer.env)
    try:
        verifier = rules.Verifier(engine, writer.env)
        v = verifier.verify([c]).verdicts[0]
        assert (v.outcome, v.return_reason) == (cpb.OUTCOME_RETURN, cpb.RETURN_REASON_NO_QUALIFICATION)
        assert "2024-04-02" in v.detail
        writer.apply(lambda t: t.put_history(link, taro, [old, qual(KUMIAI, "A", "9", "00", D(2024, 4, 1))]))
        v = verifier.verify([c]).verdicts[0]
        assert v.outcome == cpb.OUTCOME_REROUTE and v.segments[0].insurer_number == KUMIAI
    finally:
        engine.close()
        writer.close()


def test_split_month_one_segment_per_insurer(opened):
    hanako = D(1952, 2, 2)
    v = opened.one(
        claim("s1", KYOKAI, "12", "777", "00", hanako, D(2024, 4, 3), D(2024, 4, 20), days=(3, 10, 20), points=301)
    )
    assert v.outcome == cpb.OUTCOME_SPLIT
    # points shared by visit days: 2 days vs 1 day, largest remainder
    assert segments(v) == [
        (KYOKAI, "777", "2024-04-03", "2024-04-10", 201),
        (NHI, "1-2", "2024-04-20", "2024-04-20", 100),
    ]
    assert list(v.flags) == [cpb.CERTIFICATE_FLAG_ELDERLY_RATIO, cpb.CERTIFICATE_FLAG_BURDEN_RATIO]
    # an inpatient stay (no visit days): every day of the period counts
    v = opened.one(claim("s2", KYOKAI, "12", "777", "00", hanako, D(2024, 4, 10), D(2024, 4, 19), points=10))
    assert segments(v) == [(KYOKAI, "777", "2024-04-10", "2024-04-14", 5), (NHI, "1-2", "2024-04-15", "2024-04-19", 5)]
    # the last visit date is a visit day even if visit_days omits it
    v = opened.one(claim("s3", KYOKAI, "12", "777", "00", hanako, D(2024, 4, 3), D(2024, 4, 20), days=(3, 14)))
    assert segments(v) == [
        (KYOKAI, "777", "2024-04-03", "2024-04-14", 67),
        (NHI, "1-2", "2024-04-20", "2024-04-20", 33),
    ]
    v = opened.one(claim("s4", KYOKAI, "12", "777", "00", hanako, D(2024, 4, 3), D(2024, 4, 14)))
    assert v.outcome == cpb.OUTCOME_OK


def test_dual_enrollment_either_insurer_is_ok(opened):
    jiro = D(1948, 3, 3)
    for insurer, symbol, number, branch in ((SEAMEN, "5", "66", "00"), (ELDERLY, "", "12345678", "")):
        v = opened.one(claim("d", insurer, symbol, number, branch, jiro, D(2024, 6, 1), D(2024, 6, 30)))
        assert v.outcome == cpb.OUTCOME_OK, insurer
    # late-elderly billed for a month before the 75th birthday: the seamen's insurance pays
    v = opened.one(claim("d2", ELDERLY, "", "12345678", "", jiro, D(2023, 2, 1), D(2023, 2, 28)))
    assert v.outcome == cpb.OUTCOME_REROUTE and v.segments[0].insurer_number == SEAMEN
    # a month spanning the late-elderly acquisition, billed to seamen: still OK (dual)
    v = opened.one(claim("d3", SEAMEN, "5", "66", "00", jiro, D(2023, 3, 1), D(2023, 3, 31)))
    assert v.outcome == cpb.OUTCOME_OK


def test_returns_with_reasons(opened):
    cases = {
        "no-qualification": claim("r1", NHI, "国", "9-9", "00", D(1940, 1, 1), D(2024, 3, 12)),
        "not-found": claim("r2", KYOKAI, "12", "999", "00", TARO, D(2024, 3, 2)),
        "birth": claim("r3", KYOKAI, "12", "345", "00", D(1960, 5, 2), D(2024, 3, 2)),
        "check-digit": claim("r4", "01130010", "12", "345", "00", TARO, D(2024, 3, 2)),
        "branch": claim("r5", KYOKAI, "12", "345", "", TARO, D(2024, 3, 2)),
        "long-symbol": claim("r10", KYOKAI, "S" * 21, "345", "00", TARO, D(2024, 3, 2)),
        "public-expense": claim("r6", KYOKAI, "12", "345", "00", TARO, D(2024, 4, 2), public_expense=["54136015"]),
        "high-cost": claim("r7", KYOKAI, "12", "345", "00", TARO, D(2024, 4, 2), high_cost=True),
        # a period with a day after the death
        "partly-uncovered": claim("r8", NHI, "国", "9-9", "00", D(1940, 1, 1), D(2024, 3, 1), D(2024, 3, 20)),
    }
    verdicts = dict(zip(cases, opened.verify(*cases.values()), strict=True))
    assert all(v.outcome == cpb.OUTCOME_RETURN for v in verdicts.values())
    reasons = {k: v.return_reason for k, v in verdicts.items()}
    assert reasons == {
        "no-qualification": cpb.RETURN_REASON_NO_QUALIFICATION,
        "not-found": cpb.RETURN_REASON_NUMBER_NOT_FOUND,
        "birth": cpb.RETURN_REASON_BIRTH_DATE_MISMATCH,
        "check-digit": cpb.RETURN_REASON_INVALID_NUMBER,
        "branch": cpb.RETURN_REASON_INVALID_NUMBER,
        "long-symbol": cpb.RETURN_REASON_INVALID_NUMBER,
        "public-expense": cpb.RETURN_REASON_PUBLIC_EXPENSE,
        "high-cost": cpb.RETURN_REASON_HIGH_COST,
        "partly-uncovered": cpb.RETURN_REASON_NO_QUALIFICATION,
    }
    assert "2024-03-10" in verdicts["partly-uncovered"].detail
    assert "insurer_number" in verdicts["check-digit"].detail
    # 公費 on a claim that needs no re-routing is fine
    ok = opened.one(claim("r9", KYOKAI, "12", "345", "00", TARO, D(2024, 3, 2), public_expense=["54136015"]))
    assert ok.outcome == cpb.OUTCOME_OK


def test_certificate_change_flags(opened):
    v = opened.one(claim("f", KYOKAI, "12", "345", "00", TARO, D(2024, 4, 2)))
    # limit category ウ -> エ; dialysis on both; same ratio
    assert list(v.flags) == [cpb.CERTIFICATE_FLAG_LIMIT_AMOUNT]


def test_unknown_claim_resolved_from_declaration(opened):
    # Declared in hiragana, full-width, with 丁目/番 spelled out and no postcode.
    v = opened.one(
        unknown_claim(
            "u1",
            D(1952, 2, 2),
            D(2024, 4, 20),
            points=50,
            name_kana="すずき　はなこ",
            sex=qpb.SEX_FEMALE,
            address="大阪府大阪市北区梅田２丁目２番２号",
        )
    )
    assert v.outcome == cpb.OUTCOME_RESOLVED_UNKNOWN, v.detail
    assert segments(v) == [(NHI, "1-2", "2024-04-20", "2024-04-20", 50)]
    # the same person, a visit period across her change: resolved to two insurers
    v = opened.one(
        unknown_claim("u2", D(1952, 2, 2), D(2024, 4, 14), D(2024, 4, 15), name_kana="スズキハナコ", sex=qpb.SEX_FEMALE)
    )
    assert v.outcome == cpb.OUTCOME_RESOLVED_UNKNOWN
    assert [s.insurer_number for s in v.segments] == [KYOKAI, NHI]
    # 77777779 (when 7s cannot be sent) and the late-elderly number are 不詳 too
    c = unknown_claim("u3", D(1948, 3, 3), D(2024, 6, 3), late_elderly=True, name_kana="カイジロウ", sex=qpb.SEX_MALE)
    c.insurer_number = "77777779"
    v = opened.one(c)
    assert v.outcome == cpb.OUTCOME_RESOLVED_UNKNOWN
    assert [s.insurer_number for s in v.segments] == [ELDERLY]  # latest acquired of the dual pair


def test_unknown_claim_ambiguous_or_unmatched_is_unresolved(opened):
    miki = D(1990, 7, 7)
    # two persons match kana, birth date, sex and the address as far as it is declared
    v = opened.one(
        unknown_claim(
            "a1", miki, D(2024, 5, 1), name_kana="タナカミキ", sex=qpb.SEX_FEMALE, address="福岡県福岡市中央区天神1-1"
        )
    )
    assert v.outcome == cpb.OUTCOME_UNRESOLVED and "2 persons" in v.detail
    # ... and with no address but the (shared) postcode
    v = opened.one(
        unknown_claim("a1b", miki, D(2024, 5, 1), name_kana="タナカミキ", sex=qpb.SEX_FEMALE, postcode="100-0001")
    )
    assert v.outcome == cpb.OUTCOME_UNRESOLVED and "2 persons" in v.detail
    # the full address matches "1丁目1番1号" exactly, which outranks "1-1-1 + building"
    v = opened.one(
        unknown_claim(
            "a1c",
            miki,
            D(2024, 5, 1),
            name_kana="タナカミキ",
            sex=qpb.SEX_FEMALE,
            address="福岡県福岡市中央区天神1-1-1",
        )
    )
    assert v.outcome == cpb.OUTCOME_RESOLVED_UNKNOWN and v.segments[0].insurer_number == KYOKAI
    # an employer / insurer name hint breaks the tie
    v = opened.one(
        unknown_claim(
            "a2",
            miki,
            D(2024, 5, 1),
            name_kana="タナカミキ",
            sex=qpb.SEX_FEMALE,
            address="福岡県福岡市中央区天神1-1",
            employer="九州商事",
        )
    )
    assert v.outcome == cpb.OUTCOME_RESOLVED_UNKNOWN and v.segments[0].insurer_number == KUMIAI
    # the building in the declaration names one of them
    v = opened.one(
        unknown_claim(
            "a3",
            miki,
            D(2024, 5, 1),
            name_kana="タナカミキ",
            sex=qpb.SEX_FEMALE,
            address="福岡県福岡市中央区天神1-1-1天神ハイツ201",
        )
    )
    assert v.outcome == cpb.OUTCOME_RESOLVED_UNKNOWN and v.segments[0].insurer_number == KUMIAI
    # nobody: wrong sex; another house number ("1-1-10" is not "1-1-1")
    for kw in (dict(sex=qpb.SEX_MALE), dict(sex=qpb.SEX_FEMALE, address="福岡県福岡市中央区天神1-1-10")):
        v = opened.one(unknown_claim("a4", miki, D(2024, 5, 1), name_kana="タナカミキ", **kw))
        assert v.outcome == cpb.OUTCOME_UNRESOLVED and "no person" in v.detail
    # no declaration at all
    v = opened.one(claim("a5", "77777777", "", "777777777", "", miki, D(2024, 5, 1)))
    assert v.outcome == cpb.OUTCOME_UNRESOLVED
    # identified, but not insured on the visit day (died 3/10)
    v = opened.one(unknown_claim("a6", D(1940, 1, 1), D(2024, 3, 12), name_kana="サトウイチロウ", sex=qpb.SEX_MALE))
    assert v.outcome == cpb.OUTCOME_UNRESOLVED and "2024-03-12" in v.detail


def test_verdicts_keep_claim_order_in_mixed_batch(opened):
    batch = [claim(f"m{i}", KYOKAI, "12", "345", "00", TARO, D(2024, 3 + i % 2, 2)) for i in range(50)]
    verdicts = opened.verify(*batch)
    assert [v.claim_id for v in verdicts] == [f"m{i}" for i in range(50)]
    assert [v.outcome for v in verdicts] == [cpb.OUTCOME_OK if i % 2 == 0 else cpb.OUTCOME_REROUTE for i in range(50)]


def test_cached_fast_path_matches_the_general_path(opened):
    """The first sight of an insurer / symbol / date goes through identifiers;
    later claims take the cached fast path: both must give the same verdicts."""
    hanako = D(1952, 2, 2)
    variants = [
        claim("v1", KYOKAI, "12", "777", "00", hanako, D(2024, 4, 2)),
        claim("v2", "０１１３００１２", "１２", "７７７", "0", hanako, D(2024, 4, 20)),
        claim("v3", NHI, "国", "1-2", "00", hanako, D(2024, 4, 20)),
        claim("v4", NHI, " 国 ", "1-2", "0", hanako, D(2024, 4, 20)),
        claim("v5", NHI, "国", "1 -2", "00", hanako, D(2024, 4, 20)),
        claim("v6", ELDERLY, "whatever", "12345678", "7", D(1948, 3, 3), D(2024, 6, 1)),
        claim("v7", KYOKAI, "12", "777", "0a", hanako, D(2024, 4, 2)),
        claim("v8", KYOKAI, "12", "7" * 21, "00", hanako, D(2024, 4, 2)),
    ]
    first = opened.verify(*variants)
    again = opened.verify(*variants)
    assert [rules_view(v) for v in first] == [rules_view(v) for v in again]
    assert [v.outcome for v in first] == [
        cpb.OUTCOME_OK,
        cpb.OUTCOME_REROUTE,
        cpb.OUTCOME_OK,
        cpb.OUTCOME_OK,
        cpb.OUTCOME_OK,
        cpb.OUTCOME_OK,
        cpb.OUTCOME_RETURN,
        cpb.OUTCOME_RETURN,
    ]


def rules_view(v):
    return v.outcome, v.return_reason, segments(v), list(v.flags)


def test_malformed_claims_are_rejected_with_fields(opened):
    bad_month = claim("b1", KYOKAI, "12", "345", "00", TARO, D(2024, 3, 30), D(2024, 4, 2))
    no_birth = claim("b2", KYOKAI, "12", "345", "00", TARO, D(2024, 3, 2))
    no_birth.ClearField("birth_date")
    reversed_ = claim("b3", KYOKAI, "12", "345", "00", TARO, D(2024, 3, 9), D(2024, 3, 2))
    outside = claim("b4", KYOKAI, "12", "345", "00", TARO, D(2024, 3, 2), D(2024, 3, 9), days=(2, 10))
    with pytest.raises(rules.ClaimError) as err:
        opened.verify(
            claim("ok", KYOKAI, "12", "345", "00", TARO, D(2024, 3, 2)), bad_month, no_birth, reversed_, outside
        )
    assert [f for f, _ in err.value.violations] == [
        "claims[1].last_visit_date",
        "claims[2].birth_date",
        "claims[3].last_visit_date",
        "claims[4].visit_days",
    ]
    with pytest.raises(rules.ClaimError):
        opened.verify(*[claim("x", KYOKAI, "12", "345", "00", TARO, D(2024, 3, 2))] * (rules.MAX_BATCH + 1))


# --- the basic4 index: one code path for put_history and bulk_load ---------------


def _basic4_rows(path, env=None) -> list[tuple[bytes, bytes]]:
    own = env is None
    env = open_env(path, readonly=True) if own else env
    try:
        db = env.open_db(b"basic4", create=False)
        with env.begin() as txn:
            return [(bytes(k), bytes(v)) for k, v in txn.cursor(db=db)]
    finally:
        if own:
            env.close()


def test_basic4_index_same_from_put_history_and_bulk_load(tmp_path):
    people = [
        (
            person(f"カナ{i % 3}", D(1970 + i % 2, 1, 1), sex=1 + i % 2, address=f"町{i}"),
            [qual(KYOKAI, "1", str(100 + i), "00", D(2020, 1, 1))],
        )
        for i in range(20)
    ]
    people.append(
        (
            qpb.Person(name="カナなし", birth_date=people[0][0].birth_date),  # no kana: not indexed
            [qual(KYOKAI, "1", "999", "00", D(2020, 1, 1))],
        )
    )
    write_people(tmp_path / "a", people)
    writer = Writer(tmp_path / "b")
    writer.bulk_load((i + 1, p, q, None) for i, (p, q) in enumerate(people))
    writer.close()
    rows = _basic4_rows(tmp_path / "a")
    assert len(rows) == 20
    assert rows == _basic4_rows(tmp_path / "b")


def test_basic4_index_follows_person_changes(tmp_path):
    path = tmp_path / "s"
    p = person("モト ナマエ", D(1980, 1, 1))
    q = [qual(KYOKAI, "1", "1", "00", D(2020, 1, 1))]
    (link,) = write_people(path, [(p, q)])
    writer = Writer(path)
    renamed = person("アタラシイ ナマエ", D(1980, 1, 1), address="新住所")
    writer.apply(lambda t: t.put_history(link, renamed, q))
    ((key, value),) = _basic4_rows(path, writer.env)
    assert unknown.normalize_kana("アタラシイ ナマエ").encode() in key and value[4:].startswith("新住所".encode())
    writer.apply(lambda t: t.put_history(link, renamed, []))  # history removed: index row too
    assert _basic4_rows(path, writer.env) == []
    writer.close()


def test_kana_and_address_normalisation():
    assert unknown.normalize_kana("ﾔﾏﾀﾞ ﾀﾛｳ") == unknown.normalize_kana("やまだ　たろう") == "ヤマダタロウ"
    assert unknown.normalize_kana("キッタ") == unknown.normalize_kana("キツタ")
    assert unknown.normalize_address("天神１丁目１番１号") == unknown.normalize_address("天神1-1-1")
    assert unknown.address_matches("天神1-1-1", "天神1-1-1ハイツ")
    assert not unknown.address_matches("天神1-1-1", "天神1-1-10")


# --- amounts ---------------------------------------------------------------------


@given(st.integers(0, 10**9), st.lists(st.integers(0, 10**7), min_size=1, max_size=30).filter(lambda w: sum(w) > 0))
def test_largest_remainder_sums_to_the_whole(total, weights):
    parts = rules.largest_remainder(total, weights)
    assert sum(parts) == total
    whole = sum(weights)
    for part, w in zip(parts, weights, strict=True):
        assert abs(part - total * w / whole) < 1  # each within one point of its exact share


def test_apportion_shares():
    shares = rules.apportion(1000, {"01130012": 1, "06130020": 1, "39130010": 1, "none": 0})
    assert [s for _, _, s in shares] == [334, 333, 333]
    assert rules.apportion(7, {}) == []


def test_resumed_number_hash_matches_identifiers(opened):
    for key in (
        b"01130012\x1f12\x1f345\x1f00",
        b"39130010\x1f\x1f12345678\x1f",
        "131011\x1f国\x1f1-2\x1f00".encode(),
        b"no-separator",
    ):
        for _ in range(2):  # cold, then from the cached insurer state
            assert opened.verifier._number_hash(key) == rules.identifiers.number_hash(key)
