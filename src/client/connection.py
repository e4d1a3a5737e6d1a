"""The client side of every `onshi` command that calls a server (check,
health, ingest-file, claims verify): one way to name the server, the caller's
certificate and the deadline (`add_arguments`), to open the channel
(`connect`), to notice a server that stops answering a stream (`AnswerWatch`)
and to say in one line why a call got no answer (`no_answer`).

A caller is a client certificate of an `onshi pki init` directory (`--pki`,
$ONSHI_PKI) chosen with `--as`: a role (`operator`, `review`), a role with its
codes (`insurer:06139992`, `facility:1310000001`) or a file stem of DIR/onshi
(`insurer-a`); or explicit files (`--tls-ca/--tls-cert/--tls-key`). Without
either the channel is plaintext, which only a server started without trust
options (or with `--insecure-dev`) accepts, and only on loopback.

Also the small EligibilityService client `onshi check` and the tests use.
"""

from __future__ import annotations

import datetime as dt
import glob
import os
import socket
import threading
import time
from dataclasses import dataclass
from typing import TypeAlias

import grpc
from google.type import date_pb2

from ..core import dates
from ..v1 import eligibility_pb2, eligibility_pb2_grpc

DEFAULT_TARGET = "127.0.0.1:50051"
DEFAULT_TIMEOUT = 10.0  # seconds to connect, and for any answer the server owes
DateLike: TypeAlias = dt.date | date_pb2.Date | None

# Exit codes shared by the client commands: 1 the server gave no answer
# (unreachable, refused the connection, stopped answering, failed), 2 the
# request or the caller was refused (bad input, role, certificate files).
EXIT_NO_ANSWER = 1
EXIT_REFUSED = 2
_REFUSED = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.OUT_OF_RANGE,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS,
}


class ConnectError(Exception):
    """The arguments name no usable caller (missing certificate, plaintext off loopback)."""


# --- arguments --------------------------------------------------------------------------


def add_arguments(
    parser,
    *,
    target_default: str = DEFAULT_TARGET,
    target_env: str | None = "ONSHI_TARGET",
    identity_help: str,
    target: bool = True,
) -> None:
    """--target, --pki, --as, --tls-ca/--tls-cert/--tls-key and --timeout."""
    env = os.environ.get
    g = parser.add_argument_group("server and caller (mTLS)")
    if target:
        g.add_argument(
            "--target",
            default=env(target_env, target_default) if target_env else target_default,
            metavar="HOST:PORT",
            help=f"server address (default {target_default}" + (f", ${target_env})" if target_env else ")"),
        )
    g.add_argument(
        "--pki",
        default=env("ONSHI_PKI"),
        metavar="DIR",
        help="an `onshi pki init` directory: call over mTLS with one of its client certificates "
        "(default $ONSHI_PKI; without it and without --tls-cert: plaintext, loopback only)",
    )
    g.add_argument(
        "--as",
        dest="identity",
        metavar="CALLER",
        help="which client certificate of --pki: a role (operator, review), a role and its codes "
        "(insurer:NUMBER[,NUMBER], facility:CODE) or a file stem of DIR/onshi; " + identity_help,
    )
    g.add_argument("--tls-ca", default=env("ONSHI_TLS_CA"), metavar="PEM", help="CA of the server certificate")
    g.add_argument(
        "--tls-cert", default=env("ONSHI_TLS_CERT"), metavar="PEM", help="client certificate (overrides --pki/--as)"
    )
    g.add_argument("--tls-key", default=env("ONSHI_TLS_KEY"), metavar="PEM", help="its private key")
    g.add_argument(
        "--timeout",
        type=_seconds,
        default=DEFAULT_TIMEOUT,
        metavar="S",
        help=f"seconds to connect and for each answer (default {DEFAULT_TIMEOUT:g})",
    )


def _seconds(text: str) -> float:
    import argparse

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < value <= 86400:
        raise argparse.ArgumentTypeError("must be more than 0 and at most 86400")
    return value


# --- callers ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Caller:
    """Who the channel speaks as. `files` is None for plaintext."""

    label: str
    role: str | None = None
    codes: tuple[str, ...] = ()
    files: tuple[str, str, str] | None = None  # (ca, cert, key)


def parse_identity(text: str) -> tuple[str, tuple[str, ...]]:
    """'insurer:06139992,01130012' -> ('insurer', ('06139992', '01130012'))."""
    role, _, codes = text.partition(":")
    return role.strip(), tuple(c.strip() for c in codes.split(",") if c.strip())


def find_identity(pki_dir: str, wanted: str) -> Caller:
    """The client certificate of an `onshi pki init` directory that `wanted` names."""
    from cryptography import x509

    from ..core import pki
    from ..core.callers import ROLES

    base = os.path.join(pki_dir, "onshi")
    ca = os.path.join(base, "ca.pem")
    if not os.path.isfile(ca):
        raise ConnectError(f"{pki_dir} is not an `onshi pki init` directory (no onshi/ca.pem)")
    stem = os.path.join(base, wanted)
    if os.sep not in wanted and os.path.isfile(stem + ".pem") and os.path.isfile(stem + ".key.pem"):
        return Caller(wanted, files=(ca, stem + ".pem", stem + ".key.pem"))
    role, codes = parse_identity(wanted)
    if role not in ROLES:
        raise ConnectError(
            f"--as {wanted}: not a certificate in {base} nor one of {', '.join(ROLES)} (optionally role:CODE[,CODE])"
        )
    found, have = [], []
    for path in sorted(glob.glob(os.path.join(base, "*.pem"))):
        name = os.path.basename(path)[:-4]
        if name.endswith(".key") or name in ("ca", "server") or not os.path.isfile(path[:-4] + ".key.pem"):
            continue
        try:
            with open(path, "rb") as f:
                roles, held = pki.role_and_codes(x509.load_pem_x509_certificate(f.read()))
        except (OSError, ValueError):
            continue
        if len(roles) != 1:
            continue
        label = f"{next(iter(roles))}:{','.join(sorted(held))}" if held else next(iter(roles))
        have.append(label)
        if roles == {role} and set(codes) <= held:
            found.append((len(held), name, label, held))
    if not found:
        raise ConnectError(f"no client certificate for {wanted} in {base} (there: {', '.join(have) or 'none'})")
    _, name, label, held = min(found)  # the narrowest certificate that covers the codes
    return Caller(
        f"{name} ({label})",
        role,
        tuple(sorted(held)),
        (ca, os.path.join(base, name + ".pem"), os.path.join(base, name + ".key.pem")),
    )


def caller_of(args, default_identity: str) -> Caller:
    """The caller the parsed arguments name (`default_identity` when --as is not given)."""
    wanted = args.identity or default_identity
    if args.tls_cert or args.tls_key:
        if not (args.tls_cert and args.tls_key):
            raise ConnectError("--tls-cert and --tls-key go together")
        ca = args.tls_ca or (os.path.join(args.pki, "onshi", "ca.pem") if args.pki else None)
        if not ca:
            raise ConnectError("--tls-cert needs --tls-ca (or --pki DIR for its onshi/ca.pem)")
        return Caller(os.path.basename(args.tls_cert), files=(ca, args.tls_cert, args.tls_key))
    if args.pki:
        caller = find_identity(args.pki, wanted)
        if args.tls_ca and caller.files is not None:  # find_identity gives files
            caller = Caller(caller.label, caller.role, caller.codes, (args.tls_ca, *caller.files[1:]))
        return caller
    role, codes = parse_identity(wanted) if args.identity else (None, ())
    return Caller("plaintext", role, codes)


# --- the channel ------------------------------------------------------------------------------


def is_loopback_target(target: str) -> bool:
    from ..core.callers import is_loopback

    host = target.rpartition(":")[0] if ":" in target else target
    return is_loopback(host.removeprefix("ipv4:").removeprefix("ipv6:").strip("[]"))


@dataclass
class Connection:
    target: str
    channel: grpc.Channel
    caller: Caller
    timeout: float
    metadata: tuple[tuple[str, str], ...] = ()

    @property
    def secure(self) -> bool:
        return self.caller.files is not None

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.channel.close()

    def probe(self, *, wait: bool = False) -> int:
        """The server's grpc.health.v1 status; raises grpc.RpcError without an answer
        within the timeout. wait=True waits for the server to come up (a restart)."""
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        answer = health_pb2_grpc.HealthStub(self.channel).Check(
            health_pb2.HealthCheckRequest(), timeout=self.timeout, wait_for_ready=wait, metadata=self.metadata
        )
        return answer.status


def read_credentials(files: tuple[str, str, str]) -> grpc.ChannelCredentials:
    _ca, _cert, _key = files
    blobs = []
    for path in files:
        try:
            with open(path, "rb") as f:
                blobs.append(f.read(1 << 20))
        except OSError as exc:
            raise ConnectError(f"cannot read {path}: {exc.strerror or exc}") from None
    return grpc.ssl_channel_credentials(root_certificates=blobs[0], private_key=blobs[2], certificate_chain=blobs[1])


def open_channel(target: str, credentials: grpc.ChannelCredentials | None, options=()) -> grpc.Channel:
    return (
        grpc.secure_channel(target, credentials, options=options)
        if credentials
        else grpc.insecure_channel(target, options=options)
    )


def connect(args, default_identity: str, *, target: str | None = None, options=()) -> Connection:
    """A channel to --target as the caller the arguments name; raises ConnectError."""
    from ..core import callers

    target = target or args.target
    caller = caller_of(args, default_identity)
    if caller.files is None:
        if not is_loopback_target(target):
            raise ConnectError(
                f"plaintext only to loopback, not {target}: give --pki DIR (or ONSHI_PKI) "
                "or --tls-ca/--tls-cert/--tls-key"
            )
        metadata: tuple = ()
        if caller.role:  # an --insecure-dev server takes the role the caller declares
            metadata = ((callers.ROLE_KEY, caller.role),)
            key = {callers.FACILITY: callers.FACILITY_KEY, callers.INSURER: callers.INSURER_KEY}.get(caller.role)
            if key and caller.codes:
                metadata += ((key, ",".join(caller.codes)),)
        return Connection(target, open_channel(target, None, options), caller, args.timeout, metadata)
    return Connection(target, open_channel(target, read_credentials(caller.files), options), caller, args.timeout)


# --- why there was no answer ---------------------------------------------------------------------


def accepts_tcp(target: str, timeout: float = 1.0) -> bool:
    host, _, port = target.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            return True
    except (OSError, ValueError):
        return False


def exit_code_of(exc: grpc.RpcError) -> int:
    return EXIT_REFUSED if exc.code() in _REFUSED else EXIT_NO_ANSWER


def no_answer(exc: grpc.RpcError, target: str, *, secure: bool, timeout: float) -> str:
    """One line saying why a call failed, for a person at a terminal."""
    code = exc.code()
    details = " ".join((exc.details() or "").split())
    if code == grpc.StatusCode.UNAVAILABLE and "failed to connect" in details:
        if not accepts_tcp(target):
            return f"cannot reach {target}: {details.rsplit(': ', 1)[-1]}"
        if secure:
            return (
                f"{target} closed the connection while setting up TLS: a plaintext server, a server "
                "of another CA, or one that refuses this client certificate"
            )
        return f"{target} closed the connection: it may require mTLS (--pki DIR or ONSHI_PKI)"
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return f"no answer from {target} within {timeout:g} s"
    return f"{code.name}: {details}"


class AnswerWatch:
    """Cancels a streaming call when the server owes answers and sends none for
    `seconds` (a server that hangs, a network that drops packets silently): a
    stream has no overall deadline, since a large file may take hours.
    `sent(n)` as requests go out (also before `start(call)`), `answered(n)` as
    their answers arrive; `expired` says the watch ended the call."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.expired = False
        self._call: grpc.Call | None = None  # set by start(), before the watch runs
        self._owed = 0
        self._since = time.monotonic()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="onshi-answer-watch", daemon=True)

    def start(self, call) -> None:
        self._call = call
        self._thread.start()

    def sent(self, n: int = 1) -> None:
        with self._lock:
            if not self._owed:
                self._since = time.monotonic()
            self._owed += n

    def answered(self, n: int = 1) -> None:
        with self._lock:
            self._owed = max(0, self._owed - n)
            self._since = time.monotonic()

    def _run(self) -> None:
        while not self._stop.wait(min(0.25, self.seconds / 4)):
            with self._lock:
                late = self._owed and time.monotonic() - self._since > self.seconds
            if late and self._call is not None:
                self.expired = True
                self._call.cancel()
                return

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()


# --- EligibilityService ------------------------------------------------------------------------


def _date(d: DateLike) -> date_pb2.Date | None:
    # A google.type.Date passes as is, so a caller can send what a user typed
    # (even 2023-02-29) and let the server name the field at fault.
    return d if d is None or isinstance(d, date_pb2.Date) else dates.to_proto(d)


class EligibilityClient:
    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        credentials: grpc.ChannelCredentials | None = None,
        timeout: float = 5.0,
        metadata: tuple = (),
        channel: grpc.Channel | None = None,
    ):
        self.channel = channel or open_channel(target, credentials)
        self.stub = eligibility_pb2_grpc.EligibilityServiceStub(self.channel)
        self.timeout = timeout
        self.metadata = metadata

    @classmethod
    def over(cls, connection: Connection) -> EligibilityClient:
        return cls(
            connection.target, channel=connection.channel, timeout=connection.timeout, metadata=connection.metadata
        )

    def __enter__(self) -> EligibilityClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.channel.close()

    def check_by_card(self, card_serial: str, as_of: DateLike = None) -> eligibility_pb2.CheckResponse:
        request = eligibility_pb2.CheckByCardRequest(card_serial=card_serial, as_of=_date(as_of))
        return self.stub.CheckByCard(request, timeout=self.timeout, metadata=self.metadata)

    def check_by_number(
        self,
        insurer_number: str,
        symbol: str,
        number: str,
        branch: str,
        birth_date: DateLike,
        as_of: DateLike = None,
    ) -> eligibility_pb2.CheckResponse:
        request = eligibility_pb2.CheckByNumberRequest(
            insurer_number=insurer_number,
            symbol=symbol,
            number=number,
            branch=branch,
            birth_date=_date(birth_date),
            as_of=_date(as_of),
        )
        return self.stub.CheckByNumber(request, timeout=self.timeout, metadata=self.metadata)
