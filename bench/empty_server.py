"""`onshi serve` with an empty handler: the same supervisor, worker processes,
SO_REUSEPORT port, threaded gRPC server, options, health and reflection as the
real service, but both check methods answer a fixed CheckResponse without
looking at the request (no parsing, no validation, no lookup). Its CPU per
call is the floor that the gRPC stack itself sets (bench/cost.py).

    python bench/empty_server.py --data DIR --workers N [--response-from SERIAL]

The fixed answer is a real one (a VALID answer read from the store), so the
floor sends as many bytes per call as the real service does.

It passes app.serve a build_server that calls app.threaded_server (what
`onshi serve` builds on) with these handlers instead of the service's; the real
service adds its interceptors (roles) and hooks on top, which is onshi's own cost.
"""

from __future__ import annotations

import argparse
import sys

import grpc

from onshi.server import app, eligibility_service


def empty_handlers(response: bytes, *, asyncio: bool = False) -> grpc.GenericRpcHandler:
    """EligibilityService's two methods answering a fixed response without
    looking at the request: the floor that the gRPC stack itself sets."""
    if asyncio:

        async def empty(raw, context):
            return response
    else:

        def empty(raw, context):
            return response

    method = grpc.unary_unary_rpc_method_handler(empty, request_deserializer=None, response_serializer=None)
    return grpc.method_handlers_generic_handler(
        eligibility_service.SERVICE_NAME, {"CheckByCard": method, "CheckByNumber": method}
    )


def typical_answer(data: str) -> bytes:
    from onshi.core import dates, history
    from onshi.core.pure import PureEngine

    engine = PureEngine(data)
    try:
        with engine.env.begin() as txn:
            cur = txn.cursor(engine._card)
            for i, (serial_key, _) in enumerate(cur):
                answer = engine.check_by_card(bytes(serial_key), dates.today_jst())
                if answer[1] == history.VALID or i > 1000:
                    return answer
    finally:
        engine.close()
    return history.response(history.NO_RECORD)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--data", required=True)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--threads", type=int, default=app.DEFAULT_THREADS)
    args = p.parse_args()
    answer = typical_answer(args.data)

    def build(engine, address):
        return app.threaded_server(empty_handlers(answer), address=address, threads=args.threads)

    if "build_server" not in app.serve.__code__.co_varnames:
        print(
            "empty_server: app.serve has no build_server hook any more; update bench/empty_server.py", file=sys.stderr
        )
        return 2
    return app.serve(
        args.data, host="127.0.0.1", port=args.port, workers=args.workers, threads=args.threads, build_server=build
    )


if __name__ == "__main__":
    sys.exit(main())
