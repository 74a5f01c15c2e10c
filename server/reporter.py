"""Cluster status: each process publishes its figures to Redis with a short TTL.

A process that dies stops refreshing its entry and drops out of /status by itself;
a process that shuts down cleanly removes its entry at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import resource
import socket
import time
from collections import deque
from typing import Any

from redis.exceptions import RedisError

from server import __version__, tasks
from server.bus import Bus
from server.metrics import Metrics, quantiles
from server.probe import ServiceProbe
from server.redisconn import RedisClient
from server.rooms import LocalRooms

log = logging.getLogger(__name__)


def rss_bytes() -> int:
    """Resident memory now, from /proc (falls back to the peak where /proc is absent)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class StatusReporter:
    """Samples this process every `interval` seconds and shares the sample via Redis."""

    def __init__(self, node_id: str, rooms: LocalRooms, metrics: Metrics, bus: Bus,
                 probe: ServiceProbe, redis: RedisClient, prefix: str, *, interval: float = 2.0,
                 ttl: float = 10.0) -> None:
        self.node_id = node_id
        self.rooms = rooms
        self.metrics = metrics
        self.bus = bus
        self.probe = probe
        self.redis = redis
        self.interval = interval
        self.ttl_ms = int(ttl * 1000)
        # One hash tag: MGET reads every report in one command, on a cluster too.
        self._index = f"{{{prefix}nodes}}"
        self._key = f"{{{prefix}nodes}}:"
        self.started = time.time()
        self.host = socket.gethostname()
        self.pid = os.getpid()
        # (monotonic time, messages, deliveries) samples covering the last 5 minutes.
        self._samples: deque[tuple[float, int, int, int]] = deque(maxlen=int(300 / interval) + 2)
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="status")

    async def close(self) -> None:
        """Stop reporting and remove this process from the cluster view, once: a
        shutdown closes it early and Runtime.close() again, which must not wait on a
        hung Redis a second time."""
        if self._closed:
            return
        self._closed = True
        await tasks.stop(self._task)
        with contextlib.suppress(RedisError, OSError, asyncio.TimeoutError):
            await asyncio.wait_for(self._deregister(), 2)

    async def _deregister(self) -> None:
        await self.redis.zrem(self._index, self.node_id)
        await self.redis.delete(self._key + self.node_id)

    def _rate(self, window: float) -> dict[str, float]:
        if len(self._samples) < 2:
            return {"messages": 0.0, "deliveries": 0.0, "presence": 0.0}
        now, msgs, dels, pres = self._samples[-1]
        old = self._samples[0]
        for sample in self._samples:
            if now - sample[0] <= window:
                old = sample
                break
        span = max(now - old[0], 1e-9)
        return {"messages": round((msgs - old[1]) / span, 2),
                "deliveries": round((dels - old[2]) / span, 2),
                "presence": round((pres - old[3]) / span, 2)}

    def snapshot(self) -> dict[str, Any]:
        m = self.metrics
        self._samples.append((time.monotonic(), m.messages_total, m.deliveries_total,
                              m.presence_total))
        return {
            "id": self.node_id,
            "host": self.host,
            "pid": self.pid,
            "version": __version__,
            "started_at": int(self.started * 1000),
            "uptime_s": round(time.time() - self.started, 1),
            "connections": self.rooms.connection_kinds(),
            "rooms": len(self.rooms.rooms()),
            "messages_total": m.messages_total,
            "deliveries_total": m.deliveries_total,
            "rate_1m": self._rate(60),
            "rate_5m": self._rate(300),
            "fanout_ms": quantiles(list(m.recent_fanout)),
            "ioloop_lag_ms": round(m.loop_lag_seconds * 1000, 3),
            "rss_bytes": rss_bytes(),
            "redis_subscriber": "connected" if self.bus.connected else "reconnecting",
            "redis_resubscribes": self.bus.resubscribes,
            "reported_at": int(time.time() * 1000),
        }

    async def publish(self) -> None:
        snap = self.snapshot()
        now = int(time.time() * 1000)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.set(self._key + self.node_id, json.dumps(snap), px=self.ttl_ms)
            pipe.zadd(self._index, {self.node_id: now + self.ttl_ms})
            pipe.zremrangebyscore(self._index, "-inf", now)
            await pipe.execute()

    async def _loop(self) -> None:
        while True:
            try:
                # Keeps chat_mongo_up and chat_redis_up current without a ping per scrape.
                await self.probe.check()
                await asyncio.wait_for(self.publish(), self.interval)
            except (RedisError, OSError, asyncio.TimeoutError) as e:
                log.debug("status report skipped: %s", e)
            except Exception:
                log.exception("status report failed; continuing")
            await asyncio.sleep(self.interval)

    async def cluster(self) -> dict[str, Any]:
        """The whole cluster's status as seen from this process."""
        services = await self.probe.check()
        nodes: list[dict[str, Any]] = []
        if services["redis"]["ok"]:
            try:
                now = int(time.time() * 1000)
                ids = await self.redis.zrangebyscore(self._index, now, "+inf")
                if ids:
                    keys = [self._key + (i.decode() if isinstance(i, bytes) else str(i))
                            for i in ids]
                    raw = await self.redis.mget(keys)
                    nodes = [json.loads(r) for r in raw if r]
            except (RedisError, OSError, asyncio.TimeoutError) as e:
                services["redis"] = {"ok": False, "error": type(e).__name__}
        if not any(n["id"] == self.node_id for n in nodes):
            nodes.append(self.snapshot())
        nodes.sort(key=lambda n: n["id"])
        totals = {
            "processes": len(nodes),
            "connections": sum(n["connections"]["total"] for n in nodes),
            "bot_connections": sum(n["connections"]["bot"] for n in nodes),
            "messages_per_s_1m": round(sum(n["rate_1m"]["messages"] for n in nodes), 2),
            "deliveries_per_s_1m": round(sum(n["rate_1m"]["deliveries"] for n in nodes), 2),
            # .get: a process of an earlier release reports no presence rate.
            "presence_per_s_1m": round(sum(n["rate_1m"].get("presence", 0.0)
                                           for n in nodes), 2),
            "rss_bytes": sum(n["rss_bytes"] for n in nodes),
        }
        return {"node": self.node_id, "time": int(time.time() * 1000),
                "services": services, "processes": nodes, "totals": totals}
