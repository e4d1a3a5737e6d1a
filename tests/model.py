"""A naive in-memory model of the check rules (DOMAIN.md §3), written from the
domain text over plain dates, independently of onshi.core.history, so tests can
demand that native, pure and this model agree."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

VALID, INVALID, NEWER, NO_RECORD, MULTIPLE = 1, 2, 3, 4, 5


@dataclass
class Qual:
    insurer: str
    symbol: str
    number: str
    branch: str
    acquired: dt.date
    lost: dt.date | None = None
    name: str = ""

    def covers(self, day: dt.date) -> bool:
        return self.acquired <= day and (self.lost is None or day < self.lost)

    def sort_key(self):
        return (self.acquired, self.lost or dt.date.max)


@dataclass
class ModelPerson:
    birth: dt.date
    quals: list[Qual] = field(default_factory=list)
    card: str | None = None


def check_card(persons: list[ModelPerson], card: str, day: dt.date) -> tuple[int, list[Qual]]:
    owner = next((p for p in persons if p.card is not None and int(p.card, 16) == int(card, 16)), None)
    if owner is None or not owner.quals:
        return NO_RECORD, []
    covering = [q for q in owner.quals if q.covers(day)]
    if len(covering) == 1:
        return VALID, covering
    if covering:
        return MULTIPLE, covering
    begun = [q for q in owner.quals if q.acquired <= day]
    if not begun:
        return NO_RECORD, []
    return INVALID, [max(begun, key=Qual.sort_key)]


def check_number(persons: list[ModelPerson], key, birth: dt.date, day: dt.date) -> tuple[int, list[Qual]]:
    """key: a normalised (insurer, symbol, number, branch) tuple."""
    for person in persons:
        mine = [q for q in person.quals if norm(q) == key]
        if not mine:
            continue
        if person.birth != birth:
            return NO_RECORD, []
        covering = [q for q in mine if q.covers(day)]
        if len(covering) == 1:
            return VALID, covering
        if covering:
            return MULTIPLE, covering
        begun = [q for q in mine if q.acquired <= day]
        if not begun:
            return NO_RECORD, []
        latest = max(begun, key=Qual.sort_key)
        newer = any(q.acquired > latest.acquired for q in person.quals)
        return (NEWER if newer else INVALID), [latest]
    return NO_RECORD, []


def norm(q: Qual) -> tuple[str, str, str, str]:
    if len(q.insurer) == 8 and q.insurer.startswith("39"):  # 後期高齢者: per-person number
        return (q.insurer, "", q.number, "")
    return (q.insurer, q.symbol, q.number, q.branch.zfill(2))


def store_population(path, persons: list[ModelPerson]) -> list[int]:
    """Write model persons through the real writer (one transaction each);
    returns their link IDs."""
    from onshi.core import dates, identifiers
    from onshi.core.writer import Writer
    from onshi.v1 import qualification_pb2 as pb

    writer = Writer(path)
    links = []
    try:
        for i, person in enumerate(persons):
            proto_person = pb.Person(
                name=f"患者{i}", name_kana=f"カンジャ{i}", sex=1 + i % 2, birth_date=dates.to_proto(person.birth)
            )
            quals = [
                pb.Qualification(
                    insurer_number=q.insurer,
                    insurer_name=q.name or f"保険者{q.insurer}",
                    symbol=q.symbol,
                    number=q.number,
                    branch=q.branch,
                    acquisition_date=dates.to_proto(q.acquired),
                    loss_date=dates.to_proto(q.lost) if q.lost else None,
                    loss_reason=3 if q.lost else 0,
                    burden_ratio_percent=30,
                )
                for q in person.quals
            ]

            def change(txn, person=person, proto_person=proto_person, quals=quals):
                link = txn.new_link_id()
                txn.put_history(link, proto_person, quals)
                if person.card:
                    txn.link_card(identifiers.card_serial_key(person.card), link)
                return link

            links.append(writer.apply(change))
    finally:
        writer.close()
    return links
