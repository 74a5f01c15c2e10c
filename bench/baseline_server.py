"""Minimal Tornado broadcast server speaking the fan-out subset of our WebSocket protocol.

It is the yardstick for `bench/`: the least a Tornado process must do to deliver the
same frames, so that the difference to our server is the cost of auth, storage, Redis
and bookkeeping. No auth (the user name comes from `?name=`), no storage, rooms and
per-room sequence numbers in memory, one JSON serialization per message.

With `--redis-url`, it is the minimal Tornado + Redis server: each message is published
to a Redis channel per room (in order, by one publisher) and delivered to local sockets
when it comes back from the pub/sub subscription, as several processes would need.

    python bench/baseline_server.py --port 18887 [--redis-url redis://127.0.0.1:6379/0]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import json
import logging
import signal
import time
import uuid
from typing import Any

import redis.asyncio
import redis.exceptions
import tornado.web
import tornado.websocket

log = logging.getLogger("baseline")


class Rooms:
    """In-process room membership and per-room sequence counters.

    `drop_every` / `dup_every` (0 = off) skip or double every Nth delivery: they exist
    only to check that the load generator notices lost and duplicated messages.
    """

    def __init__(self, drop_every: int = 0, dup_every: int = 0) -> None:
        self.members: dict[str, set[BroadcastSocket]] = {}
        self.last_seq: dict[str, int] = {}
        self.drop_every = drop_every
        self.dup_every = dup_every
        self.delivered = 0

    def join(self, room: str, sock: BroadcastSocket) -> int:
        """Add `sock` to `room`; return the room's last seq."""
        self.members.setdefault(room, set()).add(sock)
        return self.last_seq.get(room, 0)

    def leave(self, room: str, sock: BroadcastSocket) -> None:
        """Remove `sock` from `room`; forget empty rooms' member sets."""
        socks = self.members.get(room)
        if socks is not None:
            socks.discard(sock)
            if not socks:
                del self.members[room]

    def next_seq(self, room: str) -> int:
        """Allocate the next sequence number in `room`."""
        seq = self.last_seq.get(room, 0) + 1
        self.last_seq[room] = seq
        return seq

    def deliver(self, room: str, payload: bytes) -> None:
        """Write one already-serialized text frame to every socket in `room`."""
        if self.drop_every or self.dup_every:
            self._deliver_faulty(room, payload)
            return
        for sock in tuple(self.members.get(room, ())):
            try:
                sock.write_message(payload)
            except tornado.websocket.WebSocketClosedError:
                pass

    def _deliver_faulty(self, room: str, payload: bytes) -> None:
        for sock in tuple(self.members.get(room, ())):
            self.delivered += 1
            copies = 1
            if self.drop_every and self.delivered % self.drop_every == 0:
                copies = 0
            elif self.dup_every and self.delivered % self.dup_every == 0:
                copies = 2
            for _ in range(copies):
                try:
                    sock.write_message(payload)
                except tornado.websocket.WebSocketClosedError:
                    pass


class RedisBus:
    """Fan-out through Redis pub/sub: one ordered publisher, one pattern subscription."""

    PREFIX = "bench-baseline:"

    def __init__(self, url: str, rooms: Rooms) -> None:
        self.client = redis.asyncio.from_url(url)
        self.rooms = rooms
        self.queue: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
        self.tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Subscribe, then start publishing and delivering."""
        self.pubsub = self.client.pubsub()
        await self.pubsub.psubscribe(self.PREFIX + "*")
        self.tasks = [asyncio.create_task(self._publish()), asyncio.create_task(self._read())]

    def publish(self, room: str, payload: bytes) -> None:
        """Queue one serialized message for `room` (published in queue order)."""
        self.queue.put_nowait((room, payload))

    async def _publish(self) -> None:
        while True:
            batch = [await self.queue.get()]
            while not self.queue.empty():
                batch.append(self.queue.get_nowait())
            pipe = self.client.pipeline(transaction=False)
            for room, payload in batch:
                pipe.publish(self.PREFIX + room, payload)
            await pipe.execute()

    async def _read(self) -> None:
        skip = len(self.PREFIX)
        while True:
            try:
                async for msg in self.pubsub.listen():
                    if msg["type"] == "pmessage":
                        self.rooms.deliver(msg["channel"][skip:].decode(), msg["data"])
            except (OSError, redis.exceptions.RedisError) as exc:  # resubscribes on next read
                log.warning("subscriber lost: %s", exc)
                await asyncio.sleep(0.5)

    async def close(self) -> None:
        """Stop both tasks and the connections."""
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.pubsub.aclose()
        await self.client.aclose()


class BroadcastSocket(tornado.websocket.WebSocketHandler):
    """One client connection: hello, join, leave, send, ping."""

    def initialize(
        self, rooms: Rooms, node: str, ids: itertools.count[int], bus: RedisBus | None
    ) -> None:
        self.rooms = rooms
        self.bus = bus
        self.node = node
        self.ids = ids
        self.joined: set[str] = set()
        self.user: dict[str, Any] = {}

    def check_origin(self, origin: str) -> bool:
        """Accept any origin: the baseline has no cookies to protect."""
        return True

    def open(self, *args: str, **kwargs: str) -> None:
        # As in ours: with Nagle's algorithm on, a sender's message frame right after
        # its ack waits for the client's delayed ACK (p99 44 ms instead of 7.5 ms).
        self.set_nodelay(True)
        name = self.get_argument("name", "anon")
        self.user = {"id": f"u-{name}", "name": name, "bot": False}
        self.write_message(
            json.dumps({"type": "hello", "protocol": 1, "user": self.user, "node": self.node})
        )

    def on_message(self, message: str | bytes) -> None:
        try:
            frame = json.loads(message)
            kind = frame["type"]
        except (ValueError, KeyError, TypeError):
            self._error("bad_request", "invalid frame", None)
            return
        ref = frame.get("ref")
        if kind == "send":
            self._send(frame, ref)
        elif kind == "join":
            room = str(frame.get("room", ""))
            last_seq = self.rooms.join(room, self)
            self.joined.add(room)
            self._reply(
                {"type": "joined", "room": room, "last_seq": last_seq, "members": [],
                 "messages": []},
                ref,
            )
        elif kind == "leave":
            room = str(frame.get("room", ""))
            self.rooms.leave(room, self)
            self.joined.discard(room)
            self._reply({"type": "left", "room": room}, ref)
        elif kind == "ping":
            self._reply({"type": "pong"}, ref)
        else:
            self._error("unknown_type", "unknown frame type", ref)

    def _send(self, frame: dict[str, Any], ref: Any) -> None:
        room = frame.get("room")
        body = frame.get("body")
        if not isinstance(room, str) or not isinstance(body, str) or not body.strip():
            self._error("bad_request", "room and body required", ref)
            return
        if room not in self.joined:
            self._error("forbidden", "join the room first", ref)
            return
        seq = self.rooms.next_seq(room)
        msg_id = f"{self.node}-{next(self.ids)}"
        ts = int(time.time() * 1000)
        client_id = frame.get("client_id")
        self._reply(
            {"type": "ack", "room": room, "client_id": client_id, "id": msg_id, "seq": seq,
             "ts": ts},
            ref,
        )
        payload = json.dumps(
            {"type": "message", "room": room, "id": msg_id, "seq": seq, "user": self.user,
             "body": body, "ts": ts, "client_id": client_id}
        ).encode()
        if self.bus is not None:
            self.bus.publish(room, payload)
        else:
            self.rooms.deliver(room, payload)

    def _reply(self, frame: dict[str, Any], ref: Any) -> None:
        if ref is not None:
            frame["ref"] = ref
        self.write_message(json.dumps(frame))

    def _error(self, code: str, message: str, ref: Any) -> None:
        self._reply({"type": "error", "code": code, "message": message}, ref)

    def on_close(self) -> None:
        for room in self.joined:
            self.rooms.leave(room, self)
        self.joined.clear()


class OkHandler(tornado.web.RequestHandler):
    """`/healthz` and `/readyz`: always 200, so harnesses can wait on either."""

    def get(self) -> None:
        self.write({"ok": True})


def make_app(
    node: str, drop_every: int = 0, dup_every: int = 0, redis_url: str = "",
    ping_interval: float = 20.0,
) -> tuple[tornado.web.Application, RedisBus | None]:
    """Build the baseline application with its own room registry (and Redis bus)."""
    rooms = Rooms(drop_every, dup_every)
    ids = itertools.count(1)
    bus = RedisBus(redis_url, rooms) if redis_url else None
    socket_args = {"rooms": rooms, "node": node, "ids": ids, "bus": bus}
    app = tornado.web.Application(
        [
            (r"/ws", BroadcastSocket, socket_args),
            (r"/(?:healthz|readyz)", OkHandler),
        ],
        # Idle sockets cost what keeping them alive costs: ping like ours does.
        websocket_ping_interval=ping_interval or None,
        websocket_ping_timeout=ping_interval or None,
    )
    return app, bus


async def serve(
    port: int, freeze_gc: bool, drop_every: int = 0, dup_every: int = 0, redis_url: str = "",
    ping_interval: float = 20.0,
) -> None:
    """Listen on 127.0.0.1:`port` until SIGTERM or SIGINT."""
    app, bus = make_app(f"baseline-{uuid.uuid4().hex[:6]}", drop_every, dup_every, redis_url,
                        ping_interval)
    if bus is not None:
        await bus.start()
    server = app.listen(port, address="127.0.0.1")
    if freeze_gc:
        # Start-up objects never become garbage; keep the collector from rescanning them.
        gc.collect()
        gc.freeze()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("baseline listening on 127.0.0.1:%d", port)
    await stop.wait()
    server.stop()
    await server.close_all_connections()
    if bus is not None:
        await bus.close()


def main() -> None:
    """Parse flags and serve."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=18887)
    parser.add_argument(
        "--no-gc-freeze", action="store_true", help="skip gc.freeze() after start-up"
    )
    parser.add_argument("--drop-every", type=int, default=0, metavar="N",
                        help="harness self-check: skip every Nth delivery")
    parser.add_argument("--dup-every", type=int, default=0, metavar="N",
                        help="harness self-check: deliver every Nth delivery twice")
    parser.add_argument("--redis-url", default="",
                        help="fan messages out through this Redis's pub/sub")
    parser.add_argument("--ping-interval", type=float, default=20.0, metavar="SECONDS",
                        help="WebSocket ping every this many seconds, as ours (0 = none)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    asyncio.run(serve(args.port, not args.no_gc_freeze, args.drop_every, args.dup_every,
                      args.redis_url, args.ping_interval))


if __name__ == "__main__":
    main()
