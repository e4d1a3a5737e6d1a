"""Claim verdicts (DOMAIN.md §6): which qualification pays for each visit day.

The rule, per visit day d of a claim (coverage: acquisition_day <= d < loss_day):
  * the billed qualification (the claim's number, same person: birth date must
    match) if it covers d — with dual enrollment any covering one may be billed;
  * else the covering qualification acquired most recently (ties: the one lost
    later, then the higher number hash, so the choice is deterministic);
  * no covering qualification at all: the claim is returned.
Runs of consecutive visit days with the same payer become segments: all billed
-> OK, one other payer -> REROUTE, several -> SPLIT. A 不詳 claim has no billed
qualification: once its person is identified (onshi.core.unknown) the same rule
gives RESOLVED_UNKNOWN, else UNRESOLVED.

Everything here is a pure function over `history.parse_history` entries (and the
decoded payloads for certificates), so the server, the CLI and the tests share it.
"""

from __future__ import annotations

import struct
import unicodedata
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol

import lmdb
from google.protobuf.message import DecodeError
from google.type import date_pb2

from ..v1 import claims_pb2, qualification_pb2
from . import dates, history, identifiers, store, twins, unknown
from .dated import Certificate

if TYPE_CHECKING:
    from ..ext._claims import Batch
    from .writer import Writer

OK = claims_pb2.OUTCOME_OK
REROUTE = claims_pb2.OUTCOME_REROUTE
SPLIT = claims_pb2.OUTCOME_SPLIT
RESOLVED_UNKNOWN = claims_pb2.OUTCOME_RESOLVED_UNKNOWN
UNRESOLVED = claims_pb2.OUTCOME_UNRESOLVED
RETURN = claims_pb2.OUTCOME_RETURN

NUMBER_NOT_FOUND = claims_pb2.RETURN_REASON_NUMBER_NOT_FOUND
BIRTH_DATE_MISMATCH = claims_pb2.RETURN_REASON_BIRTH_DATE_MISMATCH
NO_QUALIFICATION = claims_pb2.RETURN_REASON_NO_QUALIFICATION
INVALID_NUMBER = claims_pb2.RETURN_REASON_INVALID_NUMBER
PUBLIC_EXPENSE = claims_pb2.RETURN_REASON_PUBLIC_EXPENSE
HIGH_COST = claims_pb2.RETURN_REASON_HIGH_COST

FLAG_LIMIT_AMOUNT = claims_pb2.CERTIFICATE_FLAG_LIMIT_AMOUNT
FLAG_ELDERLY_RATIO = claims_pb2.CERTIFICATE_FLAG_ELDERLY_RATIO
FLAG_SPECIFIC_DISEASE = claims_pb2.CERTIFICATE_FLAG_SPECIFIC_DISEASE
FLAG_BURDEN_RATIO = claims_pb2.CERTIFICATE_FLAG_BURDEN_RATIO

BILLED = -1  # payer key of a run paid by the billed qualification

_HEADER = history.HEADER
_VERSION = history.VERSION
_ENTRY = history.ENTRY
_HEAD_AND_FIRST = history.HEADER_AND_FIRST_DAYS


def billed_covers(value: bytes, number_hash: int | None, birth_day: int, first_day: int, last_day: int) -> bool:
    """Hot path, headers only: does the billed qualification cover first..last?

    `number_hash` may be None when the caller has not computed it: a person with a
    single entry reached through the number index must hold that number there.
    False means "look closer" (decide()), not a verdict.
    """
    version, count, person_birth = _HEADER.unpack_from(value, 0)
    if person_birth != birth_day or version != history.VERSION:
        return False
    if count == 1:
        acq, loss, nhash, *_ = _ENTRY.unpack_from(value, _HEADER.size)
        return acq <= first_day and last_day < loss and (number_hash is None or nhash == number_hash)
    if number_hash is None:
        return False
    # every view of a qualification carries its acquisition and loss days
    for acq, loss, nhash, *_ in _ENTRY.iter_unpack(value[_HEADER.size : _HEADER.size + count * _ENTRY.size]):
        if nhash == number_hash and acq <= first_day and last_day < loss:
            return True
    return False


@dataclass(frozen=True, slots=True)
class Run:
    """Consecutive visit days paid by one qualification (the entry index of its
    first view, or BILLED)."""

    payer: int
    entry: int  # the view shown on first_day, whose numbers to bill (a billed one when payer == BILLED)
    first_day: int
    last_day: int
    days: int  # visit days in the run


@dataclass(slots=True)
class Decision:
    outcome: claims_pb2.Outcome
    runs: list[Run] = field(default_factory=list)
    return_reason: claims_pb2.ReturnReason = claims_pb2.RETURN_REASON_UNSPECIFIED
    detail: str = ""
    flags: list[claims_pb2.CertificateFlag] = field(default_factory=list)
    value: bytes | None = None  # the history the runs index into (set when there are runs)


def payer_runs(
    entries: list[history.Entry], billed_hash: int | None, visit_days: list[int]
) -> tuple[list[Run], int | None]:
    """Runs of payers over the (sorted) visit days; or ([], first uncovered day)."""
    runs: list[Run] = []
    first_view = _first_views(entries)
    for day in visit_days:
        best = -1
        best_key = None
        billed = -1
        for i, e in enumerate(entries):
            if e.acquisition_day <= day < e.loss_day and history.shown(e, day):
                if billed_hash is not None and e.number_hash == billed_hash and billed < 0:
                    billed = i
                key = (e.acquisition_day, e.loss_day, e.number_hash)
                if best_key is None or key > best_key:
                    best, best_key = i, key
        if billed >= 0:
            payer, entry = BILLED, billed
        elif best >= 0:
            payer, entry = first_view[best], best
        else:
            return [], day
        if runs and runs[-1].payer == payer:
            last = runs[-1]
            runs[-1] = Run(payer, last.entry, last.first_day, day, last.days + 1)
        else:
            runs.append(Run(payer, entry, day, day, 1))
    return runs, None


def _first_views(entries: list[history.Entry]) -> list[int]:
    """For each entry, the index of its qualification's first view."""
    out: list[int] = []
    for i, e in enumerate(entries):
        p = entries[out[-1]] if out else None
        same = p is not None and (p.acquisition_day, p.loss_day, p.number_hash) == (
            e.acquisition_day,
            e.loss_day,
            e.number_hash,
        )
        out.append(out[-1] if same else i)
    return out


def _view_on(entries: list[history.Entry], like: int, day: int) -> int:
    """The view of entry `like`'s qualification shown on `day` (else `like`)."""
    q = entries[like]
    for i, e in enumerate(entries):
        if (e.acquisition_day, e.loss_day, e.number_hash) == (
            q.acquisition_day,
            q.loss_day,
            q.number_hash,
        ) and history.shown(e, day):
            return i
    return like


def decide(
    value: bytes,
    billed_hash: int,
    claimed_birth_day: int,
    visit_days: list[int],
    *,
    public_expense: bool = False,
    high_cost: bool = False,
) -> Decision:
    """Verdict of a claim billed to a known number (value: its holder's history)."""
    birth_day, entries = history.parse_history(value)
    if birth_day != claimed_birth_day:
        return Decision(RETURN, return_reason=BIRTH_DATE_MISMATCH, detail="the number's holder has another birth date")
    runs, uncovered = payer_runs(entries, billed_hash, visit_days)
    if uncovered is not None:
        return Decision(RETURN, return_reason=NO_QUALIFICATION, detail=f"no qualification on {_iso(uncovered)}")
    if all(r.payer == BILLED for r in runs):
        return Decision(OK)
    # Re-routing is impossible for 公費併用 and 高額療養費 claims (seed 004 §3(3)).
    if public_expense:
        return Decision(
            RETURN,
            return_reason=PUBLIC_EXPENSE,
            detail="公費併用 claim billed to the wrong insurer cannot be re-routed",
        )
    if high_cost:
        return Decision(
            RETURN, return_reason=HIGH_COST, detail="高額療養費 claim billed to the wrong insurer cannot be re-routed"
        )
    outcome = REROUTE if len(runs) == 1 else SPLIT
    billed_entry = _billed_entry(entries, billed_hash, visit_days[0])
    flags = certificate_flags(entries, billed_entry, runs) if billed_entry is not None else []
    return Decision(outcome, runs, flags=flags, value=value)


def decide_identified(value: bytes, visit_days: list[int]) -> Decision:
    """Verdict of a 不詳 claim whose person was identified (value: their history)."""
    _, entries = history.parse_history(value)
    runs, uncovered = payer_runs(entries, None, visit_days)
    if uncovered is not None:
        return Decision(UNRESOLVED, detail=f"identified person had no qualification on {_iso(uncovered)}")
    return Decision(RESOLVED_UNKNOWN, runs, value=value)


def _billed_entry(entries: list[history.Entry], billed_hash: int, first_day: int) -> int | None:
    """The billed qualification to compare certificates with: the last one of the
    billed number begun by the first visit day (its view then), else its first one."""
    mine = [i for i, e in enumerate(entries) if e.number_hash == billed_hash]
    if not mine:
        return None
    begun = [i for i in mine if entries[i].acquisition_day <= first_day and history.shown(entries[i], first_day)]
    return begun[-1] if begun else mine[0]


# --- certificates -------------------------------------------------------------


def _cert_valid(cert: Certificate, day: int) -> bool:
    if cert.HasField("valid_from") and dates.to_day(dates.from_proto(cert.valid_from)) > day:
        return False
    # valid_until is the last valid day (有効期限), inclusive.
    return not (cert.HasField("valid_until") and dates.to_day(dates.from_proto(cert.valid_until)) < day)


def certificate_view(
    q: qualification_pb2.Qualification, day: int
) -> tuple[tuple[str, bool] | None, int | None, frozenset[int], int]:
    """What a claim's amount depends on, as valid on `day`."""
    limit = None
    if q.HasField("limit_amount") and _cert_valid(q.limit_amount, day):
        limit = (q.limit_amount.category, q.limit_amount.standard_burden_reduction)
    elderly = None
    if q.HasField("elderly_recipient") and _cert_valid(q.elderly_recipient, day):
        elderly = q.elderly_recipient.burden_ratio_percent
    diseases = frozenset(c.disease for c in q.specific_diseases if _cert_valid(c, day))
    return limit, elderly, diseases, q.burden_ratio_percent


def certificate_flags(
    entries: list[history.Entry], billed_entry: int, runs: list[Run]
) -> list[claims_pb2.CertificateFlag]:
    flags: set[claims_pb2.CertificateFlag] = set()
    for run in runs:
        if run.payer == BILLED:
            continue
        billed_q = history.unframe(entries[_view_on(entries, billed_entry, run.first_day)].payload)
        a = certificate_view(billed_q, run.first_day)
        b = certificate_view(history.unframe(entries[run.entry].payload), run.first_day)
        if a[0] != b[0]:
            flags.add(FLAG_LIMIT_AMOUNT)
        if a[1] != b[1]:
            flags.add(FLAG_ELDERLY_RATIO)
        if a[2] != b[2]:
            flags.add(FLAG_SPECIFIC_DISEASE)
        if a[3] != b[3]:
            flags.add(FLAG_BURDEN_RATIO)
    return sorted(flags)


# --- amounts --------------------------------------------------------------------


def largest_remainder(total: int, weights: list[int]) -> list[int]:
    """Split `total` in proportion to `weights`; the parts sum exactly to `total`
    (Hamilton's method: floor, then the largest remainders get one more; ties go
    to the earlier weight, so the result is deterministic)."""
    whole = sum(weights)
    if whole <= 0:
        raise ValueError("weights must have a positive sum")
    parts = [total * w // whole for w in weights]
    short = total - sum(parts)
    order = sorted(range(len(weights)), key=lambda i: (-(total * weights[i] % whole), i))
    for i in order[:short]:
        parts[i] += 1
    return parts


def run_points(points: int, runs: list[Run]) -> list[int]:
    """A claim's points shared among its segments by visit days."""
    if len(runs) == 1:
        return [points]
    return largest_remainder(points, [r.days for r in runs])


# --- the per-facility ledger of recorded verdicts (for apportionment) ------------
#
#   claim_ledger  facility \x1f month (u32 BE, YYYYMM) seq (u64 BE)
#                 -> entries, each: u32 LE length + claim ID, u32 LE length + payers
#                    (payers: insurer \x1f points, joined by \x1e; insurer "" is the
#                    facility's UNRESOLVED bucket; RETURN: empty)
#   meta          b"claim_ledger_seq" -> the last seq (u64 BE)
#
# One value per (facility, month) per recorded batch, under the batch's seq
# (increasing in commit order): a batch's commit touches one leaf page per
# (facility, month) it holds, at the end of that range, instead of one random
# leaf per claim. A receipt number is unique within a facility's month, so
# (facility, month, claim ID) names a claim; re-verifying it appends a later
# entry, and Apportion, scanning a facility's months in seq order, keeps each
# claim's last entry (within a batch, entries keep claim order: the later wins).

LEDGER_SEQ_KEY = b"claim_ledger_seq"  # in meta; the ledger is store's claim_ledger
UNRESOLVED_INSURER = ""
_MONTH = struct.Struct(">I")
_LEN = struct.Struct("<I")
MAX_LEDGER_FACILITY = 480  # LMDB keys are at most 511 bytes


def open_ledger(writer: Writer) -> lmdb._Database:
    """The ledger's database, on the writer (store.DATABASES: kept by claims)."""
    (name,) = store.names("claims")
    return writer.open_db(name)


def ledger_prefix(facility_code: str) -> bytes:
    return facility_code.encode()[:MAX_LEDGER_FACILITY] + b"\x1f"


def month_prefix(facility_code: str, month: int) -> bytes:
    return ledger_prefix(facility_code) + _MONTH.pack(month)


def pack_ledger(rows: Iterable[tuple[bytes, bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """[(facility-month prefix, claim ID, payers)] in claim order -> one
    (prefix, entries) per prefix, sorted by prefix; entries keep claim order."""
    groups: dict[bytes, list[bytes]] = {}
    pack = _LEN.pack
    for prefix, claim_id, payers in rows:
        parts = groups.get(prefix)
        if parts is None:
            parts = groups[prefix] = []
        parts += (pack(len(claim_id)), claim_id, pack(len(payers)), payers)
    return [(prefix, b"".join(groups[prefix])) for prefix in sorted(groups)]


def unpack_entries(value: bytes | memoryview) -> Iterator[tuple[bytes, bytes]]:
    """(claim ID, payers) of one ledger value, in order."""
    value = bytes(value)
    pos, end = 0, len(value)
    unpack = _LEN.unpack_from
    while pos < end:
        (n,) = unpack(value, pos)
        claim_id = value[pos + 4 : pos + 4 + n]
        pos += 4 + n
        (n,) = unpack(value, pos)
        yield claim_id, value[pos + 4 : pos + 4 + n]
        pos += 4 + n


def encode_payers(payers: Iterable[tuple[str, int]]) -> bytes:
    return "\x1e".join(f"{ins}\x1f{pts}" for ins, pts in payers).encode()


def decode_payers(value: bytes) -> list[tuple[str, int]]:
    body = bytes(value).decode()
    out = []
    for part in body.split("\x1e") if body else ():
        ins, _, pts = part.partition("\x1f")
        out.append((ins, int(pts)))
    return out


def apportion(unresolved_points: int, paid: dict[str, int]) -> list[tuple[str, int, int]]:
    """(insurer, paid, share) sorted by insurer; shares sum to unresolved_points."""
    insurers = sorted(i for i, p in paid.items() if p > 0)
    if not insurers:
        return []
    shares = largest_remainder(unresolved_points, [paid[i] for i in insurers])
    return [(i, paid[i], s) for i, s in zip(insurers, shares, strict=True)]


def _number_not_found() -> Decision:
    return Decision(RETURN, return_reason=NUMBER_NOT_FOUND, detail="no person holds the billed number")


_NOT_FOUND_OUTCOME = _number_not_found().outcome


def _iso(day: int) -> str:
    return dates.from_day(day).isoformat()


# --- the batch path ---------------------------------------------------------------


class ClaimError(ValueError):
    """A structurally malformed claim (the sender's bug, not the clinic's):
    (field, description) pairs with fields like claims[3].first_visit_date."""

    def __init__(self, violations: list[tuple[str, str]]):
        super().__init__("; ".join(f"{f}: {d}" for f, d in violations))
        self.violations = violations


MAX_BATCH = 10_000
_INSURER_CACHE_MAX = 200_000
MAX_NUMBER = identifiers.MAX_NUMBER
_UNKNOWN = "不詳"  # insurer cache value of 77777777 / 77777779


# Verifier._prepare's result: ("lookup", key, birth, first, last, days) |
# ("unknown", birth, first, last, days, claim) | ("settled", Decision) | ("error", violations)
_Prepared = (
    tuple[Literal["lookup"], bytes, int, int, int, tuple[int, ...]]
    | tuple[Literal["unknown"], int, int, int, tuple[int, ...], claims_pb2.Claim]
    | tuple[Literal["settled"], Decision]
    | tuple[Literal["error"], list[tuple[str, str]]]
)
_Row = tuple[int, int, int, int, tuple[int, ...]]  # (claim index, birth, first, last, visit days) per key
_UnknownClaim = tuple[int, int, int, int, tuple[int, ...], claims_pb2.Claim]  # (claim index, ..., claim)
# verify_serialized's answer: ("ok", serialized response, ledger rows or None,
# each claim's Outcome as one byte, in claim order) | ("denied", message) |
# ("invalid", violations). The outcomes let the access log name each verdict
# without parsing the response it was built into.
BatchResult = (
    tuple[Literal["ok"], bytes, list[tuple[bytes, bytes, bytes]] | None, bytes]
    | tuple[Literal["denied"], str]
    | tuple[Literal["invalid"], list[tuple[str, str]]]
)


def _file_prepared(
    i: int,
    prepared: _Prepared,
    keys: list[bytes],
    rows: list[_Row],
    unknown_claims: list[_UnknownClaim],
    settled: dict[int, Decision] | dict[int, Decision | None],
    errors: list[tuple[str, str]],
) -> None:
    """Files claim i's `Verifier._prepare` result under its kind (both verify paths)."""
    if prepared[0] == "lookup":
        keys.append(prepared[1])
        rows.append((i, *prepared[2:]))
    elif prepared[0] == "unknown":
        unknown_claims.append((i, *prepared[1:]))
    elif prepared[0] == "settled":
        settled[i] = prepared[1]
    else:
        errors.extend(prepared[1])


class Histories(Protocol):
    """What a Verifier reads through an engine (native or pure)."""

    def histories_by_number(self, number_keys: list[bytes]) -> list[bytes | None]: ...
    def history_by_link(self, link_id: int) -> bytes | None: ...


class Verifier:
    """Verdicts for batches of claims over one store.

    engine: anything with histories_by_number(keys) and history_by_link(link_id)
    (native or pure engine); basic4_env: an lmdb.Environment on the same store for
    the 不詳 index (the writer's env in the writer process, a read-only env in
    the CLI). Number lookups for a whole batch are one engine call; only claims
    the headers cannot settle as OK are decoded. kind: the plain claims' native
    pass (onshi.ext._claims, whose reference these rules are) or none, as
    `kind` or ONSHI_ENGINE says (twins.load).
    """

    def __init__(self, engine: Histories, basic4_env: lmdb.Environment, kind: str | None = None):
        self.engine = engine
        self.env = basic4_env
        self.basic4_db: lmdb._Database | None
        try:
            self.basic4_db = basic4_env.open_db(b"basic4", create=False)
        except lmdb.Error:  # NotFoundError, or a read-only env without the DB
            self.basic4_db = None  # a store built before the index: 不詳 stays UNRESOLVED
        # insurer number as sent -> (normalised, late-elderly?), _UNKNOWN, or why it is invalid
        self._insurers: dict[str, tuple[str, bool] | str | identifiers.InvalidIdentifier] = {}
        self._days: dict[int, int] = {}
        self._symbols: dict[str, str] = {}  # symbol as sent -> folded (valid lengths only)
        self._insurer_hash: dict[bytes, int] = {}  # FNV state after "insurer\x1f"
        self._symbol_bytes: dict[bytes, bytes] = {}  # the same, UTF-8, for the native pass
        self._normalized: dict[str, str] = {}  # insurer number as billed -> normalised (ledger)
        self.native = twins.load("_claims", kind)  # None: Python decides every claim
        not_found = claims_pb2.Verdict()
        fill_verdict(not_found, _number_not_found(), 0)
        self._not_found_tail = not_found.SerializeToString()  # the fields after claim_id

    # The loops below are deliberately flat: they run once per claim at 10^5/s.
    # The common claim (ASCII number of a known insurer, dates seen before, no
    # visit_days) is prepared inline from caches; anything else goes through
    # _prepare, which also fills the caches and reports malformed claims.
    def verify(
        self, claims: Sequence[claims_pb2.Claim], base: int = 0, *, facility: bool = False
    ) -> claims_pb2.VerifyClaimsResponse:
        """Verdicts for claims[i]; `base`: the index of claims[0] in the whole batch (for errors);
        `facility`: for a facility's pre-submission check (fill_verdict withholds other payers)."""
        n = len(claims)
        if n > MAX_BATCH:
            raise ClaimError([("claims", f"at most {MAX_BATCH} claims per batch")])
        insurers = self._insurers
        days_of = self._days
        symbols = self._symbols
        keys: list[bytes] = []
        rows: list[_Row] = []
        settled: dict[int, Decision] = {}
        unknown_claims: list[_UnknownClaim] = []
        errors: list[tuple[str, str]] = []
        ids: list[str] = []
        for i in range(n):
            c = claims[i]
            ids.append(c.claim_id)
            a = c.first_visit_date
            b = c.last_visit_date
            bd = c.birth_date
            pa = (a.year << 64) | ((a.month & 0xFFFFFFFF) << 32) | (a.day & 0xFFFFFFFF)
            pb = (b.year << 64) | ((b.month & 0xFFFFFFFF) << 32) | (b.day & 0xFFFFFFFF)
            first = days_of.get(pa)
            last = days_of.get(pb)
            birth = days_of.get((bd.year << 64) | ((bd.month & 0xFFFFFFFF) << 32) | (bd.day & 0xFFFFFFFF))
            info = insurers.get(c.insurer_number)
            if (
                first is not None
                and last is not None
                and birth is not None
                and type(info) is tuple
                and pa >> 32 == pb >> 32
                and first <= last
                and not c.visit_days
            ):
                number = c.number
                # An ASCII number without spaces folds to itself (NFKC); symbols
                # (often kanji: 本省1) repeat, so their folded form is cached.
                if (
                    number
                    and number.isascii()
                    and number.isprintable()
                    and " " not in number
                    and len(number) <= MAX_NUMBER
                ):
                    symbol = symbols.get(c.symbol)  # cached only when its folded length is valid
                    if info[1] and symbol is not None:  # 後期高齢者: per-person number, no symbol/branch
                        keys.append(f"{info[0]}\x1f\x1f{number}\x1f".encode())
                        rows.append((i, birth, first, last, ()))
                        continue
                    branch = c.branch
                    if symbol is not None and branch.isdigit() and branch.isascii() and len(branch) <= 2:
                        keys.append(f"{info[0]}\x1f{symbol}\x1f{number}\x1f{branch.zfill(2)}".encode())
                        rows.append((i, birth, first, last, ()))
                        continue
            _file_prepared(i, self._prepare(c, base + i), keys, rows, unknown_claims, settled, errors)
        if errors:
            raise ClaimError(errors)
        values = self.engine.histories_by_number(keys) if keys else []
        head = _HEAD_AND_FIRST.unpack_from
        for j in range(len(keys)):
            value = values[j]
            i, birth, first, last, days = rows[j]
            if value is not None:
                try:
                    version, count, person_birth, acq, loss = head(value)
                except struct.error:  # a record with no entries
                    count = 0
                # one qualification, reached through the number index: it is the billed one
                if count == 1 and person_birth == birth and acq <= first and last < loss and version == _VERSION:
                    continue
            d = self._settle(value, keys[j], birth, first, last, days, claims[i])
            if d is not None:
                settled[i] = d
        for i, birth, first, last, days, c in unknown_claims:
            settled[i] = self._identify(c, birth, first, last, days)
        resp = claims_pb2.VerifyClaimsResponse()
        add = resp.verdicts.add
        for claim_id in ids:  # every claim OK first; the few others are patched below
            add(claim_id=claim_id, outcome=OK)
        verdicts = resp.verdicts
        for i, d in settled.items():
            if d.outcome != OK:
                fill_verdict(verdicts[i], d, claims[i].points, facility=facility)
        return resp

    def verify_serialized(
        self, raw: bytes, facility: str | None = None, record: bool = False, base: int = 0
    ) -> BatchResult:
        """One serialized VerifyClaimsRequest: ("ok", serialized response, ledger
        rows or None, outcomes) | ("denied", message) | ("invalid", violations).

        `facility`: a pre-submission caller, who may send only its own claims;
        `record`: also return the ledger rows (ledger_row's, in claim order);
        `base`: the index of the first claim in the whole batch (a helper's part).
        The plain claims are decided by one native pass when it is built
        (onshi.ext._claims); the rest, and everything without it, by `verify`'s rules.
        """
        try:
            claims = claims_pb2.VerifyClaimsRequest.FromString(raw).claims
        except DecodeError as exc:  # the sender's bug: a clear INVALID_ARGUMENT, not a crash
            return ("invalid", [("claims", f"not a serialized VerifyClaimsRequest ({exc})")])
        batch: Batch | None = None
        if self.native is not None and len(claims) <= MAX_BATCH:
            batch = self.native.parse(raw, self._symbol_bytes, None if facility is None else facility.encode())
        if batch is None:
            return self._verify_serialized_python(claims, facility, record, base)
        if batch.denied >= 0 and facility is not None:  # only a facility's batch is denied
            return ("denied", _denied(base + batch.denied, claims[batch.denied], facility))
        keys = list(batch.keys)
        n_plain = len(keys)
        rows: list[_Row] = []
        settled: dict[int, Decision | None] = {}
        unknown_claims: list[_UnknownClaim] = []
        errors: list[tuple[str, str]] = []
        for i in batch.other_indices():
            _file_prepared(i, self._prepare(claims[i], base + i), keys, rows, unknown_claims, settled, errors)
        if errors:
            return ("invalid", errors)
        values = self.engine.histories_by_number(keys) if keys else []
        # plain claims the header did not settle OK (those of a number nobody holds
        # are answered natively with the verdict _settle gives them)
        for i, k in batch.settle(values[:n_plain], self._not_found_tail):
            birth, first, last = batch.days(i)
            settled[i] = self._settle(values[k], keys[k], birth, first, last, (), claims[i])
        head = _HEAD_AND_FIRST.unpack_from
        for j in range(n_plain, len(keys)):
            value = values[j]
            i, birth, first, last, days = rows[j - n_plain]
            settled[i] = None
            if value is not None:
                try:
                    version, count, person_birth, acq, loss = head(value)
                except struct.error:
                    count = 0
                if count == 1 and person_birth == birth and acq <= first and last < loss and version == _VERSION:
                    continue
            settled[i] = self._settle(value, keys[j], birth, first, last, days, claims[i])
        for i, birth, first, last, days, c in unknown_claims:
            settled[i] = self._identify(c, birth, first, last, days)
        spliced: list[tuple[int, bytes]] = []
        recorded: list[tuple[int, bytes, bytes, bytes]] = []
        # each claim's outcome: as the native pass answered it, or Python's verdict below
        outcomes = batch.plain_outcomes(OK, _NOT_FOUND_OUTCOME)
        for i in sorted(settled):
            d = settled[i]
            c = claims[i]
            if d is None or d.outcome == OK:
                v = claims_pb2.Verdict(claim_id=c.claim_id, outcome=OK)
            else:
                v = claims_pb2.Verdict(claim_id=c.claim_id)
                fill_verdict(v, d, c.points, facility=facility is not None)
                spliced.append((i, v.SerializeToString()))
                outcomes[i] = v.outcome
            if record:
                recorded.append((i, *ledger_row(c, v, self._normalized)))
        response = batch.response(spliced)
        if not record:
            return ("ok", response, None, bytes(outcomes))
        return ("ok", response, batch.ledger(recorded), bytes(outcomes))

    def _verify_serialized_python(
        self, claims: Sequence[claims_pb2.Claim], facility: str | None, record: bool, base: int = 0
    ) -> BatchResult:
        if facility is not None:
            for i, c in enumerate(claims):
                if c.facility_code != facility:
                    return ("denied", _denied(base + i, c, facility))
        try:
            response = self.verify(claims, base, facility=facility is not None)
        except ClaimError as exc:
            return ("invalid", exc.violations)
        items = ledger_items(claims, response, self._normalized) if record else None
        return ("ok", response.SerializeToString(), items, bytes(v.outcome for v in response.verdicts))

    def _prepare(self, c: claims_pb2.Claim, i: int) -> _Prepared:
        """The general preparation of one claim: ("lookup", key, birth, first,
        last, days) | ("unknown", birth, first, last, days, claim) |
        ("settled", Decision) | ("error", violations)."""
        try:
            first, last, days = self._period(c, i)
            birth = self._day(c.birth_date, f"claims[{i}].birth_date")
        except ClaimError as exc:
            return ("error", exc.violations)
        insurer = c.insurer_number
        try:
            info = self._insurer(insurer)
        except identifiers.InvalidIdentifier as exc:
            return ("settled", Decision(RETURN, return_reason=INVALID_NUMBER, detail=f"{exc.field}: {exc.description}"))
        if info is _UNKNOWN:
            return ("unknown", birth, first, last, days, c)
        try:
            key = identifiers.number_key(insurer, c.symbol, c.number, c.branch)
        except identifiers.InvalidIdentifier as exc:
            return ("settled", Decision(RETURN, return_reason=INVALID_NUMBER, detail=f"{exc.field}: {exc.description}"))
        symbol = _fold(c.symbol)
        if len(symbol) <= identifiers.MAX_SYMBOL:
            if len(self._symbols) > _INSURER_CACHE_MAX:
                self._symbols.clear()
                self._symbol_bytes.clear()
            self._symbols[c.symbol] = symbol
            self._symbol_bytes[c.symbol.encode()] = symbol.encode()
        return ("lookup", key, birth, first, last, days)

    def _settle(
        self,
        value: bytes | None,
        key: bytes,
        birth: int,
        first: int,
        last: int,
        days: tuple[int, ...],
        c: claims_pb2.Claim,
    ) -> Decision | None:
        """Beyond the single-qualification fast path: None when OK."""
        if value is None:
            return _number_not_found()
        nhash = self._number_hash(key)
        if billed_covers(value, nhash, birth, first, last):
            return None
        return decide(
            value,
            nhash,
            birth,
            _visit_days(first, last, days),
            public_expense=bool(c.public_expense_numbers),
            high_cost=c.high_cost,
        )

    def _identify(self, c: claims_pb2.Claim, birth: int, first: int, last: int, days: tuple[int, ...]) -> Decision:
        if not c.HasField("declaration") or not c.declaration.name_kana or not c.declaration.sex:
            return Decision(UNRESOLVED, detail="不詳 claim without kana name and sex in its declaration")
        if self.basic4_db is None:
            return Decision(UNRESOLVED, detail="store has no basic4 index")
        with self.env.begin() as txn:
            link, value, why = unknown.identify(
                txn, self.basic4_db, self.engine.history_by_link, birth, c.declaration, first, last
            )
        if link is None or value is None:  # both or neither
            return Decision(UNRESOLVED, detail=why)
        return decide_identified(value, _visit_days(first, last, days))

    def _number_hash(self, key: bytes) -> int:
        """identifiers.number_hash, resuming FNV-1a from the cached state after the
        insurer part (a few thousand insurers): half the per-byte Python loop."""
        cut = key.find(b"\x1f") + 1
        prefix = key[:cut]
        h = self._insurer_hash.get(prefix)
        if h is None:
            if len(self._insurer_hash) > _INSURER_CACHE_MAX:
                self._insurer_hash.clear()
            h = self._insurer_hash[prefix] = identifiers.number_hash(prefix)
        prime = identifiers.FNV_PRIME
        for byte in key[cut:]:
            h = ((h ^ byte) * prime) & 0xFFFFFFFFFFFFFFFF
        return h

    def _insurer(self, insurer: str) -> tuple[str, bool] | str:
        """(normalised number, late-elderly?) or _UNKNOWN for a 不詳 claim; raises
        InvalidIdentifier. Cached by the text as sent (a few thousand insurers)."""
        info = self._insurers.get(insurer)
        if info is None:
            if _fold(insurer) in identifiers.UNKNOWN_INSURERS:
                info = _UNKNOWN
            else:
                try:
                    norm = identifiers.normalize_insurer_number(insurer)
                    info = (norm, identifiers.is_late_elderly(norm))
                except identifiers.InvalidIdentifier as exc:
                    info = exc
            if len(self._insurers) > _INSURER_CACHE_MAX:
                self._insurers.clear()
            self._insurers[insurer] = info
        if isinstance(info, identifiers.InvalidIdentifier):
            raise info
        return info

    def _day(self, d: date_pb2.Date, field: str) -> int:
        # int32 fields packed without overlap: no impossible date aliases a real one
        packed = (d.year << 64) | ((d.month & 0xFFFFFFFF) << 32) | (d.day & 0xFFFFFFFF)
        day = self._days.get(packed)
        if day is None:
            try:
                day = dates.to_day(dates.from_proto(d))
            except ValueError:
                raise ClaimError([(field, "required: a real date (year, month, day)")]) from None
            if len(self._days) > 100_000:
                self._days.clear()
            self._days[packed] = day
        return day

    def _period(self, c: claims_pb2.Claim, i: int) -> tuple[int, int, tuple[int, ...]]:
        a, b = c.first_visit_date, c.last_visit_date
        first = self._day(a, f"claims[{i}].first_visit_date")
        last = self._day(b, f"claims[{i}].last_visit_date")
        if a.year != b.year or a.month != b.month:
            raise ClaimError([(f"claims[{i}].last_visit_date", "the visit period must lie within one month")])
        if last < first:
            raise ClaimError([(f"claims[{i}].last_visit_date", "must not be before first_visit_date")])
        days: tuple[int, ...] = ()
        if c.visit_days:
            if any(not a.day <= v <= b.day for v in c.visit_days):
                raise ClaimError([(f"claims[{i}].visit_days", "days must lie within the visit period")])
            # The first and last visit dates are visit days themselves.
            days = tuple(sorted({first, last, *(first + v - a.day for v in c.visit_days)}))
        return first, last, days


WITHHELD = (
    "the claim goes to the insurer that covered the visit days, which the review body "
    "re-routes it to (振替); a pre-submission check by number does not name it"
)


def fill_verdict(v: claims_pb2.Verdict, d: Decision, points: int, *, facility: bool = False) -> None:
    """A non-OK decision into its verdict: reason, flags, segments with their points.

    `facility`: the caller is a facility checking before it submits. A claim
    carries a typed number, and seed 004 forbids a lost number to reveal the
    person's newer qualification 「健康保険証によりオン資確認を行う場合は…当該資格が
    喪失している場合に、患者の直近の資格情報を確認することはできない」: the facility
    learns the outcome and the segments its billed qualification pays, never
    another insurer's numbers (the review body, which re-routes, sees them); nor
    whom a 不詳 declaration identified."""
    v.outcome = d.outcome
    v.return_reason = d.return_reason
    v.detail = d.detail
    v.flags.extend(d.flags)
    if d.runs:
        assert d.value is not None  # a decision with runs carries the history they index into
        _, entries = history.parse_history(d.value)
        for run, pts in zip(d.runs, run_points(points, d.runs), strict=True):
            if facility and run.payer != BILLED:
                v.detail = WITHHELD
                continue
            q = history.unframe(entries[run.entry].payload)
            v.segments.add(
                first_day=dates.to_proto(dates.from_day(run.first_day)),
                last_day=dates.to_proto(dates.from_day(run.last_day)),
                insurer_number=q.insurer_number,
                insurer_name=q.insurer_name,
                symbol=q.symbol,
                number=q.number,
                branch=q.branch,
                points=pts,
            )


def ledger_row(c: claims_pb2.Claim, v: claims_pb2.Verdict, normalized: dict[str, str]) -> tuple[bytes, bytes, bytes]:
    """A claim's ledger row (facility-month prefix, claim ID, who pays what) from its verdict."""
    outcome = v.outcome
    if outcome == OK:
        ins = normalized.get(c.insurer_number)
        if ins is None:
            if len(normalized) > 100_000:  # bounded: a few thousand real insurers
                normalized.clear()
            ins = normalized[c.insurer_number] = identifiers.normalize_insurer_number(c.insurer_number)
        value = f"{ins}\x1f{c.points}".encode()
    elif outcome == UNRESOLVED:
        value = f"\x1f{c.points}".encode()
    elif outcome == RETURN:
        value = b""
    else:
        value = encode_payers((seg.insurer_number, seg.points) for seg in v.segments)
    a = c.first_visit_date
    return month_prefix(c.facility_code, a.year * 100 + a.month), c.claim_id.encode(), value


def ledger_items(
    claims: Sequence[claims_pb2.Claim], response: claims_pb2.VerifyClaimsResponse, normalized: dict[str, str]
) -> list[tuple[bytes, bytes, bytes]]:
    """Every claim's ledger row, in claim order (pack_ledger groups them)."""
    return [ledger_row(c, v, normalized) for c, v in zip(claims, response.verdicts, strict=True)]


def _denied(i: int, c: claims_pb2.Claim, facility: str) -> str:
    return f"claims[{i}]: facility {c.facility_code!r} is not the caller's ({facility})"


def _visit_days(first: int, last: int, days: tuple[int, ...]) -> list[int]:
    return list(days) if days else list(range(first, last + 1))


def _fold(text: str) -> str:
    return "".join(unicodedata.normalize("NFKC", text).split())
