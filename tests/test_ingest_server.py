"""Ingestion on real servers: `onshi ingest-serve` (the single writer) and
`onshi serve` (read-only, same store) as subprocesses on 127.0.0.1, port 0.
Every change is checked the way a clinic would see it: CheckByCard /
CheckByNumber on the running eligibility server, no restart in between."""

from __future__ import annotations

import csv
import itertools
import json
import subprocess
import sys
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from onshi.client.statuses import field_violations
from onshi.commands.ingest import CSV_COLUMNS
from onshi.core.identifiers import with_check_digit
from onshi.v1 import eligibility_pb2 as epb
from onshi.v1 import eligibility_pb2_grpc, enrollment_pb2_grpc
from onshi.v1 import enrollment_pb2 as pb
from onshi.v1 import qualification_pb2 as qpb
from tests import ingest_support as s

VALID, INVALID, NO_RECORD = epb.VALIDITY_VALID, epb.VALIDITY_INVALID, epb.VALIDITY_NO_RECORD
NEWER = epb.VALIDITY_INVALID_NEWER_EXISTS
ACCEPTED, DUPLICATE = pb.ENROLLMENT_OUTCOME_ACCEPTED, pb.ENROLLMENT_OUTCOME_DUPLICATE
REJECTED, QUARANTINED = pb.ENROLLMENT_OUTCOME_REJECTED, pb.ENROLLMENT_OUTCOME_QUARANTINED
AS_OF = s.date("2025-06-01")
_ids = itertools.count(1000)


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ingest")
    data = tmp / "store"
    ingest = s.start_ingest(data, tmp)
    serve = s.start_eligibility(data, tmp)  # opened on the store the writer just created
    yield ingest, serve
    assert ingest.stop() == 0, ingest.log.read_text()  # graceful SIGTERM exits 0
    serve.stop()


@pytest.fixture(scope="module")
def stubs(servers):
    ingest, serve = servers
    with grpc.insecure_channel(ingest.target) as a, grpc.insecure_channel(serve.target) as b:
        yield (
            enrollment_pb2_grpc.EnrollmentServiceStub(a),
            enrollment_pb2_grpc.LinkServiceStub(a),
            eligibility_pb2_grpc.EligibilityServiceStub(b),
            a,
        )


def md(*insurers):
    return (("x-onshi-insurer", ",".join(insurers)),)


def new_residents(enrol, n=1):
    rs = [s.resident(next(_ids)) for _ in range(n)]
    enrol.PutResidents(pb.PutResidentsRequest(residents=rs))
    return rs


def stream(enrol, updates, insurers=s.INSURERS):
    return list(enrol.StreamUpdates(iter(updates), metadata=md(*insurers), timeout=30))


def by_number(check, insurer, number, r, symbol="K1", branch="00", as_of=AS_OF):
    return check.CheckByNumber(
        epb.CheckByNumberRequest(
            insurer_number=insurer, symbol=symbol, number=number, branch=branch, birth_date=r.birth_date, as_of=as_of
        ),
        timeout=5,
    )


def by_card(check, serial, as_of=AS_OF):
    return check.CheckByCard(epb.CheckByCardRequest(card_serial=serial, as_of=as_of), timeout=5)


def link(linker, r, serial, insurer, number, person=None):
    return linker.LinkCard(
        pb.LinkCardRequest(
            card_serial=serial,
            resident_id=r.resident_id,
            person=person or s.person(r),
            insurer_number=insurer,
            insured_number=pb.InsuredNumber(symbol="K1", number=number, branch="00"),
            consent=True,
        ),
        timeout=10,
    )


def test_stream_then_seen_by_number_and_card_and_duplicate_on_resend(stubs):
    enrol, linker, check, _ = stubs
    (r,) = new_residents(enrol)
    number = f"A{r.resident_id[-5:]}"
    before = by_number(check, s.EMPLOYEE, number, r)
    assert before.validity == NO_RECORD
    updates = [
        s.acquisition("a1", s.EMPLOYEE, r, number, "2024-04-01", ratio=30),
        s.ratio_change("a2", s.EMPLOYEE, r, number, 20),
    ]
    acks = stream(enrol, updates)
    assert [(a.update_id, a.outcome) for a in acks] == [("a1", ACCEPTED), ("a2", ACCEPTED)]
    # Seen at once by the running eligibility server: no restart, MVCC.
    seen = by_number(check, s.EMPLOYEE, number, r)
    assert seen.validity == VALID
    (q,) = seen.qualifications
    assert (q.number, q.burden_ratio_percent, q.person.name) == (number, 20, s.person(r).name)
    # The card answers once the person links it (初回紐づけ).
    serial = f"C0FFEE{r.resident_id}"
    assert by_card(check, serial).validity == NO_RECORD
    link(linker, r, serial, s.EMPLOYEE, number)
    assert by_card(check, serial).validity == VALID
    # Resend: same outcome as the first time, applied once.
    again = stream(enrol, updates)
    assert [(a.outcome, a.first_outcome) for a in again] == [(DUPLICATE, ACCEPTED)] * 2
    assert by_number(check, s.EMPLOYEE, number, r).qualifications[0].burden_ratio_percent == 20


def test_loss_and_new_insurer_by_card_and_number_and_notice(stubs):
    enrol, linker, check, _ = stubs
    (r,) = new_residents(enrol)
    old, new = f"N{r.resident_id[-5:]}", f"E{r.resident_id[-5:]}"
    assert stream(enrol, [s.acquisition("b1", s.NHI, r, old, "2020-04-01")])[0].outcome == ACCEPTED
    serial = f"BEEF{r.resident_id}"
    link(linker, r, serial, s.NHI, old)
    # DOMAIN.md §6: moved to an employee plan on 4/1; the NHI registers its loss later.
    assert stream(enrol, [s.acquisition("b2", s.EMPLOYEE, r, new, "2025-04-01")])[0].outcome == ACCEPTED
    # The NHI still shows them insured, so it is told (seed 001: stop billing premiums).
    notices = enrol.ListNotices(pb.ListNoticesRequest(), metadata=md(s.NHI)).notices
    mine = [n for n in notices if n.insured_number.number == old]
    assert len(mine) == 1
    assert (mine[0].new_insurer_number, mine[0].new_acquisition_date.year) == (s.EMPLOYEE, 2025)
    # Others do not see it; acknowledging closes it.
    assert not [
        n
        for n in enrol.ListNotices(pb.ListNoticesRequest(), metadata=md(s.EMPLOYEE)).notices
        if n.insured_number.number == old
    ]
    assert (
        enrol.AcknowledgeNotices(
            pb.AcknowledgeNoticesRequest(notice_ids=[mine[0].notice_id]), metadata=md(s.EMPLOYEE)
        ).acknowledged
        == 0
    )
    assert (
        enrol.AcknowledgeNotices(
            pb.AcknowledgeNoticesRequest(notice_ids=[mine[0].notice_id]), metadata=md(s.NHI)
        ).acknowledged
        == 1
    )
    assert not [
        n
        for n in enrol.ListNotices(pb.ListNoticesRequest(), metadata=md(s.NHI)).notices
        if n.insured_number.number == old
    ]
    assert by_card(check, serial).validity == epb.VALIDITY_MULTIPLE  # both open until the loss arrives
    ack = stream(enrol, [s.loss("b3", s.NHI, r, old, "2025-04-01")])[0]
    assert ack.outcome == ACCEPTED
    card = by_card(check, serial)
    assert card.validity == VALID and card.qualifications[0].insurer_number == s.EMPLOYEE
    lost = by_number(check, s.NHI, old, r)
    assert lost.validity == NEWER  # and the newer insurer's data is not revealed
    assert [q.insurer_number for q in lost.qualifications] == [s.NHI]
    assert lost.qualifications[0].loss_reason == qpb.LOSS_REASON_OTHER_INSURANCE


@pytest.mark.parametrize("field", ["name", "birth_date", "sex"])
def test_quarantined_on_mismatch_invisible_until_resolved(stubs, field):
    enrol, _, check, _ = stubs
    (r,) = new_residents(enrol)
    number = f"Q{r.resident_id[-5:]}"
    wrong = s.acquisition(f"q-{field}", s.KYOKAI, r, number, "2024-10-01")
    if field == "name":
        wrong.person.name = "山田花子"
    elif field == "birth_date":
        wrong.person.birth_date.day = wrong.person.birth_date.day % 28 + 1
    else:
        wrong.person.sex = qpb.SEX_MALE if r.sex == qpb.SEX_FEMALE else qpb.SEX_FEMALE
    later = s.ratio_change(f"q-{field}-later", s.KYOKAI, r, number, 10)
    first, held = stream(enrol, [wrong, later])
    reason = {
        "name": pb.QUARANTINE_REASON_NAME_MISMATCH,
        "birth_date": pb.QUARANTINE_REASON_BIRTH_DATE_MISMATCH,
        "sex": pb.QUARANTINE_REASON_SEX_MISMATCH,
    }[field]
    assert (first.outcome, list(first.quarantine_reasons)) == (QUARANTINED, [reason])
    # A later update of the same person waits behind it instead of failing or jumping the queue.
    assert (held.outcome, list(held.quarantine_reasons)) == (QUARANTINED, [pb.QUARANTINE_REASON_HELD_BEHIND])
    assert by_number(check, s.KYOKAI, number, r).validity == NO_RECORD  # invisible
    listed = enrol.ListQuarantine(pb.ListQuarantineRequest(), metadata=md(s.KYOKAI)).updates
    entry = next(e for e in listed if e.quarantine_id == first.quarantine_id)
    assert entry.update.update_id == wrong.update_id and entry.registry_record.resident_id == r.resident_id
    assert not [
        e
        for e in enrol.ListQuarantine(pb.ListQuarantineRequest(), metadata=md(s.EMPLOYEE)).updates
        if e.quarantine_id == first.quarantine_id
    ]
    # Another insurer may not resolve it; the held one may not jump ahead either.
    with pytest.raises(grpc.RpcError) as denied:
        enrol.ResolveQuarantine(
            pb.ResolveQuarantineRequest(quarantine_id=first.quarantine_id, resolution=pb.RESOLUTION_APPLY),
            metadata=md(s.EMPLOYEE),
        )
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.RpcError) as early:
        enrol.ResolveQuarantine(
            pb.ResolveQuarantineRequest(quarantine_id=held.quarantine_id, resolution=pb.RESOLUTION_APPLY),
            metadata=md(s.KYOKAI),
        )
    assert early.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    # Applying unchanged still does not match: stays quarantined.
    still = enrol.ResolveQuarantine(
        pb.ResolveQuarantineRequest(quarantine_id=first.quarantine_id, resolution=pb.RESOLUTION_APPLY),
        metadata=md(s.KYOKAI),
    )
    assert still.ack.outcome == QUARANTINED and by_number(check, s.KYOKAI, number, r).validity == NO_RECORD
    # Corrected: applied, and the held update is released after it, in order.
    done = enrol.ResolveQuarantine(
        pb.ResolveQuarantineRequest(
            quarantine_id=first.quarantine_id, resolution=pb.RESOLUTION_APPLY, corrected_person=s.person(r)
        ),
        metadata=md(s.KYOKAI),
    )
    assert done.ack.outcome == ACCEPTED
    assert [(a.update_id, a.outcome) for a in done.released] == [(later.update_id, ACCEPTED)]
    seen = by_number(check, s.KYOKAI, number, r)
    assert seen.validity == VALID and seen.qualifications[0].burden_ratio_percent == 10
    assert seen.qualifications[0].person.name == s.person(r).name
    # Resolved: gone from the list; a resend is a DUPLICATE of the final outcome.
    assert not [
        e
        for e in enrol.ListQuarantine(pb.ListQuarantineRequest(), metadata=md(s.KYOKAI)).updates
        if e.quarantine_id in (first.quarantine_id, held.quarantine_id)
    ]
    again = stream(enrol, [wrong])[0]
    assert (again.outcome, again.first_outcome) == (DUPLICATE, ACCEPTED)


def test_quarantine_discard_keeps_the_record_and_unknown_resident(stubs):
    enrol, _, check, _ = stubs
    stranger = s.resident(next(_ids))  # never loaded into the registry
    ack = stream(enrol, [s.acquisition("d1", s.KYOKAI, stranger, "D1", "2024-10-01")])[0]
    assert list(ack.quarantine_reasons) == [pb.QUARANTINE_REASON_RESIDENT_UNKNOWN]
    with pytest.raises(grpc.RpcError) as no_reason:
        enrol.ResolveQuarantine(
            pb.ResolveQuarantineRequest(quarantine_id=ack.quarantine_id, resolution=pb.RESOLUTION_DISCARD),
            metadata=md(s.KYOKAI),
        )
    assert no_reason.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert ("reason", "required when discarding") in field_violations(no_reason.value)
    out = enrol.ResolveQuarantine(
        pb.ResolveQuarantineRequest(
            quarantine_id=ack.quarantine_id, resolution=pb.RESOLUTION_DISCARD, reason="not our member"
        ),
        metadata=md(s.KYOKAI),
    )
    assert out.ack.outcome == pb.ENROLLMENT_OUTCOME_DISCARDED
    again = stream(enrol, [s.acquisition("d1", s.KYOKAI, stranger, "D1", "2024-10-01")])[0]
    assert (again.outcome, again.first_outcome) == (DUPLICATE, pb.ENROLLMENT_OUTCOME_DISCARDED)
    assert by_number(check, s.KYOKAI, "D1", stranger).validity == NO_RECORD


def test_rejected_with_field_violations_stream_continues(stubs):
    enrol, _, check, _ = stubs
    (r, other) = new_residents(enrol, 2)
    bad_insurer = s.acquisition("r1", s.EMPLOYEE, r, "R1", "2024-04-01")
    bad_insurer.insurer_number = "06139991"  # check digit wrong
    bad_date = s.acquisition("r2", s.EMPLOYEE, r, "R2", "2024-04-01")
    bad_date.acquisition.qualification.acquisition_date.month = 13
    no_reason = s.loss("r3", s.EMPLOYEE, r, "R3", "2025-01-01", reason=0)
    not_mine = s.acquisition("r4", s.KYOKAI, r, "R4", "2024-04-01")  # stream declares EMPLOYEE only
    unknown_loss = s.loss("r5", s.EMPLOYEE, r, "NOPE", "2025-01-01")
    good = s.acquisition("r6", s.EMPLOYEE, r, "R6", "2024-04-01")
    theft = s.acquisition("r7", s.EMPLOYEE, other, "R6", "2024-04-01")  # r's number for another person
    acks = stream(enrol, [bad_insurer, bad_date, no_reason, not_mine, unknown_loss, good, theft], [s.EMPLOYEE])
    assert [a.update_id for a in acks] == ["r1", "r2", "r3", "r4", "r5", "r6", "r7"]  # request order
    fields = {a.update_id: [v.field for v in a.field_violations] for a in acks}
    assert [a.outcome for a in acks] == [REJECTED] * 5 + [ACCEPTED, REJECTED]
    assert fields["r1"] == ["insurer_number"]
    assert fields["r2"] == ["acquisition.qualification.acquisition_date"]
    assert fields["r3"] == ["loss.loss_reason"]
    assert fields["r4"] == ["insurer_number"]
    assert fields["r5"] == ["loss.insured_number"]
    assert fields["r7"] == ["acquisition.qualification.number"]
    assert by_number(check, s.EMPLOYEE, "R6", r).validity == VALID
    assert by_number(check, s.EMPLOYEE, "R6", other).validity == NO_RECORD  # birth date differs: not theirs


def test_stream_without_insurer_metadata_is_unauthenticated(stubs):
    enrol, _, _, _ = stubs
    (r,) = new_residents(enrol)
    with pytest.raises(grpc.RpcError) as err:
        list(enrol.StreamUpdates(iter([s.acquisition("x1", s.EMPLOYEE, r, "X1", "2024-04-01")]), timeout=10))
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.RpcError) as bad:
        list(enrol.StreamUpdates(iter([]), metadata=md("1234"), timeout=10))
    assert bad.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_reissued_card_replaces_the_old_serial(stubs):
    enrol, linker, check, _ = stubs
    (r, other) = new_residents(enrol, 2)
    number = f"L{r.resident_id[-5:]}"
    stream(
        enrol,
        [
            s.acquisition("l1", s.EMPLOYEE, r, number, "2024-04-01"),
            s.acquisition("l2", s.EMPLOYEE, other, number + "X", "2024-04-01"),
        ],
    )
    old_serial, new_serial = f"A1{r.resident_id}", f"A2{r.resident_id}"
    first = link(linker, r, old_serial, s.EMPLOYEE, number)
    assert first.replaced_card_serial == ""
    second = link(linker, r, new_serial, s.EMPLOYEE, number)
    assert second.replaced_card_serial == f"A1{r.resident_id}".upper().lstrip("0")
    assert by_card(check, old_serial).validity == NO_RECORD
    assert by_card(check, new_serial).validity == VALID
    # The linking-completed notices, for the person to fetch.
    notices = linker.ListLinkNotices(pb.ListLinkNoticesRequest(resident_id=r.resident_id)).notices
    assert [n.card_serial for n in notices] == [old_serial.upper(), new_serial.upper()]
    # Refusals: someone else's number, the registry mismatch, no consent, a serial in use.
    with pytest.raises(grpc.RpcError) as theirs:
        link(linker, r, f"A3{r.resident_id}", s.EMPLOYEE, number + "X")
    assert theirs.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    wrong = s.person(r)
    wrong.birth_date.year -= 1
    with pytest.raises(grpc.RpcError) as mismatch:
        link(linker, r, f"A3{r.resident_id}", s.EMPLOYEE, number, person=wrong)
    assert mismatch.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    with pytest.raises(grpc.RpcError) as taken:
        link(linker, other, new_serial, s.EMPLOYEE, number + "X")
    assert taken.value.code() == grpc.StatusCode.ALREADY_EXISTS
    with pytest.raises(grpc.RpcError) as no_consent:
        linker.LinkCard(
            pb.LinkCardRequest(
                card_serial="ZZ",
                resident_id=r.resident_id,
                person=s.person(r),
                insurer_number=s.EMPLOYEE,
                consent=False,
            ),
            timeout=10,
        )
    assert no_consent.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert {f for f, _ in field_violations(no_consent.value)} >= {"card_serial", "consent", "insured_number.number"}
    assert by_card(check, new_serial).validity == VALID


def test_registry_refuses_bad_records(stubs):
    enrol, _, _, _ = stubs
    bad = s.resident(1)
    bad.resident_id = "12AB"
    bad.sex = 0
    with pytest.raises(grpc.RpcError) as err:
        enrol.PutResidents(pb.PutResidentsRequest(residents=[s.resident(2), bad]))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert {f for f, _ in field_violations(err.value)} == {"residents[1].resident_id", "residents[1].sex"}


def test_health_and_reflection(stubs):
    _, _, _, channel = stubs
    health = health_pb2_grpc.HealthStub(channel)
    for name in ("", "onshi.v1.EnrollmentService", "onshi.v1.LinkService"):
        assert (
            health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5).status
            == health_pb2.HealthCheckResponse.SERVING
        )
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    (answer,) = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    names = {svc.name for svc in answer.list_services_response.service}
    assert {"onshi.v1.EnrollmentService", "onshi.v1.LinkService", "grpc.health.v1.Health"} <= names


def test_ingest_file_csv_and_jsonl_with_summary(stubs, servers, tmp_path):
    _enrol, _, check, _ = stubs
    ingest, _ = servers
    rs = [s.resident(next(_ids)) for _ in range(3)]
    reg = tmp_path / "registry.csv"
    reg.write_text(
        "resident_id,name,name_kana,birth_date,sex,address,postcode\n"
        + "".join(
            f"{r.resident_id},{r.name},{r.name_kana},{r.birth_date.year:04d}-{r.birth_date.month:02d}-"
            f"{r.birth_date.day:02d},{'M' if r.sex == 1 else 'F'},{r.address},{r.postcode}\n"
            for r in rs
        )
    )

    def run(*a):
        return subprocess.run(
            s.onshi(*a, "--target", ingest.target, "--no-progress"),
            capture_output=True,
            text=True,
            timeout=60,
            env=s._env(),
        )

    out = run("ingest-file", str(reg), "--registry")
    assert out.returncode == 0, out.stderr
    assert "3 registry records stored" in out.stdout

    def birth(r):
        return f"{r.birth_date.year:04d}-{r.birth_date.month:02d}-{r.birth_date.day:02d}"

    rows = [
        dict(
            update_id=f"f{r.resident_id}",
            insurer_number=s.EMPLOYEE,
            resident_id=r.resident_id,
            change="acquisition",
            name=s.person(r).name,
            name_kana=s.person(r).name_kana,
            birth_date=birth(r),
            sex=str(r.sex),
            address=s.person(r).address,
            symbol="K1",
            number=f"F{i}",
            branch="00",
            relationship="insured",
            insurer_name="テスト健保",
            card_kind="employee",
            acquisition_date="2024-04-01",
            burden_ratio="30",
            elderly_ratio="20",
            elderly_from="2024-08-01",
            subsidies='[{{"payerNumber": "{}", "recipientNumber": "1234567", "programme": "子ども医療", '
            '"burdenRatioPercent": 0, "validFrom": {{"year": 2024, "month": 4, "day": 1}}}}]'.format(
                with_check_digit("8113001")
            ),
        )
        for i, r in enumerate(rs)
    ]
    rows.append(
        dict(
            update_id="fbad",
            insurer_number=s.EMPLOYEE,
            resident_id=rs[0].resident_id,
            change="loss",
            name=rs[0].name,
            name_kana=rs[0].name_kana,
            birth_date="1900-01-01",
            sex=str(rs[0].sex),
            address=rs[0].address,
            symbol="K1",
            number="F0",
            branch="00",
            loss_date="2025-01-01",
            loss_reason="01",
        )
    )
    csv_file = tmp_path / "updates.csv"
    with open(csv_file, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    out = run("ingest-file", str(csv_file))
    assert out.returncode == 0, out.stderr
    assert "4 of 4 updates: accepted 3, duplicate 0, rejected 0, quarantined 1" in out.stdout
    seen = by_number(check, s.EMPLOYEE, "F1", rs[1])
    assert seen.validity == VALID
    assert seen.qualifications[0].elderly_recipient.burden_ratio_percent == 20
    assert seen.qualifications[0].subsidies[0].programme == "子ども医療"
    out = run("ingest-file", str(csv_file))
    assert "accepted 0, duplicate 4" in out.stdout
    # JSON lines: one EnrollmentUpdate (protobuf JSON) per line.
    from google.protobuf import json_format

    jl = tmp_path / "updates.jsonl"
    jl.write_text(json_format.MessageToJson(s.ratio_change("j1", s.EMPLOYEE, rs[2], "F2", 10), indent=None) + "\n")
    out = run("ingest-file", str(jl), "--report", str(tmp_path / "report.jsonl"))
    assert out.returncode == 0 and "accepted 1" in out.stdout, out.stderr
    assert by_number(check, s.EMPLOYEE, "F2", rs[2]).qualifications[0].burden_ratio_percent == 10
    # A malformed file sends nothing and names the line.
    broken = tmp_path / "broken.csv"
    broken.write_text(csv_file.read_text().replace("2024-04-01", "2024-13-01", 1))
    out = run("ingest-file", str(broken))
    assert out.returncode == 2 and "line 2" in out.stderr
    report = [json.loads(line) for line in (tmp_path / "report.jsonl").read_text().splitlines()]
    assert report == []


def test_cli_help_lists_ingest_commands():
    out = subprocess.run(
        [sys.executable, "-m", "onshi.cli", "--help"], capture_output=True, text=True, env=s._env(), timeout=30
    )
    assert "ingest-serve" in out.stdout and "ingest-file" in out.stdout


def test_eligibility_server_follows_map_growth_without_restart(tmp_path, impl):
    """The writer doubles the map as the store grows; a running eligibility
    server keeps seeing new commits (it must remap, not stop)."""
    data = tmp_path / "store"
    ingest = s.start_ingest(data, tmp_path, 0, "--map-size", str(1 << 20))
    serve = None
    try:
        serve = s.start_eligibility(data, tmp_path, impl)
        people = [s.resident(50_000 + i) for i in range(6000)]
        with grpc.insecure_channel(ingest.target) as a, grpc.insecure_channel(serve.target) as b:
            enrol = enrollment_pb2_grpc.EnrollmentServiceStub(a)
            check = eligibility_pb2_grpc.EligibilityServiceStub(b)
            first = people[0]
            enrol.PutResidents(pb.PutResidentsRequest(residents=people[:1]), timeout=30)
            stream(enrol, [s.acquisition("m0", s.EMPLOYEE, first, "M0", "2024-04-01")])
            assert by_number(check, s.EMPLOYEE, "M0", first).validity == VALID
            enrol.PutResidents(pb.PutResidentsRequest(residents=people[1:]), timeout=60)
            acks = stream(
                enrol, [s.acquisition(f"m{i}", s.EMPLOYEE, r, f"M{i}", "2024-04-01") for i, r in enumerate(people) if i]
            )
            assert {a.outcome for a in acks} == {ACCEPTED}
            assert (data / "data.mdb").stat().st_size > 2 << 20  # grown past the first map
            last = people[-1]
            assert by_number(check, s.EMPLOYEE, f"M{len(people) - 1}", last).validity == VALID
    finally:
        ingest.kill()
        if serve is not None:
            serve.stop()


def test_sigterm_lets_an_open_stream_finish_then_exits_cleanly(tmp_path):
    """Graceful stop: health NOT_SERVING, the open stream gets its remaining acks
    within --grace, queued writes are committed, exit status 0."""
    import signal
    import threading

    data = tmp_path / "store"
    ingest = s.start_ingest(data, tmp_path, 0, "--grace", "10")
    try:
        people = [s.resident(70_000 + i) for i in range(400)]
        release = threading.Event()

        def updates():
            for i, r in enumerate(people[:200]):
                yield s.acquisition(f"t{i}", s.EMPLOYEE, r, f"T{i}", "2024-04-01")
            release.wait(30)  # the stream stays open across the SIGTERM
            for i, r in enumerate(people[200:], 200):
                yield s.acquisition(f"t{i}", s.EMPLOYEE, r, f"T{i}", "2024-04-01")

        with grpc.insecure_channel(ingest.target) as channel:
            enrol = enrollment_pb2_grpc.EnrollmentServiceStub(channel)
            enrol.PutResidents(pb.PutResidentsRequest(residents=people), timeout=30)
            acks = []
            call = enrol.StreamUpdates(updates(), metadata=md(s.EMPLOYEE), timeout=60)
            for ack in call:
                acks.append(ack)
                if len(acks) == 200:
                    ingest.proc.send_signal(signal.SIGTERM)
                    health = health_pb2_grpc.HealthStub(channel)
                    deadline = time.monotonic() + 20  # a loaded machine may take a while to run the handler
                    while (
                        time.monotonic() < deadline
                    ):  # shutdown has begun: the service says so (or takes no new calls)
                        try:
                            status = health.Check(health_pb2.HealthCheckRequest(), timeout=5).status
                        except grpc.RpcError as exc:
                            assert exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)
                            status = health_pb2.HealthCheckResponse.NOT_SERVING
                        if status == health_pb2.HealthCheckResponse.NOT_SERVING:
                            break
                        time.sleep(0.01)
                    assert status == health_pb2.HealthCheckResponse.NOT_SERVING
                    release.set()
            assert len(acks) == 400 and {a.outcome for a in acks} == {ACCEPTED}
        assert ingest.proc.wait(timeout=30) == 0
        assert "stopped (" in ingest.log.read_text()
    finally:
        ingest.kill()
    from onshi.core import enrollment
    from onshi.core.writer import Writer, WriteTxn

    writer = Writer(data)
    try:
        enrollment.open_dbs(writer)
        with writer.env.begin() as txn:
            assert sum(1 for _ in WriteTxn(txn, writer.dbs).scan("applied")) == 400
    finally:
        writer.close()


def test_batches_rpc_limits_and_quarantine_paging(stubs):
    enrol, _, _, _ = stubs
    (r,) = new_residents(enrol)
    too_many = pb.StreamUpdateBatchesRequest(updates=[pb.EnrollmentUpdate(update_id=f"x{i}") for i in range(10_001)])
    with pytest.raises(grpc.RpcError) as err:
        list(enrol.StreamUpdateBatches(iter([too_many]), metadata=md(s.EMPLOYEE), timeout=30))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    # Three quarantined updates of one insurer, listed a page at a time in ID order.
    wrong = []
    for i in range(3):
        u = s.acquisition(f"p{i}", s.NHI, r, f"P{i}", "2024-04-01")
        u.person.sex = 3 - r.sex
        wrong.append(u)
    responses = enrol.StreamUpdateBatches(
        iter([pb.StreamUpdateBatchesRequest(updates=wrong)]), metadata=md(s.NHI), timeout=30
    )
    acks = [a for response in responses for a in response.acks]  # acks may span responses
    ids = [a.quarantine_id for a in acks]
    assert [a.outcome for a in acks] == [QUARANTINED] * 3 and ids == sorted(ids)
    page1 = enrol.ListQuarantine(
        pb.ListQuarantineRequest(page_size=2, after_quarantine_id=ids[0] - 1), metadata=md(s.NHI)
    ).updates
    page2 = enrol.ListQuarantine(
        pb.ListQuarantineRequest(page_size=2, after_quarantine_id=page1[-1].quarantine_id), metadata=md(s.NHI)
    ).updates
    assert [e.quarantine_id for e in page1] == ids[:2] and [e.quarantine_id for e in page2][:1] == ids[2:]
    with pytest.raises(grpc.RpcError) as denied:
        enrol.ListQuarantine(pb.ListQuarantineRequest(insurer_number=s.EMPLOYEE), metadata=md(s.NHI))
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_variants_accepted_over_grpc_with_the_rule_named_and_quarantine_showing_todays_record(stubs):
    """On the real servers: a record written as an insurer's JIS X 0208 system
    writes it (old forms, a substitute, another block notation) is accepted,
    visible to a check, and its ack (both RPCs) names the loose rules; a held
    update lists the registry record as it is after the person moved."""
    enrol, _, check, _ = stubs
    rid = next(_ids)
    r = pb.Resident(
        resident_id=s.resident_id(rid),
        name="渡邊　髙志",
        name_kana="ワタナベ　タカシ",
        birth_date=s.date("1962-08-09"),
        sex=qpb.SEX_MALE,
        address="神奈川県茅ヶ崎市本村二丁目5番8号",
    )
    enrol.PutResidents(pb.PutResidentsRequest(residents=[r]))
    u = s.acquisition(f"v{rid}", s.KYOKAI, r, f"V{rid}", "2024-10-01")
    u.person.name, u.person.name_kana, u.person.address = "渡辺 高志", "ﾜﾀﾅﾍﾞ ﾀｶｼ", "神奈川県茅ケ崎市本村2-5-8"
    (ack,) = stream(enrol, [u])
    rules = [(m.field, list(m.rules)) for m in ack.loose_matches]
    assert ack.outcome == ACCEPTED and rules == [
        ("person.name", [pb.MATCH_RULE_KANJI_SUBSTITUTE, pb.MATCH_RULE_KANJI_OLD_FORM]),
        ("person.address", [pb.MATCH_RULE_ADDRESS_BLOCK_NOTATION, pb.MATCH_RULE_ADDRESS_PLACE_NAME_KANA]),
    ]
    assert by_number(check, s.KYOKAI, f"V{rid}", r).validity == VALID
    batch = enrol.StreamUpdateBatches(
        iter([pb.StreamUpdateBatchesRequest(updates=[u])]), metadata=md(s.KYOKAI), timeout=30
    )
    (again,) = [a for response in batch for a in response.acks]
    assert again.outcome == DUPLICATE and [(m.field, list(m.rules)) for m in again.loose_matches] == rules
    # Held for a stale address; the move reaches the registry; the list shows today's record.
    held = s.acquisition(f"w{rid}", s.KYOKAI, r, f"W{rid}", "2024-10-01")
    held.person.address = "大阪府大阪市北区梅田3-1-1"
    (first,) = stream(enrol, [held])
    assert first.outcome == QUARANTINED
    moved = pb.Resident()
    moved.CopyFrom(r)
    moved.address = "大阪府大阪市北区梅田三丁目1番1号"
    enrol.PutResidents(pb.PutResidentsRequest(residents=[moved]))
    listed = enrol.ListQuarantine(pb.ListQuarantineRequest(), metadata=md(s.KYOKAI)).updates
    entry = next(e for e in listed if e.quarantine_id == first.quarantine_id)
    assert entry.registry_record.address == moved.address
    rec = entry.registry_record
    done = enrol.ResolveQuarantine(
        pb.ResolveQuarantineRequest(
            quarantine_id=first.quarantine_id,
            resolution=pb.RESOLUTION_APPLY,
            corrected_person=qpb.Person(
                name=rec.name, name_kana=rec.name_kana, sex=rec.sex, birth_date=rec.birth_date, address=rec.address
            ),
        ),
        metadata=md(s.KYOKAI),
    )
    assert done.ack.outcome == ACCEPTED
