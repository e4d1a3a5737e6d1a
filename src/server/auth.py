"""mTLS for every caller: roles from client certificates (DOMAIN.md §8).

Every caller presents a client certificate issued by the configured onshi CA
(`onshi pki init` makes a test one). The TLS handshake itself rejects a missing
certificate or one from another CA, because the server requires and verifies
client certificates (grpc.ssl_server_credentials(require_client_auth=True)):
such a client never reaches a handler and sees **UNAVAILABLE** (handshake
failed), the only thing gRPC can tell it. Everything after the handshake is
ours and answers with a real status:

    a certificate without an onshi role            -> UNAUTHENTICATED
    a revoked certificate (--caller-crl)           -> UNAUTHENTICATED
    a role not allowed for the method              -> PERMISSION_DENIED
    someone else's data (facility / insurer codes) -> PERMISSION_DENIED

Certificates carry the role and the codes as SAN URIs (`urn:onshi:role:<role>`,
`urn:onshi:facility:<code>`, `urn:onshi:insurer:<number>`; the subject OU names
the role too, for people reading the certificate), see onshi.core.pki and
docs/TRUST.md. The SAN URIs alone decide who the caller is: they are what the
CA signed and what gRPC hands each call cheaply (peer_identities), so callers
are cached by them. gRPC core negotiates TLS 1.3 when both ends support it (all
current grpcio builds); TLS 1.2 remains possible for old clients.

`--insecure-dev` (local demos only) serves without TLS on loopback; the caller
then *declares* its role and codes in metadata (x-onshi-role, x-onshi-facility,
x-onshi-insurer; no role declared = every role check passes), which under mTLS are only
allowed to narrow the certificate.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import grpc
from cryptography import x509

from ..core import pki
from ..core.callers import FACILITY, FACILITY_KEY, INSURER, INSURER_KEY, OPERATOR, REVIEW, ROLE_KEY, ROLES, is_loopback
from ..core.pki import CERT_URN

# Which roles may call what. Unknown onshi methods are denied (deny by default);
# health and reflection are open to any authenticated caller.
POLICY: dict[str, frozenset[str]] = {
    # A bare card_serial is allowed only to the internal roles; eligibility_service's
    # card_proof hook enforces that facilities present a card proof.
    "/onshi.v1.EligibilityService/CheckByCard": frozenset({FACILITY, REVIEW, OPERATOR}),
    "/onshi.v1.EligibilityService/CheckByNumber": frozenset({FACILITY, REVIEW, OPERATOR}),
    "/onshi.v1.ClaimService/VerifyClaims": frozenset({FACILITY, REVIEW}),  # facility: own code only
    "/onshi.v1.ClaimService/Apportion": frozenset({REVIEW}),
    "/onshi.v1.EnrollmentService/StreamUpdates": frozenset({INSURER}),  # own insurer numbers only
    "/onshi.v1.EnrollmentService/StreamUpdateBatches": frozenset({INSURER}),  # the same, many per message
    "/onshi.v1.EnrollmentService/PutResidents": frozenset({OPERATOR}),  # the J-LIS stand-in
    "/onshi.v1.EnrollmentService/ListQuarantine": frozenset({INSURER}),
    "/onshi.v1.EnrollmentService/ResolveQuarantine": frozenset({INSURER}),
    "/onshi.v1.EnrollmentService/ListNotices": frozenset({INSURER}),
    "/onshi.v1.EnrollmentService/AcknowledgeNotices": frozenset({INSURER}),
    # 初回紐づけ is the person's act on the government portal (its backend calls
    # as operator); a facility could otherwise link any serial it has seen to
    # anyone whose number and details it holds, or list anyone's link notices.
    "/onshi.v1.LinkService/LinkCard": frozenset({OPERATOR}),
    "/onshi.v1.LinkService/ListLinkNotices": frozenset({OPERATOR}),
    "/onshi.v1.AuditService/ListMyAccess": frozenset({FACILITY}),  # plus the person's card proof
    "/onshi.v1.RelayService/FindInsurer": frozenset({INSURER}),
    "/onshi.v1.TrustService/SetSystemFailureMode": frozenset({OPERATOR}),
    "/onshi.v1.TrustService/GetSystemFailureMode": frozenset(ROLES),
    "/onshi.v1.TrustService/LookupByBasicInfo": frozenset({FACILITY}),
    "/onshi.v1.TrustService/PutRevocationList": frozenset({OPERATOR}),
}
OPEN_PREFIXES = ("/grpc.health.v1.", "/grpc.reflection.")
DEV = "dev"  # --insecure-dev caller that declared no role


@dataclass(frozen=True, slots=True)
class Caller:
    role: str
    codes: frozenset[str]  # facility codes or insurer numbers, per role
    subject: str
    via_tls: bool = True

    @property
    def facility_code(self) -> str | None:
        if self.role != FACILITY or not self.codes:
            return None
        return min(self.codes)

    @property
    def label(self) -> str:
        """who, for the access log: role:code[,code]."""
        return f"{self.role}:{','.join(sorted(self.codes))}" if self.codes else self.role


_DEV_CALLER = Caller(DEV, frozenset(), "insecure-dev undeclared caller", via_tls=False)


class AuthError(Exception):
    """Raised inside handlers; the interceptor turns it into a status."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def unauthenticated(message: str) -> AuthError:
    return AuthError(grpc.StatusCode.UNAUTHENTICATED, message)


def denied(message: str) -> AuthError:
    return AuthError(grpc.StatusCode.PERMISSION_DENIED, message)


# --- certificates -> callers -------------------------------------------------


def caller_from_certificate(cert: x509.Certificate) -> Caller:
    """Role and codes from an onshi client certificate (already chain-verified by TLS)."""
    roles, codes = pki.role_and_codes(cert)
    subject = cert.subject.rfc4514_string()
    if len(roles) != 1 or next(iter(roles)) not in ROLES:
        raise unauthenticated(f"client certificate {subject} carries no onshi role")
    role = roles.pop()
    if role == FACILITY and (len(codes) != 1 or not all(len(c) == 10 and c.isdigit() for c in codes)):
        raise unauthenticated(f"facility certificate {subject} must name exactly one 10-digit facility code")
    if role == INSURER and not codes:
        raise unauthenticated(f"insurer certificate {subject} names no insurer number")
    return Caller(role, codes, subject)


class CallerRevocations:
    """Revoked caller certificates: a CRL signed by the onshi CA (`--caller-crl`,
    written by `onshi pki revoke`). A watcher thread looks at the file once a
    second and reloads it when it changed; SIGHUP reloads it at once. A list
    that does not verify is refused at start and, later, ignored with a
    warning (the previous list stays in force)."""

    POLL_SECONDS = 1.0

    def __init__(self, path: str, ca_certs: list[x509.Certificate]):
        self.path = path
        self.ca_certs = ca_certs
        self.serials: frozenset[int] = frozenset()
        self._stamp: tuple[int, int] | None = None
        self._wake = threading.Event()
        self.load(force=True, strict=True)

    def _file_stamp(self) -> tuple[int, int]:
        st = os.stat(self.path)
        return st.st_mtime_ns, st.st_size

    def load(self, force: bool = False, strict: bool = False) -> bool:
        """Read the list if it changed (or `force`); True when it was replaced."""
        try:
            stamp = self._file_stamp()
            if stamp == self._stamp and not force:
                return False
            with open(self.path, "rb") as f:
                serials = pki.crl_serials(f.read(), self.ca_certs, "the onshi CA (--client-ca)")
        except (OSError, ValueError) as exc:
            if strict:
                raise
            if self._stamp is not None:  # say it once per bad version
                print(
                    f"onshi: caller revocation list {self.path} not reloaded, the previous one stays in force: {exc}",
                    file=sys.stderr,
                    flush=True,
                )
            self._stamp = None
            return False
        self.serials, self._stamp = serials, stamp
        return True

    def check(self, cert: x509.Certificate, subject: str) -> None:
        """Raise UNAUTHENTICATED for a revoked certificate, and for one whose SANs
        do not name its own serial (callers are cached by their SANs: without
        it a revoked certificate and its renewal could not be told apart)."""
        serial = cert.serial_number
        try:
            uris = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
                x509.UniformResourceIdentifier
            )
        except x509.ExtensionNotFound:
            uris = []
        if [u for u in uris if u.startswith(CERT_URN)] != [f"{CERT_URN}{serial:x}"]:
            raise unauthenticated(
                f"client certificate {subject} does not name its serial as {CERT_URN}<hex>, "
                "so it cannot be checked for revocation: have it reissued (onshi pki)"
            )
        if serial in self.serials:
            raise unauthenticated(f"client certificate {subject} (serial {serial:x}) is revoked")

    def watch(self, on_change) -> threading.Thread:
        def run() -> None:
            while True:
                forced = self._wake.wait(self.POLL_SECONDS)
                self._wake.clear()
                if self.load(force=forced):
                    on_change()

        thread = threading.Thread(target=run, name="caller-crl", daemon=True)
        thread.start()
        return thread

    def reload_now(self) -> None:
        """Signal-safe: the watcher reloads at once (SIGHUP)."""
        self._wake.set()


class _CertCache:
    """A verified client certificate's SAN identities -> Caller (or the
    AuthError it raises). gRPC gives a call its peer's identities for ~1 us,
    the whole auth context (PEM included) for ~8 us, and parsing the
    certificate costs ~100 us: the certificate is read once per identity set,
    and checked against the caller revocation list then (each certificate
    names its serial among its SANs, so the identity set is the certificate's
    own); a new list empties the cache. Bounded: cleared when full (client
    certificates are few)."""

    def __init__(self, limit: int = 10_000):
        self.limit = limit
        self.items: dict[tuple[bytes, ...], Caller | AuthError] = {}
        self.lock = threading.Lock()
        self.revocations: CallerRevocations | None = None
        self.generation = 0

    def reset(self) -> None:
        with self.lock:
            self.items = {}
            self.generation += 1

    def get(self, context, identities: tuple[bytes, ...]) -> Caller:
        hit = self.items.get(identities)
        if hit is None:
            generation = self.generation
            pems = context.auth_context().get("x509_pem_cert")
            try:
                if not pems:
                    raise unauthenticated("no client certificate (mTLS required)")
                cert = x509.load_pem_x509_certificate(pems[0])
                hit = caller_from_certificate(cert)
                if self.revocations is not None:
                    self.revocations.check(cert, hit.subject)
            except AuthError as exc:
                hit = exc
            except ValueError:
                hit = unauthenticated("client certificate does not parse")
            with self.lock:
                if generation == self.generation:  # not decided on a list replaced meanwhile
                    if len(self.items) >= self.limit:
                        self.items.clear()
                    self.items[identities] = hit
        if isinstance(hit, AuthError):
            raise hit
        return hit


_certs = _CertCache()
_insecure_dev = False


def configure_caller_revocations(crl_path: str, client_ca_path: str) -> CallerRevocations:
    """Check every caller certificate against this CRL from now on (watched)."""
    with open(client_ca_path, "rb") as f:
        cas = x509.load_pem_x509_certificates(f.read())
    revocations = CallerRevocations(crl_path, cas)
    _certs.revocations = revocations
    _certs.reset()
    revocations.watch(_certs.reset)
    return revocations


def reload_caller_revocations() -> None:
    """SIGHUP: reload the caller revocation list now (nothing if none configured)."""
    if _certs.revocations is not None:
        _certs.revocations.reload_now()


def enable_insecure_dev() -> None:
    """Trust metadata-declared roles on plaintext connections (demos only)."""
    global _insecure_dev
    _insecure_dev = True


def insecure_dev_enabled() -> bool:
    return _insecure_dev


def _metadata(context) -> dict[str, str]:
    return {k: v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}


def _split(value: str | None) -> set[str]:
    return {c.strip() for c in (value or "").split(",") if c.strip()}


def caller_of(context) -> Caller:
    """The authenticated caller of this RPC (raises AuthError UNAUTHENTICATED).
    Taken once per call: by the role interceptor, which hands it to handlers
    marked `takes_caller`, or by a handler at its start, which passes it on."""
    identities = context.peer_identities()  # None without a verified client certificate
    if identities:
        return _certs.get(context, tuple(identities))
    if _insecure_dev:
        # Demos and benchmarks of the bare service: an undeclared caller passes
        # every role check (the services' own metadata rules still apply);
        # declaring a role shows that role's rules. Loopback only.
        md = _metadata(context)
        role = md.get(ROLE_KEY, "") or DEV
        if role == DEV:
            return _DEV_CALLER
        if role not in ROLES:
            raise unauthenticated(f"--insecure-dev: {ROLE_KEY} must be one of {', '.join(ROLES)}")
        codes = (
            _split(md.get(FACILITY_KEY))
            if role == FACILITY
            else _split(md.get(INSURER_KEY))
            if role == INSURER
            else set()
        )
        return Caller(role, frozenset(codes), f"insecure-dev {role}", via_tls=False)
    raise unauthenticated("no client certificate (mTLS required)")


def caller_if_any(context) -> Caller | None:
    """The caller, or None on a plaintext server without --insecure-dev (no
    trust options), where services keep their metadata rules. A certificate
    that makes no caller raises AuthError, as in caller_of."""
    if _insecure_dev or context.peer_identities():
        return caller_of(context)
    return None


def caller_facility(caller: Caller, context) -> str:
    """The facility code of a facility caller; PERMISSION_DENIED for other roles,
    and for a declared x-onshi-facility that is not the certificate's."""
    code = caller.facility_code
    if code is None:
        raise denied(f"{caller.label} is not a facility")
    declared = _split(_metadata(context).get(FACILITY_KEY))
    if declared and declared != {code}:
        raise denied(f"{FACILITY_KEY} {','.join(sorted(declared))} is not this certificate's facility {code}")
    return code


def caller_insurers(caller: Caller, context) -> frozenset[str]:
    """The insurer numbers this caller may act for: the certificate's, narrowed to
    the declared x-onshi-insurer if present; declaring another one is PERMISSION_DENIED."""
    if caller.role != INSURER:
        raise denied(f"{caller.label} is not an insurer")
    declared = _split(_metadata(context).get(INSURER_KEY))
    if declared:
        foreign = declared - caller.codes
        if foreign:
            raise denied(f"insurer number(s) {','.join(sorted(foreign))} not in this certificate")
        return frozenset(declared)
    return caller.codes


# --- the interceptor -------------------------------------------------------------


def _abort(context, exc: AuthError):
    context.abort(exc.code, exc.message)


def _allowed(context, roles: frozenset[str] | None) -> Caller:
    caller = caller_of(context)
    if roles is not None and caller.role not in roles and caller.role != DEV:
        raise denied(f"{caller.label} may not call this method (allowed: {', '.join(sorted(roles))})")
    return caller


def _guard(behavior, roles: frozenset[str] | None, response_streaming: bool = False):
    """Check the caller before the handler runs; turn AuthError raised inside
    the handler (caller_insurers & co.) into its status. A behaviour marked
    `takes_caller` receives the caller as a third argument (taken once)."""

    def check(context) -> None:
        _allowed(context, roles)

    if getattr(behavior, "experimental_non_blocking", False):
        # It answers through a callback without holding a thread (health Watch):
        # a generator here would hold one for as long as the caller watches.
        def guarded_callback(request, context, send_response_callback):
            try:
                check(context)
            except AuthError as exc:
                _abort(context, exc)
            return behavior(request, context, send_response_callback)

        # grpc reads these attributes off the behaviour function itself
        guarded_callback.experimental_non_blocking = True  # type: ignore[attr-defined]
        guarded_callback.experimental_thread_pool = getattr(  # type: ignore[attr-defined]
            behavior, "experimental_thread_pool", None
        )
        return guarded_callback

    if response_streaming:
        # A generator, so the check and any abort happen while gRPC iterates
        # the response, as in the handler itself.
        def guarded_stream(request, context):
            try:
                check(context)
                yield from behavior(request, context)
            except AuthError as exc:
                _abort(context, exc)

        return guarded_stream

    if getattr(behavior, "takes_caller", False):

        def guarded_with_caller(request, context):
            try:
                return behavior(request, context, _allowed(context, roles))
            except AuthError as exc:
                _abort(context, exc)

        return guarded_with_caller

    def guarded(request, context):
        try:
            check(context)
            return behavior(request, context)
        except AuthError as exc:
            _abort(context, exc)

    return guarded


class RoleInterceptor(grpc.ServerInterceptor):
    """Enforces POLICY on the threaded server (gRPC Python gives interceptors no
    context, so the check wraps the method handler's behaviour)."""

    def __init__(self, policy: dict[str, frozenset[str]] | None = None):
        self.policy = dict(POLICY if policy is None else policy)
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        cached = self._wrapped.get(method)
        if cached is None or cached[0] is not handler:  # holding the handler keeps the check exact
            cached = (handler, self._wrap(method, handler))
            self._wrapped[method] = cached
        return cached[1]

    def _wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        if method.startswith(OPEN_PREFIXES):
            roles = None
        else:
            roles = self.policy.get(method, frozenset())  # unknown method: nobody
        kind = (
            "unary_unary"
            if handler.unary_unary
            else "unary_stream"
            if handler.unary_stream
            else "stream_unary"
            if handler.stream_unary
            else "stream_stream"
        )
        make = getattr(grpc, f"{kind}_rpc_method_handler")
        return make(
            _guard(getattr(handler, kind), roles, kind.endswith("_stream")),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


def _aio_guard(behavior, roles: frozenset[str] | None, streaming: bool = False):
    """The grpc.aio variant of _guard: coroutine, async-generator or sync behaviours."""
    import inspect

    async def check(context: grpc.aio.ServicerContext[Any, Any]) -> Caller:
        try:
            return _allowed(context, roles)
        except AuthError as exc:
            await context.abort(exc.code, exc.message)

    if inspect.isasyncgenfunction(behavior):

        async def guarded_gen(request, context):
            await check(context)
            try:
                async for item in behavior(request, context):
                    yield item
            except AuthError as exc:
                await context.abort(exc.code, exc.message)

        return guarded_gen

    if inspect.iscoroutinefunction(behavior):
        takes_caller = getattr(behavior, "takes_caller", False)

        async def guarded(request, context):
            caller = await check(context)
            try:
                if takes_caller:
                    return await behavior(request, context, caller)
                return await behavior(request, context)
            except AuthError as exc:
                await context.abort(exc.code, exc.message)

        return guarded

    return _guard(behavior, roles, streaming)  # a sync handler on the migration thread pool


class AioRoleInterceptor(grpc.aio.ServerInterceptor):
    """POLICY on a grpc.aio server (`onshi ingest-serve`)."""

    def __init__(self, policy: dict[str, frozenset[str]] | None = None):
        self.policy = dict(POLICY if policy is None else policy)

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        roles = None if method.startswith(OPEN_PREFIXES) else self.policy.get(method, frozenset())
        kind = (
            "unary_unary"
            if handler.unary_unary
            else "unary_stream"
            if handler.unary_stream
            else "stream_unary"
            if handler.stream_unary
            else "stream_stream"
        )
        make = getattr(grpc, f"{kind}_rpc_method_handler")
        return make(
            _aio_guard(getattr(handler, kind), roles, kind.endswith("_stream")),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


# --- credentials -------------------------------------------------------------


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def server_credentials(cert: str, key: str, client_ca: str) -> grpc.ServerCredentials:
    """mTLS: present `cert`, require and verify a client certificate from `client_ca`."""
    return grpc.ssl_server_credentials(
        [(_read(key), _read(cert))], root_certificates=_read(client_ca), require_client_auth=True
    )


def channel_credentials(ca: str, cert: str | None = None, key: str | None = None) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=_read(ca),
        private_key=_read(key) if key else None,
        certificate_chain=_read(cert) if cert else None,
    )


def pki_paths(pki_dir: str, stem: str) -> tuple[str, str, str]:
    """(ca, cert, key) of an `onshi pki init` client or server identity."""
    base = os.path.join(pki_dir, "onshi")
    return os.path.join(base, "ca.pem"), os.path.join(base, stem + ".pem"), os.path.join(base, stem + ".key.pem")


def check_insecure_bind(host: str) -> None:
    """--insecure-dev binds loopback only, and says so loudly."""
    if not is_loopback(host):
        raise SystemExit(f"onshi: --insecure-dev serves only on loopback (127.0.0.1 / ::1), not {host}")
    banner = "!" * 72
    print(
        f"{banner}\n!! INSECURE DEV MODE: no TLS, no client certificates; callers declare their\n"
        f"!! role in metadata ({ROLE_KEY}; none = no role checks). Local demos only.\n"
        f"!! NEVER use with real data.\n{banner}",
        file=sys.stderr,
        flush=True,
    )


def add_arguments(parser) -> None:
    """The TLS options shared by `onshi serve` and `onshi ingest-serve`."""
    g = parser.add_argument_group("trust (mTLS)")
    g.add_argument("--tls-cert", help="server certificate (PEM)")
    g.add_argument("--tls-key", help="server private key (PEM)")
    g.add_argument("--client-ca", help="CA that issues caller certificates (PEM)")
    g.add_argument("--pki", help="an `onshi pki init` directory: fills the three above")
    g.add_argument(
        "--caller-crl",
        help="revoked caller certificates: a CRL signed by the --client-ca (default with --pki: "
        f"PKI/{pki.CALLER_CRL} if present); reloaded when it changes and on SIGHUP",
    )
    g.add_argument(
        "--insecure-dev", action="store_true", help="no TLS, roles declared in metadata; loopback only; demos only"
    )


def credentials_from_args(args, host: str) -> grpc.ServerCredentials | None:
    """Server credentials from parsed arguments; None (after the warning) in insecure-dev."""
    if getattr(args, "insecure_dev", False):
        check_insecure_bind(host)
        enable_insecure_dev()
        return None
    cert, key, ca = args.tls_cert, args.tls_key, args.client_ca
    if args.pki:
        ca_default, cert_default, key_default = pki_paths(args.pki, "server")
        cert, key, ca = cert or cert_default, key or key_default, ca or ca_default
    if not (cert and key and ca):
        raise SystemExit(
            "onshi: mTLS needs --tls-cert, --tls-key and --client-ca (or --pki DIR); "
            "--insecure-dev for a loopback-only demo"
        )
    crl = caller_crl_path(args)
    if crl:
        try:
            configure_caller_revocations(crl, ca)
        except (OSError, ValueError) as exc:
            raise SystemExit(f"onshi: caller revocation list {crl}: {exc}") from None
    return server_credentials(cert, key, ca)


def caller_crl_path(args) -> str | None:
    """--caller-crl, else the --pki directory's list if it has one."""
    crl = getattr(args, "caller_crl", None)
    pki_dir = getattr(args, "pki", None)
    if not crl and pki_dir and os.path.exists(os.path.join(pki_dir, pki.CALLER_CRL)):
        crl = os.path.join(pki_dir, pki.CALLER_CRL)
    return crl


def check_caller_crl(args) -> None:
    """Before fork: a caller revocation list that does not load stops the
    server with one line (each worker loads its own copy later)."""
    crl = caller_crl_path(args)
    if not crl:
        return
    ca = args.client_ca or pki_paths(args.pki, "server")[0]  # trust_options asked for one or the other
    try:
        with open(ca, "rb") as f:
            CallerRevocations(crl, x509.load_pem_x509_certificates(f.read()))
    except ValueError as exc:  # a path that cannot be read: the CLI's one line (exit 2)
        print(f"onshi: caller revocation list {crl}: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


def interceptors(asyncio: bool = False) -> list:
    return [AioRoleInterceptor()] if asyncio else [RoleInterceptor()]


def codes(values: Iterable[str]) -> str:
    return ",".join(sorted(values))
