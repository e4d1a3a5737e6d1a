"""Hand-built persons and qualifications for tests that write stores directly."""

from __future__ import annotations

from onshi.core import dates, identifiers
from onshi.v1 import qualification_pb2 as Q

D = dates.to_proto

KYOKAI = identifiers.with_check_digit("0113002")  # 協会けんぽ
UNION = identifiers.with_check_digit("0613001")  # 健保組合
SEAMEN = identifiers.with_check_digit("0213001")  # 船員保険
MUTUAL = identifiers.with_check_digit("3113003")  # 共済
LATE = identifiers.with_check_digit("3913001")  # 後期高齢者
NHI = identifiers.with_check_digit("13800")  # 市町村国保, 6 digits
PAYER = identifiers.with_check_digit("5413001")  # 公費 payer
# U+20BB7 is outside JIS X 0208; 葛 + IVS (VS17): must arrive byte-exact, never as ●
NON_JIS_NAME = "𠮷田 葛\U000e0100子"


def person(name, kana, birth, sex=Q.SEX_FEMALE):
    return Q.Person(
        name=name,
        name_kana=kana,
        sex=sex,
        birth_date=D(birth),
        address="東京都千代田区千代田1-1",
        postcode="100-0001",
    )


def qual(insurer, symbol, number, branch, acquired, lost=None, reason=0, **kw):
    kw = {"burden_ratio_percent": 30, "card_kind": Q.CARD_KIND_EMPLOYEE, **kw}
    q = Q.Qualification(
        insurer_number=insurer,
        insurer_name=f"保険者{insurer}",
        symbol=symbol,
        number=number,
        branch=branch,
        relationship=Q.RELATIONSHIP_INSURED,
        acquisition_date=D(acquired),
        loss_reason=reason,
        **kw,
    )
    if lost:
        q.loss_date.CopyFrom(D(lost))
    return q
