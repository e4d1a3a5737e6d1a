"""Property test: for generated populations and claims, a naive per-day model
(written from DOMAIN.md §6 over plain dates, independently of onshi.core.claims)
and the service's Verifier agree on every verdict, on both engines."""

from __future__ import annotations

import datetime as dt
import tempfile
from dataclasses import dataclass

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from onshi.core import identifiers
from onshi.v1 import claims_pb2 as cpb
from tests.claims_helpers import (
    ELDERLY,
    KUMIAI,
    KYOKAI,
    NHI,
    SEAMEN,
    Opened,
    claim,
    person,
    qual,
    unknown_claim,
    write_people,
)

BASE = dt.date(2024, 1, 1)
INSURERS = (KYOKAI, KUMIAI, SEAMEN, ELDERLY, NHI)
KANAS = ("アイ", "カキ")
ADDRESSES = ("東京都港区1-1", "東京都港区2-2")
BIRTHS = (dt.date(1950, 1, 1), dt.date(1980, 6, 6))
NEVER = dt.date.max


# --- the naive model -------------------------------------------------------------


@dataclass
class MQual:
    insurer: str
    number: str
    acquired: dt.date
    lost: dt.date | None

    @property
    def symbol(self) -> str:
        return "" if self.insurer == ELDERLY else "S"

    @property
    def branch(self) -> str:
        return "" if self.insurer == ELDERLY else "00"

    def covers(self, day: dt.date) -> bool:
        return self.acquired <= day and (self.lost is None or day < self.lost)

    def key(self) -> tuple:
        return (self.insurer, self.number)

    def rank(self) -> tuple:
        # the later acquired, then the later lost, then the number hash (the
        # documented deterministic tie-break) pays when the billed one does not
        raw = identifiers.number_key(self.insurer, self.symbol, self.number, self.branch)
        return (self.acquired, self.lost or NEVER, identifiers.number_hash(raw))


@dataclass
class MPerson:
    birth: dt.date
    sex: int
    kana: str
    address: str
    quals: list[MQual]


def split_points(points: int, weights: list[int]) -> list[int]:
    whole = sum(weights)
    exact = [points * w / whole for w in weights]
    parts = [points * w // whole for w in weights]
    left = points - sum(parts)
    order = sorted(range(len(weights)), key=lambda i: (-(exact[i] - parts[i]), i))
    for i in order[:left]:
        parts[i] += 1
    return parts


def model_days(billed: MQual | None, quals: list[MQual], days: list[dt.date]):
    """Per day: the payer, or None for a day without any qualification."""
    payers = []
    for day in days:
        covering = [q for q in quals if q.covers(day)]
        if not covering:
            return None, day
        if billed is not None and billed in covering:
            payers.append(billed)
        else:
            payers.append(max(covering, key=MQual.rank))
    return payers, None


def model_verdict(people: list[MPerson], c: dict):
    days = c["days"]
    if c["unknown"]:
        matches = [
            p
            for p in people
            if (p.kana, p.sex, p.birth) == (c["kana"], c["sex"], c["birth"])
            and (not c["address"] or p.address == c["address"])
        ]
        if len(matches) != 1:
            return cpb.OUTCOME_UNRESOLVED, 0, []
        payers, _ = model_days(None, matches[0].quals, days)
        if payers is None:
            return cpb.OUTCOME_UNRESOLVED, 0, []
        return cpb.OUTCOME_RESOLVED_UNKNOWN, 0, runs(payers, days, c["points"])
    holder = next((p for p in people for q in p.quals if q.key() == c["key"]), None)
    if holder is None:
        return cpb.OUTCOME_RETURN, cpb.RETURN_REASON_NUMBER_NOT_FOUND, []
    if holder.birth != c["birth"]:
        return cpb.OUTCOME_RETURN, cpb.RETURN_REASON_BIRTH_DATE_MISMATCH, []
    billed = next(q for q in holder.quals if q.key() == c["key"])
    payers, _ = model_days(billed, holder.quals, days)
    if payers is None:
        return cpb.OUTCOME_RETURN, cpb.RETURN_REASON_NO_QUALIFICATION, []
    if all(p is billed for p in payers):
        return cpb.OUTCOME_OK, 0, []
    if c["public_expense"]:
        return cpb.OUTCOME_RETURN, cpb.RETURN_REASON_PUBLIC_EXPENSE, []
    segs = runs(payers, days, c["points"])
    return (cpb.OUTCOME_REROUTE if len(segs) == 1 else cpb.OUTCOME_SPLIT), 0, segs


def runs(payers: list[MQual], days: list[dt.date], points: int) -> list[tuple]:
    groups: list[list] = []
    for payer, day in zip(payers, days, strict=True):
        if groups and groups[-1][0] is payer:
            groups[-1][2] = day
            groups[-1][3] += 1
        else:
            groups.append([payer, day, day, 1])
    shares = split_points(points, [g[3] for g in groups]) if len(groups) > 1 else [points]
    return [
        (g[0].insurer, g[0].number, g[1].isoformat(), g[2].isoformat(), s) for g, s in zip(groups, shares, strict=True)
    ]


# --- generation ----------------------------------------------------------------------


@st.composite
def populations(draw):
    """Persons whose qualifications mostly follow one another (job changes on
    the loss day, sometimes with a gap or an overlap = dual enrollment)."""
    people = []
    serial = iter(range(10_000, 99_999))
    for _ in range(draw(st.integers(1, 5))):
        quals = []
        start = BASE + dt.timedelta(days=draw(st.integers(0, 60)))
        for _ in range(draw(st.integers(1, 3))):
            length = draw(st.one_of(st.none(), st.integers(1, 60)))
            lost = start + dt.timedelta(days=length) if length else None
            quals.append(MQual(draw(st.sampled_from(INSURERS)), str(next(serial)), start, lost))
            step = draw(st.integers(-20, 5))  # next one: overlap, same day, or a gap
            start = (lost or start + dt.timedelta(days=30)) + dt.timedelta(days=step)
        people.append(
            MPerson(
                draw(st.sampled_from(BIRTHS)),
                draw(st.sampled_from((1, 2))),
                draw(st.sampled_from(KANAS)),
                draw(st.sampled_from(ADDRESSES)),
                quals,
            )
        )
    return people


@st.composite
def claims_for(draw, people: list[MPerson]):
    p = draw(st.sampled_from(people))
    # a visit period near one of the person's changes, within one month
    edges = [q.acquired for q in p.quals] + [q.lost for q in p.quals if q.lost]
    anchor = draw(st.sampled_from(edges)) + dt.timedelta(days=draw(st.integers(-12, 12)))
    month_days = (dt.date(anchor.year + anchor.month // 12, anchor.month % 12 + 1, 1) - dt.timedelta(days=1)).day
    first = draw(st.integers(max(1, anchor.day - 10), anchor.day))
    last = draw(st.integers(anchor.day, min(month_days, anchor.day + 10)))
    picked = draw(st.lists(st.integers(first, last), max_size=4)) if draw(st.booleans()) else []
    period = [anchor.replace(day=d) for d in range(first, last + 1)]
    days = sorted({anchor.replace(day=d) for d in (first, last, *picked)}) if picked else period
    c = dict(
        year=anchor.year,
        month=anchor.month,
        first=first,
        last=last,
        picked=picked,
        days=days,
        points=draw(st.integers(0, 10_000)),
        public_expense=draw(st.booleans()) and draw(st.booleans()),
    )
    kind = draw(st.sampled_from(("billed", "billed", "billed", "billed", "unknown", "stranger")))
    if kind == "unknown":
        c.update(unknown=True, kana=p.kana, sex=p.sex, birth=p.birth, address=draw(st.sampled_from(("", p.address))))
    else:
        q = draw(st.sampled_from(p.quals))
        number = q.number if kind == "billed" else "1"
        birth = p.birth if draw(st.integers(0, 9)) else p.birth + dt.timedelta(days=1)
        c.update(unknown=False, key=(q.insurer, number), symbol=q.symbol, branch=q.branch, birth=birth)
    return c


def to_proto(i: int, c: dict) -> cpb.Claim:
    first = dt.date(c["year"], c["month"], c["first"])
    last = dt.date(c["year"], c["month"], c["last"])
    if c["unknown"]:
        return unknown_claim(
            f"c{i}",
            c["birth"],
            first,
            last,
            days=c["picked"],
            points=c["points"],
            name_kana=c["kana"],
            sex=c["sex"],
            address=c["address"],
        )
    out = claim(
        f"c{i}",
        c["key"][0],
        c["symbol"],
        c["key"][1],
        c["branch"],
        c["birth"],
        first,
        last,
        days=c["picked"],
        points=c["points"],
        public_expense=["12345675"] if c["public_expense"] else [],
    )
    return out


def service_view(v: cpb.Verdict):
    segs = [(s.insurer_number, s.number, _iso(s.first_day), _iso(s.last_day), s.points) for s in v.segments]
    return v.outcome, v.return_reason, segs


def _iso(d) -> str:
    return dt.date(d.year, d.month, d.day).isoformat()


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_model_and_service_agree(impl, data):
    people = data.draw(populations())
    claims = data.draw(st.lists(claims_for(people), min_size=1, max_size=12))
    with tempfile.TemporaryDirectory() as tmp:
        write_people(
            tmp,
            [
                (
                    person(p.kana, p.birth, sex=p.sex, address=p.address),
                    [qual(q.insurer, q.symbol, q.number, q.branch, q.acquired, q.lost) for q in p.quals],
                )
                for p in people
            ],
        )
        opened = Opened(tmp, impl)
        try:
            verdicts = opened.verify(*[to_proto(i, c) for i, c in enumerate(claims)])
        finally:
            opened.close()
    for c, v in zip(claims, verdicts, strict=True):
        assert service_view(v) == model_verdict(people, c), (c, v)
