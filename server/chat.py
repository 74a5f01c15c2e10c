"""The one door: every message, presence change and typing event goes through Chat.

Persist, then publish: a message is stored in MongoDB with its room seq, then the
sender is acked, then it is fanned out (local sockets directly, other processes
through the room's Redis channel). History never lacks a message a client has seen.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from typing import Any, Protocol

from server import protocol, tasks
from server.bus import Bus, BusError
from server.logs import OncePer
from server.metrics import Metrics
from server.presence import Presence, PresenceError
from server.protocol import ProtocolError
from server.rooms import LocalRooms, Outgoing
from server.store import Store, StoreError, User
from server.writer import MessageWriter, unavailable

log = logging.getLogger(__name__)

JOIN_BACKLOG = 50
SINCE_PAGE = 100


class Connection(Protocol):
    """What Chat needs of a client connection (the WebSocket handler implements it)."""

    conn_id: bytes
    user: User
    credential: str | None

    def send_raw(self, data: bytes) -> None: ...

    def shut(self, code: int, reason: str) -> None: ...


class Chat:
    """Rooms, messages, history, presence and typing for this process's connections."""

    def __init__(self, store: Store, redis: Any, rooms: LocalRooms, *, node_id: str,
                 prefix: str, subscriber: Any, metrics: Metrics | None = None,
                 presence_ttl: float = 30.0, send_timeout: float = 5.0) -> None:
        self.store = store
        self.rooms = rooms
        self.node_id = node_id
        self._node = node_id.encode()
        self.bus = Bus(redis, prefix, node_id, on_message=self._on_bus_message,
                       on_control=self._on_control, on_resync=self.resync,
                       subscriber=subscriber)
        self.presence = Presence(redis, prefix, node_id, ttl=presence_ttl)
        self.presence_ttl = presence_ttl
        self.send_timeout = send_timeout
        self.metrics = metrics or Metrics()
        self._publish_warning = OncePer(log)
        self.writer = MessageWriter(store, self._deliver_local, self._publish, self.metrics)
        self._marks: dict[str, _Watermark] = {}
        self._catching_up: asyncio.Task[None] | None = None
        # Rooms whose messages were stored but not published: room -> (lowest, highest seq)
        self._unpublished: dict[str, tuple[int, int]] = {}
        self._announcer: asyncio.Task[None] | None = None
        self._connections: set[Connection] = set()
        self._heartbeat: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    # Lifecycle ----------------------------------------------------------------

    async def start(self) -> None:
        await self.bus.start()
        self._heartbeat = asyncio.create_task(self._presence_loop(), name="presence")

    def spawn(self, coro: Any) -> asyncio.Task[Any]:
        """Run a coroutine in the background; close() waits for it."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def close(self, timeout: float) -> None:
        """Finish in-flight stores and departures (up to `timeout`), then stop."""
        writer = asyncio.ensure_future(self.writer.close())
        pending = [*self._tasks, writer]
        if self._announcer is not None:
            pending.append(self._announcer)
        await asyncio.wait(pending, timeout=timeout)
        await tasks.stop(writer)
        await tasks.stop(self._announcer)
        await tasks.stop(self._heartbeat)
        await self.bus.close()

    @property
    def connections(self) -> set[Connection]:
        return self._connections

    def connect(self, conn: Connection) -> None:
        self._connections.add(conn)

    async def disconnect(self, conn: Connection, joined: list[str]) -> None:
        """Leave every room the connection was in; O(rooms of that connection)."""
        self._connections.discard(conn)
        for room in joined:
            with contextlib.suppress(ProtocolError):
                await self.leave(conn, room)

    # Rooms ---------------------------------------------------------------------

    async def join(self, conn: Connection, room: str, since: int | None,
                   ref: protocol.Ref = None) -> None:
        """Join a room and send `joined`: subscribe first, then read history, so no
        message stored meanwhile can fall between the two."""
        try:
            doc = await self.store.room(room)
        except StoreError:
            raise unavailable("the message store") from None
        if doc is None:
            raise ProtocolError(protocol.NOT_FOUND, f"no room named {room!r}")
        already = self.rooms.has(room, conn)
        new_room = new_user = False
        if not already:
            new_room, new_user = self.rooms.begin_join(room, conn)
        try:
            if new_room or not self.bus.is_subscribed(room):
                await self.bus.subscribe(room)
            members, elsewhere = await self.presence.enter(room, conn.user)
            # Read after subscribing: every message stored later arrives live.
            last_seq = await self._read_top(room)
            if since is None:
                messages, has_more = await self.store.messages(room, limit=JOIN_BACKLOG,
                                                               top=last_seq)
            else:
                messages, has_more = await self.store.messages(room, after=since,
                                                               limit=SINCE_PAGE, top=last_seq)
        except (StoreError, BusError, PresenceError) as e:
            log.warning("join %s failed: %s", room, e)
            if not already:
                await self._drop_member(room, conn, announce=False)
            raise unavailable("the chat backend") from None
        seen = max((m["seq"] for m in messages), default=since or 0)
        frame = {"type": "joined", "room": room, "last_seq": last_seq, "members": members,
                 "messages": [{"type": "message", **m} for m in messages],
                 "has_more": has_more}
        if ref is not None:
            frame["ref"] = ref
        if already:
            conn.send_raw(protocol.dump(frame).encode())
            return
        # Subscribed before last_seq was read: everything after it arrives live.
        self._marks.setdefault(room, _Watermark(last_seq))
        # Live frames that arrived while joining were held; they follow `joined`.
        held = self.rooms.finish_join(room, conn, seen)
        conn.send_raw(protocol.dump(frame).encode())
        for data in held:
            conn.send_raw(data)
        if new_user and not elsewhere:
            await self._announce(room, conn.user, "online", exclude=conn.conn_id)

    async def leave(self, conn: Connection, room: str) -> None:
        await self._drop_member(room, conn, announce=True)

    async def _drop_member(self, room: str, conn: Connection, announce: bool) -> None:
        if not self.rooms.has(room, conn):
            return
        empty, last_of_user = self.rooms.leave(room, conn)
        if empty:
            self._marks.pop(room, None)
            await self.bus.unsubscribe(room)
        if last_of_user and announce:
            try:
                elsewhere = await self.presence.leave(room, conn.user)
            except PresenceError as e:
                log.warning("presence leave failed: %s", e)
                return
            if not elsewhere:
                await self._announce(room, conn.user, "offline", exclude=conn.conn_id)

    async def _announce(self, room: str, user: User, status: str, exclude: bytes) -> None:
        frame = {"type": "presence", "room": room, "user": user, "status": status}
        await self._fanout(room, [(0, protocol.dump(frame).encode())], exclude)

    async def typing(self, conn: Connection, room: str) -> None:
        if not self.rooms.has(room, conn):
            raise ProtocolError(protocol.FORBIDDEN, f"join {room!r} before typing in it")
        frame = {"type": "typing", "room": room, "user": conn.user}
        await self._fanout(room, [(0, protocol.dump(frame).encode())], conn.conn_id)

    # Messages ----------------------------------------------------------------

    async def post(self, conn: Connection, room: str, body: str, client_id: str | None,
                   ref: protocol.Ref = None) -> dict[str, Any]:
        """Store a message, write its ack to the sender, then fan it out; returns the ack."""
        if not self.rooms.has(room, conn):
            raise ProtocolError(protocol.FORBIDDEN, f"join {room!r} before sending to it")
        return await self.writer.send(conn, room, body, client_id, ref, self.send_timeout)

    async def _read_top(self, room: str) -> int:
        """The room's highest stored seq, read from MongoDB; the writer learns it too."""
        top = await self.store.top_seq(room) or 0
        self.writer.saw(room, top)
        return top

    async def history(self, room: str, before: int | None, after: int | None,
                      limit: int) -> dict[str, Any]:
        try:
            doc = await self.store.room(room)
            if doc is None:
                raise ProtocolError(protocol.NOT_FOUND, f"no room named {room!r}")
            top = max(int(doc["seq"]), self.writer.top(room))
            messages, has_more = await self.store.messages(room, before=before, after=after,
                                                           limit=limit, top=top)
        except StoreError:
            raise unavailable("the message store") from None
        return {"type": "history", "room": room,
                "messages": [{"type": "message", **m} for m in messages],
                "has_more": has_more}

    # Fan-out ------------------------------------------------------------------

    async def _fanout(self, room: str, frames: list[Outgoing], exclude: bytes) -> None:
        """Deliver to local members now and publish once for the other processes."""
        self._deliver_local(room, frames, exclude)
        await self._publish(room, frames, exclude)

    async def _publish(self, room: str, frames: list[Outgoing], exclude: bytes = b"") -> None:
        """One Redis publish of a room's frames, serialized once for every process."""
        header = b"%s %s %.6f" % (self._node, exclude or b"-", time.time())
        payload = b"\n".join([header,
                              *(b"%d\t%s" % (seq, data) for seq, data in frames)])
        try:
            await self.bus.publish(room, payload)
        except BusError as e:
            # Stored already: other processes read the messages back from MongoDB, when
            # their subscriber recovers or when we announce what failed.
            self.metrics.publish_failures.inc()
            self._publish_warning.warning("publish to %s failed: %s", room, e)
            self._remember_unpublished(room, [seq for seq, _ in frames if seq])

    def _remember_unpublished(self, room: str, seqs: list[int]) -> None:
        if not seqs:
            return  # presence and typing are not worth a catch-up
        lo, hi = min(seqs), max(seqs)
        known = self._unpublished.get(room)
        self._unpublished[room] = (min(lo, known[0]), max(hi, known[1])) if known else (lo, hi)
        if self._announcer is None or self._announcer.done():
            self._announcer = asyncio.create_task(self._announce_unpublished(),
                                                  name="announce-unpublished")

    async def _announce_unpublished(self) -> None:
        """Once Redis takes publishes again, tell the other processes which stored
        messages never reached them, so they read those from MongoDB.

        Their own subscriber's recovery covers a Redis restart, but not a publish that
        failed while their subscriber stayed up (a Redis that only this process lost,
        a pooled connection that broke, a timeout): without this, such a message would
        reach their members only when a later one revealed the gap.
        """
        delay = 0.1
        while self._unpublished:
            await asyncio.sleep(delay)
            for room, (lo, hi) in list(self._unpublished.items()):
                command = b"unpublished %s %s %d %d" % (self._node, room.encode(), lo, hi)
                try:
                    await self.bus.publish_control(command)
                except BusError:
                    delay = min(delay * 2, 2.0)
                    break
                if self._unpublished.get(room) == (lo, hi):
                    del self._unpublished[room]
                log.info("announced unpublished messages %d-%d of %s", lo, hi, room)

    def _deliver_local(self, room: str, frames: list[Outgoing], exclude: bytes = b"") -> None:
        start = time.perf_counter()
        count = self.rooms.deliver(room, frames, exclude)
        self.metrics.delivered(count, time.perf_counter() - start)
        mark = self._marks.get(room)
        if mark is not None:
            for seq, _ in frames:
                if seq:
                    mark.seen(seq)

    def _on_bus_message(self, room: str, payload: bytes) -> None:
        header, _, rest = payload.partition(b"\n")
        node, exclude, sent = header.split(b" ", 2)
        if node == self._node or room not in self.rooms:
            return
        if exclude == b"-":
            exclude = b""
        self.metrics.bus_latency.observe(max(0.0, time.time() - float(sent)))
        mark = self._marks.get(room)
        frames: list[Outgoing] = []
        for line in rest.split(b"\n"):
            seq_text, _, data = line.partition(b"\t")
            seq = int(seq_text)
            if seq and mark is not None and mark.delivered(seq):
                # Read back from MongoDB already, or published twice (a retried PUBLISH).
                self.metrics.bus_duplicates.inc()
                continue
            frames.append((seq, data))
        if frames:
            if frames[-1][0]:  # messages (in seq order), not presence or typing
                self.writer.saw(room, frames[-1][0])
            self._deliver_local(room, frames, exclude)

    def _on_control(self, payload: bytes) -> None:
        """Cluster-wide commands; see `close_session`."""
        kind, _, arg = payload.partition(b" ")
        if kind == b"close-credential":
            credential = arg.decode()
            for conn in list(self._connections):
                if conn.credential == credential:
                    conn.shut(1008, "credential revoked")
        elif kind == b"unpublished":
            self._on_unpublished(arg)

    def _on_unpublished(self, arg: bytes) -> None:
        """Another process stored messages lo..hi of a room but could not publish them."""
        try:
            node, room_name, lo_text, hi_text = arg.split(b" ")
            room, lo, hi = room_name.decode(), int(lo_text), int(hi_text)
        except (ValueError, UnicodeDecodeError):
            log.warning("ignoring a malformed unpublished notice: %r", arg[:200])
            return
        mark = self._marks.get(room)
        if node == self._node or mark is None:
            return
        span = range(lo, hi + 1)
        if len(span) > mark.RECENT or any(not mark.delivered(seq) for seq in span):
            self.spawn(self._catch_up([room], start=lo - 1))

    async def close_credential_everywhere(self, credential: str) -> None:
        """Close the sockets opened with a revoked session or token, on every process."""
        command = b"close-credential " + credential.encode()
        self._on_control(command)
        try:
            await self.bus.publish_control(command)
        except BusError as e:
            log.warning("revocation not broadcast: %s", e)

    async def resync(self) -> None:
        """After Redis comes back, fetch what pub/sub may have dropped from MongoDB."""
        self.metrics.resyncs.inc()
        await self._catch_up(self.rooms.rooms())

    async def _catch_up(self, rooms: list[str], start: int | None = None) -> None:
        """Deliver every stored message after a room's watermark (or after `start`, if
        lower) not yet delivered here.

        Starting at the watermark, not at the highest seq delivered, matters: while
        Redis was away this process kept delivering its own messages, whose seqs
        interleave with the other processes' lost ones.
        """
        for room in rooms:
            mark = self._marks.get(room)
            if mark is None:
                continue
            after = mark.upto if start is None else min(start, mark.upto)
            try:
                top = await self._read_top(room)
                for _page in range(20):
                    messages, has_more = await self.store.messages(room, after=after,
                                                                   limit=SINCE_PAGE, top=top)
                    frames = [(m["seq"], protocol.dump({"type": "message", **m}).encode())
                              for m in messages if not mark.delivered(m["seq"])]
                    if frames:
                        self.metrics.catch_ups.inc(len(frames))
                        self._deliver_local(room, frames)
                    if messages:
                        self.writer.saw(room, messages[-1]["seq"])
                        # Seqs of the page's range that MongoDB lacks are failed stores.
                        mark.through(after, messages[-1]["seq"])
                        after = messages[-1]["seq"]
                    if not has_more:
                        break
            except StoreError as e:
                log.warning("resync of %s failed: %s", room, e)

    def _check_watermarks(self) -> None:
        """Catch up rooms whose watermark sat below delivered seqs for a whole heartbeat:
        a publish was lost without the subscriber noticing, or a store failed."""
        stuck = [room for room, mark in self._marks.items() if mark.stuck()]
        if stuck and (self._catching_up is None or self._catching_up.done()):
            self._catching_up = self.spawn(self._catch_up(stuck))

    async def _presence_loop(self) -> None:
        """Heartbeat: keep our users' presence alive, expire other processes' dead ones."""
        interval = self.presence_ttl / 3
        while True:
            await asyncio.sleep(interval)
            self._check_watermarks()
            try:
                present = [(room, m.user) for room in self.rooms.rooms()
                           for m in self.rooms.members(room)]
                await self.presence.refresh(present)
                for room, user in await self.presence.sweep(self.rooms.rooms()):
                    await self._announce(room, user, "offline", exclude=b"")
            except PresenceError as e:
                log.warning("presence heartbeat failed: %s", e)
            except Exception:
                log.exception("presence heartbeat crashed; continuing")


class _Watermark:
    """Up to which seq this process has delivered every stored message of a room, and
    which seqs it delivered lately.

    `upto` moves only over seqs delivered here (stored here, received from Redis,
    read back from MongoDB) or shown by MongoDB to be holes, never past a message
    that pub/sub dropped; so a resync knows exactly where to start. The recent seqs
    keep a message that arrives twice (read back, then published late; or published
    twice) from being delivered twice; a hole is not among them, so a message that was
    still being stored when MongoDB showed it missing is delivered when it comes.
    """

    __slots__ = ("_order", "above", "recent", "upto", "was")

    RECENT = 4096

    def __init__(self, upto: int) -> None:
        self.upto = upto
        self.above: set[int] = set()  # delivered seqs beyond a hole
        self.was = -1  # upto at the previous heartbeat, while seqs sat above it
        self.recent: set[int] = set()
        self._order: deque[int] = deque()

    def seen(self, seq: int) -> None:
        """`seq` was delivered here."""
        if seq in self.recent:
            return
        self.recent.add(seq)
        self._order.append(seq)
        if len(self._order) > self.RECENT:
            self.recent.discard(self._order.popleft())
        self._advance(seq)

    def _advance(self, seq: int) -> None:
        if seq <= self.upto:
            return
        self.above.add(seq)
        while self.upto + 1 in self.above:
            self.upto += 1
            self.above.discard(self.upto)

    def delivered(self, seq: int) -> bool:
        return seq in self.recent or seq in self.above

    def through(self, after: int, last: int) -> None:
        """Every seq in (after, last] is delivered or a hole."""
        for seq in range(max(after, self.upto) + 1, last + 1):
            self._advance(seq)

    def stuck(self) -> bool:
        """Whether a hole has held the watermark since the previous heartbeat."""
        stuck = bool(self.above) and self.upto == self.was
        self.was = self.upto if self.above else -1
        return stuck
