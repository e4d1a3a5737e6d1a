"""Every method of both servers parses its own request.

gRPC's own deserializer raising ends a call with INTERNAL ("Exception
deserializing request!"), yet a body that is not the request message is the
caller's mistake. So services, health and reflection alike are registered
through `Services(server)`: the method handlers they add are handed to gRPC as
bytes-in handlers that parse the body themselves and answer INVALID_ARGUMENT
(field violation "request") when it does not parse — the eligibility
service's rule (eligibility_service parses by hand for the same reason), for every
service. The wrapping happens once, at registration: nothing per call beyond
the parse gRPC would have made anyway.

Parsed requests are held to one ceiling on text: no string field, at any
depth, longer than MAX_TEXT characters (fields with a tighter limit of their
own check it themselves). Names, addresses, reasons and legal bases are far
shorter; a megabyte "reason" is refused here, before it reaches a store or the
access log (whose records are at most 64 KiB).

The same wrapper turns a `StatusError` raised by a handler into its status, so
a rule deep down (the access log cannot write, a store is full) can name the
status it stands for without each handler catching it.

On the grpc.aio server (`onshi ingest-serve`) every handler must be a
coroutine or an async generator (any other is refused with a TypeError): gRPC
runs a sync one on a pool thread that goes on after the caller cancelled, and
asking the released call anything from there crashed the process.

On the threaded server (`onshi serve`) a handler that reads a request stream
holds a pool thread for as long as the caller keeps the stream open; those are
few there (server reflection) and at most `stream_slots` of them run at once
per process (RESOURCE_EXHAUSTED beyond), so idle streams cannot take every
thread from the checks.
"""

from __future__ import annotations

import inspect
import threading

import grpc
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError

from .errors import StatusError, bad_request_status

_KINDS = ("unary_unary", "unary_stream", "stream_unary", "stream_stream")
# Attributes of a behaviour that gRPC's threaded server reads (the health
# service's Watch answers without holding a thread when they are set).
_PASSED_ON = ("experimental_non_blocking", "experimental_thread_pool")


MAX_TEXT = 1000  # characters in any one string field of a request


def bad_body(exc: Exception, name: str) -> grpc.Status:
    return bad_request_status([("request", f"not a valid {name}: {exc}")])


def long_texts(message, prefix: str = "") -> list[tuple[str, str]]:
    """Violations of MAX_TEXT in `message` (only messages whose encoding is
    longer than the ceiling can hold such a string, so most are not walked)."""
    if message.ByteSize() <= MAX_TEXT:
        return []
    out = []
    for f, value in message.ListFields():
        name = prefix + f.name
        if f.type == FieldDescriptor.TYPE_STRING:
            values = enumerate(value) if f.is_repeated else ((None, value),)
            out += [
                (name if i is None else f"{name}[{i}]", f"at most {MAX_TEXT} characters")
                for i, v in values
                if len(v) > MAX_TEXT
            ]
        elif f.type == FieldDescriptor.TYPE_MESSAGE:
            if f.is_repeated:
                for i, sub in enumerate(value):
                    out += long_texts(sub, f"{name}[{i}].")
            else:
                out += long_texts(value, name + ".")
    return out


def _checked(parse, raw: bytes):
    """Parse; raises DecodeError, or ValueError with the violations of MAX_TEXT."""
    request = parse(raw)
    violations = long_texts(request)
    if violations:
        raise _TooLong(violations)
    return request


class _TooLong(ValueError):
    def __init__(self, violations):
        super().__init__(violations)
        self.violations = violations


def _refusal(exc: Exception, name: str) -> grpc.Status:
    if isinstance(exc, _TooLong):
        return bad_request_status(exc.violations)
    return bad_body(exc, name)


class Services:
    """The server as the generated `add_*_to_server` functions (and health,
    reflection) see it while services are added: each method handler they
    register reaches gRPC wrapped by `parsing`."""

    def __init__(self, server, *, asyncio: bool, stream_slots: int | None = None):
        self.server = server
        self.asyncio = asyncio
        self.slots = threading.BoundedSemaphore(stream_slots) if stream_slots else None

    def wrap(self, handler: grpc.RpcMethodHandler | None) -> grpc.RpcMethodHandler | None:
        return None if handler is None else parsing(handler, asyncio=self.asyncio, slots=self.slots)

    def add_registered_method_handlers(self, service: str, handlers: dict) -> None:
        self.server.add_registered_method_handlers(service, {n: self.wrap(h) for n, h in handlers.items()})

    def add_generic_rpc_handlers(self, handlers) -> None:
        self.server.add_generic_rpc_handlers(tuple(_Generic(h, self) for h in handlers))


class _Generic(grpc.GenericRpcHandler):
    """A generic handler whose method handlers are wrapped, once per method."""

    def __init__(self, inner: grpc.GenericRpcHandler, services: Services):
        self.inner = inner
        self.services = services
        self.wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    def service(self, handler_call_details):
        handler = self.inner.service(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        hit = self.wrapped.get(method)
        if hit is None or hit[0] is not handler:
            hit = (handler, self.services.wrap(handler))
            self.wrapped[method] = hit
        return hit[1]


def parsing(
    handler: grpc.RpcMethodHandler, *, asyncio: bool, slots: threading.BoundedSemaphore | None = None
) -> grpc.RpcMethodHandler:
    """`handler` taking raw bytes: it parses them itself (INVALID_ARGUMENT when
    they do not parse) and answers a StatusError with its status."""
    kind = next(k for k in _KINDS if getattr(handler, k) is not None)
    behavior = getattr(handler, kind)
    parse = handler.request_deserializer
    name = _message_name(parse)
    if asyncio:
        wrapped = _async(behavior, parse, name, handler.request_streaming)
    else:
        wrapped = _threaded(
            behavior, parse, name, handler.request_streaming, slots if handler.request_streaming else None
        )
    for attr in _PASSED_ON:
        if hasattr(behavior, attr):
            setattr(wrapped, attr, getattr(behavior, attr))
    return getattr(grpc, f"{kind}_rpc_method_handler")(
        wrapped, request_deserializer=None, response_serializer=handler.response_serializer
    )


def sending_bytes(add_servicer, servicer, server, methods: tuple[str, ...]) -> None:
    """`add_servicer(servicer, server)` (a generated add_*_to_server), except that
    `methods` return their response already serialized: gRPC sends those bytes
    as they are, nothing parses them again to serialize them once more."""
    caught = _Caught()
    add_servicer(servicer, caught)
    for name in methods:
        h = caught.methods[name]
        kind = next(k for k in _KINDS if getattr(h, k) is not None)
        caught.methods[name] = getattr(grpc, f"{kind}_rpc_method_handler")(
            getattr(h, kind), request_deserializer=h.request_deserializer, response_serializer=None
        )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(caught.service, caught.methods),))
    server.add_registered_method_handlers(caught.service, caught.methods)


class _Caught:
    """Stands for the server while a generated add_*_to_server registers a service."""

    def add_generic_rpc_handlers(self, handlers) -> None:
        pass  # the same methods come through add_registered_method_handlers

    def add_registered_method_handlers(self, service: str, methods: dict) -> None:
        self.service, self.methods = service, dict(methods)


def _message_name(parse) -> str:
    owner = getattr(parse, "__self__", None)
    descriptor = getattr(owner, "DESCRIPTOR", None)
    return descriptor.name if descriptor is not None else "request"


# --- the threaded server -------------------------------------------------------------


def _threaded(behavior, parse, name: str, streaming: bool, slots):
    def abort(context, status: grpc.Status):
        context.abort_with_status(status)

    def parsed_stream(raw_requests, context):
        for raw in raw_requests:
            try:
                yield _checked(parse, raw)
            except (DecodeError, _TooLong) as exc:
                raise StatusError(_refusal(exc, name)) from None

    def request_of(raw, context):
        if parse is None:
            return raw
        if streaming:
            return parsed_stream(raw, context)
        try:
            return _checked(parse, raw)
        except (DecodeError, _TooLong) as exc:
            abort(context, _refusal(exc, name))

    def handler(raw, context, *args, **kwargs):
        if slots is not None and not slots.acquire(blocking=False):
            context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED, "too many open request streams on this server process; retry later"
            )
        done = slots.release if slots is not None else _nothing
        try:
            result = behavior(request_of(raw, context), context, *args, **kwargs)
        except StatusError as exc:
            done()
            abort(context, exc.status)
        except BaseException:
            done()
            raise
        if inspect.isgenerator(result):  # a response stream: it runs (and may raise) as gRPC iterates it
            return _threaded_stream(result, context, done)
        done()
        return result

    return handler


def _nothing() -> None:
    pass


def _threaded_stream(responses, context, done):
    try:
        yield from responses
    except StatusError as exc:
        context.abort_with_status(exc.status)
    finally:
        done()


# --- grpc.aio (`onshi ingest-serve`) ---------------------------------------------------


def _async(behavior, parse, name: str, streaming: bool):
    async def abort(context, status: grpc.Status):
        await context.abort(status.code, status.details, status.trailing_metadata)

    async def parsed_stream(raw_requests, context):
        # Raised, not aborted here: the handler may read its requests in a task
        # of its own (EnrollmentService), and only the call's own task may end
        # it (an abort from another task while the call sends answers hung it).
        async for raw in raw_requests:
            try:
                yield _checked(parse, raw)
            except (DecodeError, _TooLong) as exc:
                raise StatusError(_refusal(exc, name)) from None

    async def request_of(raw, context):
        if parse is None:
            return raw
        if streaming:
            return parsed_stream(raw, context)
        try:
            return _checked(parse, raw)
        except (DecodeError, _TooLong) as exc:
            await abort(context, _refusal(exc, name))

    if inspect.isasyncgenfunction(behavior):

        async def stream_handler(raw, context):
            request = await request_of(raw, context)
            try:
                async for response in behavior(request, context):
                    yield response
            except StatusError as exc:
                await abort(context, exc.status)

        return stream_handler

    if inspect.iscoroutinefunction(behavior):

        async def handler(raw, context):
            request = await request_of(raw, context)
            try:
                return await behavior(request, context)
            except StatusError as exc:
                await abort(context, exc.status)

        return handler

    raise TypeError(
        f"{behavior!r}: handlers on the grpc.aio server are coroutines or async generators "
        "(a sync handler runs on a pool thread that can outlive its call)"
    )
