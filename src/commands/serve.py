"""`onshi serve` and `onshi check`."""

from __future__ import annotations

import argparse
import os
import re
import sys

from ..v1 import eligibility_pb2

# Exit codes of `onshi check`: 0 valid; 10 + the validity code otherwise, so a
# script can tell 無効 from 該当資格なし; 2 bad input; 1 no answer (server down...).
EXIT_BAD_INPUT = 2
EXIT_NO_ANSWER = 1
VALIDITY_TEXT = {
    eligibility_pb2.VALIDITY_VALID: ("有効", "valid"),
    eligibility_pb2.VALIDITY_INVALID: ("無効", "invalid"),
    eligibility_pb2.VALIDITY_INVALID_NEWER_EXISTS: (
        "無効（新しい資格あり）",
        "invalid, a newer qualification exists",
    ),
    eligibility_pb2.VALIDITY_NO_RECORD: ("該当資格なし", "no record"),
    eligibility_pb2.VALIDITY_MULTIPLE: ("複数該当", "multiple qualifications"),
}
RELATIONSHIP_TEXT = {1: "本人 insured", 2: "家族 dependent"}
SEX_TEXT = {1: "男 male", 2: "女 female"}
LOSS_REASON_TEXT = {
    1: "01 死亡 death",
    2: "02 生活保護 public assistance",
    3: "03 他保険取得 other insurance",
    99: "99 その他 other",
}
CARD_KIND_TEXT = {
    1: "被保険者証",
    2: "船員保険",
    3: "国民健康保険",
    4: "後期高齢者医療",
    5: "退職者医療",
    6: "短期被保険者証",
    7: "修学中特例",
    8: "住所地特例",
    9: "日雇特例",
    10: "資格証明書",
}
DISEASE_TEXT = {1: "人工透析 dialysis", 2: "血友病 haemophilia", 3: "HIV"}


def _port(text: str) -> int:
    port = int(text)
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError("must be 0-65535")
    return port


def register(subparsers) -> None:
    serve = subparsers.add_parser(
        "serve",
        help="run the EligibilityService (gRPC)",
        description="Serve checks from a store with N worker processes sharing the port.",
    )
    serve.add_argument(
        "--data",
        default=os.environ.get("ONSHI_DATA"),
        required="ONSHI_DATA" not in os.environ,
        help="store directory (from `onshi gen` or ingest)",
    )
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=_port, default=50051, help="0 picks a free port (printed on stdout)")
    serve.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="worker processes sharing the port via SO_REUSEPORT (default: CPU count)",
    )
    serve.add_argument(
        "--engine",
        choices=("native", "pure"),
        default=None,
        help="lookup engine only (default: $ONSHI_ENGINE, the switch of every native module, else native when built)",
    )
    serve.add_argument(
        "--threads",
        type=int,
        default=None,
        help="handler threads per worker (default: 2, or 4 with an access log)",
    )
    serve.add_argument("--grace", type=float, default=5.0, help="seconds in-flight calls get on SIGTERM")
    serve.add_argument("--port-file", help="write the bound port here once every worker serves")
    from ..server import trust_options  # mTLS roles, card proof, access log

    trust_options.add_arguments(serve)
    serve.set_defaults(func=_serve)

    check = subparsers.add_parser(
        "check",
        help="ask a running server about a card or an insurance-card number",
        description="Exit code: 0 valid, 12 invalid, 13 invalid (newer exists), 14 no record, "
        "15 multiple, 2 bad input, 1 no answer.",
    )
    what = check.add_mutually_exclusive_group(required=True)
    what.add_argument("--card", metavar="SERIAL", help="card certificate serial (hex)")
    what.add_argument(
        "--number",
        nargs=4,
        metavar=("INSURER", "SYMBOL", "NUMBER", "BRANCH"),
        help='insurance-card number; pass "" for an absent symbol or branch',
    )
    check.add_argument("--birth", metavar="YYYY-MM-DD", help="birth date (required with --number)")
    check.add_argument("--as-of", metavar="YYYY-MM-DD", help="visit date (default: today in Japan)")
    check.add_argument("--json", action="store_true", help="print the answer as JSON")
    from ..client import connection

    connection.add_arguments(
        check,
        identity_help="default operator, the internal role allowed a bare card "
        "serial (facilities must send a card proof: onshi terminal)",
    )
    check.set_defaults(func=_check)

    health = subparsers.add_parser(
        "health",
        help="ask a server whether it serves (grpc.health.v1); exit 0 SERVING, 1 otherwise",
        description="For scripts that start a server and wait for it: exit 0 once it answers SERVING, "
        "1 if it does not within --timeout (with --wait) or answers anything else.",
    )
    health.add_argument("--service", default="", help="a service name (default: the whole server)")
    health.add_argument("--wait", action="store_true", help="wait up to --timeout for the server to come up and serve")
    connection.add_arguments(health, identity_help="default operator (any caller of the PKI may ask)")
    health.set_defaults(func=_health)


def _serve(args) -> int:
    from ..server import app

    if args.workers < 1:
        print("onshi: --workers must be at least 1", file=sys.stderr)
        return EXIT_BAD_INPUT
    from ..server import trust_options

    trust_options.check_serve_args(args, args.host)
    if trust_options.requested(args) and not args.insecure_dev:
        # Read the certificates once here, so a wrong path is one line from the
        # parent rather than a traceback from every worker.
        from ..server import auth

        auth.credentials_from_args(args, args.host)
    threads = args.threads  # None: app.create_server picks (fewer without an access log)
    build = _trusted_server(args, threads) if trust_options.requested(args) else None
    return app.serve(
        args.data,
        host=args.host,
        port=args.port,
        workers=args.workers,
        engine=args.engine,
        grace=args.grace,
        threads=threads,
        port_file=args.port_file,
        build_server=build,
    )


def _trusted_server(args, threads: int | None):
    """build_server(engine, address) for app.serve: runs in each worker after
    fork. The replay table is opened here, before fork: every worker maps it,
    and so does every other server of the deployment (ingest-serve's ListMyAccess)."""
    from ..server import app, trust_setup

    replays = trust_setup.replay_table(args)

    def build(engine, address):
        trust = trust_setup.worker_trust(args, args.host, replays)
        if trust.log is not None:  # its appenders are the handler threads: a full batch goes at once
            trust.log.batch_target = threads or app.handler_threads(trust.log)
        return app.create_server(
            engine,
            address=address,
            threads=threads,
            credentials=trust.credentials,
            interceptors=trust.interceptors,
            card_proof=trust.hooks.card_proof,
            audit=trust.hooks.audit if trust.log is not None else None,
        )

    return build


def _date_arg(text: str | None, name: str):
    """YYYY-MM-DD as a google.type.Date, not checked here: an impossible date
    (2023-02-29) goes to the server, which names the field at fault."""
    from google.type import date_pb2

    if text is None:
        return None
    match = re.fullmatch(r"(\d{1,4})-(\d{1,2})-(\d{1,2})", text.strip())
    if not match:
        print(f"onshi check: {name} must be YYYY-MM-DD, not {text!r}", file=sys.stderr)
        raise SystemExit(EXIT_BAD_INPUT)
    year, month, day = map(int, match.groups())
    return date_pb2.Date(year=year, month=month, day=day)


def _check(args) -> int:
    import grpc

    from ..client import connection
    from ..client.statuses import field_violations

    as_of = _date_arg(args.as_of, "--as-of")
    birth = _date_arg(args.birth, "--birth")
    try:
        with connection.connect(args, "operator") as conn:
            ask = connection.EligibilityClient.over(conn)
            if args.card is not None:
                response = ask.check_by_card(args.card, as_of)
            else:
                insurer_number, symbol, number, branch = args.number  # nargs=4
                response = ask.check_by_number(insurer_number, symbol, number, branch, birth, as_of)
    except connection.ConnectError as exc:
        print(f"onshi check: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except grpc.RpcError as exc:
        if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
            print("onshi check: bad input", file=sys.stderr)
            for name, description in field_violations(exc) or [("", exc.details() or "")]:
                print(f"  {name}: {description}", file=sys.stderr)
            return EXIT_BAD_INPUT
        line = connection.no_answer(exc, args.target, secure=conn.secure, timeout=args.timeout)
        print(f"onshi check: {line}", file=sys.stderr)
        return EXIT_NO_ANSWER
    if args.json:
        from google.protobuf import json_format

        print(json_format.MessageToJson(response, preserving_proto_field_name=True, ensure_ascii=False))
    else:
        print(format_response(response))
    return 0 if response.validity == eligibility_pb2.VALIDITY_VALID else 10 + response.validity


def _health(args) -> int:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from ..client import connection

    try:
        conn = connection.connect(args, "operator")
    except connection.ConnectError as exc:
        print(f"onshi health: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    with conn:
        try:
            status = (
                health_pb2_grpc.HealthStub(conn.channel)
                .Check(
                    health_pb2.HealthCheckRequest(service=args.service),
                    timeout=args.timeout,
                    wait_for_ready=args.wait,
                    metadata=conn.metadata,
                )
                .status
            )
        except grpc.RpcError as exc:
            line = connection.no_answer(exc, args.target, secure=conn.secure, timeout=args.timeout)
            print(f"onshi health: {line}", file=sys.stderr)
            return EXIT_NO_ANSWER
    name = health_pb2.HealthCheckResponse.ServingStatus.Name(status)
    print(name)
    return 0 if status == health_pb2.HealthCheckResponse.SERVING else EXIT_NO_ANSWER


def _d(d) -> str:
    return f"{d.year:04d}-{d.month:02d}-{d.day:02d}" if d.year else "—"


def _period(message) -> str:
    return f"{_d(message.valid_from)} – {_d(message.valid_until)}"


def format_response(response: eligibility_pb2.CheckResponse) -> str:
    ja, en = VALIDITY_TEXT.get(response.validity, ("?", eligibility_pb2.Validity.Name(response.validity)))
    lines = [f"{ja}  {en}"]
    for i, q in enumerate(response.qualifications, 1):
        p = q.person
        lines.append(f"[{i}] {p.name}（{p.name_kana}）  {SEX_TEXT.get(p.sex, '')}  生年月日 born {_d(p.birth_date)}")
        if p.address or p.postcode:
            lines.append(f"    〒{p.postcode} {p.address}")
        lines.append(f"    保険者 insurer      {q.insurer_number} {q.insurer_name}")
        lines.append(
            f"    記号・番号・枝番    {q.symbol or '—'}・{q.number}・{q.branch or '—'}  "
            f"{RELATIONSHIP_TEXT.get(q.relationship, '')}  "
            f"{CARD_KIND_TEXT.get(q.card_kind, '')}"
        )
        lost = _d(q.loss_date) if q.HasField("loss_date") else "—"
        reason = f" ({LOSS_REASON_TEXT.get(q.loss_reason, q.loss_reason)})" if q.loss_reason else ""
        lines.append(f"    資格取得 acquired   {_d(q.acquisition_date)}   資格喪失 lost {lost}{reason}")
        lines.append(
            f"    負担割合 burden     {q.burden_ratio_percent}%" + ("   未就学 preschool" if q.preschool else "")
        )
        if q.HasField("elderly_recipient"):
            e = q.elderly_recipient
            lines.append(f"    高齢受給者証 elderly recipient  {e.burden_ratio_percent}%  {_period(e)}")
        if q.HasField("limit_amount"):
            la = q.limit_amount
            reduction = "  標準負担額減額 reduced meal cost" if la.standard_burden_reduction else ""
            lines.append(f"    限度額適用 limit amount  区分 {la.category}{reduction}  {_period(la)}")
        for s in q.specific_diseases:
            lines.append(
                f"    特定疾病 specific disease  {DISEASE_TEXT.get(s.disease, s.disease)}  "
                f"月額上限 cap ¥{s.monthly_cap_yen:,}  {_period(s)}"
            )
        for sub in q.subsidies:
            lines.append(
                f"    公費 subsidy  {sub.payer_number}/{sub.recipient_number} {sub.programme}  "
                f"{sub.burden_ratio_percent}%  cap ¥{sub.monthly_cap_yen:,}  {_period(sub)}"
            )
    for w in response.warnings:
        lines.append(f"注意 warning: {eligibility_pb2.WarningCode.Name(w.code)} {w.message}")
    return "\n".join(lines)
