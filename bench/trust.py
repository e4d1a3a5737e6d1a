"""Cost of the trust layer (issue 5), measured in one run.

Starts `onshi serve --workers 1` on loopback once per configuration and sends
the same number of checks from the same client threads, then divides the
server's CPU time (supervisor + worker, from /proc) by the checks answered:

    plain             no TLS, no roles, bare card_serial  (the bare service)
    mtls-serial       mTLS + roles, bare card_serial from the operator role
    mtls-proof        mTLS + roles + card proof (certificate cached after first use)
    mtls-proof-log    + durable access log (group commit, fdatasync)
    mtls-proof-nosync + access log written but not synced (shows what the sync costs)
    mtls-proof-wait1ms no log; each check sleeps 1 ms where the log would wait

(the last two through bench/seams.py: production has no option for them)

Trust-layer share = (CPU/check of mtls-proof-log - plain) / CPU/check of
mtls-proof-log; target <= 30 %. Card proofs are signed by the client before the
timed part (a real card signs on the card). Also measures in-process costs of
CardVerifier.verify (cached) and AuditLog.append.

    .venv/bin/python bench/trust.py [--checks 3000] [--threads 8] [--rate 2000]
"""

from __future__ import annotations

import argparse
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

SECTION = "Trust (issue 5)"
CARDS = ("valid-1", "valid-2", "valid-3", "expiring")
FACILITY = pki.FACILITY_CODES[0]
METHOD = "/onshi.v1.EligibilityService/CheckByCard"


def build_store(path: str) -> None:
    import datetime as dt

    writer = Writer(path)
    try:
        for link_id, card in enumerate(CARDS, start=1):
            person = qpb.Person(name=f"患者{link_id}", name_kana="カンジャ", sex=1,
                                birth_date=dates.to_proto(dt.date(1970, 1, link_id)), address="東京都")
            q = qpb.Qualification(insurer_number="01130012", insurer_name="協会けんぽ", symbol="S",
                                  number=str(100 + link_id), branch="00", relationship=1,
                                  acquisition_date=dates.to_proto(dt.date(2020, 4, 1)), burden_ratio_percent=30)

            def change(t, link_id=link_id, person=person, q=q, card=card):
                t.reserve_link_ids(link_id)
                t.put_history(link_id, person, [q])
                t.link_card(pki.CARDS[card][0].to_bytes(20, "big"), link_id)
            writer.apply(change)
    finally:
        writer.close()


@dataclass
class Setup:
    """What every trust bench starts from: a test PKI, a store with the four
    cards' persons, the cards' keys and the two callers' credentials."""
    pki_dir: str
    store: Path
    keys: dict
    operator: grpc.ChannelCredentials
    facility: grpc.ChannelCredentials

    @property
    def tls(self) -> list[str]:
        return ["--pki", self.pki_dir]


def setup(tmp: Path) -> Setup:
    pki_dir = str(tmp / "pki")
    pki.init(pki_dir)
    store = tmp / "store"
    build_store(str(store))
    ca, cert, key = auth.pki_paths(pki_dir, "operator")
    operator = auth.channel_credentials(ca, cert, key)
    ca, cert, key = auth.pki_paths(pki_dir, pki.client_stem("facility", FACILITY))
    facility = auth.channel_credentials(ca, cert, key)
    return Setup(pki_dir, store, card_keys(pki_dir), operator, facility)


def card_keys(pki_dir: str) -> dict:
    from cryptography.hazmat.primitives import serialization

    out = {}
    for card in CARDS:
        base = os.path.join(pki_dir, "cards", card)
        der = open(base + ".der", "rb").read()
        key = serialization.load_pem_private_key(open(base + ".key.pem", "rb").read(), password=None)
        out[card] = (der, key)
    return out


def proof_requests(keys: dict, count: int) -> list[bytes]:
    out = []
    now = int(time.time())
    for i in range(count):
        der, key = keys[CARDS[i % len(CARDS)]]
        nonce = os.urandom(16)
        out.append(epb.CheckByCardRequest(
            card_certificate=der,
            card_signature=cardproof.sign_challenge(key, cardproof.PURPOSE_CHECK_BY_CARD, FACILITY, now, nonce),
            challenge=epb.CardChallenge(facility_code=FACILITY, timestamp_unix=now, nonce=nonce),
        ).SerializeToString())
    return out


def serial_requests(count: int) -> list[bytes]:
    return [epb.CheckByCardRequest(card_serial=format(pki.CARDS[CARDS[i % len(CARDS)]][0], "X")).SerializeToString()
            for i in range(count)]


def drive(calls: list, requests: list[bytes], rate: float = 0.0) -> tuple[float, list[float], int]:
    """Send every request once over the client threads' calls; (wall s, latencies, errors).

    rate 0: each thread sends its next request as soon as the last is answered
    (closed loop: every configuration at its own saturation). rate R: the
    threads together send R per second (each on its own schedule, no faster),
    so every configuration serves the same load."""
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
    wall = time.perf_counter() - start
    return wall, sorted(latencies), errors[0]


# Bench-only server changes (bench/seams.py options) per configuration.
SEAMS = {"mtls-proof-nosync": ["--no-sync"], "mtls-proof-wait1ms": ["--wait-ms", "1"]}


def onshi_cmd(seams: list[str]) -> list[str]:
    """`onshi`, or with seams bench/seams.py under the same checkout's Python."""
    if not seams:
        return common.onshi_cmd()
    exe = Path(common.onshi_cmd()[0])
    python = str(exe.with_name("python")) if exe.name == "onshi" else sys.executable
    return [python, str(Path(__file__).resolve().parent / "seams.py"), *seams, "--"]


class Running:
    """One configuration's server and its client channels (kept across rounds)."""

    def __init__(self, name: str, store: Path, extra: list[str], credentials, threads: int):
        if name.startswith("aio-"):  # bench/trust_aio_server.py: the same pieces on grpc.aio
            argv = [sys.executable, str(Path(__file__).resolve().parent / "trust_aio_server.py"),
                    "--data", str(store), *extra]
        else:
            seams = SEAMS.get(name.removeprefix("before:"), [])
            argv = [*onshi_cmd(seams), "serve", "--data", str(store), "--port", "0", "--workers", "1",
                    "--engine", "native" if common_native() else "pure", *extra]
        self.name = name
        self.server = common.Server(argv, f"trust-{name}")
        # One channel per client thread (its own connection), kept across warm-up
        # and timed parts so TLS handshakes are not in the figures.
        self.channels = [grpc.secure_channel(self.server.address, credentials) if credentials
                         else grpc.insecure_channel(self.server.address) for _ in range(threads)]
        self.calls = [c.unary_unary(METHOD) for c in self.channels]
        self.rounds: list[dict] = []

    def measure(self, requests: list[bytes], rate: float = 0.0) -> None:
        before = common.total_cpu(self.server.pids())
        wall, lat, errors = drive(self.calls, requests, rate)
        cpu = common.total_cpu(self.server.pids()) - before
        n = len(requests)
        self.rounds.append({"cpu_us": cpu / n * 1e6, "rate": n / wall, "errors": errors,
                            "p50_ms": common.percentile(lat, 50) * 1e3, "p99_ms": common.percentile(lat, 99) * 1e3})

    def summary(self) -> dict:
        def med(key):
            values = sorted(r[key] for r in self.rounds)
            return values[len(values) // 2]
        return {"config": self.name, "rounds": len(self.rounds), "cpu_us": med("cpu_us"), "rate": med("rate"),
                "p50_ms": med("p50_ms"), "p99_ms": med("p99_ms"), "errors": sum(r["errors"] for r in self.rounds),
                "cpu_us_all": [round(r["cpu_us"], 1) for r in self.rounds]}

    def close(self) -> None:
        for c in self.channels:
            c.close()
        self.server.stop()


def common_native() -> bool:
    return twins.built("_engine")


def micro(pki_dir: str, tmp: Path) -> dict:
    keys = card_keys(pki_dir)
    jpki = os.path.join(pki_dir, "jpki")
    verifier = cardproof.CardVerifier.from_files([os.path.join(jpki, "ca.pem")], os.path.join(jpki, "crl.der"))
    proofs = []
    now = int(time.time())
    for i in range(400):
        der, key = keys[CARDS[i % len(CARDS)]]
        nonce = os.urandom(16)
        signature = cardproof.sign_challenge(key, cardproof.PURPOSE_CHECK_BY_CARD, FACILITY, now, nonce)
        proofs.append((der, FACILITY, now, nonce, signature, FACILITY))
    for args in proofs[:len(CARDS)]:
        verifier.card(args[0])
    t = time.perf_counter()
    for args in proofs:
        verifier.verify(*args, purpose=cardproof.PURPOSE_CHECK_BY_CARD)
    verify_us = (time.perf_counter() - t) / len(proofs) * 1e6
    fresh = cardproof.CardVerifier(verifier.ca_certs)
    t = time.perf_counter()
    fresh.card(keys["valid-1"][0])
    chain_us = (time.perf_counter() - t) * 1e6
    hooks_us = hook_cost(pki_dir, keys, verifier, tmp)
    log = audit.AuditLog(str(tmp / "micro-audit"), "m")
    rec = audit.AuditRecord(actor="facility:1310000001", action="CheckByCard", subject="card:x", items="validity=1",
                            purpose="visit", request_id="r")
    barrier = threading.Barrier(8)

    def appender():
        barrier.wait()
        for _ in range(250):
            log.append(rec)

    ts = [threading.Thread(target=appender) for _ in range(8)]
    t = time.perf_counter()
    for x in ts:
        x.start()
    for x in ts:
        x.join()
    append_wall = time.perf_counter() - t
    per_batch = log.records / max(log.batches, 1)
    native_log = getattr(log, "native", False)  # (False: a checkout from before the native log)
    log.close()
    return {**hooks_us, "verify_cached_us": verify_us, "chain_uncached_us": chain_us,
            "append_rate": 2000 / append_wall, "records_per_fsync": per_batch,
            "native_log": native_log, "native_card": twins.load("_cardproof") is not None}


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


def hook_cost(pki_dir: str, keys: dict, verifier, tmp: Path) -> dict:
    """CPU per check of the trust hooks alone (role check, card proof, access-log
    record without the sync wait), next to the same check without them, in one
    thread: the part of the trust layer that is ours, without gRPC and TLS."""
    from onshi.core.engine import open_engine
    from onshi.server.eligibility import EligibilityAnswers
    from onshi.server.eligibility_trust import EligibilityTrust

    store = tmp / "store"
    engine = open_engine(store, "native" if common_native() else "pure")
    pem = open(os.path.join(pki_dir, "onshi", pki.client_stem("facility", FACILITY) + ".pem"), "rb").read()
    from cryptography import x509

    identities = tuple(u.encode() for u in x509.load_pem_x509_certificate(pem).extensions
                       .get_extension_for_class(x509.SubjectAlternativeName).value
                       .get_values_for_type(x509.UniformResourceIdentifier))
    log = audit.AuditLog(str(tmp / "hook-audit"), "h", durable=False)
    hooks = EligibilityTrust(verifier, log)
    with_trust = EligibilityAnswers(engine, card_proof=hooks.card_proof, audit=hooks.audit)
    without = EligibilityAnswers(engine)

    def with_caller(raw, ctx, caller):  # as the service's handler: the role check hands it the caller
        return with_trust.check_by_card(raw, ctx, caller)

    with_caller.takes_caller = True
    guarded = auth._guard(with_caller, auth.POLICY[METHOD])
    n = 600
    proofs = proof_requests(keys, n)
    serials = serial_requests(n)
    out = {}
    for name, check, reqs in (("hooks_off", without.check_by_card, serials), ("hooks_on", guarded, proofs)):
        t = time.process_time()
        for raw in reqs:
            check(raw, _Context(pem, identities))
        out[f"{name}_us"] = (time.process_time() - t) / n * 1e6
    log.close()
    engine.close()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checks", type=int, default=3000)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the median is reported")
    parser.add_argument("--no-aio", action="store_true", help="skip the grpc.aio comparison")
    parser.add_argument("--rate", type=float, default=0.0,
                        help="checks/s offered to every configuration (default 0: closed loop, each at its own "
                             "saturation); a rate all configurations sustain compares CPU/check at equal load")
    parser.add_argument("--no-results", action="store_true", help="print only; do not append to RESULTS.md")
    args = parser.parse_args()
    if not 100 <= args.checks <= 50_000:
        parser.error("--checks must be 100-50000")
    with tempfile.TemporaryDirectory(prefix="onshi-trust-bench-") as tmpdir:
        tmp = Path(tmpdir)
        s = setup(tmp)
        pki_dir, store, keys, operator, facility, tls = s.pki_dir, s.store, s.keys, s.operator, s.facility, s.tls
        warm_serial = serial_requests(200)
        serial = serial_requests(args.checks)
        configs = [("plain", [], None, False),
                   ("mtls-serial", tls, operator, False),
                   ("mtls-proof", tls, facility, True),
                   ("mtls-proof-log", tls + ["--audit-dir", str(tmp / "audit-sync")], facility, True),
                   ("mtls-proof-nosync", tls + ["--audit-dir", str(tmp / "audit-nosync")], facility, True),
                   # No record: every check just sleeps 1 ms where the log would wait for its sync.
                   ("mtls-proof-wait1ms", tls + ["--audit-dir", str(tmp / "audit-wait")], facility, True)]
        if not args.no_aio:
            # The same checks on grpc.aio: handlers await their log batch instead of parking a thread.
            configs += [("aio-plain", [], None, False),
                        ("aio-mtls-proof-log", ["--pki", pki_dir, "--proof", "--audit-dir", str(tmp / "audit-aio")],
                         facility, True)]
        running = [Running(name, store, extra, creds, args.threads) for name, extra, creds, _ in configs]
        try:
            for r, (_, _, _, proof) in zip(running, configs):  # warm-up: connections, certificate cache
                drive(r.calls, proof_requests(keys, 200) if proof else warm_serial)
            for round_no in range(args.rounds):
                # Interleaved rounds, median per configuration: the machine is shared.
                proofs = [proof_requests(keys, args.checks) for _, _, _, proof in configs if proof]
                print(f"round {round_no + 1}/{args.rounds}", flush=True)
                for r, (_, _, _, proof) in zip(running, configs):
                    r.measure(proofs.pop() if proof else serial, args.rate)
        finally:
            for r in running:
                r.close()
        results = [r.summary() for r in running]
        for r in results:
            print(f"{r['config']:18s} {r['cpu_us']:8.1f} us CPU/check (rounds {r['cpu_us_all']})  "
                  f"{r['rate']:8.0f} checks/s  p50 {r['p50_ms']:.2f} ms  p99 {r['p99_ms']:.2f} ms  "
                  f"errors {r['errors']}", flush=True)
        report = audit.verify(str(tmp / "audit-sync"))
        m = micro(pki_dir, tmp)
    by = {r["config"]: r for r in results}
    base = by["plain"]["cpu_us"]
    full = by["mtls-proof-log"]["cpu_us"]
    share = (full - base) / full
    print(f"trust layer share of server CPU per check: {share:.0%} (target <= 30 %)")
    if "aio-plain" in by:
        aio_full = by["aio-mtls-proof-log"]["cpu_us"]
        print(f"on grpc.aio: trust layer share {(aio_full - by['aio-plain']['cpu_us']) / aio_full:.0%}")
    print(f"in-process, one thread: check without hooks {m['hooks_off_us']:.0f} us, with role check + card proof "
          f"+ access-log record {m['hooks_on_us']:.0f} us")
    print(f"in-process: verify (cached cert) {m['verify_cached_us']:.0f} us, first chain check "
          f"{m['chain_uncached_us']:.0f} us, audit append {m['append_rate']:.0f}/s "
          f"({m['records_per_fsync']:.1f} records per fdatasync), log verify ok={report.ok} "
          f"({report.records} records)")
    native = (f"native card proof (src/ext/_cardproof.pyx) {'on' if m['native_card'] else 'OFF'}, native group commit "
              f"(src/ext/_auditlog.pyx) {'on' if m['native_log'] else 'OFF'}")
    print(native)
    if args.no_results:
        return 0
    header = ["date", "command", "config", "server CPU µs/check (median)", "× plain", "rounds µs", "checks/s",
              "p50 ms", "p99 ms", "errors"]
    intro = ("Server CPU per check (supervisor + worker, /proc utime+stime) for the same checks in one run; "
             "client threads on the same 2-core machine (shared with other work: interleaved rounds, median). "
             "`plain`: no TLS, bare serial. `mtls-serial`: mTLS + "
             "roles, operator's bare serial. `mtls-proof`: + card proof (cached certificate). "
             "`mtls-proof-log`: + durable access log (group commit). `mtls-proof-nosync`: log without fdatasync. `mtls-proof-wait1ms`: no log, each check sleeps 1 ms "
             "instead (the cost of a blocking handler in the threaded server). "
             "Trust-layer share = (mtls-proof-log − plain) / mtls-proof-log; target ≤ 30 %.")
    when = common.now_utc()
    cmd = common.command_line()
    for r in results:
        common.append_results(SECTION, intro, header, [
            when, f"`{cmd}`", r["config"], f"{r['cpu_us']:.0f}", f"{r['cpu_us'] / base:.2f}",
            " / ".join(f"{v:.0f}" for v in r["cpu_us_all"]), f"{r['rate']:.0f}",
            f"{r['p50_ms']:.2f}", f"{r['p99_ms']:.2f}", str(r["errors"])])
    aio_note = ""
    if "aio-plain" in by:
        aio_base = by["aio-plain"]["cpu_us"]
        aio_full = by["aio-mtls-proof-log"]["cpu_us"]
        aio_note = (f" On grpc.aio (bench/trust_aio_server.py, handlers await their log batch): plain "
                    f"{aio_base:.0f} µs, mTLS + card proof + durable log {aio_full:.0f} µs per check: trust share "
                    f"**{(aio_full - aio_base) / aio_full:.0%}**.")
    common.append_note(SECTION, (
        f"{when}, {common.machine()}, load average {os.getloadavg()[0]:.1f}, {native}, "
        f"{'closed loop' if not args.rate else f'{args.rate:.0f} checks/s offered to every configuration'}: "
        f"trust-layer share of server CPU per check **{share:.0%}** "
        f"({'meets' if share <= 0.30 else 'misses'} the ≤ 30 % target); card proof alone "
        f"{by['mtls-proof']['cpu_us'] - by['mtls-serial']['cpu_us']:.0f} µs/check over mTLS with a bare serial; "
        f"durable log {by['mtls-proof-log']['cpu_us'] - by['mtls-proof']['cpu_us']:.0f} µs/check, while a handler "
        f"that merely sleeps 1 ms (no log) costs {by['mtls-proof-wait1ms']['cpu_us'] - by['mtls-proof']['cpu_us']:.0f} "
        f"µs/check. "
        f"In-process, one thread, no gRPC: a card check without the hooks {m['hooks_off_us']:.0f} µs, with "
        f"role check + card proof + access-log record (no sync wait) {m['hooks_on_us']:.0f} µs. "
        f"In-process: CardVerifier.verify with a cached certificate {m['verify_cached_us']:.0f} µs "
        f"(first chain check of a certificate {m['chain_uncached_us']:.0f} µs), AuditLog.append "
        f"{m['append_rate']:.0f}/s from 8 threads at {m['records_per_fsync']:.1f} records per fdatasync."
        + aio_note))
    common.record("trust", {"date": when, "command": cmd, "results": results, "micro": m, "share": share})
    return 0


if __name__ == "__main__":
    sys.exit(main())
