"""`insurer`: insurers streaming enrollment updates to
EnrollmentService.StreamUpdates on the secondary server (the single writer).

Each insurer user first registers its own synthetic residents in the registry
(PutResidents, the J-LIS stand-in), then streams batches of updates for them:
an acquisition for each new member, later burden-ratio changes and a few losses.
Basic information always matches the registry, so updates are ACCEPTED (a
QUARANTINED or REJECTED ack counts as a failed batch: it means the load is not
what we meant to measure). Each locust request is one batch round trip: send
the batch, receive its acks, which the service sends only after the group
commit is durable.

    ONSHI_BENCH_SECONDARY        host:port of `onshi ingest-serve`
    ONSHI_BENCH_UPDATE_BATCH     updates per batch (default 100)
    ONSHI_BENCH_UPDATE_RATE      batches/s per insurer user (default 5)
"""

from __future__ import annotations

import datetime as dt
import os
import random
import secrets

from google.type import date_pb2
from grpc_user import BatchStream, GrpcUser, caller, fire, note_answer, open_channel, role
from locust import constant_throughput, task

from onshi.core import identifiers

BATCH = int(os.environ.get("ONSHI_BENCH_UPDATE_BATCH", "100"))
RATE = float(os.environ.get("ONSHI_BENCH_UPDATE_RATE", "5"))
RESIDENTS = 2_000  # per insurer user; new members first, then changes to them


def _date(d: dt.date) -> date_pb2.Date:
    return date_pb2.Date(year=d.year, month=d.month, day=d.day)


class Insurer(GrpcUser):
    target = os.environ.get("ONSHI_BENCH_SECONDARY")
    identity = "insurer"  # under mTLS: the PKI's first insurer certificate, and its insurer number
    wait_time = constant_throughput(RATE)
    fixed_count = int(os.environ.get("ONSHI_BENCH_INSURER_USERS", "1"))

    @property
    def stub_classes(self):
        from onshi.v1 import enrollment_pb2_grpc

        return (enrollment_pb2_grpc.EnrollmentServiceStub,)

    def on_start(self):
        from onshi.v1 import enrollment_pb2, enrollment_pb2_grpc, qualification_pb2

        self.pb, self.qpb = enrollment_pb2, qualification_pb2
        self.rng = random.Random(secrets.randbits(64))
        (self.stub,) = self.stubs
        self.connect()
        tag = self.rng.randrange(10**5)
        # A union plan (06) number of our own, so updates never touch the
        # generated population's members; under mTLS the certificate's number,
        # with a symbol of this run's own.
        found = caller(self.identity)
        self.insurer = min(found[0].codes) if found else identifiers.with_check_digit(f"06{tag:05d}")
        self.symbol = f"B{tag:05d}"
        self.prefix = f"b7{tag:05d}{secrets.token_hex(3)}"
        self.seq = 0
        self.residents = []
        for i in range(RESIDENTS):
            birth = dt.date(1950, 1, 1) + dt.timedelta(days=self.rng.randrange(25_000))
            self.residents.append(
                enrollment_pb2.Resident(
                    resident_id=f"9{tag:05d}{i:05d}",
                    name=f"負荷 試験{i}",
                    name_kana=f"フカ シケン{i}",
                    birth_date=_date(birth),
                    sex=1 + i % 2,
                    address="東京都千代田区千代田１－１",
                    postcode="1000001",
                )
            )
        # The registry (the J-LIS stand-in) is the operator's to fill.
        operator = open_channel(self.address, "operator") if found else self._raw_channel
        registry = enrollment_pb2_grpc.EnrollmentServiceStub(operator)
        try:
            for start in range(0, RESIDENTS, 500):
                registry.PutResidents(
                    enrollment_pb2.PutResidentsRequest(residents=self.residents[start : start + 500]),
                    metadata=role("operator"),
                    timeout=60,
                )
        finally:
            if operator is not self._raw_channel:
                operator.close()
        self.enrolled = 0
        self.stream = None
        self.outcomes = {
            v.number: v.name.removeprefix("ENROLLMENT_OUTCOME_")
            for v in enrollment_pb2.EnrollmentOutcome.DESCRIPTOR.values
        }

    def on_stop(self):
        if self.stream is not None:
            self.stream.close()
        super().on_stop()

    def _person(self, r):
        return self.qpb.Person(
            name=r.name,
            name_kana=r.name_kana,
            sex=r.sex,
            birth_date=r.birth_date,
            address=r.address,
            postcode=r.postcode,
        )

    def _number(self, i: int):
        return self.pb.InsuredNumber(symbol=self.symbol, number=f"{i + 1}", branch="00")

    def _update(self):
        self.seq += 1
        update = self.pb.EnrollmentUpdate(update_id=f"{self.prefix}-{self.seq}", insurer_number=self.insurer)
        if self.enrolled < RESIDENTS:
            i = self.enrolled
            self.enrolled += 1
            r = self.residents[i]
            update.resident_id = r.resident_id
            update.person.CopyFrom(self._person(r))
            q = update.acquisition.qualification
            q.insurer_number, q.insurer_name = self.insurer, "負荷試験健保組合"
            n = self._number(i)
            q.symbol, q.number, q.branch = n.symbol, n.number, n.branch
            q.relationship = self.qpb.RELATIONSHIP_INSURED
            q.acquisition_date.CopyFrom(_date(dt.date.today() - dt.timedelta(days=30)))
            q.burden_ratio_percent = 30
            q.card_kind = self.qpb.CARD_KIND_EMPLOYEE
            return update
        i = self.rng.randrange(RESIDENTS)
        r = self.residents[i]
        update.resident_id = r.resident_id
        update.person.CopyFrom(self._person(r))
        change = update.burden_ratio_change
        change.insured_number.CopyFrom(self._number(i))
        change.burden_ratio_percent = self.rng.choice((10, 20, 30))
        return update

    @task
    def stream_batch(self):
        import time

        request_updates = [self._update() for _ in range(BATCH)]
        started = time.perf_counter()
        acks = []
        try:
            if self.stream is None:
                self.stream = _UpdateStream(self.stub.StreamUpdates, self.insurer)
            acks = self.stream.send(request_updates)
        except Exception as exc:  # noqa: BLE001 - any failure is a failed batch, then a new stream
            fire(self.environment, "StreamUpdates batch", started, exception=exc)
            self.stream = None
            return
        bad = [a for a in acks if a.outcome != self.pb.ENROLLMENT_OUTCOME_ACCEPTED]
        for a in acks[:50]:
            note_answer("update", self.outcomes.get(a.outcome, str(a.outcome)))
        if bad:
            first = bad[0]
            fire(
                self.environment,
                "StreamUpdates batch",
                started,
                exception=AssertionError(
                    f"{len(bad)} of {len(acks)} not ACCEPTED, e.g. {self.outcomes.get(first.outcome)} "
                    f"{first.message or list(first.field_violations)}"[:300]
                ),
            )
            return
        fire(self.environment, "StreamUpdates batch", started, length=len(acks))


class _UpdateStream(BatchStream):
    """StreamUpdates takes one update per message and acks each: a batch is
    BATCH messages sent back to back, then BATCH acks read."""

    def __init__(self, method, insurer: str):
        super().__init__(method, metadata=role("insurer", insurer=insurer))

    def send(self, updates) -> list:
        import gevent

        for u in updates:
            self._queue.put(u)
        with gevent.Timeout(self._timeout, TimeoutError(f"no acks in {self._timeout:.0f} s")):
            return [next(self._responses) for _ in updates]
