"""The terminal's connection to the eligibility service: mTLS with the
facility's client certificate (DOMAIN.md §8: real terminals use client
certificates over a closed network), and the mapping of every gRPC failure to
an Outcome the reception desk can act on.

The only card data that leaves the terminal is the certificate, the challenge
and the card's signature; the PIN is not a parameter of anything here.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass

import grpc
from cryptography import x509

from ..client.connection import accepts_tcp
from ..client.statuses import error_reason
from ..core import dates
from ..v1 import eligibility_pb2, eligibility_pb2_grpc
from .screen import Outcome, Result

DEFAULT_SERVER = "127.0.0.1:50051"
FACILITY_URN = "urn:onshi:facility:"
# Metadata a caller declares when the server runs --insecure-dev (onshi.server.auth).
ROLE_KEY, FACILITY_KEY = "x-onshi-role", "x-onshi-facility"


class ConfigError(ValueError):
    pass


def facility_code_of(cert_pem: bytes) -> str | None:
    """The facility code a client certificate acts for (SAN urn:onshi:facility:<code>)."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    codes = [
        u[len(FACILITY_URN) :]
        for u in san.get_values_for_type(x509.UniformResourceIdentifier)
        if u.startswith(FACILITY_URN)
    ]
    return codes[0] if len(codes) == 1 else None


@dataclass
class ServerConfig:
    target: str = DEFAULT_SERVER
    ca: str | None = None  # the onshi CA that issued the server certificate
    cert: str | None = None  # this terminal's facility client certificate
    key: str | None = None
    insecure_dev: bool = False  # plaintext to a --insecure-dev server on loopback (demos)
    facility_code: str | None = None
    timeout: float = 5.0

    @classmethod
    def from_pki(cls, pki_dir: str, facility_code: str, **kw) -> ServerConfig:
        base = os.path.join(pki_dir, "onshi")
        stem = f"facility-{facility_code}"
        return cls(
            ca=os.path.join(base, "ca.pem"),
            cert=os.path.join(base, stem + ".pem"),
            key=os.path.join(base, stem + ".key.pem"),
            facility_code=facility_code,
            **kw,
        )

    def resolved_facility_code(self) -> str:
        if self.cert and not self.insecure_dev:
            with open(self.cert, "rb") as f:
                from_cert = facility_code_of(f.read())
            if from_cert and self.facility_code and from_cert != self.facility_code:
                raise ConfigError(f"--facility {self.facility_code} is not the certificate's {from_cert}")
            if from_cert:
                return from_cert
        if not self.facility_code:
            raise ConfigError("no facility code: give --facility or a facility client certificate")
        return self.facility_code


class EligibilityConnection:
    def __init__(self, config: ServerConfig):
        self.config = config
        if config.insecure_dev:
            self.channel = grpc.insecure_channel(config.target)
            self.metadata: tuple = ((ROLE_KEY, "facility"),) + (
                ((FACILITY_KEY, config.facility_code),) if config.facility_code else ()
            )
        else:
            if not (config.ca and config.cert and config.key):
                raise ConfigError(
                    "mTLS needs the CA, the facility certificate and its key "
                    "(--pki DIR --facility CODE, or --tls-ca/--tls-cert/--tls-key); "
                    "--insecure-dev only for a loopback demo server"
                )
            creds = grpc.ssl_channel_credentials(
                root_certificates=_read(config.ca),
                private_key=_read(config.key),
                certificate_chain=_read(config.cert),
            )
            self.channel = grpc.secure_channel(config.target, creds)
            self.metadata = ()
        self.stub = eligibility_pb2_grpc.EligibilityServiceStub(self.channel)

    def __enter__(self) -> EligibilityConnection:
        return self

    def __exit__(self, *exc) -> None:
        self.channel.close()

    def check_by_card(
        self,
        certificate_der: bytes,
        challenge: eligibility_pb2.CardChallenge,
        signature: bytes,
        as_of: dt.date | None,
    ) -> eligibility_pb2.CheckResponse:
        request = eligibility_pb2.CheckByCardRequest(
            card_certificate=certificate_der,
            challenge=challenge,
            card_signature=signature,
            as_of=dates.to_proto(as_of),
        )
        return self.stub.CheckByCard(request, timeout=self.config.timeout, metadata=self.metadata)

    def check_by_number(
        self,
        insurer_number: str,
        symbol: str,
        number: str,
        branch: str,
        birth_date: dt.date,
        as_of: dt.date | None,
    ) -> eligibility_pb2.CheckResponse:
        request = eligibility_pb2.CheckByNumberRequest(
            insurer_number=insurer_number,
            symbol=symbol,
            number=number,
            branch=branch,
            birth_date=dates.to_proto(birth_date),
            as_of=dates.to_proto(as_of),
        )
        return self.stub.CheckByNumber(request, timeout=self.config.timeout, metadata=self.metadata)


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


# ErrorInfo reasons of refused card proofs (onshi.core.cardproof.REASONS).
CARD_REASON_OUTCOME = {
    "CARD_CERTIFICATE_EXPIRED": Outcome.CERT_EXPIRED,
    "CARD_CERTIFICATE_REVOKED": Outcome.CERT_REVOKED,
    "CARD_CERTIFICATE_NOT_YET_VALID": Outcome.CARD_REFUSED,
    "CARD_CERTIFICATE_UNTRUSTED": Outcome.CARD_REFUSED,
    "CARD_SIGNATURE_INVALID": Outcome.CARD_REFUSED,
    "CARD_PROOF_STALE": Outcome.CARD_REFUSED,
    "CARD_PROOF_REPLAYED": Outcome.CARD_REFUSED,
    "CARD_PROOF_FACILITY_MISMATCH": Outcome.CARD_REFUSED,
    # the server cannot take card proofs now (its replay table): the outage procedure
    "CARD_PROOF_CAPACITY": Outcome.SERVER_UNREACHABLE,
    "CARD_PROOF_UNAVAILABLE": Outcome.SERVER_UNREACHABLE,
}


def outcome_of_error(exc: grpc.RpcError, target: str | None = None) -> tuple[Outcome, str, list[tuple[str, str]]]:
    """(outcome, detail, field violations) for a failed call.

    The desk needs to tell an outage (failure procedure) from a terminal the
    server refuses (call the administrator). A refused client certificate fails
    the TLS handshake, which gRPC reports as UNAVAILABLE like an outage; if the
    server still accepts TCP connections, it is up and refusing us, unless
    its UNAVAILABLE carries an ErrorInfo reason (e.g. ACCESS_LOG_UNAVAILABLE):
    then the server itself says it cannot serve, an outage.
    """
    from ..client.statuses import field_violations

    code = exc.code()
    details = exc.details() or ""
    detail = f"{code.name}: {details}"
    reason = error_reason(exc)
    if reason in CARD_REASON_OUTCOME:
        return CARD_REASON_OUTCOME[reason], detail, []
    for name, outcome in CARD_REASON_OUTCOME.items():  # a server without ErrorInfo details
        if name in details:
            return outcome, detail, []
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return Outcome.INPUT_REJECTED, detail, field_violations(exc)
    if code == grpc.StatusCode.UNAVAILABLE and reason is not None:
        # The server answered, with the reason it cannot serve (its access log
        # cannot be written...): an outage, so the outage procedure.
        return Outcome.SERVER_UNREACHABLE, detail, []
    if code in (
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    ):
        lowered = details.lower()
        if code == grpc.StatusCode.UNAVAILABLE and (
            any(w in lowered for w in ("handshake", "certificate", "ssl", "tls"))
            or (target is not None and accepts_tcp(target))
        ):
            return (
                Outcome.SERVER_REFUSED,
                detail + " (the server is up: TLS handshake refused?)",
                [],
            )
        return Outcome.SERVER_UNREACHABLE, detail, []
    if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
        return Outcome.SERVER_REFUSED, detail, []
    if code == grpc.StatusCode.FAILED_PRECONDITION and "card proof" in details:
        return Outcome.CARD_REFUSED, detail, []
    return Outcome.ERROR, detail, []


def answer(response: eligibility_pb2.CheckResponse, method: str, **kw) -> Result:
    from .screen import BY_VALIDITY

    outcome = BY_VALIDITY.get(response.validity, Outcome.ERROR)
    return Result(outcome, method, response=response, **kw)
