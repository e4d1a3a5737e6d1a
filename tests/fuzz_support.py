"""A request fuzzer for every RPC of both servers (`onshi serve`, `onshi ingest-serve`).

What a server serves is asked of the server itself (server reflection lists
its services) and each method's request type is read from the protobuf
descriptors, so a new service or RPC is fuzzed without touching this file.
Each example is one call through a generic channel (raw bytes, no serializer),
so bodies that no stub would send reach the server too:

* `fields`    a request built from its descriptor, every field drawn from the
              values that break things: empty, 2^64-1, -2^63, year 2147483647,
              out-of-range timestamps, odd Unicode, long text, unknown enums;
* `seed`      a valid request of that RPC (a card proof, a claim, an update ...)
              with a few of its fields replaced by such values;
* `bytes`     a valid or generated body cut short, bit-flipped, with invalid
              UTF-8 in a string, a wrong wire type, a huge length, deep nesting,
              or plain garbage.

Streaming RPCs get 1-3 such messages. The generator is our own (seeded
`random.Random`), not Hypothesis: one example is one real call, a run is
reproduced from its seed, and the bench command (bench/fuzz.py) runs the same
generator for as long as asked. A failing example is printed as method, kind
and body hex: enough to replay it.
"""

from __future__ import annotations

import collections
import datetime as dt
import os
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from google.protobuf import descriptor_pool
from google.protobuf.descriptor import FieldDescriptor as F
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from onshi.core import cardproof, dates
from onshi.server import auth
from onshi.v1 import (  # noqa: F401 - every service's descriptors join the pool
    audit_pb2,
    claims_pb2,
    eligibility_pb2,
    enrollment_pb2,
    qualification_pb2,
    relay_pb2,
    trust_pb2,
)
from tests.ingest_support import Proc, onshi
from tests.trust_helpers import (
    FACILITY,
    INSURER_A,
    INSURER_C,
    build_store,
    client_credentials,
    facility_stem,
    pki_dir,
    proof_fields,
)

# INTERNAL/UNKNOWN: a caller's bytes reached a bug; DEADLINE_EXCEEDED: a call hung.
BAD_CODES = frozenset({grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.DEADLINE_EXCEEDED})
CALL_TIMEOUT = 15.0
ROLE_STEMS = {"facility": facility_stem(), "insurer": "insurer-a", "review": "review", "operator": "operator"}

# --- values that break things ---------------------------------------------------

INT32 = (0, 1, -1, 2**31 - 1, -(2**31), 7, 100, 101, 1000, 10_000)
INT64 = (0, 1, -1, 2**63 - 1, -(2**63), 2**53 + 1, 10**12, int(time.time()))
UINT64 = (0, 1, 2**64 - 1, 2**63, 2**63 - 1, 2**32, 10**6)
UINT32 = (0, 1, 2**32 - 1, 2**31)
YEARS = (0, 1, 1970, 2024, 9999, 10_000, 2**31 - 1, -1, -(2**31))
TEXTS = (
    "",
    " ",
    "0",
    "00",
    "1310000001",
    "06139992",
    "01130012",
    "77777777",
    "777777777",
    "ヤマダタロウ",
    "山田太郎",
    "\u0000",
    "\x1f",
    "a\x1fb",
    "\n\r\t",
    "\u202e\u202d",
    "e\u0301\u0301\u0301",
    "\U0001f600" * 3,
    "𠮷野家",
    "０６１３９９９２",
    "ｱｲｳ",
    "\ufeff",
    "\uffff",
    "A" * 129,
    "9" * 65,
    "-1",
    "1e9",
    "%s%n",
    "'; DROP TABLE x; --",
)
ODD_CHARS = "\u0000\u0001\x1f\u200b\u202e\ufeff\uffff\U0001f600𠮷ア０ｱé\u0301\n"


@dataclass
class Example:
    method: str
    kind: str
    bodies: list[bytes]
    metadata: tuple = ()


class Generator:
    """Bodies for one RPC: built from its descriptor, from a seed, or at the byte level."""

    def __init__(self, rng: random.Random, seeds: dict[str, Callable[[], list]]):
        self.rng = rng
        self.seeds = seeds

    # -- values --------------------------------------------------------------
    def text(self) -> str:
        r = self.rng
        pick = r.random()
        if pick < 0.55:
            return r.choice(TEXTS)
        if pick < 0.85:
            return "".join(r.choice(ODD_CHARS + "0123456789") for _ in range(r.randint(1, 40)))
        if pick < 0.99:
            return r.choice("0Aア山\U0001f600") * r.randint(100, 5000)
        return "x" * r.choice((64 * 1024, 1 << 20))  # the servers' message limits and beyond

    def scalar(self, f):
        r = self.rng
        t = f.type
        if t == F.TYPE_STRING:
            return self.text()
        if t == F.TYPE_BYTES:
            n = r.choice((0, 1, 15, 16, 32, 33, 300, 3000))
            return r.randbytes(n)
        if t == F.TYPE_BOOL:
            return r.random() < 0.5
        if t == F.TYPE_ENUM:
            values = [v.number for v in f.enum_type.values]
            return r.choice(values) if r.random() < 0.7 else r.choice((-1, 99, 2**31 - 1, -(2**31)))
        if t in (F.TYPE_INT32, F.TYPE_SINT32, F.TYPE_SFIXED32):
            return r.choice(INT32) if r.random() < 0.8 else r.randint(-(2**31), 2**31 - 1)
        if t in (F.TYPE_INT64, F.TYPE_SINT64, F.TYPE_SFIXED64):
            return r.choice(INT64) if r.random() < 0.8 else r.randint(-(2**63), 2**63 - 1)
        if t in (F.TYPE_UINT64, F.TYPE_FIXED64):
            return r.choice(UINT64) if r.random() < 0.8 else r.randint(0, 2**64 - 1)
        if t in (F.TYPE_UINT32, F.TYPE_FIXED32):
            return r.choice(UINT32)
        if t in (F.TYPE_DOUBLE, F.TYPE_FLOAT):
            return r.choice((0.0, -1.0, float("inf"), float("nan"), 1e308))
        raise AssertionError(f"field type {t} of {f.full_name}")

    def fill(self, msg, depth: int = 0, density: float = 0.6) -> None:
        """Set some fields of msg to breaking values (recursively)."""
        r = self.rng
        name = msg.DESCRIPTOR.full_name
        if name == "google.type.Date":
            self.date(msg)
            return
        if name == "google.protobuf.Timestamp":
            msg.seconds = r.choice((0, -1, 2**63 - 1, -(2**63), 253402300800, -62135596801, int(time.time())))
            msg.nanos = r.choice((0, 999_999_999, 1_000_000_000, -1, 2**31 - 1))
            return
        for f in msg.DESCRIPTOR.fields:
            if r.random() > density:
                continue
            repeated = f.is_repeated
            count = (
                (r.choice((0, 1, 2, 3, 3, 50)) if r.random() < 0.97 else r.choice((1000, 10_000))) if repeated else 1
            )
            if depth:
                count = min(count, 50)
            if f.type == F.TYPE_MESSAGE:
                if depth >= 4 or f.message_type.GetOptions().map_entry:
                    continue
                if not repeated:
                    sub = getattr(msg, f.name)
                    sub.SetInParent()
                    self.fill(sub, depth + 1, density)
                    continue
                distinct = []
                for _ in range(min(count, 3)):
                    sub = message_class(f.message_type)()
                    self.fill(sub, depth + 1, density)
                    distinct.append(sub)
                if distinct:  # a big repeated field: copies of a few (cheap to make)
                    getattr(msg, f.name).extend((distinct * (count // len(distinct) + 1))[:count])
                continue
            if repeated:
                values = [self.scalar(f) for _ in range(min(count, 50))]
                if count > 50:  # many copies of one value: big repeated fields cost nothing to make
                    values = values * (count // len(values))
                getattr(msg, f.name).extend(values)
            else:
                setattr(msg, f.name, self.scalar(f))

    def date(self, d) -> None:
        r = self.rng
        if r.random() < 0.4:
            year, month, day = r.choice(((2024, 4, 2), (1970, 1, 2), (2024, 2, 29), (2023, 2, 29), (2024, 4, 0)))
        else:
            year = r.choice(YEARS)
            month = r.choice((0, 1, 12, 13, -1, 2**31 - 1))
            day = r.choice((0, 1, 28, 31, 32, -1, 2**31 - 1))
        d.year, d.month, d.day = year, month, day

    # -- bodies -----------------------------------------------------------------
    def example(self, method) -> Example:
        r = self.rng
        cls = message_class(method.input)
        count = r.choice((1, 1, 2, 3)) if method.client_streaming else 1
        pick = r.random()
        seed = self.seeds.get(method.path)
        if pick < 0.35 or (pick < 0.6 and seed is None):
            kind = "fields"
            bodies = []
            for _ in range(count):
                msg = cls()
                self.fill(msg)
                bodies.append(msg.SerializeToString())
        elif pick < 0.6:
            kind = "seed"
            bodies = []
            for msg in seed()[:count]:
                self.mutate(msg)
                bodies.append(msg.SerializeToString())
        else:
            kind = "bytes"
            base = seed()[0] if seed is not None and r.random() < 0.6 else None
            if base is None:
                base = cls()
                self.fill(base, density=0.8)
            raw = base.SerializeToString()
            bodies = [self.corrupt(raw) for _ in range(count)]
        return Example(method.path, kind, bodies, self.metadata())

    def mutate(self, msg) -> None:
        """Replace one to three fields (at any depth) of a valid message."""
        r = self.rng
        for _ in range(r.randint(1, 3)):
            target = msg
            for _depth in range(4):
                subs = [
                    f
                    for f in target.DESCRIPTOR.fields
                    if f.type == F.TYPE_MESSAGE and not f.is_repeated and target.HasField(f.name)
                ]
                if not subs or r.random() < 0.5:
                    break
                target = getattr(target, r.choice(subs).name)
            fields = list(target.DESCRIPTOR.fields)
            if not fields:
                continue
            f = r.choice(fields)
            if f.is_repeated:
                getattr(target, f.name).__delitem__(slice(None))
                if f.type == F.TYPE_MESSAGE:
                    for _ in range(r.choice((0, 1, 2))):
                        self.fill(getattr(target, f.name).add())
                else:
                    getattr(target, f.name).extend(self.scalar(f) for _ in range(r.choice((0, 1, 3))))
            elif f.type == F.TYPE_MESSAGE:
                sub = getattr(target, f.name)
                sub.Clear()
                sub.SetInParent()
                self.fill(sub)
            elif f.type == F.TYPE_BYTES and r.random() < 0.5 and getattr(target, f.name):
                setattr(target, f.name, self.flip(getattr(target, f.name)))
            else:
                setattr(target, f.name, self.scalar(f))

    def flip(self, data: bytes) -> bytes:
        """A few bytes of data changed (a certificate's version byte, a signature bit...)."""
        r = self.rng
        b = bytearray(data)
        for _ in range(r.randint(1, 4)):
            if not b:
                break
            i = r.randrange(len(b)) if r.random() < 0.7 else r.randrange(min(len(b), 32))
            b[i] = r.randrange(256)
        return bytes(b)

    def corrupt(self, raw: bytes) -> bytes:
        r = self.rng
        how = r.randrange(9)
        if how == 0 and raw:
            return raw[: r.randrange(len(raw))]  # cut short
        if how == 1 and raw:
            return self.flip(raw)  # a few bytes changed
        if how == 2:
            return r.randbytes(r.choice((1, 5, 64, 1000)))  # garbage
        if how == 3:
            return raw + b"\x0a\x04\xff\xfe\xc0\x80"  # field 1: invalid UTF-8
        if how == 4:
            return raw + b"\x0a\xff\xff\xff\xff\x0f"  # a length far past the end
        if how == 5:
            return b"\x0b" * 200 + b"\x0c" * 200  # nested groups, deeper than any limit
        if how == 6:
            return raw + b"\x09" + b"\x00" * 3  # fixed64 cut short
        if how == 7:
            return raw + b"\xf8\xff\xff\xff\x0f\x01"  # an unknown field number near the max
        return b"\x12" + bytes([r.randrange(1, 128)]) + raw[:40]  # a wrong wire type/length up front

    def metadata(self) -> tuple:
        r = self.rng
        if r.random() > 0.15:
            return ()
        key = r.choice(("x-request-id", "x-onshi-purpose", "x-onshi-facility", "x-onshi-insurer", "x-onshi-role"))
        value = r.choice(("", "1310000001", "06139992", "A" * 4000, "x,y,,", "06139992,01130012", "%ff"))
        return ((key, value),)


def message_class(descriptor):
    from google.protobuf import message_factory

    return message_factory.GetMessageClass(descriptor)


# --- what each server serves -------------------------------------------------------


@dataclass(frozen=True)
class Method:
    path: str
    input: object
    client_streaming: bool
    server_streaming: bool


def served_methods(channel: grpc.Channel) -> list[Method]:
    """Every method of every service the server lists through reflection."""
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    answer = next(
        iter(
            stub.ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=CALL_TIMEOUT
            )
        )
    )
    pool = descriptor_pool.Default()
    out = []
    for service in answer.list_services_response.service:
        desc = pool.FindServiceByName(service.name)
        out.extend(
            Method(f"/{desc.full_name}/{m.name}", m.input_type, m.client_streaming, m.server_streaming)
            for m in desc.methods
        )
    return out


def call(channel: grpc.Channel, method: Method, example: Example, metadata: tuple) -> grpc.StatusCode:
    """One call; its status (OK when it answered, or when the fuzzer cancelled an endless stream)."""
    md = tuple(metadata) + tuple(example.metadata)
    bodies = example.bodies
    try:
        if not method.client_streaming and not method.server_streaming:
            channel.unary_unary(method.path)(bodies[0], timeout=CALL_TIMEOUT, metadata=md)
        elif not method.client_streaming:  # a watch: it answers, then waits for a change
            responses = channel.unary_stream(method.path)(bodies[0], timeout=CALL_TIMEOUT, metadata=md)
            next(responses, None)
            responses.cancel()
        elif not method.server_streaming:
            channel.stream_unary(method.path)(iter(bodies), timeout=CALL_TIMEOUT, metadata=md)
        else:  # answers to each request; it ends when the requests do
            for _ in channel.stream_stream(method.path)(iter(bodies), timeout=CALL_TIMEOUT, metadata=md):
                pass
    except grpc.RpcError as err:
        return err.code()
    return grpc.StatusCode.OK


# --- the servers -------------------------------------------------------------------


@dataclass
class Target:
    """One running server and how to reach it as each role."""

    name: str
    proc: Proc
    secure: bool
    channels: dict = field(default_factory=dict)
    methods: list[Method] = field(default_factory=list)

    def channel(self, role: str) -> grpc.Channel:
        key = role if self.secure else "plain"
        if key not in self.channels:
            target = f"127.0.0.1:{self.proc.port}"
            self.channels[key] = (
                grpc.secure_channel(target, client_credentials(ROLE_STEMS[role]))
                if self.secure
                else grpc.insecure_channel(target)
            )
        return self.channels[key]

    def metadata(self, role: str) -> tuple:
        """Plaintext servers (no trust options) take the caller's codes from metadata."""
        if self.secure:
            return ()
        return {"facility": (("x-onshi-facility", FACILITY),), "insurer": (("x-onshi-insurer", INSURER_A),)}.get(
            role, ()
        )

    def alive(self) -> bool:
        return self.proc.proc.poll() is None

    def close(self) -> None:
        for channel in self.channels.values():
            channel.close()
        self.proc.kill()


def start_servers(base: Path, *, secure: bool, env: dict | None = None) -> list[Target]:
    """`onshi serve` and `onshi ingest-serve` on one store, as the README runs them
    (secure: --pki with an access log) or without any trust option."""
    store = base / "store"
    if not store.exists():
        build_store(str(store))
    trust = ("--pki", pki_dir(), "--audit-dir", str(base / "audit")) if secure else ()
    tag = "tls" if secure else "plain"
    targets = []
    env = {"ONSHI_CLAIM_HELPERS": "0", **(env or {})}
    for name, argv in (("serve", ("serve", "--workers", "1")), ("ingest-serve", ("ingest-serve",))):
        port_file = base / f"{name}-{tag}.port"
        proc = Proc(
            onshi(*argv, "--data", str(store), "--port", "0", "--port-file", str(port_file), *trust),
            port_file,
            base / f"{name}-{tag}.log",
            timeout=60,
            env=env,
        )
        targets.append(Target(name, proc, secure))
    for t in targets:
        t.methods = served_methods(t.channel("operator"))
    return targets


def roles_for(path: str) -> list[str]:
    allowed = auth.POLICY.get(path)
    return sorted(allowed) if allowed else list(ROLE_STEMS)


# --- valid requests to start from ----------------------------------------------------


def seeds() -> dict[str, Callable[[], list]]:
    from google.type import date_pb2

    from onshi.v1 import enrollment_pb2 as epb

    def d(y, m, day):
        return date_pb2.Date(year=y, month=m, day=day)

    claim = claims_pb2.Claim(
        claim_id="fz1",
        facility_code=FACILITY,
        insurer_number=INSURER_A,
        symbol="A1",
        number="100",
        branch="00",
        birth_date=d(1970, 1, 2),
        first_visit_date=d(2024, 4, 2),
        last_visit_date=d(2024, 4, 2),
        visit_days=[2],
        kind=1,
        points=100,
    )
    unknown = claims_pb2.Claim(
        claim_id="fz2",
        facility_code=FACILITY,
        insurer_number="77777777",
        number="777777777",
        birth_date=d(1990, 5, 6),
        first_visit_date=d(2024, 4, 2),
        last_visit_date=d(2024, 4, 2),
        kind=1,
        points=100,
        declaration=claims_pb2.SelfDeclaration(name_kana="スズキイチロウ", sex=1, address="東京都千代田区千代田1-1"),
    )
    person = qualification_pb2.Person(
        name="布瑠部 由良",
        name_kana="フルベ ユラ",
        sex=2,
        birth_date=d(1999, 9, 9),
        address="東京都港区1-1",
        postcode="1050001",
    )
    qual = qualification_pb2.Qualification(
        symbol="Z9", number="9", branch="00", relationship=1, acquisition_date=d(2024, 4, 1), burden_ratio_percent=30
    )
    update = epb.EnrollmentUpdate(
        update_id="fz-u1",
        insurer_number=INSURER_A,
        resident_id="10000009999",
        person=person,
        acquisition=epb.Acquisition(qualification=qual),
    )
    resident = epb.Resident(
        resident_id="10000009999",
        name=person.name,
        name_kana=person.name_kana,
        sex=2,
        birth_date=person.birth_date,
        address=person.address,
        postcode=person.postcode,
    )

    def copies(msg, n):
        def make():
            out = []
            for _ in range(n):
                m = type(msg)()
                m.CopyFrom(msg)
                out.append(m)
            return out

        return make

    def card(cls, purpose):
        def make():
            return [cls(**_proof_fields(purpose))]

        return make

    return {
        "/onshi.v1.EligibilityService/CheckByCard": card(
            eligibility_pb2.CheckByCardRequest, cardproof.PURPOSE_CHECK_BY_CARD
        ),
        "/onshi.v1.EligibilityService/CheckByNumber": lambda: [
            eligibility_pb2.CheckByNumberRequest(
                insurer_number=INSURER_C,
                symbol="C1",
                number="400",
                branch="00",
                birth_date=d(1990, 5, 6),
                as_of=d(2024, 4, 2),
            )
        ],
        "/onshi.v1.AuditService/ListMyAccess": card(audit_pb2.ListMyAccessRequest, cardproof.PURPOSE_LIST_MY_ACCESS),
        "/onshi.v1.ClaimService/VerifyClaims": copies(claims_pb2.VerifyClaimsRequest(claims=[claim, unknown]), 3),
        "/onshi.v1.ClaimService/Apportion": lambda: [
            claims_pb2.ApportionRequest(facility_code=FACILITY, first_month=d(2024, 4, 0), last_month=d(2024, 6, 0))
        ],
        "/onshi.v1.EnrollmentService/StreamUpdates": copies(update, 3),
        "/onshi.v1.EnrollmentService/StreamUpdateBatches": copies(epb.StreamUpdateBatchesRequest(updates=[update]), 3),
        "/onshi.v1.EnrollmentService/PutResidents": lambda: [epb.PutResidentsRequest(residents=[resident])],
        "/onshi.v1.EnrollmentService/ListQuarantine": lambda: [
            epb.ListQuarantineRequest(insurer_number=INSURER_A, page_size=10, after_quarantine_id=1)
        ],
        "/onshi.v1.EnrollmentService/ResolveQuarantine": lambda: [
            epb.ResolveQuarantineRequest(quarantine_id=1, resolution=epb.RESOLUTION_DISCARD, reason="duplicate")
        ],
        "/onshi.v1.EnrollmentService/ListNotices": lambda: [
            epb.ListNoticesRequest(insurer_number=INSURER_A, page_size=10, after_notice_id=1)
        ],
        "/onshi.v1.EnrollmentService/AcknowledgeNotices": lambda: [epb.AcknowledgeNoticesRequest(notice_ids=[1, 2])],
        "/onshi.v1.LinkService/LinkCard": lambda: [
            epb.LinkCardRequest(card_serial="ABC123", resident_id="10000009999", insurer_number=INSURER_A)
        ],
        "/onshi.v1.LinkService/ListLinkNotices": lambda: [epb.ListLinkNoticesRequest(resident_id="10000009999")],
        "/onshi.v1.RelayService/FindInsurer": lambda: [
            relay_pb2.FindInsurerRequest(
                own_member=relay_pb2.MemberNumber(insurer_number=INSURER_A, symbol="A1", number="100", branch="00"),
                legal_basis="健康保険法 第197条",
            )
        ],
        "/onshi.v1.TrustService/SetSystemFailureMode": lambda: [
            trust_pb2.SetSystemFailureModeRequest(enabled=True, reason="drill")
        ],
        "/onshi.v1.TrustService/LookupByBasicInfo": lambda: [
            trust_pb2.LookupByBasicInfoRequest(
                name_kana="スズキイチロウ", sex=1, birth_date=d(1990, 5, 6), address="東京都千代田区千代田1-1"
            )
        ],
        "/onshi.v1.TrustService/PutRevocationList": lambda: [trust_pb2.PutRevocationListRequest(crl=_crl())],
        "/grpc.health.v1.Health/Check": lambda: [health_pb2.HealthCheckRequest(service="onshi.v1.EligibilityService")],
        "/grpc.health.v1.Health/Watch": lambda: [health_pb2.HealthCheckRequest(service="")],
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": lambda: [
            reflection_pb2.ServerReflectionRequest(file_containing_symbol="onshi.v1.ClaimService"),
            reflection_pb2.ServerReflectionRequest(list_services=""),
            reflection_pb2.ServerReflectionRequest(file_by_filename="onshi/v1/claims.proto"),
        ],
    }


def _proof_fields(purpose: str = cardproof.PURPOSE_CHECK_BY_CARD) -> dict:
    """A fresh card proof (new nonce) made for `purpose`."""
    return proof_fields("valid-3", purpose=purpose)


def _crl() -> bytes:
    with open(os.path.join(pki_dir(), "jpki", "crl.der"), "rb") as f:
        return f.read()


# --- a run -------------------------------------------------------------------------

KNOWN_NUMBER = eligibility_pb2.CheckByNumberRequest(
    insurer_number=INSURER_C,
    symbol="C1",
    number="400",
    branch="00",
    birth_date=dates.to_proto(dt.date(1990, 5, 6)),
    as_of=dates.to_proto(dt.date(2024, 4, 2)),
)
KNOWN_CLAIM = claims_pb2.VerifyClaimsRequest(
    claims=[
        claims_pb2.Claim(
            claim_id="known",
            facility_code=FACILITY,
            insurer_number=INSURER_C,
            symbol="C1",
            number="400",
            branch="00",
            birth_date=dates.to_proto(dt.date(1990, 5, 6)),
            first_visit_date=dates.to_proto(dt.date(2024, 4, 2)),
            last_visit_date=dates.to_proto(dt.date(2024, 4, 2)),
            kind=1,
            points=100,
        )
    ]
)


def known_answer(target: Target) -> bytes:
    """A check the fuzz cannot change (a person no seed touches), as raw bytes."""
    if target.name == "serve":
        return target.channel("review").unary_unary("/onshi.v1.EligibilityService/CheckByNumber")(
            KNOWN_NUMBER.SerializeToString(), timeout=CALL_TIMEOUT
        )
    responses = target.channel("facility").stream_stream("/onshi.v1.ClaimService/VerifyClaims")(
        iter([KNOWN_CLAIM.SerializeToString()]), timeout=CALL_TIMEOUT, metadata=target.metadata("facility")
    )
    return b"".join(responses)


@dataclass
class Report:
    examples: int = 0
    codes: collections.Counter = field(default_factory=collections.Counter)
    by_server: dict = field(default_factory=lambda: collections.defaultdict(collections.Counter))
    bad: list = field(default_factory=list)
    seconds: float = 0.0
    slowest: list = field(default_factory=list)  # (seconds, server, method, code)

    def add(self, target: Target, example: Example, role: str, code: grpc.StatusCode, seconds: float) -> None:
        self.examples += 1
        self.slowest = sorted([*self.slowest, (seconds, target.name, example.method, code.name)], reverse=True)[:5]
        self.codes[code.name] += 1
        self.by_server[target.name + (" (mTLS)" if target.secure else " (plaintext)")][code.name] += 1
        if code in BAD_CODES:
            self.bad.append((target.name, target.secure, role, code.name, example))


def run(targets: list[Target], examples: int, seed: int, *, log=None) -> Report:
    """`examples` calls spread over every served method of every target, round-robin."""
    rng = random.Random(seed)
    gen = Generator(rng, seeds())
    report = Report()
    plan = [(t, m) for t in targets for m in t.methods]
    started = time.monotonic()
    for i in range(examples):
        target, method = plan[i % len(plan)]
        roles = roles_for(method.path)
        role = rng.choice(roles) if rng.random() < 0.9 else rng.choice(list(ROLE_STEMS))
        example = gen.example(method)
        began = time.monotonic()
        code = call(target.channel(role), method, example, target.metadata(role))
        report.add(target, example, role, code, time.monotonic() - began)
        if code in BAD_CODES and log is not None:
            print(describe(report.bad[-1]), file=log, flush=True)
        if not target.alive():
            report.bad.append((target.name, target.secure, role, "SERVER DIED", example))
            break
    report.seconds = time.monotonic() - started
    return report


def describe(bad) -> str:
    name, secure, role, code, example = bad
    bodies = " | ".join(b[:200].hex() + ("..." if len(b) > 200 else "") + f" ({len(b)} bytes)" for b in example.bodies)
    return (
        f"{code}: {name} ({'mTLS' if secure else 'plaintext'}) {example.method} as {role}, "
        f"{example.kind} body {bodies} metadata {example.metadata}"
    )


def print_report(report: Report, out=sys.stdout) -> None:
    print(f"{report.examples} examples in {report.seconds:.1f} s", file=out)
    for server, codes in sorted(report.by_server.items()):
        print(f"  {server}: " + ", ".join(f"{c} {n}" for c, n in codes.most_common()), file=out)
    print("  total: " + ", ".join(f"{c} {n}" for c, n in report.codes.most_common()), file=out)
    print("  slowest calls: " + "; ".join(f"{s:.2f} s {name} {m} {c}" for s, name, m, c in report.slowest), file=out)


# --- every field at its edges ---------------------------------------------------------

EDGE_INTS = {
    "int32": (2**31 - 1, -(2**31)),
    "int64": (2**63 - 1, -(2**63)),
    "uint64": (2**64 - 1,),
    "uint32": (2**32 - 1,),
}


def edge_values(f):
    """The values at the edge of what field f's type can hold (and a little past what any rule allows)."""
    t = f.type
    if t == F.TYPE_STRING:
        return ("x" * (1 << 20), "\u0000\x1f\u202e\U0001f600", "")
    if t == F.TYPE_BYTES:
        return (b"\xff" * 70_000, b"")
    if t == F.TYPE_ENUM:
        return (2**31 - 1, -1)
    if t in (F.TYPE_INT32, F.TYPE_SINT32, F.TYPE_SFIXED32):
        return EDGE_INTS["int32"]
    if t in (F.TYPE_INT64, F.TYPE_SINT64, F.TYPE_SFIXED64):
        return EDGE_INTS["int64"]
    if t in (F.TYPE_UINT64, F.TYPE_FIXED64):
        return EDGE_INTS["uint64"]
    if t in (F.TYPE_UINT32, F.TYPE_FIXED32):
        return EDGE_INTS["uint32"]
    return ()


EDGE_DATES = ((2**31 - 1, 1, 1), (-(2**31), 12, 31), (2024, 2**31 - 1, 1), (2024, 1, -1), (0, 0, 0), (9999, 12, 31))
EDGE_TIMES = ((2**63 - 1, 0), (-(2**63), 0), (253402300800, 0), (0, -1), (0, 1_000_000_000))


def edge_cases(base, prefix: str = "", depth: int = 0):
    """(field path, message) for every field of `base` (a valid request) at its
    edges: each a copy of base with that one field changed."""
    for f in base.DESCRIPTOR.fields:
        path = prefix + f.name
        if f.type == F.TYPE_MESSAGE:
            sub_name = f.message_type.full_name
            if sub_name == "google.type.Date":
                values = [dict(year=y, month=m, day=d) for y, m, d in EDGE_DATES]
            elif sub_name == "google.protobuf.Timestamp":
                values = [dict(seconds=s, nanos=n) for s, n in EDGE_TIMES]
            else:
                if depth >= 3 or f.message_type.GetOptions().map_entry:
                    continue
                template = (
                    getattr(base, f.name)[0]
                    if f.is_repeated and len(getattr(base, f.name))
                    else (None if f.is_repeated else getattr(base, f.name))
                )
                if template is None:
                    continue
                for sub_path, sub in edge_cases(template, path + ".", depth + 1):
                    msg = type(base)()
                    msg.CopyFrom(base)
                    target = getattr(msg, f.name)
                    (target[0] if f.is_repeated else target).CopyFrom(sub)
                    yield sub_path, msg
                continue
            for value in values:
                msg = type(base)()
                msg.CopyFrom(base)
                target = getattr(msg, f.name)
                target = target.add() if f.is_repeated else target
                for k, v in value.items():
                    setattr(target, k, v)
                yield path, msg
            continue
        for value in edge_values(f):
            msg = type(base)()
            msg.CopyFrom(base)
            if f.is_repeated:
                getattr(msg, f.name).extend([value] * (1 if not isinstance(value, int) else 3))
            else:
                setattr(msg, f.name, value)
            yield path, msg
