"""Presence as rooms see it: online/offline on join and departure, away when every
socket of a user is idle, the custom status text, and the heartbeat that keeps this
process live and buries dead ones. Chat calls it; Redis work is in `presence.py`."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from server import tasks
from server.delivery import Delivery
from server.envelope import Handover, MemberChange
from server.model import User
from server.presence import Presence, PresenceError, UserPresence
from server.presence_frames import Coalescer, RoomBatches, State, presence_frame
from server.presence_grace import Graces
from server.rooms import Apart, LocalRooms, Member
from server.status import Shown, UserStates
from server.store import Store, StoreError

log = logging.getLogger(__name__)

BURY_MARGIN = 0.05  # seconds after a handover ends before its process is buried
CHANGE = "presence"  # the MemberChange that carries a user's state to every process


class PresenceHub:
    """This process's side of presence."""

    def __init__(self, presence: Presence, rooms: LocalRooms, delivery: Delivery,
                 store: Store, *, node_id: str, ttl: float = 30.0, hold: float = 2.0,
                 grace: float = 2.0, handover: float = 15.0) -> None:
        self.presence = presence
        self.rooms = rooms
        self.delivery = delivery
        self.store = store
        self.node_id = node_id
        self.ttl = ttl
        self.handover = handover
        self.handing_over = False
        self.states = UserStates()
        metrics = delivery.metrics
        presence.on_commands = metrics.presence_commands.inc
        presence.on_batch = self._batched
        presence.on_buried = metrics.presence_buried.inc
        self._frames = Coalescer(self._queue, hold)
        self._batches = RoomBatches(self._send)
        self._idle: set[Member] = set()  # connections that said they are idle
        self._graces = Graces(grace, self._depart_now)
        self._heartbeat: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    # Lifecycle ------------------------------------------------------------------

    async def start(self) -> None:
        try:
            await self.presence.start()
            away = await self.presence.away_users()
        except PresenceError as e:
            log.warning("presence start: %s", e)
            away = set()
        try:
            statuses = await self.store.statuses()
        except StoreError as e:
            log.warning("status texts not loaded: %s", e)
            statuses = {}
        self.states.load(statuses, away)
        self._heartbeat = asyncio.create_task(self._loop(), name="presence")

    async def settle(self, timeout: float) -> None:
        """Send the joins and departures that wait, and wait (up to `timeout`) for their
        answers and for the presence work under way (away changes, forgetting): the
        frames they announce are queued when this returns."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        self._graces.end(everything=True)
        await self.presence.settle(timeout)
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=max(0.0, deadline - loop.time()))

    def hand_over(self) -> None:
        """A drain begins: the departures from here announce nothing and leave this
        process's entries in place; close() then gives the others `handover` seconds
        to see these users back through them before the entries of those who did not
        come back are buried (and only they announced offline). A rolling deploy thus
        makes nobody flap offline and online in every room."""
        self.handing_over = True

    async def close(self) -> None:
        await tasks.stop(self._heartbeat)
        if self.handing_over:
            await self._hand_over()
        self._frames.close()
        await self._batches.close()
        await self.presence.close()

    async def _hand_over(self) -> None:
        until = int((time.time() + self.handover) * 1000)
        try:
            await self.presence.expire_at(until)
        except PresenceError as e:
            # The entries then stand until the presence TTL runs out: later, not lost.
            log.warning("presence not handed over: %s", e)
            return
        await self.delivery.command(Handover(self.node_id, until))

    def handed_over(self, handover: Handover) -> None:
        """Another process drained: bury it (announcing offline those who did not come
        back here or elsewhere) once its handover ends, not a heartbeat later."""
        self.presence.expires(handover.node, handover.until)
        delay = max(0.0, handover.until / 1000 - time.time()) + BURY_MARGIN
        asyncio.get_running_loop().call_later(delay, self._spawn_beat)

    def _spawn_beat(self) -> None:
        if self._heartbeat is not None and not self._heartbeat.done():
            self._spawn(self._beat())

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _batched(self, items: int) -> None:
        self.delivery.metrics.presence_batches.inc()
        self.delivery.metrics.presence_batched.inc(items)

    # Joins and departures ---------------------------------------------------------

    def enter(self, room: str, conn: Member) -> asyncio.Future[tuple[list[User], bool]]:
        """Mark the user present; resolves to (the members, online elsewhere); `joined`
        lists the members with their state (`states.present`)."""
        idle = self.idle_here(conn.user.id)
        entered = self.presence.enter(room, conn.user, idle)
        if not idle and self.states.of(conn.user.id).away:
            # Back after being away (idle, or gone): the rooms learn it.
            self._spawn(self._idle_changed(conn.user, False))
        return entered

    def online(self, room: str, conn: Member) -> None:
        self._frames.change(room, conn.user, self._state(conn.user, "online"), conn.conn_id)

    async def leave(self, room: str, conn: Member) -> None:
        """The user's last connection here left the room: offline unless elsewhere."""
        if self.handing_over:
            return
        answered: asyncio.Future[bool | PresenceError] = (
            asyncio.get_running_loop().create_future())

        def answer(elsewhere: bool | PresenceError) -> None:
            if not answered.done():  # the leave may have been cancelled meanwhile
                answered.set_result(elsewhere)

        self._send_departure(room, conn.user, answer)
        self._left(room, conn.user, await answered)

    def withdraw(self, room: str, conn: Member) -> None:
        """Remove the entry of a join that failed; the room was never told it was online."""
        self._send_departure(room, conn.user, lambda elsewhere: None)

    def depart(self, room: str, conn: Member) -> None:
        """As `leave`, for a closed socket, once its grace ends (`server.presence_grace`;
        `back` calls it off). Nothing waits: a disconnect storm's departures wake no Task
        each, and share the batch's replies."""
        if self._graces.grace <= 0:
            self._depart_now(room, conn.user)
        elif not self.handing_over:
            self._graces.hold(room, conn.user)

    def back(self, room: str, uid: str) -> bool:
        """The user joins the room here again: whether a departure of theirs from it was
        still in its grace (it is called off; the room heard nothing)."""
        if not self._graces.call_off(room, uid):
            return False
        self.delivery.metrics.presence_returns.inc()
        return True

    def _depart_now(self, room: str, user: User) -> None:
        if not self.handing_over:
            self._send_departure(room, user, lambda elsewhere: self._left(room, user, elsewhere))

    def _send_departure(self, room: str, user: User,
                        then: Callable[[bool | PresenceError], None]) -> None:
        self.presence.depart(room, user, then, gone_from_node=self._gone(user),
                             empty_here=room not in self.rooms)  # joiners count

    def _gone(self, user: User) -> bool:
        """Whether the user is in no room here any more (through any connection)."""
        return not any(self.rooms.rooms_of(c) for c in self.rooms.connections_of(user.id))

    def _left(self, room: str, user: User, elsewhere: bool | PresenceError) -> None:
        if isinstance(elsewhere, PresenceError):
            log.warning("presence leave failed: %s", elsewhere)
        elif not elsewhere and not self.rooms.has_user(room, user.id):
            # (Back here since: their join's entry stands, and nothing changed.)
            self._frames.change(room, user, self._state(user, "offline"), b"")

    def _state(self, user: User, status: str) -> State:
        shown = self.states.of(user.id)
        return status, (shown if status == "online" else Shown(False, shown.text, shown.until))

    # Activity ---------------------------------------------------------------------

    def idle_here(self, uid: str) -> bool:
        conns = self.rooms.connections_of(uid)
        return bool(conns) and all(c in self._idle for c in conns)

    async def activity(self, conn: Member, idle: bool) -> None:
        """A connection says its user is idle at it, or back."""
        if (conn in self._idle) == idle:
            return
        before = self.idle_here(conn.user.id)
        if idle:
            self._idle.add(conn)
        else:
            self._idle.discard(conn)
        if self.idle_here(conn.user.id) != before:
            await self._idle_changed(conn.user, not before)

    def disconnecting(self, conn: Member) -> bool:
        """Before a connection goes: whether its user is idle here now."""
        return self.idle_here(conn.user.id)

    def disconnected(self, conn: Member, was_idle: bool, left_rooms: bool) -> None:
        """After it went: its other sockets here may all be idle now. The departures
        from rooms say the user is gone from here; without rooms, this says it."""
        self._idle.discard(conn)
        if self.handing_over:
            return
        uid = conn.user.id
        if not was_idle and self.idle_here(uid):
            self._spawn(self._idle_changed(conn.user, True))
        elif not left_rooms and not self.rooms.connections_of(uid):
            self._spawn(self._forget(uid))

    async def _forget(self, uid: str) -> None:
        try:
            await self.presence.forget(uid)
        except PresenceError as e:
            log.warning("presence of %s here not removed: %s", uid, e)

    async def _idle_changed(self, user: User, idle: bool) -> None:
        try:
            seen = await self.presence.set_idle(user, idle)
        except PresenceError as e:
            log.warning("presence activity not recorded: %s", e)
            return
        old = self.states.of(user.id)
        if old.away != seen.away:
            try:
                await self.presence.mark_away(user.id, seen.away)
            except PresenceError as e:
                log.warning("away list not updated: %s", e)
            await self._changed(user, Shown(seen.away, old.text, old.until), seen)

    # Status text -----------------------------------------------------------------

    async def set_status(self, user: User, text: str | None, until: int | None) -> Shown:
        """Set (or with None, clear) the user's status text; raises StoreError."""
        if text is None:
            await self.store.clear_status(user.id)
        else:
            await self.store.set_status(user.id, text, until)
        old = self.states.of(user.id)
        shown = Shown(old.away, text, until if text is not None else None)
        await self._changed(user, shown)
        return shown

    async def _expire_statuses(self) -> None:
        """Clear the status texts that expired; of the processes that find one, the one
        whose MongoDB update wins announces it."""
        for uid, until in self.states.expired():
            old = self.states.of(uid)
            self.states.put(uid, old)  # without the text: not tried again here
            try:
                won = await self.store.clear_status(uid, until)
                user = await self.store.user_by_id(uid)
            except StoreError as e:
                log.warning("expired status of %s not cleared: %s", uid, e)
                continue
            if won and user is not None:
                await self._changed(User.from_doc(user), old)

    # Changes of a user's state -------------------------------------------------------

    async def _changed(self, user: User, shown: Shown, seen: UserPresence | None = None
                       ) -> None:
        """Tell every process the user's new state and every room where they are
        online (once per room: the rooms of every node, from Redis)."""
        await self.delivery.command(MemberChange(self.node_id, "", user.id, CHANGE,
                                                 shown.fields()))
        if seen is None:
            try:
                seen = await self.presence.of_user(user.id)
            except PresenceError as e:
                log.warning("presence of %s not read: %s", user.id, e)
                return
        for room in seen.rooms:
            # Forced: another process may have announced another state since this one
            # last spoke of the user.
            self._frames.change(room, user, ("online", shown), b"", force=True)

    def apply(self, change: MemberChange) -> None:
        """A user's state changed (on any process, this one included)."""
        self.states.put(change.user, UserStates.decode(change.payload))

    # Frames -------------------------------------------------------------------------

    def _queue(self, room: str, user: User, state: State, exclude: bytes) -> None:
        self._batches.add(room, presence_frame(room, user, state), exclude)

    async def _send(self, room: str, frames: list[Apart]) -> None:
        for _ in frames:
            self.delivery.metrics.presence_sent()
        self.delivery.deliver_apart(room, frames)
        # The connections they are kept from are all here: one envelope for the others.
        await self.delivery.publish(room, [(0, frame) for frame, _ in frames])

    # Heartbeat ----------------------------------------------------------------------

    def _present(self) -> list[tuple[str, User, bool]]:
        out: dict[tuple[str, str], tuple[str, User, bool]] = {}
        for room in self.rooms.rooms():
            for m in self.rooms.members(room):
                out.setdefault((room, m.user.id), (room, m.user, self.idle_here(m.user.id)))
        return list(out.values())

    async def _loop(self) -> None:
        """Keep this process live, bury dead ones, expire status texts."""
        interval = self.ttl / 3
        while True:
            await asyncio.sleep(interval)
            self._frames.forget_old()
            await self._beat()
            try:
                await self._expire_statuses()
            except Exception:
                log.exception("expiring status texts crashed; continuing")

    async def _beat(self) -> None:
        """One heartbeat: offline for the users of the processes it finds dead."""
        try:
            for room, user in await self.presence.heartbeat(self._present):
                self._frames.change(room, user, self._state(user, "offline"), b"")
        except PresenceError as e:
            log.warning("presence heartbeat failed: %s", e)
        except Exception:
            log.exception("presence heartbeat crashed; continuing")
