"""`onshi ingest-serve` (the single writer) and `onshi ingest-file` (a client for
insurers that deliver files; columns in docs/INGEST.md).

`UpdateStreamer` is the client side of the at-least-once contract: it keeps
every update without an ack, and when the stream breaks (the server restarted,
the network dropped) it re-sends exactly those, in their order. The server's
idempotency on (insurer, update_id) turns at-least-once into exactly-once.
"""

from __future__ import annotations

import collections
import csv
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar, cast

from google.protobuf import json_format

from ..core import dates
from ..core.infile import InputError, TextLines, csv_header, csv_records, open_input
from ..v1 import enrollment_pb2 as pb
from ..v1 import qualification_pb2 as qpb

EXIT_BAD_INPUT = 2
EXIT_NO_ANSWER = 1
INSURER_METADATA = "x-onshi-insurer"
DEFAULT_TARGET = "127.0.0.1:50052"
OUTCOME_NAMES = {
    pb.ENROLLMENT_OUTCOME_ACCEPTED: "accepted",
    pb.ENROLLMENT_OUTCOME_DUPLICATE: "duplicate",
    pb.ENROLLMENT_OUTCOME_REJECTED: "rejected",
    pb.ENROLLMENT_OUTCOME_QUARANTINED: "quarantined",
    pb.ENROLLMENT_OUTCOME_DISCARDED: "discarded",
}


def register(subparsers) -> None:
    serve = subparsers.add_parser(
        "ingest-serve",
        help="run the ingest service (the store's single writer)",
        description="EnrollmentService + LinkService (and claims, when built) over the store, "
        "group-committing every write. Eligibility servers see each commit at once.",
    )
    serve.add_argument(
        "--data",
        default=os.environ.get("ONSHI_DATA"),
        required="ONSHI_DATA" not in os.environ,
        help="store directory (created if missing)",
    )
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=50052, help="0 picks a free port (printed on stdout)")
    serve.add_argument("--port-file", help="write the bound port here once serving")
    serve.add_argument("--grace", type=float, default=5.0, help="seconds in-flight streams get on SIGTERM")
    serve.add_argument(
        "--max-map-size", type=int, default=None, help="largest map size in bytes the store may grow to (default 1 TiB)"
    )
    serve.add_argument(
        "--map-size", type=int, default=None, help="initial map size in bytes (default 1 GiB; it doubles on demand)"
    )
    from ..server import (
        trust_options,  # mTLS, access log, Trust/Audit/Relay services
    )

    trust_options.add_arguments(serve, relay=True)
    serve.set_defaults(func=_serve)

    ingest = subparsers.add_parser(
        "ingest-file",
        help="stream an insurer's update file (CSV or JSON lines) to ingest-serve",
        description="Send every row; re-send what had no ack if the stream breaks; print a summary. "
        "File columns: docs/INGEST.md.",
    )
    ingest.add_argument("file", help="updates (.csv, or .jsonl/.json: one EnrollmentUpdate per line); - for stdin")
    ingest.add_argument("--format", choices=("csv", "jsonl"), help="default: from the file name")
    ingest.add_argument(
        "--insurer", action="append", help="insurer number(s) the stream declares (default: every insurer in the file)"
    )
    ingest.add_argument(
        "--registry", action="store_true", help="the file holds resident registry records (PutResidents), not updates"
    )
    ingest.add_argument(
        "--report",
        help="write every non-accepted ack, and every accepted one that matched "
        "the registry only loosely, here as JSON lines",
    )
    ingest.add_argument("--retries", type=int, default=5, help="reconnect attempts when the stream breaks")
    ingest.add_argument(
        "--batch",
        type=int,
        default=500,
        help="updates per message (StreamUpdateBatches); 1 sends one per message (StreamUpdates)",
    )
    ingest.add_argument("--no-progress", action="store_true")
    from ..client import connection

    connection.add_arguments(
        ingest,
        target_default=DEFAULT_TARGET,
        target_env="ONSHI_INGEST_TARGET",
        identity_help="default: the insurer certificate covering the file's insurer numbers "
        "(insurer:NUMBER,...), operator with --registry",
    )
    ingest.set_defaults(func=_ingest_file)


def _serve(args) -> int:
    from ..server import trust_setup, writer_server

    credentials, interceptors, trust = trust_setup.ingest_trust(args, args.host)
    return writer_server.serve(
        args.data,
        host=args.host,
        port=args.port,
        grace=args.grace,
        port_file=args.port_file,
        map_size=args.map_size,
        max_map_size=args.max_map_size,
        credentials=credentials,
        interceptors=interceptors,
        trust=trust,
    )


# --- the client -----------------------------------------------------------------------


class UpdateStreamer:
    """Streams updates with at most `window` unacked, re-sending the unacked after a break.

    batch > 1 uses StreamUpdateBatches (up to `batch` updates per message);
    batch == 1 the one-update-per-message StreamUpdates. Acks arrive in request
    order, so the oldest unacked update is always the one an ack answers.
    """

    RETRYABLE = (
        "UNAVAILABLE",
        "CANCELLED",
        "UNKNOWN",
        "INTERNAL",
        "DEADLINE_EXCEEDED",
        "RESOURCE_EXHAUSTED",
        "ABORTED",
    )

    def __init__(
        self,
        target: str,
        insurers: Iterable[str],
        *,
        window: int = 4096,
        batch: int = 1,
        retries: int = 5,
        retry_delay: float = 0.5,
        on_break: Callable[[Exception], None] | None = None,
        credentials=None,
        timeout: float | None = None,
        metadata: tuple = (),
    ):
        """timeout=None: wait for the server as long as it takes (each attempt
        waits for it to come up). With a timeout, the first connection must
        succeed at once, and a stream whose acks stop for `timeout` seconds is
        broken off and counts as a break (after a break, each attempt waits up
        to `timeout` for the server to come back)."""
        self.target = target
        self.metadata = ((INSURER_METADATA, ",".join(sorted(set(insurers)))), *tuple(metadata))
        self.window = window
        self.batch = max(1, min(batch, window))
        self.retries = retries
        self.retry_delay = retry_delay
        self.on_break = on_break
        self.credentials = credentials
        self.timeout = timeout
        self.stalled = False  # the last break was acks stopping for `timeout` seconds

    def run(
        self, updates: Iterable[pb.EnrollmentUpdate], on_ack: Callable[[pb.EnrollmentUpdate, pb.EnrollmentAck], None]
    ) -> None:
        import grpc

        from ..client.connection import AnswerWatch, open_channel
        from ..v1 import enrollment_pb2_grpc

        source = iter(updates)
        unacked: collections.deque[pb.EnrollmentUpdate] = collections.deque()  # sent, oldest first
        resend: collections.deque[pb.EnrollmentUpdate] = collections.deque()  # to send before the source
        lock = threading.Lock()
        attempt = 0
        acked_once = False  # the server has answered this run: a later break is worth a retry
        while True:
            room = threading.Semaphore(self.window)
            stop = threading.Event()
            # Held by the request generator while it takes an update and records it as
            # sent, so a break can wait for it and then account for every update.
            taking = threading.Lock()
            watch = AnswerWatch(self.timeout) if self.timeout else None

            def take(block: bool, watch=watch, room=room, stop=stop, taking=taking):
                """The next update to send, counted in `unacked`; None when there is none
                (or, with block=False, no room right now)."""
                with taking:
                    if stop.is_set():
                        return None
                    while not room.acquire(timeout=0.1 if block else 0):
                        if stop.is_set() or not block:
                            return None
                    update: pb.EnrollmentUpdate | None
                    if resend:
                        update = resend.popleft()
                    else:
                        update = next(source, None)
                        if update is None:
                            room.release()
                            return None
                    with lock:
                        unacked.append(update)
                    if watch:
                        watch.sent()
                    return update

            def single() -> Iterator[pb.EnrollmentUpdate]:
                while (update := take(True)) is not None:
                    yield update

            def batches() -> Iterator[pb.StreamUpdateBatchesRequest]:
                while (first := take(True)) is not None:
                    group = [first]
                    while len(group) < self.batch and (update := take(False)) is not None:
                        group.append(update)
                    yield pb.StreamUpdateBatchesRequest(updates=group)

            # The first connection fails fast (an unreachable server is reported at
            # once); after a break, wait for the server to come back.
            wait = self.timeout is None or acked_once
            with open_channel(self.target, self.credentials) as channel:
                stub = enrollment_pb2_grpc.EnrollmentServiceStub(channel)
                if self.batch > 1:
                    call = stub.StreamUpdateBatches(batches(), metadata=self.metadata, wait_for_ready=wait)
                    acks = (ack for response in call for ack in response.acks)
                else:
                    call = acks = stub.StreamUpdates(single(), metadata=self.metadata, wait_for_ready=wait)
                if watch:
                    watch.start(call)
                try:
                    for ack in acks:
                        acked_once = True
                        if watch:
                            watch.answered()
                        with lock:
                            update = unacked.popleft()
                        if update.update_id != ack.update_id:
                            raise RuntimeError(f"ack for {ack.update_id!r} arrived where {update.update_id!r} was due")
                        room.release()
                        on_ack(update, ack)
                    return
                except grpc.RpcError as exc:
                    stop.set()
                    with taking, lock:  # the generator is not inside take(): every update is accounted for
                        resend.extendleft(reversed(unacked))
                        unacked.clear()
                    self.stalled = bool(watch and watch.expired)
                    retry = exc.code().name in self.RETRYABLE and (acked_once or self.timeout is None)
                    if not retry or attempt >= self.retries:
                        raise
                    attempt += 1
                    if self.on_break:
                        self.on_break(exc)
                    time.sleep(self.retry_delay)
                finally:
                    if watch:
                        watch.close()


# --- file formats (docs/INGEST.md) ------------------------------------------------------

CSV_COLUMNS = (
    "update_id",
    "insurer_number",
    "resident_id",
    "change",
    "name",
    "name_kana",
    "birth_date",
    "sex",
    "address",
    "postcode",
    "symbol",
    "number",
    "branch",
    "relationship",
    "insurer_name",
    "card_kind",
    "acquisition_date",
    "loss_date",
    "loss_reason",
    "burden_ratio",
    "preschool",
    "elderly_ratio",
    "elderly_from",
    "elderly_until",
    "limit_category",
    "limit_reduction",
    "limit_from",
    "limit_until",
    "specific_diseases",
    "subsidies",
    "effective_date",
)
REGISTRY_COLUMNS = ("resident_id", "name", "name_kana", "birth_date", "sex", "address", "postcode")
SEX = {
    "": qpb.SEX_UNSPECIFIED,
    "1": qpb.SEX_MALE,
    "m": qpb.SEX_MALE,
    "male": qpb.SEX_MALE,
    "男": qpb.SEX_MALE,
    "2": qpb.SEX_FEMALE,
    "f": qpb.SEX_FEMALE,
    "female": qpb.SEX_FEMALE,
    "女": qpb.SEX_FEMALE,
}
RELATIONSHIP = {
    "": qpb.RELATIONSHIP_UNSPECIFIED,
    "insured": qpb.RELATIONSHIP_INSURED,
    "本人": qpb.RELATIONSHIP_INSURED,
    "1": qpb.RELATIONSHIP_INSURED,
    "dependent": qpb.RELATIONSHIP_DEPENDENT,
    "家族": qpb.RELATIONSHIP_DEPENDENT,
    "2": qpb.RELATIONSHIP_DEPENDENT,
}
_DEATH, _ASSISTANCE = qpb.LOSS_REASON_DEATH, qpb.LOSS_REASON_PUBLIC_ASSISTANCE
_OTHER_INSURANCE, _OTHER = qpb.LOSS_REASON_OTHER_INSURANCE, qpb.LOSS_REASON_OTHER
LOSS_REASON = {
    "": qpb.LOSS_REASON_UNSPECIFIED,
    "01": _DEATH,
    "1": _DEATH,
    "death": _DEATH,
    "02": _ASSISTANCE,
    "2": _ASSISTANCE,
    "public_assistance": _ASSISTANCE,
    "03": _OTHER_INSURANCE,
    "3": _OTHER_INSURANCE,
    "other_insurance": _OTHER_INSURANCE,
    "99": _OTHER,
    "other": _OTHER,
}
CHANGES = (
    "acquisition",
    "loss",
    "dependent_addition",
    "dependent_removal",
    "burden_ratio_change",
    "certificates_change",
    "subsidies_change",
    "basic_information_change",
)


class BadRow(ValueError):
    def __init__(self, line: int, message: str):
        super().__init__(f"line {line}: {message}")


def _date(text: str, field: str, line: int):
    text = text.strip()
    if not text:
        return None
    try:
        return dates.to_proto(dates.parse_iso(text))
    except ValueError:
        raise BadRow(line, f"{field}: not a YYYY-MM-DD date: {text!r}") from None


def _int(text: str, field: str, line: int) -> int:
    text = text.strip()
    if not text:
        return 0
    try:
        return int(text)
    except ValueError:
        raise BadRow(line, f"{field}: not a number: {text!r}") from None


_Value = TypeVar("_Value")


def _lookup(table: dict[str, _Value], text: str, field: str, line: int) -> _Value:
    key = text.strip().lower()
    if key not in table:
        raise BadRow(line, f"{field}: unknown value {text!r} (one of {', '.join(k for k in table if k)})")
    return table[key]


def _enum(enum, text: str, prefix: str, field: str, line: int) -> int:
    text = text.strip()
    if not text:
        return 0
    if text.isdigit():
        return int(text)
    try:
        return enum.Value(prefix + text.upper())
    except ValueError:
        raise BadRow(line, f"{field}: unknown value {text!r}") from None


def _set_date(message, name: str, value) -> None:
    if value is not None:
        getattr(message, name).CopyFrom(value)


def _json_list(text: str, message_type, field: str, line: int) -> list:
    text = text.strip()
    if not text:
        return []
    try:
        return [json_format.ParseDict(item, message_type()) for item in json.loads(text)]
    except (ValueError, json_format.ParseError, TypeError, RecursionError) as exc:
        raise BadRow(line, f"{field}: a JSON list of {message_type.DESCRIPTOR.name} expected ({exc})") from None


def update_from_csv(row: dict, line: int) -> pb.EnrollmentUpdate:
    g = lambda name: (row.get(name) or "").strip()  # noqa: E731
    update = pb.EnrollmentUpdate(
        update_id=g("update_id"), insurer_number=g("insurer_number"), resident_id=g("resident_id")
    )
    p = update.person
    p.name, p.name_kana, p.address, p.postcode = g("name"), g("name_kana"), g("address"), g("postcode")
    p.sex = _lookup(SEX, g("sex"), "sex", line)
    _set_date(p, "birth_date", _date(g("birth_date"), "birth_date", line))
    change = g("change").lower()
    if change in ("burden_ratio", "certificates", "subsidies", "basic_information"):
        change += "_change"
    if change not in CHANGES:
        raise BadRow(line, f"change: one of {', '.join(CHANGES)} expected, not {g('change')!r}")
    number = pb.InsuredNumber(symbol=g("symbol"), number=g("number"), branch=g("branch"))
    elderly: qpb.ElderlyRecipientCertificate | None = None
    limit: qpb.LimitAmountCertificate | None = None
    if g("elderly_ratio") or g("elderly_from"):
        e = qpb.ElderlyRecipientCertificate(burden_ratio_percent=_int(g("elderly_ratio"), "elderly_ratio", line))
        _set_date(e, "valid_from", _date(g("elderly_from"), "elderly_from", line))
        _set_date(e, "valid_until", _date(g("elderly_until"), "elderly_until", line))
        elderly = e
    if g("limit_category") or g("limit_from"):
        lim = qpb.LimitAmountCertificate(
            category=g("limit_category"), standard_burden_reduction=g("limit_reduction").lower() in ("1", "true", "yes")
        )
        _set_date(lim, "valid_from", _date(g("limit_from"), "limit_from", line))
        _set_date(lim, "valid_until", _date(g("limit_until"), "limit_until", line))
        limit = lim
    diseases = _json_list(g("specific_diseases"), qpb.SpecificDiseaseCertificate, "specific_diseases", line)
    subsidies = _json_list(g("subsidies"), qpb.PublicExpenseSubsidy, "subsidies", line)
    if change in ("acquisition", "dependent_addition"):
        q = qpb.Qualification(
            insurer_name=g("insurer_name"),
            symbol=number.symbol,
            number=number.number,
            branch=number.branch,
            relationship=_lookup(RELATIONSHIP, g("relationship"), "relationship", line),
            burden_ratio_percent=_int(g("burden_ratio"), "burden_ratio", line),
            preschool=g("preschool").lower() in ("1", "true", "yes"),
            # proto3 enums are open: a number the schema does not name is kept as sent
            card_kind=cast(qpb.CardKind, _enum(qpb.CardKind, g("card_kind"), "CARD_KIND_", "card_kind", line)),
            specific_diseases=diseases,
            subsidies=subsidies,
            elderly_recipient=elderly,
            limit_amount=limit,
        )
        _set_date(q, "acquisition_date", _date(g("acquisition_date"), "acquisition_date", line))
        getattr(update, change).qualification.CopyFrom(q)
    elif change in ("loss", "dependent_removal"):
        c = getattr(update, change)
        c.insured_number.CopyFrom(number)
        c.loss_reason = _lookup(LOSS_REASON, g("loss_reason"), "loss_reason", line)
        _set_date(c, "loss_date", _date(g("loss_date"), "loss_date", line))
    elif change == "burden_ratio_change":
        update.burden_ratio_change.insured_number.CopyFrom(number)
        update.burden_ratio_change.burden_ratio_percent = _int(g("burden_ratio"), "burden_ratio", line)
    elif change == "certificates_change":
        c = update.certificates_change
        c.insured_number.CopyFrom(number)
        if elderly is not None:
            c.elderly_recipient.CopyFrom(elderly)
        if limit is not None:
            c.limit_amount.CopyFrom(limit)
        c.specific_diseases.extend(diseases)
    elif change == "subsidies_change":
        update.subsidies_change.insured_number.CopyFrom(number)
        update.subsidies_change.subsidies.extend(subsidies)
    else:
        update.basic_information_change.SetInParent()
    if change in ("burden_ratio_change", "certificates_change", "subsidies_change", "basic_information_change"):
        _set_date(getattr(update, change), "effective_date", _date(g("effective_date"), "effective_date", line))
    return update


def resident_from_csv(row: dict, line: int) -> pb.Resident:
    g = lambda name: (row.get(name) or "").strip()  # noqa: E731
    r = pb.Resident(
        resident_id=g("resident_id"),
        name=g("name"),
        name_kana=g("name_kana"),
        sex=_lookup(SEX, g("sex"), "sex", line),
        address=g("address"),
        postcode=g("postcode"),
    )
    _set_date(r, "birth_date", _date(g("birth_date"), "birth_date", line))
    return r


def read_rows(lines: TextLines, fmt: str, message_type, from_csv) -> Iterator:
    """Parse a file's lines lazily; raises BadRow naming the line of the first bad
    row, InputError for a file that is not text of records."""
    if fmt == "csv":
        reader = csv.DictReader(lines)
        header = csv_header(reader, lines)
        unknown = set(header) - set(CSV_COLUMNS) - set(REGISTRY_COLUMNS)
        if unknown:
            raise BadRow(1, f"unknown column(s) {', '.join(sorted(unknown))} (see docs/INGEST.md)")
        for row in csv_records(reader, lines):
            yield from_csv(row, reader.line_num)
        return
    for n, text in enumerate(lines, 1):
        if not text.strip():
            continue
        try:
            yield json_format.Parse(text, message_type())
        except json_format.ParseError as exc:
            raise BadRow(n, f"not a {message_type.DESCRIPTOR.name} in JSON: {exc}") from None


class Progress:
    """A one-line progress bar on stderr, redrawn at most 5 times a second."""

    def __init__(self, total: int, enabled: bool, out=sys.stderr):
        self.total, self.enabled, self.out = total, enabled, out
        self.done = 0
        self.loose = 0  # acks whose basic information matched the registry only loosely
        self.counts: collections.Counter = collections.Counter()
        self.started = time.monotonic()
        self._drawn = 0.0

    def tick(self, outcome: str) -> None:
        self.done += 1
        self.counts[outcome] += 1
        now = time.monotonic()
        if self.enabled and (now - self._drawn >= 0.2 or self.done == self.total):
            self._drawn = now
            self.draw(now)

    def draw(self, now: float) -> None:
        width = 30
        filled = width * self.done // max(self.total, 1)
        rate = self.done / max(now - self.started, 1e-9)
        print(
            f"\r[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} "
            f"{rate:,.0f}/s  " + " ".join(f"{k} {v}" for k, v in sorted(self.counts.items())),
            end="",
            file=self.out,
            flush=True,
        )

    def finish(self) -> None:
        if self.enabled:
            self.draw(time.monotonic())
            print(file=self.out)


def _ingest_file(args) -> int:
    import grpc

    from ..client import connection

    fmt = args.format or ("csv" if args.file.lower().endswith(".csv") else "jsonl")
    message_type, from_csv = (
        (pb.Resident, resident_from_csv) if args.registry else (pb.EnrollmentUpdate, update_from_csv)
    )
    # First pass: parse everything, so a malformed file sends nothing, and count rows for the bar.
    try:
        source = open_input(args.file)
        try:
            lines = TextLines(source, "stdin" if args.file == "-" else args.file)
            rows = list(read_rows(lines, fmt, message_type, from_csv))
        finally:
            if source is not sys.stdin.buffer:
                source.close()
    except (BadRow, InputError) as exc:
        print(f"onshi ingest-file: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    insurers = (
        args.insurer or sorted({u.insurer_number.strip() for u in rows if u.insurer_number.strip()})
        if not args.registry
        else []
    )
    if not args.registry and not insurers:
        print("onshi ingest-file: no insurer number in the file; pass --insurer", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        report = open(args.report, "w", encoding="utf-8") if args.report else None  # noqa: SIM115
    except OSError as exc:
        print(f"onshi ingest-file: --report {args.report}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        conn = connection.connect(args, "operator" if args.registry else "insurer:" + ",".join(insurers))
    except connection.ConnectError as exc:
        print(f"onshi ingest-file: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    progress = Progress(len(rows), enabled=not args.no_progress)
    try:
        if args.registry:
            return _send_registry(conn, rows, progress)
        shown = [0]

        def on_ack(update, ack):
            name = OUTCOME_NAMES.get(ack.outcome, "unknown")
            progress.tick(name)
            if ack.loose_matches:
                progress.loose += 1
            if (ack.outcome != pb.ENROLLMENT_OUTCOME_ACCEPTED or ack.loose_matches) and report:
                report.write(json_format.MessageToJson(ack, indent=None, ensure_ascii=False) + "\n")
            if ack.outcome in (pb.ENROLLMENT_OUTCOME_REJECTED, pb.ENROLLMENT_OUTCOME_QUARANTINED) and shown[0] < 10:
                shown[0] += 1
                print(f"\n{ack.update_id}: {name}: {ack.message}", file=sys.stderr)

        def on_break(exc):
            print(
                f"\nonshi ingest-file: stream broke ({exc.code().name}); re-sending what had no ack",
                file=sys.stderr,
                flush=True,
            )

        from ..server.auth import INSURER_KEY

        streamer = UpdateStreamer(
            args.target,
            insurers,
            retries=args.retries,
            batch=args.batch,
            on_break=on_break,
            credentials=connection.read_credentials(conn.caller.files) if conn.caller.files is not None else None,
            timeout=args.timeout,
            metadata=tuple(kv for kv in conn.metadata if kv[0] != INSURER_KEY),
        )
        try:
            streamer.run(rows, on_ack)
        except grpc.RpcError as exc:
            progress.finish()
            line = (
                f"no ack from {args.target} within {args.timeout:g} s"
                if streamer.stalled
                else connection.no_answer(exc, args.target, secure=conn.secure, timeout=args.timeout)
            )
            print(f"onshi ingest-file: {line}", file=sys.stderr)
            _summary(progress)
            return connection.exit_code_of(exc) if not streamer.stalled else EXIT_NO_ANSWER
        progress.finish()
        _summary(progress)
        return 0
    finally:
        conn.close()
        if report:
            report.close()


def _summary(progress: Progress) -> None:
    c = progress.counts
    elapsed = time.monotonic() - progress.started
    print(
        f"{progress.done} of {progress.total} updates: accepted {c['accepted']}, duplicate {c['duplicate']}, "
        f"rejected {c['rejected']}, quarantined {c['quarantined']} ({elapsed:.1f}s)",
        flush=True,
    )
    if progress.loose:
        print(
            f"{progress.loose} matched the registry only by a loose rule (kanji variant, kana or "
            f"address notation): their acks name the field and rule (--report)",
            flush=True,
        )


def _send_registry(conn, residents: list, progress: Progress) -> int:
    import grpc

    from ..client import connection
    from ..client.statuses import field_violations
    from ..v1 import enrollment_pb2_grpc

    stub = enrollment_pb2_grpc.EnrollmentServiceStub(conn.channel)
    for i in range(0, len(residents), 1000):
        page = residents[i : i + 1000]
        try:
            stub.PutResidents(pb.PutResidentsRequest(residents=page), timeout=conn.timeout, metadata=conn.metadata)
        except grpc.RpcError as exc:
            progress.finish()
            line = connection.no_answer(exc, conn.target, secure=conn.secure, timeout=conn.timeout)
            print(f"onshi ingest-file: {line}", file=sys.stderr)
            for field, description in field_violations(exc)[:20]:
                print(f"  {field}: {description}", file=sys.stderr)
            return connection.exit_code_of(exc)
        for _ in page:
            progress.tick("stored")
    progress.finish()
    print(f"{progress.done} registry records stored", flush=True)
    return 0
