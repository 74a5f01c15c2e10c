"""Two tools that take repeated reads off MongoDB: a bounded, expiring cache whose
invalidations also void the fills that were under way, and a batch that turns the
lookups of one loop turn into one query.

A crowd of sockets opening or joining at once (after a deploy, a reconnect storm) asks
the same questions many times within milliseconds; each answer is cheap to keep for a
few seconds, as long as whatever revokes it (a control command) drops it everywhere.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Expiring(Generic[K, V]):
    """At most `size` entries, each kept `ttl` seconds, least recently used dropped
    first.

    A value read from MongoDB before an invalidation may arrive after it: `fill` takes
    the `version` read before the query began and stores nothing if that key was
    invalidated meanwhile, so a revoked answer is never cached again. Only that key's
    invalidations count: with memberships changing somewhere in the cluster every few
    milliseconds, a fill spoilt by any change at all would rarely be kept. The last
    `size` keys dropped keep the version of their drop; past that, and after a
    `drop_where` or `clear`, every fill that began earlier is refused.
    """

    def __init__(self, ttl: float, size: int, clock: Callable[[], float] = time.monotonic
                 ) -> None:
        self.ttl = ttl
        self.size = size
        self._clock = clock
        self._entries: OrderedDict[K, tuple[float, V]] = OrderedDict()
        self.version = 0  # bumped by every invalidation
        self._dropped: OrderedDict[K, int] = OrderedDict()  # key -> version of its drop
        self._floor = 0  # fills that began below it may have missed a drop: refused
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: K) -> V | None:
        entry = self._entries.get(key)
        if entry is None or entry[0] <= self._clock():
            if entry is not None:
                del self._entries[key]
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return entry[1]

    def fill(self, key: K, value: V, version: int, ttl: float | None = None) -> None:
        """Keep `value`, read by a query that began at `version`, unless stale."""
        if version < self._floor or self._dropped.get(key, -1) > version or self.ttl <= 0:
            return
        self._entries[key] = (self._clock() + (self.ttl if ttl is None else ttl), value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def drop(self, key: K) -> None:
        self.version += 1
        self._entries.pop(key, None)
        self._dropped[key] = self.version
        self._dropped.move_to_end(key)
        while len(self._dropped) > self.size:
            _, version = self._dropped.popitem(last=False)
            self._floor = max(self._floor, version)

    def drop_where(self, stale: Callable[[K, V], bool]) -> None:
        self.version += 1
        self._floor = self.version  # which fills under way it concerns is not known
        for key in [k for k, (_, v) in self._entries.items() if stale(k, v)]:
            del self._entries[key]

    def clear(self) -> None:
        self.version += 1
        self._floor = self.version
        self._entries.clear()
        self._dropped.clear()


class Batch(Generic[K, V]):
    """`load(key)` calls of one loop turn become one `fetch(keys)` (a `$in` query).

    `fetch` returns the values it found (a missing key loads None); its exception is
    every caller's. A load that arrives while a fetch is under way waits for the next
    one: it must see a read that began after it asked.
    """

    def __init__(self, fetch: Callable[[list[K]], Awaitable[dict[K, V]]]) -> None:
        self._fetch = fetch
        self._pending: dict[K, list[asyncio.Future[V | None]]] = {}
        self._running: set[asyncio.Task[None]] = set()
        self.batches = 0

    async def load(self, key: K) -> V | None:
        loop = asyncio.get_running_loop()
        if not self._pending:
            loop.call_soon(self._flush)
        future: asyncio.Future[V | None] = loop.create_future()
        self._pending.setdefault(key, []).append(future)
        return await future

    def _flush(self) -> None:
        pending, self._pending = self._pending, {}
        if pending:
            self.batches += 1
            task = asyncio.ensure_future(self._run(pending))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _run(self, pending: dict[K, list[asyncio.Future[V | None]]]) -> None:
        futures = [f for fs in pending.values() for f in fs]
        try:
            found = await self._fetch(list(pending))
        except asyncio.CancelledError:
            for future in futures:
                future.cancel()
            raise
        except Exception as e:  # the callers' to handle: each gets it
            for future in futures:
                if not future.done():
                    future.set_exception(e)
            return
        for key, waiting in pending.items():
            value = found.get(key)
            for future in waiting:
                if not future.done():  # done: its caller was cancelled
                    future.set_result(value)
