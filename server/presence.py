"""Who is online in which room, across processes, through Redis; priced per process,
not per socket.

Keys (every multi-key step touches one hash slot; the global `nodes` key is its own):
- `presence:nodes`: a sorted set of live processes (node ids) scored by the time (ms)
  each one's liveness expires. One ZADD per process per heartbeat keeps it alive.
- `presence:{<room>}`: a hash, field `<node>|<user id>` -> `<bot>|<name>`: the user is in
  the room through that node. An entry is valid while its node is live: nothing per
  socket or per room is refreshed.
- `presence:node:{<node>}`: a set of the rooms where that node has entries, so whoever
  finds the node dead can remove them.
- `presence:user:{<user id>}`: a hash, field `n|<node>` -> "1" (all the user's sockets
  on that node are idle) or "0", and `r|<node>|<room>` for each room the user is in
  through that node: the user is away when every live node says idle, and a change of
  theirs (away, status text) is announced in the rooms listed there.
- `presence:away`: a hash of the users who are away now (for a process that starts).

A process that finds a node expired and wins its ZREM cleans that node's entries and
returns the users who went offline with it (those nobody else holds).

Joins and leaves of one loop turn share one pipeline: per room one HSET and one HGETALL
(the members, for the joiners) and one HDEL; per user one HSET or HDEL of their key and,
when they left rooms, one HKEYS of it (are they in those rooms through a live node
elsewhere?) instead of reading every such room's entries back. Ten thousand sockets
closing at once cost one command per room and two per user, not per socket.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from server import tasks
from server.model import User

LEAVE_WINDOW = 0.005  # seconds departures wait to share a batch


class PresenceError(Exception):
    """Redis could not be reached for a presence update."""


def _ignore(n: int) -> None:
    pass


def _nothing() -> None:
    pass


def _now_ms() -> int:
    return int(time.time() * 1000)


def _text(raw: Any) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


@functools.lru_cache(maxsize=1 << 16)
def _user(raw_field: Any, raw_value: Any) -> tuple[str, User]:
    """(node, user) of a room entry, as Redis returned it. Names match
    ^[A-Za-z0-9_.-]+$ and ids and node ids are hex, so "|" occurs in none of them.
    Remembered: every batch of joins reads the whole room back, mostly the same entries."""
    node, uid = _text(raw_field).split("|", 1)
    bot, name = _text(raw_value).split("|", 1)
    return node, User(uid, name, bot == "1")


@dataclass(slots=True)
class _Enter:
    user: User
    idle: bool
    done: asyncio.Future[tuple[list[User], bool]]


@dataclass(slots=True)
class _Leave:
    user: User
    gone_from_node: bool  # the user has no socket in any room here any more
    done: asyncio.Future[bool]


@dataclass(slots=True)
class _RoomBatch:
    enters: list[_Enter] = field(default_factory=list)
    leaves: list[_Leave] = field(default_factory=list)
    empty_here: bool = False  # the room's last local member left

    def items(self) -> list[_Enter | _Leave]:
        return [*self.enters, *self.leaves]


@dataclass(frozen=True, slots=True)
class UserPresence:
    """What the user key says: away (all live nodes idle) and their rooms."""

    away: bool
    rooms: list[str]


class Presence:
    """This node's presence entries in Redis, and the liveness of every node."""

    def __init__(self, redis: Redis, prefix: str, node_id: str, ttl: float = 30.0) -> None:
        self.redis = redis
        self.prefix = f"{prefix}presence:"
        self.node_id = node_id
        self.ttl_ms = int(ttl * 1000)
        self.nodes_key = self.prefix + "nodes"
        self.away_key = self.prefix + "away"
        # Liveness of the nodes seen at the last heartbeat: node -> expiry (ms). A node
        # not seen yet counts as live (it started since): a dead node is removed with
        # its entries by whoever finds it dead.
        self._expiry: dict[str, float] = {}
        self._batch: dict[str, _RoomBatch] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._due: float | None = None
        self._flushing: set[asyncio.Task[None]] = set()
        # Counted for /metrics (set by the owner): Redis commands sent, join/leave
        # batches (and what each carried), dead nodes buried here.
        self.on_commands: Callable[[int], None] = _ignore
        self.on_batch: Callable[[int], None] = _ignore
        self.on_buried: Callable[[], None] = _nothing

    # Keys --------------------------------------------------------------------

    def _room_key(self, room: str) -> str:
        return f"{self.prefix}{{{room}}}"

    def _node_key(self, node: str) -> str:
        return f"{self.prefix}node:{{{node}}}"

    def _user_key(self, uid: str) -> str:
        return f"{self.prefix}user:{{{uid}}}"

    def is_live(self, node: str) -> bool:
        if node == self.node_id:
            return True
        expiry = self._expiry.get(node)
        return expiry is None or expiry > _now_ms()

    # Lifecycle ---------------------------------------------------------------

    async def start(self) -> None:
        """Say this node is live before its first entry is written."""
        await self._run(lambda p: p.zadd(self.nodes_key, {self.node_id: _now_ms() + self.ttl_ms}))

    async def expire_at(self, until_ms: int) -> None:
        """Set this node's liveness to end at `until_ms` (a drain hands its entries
        over: they stand until then). XX: a node others buried already stays buried."""
        await self._run(lambda p: p.zadd(self.nodes_key, {self.node_id: until_ms}, xx=True))

    def expires(self, node: str, until_ms: float) -> None:
        """Another node said when its liveness ends (before a heartbeat would read it)."""
        if node != self.node_id:
            self._expiry[node] = until_ms

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
        self._room(room).enters.append(_Enter(user, idle, done))
        self._schedule(0.0)
        return done

    def leave(self, room: str, user: User, *, gone_from_node: bool = False,
              empty_here: bool = False) -> asyncio.Future[bool]:
        """Remove this node's entry; resolves to whether the user is still online
        through another node."""
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        batch = self._room(room)
        batch.leaves.append(_Leave(user, gone_from_node, done))
        batch.empty_here = batch.empty_here or empty_here
        self._schedule(LEAVE_WINDOW)
        return done

    def _room(self, room: str) -> _RoomBatch:
        batch = self._batch.get(room)
        if batch is None:
            batch = self._batch[room] = _RoomBatch()
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
        batch, self._batch = self._batch, {}
        self.on_batch(sum(len(b.enters) + len(b.leaves) for b in batch.values()))
        node = self.node_id
        mine = self._node_key(node)
        # Where each room's HGETALL is among the replies: only rooms someone enters
        # read their entries back; a leave needs only the leaver's own key (below).
        reads: list[int | None] = []
        leavers: set[str] = set()  # of rooms nobody enters: their key says the rest
        user_reads: dict[str, int] = {}  # user id -> where the HKEYS of their key is
        # Per user: field of their key -> value, or None to delete; the last word wins.
        users: dict[str, dict[str, str | None]] = {}

        def build(pipe: Any) -> None:
            for room, b in batch.items():
                key = self._room_key(room)
                # A user who joined and left in the same turn: the last of the two counts.
                last: dict[str, _Enter | _Leave] = {}
                for item in b.items():
                    last[item.user.id] = item
                here = {uid: i for uid, i in last.items() if isinstance(i, _Enter)}
                if here:
                    pipe.hset(key, mapping={f"{node}|{e.user.id}":
                                            f"{int(e.user.bot)}|{e.user.name}"
                                            for e in here.values()})
                    pipe.sadd(mine, room)
                gone = [uid for uid, i in last.items() if isinstance(i, _Leave)]
                if gone:
                    pipe.hdel(key, *(f"{node}|{uid}" for uid in gone))
                for item in b.items():
                    fields = users.setdefault(item.user.id, {})
                    if isinstance(item, _Enter):
                        fields[f"r|{node}|{room}"] = ""
                        fields[f"n|{node}"] = "1" if item.idle else "0"
                    else:
                        fields[f"r|{node}|{room}"] = None
                        if item.gone_from_node:
                            fields[f"n|{node}"] = None
                if b.empty_here and not here:
                    pipe.srem(mine, room)
                if b.enters:
                    reads.append(len(pipe))
                    pipe.hgetall(key)
                else:
                    reads.append(None)
                    leavers.update(x.user.id for x in b.leaves)
            # One command or two per user, whatever the number of their rooms in the
            # batch (a user leaving 20 rooms at once: one HDEL, not 20).
            for uid, fields in users.items():
                user_key = self._user_key(uid)
                kept = {f: v for f, v in fields.items() if v is not None}
                if kept:
                    pipe.hset(user_key, mapping=kept)
                if len(kept) < len(fields):
                    pipe.hdel(user_key, *(f for f, v in fields.items() if v is None))
                if uid in leavers:  # after this node's own changes: what others hold
                    user_reads[uid] = len(pipe)
                    pipe.hkeys(user_key)

        try:
            results = await self._run(build)
        except PresenceError as error:
            for b in batch.values():
                for waiter in b.items():
                    if not waiter.done.done():
                        waiter.done.set_exception(PresenceError(str(error)))
            return
        for (room, b), at in zip(batch.items(), reads, strict=True):
            if at is None:  # leaves only: online elsewhere = another live node's room entry
                for x in b.leaves:
                    if not x.done.done():
                        x.done.set_result(self._elsewhere(
                            results[user_reads[x.user.id]], room))
                continue
            members: dict[str, User] = {}
            elsewhere: set[str] = set()
            for raw_field, raw_value in results[at].items():
                entry_node, member = _user(raw_field, raw_value)
                if not self.is_live(entry_node):
                    continue
                members.setdefault(member.id, member)
                if entry_node != node:
                    elsewhere.add(member.id)
            for e in b.enters:
                if not e.done.done():
                    e.done.set_result((list(members.values()), e.user.id in elsewhere))
            for x in b.leaves:
                if not x.done.done():
                    x.done.set_result(x.user.id in elsewhere)

    def _elsewhere(self, user_fields: Iterable[Any], room: str) -> bool:
        """Whether a user's key (its fields) says they are in `room` through another
        live node: a field "r|<node>|<room>" (node ids are hex: no "|")."""
        for raw in user_fields:
            parts = _text(raw).split("|", 2)
            if (len(parts) == 3 and parts[0] == "r" and parts[2] == room
                    and parts[1] != self.node_id and self.is_live(parts[1])):
                return True
        return False

    async def members(self, room: str) -> list[User]:
        """The users in the room now, through any live node, each once."""
        (entries,) = await self._run(lambda p: p.hgetall(self._room_key(room)))
        members: dict[str, User] = {}
        for raw_field, raw_value in entries.items():
            node, member = _user(raw_field, raw_value)
            if self.is_live(node):
                members.setdefault(member.id, member)
        return list(members.values())

    # Away ---------------------------------------------------------------------------

    async def set_idle(self, user: User, idle: bool) -> UserPresence:
        """Record whether all the user's sockets here are idle; returns what the user
        key says now (away everywhere? their rooms through live nodes)."""
        key = self._user_key(user.id)

        def build(pipe: Any) -> None:
            pipe.hset(key, f"n|{self.node_id}", "1" if idle else "0")
            pipe.hgetall(key)

        # One key, one slot: a transaction, so that of two nodes changing at once, the
        # later one reads both changes.
        _, fields = await self._run(build, transaction=True)
        return self._user_presence(fields)

    async def forget(self, uid: str) -> None:
        """The user has no socket here any more (and was in no room here)."""
        await self._run(lambda p: p.hdel(self._user_key(uid), f"n|{self.node_id}"))

    async def of_user(self, uid: str) -> UserPresence:
        (fields,) = await self._run(lambda p: p.hgetall(self._user_key(uid)))
        return self._user_presence(fields)

    def _user_presence(self, fields: dict[Any, Any]) -> UserPresence:
        idle: list[bool] = []
        rooms: set[str] = set()
        for raw_field, raw_value in fields.items():
            kind, _, rest = _text(raw_field).partition("|")
            node, _, room = rest.partition("|")
            if not self.is_live(node):
                continue
            if kind == "n":
                idle.append(_text(raw_value) == "1")
            elif kind == "r":
                rooms.add(room)
        return UserPresence(bool(idle) and all(idle), sorted(rooms))

    async def mark_away(self, uid: str, away: bool) -> None:
        """Keep the shared list of away users (read by processes that start)."""
        await self._run(lambda p: p.hset(self.away_key, uid, "1") if away
                        else p.hdel(self.away_key, uid))

    async def away_users(self) -> set[str]:
        (fields,) = await self._run(lambda p: p.hkeys(self.away_key))
        return {_text(f) for f in fields}

    # Heartbeat ------------------------------------------------------------------------

    async def heartbeat(self, present: Callable[[], Iterable[tuple[str, User, bool]]]
                        ) -> list[tuple[str, User]]:
        """Keep this node live (one ZADD) and learn the others' liveness; when this node
        was missing (Redis lost its data, or others took it for dead), write its entries
        back from `present` ((room, user, idle) of its local users). Cleans the nodes
        found dead; returns the (room, user) pairs that went offline with them."""
        now = _now_ms()

        def build(pipe: Any) -> None:
            pipe.zadd(self.nodes_key, {self.node_id: now + self.ttl_ms})
            pipe.zrange(self.nodes_key, 0, -1, withscores=True)

        added, nodes = await self._run(build)
        self._expiry = {_text(n): score for n, score in nodes}
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
                pipe.hset(self._room_key(room), f"{node}|{user.id}",
                          f"{int(user.bot)}|{user.name}")
                pipe.sadd(self._node_key(node), room)
                pipe.hset(self._user_key(user.id), mapping={
                    f"r|{node}|{room}": "", f"n|{node}": "1" if idle else "0"})

        if present:
            await self._run(build)

    async def _bury(self, dead: str) -> list[tuple[str, User]]:
        """Remove a dead node's entries if this process wins its ZREM."""
        (won,) = await self._run(lambda p: p.zrem(self.nodes_key, dead))
        self._expiry.pop(dead, None)
        if not won:
            return []
        self.on_buried()
        (rooms,) = await self._run(lambda p: p.smembers(self._node_key(dead)))
        rooms = sorted(_text(r) for r in rooms)
        if not rooms:
            await self._run(lambda p: p.delete(self._node_key(dead)))
            return []
        contents = await self._run(
            lambda p: [p.hgetall(self._room_key(room)) for room in rooms])
        gone: list[tuple[str, User]] = []
        removals: list[tuple[str, list[str], list[str]]] = []
        for room, entries in zip(rooms, contents, strict=True):
            theirs: dict[str, User] = {}
            others: set[str] = set()
            for raw_field, raw_value in entries.items():
                node, member = _user(raw_field, raw_value)
                if node == dead:
                    theirs[member.id] = member
                elif self.is_live(node):
                    others.add(member.id)
            removals.append((room, [f"{dead}|{uid}" for uid in theirs], list(theirs)))
            gone += [(room, u) for uid, u in theirs.items() if uid not in others]

        def build(pipe: Any) -> None:
            for room, fields, uids in removals:
                if fields:
                    pipe.hdel(self._room_key(room), *fields)
                for uid in uids:
                    pipe.hdel(self._user_key(uid), f"n|{dead}", f"r|{dead}|{room}")
            pipe.delete(self._node_key(dead))

        await self._run(build)
        return gone
