"""The bus's ears: the connections that hear room channels, on one Redis or a Cluster.

One Redis: one connection, SUBSCRIBE, and the bus publishes with PUBLISH.

Redis Cluster: PUBLISH would be copied to every node of the cluster, so the bus uses
sharded pub/sub (Redis 7) instead: SPUBLISH goes only to the node that owns the
channel's hash slot, and only clients that SSUBSCRIBEd there hear it. A room's channel
lives on one node; the control channel too (on its own slot). This subscriber keeps one
connection per node that owns a channel it wants and reads them all into one queue,
so the bus sees one stream of messages, in publish order per channel.

Both kinds surface every failure: a connection that reconnected quietly would have
missed what was published meanwhile, and only the bus, told of the loss, resyncs. On a
cluster a lost connection, a MOVED answer or an SUNSUBSCRIBE the server sent by itself
(the slot moved to another node: resharding, failover) all mean the same: the next read
refreshes the cluster's slot map and subscribes every channel again where it lives now.
Each node owning slots also gets a probe channel of its own, so the bus's probes prove
that every connection hears, not only one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Protocol

from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.crc import key_slot
from redis.exceptions import RedisClusterException, RedisError

from server import tasks

log = logging.getLogger(__name__)

Message = dict[str, Any]


class ShardLost(RedisError):
    """A channel's node dropped it (its slot moved), is unknown, or does not answer."""


class Subscriber(Protocol):
    """What the bus reads from; `sharded` says whether to publish with SPUBLISH."""

    sharded: bool

    async def start(self, fixed: list[bytes], probe: bytes) -> None:
        """Subscribe the channels kept for the process's life, and the probe channel(s)
        named after `probe`; raises RedisError or OSError if Redis does not answer."""

    def probes(self) -> list[bytes]:
        """The channels the bus must publish a probe on to prove every connection hears."""

    async def subscribe(self, channel: bytes) -> None:
        """Send the subscription; its confirmation comes through get_message."""

    async def unsubscribe(self, channel: bytes) -> None: ...

    async def get_message(self, timeout: float) -> Message | None:
        """The next message or confirmation, None after `timeout`; raises on any loss."""

    async def reset(self) -> None:
        """Drop the connection(s): the next get_message connects and subscribes anew."""

    async def aclose(self) -> None: ...


class ChannelSubscriber:
    """One Redis: one pub/sub connection with SUBSCRIBE, which reconnects and
    resubscribes on the read after a failure."""

    sharded = False

    def __init__(self, client: Redis) -> None:
        self._client = client
        self._pubsub: PubSub = client.pubsub()
        self._probes: list[bytes] = []

    async def start(self, fixed: list[bytes], probe: bytes) -> None:
        self._probes = [probe]
        await self._pubsub.subscribe(*fixed, probe)

    def probes(self) -> list[bytes]:
        return self._probes

    async def subscribe(self, channel: bytes) -> None:
        await self._pubsub.subscribe(channel)

    async def unsubscribe(self, channel: bytes) -> None:
        await self._pubsub.unsubscribe(channel)

    async def get_message(self, timeout: float) -> Message | None:
        msg: Message | None = await self._pubsub.get_message(timeout=timeout)
        return msg

    async def reset(self) -> None:
        conn = self._pubsub.connection
        if conn is not None:
            await conn.disconnect()

    async def aclose(self) -> None:
        with contextlib.suppress(RedisError, OSError):
            await self._pubsub.aclose()
        await self._client.aclose()


@dataclass
class _NodeSub:
    """The connection to one cluster node, and the task that reads it."""

    client: Redis
    pubsub: PubSub
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # one command on the wire
    reader: asyncio.Task[None] | None = None


class ShardedSubscriber:
    """Redis Cluster: SSUBSCRIBE on the node owning each channel's slot."""

    sharded = True

    def __init__(self, cluster: RedisCluster) -> None:
        self._cluster = cluster
        self._nodes: dict[str, _NodeSub] = {}
        self._owner: dict[bytes, str] = {}  # channel -> node it is subscribed on
        self._fixed: list[bytes] = []
        self._wanted: set[bytes] = set()  # room channels
        self._leaving: Counter[bytes] = Counter()  # SUNSUBSCRIBEs not yet confirmed
        self._probe_base = b""
        self._probes: dict[str, bytes] = {}  # node name -> its probe channel
        self._queue: asyncio.Queue[Message | BaseException] = asyncio.Queue()
        self._broken = False

    async def start(self, fixed: list[bytes], probe: bytes) -> None:
        self._fixed, self._probe_base = list(fixed), probe
        await self._rebuild(refresh=False)

    def probes(self) -> list[bytes]:
        return list(self._probes.values())

    async def subscribe(self, channel: bytes) -> None:
        self._wanted.add(channel)
        if not self._broken:  # else the rebuild subscribes it
            await self._ssubscribe(channel)

    async def unsubscribe(self, channel: bytes) -> None:
        self._wanted.discard(channel)
        name = self._owner.pop(channel, None)
        sub = self._nodes.get(name) if name else None
        if sub is not None:
            self._leaving[channel] += 1
            async with sub.lock:
                await sub.pubsub.sunsubscribe(channel)

    async def get_message(self, timeout: float) -> Message | None:
        if self._broken:
            await self._rebuild(refresh=True)
        try:
            item = await asyncio.wait_for(self._queue.get(), timeout)
        except asyncio.TimeoutError:
            return None
        if isinstance(item, BaseException):
            self._broken = True
            raise item
        return item

    async def reset(self) -> None:
        self._broken = True
        await self._drop_all()

    async def aclose(self) -> None:
        await self._drop_all()

    async def _ssubscribe(self, channel: bytes) -> None:
        node = self._owner_of(channel)
        if node is None:
            raise ShardLost(f"no node owns the slot of {channel!r}")
        sub = self._node(node)
        self._owner[channel] = node.name
        async with sub.lock:
            await sub.pubsub.ssubscribe(channel)
        if self._nodes.get(node.name) is not sub:
            # Dropped while this waited (a reset or a rebuild, which subscribes the
            # channel anew): a reader here would deliver everything twice.
            await self._close(sub)
            return
        if sub.reader is None:  # reading needs a connection, made by the first command
            sub.reader = asyncio.create_task(self._read(node.name, sub),
                                             name=f"bus-shard-{node.name}")

    def _owner_of(self, channel: bytes) -> ClusterNode | None:
        """The primary that owns the channel's slot, by the client's slot map."""
        nodes = self._cluster.nodes_manager.slots_cache.get(key_slot(channel))
        return nodes[0] if nodes else None

    def _node(self, node: ClusterNode) -> _NodeSub:
        sub = self._nodes.get(node.name)
        if sub is None:
            options = dict(node.connection_kwargs)
            options["retry"] = Retry(NoBackoff(), 0)  # every loss must reach the bus
            pool = ConnectionPool(connection_class=node.connection_class, max_connections=1,
                                  **options)
            client = Redis(connection_pool=pool)
            sub = self._nodes[node.name] = _NodeSub(client, client.pubsub())
        return sub

    async def _read(self, name: str, sub: _NodeSub) -> None:
        """Feed one node's messages to the queue; a failure goes there too, and ends it."""
        try:
            while True:
                msg = await sub.pubsub.get_message(timeout=1.0)
                if msg is None:
                    continue
                if msg["type"] == "sunsubscribe":
                    channel = msg["channel"]
                    if self._leaving[channel] > 0:
                        self._leaving[channel] -= 1
                        if not self._leaving[channel]:
                            del self._leaving[channel]
                        continue
                    if self._owner.get(channel) == name:
                        raise ShardLost(f"{name} dropped {channel!r}: its slot moved")
                    continue
                self._queue.put_nowait(msg)
        except asyncio.CancelledError:
            raise
        except (RedisError, OSError) as e:
            self._queue.put_nowait(e)

    async def _drop_all(self) -> None:
        nodes, self._nodes = self._nodes, {}
        self._owner.clear()
        self._leaving.clear()
        for sub in nodes.values():
            await self._close(sub)
        # What the dropped connections heard and failed with belongs to the past.
        self._queue = asyncio.Queue()

    @staticmethod
    async def _close(sub: _NodeSub) -> None:
        await tasks.stop(sub.reader)
        with contextlib.suppress(RedisError, OSError):
            await sub.pubsub.aclose()
        with contextlib.suppress(RedisError, OSError):
            await sub.client.aclose()

    async def _rebuild(self, refresh: bool) -> None:
        """Subscribe everything anew where the cluster's slot map says it lives now."""
        await self._drop_all()
        self._broken = True
        if refresh:
            try:
                await self._cluster.nodes_manager.initialize()
            except RedisClusterException as e:  # no node answered
                raise ShardLost(str(e)) from e
        self._probes = self._probe_channels()
        pending = [*self._fixed, *self._probes.values(), *self._wanted]
        while pending:
            for channel in pending:
                await self._ssubscribe(channel)
            # Rooms joined while this ran were left to it.
            pending = [c for c in self._wanted if c not in self._owner]
        self._broken = False
        log.debug("sharded subscriber: %d channels on %d nodes", len(self._owner),
                  len(self._nodes))

    def _probe_channels(self) -> dict[str, bytes]:
        """A probe channel for every node that owns slots (the probe's name plus a
        number chosen so that its slot is on that node)."""
        cache = self._cluster.nodes_manager.slots_cache
        owners = {nodes[0].name for nodes in cache.values() if nodes}
        probes: dict[str, bytes] = {}
        n = 0
        while len(probes) < len(owners) and n < 1_000_000:
            channel = b"%s:%d" % (self._probe_base, n)
            node = self._owner_of(channel)
            if node is not None and node.name not in probes:
                probes[node.name] = channel
            n += 1
        return probes
