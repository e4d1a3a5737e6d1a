"""Client mistakes become INVALID_ARGUMENT with google.rpc.BadRequest field
violations (grpcurl and every gRPC client can read them); never INTERNAL.

One status names at most MAX_VIOLATIONS violations (the rest are counted in a
last one, "…: and N more violations"): a batch of 10,000 bad claims would otherwise
answer with a trailer of more than a megabyte, past what gRPC clients accept
(8 KiB of metadata by default), and the caller would see a transport error
instead of the status. The message repeats the first few only.

A refusal that is not the caller's mistake but the service's state (the access
log cannot write) is a StatusError carrying its whole status, with a
google.rpc.ErrorInfo reason a client can act on (service_unavailable).
"""

from __future__ import annotations

import collections

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from ..core.identifiers import InvalidIdentifier

MAX_VIOLATIONS = 20  # field violations in one status (BadRequest details)
MAX_VIOLATION_BYTES = 3000  # and their text, so the whole trailer stays far below 8 KiB
MESSAGE_VIOLATIONS = 3  # of which the status message repeats
MAX_DESCRIPTION = 200  # characters of one field path or description
ERROR_DOMAIN = "onshi.v1"


class FieldErrors(ValueError):
    """Collects (field, description) pairs for one request."""

    def __init__(self, violations: list[tuple[str, str]] | None = None):
        self.violations = list(violations or [])
        super().__init__("; ".join(f"{f}: {d}" for f, d in self.violations))

    def add(self, field: str, description: str) -> None:
        self.violations.append((field, description))
        self.args = ("; ".join(f"{f}: {d}" for f, d in self.violations),)

    @classmethod
    def of(cls, exc: InvalidIdentifier) -> FieldErrors:
        return cls([(exc.field, exc.description)])


class StatusError(Exception):
    """A call refused with this status (raised anywhere below a handler; the
    servers' handler wrapper, onshi.server.handlers, answers with it)."""

    def __init__(self, status: grpc.Status):
        super().__init__(status.details)
        self.status = status


class _Status(collections.namedtuple("_Status", ("code", "details", "trailing_metadata")), grpc.Status):
    pass


def refused(code: grpc.StatusCode, message: str) -> StatusError:
    """A plain status (no details) as a StatusError."""
    return StatusError(_Status(code, message, ()))


def _cut(text: str) -> str:
    return text if len(text) <= MAX_DESCRIPTION else text[: MAX_DESCRIPTION - 1] + "…"


def capped(violations: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The violations one status carries: at most MAX_VIOLATIONS and about
    MAX_VIOLATION_BYTES of text, then one that counts the rest."""
    out: list[tuple[str, str]] = []
    size = 0
    for i, (f, d) in enumerate(violations):
        f, d = _cut(f), _cut(d)
        size += len(f.encode()) + len(d.encode()) + 8
        if i == MAX_VIOLATIONS or size > MAX_VIOLATION_BYTES:
            out.append(("…", f"and {len(violations) - i} more violations"))
            break
        out.append((f, d))
    return out


def bad_request_status(violations: list[tuple[str, str]], message: str = "invalid request") -> grpc.Status:
    violations = capped(violations)
    detail = any_pb2.Any()
    detail.Pack(
        error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=f, description=d) for f, d in violations
            ]
        )
    )
    text = message + ": " + "; ".join(f"{f}: {d}" for f, d in violations[:MESSAGE_VIOLATIONS])
    if len(violations) > MESSAGE_VIOLATIONS:
        text += "; … (see the BadRequest details)"
    return rpc_status.to_status(status_pb2.Status(code=code_pb2.INVALID_ARGUMENT, message=text, details=[detail]))


def service_unavailable(reason: str, message: str, **metadata: str) -> StatusError:
    """UNAVAILABLE with ErrorInfo(reason): the service cannot answer now (an
    outage, not a refusal of this caller); clients map the reason to their
    outage procedure (the clinic terminal: src/terminal/client.py)."""
    info = error_details_pb2.ErrorInfo(reason=reason, domain=ERROR_DOMAIN, metadata=metadata)
    detail = any_pb2.Any()
    detail.Pack(info)
    return StatusError(
        rpc_status.to_status(status_pb2.Status(code=code_pb2.UNAVAILABLE, message=message, details=[detail]))
    )
