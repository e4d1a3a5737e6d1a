"""Bench only: CheckByCard on grpc.aio with the same trust pieces, to measure
whether handlers that *await* their access-log batch (instead of parking a
thread, as the threaded `onshi serve` does) bring the trust layer's share of
server CPU under the 30 % target. Started by bench/trust.py; prints
`serving on HOST:PORT` like `onshi serve`.

    python bench/trust_aio_server.py --data STORE [--pki DIR] [--proof] [--audit-dir DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import queue
import sys
import threading

import grpc

from onshi.core import audit, cardproof, dates, identifiers
from onshi.core.cardproof import CardVerifier
from onshi.core.engine import open_engine
from onshi.server import auth
from onshi.server.access_log import card_subject, describe_answer
from onshi.v1 import eligibility_pb2


class AsyncAuditWriter:
    """Records from the event loop, written by one thread; each batch's
    futures are resolved with one call_soon_threadsafe after its sync."""

    def __init__(self, log: audit.AuditLog, loop: asyncio.AbstractEventLoop):
        self.log = log
        self.loop = loop
        self.queue: queue.SimpleQueue = queue.SimpleQueue()
        threading.Thread(target=self._run, daemon=True).start()

    def append(self, record: audit.AuditRecord) -> asyncio.Future:
        future = self.loop.create_future()
        self.queue.put((record, future))
        return future

    def _run(self) -> None:
        while True:
            items = [self.queue.get()]
            while True:
                try:
                    items.append(self.queue.get_nowait())
                except queue.Empty:
                    break
            error = None
            try:
                self.log.append_many([r for r, _ in items])
            except BaseException as exc:  # noqa: BLE001 - handed to every waiter
                error = exc
            self.loop.call_soon_threadsafe(_settle, [f for _, f in items], error)


def _settle(futures, error) -> None:
    for f in futures:
        if not f.done():
            if error is None:
                f.set_result(None)
            else:
                f.set_exception(error)


async def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    p.add_argument("--pki")
    p.add_argument("--proof", action="store_true")
    p.add_argument("--audit-dir")
    args = p.parse_args()
    engine = open_engine(args.data)
    loop = asyncio.get_running_loop()
    verifier = None
    if args.proof:
        jpki = os.path.join(args.pki, "jpki")
        verifier = CardVerifier.from_files([os.path.join(jpki, "ca.pem")], os.path.join(jpki, "crl.der"))
    writer = AsyncAuditWriter(audit.AuditLog(args.audit_dir, "aio"), loop) if args.audit_dir else None

    async def check_by_card(raw: bytes, context, caller=None) -> bytes:
        request = eligibility_pb2.CheckByCardRequest.FromString(raw)
        extra = b""
        if verifier is not None:
            proof = verifier.verify_request(request, caller.facility_code,
                                             purpose=cardproof.PURPOSE_CHECK_BY_CARD)
            key, extra = proof.serial_key, proof.warnings
        else:
            key = identifiers.card_serial_key(request.card_serial)
        response = engine.check_by_card(key, dates.today_jst()) + extra
        if writer is not None:
            await writer.append(audit.AuditRecord(
                actor=caller.label, action="CheckByCard", subject=card_subject(key),
                items=describe_answer(response), purpose="qualification check at a visit",
                request_id=request.challenge.nonce.hex()))
        return response

    check_by_card.takes_caller = True  # the role interceptor passes the caller it took
    handler = grpc.method_handlers_generic_handler("onshi.v1.EligibilityService", {
        "CheckByCard": grpc.unary_unary_rpc_method_handler(check_by_card)})
    tls = bool(args.pki)
    server = grpc.aio.server(interceptors=auth.interceptors(asyncio=True) if tls else ())
    server.add_generic_rpc_handlers((handler,))
    if tls:
        ca, cert, key = auth.pki_paths(args.pki, "server")
        port = server.add_secure_port("127.0.0.1:0", auth.server_credentials(cert, key, ca))
    else:
        port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(f"serving on 127.0.0.1:{port}", flush=True)
    await server.wait_for_termination()
    return 0


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    sys.exit(asyncio.run(main()))
