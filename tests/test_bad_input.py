"""Every input a caller can send is answered with a clear status, never
INTERNAL or UNKNOWN: a body that is not the request message, every field of
every RPC at the edge of its type (the largest uint64 ID, a date in year
2147483647, a timestamp outside the Timestamp range, a megabyte of text), a
card certificate that does not parse, and a batch whose every claim is wrong.

Both servers run as the README runs them (mTLS with --pki, an access log); the
RPCs are the ones they list through reflection, so a new one is covered."""

from __future__ import annotations

import grpc
import pytest

from onshi.client.statuses import field_violations
from onshi.core.cardproof import PURPOSE_LIST_MY_ACCESS
from onshi.server import errors, handlers
from onshi.v1 import audit_pb2, eligibility_pb2, trust_pb2
from onshi.v1 import claims_pb2 as cpb
from onshi.v1 import enrollment_pb2 as epb
from tests import fuzz_support as fz
from tests.trust_helpers import FACILITY


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    targets = fz.start_servers(tmp_path_factory.mktemp("bad-input"), secure=True)
    serve, ingest = targets
    # With the failure mode on, LookupByBasicInfo looks further than its switch.
    ingest.channel("operator").unary_unary("/onshi.v1.TrustService/SetSystemFailureMode")(
        trust_pb2.SetSystemFailureModeRequest(enabled=True, reason="drill").SerializeToString(), timeout=10
    )
    yield serve, ingest
    for t in targets:
        t.close()


def error(target, path: str, request, role: str | None = None, stream: bool = False) -> grpc.RpcError:
    channel = target.channel(role or fz.roles_for(path)[0])
    with pytest.raises(grpc.RpcError) as info:
        if stream:
            list(channel.stream_stream(path)(iter([request.SerializeToString()]), timeout=30))
        else:
            channel.unary_unary(path)(request.SerializeToString(), timeout=30)
    return info.value


def test_a_body_that_does_not_parse_is_invalid_argument_on_every_rpc(servers):
    """gRPC's own deserializer would answer INTERNAL; every handler parses itself."""
    cut_short = b"\x0a\xff\x01"  # field 1, 255 bytes long, and the body ends
    seen = []
    for target in servers:
        for method in target.methods:
            seen.append(method.path)
            example = fz.Example(method.path, "test", [cut_short])
            role = fz.roles_for(method.path)[0]
            code = fz.call(target.channel(role), method, example, target.metadata(role))
            assert code == grpc.StatusCode.INVALID_ARGUMENT, (target.name, method.path, code)
    assert "/grpc.health.v1.Health/Check" in seen and "/onshi.v1.ClaimService/Apportion" in seen


def test_every_field_of_every_rpc_at_its_edges(servers):
    """Each field of a valid request of each RPC set, one at a time, to the edge
    of its type: a clear status for each (and both servers stay up)."""
    seeds = fz.seeds()
    tried = 0
    for target in servers:
        for method in target.methods:
            if method.path not in seeds:
                continue
            role = fz.roles_for(method.path)[0]
            for field, request in fz.edge_cases(seeds[method.path]()[0]):
                example = fz.Example(method.path, "edge", [request.SerializeToString()])
                code = fz.call(target.channel(role), method, example, target.metadata(role))
                assert code not in fz.BAD_CODES, (target.name, method.path, field, code)
                tried += 1
        assert target.alive()
    assert tried > 500


def test_the_largest_ids_are_answered(servers):
    _, ingest = servers
    last = 2**64 - 1
    for path, request, response in (
        (
            "/onshi.v1.EnrollmentService/ListNotices",
            epb.ListNoticesRequest(after_notice_id=last),
            epb.ListNoticesResponse,
        ),
        (
            "/onshi.v1.EnrollmentService/ListQuarantine",
            epb.ListQuarantineRequest(after_quarantine_id=last),
            epb.ListQuarantineResponse,
        ),
        (
            "/onshi.v1.EnrollmentService/AcknowledgeNotices",
            epb.AcknowledgeNoticesRequest(notice_ids=[last]),
            epb.AcknowledgeNoticesResponse,
        ),
    ):
        answer = response.FromString(
            ingest.channel("insurer").unary_unary(path)(request.SerializeToString(), timeout=10)
        )
        assert answer == response(), path  # nothing after the largest ID, nothing acknowledged
    err = error(
        ingest,
        "/onshi.v1.EnrollmentService/ResolveQuarantine",
        epb.ResolveQuarantineRequest(quarantine_id=last, resolution=epb.RESOLUTION_DISCARD, reason="duplicate"),
    )
    assert err.code() == grpc.StatusCode.NOT_FOUND


def test_a_month_in_year_2147483647_is_invalid_argument(servers):
    _, ingest = servers
    months = {"first_month": {"year": 2**31 - 1, "month": 1}, "last_month": {"year": 2**31 - 1, "month": 2}}
    err = error(ingest, "/onshi.v1.ClaimService/Apportion", cpb.ApportionRequest(facility_code=FACILITY, **months))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in field_violations(err)] == ["first_month", "last_month"]


def test_a_timestamp_outside_its_range_is_invalid_argument(servers):
    _, ingest = servers
    for since, field in (({"seconds": 2**63 - 1}, "since.seconds"), ({"seconds": 1, "nanos": -5}, "since.nanos")):
        err = error(
            ingest,
            "/onshi.v1.AuditService/ListMyAccess",
            audit_pb2.ListMyAccessRequest(since=since, **fz._proof_fields(PURPOSE_LIST_MY_ACCESS)),
        )
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert [f for f, _ in field_violations(err)] == [field]


def test_a_megabyte_of_text_is_invalid_argument(servers):
    """Every string of every request is held to handlers.MAX_TEXT characters."""
    _, ingest = servers
    long = "x" * (1 << 20)
    for path, request, role in (
        (
            "/onshi.v1.TrustService/SetSystemFailureMode",
            trust_pb2.SetSystemFailureModeRequest(enabled=True, reason=long),
            "operator",
        ),
        (
            "/onshi.v1.EnrollmentService/ResolveQuarantine",
            epb.ResolveQuarantineRequest(quarantine_id=1, resolution=epb.RESOLUTION_DISCARD, reason=long),
            "insurer",
        ),
    ):
        err = error(ingest, path, request, role)
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert field_violations(err) == [("reason", f"at most {handlers.MAX_TEXT} characters")]
    update = epb.EnrollmentUpdate(update_id="u", insurer_number="06139992", person={"name": long})
    err = error(ingest, "/onshi.v1.EnrollmentService/StreamUpdates", update, "insurer", stream=True)
    assert field_violations(err) == [("person.name", f"at most {handlers.MAX_TEXT} characters")]


def test_a_card_certificate_that_does_not_parse_is_a_card_proof_refusal(servers):
    """A bad X.509 version byte raises InvalidVersion (not a ValueError) in the
    certificate parser: the refusal of a malformed proof, not INTERNAL."""
    serve, _ = servers
    fields = fz._proof_fields()
    der = bytearray(fields["card_certificate"])
    version = bytes(der).index(b"\xa0\x03\x02\x01\x02")  # [0] EXPLICIT INTEGER 2 (v3)
    der[version + 4] = 7
    fields["card_certificate"] = bytes(der)
    err = error(serve, "/onshi.v1.EligibilityService/CheckByCard", eligibility_pb2.CheckByCardRequest(**fields))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in field_violations(err)] == ["card_certificate"]


def test_a_revocation_list_that_does_not_parse_is_invalid_argument(servers):
    """The same for a CRL with a bad version byte (InvalidVersion again)."""
    _, ingest = servers
    crl = bytearray(fz._crl())
    version = bytes(crl).index(b"\x02\x01\x01")  # tbsCertList version v2
    crl[version + 2] = 7
    err = error(
        ingest,
        "/onshi.v1.TrustService/PutRevocationList",
        trust_pb2.PutRevocationListRequest(crl=bytes(crl)),
        "operator",
    )
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in field_violations(err)] == ["crl"]


def test_ten_thousand_bad_claims_answer_with_a_short_trailer(servers):
    """Each claim of the batch is wrong; the status names the first ones and
    counts the rest, so the trailer stays far below gRPC's default 8 KiB
    metadata limit (1.46 MB before, which clients refused)."""
    _, ingest = servers
    bad = cpb.Claim(claim_id="b", facility_code=FACILITY, insurer_number="123")
    err = error(
        ingest,
        "/onshi.v1.ClaimService/VerifyClaims",
        cpb.VerifyClaimsRequest(claims=[bad] * 10_000),
        "review",
        stream=True,
    )
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    violations = field_violations(err)
    assert len(violations) <= errors.MAX_VIOLATIONS + 1
    assert violations[-1][0] == "…" and violations[-1][1].startswith("and ")
    assert int(violations[-1][1].split()[1]) + len(violations) - 1 >= 10_000  # every claim accounted for
    assert sum(len(k) + len(v) for k, v in err.trailing_metadata()) < 8192


def test_capped_keeps_the_first_violations_and_counts_the_rest():
    many = [(f"claims[{i}].insurer_number", "must be 8 digits") for i in range(10_000)]
    capped = errors.capped(many)
    assert capped[:-1] == many[: len(capped) - 1]
    assert capped[-1] == ("…", f"and {10_000 - len(capped) + 1} more violations")
    assert errors.capped(many[:3]) == many[:3]
    long = [("f", "é" * 5000)] * 50  # long descriptions: cut, and fewer of them
    assert sum(len(f.encode()) + len(d.encode()) for f, d in errors.capped(long)) < 4 * errors.MAX_VIOLATION_BYTES


def test_health_list_is_answered_by_both_servers(servers):
    from grpc_health.v1 import health_pb2

    for target in servers:
        raw = target.channel("facility").unary_unary("/grpc.health.v1.Health/List")(b"", timeout=10)
        statuses = health_pb2.HealthListResponse.FromString(raw).statuses
        assert statuses and {s.status for s in statuses.values()} == {health_pb2.HealthCheckResponse.SERVING}
