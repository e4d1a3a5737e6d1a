"""`review`: review bodies (支払基金 / 国保中央会) streaming claim batches to
ClaimService.VerifyClaims on the secondary server, one verdict per claim.

Claims bill numbers that exist in the store, for visits last month; a small
share are 不詳 claims (insurer 77777777, number 777777777) with declaration
data that matches nobody (UNRESOLVED). Each locust request is one batch round
trip (send a batch, receive its verdicts) on a long-lived stream; its response
length is the number of verdicts.

    ONSHI_BENCH_SECONDARY      host:port of `onshi ingest-serve`
    ONSHI_BENCH_CLAIM_BATCH    claims per batch (default 1000)
    ONSHI_BENCH_CLAIM_RATE     batches/s per review user (default 2)
"""

from __future__ import annotations

import datetime as dt
import os
import random
import secrets

from google.type import date_pb2
from grpc_user import BatchStream, GrpcUser, fire, load_queries, note_answer, role
from locust import constant_throughput, task

BATCH = int(os.environ.get("ONSHI_BENCH_CLAIM_BATCH", "1000"))
RATE = float(os.environ.get("ONSHI_BENCH_CLAIM_RATE", "2"))
UNKNOWN_SHARE = 0.01  # 不詳 claims
PREBUILT = 8  # distinct batches per user, re-sent in turn
FACILITY = "1312345678"


def _date(d: dt.date) -> date_pb2.Date:
    return date_pb2.Date(year=d.year, month=d.month, day=d.day)


def _birth(iso: str) -> date_pb2.Date:
    return _date(dt.date.fromisoformat(iso))


class ReviewBody(GrpcUser):
    target = os.environ.get("ONSHI_BENCH_SECONDARY")
    identity = "review"
    wait_time = constant_throughput(RATE)
    fixed_count = int(os.environ.get("ONSHI_BENCH_REVIEW_USERS", "1"))

    @property
    def stub_classes(self):
        from onshi.v1 import claims_pb2_grpc

        return (claims_pb2_grpc.ClaimServiceStub,)

    def on_start(self):
        from onshi.v1 import claims_pb2

        self.pb = claims_pb2
        self.queries = load_queries()
        self.rng = random.Random(secrets.randbits(64))
        self.prefix = secrets.token_hex(4)
        self.seq = 0
        (self.stub,) = self.stubs
        self.connect()
        self.outcomes = {v.number: v.name.removeprefix("OUTCOME_") for v in claims_pb2.Outcome.DESCRIPTOR.values}
        # Last calendar month, as a review body works (claims arrive the month after).
        first_this = dt.date.today().replace(day=1)
        self.month_end = first_this - dt.timedelta(days=1)
        self.month_start = self.month_end.replace(day=1)
        self.stream = None
        self._prebuilt()  # before the first timed batch

    def on_stop(self):
        if self.stream is not None:
            self.stream.close()
        super().on_stop()

    def _claim(self):
        self.seq += 1
        first = self.month_start + dt.timedelta(days=self.rng.randrange(20))
        last = first + dt.timedelta(days=self.rng.randrange(min(7, (self.month_end - first).days + 1)))
        claim = self.pb.Claim(
            claim_id=f"{self.prefix}-{self.seq}",
            facility_code=FACILITY,
            first_visit_date=_date(first),
            last_visit_date=_date(last),
            kind=self.pb.CLAIM_KIND_MEDICAL,
            points=self.rng.randrange(100, 5000),
        )
        if self.rng.random() < UNKNOWN_SHARE:
            claim.insurer_number, claim.number = "77777777", "777777777"
            claim.birth_date.CopyFrom(_birth("1960-01-01"))
            claim.declaration.name_kana = "ベンチ ナナシ"
            claim.declaration.sex = 1
            claim.declaration.address = "東京都千代田区"
        else:
            insurer, symbol, number, branch, birth = self.rng.choice(self.queries["numbers"])
            claim.insurer_number, claim.symbol, claim.number, claim.branch = insurer, symbol, number, branch
            claim.birth_date.CopyFrom(_birth(birth))
        return claim

    def _prebuilt(self) -> list[bytes]:
        """A few serialized batches built once: building 1,000 claims in Python
        takes tens of ms, which in a gevent process would stall every terminal
        greenlet beside it (mixed) and measure the client, not the service.
        Re-sending a claim ID re-verifies it and replaces its record."""
        if not hasattr(self, "_batches"):
            self._batches = [
                self.pb.VerifyClaimsRequest(claims=[self._claim() for _ in range(BATCH)]).SerializeToString()
                for _ in range(PREBUILT)
            ]
            self._next = 0
        self._next += 1
        return self._batches[self._next % len(self._batches)]

    @task
    def verify_batch(self):
        import time

        request = self._prebuilt()
        started = time.perf_counter()
        try:
            if self.stream is None:
                method = self.channel.stream_stream(
                    "/onshi.v1.ClaimService/VerifyClaims",
                    request_serializer=None,
                    response_deserializer=self.pb.VerifyClaimsResponse.FromString,
                )
                self.stream = BatchStream(method, metadata=role("review"))
            answer = self.stream.round_trip(request)
        except Exception as exc:  # noqa: BLE001 - any failure is a failed request, then a new stream
            fire(self.environment, "VerifyClaims batch", started, exception=exc)
            self.stream = None
            return
        if len(answer.verdicts) != BATCH:
            fire(
                self.environment,
                "VerifyClaims batch",
                started,
                exception=AssertionError(f"{len(answer.verdicts)} verdicts for {BATCH} claims"),
            )
            return
        fire(self.environment, "VerifyClaims batch", started, length=len(answer.verdicts))
        for verdict in answer.verdicts[:50]:  # a sample of the outcome mix
            note_answer("claim", self.outcomes.get(verdict.outcome, str(verdict.outcome)))
