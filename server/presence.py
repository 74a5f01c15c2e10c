"""Who is online in which room, across processes, through Redis; priced per process,
not per socket.

The keys and what their entries say: `server/presence_keys.py`; what one loop turn's
joins and leaves send: `server/presence_batch.py`.

A process that finds a node expired and wins its ZREM cleans that node's entries and
returns the users who went offline with it (those nobody else holds).

Joins and leaves of one loop turn share one pipeline: ten thousand sockets closing at
once cost one command per room and two per user, not per socket.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from server import tasks
from server.model import User
from server.presence_batch import Enter, Leave, RoomBatch, Turn
from server.presence_keys import Keys, now_ms, read_room_entry, room_entry, text

LEAVE_WINDOW = 0.005  # seconds departures wait to share a batch


class PresenceError(Exception):
    """Redis could not be reached for a presence update."""


def _ignore(n: int) -> None:
    pass


def _nothing() -> None:
    pass


@dataclass(frozen=True, slots=True)
class UserPresence:
    """What the user key says: away (all live nodes idle) and their rooms."""

    away: bool
    rooms: list[str]


class Presence:
    """This node's presence entries in Redis, and the liveness of every node."""

    def __init__(self, redis: Redis, prefix: str, node_id: str, ttl: float = 30.0) -> None:
        self.redis = redis
        self.keys = Keys(prefix)
        self.node_id = node_id
        self.ttl_ms = int(ttl * 1000)
        # Liveness of the nodes seen at the last heartbeat: node -> expiry (ms). A node
        # not seen yet counts as live (it started since): a dead node is removed with
        # its entries by whoever finds it dead.
        self._expiry: dict[str, float] = {}
        self._batch: dict[str, RoomBatch] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._due: float | None = None
        self._flushing: set[asyncio.Task[None]] = set()
        # Counted for /metrics (set by the owner): Redis commands sent, join/leave
        # batches (and what each carried), dead nodes buried here.
        self.on_commands: Callable[[int], None] = _ignore
        self.on_batch: Callable[[int], None] = _ignore
        self.on_buried: Callable[[], None] = _nothing

    def is_live(self, node: str) -> bool:
        if node == self.node_id:
            return True
        expiry = self._expiry.get(node)
        return expiry is None or expiry > now_ms()

    # Lifecycle ---------------------------------------------------------------

    async def start(self) -> None:
        """Say this node is live before its first entry is written."""
        await self._run(lambda p: p.zadd(self.keys.nodes, {self.node_id: now_ms() + self.ttl_ms}))

    async def expire_at(self, until_ms: int) -> None:
        """Set this node's liveness to end at `until_ms` (a drain hands its entries
        over: they stand until then). XX: a node others buried already stays buried."""
        await self._run(lambda p: p.zadd(self.keys.nodes, {self.node_id: until_ms}, xx=True))

    def expires(self, node: str, until_ms: float) -> None:
        """Another node said when its liveness ends (before a heartbeat would read it)."""
        if node != self.node_id:
            self._expiry[node] = until_ms

    async def settle(self, timeout: float) -> None:
        """Send the batch that waits now and wait (up to `timeout`) for every batch on
        its way: their answers are given before this returns."""
        if self._timer is not None:
            self._timer.cancel()
            self._start_flush()
        if self._flushing:
            await asyncio.wait(list(self._flushing), timeout=timeout)

    async def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._start_flush()
        for task in list(self._flushing):
            await tasks.stop(task)

    async def _run(self, build: Callable[[Any], Any], transaction: bool = False) -> list[Any]:
        try:
            async with self.redis.pipeline(transaction=transaction) as pipe:
                build(pipe)
                self.on_commands(len(pipe))
                result: list[Any] = await pipe.execute()
                return result
        except (RedisError, OSError) as e:
            raise PresenceError(str(e)) from e

    # Joins and leaves, batched per loop turn ----------------------------------------

    def enter(self, room: str, user: User, idle: bool = False
              ) -> asyncio.Future[tuple[list[User], bool]]:
        """Mark the user present here; resolves to (members now, user was online through
        another node). Joins of the same loop turn share one round trip."""
        done: asyncio.Future[tuple[list[User], bool]] = (
            asyncio.get_running_loop().create_future())
        self._room(room).add(Enter(user, idle, done))
        self._schedule(0.0)
        return done

    def depart(self, room: str, user: User, then: Callable[[bool | PresenceError], None],
               *, gone_from_node: bool = False, empty_here: bool = False) -> None:
        """Remove this node's entry; `then` gets, when the batch's replies arrive,
        whether the user is still online through another node, or the PresenceError.
        A callback, not a Future: ten thousand sockets closing wake no Task each."""
        batch = self._room(room)
        batch.add(Leave(user, gone_from_node, then))
        batch.empty_here = batch.empty_here or empty_here
        self._schedule(LEAVE_WINDOW)

    def _room(self, room: str) -> RoomBatch:
        batch = self._batch.get(room)
        if batch is None:
            batch = self._batch[room] = RoomBatch()
        return batch

    def _schedule(self, delay: float) -> None:
        """Flush after `delay` (a join at the next loop turn; leaves a few ms later, so
        that the sockets of a mass disconnect share one batch)."""
        loop = asyncio.get_running_loop()
        due = loop.time() + delay
        if self._due is not None and self._due <= due:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._due = due
        self._timer = loop.call_later(delay, self._start_flush)

    def _start_flush(self) -> None:
        self._timer = self._due = None
        if not self._batch:
            return
        task = asyncio.ensure_future(self._flush())
        self._flushing.add(task)
        task.add_done_callback(self._flushing.discard)

    async def _flush(self) -> None:
        turn = Turn(self._batch, self.node_id, self.keys, self.is_live)
        self._batch = {}
        self.on_batch(len(turn))
        try:
            results = await self._run(turn.build)
        except PresenceError as error:
            message = str(error)
            turn.fail(lambda: PresenceError(message))
            return
        others = turn.others(results)
        if not others:
            turn.answer(results)
            return
        try:
            checks = await self._run(lambda pipe: turn.check(pipe, others))
        except PresenceError as error:
            failed = str(error)
            turn.answer(results, check_failed=lambda: PresenceError(failed))
            return
        turn.answer(results, checks)

    async def members(self, room: str) -> list[User]:
        """The users in the room now, through any live node, each once."""
        (entries,) = await self._run(lambda p: p.hgetall(self.keys.room(room)))
        members: dict[str, User] = {}
        for raw_field, raw_value in entries.items():
            node, member = read_room_entry(raw_field, raw_value)
            if self.is_live(node):
                members.setdefault(member.id, member)
        return list(members.values())

    # Away ---------------------------------------------------------------------------

    async def set_idle(self, user: User, idle: bool) -> UserPresence:
        """Record whether all the user's sockets here are idle; returns what the user
        key says now (away everywhere? their rooms through live nodes)."""
        key = self.keys.user(user.id)

        def build(pipe: Any) -> None:
            pipe.hset(key, f"n|{self.node_id}", "1" if idle else "0")
            pipe.hgetall(key)

        # One key, one slot: a transaction, so that of two nodes changing at once, the
        # later one reads both changes.
        _, fields = await self._run(build, transaction=True)
        return self._user_presence(fields)

    async def forget(self, uid: str) -> None:
        """The user has no socket here any more (and was in no room here)."""
        await self._run(lambda p: p.hdel(self.keys.user(uid), f"n|{self.node_id}"))

    async def of_user(self, uid: str) -> UserPresence:
        (fields,) = await self._run(lambda p: p.hgetall(self.keys.user(uid)))
        return self._user_presence(fields)

    def _user_presence(self, fields: dict[Any, Any]) -> UserPresence:
        idle: list[bool] = []
        rooms: set[str] = set()
        for raw_field, raw_value in fields.items():
            kind, _, rest = text(raw_field).partition("|")
            node, _, room = rest.partition("|")
            if not self.is_live(node):
                continue
            if kind == "n":
                idle.append(text(raw_value) == "1")
            elif kind == "r":
                rooms.add(room)
        return UserPresence(bool(idle) and all(idle), sorted(rooms))

    async def mark_away(self, uid: str, away: bool) -> None:
        """Keep the shared list of away users (read by processes that start)."""
        await self._run(lambda p: p.hset(self.keys.away, uid, "1") if away
                        else p.hdel(self.keys.away, uid))

    async def away_users(self) -> set[str]:
        (fields,) = await self._run(lambda p: p.hkeys(self.keys.away))
        return {text(f) for f in fields}

    # Heartbeat ------------------------------------------------------------------------

    async def heartbeat(self, present: Callable[[], Iterable[tuple[str, User, bool]]]
                        ) -> list[tuple[str, User]]:
        """Keep this node live (one ZADD) and learn the others' liveness; when this node
        was missing (Redis lost its data, or others took it for dead), write its entries
        back from `present` ((room, user, idle) of its local users). Cleans the nodes
        found dead; returns the (room, user) pairs that went offline with them."""
        now = now_ms()

        def build(pipe: Any) -> None:
            pipe.zadd(self.keys.nodes, {self.node_id: now + self.ttl_ms})
            pipe.zrange(self.keys.nodes, 0, -1, withscores=True)

        added, nodes = await self._run(build)
        self._expiry = {text(n): score for n, score in nodes}
        if added:
            await self._rewrite(list(present()))
        gone: list[tuple[str, User]] = []
        for node, expiry in list(self._expiry.items()):
            if expiry <= now and node != self.node_id:
                gone += await self._bury(node)
        return gone

    async def _rewrite(self, present: list[tuple[str, User, bool]]) -> None:
        node = self.node_id

        def build(pipe: Any) -> None:
            for room, user, idle in present:
                pipe.hset(self.keys.room(room), *room_entry(node, user))
                pipe.sadd(self.keys.node(node), room)
                pipe.hset(self.keys.user(user.id), mapping={
                    f"r|{node}|{room}": "", f"n|{node}": "1" if idle else "0"})

        if present:
            await self._run(build)

    async def _bury(self, dead: str) -> list[tuple[str, User]]:
        """Remove a dead node's entries if this process wins its ZREM."""
        (won,) = await self._run(lambda p: p.zrem(self.keys.nodes, dead))
        self._expiry.pop(dead, None)
        if not won:
            return []
        self.on_buried()
        (rooms,) = await self._run(lambda p: p.smembers(self.keys.node(dead)))
        rooms = sorted(text(r) for r in rooms)
        if not rooms:
            await self._run(lambda p: p.delete(self.keys.node(dead)))
            return []
        contents = await self._run(
            lambda p: [p.hgetall(self.keys.room(room)) for room in rooms])
        gone: list[tuple[str, User]] = []
        removals: list[tuple[str, list[str], list[str]]] = []
        for room, entries in zip(rooms, contents, strict=True):
            theirs: dict[str, User] = {}
            others: set[str] = set()
            for raw_field, raw_value in entries.items():
                node, member = read_room_entry(raw_field, raw_value)
                if node == dead:
                    theirs[member.id] = member
                elif self.is_live(node):
                    others.add(member.id)
            removals.append((room, [f"{dead}|{uid}" for uid in theirs], list(theirs)))
            gone += [(room, u) for uid, u in theirs.items() if uid not in others]

        def build(pipe: Any) -> None:
            for room, fields, uids in removals:
                if fields:
                    pipe.hdel(self.keys.room(room), *fields)
                for uid in uids:
                    pipe.hdel(self.keys.user(uid), f"n|{dead}", f"r|{dead}|{room}")
            pipe.delete(self.keys.node(dead))

        await self._run(build)
        return gone
