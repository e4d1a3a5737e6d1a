"""EligibilityService: request checking around the engine, answers as the
engine's pre-serialized CheckResponse bytes.

Requests are parsed here rather than by gRPC (request_deserializer=None) so a
body that does not parse is the client's INVALID_ARGUMENT, not gRPC's INTERNAL
"Exception deserializing request!". Responses pass through untouched
(response_serializer=None): building a protobuf object per answer would cost
more than the lookup.

The trust layer (eligibility_trust.py) plugs in through two hooks, both optional:

* `card_proof(request, caller, context) -> (serial_key, extra)`: resolves the
  20-byte card serial key of a CheckByCardRequest — verifying
  card_certificate, challenge and card_signature, or deciding whether this
  caller may present a bare card_serial — and returns `extra`, bytes appended
  to the engine's answer (serialized CheckResponse.warnings fields, field 3;
  protobuf allows repeated fields in any order, so appending is a valid
  message). It may raise FieldErrors / InvalidIdentifier / Rejected /
  StatusError.
  Without it, a request carrying card proof fields answers FAILED_PRECONDITION
  and card_serial is trusted as is.
* `audit(context, caller, method, request, key, response)`: called after the
  answer is computed and before it is returned (so a durable audit write can
  precede the answer); `method` is "CheckByCard" or "CheckByNumber", `key` the
  card serial key or number key the engine looked up, `response` the answer's
  bytes. It may raise StatusError (UNAVAILABLE when the access log cannot write).

`caller` is the auth.Caller the role interceptor took for the call (the
handlers are marked `takes_caller`), None on a server without it. `context` is
the gRPC ServicerContext of the stack in use (threaded `grpc.ServicerContext`
by default, see app.py).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any, Protocol

import grpc
from google.protobuf.message import DecodeError

from ..core import dates, identifiers
from ..core.engine import Engine
from ..core.identifiers import InvalidIdentifier
from ..v1 import eligibility_pb2
from .errors import FieldErrors, StatusError, bad_request_status

SERVICE_NAME = "onshi.v1.EligibilityService"
CheckByCardRequest = eligibility_pb2.CheckByCardRequest
CheckByNumberRequest = eligibility_pb2.CheckByNumberRequest

_EPOCH_ORDINAL = dates.EPOCH_ORDINAL
_card_serial_key = identifiers.card_serial_key
_number_key = identifiers.number_key
_date = dt.date


class Rejected(Exception):
    """A request refused with a status other than INVALID_ARGUMENT."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


class CardProof(Protocol):
    def __call__(self, request: CheckByCardRequest, caller: Any, context: Any) -> tuple[bytes, bytes]: ...


class Audit(Protocol):
    def __call__(self, context: Any, caller: Any, method: str, request: Any, key: bytes, response: bytes) -> None: ...


def date_day(d, field: str, errors: FieldErrors) -> int | None:
    """google.type.Date -> day number; each impossible part is its own violation."""
    try:
        return _date(d.year, d.month, d.day).toordinal() - _EPOCH_ORDINAL
    except ValueError:
        pass
    if not 1 <= d.year <= 9999:
        errors.add(field + ".year", "must be 1-9999")
    if not 1 <= d.month <= 12:
        errors.add(field + ".month", "must be 1-12")
    elif 1 <= d.year <= 9999:
        errors.add(field + ".day", f"no day {d.day} in {d.year:04d}-{d.month:02d}")
    elif not 1 <= d.day <= 31:
        errors.add(field + ".day", "must be 1-31")
    return None


# google.protobuf.Timestamp's own range: 0001-01-01T00:00:00Z .. 9999-12-31T23:59:59.999999999Z
MIN_TIMESTAMP_SECONDS = -62135596800
MAX_TIMESTAMP_SECONDS = 253402300799


def timestamp_ns(t, field: str, errors: FieldErrors) -> int | None:
    """google.protobuf.Timestamp -> nanoseconds since the epoch, or a violation."""
    if not MIN_TIMESTAMP_SECONDS <= t.seconds <= MAX_TIMESTAMP_SECONDS:
        errors.add(field + ".seconds", "must be within 0001-01-01 .. 9999-12-31")
        return None
    if not 0 <= t.nanos <= 999_999_999:
        errors.add(field + ".nanos", "must be 0-999999999")
        return None
    return t.seconds * 1_000_000_000 + t.nanos


def _has_card_proof(request: CheckByCardRequest) -> bool:
    return bool(request.card_certificate or request.card_signature or request.HasField("challenge"))


class EligibilityAnswers:
    """The service's logic, independent of the gRPC stack: raw request bytes in,
    CheckResponse bytes out; client mistakes raise FieldErrors or Rejected."""

    def __init__(
        self,
        engine: Engine,
        *,
        card_proof: CardProof | None = None,
        audit: Audit | None = None,
        today: Callable[[], int] = dates.today_jst,
    ):
        self.engine = engine
        self.card_proof = card_proof
        self.audit = audit
        self.today = today
        self._by_card = engine.check_by_card
        self._by_number = engine.check_by_number

    def check_by_card(self, raw: bytes, context: Any, caller: Any = None) -> bytes:
        try:
            request = CheckByCardRequest.FromString(raw)
        except DecodeError as exc:
            raise FieldErrors([("request", f"CheckByCardRequest does not parse: {exc}")]) from None
        errors = None
        if request.HasField("as_of"):
            errors = FieldErrors()
            day = date_day(request.as_of, "as_of", errors)
        else:
            day = self.today()
        extra = b""
        if self.card_proof is not None:
            if day is None:  # before the proof: a bad date must not spend the card's nonce
                assert errors is not None  # date_day put its violation there
                raise errors
            serial_key, extra = self.card_proof(request, caller, context)
        elif _has_card_proof(request):
            raise Rejected(grpc.StatusCode.FAILED_PRECONDITION, "card proof verification not configured")
        else:
            try:
                serial_key = _card_serial_key(request.card_serial)
            except InvalidIdentifier as exc:
                errors = errors or FieldErrors()
                errors.add(exc.field, exc.description)  # with any as_of fault: all at once
                raise errors from None
            if day is None:
                assert errors is not None  # date_day put its violation there
                raise errors
        response = self._by_card(serial_key, day)
        if extra:
            response += extra
        if self.audit is not None:
            self.audit(context, caller, "CheckByCard", request, serial_key, response)
        return response

    def check_by_number(self, raw: bytes, context: Any, caller: Any = None) -> bytes:
        try:
            request = CheckByNumberRequest.FromString(raw)
        except DecodeError as exc:
            raise FieldErrors([("request", f"CheckByNumberRequest does not parse: {exc}")]) from None
        errors = FieldErrors()
        try:
            key = _number_key(request.insurer_number, request.symbol, request.number, request.branch)
        except InvalidIdentifier as exc:
            errors.add(exc.field, exc.description)
        if request.HasField("birth_date"):
            birth_day = date_day(request.birth_date, "birth_date", errors)
        else:
            errors.add("birth_date", "required (a mismatch answers NO_RECORD)")
        if request.HasField("as_of"):
            day = date_day(request.as_of, "as_of", errors)
        else:
            day = self.today()
        if errors.violations or birth_day is None or day is None:  # None only with a violation
            raise errors
        response = self._by_number(key, birth_day, day)
        if self.audit is not None:
            self.audit(context, caller, "CheckByNumber", request, key, response)
        return response


def _threaded(answer: Callable[..., bytes]) -> Callable[..., bytes]:
    def handler(raw: bytes, context: grpc.ServicerContext, caller: Any = None) -> bytes:
        try:
            return answer(raw, context, caller)
        except FieldErrors as exc:
            context.abort_with_status(bad_request_status(exc.violations))
        except InvalidIdentifier as exc:  # from a card_proof hook
            context.abort_with_status(bad_request_status([(exc.field, exc.description)]))
        except Rejected as exc:
            context.abort(exc.code, exc.message)
        except StatusError as exc:  # from a hook (a refused card proof, the access log cannot write)
            context.abort_with_status(exc.status)

    handler.__name__ = answer.__name__
    handler.takes_caller = True  # type: ignore[attr-defined]  # the role interceptor passes the caller it took (auth)
    return handler


def _asyncio(answer: Callable[..., bytes]):
    async def handler(raw: bytes, context: grpc.aio.ServicerContext, caller: Any = None) -> bytes:
        try:
            return answer(raw, context, caller)
        except FieldErrors as exc:
            await context.abort_with_status(bad_request_status(exc.violations))
        except InvalidIdentifier as exc:
            await context.abort_with_status(bad_request_status([(exc.field, exc.description)]))
        except Rejected as exc:
            await context.abort(exc.code, exc.message)
        except StatusError as exc:
            await context.abort(exc.status.code, exc.status.details, exc.status.trailing_metadata)

    handler.__name__ = answer.__name__
    handler.takes_caller = True  # type: ignore[attr-defined]  # as in _threaded
    return handler


def _unary(fn) -> grpc.RpcMethodHandler:
    # Bytes in, bytes out: no (de)serializer, see the module docstring.
    return grpc.unary_unary_rpc_method_handler(fn, request_deserializer=None, response_serializer=None)


def build_eligibility_handlers(
    engine: Engine,
    *,
    card_proof: CardProof | None = None,
    audit: Audit | None = None,
    asyncio: bool = False,
) -> grpc.GenericRpcHandler:
    """The EligibilityService as a generic handler for grpc.server or grpc.aio.server."""
    answers = EligibilityAnswers(engine, card_proof=card_proof, audit=audit)
    adapt = _asyncio if asyncio else _threaded
    methods = {
        "CheckByCard": adapt(answers.check_by_card),
        "CheckByNumber": adapt(answers.check_by_number),
    }
    return grpc.method_handlers_generic_handler(SERVICE_NAME, {n: _unary(f) for n, f in methods.items()})
