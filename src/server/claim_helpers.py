"""Claim verification helpers: each batch of a VerifyClaims stream is split
between `onshi ingest-serve` and helper processes, so one stream uses every core.

Why processes: verification is ~3-4 µs of CPU a claim (two random B-tree lookups
per claim through py-lmdb, which keeps the GIL, plus the Python rules for the ~5%
of claims that are not plainly OK), so one process tops out near one core.

Why helpers own their store: LMDB allows one environment per path per process
(its fcntl locks are per process), and ingest-serve's is the writer's. A helper is
its own process with one read-only environment (a pure engine: py-lmdb, so the
不詳 index is read through the same environment) — an ordinary LMDB reader.
It may see a later commit than ingest-serve's part of the same batch; every
claim is still decided against one committed state.

Why within a batch, not across batches: answering batch i must not wait for
batch i+1 (a lock-step client sends it only after reading the verdicts of i), and
a second thread reading the request stream made aborts on grpc.aio's bridge for
sync handlers intermittently lose their status. So the handler stays the only
reader: the batch is cut at claim boundaries (onshi.ext._claims.split), the
helpers' parts go over pipes, this process verifies the first part itself, and
the serialized responses are concatenated (the records of a repeated field
concatenate), and so are the ledger rows.

Parts are sized by each process's verifying speed over the last batches
(Helpers._balance), so they finish together. A helper that dies or fails is
dropped and its part verified here, so a batch
is never lost to a helper; verdicts are the same either way (each part is
decided by the same Verifier code; error indices are the whole batch's).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import pickle
import queue
import threading
import time

from ..core import claims as rules

log = logging.getLogger("onshi.ingest")

HELPERS_ENV = "ONSHI_CLAIM_HELPERS"  # helper processes; default: one per core beyond the first
READY = b"ready"
MIN_SPLIT_CLAIMS = 1_000  # below this a batch is verified here: a round trip costs more


def default_count() -> int:
    value = os.environ.get(HELPERS_ENV)
    if value is not None:
        return max(0, int(value))
    return max(0, (os.cpu_count() or 1) - 1)


class _Helper:
    def __init__(self, ctx, path: str):
        parent, child = ctx.Pipe()
        self.proc = ctx.Process(target=_serve, args=(child, path), name="onshi-claim-helper", daemon=True)
        self.proc.start()
        child.close()
        self.conn = parent
        self.ready = False  # it says so once its environment is open (it takes ~1 s to start)

    def is_ready(self) -> bool:
        if not self.ready and self.conn.poll(0):
            self.ready = self.conn.recv_bytes() == READY
        return self.ready

    def close(self) -> None:
        self.conn.close()
        self.proc.join(timeout=5)
        if self.proc.is_alive():
            self.proc.kill()


class Helpers:
    """Idle helpers are taken per batch (so concurrent streams share them: a batch
    that finds none idle is verified here alone)."""

    def __init__(self, path, local: rules.Verifier, count: int | None = None):
        self.local = local
        self.count = default_count() if count is None else count
        if local.native is None:  # the split is native; without it, verify here
            self.count = 0
        ctx = multiprocessing.get_context("spawn")  # no fork of a process holding the writer's env
        self._idle: queue.SimpleQueue[_Helper] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._all = [_Helper(ctx, os.fspath(path)) for _ in range(self.count)]
        self.local_share = 1.0 / (self.count + 1)  # of each batch verified here (_balance)
        for helper in self._all:
            self._idle.put(helper)

    def close(self) -> None:
        for helper in self._all:
            helper.close()

    def verify(self, raw: bytes, facility: str | None, record: bool) -> tuple:
        """Verifier.verify_serialized's answer for the whole batch, its ledger rows
        packed (rules.pack_ledger: one value per facility-month)."""
        taken: list[_Helper] = []
        starting: list[_Helper] = []
        while len(taken) + len(starting) < self.count:
            try:
                helper = self._idle.get_nowait()
            except queue.Empty:
                break
            try:
                (taken if helper.is_ready() else starting).append(helper)
            except (EOFError, OSError):
                self._drop(helper, [helper])
        for helper in starting:  # not waited for: this batch is verified without it
            self._idle.put(helper)
        waiting: list[_Helper] = []  # sent a part, answer not read yet
        try:
            native = self.local.native
            split = native.split(raw, len(taken) + 1, self.local_share) if taken and native is not None else None
            if split is None or split[1] < MIN_SPLIT_CLAIMS or split[1] > rules.MAX_BATCH:
                return packed(self.local.verify_serialized(raw, facility, record))
            parts = split[0]
            counts = [b - a for (_, a), (_, b) in zip(parts, [*parts[1:], (b"", split[1])], strict=True)]
            sent: list[tuple[_Helper | None, bytes, int, int]] = []
            for helper, (part, base), count in zip(
                list(taken), parts[1:], counts[1:], strict=False
            ):  # a small batch may need fewer parts
                sent_to: _Helper | None = helper
                try:
                    helper.conn.send_bytes(pickle.dumps((part, facility, record, base), protocol=5))
                    waiting.append(helper)
                except OSError:
                    self._drop(helper, taken)
                    sent_to = None
                sent.append((sent_to, part, base, count))
            started = time.perf_counter()
            results = [packed(self.local.verify_serialized(parts[0][0], facility, record, 0))]
            speeds = [counts[0] / max(time.perf_counter() - started, 1e-6)]
            for target, part, base, count in sent:
                answer = self._answer(target, taken, waiting) if target is not None else None
                result = answer[0] if answer is not None else None
                if answer is None or result is None or result[0] == "error":
                    if result is not None:
                        log.warning("claim helper failed (%s); verifying its part here", result[1])
                    result = packed(self.local.verify_serialized(part, facility, record, base))
                else:
                    speeds.append(count / max(answer[1], 1e-6))
                results.append(result)
            self._balance(speeds, len(sent))
            return combine(results)
        finally:
            for helper in list(waiting):  # noqa: PERF101 - _answer removes from it; keep the pipes in step
                self._answer(helper, taken, waiting)
            for helper in taken:
                self._idle.put(helper)

    def _balance(self, speeds: list[float], helpers: int) -> None:
        """This process's share of the next batch: parts finish together when each
        is in proportion to its verifying speed (claims/s of the last batch; this
        process also runs the transport and the committer, so it is often the
        slower). Smoothed, and kept within [5%, 95%]."""
        if len(speeds) != helpers + 1:  # a helper failed: keep the share
            return
        share = speeds[0] / sum(speeds)
        self.local_share = min(0.95, max(0.05, 0.7 * self.local_share + 0.3 * share))

    def _answer(self, helper: _Helper, taken: list[_Helper], waiting: list[_Helper]) -> tuple | None:
        """(result, seconds the helper spent verifying) or None if it is gone."""
        waiting.remove(helper)
        try:
            return pickle.loads(helper.conn.recv_bytes())
        except (EOFError, OSError):
            self._drop(helper, taken)
            return None

    def _drop(self, helper: _Helper, taken: list[_Helper]) -> None:
        log.warning("claim helper %s gone; its parts are verified here", helper.proc.pid)
        taken.remove(helper)
        with self._lock:  # concurrent streams
            self._all.remove(helper)
            self.count -= 1
        helper.close()


def packed(result: tuple) -> tuple:
    """A part's answer with its ledger rows packed where it was verified (a
    helper sends a value per facility-month, not a tuple per claim)."""
    if result[0] != "ok" or result[2] is None:
        return result
    return ("ok", result[1], rules.pack_ledger(result[2]), result[3])


def combine(results: list[tuple]) -> tuple:
    """The parts' answers (in claim order) as the whole batch's: the first
    refusal wins (the facility check precedes verification), then every part's
    violations in order, else the concatenated verdicts, ledger values (the
    entries of one facility-month concatenate in part order, so claim order
    holds) and outcomes."""
    for result in results:
        if result[0] == "denied":
            return result
    violations = [v for result in results if result[0] == "invalid" for v in result[1]]
    if violations:
        return ("invalid", violations)
    response = b"".join(result[1] for result in results)
    outcomes = b"".join(result[3] for result in results)
    if results[0][2] is None:
        return ("ok", response, None, outcomes)
    if len(results) == 1:
        return results[0]
    groups: dict[bytes, list[bytes]] = {}
    for result in results:
        for prefix, entries in result[2]:
            groups.setdefault(prefix, []).append(entries)
    return ("ok", response, [(prefix, b"".join(groups[prefix])) for prefix in sorted(groups)], outcomes)


def _serve(conn, path: str) -> None:
    """A helper's life: verify parts until the pipe closes (ingest-serve exited)."""
    from ..core.pure import PureEngine

    engine = PureEngine(path)
    verifier = rules.Verifier(engine, engine.env)
    try:
        conn.send_bytes(READY)
    except OSError:
        return
    while True:
        try:
            message = conn.recv_bytes()
        except (EOFError, OSError):
            return
        part, facility, record, base = pickle.loads(message)
        started = time.perf_counter()
        try:
            result = packed(verifier.verify_serialized(part, facility, record, base))
        except Exception as exc:  # noqa: BLE001 - ingest-serve verifies the part itself and reports
            result = ("error", repr(exc))
        try:
            conn.send_bytes(pickle.dumps((result, time.perf_counter() - started), protocol=5))
        except (BrokenPipeError, OSError):
            return
