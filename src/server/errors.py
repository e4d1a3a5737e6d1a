"""Client mistakes become INVALID_ARGUMENT with google.rpc.BadRequest field
violations (grpcurl and every gRPC client can read them); never INTERNAL."""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from onshi.core.identifiers import InvalidIdentifier


class FieldErrors(ValueError):
    """Collects (field, description) pairs for one request."""

    def __init__(self, violations: list[tuple[str, str]] | None = None):
        self.violations = list(violations or [])
        super().__init__("; ".join(f"{f}: {d}" for f, d in self.violations))

    def add(self, field: str, description: str) -> None:
        self.violations.append((field, description))
        self.args = ("; ".join(f"{f}: {d}" for f, d in self.violations),)

    @classmethod
    def of(cls, exc: InvalidIdentifier) -> "FieldErrors":
        return cls([(exc.field, exc.description)])


def bad_request_status(violations: list[tuple[str, str]], message: str = "invalid request") -> grpc.Status:
    detail = any_pb2.Any()
    detail.Pack(error_details_pb2.BadRequest(field_violations=[
        error_details_pb2.BadRequest.FieldViolation(field=f, description=d) for f, d in violations
    ]))
    text = message + ": " + "; ".join(f"{f}: {d}" for f, d in violations)
    return rpc_status.to_status(status_pb2.Status(
        code=code_pb2.INVALID_ARGUMENT, message=text, details=[detail]))


def _status(error: grpc.RpcError):
    try:
        return rpc_status.from_call(error)
    except ValueError:  # status details that do not match the call's code/message
        return None


def field_violations(error: grpc.RpcError) -> list[tuple[str, str]]:
    """Client side: the (field, description) pairs of an INVALID_ARGUMENT error."""
    status = _status(error)
    out = []
    for detail in status.details if status else ():
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            br = error_details_pb2.BadRequest()
            detail.Unpack(br)
            out.extend((v.field, v.description) for v in br.field_violations)
    return out


def error_reason(error: grpc.RpcError) -> str | None:
    """Client side: the google.rpc.ErrorInfo reason of a refused call (the trust
    layer sends CARD_CERTIFICATE_EXPIRED, CARD_PROOF_REPLAYED, ...), or None."""
    status = _status(error)
    for detail in status.details if status else ():
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info.reason
    return None
