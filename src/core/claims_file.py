"""Claim files for review staff (docs/CLAIMS.md): a CSV row becomes a Claim,
a Verdict becomes a CSV row. The command that reads and writes them is
`onshi claims verify` (onshi.commands.claims)."""

from __future__ import annotations

import csv
from collections.abc import Iterator

from google.type import date_pb2

from ..v1 import claims_pb2 as cpb
from ..v1 import qualification_pb2 as qpb
from . import dates
from .infile import (
    TextLines,
    csv_header,
    csv_records,
)

EXIT_BAD_INPUT = 2
EXIT_NO_ANSWER = 1
BATCH = 5_000

IN_COLUMNS = (
    "claim_id",
    "facility_code",
    "insurer_number",
    "symbol",
    "number",
    "branch",
    "birth_date",
    "first_visit_date",
    "last_visit_date",
    "visit_days",
    "kind",
    "public_expense_numbers",
    "high_cost",
    "points",
    "decl_name",
    "decl_name_kana",
    "decl_sex",
    "decl_address",
    "decl_postcode",
    "decl_employer",
    "decl_insurer_name",
    "decl_insurer_number",
    "decl_other_addresses",
)
REQUIRED = ("claim_id", "insurer_number", "number", "birth_date", "first_visit_date")
OUT_COLUMNS = (
    "claim_id",
    "outcome",
    "insurer_number",
    "symbol",
    "number",
    "branch",
    "segments",
    "return_reason",
    "detail",
    "flags",
)

KINDS = {
    "": cpb.CLAIM_KIND_UNSPECIFIED,
    "medical": cpb.CLAIM_KIND_MEDICAL,
    "dental": cpb.CLAIM_KIND_DENTAL,
    "pharmacy": cpb.CLAIM_KIND_PHARMACY,
    "医科": cpb.CLAIM_KIND_MEDICAL,
    "歯科": cpb.CLAIM_KIND_DENTAL,
    "調剤": cpb.CLAIM_KIND_PHARMACY,
}
SEXES = {
    "": qpb.SEX_UNSPECIFIED,
    "1": qpb.SEX_MALE,
    "2": qpb.SEX_FEMALE,
    "m": qpb.SEX_MALE,
    "f": qpb.SEX_FEMALE,
    "male": qpb.SEX_MALE,
    "female": qpb.SEX_FEMALE,
    "男": qpb.SEX_MALE,
    "女": qpb.SEX_FEMALE,
}
TRUE = {"1", "true", "yes", "y"}


class BadRow(ValueError):
    def __init__(self, line: int, field: str, description: str) -> None:
        super().__init__(f"line {line}: {field}: {description}" if line else f"{field}: {description}")


def outcome_name(outcome: int) -> str:
    return cpb.Outcome.Name(outcome).removeprefix("OUTCOME_")


def _date(row: dict[str, str], field: str, line: int, required: bool = True) -> date_pb2.Date | None:
    text = (row.get(field) or "").strip()
    if not text:
        if required:
            raise BadRow(line, field, "required (YYYY-MM-DD)")
        return None
    try:
        return dates.to_proto(dates.parse_iso(text))
    except ValueError:
        raise BadRow(line, field, f"not a date (YYYY-MM-DD): {text!r}") from None


def _split(text: str | None) -> list[str]:
    return [p for p in (text or "").replace(",", ";").replace(" ", ";").split(";") if p]


def parse_row(row: dict[str, str], line: int) -> cpb.Claim:
    for field in REQUIRED:
        if not (row.get(field) or "").strip():
            raise BadRow(line, field, "required")
    first = _date(row, "first_visit_date", line)
    last = _date(row, "last_visit_date", line, required=False) or first
    try:
        visit_days = [int(d) for d in _split(row.get("visit_days"))]
    except ValueError:
        raise BadRow(line, "visit_days", "day numbers separated by ';'") from None
    kind = KINDS.get((row.get("kind") or "").strip().lower())
    if kind is None:
        raise BadRow(line, "kind", "medical, dental or pharmacy")
    try:
        points = int((row.get("points") or "0").strip() or 0)
    except ValueError:
        raise BadRow(line, "points", "an integer") from None
    claim = cpb.Claim(
        claim_id=row["claim_id"].strip(),
        facility_code=(row.get("facility_code") or "").strip(),
        insurer_number=row["insurer_number"].strip(),
        symbol=(row.get("symbol") or "").strip(),
        number=row["number"].strip(),
        branch=(row.get("branch") or "").strip(),
        birth_date=_date(row, "birth_date", line),
        first_visit_date=first,
        last_visit_date=last,
        visit_days=visit_days,
        kind=kind,
        public_expense_numbers=_split(row.get("public_expense_numbers")),
        high_cost=(row.get("high_cost") or "").strip().lower() in TRUE,
        points=points,
    )
    decl = {
        k[5:]: (row.get(k) or "").strip()
        for k in IN_COLUMNS
        if k.startswith("decl_") and k not in ("decl_sex", "decl_other_addresses")
    }
    others = [a.strip() for a in (row.get("decl_other_addresses") or "").split("|") if a.strip()]
    sex = SEXES.get((row.get("decl_sex") or "").strip().lower())
    if sex is None:
        raise BadRow(line, "decl_sex", "M/F or 1/2")
    if any(decl.values()) or sex or others:
        claim.declaration.CopyFrom(cpb.SelfDeclaration(sex=sex, other_addresses=others, **decl))
    return claim


def read_claims(lines_in: TextLines, batch: int = BATCH) -> Iterator[tuple[list[cpb.Claim], list[int]]]:
    """Batches of (claims, their line numbers)."""
    reader = csv.DictReader(lines_in)
    header = csv_header(reader, lines_in)
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise BadRow(1, missing[0], "column missing from the header")
    claims: list[cpb.Claim] = []
    lines: list[int] = []
    for row in csv_records(reader, lines_in):
        line = reader.line_num
        claims.append(parse_row(row, line))
        lines.append(line)
        if len(claims) >= batch:
            yield claims, lines
            claims, lines = [], []
    if claims:
        yield claims, lines


def verdict_row(v: cpb.Verdict) -> list[str]:
    target = v.segments[0] if len(v.segments) == 1 else None
    segments = ";".join(
        f"{s.insurer_number}/{s.symbol}/{s.number}/{s.branch} "
        f"{dates.from_proto(s.first_day).isoformat()}..{dates.from_proto(s.last_day).isoformat()} {s.points}"
        for s in v.segments
    )
    return [
        v.claim_id,
        outcome_name(v.outcome),
        target.insurer_number if target else "",
        target.symbol if target else "",
        target.number if target else "",
        target.branch if target else "",
        segments,
        cpb.ReturnReason.Name(v.return_reason).removeprefix("RETURN_REASON_") if v.return_reason else "",
        v.detail,
        ";".join(cpb.CertificateFlag.Name(f).removeprefix("CERTIFICATE_FLAG_") for f in v.flags),
    ]
