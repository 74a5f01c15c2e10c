"""The one door: what a connection asks of the chat (connect, join, leave, typing, post,
history, disconnect) goes through Chat.

Persist, then publish: `post` queues the message with the writer, which stores it with
its room's next seq; then `Delivery` acks the sender, writes it to this process's
members and publishes it once for the other processes. History never lacks a message
a client has seen.
"""

from __future__ import annotations

import asyncio
import logging

from server import protocol, tasks
from server.bus import BusError
from server.delivery import Delivery
from server.envelope import CloseCredential
from server.model import User
from server.presence import Coalescer, Presence, PresenceError
from server.protocol import ProtocolError
from server.rooms import LocalRooms, Member
from server.seqs import RoomSeqs
from server.store import Store, StoreError
from server.writer import MessageWriter, unavailable

log = logging.getLogger(__name__)

JOIN_BACKLOG = 50
SINCE_PAGE = 100


class Chat:
    """Rooms, messages, history, presence and typing for this process's connections."""

    def __init__(self, store: Store, rooms: LocalRooms, seqs: RoomSeqs, writer: MessageWriter,
                 delivery: Delivery, presence: Presence, *, node_id: str,
                 presence_ttl: float = 30.0, presence_hold: float = 2.0,
                 send_timeout: float = 5.0) -> None:
        self.store = store
        self.rooms = rooms
        self.seqs = seqs
        self.writer = writer
        self.delivery = delivery
        self.presence = presence
        self.node_id = node_id
        self.presence_ttl = presence_ttl
        self.send_timeout = send_timeout
        self._presence_frames = Coalescer(self._send_presence, presence_hold)
        self._heartbeat: asyncio.Task[None] | None = None
        self._departures: set[asyncio.Task[None]] = set()

    # Lifecycle ----------------------------------------------------------------

    async def start(self) -> None:
        self.writer.on_stored = self.delivery.stored
        await self.delivery.start()
        self._heartbeat = asyncio.create_task(self._presence_loop(), name="presence")

    async def close(self, timeout: float) -> None:
        """Finish in-flight stores and departures (up to `timeout`), then stop."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        writer = asyncio.ensure_future(self.writer.close())
        await asyncio.wait([writer, *self._departures], timeout=timeout)
        await tasks.stop(writer)
        await tasks.stop(self._heartbeat)
        await self._presence_frames.close()
        await self.delivery.close(max(0.0, deadline - loop.time()))

    def connect(self, conn: Member) -> None:
        self.rooms.connect(conn)

    def disconnect(self, conn: Member) -> None:
        """Take a closed connection out of its rooms now; presence follows in the
        background (close() waits for it). O(rooms of that connection)."""
        left = self.rooms.disconnect(conn)
        if left:
            task = asyncio.ensure_future(self._departed(conn, left))
            self._departures.add(task)
            task.add_done_callback(self._departures.discard)

    async def _departed(self, conn: Member, left: list[tuple[str, bool, bool]]) -> None:
        for room, empty, last_of_user in left:
            await self._after_leave(room, conn, empty, last_of_user, announce=True)

    async def close_credential(self, credential: str) -> None:
        """Close the sockets opened with a revoked session or token, on every process."""
        await self.delivery.command(CloseCredential(credential))

    # Rooms ---------------------------------------------------------------------

    async def join(self, conn: Member, room: str, since: int | None,
                   ref: protocol.Ref = None) -> None:
        """Join a room and send `joined`: subscribe first, then read history, so no
        message stored meanwhile can fall between the two."""
        try:
            doc = await self.store.room(room)
        except StoreError:
            raise unavailable("the message store") from None
        if doc is None:
            raise ProtocolError(protocol.NOT_FOUND, f"no room named {room!r}")
        if not self.rooms.is_connected(conn):
            return  # closed while the room was looked up
        already = self.rooms.has(room, conn)
        new_room = new_user = False
        if not already:
            new_room, new_user = self.rooms.begin_join(room, conn)
        try:
            await self.delivery.subscribe(room, again=new_room)
            members, elsewhere = await self.presence.enter(room, conn.user)
            # Read after subscribing: every message stored later arrives live.
            last_seq = await self.delivery.read_top(room)
            if since is None:
                messages, has_more = await self.store.messages(room, limit=JOIN_BACKLOG,
                                                               top=last_seq)
            else:
                messages, has_more = await self.store.messages(room, after=since,
                                                               limit=SINCE_PAGE, top=last_seq)
            messages, cut = protocol.fit_page(messages, newest=since is None)
            has_more = has_more or cut
        except (StoreError, BusError, PresenceError) as e:
            log.warning("join %s failed: %s", room, e)
            if not already:
                await self._leave(room, conn, announce=False)
            raise unavailable("the chat backend") from None
        joined = protocol.dump(protocol.Joined(room, last_seq, members, messages, has_more),
                               ref)
        if already:
            conn.send_raw(joined)
            return
        self.delivery.watch(room, last_seq)
        # Live frames that arrived while joining were held; they follow `joined`.
        seen = messages[-1].seq if messages else since or 0
        held = self.rooms.finish_join(room, conn, seen)
        if not self.rooms.has(room, conn):
            return  # left or closed while joining: its departure has been announced
        conn.send_raw(joined)
        for data in held:
            conn.send_raw(data)
        if new_user and not elsewhere:
            await self._announce(room, conn.user, "online", exclude=conn.conn_id)

    async def leave(self, conn: Member, room: str) -> None:
        await self._leave(room, conn, announce=True)

    async def _leave(self, room: str, conn: Member, announce: bool) -> None:
        outcome = self.rooms.leave(room, conn)
        if outcome is not None:
            await self._after_leave(room, conn, *outcome, announce=announce)

    async def _after_leave(self, room: str, conn: Member, empty: bool, last_of_user: bool,
                           announce: bool) -> None:
        if empty:
            await self.delivery.drop(room)
        if last_of_user and announce:
            try:
                elsewhere = await self.presence.leave(room, conn.user)
            except PresenceError as e:
                log.warning("presence leave failed: %s", e)
                return
            if not elsewhere:
                await self._announce(room, conn.user, "offline", exclude=conn.conn_id)

    async def _announce(self, room: str, user: User, status: str, exclude: bytes) -> None:
        """A presence change, coalesced: one frame per user and room per hold at most."""
        await self._presence_frames.change(room, user, status, exclude)

    async def _send_presence(self, room: str, user: User, status: str,
                             exclude: bytes) -> None:
        frame = protocol.dump(protocol.PresenceChange(room, user, status))
        await self.delivery.fan_out(room, frame, exclude)

    async def typing(self, conn: Member, room: str) -> None:
        if not self.rooms.has(room, conn):
            raise ProtocolError(protocol.FORBIDDEN, f"join {room!r} before typing in it")
        frame = protocol.dump(protocol.TypingNow(room, conn.user))
        await self.delivery.fan_out(room, frame, conn.conn_id)

    # Messages ----------------------------------------------------------------

    async def post(self, conn: Member, room: str, body: str, client_id: str | None,
                   ref: protocol.Ref = None) -> protocol.Ack:
        """Store a message; its ack reaches the sender before the message reaches anyone
        (Delivery.stored writes it). Returns the ack."""
        if not self.rooms.has(room, conn):
            raise ProtocolError(protocol.FORBIDDEN, f"join {room!r} before sending to it")
        message = await self.writer.send(conn.user, room, body, client_id, origin=conn,
                                         ref=ref, timeout=self.send_timeout)
        return protocol.Ack.of(message)

    async def history(self, room: str, before: int | None, after: int | None,
                      limit: int) -> protocol.HistoryPage:
        try:
            doc = await self.store.room(room)
            if doc is None:
                raise ProtocolError(protocol.NOT_FOUND, f"no room named {room!r}")
            # The exact top: what another process stored in the last second is not in
            # the record yet, and a page ends at the top however high `before` is.
            top = await self.store.top_seq_after(room, max(int(doc["seq"]), self.seqs.top(room)))
            messages, has_more = await self.store.messages(room, before=before, after=after,
                                                           limit=limit, top=top)
        except StoreError:
            raise unavailable("the message store") from None
        messages, cut = protocol.fit_page(messages, newest=after is None)
        return protocol.HistoryPage(room, messages, has_more or cut)

    # Presence heartbeat ---------------------------------------------------------

    async def _presence_loop(self) -> None:
        """Keep our users' presence alive, expire other processes' dead ones."""
        interval = self.presence_ttl / 3
        while True:
            await asyncio.sleep(interval)
            self._presence_frames.forget_old()
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

