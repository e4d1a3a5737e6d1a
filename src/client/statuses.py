"""A refused call read on the client side: the fields a BadRequest names, the reason an ErrorInfo gives."""

from __future__ import annotations

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status


def _status(error: grpc.RpcError):
    try:
        return rpc_status.from_call(error)
    except ValueError:  # status details that do not match the call's code/message
        return None


def field_violations(error: grpc.RpcError) -> list[tuple[str, str]]:
    """Client side: the (field, description) pairs of an INVALID_ARGUMENT error."""
    status = _status(error)
    out: list[tuple[str, str]] = []
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
