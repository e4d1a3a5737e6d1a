"""A full store answers RESOURCE_EXHAUSTED over gRPC, keeps serving, and loses
nothing it acknowledged: on a tiny tmpfs (a real ENOSPC, when we may mount
one) and with a map size cap (MDB_MAP_FULL past --max-map-size, anywhere)."""

from __future__ import annotations

import os
import shutil
import subprocess

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from onshi.core import enrollment
from onshi.core.writer import Writer, WriteTxn
from onshi.v1 import enrollment_pb2 as pb
from onshi.v1 import enrollment_pb2_grpc
from tests import ingest_support as s


@pytest.fixture(params=["map-cap", "tmpfs"])
def full_store(request, tmp_path):
    if request.param == "map-cap":
        yield tmp_path / "store", ("--map-size", str(1 << 16), "--max-map-size", str(1 << 19))
        return
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("needs root to mount a tiny tmpfs")
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=640k", "tmpfs", str(mnt)]).returncode != 0:
        pytest.skip("cannot mount tmpfs here")
    try:
        yield mnt / "store", ("--map-size", str(1 << 16))
    finally:
        subprocess.run(["umount", "-l", str(mnt)])


def test_full_store_answers_resource_exhausted_and_keeps_what_it_acked(full_store, tmp_path):
    data, flags = full_store
    ingest = s.start_ingest(data, tmp_path, 0, *flags)
    md = (("x-onshi-insurer", s.EMPLOYEE),)
    accepted: list[str] = []
    try:
        with grpc.insecure_channel(ingest.target) as channel:
            stub = enrollment_pb2_grpc.EnrollmentServiceStub(channel)
            people = [s.resident(i) for i in range(10_000)]
            stub.PutResidents(pb.PutResidentsRequest(residents=people[:300]), timeout=30)
            updates = (
                s.acquisition(f"u{i}", s.EMPLOYEE, r, f"N{i}", "2024-04-01") for i, r in enumerate(people[:3000])
            )
            with pytest.raises(grpc.RpcError) as err:
                for ack in stub.StreamUpdates(updates, metadata=md, timeout=60):
                    assert ack.outcome in (pb.ENROLLMENT_OUTCOME_ACCEPTED, pb.ENROLLMENT_OUTCOME_QUARANTINED)
                    if ack.outcome == pb.ENROLLMENT_OUTCOME_ACCEPTED:
                        accepted.append(ack.update_id)
            assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, err.value
            assert "store full" in err.value.details()
            assert len(accepted) > 10
            # Still serving: health and reads answer; a new write gets the same clear answer.
            health = health_pb2_grpc.HealthStub(channel)
            assert (
                health.Check(health_pb2.HealthCheckRequest(), timeout=5).status
                == health_pb2.HealthCheckResponse.SERVING
            )
            stub.ListQuarantine(pb.ListQuarantineRequest(), metadata=md, timeout=5)
            with pytest.raises(grpc.RpcError) as again:
                stub.PutResidents(pb.PutResidentsRequest(residents=people), timeout=30)  # > the whole cap
            assert again.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert ingest.stop() == 0
    finally:
        ingest.kill()
    # Reopened: everything acked is there, whole; nothing after it.
    writer = Writer(data, map_size=1 << 16)
    try:
        enrollment.open_dbs(writer)
        with writer.env.begin() as txn:
            view = WriteTxn(txn, writer.dbs)
            for update_id in accepted:
                i = int(update_id[1:])
                link = enrollment.link_of_resident(view, s.resident_id(i))
                assert [q.number for _, q in view.history(link)] == [f"N{i}"]
                assert view.link_of_number(s.key(s.EMPLOYEE, f"N{i}")) == link
            applied = sum(
                1
                for k, v in view.scan("applied")
                if pb.EnrollmentAck.FromString(v).outcome == pb.ENROLLMENT_OUTCOME_ACCEPTED
            )
            assert applied >= len(accepted)  # acks of the last commit may have been lost with the stream
    finally:
        writer.close()
