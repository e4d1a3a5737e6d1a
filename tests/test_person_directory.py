"""Whose records a person reads (AuditService.ListMyAccess): the subjects the
access log may name them by, over a real LMDB store and a real access log,
including the cards a re-issued card replaced."""

from __future__ import annotations

import datetime as dt

from onshi.core import audit, dates, identifiers
from onshi.core.store import open_env
from onshi.core.writer import Writer
from onshi.server.access_log import card_subject
from onshi.server.audit_service import my_records
from onshi.server.person_directory import PersonDirectory
from onshi.v1 import qualification_pb2 as qpb

OLD, NEW, OTHER = "A10001", "A10002", "B20001"


def person(n: int) -> qpb.Person:
    return qpb.Person(
        name=f"患者{n}", name_kana="カンジャ", sex=1, birth_date=dates.to_proto(dt.date(1970, 1, n)), address="東京都"
    )


def store_with_reissued_card(path: str) -> None:
    writer = Writer(path)
    try:

        def people(t):
            t.reserve_link_ids(2)
            t.put_history(1, person(1), [])
            t.put_history(2, person(2), [])
            t.link_card(identifiers.card_serial_key(OLD), 1)
            t.link_card(identifiers.card_serial_key(OTHER), 2)

        writer.apply(people)
        writer.apply(lambda t: t.link_card(identifiers.card_serial_key(NEW), 1))  # the card is re-issued
    finally:
        writer.close()


def checked(log: audit.AuditLog, serial: str, facility: str) -> None:
    log.append(
        audit.AuditRecord(
            actor=f"facility:{facility}",
            action="CheckByCard",
            subject=card_subject(identifiers.card_serial_key(serial)),
            items="validity=1 qualifications=1",
            purpose="visit",
        )
    )


def test_records_under_a_replaced_card_stay_the_persons(tmp_path):
    store = str(tmp_path / "store")
    store_with_reissued_card(store)
    log = audit.AuditLog(str(tmp_path / "audit"), "s")
    checked(log, OLD, "1310000001")  # before the re-issue
    checked(log, NEW, "1310000002")  # after it
    checked(log, OTHER, "1310000003")  # someone else
    log.close()
    env = open_env(store, readonly=True)
    try:
        directory = PersonDirectory(env)
        assert directory.link_of_card(identifiers.card_serial_key(OLD)) is None  # the old card no longer checks
        link = directory.link_of_card(identifiers.card_serial_key(NEW))
        assert link == 1
        subjects = directory.subjects(link)
        assert {card_subject(identifiers.card_serial_key(s)) for s in (OLD, NEW)} <= subjects
        mine = my_records(str(tmp_path / "audit"), link, subjects)
        assert sorted(r.actor for r in mine) == ["facility:1310000001", "facility:1310000002"]
        theirs = my_records(str(tmp_path / "audit"), 2, directory.subjects(2))
        assert [r.actor for r in theirs] == ["facility:1310000003"]
    finally:
        env.close()
