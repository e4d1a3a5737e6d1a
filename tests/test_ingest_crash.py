"""The writer's crash test: a client streams 50,000 updates; the ingest server
is killed with SIGKILL mid-stream and restarted on the same port; the client
re-sends what had no ack. The final store must equal a model that applied each
update exactly once, and every ACCEPTED ack must be in the store."""

from __future__ import annotations

import threading
import time

import grpc
import pytest

from onshi.commands.ingest import UpdateStreamer
from onshi.core import enrollment
from onshi.core.store import open_env
from onshi.core.writer import Writer, WriteTxn
from onshi.v1 import enrollment_pb2 as pb
from onshi.v1 import enrollment_pb2_grpc
from tests import ingest_support as s

RESIDENTS = 10_000
UPDATES = 50_000
KILL_AFTER = 10_000  # acks; the kill lands mid-stream, right after a commit
ACCEPTED, DUPLICATE = pb.ENROLLMENT_OUTCOME_ACCEPTED, pb.ENROLLMENT_OUTCOME_DUPLICATE


@pytest.fixture
def started():
    """Servers this test started; killed whatever happens to the test."""
    procs: list[s.Proc] = []
    yield procs
    for proc in procs:
        proc.kill()


@pytest.mark.slow
@pytest.mark.parametrize("batch", [1, 500], ids=["StreamUpdates", "StreamUpdateBatches"])
def test_sigkill_mid_stream_resend_unacked_applies_each_update_exactly_once(tmp_path, batch, started):
    data = tmp_path / "store"
    # Acks wait 150 ms after each commit, and the kill waits until the disk holds
    # more applied updates than the client has acks: it lands between a commit and
    # its acks, so those updates are re-sent and must come back DUPLICATE.
    ingest = s.start_ingest(data, tmp_path, 0, seams=("--ack-delay-ms", "150"))
    started.append(ingest)
    port = ingest.port
    with grpc.insecure_channel(ingest.target) as channel:
        stub = enrollment_pb2_grpc.EnrollmentServiceStub(channel)
        for i in range(0, RESIDENTS, 5000):
            stub.PutResidents(pb.PutResidentsRequest(residents=[s.resident(j) for j in range(i, i + 5000)]), timeout=60)
    updates = s.script(RESIDENTS, UPDATES)
    model = s.Model()
    for u in updates:
        model.apply(u)

    acks: dict[str, list[tuple[int, int]]] = {}
    accepted_before_kill: set[str] = set()
    kill_now = threading.Event()
    breaks: list[str] = []
    lock = threading.Lock()

    def on_ack(update, ack):
        with lock:
            acks.setdefault(update.update_id, []).append((ack.outcome, ack.first_outcome))
            if len(acks) >= KILL_AFTER:
                kill_now.set()

    def on_break(exc):
        # Every ack that reached the client before the break has been handled by now.
        with lock:
            breaks.append(exc.code().name)
            if len(breaks) == 1:
                accepted_before_kill.update(u for u, outs in acks.items() if outs[0][0] == ACCEPTED)

    streamer = UpdateStreamer(
        ingest.target, s.INSURERS, window=2048, batch=batch, retries=20, retry_delay=0.2, on_break=on_break
    )
    failure: list[BaseException] = []

    def client():
        try:
            streamer.run(updates, on_ack)
        except BaseException as exc:  # noqa: BLE001 - reported below
            failure.append(exc)

    thread = threading.Thread(target=client, daemon=True)
    thread.start()
    assert kill_now.wait(timeout=120), "the stream never got going"
    committed_unacked = _wait_for_committed_beyond(data, acks, lock)
    ingest.kill()  # SIGKILL, mid-stream
    acked_at_kill = len(acks)
    assert acked_at_kill < UPDATES
    time.sleep(0.3)
    ingest = s.start_ingest(data, tmp_path, port)
    started.append(ingest)
    thread.join(timeout=180)
    assert not thread.is_alive() and not failure, failure
    assert ingest.stop() == 0
    assert breaks, "the client never saw the server die"

    # Every update got an ack; none was applied twice.
    assert len(acks) == UPDATES
    resent_duplicates = 0
    for update_id, outs in acks.items():
        final = outs[-1]
        assert final in ((ACCEPTED, 0), (DUPLICATE, ACCEPTED)), (update_id, outs)
        assert sum(1 for o in outs if o[0] == ACCEPTED) <= 1, (update_id, outs)
        resent_duplicates += final[0] == DUPLICATE
    # Acked before the kill: never re-sent, so exactly one ack each.
    assert accepted_before_kill and all(len(acks[u]) == 1 for u in accepted_before_kill)
    # Committed when killed but never acked: re-sent, and answered DUPLICATE (not applied again).
    assert committed_unacked and resent_duplicates > 0

    writer = Writer(data)
    try:
        enrollment.open_dbs(writer)
        with writer.env.begin() as txn:
            view = WriteTxn(txn, writer.dbs)
            # Every ACCEPTED ack is in the store, and nothing else was applied.
            applied = dict(view.scan("applied"))
            assert len(applied) == UPDATES
            for u in updates:
                stored = pb.EnrollmentAck.FromString(
                    applied[u.insurer_number.encode() + b"\x1f" + u.update_id.encode()]
                )
                assert stored.outcome == ACCEPTED
            # The store equals the model, person by person.
            for i in range(RESIDENTS):
                rid = s.resident_id(i)
                assert s.store_rows(view, enrollment.link_of_resident(view, rid)) == model.rows(rid), rid
    finally:
        writer.close()
    print(
        f"killed after {acked_at_kill} acks, a commit's acks held back; "
        f"{resent_duplicates} re-sent updates came back DUPLICATE"
    )


def _wait_for_committed_beyond(data, acks, lock, timeout: float = 30.0) -> bool:
    """Poll the store read-only until it holds more applied updates than the client
    has acks (a commit whose acks are still held back); True if that happened."""
    env = open_env(data, readonly=True)
    try:
        applied = env.open_db(b"applied", create=False)
        deadline = time.monotonic() + timeout
        before = None
        while time.monotonic() < deadline:
            with env.begin() as txn:
                on_disk = txn.stat(applied)["entries"]
            with lock:
                acked = len(acks)
            # A commit just landed (the count jumped) and its acks are held for
            # 150 ms: kill now, well inside the hold.
            if before is not None and on_disk > before and on_disk > acked:
                return True
            before = on_disk
            time.sleep(0.002)
        return False
    finally:
        env.close()
