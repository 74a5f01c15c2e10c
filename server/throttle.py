"""Login, registration and password throttles: GCRA buckets, each attempt counted before
its password is checked, atomically, in this process's memory and in Redis; the memory
alone decides while Redis does not answer.

`RateLimits` (limits.py) decides which buckets an attempt concerns and how big they are;
this module counts attempts in them and settles them once the password was checked.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import math
import time
from dataclasses import dataclass

from redis.exceptions import RedisError

from server.logs import OncePer
from server.redisconn import RedisClient

log = logging.getLogger(__name__)

# Throttles (logins, registrations, password checks) are GCRA buckets: a bucket admits
# `limit` attempts at once, then one per window/limit; it stores one number, the
# theoretical arrival time (TAT, in ms of Redis time). One script counts an attempt in
# every bucket it concerns, or in none when any of them is full: counting comes first
# and atomically, so parallel attempts cannot all pass a check made before any of them
# was counted. KEYS[1] marks an (address, account) pair that logged in lately; buckets
# flagged in ARGV skip such callers. ARGV: per bucket, step ms, horizon ms, flag.
# Returns {ms to wait (0: counted), 1 if the caller is known}.
_COUNT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local known = redis.call('EXISTS', KEYS[1])
local wait = 0
local tats = {}
for i = 2, #KEYS do
  local j = (i - 2) * 3
  if not (known == 1 and ARGV[j + 3] == '1') then
    local tat = math.max(tonumber(redis.call('GET', KEYS[i])) or 0, now) + tonumber(ARGV[j + 1])
    wait = math.max(wait, tat - now - tonumber(ARGV[j + 2]))
    tats[i] = tat
  end
end
if wait == 0 then
  for i, tat in pairs(tats) do
    redis.call('SET', KEYS[i], tat, 'PX', tat - now)
  end
end
return {wait, known}
"""

# Settles an attempt: ARGV[1] > 0 marks KEYS[1] known for that many ms; then, per bucket
# KEYS[2..], ARGV[i] > 0 gives back that many ms (one attempt), 0 empties the bucket and
# -1 leaves it.
_SETTLE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if tonumber(ARGV[1]) > 0 then
  redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
end
for i = 2, #KEYS do
  local step = tonumber(ARGV[i])
  if step == 0 then
    redis.call('DEL', KEYS[i])
  elseif step > 0 then
    local tat = tonumber(redis.call('GET', KEYS[i]))
    if tat then
      tat = tat - step
      if tat > now then
        redis.call('SET', KEYS[i], tat, 'PX', tat - now)
      else
        redis.call('DEL', KEYS[i])
      end
    end
  end
end
return 0
"""

# What a bucket gives back when its attempt succeeds (a failure gives back nothing; an
# attempt that checked no password gives back its step everywhere).
CLEAR, REFUND, KEEP = "clear", "refund", "keep"


def address_key(ip: str) -> str:
    """The throttles' name for a client address: IPv4 whole, IPv6 by its /64.

    One IPv6 subscriber usually holds a whole /64 and can pick any address in it.
    """
    try:
        addr = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return ip[:64]
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return str(addr.ipv4_mapped)
        return str(ipaddress.IPv6Network((addr, 64), strict=False))
    return str(addr)


def account_key(name: object) -> str:
    """Usernames are unique case-insensitively; anything else is one junk account."""
    return name.lower()[:64] if isinstance(name, str) else ""


def _now_ms() -> int:
    return int(time.monotonic() * 1000)


@dataclass(frozen=True)
class Bucket:
    """One throttle bucket: `limit` attempts at once, then one per window/limit."""

    key: str
    limit: int
    window_s: float
    on_success: str  # CLEAR, REFUND or KEEP
    spare_known: bool = False  # callers from an address the account logged in from skip it

    @property
    def step(self) -> int:
        return max(1, math.ceil(self.window_s * 1000 / self.limit))

    @property
    def horizon(self) -> int:
        return self.step * self.limit


@dataclass
class Attempt:
    """One counted login, registration or password check, settled once its outcome is
    known: a failure stays counted, a success or an attempt that checked no password
    (the server was busy, the store failed) gives back what it should not cost."""

    throttles: Throttles
    buckets: tuple[Bucket, ...]
    known: str  # the (address, account) marker key
    wait_ms: int  # > 0: refused, counted nowhere; retry after this long
    in_redis: bool = False  # counted in Redis
    here: tuple[Bucket, ...] = ()  # the buckets counted in this process's memory
    known_caller: bool = False  # from an address this account logged in from lately
    settled: bool = False

    async def succeeded(self) -> None:
        """The password was right: the (account, address) bucket is emptied, the address
        becomes one this account logs in from, the rest is given back."""
        await self._settle(True)

    async def cancelled(self) -> None:
        """No password was checked: give the attempt back everywhere."""
        await self._settle(False)

    def step_for(self, b: Bucket, success: bool) -> int:
        """What settling gives back to `b`: ms (one attempt), 0 to empty it, -1 nothing."""
        if self.known_caller and b.spare_known:
            return -1  # it was not counted there
        if not success or b.on_success == REFUND:
            return b.step
        return 0 if b.on_success == CLEAR else -1

    async def _settle(self, success: bool) -> None:
        if not self.settled and not self.wait_ms:
            self.settled = True
            await self.throttles.settle(self, success)


class LocalCounts:
    """The throttles' buckets as this process counts them, with the rules of `_COUNT`
    and `_SETTLE` in monotonic ms.

    Every attempt is counted here as well as in Redis, so one process never admits
    more than the limits, even when Redis answers late, and a flood is refused here
    before it reaches Redis. While Redis does not answer these counts decide alone:
    the throttles neither fail open (an outage, or a Redis made slow on purpose, would
    switch them off) nor closed (nobody could log in); guessing stays bounded by the
    limits times the number of processes. Memory is bounded: with `max_keys` live
    buckets, new ones go uncounted here while Redis answers, and are refused while it
    does not, rather than old ones forgotten.
    """

    def __init__(self, max_keys: int = 50_000) -> None:
        self.max_keys = max_keys
        self.tats: dict[str, int] = {}
        self.known: dict[str, int] = {}  # marker -> expiry, oldest first
        self._swept = 0

    def count(self, buckets: tuple[Bucket, ...], now: int) -> int:
        """Count in every bucket or in none: 0 if counted, the ms to wait if one is
        full, -1 if there is no room for a new bucket."""
        self._sweep(now)
        wait, tats = 0, {}
        for b in buckets:
            tat = max(self.tats.get(b.key, 0), now) + b.step
            wait = max(wait, tat - now - b.horizon)
            tats[b.key] = tat
        if wait:
            return wait
        if len(self.tats) + sum(k not in self.tats for k in tats) > self.max_keys:
            return -1
        self.tats.update(tats)
        return 0

    def settle(self, buckets: tuple[Bucket, ...], steps: list[int], now: int) -> None:
        for b, step in zip(buckets, steps, strict=True):
            if step == 0:
                self.tats.pop(b.key, None)
            elif step > 0 and b.key in self.tats:
                tat = self.tats[b.key] - step
                if tat > now:
                    self.tats[b.key] = tat
                else:
                    del self.tats[b.key]

    def is_known(self, known_key: str, now: int) -> bool:
        return self.known.get(known_key, 0) > now

    def remember(self, known_key: str, ttl_ms: int, now: int) -> None:
        """Note a login's (address, account) here too, for when Redis is gone."""
        self.known.pop(known_key, None)
        self.known[known_key] = now + ttl_ms
        while len(self.known) > self.max_keys:
            del self.known[next(iter(self.known))]

    def _sweep(self, now: int) -> None:
        """Drop expired entries every minute, or every second while full."""
        full = len(self.tats) >= self.max_keys
        if now - self._swept < (1000 if full else 60_000):
            return
        self._swept = now
        self.tats = {k: t for k, t in self.tats.items() if t > now}
        self.known = {k: t for k, t in self.known.items() if t > now}


class Throttles:
    """Counts attempts in this process and in Redis, or here alone while Redis fails or
    is slow."""

    def __init__(self, redis: RedisClient, timeout: float, known_ttl_s: int) -> None:
        self.timeout = timeout
        self.known_ms = known_ttl_s * 1000
        self._count = redis.register_script(_COUNT)
        self._settle = redis.register_script(_SETTLE)
        self.local = LocalCounts()
        self._skip_until = 0.0
        self._warn = OncePer(log)

    def _fall_back(self, e: BaseException) -> None:
        """Count here alone for a second: a slow Redis must not slow every login down."""
        self._skip_until = time.monotonic() + 1.0
        self._warn.warning("login throttle: Redis unavailable, counting in this process: %s",
                           e or type(e).__name__)

    async def count(self, buckets: tuple[Bucket, ...], known: str) -> Attempt:
        """Count one attempt in every bucket, or in none (then `wait_ms` > 0).

        First here, without awaiting, so atomically within the process; then in Redis.
        The buckets that spare known addresses are counted here only while Redis is
        away: Redis alone knows every address an account logged in from.
        """
        here = tuple(b for b in buckets if not b.spare_known)
        room = self.local.count(here, _now_ms())
        if room > 0:
            return Attempt(self, buckets, known, room)
        counted = here if room == 0 else ()
        if time.monotonic() >= self._skip_until:
            args: list[int] = []
            for b in buckets:
                args += [b.step, b.horizon, int(b.spare_known)]
            try:
                wait, known_caller = await asyncio.wait_for(
                    self._count(keys=[known, *(b.key for b in buckets)], args=args),
                    self.timeout)
            except (RedisError, OSError, asyncio.TimeoutError) as e:
                self._fall_back(e)
            else:
                if int(wait) > 0:
                    self.local.settle(counted, [b.step for b in counted], _now_ms())
                    return Attempt(self, buckets, known, int(wait))
                return Attempt(self, buckets, known, 0, True, counted, bool(known_caller))
        # Without Redis this process's counts decide alone; with no room to count, refuse.
        now = _now_ms()
        known_caller = self.local.is_known(known, now)
        spare = () if known_caller else tuple(b for b in buckets if b.spare_known)
        wait = self.local.count(spare, now) if room == 0 else -1
        if wait != 0:
            self.local.settle(counted, [b.step for b in counted], now)
            return Attempt(self, buckets, known, max(wait, 1000))
        return Attempt(self, buckets, known, 0, False, counted + spare, known_caller)

    async def settle(self, attempt: Attempt, success: bool) -> None:
        now = _now_ms()
        if success:
            self.local.remember(attempt.known, self.known_ms, now)
        self.local.settle(attempt.here, [attempt.step_for(b, success) for b in attempt.here],
                          now)
        if not attempt.in_redis or time.monotonic() < self._skip_until:
            return  # what Redis counted stays counted, as if it had failed: stricter
        steps = [attempt.step_for(b, success) for b in attempt.buckets]
        try:
            await asyncio.wait_for(
                self._settle(keys=[attempt.known, *(b.key for b in attempt.buckets)],
                             args=[self.known_ms if success else 0, *steps]),
                self.timeout)
        except (RedisError, OSError, asyncio.TimeoutError) as e:
            self._fall_back(e)
