"""`terminal`: clinic and pharmacy reception terminals checking patients.

Most checks read the My Number card (card serial), some staff type the number
from a paper card (insurer/symbol/number/branch + birth date), and a few
present a card or number the service does not know (not yet registered by the
insurer, or a typo) — those must answer NO_RECORD, never an error.

Each user is a clinic's reception line with its own connection, paced at a constant rate;
the total rate is ONSHI_BENCH_RATE checks/s spread over ONSHI_BENCH_TERMINALS
users (bench/load.py sets both; -u must equal ONSHI_BENCH_TERMINALS here).
Against the README's server (scripts/run.sh), from the checkout:

    .venv/bin/locust -f bench/locust/terminal.py --headless -u 10 -r 10 -t 10s -H 127.0.0.1:50051

(mTLS as var/pki's operator, queries sampled from var/demo: grpc_user.py).
"""

from __future__ import annotations

import os
import random
import secrets

import gevent
import grpc
from google.type import date_pb2
from grpc_user import CHECK_ROLE, GrpcUser, load_queries, note_answer, role
from locust import constant_throughput, task

from onshi.v1 import eligibility_pb2, eligibility_pb2_grpc

RATE = float(os.environ.get("ONSHI_BENCH_RATE", "100"))
TERMINALS = max(1, int(os.environ.get("ONSHI_BENCH_TERMINALS", "10")))
# The mix, in percent of checks: card, typed number, unknown card, unknown number.
MIX = (85, 12, 2, 1)
VALIDITY = {v.number: v.name.removeprefix("VALIDITY_") for v in eligibility_pb2.Validity.DESCRIPTOR.values}


def _date(iso: str) -> date_pb2.Date:
    y, m, d = (int(p) for p in iso.split("-"))
    return date_pb2.Date(year=y, month=m, day=d)


class Terminal(GrpcUser):
    identity = CHECK_ROLE
    stub_classes = (eligibility_pb2_grpc.EligibilityServiceStub,)
    wait_time = constant_throughput(RATE / TERMINALS)
    weight = 1

    def on_start(self):
        self.queries = load_queries()
        self.rng = random.Random(secrets.randbits(64))
        (self.stub,) = self.stubs
        self.metadata = role(CHECK_ROLE)
        self.connect()
        # A random phase within one pacing interval: users spawned together
        # would otherwise fire in lock-step bursts of `TERMINALS` calls, a load
        # no set of independent reception desks produces.
        gevent.sleep(self.rng.uniform(0, TERMINALS / RATE))

    @task
    def check(self):
        roll = self.rng.randrange(100)
        if roll < MIX[0]:
            self._by_card(self.rng.choice(self.queries["cards"]), "card")
        elif roll < MIX[0] + MIX[1]:
            self._by_number(self.rng.choice(self.queries["numbers"]), "number")
        elif roll < MIX[0] + MIX[1] + MIX[2]:
            # 30 hex digits: a valid serial far above the generated ones.
            self._by_card("F" + secrets.token_hex(15)[1:], "unknown card")
        else:
            insurer, symbol, number, branch, birth = self.rng.choice(self.queries["numbers"])
            self._by_number([insurer, symbol, "9" + number[-7:] + "9", branch, birth], "unknown number")

    def _by_card(self, serial: str, kind: str):
        try:
            answer = self.stub.CheckByCard(
                eligibility_pb2.CheckByCardRequest(card_serial=serial), metadata=self.metadata
            )
        except grpc.RpcError:
            return  # already reported as a failure by the interceptor
        note_answer(kind, VALIDITY.get(answer.validity, str(answer.validity)))

    def _by_number(self, fields: list, kind: str):
        insurer, symbol, number, branch, birth = fields
        try:
            answer = self.stub.CheckByNumber(
                eligibility_pb2.CheckByNumberRequest(
                    insurer_number=insurer, symbol=symbol, number=number, branch=branch, birth_date=_date(birth)
                ),
                metadata=self.metadata,
            )
        except grpc.RpcError:
            return
        note_answer(kind, VALIDITY.get(answer.validity, str(answer.validity)))
