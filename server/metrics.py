"""Prometheus metrics of one process, plus the recent figures /status shows.

Each Runtime owns its own CollectorRegistry (not prometheus_client's global one), so
several servers in one test process never share counters.
"""

from __future__ import annotations

import asyncio
import gc
import math
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)

from server import __version__, tasks

if TYPE_CHECKING:
    from server.bus import Bus
    from server.inflight import Inflight
    from server.rooms import LocalRooms
    from server.writer import MessageWriter

# Writing a batch of frames to local sockets takes microseconds: buckets from 10 µs, or
# nearly every sample lands in the first one.
_FANOUT_BUCKETS = (0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025,
                   0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
# Round trips to MongoDB and Redis, and a send's way to its ack: from 100 µs (loopback)
# to the seconds of an outage.
_LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                    0.25, 0.5, 1.0, 2.5, 5.0)
# HTTP requests: most take a millisecond; a login spends a bcrypt (about 0.35 s).
_HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

# Label values are bounded: anything else is counted as "other".
_METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"))
# RFC 6455 close codes; 1006 stands for a connection that ended without a close frame.
_CLOSE_CODES = frozenset((1000, 1001, 1002, 1003, 1005, 1006, 1007, 1008, 1009, 1010, 1011,
                          1012, 1013, 1014))


class Metrics:
    """Counters, gauges and histograms named by Prometheus conventions."""

    def __init__(self, node_id: str) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)  # python_gc_collections_total and what they freed
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
                                buckets=_FANOUT_BUCKETS, registry=r)
        self.bus_latency = Histogram("chat_bus_latency_seconds",
                                     "From publish on one process to delivery on another",
                                     buckets=_LATENCY_BUCKETS, registry=r)
        self.store_seconds = Histogram("chat_store_seconds",
                                       "Time to store one batch of messages in MongoDB",
                                       buckets=_LATENCY_BUCKETS, registry=r)
        self.loop_lag = Gauge("chat_ioloop_lag_seconds",
                              "How late the IOLoop ran a timer, last sample", registry=r)
        # A collection stops the whole process (every socket waits): how long, by the
        # generation it collected. Observed from start() to close().
        gc_pause = Histogram("chat_gc_pause_seconds",
                             "Time the garbage collector held the process, by generation",
                             ["generation"], buckets=_LATENCY_BUCKETS, registry=r)
        self._gc_pause = [gc_pause.labels(str(g)) for g in range(3)]
        self._gc_started = 0.0
        self.send_ack = Histogram(
            "chat_send_ack_seconds",
            "From a send frame read off a WebSocket to its ack written back",
            buckets=_LATENCY_BUCKETS, registry=r)
        self.writer_queue = Gauge("chat_writer_queue_depth",
                                  "Sends queued for the next batch insert into MongoDB",
                                  registry=r)
        self.writer_awaiting = Gauge(
            "chat_writer_awaiting_sends",
            "Sends whose senders await their ack: queued or in the insert under way",
            registry=r)
        # HTTP ----------------------------------------------------------------------
        self.http_requests = Counter(
            "chat_http_requests", "HTTP requests answered, by route pattern, method and "
            "status (a WebSocket upgrade is /ws with status 101)",
            ["route", "method", "status"], registry=r)
        self.http_seconds = Histogram(
            "chat_http_request_duration_seconds",
            "Time from an HTTP request's arrival to its response", ["route", "method"],
            buckets=_HTTP_BUCKETS, registry=r)
        # WebSockets and limits -----------------------------------------------------
        self.ws_connects = Counter("chat_ws_connects", "WebSocket connections opened",
                                   registry=r)
        self.ws_refused = Counter(
            "chat_ws_upgrades_refused",
            "WebSocket upgrades answered with an HTTP error instead of 101", ["status"],
            registry=r)
        self.ws_disconnects = Counter(
            "chat_ws_disconnects",
            "WebSocket connections closed, by close code (the server's when it closed "
            "first; 1006: no close frame)", ["code"], registry=r)
        self.refusals = Counter(
            "chat_refusals", "Requests and frames refused by a rate limit or throttle",
            ["reason"], registry=r)
        self.slow_reader_closes = Counter(
            "chat_slow_reader_closes",
            "WebSockets closed (1008) because their unsent frames passed the bound",
            registry=r)
        # State: read at scrape time, or set by each ServiceProbe check -------------
        self.online_users = Gauge("chat_online_users",
                                  "Distinct users with a WebSocket open on this process",
                                  registry=r)
        self.room_subscriptions = Gauge(
            "chat_room_subscriptions",
            "Room memberships of this process's WebSockets (connections times rooms)",
            registry=r)
        self.subscriber_connected = Gauge(
            "chat_redis_subscriber_connected",
            "1 while the Redis pub/sub subscriber is connected, 0 while it reconnects",
            registry=r)
        self.draining = Gauge("chat_draining", "1 once this process has begun to shut down",
                              registry=r)
        self.mongo_up = Gauge("chat_mongo_up", "1 if MongoDB answered the last ping",
                              registry=r)
        self.redis_up = Gauge("chat_redis_up", "1 if Redis answered the last ping", registry=r)
        self.mongo_rtt = Gauge("chat_mongo_rtt_seconds",
                               "Round trip of the last MongoDB ping (NaN if it failed)",
                               registry=r)
        self.redis_rtt = Gauge("chat_redis_rtt_seconds",
                               "Round trip of the last Redis ping (NaN if it failed)",
                               registry=r)
        for rtt in (self.mongo_rtt, self.redis_rtt):
            rtt.set(math.nan)  # until the first probe
        self.presence_frames = Counter(
            "chat_presence_frames",
            "Presence changes this process sent into rooms (after coalescing)", registry=r)
        self.presence_commands = Counter(
            "chat_presence_redis_commands",
            "Redis commands this process sent for presence (joins, leaves, heartbeats, "
            "away, burials)", registry=r)
        self.presence_batches = Counter(
            "chat_presence_batches",
            "Pipelines of joins and leaves that shared one round trip to Redis", registry=r)
        self.presence_batched = Counter(
            "chat_presence_batched",
            "Joins and leaves carried by those pipelines", registry=r)
        self.presence_buried = Counter(
            "chat_presence_nodes_buried",
            "Dead processes whose presence entries this process removed", registry=r)
        self.presence_returns = Counter(
            "chat_presence_returns",
            "Departures of closed sockets called off: the user joined the room again here "
            "within the presence grace", registry=r)
        self.messages_total = 0
        self.deliveries_total = 0
        self.presence_total = 0
        self.recent_fanout: deque[float] = deque(maxlen=4096)
        self.loop_lag_seconds = 0.0
        self._lag_task: asyncio.Task[None] | None = None

    def stored(self, n: int, seconds: float) -> None:
        self.messages_total += n
        self.messages.inc(n)
        self.store_seconds.observe(seconds)

    def presence_sent(self) -> None:
        self.presence_total += 1
        self.presence_frames.inc()

    def delivered(self, n: int, seconds: float) -> None:
        if n:
            self.deliveries_total += n
            self.deliveries.inc(n)
        self.fanout.observe(seconds)
        self.recent_fanout.append(seconds)

    def watch(self, *, rooms: LocalRooms, writer: MessageWriter, bus: Bus,
              inflight: Inflight) -> None:
        """Gauges read at scrape time from the objects that keep the figures."""
        kinds = rooms.connection_kinds
        self.connections.labels(kind="bot").set_function(lambda: kinds()["bot"])
        self.connections.labels(kind="browser").set_function(lambda: kinds()["browser"])
        self.rooms.set_function(lambda: len(rooms.rooms()))
        self.online_users.set_function(rooms.user_count)
        self.room_subscriptions.set_function(rooms.membership_count)
        self.writer_queue.set_function(lambda: writer.queued)
        self.writer_awaiting.set_function(lambda: writer.awaiting)
        self.subscriber_connected.set_function(lambda: bus.connected)
        self.draining.set_function(lambda: inflight.draining)

    def request_done(self, route: str, method: str, status: int, seconds: float) -> None:
        """One HTTP response; `route` is the route's pattern, never the raw path."""
        if method not in _METHODS:
            method = "other"
        self.http_requests.labels(route=route, method=method, status=str(status)).inc()
        self.http_seconds.labels(route=route, method=method).observe(seconds)

    def disconnected(self, code: int | None) -> None:
        """One WebSocket gone; `code` None when it ended without a close frame."""
        label = "1006" if code is None else str(code) if code in _CLOSE_CODES else "other"
        self.ws_disconnects.labels(code=label).inc()

    def services_checked(self, results: dict[str, dict[str, Any]]) -> None:
        """Record a ServiceProbe check: up (1/0) and round trip of MongoDB and Redis."""
        for name, up, rtt in (("mongodb", self.mongo_up, self.mongo_rtt),
                              ("redis", self.redis_up, self.redis_rtt)):
            result = results[name]
            up.set(1 if result["ok"] else 0)
            rtt.set(result["rtt_ms"] / 1000 if result["ok"] else math.nan)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    def start(self, interval: float = 0.5) -> None:
        self._lag_task = asyncio.create_task(self._measure_lag(interval), name="loop-lag")
        gc.callbacks.append(self._gc_timed)

    async def close(self) -> None:
        if self._gc_timed in gc.callbacks:
            gc.callbacks.remove(self._gc_timed)
        await tasks.stop(self._lag_task)

    def _gc_timed(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
        else:
            self._gc_pause[info["generation"]].observe(time.perf_counter() - self._gc_started)

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
