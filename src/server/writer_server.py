"""`onshi ingest-serve`: the writer process, the store's single writer, serving
insurers' updates, card links, claims and the failure-mode lookup over gRPC.

Eligibility servers open the same LMDB read-only and see each commit as soon as
it returns (LMDB MVCC: a new read transaction sees the latest committed state),
so nothing here talks to them.

Group commit: every write (an insurer's update, a card link, a registry load, a
claims service's record...) is a job for one committer thread. The committer
takes everything queued, runs all of it in ONE `Writer.apply` transaction (one
fsync), and only after that commit returned tells each job's owner its result.
Under load a batch is whatever arrived during the previous commit, so commits
happen back to back (one fsync each, ~10 ms on this machine's disk, plus the
batch's work) and nobody waits for a timer; when idle, a lone update commits
at once.

A job that raises aborts the batch's transaction; the batch is re-run without it
(its owner gets the exception), so one bad job never costs the others their
writes and never leaves half of itself behind. When the store is full, the
longest prefix of the batch that fits is committed and every job after it
fails with StoreFull (never a later write without an earlier one).

Services are assembled from SERVICES: each module exposes
`add_to_server(server, writer, trust) -> list[str]` (the service names, for
health and reflection) and receives the GroupWriter, whose `apply(fn)` /
`apply_async(fn)` have Writer.apply's meaning (fn(WriteTxn), durable on
return, re-runnable), and the process's trust layer (trust_setup.IngestTrust,
or None without trust options).
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import grpc
import lmdb
from grpc_health.v1 import _async as health_async
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import _async as reflection_async
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc

from ..core.writer import StoreFull, Writer, WriteTxn
from . import claim_service, enrollment_service, failure_mode, handlers

log = logging.getLogger("onshi.ingest")

SERVICES = (enrollment_service, claim_service, failure_mode)
MAX_BATCH = 8192  # writes per transaction (a job counts its weight); bounds one commit's latency
MAX_REQUEST_BYTES = 4 * 1024 * 1024  # a PutResidents page of a few thousand records
HEALTH_SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name

Done = Callable[[Any, BaseException | None], None]


class _JobFailed(Exception):
    def __init__(self, index: int, exc: BaseException):
        self.index = index
        self.exc = exc


class GroupWriter:
    """Many writers' jobs, one committer thread, one transaction per batch."""

    def __init__(self, writer: Writer, *, max_batch: int = MAX_BATCH):
        self.writer = writer
        self.max_batch = max_batch
        self._queue: collections.deque[tuple[Callable[[WriteTxn], Any], Done, int]] = collections.deque()
        self._cv = threading.Condition()
        self._stopping = False
        self.commits = 0
        self.jobs = 0
        self.apply_seconds = 0.0  # in Writer.apply (successful batches): work + commit (fsync)
        self.work_seconds = 0.0  # running the jobs inside transactions
        self._thread = threading.Thread(target=self._run, name="onshi-committer", daemon=True)
        self._thread.start()

    # -- the Writer-like surface other services use ---------------------------
    @property
    def path(self) -> str:
        return self.writer.path

    @property
    def env(self):
        return self.writer.env

    @property
    def dbs(self) -> dict:
        return self.writer.dbs

    def open_db(self, name: bytes, **kwargs):
        return self.writer.open_db(name, **kwargs)

    def read(self):
        """A read-only WriteTxn view (get/scan/history) of the latest commit: `with gw.read() as r:`."""
        return _ReadView(self.writer)

    def submit(self, fn: Callable[[WriteTxn], Any], done: Done) -> None:
        """Queue fn; done(result, None) or done(None, exc) runs on the committer
        thread after the batch's commit returned. done must be quick and not raise."""
        with self._cv:
            if self._stopping:
                raise RuntimeError("writer is closed")
            self._queue.append((fn, done, 1))
            self._cv.notify()

    def submit_many(self, jobs: list[tuple[Callable[[WriteTxn], Any], Done]], weights: list[int] | None = None) -> None:
        """Queue several jobs at once (one lock, one wake-up), in order. `weights`:
        the writes each job makes (default 1; a slice of a stream's updates makes
        several), counted against max_batch so a commit's size stays bounded."""
        with self._cv:
            if self._stopping:
                raise RuntimeError("writer is closed")
            if weights is None:
                self._queue.extend((fn, done, 1) for fn, done in jobs)
            else:
                self._queue.extend((fn, done, w) for (fn, done), w in zip(jobs, weights, strict=True))
            self._cv.notify()

    def apply(self, fn: Callable[[WriteTxn], Any]) -> Any:
        """Blocking, from any thread but the committer: Writer.apply through the group."""
        box: list = []
        event = threading.Event()

        def done(result, exc):
            box.append((result, exc))
            event.set()

        self.submit(fn, done)
        event.wait()
        result, exc = box[0]
        if exc is not None:
            raise exc
        return result

    async def apply_async(self, fn: Callable[[WriteTxn], Any]) -> Any:
        loop = asyncio.get_running_loop()
        future = loop.create_future()

        def done(result, exc):
            loop.call_soon_threadsafe(_settle, future, result, exc)

        self.submit(fn, done)
        return await future

    def close(self) -> None:
        """Commit what is queued, stop the committer (the Writer stays open)."""
        with self._cv:
            self._stopping = True
            self._cv.notify()
        self._thread.join()

    # -- the committer -------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._queue and not self._stopping:
                    self._cv.wait()
                if not self._queue:
                    return
                batch = [self._queue.popleft()]  # at least one job, whatever its weight
                room = self.max_batch - batch[0][2]
                while self._queue and self._queue[0][2] <= room:
                    room -= self._queue[0][2]
                    batch.append(self._queue.popleft())
            self._commit(batch)

    def _commit(self, batch: list) -> bool:
        """Run and commit a batch, then tell every owner; False if the store was full."""
        failed: dict[int, BaseException] = {}  # job index -> what it raised: left out of the next run
        run_all = functools.partial(self._run_jobs, [job[0] for job in batch], failed)
        results: list | None = None
        error: BaseException | None = None
        while True:
            started = time.perf_counter()
            try:
                results = self.writer.apply(run_all)
                self.apply_seconds += time.perf_counter() - started
                break
            except _JobFailed as jf:
                failed[jf.index] = jf.exc
            except StoreFull as exc:
                if len(batch) > 1:
                    # Commit the longest prefix that fits; everything after the
                    # first job that does not fit fails with it, so no owner's
                    # later write ever lands without its earlier one.
                    mid = len(batch) // 2
                    if self._commit(batch[:mid]):
                        return self._commit(batch[mid:])
                    self._deliver(batch[mid:], None, failed, exc)
                    return False
                error = exc
                break
            except Exception as exc:
                log.exception("commit failed")
                error = exc
                break
        self.commits += error is None
        self.jobs += sum(job[2] for job in batch) if error is None else 0
        self._deliver(batch, results, failed, error)
        return error is None

    def _run_jobs(self, fns: list, failed: dict[int, BaseException], txn: WriteTxn) -> list:
        """Inside the batch's transaction: each job's result (None for those in
        `failed`); a job that raises ends the transaction with _JobFailed."""
        started = time.perf_counter()
        try:
            out: list[object] = []
            for i, fn in enumerate(fns):
                if i in failed:
                    out.append(None)
                    continue
                try:
                    out.append(fn(txn))
                except lmdb.MapFullError:
                    raise  # Writer.apply grows the map and runs the whole batch again
                except Exception as exc:
                    raise _JobFailed(i, exc) from exc
            return out
        finally:
            self.work_seconds += time.perf_counter() - started

    def _deliver(self, batch: list, results: list | None, failed: dict, error: BaseException | None) -> None:
        for i, (_, done, _) in enumerate(batch):
            try:
                if results is None:  # with an error: nothing was written
                    done(None, error)
                else:
                    done(results[i], failed.get(i))
            except Exception:
                log.exception("job callback failed")


class _Health(health_async.HealthServicer):
    async def List(self, request, context):
        from .app import health_list

        return health_list(self._server_status)


def _settle(future: asyncio.Future, result, exc) -> None:
    if future.done():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)


class _ReadView:
    def __init__(self, writer: Writer):
        self._writer = writer

    def __enter__(self) -> WriteTxn:
        self._txn = self._writer.env.begin()
        return WriteTxn(self._txn, self._writer.dbs)

    def __exit__(self, *exc) -> None:
        self._txn.abort()


# --- assembly ----------------------------------------------------------------------


def add_services(server, group: GroupWriter, trust=None) -> list[str]:
    names: list[str] = []
    for service in SERVICES:
        names.extend(service.add_to_server(server, group, trust))
    return names


class WriterServer:
    """The running process: writer, committer, aio server with health + reflection."""

    def __init__(
        self,
        data: str,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        map_size: int | None = None,
        max_map_size: int | None = None,
        credentials: grpc.ServerCredentials | None = None,
        interceptors=(),
        trust=None,
    ):
        kwargs = {"max_map_size": max_map_size} if max_map_size else {}
        if map_size:
            kwargs["map_size"] = map_size
        self.writer = Writer(data, **kwargs)
        self.group = GroupWriter(self.writer)
        self.server = grpc.aio.server(
            interceptors=list(interceptors), options=(("grpc.max_receive_message_length", MAX_REQUEST_BYTES),)
        )
        # Every handler here runs on the event loop and parses its own request
        # (onshi.server.handlers): a sync handler would run on a pool thread
        # that outlives its call when the caller cancels.
        services = handlers.Services(self.server, asyncio=True)
        self.service_names = add_services(services, self.group, trust)
        self.health = _Health()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, services)
        reflection_pb2_grpc.add_ServerReflectionServicer_to_server(
            reflection_async.ReflectionServicer((*self.service_names, HEALTH_SERVICE, reflection.SERVICE_NAME)),
            services,
        )
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self.port = (
            self.server.add_secure_port(address, credentials)
            if credentials is not None
            else self.server.add_insecure_port(address)
        )
        if self.port == 0:
            raise OSError(f"could not bind {host}:{port}")

    async def start(self) -> None:
        await self.server.start()
        for name in ("", *self.service_names):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)

    async def stop(self, grace: float) -> None:
        """Health NOT_SERVING first, let calls finish, then commit what is queued."""
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)
        self.group.close()
        self.writer.close()


def serve(
    data: str,
    *,
    host: str = "127.0.0.1",
    port: int = 50052,
    grace: float = 5.0,
    port_file: str | None = None,
    map_size: int | None = None,
    max_map_size: int | None = None,
    credentials: grpc.ServerCredentials | None = None,
    interceptors=(),
    trust=None,
) -> int:
    logging.basicConfig(level=logging.INFO, format="onshi ingest: %(message)s")

    async def main() -> int:
        server = WriterServer(
            data,
            host=host,
            port=port,
            map_size=map_size,
            max_map_size=max_map_size,
            credentials=credentials,
            interceptors=interceptors,
            trust=trust,
        )
        await server.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        from . import auth

        loop.add_signal_handler(signal.SIGHUP, auth.reload_caller_revocations)  # reload, not stop
        print(f"onshi ingest-serve: listening on {host}:{server.port} ({', '.join(server.service_names)})", flush=True)
        if port_file:
            tmp = f"{port_file}.{os.getpid()}.tmp"
            with open(tmp, "w") as f:
                f.write(f"{server.port}\n")
            os.replace(tmp, port_file)
        await stop.wait()
        started = time.monotonic()
        await server.stop(grace)
        g = server.group
        print(
            f"onshi ingest-serve: stopped ({g.jobs} writes in {g.commits} commits; "
            f"{g.work_seconds:.2f}s running writes, {max(g.apply_seconds - g.work_seconds, 0):.2f}s committing; "
            f"shutdown {time.monotonic() - started:.2f}s)",
            file=sys.stderr,
            flush=True,
        )
        return 0

    return asyncio.run(main())
