"""One check, start to finish: read the card (or take the typed number), prove
the card with the PIN, ask the service, and return a `Result` for the screen.

The card session ends (and the card is reset, forgetting the verified PIN)
before the network call, so a slow or dead server never holds the card.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import getpass
import os
import secrets
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import grpc
from cryptography import x509

from ..core import cardproof
from ..v1 import eligibility_pb2
from . import jpki, reader
from .client import (
    ConfigError,
    EligibilityConnection,
    ServerConfig,
    answer,
    outcome_of_error,
)
from .screen import Outcome, Result

PIN_FD_ENV = "ONSHI_TERMINAL_PIN_FD"  # test/automation hook: read the PIN from this file descriptor
NONCE_BYTES = 32

PinSource = Callable[[int], str]


class PinNotEntered(Exception):
    pass


def _read_line_fd(fd: int) -> str:
    """One line from a raw fd, unbuffered (the fd may carry later PINs too)."""
    out = bytearray()
    while True:
        b = os.read(fd, 1)
        if not b or b == b"\n":
            break
        out += b
    if not out and not b:
        raise PinNotEntered("no PIN entered")
    return out.decode("ascii", "replace").strip()


def prompt_pin(tries_left: int) -> str:
    """Ask for the PIN without echo. The prompt shows the tries left; the PIN
    itself is returned to the caller only and never printed or logged."""
    prompt = f"暗証番号（4桁）を入力してください Enter the 4-digit PIN [残り{tries_left}回 {tries_left} tries left]: "
    fd = os.environ.get(PIN_FD_ENV)
    if fd:
        sys.stderr.write(prompt + "\n")
        sys.stderr.flush()
        return _read_line_fd(int(fd))
    if sys.stdin is not None and sys.stdin.isatty():
        try:
            return getpass.getpass(prompt)  # no echo, prompt on the controlling terminal
        except EOFError:
            raise PinNotEntered("no PIN entered") from None
    sys.stderr.write(prompt + "\n")
    sys.stderr.flush()
    line = sys.stdin.readline() if sys.stdin is not None else ""
    if not line:
        raise PinNotEntered("no PIN entered")
    return line.strip()


@dataclass(frozen=True)
class SignedProof:
    """What leaves the card: its certificate and its signature over a fresh challenge."""

    certificate_der: bytes
    certificate: x509.Certificate
    challenge: eligibility_pb2.CardChallenge
    signature: bytes


def read_card_proof(
    facility_code: str,
    pin_source: PinSource,
    *,
    reader_name: str | None = None,
    now: Callable[[], float] = time.time,
    purpose: str = cardproof.PURPOSE_CHECK_BY_CARD,
) -> SignedProof | Result:
    """Read the certificate, check its dates, take the PIN, sign a fresh
    challenge for `purpose` (the RPC the proof goes to: the server refuses it
    for any other).

    A Result instead of a proof ends the check at the desk (card, PIN or
    certificate problem).
    """
    cert = None
    try:
        with reader.JpkiCard(reader_name) as card:
            card.select_jpki()
            der = card.read_certificate()
            try:
                cert = x509.load_der_x509_certificate(der)
            except ValueError:
                return Result(Outcome.CARD_REFUSED, "card", detail="the card's certificate does not parse")
            info = _card_info(cert)
            current = dt.datetime.fromtimestamp(now(), dt.UTC)
            # An expired certificate cannot prove anything: say so before the
            # patient spends a PIN try (the server would refuse it anyway).
            if current >= cert.not_valid_after_utc:
                return Result(Outcome.CERT_EXPIRED, "card", **info)
            if current < cert.not_valid_before_utc:
                return Result(Outcome.CARD_REFUSED, "card", detail="card certificate not valid yet", **info)
            tries = card.pin_tries_left()
            try:
                pin = pin_source(tries)
            except PinNotEntered:
                return Result(
                    Outcome.INPUT_REJECTED,
                    "card",
                    detail="no PIN entered; no try was used",
                    field_errors=[("PIN", "not entered")],
                    **info,
                )
            if len(pin) != jpki.PIN_LENGTH or not pin.isdigit():
                return Result(
                    Outcome.INPUT_REJECTED,
                    "card",
                    detail="the PIN is 4 digits; no try was used",
                    field_errors=[("PIN", "must be 4 digits")],
                    **info,
                )
            card.verify_pin(pin)
            del pin
            challenge = eligibility_pb2.CardChallenge(
                facility_code=facility_code,
                timestamp_unix=int(now()),
                nonce=secrets.token_bytes(NONCE_BYTES),
            )
            message = cardproof.challenge_bytes(
                purpose, challenge.facility_code, challenge.timestamp_unix, challenge.nonce
            )
            signature = card.sign_digest_info(jpki.digest_info_sha256(message))
            return SignedProof(der, cert, challenge, signature)
    except reader.CardError as exc:
        return _card_failure_result(exc, cert)


def _card_info(cert: x509.Certificate | None) -> dict:
    if cert is None:
        return {}
    return {
        "card_serial": format(cert.serial_number, "X"),
        "card_not_after": cert.not_valid_after_utc,
    }


def _card_failure_result(exc: reader.CardError, cert: x509.Certificate | None) -> Result:
    info = _card_info(cert)
    if isinstance(exc, reader.PinIncorrect):
        return Result(Outcome.PIN_INCORRECT, "card", pin_tries_left=exc.tries_left, **info)
    if isinstance(exc, reader.PinBlocked):
        return Result(Outcome.PIN_BLOCKED, "card", pin_tries_left=0, **info)
    if isinstance(exc, reader.CardRemoved):
        return Result(Outcome.CARD_REMOVED, "card", detail=str(exc), **info)
    if isinstance(exc, reader.NoCard):
        return Result(Outcome.NO_CARD, "card", detail=str(exc), **info)
    if isinstance(exc, reader.NotJpkiCard):
        return Result(Outcome.NOT_MY_NUMBER_CARD, "card", detail=str(exc), **info)
    if isinstance(exc, (reader.NoReader, reader.PcscUnavailable)):
        return Result(Outcome.READER_UNAVAILABLE, "card", detail=str(exc), **info)
    return Result(Outcome.CARD_REFUSED, "card", detail=str(exc), **info)


def _connection(config: ServerConfig, conn: EligibilityConnection | None):
    """The caller's long-lived connection (folder mode), or a fresh one closed after the call."""
    if conn is not None:
        return contextlib.nullcontext(conn)
    return EligibilityConnection(config)


def check_card(
    config: ServerConfig,
    pin_source: PinSource = prompt_pin,
    *,
    reader_name: str | None = None,
    as_of: dt.date | None = None,
    conn: EligibilityConnection | None = None,
) -> Result:
    try:
        facility_code = config.resolved_facility_code()
    except (ConfigError, OSError, ValueError) as exc:
        return Result(Outcome.ERROR, "card", as_of=as_of, detail=f"terminal configuration: {exc}")
    proof = read_card_proof(facility_code, pin_source, reader_name=reader_name)
    if isinstance(proof, Result):
        proof.as_of = as_of
        return proof
    info = _card_info(proof.certificate)
    try:
        with _connection(config, conn) as c:
            response = c.check_by_card(proof.certificate_der, proof.challenge, proof.signature, as_of)
    except grpc.RpcError as exc:
        outcome, detail, violations = outcome_of_error(exc, config.target)
        return Result(outcome, "card", as_of=as_of, detail=detail, field_errors=violations, **info)
    except (ConfigError, OSError) as exc:
        return Result(Outcome.ERROR, "card", as_of=as_of, detail=f"terminal configuration: {exc}", **info)
    return answer(response, "card", as_of=as_of, **info)


def check_number(
    config: ServerConfig,
    insurer_number: str,
    symbol: str,
    number: str,
    branch: str,
    birth_date: dt.date,
    *,
    as_of: dt.date | None = None,
    conn: EligibilityConnection | None = None,
) -> Result:
    try:
        with _connection(config, conn) as c:
            response = c.check_by_number(insurer_number, symbol, number, branch, birth_date, as_of)
    except grpc.RpcError as exc:
        outcome, detail, violations = outcome_of_error(exc, config.target)
        return Result(outcome, "number", as_of=as_of, detail=detail, field_errors=violations)
    except (ConfigError, OSError) as exc:
        return Result(Outcome.ERROR, "number", as_of=as_of, detail=f"terminal configuration: {exc}")
    return answer(response, "number", as_of=as_of)
