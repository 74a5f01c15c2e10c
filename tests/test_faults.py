"""Faults injected for real while traffic flows: Redis killed and restarted empty, Redis
hung (SIGSTOP), MongoDB hung and slow (SIGSTOP, failCommand), a server process killed
with SIGKILL. Each test ends by reading MongoDB directly: every acknowledged message is
there, once, with the body and author that were sent (docs/reliability.md).

The test client (`Peer`) behaves as docs/protocol.md §12-13 tell a client to: every send
has a `client_id`, acks are matched by `ref` (a late `ack` after `unavailable` counts),
messages are kept per room by `seq`, and a hole in the seqs is filled with
`history after` once the grace period has passed. A `Peer(fill_gaps=False)` never asks
for history after joining: what it holds is what the server delivered live, which is
how the tests check the server's own resync after a Redis outage (§7).
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pymongo
import pytest

from server.config import Config
from server.embedded import ChildService, free_port
from tests.client import Client, Socket
from tests.conftest import (
    STATUS_TOKEN,
    TEST_SECRET,
    Node,
    close_node,
    mongo_url_of,
    open_node,
    redis_url_of,
)
from tests.processes import start_server, wait_ready

ROOT = Path(__file__).resolve().parent.parent

GRACE = 0.7  # protocol §13: how long a client lets out-of-order live frames settle
SEND_TIMEOUT = 5.0  # Chat.send_timeout: a send is answered within this (+ a Redis op)
REDIS_OP = 2.0  # every Redis call the send path makes is bounded by this
# The longest a send may go unanswered: the rate-limit check (one Redis op), then the
# store's 5 s, plus scheduling slack for a loaded 2-core test machine.
SEND_BOUND = REDIS_OP + SEND_TIMEOUT + 1.5


# The test client ----------------------------------------------------------------------


@dataclass
class Sent:
    """One `send` frame and what came back for it."""

    room: str
    client_id: str
    body: str
    user_id: str
    at: float
    reply: dict[str, Any] | None = None  # the first ack or error echoing the ref
    answered: float | None = None
    late_ack: dict[str, Any] | None = None  # an ack after an `unavailable` error
    late_at: float | None = None

    @property
    def ack(self) -> dict[str, Any] | None:
        if self.reply is not None and self.reply["type"] == "ack":
            return self.reply
        return self.late_ack

    @property
    def acked_at(self) -> float | None:
        """When the ack arrived: with the first reply, or late after `unavailable`."""
        if self.reply is not None and self.reply["type"] == "ack":
            return self.answered
        return self.late_at

    @property
    def latency(self) -> float | None:
        return None if self.answered is None else self.answered - self.at


@dataclass
class RoomLog:
    """A client's copy of one room: messages by seq, holes history confirmed, and the
    highest seq up to which it holds everything (`contiguous`)."""

    messages: dict[int, dict[str, Any]] = field(default_factory=dict)
    gaps: set[int] = field(default_factory=set)
    contiguous: int = 0
    duplicates: int = 0
    filler: asyncio.Task[None] | None = None

    @property
    def top(self) -> int:
        return max(self.messages, default=0)

    def add(self, message: dict[str, Any]) -> None:
        seq = message["seq"]
        if seq in self.messages:
            self.duplicates += 1
            assert self.messages[seq]["id"] == message["id"], (self.messages[seq], message)
            return
        self.messages[seq] = message
        self.gaps.discard(seq)  # late, not failed: protocol §13's rare case

    def advance(self) -> None:
        while self.contiguous + 1 in self.messages or self.contiguous + 1 in self.gaps:
            self.contiguous += 1


class Peer:
    """A WebSocket client that keeps what the protocol says a client must keep."""

    def __init__(self, client: Client, sock: Socket, *, fill_gaps: bool = True) -> None:
        self.client = client
        self.fill_gaps = fill_gaps
        self.logs: dict[str, RoomLog] = {}
        self.sends: list[Sent] = []
        self.events: list[tuple[float, dict[str, Any]]] = []  # presence, typing, ...
        self.arrivals: dict[tuple[str, int], float] = {}  # first live arrival by seq
        self._by_ref: dict[str, Sent] = {}
        self._calls: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._refs = itertools.count(1)
        self._changed = asyncio.Event()
        self.history_calls = 0
        self._attach(sock)

    @classmethod
    async def connect(cls, url: str, *, client: Client | None = None,
                      fill_gaps: bool = True) -> Peer:
        if client is None:
            client = Client(url)
            await client.register()
        return cls(client, await client.ws(), fill_gaps=fill_gaps)

    def _attach(self, sock: Socket) -> None:
        self.sock = sock
        self.user = sock.hello["user"]
        self.node = sock.hello["node"]
        self.close_code: int | None = None
        self.closed = asyncio.get_running_loop().create_future()
        self._unanswered = 0  # sends on this connection still awaiting their ack/error
        self._reader = asyncio.ensure_future(self._read(sock))

    async def _read(self, sock: Socket) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                raw = await sock.conn.read_message()
                if raw is None:
                    break
                self._on_frame(json.loads(raw), loop.time())
        finally:
            self.close_code = sock.conn.close_code
            for fut in self._calls.values():
                if not fut.done():
                    fut.set_exception(ConnectionError("connection closed"))
            self._calls.clear()
            if not self.closed.done():
                self.closed.set_result(self.close_code)
            self._changed.set()

    def _on_frame(self, frame: dict[str, Any], now: float) -> None:
        kind, ref = frame["type"], frame.get("ref")
        self._changed.set()
        if kind in ("ack", "error") and ref in self._by_ref:
            sent = self._by_ref[ref]
            if sent.reply is None:
                sent.reply, sent.answered = frame, now
                self._unanswered -= 1
            elif kind == "ack":
                assert sent.late_ack is None, ("two acks for one send", sent, frame)
                sent.late_ack, sent.late_at = frame, now
            return
        if ref is not None and ref in self._calls:
            fut = self._calls.pop(ref)
            if not fut.done():
                fut.set_result(frame)
            return
        if kind in ("message", "event"):  # the room's stream: both have a seq
            self.arrivals.setdefault((frame["room"], frame["seq"]), now)
            self._on_live(frame)
        else:
            self.events.append((now, frame))

    def _on_live(self, message: dict[str, Any]) -> None:
        log = self.logs.setdefault(message["room"], RoomLog())
        log.add(message)
        log.advance()
        if self.fill_gaps and log.top > log.contiguous and (
                log.filler is None or log.filler.done()):
            log.filler = asyncio.ensure_future(self._fill(message["room"]))

    async def _fill(self, room: str) -> None:
        """Protocol §13: wait out the grace period, then page `history after`."""
        log = self.logs[room]
        await asyncio.sleep(GRACE)
        for attempt in range(40):
            if log.top <= log.contiguous or self.closed.done():
                return
            try:
                page = await self.call({"type": "history", "room": room,
                                        "after": log.contiguous, "limit": 100}, timeout=10)
            except (ConnectionError, asyncio.TimeoutError):
                return
            self.history_calls += 1
            if page["type"] == "history":
                self._absorb(room, log.contiguous, page["messages"])
            else:  # unavailable: back off, as a client should
                await asyncio.sleep(min(2.0, 0.1 * 2 ** attempt))

    def _absorb(self, room: str, after: int, messages: list[dict[str, Any]]) -> None:
        """Add an ascending page of everything stored after `after`; seqs inside its
        range that it lacks are holes (failed stores)."""
        log = self.logs.setdefault(room, RoomLog())
        for m in messages:
            log.add(m)
        if messages:
            log.gaps.update(s for s in range(after + 1, messages[-1]["seq"])
                            if s not in log.messages)
        log.advance()
        self._changed.set()

    async def call(self, frame: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
        """Send a frame with a fresh ref and return its direct reply."""
        ref = f"c{next(self._refs)}"
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._calls[ref] = fut
        try:
            await self.sock.send({**frame, "ref": ref})
            return await asyncio.wait_for(fut, timeout)
        finally:
            self._calls.pop(ref, None)

    async def send_raw(self, frame: dict[str, Any]) -> None:
        await self.sock.send(frame)

    async def join(self, room: str) -> dict[str, Any]:
        """Join, resuming after `contiguous` (0 on first join), and page to the end."""
        log = self.logs.setdefault(room, RoomLog())
        since = log.contiguous
        reply = await self.call({"type": "join", "room": room, "since": since}, timeout=10)
        assert reply["type"] == "joined", reply
        self._absorb(room, since, reply["messages"])
        more = reply["has_more"]
        while more:
            after = log.contiguous
            page = await self.call({"type": "history", "room": room, "after": after,
                                    "limit": 100}, timeout=10)
            assert page["type"] == "history", page
            self._absorb(room, after, page["messages"])
            more = page["has_more"]
        return reply

    async def send(self, room: str, body: str, client_id: str) -> Sent:
        ref = f"s{next(self._refs)}"
        sent = Sent(room, client_id, body, self.user["id"], asyncio.get_running_loop().time())
        self._by_ref[ref] = sent
        self.sends.append(sent)
        self._unanswered += 1
        await self.sock.send({"type": "send", "room": room, "body": body,
                              "client_id": client_id, "ref": ref})
        return sent

    async def ping(self) -> float:
        loop = asyncio.get_running_loop()
        start = loop.time()
        reply = await self.call({"type": "ping"}, timeout=5)
        assert reply["type"] == "pong", reply
        return loop.time() - start

    async def until(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        """Wait, frame by frame, until `predicate()` holds; fail after `timeout`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate():
            self._changed.clear()
            remaining = deadline - loop.time()
            assert remaining > 0, f"{self.user['name']}: not {what} within {timeout}s"
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except asyncio.TimeoutError:
                pass

    def outstanding(self) -> int:
        return self._unanswered

    def unacked(self) -> list[Sent]:
        """The outbox: sends (latest attempt per client_id) with no ack yet."""
        acked = {s.client_id for s in self.sends if s.ack is not None}
        latest = {s.client_id: s for s in self.sends}
        return [s for cid, s in latest.items() if cid not in acked]

    async def flush_outbox(self, timeout: float) -> None:
        """Protocol §12: resend every unacknowledged send with its client_id, at most
        WINDOW in flight, until all are acked."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while outbox := self.unacked():
            assert loop.time() < deadline, f"{len(outbox)} sends not acked in {timeout}s"
            for sent in outbox:
                await self.until(lambda: self.outstanding() < WINDOW, SEND_BOUND, "window")
                await self.send(sent.room, sent.body, sent.client_id)
            await self.until(lambda: self.outstanding() == 0, SEND_BOUND, "answered")

    async def reconnect(self, url: str) -> None:
        """Protocol §13: connect anywhere, rejoin with `since`, resend the outbox."""
        moved = Client(url)
        moved.cookies = dict(self.client.cookies)
        moved.user = self.client.user
        self.client = moved
        self._attach(await moved.ws())
        for room in list(self.logs):
            await self.join(room)
        await self.flush_outbox(timeout=2 * SEND_BOUND)

    async def close(self) -> None:
        self.sock.close()
        for log in self.logs.values():
            if log.filler is not None:
                log.filler.cancel()
        await asyncio.wait([self._reader], timeout=5)


WINDOW = 32  # protocol §12: keep at most 32 sends unacknowledged per connection


async def pump(peer: Peer, room: str, rate: float, stop: asyncio.Event, tag: str,
               window: int = WINDOW) -> None:
    """Send `rate` messages a second to `room` until `stop` is set, never more than
    `window` unanswered (a client that ignores the window gets `rate_limited`)."""
    loop = asyncio.get_running_loop()
    interval = 1.0 / rate
    next_at = loop.time()
    for i in itertools.count():
        if stop.is_set() or peer.closed.done():
            return
        await peer.until(lambda: peer.closed.done() or peer.outstanding() < window,
                         SEND_BOUND, "below the in-flight window")
        await peer.send(room, f"{tag} message {i}", f"{tag}-{i}")
        next_at = max(next_at + interval, loop.time() - interval)  # no catch-up bursts
        try:
            await asyncio.wait_for(stop.wait(), max(0.0, next_at - loop.time()))
        except asyncio.TimeoutError:
            pass  # the pacing interval passed: send the next one


class Background:
    """A test's background traffic: stopped and awaited whatever happens."""

    def __init__(self) -> None:
        self.stop = asyncio.Event()
        self.tasks: list[asyncio.Future[None]] = []

    def start(self, coro: Any) -> None:
        self.tasks.append(asyncio.ensure_future(coro))

    async def halt(self) -> None:
        """Stop every task; re-raise the first failure of one."""
        self.stop.set()
        if not self.tasks:
            return
        _, pending = await asyncio.wait(self.tasks, timeout=SEND_BOUND + 5)
        for task in pending:
            task.cancel()
        results = await asyncio.gather(*self.tasks, return_exceptions=True)
        self.tasks = []
        for result in results:
            if isinstance(result, BaseException) and not pending:
                raise result


async def tear_down(bg: Any, peers: Iterable[Peer], nodes: Iterable[Any]) -> None:
    """Stop the traffic, then close the clients and the nodes of a fault test."""
    await bg.halt()
    for peer in peers:
        await peer.close()
    for node in nodes:
        await close_node(node)


def answer_bound_violations(peers: Iterable[Peer], bound: float, now: float) -> list[Sent]:
    """Sends answered later than `bound`, or still unanswered after it."""
    late = []
    for peer in peers:
        for s in peer.sends:
            waited = s.latency if s.latency is not None else now - s.at
            if waited > bound:
                late.append(s)
    return late


async def send_until_acked(peer: Peer, room: str, body: str, client_id: str,
                           timeout: float) -> Sent:
    """Protocol §12's retry rule: resend with the same client_id until acked."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        sent = await peer.send(room, body, client_id)
        await peer.until(lambda s=sent: s.reply is not None, SEND_BOUND, "answered")
        if sent.ack is not None:
            return sent
        assert sent.reply["code"] in ("unavailable", "rate_limited"), sent.reply
        assert loop.time() < deadline, f"{client_id} not acked within {timeout}s: {sent}"
        await asyncio.sleep(float(sent.reply.get("retry_after") or 0.2))  # backoff


async def all_answered(peers: list[Peer], timeout: float) -> None:
    """Every send of every peer got its ack or error (bounded)."""
    for peer in peers:
        await peer.until(lambda p=peer: all(s.reply is not None for s in p.sends),
                         timeout, "answered every send")


def acked_of(peers: Iterable[Peer]) -> list[Sent]:
    return [s for peer in peers for s in peer.sends if s.ack is not None]


# Checks -------------------------------------------------------------------------------


def assert_acked_durable(mongo_url: str, db_name: str, peers: Iterable[Peer]) -> int:
    """Acked means durable (issue 5.5): read MongoDB directly. Every acked (room, seq) is
    stored with the body, author and client_id that were sent; no seq was acked for two
    different messages; repeats of a client_id were acked with the original seq."""
    sends = acked_of(peers)
    by_key: dict[tuple[str, str, str], dict[str, Any]] = {}
    by_seq: dict[tuple[str, int], tuple[str, str]] = {}
    for s in sends:
        ack = s.ack
        assert ack is not None and ack["room"] == s.room and ack["client_id"] == s.client_id
        first = by_key.setdefault((s.room, s.user_id, s.client_id), ack)
        assert (first["seq"], first["id"]) == (ack["seq"], ack["id"]), (first, ack)
        owner = by_seq.setdefault((s.room, ack["seq"]), (s.user_id, s.client_id))
        assert owner == (s.user_id, s.client_id), f"seq {ack['seq']} acked twice: {owner}, {s}"
    rooms = sorted({s.room for s in sends})
    with pymongo.MongoClient(mongo_url, serverSelectionTimeoutMS=10_000) as client:
        docs = list(client[db_name].messages.find({"room": {"$in": rooms}}))
    stored = {(d["room"], d["seq"]): d for d in docs}
    per_client_id: dict[tuple[str, str, str], int] = {}
    for d in docs:
        if d.get("client_id") is not None:
            key = (d["room"], d["user"]["id"], d["client_id"])
            per_client_id[key] = per_client_id.get(key, 0) + 1
    assert all(n == 1 for n in per_client_id.values()), "a client_id was stored twice"
    for s in sends:
        ack = s.ack
        assert ack is not None
        doc = stored.get((s.room, ack["seq"]))
        assert doc is not None, f"acked but not in MongoDB: {s.room} seq {ack['seq']} {s}"
        assert str(doc["_id"]) == ack["id"]
        assert doc["body"] == s.body and doc["user"]["id"] == s.user_id
        assert doc.get("client_id") == s.client_id
    return len(by_key)


def stored_seqs(mongo_url: str, db_name: str, room: str) -> dict[int, dict[str, Any]]:
    with pymongo.MongoClient(mongo_url, serverSelectionTimeoutMS=10_000) as client:
        return {d["seq"]: d for d in client[db_name].messages.find({"room": room})}


async def assert_clients_converge(peers: Iterable[Peer], mongo_url: str, db_name: str,
                                  timeout: float) -> None:
    """Every client ends holding every stored message of its rooms exactly once, in seq
    order: each stored (user, client_id) at exactly one seq, with the stored body."""
    peers = list(peers)
    rooms = {room for p in peers for room in p.logs}
    stored = {room: await asyncio.to_thread(stored_seqs, mongo_url, db_name, room)
              for room in rooms}
    for peer in peers:
        for room, log in peer.logs.items():
            want = set(stored[room])
            try:
                await peer.until(lambda log=log, want=want: want <= set(log.messages),
                                 timeout, f"holding all {len(want)} stored messages of {room}")
            except AssertionError as e:
                missing = sorted(want - set(log.messages))
                raise AssertionError(
                    f"{e}: node {peer.node}, fill_gaps {peer.fill_gaps}, contiguous "
                    f"{log.contiguous}, top {log.top}, {len(missing)} missing "
                    f"{missing[:10]}...{missing[-3:]}, gaps {sorted(log.gaps)[:10]}") from None
            ids = [(m["user"]["id"], m["client_id"]) for m in log.messages.values()
                   if m["type"] == "message"]
            assert len(ids) == len(set(ids)), f"{peer.user['name']}: a message twice in {room}"
            for seq, doc in stored[room].items():
                m = log.messages[seq]
                assert (m["id"], m["body"], m["client_id"]) == (
                    str(doc["_id"]), doc["body"], doc.get("client_id")), (m, doc)
            assert set(log.messages) == want, "a message that MongoDB does not have"


# Services and nodes -------------------------------------------------------------------


def node_config(config: Config, n: int) -> Config:
    return dataclasses.replace(config, node_id=f"{config.node_id}-{n}")


async def two_nodes(config: Config, mongo: ChildService, redis: ChildService
                    ) -> tuple[Node, Node]:
    nodes = []
    for n in (1, 2):
        nodes.append(await open_node(node_config(config, n), mongo_url=mongo_url_of(mongo),
                                     redis_url=redis_url_of(redis)))
    return nodes[0], nodes[1]


async def create_room(url: str, name: str) -> None:
    admin = Client(url)
    await admin.register()
    status, body, _ = await admin.request("POST", "/api/rooms", {"name": name})
    assert status == 201, (status, body)


async def readyz(url: str) -> int:
    try:
        return (await Client(url).request("GET", "/readyz"))[0]
    except OSError:
        return 0


async def wait_readyz(url: str, want: int, within: float) -> float:
    """Poll /readyz as a load balancer does until it answers `want`; returns the time."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    while (status := await readyz(url)) != want:
        assert loop.time() - start < within, f"/readyz still {status} after {within}s"
        await asyncio.sleep(0.1)  # probe interval of the poller, not a guess
    return loop.time() - start


async def status_of(url: str) -> dict[str, Any]:
    operator = Client(url)
    operator.token = STATUS_TOKEN
    status, body, _ = await operator.request("GET", "/status")
    assert status == 200, (status, body)
    return body


def signal_service(svc: ChildService, sig: signal.Signals) -> None:
    assert svc.proc is not None
    os.kill(svc.proc.pid, sig)


async def kill_service(svc: ChildService) -> None:
    assert svc.proc is not None
    svc.proc.kill()
    await asyncio.to_thread(svc.proc.wait)
    svc.proc = None


# 1. Redis killed and restarted empty ---------------------------------------------------


async def test_redis_killed_for_5s_under_load_then_restarted_empty_loses_nothing_acked(
        config, private_mongo, private_redis):
    node1, node2 = await two_nodes(config, private_mongo, private_redis)
    nodes = (node1, node2)
    rooms = ("alpha", "beta")
    peers: list[Peer] = []
    bg = Background()
    try:
        for room in rooms:
            await create_room(node1.base_url, room)
        senders: list[tuple[Peer, str]] = []
        watchers: list[Peer] = []
        for node in nodes:
            for room in rooms:
                sender = await Peer.connect(node.base_url)
                await sender.join(room)
                senders.append((sender, room))
            # A watcher never asks for history after joining: it holds exactly what the
            # server delivered live, including what the server resynced after Redis.
            watcher = await Peer.connect(node.base_url, fill_gaps=False)
            for room in rooms:
                await watcher.join(room)
            watchers.append(watcher)
        peers = [p for p, _ in senders] + watchers
        loop = asyncio.get_running_loop()
        for p, room in senders:  # 4 x 50 = 200 msg/s, 100 per node
            bg.start(pump(p, room, 50, bg.stop, f"{p.user['name']}-{room}"))
        await asyncio.sleep(2)  # traffic flows before the fault
        killed_at = loop.time()
        await kill_service(private_redis)
        down = await asyncio.gather(*(wait_readyz(n.base_url, 503, 2) for n in nodes))
        await asyncio.sleep(5 - (loop.time() - killed_at))  # the fault: Redis stays dead 5 s
        outage = (killed_at, loop.time())
        await asyncio.to_thread(private_redis.start)  # same port, empty (no persistence)
        restarted = loop.time()
        up = await asyncio.gather(*(wait_readyz(n.base_url, 200, 10) for n in nodes))
        await asyncio.sleep(2)  # traffic flows after recovery
        await bg.halt()
        await all_answered(peers, SEND_BOUND)
        late = answer_bound_violations(peers, SEND_BOUND, loop.time())
        assert not late, f"{len(late)} sends answered after {SEND_BOUND}s: {late[:3]}"
        during = [s for p in peers for s in p.sends if outage[0] <= s.at <= outage[1]]
        assert len(during) > 500, len(during)
        # MongoDB was up, so chat goes on: sends are stored and acked; an error must be
        # an explicit one, and its send is retried from the outbox below.
        errors = [s.reply for s in during if s.ack is None]
        assert {e["code"] for e in errors if e} <= {"unavailable", "rate_limited"}, errors
        assert len(errors) < 0.1 * len(during), errors[:3]
        await asyncio.gather(*(p.flush_outbox(timeout=20) for p in peers))
        for node in nodes:  # no process died: each resubscribed by itself and reports it
            assert node.runtime.bus.resubscribes >= 1
        for node in nodes:
            processes = (await status_of(node.base_url))["processes"]
            me = next(p for p in processes if p["id"] == node.runtime.config.node_id)
            assert me["redis_subscriber"] == "connected" and me["redis_resubscribes"] >= 1
        # Presence lived in Redis too: the heartbeats write it back by themselves, so a
        # newcomer soon sees the members of both processes again.
        everyone = {p.user["id"] for p in peers if "alpha" in p.logs}
        newcomer = await Peer.connect(node1.base_url)
        peers.append(newcomer)
        healed = loop.time() + 3 * config.presence_ttl
        while not everyone <= {m["id"] for m in (await newcomer.join("alpha"))["members"]}:
            assert loop.time() < healed, "presence not rebuilt after Redis came back empty"
            await asyncio.sleep(0.5)  # a re-join is harmless; the heartbeat is periodic
        # One message per room after recovery shows every client its last gap.
        for sender, room in senders[:2]:
            sent = await sender.send(room, "after recovery", f"final-{room}")
            await sender.until(lambda s=sent: s.ack is not None, 5, "acked")
        mongo = mongo_url_of(private_mongo)
        count = await asyncio.to_thread(assert_acked_durable, mongo, config.db_name, peers)
        await assert_clients_converge(peers, mongo, config.db_name, timeout=15)
        print(f"\nredis kill: {count} acked, {len(during)} during the outage; /readyz 503 "
              f"after {max(down):.2f}s, 200 {max(up):.2f}s after restart "
              f"({loop.time() - restarted:.1f}s ago); history calls "
              f"{sum(p.history_calls for p in peers)}; duplicates per client "
              f"{[sum(lg.duplicates for lg in p.logs.values()) for p in peers]}")
    finally:
        await tear_down(bg, peers, nodes)


# 2. Redis hung ------------------------------------------------------------------------


async def ping_every(peer: Peer, period: float, stop: asyncio.Event,
                     rtts: list[tuple[float, float]]) -> None:
    """An idle client's liveness check: `ping` every `period`, recording round trips."""
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        started = loop.time()
        rtts.append((started, await peer.ping()))
        try:
            await asyncio.wait_for(stop.wait(), max(0.0, started + period - loop.time()))
        except asyncio.TimeoutError:
            pass  # next ping is due


async def test_redis_hung_15s_never_blocks_the_ioloop_and_loses_nothing_acked(
        config, private_mongo, private_redis):
    node1, node2 = await two_nodes(config, private_mongo, private_redis)
    nodes = (node1, node2)
    peers: list[Peer] = []
    idle: list[Peer] = []
    bg = Background()
    try:
        await create_room(node1.base_url, "alpha")
        senders = []
        watchers = []
        for node in nodes:
            sender = await Peer.connect(node.base_url)
            await sender.join("alpha")
            senders.append(sender)
            watcher = await Peer.connect(node.base_url, fill_gaps=False)
            await watcher.join("alpha")
            watchers.append(watcher)
            idle.append(await Peer.connect(node.base_url))
        peers = senders + watchers
        loop = asyncio.get_running_loop()
        rtts: list[tuple[float, float]] = []
        for p in senders:
            bg.start(pump(p, "alpha", 25, bg.stop, p.user["name"]))
        for p in idle:
            bg.start(ping_every(p, 0.5, bg.stop, rtts))
        await asyncio.sleep(2)  # traffic flows before the fault
        signal_service(private_redis, signal.SIGSTOP)
        stopped_at = loop.time()
        try:
            # Degraded, as with Redis dead: /readyz fails (its Redis PING times out).
            down = await asyncio.gather(*(wait_readyz(n.base_url, 503, 5) for n in nodes))
            await asyncio.sleep(15 - (loop.time() - stopped_at))  # the fault: hung 15 s
        finally:
            signal_service(private_redis, signal.SIGCONT)
        resumed_at = loop.time()
        up = await asyncio.gather(*(wait_readyz(n.base_url, 200, 10) for n in nodes))
        await asyncio.sleep(3)  # traffic flows after recovery
        await bg.halt()
        # Every send is answered, at the latest SEND_BOUND after Redis answers again.
        await all_answered(peers, SEND_BOUND)
        during = [s for p in senders for s in p.sends if stopped_at <= s.at <= resumed_at]
        assert during and all(s.reply is not None for s in during)
        hung_rtts = [rtt for at, rtt in rtts if stopped_at <= at <= resumed_at]
        assert len(hung_rtts) >= 2 * 25, len(hung_rtts)  # both idle clients, all along
        assert max(rtt for _, rtt in rtts) < 0.2, sorted(rtt for _, rtt in rtts)[-5:]
        for sender in senders:
            sent = await sender.send("alpha", "after the hang", f"final-{sender.user['name']}")
            await sender.until(lambda s=sent: s.ack is not None, SEND_BOUND, "acked")
        mongo = mongo_url_of(private_mongo)
        count = await asyncio.to_thread(assert_acked_durable, mongo, config.db_name, peers)
        await assert_clients_converge(peers, mongo, config.db_name, timeout=15)
        answers = sorted(s.latency or 0 for s in during)
        print(f"\nredis hang: {count} acked; {len(during)} sends during the hang, answered "
              f"p50 {answers[len(answers) // 2]:.2f}s max {answers[-1]:.2f}s, "
              f"{sum(1 for s in during if s.ack is None)} errors; idle ping max "
              f"{max(r for _, r in rtts) * 1000:.0f} ms over {len(rtts)}; /readyz 503 after "
              f"{max(down):.1f}s, 200 {max(up):.1f}s after SIGCONT; resubscribes "
              f"{[n.runtime.bus.resubscribes for n in nodes]}")
        # One hang, one recovery: the subscriber counts as back only once a probe
        # made the round trip, not whenever a read happened to return nothing.
        assert [n.runtime.bus.resubscribes for n in nodes] == [1, 1]
        late = answer_bound_violations(peers, SEND_BOUND, loop.time())
        assert not late, (f"{len(late)} of {len(during)} sends during the hang answered "
                          f"after {SEND_BOUND}s (max {max(s.latency or 0 for s in late):.1f}s)")
    finally:
        await tear_down(bg, peers + idle, nodes)


# 3. MongoDB hung, then slow ------------------------------------------------------------


def fail_point(mongo_url: str, mode: Any, data: dict[str, Any]) -> None:
    with pymongo.MongoClient(mongo_url, serverSelectionTimeoutMS=10_000) as client:
        client.admin.command({"configureFailPoint": "failCommand", "mode": mode,
                              "data": data})


def pending_sends(node: Node) -> int:
    """Sends queued in this process for storing. No public figure exposes it, so the
    test reads the writer's queue length (read only; nothing is patched)."""
    return node.runtime.writer.queued


async def sample(probe: Callable[[], int], stop: asyncio.Event, out: list[int],
                 period: float = 0.1) -> None:
    while not stop.is_set():
        out.append(probe())
        try:
            await asyncio.wait_for(stop.wait(), period)
        except asyncio.TimeoutError:
            pass  # next sample is due


async def flood(peer: Peer, room: str, n: int, tag: str) -> list[Sent]:
    """`n` sends at once, ignoring the in-flight window."""
    return [await peer.send(room, f"{tag} flood {i}", f"{tag}-{i}") for i in range(n)]


async def break_mongodb(svc: ChildService, how: str) -> None:
    if how == "hung":  # SIGSTOP: connections open, nothing answers, ops time out
        signal_service(svc, signal.SIGSTOP)
    else:  # every command that reads or writes a message drops its connection
        await asyncio.to_thread(fail_point, mongo_url_of(svc), "alwaysOn", {
            "failCommands": ["insert", "update", "find"], "closeConnection": True})


async def heal_mongodb(svc: ChildService, how: str) -> None:
    if how == "hung":
        signal_service(svc, signal.SIGCONT)
    else:
        await asyncio.to_thread(fail_point, mongo_url_of(svc), "off", {})


@pytest.mark.parametrize("how", ["hung", "dropping_connections"])
async def test_mongodb_down_10s_answers_unavailable_in_time_and_stores_nothing_unacked(
        config, private_mongo, private_redis, how):
    node1, node2 = await two_nodes(config, private_mongo, private_redis)
    nodes = (node1, node2)
    peers: list[Peer] = []
    bg = Background()
    try:
        await create_room(node1.base_url, "alpha")
        senders = []
        for node in nodes:
            for _ in range(2):
                sender = await Peer.connect(node.base_url)
                await sender.join("alpha")
                senders.append(sender)
        flooder = await Peer.connect(node1.base_url)
        await flooder.join("alpha")
        watchers = []
        for node in nodes:
            watcher = await Peer.connect(node.base_url, fill_gaps=False)
            await watcher.join("alpha")
            watchers.append(watcher)
        peers = [*senders, flooder, *watchers]
        loop = asyncio.get_running_loop()
        for p in senders:
            bg.start(pump(p, "alpha", 10, bg.stop, p.user["name"]))
        pending: dict[str, list[int]] = {n.runtime.config.node_id: [] for n in nodes}
        for n in nodes:
            bg.start(sample(lambda n=n: pending_sends(n), bg.stop,
                            pending[n.runtime.config.node_id]))
        await asyncio.sleep(2)  # traffic flows before the fault
        await break_mongodb(private_mongo, how)
        stopped_at, stopped_wall = loop.time(), time.time()
        try:
            if how == "hung":  # its PING fails too (a failpoint on reads spares PING)
                await wait_readyz(node1.base_url, 503, 5)
            floods = []
            for round_ in range(2):  # a client ignoring the window: 100 sends at once
                burst = await flood(flooder, "alpha", 100, f"flood{round_}")
                floods.append(burst)
                await flooder.until(lambda b=burst: all(s.reply for s in b), SEND_BOUND,
                                    "answered the flood")
            await asyncio.sleep(max(0.0, 10 - (loop.time() - stopped_at)))  # 10 s down
        finally:
            await heal_mongodb(private_mongo, how)
        resumed_at, resumed_wall = loop.time(), time.time()
        # Service resumes by itself: a client retrying by the rules is acked soon.
        probe = await send_until_acked(watchers[1], "alpha", "are you back?", "back-1", 15)
        back_after = probe.answered - resumed_at
        await asyncio.sleep(2)  # traffic flows after recovery
        await bg.halt()
        await all_answered(peers, SEND_BOUND)
        during = [s for p in peers for s in p.sends if stopped_at <= s.at <= resumed_at - 6]
        codes = {s.reply["code"] if s.reply else None for s in during}
        assert during and codes <= {"unavailable", "rate_limited"}, codes
        # Nothing acked while MongoDB could store nothing. A late ack (allowed after
        # `unavailable`) is for an insert a hung MongoDB carried out once it resumed:
        # it carries the ts of the moment the server took the send, in the outage.
        acks = [(s.answered, s.reply) for p in peers for s in p.sends
                if s.reply and s.reply["type"] == "ack"]
        assert not [a for at, a in acks if stopped_at + 1 < at < resumed_at], acks
        late = [s.late_ack for s in during if s.late_ack is not None]
        assert all(stopped_wall * 1000 - 1000 <= a["ts"] <= resumed_wall * 1000
                   for a in late), late
        slow = [s for s in during if (s.latency or 99) > SEND_TIMEOUT + 1]
        assert not slow, f"{len(slow)} sends answered after {SEND_TIMEOUT + 1}s: {slow[:3]}"
        for burst in floods:
            refused = [s for s in burst if s.reply and s.reply["code"] == "rate_limited"]
            assert all((s.latency or 99) < 1.0 for s in refused)
            if how == "hung":  # the in-flight bound held: 32 queued, the rest refused
                assert len(refused) >= 100 - 32, len(refused)
        mongo = mongo_url_of(private_mongo)
        stored = await asyncio.to_thread(stored_seqs, mongo, config.db_name, "alpha")
        stored_ids = {(d["user"]["id"], d.get("client_id")) for d in stored.values()}
        # Nothing unstored was published: no client holds a send that MongoDB lacks.
        refused_ids = {(s.user_id, s.client_id) for p in peers for s in p.sends
                       if s.ack is None} - stored_ids
        for peer in peers:
            held = {(m["user"]["id"], m["client_id"]) for lg in peer.logs.values()
                    for m in lg.messages.values()}
            assert not held & refused_ids
        # The outbox: every unacknowledged send is retried with its client_id.
        await asyncio.gather(*(p.flush_outbox(timeout=20) for p in peers))
        count = await asyncio.to_thread(assert_acked_durable, mongo, config.db_name, peers)
        await assert_clients_converge(peers, mongo, config.db_name, timeout=15)
        sends = sum(len(p.sends) for p in peers)
        assert all(max(v) <= 32 * 3 for v in pending.values()), pending
        print(f"\nmongo {how}: {count} acked of {sends} sends; {len(during)} during the "
              f"outage, answered max {max(s.latency or 0 for s in during):.2f}s; acked again "
              f"{back_after:.2f}s after it came back; max queued per node "
              f"{[max(v) for v in pending.values()]}")
    finally:
        await tear_down(bg, peers, nodes)


async def test_mongodb_slow_keeps_fanout_presence_typing_and_pings_live_and_bounds_sends(
        config, private_mongo, private_redis):
    node1, node2 = await two_nodes(config, private_mongo, private_redis)
    nodes = (node1, node2)
    mongo = mongo_url_of(private_mongo)
    peers: list[Peer] = []
    idle: list[Peer] = []
    bg = Background()
    armed = False
    try:
        await create_room(node1.base_url, "alpha")
        sender = await Peer.connect(node1.base_url)  # stores go slow for this one
        typist = await Peer.connect(node1.base_url)
        remote = await Peer.connect(node2.base_url)  # sees the others through Redis
        for peer in (sender, typist, remote):
            await peer.join("alpha")
        peers = [sender, typist, remote]
        idle = [await Peer.connect(n.base_url) for n in nodes]
        # A member who will join while MongoDB is slow: a member's join only reads (a
        # first join of a public room also writes the membership and its event).
        newcomer = await Peer.connect(node1.base_url)
        idle.append(newcomer)
        status, _, _ = await newcomer.client.request(
            "POST", "/api/rooms/alpha/members", {"user": newcomer.user["name"]})
        assert status == 201
        loop = asyncio.get_running_loop()
        await send_until_acked(sender, "alpha", "before the slowness", "before-1", 10)
        # Every insert and seq record now takes 2 s more (mode alwaysOn: PyMongo
        # retries nothing here, the commands succeed, slowly).
        await asyncio.to_thread(fail_point, mongo, "alwaysOn", {
            "failCommands": ["insert", "update"], "blockConnection": True,
            "blockTimeMS": 2000})
        armed = True
        slow_from = loop.time()
        rtts: list[tuple[float, float]] = []
        for p in idle:
            bg.start(ping_every(p, 0.5, bg.stop, rtts))
        # 40 sends at once: 32 are taken, the 8 beyond the in-flight bound are refused.
        burst = await flood(sender, "alpha", 40, "slow")
        await sender.until(lambda: sum(1 for s in burst if s.reply) >= 8, 2, "refusals")
        refused = [s for s in burst if s.reply and s.reply["code"] == "rate_limited"]
        assert len(refused) == 8 and all(s.latency < 1 for s in refused), burst
        taken = [s for s in burst if s not in refused]
        # While those crawl into MongoDB: typing, presence, pings and history stay live.
        typing_lag = []
        for _ in range(6):
            await typist.send_raw({"type": "typing", "room": "alpha"})
            sent_at = loop.time()
            count = len(remote.events)
            await remote.until(lambda c=count: any(
                f["type"] == "typing" for _, f in remote.events[c:]), 1, "typing")
            typing_lag.append(next(t for t, f in remote.events[count:]
                                   if f["type"] == "typing") - sent_at)
        count = len(remote.events)
        started = loop.time()
        await newcomer.join("alpha")
        joined_in = loop.time() - started
        await remote.until(lambda: any(f["type"] == "presence" and f["status"] == "online"
                                       for _, f in remote.events[count:]), 1, "presence")
        presence_lag = next(t for t, f in remote.events[count:]
                            if f["type"] == "presence") - started
        started = loop.time()
        page = await remote.call({"type": "history", "room": "alpha", "limit": 100})
        history_in = loop.time() - started
        assert page["type"] == "history" and page["messages"], page
        # Every taken send is answered within the send timeout, acked now or late.
        await sender.until(lambda: all(s.reply for s in taken), SEND_BOUND, "answered")
        assert all(s.latency < SEND_TIMEOUT + 1 for s in taken), [s.latency for s in taken]
        assert {s.reply["code"] for s in taken if s.ack is None} <= {"unavailable"}
        await sender.until(lambda: all(s.ack for s in taken), 20, "all acked, some late")
        slow_for = loop.time() - slow_from
        await asyncio.to_thread(fail_point, mongo, "off", {})
        armed = False
        await bg.halt()
        # A stored message's fan-out is as fast as ever: from its ack on the sending
        # connection to its arrival at a member on the other process.
        fanout = []
        for s in taken:
            ack = s.ack
            assert ack is not None
            await remote.until(lambda a=ack: a["seq"] in remote.logs["alpha"].messages, 5,
                               "the message")
            acked_at = s.acked_at
            assert acked_at is not None
            fanout.append(remote.arrivals[("alpha", ack["seq"])] - acked_at)
        stores = [s.latency for s in taken if s.reply["type"] == "ack"]
        assert min(stores) > 2, stores  # the slowness was real
        assert max(typing_lag) < 0.2, typing_lag
        assert presence_lag < 1 and joined_in < 1, (presence_lag, joined_in)
        assert history_in < 0.2, history_in
        assert max(rtt for _, rtt in rtts) < 0.2, sorted(r for _, r in rtts)[-3:]
        assert max(fanout) < 0.2, sorted(fanout)[-3:]
        await asyncio.gather(*(p.flush_outbox(timeout=20) for p in peers))
        count = await asyncio.to_thread(assert_acked_durable, mongo, config.db_name, peers)
        await assert_clients_converge(peers, mongo, config.db_name, timeout=15)
        print(f"\nmongo slow for {slow_for:.1f}s: {count} acked; stores took "
              f"{min(stores):.1f}-{max(stores):.1f}s; fan-out max {max(fanout) * 1000:.0f} ms, "
              f"typing max {max(typing_lag) * 1000:.0f} ms, join {joined_in * 1000:.0f} ms, "
              f"presence {presence_lag * 1000:.0f} ms, history {history_in * 1000:.0f} ms, "
              f"ping max {max(r for _, r in rtts) * 1000:.0f} ms")
    finally:
        if armed:
            await asyncio.to_thread(fail_point, mongo, "off", {})
        await tear_down(bg, peers + idle, nodes)


# 4. A server process killed with SIGKILL -------------------------------------------------


def process_env(config: Config, mongo: ChildService, redis: ChildService) -> dict[str, str]:
    """Environment of a server process sharing this test's services, database, prefix."""
    return {**os.environ, "MONGO_URL": mongo_url_of(mongo), "REDIS_URL": redis_url_of(redis),
            "COOKIE_SECRET": TEST_SECRET, "CHAT_DB": config.db_name,
            "CHAT_REDIS_PREFIX": config.redis_prefix, "STATUS_TOKEN": STATUS_TOKEN}


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def test_kill_9_of_one_process_mid_traffic_loses_nothing_acked_and_stores_retries_once(
        config, private_mongo, private_redis, tmp_path):
    env = process_env(config, private_mongo, private_redis)
    ports = [free_port(), free_port()]
    procs = [start_server(["--port", str(port), "--host", "127.0.0.1"], env,
                          tmp_path / f"p{i}.log") for i, port in enumerate(ports)]
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    peers: list[Peer] = []
    bg = Background()
    try:
        await asyncio.gather(*(wait_ready(u, p) for u, p in zip(urls, procs, strict=True)))
        await create_room(urls[1], "alpha")
        on = {0: [], 1: []}
        for i, url in enumerate(urls):
            for _ in range(3):  # two senders and a reader on each process
                peer = await Peer.connect(url)
                await peer.join("alpha")
                on[i].append(peer)
        peers = on[0] + on[1]
        loop = asyncio.get_running_loop()
        # Before the kill only the victim's senders write; the survivor's readers get
        # their messages through Redis. (Were the survivor writing to the room too, its
        # insert could take the seqs of the victim's in-flight one, which would then be
        # refused and never stored: that race is tests/test_cluster.py's.)
        for p in on[0][:2]:  # 3 msg/s each: under the shipped 5 msg/s per-user limit
            bg.start(pump(p, "alpha", 3, bg.stop, p.user["name"]))
        await asyncio.sleep(3)  # traffic flows before the fault
        # Make the kill land mid-store: inserts take 600 ms more, and the kill waits
        # until a send of the victim has waited 300 ms and no ack came for 150 ms, so
        # that a batch of the victim is inside MongoDB when it dies (and lands there).
        mongo = mongo_url_of(private_mongo)
        await asyncio.to_thread(fail_point, mongo, "alwaysOn", {
            "failCommands": ["insert"], "blockConnection": True, "blockTimeMS": 600})

        def mid_store() -> bool:
            now = loop.time()
            sends = [s for p in on[0][:2] for s in p.sends[-5:]]
            last_ack = max((s.answered or 0 for s in sends), default=0)
            return now - last_ack > 0.15 and any(
                s.reply is None and now - s.at > 0.3 for s in sends)

        try:
            deadline = loop.time() + 10
            while not mid_store():
                assert loop.time() < deadline, "the victim never had a store in flight"
                await asyncio.sleep(0.02)  # the condition is about elapsed time: poll it
            procs[0].kill()  # SIGKILL: no goodbye, no drain, no presence cleanup
            killed_at, killed_wall = loop.time(), time.time()
        finally:
            await asyncio.to_thread(fail_point, mongo, "off", {})
        await asyncio.to_thread(procs[0].wait, 10)
        for peer in on[0]:
            assert await asyncio.wait_for(peer.closed, 5) != 1001  # not a graceful stop
        cut_off = [s for p in on[0] for s in p.unacked()]
        assert cut_off
        # Its clients come back on the other process after the recipe's first backoff
        # (0.5-1 s), rejoin with since, resend the outbox with the same client_ids,
        # and keep sending.
        await asyncio.sleep(0.75)
        for peer in on[0]:
            await peer.reconnect(urls[1])
        moved_in = loop.time() - killed_at
        for p in on[0][:2]:
            bg.start(pump(p, "alpha", 3, bg.stop, p.user["name"] + "-again"))
        for p in on[1][:2]:
            bg.start(pump(p, "alpha", 3, bg.stop, p.user["name"]))
        await asyncio.sleep(3)  # traffic flows after the fault
        await bg.halt()
        await asyncio.gather(*(p.flush_outbox(timeout=20) for p in peers))
        final = await send_until_acked(on[1][0], "alpha", "the end", "the-end", 10)
        assert final.ack is not None
        count = await asyncio.to_thread(assert_acked_durable, mongo, config.db_name, peers)
        await assert_clients_converge(peers, mongo, config.db_name, timeout=15)
        assert procs[1].poll() is None
        # The dead process stops refreshing its /status entry, which expires (10 s).
        while len((await status_of(urls[1]))["processes"]) != 1:
            assert loop.time() - killed_at < 13, "the killed process is still in /status"
            await asyncio.sleep(0.5)  # polling an operator endpoint
        gone_from_status = loop.time() - killed_at
        # A cut-off send that had been stored before the kill was answered, on retry,
        # with its original ack (same seq, checked above), not stored again.
        retried = {(s.user_id, s.client_id) for s in cut_off}
        originals = sum(1 for p in peers for s in p.sends
                        if (s.user_id, s.client_id) in retried and s.ack is not None
                        and s.ack["ts"] < killed_wall * 1000)
        assert originals >= 1, "no send was cut off after its store"
        print(f"\nkill -9: {count} acked; {len(cut_off)} sends cut off by the kill and "
              f"retried with their client_ids, {originals} of them had been stored before "
              f"it; clients resumed on the survivor {moved_in:.2f}s after the kill; out of "
              f"/status after {gone_from_status:.1f}s")
    finally:
        await bg.halt()
        for peer in peers:
            await peer.close()
        for proc in procs:
            await asyncio.to_thread(stop_process, proc)


# run.py's own serve(), with a presence TTL short enough to watch it expire.
SERVE_WITH_TTL = """
import asyncio, dataclasses, sys
import tornado.netutil
import run
from server.config import load_config
config = dataclasses.replace(load_config(sys.argv[2:]), presence_ttl=float(sys.argv[1]))
sockets = tornado.netutil.bind_sockets(config.port, "127.0.0.1")
asyncio.run(run.serve(config, config.mongo_url, config.redis_url, sockets))
"""


def start_with_ttl(ttl: float, port: int, env: dict[str, str],
                   log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen([sys.executable, "-c", SERVE_WITH_TTL, str(ttl), "--port",
                                 str(port)], env=env, cwd=ROOT, stdout=out,
                                stderr=subprocess.STDOUT)


async def test_kill_9_process_users_go_offline_within_the_presence_ttl(
        config, private_mongo, private_redis, tmp_path):
    ttl = config.presence_ttl  # 3 s here; 30 s in production (docs/reliability.md)
    survivor = await open_node(node_config(config, 1), mongo_url=mongo_url_of(private_mongo),
                               redis_url=redis_url_of(private_redis))
    port = free_port()
    victim = start_with_ttl(ttl, port, process_env(config, private_mongo, private_redis),
                            tmp_path / "victim.log")
    url = f"http://127.0.0.1:{port}"
    peers: list[Peer] = []
    try:
        await wait_ready(url, victim)
        await create_room(survivor.base_url, "alpha")
        observer = await Peer.connect(survivor.base_url)
        await observer.join("alpha")
        ghost = await Peer.connect(url)  # never comes back
        roamer = await Peer.connect(url)  # reconnects to the survivor at once
        peers = [observer, ghost, roamer]
        for peer in (ghost, roamer):
            await peer.join("alpha")
            await observer.until(lambda p=peer: any(
                f["type"] == "presence" and f["user"]["id"] == p.user["id"]
                and f["status"] == "online" for _, f in observer.events), 5, "online")
        loop = asyncio.get_running_loop()
        victim.kill()
        killed_at = loop.time()
        await asyncio.to_thread(victim.wait, 10)
        await roamer.reconnect(survivor.base_url)
        bound = ttl + ttl / 3 + 1  # expiry, the survivor's next sweep, and slack

        def offline(user: dict[str, Any]) -> Callable[[], bool]:
            return lambda: any(f["type"] == "presence" and f["status"] == "offline"
                               and f["user"]["id"] == user["id"] for _, f in observer.events)

        await observer.until(offline(ghost.user), bound, "told the ghost went offline")
        gone_after = loop.time() - killed_at
        late = await Peer.connect(survivor.base_url)
        peers.append(late)
        members = {m["id"] for m in (await late.join("alpha"))["members"]}
        assert ghost.user["id"] not in members and roamer.user["id"] in members
        assert not offline(roamer.user)(), "the roamer is online on the survivor"
        print(f"\nkill -9 presence: offline {gone_after:.2f}s after the kill "
              f"(ttl {ttl:.0f}s, bound {bound:.0f}s)")
    finally:
        for peer in peers:
            await peer.close()
        await asyncio.to_thread(stop_process, victim)
        await close_node(survivor)


async def one_node_in_alpha(config: Config, mongo: ChildService, redis: ChildService
                            ) -> tuple[Node, Client, Socket]:
    """One process on the test's own services, room "alpha", and a new user's socket
    joined to it."""
    node = await open_node(node_config(config, 1), mongo_url=mongo_url_of(mongo),
                           redis_url=redis_url_of(redis))
    try:
        await create_room(node.base_url, "alpha")
        user = Client(node.base_url)
        await user.register()
        ws = await user.ws()
        await ws.join("alpha")
    except BaseException:
        await close_node(node)
        raise
    return node, user, ws


async def test_an_edit_stored_after_its_author_heard_unavailable_still_changes_the_message(
        config, private_mongo, private_redis):
    """Protocol §10: an `unavailable` change may still be stored. When it is, everyone
    gets its event and the message's stored state follows it, as for any edit."""
    node, author, ws = await one_node_in_alpha(config, private_mongo, private_redis)
    mongo = mongo_url_of(private_mongo)
    try:
        sent = await ws.call({"type": "send", "room": "alpha", "body": "helo",
                              "client_id": "m-1"})
        assert sent["type"] == "ack", sent
        # The edit's event is inserted, but only after the edit's wait is over (made
        # shorter than the store's own 5 s socket timeout, which would fail the insert).
        node.runtime.chat.changes.timeout = 1.0
        await asyncio.to_thread(fail_point, mongo, {"times": 1}, {
            "failCommands": ["insert"], "blockConnection": True, "blockTimeMS": 2500})
        edit = {"type": "edit", "room": "alpha", "seq": sent["seq"], "body": "hello",
                "client_id": "e-1"}
        assert (await ws.call(edit, timeout=10))["code"] == "unavailable"
        event = await ws.expect("event", timeout=10, event="edited")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while True:
            _, page, _ = await author.request("GET", "/api/rooms/alpha/messages")
            (message,) = [m for m in page["messages"] if m["seq"] == sent["seq"]]
            if message["body"] == "hello" or loop.time() > deadline:
                break
            await asyncio.sleep(0.05)  # the document follows its event in the background
        assert (message["body"], message["state_seq"]) == ("hello", event["seq"]), message
        # The resend the author makes next is answered with the stored event's ack.
        again = await ws.call(edit)
        assert (again["type"], again["seq"]) == ("ack", event["seq"]), again
    finally:
        await close_node(node)


async def test_a_join_that_fails_reading_history_leaves_nobody_online(
        config, private_mongo, private_redis):
    """A join answered `unavailable` after its presence entry was queued: the entry
    goes too, and no one sees the user online in a room they never got into."""
    node, user, ws = await one_node_in_alpha(config, private_mongo, private_redis)
    mongo = mongo_url_of(private_mongo)
    try:
        # A member now: joining again only reads.
        assert (await ws.call({"type": "leave", "room": "alpha"}))["type"] == "left"
        # Both tries of the join's history read (PyMongo retries a read once) fail.
        await asyncio.to_thread(fail_point, mongo, {"times": 2}, {
            "failCommands": ["find"], "closeConnection": True})
        assert (await ws.call({"type": "join", "room": "alpha"}))["code"] == "unavailable"
        await asyncio.to_thread(fail_point, mongo, "off", {})
        watcher = Client(node.base_url)
        await watcher.register()
        status, body, _ = await watcher.request("GET", "/api/rooms/alpha/members")
        assert status == 200, body
        online = {m["user"]["name"] for m in body["members"] if m["online"]}
        assert user.user["name"] not in online, body
    finally:
        await close_node(node)


async def test_a_message_stored_by_an_insert_that_failed_reaches_the_room_on_its_resend(
        config, private_mongo, private_redis):
    """An insert that times out on the client may still be applied: its sender hears
    `unavailable` and resends (protocol §12), and gets the original ack. The room gets
    the message then, once, here and on the other process."""
    node1, node2 = await two_nodes(config, private_mongo, private_redis)
    mongo = mongo_url_of(private_mongo)
    try:
        await create_room(node1.base_url, "alpha")
        sender, here, there = Client(node1.base_url), Client(node1.base_url), Client(
            node2.base_url)
        sockets = []
        for client in (sender, here, there):
            await client.register()
            sockets.append(await client.ws())
            await sockets[-1].join("alpha")
        ws, local, remote = sockets
        # The insert is applied after 6 s, when the store's 5 s socket timeout has failed
        # it on our side: the send is answered `unavailable`.
        await asyncio.to_thread(fail_point, mongo, {"times": 1}, {
            "failCommands": ["insert"], "blockConnection": True, "blockTimeMS": 6000})
        send = {"type": "send", "room": "alpha", "body": "made it", "client_id": "c-1"}
        assert (await ws.call(send, timeout=10))["code"] == "unavailable"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while True:  # until secantusd has applied the held insert
            _, page, _ = await here.request("GET", "/api/rooms/alpha/messages")
            if any(m.get("body") == "made it" for m in page["messages"]) or (
                    loop.time() > deadline):
                break
            await asyncio.sleep(0.1)
        ack = await ws.call(send)
        assert ack["type"] == "ack", ack
        for sock in (local, remote, ws):
            got = await sock.expect("message", room="alpha", body="made it")
            assert got["seq"] == ack["seq"]
        # Once: a second resend acks again and delivers nothing more.
        assert (await ws.call(send))["seq"] == ack["seq"]
        follow = await ws.call({**send, "body": "next", "client_id": "c-2"})
        for sock in (local, remote):
            assert (await sock.expect("message", room="alpha"))["seq"] == follow["seq"]
    finally:
        for node in (node1, node2):
            await close_node(node)
