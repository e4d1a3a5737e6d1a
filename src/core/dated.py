"""The dated parts of a qualification: what it shows on a given day.

A qualification's burden ratio, preschool status, certificates and public-expense
subsidies change while the qualification itself goes on: the elderly recipient
ratio is re-determined every 1 August (seed 003 §5: 高齢受給者証「加入者の負担能力により
一部負担割合が異なる」), the preschool 20 % ends with the March after the sixth
birthday, certificates have validity periods. A check must show what applied on
its visit date, so the writer keeps every dated part (`Dated`) and `views` cuts
them into periods over which what a clinic is shown does not change. The store
keeps only those views (history.py); `dated_of` rebuilds the full account from
them. It keeps everything some view can show: a certificate never in force
inside the qualification's coverage, which no check could show, is dropped.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

from google.protobuf.message import Message

from ..v1 import qualification_pb2 as qpb
from . import dates

if TYPE_CHECKING:
    from _typeshed import SupportsRichComparison

NEVER = dates.NEVER
MIN_DAY = -(2**31)
SCHOOL_AGE_RATIO = 30  # 義務教育就学後～70歳未満: 3割 (健康保険法 第74条)

# What has a validity period (valid_from, valid_until): one kind at a time.
_Cert = TypeVar(
    "_Cert",
    qpb.ElderlyRecipientCertificate,
    qpb.LimitAmountCertificate,
    qpb.SpecificDiseaseCertificate,
    qpb.PublicExpenseSubsidy,
)
Certificate = (
    qpb.ElderlyRecipientCertificate
    | qpb.LimitAmountCertificate
    | qpb.SpecificDiseaseCertificate
    | qpb.PublicExpenseSubsidy
)
_Message = TypeVar("_Message", bound=Message)
_Key = TypeVar("_Key", bound="SupportsRichComparison")

# What changes with the day; everything else of a Qualification is static.
_DATED_FIELDS = (
    "burden_ratio_percent",
    "preschool",
    "preschool_until",
    "elderly_recipient",
    "limit_amount",
    "specific_diseases",
    "subsidies",
)


@dataclass(slots=True)
class Dated:
    """Everything the writer knows of one qualification."""

    qualification: qpb.Qualification  # the static fields (no person, no dated field)
    ratios: list[tuple[int, int]]  # (first day, percent), first days increasing
    preschool: bool = False
    elderly: list[qpb.ElderlyRecipientCertificate] = field(default_factory=list)
    limits: list[qpb.LimitAmountCertificate] = field(default_factory=list)
    diseases: list[qpb.SpecificDiseaseCertificate] = field(default_factory=list)
    subsidies: list[qpb.PublicExpenseSubsidy] = field(default_factory=list)

    @property
    def acquisition_day(self) -> int:
        return dates.proto_day(self.qualification.acquisition_date)

    @property
    def loss_day(self) -> int:
        q = self.qualification
        return dates.proto_day(q.loss_date) if q.HasField("loss_date") else NEVER

    def is_plain(self) -> bool:
        """Shows the same on every day: one view."""
        return (
            len(self.ratios) == 1
            and not self.preschool
            and not self.elderly
            and not self.limits
            and not self.diseases
            and not self.subsidies
        )


def _static(q: qpb.Qualification) -> qpb.Qualification:
    out = qpb.Qualification()
    out.CopyFrom(q)
    out.ClearField("person")
    for name in _DATED_FIELDS:
        out.ClearField(name)
    return out


def of_qualification(q: qpb.Qualification) -> Dated:
    """A qualification as an insurer registers it: its ratio from acquisition on,
    its certificates and subsidies with their own validity periods."""
    return Dated(
        _static(q),
        [(dates.proto_day(q.acquisition_date), q.burden_ratio_percent)],
        q.preschool,
        [_copy(q.elderly_recipient)] if q.HasField("elderly_recipient") else [],
        [_copy(q.limit_amount)] if q.HasField("limit_amount") else [],
        [_copy(c) for c in q.specific_diseases],
        [_copy(s) for s in q.subsidies],
    )


def _copy(message: _Message) -> _Message:
    out = type(message)()
    out.CopyFrom(message)
    return out


# --- validity of one certificate ------------------------------------------------


def first_day(cert: Certificate) -> int:
    return dates.proto_day(cert.valid_from) if cert.HasField("valid_from") else MIN_DAY


def end_day(cert: Certificate) -> int:
    """First day the certificate no longer applies (valid_until is its last day, 有効期限)."""
    return dates.proto_day(cert.valid_until) + 1 if cert.HasField("valid_until") else NEVER


def _in_force(cert: Certificate, day: int) -> bool:
    return first_day(cert) <= day < end_day(cert)


def preschool_until(birth_day: int) -> int:
    """Last day of preschool status: 「六歳に達する日以後の最初の三月三十一日」
    (健康保険法 第74条). One reaches an age the day before the birthday
    (年齢計算ニ関スル法律), so a child born on 1 April starts school at six."""
    birth = dates.from_day(birth_day)
    try:
        sixth = birth.replace(year=birth.year + 6)
    except ValueError:  # born 29 February
        sixth = dt.date(birth.year + 6, 3, 1)
    reached = sixth - dt.timedelta(days=1)
    march_31 = dt.date(reached.year, 3, 31)
    return dates.to_day(march_31 if reached <= march_31 else dt.date(reached.year + 1, 3, 31))


# --- what is shown on a day --------------------------------------------------------


def _rank(cert: Certificate) -> tuple[int, bytes]:
    """A later certificate supersedes; between two begun the same day, the
    choice must not depend on the order they were stored in."""
    return first_day(cert), cert.SerializeToString(deterministic=True)


def _latest(certs: Iterable[_Cert], day: int) -> _Cert | None:
    """The certificate in force on `day` that began last."""
    return max((c for c in certs if _in_force(c, day)), key=_rank, default=None)


def _latest_per_key(certs: Iterable[_Cert], day: int, key: Callable[[_Cert], _Key]) -> list[_Cert]:
    """The certificate in force on `day` that began last, for each key, in key order."""
    chosen: dict[_Key, _Cert] = {}
    for c in certs:
        if _in_force(c, day):
            k = key(c)
            if k not in chosen or _rank(c) > _rank(chosen[k]):
                chosen[k] = c
    return [chosen[k] for k in sorted(chosen)]


def _subsidy_key(s: qpb.PublicExpenseSubsidy) -> tuple[str, str]:
    return s.payer_number, s.recipient_number


def ratio_on(d: Dated, day: int, school_from: int | None) -> int:
    start, percent = d.ratios[0]
    for first, p in d.ratios:
        if first <= day:
            start, percent = first, p
    if school_from is not None and day >= school_from > start:
        return SCHOOL_AGE_RATIO  # a preschool ratio does not outlast preschool
    return percent


def shown_on(d: Dated, day: int, birth_day: int) -> qpb.Qualification:
    """The Qualification (without person) a check on `day` shows."""
    q = qpb.Qualification()
    q.CopyFrom(d.qualification)
    school_from = preschool_until(birth_day) + 1 if d.preschool else None
    q.burden_ratio_percent = ratio_on(d, day, school_from)
    if school_from is not None and day < school_from:
        q.preschool = True
        q.preschool_until.CopyFrom(dates.to_proto(dates.from_day(school_from - 1)))
    elderly = _latest(d.elderly, day)
    if elderly is not None:
        q.elderly_recipient.CopyFrom(elderly)
    limit = _latest(d.limits, day)
    if limit is not None:
        q.limit_amount.CopyFrom(limit)
    q.specific_diseases.extend(_latest_per_key(d.diseases, day, lambda c: c.disease))
    q.subsidies.extend(_latest_per_key(d.subsidies, day, _subsidy_key))
    return q


def views(d: Dated, birth_day: int) -> list[tuple[int, int, bytes]]:
    """(first day, end day, serialized Qualification) over [acquisition, loss):
    consecutive periods, each showing something else than the one before."""
    acq, loss = d.acquisition_day, d.loss_day
    if d.is_plain():  # most: what shown_on gives, without looking for what is not there
        q = qpb.Qualification()
        q.CopyFrom(d.qualification)
        q.burden_ratio_percent = d.ratios[0][1]
        return [(acq, loss, q.SerializeToString(deterministic=True))]
    cuts = {acq}
    cuts.update(first for first, _ in d.ratios)
    if d.preschool:
        cuts.add(preschool_until(birth_day) + 1)
    for certs in (d.elderly, d.limits, d.diseases, d.subsidies):
        for c in certs:
            cuts.add(first_day(c))
            cuts.add(end_day(c))
    starts = sorted(c for c in cuts if acq <= c < loss)
    out: list[tuple[int, int, bytes]] = []
    for i, start in enumerate(starts):
        end = starts[i + 1] if i + 1 < len(starts) else loss
        body = shown_on(d, start, birth_day).SerializeToString(deterministic=True)
        if out and out[-1][2] == body:
            out[-1] = (out[-1][0], end, body)
        else:
            out.append((start, end, body))
    return out


def dated_of(shown: list[tuple[int, qpb.Qualification]]) -> Dated:
    """The account `views` was cut from, given each view's first day and message
    (in order): views(dated_of(views(d))) == views(d)."""
    first_q = shown[0][1]
    if len(shown) == 1 and not (
        first_q.preschool
        or first_q.HasField("elderly_recipient")
        or first_q.HasField("limit_amount")
        or first_q.specific_diseases
        or first_q.subsidies
    ):
        return Dated(_static(first_q), [(shown[0][0], first_q.burden_ratio_percent)])
    d = Dated(_static(first_q), [])
    seen: set[bytes] = set()

    def collect(target: list[_Cert], certs: Iterable[_Cert]) -> None:
        for c in certs:
            key = c.SerializeToString(deterministic=True)
            if key not in seen:
                seen.add(key)
                target.append(_copy(c))

    for start, q in shown:
        if not d.ratios or d.ratios[-1][1] != q.burden_ratio_percent:
            d.ratios.append((start, q.burden_ratio_percent))
        d.preschool = d.preschool or q.preschool
        if q.HasField("elderly_recipient"):
            collect(d.elderly, [q.elderly_recipient])
        if q.HasField("limit_amount"):
            collect(d.limits, [q.limit_amount])
        collect(d.diseases, q.specific_diseases)
        collect(d.subsidies, q.subsidies)
    return d


# --- insurers' changes ----------------------------------------------------------------


def change_ratio(d: Dated, percent: int, from_day: int) -> None:
    """The ratio applies from `from_day` on (never before the acquisition)."""
    from_day = max(from_day, d.acquisition_day)
    d.ratios = [(first, p) for first, p in d.ratios if first < from_day] + [(from_day, percent)]


def _replace_from(stored: list[_Cert], given: list[_Cert], start: int) -> list[_Cert]:
    """Certificates of one kind from `start` on are `given`: earlier ones stay,
    ending the day before `start` at the latest."""
    kept = []
    for c in stored:
        if first_day(c) >= start:
            continue
        if end_day(c) > start:
            c = _copy(c)
            c.valid_until.CopyFrom(dates.to_proto(dates.from_day(start - 1)))
        kept.append(c)
    return kept + [_copy(c) for c in given]


def _replace_kind(stored: list[_Cert], given: list[_Cert], default_start: int) -> list[_Cert]:
    start = min((first_day(c) for c in given), default=default_start)
    return _replace_from(stored, given, start)


def _replace_keyed(
    stored: list[_Cert], given: list[_Cert], default_start: int, key: Callable[[_Cert], Hashable]
) -> list[_Cert]:
    out: list[_Cert] = []
    for k in dict.fromkeys([key(c) for c in stored] + [key(c) for c in given]):
        out += _replace_kind([c for c in stored if key(c) == k], [c for c in given if key(c) == k], default_start)
    return out


def change_certificates(
    d: Dated,
    elderly: qpb.ElderlyRecipientCertificate | None,
    limit: qpb.LimitAmountCertificate | None,
    diseases: Iterable[qpb.SpecificDiseaseCertificate],
    default_start: int,
) -> None:
    """A certificates change: each kind it carries takes effect from its
    certificates' earliest valid_from; a kind it does not carry ends on
    `default_start` (its effective date, or the day it is applied)."""
    d.elderly = _replace_kind(d.elderly, [elderly] if elderly is not None else [], default_start)
    d.limits = _replace_kind(d.limits, [limit] if limit is not None else [], default_start)
    d.diseases = _replace_keyed(d.diseases, list(diseases), default_start, lambda c: c.disease)


def change_subsidies(d: Dated, subsidies: Iterable[qpb.PublicExpenseSubsidy], default_start: int) -> None:
    """The same per programme (payer and recipient number)."""
    d.subsidies = _replace_keyed(d.subsidies, list(subsidies), default_start, _subsidy_key)
