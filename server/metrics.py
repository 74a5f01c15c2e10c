"""Prometheus metrics of one process, plus the recent figures /status shows.

Each Runtime owns its own CollectorRegistry (not prometheus_client's global one), so
several servers in one test process never share counters.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)

from server import __version__, tasks

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    """Counters, gauges and histograms named by Prometheus conventions."""

    def __init__(self, node_id: str) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        # Which process answered a scrape: a restarted worker has a new node id, which
        # tells its counters' reset from a scrape that reached another process.
        Info("chat_build", "Version of the server and node id of this process",
             registry=r).info({"version": __version__, "node": node_id})
        self.messages = Counter("chat_messages", "Messages stored and acknowledged",
                                registry=r)
        self.deliveries = Counter("chat_deliveries", "Frames written to local WebSockets",
                                  registry=r)
        self.duplicate_sends = Counter(
            "chat_duplicate_sends", "Sends answered with the ack of an earlier client_id",
            registry=r)
        self.store_failures = Counter("chat_store_failures",
                                      "Sends answered unavailable because MongoDB failed",
                                      registry=r)
        self.seq_refusals = Counter(
            "chat_seq_refusals",
            "Message inserts refused because another process had stored that seq first",
            registry=r)
        self.publish_failures = Counter("chat_publish_failures",
                                        "Redis publishes that failed (messages stay stored)",
                                        registry=r)
        self.catch_ups = Counter(
            "chat_catch_ups",
            "Messages read back from MongoDB and delivered because Redis did not bring them",
            registry=r)
        self.bus_duplicates = Counter(
            "chat_bus_duplicates",
            "Messages from Redis not delivered again: this process had delivered them already",
            registry=r)
        self.resyncs = Counter("chat_redis_resubscribes",
                               "Times the Redis subscriber reconnected and resynced",
                               registry=r)
        self.bcrypt = Counter("chat_bcrypt", "bcrypt runs: op=check (a password checked), "
                              "op=hash (a password stored)", ["op"], registry=r)
        self.bcrypt_busy = Counter(
            "chat_bcrypt_busy",
            "Logins, registrations and password changes answered 503 because the bcrypt "
            "queue was full", registry=r)
        self.connections = Gauge("chat_ws_connections", "Open WebSocket connections",
                                 ["kind"], registry=r)
        self.rooms = Gauge("chat_local_rooms", "Rooms with members on this process",
                           registry=r)
        self.fanout = Histogram("chat_fanout_seconds",
                                "Time to write one batch of frames to local sockets",
                                buckets=_LATENCY_BUCKETS, registry=r)
        self.bus_latency = Histogram("chat_bus_latency_seconds",
                                     "From publish on one process to delivery on another",
                                     buckets=_LATENCY_BUCKETS, registry=r)
        self.store_seconds = Histogram("chat_store_seconds",
                                       "Time to store one batch of messages in MongoDB",
                                       buckets=_LATENCY_BUCKETS, registry=r)
        self.loop_lag = Gauge("chat_ioloop_lag_seconds",
                              "How late the IOLoop ran a timer, last sample", registry=r)
        self.messages_total = 0
        self.deliveries_total = 0
        self.recent_fanout: deque[float] = deque(maxlen=4096)
        self.loop_lag_seconds = 0.0
        self._lag_task: asyncio.Task[None] | None = None

    def stored(self, n: int, seconds: float) -> None:
        self.messages_total += n
        self.messages.inc(n)
        self.store_seconds.observe(seconds)

    def delivered(self, n: int, seconds: float) -> None:
        if n:
            self.deliveries_total += n
            self.deliveries.inc(n)
        self.fanout.observe(seconds)
        self.recent_fanout.append(seconds)

    def gauge_from(self, kind: str, fn: Callable[[], float]) -> None:
        self.connections.labels(kind=kind).set_function(fn)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    def start(self, interval: float = 0.5) -> None:
        self._lag_task = asyncio.create_task(self._measure_lag(interval), name="loop-lag")

    async def close(self) -> None:
        await tasks.stop(self._lag_task)

    async def _measure_lag(self, interval: float) -> None:
        while True:
            start = time.perf_counter()
            await asyncio.sleep(interval)
            lag = max(0.0, time.perf_counter() - start - interval)
            self.loop_lag_seconds = lag
            self.loop_lag.set(lag)


def quantiles(samples: list[float], qs: tuple[float, ...] = (0.5, 0.95, 0.99)) -> dict[str, float]:
    """Nearest-rank quantiles in milliseconds, keyed "p50", "p95", ..."""
    if not samples:
        return {f"p{int(q * 100)}": 0.0 for q in qs}
    ordered = sorted(samples)
    out = {}
    for q in qs:
        idx = min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))
        out[f"p{int(q * 100)}"] = round(ordered[idx] * 1000, 3)
    return out
