"""Hand-built stores for the claims tests: persons and qualifications written
through the real Writer into tmp dirs, claims built as protos."""

from __future__ import annotations

import datetime as dt

from onshi.core import dates
from onshi.core.claims import Verifier
from onshi.core.engine import open_engine
from onshi.core.identifiers import with_check_digit
from onshi.core.store import open_env
from onshi.core.writer import Writer
from onshi.v1 import claims_pb2 as cpb
from onshi.v1 import qualification_pb2 as qpb

D = dt.date
KYOKAI = with_check_digit("0113001")  # 協会けんぽ
KUMIAI = with_check_digit("0613002")  # 健保組合
SEAMEN = with_check_digit("0213001")  # 船員保険
ELDERLY = with_check_digit("3913001")  # 後期高齢者
NHI = with_check_digit("13101")  # municipal 国保, 6 digits
FACILITY = "1310000001"
OTHER_FACILITY = "1310000002"


def person(
    kana: str,
    birth: dt.date,
    sex: int = 1,
    address: str = "東京都千代田区千代田1-1",
    name: str = "患者",
    postcode: str = "1000001",
) -> qpb.Person:
    return qpb.Person(
        name=name, name_kana=kana, sex=sex, birth_date=dates.to_proto(birth), address=address, postcode=postcode
    )


def qual(
    insurer: str,
    symbol: str,
    number: str,
    branch: str,
    acquired: dt.date,
    lost: dt.date | None = None,
    name: str = "",
    **extra,
) -> qpb.Qualification:
    return qpb.Qualification(
        insurer_number=insurer,
        insurer_name=name or f"保険者{insurer}",
        symbol=symbol,
        number=number,
        branch=branch,
        acquisition_date=dates.to_proto(acquired),
        loss_date=dates.to_proto(lost) if lost else None,
        loss_reason=3 if lost else 0,
        burden_ratio_percent=extra.pop("burden_ratio_percent", 30),
        **extra,
    )


def write_people(path, people: list[tuple[qpb.Person, list[qpb.Qualification]]]) -> list[int]:
    writer = Writer(path)
    try:
        links = []
        for p, quals in people:

            def change(txn, p=p, quals=quals):
                link = txn.new_link_id()
                txn.put_history(link, p, quals)
                return link

            links.append(writer.apply(change))
        return links
    finally:
        writer.close()


def claim(
    claim_id: str,
    insurer: str,
    symbol: str,
    number: str,
    branch: str,
    birth: dt.date,
    first: dt.date,
    last: dt.date | None = None,
    *,
    days=(),
    points: int = 100,
    facility: str = FACILITY,
    declaration: cpb.SelfDeclaration | None = None,
    public_expense=(),
    high_cost: bool = False,
) -> cpb.Claim:
    return cpb.Claim(
        claim_id=claim_id,
        facility_code=facility,
        insurer_number=insurer,
        symbol=symbol,
        number=number,
        branch=branch,
        birth_date=dates.to_proto(birth),
        first_visit_date=dates.to_proto(first),
        last_visit_date=dates.to_proto(last or first),
        visit_days=list(days),
        kind=cpb.CLAIM_KIND_MEDICAL,
        points=points,
        declaration=declaration,
        public_expense_numbers=list(public_expense),
        high_cost=high_cost,
    )


def unknown_claim(
    claim_id: str,
    birth: dt.date,
    first: dt.date,
    last: dt.date | None = None,
    *,
    late_elderly: bool = False,
    points: int = 100,
    facility: str = FACILITY,
    days=(),
    **declared,
) -> cpb.Claim:
    return claim(
        claim_id,
        "77777777",
        "",
        "77777777" if late_elderly else "777777777",
        "",
        birth,
        first,
        last,
        days=days,
        points=points,
        facility=facility,
        declaration=cpb.SelfDeclaration(**declared),
    )


class Opened:
    """A Verifier over a store, with the engine and env it reads through."""

    def __init__(self, path, kind: str):
        self.engine = open_engine(path, kind)
        # py-lmdb opens a path once per process: reuse the pure engine's env.
        self.own_env = not hasattr(self.engine, "env")
        self.env = open_env(path, readonly=True) if self.own_env else self.engine.env
        self.verifier = Verifier(self.engine, self.env)

    def verify(self, *claims: cpb.Claim) -> list[cpb.Verdict]:
        return list(self.verifier.verify(list(claims)).verdicts)

    def one(self, c: cpb.Claim) -> cpb.Verdict:
        return self.verify(c)[0]

    def close(self) -> None:
        if self.own_env:
            self.env.close()
        self.engine.close()


def iso(d) -> str:
    return dt.date(d.year, d.month, d.day).isoformat()


def segments(v: cpb.Verdict) -> list[tuple]:
    return [(s.insurer_number, s.number, iso(s.first_day), iso(s.last_day), s.points) for s in v.segments]
