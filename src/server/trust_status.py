"""The statuses of refused trust checks, on both servers.

A refused card proof answers its own gRPC code with the advice as message and
a google.rpc.ErrorInfo (reason CARD_CERTIFICATE_EXPIRED ..., metadata `advice`
and, when eligibility.proto's WarningCode names it, `warning_code`) so a
terminal can act on it; a malformed proof or identifier is INVALID_ARGUMENT
with BadRequest field violations; a caller the roles refuse keeps auth's code.
"""

from __future__ import annotations

from typing import Any, NoReturn

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from ..core import cardproof, identifiers
from ..core.cardproof import CardProofError, MalformedProof
from . import auth
from .errors import ERROR_DOMAIN, FieldErrors, StatusError, bad_request_status, refused

# What the trust checks raise; status_of answers each.
TRUST_ERRORS = (CardProofError, MalformedProof, FieldErrors, identifiers.InvalidIdentifier, auth.AuthError)


def card_proof_status(exc: CardProofError) -> grpc.Status:
    metadata = {"advice": exc.advice}
    if exc.reason in cardproof.REASON_WARNING:
        metadata["warning_code"] = str(cardproof.REASON_WARNING[exc.reason])
    info = error_details_pb2.ErrorInfo(reason=exc.reason, domain=ERROR_DOMAIN, metadata=metadata)
    detail = any_pb2.Any()
    detail.Pack(info)
    code = getattr(code_pb2, exc.code)
    return rpc_status.to_status(status_pb2.Status(code=code, message=str(exc), details=[detail]))


def status_of(exc: Exception) -> grpc.Status:
    """The status for one of TRUST_ERRORS."""
    if isinstance(exc, CardProofError):
        return card_proof_status(exc)
    if isinstance(exc, (MalformedProof, FieldErrors)):
        return bad_request_status(exc.violations)
    if isinstance(exc, identifiers.InvalidIdentifier):
        return bad_request_status([(exc.field, exc.description)])
    if isinstance(exc, auth.AuthError):
        return refused(exc.code, exc.message).status
    raise TypeError(f"not a trust refusal: {exc!r}")


def refusal(exc: Exception) -> StatusError:
    """One of TRUST_ERRORS as the StatusError the handler wrappers answer."""
    return StatusError(status_of(exc))


async def abort_async(context: grpc.aio.ServicerContext[Any, Any], exc: Exception) -> NoReturn:
    """grpc.aio: end the call with the status of one of TRUST_ERRORS (never returns)."""
    status = status_of(exc)
    await context.abort(status.code, status.details, status.trailing_metadata)
