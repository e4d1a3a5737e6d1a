"""`onshi claims verify IN OUT`: claim files for review staff (docs/CLAIMS.md).

CSV in (one claim per row, header names the columns), CSV out (one verdict per
claim, same order), a progress bar with claims/s on stderr and the count per
verdict at the end. Verifies against a local store (--data, read-only, nothing
recorded) or through a running ClaimService (--target, recorded for
apportionment like any review-body stream). The file format is
onshi.core.claims_file.
"""

from __future__ import annotations

import csv
import os
import stat
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator

from ..client import connection
from ..core.claims_file import (
    BATCH,
    EXIT_BAD_INPUT,
    EXIT_NO_ANSWER,
    OUT_COLUMNS,
    BadRow,
    outcome_name,
    read_claims,
    verdict_row,
)
from ..core.infile import (
    InputError,
    Output,
    TextLines,
    open_input,
)
from ..v1 import claims_pb2 as cpb


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
        index = int(field[7 : field.index("]")])
        return BadRow(lines[index] if index < len(lines) else 0, field[field.index("]") + 2 :], description)
    return BadRow(lines[0] if lines else 0, field, description)


def _local_results(data: str, batches):
    from ..core.claims import ClaimError, Verifier
    from ..core.engine import open_engine
    from ..core.store import open_env

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

    def __init__(
        self,
        conn: connection.Connection,
        batches: Iterator[tuple[list[cpb.Claim], list[int]]],
        metadata: Iterable[tuple[str, str]],
    ) -> None:
        self.connection = conn
        self.batches = batches
        self.metadata = conn.metadata + tuple(metadata)
        self.pending: list[tuple[list, list[int]]] = []
        self.failure: Exception | None = None
        self.watch = connection.AnswerWatch(conn.timeout)

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

        from ..client.statuses import field_violations
        from ..v1 import claims_pb2_grpc

        conn = self.connection
        call = claims_pb2_grpc.ClaimServiceStub(conn.channel).VerifyClaims(self.requests(), metadata=self.metadata)
        self.watch.start(call)
        try:
            for response in call:
                self.watch.answered()
                claims, lines = self.pending.pop(0)
                yield claims, lines, response
        except grpc.RpcError as exc:
            if self.watch.expired:
                raise NoAnswer(f"no answer from {conn.target} within {conn.timeout:g} s") from None
            violations = field_violations(exc) if exc.code() == grpc.StatusCode.INVALID_ARGUMENT else []
            if violations and self.pending:
                raise _bad_batch(violations, self.pending[0][1]) from None
            line = connection.no_answer(exc, conn.target, secure=conn.secure, timeout=conn.timeout)
            if connection.exit_code_of(exc) == connection.EXIT_NO_ANSWER:
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
    conn = sink = None
    try:
        if args.target:
            try:
                conn = connection.connect(
                    args,
                    f"facility:{args.facility}" if args.facility else "review",
                    options=(("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20)),
                )
            except connection.ConnectError as exc:
                print(f"onshi claims verify: {exc}", file=sys.stderr)
                return EXIT_BAD_INPUT
        sink = Output(args.output)
        return _verify(args, source, sink, conn)
    except InputError as exc:
        print(f"onshi claims verify: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    finally:
        if sink is not None:
            sink.discard()  # nothing left to discard after commit()
        if conn is not None:
            conn.close()
        if source is not sys.stdin.buffer:
            source.close()


def _verify(args, source, sink: Output, conn) -> int:
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
        if conn is not None:
            md = (("x-onshi-facility", args.facility),) if args.facility else ()
            results = _ClaimStream(conn, batches, md).results()
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
        print(
            f"onshi claims verify: {exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else ""),
            file=sys.stderr,
        )
        return EXIT_BAD_INPUT
    print(f"{done} claims verified")
    for name in ("OK", "REROUTE", "SPLIT", "RESOLVED_UNKNOWN", "UNRESOLVED", "RETURN"):
        print(f"  {name:<16} {counts.get(name, 0)}")
    return 0


def register(subparsers) -> None:
    claims = subparsers.add_parser(
        "claims",
        help="claims (レセプト) verification for review staff",
        description="Claim files against the qualification history (docs/CLAIMS.md).",
    )
    sub = claims.add_subparsers(dest="claims_command", required=True, metavar="COMMAND")
    verify = sub.add_parser(
        "verify",
        help="verify a CSV of claims, write a CSV of verdicts",
        description="One verdict per claim (OK, REROUTE, SPLIT, RESOLVED_UNKNOWN, "
        "UNRESOLVED, RETURN). Columns: docs/CLAIMS.md.",
    )
    verify.add_argument("input", help="claims CSV (- for stdin)")
    verify.add_argument("output", help="verdicts CSV (- for stdout)")
    where = verify.add_mutually_exclusive_group()
    where.add_argument(
        "--data",
        default=os.environ.get("ONSHI_DATA"),
        help="local store directory, read-only; nothing recorded (default $ONSHI_DATA)",
    )
    where.add_argument("--target", help="ClaimService address (onshi ingest-serve); verdicts are recorded")
    verify.add_argument("--facility", help="with --target: pre-submission check as this facility (not recorded)")
    verify.add_argument("--batch", type=int, default=BATCH, help=f"claims per batch (default {BATCH})")
    verify.add_argument(
        "--progress", action="store_true", help="draw the progress bar even if stderr is not a terminal"
    )
    verify.add_argument("--quiet", action="store_true", help="no progress bar")
    connection.add_arguments(verify, target=False, identity_help="default review, or facility:CODE with --facility")
    verify.set_defaults(func=_run)


def _run(args) -> int:
    if not args.target and not args.data:
        print("onshi claims verify: give --data DIR (or set ONSHI_DATA) or --target HOST:PORT", file=sys.stderr)
        return EXIT_BAD_INPUT
    if not 1 <= args.batch <= 10_000:
        print("onshi claims verify: --batch must be 1..10000", file=sys.stderr)
        return EXIT_BAD_INPUT
    return run_verify(args)
