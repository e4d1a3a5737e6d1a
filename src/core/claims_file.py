"""`onshi claims verify IN OUT`: claim files for review staff (docs/CLAIMS.md).

CSV in (one claim per row, header names the columns), CSV out (one verdict per
claim, same order), a progress bar with claims/s on stderr and the count per
verdict at the end. Verifies against a local store (--data, read-only, nothing
recorded) or through a running ClaimService (--target, recorded for
apportionment like any review-body stream).
"""

from __future__ import annotations

import csv
import os
import stat
import sys
import time
from collections import Counter
from collections.abc import Iterator

from onshi.core import dates
from onshi.core.infile import InputError, Output, TextLines, csv_header, csv_records, open_input
from onshi.v1 import claims_pb2 as cpb

EXIT_BAD_INPUT = 2
EXIT_NO_ANSWER = 1
BATCH = 5_000

IN_COLUMNS = ("claim_id", "facility_code", "insurer_number", "symbol", "number", "branch", "birth_date",
              "first_visit_date", "last_visit_date", "visit_days", "kind", "public_expense_numbers",
              "high_cost", "points", "decl_name", "decl_name_kana", "decl_sex", "decl_address",
              "decl_postcode", "decl_employer", "decl_insurer_name", "decl_insurer_number",
              "decl_other_addresses")
REQUIRED = ("claim_id", "insurer_number", "number", "birth_date", "first_visit_date")
OUT_COLUMNS = ("claim_id", "outcome", "insurer_number", "symbol", "number", "branch", "segments",
               "return_reason", "detail", "flags")

KINDS = {"": cpb.CLAIM_KIND_UNSPECIFIED, "medical": cpb.CLAIM_KIND_MEDICAL, "dental": cpb.CLAIM_KIND_DENTAL,
         "pharmacy": cpb.CLAIM_KIND_PHARMACY, "医科": cpb.CLAIM_KIND_MEDICAL, "歯科": cpb.CLAIM_KIND_DENTAL,
         "調剤": cpb.CLAIM_KIND_PHARMACY}
SEXES = {"": 0, "1": 1, "2": 2, "m": 1, "f": 2, "male": 1, "female": 2, "男": 1, "女": 2}
TRUE = {"1", "true", "yes", "y"}


class BadRow(ValueError):
    def __init__(self, line: int, field: str, description: str):
        super().__init__(f"line {line}: {field}: {description}" if line else f"{field}: {description}")


def outcome_name(outcome: int) -> str:
    return cpb.Outcome.Name(outcome).removeprefix("OUTCOME_")


def _date(row: dict, field: str, line: int, required: bool = True):
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


def parse_row(row: dict, line: int) -> cpb.Claim:
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
        claim_id=row["claim_id"].strip(), facility_code=(row.get("facility_code") or "").strip(),
        insurer_number=row["insurer_number"].strip(), symbol=(row.get("symbol") or "").strip(),
        number=row["number"].strip(), branch=(row.get("branch") or "").strip(),
        birth_date=_date(row, "birth_date", line), first_visit_date=first, last_visit_date=last,
        visit_days=visit_days, kind=kind, public_expense_numbers=_split(row.get("public_expense_numbers")),
        high_cost=(row.get("high_cost") or "").strip().lower() in TRUE, points=points)
    decl = {k[5:]: (row.get(k) or "").strip() for k in IN_COLUMNS
            if k.startswith("decl_") and k not in ("decl_sex", "decl_other_addresses")}
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
        for s in v.segments)
    return [v.claim_id, outcome_name(v.outcome),
            target.insurer_number if target else "", target.symbol if target else "",
            target.number if target else "", target.branch if target else "", segments,
            cpb.ReturnReason.Name(v.return_reason).removeprefix("RETURN_REASON_") if v.return_reason else "",
            v.detail, ";".join(cpb.CertificateFlag.Name(f).removeprefix("CERTIFICATE_FLAG_") for f in v.flags)]


class Progress:
    """A one-line progress bar on stderr (only on a terminal, or when forced)."""

    def __init__(self, total_bytes: int | None, enabled: bool):
        self.total = total_bytes
        self.enabled = enabled
        self.started = time.monotonic()
        self.last_draw = 0.0

    def update(self, claims: int, position: int | None, final: bool = False) -> None:
        now = time.monotonic()
        if not self.enabled or (not final and now - self.last_draw < 0.2):
            return
        self.last_draw = now
        rate = claims / max(now - self.started, 1e-9)
        if self.total and position is not None:
            frac = min(position / self.total, 1.0)
            bar = "#" * int(frac * 30)
            head = f"[{bar:<30}] {frac:4.0%}"
        else:
            head = ""
        sys.stderr.write(f"\r{head} {claims:,} claims {rate:,.0f} claims/s")
        if final:
            sys.stderr.write("\n")
        sys.stderr.flush()


def _bad_batch(violations: list[tuple[str, str]], lines: list[int]) -> BadRow:
    """A claims[i].field violation -> the CSV line at fault."""
    field, description = violations[0]
    if field.startswith("claims[") and "]" in field:
        index = int(field[7:field.index("]")])
        return BadRow(lines[index] if index < len(lines) else 0, field[field.index("]") + 2:], description)
    return BadRow(lines[0] if lines else 0, field, description)


def _local_results(data: str, batches):
    from onshi.core.claims import ClaimError, Verifier
    from onshi.core.engine import open_engine
    from onshi.core.store import open_env

    engine = open_engine(data)
    shared = getattr(engine, "env", None)  # py-lmdb opens a path once per process
    env = shared or open_env(data, readonly=True)
    try:
        verifier = Verifier(engine, env)
        for claims, lines in batches:
            try:
                response = verifier.verify(claims)
            except ClaimError as exc:
                raise _bad_batch(exc.violations, lines) from None
            yield claims, lines, response
    finally:
        if env is not shared:
            env.close()
        engine.close()


class NoAnswer(Exception):
    """ClaimService gave no answer (unreachable, stopped answering, failed): exit 1."""


class _ClaimStream:
    """The batches streamed to ClaimService, answered in order: each response is
    the verdicts of the oldest batch still pending. A bad row found while the
    stream runs ends the requests; it is raised once the server has answered
    what was sent."""

    def __init__(self, connection, batches, metadata):
        from onshi.server import client

        self.connection = connection
        self.batches = batches
        self.metadata = connection.metadata + tuple(metadata)
        self.pending: list[tuple[list, list[int]]] = []
        self.failure: Exception | None = None
        self.watch = client.AnswerWatch(connection.timeout)

    def requests(self):
        try:
            for claims, lines in self.batches:
                self.pending.append((claims, lines))
                self.watch.sent()
                yield cpb.VerifyClaimsRequest(claims=claims)
        except (BadRow, InputError) as exc:
            self.failure = exc

    def results(self):
        """Yields (claims, lines, response)."""
        import grpc
        from onshi.server import client
        from onshi.server.errors import field_violations
        from onshi.v1 import claims_pb2_grpc

        connection = self.connection
        call = claims_pb2_grpc.ClaimServiceStub(connection.channel).VerifyClaims(self.requests(),
                                                                                metadata=self.metadata)
        self.watch.start(call)
        try:
            for response in call:
                self.watch.answered()
                claims, lines = self.pending.pop(0)
                yield claims, lines, response
        except grpc.RpcError as exc:
            if self.watch.expired:
                raise NoAnswer(f"no answer from {connection.target} within {connection.timeout:g} s") from None
            violations = field_violations(exc) if exc.code() == grpc.StatusCode.INVALID_ARGUMENT else []
            if violations and self.pending:
                raise _bad_batch(violations, self.pending[0][1]) from None
            line = client.no_answer(exc, connection.target, secure=connection.secure, timeout=connection.timeout)
            if client.exit_code_of(exc) == client.EXIT_NO_ANSWER:
                raise NoAnswer(line) from None
            raise BadRow(0, "ClaimService", line) from None
        finally:
            self.watch.close()
        if self.failure is not None:
            raise self.failure


def run_verify(args) -> int:
    try:
        source = open_input(args.input)
    except InputError as exc:
        print(f"onshi claims verify: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    connection = sink = None
    try:
        if args.target:
            from onshi.server import client

            try:
                connection = client.connect(args, f"facility:{args.facility}" if args.facility else "review",
                                            options=(("grpc.max_receive_message_length", 64 << 20),
                                                     ("grpc.max_send_message_length", 64 << 20)))
            except client.ConnectError as exc:
                print(f"onshi claims verify: {exc}", file=sys.stderr)
                return EXIT_BAD_INPUT
        sink = Output(args.output)
        return _verify(args, source, sink, connection)
    except InputError as exc:
        print(f"onshi claims verify: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    finally:
        if sink is not None:
            sink.discard()  # nothing left to discard after commit()
        if connection is not None:
            connection.close()
        if source is not sys.stdin.buffer:
            source.close()


def _verify(args, source, sink: Output, connection) -> int:
    total = None
    if source is not sys.stdin.buffer:
        st = os.fstat(source.fileno())
        total = st.st_size if stat.S_ISREG(st.st_mode) else None
    progress = Progress(total, enabled=args.progress or (sys.stderr.isatty() and not args.quiet))
    counts: Counter[str] = Counter()
    done = 0
    lines_in = TextLines(source, "stdin" if args.input == "-" else args.input)
    try:
        writer = csv.writer(sink.file)
        writer.writerow(OUT_COLUMNS)
        batches = read_claims(lines_in, args.batch)
        if connection is not None:
            md = (("x-onshi-facility", args.facility),) if args.facility else ()
            results = _ClaimStream(connection, batches, md).results()
        else:
            results = _local_results(args.data, batches)
        for claims, _lines, response in results:
            for v in response.verdicts:
                counts[outcome_name(v.outcome)] += 1
                writer.writerow(verdict_row(v))
            done += len(claims)
            progress.update(done, lines_in.position)
        progress.update(done, lines_in.position, final=True)
        sink.commit()
    except (BadRow, InputError) as exc:
        print(f"onshi claims verify: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except NoAnswer as exc:
        print(f"onshi claims verify: {exc}", file=sys.stderr)
        return EXIT_NO_ANSWER
    except OSError as exc:  # the local store: missing, unreadable
        print(f"onshi claims verify: {exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else ""),
              file=sys.stderr)
        return EXIT_BAD_INPUT
    print(f"{done} claims verified")
    for name in ("OK", "REROUTE", "SPLIT", "RESOLVED_UNKNOWN", "UNRESOLVED", "RETURN"):
        print(f"  {name:<16} {counts.get(name, 0)}")
    return 0


def register(subparsers) -> None:
    claims = subparsers.add_parser("claims", help="claims (レセプト) verification for review staff",
                                   description="Claim files against the qualification history (docs/CLAIMS.md).")
    sub = claims.add_subparsers(dest="claims_command", required=True, metavar="COMMAND")
    verify = sub.add_parser("verify", help="verify a CSV of claims, write a CSV of verdicts",
                            description="One verdict per claim (OK, REROUTE, SPLIT, RESOLVED_UNKNOWN, "
                                        "UNRESOLVED, RETURN). Columns: docs/CLAIMS.md.")
    verify.add_argument("input", help="claims CSV (- for stdin)")
    verify.add_argument("output", help="verdicts CSV (- for stdout)")
    where = verify.add_mutually_exclusive_group()
    where.add_argument("--data", default=os.environ.get("ONSHI_DATA"),
                       help="local store directory, read-only; nothing recorded (default $ONSHI_DATA)")
    where.add_argument("--target", help="ClaimService address (onshi ingest-serve); verdicts are recorded")
    verify.add_argument("--facility", help="with --target: pre-submission check as this facility (not recorded)")
    verify.add_argument("--batch", type=int, default=BATCH, help=f"claims per batch (default {BATCH})")
    verify.add_argument("--progress", action="store_true", help="draw the progress bar even if stderr is not a terminal")
    verify.add_argument("--quiet", action="store_true", help="no progress bar")
    from onshi.server import client  # the command's client side (a CLI module, not the claims rules)

    client.add_arguments(verify, target=False, identity_help="default review, or facility:CODE with --facility")
    verify.set_defaults(func=_run)


def _run(args) -> int:
    if not args.target and not args.data:
        print("onshi claims verify: give --data DIR (or set ONSHI_DATA) or --target HOST:PORT", file=sys.stderr)
        return EXIT_BAD_INPUT
    if not 1 <= args.batch <= 10_000:
        print("onshi claims verify: --batch must be 1..10000", file=sys.stderr)
        return EXIT_BAD_INPUT
    return run_verify(args)
