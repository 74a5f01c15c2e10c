"""Build every collaborator in dependency order and close them in reverse, in one place.

run.py and the test fixtures both use Runtime, so tests exercise the same wiring
that production runs.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import cast

import tornado.httpserver
import tornado.web
from redis.asyncio import Redis

from server.admins import Admins
from server.app import make_app, make_metrics_app
from server.audit import CredentialAudit
from server.auth import Auth
from server.bots import Bots
from server.bus import Bus
from server.caps import ConnectionCaps
from server.changes import MessageChanges
from server.chat import Chat
from server.config import Config
from server.deactivation import Deactivation
from server.delivery import Delivery
from server.files import Files
from server.inflight import Inflight
from server.invites import Registration
from server.limits import RateLimits
from server.metrics import Metrics
from server.presence import Presence
from server.probe import ServiceProbe
from server.redisconn import RedisClient, connect, redis_client
from server.reporter import StatusReporter
from server.rooms import LocalRooms
from server.seqs import RoomSeqs
from server.store import Store
from server.subscriber import Subscriber
from server.team import Team
from server.writer import MessageWriter

__all__ = ["Runtime", "redis_client"]  # redis_client: for tests that need a plain client

log = logging.getLogger(__name__)

BCRYPT_THREADS = 4
# Requests with bcrypt work queued or running, per thread: at the default cost (12, about
# 0.35 s a hash on our machines) a full queue drains in about 3 s when each thread has a
# core of its own; beyond it a login is refused with 503 at once rather than left
# waiting behind a flood of guesses.
BCRYPT_QUEUE_PER_THREAD = 8
# How long a WebSocket client may take to answer the drain's close frame before it is
# dropped; a client that answers at all does so within milliseconds.
CLOSE_GRACE = 1.0
REPORT_EVERY = 1.0  # seconds between the log lines that say what holds a drain


@dataclass
class Runtime:
    """The process's collaborators, started and stopped together."""

    config: Config
    mongo_url: str = field(repr=False)  # may carry a password
    redis_url: str = field(repr=False)
    store: Store = field(init=False)
    redis: RedisClient = field(init=False)
    subscriber: Subscriber = field(init=False)
    rooms: LocalRooms = field(init=False)
    bus: Bus = field(init=False)
    writer: MessageWriter = field(init=False)
    delivery: Delivery = field(init=False)
    chat: Chat = field(init=False)
    files: Files = field(init=False)
    auth: Auth = field(init=False)
    bots: Bots = field(init=False)
    metrics: Metrics = field(init=False)
    probe: ServiceProbe = field(init=False)
    reporter: StatusReporter = field(init=False)
    limits: RateLimits = field(init=False)
    caps: ConnectionCaps = field(init=False)
    app: tornado.web.Application = field(init=False)
    metrics_app: tornado.web.Application = field(init=False)
    executor: ThreadPoolExecutor = field(init=False)
    inflight: Inflight = field(init=False)
    admins: Admins = field(init=False)
    registration: Registration = field(init=False)
    deactivation: Deactivation = field(init=False)
    audit: CredentialAudit = field(init=False)

    async def start(self) -> None:
        cfg = self.config
        self.executor = ThreadPoolExecutor(max_workers=BCRYPT_THREADS,
                                           thread_name_prefix="bcrypt")
        self.inflight = Inflight()
        self.store = Store.connect(self.mongo_url, cfg.db_name)
        await self.store.setup()
        # One Redis or a Redis Cluster, whichever REDIS_URL turns out to be.
        self.redis, self.subscriber = await connect(self.redis_url, cfg.redis_pool_size)
        self.metrics = Metrics(cfg.node_id)
        self.auth = Auth(self.store, executor=self.executor, rounds=cfg.bcrypt_rounds,
                         session_ttl=dt.timedelta(days=cfg.session_days),
                         threads=BCRYPT_THREADS, metrics=self.metrics,
                         max_hashing=cfg.bcrypt_queue or BCRYPT_QUEUE_PER_THREAD * BCRYPT_THREADS)
        self.bots = Bots(self.store, max_bots=cfg.quotas.bots_per_user,
                         max_tokens=cfg.quotas.tokens_per_bot)
        self.admins = Admins(self.store, cfg.admin_users)
        await self.admins.check()
        self.rooms = rooms = LocalRooms()
        seqs = RoomSeqs()
        self.bus = Bus(self.redis, cfg.redis_prefix, cfg.node_id, subscriber=self.subscriber)
        self.writer = MessageWriter(self.store, seqs, self.metrics)
        self.delivery = Delivery(self.store, self.bus, rooms, seqs, self.metrics,
                                 node_id=cfg.node_id, check_interval=cfg.presence_ttl / 3)
        self.delivery.on_revoke = self.auth.forget
        # Typed for one Redis; the cluster client has the same commands (see
        # docs/scaling.md for what presence needs on a cluster).
        presence = Presence(cast(Redis, self.redis), cfg.redis_prefix, cfg.node_id,
                            ttl=cfg.presence_ttl)
        team = Team(self.store, self.writer, presence, self.admins, node_id=cfg.node_id,
                    max_rooms=cfg.quotas.rooms_per_user)
        changes = MessageChanges(self.store, self.writer, team)
        self.files = Files(self.store, team, max_bytes=cfg.max_file_bytes,
                           quota=cfg.file_quota_bytes, orphan_seconds=cfg.file_orphan_seconds,
                           upload_timeout=cfg.file_upload_timeout)
        self.files.start()
        self.audit = CredentialAudit(rooms, self.store)
        self.audit.start()
        self.chat = Chat(self.store, rooms, seqs, self.writer, self.delivery, presence, team,
                         changes,
                         node_id=cfg.node_id, presence_ttl=cfg.presence_ttl,
                         presence_hold=cfg.presence_hold,
                         presence_grace=cfg.presence_grace,
                         presence_handover=cfg.presence_handover, files=self.files)
        self.metrics.watch(rooms=rooms, writer=self.writer, bus=self.bus, inflight=self.inflight)
        self.metrics.start()
        await self.chat.start()
        self.probe = ServiceProbe(self.store, self.bus, self.metrics)
        self.reporter = StatusReporter(cfg.node_id, rooms, self.metrics, self.bus, self.probe,
                                       self.redis, cfg.redis_prefix)
        self.reporter.start()
        self.limits = RateLimits(self.redis, cfg.redis_prefix, cfg.limits, metrics=self.metrics)
        self.registration = Registration(self.store, cfg.registration,
                                         admin_names=cfg.admin_users)
        self.deactivation = Deactivation(self.store, self.bots, self.delivery.command)
        self.caps = ConnectionCaps(cfg.limits)
        self.app = make_app(cfg, store=self.store, rooms=rooms, chat=self.chat, auth=self.auth,
                            bots=self.bots, probe=self.probe, reporter=self.reporter,
                            metrics=self.metrics, limits=self.limits, caps=self.caps,
                            inflight=self.inflight, admins=self.admins,
                            registration=self.registration, deactivation=self.deactivation,
                            files=self.files)
        self.metrics_app = make_metrics_app(cfg, auth=self.auth, admins=self.admins,
                                            metrics=self.metrics)

    async def shutdown(self, server: tornado.httpserver.HTTPServer | None,
                       timeout: float) -> None:
        """Graceful stop within `timeout` seconds; the caller stopped accepting already.

        Say "draining" on /readyz and refuse upgrades, tell WebSocket clients to go (1001)
        while leaving /status, wait for their departures, let HTTP requests and message
        stores in flight finish, then close idle connections and everything else. What
        holds the drain is logged once a second.
        """
        if hasattr(self, "inflight"):
            self.inflight.draining = True  # before any await: probes see it at once
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.5, timeout - 0.5)
        # Leaving /status takes Redis round trips (up to 2 s when Redis hangs): it runs
        # alongside the drain, so no client hears of the shutdown later for it.
        leaving = (asyncio.ensure_future(self.reporter.close())
                   if hasattr(self, "reporter") else None)
        if hasattr(self, "chat"):
            self.chat.hub.hand_over()
            await self._drain_connections(deadline)
            closing = asyncio.ensure_future(self.chat.close(max(0.1, deadline - loop.time())))
            while not (await asyncio.wait([closing], timeout=REPORT_EVERY))[0]:
                log.info("draining: finishing message stores (%s awaiting) and presence "
                         "updates; %.1f s left", _count(self.writer.awaiting, "send"),
                         max(0.0, deadline - loop.time()))
            await closing
            left = self.rooms.open_connections
            if left:
                log.warning("%d connections still open at the shutdown deadline", left)
        if leaving is not None:
            await leaving
        if server is not None:
            # Tornado closes the remaining (idle keep-alive) HTTP connections here.
            await server.close_all_connections()
        await self.close()

    async def _drain_connections(self, deadline: float) -> None:
        """Tell every WebSocket client to go and wait until they are gone and the HTTP
        requests in progress are answered, up to `deadline`.

        A client that has not answered the close frame within CLOSE_GRACE seconds is
        dropped: Tornado would wait 5 s for the reply of a peer that may never send it.
        """
        loop = asyncio.get_running_loop()
        started = loop.time()
        conns = list(self.rooms.connections)
        for conn in conns:
            conn.shut(1001, "server shutting down")
        log.info("draining: told %s to go; %s in progress",
                 _count(len(conns), "WebSocket connection"),
                 _count(self.inflight.count, "HTTP request"))
        grace_end = started + CLOSE_GRACE
        next_report = started + REPORT_EVERY
        dropped = False
        while ((self.rooms.open_connections or self.inflight.count)
               and (now := loop.time()) < deadline):
            if now >= grace_end and not dropped:
                dropped = True
                stragglers = list(self.rooms.connections)
                if stragglers:
                    log.info("draining: dropping %s that did not answer the close within "
                             "%.1f s", _count(len(stragglers), "WebSocket connection"),
                             CLOSE_GRACE)
                    for conn in stragglers:
                        conn.abort()
                    continue
            if now >= next_report:
                log.info("draining: %s; %.1f s left", self._holding(), deadline - now)
                next_report += REPORT_EVERY
            wake = min(deadline, next_report, deadline if dropped else grace_end)
            await self.inflight.changed(wake - now)

    def _holding(self) -> str:
        """What holds the drain, as a log phrase."""
        parts = []
        if self.rooms.open_connections:
            kinds = self.rooms.connection_kinds()
            parts.append(f"{_count(kinds['total'], 'WebSocket connection')} open "
                         f"({kinds['browser']} browser, {kinds['bot']} bot)")
        if self.inflight.count:
            parts.append(f"{_count(self.inflight.count, 'HTTP request')} in progress")
        if self.writer.awaiting:
            parts.append(f"{_count(self.writer.awaiting, 'send')} awaiting storage")
        return ", ".join(parts)

    async def close(self) -> None:
        """Close in reverse order of start; safe to call on a half-started runtime."""
        if hasattr(self, "reporter"):
            await self.reporter.close()
        if hasattr(self, "chat"):
            await self.chat.close(1.0)
        if hasattr(self, "audit"):
            await self.audit.close()
        if hasattr(self, "files"):
            await self.files.close()
        if hasattr(self, "metrics"):
            await self.metrics.close()
        if hasattr(self, "limits"):
            await self.limits.close()
        if hasattr(self, "redis"):
            await self.redis.aclose()
        if hasattr(self, "subscriber"):
            await self.subscriber.aclose()
        if hasattr(self, "store"):
            self.store.close()
        if hasattr(self, "executor"):
            self.executor.shutdown(wait=False)
        await asyncio.sleep(0)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
