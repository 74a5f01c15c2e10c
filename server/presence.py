"""Who is online in which room, across processes, through Redis with expiry.

Each room has a sorted set whose members are "node|user_id|bot|name" scored by the
time (ms) the entry expires. Every process refreshes the entries of its local users
on a heartbeat, so a crashed process's users expire by themselves; whichever process
sweeps an expired entry first announces the user offline.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from server import tasks
from server.model import User


class PresenceError(Exception):
    """Redis could not be reached for a presence update."""


def _now_ms() -> int:
    return int(time.time() * 1000)


def _entry(node: str, user: User) -> str:
    # Names match ^[A-Za-z0-9_.-]+$ and ids are hex, so "|" cannot occur inside them.
    return f"{node}|{user.id}|{int(user.bot)}|{user.name}"


def _parse(entry: Any) -> tuple[str, User]:
    """Split a sorted-set member (bytes from Redis) into (node, user)."""
    text = entry.decode() if isinstance(entry, bytes) else str(entry)
    node, uid, bot, name = text.split("|", 3)
    return node, User(uid, name, bot == "1")


class Presence:
    """Presence entries of this node's users in Redis."""

    def __init__(self, redis: Redis, prefix: str, node_id: str, ttl: float = 30.0) -> None:
        self.redis = redis
        self.prefix = f"{prefix}presence:"
        self.node_id = node_id
        self.ttl_ms = int(ttl * 1000)

    def _key(self, room: str) -> str:
        return self.prefix + room

    async def enter(self, room: str, user: User) -> tuple[list[User], bool]:
        """Mark the user present here; returns (members now, user was online elsewhere)."""
        key = self._key(room)
        now = _now_ms()
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.zremrangebyscore(key, "-inf", now)
                pipe.zadd(key, {_entry(self.node_id, user): now + self.ttl_ms})
                pipe.zrange(key, 0, -1)
                pipe.pexpire(key, self.ttl_ms * 2)
                _, _, entries, _ = await pipe.execute()
        except (RedisError, OSError) as e:
            raise PresenceError(str(e)) from e
        members: dict[str, User] = {}
        elsewhere = False
        for raw in entries:
            node, member = _parse(raw)
            members.setdefault(member.id, member)
            if member.id == user.id and node != self.node_id:
                elsewhere = True
        return list(members.values()), elsewhere

    async def leave(self, room: str, user: User) -> bool:
        """Remove this node's entry; returns whether the user is still online elsewhere."""
        key = self._key(room)
        now = _now_ms()
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.zrem(key, _entry(self.node_id, user))
                pipe.zrangebyscore(key, now, "+inf")
                _, entries = await pipe.execute()
        except (RedisError, OSError) as e:
            raise PresenceError(str(e)) from e
        return any(_parse(raw)[1].id == user.id for raw in entries)

    async def members(self, room: str) -> list[User]:
        try:
            entries = await self.redis.zrangebyscore(self._key(room), _now_ms(), "+inf")
        except (RedisError, OSError) as e:
            raise PresenceError(str(e)) from e
        members: dict[str, User] = {}
        for raw in entries:
            member = _parse(raw)[1]
            members.setdefault(member.id, member)
        return list(members.values())

    async def refresh(self, present: Iterable[tuple[str, User]]) -> None:
        """Push the expiry of this node's entries forward (the heartbeat)."""
        expires = _now_ms() + self.ttl_ms
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                rooms: set[str] = set()
                for room, user in present:
                    pipe.zadd(self._key(room), {_entry(self.node_id, user): expires})
                    rooms.add(room)
                for room in rooms:
                    pipe.pexpire(self._key(room), self.ttl_ms * 2)
                await pipe.execute()
        except (RedisError, OSError) as e:
            raise PresenceError(str(e)) from e

    async def sweep(self, rooms: Iterable[str]) -> list[tuple[str, User]]:
        """Remove expired entries; returns (room, user) pairs that have gone offline."""
        gone: list[tuple[str, User]] = []
        now = _now_ms()
        try:
            for room in rooms:
                key = self._key(room)
                expired: list[Any] = list(await self.redis.zrangebyscore(key, "-inf", now))
                if not expired:
                    continue
                live = {_parse(raw)[1].id
                        for raw in await self.redis.zrangebyscore(key, now, "+inf")}
                for raw in expired:
                    # Only the process whose ZREM removes the entry announces it.
                    if await self.redis.zrem(key, raw):
                        user = _parse(raw)[1]
                        if user.id not in live:
                            gone.append((room, user))
                            live.add(user.id)
        except (RedisError, OSError) as e:
            raise PresenceError(str(e)) from e
        return gone


Announce = Callable[[str, User, str, bytes], Awaitable[None]]  # room, user, status, exclude


class Coalescer:
    """At most one presence frame per (room, user) every `hold` seconds from this process.

    The first change goes out at once. Changes within the hold wait for its end, and
    only the last one goes out, if it differs from what was announced: a user who
    joins and leaves in a loop costs the room one frame per hold, not two per cycle.
    """

    def __init__(self, announce: Announce, hold: float = 2.0) -> None:
        self._announce = announce
        self.hold = hold
        self._last: dict[tuple[str, str], tuple[str, float]] = {}  # -> (status, when)
        self._waiting: dict[tuple[str, str], tuple[User, str, bytes]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def change(self, room: str, user: User, status: str, exclude: bytes) -> None:
        key = (room, user.id)
        now = time.monotonic()
        last = self._last.get(key)
        if last is None or (now - last[1] >= self.hold and key not in self._waiting):
            if last is not None and last[0] == status:
                return
            self._last[key] = (status, now)
            await self._announce(room, user, status, exclude)
            return
        if key not in self._waiting:
            task = asyncio.ensure_future(self._flush(key, last[1] + self.hold - now))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        self._waiting[key] = (user, status, exclude)

    async def _flush(self, key: tuple[str, str], delay: float) -> None:
        await asyncio.sleep(delay)
        await self._send_waiting(key)

    async def _send_waiting(self, key: tuple[str, str]) -> None:
        user, status, exclude = self._waiting.pop(key)
        if self._last[key][0] != status:
            self._last[key] = (status, time.monotonic())
            await self._announce(key[0], user, status, exclude)

    def forget_old(self) -> None:
        """Drop what was announced more than a hold ago and has nothing waiting."""
        cutoff = time.monotonic() - self.hold
        for key in [k for k, (_, when) in self._last.items()
                    if when < cutoff and k not in self._waiting]:
            del self._last[key]

    async def close(self) -> None:
        """Send what is waiting now: nobody would announce it after this process."""
        for task in list(self._tasks):
            await tasks.stop(task)
        for key in list(self._waiting):
            await self._send_waiting(key)
