"""The trust layer's cost: its share of the server's CPU per check.

Every configuration is `onshi serve --workers 1` on loopback over the same
store, sent the same checks from the same number of client threads:

    plain              no TLS, no roles, bare card serial (the bare service)
    mtls-serial        mTLS + roles, the operator's bare card serial
    mtls-proof         + card proof (the card's certificate cached after its first use)
    mtls-proof-log     + durable access log: the whole trust layer
    mtls-proof-nosync  the log written but not synced (--configs: what the sync costs)
    mtls-proof-wait1ms no log; each check sleeps 1 ms where it would write its record
                       (--configs: what a handler that blocks costs the threaded server)

(the last two through bench/seams.py: the server has no option for them)

    share = (CPU/check of the configuration - CPU/check of plain) / CPU/check of the configuration

(server CPU: supervisor + worker, /proc utime+stime); target for the whole layer ≤ 30 %.

Paired (the default): each round serves `plain` and one configuration at the
same time, each offered --rate checks/s from its own client threads, so
whatever the shared machine does meanwhile falls on both; the share is taken
per pair and the median over rounds reported, with the slowest rate a server
kept (below 95 % of --rate the load was not equal: more --threads).
--sequential: the configurations one after another at --rate, interleaved
rounds, median (--rate 0: closed loop, each at its own saturation, so a
configuration that waits for its sync serves fewer checks).
--in-process: no servers; CardVerifier.verify with a cached certificate, the
trust hooks' CPU per check in one thread (role check + card proof + access-log
record, without gRPC and TLS), and AuditLog.append from free-running threads for
both writers (appends/s, records per fdatasync, how batches closed, latency).

Card proofs are signed before the timed part (a real card signs on the card).

    .venv/bin/python bench/trust.py [--rate 1000] [--rounds 7] [--record]
    .venv/bin/python bench/trust.py --sequential --rate 2000 --threads 16
    .venv/bin/python bench/trust.py --in-process
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common
import grpc

from onshi.core import audit, cardproof, dates, pki, twins
from onshi.core.writer import Writer
from onshi.server import auth
from onshi.v1 import eligibility_pb2 as epb
from onshi.v1 import qualification_pb2 as qpb

AREA = "Trust"
CARDS = ("valid-1", "valid-2", "valid-3", "expiring")
FACILITY = pki.FACILITY_CODES[0]
METHOD = "/onshi.v1.EligibilityService/CheckByCard"
WHOLE = "mtls-proof-log"
# What each configuration adds, as the figures name it.
LABELS = {
    "mtls-serial": "mTLS + roles",
    "mtls-proof": "mTLS + roles + card proof",
    WHOLE: "whole trust layer (mTLS + card proof + durable log)",
    "mtls-proof-nosync": "mTLS + card proof + unsynced log",
    "mtls-proof-wait1ms": "mTLS + card proof + 1 ms sleep instead of the log",
}
TARGET = 0.30


# --- set-up: a PKI, a store with the cards' persons, the callers ----------------


@dataclass
class Setup:
    pki_dir: str
    store: Path
    keys: dict
    operator: grpc.ChannelCredentials
    facility: grpc.ChannelCredentials

    def configs(self, tmp: Path) -> dict[str, tuple[list[str], grpc.ChannelCredentials | None, bool]]:
        """name -> (serve options, client credentials, sends card proofs)."""
        tls = ["--pki", self.pki_dir]
        return {
            "plain": ([], None, False),
            "mtls-serial": (tls, self.operator, False),
            "mtls-proof": (tls, self.facility, True),
            WHOLE: ([*tls, "--audit-dir", str(tmp / "audit")], self.facility, True),
            "mtls-proof-nosync": ([*tls, "--audit-dir", str(tmp / "audit-nosync")], self.facility, True),
            "mtls-proof-wait1ms": ([*tls, "--audit-dir", str(tmp / "audit-wait")], self.facility, True),
        }


# Bench-only server changes (bench/seams.py options) per configuration.
SEAMS = {"mtls-proof-nosync": ["--no-sync"], "mtls-proof-wait1ms": ["--wait-ms", "1"]}


def onshi_cmd(seams: list[str]) -> list[str]:
    """`onshi`, or with seams bench/seams.py under the same checkout's Python."""
    if not seams:
        return common.onshi_cmd()
    exe = Path(common.onshi_cmd()[0])
    python = str(exe.with_name("python")) if exe.name == "onshi" else sys.executable
    return [python, str(Path(__file__).resolve().parent / "seams.py"), *seams, "--"]


def setup(tmp: Path) -> Setup:
    pki_dir = str(tmp / "pki")
    pki.init(pki_dir)
    store = tmp / "store"
    build_store(store)
    ca, cert, key = auth.pki_paths(pki_dir, "operator")
    operator = auth.channel_credentials(ca, cert, key)
    ca, cert, key = auth.pki_paths(pki_dir, pki.client_stem("facility", FACILITY))
    facility = auth.channel_credentials(ca, cert, key)
    return Setup(pki_dir, store, card_keys(pki_dir), operator, facility)


def build_store(path: Path) -> None:
    writer = Writer(str(path))
    try:
        for link_id, card in enumerate(CARDS, start=1):
            person = qpb.Person(
                name=f"患者{link_id}",
                name_kana="カンジャ",
                sex=1,
                birth_date=dates.to_proto(dt.date(1970, 1, link_id)),
                address="東京都",
            )
            q = qpb.Qualification(
                insurer_number="01130012",
                insurer_name="協会けんぽ",
                symbol="S",
                number=str(100 + link_id),
                branch="00",
                relationship=1,
                acquisition_date=dates.to_proto(dt.date(2020, 4, 1)),
                burden_ratio_percent=30,
            )

            def change(t, link_id=link_id, person=person, q=q, card=card):
                t.reserve_link_ids(link_id)
                t.put_history(link_id, person, [q])
                t.link_card(pki.CARDS[card][0].to_bytes(20, "big"), link_id)

            writer.apply(change)
    finally:
        writer.close()


def card_keys(pki_dir: str) -> dict:
    from cryptography.hazmat.primitives import serialization

    out = {}
    for card in CARDS:
        base = Path(pki_dir) / "cards" / card
        key = serialization.load_pem_private_key(base.with_suffix(".key.pem").read_bytes(), password=None)
        out[card] = (base.with_suffix(".der").read_bytes(), key)
    return out


def proof_requests(keys: dict, count: int) -> list[bytes]:
    out = []
    now = int(time.time())
    for i in range(count):
        der, key = keys[CARDS[i % len(CARDS)]]
        nonce = os.urandom(16)
        out.append(
            epb.CheckByCardRequest(
                card_certificate=der,
                card_signature=cardproof.sign_challenge(key, cardproof.PURPOSE_CHECK_BY_CARD, FACILITY, now, nonce),
                challenge=epb.CardChallenge(facility_code=FACILITY, timestamp_unix=now, nonce=nonce),
            ).SerializeToString()
        )
    return out


def serial_requests(count: int) -> list[bytes]:
    return [
        epb.CheckByCardRequest(card_serial=format(pki.CARDS[CARDS[i % len(CARDS)]][0], "X")).SerializeToString()
        for i in range(count)
    ]


# --- servers and their load ----------------------------------------------------------


def drive(calls: list, requests: list[bytes], rate: float = 0.0) -> tuple[float, list[float], int]:
    """Send every request once over the client threads' calls; (wall s, sorted
    latencies, errors). rate 0: each thread sends its next request when the last
    is answered (closed loop). rate R: the threads together send R per second,
    each on its own schedule from a random phase, no faster."""
    latencies: list[float] = []
    errors = [0]
    index = [0]
    lock = threading.Lock()
    period = len(calls) / rate if rate else 0.0

    def run(call):
        mine = []
        due = time.perf_counter() + period * random.random()
        while True:
            with lock:
                i = index[0]
                index[0] += 1
            if i >= len(requests):
                break
            if period:
                wait = due - time.perf_counter()
                if wait > 0:
                    time.sleep(wait)
                due += period
            t = time.perf_counter()
            try:
                call(requests[i], timeout=10)
            except grpc.RpcError:
                with lock:
                    errors[0] += 1
            mine.append(time.perf_counter() - t)
        with lock:
            latencies.extend(mine)

    workers = [threading.Thread(target=run, args=(c,)) for c in calls]
    start = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return time.perf_counter() - start, sorted(latencies), errors[0]


class Running:
    """One configuration's server and its client channels, kept across rounds
    (one connection per client thread: no TLS handshakes in the figures)."""

    def __init__(self, name: str, store: Path, options: list[str], credentials, threads: int, proofs: bool):
        self.name, self.proofs = name, proofs
        engine = "native" if native_built() else "pure"
        self.server = common.Server(
            [
                *onshi_cmd(SEAMS.get(name, [])),
                "serve",
                "--data",
                str(store),
                "--port",
                "0",
                "--workers",
                "1",
                "--engine",
                engine,
                *options,
            ],
            f"trust-{name}",
        )
        self.channels = [
            grpc.secure_channel(self.server.address, credentials)
            if credentials
            else grpc.insecure_channel(self.server.address)
            for _ in range(threads)
        ]
        self.calls = [c.unary_unary(METHOD) for c in self.channels]
        self.rounds: list[dict] = []

    def requests(self, keys: dict, count: int) -> list[bytes]:
        return proof_requests(keys, count) if self.proofs else serial_requests(count)

    def measure(self, requests: list[bytes], rate: float) -> dict:
        before = common.total_cpu(self.server.pids())
        wall, latencies, errors = drive(self.calls, requests, rate)
        cpu = common.total_cpu(self.server.pids()) - before
        one = {
            "cpu_us": cpu / len(requests) * 1e6,
            "rate": len(requests) / wall,
            "errors": errors,
            "p50_ms": common.percentile(latencies, 50) * 1e3,
            "p99_ms": common.percentile(latencies, 99) * 1e3,
        }
        self.rounds.append(one)
        return one

    def close(self) -> None:
        for c in self.channels:
            c.close()
        self.server.stop()


def native_built() -> bool:
    return twins.built("_engine")


def start(s: Setup, tmp: Path, names: list[str], threads: int) -> dict[str, Running]:
    configs = s.configs(tmp)
    running: dict[str, Running] = {}
    try:
        for name in names:
            options, credentials, proofs = configs[name]
            running[name] = Running(name, s.store, options, credentials, threads, proofs)
        for r in running.values():  # warm-up: connections, the certificate cache
            drive(r.calls, r.requests(s.keys, 200))
    except BaseException:
        stop(running)
        raise
    return running


def stop(running: dict[str, Running]) -> None:
    for r in running.values():
        r.close()


def paired(args, s: Setup, tmp: Path) -> dict:
    """Each round: plain and one configuration at the same time, each at --rate."""
    running = start(s, tmp, ["plain", *args.configs], args.threads)
    try:
        plain = running["plain"]
        shares: dict[str, list[tuple[float, float]]] = {name: [] for name in args.configs}
        for round_no in range(args.rounds):
            for name in args.configs:
                other = running[name]
                requests = (plain.requests(s.keys, args.checks), other.requests(s.keys, args.checks))
                out: dict[str, dict] = {}
                threads = [
                    threading.Thread(target=lambda r=r, q=q, out=out: out.__setitem__(r.name, r.measure(q, args.rate)))
                    for r, q in zip((plain, other), requests, strict=True)
                ]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                p, c = out["plain"]["cpu_us"], out[name]["cpu_us"]
                shares[name].append((p, c))
                print(
                    f"round {round_no + 1}/{args.rounds}: plain {p:.0f} µs, {name} {c:.0f} µs per check: "
                    f"share {(c - p) / c:.0%}",
                    flush=True,
                )
        slowest = min(x["rate"] for r in running.values() for x in r.rounds)
        errors = sum(x["errors"] for r in running.values() for x in r.rounds)
    finally:
        stop(running)
    rows = {
        name: {
            "share": common.median((c - p) / c for p, c in pairs),
            "shares": [(c - p) / c for p, c in pairs],
            "cpu_us": common.median(c for _, c in pairs),
            "plain_us": common.median(p for p, _ in pairs),
        }
        for name, pairs in shares.items()
    }
    return {"mode": "paired", "rate": args.rate, "rows": rows, "slowest": slowest, "errors": errors}


def sequential(args, s: Setup, tmp: Path) -> dict:
    """The configurations one after another at --rate (0: closed loop), interleaved rounds."""
    running = start(s, tmp, ["plain", *args.configs], args.threads)
    try:
        for round_no in range(args.rounds):
            print(f"round {round_no + 1}/{args.rounds}", flush=True)
            for r in running.values():
                r.measure(r.requests(s.keys, args.checks), args.rate)
        summary = {
            name: {key: common.median(x[key] for x in r.rounds) for key in ("cpu_us", "rate", "p50_ms", "p99_ms")}
            | {"rounds_us": [x["cpu_us"] for x in r.rounds]}
            for name, r in running.items()
        }
        errors = sum(x["errors"] for r in running.values() for x in r.rounds)
    finally:
        stop(running)
    base = summary["plain"]["cpu_us"]
    rows = {name: {**v, "share": (v["cpu_us"] - base) / v["cpu_us"]} for name, v in summary.items()}
    return {"mode": "sequential", "rate": args.rate, "rows": rows, "errors": errors}


# --- in-process: the card proof and the access log without a server --------------------


def in_process(args, s: Setup, tmp: Path) -> dict:
    jpki = Path(s.pki_dir) / "jpki"
    verifier = cardproof.CardVerifier.from_files([str(jpki / "ca.pem")], str(jpki / "crl.der"))
    now = int(time.time())
    proofs = []
    for i in range(400):
        der, key = s.keys[CARDS[i % len(CARDS)]]
        nonce = os.urandom(16)
        proofs.append(
            (
                der,
                FACILITY,
                now,
                nonce,
                cardproof.sign_challenge(key, cardproof.PURPOSE_CHECK_BY_CARD, FACILITY, now, nonce),
                FACILITY,
            )
        )
    for proof in proofs[: len(CARDS)]:
        verifier.card(proof[0])
    t = time.process_time()
    for proof in proofs:
        verifier.verify(*proof, purpose=cardproof.PURPOSE_CHECK_BY_CARD)
    verify_us = (time.process_time() - t) / len(proofs) * 1e6
    fresh = cardproof.CardVerifier(verifier.ca_certs)
    t = time.process_time()
    fresh.card(s.keys["valid-1"][0])
    chain_us = (time.process_time() - t) * 1e6
    hooks = hook_cost(s, verifier, tmp)
    logs = {}
    for kind in twins.KINDS:
        if kind == twins.NATIVE and not twins.built("_auditlog"):
            continue
        logs[kind] = appends(tmp / f"audit-{kind}", kind, threads=args.threads, each=args.checks // args.threads)
    return {
        "mode": "in-process",
        "verify_us": verify_us,
        "chain_us": chain_us,
        **hooks,
        "logs": logs,
        "native_card": twins.built("_cardproof"),
    }


class _Context:
    """Just enough of a grpc.ServicerContext for the trust hooks, single-threaded."""

    def __init__(self, pem: bytes, identities: tuple[bytes, ...]):
        self._auth = {"x509_pem_cert": [pem]}
        self._identities = identities

    def auth_context(self):
        return self._auth

    def peer_identities(self):
        return self._identities

    def invocation_metadata(self):
        return ()


def hook_cost(s: Setup, verifier, tmp: Path) -> dict:
    """CPU per check of the trust hooks alone (role check, card proof, access-log
    record without the sync wait), next to the same check without them, in one
    thread: the part of the trust layer that is ours, without gRPC and TLS."""
    from cryptography import x509

    from onshi.core.engine import open_engine
    from onshi.server.eligibility_service import EligibilityAnswers
    from onshi.server.eligibility_trust import EligibilityTrust

    engine = open_engine(s.store, "native" if native_built() else "pure")
    pem = (Path(s.pki_dir) / "onshi" / (pki.client_stem("facility", FACILITY) + ".pem")).read_bytes()
    identities = tuple(
        u.encode()
        for u in x509.load_pem_x509_certificate(pem)
        .extensions.get_extension_for_class(x509.SubjectAlternativeName)
        .value.get_values_for_type(x509.UniformResourceIdentifier)
    )
    log = audit.AuditLog(str(tmp / "hook-audit"), "h", durable=False)
    hooks = EligibilityTrust(verifier, log)
    with_trust = EligibilityAnswers(engine, card_proof=hooks.card_proof, audit=hooks.audit)
    without = EligibilityAnswers(engine)

    def with_caller(raw, ctx, caller):  # as the service's handler: the role check hands it the caller
        return with_trust.check_by_card(raw, ctx, caller)

    with_caller.takes_caller = True
    guarded = auth._guard(with_caller, auth.POLICY[METHOD])
    n = 600
    out = {}
    for name, check, reqs in (
        ("hooks_off", without.check_by_card, serial_requests(n)),
        ("hooks_on", guarded, proof_requests(s.keys, n)),
    ):
        t = time.process_time()
        for raw in reqs:
            check(raw, _Context(pem, identities))
        out[f"{name}_us"] = (time.process_time() - t) / n * 1e6
    log.close()
    engine.close()
    return out


def appends(directory: Path, kind: str, threads: int, each: int) -> dict:
    """Free-running appenders as a server's handler threads are (batch_target =
    threads, the default sync interval): rate, records per fdatasync, how the
    batches closed, and each append's latency."""
    log = audit.AuditLog(str(directory), "bench", kind=kind)
    log.batch_target = threads
    record = audit.AuditRecord(
        actor="facility:1310000001",
        action="CheckByCard",
        subject="card:x",
        items="validity=1",
        purpose="visit",
        request_id="r",
    )
    latencies: list[float] = []
    lock = threading.Lock()
    barrier = threading.Barrier(threads)

    def appender():
        mine = []
        barrier.wait()
        for _ in range(each):
            t = time.perf_counter()
            log.append(record)
            mine.append(time.perf_counter() - t)
        with lock:
            latencies.extend(mine)

    workers = [threading.Thread(target=appender) for _ in range(threads)]
    started = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    wall = time.perf_counter() - started
    log.close()
    latencies.sort()
    return {
        "threads": threads,
        "appends": log.records,
        "per_s": log.records / wall,
        "per_sync": log.records / max(log.batches, 1),
        "batches": log.batches,
        "filled": log.batches_filled,
        "timed": log.batches_timed,
        "p50_ms": common.percentile(latencies, 50) * 1e3,
        "p99_ms": common.percentile(latencies, 99) * 1e3,
        "max_ms": latencies[-1] * 1e3,
        "interval_ms": audit.DEFAULT_SYNC_INTERVAL_MS,
    }


# --- reporting ---------------------------------------------------------------------------


def verdict(share: float) -> str:
    return f"≤ 30 %: {'met' if share <= TARGET else '**not met**'}"


def at(r: dict) -> str:
    if r["mode"] == "paired":
        return f"paired at {r['rate']:,.0f} checks/s per server"
    return f"sequential at {r['rate']:,.0f} checks/s" if r["rate"] else "sequential, closed loop"


def report(r: dict) -> tuple[list[tuple[str, str, str]], str]:
    """(figures, markdown body) of a run, as printed and recorded."""
    if r["mode"] == "in-process":
        rows = [
            (
                w,
                f"{x['per_s']:,.0f}",
                f"{x['per_sync']:.1f}",
                f"{x['batches']:,}",
                f"{x['filled']:,}",
                f"{x['timed']:,}",
                f"{x['p50_ms']:.2f}",
                f"{x['p99_ms']:.2f}",
                f"{x['max_ms']:.1f}",
            )
            for w, x in r["logs"].items()
        ]
        body = (
            f"CardVerifier.verify with a cached certificate {r['verify_us']:.1f} µs CPU (first chain check "
            f"{r['chain_us']:.0f} µs; native RSA {'on' if r['native_card'] else 'OFF'}). One thread, no gRPC "
            f"or TLS: a check {r['hooks_off_us']:.0f} µs CPU without the trust hooks, {r['hooks_on_us']:.0f} µs "
            f"with role check + card proof + access-log record (unsynced). AuditLog.append "
            f"from {next(iter(r['logs'].values()))['threads']} free-running threads, batch_target = threads, "
            f"sync interval {audit.DEFAULT_SYNC_INTERVAL_MS:g} ms:\n\n"
            + common.md_table(
                [
                    "writer",
                    "appends/s",
                    "records per fdatasync",
                    "batches",
                    "closed full",
                    "closed by the timer",
                    "append p50 ms",
                    "p99 ms",
                    "max ms",
                ],
                rows,
            )
        )
        figures = [
            ("CardVerifier.verify, cached certificate, in-process (CPU)", f"{r['verify_us']:.1f} µs", "—"),
            (
                "trust hooks (role check + card proof + record), in-process, one thread (CPU per check)",
                f"{r['hooks_on_us'] - r['hooks_off_us']:.1f} µs ({r['hooks_off_us']:.0f} → {r['hooks_on_us']:.0f})",
                "—",
            ),
        ]
        figures += [
            (
                f"AuditLog.append from {x['threads']} threads, {w} writer: appends/s · records per sync",
                f"{x['per_s']:,.0f} · {x['per_sync']:.1f}",
                "—",
            )
            for w, x in r["logs"].items()
        ]
        return figures, body
    rows = r["rows"]
    if r["mode"] == "paired":
        table = common.md_table(
            [
                "config",
                "server CPU µs/check (median)",
                "plain in the same pairs µs",
                "share per round",
                "share (median)",
            ],
            [
                (
                    name,
                    f"{x['cpu_us']:.0f}",
                    f"{x['plain_us']:.0f}",
                    " / ".join(f"{v:.0%}" for v in x["shares"]),
                    f"**{x['share']:.0%}**",
                )
                for name, x in rows.items()
            ],
        )
        kept = f"; every server kept ≥ {r['slowest']:,.0f} checks/s in every round"
        if r["slowest"] < 0.95 * r["rate"]:
            kept += " (**not an equal load**: a server fell behind the offered rate)"
    else:
        table = common.md_table(
            ["config", "server CPU µs/check (median)", "× plain", "share", "rounds µs", "checks/s", "p50 ms", "p99 ms"],
            [
                (
                    name,
                    f"{x['cpu_us']:.0f}",
                    f"{x['cpu_us'] / rows['plain']['cpu_us']:.2f}",
                    f"{x['share']:.0%}",
                    " / ".join(f"{v:.0f}" for v in x["rounds_us"]),
                    f"{x['rate']:,.0f}",
                    f"{x['p50_ms']:.2f}",
                    f"{x['p99_ms']:.2f}",
                )
                for name, x in rows.items()
            ],
        )
        kept = ""
    body = f"{table}\n\nErrors {r['errors']}{kept}."
    figures = []
    for name, x in rows.items():
        if name == "plain":
            continue
        measured = f"{x['share']:.0%}"
        if r["mode"] == "paired":
            measured += (
                f" (rounds {min(x['shares']):.0%}–{max(x['shares']):.0%}; {x['cpu_us']:.0f} vs plain "
                f"{x['plain_us']:.0f} µs)"
            )
            if r["slowest"] < 0.95 * r["rate"]:
                measured += f"; not an equal load: a server fell to {r['slowest']:,.0f}/s"
        else:
            measured += f" ({x['cpu_us']:.0f} vs plain {rows['plain']['cpu_us']:.0f} µs)"
        figures.append(
            (
                f"share of server CPU per check, {LABELS[name]}, {at(r)}",
                measured,
                verdict(x["share"]) if name == WHOLE else "—",
            )
        )
    return figures, body


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="bench/trust.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--sequential", action="store_true", help="configurations one after another (see above)")
    mode.add_argument("--in-process", action="store_true", help="card proof and access log without servers")
    parser.add_argument(
        "--rate",
        type=float,
        default=None,
        help="checks/s offered to each server (default 1000; --sequential: 0, a closed loop)",
    )
    parser.add_argument("--checks", type=int, default=3000, help="checks per server per round (in-process: appends)")
    parser.add_argument("--threads", type=int, default=8, help="client threads per server (in-process: appenders)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds; the median is reported")
    parser.add_argument(
        "--configs",
        default="mtls-serial,mtls-proof,mtls-proof-log",
        help="configurations besides plain, from " + ", ".join(LABELS),
    )
    common.add_record_flag(parser)
    args = parser.parse_args(argv)
    args.configs = [c for c in args.configs.split(",") if c]
    if args.rate is None:
        args.rate = 0.0 if args.sequential else 1000.0
    if not 100 <= args.checks <= 50_000:
        parser.error("--checks must be 100-50000")
    if not (10 <= args.rate <= 20_000 or (args.rate == 0 and (args.sequential or args.in_process))):
        parser.error("--rate must be 10-20000 (0, a closed loop, only with --sequential)")
    if unknown := set(args.configs) - set(LABELS):
        parser.error(f"unknown configuration(s): {', '.join(sorted(unknown))}")
    if not 1 <= args.threads <= 64 or not 1 <= args.rounds <= 50:
        parser.error("--threads must be 1-64 and --rounds 1-50")
    with tempfile.TemporaryDirectory(prefix="onshi-trust-bench-") as tmpdir:
        tmp = Path(tmpdir)
        s = setup(tmp)
        r = (in_process if args.in_process else sequential if args.sequential else paired)(args, s, tmp)
        if WHOLE in args.configs and not args.in_process:
            logged = audit.verify(str(tmp / "audit"))
            print(f"access log verify ok={logged.ok} ({logged.records} records)")
    figures, body = report(r)
    print(body)
    for what, measured, target in figures:
        print(f"{what}: {measured}  {target}")
    if r["mode"] == "paired" and r["slowest"] < 0.95 * r["rate"]:
        print("WARNING: a server did not keep the offered rate; the load was not equal (more --threads)")
    if args.record:
        run = common.record_run(AREA, figures, body)
        common.record("trust", {"date": run.when, "command": run.command, **r})
    return 0


if __name__ == "__main__":
    sys.exit(main())
