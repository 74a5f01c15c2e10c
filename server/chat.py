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
import time

from server import protocol, tasks
from server.bus import BusError
from server.changes import MessageChanges
from server.delivery import Delivery
from server.envelope import CloseCredential, MemberChange
from server.files import Claim, Files
from server.joinreads import JoinReads
from server.member_changes import MemberChanges
from server.model import User
from server.moderation import Moderation
from server.presence import Presence, PresenceError
from server.presence_hub import PresenceHub
from server.protocol import ProtocolError
from server.rooms import LocalRooms, Member
from server.sends import unavailable
from server.seqs import RoomSeqs
from server.standing import Standing
from server.store import Store, StoreError
from server.team import Team
from server.turns import Turns
from server.writer import MessageWriter

log = logging.getLogger(__name__)


class Chat:
    """Rooms, messages, history, presence and typing for this process's connections."""

    def __init__(self, store: Store, rooms: LocalRooms, seqs: RoomSeqs, writer: MessageWriter,
                 delivery: Delivery, presence: Presence, team: Team,
                 changes: MessageChanges, *, node_id: str, files: Files | None = None,
                 presence_ttl: float = 30.0, presence_hold: float = 2.0,
                 presence_grace: float = 2.0, presence_handover: float = 15.0,
                 send_timeout: float = 5.0) -> None:
        self.store = store
        self.rooms = rooms
        self.seqs = seqs
        self.writer = writer
        self.delivery = delivery
        self.presence = presence
        self.team = team
        self.moderation = Moderation(team)
        self.changes = changes
        self.files = files
        self.node_id = node_id
        self.presence_ttl = presence_ttl
        self.send_timeout = send_timeout
        self.turns = Turns()
        self.hub = PresenceHub(presence, rooms, delivery, store, node_id=node_id,
                               ttl=presence_ttl, hold=presence_hold, grace=presence_grace,
                               handover=presence_handover)
        self.join_reads = JoinReads(store, delivery, seqs)
        self._drops: set[asyncio.Task[None]] = set()
        self.standing = Standing()  # who may speak where, for the users joined here
        self.member_changes = MemberChanges(node_id, team.cache, self.hub, self.standing,
                                            rooms, delivery, self.join_reads, self._depart)

    # Lifecycle ----------------------------------------------------------------

    async def start(self) -> None:
        self.writer.on_stored = self.delivery.stored
        self.delivery.on_member_change = self.member_changes.apply
        self.delivery.on_handover = self.hub.handed_over
        self.team.notify = self.delivery.command
        await self.delivery.start()
        await self.hub.start()

    async def close(self, timeout: float) -> None:
        """Finish in-flight stores and departures (up to `timeout`), then stop."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        writer = asyncio.ensure_future(self.writer.close())
        await asyncio.wait([writer, *self._drops], timeout=timeout)
        await self.hub.settle(max(0.0, deadline - loop.time()))
        await tasks.stop(writer)
        await self.hub.close()
        await self.changes.close(max(0.0, deadline - loop.time()))
        await self.delivery.close(max(0.0, deadline - loop.time()))

    def connect(self, conn: Member) -> None:
        self.rooms.connect(conn)

    def disconnect(self, conn: Member) -> None:
        """Take a closed connection out of its rooms now; presence follows with the
        next batch (close() waits for it). O(rooms of that connection)."""
        if not self.rooms.is_connected(conn):
            return  # closed during its upgrade, before open(): it has no user yet
        was_idle = self.hub.disconnecting(conn)
        left = self.rooms.disconnect(conn)
        self.hub.disconnected(conn, was_idle, bool(left))
        self._depart(conn, left)

    def _depart(self, conn: Member, left: list[tuple[str, bool, bool]]) -> None:
        """A connection is out of these rooms: nothing waits for what follows (a room
        now empty here is dropped in the background, departures join presence's batch)."""
        for room, empty, last_of_user in left:
            self._forget(room, conn.user.id, empty, last_of_user)
            if empty:
                # Forgotten now (a rejoin starts afresh from its page); the unsubscribe
                # follows in the background, unless a member has joined again by then.
                task = asyncio.ensure_future(self.delivery.drop(room))
                self._drops.add(task)
                task.add_done_callback(self._drops.discard)
            if last_of_user:
                self.hub.depart(room, conn)

    async def close_credential(self, credential: str) -> None:
        """Close the sockets opened with a revoked session or token, on every process."""
        await self.delivery.command(CloseCredential(credential))

    # Rooms ---------------------------------------------------------------------

    async def join(self, conn: Member, room: str, since: int | None,
                   ref: protocol.Ref = None) -> None:
        """Join a room and send `joined`: subscribe first, then read history, so no
        message stored meanwhile can fall between the two."""
        access = await self.team.enter(conn.user, room)
        if not self.rooms.is_connected(conn):
            return  # closed while the room was looked up
        already = self.rooms.has(room, conn)
        new_room = new_user = back = False
        if not already:
            new_room, new_user = self.rooms.begin_join(room, conn)
            # Back within the grace of a closed socket's departure: it is called off
            # before this join's entry is written, and the room hears nothing.
            back = new_user and self.hub.back(room, conn.user.id)
        self.standing.note(access)
        try:
            await self.delivery.subscribe(room, again=new_room)
            if not self.rooms.has(room, conn):
                return  # closed meanwhile: no presence entry may follow its departure
            # Read after subscribing: every message stored later arrives live. Joins
            # of the same room in the same loop turn share their reads. The room
            # document's recorded top saves reading seqs below it again. Both are
            # Futures of batches (presence's, the reads'): a join waits with no Task.
            (users, elsewhere), page = await asyncio.gather(
                self.hub.enter(room, conn),
                self.join_reads.read(room, conn.user.id, int(access.room.get("seq", 0)),
                                     since))
            last_seq, read = page.top, page.read
            frames, cut = protocol.fit_frames([e.frame for e in page.messages],
                                              newest=since is None)
            has_more = page.has_more or cut
        except (StoreError, BusError, PresenceError) as e:
            log.warning("join %s failed: %s", room, e)
            if not already:
                # Announced online before (back): its departure is owed to the room.
                await self._leave(room, conn, announce=back)
            raise unavailable("the chat backend") from None
        members = self.hub.states.present(users)
        joined = protocol.dump_joined(protocol.Joined(room, last_seq, members, [], has_more,
                                                      read), frames, ref)
        if already:
            conn.send_raw(joined)
            return
        # Live frames that arrived while joining were held; they follow `joined`.
        kept = page.messages[:len(frames)] if since is not None else page.messages[
            len(page.messages) - len(frames):]
        seen = kept[-1].seq if kept else since or 0
        held = self.rooms.finish_join(room, conn, seen)
        if not self.rooms.has(room, conn):
            # Left or closed while joining: its departure has been announced, and a
            # room it left empty is unsubscribed: no watermark of it may stay behind.
            return
        self.delivery.watch(room, last_seq)
        conn.send_raw(joined)
        # Held frames were delivered before the room had a watermark here (when this
        # is its first local member): count their seqs now, or the watermark check
        # would take them for a hole and deliver them again from MongoDB.
        mark = self.seqs.mark(room)
        for seq, data in held:
            if seq and mark is not None:
                mark.seen(seq)
            conn.send_raw(data)
        if seen:
            # The page may hold seqs still on their way here (from another process,
            # or from this process's writer, whose fan-out can follow the store by a
            # loop turn): when they arrive, this connection must not get them twice.
            self.rooms.set_floor(room, conn, seen, time.monotonic())
        if new_user and not elsewhere and not back:
            self.hub.online(room, conn)

    async def leave(self, conn: Member, room: str) -> None:
        await self._leave(room, conn, announce=True)

    async def _leave(self, room: str, conn: Member, announce: bool) -> None:
        outcome = self.rooms.leave(room, conn)
        if outcome is not None:
            await self._after_leave(room, conn, *outcome, announce=announce)

    async def _after_leave(self, room: str, conn: Member, empty: bool, last_of_user: bool,
                           announce: bool) -> None:
        self._forget(room, conn.user.id, empty, last_of_user)
        if empty:
            await self.delivery.drop(room)
        if last_of_user and announce:
            await self.hub.leave(room, conn)
        elif last_of_user:
            self.hub.withdraw(room, conn)  # a failed join's entry: the room heard nothing

    def _forget(self, room: str, uid: str, empty: bool, last_of_user: bool) -> None:
        if last_of_user:
            self.standing.forget_user(room, uid)
        if empty:
            self.standing.forget_room(room)

    async def activity(self, conn: Member, idle: bool) -> None:
        """The user is idle at this connection, or back: away once idle at all."""
        await self.hub.activity(conn, idle)

    async def typing(self, conn: Member, room: str) -> None:
        if not self.rooms.has(room, conn):
            raise ProtocolError(protocol.FORBIDDEN, f"join {room!r} before typing in it")
        self.standing.check(conn.user.id, room)
        frame = protocol.dump(protocol.TypingNow(room, conn.user))
        await self.delivery.fan_out(room, frame, conn.conn_id)

    # Messages ----------------------------------------------------------------

    async def post(self, conn: Member, room: str, body: str, client_id: str | None,
                   ref: protocol.Ref = None, reply_to: int | None = None,
                   attachments: tuple[str, ...] = ()) -> protocol.Ack:
        """Store a message; its ack reaches the sender before the message reaches anyone
        (Delivery.stored writes it). Returns the ack."""
        if not self.rooms.has(room, conn):
            raise ProtocolError(protocol.FORBIDDEN, f"join {room!r} before sending to it")
        self.standing.check(conn.user.id, room)
        key = (conn.conn_id, room)
        ahead = self.turns.ahead(key)  # server.turns: sends are queued in send order
        if ahead is None and reply_to is None and "@" not in body and not attachments:
            return await self._post(conn, room, body, client_id, ref, None, (), None, None)
        with self.turns.take(key) as turn:
            return await self._post(conn, room, body, client_id, ref, reply_to, attachments,
                                    ahead, turn)

    async def _post(self, conn: Member, room: str, body: str, client_id: str | None,
                    ref: protocol.Ref, reply_to: int | None, attachments: tuple[str, ...],
                    ahead: asyncio.Future[None] | None, turn: asyncio.Future[None] | None
                    ) -> protocol.Ack:
        if reply_to is not None:
            await self.changes.check_reply(room, reply_to, ref)
        mentions = await self.changes.mentions(room, body) if "@" in body else None
        claim: Claim | None = None
        if attachments:
            if self.files is None:
                raise ProtocolError(protocol.BAD_REQUEST, "this server shares no files", ref)
            claim = await self.files.attach(conn.user, room, attachments, client_id, ref)
        if ahead is not None:
            await asyncio.shield(ahead)  # queued (or failed) before this one is
        if turn is not None:
            turn.set_result(None)  # the sends waiting for this one queue after it
        try:
            message, fresh = await self.writer.send(
                conn.user, room, body, client_id, origin=conn, ref=ref,
                timeout=self.send_timeout, reply_to=reply_to, mentions=mentions,
                attachments=claim.attachments if claim else ())
        except ProtocolError as e:
            # Refused, nothing stored: the files are free again. Unavailable: the
            # message may yet be stored, so they stay attached (the sweep checks).
            if claim is not None and self.files is not None and e.code != protocol.UNAVAILABLE:
                await self.files.release(claim)
            raise
        if claim is not None and self.files is not None:
            await self.files.settle(claim, message, fresh)
        if fresh and message.reply_to is not None:
            await self.changes.replied(message)
        return protocol.Ack.of(message)

    async def change(self, conn: Member, frame: protocol.Edit | protocol.Delete | protocol.React
                     ) -> protocol.Ack:
        """Edit, delete or react to a message; acked (by Delivery) before anyone else
        gets the event. Edits and reactions are refused to the muted, like sends."""
        room = frame.room
        if not self.rooms.has(room, conn):
            raise ProtocolError(protocol.FORBIDDEN, f"join {room!r} before changing its "
                                "messages", frame.ref)
        user = conn.user
        ahead = self.turns.ahead((conn.conn_id, room))
        if ahead is not None:
            await asyncio.shield(ahead)  # stored after the sends before it (server.turns)
        match frame:
            case protocol.Edit(_, seq, body, client_id, ref):
                self.standing.check(user.id, room)
                event = await self.changes.edit(user, room, seq, body, client_id, conn, ref)
            case protocol.React(_, seq, emoji, on, client_id, ref):
                self.standing.check(user.id, room)
                event = await self.changes.react(user, room, seq, emoji, on, client_id, conn,
                                                 ref)
            case protocol.Delete(_, seq, client_id, ref):
                event = await self.changes.delete(user, room, seq, client_id, conn, ref)
        return protocol.Ack.of(event)

    async def history(self, user: User, room: str, before: int | None, after: int | None,
                      limit: int) -> protocol.HistoryPage:
        """A page of a room the user may read (`not_found` for one they may not see)."""
        doc = (await self.team.readable(user, room)).room
        try:
            # The exact top: what another process stored in the last second is not in
            # the record yet, and a page ends at the top however high `before` is.
            top = await self.store.top_seq_after(room, max(int(doc["seq"]), self.seqs.top(room)))
            messages, has_more = await self.store.messages(room, before=before, after=after,
                                                           limit=limit, top=top)
        except StoreError:
            raise unavailable("the message store") from None
        messages, cut = protocol.fit_page(messages, newest=after is None)
        return protocol.HistoryPage(room, messages, has_more or cut)

    # Read state ---------------------------------------------------------------------

    async def read(self, conn: Member, room: str, seq: int) -> int:
        """Move the user's read position forward (never back, never past the room's
        top); every other socket of theirs, on every process, is told. Returns it."""
        await self.team.readable(conn.user, room)
        top = max(self.seqs.top(room), 0)
        if seq > top:
            try:
                top = await self.delivery.read_top(room)
            except StoreError:
                raise unavailable("the message store") from None
        try:
            position = await self.store.mark_read(room, conn.user.id, min(seq, top))
        except StoreError:
            raise unavailable("the message store") from None
        await self.delivery.command(MemberChange(
            self.node_id, room, conn.user.id, "read",
            {"room": room, "seq": position, "exclude": conn.conn_id.decode()}))
        return position
