"""Server assembly and the worker processes behind `onshi serve`.

One process per worker, all bound to the same port with SO_REUSEPORT so the
kernel spreads connections over them; gRPC Python holds the GIL for most of a
call, so processes (not threads) are what use a second core. The parent
(supervisor) never opens the store and never creates a gRPC object: each worker
opens the LMDB environment read-only after fork (LMDB environments must not
cross a fork) and builds its own server.

The default stack is grpc's threaded server: on this 2-core machine it measured
faster than grpc.aio on uvloop (bench/server.py, bench/RESULTS.md "Server").
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import select
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from concurrent import futures
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from . import eligibility_service, handlers

HEALTH_SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
SERVICE_NAMES = (eligibility_service.SERVICE_NAME, HEALTH_SERVICE, reflection.SERVICE_NAME)
WORKER_PID_KEY = "onshi-worker-pid"
# A check request is well under 1 KiB and a card proof a few KiB; anything much
# larger is refused by gRPC itself (RESOURCE_EXHAUSTED) before it is parsed.
MAX_REQUEST_BYTES = 64 * 1024
# Handler threads per worker. gRPC Python runs handlers under the GIL, so for
# handlers that never wait, more threads only add GIL and queue hand-offs: 2
# threads measured about 1/3 less server CPU per check than 8 (docs/INVESTIGATIONS.md,
# "Server"). Handlers that wait (the durable access log's group commit) need
# more threads in flight to fill a batch; with the native group commit 4
# measured less CPU per check than 8 at a higher rate (fewer GIL hand-offs;
# docs/INVESTIGATIONS.md, "Trust").
DEFAULT_THREADS = 2
WAITING_HANDLER_THREADS = 4
# Calls that read a request stream (server reflection) hold a handler thread
# while the stream is open: at most this many at once per worker, so idle
# streams never take every thread from the checks.
STREAM_SLOTS = 1


def handler_threads(audit: object | None) -> int:
    return WAITING_HANDLER_THREADS if audit is not None else DEFAULT_THREADS


SERVER_OPTIONS = (
    ("grpc.so_reuseport", 1),
    ("grpc.max_receive_message_length", MAX_REQUEST_BYTES),
    # No bandwidth-delay-product probing: it grows flow-control windows for
    # bulk streams, and these are small unary calls. With a card proof (~1.6 KB
    # per request) it cost ~2 thread switches and 10-20 us of server CPU per
    # check (docs/INVESTIGATIONS.md, Trust); the writer process's claim streams keep it.
    ("grpc.http2.bdp_probe", 0),
)


class WorkerHealth(health.HealthServicer):
    """The standard health service; a Check also names the worker that answered
    (trailing metadata onshi-worker-pid), so operators and tests can see how
    connections spread over SO_REUSEPORT workers without touching the hot path."""

    def Check(self, request, context):
        context.set_trailing_metadata(((WORKER_PID_KEY, str(os.getpid())),))
        return super().Check(request, context)

    def List(self, request, context):
        with self._lock:
            return health_list(self._server_status)


def health_list(statuses: dict) -> health_pb2.HealthListResponse:
    """Health.List (grpcio-health-checking's servicers leave it unimplemented)."""
    response = health_pb2.HealthListResponse()
    for name, status in statuses.items():
        response.statuses[name].status = status
    return response


@dataclass
class Serving:
    server: grpc.Server
    health: health.HealthServicer
    port: int
    # The handler threads: joined after stop, so no handler is still inside the
    # engine when it is closed (grpc's stop returns after the grace even if one is).
    executor: futures.ThreadPoolExecutor | None = None


def create_server(
    engine,
    *,
    address: str = "127.0.0.1:0",
    credentials: grpc.ServerCredentials | None = None,
    interceptors: Sequence[grpc.ServerInterceptor] = (),
    card_proof: eligibility_service.CardProof | None = None,
    audit: eligibility_service.Audit | None = None,
    threads: int | None = None,
) -> Serving:
    """A threaded gRPC server with EligibilityService over `engine`, health and
    reflection, bound but not started."""
    return threaded_server(
        eligibility_service.build_eligibility_handlers(engine, card_proof=card_proof, audit=audit),
        address=address,
        credentials=credentials,
        interceptors=interceptors,
        threads=handler_threads(audit) if threads is None else threads,
    )


def threaded_server(
    service: grpc.GenericRpcHandler,
    *,
    address: str = "127.0.0.1:0",
    credentials: grpc.ServerCredentials | None = None,
    interceptors: Sequence[grpc.ServerInterceptor] = (),
    threads: int = DEFAULT_THREADS,
    extra_handlers: Sequence[grpc.GenericRpcHandler] = (),
    extra_service_names: Sequence[str] = (),
) -> Serving:
    """The server `onshi serve` runs, around `service` (EligibilityService's
    method handlers): options, handler threads, health and reflection. Other
    services join through extra_handlers + extra_service_names (for health and
    reflection)."""
    executor = futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="onshi")
    server = grpc.server(
        executor,
        interceptors=list(interceptors),
        options=SERVER_OPTIONS,
    )
    server.add_generic_rpc_handlers((service, *extra_handlers))
    # Health and reflection parse their own requests too (onshi.server.handlers);
    # at most one reflection stream per worker holds a handler thread.
    services = handlers.Services(server, asyncio=False, stream_slots=STREAM_SLOTS)
    health_servicer = WorkerHealth()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, services)
    names = (*SERVICE_NAMES, *extra_service_names)
    reflection.enable_server_reflection(names, services)
    for name in (eligibility_service.SERVICE_NAME, *extra_service_names):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    if credentials is None:
        port = server.add_insecure_port(address)
    else:
        port = server.add_secure_port(address, credentials)
    if port == 0:
        raise OSError(errno.EADDRINUSE, f"could not bind {address}")
    return Serving(server, health_servicer, port, executor)


# --- the port ----------------------------------------------------------------


def format_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@contextlib.contextmanager
def reserve_port(host: str, port: int) -> Iterator[int]:
    """Bind (not listen) a SO_REUSEPORT socket: port 0 becomes a concrete free
    port that every worker then binds, and it stays reserved while workers
    restart. A bound, non-listening socket never receives connections."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        yield sock.getsockname()[1]
    finally:
        sock.close()


# --- a worker ------------------------------------------------------------------


@dataclass
class WorkerConfig:
    data: str
    engine: str | None
    address: str
    grace: float = 5.0
    threads: int | None = None  # None: handler_threads(audit) in create_server
    # Called in the worker, after fork and after the engine is open, to build the
    # bound (unstarted) server: where TLS credentials, interceptors, card-proof
    # and audit hooks and further services come in (gRPC objects must not be
    # created before fork). Default: create_server(engine, address=..., threads=...).
    build_server: Callable[..., Serving] | None = None


def _die_with_parent() -> None:
    # If the supervisor is SIGKILLed, its workers must not keep serving the port.
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def stop_on_signals() -> threading.Event:
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def run_worker(config: WorkerConfig, ready: Callable[[str], object], stop: threading.Event | None = None) -> int:
    """Open the store, serve until SIGTERM/SIGINT, then stop gracefully:
    health NOT_SERVING first, then server.stop(grace) lets in-flight calls end."""
    from ..core.engine import open_engine

    stop = stop or stop_on_signals()
    # On an error the engine is left open on purpose: a handler thread may still
    # be inside it, and the worker process is exiting (the OS releases the map).
    engine = open_engine(config.data, config.engine)
    if config.build_server is not None:
        serving = config.build_server(engine, config.address)
    else:
        serving = create_server(engine, address=config.address, threads=config.threads)
    serving.server.start()
    ready(engine.kind)
    while not stop.wait(1.0):
        pass
    serving.health.enter_graceful_shutdown()
    serving.server.stop(config.grace).wait()
    if serving.executor is not None:
        serving.executor.shutdown(wait=True, cancel_futures=True)
    engine.close()
    return 0


# --- the supervisor -------------------------------------------------------------


@dataclass
class _Workers:
    config: WorkerConfig
    ready_w: int
    pids: dict[int, float] = field(default_factory=dict)  # pid -> start time
    deaths: list[float] = field(default_factory=list)

    def spawn(self) -> int:
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid:
            self.pids[pid] = time.monotonic()
            return pid
        code = 1
        try:
            # First thing after fork: a stop forwarded while starting is kept.
            stop = stop_on_signals()
            from . import auth

            # SIGHUP (forwarded by the supervisor): reload revocation lists, not stop.
            signal.signal(signal.SIGHUP, lambda *_: auth.reload_caller_revocations())
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            signal.set_wakeup_fd(-1)
            _die_with_parent()
            ready_w = self.ready_w
            code = run_worker(
                self.config,
                lambda kind: os.write(ready_w, f"{os.getpid()} {kind}\n".encode()),
                stop,
            )
        except BaseException:  # noqa: BLE001 - a forked worker reports anything and exits below
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exited with code {os.waitstatus_to_exitcode(status)}"


def serve(
    data: str,
    *,
    host: str = "127.0.0.1",
    port: int = 50051,
    workers: int = 1,
    engine: str | None = None,
    grace: float = 5.0,
    threads: int | None = None,
    port_file: str | None = None,
    build_server: Callable[..., Serving] | None = None,
    startup_timeout: float = 60.0,
    max_restarts: int = 5,
) -> int:
    """Run `workers` worker processes on host:port until SIGTERM/SIGINT; 0 on a clean stop.

    `build_server(engine, address) -> Serving` runs in each worker after fork
    (see WorkerConfig.build_server)."""
    from ..core.store import DATA_FILE

    if not os.path.exists(os.path.join(data, DATA_FILE)):
        print(f"onshi: no store at {data} (run `onshi gen` first)", file=sys.stderr)
        return 2
    if port and _listening(host, port):
        # SO_REUSEPORT would let us join that listener and silently split its traffic.
        print(
            f"onshi: cannot serve on {format_address(host, port)}: another server is listening there",
            file=sys.stderr,
        )
        return 1
    signals: list[int] = []
    wake_r, wake_w = os.pipe()
    ready_r, ready_w = os.pipe()
    for fd in (wake_r, wake_w):
        os.set_blocking(fd, False)
    previous = {
        sig: signal.signal(sig, lambda s, _f: signals.append(s))
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD, signal.SIGHUP)
    }
    signal.set_wakeup_fd(wake_w)
    try:
        with reserve_port(host, port) as bound:
            config = WorkerConfig(
                data,
                engine,
                format_address(host, bound),
                grace,
                threads,
                build_server,
            )
            pool = _Workers(config, ready_w)
            return _supervise(
                pool,
                workers,
                bound,
                port_file,
                signals,
                wake_r,
                ready_r,
                startup_timeout,
                max_restarts,
            )
    except OSError as exc:
        print(f"onshi: cannot serve on {format_address(host, port)}: {exc}", file=sys.stderr)
        return 1
    finally:
        signal.set_wakeup_fd(-1)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for fd in (wake_r, wake_w, ready_r, ready_w):
            os.close(fd)


def _supervise(
    pool: _Workers,
    count: int,
    port: int,
    port_file: str | None,
    signals: list[int],
    wake_r: int,
    ready_r: int,
    startup_timeout: float,
    max_restarts: int,
) -> int:
    for _ in range(count):
        pool.spawn()
    ready: dict[int, str] = {}
    announced = False
    stopping = False
    stop_deadline = 0.0
    exit_code = 0
    started = time.monotonic()
    buffer = b""
    while pool.pids:
        readable, _, _ = select.select([wake_r, ready_r], [], [], 0.5)
        if wake_r in readable:
            with contextlib.suppress(BlockingIOError):
                while os.read(wake_r, 512):
                    pass
        if ready_r in readable:
            buffer += os.read(ready_r, 4096)
            *lines, buffer = buffer.split(b"\n")
            for ready_line in lines:
                worker, kind = ready_line.decode().split()
                ready[int(worker)] = kind
        # Stop requests: forward to every worker, once; a second one escalates.
        while signals:
            sig = signals.pop(0)
            if sig == signal.SIGCHLD:
                continue
            if sig == signal.SIGHUP:  # reload, in every worker
                for pid in pool.pids:
                    _signal(pid, signal.SIGHUP)
                continue
            if not stopping:
                stopping = True
                stop_deadline = time.monotonic() + pool.config.grace + 10.0
                for pid in pool.pids:
                    _signal(pid, signal.SIGTERM)
        # Reap.
        while pool.pids:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                pool.pids.clear()
                break
            if pid == 0:
                break
            pool.pids.pop(pid, None)
            was_ready = ready.pop(pid, None) is not None
            if stopping:
                if status != 0:
                    print(f"onshi: worker {pid} {_describe(status)} while stopping", file=sys.stderr)
                    exit_code = 1
                continue
            print(f"onshi: worker {pid} {_describe(status)}", file=sys.stderr, flush=True)
            now = time.monotonic()
            pool.deaths = [t for t in pool.deaths if now - t < 60.0] + [now]
            if not announced or not was_ready or len(pool.deaths) > max_restarts:
                why = "before serving" if not was_ready else f"{len(pool.deaths)} times in 60 s"
                print(f"onshi: giving up (worker died {why}); stopping", file=sys.stderr, flush=True)
                signals.append(signal.SIGTERM)
                exit_code = 1
                continue
            new = pool.spawn()
            print(f"onshi: restarted worker as {new}", file=sys.stderr, flush=True)
        if stopping and time.monotonic() > stop_deadline:
            for pid in pool.pids:
                print(f"onshi: worker {pid} did not stop in time; SIGKILL", file=sys.stderr)
                _signal(pid, signal.SIGKILL)
            exit_code = 1
            stop_deadline = float("inf")
        if not announced and not stopping and len(ready) == count and len(pool.pids) == count:
            announced = True
            kinds = ",".join(sorted(set(ready.values())))
            serving = (
                f"onshi: serving on {pool.config.address} workers={count} engine={kinds} "
                f"pids={','.join(str(p) for p in sorted(ready))}"
            )
            if port_file:
                tmp = port_file + ".tmp"
                with open(tmp, "w") as f:
                    f.write(f"{port}\n")
                os.replace(tmp, port_file)
            print(serving, flush=True)
        if not announced and not stopping and time.monotonic() - started > startup_timeout:
            print(
                f"onshi: workers not serving after {startup_timeout:.0f} s; stopping",
                file=sys.stderr,
            )
            signals.append(signal.SIGTERM)
            exit_code = 1
    return exit_code


def _listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
