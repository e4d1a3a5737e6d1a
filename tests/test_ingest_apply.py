"""Enrollment rules and the group-committing writer, in process on real LMDB files."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading

import pytest

from onshi.core import enrollment, registry
from onshi.core import history as history_mod
from onshi.core.writer import StoreFull, Writer
from onshi.server.writer_server import GroupWriter
from onshi.v1 import enrollment_pb2 as pb
from onshi.v1 import qualification_pb2 as qpb
from tests import ingest_support as s

ACCEPTED, DUPLICATE = pb.ENROLLMENT_OUTCOME_ACCEPTED, pb.ENROLLMENT_OUTCOME_DUPLICATE
REJECTED, QUARANTINED = pb.ENROLLMENT_OUTCOME_REJECTED, pb.ENROLLMENT_OUTCOME_QUARANTINED
ALL = frozenset(s.INSURERS)


@pytest.fixture
def group(tmp_path):
    writer = Writer(tmp_path / "store", map_size=1 << 20)
    enrollment.open_dbs(writer)
    g = GroupWriter(writer)
    yield g
    g.close()
    writer.close()


def send(group, *updates, insurers=ALL):
    out = []
    for u in updates:
        try:
            checked = enrollment.check_update(u, insurers)
        except enrollment.Invalid as exc:
            out.append(enrollment.rejected_ack(u.update_id, exc.violations))
            continue
        out.append(group.apply(lambda t, checked=checked: enrollment.apply_update(t, checked, 0.0)))
    return out


def history(group, r):
    """(the person shown with the latest qualification, each qualification as
    its last view shows it: its latest ratio and certificates)."""
    with group.read() as view:
        link = enrollment.link_of_resident(view, r.resident_id)
        if not link:
            return None, []
        _, rows = view.history_rows(link)
    quals = [qpb.Qualification.FromString(row.views[-1].body) for row in rows]
    return history_mod.person_of(max(rows, key=lambda row: row.acquisition_day)), quals


def load(group, *residents):
    group.apply(lambda t: [registry.put(t, r) for r in residents])


def test_dependents_certificates_subsidies_and_name_change(group):
    head, child = s.resident(1), s.resident(2)
    load(group, head, child)
    dep = s.acquisition("c1", s.KYOKAI, child, "D2", "2024-04-01", relationship=qpb.RELATIONSHIP_DEPENDENT, branch="01")
    dep_add = pb.EnrollmentUpdate()
    dep_add.CopyFrom(dep)
    dep_add.dependent_addition.qualification.CopyFrom(dep.acquisition.qualification)
    dep_add.dependent_addition.qualification.relationship = qpb.RELATIONSHIP_UNSPECIFIED
    certs = pb.EnrollmentUpdate(
        update_id="c2",
        insurer_number=s.KYOKAI,
        resident_id=child.resident_id,
        person=s.person(child),
        certificates_change=pb.CertificatesChange(
            insured_number=pb.InsuredNumber(symbol="K1", number="D2", branch="01"),
            limit_amount=qpb.LimitAmountCertificate(category="エ", valid_from=s.date("2024-08-01")),
            specific_diseases=[
                qpb.SpecificDiseaseCertificate(
                    disease=qpb.SPECIFIC_DISEASE_DIALYSIS, monthly_cap_yen=10000, valid_from=s.date("2024-04-01")
                )
            ],
        ),
    )
    subsidy = qpb.PublicExpenseSubsidy(
        payer_number=s.with_check_digit("8113001"),
        recipient_number="7654321",
        programme="子ども医療費助成",
        burden_ratio_percent=0,
        valid_from=s.date("2024-04-01"),
    )
    subs = pb.EnrollmentUpdate(
        update_id="c3",
        insurer_number=s.KYOKAI,
        resident_id=child.resident_id,
        person=s.person(child),
        subsidies_change=pb.SubsidiesChange(
            insured_number=pb.InsuredNumber(symbol="K1", number="D2", branch="01"), subsidies=[subsidy]
        ),
    )
    acks = send(group, dep_add, certs, subs)
    assert [a.outcome for a in acks] == [ACCEPTED] * 3, acks
    person, (q,) = history(group, child)
    assert q.relationship == qpb.RELATIONSHIP_DEPENDENT
    assert (q.limit_amount.category, q.specific_diseases[0].monthly_cap_yen, q.subsidies[0].programme) == (
        "エ",
        10000,
        "子ども医療費助成",
    )
    # Certificates are the full current set: an empty change clears them.
    clear = pb.EnrollmentUpdate()
    clear.CopyFrom(certs)
    clear.update_id = "c4"
    clear.certificates_change.ClearField("limit_amount")
    del clear.certificates_change.specific_diseases[:]
    # A dependent removal of an insured person's number is refused; of the dependent, applied.
    remove = pb.EnrollmentUpdate(
        update_id="c5",
        insurer_number=s.KYOKAI,
        resident_id=child.resident_id,
        person=s.person(child),
        dependent_removal=pb.DependentRemoval(
            insured_number=pb.InsuredNumber(symbol="K1", number="D2", branch="01"),
            loss_date=s.date("2025-03-31"),
            loss_reason=qpb.LOSS_REASON_OTHER,
        ),
    )
    acks = send(group, clear, remove)
    assert [a.outcome for a in acks] == [ACCEPTED, ACCEPTED]
    _, (q,) = history(group, child)
    assert not q.HasField("limit_amount") and not q.specific_diseases and q.subsidies
    assert (q.loss_date.year, q.loss_reason) == (2025, qpb.LOSS_REASON_OTHER)
    # Name change: the registry changes first, then the insurer's update matches it.
    moved = pb.Resident()
    moved.CopyFrom(child)
    moved.name, moved.address = "新姓 花子", "大阪府大阪市北区1-1"
    load(group, moved)
    renamed = s.person(moved)
    change = pb.EnrollmentUpdate(
        update_id="c6",
        insurer_number=s.KYOKAI,
        resident_id=child.resident_id,
        person=renamed,
        basic_information_change=pb.BasicInformationChange(),
    )
    stale = pb.EnrollmentUpdate()
    stale.CopyFrom(change)
    stale.update_id = "c7"
    stale.person.CopyFrom(s.person(child))  # the old name no longer matches
    acks = send(group, change, stale)
    assert [a.outcome for a in acks] == [ACCEPTED, QUARANTINED]
    person, _ = history(group, child)
    assert person.name == renamed.name and person.address == renamed.address


def test_state_dependent_rejections_are_recorded_and_answer_duplicate(group):
    r = s.resident(5)
    load(group, r)
    lost_twice = [
        s.acquisition("e1", s.EMPLOYEE, r, "E1", "2024-04-01"),
        s.loss("e2", s.EMPLOYEE, r, "E1", "2024-10-01"),
        s.loss("e3", s.EMPLOYEE, r, "E1", "2024-11-01"),
        s.loss("e4", s.EMPLOYEE, r, "E9", "2024-11-01"),
    ]
    early = s.acquisition("e5", s.EMPLOYEE, r, "E5", "2024-04-01")
    early_loss = s.loss("e6", s.EMPLOYEE, r, "E5", "2024-04-01")  # not after the acquisition
    overlap = s.acquisition("e7", s.EMPLOYEE, r, "E5", "2024-05-01")  # already holds E5 then
    acks = send(group, *lost_twice, early, early_loss, overlap)
    assert [a.outcome for a in acks] == [ACCEPTED, ACCEPTED, REJECTED, REJECTED, ACCEPTED, REJECTED, REJECTED]
    assert [v.field for v in acks[5].field_violations] == ["loss.loss_date"]
    again = send(group, lost_twice[2])[0]
    assert (again.outcome, again.first_outcome) == (DUPLICATE, REJECTED)
    assert [v.field for v in again.field_violations] == ["loss.insured_number"]
    # The same insured number may be re-acquired after its loss.
    back = send(group, s.acquisition("e8", s.EMPLOYEE, r, "E1", "2025-01-01"))[0]
    assert back.outcome == ACCEPTED
    assert sorted((q.number, q.HasField("loss_date")) for q in history(group, r)[1]) == [
        ("E1", False),
        ("E1", True),
        ("E5", False),
    ]


def test_idempotency_key_is_per_insurer(group):
    a, b = s.resident(6), s.resident(7)
    load(group, a, b)
    acks = send(
        group,
        s.acquisition("same", s.EMPLOYEE, a, "S1", "2024-04-01"),
        s.acquisition("same", s.KYOKAI, b, "S2", "2024-04-01"),
        s.acquisition("same", s.KYOKAI, b, "S3", "2024-04-01"),
    )
    assert [a.outcome for a in acks] == [ACCEPTED, ACCEPTED, DUPLICATE]


def test_group_commit_batches_and_isolates_a_failing_job(group):
    seen: list = []
    done = threading.Event()
    total = 2000

    def record(result, exc):
        seen.append((result, exc))
        if len(seen) == total:
            done.set()

    db = group.open_db(b"test_group")

    def good(i):
        return lambda t: (t.put("test_group", b"k%05d" % i, b"v"), i)[1]

    def bad(t):
        t.put("test_group", b"poison", b"x")  # written, then the job fails: must not persist
        raise ValueError("bad job")

    commits_before = group.commits
    for i in range(total):
        group.submit(bad if i == 777 else good(i), record)
    assert done.wait(30)
    assert group.commits - commits_before < total / 4  # many writes per transaction
    failures = [exc for _, exc in seen if exc is not None]
    assert len(failures) == 1 and str(failures[0]) == "bad job"
    assert sorted(r for r, exc in seen if exc is None) == [i for i in range(total) if i != 777]
    with group.env.begin() as txn:
        assert txn.get(b"poison", db=db) is None
        assert txn.stat(db)["entries"] == total - 1


def test_a_commit_holds_at_most_max_batch_writes_counting_job_weights(tmp_path):
    """Jobs that stand for several writes (a slice of a stream's updates) count
    their weight: queued jobs of weight 4 under max_batch 10 commit two by two,
    in order; a job heavier than max_batch still commits, alone."""
    writer = Writer(tmp_path / "store", map_size=1 << 20)
    group = GroupWriter(writer, max_batch=10)
    try:
        release = threading.Event()
        group.submit(lambda t: release.wait(10), lambda result, exc: None)  # holds the committer
        txns: list = []
        finished = threading.Event()

        def job(i):
            return lambda t: txns.append((i, t))  # the WriteTxn object: one per transaction

        def done(result, exc):
            assert exc is None
            if len(txns) == 6:
                finished.set()

        group.submit_many([(job(i), done) for i in range(5)], [4, 4, 4, 4, 4])
        group.submit_many([(job(5), done)], [25])
        release.set()
        assert finished.wait(10)
        assert [i for i, _ in txns] == [0, 1, 2, 3, 4, 5]
        groups = [[i for i, t in txns if t is u] for u in dict.fromkeys(t for _, t in txns)]
        assert groups == [[0, 1], [2, 3], [4], [5]]
    finally:
        group.close()
        writer.close()


def test_map_grows_on_demand_then_store_full_leaves_commits_intact(tmp_path):
    writer = Writer(tmp_path / "store", map_size=1 << 16, max_map_size=1 << 20)
    group = GroupWriter(writer)
    group.open_db(b"bulk")
    try:
        written = 0
        with pytest.raises(StoreFull):
            for i in range(10_000):
                group.apply(lambda t, i=i: t.put("bulk", b"%06d" % i, os.urandom(3000)))
                written += 1
        assert written > 30  # the 64 KiB map grew several times (to 1 MiB) before the cap
        # The failed transaction wrote nothing; every earlier commit is there.
        with group.env.begin() as txn:
            assert txn.stat(writer.dbs["bulk"])["entries"] == written
    finally:
        group.close()
        writer.close()


def _can_mount() -> bool:
    return os.geteuid() == 0 and shutil.which("mount") is not None


@pytest.mark.skipif(not _can_mount(), reason="needs root to mount a tiny tmpfs")
def test_full_disk_raises_store_full_and_nothing_is_corrupted(tmp_path):
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=768k", "tmpfs", str(mnt)]).returncode != 0:
        pytest.skip("cannot mount tmpfs here")
    try:
        (mnt / "filler").write_bytes(b"\0" * 128 * 1024)
        writer = Writer(mnt / "store", map_size=1 << 16)
        enrollment.open_dbs(writer)
        group = GroupWriter(writer)
        people = [s.resident(i) for i in range(2000)]
        accepted = []
        with pytest.raises(StoreFull):
            for i, r in enumerate(people):
                group.apply(lambda t, r=r: registry.put(t, r))
                u = s.acquisition(f"f{i}", s.EMPLOYEE, r, f"F{i}", "2024-04-01")
                checked = enrollment.check_update(u, ALL)
                assert (
                    group.apply(lambda t, checked=checked: enrollment.apply_update(t, checked, 0.0)).outcome == ACCEPTED
                )
                accepted.append(r)
        assert len(accepted) > 10
        # Room again (the filler goes): the same writer carries on.
        (mnt / "filler").unlink()
        r = people[len(accepted)]
        group.apply(lambda t: registry.put(t, r))
        group.close()
        writer.close()
        # Reopened from disk: every accepted update is there, whole.
        writer = Writer(mnt / "store", map_size=1 << 16)
        enrollment.open_dbs(writer)
        with writer.env.begin() as txn:
            from onshi.core.writer import WriteTxn

            view = WriteTxn(txn, writer.dbs)
            for i, r in enumerate(accepted):
                link = enrollment.link_of_resident(view, r.resident_id)
                assert [q.number for _, q in view.history(link)] == [f"F{i}"]
            assert view.link_of_number(s.key(s.EMPLOYEE, f"F{len(accepted)}")) is None
        writer.close()
    finally:
        subprocess.run(["umount", "-l", str(mnt)])


def test_bulk_loaded_people_take_updates_on_their_link(tmp_path):
    """`onshi gen` loads people with link IDs; their registry rows let insurers'
    updates land on the same link (not on a new person)."""
    from onshi.core import history as hist

    r = s.resident(9)
    person = s.person(r, written_differently=False)
    q = qpb.Qualification(
        insurer_number=s.EMPLOYEE,
        symbol="K1",
        number="B9",
        branch="00",
        relationship=qpb.RELATIONSHIP_INSURED,
        acquisition_date=s.date("2020-04-01"),
        burden_ratio_percent=30,
    )
    writer = Writer(tmp_path / "store", map_size=1 << 22)
    try:
        writer.bulk_load([(42, person, [q], None)])
        assert enrollment.bulk_load_residents(writer, [(42, r)]) == 1
        group = GroupWriter(writer)
        ack = send(group, s.loss("g1", s.EMPLOYEE, r, "B9", "2025-04-01"))[0]
        assert ack.outcome == ACCEPTED
        with group.read() as view:
            assert enrollment.link_of_resident(view, r.resident_id) == 42
            ((_, stored),) = view.history(42)
            assert hist.qualification_number_key(stored) == s.key(s.EMPLOYEE, "B9") and stored.loss_date.year == 2025
        group.close()
    finally:
        writer.close()


def test_discarding_a_quarantined_update_releases_the_ones_held_behind_it(group):
    r = s.resident(11)
    load(group, r)
    wrong = s.acquisition("h1", s.EMPLOYEE, r, "H1", "2024-04-01")
    wrong.person.name = "別人"
    held_acq = s.acquisition("h2", s.EMPLOYEE, r, "H2", "2024-04-01")
    held_ratio = s.ratio_change("h3", s.EMPLOYEE, r, "H2", 10)
    other_insurer = s.acquisition("h4", s.KYOKAI, r, "H4", "2024-04-01")  # not held: another insurer
    acks = send(group, wrong, held_acq, held_ratio, other_insurer)
    assert [a.outcome for a in acks] == [QUARANTINED, QUARANTINED, QUARANTINED, ACCEPTED]
    assert [list(a.quarantine_reasons) for a in acks[1:3]] == [[pb.QUARANTINE_REASON_HELD_BEHIND]] * 2
    request = pb.ResolveQuarantineRequest(
        quarantine_id=acks[0].quarantine_id, resolution=pb.RESOLUTION_DISCARD, reason="registered for the wrong person"
    )
    out = group.apply(lambda t: enrollment.resolve(t, request, frozenset({s.EMPLOYEE}), 0.0))
    assert out.ack.outcome == pb.ENROLLMENT_OUTCOME_DISCARDED
    assert [(a.update_id, a.outcome) for a in out.released] == [("h2", ACCEPTED), ("h3", ACCEPTED)]
    numbers = sorted((q.number, q.burden_ratio_percent) for q in history(group, r)[1])
    assert numbers == [("H2", 10), ("H4", 30)]
    with group.read() as view:
        assert enrollment.list_quarantine(view, [s.EMPLOYEE], 0, 100) == []
    again = send(group, wrong, held_ratio)
    assert [(a.outcome, a.first_outcome) for a in again] == [
        (DUPLICATE, pb.ENROLLMENT_OUTCOME_DISCARDED),
        (DUPLICATE, ACCEPTED),
    ]


def test_a_loose_match_is_accepted_and_its_rule_kept_with_the_outcome(group):
    """Seed 000: 「外字の扱いが異なるシステム間で、同一人物でも一致しない場合がある。」
    The registry holds 髙 and 﨑, the insurer's JIS X 0208 system writes 高 and
    崎: accepted, and the ack (kept for re-sends) says which field matched by
    which rule, so the clerk can review it."""
    r = pb.Resident(
        resident_id=s.resident_id(21),
        name="髙橋　﨑子",
        name_kana="タカハシ　サキコ",
        birth_date=s.date("1975-03-04"),
        sex=qpb.SEX_FEMALE,
        address="神奈川県茅ヶ崎市東海岸北一丁目2番3号",
    )
    load(group, r)
    written = s.acquisition("l1", s.EMPLOYEE, r, "L1", "2024-04-01")
    written.person.name, written.person.address = "高橋 崎子", "神奈川県茅ケ崎市東海岸北1-2-3"
    plain = s.ratio_change("l2", s.EMPLOYEE, r, "L1", 20)
    plain.person.CopyFrom(
        qpb.Person(name=r.name, name_kana=r.name_kana, sex=r.sex, birth_date=r.birth_date, address=r.address)
    )
    acks = send(group, written, plain)
    assert [a.outcome for a in acks] == [ACCEPTED, ACCEPTED]
    expected = [
        ("person.name", [pb.MATCH_RULE_KANJI_SUBSTITUTE]),
        ("person.address", [pb.MATCH_RULE_ADDRESS_BLOCK_NOTATION, pb.MATCH_RULE_ADDRESS_PLACE_NAME_KANA]),
    ]
    assert [(m.field, list(m.rules)) for m in acks[0].loose_matches] == expected
    assert list(acks[1].loose_matches) == []  # as registered: nothing to review
    (again,) = send(group, written)
    assert (again.outcome, again.first_outcome) == (DUPLICATE, ACCEPTED)
    assert [(m.field, list(m.rules)) for m in again.loose_matches] == expected
    assert [q.number for q in history(group, r)[1]] == ["L1"]


def test_quarantine_lists_the_current_registry_record_so_applying_with_it_succeeds(group):
    """An update held for a stale address; the person's move then reaches the
    registry. The clerk applies with the record ListQuarantine shows: it must
    be today's, not the one from when the update was held, or the update is
    quarantined again."""
    r = s.resident(22)
    moved = pb.Resident()
    moved.CopyFrom(r)
    moved.address = "大阪府大阪市北区梅田三丁目1番1号"
    load(group, r)
    held = s.acquisition("q1", s.EMPLOYEE, r, "Q1", "2024-04-01")
    held.person.address = "大阪府大阪市北区梅田3-1-1"  # the insurer already has the new address
    (ack,) = send(group, held)
    assert (ack.outcome, list(ack.quarantine_reasons)) == (QUARANTINED, [pb.QUARANTINE_REASON_ADDRESS_MISMATCH])
    load(group, moved)
    with group.read() as view:
        (entry,) = enrollment.list_quarantine(view, [s.EMPLOYEE], 0, 100)
    assert entry.registry_record.address == moved.address
    record = entry.registry_record
    corrected = qpb.Person(
        name=record.name,
        name_kana=record.name_kana,
        sex=record.sex,
        birth_date=record.birth_date,
        address=record.address,
        postcode=record.postcode,
    )
    request = pb.ResolveQuarantineRequest(
        quarantine_id=ack.quarantine_id, resolution=pb.RESOLUTION_APPLY, corrected_person=corrected
    )
    out = group.apply(lambda t: enrollment.resolve(t, request, frozenset({s.EMPLOYEE}), 0.0))
    assert out.ack.outcome == ACCEPTED
    # Applying the update as sent also matches now (block notation): its ack says so.
    r2 = s.resident(23)
    load(group, r2)
    held2 = s.acquisition("q2", s.EMPLOYEE, r2, "Q2", "2024-04-01")
    held2.person.address = "大阪府大阪市北区梅田3-1-1"
    (ack2,) = send(group, held2)
    moved2 = pb.Resident()
    moved2.CopyFrom(r2)
    moved2.address = moved.address
    load(group, moved2)
    request = pb.ResolveQuarantineRequest(quarantine_id=ack2.quarantine_id, resolution=pb.RESOLUTION_APPLY)
    out = group.apply(lambda t: enrollment.resolve(t, request, frozenset({s.EMPLOYEE}), 0.0))
    assert out.ack.outcome == ACCEPTED
    assert [(m.field, list(m.rules)) for m in out.ack.loose_matches] == [
        ("person.address", [pb.MATCH_RULE_ADDRESS_BLOCK_NOTATION])
    ]
