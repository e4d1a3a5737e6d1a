"""The seeds' rules on what a check, a claim verdict and an ingest show, through
the real writer (enrollment rules, group commit) into real LMDB files, read
back by both engines.

Each test names the seed sentence it holds the code to."""

from __future__ import annotations

import pytest

from onshi.core import claims, dated, dates, enrollment, registry
from onshi.core.engine import open_engine
from onshi.core.writer import Writer
from onshi.server.writer_server import GroupWriter
from onshi.v1 import claims_pb2 as cpb
from onshi.v1 import eligibility_pb2 as epb
from onshi.v1 import enrollment_pb2 as pb
from onshi.v1 import qualification_pb2 as qpb
from tests import ingest_support as s

ACCEPTED, QUARANTINED = pb.ENROLLMENT_OUTCOME_ACCEPTED, pb.ENROLLMENT_OUTCOME_QUARANTINED
ALL = frozenset(s.INSURERS)
NOW = 1_900_000_000.0  # 2030-03-17: every dated change here names its own day


def day(text: str) -> int:
    return dates.proto_day(s.date(text))


class Store:
    """Residents and updates through the real ingest path, then checks by engine."""

    def __init__(self, path):
        self.path = path
        self.writer = Writer(path, map_size=1 << 22)
        enrollment.open_dbs(self.writer)
        self.group = GroupWriter(self.writer)

    def residents(self, *records: pb.Resident) -> None:
        self.group.apply(lambda t: [registry.put(t, r) for r in records])

    def send(self, *updates: pb.EnrollmentUpdate, now: float = NOW) -> list[pb.EnrollmentAck]:
        out = []
        for u in updates:
            checked = enrollment.check_update(u, ALL)
            out.append(self.group.apply(lambda t, c=checked: enrollment.apply_update(t, c, now)))
        return out

    def link_card(self, r: pb.Resident, person: qpb.Person, insurer: str, number: str, serial: str) -> None:
        request = pb.LinkCardRequest(
            resident_id=r.resident_id,
            card_serial=serial,
            insurer_number=insurer,
            insured_number=pb.InsuredNumber(symbol="K1", number=number, branch="00"),
            person=person,
            consent=True,
        )
        self.group.apply(lambda t: enrollment.link_card(t, request, NOW))

    def close(self) -> None:
        self.group.close()
        self.writer.close()


@pytest.fixture
def store(tmp_path):
    st = Store(tmp_path / "store")
    yield st
    st.close()


def check_by_number(path, kind: str, insurer: str, number: str, birth: qpb.Person, as_of: str) -> epb.CheckResponse:
    from onshi.core import identifiers

    engine = open_engine(path, kind)
    try:
        raw = engine.check_by_number(
            identifiers.number_key(insurer, "K1", number, "00"), dates.proto_day(birth.birth_date), day(as_of)
        )
    finally:
        engine.close()
    return epb.CheckResponse.FromString(raw)


def check_by_card(path, kind: str, serial: str, as_of: str) -> epb.CheckResponse:
    from onshi.core import identifiers

    engine = open_engine(path, kind)
    try:
        raw = engine.check_by_card(identifiers.card_serial_key(serial), day(as_of))
    finally:
        engine.close()
    return epb.CheckResponse.FromString(raw)


def moved(r: pb.Resident, name: str, kana: str, address: str, postcode: str = "5300001") -> pb.Resident:
    out = pb.Resident()
    out.CopyFrom(r)
    out.name, out.name_kana, out.address, out.postcode = name, kana, address, postcode
    return out


def details(p: qpb.Person) -> tuple:
    return p.name, p.name_kana, p.address, p.postcode


# --- 1. a lost number shows only what its own insurer registered -------------------------


def test_a_lost_number_shows_the_details_its_insurer_registered_not_the_newer_ones(store, impl):
    """Seed 004: 「健康保険証によりオン資確認を行う場合は…当該資格が喪失している場合に、患者の
    直近の資格情報を確認することはできない」. A person married and moved while
    changing insurer A -> B: A's lost number answers 3 with A's details, never
    the name, kana, address or postcode B registered later. By card the person
    is present: B's qualification with B's (the latest) details."""
    r = s.resident(1)
    store.residents(r)
    assert [
        a.outcome
        for a in store.send(
            s.acquisition("a1", s.KYOKAI, r, "A1", "2020-04-01"), s.loss("a2", s.KYOKAI, r, "A1", "2024-04-01")
        )
    ] == [ACCEPTED] * 2
    married = moved(r, "新姓 花子", "シンセイ ハナコ", "大阪府大阪市北区梅田1-1")
    store.residents(married)
    assert store.send(s.acquisition("b1", s.EMPLOYEE, married, "B1", "2024-04-01"))[0].outcome == ACCEPTED
    store.link_card(married, s.person(married), s.EMPLOYEE, "B1", "ABCDEF01")
    store.close()
    old = s.person(r)

    lost = check_by_number(store.path, impl, s.KYOKAI, "A1", old, "2024-05-01")
    assert lost.validity == epb.VALIDITY_INVALID_NEWER_EXISTS
    (q,) = lost.qualifications
    assert q.insurer_number == s.KYOKAI and details(q.person) == details(old)
    assert "新姓" not in str(lost) and "大阪" not in str(lost) and "5300001" not in str(lost)

    then = check_by_number(store.path, impl, s.KYOKAI, "A1", old, "2023-01-01")
    assert then.validity == epb.VALIDITY_VALID and details(then.qualifications[0].person) == details(old)

    by_card = check_by_card(store.path, impl, "ABCDEF01", "2024-05-01")
    assert by_card.validity == epb.VALIDITY_VALID
    assert by_card.qualifications[0].insurer_number == s.EMPLOYEE
    assert details(by_card.qualifications[0].person) == details(s.person(married))


def test_a_basic_information_change_moves_only_its_own_insurers_qualifications(store, impl):
    """The same rule for a change of details: B's name change reaches what B's
    qualification shows, not A's lost one."""
    r = s.resident(2)
    store.residents(r)
    store.send(
        s.acquisition("a1", s.KYOKAI, r, "A1", "2020-04-01"),
        s.loss("a2", s.KYOKAI, r, "A1", "2024-04-01"),
        s.acquisition("b1", s.EMPLOYEE, r, "B1", "2024-04-01"),
    )
    married = moved(r, "新姓 一郎", "シンセイ イチロウ", "大阪府大阪市北区梅田2-2")
    store.residents(married)
    change = pb.EnrollmentUpdate(
        update_id="b2",
        insurer_number=s.EMPLOYEE,
        resident_id=r.resident_id,
        person=s.person(married),
        basic_information_change=pb.BasicInformationChange(),
    )
    assert store.send(change)[0].outcome == ACCEPTED
    store.close()
    a = check_by_number(store.path, impl, s.KYOKAI, "A1", s.person(r), "2024-05-01")
    b = check_by_number(store.path, impl, s.EMPLOYEE, "B1", s.person(r), "2024-05-01")
    assert details(a.qualifications[0].person) == details(s.person(r))
    assert details(b.qualifications[0].person) == details(s.person(married))


def test_the_cli_check_by_number_shows_the_lost_qualifications_own_details(store, tmp_path):
    """`onshi check --number` against a real `onshi serve`: the terminal's and the
    CLI's view of the same rule."""
    import subprocess

    r = s.resident(3)
    store.residents(r)
    store.send(s.acquisition("a1", s.KYOKAI, r, "A1", "2020-04-01"), s.loss("a2", s.KYOKAI, r, "A1", "2024-04-01"))
    married = moved(r, "転居 花子", "テンキョ ハナコ", "福岡県福岡市中央区天神3-3")
    store.residents(married)
    store.send(s.acquisition("b1", s.EMPLOYEE, married, "B1", "2024-04-01"))
    store.close()
    server = s.start_eligibility(store.path, tmp_path)
    try:
        b = r.birth_date
        out = subprocess.run(
            s.onshi(
                "check",
                "--target",
                server.target,
                "--number",
                s.KYOKAI,
                "K1",
                "A1",
                "00",
                "--birth",
                f"{b.year:04d}-{b.month:02d}-{b.day:02d}",
                "--as-of",
                "2024-05-01",
            ),
            capture_output=True,
            text=True,
            timeout=60,
            env=s._env(),
        )
    finally:
        server.stop()
    assert out.returncode == 10 + epb.VALIDITY_INVALID_NEWER_EXISTS, out.stderr
    assert "テンキョ" not in out.stdout and "福岡" not in out.stdout and "転居" not in out.stdout
    assert s.person(r).name_kana.split()[0].replace("\u3000", "")[:2] in out.stdout.replace(" ", "").replace(
        "\u3000", ""
    )


# --- 2. a loss is matched to its qualification, not to today's registry ---------------------


def test_a_loss_takes_effect_after_the_person_moved(store, impl):
    """Seed 004 checks 「すべての新規登録データ（J-LIS照会、漢字氏名、カナ氏名、生年月日、性別、住所）」:
    new registrations. A loss ends a qualification already registered; it
    carries the address the insurer held. It must apply — else the lost
    qualification stays VALID and the person shows as dual-enrolled."""
    r = s.resident(4)
    store.residents(r)
    store.send(
        s.acquisition("a1", s.KYOKAI, r, "A1", "2020-04-01"),
        s.acquisition(
            "d1", s.KYOKAI, r, "A2", "2020-04-01", relationship=qpb.RELATIONSHIP_DEPENDENT, symbol="K1", branch="00"
        ),
    )
    store.residents(moved(r, r.name, r.name_kana, "北海道札幌市中央区北1条西2-1"))
    acks = store.send(
        s.loss("a2", s.KYOKAI, r, "A1", "2024-04-01"),  # the person as the insurer still holds them
        s.ratio_change("d2", s.KYOKAI, r, "A2", 20, effective="2023-01-01"),
        pb.EnrollmentUpdate(
            update_id="d3",
            insurer_number=s.KYOKAI,
            resident_id=r.resident_id,
            person=s.person(r),
            dependent_removal=pb.DependentRemoval(
                insured_number=pb.InsuredNumber(symbol="K1", number="A2", branch="00"),
                loss_date=s.date("2024-04-01"),
                loss_reason=qpb.LOSS_REASON_OTHER,
            ),
        ),
    )
    assert [a.outcome for a in acks] == [ACCEPTED] * 3, acks
    # A new registration with the stale address is still stopped.
    late = s.acquisition("b1", s.EMPLOYEE, r, "B1", "2024-04-01")
    assert store.send(late)[0].outcome == QUARANTINED
    store.close()
    lost = check_by_number(store.path, impl, s.KYOKAI, "A1", s.person(r), "2024-05-01")
    assert lost.validity == epb.VALIDITY_INVALID
    assert lost.qualifications[0].loss_date.year == 2024
    removed = check_by_number(store.path, impl, s.KYOKAI, "A2", s.person(r), "2024-05-01")
    assert removed.validity == epb.VALIDITY_INVALID and removed.qualifications[0].burden_ratio_percent == 20


def test_a_loss_that_does_not_match_its_qualification_is_held(store):
    """Matched to the qualification it ends: a birth date or sex other than the
    one registered with it is a wrong record, held for the clerk."""
    r = s.resident(5)
    store.residents(r)
    store.send(s.acquisition("a1", s.KYOKAI, r, "A1", "2020-04-01"))
    wrong = s.loss("a2", s.KYOKAI, r, "A1", "2024-04-01")
    wrong.person.birth_date.CopyFrom(s.date("1900-01-01"))
    ack = store.send(wrong)[0]
    assert ack.outcome == QUARANTINED
    assert list(ack.quarantine_reasons) == [pb.QUARANTINE_REASON_BIRTH_DATE_MISMATCH]
    assert "qualification" in ack.message


# --- 3. 不詳 claims: the details in force on the visit date -------------------------------


def declaration(p: qpb.Person, *others: str) -> cpb.SelfDeclaration:
    return cpb.SelfDeclaration(
        name=p.name, name_kana=p.name_kana, sex=p.sex, address=p.address, other_addresses=list(others)
    )


def unknown_claim(claim_id: str, p: qpb.Person, visit: str, decl: cpb.SelfDeclaration) -> cpb.Claim:
    return cpb.Claim(
        claim_id=claim_id,
        insurer_number="77777777",
        number="777777777",
        birth_date=p.birth_date,
        first_visit_date=s.date(visit),
        last_visit_date=s.date(visit),
        kind=cpb.CLAIM_KIND_MEDICAL,
        points=100,
        declaration=decl,
    )


def _verifier_parts(path, kind):
    """(engine, py-lmdb env for the 不詳 index): py-lmdb opens a path once per
    process, so the pure engine's own env serves both."""
    import lmdb

    engine = open_engine(path, kind)
    env = engine.env if kind == "pure" else lmdb.open(str(path), readonly=True, max_dbs=32, subdir=True)
    return engine, env


def verdicts(path, claim_list, kind="pure"):
    engine, env = _verifier_parts(path, kind)
    try:
        return list(claims.Verifier(engine, env).verify(claim_list).verdicts)
    finally:
        if env is not getattr(engine, "env", None):
            env.close()
        engine.close()


def test_unknown_claims_match_the_details_the_patient_had_on_the_visit_date(store):
    """Seed 004: the review body identifies 「患者が医療機関等を受診等した当時の加入保険者等」.
    A self-declaration written at the visit carries the name and address the
    patient had then; the person has since married and moved."""
    r = s.resident(6)
    store.residents(r)
    store.send(s.acquisition("a1", s.KYOKAI, r, "A1", "2020-04-01"), s.loss("a2", s.KYOKAI, r, "A1", "2024-04-01"))
    married = moved(r, "新姓 花子", "シンセイ ハナコ", "大阪府大阪市北区梅田1-1")
    store.residents(married)
    store.send(s.acquisition("b1", s.EMPLOYEE, married, "B1", "2024-04-01"))
    store.close()
    before, after = s.person(r), s.person(married)
    got = verdicts(
        store.path,
        [
            unknown_claim("c1", before, "2024-03-15", declaration(before)),
            unknown_claim("c2", after, "2024-05-01", declaration(after)),
            unknown_claim("c3", before, "2024-05-01", declaration(before)),
        ],
    )
    assert [v.outcome for v in got] == [
        cpb.OUTCOME_RESOLVED_UNKNOWN,
        cpb.OUTCOME_RESOLVED_UNKNOWN,
        cpb.OUTCOME_UNRESOLVED,
    ]
    assert got[0].segments[0].insurer_number == s.KYOKAI and got[1].segments[0].insurer_number == s.EMPLOYEE


def test_an_unknown_claim_may_declare_several_addresses(store):
    """Seed 004: the remarks carry 「住所(複数存在する場合は全て)」: one of them
    matching the registered address is enough."""
    r = s.resident(7)
    store.residents(r)
    store.send(s.acquisition("a1", s.KYOKAI, r, "A1", "2020-04-01"))
    store.close()
    p = s.person(r)
    elsewhere = declaration(p)
    elsewhere.address = "沖縄県那覇市泉崎1-1"
    several = declaration(p, p.address)
    several.address = "沖縄県那覇市泉崎1-1"
    got = verdicts(
        store.path, [unknown_claim("c1", p, "2024-03-15", elsewhere), unknown_claim("c2", p, "2024-03-15", several)]
    )
    assert [v.outcome for v in got] == [cpb.OUTCOME_UNRESOLVED, cpb.OUTCOME_RESOLVED_UNKNOWN]


def test_a_dated_change_of_address_splits_what_matches_by_day(store):
    """A basic information change with its effective date (異動日): a visit
    before it matches the old address, a visit after it the new one."""
    r = s.resident(8)
    store.residents(r)
    store.send(s.acquisition("a1", s.KYOKAI, r, "A1", "2020-04-01"))
    new = moved(r, r.name, r.name_kana, "京都府京都市左京区1-2-3")
    store.residents(new)
    change = pb.EnrollmentUpdate(
        update_id="a2",
        insurer_number=s.KYOKAI,
        resident_id=r.resident_id,
        person=s.person(new),
        basic_information_change=pb.BasicInformationChange(effective_date=s.date("2024-06-01")),
    )
    assert store.send(change)[0].outcome == ACCEPTED
    store.close()
    old_p, new_p = s.person(r), s.person(new)
    got = verdicts(
        store.path,
        [
            unknown_claim("c1", old_p, "2024-05-31", declaration(old_p)),
            unknown_claim("c2", old_p, "2024-06-01", declaration(old_p)),
            unknown_claim("c3", new_p, "2024-06-01", declaration(new_p)),
        ],
    )
    assert [v.outcome for v in got] == [
        cpb.OUTCOME_RESOLVED_UNKNOWN,
        cpb.OUTCOME_UNRESOLVED,
        cpb.OUTCOME_RESOLVED_UNKNOWN,
    ]


def test_a_facility_pre_submission_check_does_not_name_the_newer_insurer(store):
    """Seed 004 again, for a claim: it carries a typed number. A facility's
    pre-submission check of a claim billed to the lost number learns it will be
    re-routed, not B's numbers; the review body, which re-routes, sees them."""
    r = s.resident(9)
    store.residents(r)
    store.send(
        s.acquisition("a1", s.KYOKAI, r, "A1", "2020-04-01"),
        s.loss("a2", s.KYOKAI, r, "A1", "2024-04-01"),
        s.acquisition("b1", s.EMPLOYEE, r, "B1", "2024-04-01"),
    )
    store.close()
    claim = cpb.Claim(
        claim_id="c1",
        facility_code="1310000001",
        insurer_number=s.KYOKAI,
        symbol="K1",
        number="A1",
        branch="00",
        birth_date=r.birth_date,
        first_visit_date=s.date("2024-04-02"),
        last_visit_date=s.date("2024-04-02"),
        kind=cpb.CLAIM_KIND_MEDICAL,
        points=100,
    )
    raw = cpb.VerifyClaimsRequest(claims=[claim]).SerializeToString()
    for kind in ("native", "pure"):
        engine, env = _verifier_parts(store.path, kind)
        try:
            verifier = claims.Verifier(engine, env)
            for native in (verifier.native, None):
                verifier.native = native
                _, body, _, _ = verifier.verify_serialized(raw, "1310000001")
                (facility,) = cpb.VerifyClaimsResponse.FromString(body).verdicts
                _, body, _, _ = verifier.verify_serialized(raw, None)
                (review,) = cpb.VerifyClaimsResponse.FromString(body).verdicts
                assert facility.outcome == review.outcome == cpb.OUTCOME_REROUTE
                assert not facility.segments and "B1" not in str(facility) and s.EMPLOYEE not in str(facility)
                assert review.segments[0].number == "B1"
        finally:
            if env is not getattr(engine, "env", None):
                env.close()
            engine.close()


# --- 4. dated certificates and ratios ------------------------------------------------------


def certificates(update_id: str, r: pb.Resident, number: str, **kw) -> pb.EnrollmentUpdate:
    return pb.EnrollmentUpdate(
        update_id=update_id,
        insurer_number=s.KYOKAI,
        resident_id=r.resident_id,
        person=s.person(r),
        certificates_change=pb.CertificatesChange(
            insured_number=pb.InsuredNumber(symbol="K1", number=number, branch="00"), **kw
        ),
    )


def elderly(ratio: int, first: str, last: str | None = None) -> qpb.ElderlyRecipientCertificate:
    c = qpb.ElderlyRecipientCertificate(burden_ratio_percent=ratio, valid_from=s.date(first))
    if last:
        c.valid_until.CopyFrom(s.date(last))
    return c


def test_next_years_elderly_certificate_leaves_this_years_in_force_until_it_ends(store, impl):
    """Seed 003 §5: 高齢受給者証「加入者の負担能力により一部負担割合が異なる」 — re-determined
    every 1 August. This year's 30 % (2024-08-01..2025-07-31), then next year's
    20 % from 2025-08-01: a visit on 2025-07-31 shows 30 %, one on 2025-08-01 20 %."""
    r = s.resident(10)
    store.residents(r)
    acks = store.send(
        s.acquisition("a1", s.KYOKAI, r, "A1", "2020-04-01"),
        certificates("a2", r, "A1", elderly_recipient=elderly(30, "2024-08-01", "2025-07-31")),
        certificates("a3", r, "A1", elderly_recipient=elderly(20, "2025-08-01", "2026-07-31")),
    )
    assert [a.outcome for a in acks] == [ACCEPTED] * 3
    store.close()

    def shown(as_of):
        (q,) = check_by_number(store.path, impl, s.KYOKAI, "A1", s.person(r), as_of).qualifications
        return q.elderly_recipient.burden_ratio_percent if q.HasField("elderly_recipient") else None

    assert [shown(d) for d in ("2024-07-31", "2024-08-01", "2025-07-31", "2025-08-01", "2026-08-01")] == [
        None,
        30,
        30,
        20,
        None,
    ]


def test_a_ratio_change_applies_from_its_effective_date(store, impl):
    """The ratio is dated too: 30 % until 2025-07-31 and 20 % from 2025-08-01,
    whatever day the change was sent."""
    r = s.resident(11)
    store.residents(r)
    store.send(
        s.acquisition("a1", s.KYOKAI, r, "A1", "2020-04-01", ratio=30),
        s.ratio_change("a2", s.KYOKAI, r, "A1", 20, effective="2025-08-01"),
    )
    store.close()
    ratios = [
        check_by_number(store.path, impl, s.KYOKAI, "A1", s.person(r), d).qualifications[0].burden_ratio_percent
        for d in ("2025-07-31", "2025-08-01")
    ]
    assert ratios == [30, 20]


def test_preschool_ends_with_the_march_after_the_sixth_birthday(store, impl):
    """The preschool 20 % (義務教育就学前) ends on the 31 March after the child
    reaches six: a check on 1 April answers 30 % and preschool false; on 31 March
    20 % and preschool true, with its last day."""
    child = s.resident(12)
    child.birth_date.CopyFrom(s.date("2019-04-02"))
    store.residents(child)
    acq = s.acquisition("a1", s.KYOKAI, child, "A1", "2019-04-02", ratio=20, relationship=qpb.RELATIONSHIP_DEPENDENT)
    acq.acquisition.qualification.preschool = True
    assert store.send(acq)[0].outcome == ACCEPTED
    store.close()
    before = check_by_number(store.path, impl, s.KYOKAI, "A1", s.person(child), "2026-03-31").qualifications[0]
    after = check_by_number(store.path, impl, s.KYOKAI, "A1", s.person(child), "2026-04-01").qualifications[0]
    assert (before.preschool, before.burden_ratio_percent, before.preschool_until) == (True, 20, s.date("2026-03-31"))
    assert (after.preschool, after.burden_ratio_percent, after.HasField("preschool_until")) == (False, 30, False)


@pytest.mark.parametrize(
    "birth, last_preschool_day",
    [
        ("2019-04-02", "2026-03-31"),  # six on 2025-04-02 (reached 04-01): school from April 2026
        ("2019-04-01", "2025-03-31"),  # reaches six on 2025-03-31: school from April 2025 (早生まれ)
        ("2019-03-31", "2025-03-31"),
        ("2020-02-29", "2026-03-31"),  # six "on" 2026-03-01, reached 02-28
        ("2019-12-31", "2026-03-31"),
    ],
)
def test_preschool_until_follows_the_age_reckoning_act(birth, last_preschool_day):
    assert dated.preschool_until(day(birth)) == day(last_preschool_day)


def test_a_certificate_is_shown_only_on_the_days_it_is_valid(store, impl):
    """A limit-amount certificate from 2024-08-01 is not shown for a visit on 31 July."""
    r = s.resident(13)
    store.residents(r)
    store.send(
        s.acquisition("a1", s.KYOKAI, r, "A1", "2020-04-01"),
        certificates(
            "a2",
            r,
            "A1",
            limit_amount=qpb.LimitAmountCertificate(
                category="エ", valid_from=s.date("2024-08-01"), valid_until=s.date("2025-07-31")
            ),
        ),
    )
    store.close()
    shown = [
        check_by_number(store.path, impl, s.KYOKAI, "A1", s.person(r), d).qualifications[0].HasField("limit_amount")
        for d in ("2024-07-31", "2024-08-01", "2025-07-31", "2025-08-01")
    ]
    assert shown == [False, True, True, False]


def test_a_lost_qualification_shows_what_applied_on_its_last_day(store):
    """By card after the loss: the latest qualification begun by then, with the
    ratio and certificate of its last covered day."""
    r = s.resident(14)
    store.residents(r)
    store.send(
        s.acquisition("a1", s.KYOKAI, r, "A1", "2020-04-01", ratio=30),
        s.ratio_change("a2", s.KYOKAI, r, "A1", 20, effective="2023-08-01"),
        s.loss("a3", s.KYOKAI, r, "A1", "2024-04-01"),
    )
    store.link_card(r, s.person(r), s.KYOKAI, "A1", "CAFE0001")
    store.close()
    answer = check_by_card(store.path, "pure", "CAFE0001", "2025-01-01")
    assert answer.validity == epb.VALIDITY_INVALID and answer.qualifications[0].burden_ratio_percent == 20


def test_the_failure_mode_lookup_matches_todays_details_and_shows_each_insurers_own(store):
    """Seed 004's system-failure-mode lookup by the basic 4 information: the
    person at the desk gives today's name and address, so those match (the old
    ones no longer do); the answer shows each qualification with the details its
    own insurer registered, as a card check does."""
    from onshi.server.failure_mode import TrustServicer
    from onshi.server.person_directory import PersonDirectory
    from onshi.v1 import trust_pb2

    r = s.resident(15)
    store.residents(r)
    store.send(s.acquisition("a1", s.KYOKAI, r, "A1", "2020-04-01"), s.loss("a2", s.KYOKAI, r, "A1", "2024-04-01"))
    married = moved(r, "新姓 花子", "シンセイ ハナコ", "大阪府大阪市北区梅田1-1")
    store.residents(married)
    store.send(s.acquisition("b1", s.EMPLOYEE, married, "B1", "2024-04-01"))
    servicer = TrustServicer(None, PersonDirectory(store.writer.env, store.writer.dbs))

    def lookup(p: qpb.Person, as_of: str):
        request = trust_pb2.LookupByBasicInfoRequest(
            name_kana=p.name_kana, sex=p.sex, birth_date=p.birth_date, address=p.address, name=p.name
        )
        return [link for link, _ in servicer._candidates(dates.proto_day(p.birth_date), request, day(as_of))]

    assert lookup(s.person(married), "2024-05-01") and not lookup(s.person(r), "2024-05-01")
    assert lookup(s.person(r), "2024-03-01") and not lookup(s.person(married), "2024-03-01")


def test_ingest_file_rows_carry_the_effective_date():
    """`onshi ingest-file`'s CSV names when a dated change takes effect."""
    from onshi.commands.ingest import update_from_csv

    row = dict(
        update_id="u1",
        insurer_number=s.KYOKAI,
        resident_id="10000000001",
        change="burden_ratio",
        name="山田太郎",
        name_kana="ヤマダタロウ",
        birth_date="1960-01-01",
        sex="1",
        address="東京都",
        symbol="K1",
        number="A1",
        branch="00",
        burden_ratio="20",
        effective_date="2025-08-01",
    )
    u = update_from_csv(row, 2)
    assert u.burden_ratio_change.effective_date == s.date("2025-08-01")
    row.update(change="basic_information", effective_date="")
    assert not update_from_csv(row, 3).basic_information_change.HasField("effective_date")
