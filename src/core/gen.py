"""`onshi gen`: a deterministic synthetic population, written through the one writer.

The population is built household by household from `random.Random(seed)` only,
so a seed always gives the same store. Persons get link IDs in generation order
and are streamed into `Writer.bulk_load` (sorted append loads; the index keys are
sorted there), which is what makes 10 million persons a matter of minutes.

What it contains (rates are per household or person; the first households are
fixed scenarios so that even a tiny population shows every feature):
  * ~3,000 insurers across schemes (insurers.py), numbers with check digits;
  * households: the insured (本人, branch 00) with dependents (家族, 01..) in
    employee plans; every member insured in 国保 (branches 00.. on one number);
  * job changes: loss reason 03 and a new acquisition on the same or next day
    (or with a 国保 spell in between); dependents move with the insured;
  * the 75th birthday: the old qualification is lost and 後期高齢者医療 begins on
    the birthday itself; dependents of an insured who turns 75 join 国保 that day;
  * deaths (01, loss the day after death), public assistance (02), other (99);
  * dual enrollment: 船員保険 or 共済 kept open beside 後期高齢者医療;
  * burden ratios, preschool flag, elderly recipient, limit-amount and
    specific-disease certificates, public-expense subsidies;
  * names with characters outside JIS X 0208 (𠮷, 髙, 﨑, 濵, 德) and IVS sequences;
  * card serials of 64-128 random bits; some persons have no card linked.

Dates are fixed relative to REFERENCE (not today) so the content is reproducible;
events after REFERENCE are only the 75th-birthday moves up to HORIZON (late-elderly
cards are issued ahead of the birthday). DIR/gen.json holds the summary and sample
identifiers whose answers hold on any day from REFERENCE on.
"""

from __future__ import annotations

import bisect
import datetime as dt
import gc
import itertools
import json
import os
import random
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO, TypeVar

from google.type import date_pb2

from ..v1 import qualification_pb2 as pb
from . import dates, identifiers
from . import insurers as ins
from .writer import Writer

REFERENCE = dt.date(2026, 4, 1)
HORIZON = dt.date(2028, 3, 31)
R = dates.to_day(REFERENCE)
HORIZON_DAY = dates.to_day(HORIZON)
NEVER = dates.NEVER
_T = TypeVar("_T")
# (link ID, person, qualifications, card serial key or None): what Writer.bulk_load takes
PersonRow = tuple[int, pb.Person, list[pb.Qualification], bytes | None]
BYTES_PER_PERSON_ESTIMATE = 2_600  # measured ~1.3-1.5 KB; the writer grows the map anyway

# Loss reasons (資格喪失事由), the proto enum equals the real codes.
DEATH = pb.LOSS_REASON_DEATH
PUBLIC_ASSISTANCE = pb.LOSS_REASON_PUBLIC_ASSISTANCE
OTHER_INSURANCE = pb.LOSS_REASON_OTHER_INSURANCE
OTHER = pb.LOSS_REASON_OTHER
NOT_LOST = pb.LOSS_REASON_UNSPECIFIED  # the reason of a qualification not lost
INSURED = pb.RELATIONSHIP_INSURED
DEPENDENT = pb.RELATIONSHIP_DEPENDENT

# --- names ---------------------------------------------------------------------
# (kanji, kana, weight). Variants outside JIS X 0208: 髙 U+9AD9, 𠮷 U+20BB7 (outside
# the BMP), 﨑 U+FA11, 濵 U+6FF5, 德 U+5FB7, and IVS sequences (base + U+E0100).
SURNAMES = (
    ("佐藤", "サトウ", 190),
    ("鈴木", "スズキ", 180),
    ("高橋", "タカハシ", 140),
    ("田中", "タナカ", 130),
    ("伊藤", "イトウ", 110),
    ("渡辺", "ワタナベ", 110),
    ("山本", "ヤマモト", 110),
    ("中村", "ナカムラ", 105),
    ("小林", "コバヤシ", 100),
    ("加藤", "カトウ", 90),
    ("吉田", "ヨシダ", 85),
    ("山田", "ヤマダ", 80),
    ("佐々木", "ササキ", 70),
    ("山口", "ヤマグチ", 65),
    ("松本", "マツモト", 65),
    ("井上", "イノウエ", 60),
    ("木村", "キムラ", 60),
    ("林", "ハヤシ", 55),
    ("斎藤", "サイトウ", 55),
    ("清水", "シミズ", 55),
    ("山崎", "ヤマザキ", 50),
    ("森", "モリ", 50),
    ("池田", "イケダ", 50),
    ("橋本", "ハシモト", 50),
    ("阿部", "アベ", 50),
    ("石川", "イシカワ", 45),
    ("山下", "ヤマシタ", 45),
    ("中島", "ナカジマ", 45),
    ("石井", "イシイ", 40),
    ("小川", "オガワ", 40),
    ("前田", "マエダ", 40),
    ("岡田", "オカダ", 40),
    ("長谷川", "ハセガワ", 40),
    ("藤田", "フジタ", 40),
    ("後藤", "ゴトウ", 40),
    ("近藤", "コンドウ", 40),
    ("村上", "ムラカミ", 35),
    ("遠藤", "エンドウ", 35),
    ("青木", "アオキ", 35),
    ("坂本", "サカモト", 35),
    ("斉藤", "サイトウ", 30),
    ("福田", "フクダ", 30),
    ("太田", "オオタ", 30),
    ("西村", "ニシムラ", 30),
    ("藤井", "フジイ", 30),
    ("金子", "カネコ", 30),
    ("岡本", "オカモト", 30),
    ("藤原", "フジワラ", 30),
    ("中野", "ナカノ", 25),
    ("三浦", "ミウラ", 25),
    ("原田", "ハラダ", 25),
    ("中川", "ナカガワ", 25),
    ("松田", "マツダ", 25),
    ("竹内", "タケウチ", 25),
    ("小野", "オノ", 25),
    ("田村", "タムラ", 25),
    ("渡邊", "ワタナベ", 15),
    ("渡邉", "ワタナベ", 15),
    ("齋藤", "サイトウ", 15),
    ("宮崎", "ミヤザキ", 20),
    ("髙橋", "タカハシ", 12),
    ("𠮷田", "ヨシダ", 10),
    ("山﨑", "ヤマザキ", 10),
    ("濵田", "ハマダ", 6),
    ("德永", "トクナガ", 5),
    ("葛\U000e0100西", "カサイ", 5),
    ("辻\U000e0100本", "ツジモト", 5),
    ("髙木", "タカギ", 6),
    ("𠮷川", "ヨシカワ", 5),
)
# Given names by generation (born before 1975 / after), as registered then.
MALE_NAMES = (
    (
        ("太郎", "タロウ"),
        ("一郎", "イチロウ"),
        ("浩", "ヒロシ"),
        ("誠", "マコト"),
        ("隆", "タカシ"),
        ("健一", "ケンイチ"),
        ("修", "オサム"),
        ("茂", "シゲル"),
        ("清", "キヨシ"),
        ("勇", "イサム"),
        ("博", "ヒロシ"),
        ("正雄", "マサオ"),
        ("和夫", "カズオ"),
        ("秀樹", "ヒデキ"),
        ("實", "ミノル"),
    ),
    (
        ("健太", "ケンタ"),
        ("翔太", "ショウタ"),
        ("大輔", "ダイスケ"),
        ("拓也", "タクヤ"),
        ("直樹", "ナオキ"),
        ("蓮", "レン"),
        ("陽翔", "ハルト"),
        ("湊", "ミナト"),
        ("悠真", "ユウマ"),
        ("大翔", "ヒロト"),
        ("祐介", "ユウスケ"),
        ("涼", "リョウ"),
        ("翼", "ツバサ"),
        ("颯", "ハヤテ"),
    ),
)
FEMALE_NAMES = (
    (
        ("花子", "ハナコ"),
        ("陽子", "ヨウコ"),
        ("恵子", "ケイコ"),
        ("幸子", "サチコ"),
        ("和子", "カズコ"),
        ("洋子", "ヨウコ"),
        ("裕子", "ユウコ"),
        ("真由美", "マユミ"),
        ("直美", "ナオミ"),
        ("久美子", "クミコ"),
        ("節子", "セツコ"),
        ("千代", "チヨ"),
        ("ハル", "ハル"),
        ("トメ", "トメ"),
    ),
    (
        ("美穂", "ミホ"),
        ("愛", "アイ"),
        ("彩", "アヤ"),
        ("結衣", "ユイ"),
        ("陽菜", "ヒナ"),
        ("凛", "リン"),
        ("葵", "アオイ"),
        ("芽依", "メイ"),
        ("さくら", "サクラ"),
        ("美咲", "ミサキ"),
        ("琴音", "コトネ"),
        ("紬", "ツムギ"),
    ),
)
# Rarer given names outside JIS X 0208 (drawn with probability RARE_GIVEN).
RARE_GIVEN = 0.004
RARE_MALE = (("𠮷雄", "ヨシオ"), ("德郎", "トクロウ"), ("髙志", "タカシ"))
RARE_FEMALE = (("𠮷子", "ヨシコ"), ("﨑子", "サキコ"), ("濵子", "ハマコ"))
_SURNAME_CUM = list(itertools.accumulate(w for _, _, w in SURNAMES))
NON_JIS = frozenset("髙𠮷﨑濵德\U000e0100")

_UNION_SYMBOLS = ("本社", "東支", "西支", "営業", "工場", "技研", "関連", "任継")
_MUTUAL_SYMBOLS = ("職", "組", "支", "所", "教", "警", "事", "員")
_NHI_SYMBOLS = ("中", "東", "西", "南", "北", "本", "新", "旧")
_KANA_SYMBOLS = "アイウエオカキクケコサシスセソ"

SUBSIDIES: tuple[tuple[str, str, int, tuple[int, ...]], ...] = (
    # (法別番号, programme, burden ratio %, monthly caps to choose from)
    ("54", "難病医療（指定難病）", 20, (2_500, 5_000, 10_000, 20_000, 30_000)),
    ("52", "小児慢性特定疾病", 20, (1_250, 2_500, 5_000, 10_000)),
    ("21", "自立支援医療（精神通院）", 10, (2_500, 5_000, 10_000, 20_000)),
    ("15", "自立支援医療（更生医療）", 10, (2_500, 5_000, 10_000)),
    ("88", "子ども医療費助成", 0, (0,)),
    ("80", "重度心身障害者医療費助成", 0, (0,)),
    ("81", "ひとり親家庭等医療費助成", 0, (0, 500, 1_000)),
)


@dataclass(slots=True)
class Entry:
    """One qualification while it is being built (day numbers, not protobuf)."""

    insurer: ins.Insurer
    symbol: str
    number: str
    branch: str
    relationship: pb.Relationship
    acq: int
    loss: int = NEVER
    reason: pb.LossReason = NOT_LOST
    card_kind: pb.CardKind = pb.CARD_KIND_EMPLOYEE
    dual: bool = False  # kept open beside 後期高齢者医療 (seamen / mutual aid)


@dataclass(slots=True)
class Member:
    name: str
    kana: str
    sex: pb.Sex
    birth: dt.date
    birth_day: int
    entries: list[Entry] = field(default_factory=list)
    death_day: int | None = None
    late_ratio: int = 10
    tags: set[str] = field(default_factory=set)
    # Days of the birthdays that change rules, computed once: 70 (高齢受給者),
    # 75 (後期高齢者医療), and school entry (end of 未就学).
    b70: int = 0
    b75: int = 0
    school_day: int = 0

    def __post_init__(self) -> None:
        self.b70 = birthday_day(self.birth, 70)
        self.b75 = birthday_day(self.birth, 75)
        self.school_day = school_entry_day(self.birth)


@dataclass(slots=True)
class Summary:
    persons: int = 0
    households: int = 0
    qualifications: int = 0
    cards_linked: int = 0
    insurers: int = 0
    features: dict[str, int] = field(default_factory=dict)


# --- date helpers ----------------------------------------------------------------


def add_years(d: dt.date, years: int) -> dt.date:
    try:
        return d.replace(year=d.year + years)
    except ValueError:  # 29 February in a common year: the birthday is 1 March
        return dt.date(d.year + years, 3, 1)


def birthday_day(birth: dt.date, age: int) -> int:
    return dates.to_day(add_years(birth, age))


def age_on(birth: dt.date, day: int) -> int:
    d = dates.from_day(day)
    return d.year - birth.year - ((d.month, d.day) < (birth.month, birth.day))


def school_entry_day(birth: dt.date) -> int:
    """April 1 on which a child starts school (born 2 April .. 1 April of the next year
    share a school year); before it the child is 未就学 (preschool, 20 %)."""
    six = add_years(birth, 6)
    year = six.year if (six.month, six.day) <= (4, 1) else six.year + 1
    return dates.to_day(dt.date(year, 4, 1))


def first_of_next_month(day: int) -> int:
    d = dates.from_day(day)
    if d.day == 1:
        return day
    return dates.to_day(dt.date(d.year + (d.month == 12), d.month % 12 + 1, 1))


def fiscal_end(day: int) -> int:
    """31 July ending the certificate year that contains `day` (certificates renew each August)."""
    d = dates.from_day(day)
    return dates.to_day(dt.date(d.year if d.month <= 7 else d.year + 1, 7, 31))


# --- the generator ---------------------------------------------------------------


class Population:
    def __init__(self, seed: int):
        self.rng = random.Random(seed)
        rand = self.rng.random

        # random.randrange/choice cost ~1 µs each; these are several times cheaper and
        # equally deterministic (the population only needs uniform-enough draws).
        def ri(a: int, b: int | None = None) -> int:
            return int(rand() * a) if b is None else a + int(rand() * (b - a))

        def pick(seq: Sequence[_T]) -> _T:
            return seq[int(rand() * len(seq))]

        self.ri = ri
        self.pick: Callable[[Sequence[_T]], _T] = pick
        self.catalogue = ins.build_catalogue(self.rng)
        by = self.catalogue.by_scheme
        self.munis = self.catalogue.municipalities
        self._muni_cum = list(itertools.accumulate(ins.PREFECTURES[m.prefecture - 1][2] / 10 + 10 for m in self.munis))
        self.kyokai = {i.prefecture: i for i in by[ins.KYOKAI]}
        self.seamen = by[ins.SEAMEN]
        # Union and mutual-aid sizes vary a lot: Zipf-like weights.
        self.unions = by[ins.UNION]
        self._union_cum = list(itertools.accumulate(1 / (k + 3) for k in range(len(self.unions))))
        self.mutual = by[ins.MUTUAL_AID]
        self.nhi_unions = by[ins.NHI_UNION]
        self._next_household: dict[str, int] = {}
        self._dates: dict[int, date_pb2.Date] = {}
        self._payers: dict[tuple[str, int, str], str] = {}
        self.counts = {
            k: 0
            for k in (
                "dependents",
                "job_changes",
                "late_elderly_moves",
                "deaths",
                "public_assistance",
                "other_losses",
                "dual_enrollment",
                "elderly_recipient",
                "limit_amount",
                "specific_disease",
                "subsidies",
                "preschool",
                "non_jis_names",
                "no_card",
            )
        }

    # -- allocation of 記号/番号 ------------------------------------------------------
    def household_number(self, insurer: ins.Insurer) -> tuple[str, str]:
        """A new (symbol, number) at `insurer`; unique because each call takes the next
        sequence value and every style maps (office, member) injectively."""
        n = self._next_household.get(insurer.number, 0)
        self._next_household[insurer.number] = n + 1
        scheme, style = insurer.scheme, insurer.style
        if scheme == ins.LATE_ELDERLY:
            # 8 digits, per person; an affine map mod 10^8 spreads them like real numbers.
            return "", f"{(n * 7_654_321 + 10_000_019) % 100_000_000:08d}"
        office, member = divmod(n, 40)
        if scheme == ins.KYOKAI:
            return str((office * 3_137 + 1_000_003) % 100_000_000), str(member + 1)
        if scheme == ins.SEAMEN:
            return f"{office + 1:04d}", f"{member + 1:06d}"
        if scheme == ins.MUTUAL_AID:
            k, rest = divmod(office, len(_MUTUAL_SYMBOLS))
            return f"{_MUTUAL_SYMBOLS[rest]}{k + 1}", str(member + 1 + 1000 * (k % 7))
        if scheme == ins.NHI_UNION:
            return ("医" if "医" in insurer.name else "組") + str(office + 1), f"{member + 1:05d}"
        if scheme == ins.NHI:
            if style == 0:
                return f"{office % 100:02d}", f"{office // 100 + 1}{member + 1:05d}"
            if style == 1:
                k, rest = divmod(office, len(_NHI_SYMBOLS))
                return f"{_NHI_SYMBOLS[rest]}{k + 1}", f"{member + 1:06d}"
            if style == 2:
                return "", f"{office + 1:04d}-{member + 1:02d}"  # no symbol, hyphenated number
            k, rest = divmod(office, len(_KANA_SYMBOLS))
            return f"{_KANA_SYMBOLS[rest]}{k + 1}", str(member + 1)
        # 健保組合, one house style per union
        if style == 0:
            return str(office + 1), str(member + 1)
        if style == 1:
            k, rest = divmod(office, len(_UNION_SYMBOLS))
            return f"{_UNION_SYMBOLS[rest]}{k + 1}", f"{member + 1:04d}"
        if style == 2:
            k, rest = divmod(office, len(_KANA_SYMBOLS))
            return f"{_KANA_SYMBOLS[rest]}{k + 1}", f"{member + 1:05d}"
        return "", f"{office + 1}-{member + 1}"  # no symbol, hyphenated number

    # -- choices ---------------------------------------------------------------------
    def municipality(self) -> ins.Municipality:
        return self.munis[bisect.bisect(self._muni_cum, self.rng.random() * self._muni_cum[-1])]

    def employer(self, muni: ins.Municipality, seamen_ok: bool = True) -> ins.Insurer:
        r = self.rng.random()
        if r < 0.52:
            return self.kyokai[muni.prefecture]
        if r < 0.88:
            return self.unions[bisect.bisect(self._union_cum, self.rng.random() * self._union_cum[-1])]
        if r < 0.995 or not seamen_ok:
            return self.pick(self.mutual)
        return self.seamen[0]

    def name(self, surname: tuple[str, str], sex: pb.Sex, born: int) -> tuple[str, str]:
        male = sex == pb.SEX_MALE
        if self.rng.random() < RARE_GIVEN:
            given = self.pick(RARE_MALE if male else RARE_FEMALE)
        else:
            given = self.pick((MALE_NAMES if male else FEMALE_NAMES)[born >= 1975])
        return f"{surname[0]}\u3000{given[0]}", f"{surname[1]}\u3000{given[1]}"

    def surname(self) -> tuple[str, str]:
        s = SURNAMES[bisect.bisect(_SURNAME_CUM, self.rng.random() * _SURNAME_CUM[-1])]
        return s[0], s[1]

    def member(self, surname: tuple[str, str], sex: pb.Sex, age: int) -> Member:
        birth = dates.from_day(R - age * 365 - age // 4 - self.ri(365))
        name, kana = self.name(surname, sex, birth.year)
        m = Member(name, kana, sex, birth, dates.to_day(birth))
        r = self.rng.random()
        m.late_ratio = 10 if r < 0.72 else 20 if r < 0.92 else 30
        return m

    def address(self, muni: ins.Municipality) -> tuple[str, str]:
        rng = self.rng
        town = self.pick(muni.towns)
        addr = f"{ins.prefecture_name(muni.prefecture)}{muni.name}{town}{self.ri(1, 6)}丁目{self.ri(1, 30)}番{self.ri(1, 20)}号"
        if rng.random() < 0.3:
            addr += f"　{town[:2]}ハイツ{self.ri(1, 9)}0{self.ri(1, 9)}号室"
        return addr, f"{muni.postcode_head}-{self.ri(10_000):04d}"

    # -- households --------------------------------------------------------------------
    def household(self, index: int) -> tuple[list[Member], ins.Municipality, str, str]:
        rng = self.rng
        muni = self.municipality()
        addr, postcode = self.address(muni)
        surname = self.surname()
        scenario = FIXED_SCENARIOS[index] if index < len(FIXED_SCENARIOS) else None
        r = (
            rng.random()
            if scenario is None
            else {"elderly": 0.05, "dual": 0.05, "death": 0.05, "nhi": 0.3, "assistance": 0.3}.get(scenario, 0.9)
        )
        if r < 0.2:
            members = self.elderly_household(surname, muni, scenario)
        elif r < 0.43:
            members = self.nhi_household(surname, muni, scenario)
        else:
            members = self.employee_household(surname, muni, scenario)
        return members, muni, addr, postcode

    def employee_household(
        self, surname: tuple[str, str], muni: ins.Municipality, scenario: str | None
    ) -> list[Member]:
        rng = self.rng
        age = self.ri(22, 70) if scenario is None else 40
        if scenario is None and rng.random() < 0.03:
            age = self.ri(70, 75)  # still working at 70-74: 高齢受給者 and a coming 75th birthday
        sex = pb.SEX_MALE if rng.random() < 0.7 else pb.SEX_FEMALE
        head = self.member(surname, sex, age)
        members = [head]
        if age >= 25 and (rng.random() < 0.4 or scenario is not None):
            members.append(self.member(surname, _other_sex(sex), max(20, age + self.ri(-5, 6))))
        if 25 <= age <= 60:
            kids = self.pick((0, 0, 0, 0, 1, 1, 2, 2, 3)) if scenario is None else 2
            for _ in range(kids):
                members.append(
                    self.member(surname, self.pick((pb.SEX_MALE, pb.SEX_FEMALE)), self.ri(0, min(23, age - 21)))
                )
        # The insured's periods of employment, newest first, then in date order.
        periods = self.career(head, self.employer(muni), muni, force_change=scenario == "job_change")
        for i, m in enumerate(members):
            branch = f"{i:02d}"
            for p in periods:
                acq = max(p.acq, m.birth_day)
                if acq >= p.loss:
                    continue
                if m is not head and p.insurer.scheme in (ins.NHI, ins.NHI_UNION):
                    continue  # a 国保 spell between jobs: dependents are not followed there (kept simple)
                relationship = INSURED if m is head else DEPENDENT
                m.entries.append(
                    Entry(p.insurer, p.symbol, p.number, branch, relationship, acq, p.loss, p.reason, p.card_kind)
                )
            if m is not head and m.entries:
                self.counts["dependents"] += 1
        self.move_at_75(head, muni)
        b75 = head.b75
        if b75 <= HORIZON_DAY:
            # Dependents of an insured who turns 75 lose the plan the same day and join 国保.
            rest = [m for m in members[1:] if m.entries]
            for m in rest:
                cut(m, b75, OTHER_INSURANCE)
            self.join_nhi([m for m in rest if m.b75 > b75], muni, b75)
        for m in members[1:]:
            self.move_at_75(m, muni)
        if scenario is None and rng.random() < 0.005:
            day = R - self.ri(1, 700)  # emigrated etc.: 99, no newer qualification
            for m in members:
                if cut(m, day, OTHER):
                    self.counts["other_losses"] += 1
        if len(members) > 2 and (rng.random() < 0.002 or scenario == "death"):
            m = members[-1]
            self.die(m, R - self.ri(1, 900))
        return members

    def career(
        self, head: Member, employer: ins.Insurer, muni: ins.Municipality, force_change: bool = False
    ) -> list[Entry]:
        rng = self.rng
        start_min = birthday_day(head.birth, 22)
        start = max(start_min + 1, R - self.ri(1, 15 * 365))
        if force_change:
            start = R - 700
        kind = pb.CARD_KIND_SEAMEN if employer.scheme == ins.SEAMEN else pb.CARD_KIND_EMPLOYEE
        if employer.scheme == ins.KYOKAI and rng.random() < 0.002:
            kind = pb.CARD_KIND_DAY_LABOURER
        sym, num = self.household_number(employer)
        periods = [Entry(employer, sym, num, "00", INSURED, start, NEVER, NOT_LOST, kind)]
        changes = 0
        while changes < 2 and (rng.random() < 0.3 or (force_change and changes == 0)):
            nxt = periods[0]
            r = rng.random()
            if r < 0.15 and not force_change:
                # A spell in 国保 between jobs.
                sym, num = self.household_number(muni.nhi)
                loss = nxt.acq
                acq = loss - self.ri(30, 400)
                if acq <= start_min:
                    break
                periods.insert(
                    0,
                    Entry(muni.nhi, sym, num, "00", INSURED, acq, loss, OTHER_INSURANCE, pb.CARD_KIND_NATIONAL_HEALTH),
                )
                nxt = periods[0]
            loss = nxt.acq if r < 0.7 else nxt.acq - 1  # new acquisition the same or the next day
            acq = loss - self.ri(200, 8 * 365)
            if acq <= start_min:
                break
            prev = self.employer(muni)
            sym, num = self.household_number(prev)
            periods.insert(
                0,
                Entry(
                    prev,
                    sym,
                    num,
                    "00",
                    INSURED,
                    acq,
                    loss,
                    OTHER_INSURANCE,
                    pb.CARD_KIND_SEAMEN if prev.scheme == ins.SEAMEN else pb.CARD_KIND_EMPLOYEE,
                ),
            )
            changes += 1
            self.counts["job_changes"] += 1
        return periods

    def nhi_household(self, surname: tuple[str, str], muni: ins.Municipality, scenario: str | None) -> list[Member]:
        rng = self.rng
        age = self.pick((self.ri(20, 65), self.ri(60, 75))) if scenario is None else 50
        sex = pb.SEX_MALE if rng.random() < 0.6 else pb.SEX_FEMALE
        head = self.member(surname, sex, age)
        members = [head]
        if rng.random() < 0.5:
            members.append(self.member(surname, _other_sex(sex), max(20, age + self.ri(-5, 6))))
        if 25 <= age <= 55 and rng.random() < 0.5:
            for _ in range(self.pick((1, 1, 2, 3))):
                members.append(
                    self.member(surname, self.pick((pb.SEX_MALE, pb.SEX_FEMALE)), self.ri(0, min(20, age - 21)))
                )
        insurer = muni.nhi if rng.random() < 0.9 else self.pick(self.nhi_unions)
        sym, num = self.household_number(insurer)
        start = max(head.birth_day + 1, R - self.ri(1, 20 * 365))
        if scenario == "assistance":
            start = R - 3000
        kind = pb.CARD_KIND_NATIONAL_HEALTH
        r = rng.random()
        if r < 0.01:
            kind = pb.CARD_KIND_SHORT_TERM  # arrears: short-term card
        elif r < 0.012:
            kind = pb.CARD_KIND_ELIGIBILITY_CERTIFICATE
        for i, m in enumerate(members):
            m.entries.append(
                Entry(
                    insurer,
                    sym,
                    num,
                    f"{i:02d}",
                    INSURED,
                    max(start, m.birth_day),
                    NEVER,
                    NOT_LOST,
                    pb.CARD_KIND_STUDENT_SPECIAL
                    if i and age_on(m.birth, R) in (19, 20, 21) and rng.random() < 0.2
                    else kind,
                )
            )
        for m in members:
            self.move_at_75(m, muni)
        if rng.random() < 0.015 or scenario == "assistance":
            day = R - self.ri(1, 1000) if scenario is None else R - 100  # 生活保護: leaves 国保, no newer qualification
            if all(e.acq < day for m in members for e in m.entries):
                for m in members:
                    cut(m, day, PUBLIC_ASSISTANCE)
                members[0].tags.add("assistance")
                self.counts["public_assistance"] += 1
        for m in members:
            if rng.random() < 0.004:
                self.die(m, R - self.ri(1, 1500))
        return members

    def elderly_household(self, surname: tuple[str, str], muni: ins.Municipality, scenario: str | None) -> list[Member]:
        rng = self.rng
        age = min(104, 75 + int(rng.expovariate(1 / 8))) if scenario is None else 80
        sex = pb.SEX_MALE if rng.random() < 0.45 else pb.SEX_FEMALE
        head = self.member(surname, sex, age)
        members = [head]
        if rng.random() < 0.45:
            members.append(self.member(surname, _other_sex(sex), max(66, age + self.ri(-6, 4))))
        for m in members:
            dual = scenario == "dual" if scenario else rng.random() < 0.01
            b75 = m.b75
            b65 = birthday_day(m.birth, 65)
            if dual and m is head:
                # Seamen's insurance or mutual aid kept beside 後期高齢者医療 (legal dual enrollment).
                plan = self.seamen[0] if rng.random() < 0.3 else self.pick(self.mutual)
                sym, num = self.household_number(plan)
                kind = pb.CARD_KIND_SEAMEN if plan.scheme == ins.SEAMEN else pb.CARD_KIND_EMPLOYEE
                m.entries.append(
                    Entry(plan, sym, num, "00", INSURED, b65 - self.ri(1, 3000), NEVER, NOT_LOST, kind, dual=True)
                )
                m.tags.add("dual")
            else:
                sym, num = self.household_number(muni.nhi)
                m.entries.append(
                    Entry(
                        muni.nhi,
                        sym,
                        num,
                        "00",
                        INSURED,
                        b65 - self.ri(0, 2000),
                        NEVER,
                        NOT_LOST,
                        pb.CARD_KIND_NATIONAL_HEALTH,
                    )
                )
            if b75 > HORIZON_DAY:
                continue
            self.move_at_75(m, muni)
        if rng.random() < 0.05 or scenario == "death":
            self.die(head, R - self.ri(1, 1000))
        return members

    def join_nhi(self, members: list[Member], muni: ins.Municipality, day: int) -> None:
        if not members:
            return
        sym, num = self.household_number(muni.nhi)
        for i, m in enumerate(members):
            m.entries.append(
                Entry(muni.nhi, sym, num, f"{i:02d}", INSURED, day, NEVER, NOT_LOST, pb.CARD_KIND_NATIONAL_HEALTH)
            )

    def move_at_75(self, m: Member, muni: ins.Municipality) -> None:
        """後期高齢者医療 begins on the 75th birthday; the previous qualification is
        lost that same day (03). Dual plans (seamen / mutual aid) stay open."""
        b75 = m.b75
        if b75 > HORIZON_DAY or not m.entries:
            return
        if any(e.insurer.scheme == ins.LATE_ELDERLY for e in m.entries):
            return
        for e in m.entries:
            if not e.dual and e.acq < b75 < e.loss:
                e.loss, e.reason = b75, OTHER_INSURANCE
        # A plan begun after 75 (an older spouse drawn as a dependent) never happened.
        m.entries = [e for e in m.entries if e.dual or e.acq < b75]
        sym, num = self.household_number(muni.late_elderly)
        m.entries.append(
            Entry(muni.late_elderly, sym, num, "", INSURED, b75, NEVER, NOT_LOST, pb.CARD_KIND_LATE_ELDERLY)
        )
        self.counts["late_elderly_moves"] += 1
        if any(e.dual and e.loss == NEVER for e in m.entries):
            self.counts["dual_enrollment"] += 1

    def die(self, m: Member, day: int) -> None:
        """Loss the day after death (01)."""
        first = min((e.acq for e in m.entries), default=None)
        if first is None or day <= first or m.death_day is not None:
            return
        if cut(m, day + 1, DEATH):
            m.death_day = day
            m.tags.add("deceased")
            self.counts["deaths"] += 1

    # -- protobuf -----------------------------------------------------------------------
    def date(self, day: int) -> date_pb2.Date:
        d = self._dates.get(day)
        if d is None:
            x = dates.from_day(day)
            d = self._dates[day] = date_pb2.Date(year=x.year, month=x.month, day=x.day)
        return d

    def payer_number(self, law: str, muni: ins.Municipality) -> str:
        key = (law, muni.prefecture, muni.code)
        p = self._payers.get(key)
        if p is None:
            # 法別番号 + 都道府県 + 実施機関 (state programmes: the prefecture, 001; local: the municipality)
            office = "001" if law in ("54", "52", "21", "15") else muni.code
            p = self._payers[key] = identifiers.with_check_digit(f"{law}{muni.prefecture:02d}{office}")
        return p

    def qualifications(self, m: Member, muni: ins.Municipality) -> list[pb.Qualification]:
        rng = self.rng
        out = []
        disease = None
        if rng.random() < 0.004:
            r = rng.random()
            disease = (
                pb.SPECIFIC_DISEASE_DIALYSIS
                if r < 0.9
                else pb.SPECIFIC_DISEASE_HEMOPHILIA
                if r < 0.98
                else pb.SPECIFIC_DISEASE_HIV
            )
            # Dialysis patients under 70 with a high income (ア/イ) pay up to 20,000 yen a month.
            high_income = disease == pb.SPECIFIC_DISEASE_DIALYSIS and rng.random() < 0.2
        subsidy = None
        r = rng.random()
        age_now = age_on(m.birth, R)
        if age_now < 15 and r < 0.6:
            subsidy = SUBSIDIES[4] if rng.random() < 0.95 else SUBSIDIES[1]
        elif r < 0.012:
            subsidy = SUBSIDIES[0]
        elif r < 0.03:
            subsidy = SUBSIDIES[2]
        elif r < 0.034:
            subsidy = SUBSIDIES[3]
        elif r < 0.039:
            subsidy = SUBSIDIES[5]
        elif r < 0.043 and age_now < 60:
            subsidy = SUBSIDIES[6]
        recipient = cap = None
        if subsidy is not None:
            recipient = identifiers.with_check_digit(f"{self.ri(1_000_000):06d}")
            cap = self.pick(subsidy[3])
        for e in m.entries:
            # The entry's attributes as of REFERENCE, or its last covered day if lost
            # before, or its first if it begins later (a 75th birthday ahead).
            state = min(max(R, e.acq), e.loss - 1)
            seventy = state >= m.b70
            late = e.insurer.scheme == ins.LATE_ELDERLY
            preschool = state < m.school_day
            if late:
                ratio = m.late_ratio
            elif preschool:
                ratio = 20
            elif seventy:
                ratio = 30 if m.late_ratio == 30 else 20
            else:
                ratio = 30
            if e.loss == NEVER:
                q = pb.Qualification(
                    insurer_number=e.insurer.number,
                    insurer_name=e.insurer.name,
                    symbol=e.symbol,
                    number=e.number,
                    branch=e.branch,
                    relationship=e.relationship,
                    acquisition_date=self.date(e.acq),
                    burden_ratio_percent=ratio,
                    preschool=preschool,
                    card_kind=e.card_kind,
                )
            else:
                q = pb.Qualification(
                    insurer_number=e.insurer.number,
                    insurer_name=e.insurer.name,
                    symbol=e.symbol,
                    number=e.number,
                    branch=e.branch,
                    relationship=e.relationship,
                    acquisition_date=self.date(e.acq),
                    loss_date=self.date(e.loss),
                    loss_reason=e.reason,
                    burden_ratio_percent=ratio,
                    preschool=preschool,
                    card_kind=e.card_kind,
                )
            if preschool:
                self.counts["preschool"] += 1
            if not late and seventy:
                start = max(e.acq, first_of_next_month(m.b70))
                until = min(fiscal_end(state), m.b75 - 1, e.loss - 1)
                if start <= until:
                    q.elderly_recipient.burden_ratio_percent = ratio
                    q.elderly_recipient.valid_from.CopyFrom(self.date(start))
                    q.elderly_recipient.valid_until.CopyFrom(self.date(until))
                    self.counts["elderly_recipient"] += 1
            if rng.random() < 0.03:
                start = max(e.acq, fiscal_end(state) - 364)
                until = min(fiscal_end(state), e.loss - 1)
                if start <= until:
                    low = rng.random() < 0.3
                    if seventy or late:
                        category = self.pick(("区分Ⅰ", "区分Ⅱ")) if low else self.pick(("現役並みⅠ", "現役並みⅡ"))
                    else:
                        category = "オ" if low else self.pick("アイウエ")
                    q.limit_amount.category = category
                    q.limit_amount.standard_burden_reduction = low
                    q.limit_amount.valid_from.CopyFrom(self.date(start))
                    q.limit_amount.valid_until.CopyFrom(self.date(until))
                    self.counts["limit_amount"] += 1
            if disease is not None:
                q.specific_diseases.add(
                    disease=disease,
                    monthly_cap_yen=20_000 if high_income and not seventy else 10_000,
                    valid_from=self.date(e.acq),
                )
                self.counts["specific_disease"] += 1
            if subsidy is not None:
                law, programme, sratio, _ = subsidy
                q.subsidies.add(
                    payer_number=self.payer_number(law, muni),
                    recipient_number=recipient,
                    programme=programme,
                    burden_ratio_percent=sratio,
                    monthly_cap_yen=cap,
                    valid_from=self.date(e.acq),
                    valid_until=self.date(min(fiscal_end(state), e.loss - 1)),
                )
                self.counts["subsidies"] += 1
            out.append(q)
        return out


# The first households: one of each scenario, so that any population shows them.
FIXED_SCENARIOS = ("employee", "job_change", "elderly", "dual", "death", "nhi", "assistance", "dual")


def _other_sex(sex: pb.Sex) -> pb.Sex:
    return pb.SEX_FEMALE if sex == pb.SEX_MALE else pb.SEX_MALE


def cut(m: Member, day: int, reason: pb.LossReason) -> bool:
    """Everything still open on `day` is lost on `day` for `reason`; plans acquired
    on or after it never happened. Returns whether anything was lost."""
    changed = False
    kept = []
    for e in m.entries:
        if e.acq >= day:
            changed = True
            continue
        if e.loss > day:
            e.loss, e.reason = day, reason
            changed = True
        kept.append(e)
    m.entries = kept
    return changed


# --- the naive model used for gen.json's expectations ----------------------------------


def expected_by_card(entries: list[Entry], day: int) -> str:
    valid = [e for e in entries if e.acq <= day < e.loss]
    if valid:
        return "VALIDITY_VALID" if len(valid) == 1 else "VALIDITY_MULTIPLE"
    return "VALIDITY_INVALID" if any(e.acq <= day for e in entries) else "VALIDITY_NO_RECORD"


def expected_by_number(entries: list[Entry], entry: Entry, day: int) -> str:
    if entry.acq <= day < entry.loss:
        return "VALIDITY_VALID"
    if entry.acq > day:
        return "VALIDITY_NO_RECORD"
    newer = any(e.acq > entry.acq for e in entries)
    return "VALIDITY_INVALID_NEWER_EXISTS" if newer else "VALIDITY_INVALID"


class Samples:
    """Identifiers worth trying, chosen among persons with no event after REFERENCE,
    so the expected answers hold on any day from REFERENCE on."""

    CARD_KINDS = ("valid", "job_change_latest", "dual_enrolled", "late_elderly", "deceased")
    NUMBER_KINDS = (
        "valid_insured",
        "dependent",
        "lost_newer_exists",
        "late_elderly",
        "public_assistance",
        "dual_enrolled_plan",
    )

    def __init__(self) -> None:
        self.cards: dict[str, dict[str, str]] = {}
        self.numbers: dict[str, dict[str, str]] = {}

    def full(self) -> bool:
        return len(self.cards) == len(self.CARD_KINDS) and len(self.numbers) == len(self.NUMBER_KINDS)

    def offer(self, m: Member, serial: str | None) -> None:
        es = m.entries
        if not es or any(e.acq > R or (e.loss != NEVER and e.loss > R) for e in es):
            return
        open_ = [e for e in es if e.loss == NEVER]
        late = [e for e in es if e.insurer.scheme == ins.LATE_ELDERLY]
        if serial:
            kind = None
            if "deceased" in m.tags:
                kind = "deceased"
            elif "dual" in m.tags and len(open_) == 2:
                kind = "dual_enrolled"
            elif late and len(es) >= 2 and len(open_) == 1:
                kind = "late_elderly"
            elif len(es) >= 2 and len(open_) == 1 and open_[0].insurer.scheme in ins.EMPLOYEE_SCHEMES:
                kind = "job_change_latest"
            elif len(es) == 1 and open_ and es[0].branch == "00":
                kind = "valid"
            if kind and kind not in self.cards:
                self.cards[kind] = {"card_serial": serial, "expect": expected_by_card(es, R), "name": m.name}
        for e in es:
            kind = None
            if e.loss == NEVER and e.branch == "00" and len(es) == 1:
                kind = "valid_insured"
            elif e.loss == NEVER and e.relationship == DEPENDENT and e.branch == "01":
                kind = "dependent"
            elif (
                e.loss != NEVER
                and e.reason == OTHER_INSURANCE
                and e.insurer.scheme in ins.EMPLOYEE_SCHEMES
                and len(open_) == 1
            ):
                kind = "lost_newer_exists"
            elif e.insurer.scheme == ins.LATE_ELDERLY and e.loss == NEVER and "dual" not in m.tags:
                kind = "late_elderly"
            elif e.reason == PUBLIC_ASSISTANCE:
                kind = "public_assistance"
            elif e.dual and e.loss == NEVER:
                kind = "dual_enrolled_plan"
            if kind and kind not in self.numbers:
                self.numbers[kind] = {
                    "insurer_number": e.insurer.number,
                    "symbol": e.symbol,
                    "number": e.number,
                    "branch": e.branch,
                    "birth_date": m.birth.isoformat(),
                    "expect": expected_by_number(es, e, R),
                    "insurer_name": e.insurer.name,
                }

    def as_json(self) -> dict[str, list[dict[str, str]]]:
        cards = [{"kind": k, **self.cards[k]} for k in self.CARD_KINDS if k in self.cards]
        cards.append({"kind": "unknown_card", "card_serial": UNKNOWN_CARD, "expect": "VALIDITY_NO_RECORD"})
        numbers = [{"kind": k, **self.numbers[k]} for k in self.NUMBER_KINDS if k in self.numbers]
        return {"cards": cards, "numbers": numbers}


# 144 bits: longer than any generated serial (<= 128 bits), so it is never linked.
UNKNOWN_CARD = "A5" * 18


# --- driving the writer -----------------------------------------------------------------


def persons_stream(
    pop: Population, persons: int, samples: Samples, summary: Summary, progress: ProgressBar | None = None
) -> Iterator[PersonRow]:
    """(link_id, Person, [Qualification], serial key | None) in link-ID order."""
    rng = pop.rng
    link_id = 0
    index = 0
    while link_id < persons:
        members, muni, addr, postcode = pop.household(index)
        index += 1
        summary.households += 1
        for m in members:
            if link_id >= persons:
                break
            if not m.entries:
                continue
            link_id += 1
            serial_key = None
            serial_text = None
            if rng.random() < 0.8 or index <= len(FIXED_SCENARIOS):
                bits = pop.ri(64, 129)
                value = rng.getrandbits(bits) | (1 << (bits - 1))
                serial_key = value.to_bytes(identifiers.SERIAL_KEY_LEN, "big")
                summary.cards_linked += 1
                if not samples.full():
                    serial_text = format(value, "X")
            else:
                pop.counts["no_card"] += 1
            if not samples.full():
                samples.offer(m, serial_text)
            if not NON_JIS.isdisjoint(m.name):
                pop.counts["non_jis_names"] += 1
            person = pb.Person(
                name=m.name,
                name_kana=m.kana,
                sex=m.sex,
                birth_date=pop.date(m.birth_day),
                address=addr,
                postcode=postcode,
            )
            quals = pop.qualifications(m, muni)
            summary.qualifications += len(quals)
            yield link_id, person, quals, serial_key
            if progress is not None and link_id % 5_000 == 0:
                progress(link_id)
    summary.persons = link_id
    if progress is not None:
        progress(link_id, done=True)


class ProgressBar:
    def __init__(self, total: int, stream: TextIO | None = None):
        self.total = total
        self.stream = stream or sys.stderr
        self.started = time.perf_counter()

    def __call__(self, count: int, done: bool = False) -> None:
        elapsed = time.perf_counter() - self.started
        rate = count / elapsed if elapsed > 0 else 0.0
        frac = count / self.total if self.total else 1.0
        bar = "#" * int(frac * 30)
        eta = (self.total - count) / rate if rate else 0.0
        self.stream.write(
            f"\rgen [{bar:<30}] {frac:4.0%} {count:,}/{self.total:,} persons {rate:,.0f}/s ETA {eta:,.0f}s "
        )
        if done:
            self.stream.write("\ngen: sorting and writing the number and card indexes...\n")
        self.stream.flush()


def store_bytes(out: str) -> int:
    """Bytes on disk: the LMDB files' allocated blocks (the map itself is sparse)."""
    total = 0
    for name in os.listdir(out):
        if name.endswith(".mdb"):
            total += os.stat(os.path.join(out, name)).st_blocks * 512
    return total


def resident_id(link_id: int) -> str:
    """The generated person's 住民票コード stand-in: 11 digits, in link-ID order."""
    return f"{link_id:011d}"


def with_residents(writer: Writer, stream: Iterable[PersonRow], chunk: int = 100_000) -> Iterator[PersonRow]:
    """Pass persons through to Writer.bulk_load while registering each one in the
    resident registry (the J-LIS stand-in), so insurers' updates for generated
    people match their registry record instead of being quarantined as unknown.
    Resident IDs follow link IDs, so each chunk appends in key order."""
    from ..v1 import enrollment_pb2
    from .enrollment import bulk_load_residents

    pending = []
    for link_id, person, quals, serial_key in stream:
        pending.append(
            (
                link_id,
                enrollment_pb2.Resident(
                    resident_id=resident_id(link_id),
                    name=person.name,
                    name_kana=person.name_kana,
                    birth_date=person.birth_date,
                    sex=person.sex,
                    address=person.address,
                    postcode=person.postcode,
                ),
            )
        )
        if len(pending) >= chunk:
            bulk_load_residents(writer, pending)
            pending.clear()
        yield link_id, person, quals, serial_key
    bulk_load_residents(writer, pending)


def generate(
    out: str | os.PathLike[str], persons: int, seed: int = 1, progress: bool = False, spill_rows: int | None = None
) -> dict[str, Any]:
    """Generate `persons` persons into an empty store at `out`; returns the summary
    (also written to out/gen.json). `spill_rows` overrides how many index rows the
    writer sorts in memory before spilling sorted runs to disk."""
    if persons < 1:
        raise ValueError("persons must be at least 1")
    out = os.fspath(out)
    started = time.perf_counter()
    pop = Population(seed)
    summary = Summary(insurers=len(pop.catalogue.insurers))
    samples = Samples()
    map_size = max(1 << 28, persons * BYTES_PER_PERSON_ESTIMATE)
    writer = Writer(out, map_size=map_size)
    # The loader holds millions of small tuples and nothing here makes cycles: the
    # cyclic collector would only rescan them over and over.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        bar = ProgressBar(persons) if progress else None
        stream = with_residents(writer, persons_stream(pop, persons, samples, summary, bar))
        if spill_rows is None:
            writer.bulk_load(stream)
        else:
            writer.bulk_load(stream, spill_rows=spill_rows)
    finally:
        writer.close()
        if gc_was_enabled:
            gc.enable()
    seconds = time.perf_counter() - started
    size = store_bytes(out)
    result = {
        "persons": summary.persons,
        "households": summary.households,
        "qualifications": summary.qualifications,
        "cards_linked": summary.cards_linked,
        "insurers": summary.insurers,
        "bytes": size,
        "bytes_per_person": round(size / summary.persons, 1),
        "seconds": round(seconds, 2),
        "persons_per_second": round(summary.persons / seconds),
        "seed": seed,
        "as_of": REFERENCE.isoformat(),
        "note": "expected answers hold for as_of on or after this date (and up to " + HORIZON.isoformat() + ")",
        "features": dict(pop.counts),
        "samples": samples.as_json(),
    }
    with open(os.path.join(out, "gen.json"), "w") as f:
        json.dump(result, f, ensure_ascii=False, indent=1)
    return result


def examples(info: dict[str, Any]) -> str:
    """How to query a generated store, from its gen.json."""
    lines = [f"Try (answers as of {info.get('as_of', '?')} or later):"]
    for c in info.get("samples", {}).get("cards", []):
        lines.append(f"  onshi check --card {c['card_serial']}    # {c['kind']}: {c['expect']}")
    for n in info.get("samples", {}).get("numbers", []):
        lines.append(
            f"  onshi check --number {n['insurer_number']} '{n['symbol']}' '{n['number']}' '{n['branch']}'"
            f" --birth {n['birth_date']}    # {n['kind']}: {n['expect']}"
        )
    return "\n".join(lines)


# --- CLI ---------------------------------------------------------------------------------
