"""Slow, dead, flooding and hostile clients, over real sockets against real Redis and MongoDB.

Each test drives the server the way an abusive or broken client would: a raw socket
that completed the WebSocket handshake and then stops reading (or never answers a
ping), a user who sends as fast as the network allows, thousands of malformed frames,
upgrades from foreign origins. The server must contain each one without the other
clients noticing: no lost or reordered messages, no traceback, bounded memory.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import json
import logging
import os
import random
import socket
import struct
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import pytest
from tornado.websocket import WebSocketClosedError

from server import wsio
from server.config import Config
from server.handlers.socket import MAX_ROOMS, MAX_STRIKES
from server.limits import LimitSettings
from server.runtime import Runtime
from tests.client import Client, Socket, messages_of
from tests.conftest import Node, close_node, open_node
from tests.services import Services

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
SLOW_REASON = "too slow: reconnect and resume with since"


# Helpers ------------------------------------------------------------------------


class RawPeer:
    """A WebSocket client written by hand over a plain socket.

    It reads only when a test tells it to, so it can freeze the way a stuck browser
    tab or a wedged bot does: the kernel buffers fill up and pings go unanswered.
    """

    def __init__(self, sock: socket.socket, buffered: bytes) -> None:
        self.sock = sock
        self.buf = buffered
        self.loop = asyncio.get_running_loop()

    @staticmethod
    async def handshake(base_url: str, headers: dict[str, str], *, rcvbuf: int | None = None
                        ) -> tuple[int, dict[str, str], bytes, RawPeer | None]:
        """Upgrade `GET /ws` by hand: (status, headers, body, peer if 101)."""
        loop = asyncio.get_running_loop()
        parts = urlsplit(base_url)
        host, port = parts.hostname or "127.0.0.1", parts.port or 80
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            # Before connect, so the advertised window stays small too.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        await asyncio.wait_for(loop.sock_connect(sock, (host, port)), 5)
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [
            "GET /ws HTTP/1.1",
            f"Host: {host}:{port}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
            *(f"{k}: {v}" for k, v in headers.items()),
        ]
        await loop.sock_sendall(sock, ("\r\n".join(lines) + "\r\n\r\n").encode())
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = await asyncio.wait_for(loop.sock_recv(sock, 65536), 5)
            assert chunk, f"closed during handshake: {buf!r}"
            buf += chunk
        head, _, rest = buf.partition(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        status = int(status_line.split()[1])
        hdrs = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            hdrs[name.strip().lower()] = value.strip()
        if status != 101:
            length = int(hdrs.get("content-length", "0"))
            while len(rest) < length:
                chunk = await asyncio.wait_for(loop.sock_recv(sock, 65536), 5)
                if not chunk:
                    break
                rest += chunk
            sock.close()
            return status, hdrs, rest[:length], None
        digest = hashlib.sha1(key.encode() + WS_GUID, usedforsecurity=False).digest()
        accept = base64.b64encode(digest).decode()
        assert hdrs["sec-websocket-accept"] == accept
        return status, hdrs, b"", RawPeer(sock, rest)

    @classmethod
    async def open(cls, client: Client, *, rcvbuf: int | None = None) -> RawPeer:
        """Connect with the client's session cookie from its own origin; read `hello`."""
        status, _, body, peer = await cls.handshake(
            client.base, {"Cookie": client.cookie_header(), "Origin": client.origin},
            rcvbuf=rcvbuf)
        assert status == 101 and peer is not None, (status, body)
        hello = await peer.recv_json()
        assert hello["type"] == "hello", hello
        return peer

    async def _fill(self, n: int, timeout: float) -> None:
        deadline = self.loop.time() + timeout
        while len(self.buf) < n:
            chunk = await asyncio.wait_for(self.loop.sock_recv(self.sock, 65536),
                                           max(0.01, deadline - self.loop.time()))
            if not chunk:
                raise ConnectionError("peer closed the TCP connection")
            self.buf += chunk

    async def _take(self, n: int, timeout: float) -> bytes:
        await self._fill(n, timeout)
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    async def frame(self, timeout: float = 5.0) -> tuple[int, bytes]:
        """The next frame from the server: (opcode, payload). Server frames are unmasked."""
        b0, b1 = await self._take(2, timeout)
        assert not b1 & 0x80, "server frames must not be masked"
        length = b1 & 0x7F
        if length == 126:
            (length,) = struct.unpack(">H", await self._take(2, timeout))
        elif length == 127:
            (length,) = struct.unpack(">Q", await self._take(8, timeout))
        assert b0 & 0x80, "the server does not fragment"
        return b0 & 0x0F, await self._take(length, timeout)

    async def recv_json(self, timeout: float = 5.0) -> dict[str, Any]:
        """The next text frame as JSON; control frames (pings too) are read, not answered."""
        while True:
            opcode, payload = await self.frame(timeout)
            if opcode == 0x1:
                return json.loads(payload)  # type: ignore[no-any-return]
            if opcode == 0x8:
                raise ConnectionError(f"close frame {payload!r}")

    @staticmethod
    def encode(opcode: int, payload: bytes) -> bytes:
        """One whole, final frame as a client sends it: masked."""
        mask = os.urandom(4)
        n = len(payload)
        if n < 126:
            head = struct.pack(">BB", 0x80 | opcode, 0x80 | n)
        elif n < 65536:
            head = struct.pack(">BBH", 0x80 | opcode, 0x80 | 126, n)
        else:
            head = struct.pack(">BBQ", 0x80 | opcode, 0x80 | 127, n)
        return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))

    async def send_bytes(self, data: bytes) -> None:
        await self.loop.sock_sendall(self.sock, data)

    async def write(self, opcode: int, payload: bytes) -> None:
        await self.send_bytes(self.encode(opcode, payload))

    async def send_json(self, frame: dict[str, Any]) -> None:
        await self.write(0x1, json.dumps(frame).encode())

    async def join(self, room: str = "general") -> dict[str, Any]:
        await self.send_json({"type": "join", "room": room, "ref": "raw-join"})
        while True:
            frame = await self.recv_json()
            if frame.get("ref") == "raw-join":
                assert frame["type"] == "joined", frame
                return frame

    def close(self) -> None:
        self.sock.close()


class Inbox:
    """Reads every frame of a Socket in the background, so tests can wait on conditions."""

    def __init__(self, ws: Socket) -> None:
        self.ws = ws
        self.frames: list[dict[str, Any]] = []
        self.closed = False
        self._changed = asyncio.Event()
        self.task = asyncio.ensure_future(self._pump())

    async def _pump(self) -> None:
        while True:
            raw = await self.ws.conn.read_message()
            if raw is None:
                break
            self.frames.append(json.loads(raw))
            self._changed.set()
        self.closed = True
        self._changed.set()

    def of(self, kind: str, **match: Any) -> list[dict[str, Any]]:
        return [f for f in self.frames
                if f["type"] == kind and all(f.get(k) == v for k, v in match.items())]

    async def until(self, done: Callable[[], bool], timeout: float, what: str) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not done():
            remaining = deadline - loop.time()
            if remaining <= 0 or (self.closed and not done()):
                raise AssertionError(f"timed out waiting for {what}; closed={self.closed}")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except asyncio.TimeoutError:
                continue

    async def stop(self) -> None:
        await cancel([self.task])


async def cancel(tasks: list[asyncio.Future[Any]]) -> None:
    """Cancel background readers and wait until they are gone."""
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def joined_socket(base_url: str, room: str | None = "general"
                        ) -> tuple[Client, Socket]:
    client = Client(base_url)
    await client.register()
    ws = await client.ws()
    if room is not None:
        await ws.join(room)
    return client, ws


def handler_of(runtime: Runtime, user_id: str) -> Any:
    """The server's handler object of a user's (only) connection on that process."""
    found = [c for c in runtime.rooms.connections if c.user.id == user_id]
    assert len(found) == 1, found
    return found[0]


def watch_writes(handler: Any, high_water: list[int], i: int) -> None:
    """Record in high_water[i] the most bytes the connection's IOStream ever held unsent.

    Observation only: Tornado's own write runs unchanged, then its buffer is measured.
    """
    stream = handler.ws_connection.stream
    write = stream.write

    def measured_write(data: Any) -> Any:
        future = write(data)
        high_water[i] = max(high_water[i], wsio.pending_bytes(handler.ws_connection))
        return future

    stream.write = measured_write


def is_closing(handler: Any) -> bool:
    conn = handler.ws_connection
    return conn is None or conn.is_closing()


def errors_logged(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


async def until(done: Callable[[], bool], timeout: float, what: str) -> None:
    """Wait for server-side state that no frame announces, checking every 10 ms."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not done():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


def with_limits(config: Config, **limits: Any) -> Config:
    return dataclasses.replace(config, limits=dataclasses.replace(config.limits, **limits))


async def two_nodes(config: Config, services: Services) -> tuple[Node, Node]:
    """Two server processes sharing one database and one Redis prefix."""
    first = await open_node(config, services)
    second = await open_node(dataclasses.replace(config, node_id=config.node_id + "-b"),
                             services)
    return first, second


# Slow reader (issue 5, item 6) ---------------------------------------------------------


async def test_slow_reader_is_closed_at_the_bound_and_others_miss_nothing(
        config, services, caplog):
    caplog.set_level(logging.INFO)
    bound = 64 * 1024
    node = await open_node(dataclasses.replace(config, max_pending_bytes=bound), services)
    peers: list[RawPeer] = []
    tasks: list[asyncio.Future[Any]] = []
    try:
        _, sender = await joined_socket(node.base_url)
        _, watcher = await joined_socket(node.base_url)
        sent_inbox, watch_inbox = Inbox(sender), Inbox(watcher)
        tasks += [sent_inbox.task, watch_inbox.task]
        # Two readers that stop reading: one stays frozen for good, the other starts
        # reading again once the server has given up on it, to see how it was closed.
        frozen_client, drained_client = Client(node.base_url), Client(node.base_url)
        await frozen_client.register()
        await drained_client.register()
        frozen = await RawPeer.open(frozen_client, rcvbuf=4096)
        drained = await RawPeer.open(drained_client, rcvbuf=4096)
        peers += [frozen, drained]
        await frozen.join()
        await drained.join()
        slow = [handler_of(node.runtime, c.user["id"]) for c in (frozen_client, drained_client)]
        await watch_inbox.until(lambda: len(watch_inbox.of("presence", status="online")) == 2,
                                5, "both slow readers online")

        # The buffer only grows inside a write (and the kernel drains it between loop
        # turns), so the high-water mark is taken right after each write to the stream.
        high_water = [0, 0]
        for i, h in enumerate(slow):
            watch_writes(h, high_water, i)

        async def drain() -> tuple[list[int], bytes]:
            """Once the server gives up on it, read everything the drained peer was sent."""
            await until(lambda: is_closing(slow[1]), 60, "the server to close the reader")
            seqs: list[int] = []
            while True:
                opcode, payload = await drained.frame(timeout=5)
                if opcode == 0x1:
                    frame = json.loads(payload)
                    if frame["type"] == "message":
                        seqs.append(frame["seq"])
                elif opcode == 0x8:
                    await drained.write(0x8, payload[:2])
                    return seqs, payload

        draining = asyncio.ensure_future(drain())
        tasks.append(draining)
        body = "\U0001f600" * 3000  # the longest body in bytes: 12 000 of UTF-8
        frame_bytes = len(json.dumps({"type": "message", "body": body},
                                     ensure_ascii=False).encode()) + 400
        sent = 0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        # Keep the room busy until the server has closed both readers, then a bit more.
        extra = None
        while extra is None or sent < extra:
            assert loop.time() < deadline, f"slow readers never closed after {sent} messages"
            if extra is None and all(is_closing(h) for h in slow):
                extra = sent + 20
            while sent - len(sent_inbox.of("ack")) < 16:
                await sender.send({"type": "send", "room": "general", "body": body,
                                   "client_id": f"m{sent}"})
                sent += 1
            acked = len(sent_inbox.of("ack"))
            await sent_inbox.until(lambda acked=acked: len(sent_inbox.of("ack")) > acked,
                                   10, "an ack")
        await sent_inbox.until(lambda: len(sent_inbox.of("ack")) == sent, 10, "every ack")

        # The drained reader got what was queued for it, then the 1008 close frame.
        seqs, close_payload = await asyncio.wait_for(draining, 10)
        code = struct.unpack(">H", close_payload[:2])[0]
        assert (code, close_payload[2:].decode()) == (1008, SLOW_REASON)
        # What it did get is a gap-free prefix: frames are dropped whole, never in between.
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))) and len(seqs) < sent

        # The frozen one never reads again: the server drops it anyway, and says so.
        offline = {c.user["id"] for c in (frozen_client, drained_client)}
        await watch_inbox.until(
            lambda: {f["user"]["id"] for f in watch_inbox.of("presence", status="offline")}
            == offline, 10, "presence offline of both slow readers")
        assert not set(slow) & set(node.runtime.rooms.connections)

        # Memory stayed bounded: never more than the bound plus one frame per reader.
        assert max(high_water) <= bound + frame_bytes, (high_water, bound)
        assert min(high_water) > bound - frame_bytes, high_water  # the bound was reached

        # Everyone else got every message, in order, once.
        await watch_inbox.until(lambda: len(watch_inbox.of("message")) == sent, 10,
                                "every message at the watcher")
        # (The seqs before the first message are the readers' join events.)
        first = sent_inbox.of("ack")[0]["seq"]
        for inbox in (watch_inbox, sent_inbox):
            assert [f["seq"] for f in inbox.of("message")] == list(range(first, first + sent))
        assert [f["client_id"] for f in sent_inbox.of("ack")] == [f"m{i}" for i in range(sent)]
        assert any("slow consumer" in r.getMessage() for r in caplog.records)
        metrics = node.runtime.metrics.registry
        assert metrics.get_sample_value("chat_slow_reader_closes_total") == 2
        assert metrics.get_sample_value("chat_ws_disconnects_total", {"code": "1008"}) == 2
        assert errors_logged(caplog) == []
    finally:
        await cancel(tasks)
        for peer in peers:
            peer.close()
        await close_node(node)


# Dead peer (item 7) ------------------------------------------------------------------


async def test_peer_that_never_answers_pings_is_dropped_and_goes_offline(config, services):
    interval, timeout = 0.5, 1.0
    cfg = dataclasses.replace(config, ws_ping_interval=interval, ws_ping_timeout=timeout)
    node = await open_node(cfg, services)
    peer = None
    try:
        _, watcher = await joined_socket(node.base_url)
        inbox = Inbox(watcher)
        dead_client = Client(node.base_url)
        await dead_client.register()
        loop = asyncio.get_running_loop()
        opened = loop.time()
        peer = await RawPeer.open(dead_client)
        await peer.join()
        handler = handler_of(node.runtime, dead_client.user["id"])
        # From here on the peer reads nothing and answers nothing.
        await inbox.until(lambda: bool(inbox.of("presence", status="online")), 5, "online")
        margin = 1.0  # (Tornado even caps the timeout at the interval, with a warning)
        # Dropped within a ping interval and timeout ...
        dropped_by = opened + interval + timeout + margin
        while handler in node.runtime.rooms.connections and loop.time() < dropped_by:
            await node.runtime.inflight.changed(dropped_by - loop.time())
        assert handler not in node.runtime.rooms.connections
        # ... and announced offline once its presence grace has ended.
        bound = interval + timeout + margin + cfg.presence_grace
        await inbox.until(lambda: bool(inbox.of("presence", status="offline")),
                          bound, "presence offline of the dead peer")
        elapsed = loop.time() - opened
        assert elapsed <= bound
        offline = inbox.of("presence", status="offline")
        assert [f["user"] for f in offline] == [dead_client.user]
        assert handler not in node.runtime.rooms.connections
        # Had it been alive, it would have read why: 1000 "ping timed out", then EOF.
        while True:
            opcode, payload = await peer.frame(timeout=2)
            if opcode == 0x8:
                break
        assert (struct.unpack(">H", payload[:2])[0], payload[2:]) == (1000, b"ping timed out")
        with pytest.raises(ConnectionError):
            await peer.frame(timeout=2)
        # The watcher, whose library answers pings, is still connected.
        assert not inbox.closed
        await inbox.stop()
        assert (await watcher.call({"type": "ping"}))["type"] == "pong"
    finally:
        if peer is not None:
            peer.close()
        await close_node(node)


# Flood (item 8) -------------------------------------------------------------------------


async def burst(ws: Socket, n: int, prefix: str, room: str = "general"
                ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Send n messages back to back; (acks, errors), each keyed by its client_id."""
    for i in range(n):
        await ws.send({"type": "send", "room": room, "body": f"{prefix} {i}",
                       "client_id": f"{prefix}{i}", "ref": i})
    replies: dict[str, dict[str, Any]] = {}
    while len(replies) < n:
        frame = await ws.recv()
        if frame["type"] in ("ack", "error"):
            assert frame["client_id"] not in replies, frame
            replies[frame["client_id"]] = frame
    acks = [f for f in replies.values() if f["type"] == "ack"]
    errors = [f for f in replies.values() if f["type"] == "error"]
    return acks, errors


def check_rate_limited(errors: list[dict[str, Any]], prefix: str) -> None:
    for err in errors:
        assert err["code"] == "rate_limited", err
        assert isinstance(err["retry_after"], (int, float)) and err["retry_after"] > 0, err
        assert err["client_id"] == f"{prefix}{err['ref']}", err


async def test_flood_gets_the_burst_then_rate_limited_with_retry_after(config, services):
    cfg = dataclasses.replace(config, limits=LimitSettings())  # burst 20, 5 per second
    node = await open_node(cfg, services)
    try:
        _, ws = await joined_socket(node.base_url)
        loop = asyncio.get_running_loop()
        started = loop.time()
        acks, errors = await burst(ws, 40, "f")
        elapsed = loop.time() - started
        refill = int(elapsed * cfg.limits.message_rate) + 1
        assert 20 <= len(acks) <= 20 + refill, (len(acks), elapsed)
        assert len(acks) + len(errors) == 40
        # The bucket starts full: the first 20 all went through.
        assert {f"f{i}" for i in range(20)} <= {a["client_id"] for a in acks}
        check_rate_limited(errors, "f")
        # Nothing refused was stored.
        hist = await ws.call({"type": "history", "room": "general", "limit": 100})
        assert sorted(m["client_id"] for m in messages_of(hist["messages"])) == sorted(
            a["client_id"] for a in acks)
        # Waiting what the server asks for is enough to send again. Probe until refused
        # (a token may have come back meanwhile), then wait exactly retry_after.
        for i in range(10):
            probe = await ws.call({"type": "send", "room": "general", "body": "probe",
                                   "client_id": f"x{i}"})
            if probe["type"] == "error":
                break
        assert probe["code"] == "rate_limited" and probe["retry_after"] > 0, probe
        await asyncio.sleep(probe["retry_after"])
        again = await ws.call({"type": "send", "room": "general", "body": "patient",
                               "client_id": "patient"})
        assert again["type"] == "ack", (again, probe)
    finally:
        await close_node(node)


async def test_message_rate_is_per_user_across_connections_and_processes(config, services):
    cfg = dataclasses.replace(config, limits=LimitSettings())
    first, second = await two_nodes(cfg, services)
    try:
        client, a = await joined_socket(first.base_url)
        same_node = Client(first.base_url)
        same_node.cookies = dict(client.cookies)
        b = await same_node.ws()
        await b.join()
        other_node = Client(second.base_url)
        other_node.cookies = dict(client.cookies)
        c = await other_node.ws()
        await c.join()
        assert c.hello["node"] != a.hello["node"]
        _, bystander = await joined_socket(second.base_url)

        loop = asyncio.get_running_loop()
        started = loop.time()
        acks_a, errors_a = await burst(a, 10, "a")
        acks_b, errors_b = await burst(b, 10, "b")
        acks_c, errors_c = await burst(c, 20, "c")
        refill = int((loop.time() - started) * cfg.limits.message_rate) + 1
        total = len(acks_a) + len(acks_b) + len(acks_c)
        assert 20 <= total <= 20 + refill, (len(acks_a), len(acks_b), len(acks_c))
        # The other process saw the same bucket: almost all of its 20 were refused.
        assert len(errors_c) >= 20 - refill, (len(acks_c), refill)
        for errors, prefix in ((errors_a, "a"), (errors_b, "b"), (errors_c, "c")):
            check_rate_limited(errors, prefix)
        # Another user has a bucket of their own.
        other_acks, other_errors = await burst(bystander, 5, "o")
        assert len(other_acks) == 5 and other_errors == []
    finally:
        await close_node(second)
        await close_node(first)


async def test_tokens_left_over_from_a_lease_expire_with_a_pause(config, services):
    # Tokens are leased to a process a few at a time and spent there; a user back after
    # a pause long enough to refill the bucket gets the burst, not the burst plus what
    # the process still held.
    limits = LimitSettings(message_rate=20, message_burst=20)
    node = await open_node(dataclasses.replace(config, limits=limits), services)
    try:
        _, ws = await joined_socket(node.base_url)
        warmup, refused = await burst(ws, 3, "w")
        assert len(warmup) == 3 and refused == []
        await asyncio.sleep(limits.message_burst / limits.message_rate + 0.2)
        loop = asyncio.get_running_loop()
        started = loop.time()
        acks, errors = await burst(ws, 40, "f")
        refill = int((loop.time() - started) * limits.message_rate) + 1
        assert 20 <= len(acks) <= 20 + refill, (len(acks), refill)
        check_rate_limited(errors, "f")
    finally:
        await close_node(node)


async def test_sustained_flood_closes_the_connection_with_1008(config, services):
    node = await open_node(dataclasses.replace(config, limits=LimitSettings()), services)
    try:
        _, ws = await joined_socket(node.base_url)
        inbox = Inbox(ws)
        for i in range(20 + MAX_STRIKES * 4):
            try:
                await ws.send({"type": "send", "room": "general", "body": "spam",
                               "client_id": f"s{i}"})
            except WebSocketClosedError:
                break
        await inbox.until(lambda: inbox.closed, 10, "the server to close the flood")
        assert (ws.conn.close_code, ws.conn.close_reason) == (1008, "rate limit exceeded")
        refused = inbox.of("error", code="rate_limited")
        assert len(refused) >= MAX_STRIKES
        assert all(f["retry_after"] > 0 for f in refused)
    finally:
        await close_node(node)


async def upgrade(client: Client, origin: str | None = "self",
                  extra: dict[str, str] | None = None
                  ) -> tuple[int, dict[str, str], bytes, RawPeer | None]:
    headers = {"Cookie": client.cookie_header()}
    if origin == "self":
        headers["Origin"] = client.origin
    elif origin is not None:
        headers["Origin"] = origin
    headers.update(extra or {})
    return await RawPeer.handshake(client.base, headers)


async def test_connections_per_user_beyond_cap_get_429_until_one_closes(config, services):
    node = await open_node(with_limits(config, conns_per_user=2), services)
    try:
        client = Client(node.base_url)
        await client.register()
        first = await client.ws()
        await client.ws()
        status, headers, body, _ = await upgrade(client)
        assert status == 429
        assert int(headers["retry-after"]) > 0
        assert json.loads(body)["error"]["code"] == "rate_limited"
        # The cap is per user: someone else still gets in.
        other = Client(node.base_url)
        await other.register()
        await other.ws()
        first.close()
        await first.closed()
        third = await client.ws()
        assert third.hello["user"] == client.user
    finally:
        await close_node(node)


async def test_connections_per_address_beyond_cap_get_429(config, services):
    node = await open_node(with_limits(config, conns_per_ip=2), services)
    try:
        clients = [Client(node.base_url) for _ in range(3)]
        for c in clients:
            await c.register()
        first = await clients[0].ws()
        await clients[1].ws()
        status, headers, body, _ = await upgrade(clients[2])
        assert status == 429 and int(headers["retry-after"]) > 0
        error = json.loads(body)["error"]
        assert error["code"] == "rate_limited" and "address" in error["message"]
        first.close()
        await first.closed()
        await clients[2].ws()
    finally:
        await close_node(node)


async def test_full_process_answers_upgrades_with_503_until_a_slot_frees(config, services):
    node = await open_node(with_limits(config, conns_per_process=1), services)
    try:
        a, b = Client(node.base_url), Client(node.base_url)
        await a.register()
        await b.register()
        ws = await a.ws()
        status, _, body, _ = await upgrade(b)
        assert status == 503
        assert json.loads(body)["error"]["code"] == "unavailable"
        ws.close()
        await ws.closed()
        assert (await b.ws()).hello["user"] == b.user
    finally:
        await close_node(node)


async def test_joining_more_than_100_rooms_is_forbidden(make_client):
    client = make_client()
    await client.register()
    names = [f"r{i:03d}" for i in range(MAX_ROOMS)]
    statuses = await asyncio.gather(*(client.request("POST", "/api/rooms", {"name": n})
                                      for n in names))
    assert {s for s, _, _ in statuses} == {201}
    ws = await client.ws()
    rooms = ["general", *names[:-1]]  # 100 rooms
    for i, room in enumerate(rooms):
        await ws.send({"type": "join", "room": room, "ref": f"j{i}"})
    for i in range(len(rooms)):
        reply = await ws.expect("joined", timeout=30, ref=f"j{i}")
        assert reply["room"] == rooms[i]
    refused = await ws.call({"type": "join", "room": names[-1]})
    assert refused["type"] == "error" and refused["code"] == "forbidden", refused
    # Joining a room already joined does not count; leaving one frees a place.
    assert (await ws.call({"type": "join", "room": "general"}))["type"] == "joined"
    assert (await ws.call({"type": "leave", "room": "r000"}))["type"] == "left"
    assert (await ws.call({"type": "join", "room": names[-1]}))["type"] == "joined"


async def login(client: Client, name: str, password: str) -> tuple[int, Any, dict[str, str]]:
    status, body, response = await client.request(
        "POST", "/api/login", {"username": name, "password": password})
    return status, body, dict(response.headers)


async def test_failed_logins_are_throttled_per_account_across_processes(config, services):
    first, second = await two_nodes(with_limits(config, login_failures_per_account=3),
                                    services)
    try:
        owner = Client(first.base_url)
        me = await owner.register()
        one, two = Client(first.base_url), Client(second.base_url)
        throttled = {}
        for name in (me["name"], "nobody-by-this-name"):
            failures = [await login(c, name, "wrong password!") for c in (one, two, one)]
            assert [s for s, _, _ in failures] == [401, 401, 401]
            assert len({json.dumps(b) for _, b, _ in failures}) == 1
            status, body, headers = await login(two, name, "wrong password!")
            assert status == 429, body
            assert int(headers["Retry-After"]) > 0
            assert body["error"]["code"] == "rate_limited" and body["error"]["retry_after"] > 0
            throttled[name] = body
            # Both processes refuse now, even the right password.
            status, _, _ = await login(one, name, "correct horse battery")
            assert status == 429
        bodies = [{k: v for k, v in b["error"].items() if k != "retry_after"}
                  for b in throttled.values()]
        assert bodies[0] == bodies[1]  # nothing tells whether the account exists
        # Another account is not affected.
        other = Client(second.base_url)
        other_user = await other.register()
        assert (await login(Client(first.base_url), other_user["name"],
                            "correct horse battery"))[0] == 200
    finally:
        await close_node(second)
        await close_node(first)


async def test_registrations_are_throttled_per_address_across_processes(config, services):
    first, second = await two_nodes(with_limits(config, registrations_per_ip=3), services)
    try:
        statuses = []
        for node in (first, second, first, second):
            status, body, response = await Client(node.base_url).request(
                "POST", "/api/register",
                {"username": f"reg{len(statuses)}x{config.node_id[-6:]}",
                 "password": "correct horse battery"})
            statuses.append((status, body, response.headers.get("Retry-After")))
        assert [s for s, _, _ in statuses] == [201, 201, 201, 429]
        status, body, retry = statuses[-1]
        assert body["error"]["code"] == "rate_limited" and int(retry) > 0
        status, _, _ = await Client(first.base_url).request(
            "POST", "/api/register", {"username": "late-comer", "password": "long enough pw"})
        assert status == 429
    finally:
        await close_node(second)
        await close_node(first)


# Fuzzed frames (item 9) -----------------------------------------------------------------

VALID_TYPES = ("join", "leave", "send", "history", "typing", "ping")
WRONG_ROOMS: list[Any] = [None, 5, 1.5, True, [], {}, "", "General", "a b", "x" * 65, "-a",
                          "\ud800", "room\u0000", "caf\u00e9"]
WRONG_SEQS: list[Any] = [-1, "3", 1.5, True, False, [], {}, 2**62, 10**30, -(2**70)]
WRONG_BODIES: list[Any] = [None, 5, [], {}, "", "   ", "\n\t", "x" * 4001, "\ud800",
                           "a\udfffb", True]
WRONG_CLIENT_IDS: list[Any] = ["", "a" * 65, "has space", 5, [], "\ud800", "é"]
WRONG_REFS: list[Any] = [1.5, True, [], {}, 2**53 + 1, -(2**53) - 1, "x" * 65, "\udc00"]


def random_string(rng: random.Random, n: int) -> str:
    alphabet = "abcXYZ019 _-.:\"\\/\u00e9\u4e2d\U0001f600\u0000\u001f\u2028"
    out = [rng.choice(alphabet) for _ in range(n)]
    if rng.random() < 0.2:
        out.insert(rng.randrange(len(out) + 1), chr(rng.randrange(0xD800, 0xE000)))
    return "".join(out)


def random_json(rng: random.Random, depth: int = 0) -> Any:
    roll = rng.randrange(9 if depth < 4 else 6)
    if roll == 0:
        return None
    if roll == 1:
        return rng.random() < 0.5
    if roll == 2:
        return rng.randrange(-(2**70), 2**70)
    if roll == 3:
        return rng.uniform(-1e300, 1e300)
    if roll in (4, 5):
        return random_string(rng, rng.randrange(0, 20))
    if roll == 6:
        return [random_json(rng, depth + 1) for _ in range(rng.randrange(5))]
    # Objects never get a "type" key here: the callers decide about that.
    return {random_string(rng, rng.randrange(1, 8)).replace("type", "typ"):
            random_json(rng, depth + 1) for _ in range(rng.randrange(5))}


def fuzz_frame(rng: random.Random, i: int) -> tuple[str | bytes, str]:
    """One hostile frame and the reply it must get: "error" or "pong"."""
    kind = rng.randrange(14)
    if kind == 0:  # random bytes as a binary frame
        return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200))), "error"
    if kind == 1:  # random bytes decoded as text
        raw = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200)))
        return raw.decode("latin-1"), "error"
    if kind == 2:  # an arbitrary JSON value that is not a frame
        value = random_json(rng)
        return json.dumps(value), "error"
    if kind == 3:  # an object whose type is wrong
        obj = random_json(rng, 3) if rng.random() < 0.5 else {}
        obj = obj if isinstance(obj, dict) else {}
        obj["type"] = rng.choice([random_string(rng, rng.randrange(0, 10)), 5, None, [],
                                  {}, "PING", "ping ", "\ud800", "x" * 1000])
        if obj["type"] in VALID_TYPES:
            obj["type"] += "!"
        return json.dumps(obj), "error"
    if kind in (4, 5, 6):  # a known type with a field of the wrong type or value
        frame: dict[str, Any] = {"type": rng.choice(VALID_TYPES[:5])}
        what = frame["type"]
        if what == "send" and rng.random() < 0.7:
            frame["room"] = "general"
            if rng.random() < 0.5:
                frame["body"] = rng.choice(WRONG_BODIES)
            else:
                frame["body"] = "fine"
                frame["client_id"] = rng.choice(WRONG_CLIENT_IDS)
        elif what in ("join", "history") and rng.random() < 0.5:
            frame["room"] = "general"
            frame[rng.choice(["since"] if what == "join" else ["before", "after", "limit"])] = (
                rng.choice(WRONG_SEQS if what == "join" else [-1, "3", 1.5, True, 2**62]))
            if frame.get("limit") is not None and not isinstance(frame["limit"], bool) \
                    and isinstance(frame["limit"], int):
                frame["limit"] = "many"
        else:
            frame["room"] = rng.choice(WRONG_ROOMS)
            if frame["room"] is None:
                del frame["room"]
        if rng.random() < 0.5:
            frame["ref"] = f"f{i}"
        for _ in range(rng.randrange(3)):
            frame[random_string(rng, 5).replace("type", "t")] = random_json(rng, 3)
        return json.dumps(frame), "error"
    if kind == 7:  # a ping with an invalid ref
        return json.dumps({"type": "ping", "ref": rng.choice(WRONG_REFS)}), "error"
    if kind == 8:  # deep nesting, inside a frame or alone
        if rng.random() < 0.5:
            depth = rng.randrange(2_000, 30_000)  # 2 bytes a level: under 64 KiB
            return '{"type":"ping","x":' + "[" * depth + "]" * depth + "}", "error"
        depth = rng.randrange(2_000, 10_000)  # 6 bytes a level
        return '{"a":' * depth + "1" + "}" * depth, "error"
    if kind == 9:  # integers too large to parse, or to be a ref or a seq
        digits = "9" * rng.randrange(4_400, 20_000)
        return rng.choice([
            '{"type":"ping","ref":' + digits + "}",
            '{"type":"join","room":"general","since":' + digits + "}",
            json.dumps({"type": "history", "room": "general", "after": 2**200}),
            json.dumps({"type": "ping", "ref": 2**64}),
        ]), "error"
    if kind == 10:  # non-JSON constants and broken JSON
        return rng.choice(['{"type":"ping","ref":NaN}', '{"type":"ping","ref":Infinity}',
                           '{"type":"ping","ref":-Infinity}', '{"type":"ping"',
                           '{"type":"ping",}', "{'type':'ping'}", "", " ", "\u0000",
                           '{"type":"ping","ref":1e999}', '{"type":"send","room":"general",'
                           '"body":"\\ud800"}', '{"type":"\\udc00"}',
                           '{"type":"ping","ref":"\\ud83d"}']), "error"
    if kind == 11:  # 60 KiB strings, just under the frame limit
        big = "x" * (60 * 1024)
        return rng.choice([
            json.dumps({"type": "send", "room": "general", "body": big}),
            json.dumps({"type": big}),
            json.dumps({"type": "ping", "ref": big}),
            json.dumps({"type": "join", "room": big}),
            json.dumps([big]),
        ]), "error"
    if kind == 12:  # valid frames that still fail: not joined / no such room
        return rng.choice([
            json.dumps({"type": "send", "room": "elsewhere", "body": "hi", "ref": f"f{i}"}),
            json.dumps({"type": "typing", "room": "elsewhere"}),
            json.dumps({"type": "join", "room": f"missing-{i}"}),
            json.dumps({"type": "history", "room": f"missing-{i}"}),
        ]), "error"
    ref = rng.choice([f"p{i}", i, -i, "\u4e2d" * 64, 2**53])
    return json.dumps({"type": "ping", "ref": ref, "junk": random_json(rng, 3)}), "pong"


async def test_thousands_of_fuzzed_frames_get_errors_and_disturb_no_one(
        base_url, make_client, caplog):
    caplog.set_level(logging.WARNING)
    _, fuzzer = await joined_socket(base_url)
    chatter_client, chatter = await joined_socket(base_url)
    chat_inbox = Inbox(chatter)
    stop = asyncio.Event()

    async def chat() -> int:
        sent = 0
        while not stop.is_set():
            while sent - len(chat_inbox.of("ack")) < 4:
                await chatter.send({"type": "send", "room": "general", "body": f"c{sent}",
                                    "client_id": f"c{sent}"})
                sent += 1
            acked = len(chat_inbox.of("ack"))
            await chat_inbox.until(lambda acked=acked: len(chat_inbox.of("ack")) > acked, 10,
                                   "a chatter ack")
        return sent

    chatting = asyncio.ensure_future(chat())
    rng = random.Random(20240601)
    total, batches = 3000, 60
    expected = {"error": 0, "pong": 0}
    got = {"error": 0, "pong": 0}
    loop = asyncio.get_running_loop()
    started = loop.time()
    for b in range(batches):
        want = {"error": 0, "pong": 0}
        for i in range(b * total // batches, (b + 1) * total // batches):
            data, reply = fuzz_frame(rng, i)
            await fuzzer.conn.write_message(data, binary=isinstance(data, bytes))
            want[reply] += 1
        marker = f"marker-{b}"
        await fuzzer.send({"type": "ping", "ref": marker})
        seen = {"error": 0, "pong": 0}
        while True:
            frame = await fuzzer.recv(timeout=10)
            if frame.get("ref") == marker:
                assert frame["type"] == "pong"
                break
            if frame["type"] in seen:
                seen[frame["type"]] += 1
            else:
                assert frame["type"] in ("message", "event", "presence", "typing"), frame
        assert seen == want, (b, seen, want)
        for k in got:
            got[k] += seen[k]
            expected[k] += want[k]
    elapsed = loop.time() - started
    stop.set()
    sent = await asyncio.wait_for(chatting, 10)
    assert got == expected and sum(got.values()) == total
    # Still open, still answering; the process is up.
    assert (await fuzzer.call({"type": "ping"}))["type"] == "pong"
    status, body, _ = await make_client().request("GET", "/healthz")
    assert status == 200, body
    # The chatter saw every one of its messages, in order, with no gap.
    await chat_inbox.until(lambda: len(chat_inbox.of("message")) >= sent, 10,
                           "the chatter's own messages")
    acks = chat_inbox.of("ack")
    assert [a["client_id"] for a in acks] == [f"c{i}" for i in range(sent)]
    seqs = [m["seq"] for m in chat_inbox.of("message")]
    # (The seqs before the first message are the two sockets' join events.)
    assert seqs == list(range(seqs[0], seqs[0] + sent)) == sorted(a["seq"] for a in acks)
    assert all(m["user"] == chatter_client.user for m in chat_inbox.of("message"))
    assert sent > 10, sent
    assert errors_logged(caplog) == []
    assert elapsed < 20, elapsed
    await chat_inbox.stop()


# Origins (item 13) ----------------------------------------------------------------------


async def test_cookie_upgrades_from_foreign_or_look_alike_origins_are_403(config, services):
    cfg = dataclasses.replace(config, allowed_origins=("https://chat.example.com",))
    node = await open_node(cfg, services)
    try:
        client = Client(node.base_url)
        await client.register()
        hostport = urlsplit(node.base_url).netloc
        refused = [
            "null",
            f"http://{hostport}.evil.com",
            f"http://evil.com/{hostport}",
            f"http://evil.com?{hostport}",
            f"http://{hostport}@evil.com",
            "http://chat.example.com",          # an allowed origin, but another scheme
            "https://chat.example.com.evil.com",
            "https://evil-chat.example.com",
            "wss://chat.example.com",
        ]
        for origin in refused:
            status, _, body, peer = await upgrade(client, origin)
            assert status == 403, (origin, status, body)
            assert peer is None
        # A browser that says the request is cross-site is believed, whatever the Origin.
        status, _, _, _ = await upgrade(client, f"https://{hostport}",
                                        {"Sec-Fetch-Site": "cross-site"})
        assert status == 403
        status, _, _, _ = await upgrade(client, "null", {"Sec-Fetch-Site": "same-site"})
        assert status == 403
        # Same origin and the configured extra origin pass.
        for origin, extra in ((node.base_url, {}),
                              (node.base_url, {"Sec-Fetch-Site": "same-origin"}),
                              ("https://chat.example.com", {}),
                              ("HTTPS://Chat.Example.com", {"Sec-Fetch-Site": "cross-site"})):
            status, _, body, peer = await upgrade(client, origin, extra)
            assert status == 101, (origin, status, body)
            assert peer is not None
            assert (await peer.recv_json())["type"] == "hello"
            peer.close()
    finally:
        await close_node(node)
