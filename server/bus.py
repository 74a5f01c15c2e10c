"""Redis pub/sub: one channel per room, dedicated subscriber connection(s), reconnects.

Redis pub/sub is at-most-once: a message published while this process was
disconnected is gone. The bus therefore tells its owner (`resync`) whenever it
has reconnected, so the owner can fetch what it missed from MongoDB; and once more
when it finishes, if the subscriber was lost and back again meanwhile. A subscriber
can also go deaf without any error; the bus publishes a probe to itself every few
seconds and reconnects when the probe does not come back.

On a Redis Cluster the channels are sharded (SPUBLISH / SSUBSCRIBE, server/subscriber.py):
a room's messages go only to the node that owns its channel's slot, the control channel
included, and there is a probe channel per node.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Protocol

from redis.exceptions import RedisError

from server import tasks
from server.redisconn import RedisClient
from server.subscriber import Subscriber

log = logging.getLogger(__name__)



class Listener(Protocol):
    """Who gets what the bus hears (Delivery)."""

    def on_envelope(self, room: str, payload: bytes) -> None:
        """A message on a room's channel."""

    def on_command(self, payload: bytes) -> None:
        """A message on the control channel."""

    async def resync(self) -> None:
        """The subscriber reconnected: what was published meanwhile is lost."""


class BusError(Exception):
    """Redis could not be reached for a publish or subscribe."""


class Bus:
    """Publishes to room channels and feeds messages of subscribed rooms to a handler."""

    def __init__(self, redis: RedisClient, prefix: str, node_id: str, *,
                 subscriber: Subscriber, probe_interval: float = 3.0,
                 op_timeout: float = 2.0) -> None:
        self.redis = redis
        self.node_id = node_id
        self._room_prefix = f"{prefix}room:".encode()
        self._control = f"{prefix}control".encode()
        self._probe_channel = f"{prefix}probe:{node_id}".encode()
        self._listener: Listener | None = None
        self._probe_interval = probe_interval
        self._op_timeout = op_timeout
        # Connections of its own, which never reconnect quietly (server/redisconn.py).
        self._sub = subscriber
        self._publish = redis.spublish if subscriber.sharded else redis.publish
        self._rooms: set[str] = set()
        self._confirm: dict[bytes, list[asyncio.Future[None]]] = {}
        self._task: asyncio.Task[None] | None = None
        self._resync_task: asyncio.Task[None] | None = None
        self._resync_again = False  # a recovery that no resync has started after yet
        self._probe_seen: dict[bytes, tuple[float, int]] = {}  # channel -> (when, number)
        self._probes = 0  # probes published; each carries its number
        self._proof = 0  # the first probe number whose return proves a recovery
        self.connected = False
        self.resubscribes = 0
        self.messages_in = 0

    def channel(self, room: str) -> bytes:
        return self._room_prefix + room.encode()

    async def start(self, listener: Listener) -> None:
        """Connect the subscriber and start listening; raises BusError if Redis is down."""
        self._listener = listener
        try:
            await asyncio.wait_for(self._sub.start([self._control], self._probe_channel),
                                   self._op_timeout)
        except (RedisError, OSError, asyncio.TimeoutError) as e:
            raise BusError(f"cannot subscribe: {e}") from e
        self.connected = True
        self._task = asyncio.create_task(self._listen(), name="bus-listener")

    async def close(self) -> None:
        for task in (self._task, self._resync_task):
            await tasks.stop(task)
        self._task = self._resync_task = None
        with contextlib.suppress(RedisError, OSError):
            await self._sub.aclose()

    async def publish(self, room: str, payload: bytes) -> None:
        try:
            await asyncio.wait_for(
                self._publish(self.channel(room), payload), self._op_timeout
            )
        except (RedisError, OSError, asyncio.TimeoutError) as e:
            raise BusError(f"publish failed: {e}") from e

    async def publish_many(self, payloads: dict[str, bytes]) -> dict[str, BusError]:
        """Publish each room's payload, all in one pipeline (one round trip, one pooled
        connection, one timeout); returns the rooms whose publish failed, with why.

        A tick of a hundred small rooms is a hundred publishes: one by one, each paid
        for a connection checkout, a timer and a task of its own.
        """
        rooms = list(payloads)
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                command = pipe.spublish if self._sub.sharded else pipe.publish
                for room in rooms:
                    command(self.channel(room), payloads[room])
                results = await asyncio.wait_for(pipe.execute(raise_on_error=False),
                                                 self._op_timeout)
        except (RedisError, OSError, asyncio.TimeoutError) as e:
            failed = BusError(f"publish failed: {e}")
            return {room: failed for room in rooms}
        return {room: BusError(f"publish failed: {result}")
                for room, result in zip(rooms, results, strict=True)
                if isinstance(result, Exception)}

    async def publish_control(self, payload: bytes) -> None:
        try:
            await asyncio.wait_for(self._publish(self._control, payload), self._op_timeout)
        except (RedisError, OSError, asyncio.TimeoutError) as e:
            raise BusError(f"publish failed: {e}") from e

    def is_subscribed(self, room: str) -> bool:
        return room in self._rooms

    async def subscribe(self, room: str) -> None:
        """Subscribe to a room's channel and wait until Redis confirms it.

        Waiting matters: a joiner reads history from MongoDB only after this returns,
        so every message stored later is guaranteed to arrive live.
        """
        channel = self.channel(room)
        self._rooms.add(room)
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._confirm.setdefault(channel, []).append(fut)
        try:
            await asyncio.wait_for(self._sub.subscribe(channel), self._op_timeout)
            await asyncio.wait_for(asyncio.shield(fut), self._op_timeout)
        except (RedisError, OSError, asyncio.TimeoutError) as e:
            waiters = self._confirm.get(channel)
            if waiters and fut in waiters:
                waiters.remove(fut)
            raise BusError(f"subscribe failed: {e}") from e

    async def unsubscribe(self, room: str) -> None:
        self._rooms.discard(room)
        with contextlib.suppress(RedisError, OSError, asyncio.TimeoutError):
            await asyncio.wait_for(self._sub.unsubscribe(self.channel(room)),
                                   self._op_timeout)

    async def ping(self) -> float:
        """Round-trip time of a PING on the command pool, in seconds."""
        start = time.perf_counter()
        try:
            await asyncio.wait_for(self.redis.ping(), self._op_timeout)
        except (RedisError, OSError, asyncio.TimeoutError) as e:
            raise BusError(str(e)) from e
        return time.perf_counter() - start

    async def _listen(self) -> None:
        """The one top-level loop: read, dispatch, and recover from any failure."""
        backoff = 0.1
        next_probe = time.monotonic() + self._probe_interval
        while True:
            try:
                was_connected = self.connected
                msg = await self._sub.get_message(timeout=0.5)
                if msg is not None:
                    self._dispatch(msg)
                now = time.monotonic()
                if self.connected and not was_connected:
                    backoff = 0.1
                if not self.connected:
                    # A hung Redis raises nothing here: only a probe published after
                    # the loss coming back proves the subscriber hears again.
                    if now >= next_probe:
                        next_probe = now + 0.5
                        await self._publish_probe()
                elif now >= next_probe:
                    next_probe = now + self._probe_interval
                    await self._probe(now)
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError, asyncio.TimeoutError) as e:
                if self.connected:
                    log.warning("redis subscriber lost: %s", e)
                self._lost()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
            except Exception:
                log.exception("bus listener failed; continuing")
                await asyncio.sleep(backoff)

    async def _probe(self, now: float) -> None:
        """Publish to our own probe channel(s); if an earlier probe never came back, reset."""
        last_seen = min((self._probe_seen.get(c, (now, 0))[0] for c in self._sub.probes()),
                        default=now)
        if now - last_seen > 3 * self._probe_interval:
            log.warning("redis subscriber deaf for %.1fs; reconnecting", now - last_seen)
            self._probe_seen.clear()
            await self._sub.reset()
            self._lost()
            return
        await self._publish_probe()

    async def _publish_probe(self) -> None:
        self._probes += 1
        now = time.monotonic()
        for channel in self._sub.probes():
            # A channel probed for the first time counts as heard now, for the deaf check.
            self._probe_seen.setdefault(channel, (now, 0))
            await asyncio.wait_for(self._publish(channel, b"%d" % self._probes),
                                   self._op_timeout)

    def _lost(self) -> None:
        self.connected = False
        self._proof = self._probes + 1
        for waiters in self._confirm.values():
            for fut in waiters:
                if not fut.done():
                    fut.set_exception(BusError("redis subscriber disconnected"))
        self._confirm.clear()

    def _recovered(self) -> None:
        self.connected = True
        self.resubscribes += 1
        log.info("redis subscriber reconnected (%d rooms resubscribed)", len(self._rooms))
        self._resync_again = True
        if self._listener is not None and (self._resync_task is None
                                           or self._resync_task.done()):
            self._resync_task = asyncio.create_task(self._resync(self._listener),
                                                    name="bus-resync")

    async def _resync(self, listener: Listener) -> None:
        """Resync, and once more after each resync during which the subscriber was
        lost and recovered: what was published meanwhile may be in rooms it had passed."""
        while self._resync_again:
            self._resync_again = False
            await listener.resync()

    def _dispatch(self, msg: dict[str, object]) -> None:
        kind = msg["type"]
        channel = msg["channel"]
        assert isinstance(channel, bytes)
        if kind in ("message", "smessage"):
            data = msg["data"]
            assert isinstance(data, bytes) and self._listener is not None
            if channel.startswith(self._room_prefix):
                self.messages_in += 1
                self._listener.on_envelope(channel[len(self._room_prefix):].decode(), data)
            elif channel in self._probe_seen:
                self._probe_seen[channel] = (time.monotonic(), int(data))
                if not self.connected and all(
                        self._probe_seen.get(c, (0.0, 0))[1] >= self._proof
                        for c in self._sub.probes()):
                    self._recovered()
            elif channel == self._control:
                self._listener.on_command(data)
        elif kind in ("subscribe", "ssubscribe"):
            for fut in self._confirm.pop(channel, ()):
                if not fut.done():
                    fut.set_result(None)
