"""gRPC under locust, as in locust's own gRPC example: sync stubs on gevent
(`grpc.experimental.gevent.init_gevent()`) and a client interceptor that fires
`events.request` for every unary call. Streaming scenarios fire one event per
batch round trip themselves (see `fire`).

Configuration comes from the environment, so `onshi bench load` (bench/load.py)
and a person running locust by hand set the same things; by hand, nothing is
needed against the README's server (scripts/run.sh: mTLS with var/pki, store
var/demo):

    ONSHI_PKI             an `onshi pki init` directory: mTLS with its client
                          certificates (operator for checks, review for claims,
                          an insurer's for updates); default var/pki of this
                          checkout when it holds one, else plaintext
    ONSHI_BENCH_INSECURE  1: plaintext, roles declared in metadata (servers started
                          with --insecure-dev, as bench/load.py starts them)
    ONSHI_BENCH_QUERIES   JSON of card serials and numbers in the store (bench/load.py
                          writes one); default: sampled from the store at ONSHI_DATA
                          (default var/demo of this checkout) when locust starts
    ONSHI_BENCH_SECONDARY host:port of `onshi ingest-serve` (review, insurer)
    ONSHI_BENCH_RAW       directory: each locust process writes its exact latencies
                          there at the end (locust's own percentiles are rounded to
                          whole milliseconds, too coarse for a 10 ms target)

A run in which no request was answered measured nothing and exits 1 (locust's
own exit code only counts failures, and a user that never connects makes none).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import time
from collections import Counter
from pathlib import Path

import grpc
import grpc.experimental.gevent as grpc_gevent
from locust import User, events
from locust.exception import LocustError, StopUser

ROOT = Path(__file__).resolve().parents[2]
sys.path.append(str(ROOT / "bench"))  # bench/common.py: the store sampler

# Patch grpc so its blocking calls yield to other greenlets instead of the OS.
grpc_gevent.init_gevent()

# Under gevent, grpc waits for each blocking call's completion in a thread of
# the gevent hub's threadpool (grpc_gevent.pyx.pxi: g_gevent_threadpool.apply),
# and one of those threads is always parked delivering callbacks. gevent's
# default pool has 10 threads, so at most 9 calls are in flight in a locust
# process and the 10th terminal waits for a thread: that wait showed up as
# client-side latency growing with the number of users at the same total rate.
# One thread per user (plus the parked one) removes the cap.
GRPC_THREADS = int(os.environ.get("ONSHI_BENCH_GRPC_THREADS", "256"))
if GRPC_THREADS:
    import gevent

    gevent.get_hub().threadpool.maxsize = max(gevent.get_hub().threadpool.maxsize, GRPC_THREADS)

_samples: dict[str, list[float]] = {}  # name -> latencies (ms) of successful requests
_times: dict[str, list[float]] = {}  # name -> completion times (unix s), parallel to _samples
_failures: Counter = Counter()
_answers: Counter = Counter()  # (name, validity or outcome) -> count, a sanity check on the mix
_started = time.time()


def fire(environment, name: str, started: float, *, length: int = 0, exception: BaseException | None = None):
    environment.events.request.fire(
        request_type="grpc",
        name=name,
        response_time=(time.perf_counter() - started) * 1000,
        response_length=length,
        response=None,
        context={},
        exception=exception,
    )


@events.request.add_listener
def _keep(request_type, name, response_time, response_length, exception=None, **_kwargs):
    if exception is None:
        _samples.setdefault(name, []).append(response_time)
        _times.setdefault(name, []).append(time.time())
    else:
        _failures[f"{name}: {type(exception).__name__}: {_describe(exception)}"] += 1


def _describe(exc: BaseException) -> str:
    if isinstance(exc, grpc.RpcError) and hasattr(exc, "code"):
        # A call object that cannot describe itself must not end the run.
        with contextlib.suppress(Exception):
            return f"{exc.code().name} {exc.details()}"[:200]
    return str(exc)[:200]


def note_answer(name: str, answer: str) -> None:
    _answers[f"{name}={answer}"] += 1


def _dump(**_kwargs) -> None:
    where = os.environ.get("ONSHI_BENCH_RAW")
    if not where:
        return
    os.makedirs(where, exist_ok=True)
    out = {
        "pid": os.getpid(),
        "started": _started,
        "ended": time.time(),
        "samples": _samples,
        "times": _times,
        "failures": dict(_failures),
        "answers": dict(_answers),
    }
    tmp = os.path.join(where, f".raw-{os.getpid()}.json")
    with open(tmp, "w") as f:
        json.dump(out, f)
    os.replace(tmp, os.path.join(where, f"raw-{os.getpid()}.json"))


events.test_stop.add_listener(_dump)
events.quitting.add_listener(_dump)


@events.quitting.add_listener
def _fail_without_answers(environment, **_kwargs):
    """No answered request: exit 1 (a dead port, a refused certificate, a user
    that never connected). Decided where the totals are: the master or a
    stand-alone process, not a worker."""
    from locust.runners import WorkerRunner

    if isinstance(environment.runner, WorkerRunner):
        return
    total = environment.stats.total
    if total.num_requests - total.num_failures <= 0:
        logging.error("onshi bench: no request was answered (%d failed); exit code 1", total.num_failures)
        environment.process_exit_code = 1


class LocustInterceptor(grpc.UnaryUnaryClientInterceptor):
    """Times each unary call from send to parsed answer and reports it to locust."""

    def __init__(self, environment):
        self.env = environment

    def intercept_unary_unary(self, continuation, call_details, request):
        started = time.perf_counter()
        call = continuation(call_details, request)
        name = call_details.method.rsplit("/", 1)[-1]
        try:
            length = call.result().ByteSize()
        except grpc.RpcError as exc:
            fire(self.env, name, started, exception=exc)
        else:
            fire(self.env, name, started, length=length)
        return call


# Callers: under mTLS each user presents a client certificate of the PKI for its
# role; with --insecure-dev servers (no TLS, loopback) it declares the role in
# metadata instead. Checks use an internal role with bare card serials: a
# facility must send a card proof (an RSA signature per check), whose cost the
# trust benchmark measures, not this one.
ROLE_KEY = "x-onshi-role"
CHECK_ROLE = os.environ.get("ONSHI_BENCH_CHECK_ROLE", "operator")


def role(name: str, **codes: str) -> tuple[tuple[str, str], ...]:
    return ((ROLE_KEY, name), *((f"x-onshi-{k}", v) for k, v in codes.items()))


def pki_dir() -> str | None:
    """The PKI whose client certificates the users present; None: plaintext."""
    if os.environ.get("ONSHI_BENCH_INSECURE", "") not in ("", "0"):
        return None
    explicit = os.environ.get("ONSHI_PKI")
    if explicit:
        return explicit
    default = ROOT / "var" / "pki"
    return str(default) if (default / "manifest.json").exists() else None


_callers: dict[str, tuple] = {}


def caller(identity: str):
    """(the PKI's client certificate for `identity`, its channel credentials),
    or None for plaintext; resolved once per locust process."""
    pki = pki_dir()
    if pki is None:
        return None
    if identity not in _callers:
        from onshi.client.connection import ConnectError, find_identity, read_credentials

        try:
            who = find_identity(pki, identity)
            _callers[identity] = (who, read_credentials(who.files))
        except ConnectError as exc:
            raise LocustError(f"ONSHI_PKI={pki}: {exc}") from None
        logging.info("onshi bench: mTLS as %s", who.label)
    return _callers[identity]


def open_channel(address: str, identity: str, options=()) -> grpc.Channel:
    from onshi.client import connection

    found = caller(identity)
    return connection.open_channel(address, found[1] if found else None, options)


_queries: dict | None = None


def load_queries() -> dict:
    """The sampled queries, parsed once per locust process (not once per user)."""
    global _queries
    if _queries is not None:
        return _queries
    path = os.environ.get("ONSHI_BENCH_QUERIES")
    if path:
        with open(path) as f:
            queries = json.load(f)
        where = path
    else:
        import common

        store = Path(os.environ.get("ONSHI_DATA") or ROOT / "var" / "demo")
        if not (store / "data.mdb").exists():
            raise LocustError(
                f"no store at {store} to sample queries from: set ONSHI_DATA to the store the "
                "server serves, or ONSHI_BENCH_QUERIES to a queries JSON (bench/README.md)"
            )
        queries = common.sample_queries(store, cache=False)
        where = str(store)
    if not queries.get("cards") or not queries.get("numbers"):
        raise LocustError(f"{where}: no card serials or numbers sampled from the store")
    _queries = queries
    return queries


# ONSHI_BENCH_CHANNELS=N: users of a locust process share N connections round
# robin (0: one connection per user). Every grpc channel under gevent costs the
# client a poller of its own; see bench/README.md.
CHANNELS = int(os.environ.get("ONSHI_BENCH_CHANNELS", "0"))
_channels: dict[str, list] = {}
_next_channel = 0


def _shared_channel(address: str, identity: str):
    global _next_channel
    pool = _channels.setdefault(f"{identity}@{address}", [])
    if len(pool) < CHANNELS:
        # Distinct channel args keep grpc from sharing one subchannel (one TCP
        # connection) between them, so SO_REUSEPORT can spread them over workers.
        pool.append(open_channel(address, identity, options=(("onshi.bench.channel", len(pool)),)))
    _next_channel += 1
    return pool[_next_channel % len(pool)]


class _TimedUnaryUnary:
    """A unary method of a TimingChannel: the same timing and event as
    LocustInterceptor, around a multicallable made once per method."""

    def __init__(self, inner, name: str, environment):
        self._inner = inner
        self._name = name
        self._env = environment

    def __call__(self, request, timeout=None, metadata=None, **kwargs):
        started = time.perf_counter()
        try:
            response = self._inner(request, timeout=timeout, metadata=metadata, **kwargs)
        except grpc.RpcError as exc:
            fire(self._env, self._name, started, exception=exc)
            raise
        fire(self._env, self._name, started, length=response.ByteSize())
        return response


class TimingChannel(grpc.Channel):
    """The interceptor applied where stubs get their methods, once per method.

    grpc.intercept_channel builds a fresh multicallable from the underlying
    channel on every call; profiled under locust (py-spy), that alone was ~20%
    of the client's CPU per check — CPU that, on 2 shared cores, comes out of
    the server's share and adds to every latency measured. Same events, same
    timing points (send -> parsed answer); streams pass through untouched."""

    def __init__(self, channel: grpc.Channel, environment):
        self._channel = channel
        self._env = environment

    def unary_unary(self, method, request_serializer=None, response_deserializer=None, *args, **kwargs):
        inner = self._channel.unary_unary(method, request_serializer, response_deserializer, *args, **kwargs)
        return _TimedUnaryUnary(inner, method.rsplit("/", 1)[-1], self._env)

    def unary_stream(self, *args, **kwargs):
        return self._channel.unary_stream(*args, **kwargs)

    def stream_unary(self, *args, **kwargs):
        return self._channel.stream_unary(*args, **kwargs)

    def stream_stream(self, *args, **kwargs):
        return self._channel.stream_stream(*args, **kwargs)

    def subscribe(self, callback, try_to_connect=False):
        self._channel.subscribe(callback, try_to_connect)

    def unsubscribe(self, callback):
        self._channel.unsubscribe(callback)

    def close(self):
        self._channel.close()


# Default: grpc.intercept_channel + LocustInterceptor, the form of locust's
# example. ONSHI_BENCH_INTERCEPT=cached uses TimingChannel (same events, less
# client CPU per call) to see how much of a latency is the client's.
INTERCEPT = os.environ.get("ONSHI_BENCH_INTERCEPT", "grpc")


class GrpcUser(User):
    """One caller with its own channel (its own connection, as a real terminal
    has, so SO_REUSEPORT spreads callers over the server's workers)."""

    abstract = True
    stub_classes: tuple = ()
    target: str | None = None  # None: --host
    identity = "operator"  # which client certificate of the PKI (onshi.client.connection.find_identity)

    def __init__(self, environment):
        super().__init__(environment)
        address = self.target or self.host
        if not address:
            raise LocustError("no server address: pass --host HOST:PORT")
        self.address = address.removeprefix("grpc://").removeprefix("http://").removeprefix("https://")
        channel = (
            _shared_channel(self.address, self.identity) if CHANNELS else open_channel(self.address, self.identity)
        )
        if INTERCEPT == "grpc":
            self.channel = grpc.intercept_channel(channel, LocustInterceptor(environment))
        else:
            self.channel = TimingChannel(channel, environment)
        self._raw_channel = channel
        self._own_channel = not CHANNELS
        self.stubs = [cls(self.channel) for cls in self.stub_classes]

    @property
    def secure(self) -> bool:
        return pki_dir() is not None

    def connect(self, timeout: float = 30.0) -> None:
        """Open the connection before the first timed call, as a terminal that
        has been switched on all morning has. A server that cannot be reached
        is a failed "connect" request and the user stops."""
        started = time.perf_counter()
        try:
            grpc.channel_ready_future(self._raw_channel).result(timeout=timeout)
        except grpc.FutureTimeoutError:
            fire(
                self.environment,
                "connect",
                started,
                exception=ConnectionError(
                    f"no connection to {self.address} in {timeout:.0f} s ({'mTLS' if self.secure else 'plaintext'})"
                ),
            )
            raise StopUser() from None

    def on_stop(self):
        if self._own_channel:
            self._raw_channel.close()


class BatchStream:
    """One long-lived bidi stream used batch by batch: `round_trip(request)`
    sends one request message and waits for its one response message, so each
    batch is timed from send to answer (the service answers in order)."""

    _END = object()

    def __init__(self, method, metadata=(), timeout: float = 60.0):
        from gevent.queue import Queue

        self._queue = Queue()
        self._timeout = timeout
        self._responses = method(self._requests(), metadata=tuple(metadata))

    def _requests(self):
        while True:
            item = self._queue.get()
            if item is self._END:
                return
            yield item

    def round_trip(self, request):
        import gevent

        self._queue.put(request)
        with gevent.Timeout(self._timeout, TimeoutError(f"no answer in {self._timeout:.0f} s")):
            return next(self._responses)

    def close(self) -> None:
        self._queue.put(self._END)
        try:
            for _ in self._responses:  # let the server finish the stream cleanly
                pass
        except grpc.RpcError:
            pass
        except ValueError:
            # A round trip killed mid-wait (locust stopping the user) left its
            # receive pending; grpc refuses a second one: end the call instead.
            self._responses.cancel()
