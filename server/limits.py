"""Rate limits: message token buckets and login throttles shared through Redis (the
limits each process keeps by itself, with no Redis, are in server/caps.py).

The message limit fails open when Redis is unreachable: a Redis outage must not stop
people from chatting (messages are still stored in MongoDB), so limiting pauses instead.
The login, registration and password throttles (server/throttle.py) never switch off:
without Redis each process counts by itself.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass

from redis.exceptions import RedisError

from server.logs import OncePer
from server.metrics import Metrics
from server.redisconn import RedisClient
from server.throttle import (
    CLEAR,
    KEEP,
    REFUND,
    Attempt,
    Bucket,
    Throttles,
    account_key,
    address_key,
)

log = logging.getLogger(__name__)

# Token bucket; time comes from Redis so processes on several machines agree. Takes up to
# ARGV[3] whole tokens at once (a lease the calling process spends without asking again).
_BUCKET = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local state = redis.call('HMGET', KEYS[1], 'at', 'tokens')
local at = tonumber(state[1]) or now
local tokens = tonumber(state[2]) or burst
tokens = math.min(burst, tokens + (now - at) * rate)
local granted = math.min(want, math.floor(tokens))
local wait = 0
if granted >= 1 then
  tokens = tokens - granted
else
  granted = 0
  wait = (1 - tokens) / rate
end
redis.call('HSET', KEYS[1], 'at', tostring(now), 'tokens', tostring(tokens))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return {granted, tostring(wait)}
"""


# Tokens a stopping process leased but did not use go back to the bucket (never above
# the burst): a rolling restart must not cost its users their message rate.
_GIVE_BACK = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local back = tonumber(ARGV[3])
local state = redis.call('HMGET', KEYS[1], 'at', 'tokens')
if not state[2] then
  return 0
end
local at = tonumber(state[1]) or now
local tokens = math.min(burst, tonumber(state[2]) + (now - at) * rate + back)
redis.call('HSET', KEYS[1], 'at', tostring(now), 'tokens', tostring(tokens))
return 1
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
    # Throttles: that many at once, then one per window/limit (so many per window).
    login_failures_per_account: int = 10  # per account from one address (IPv6: its /64)
    login_failures_per_ip: int = 50  # per address, all accounts together
    # Per account from addresses it has not logged in from lately: slows guessing from
    # many addresses without locking the owner out.
    login_failures_per_account_anywhere: int = 100
    account_window_s: int = 3600
    known_address_days: int = 30  # how long a login marks its address as the account's
    registrations_per_ip: int = 20
    window_s: int = 900
    conns_per_user: int = 20
    conns_per_ip: int = 200
    conns_per_process: int = 10000
    # Per connection: join, leave, history and ping together. The burst lets a client
    # that reconnects rejoin all of its rooms (at most 100) at once.
    frame_rate: float = 10.0
    frame_burst: int = 120
    # Per user, requests that cost the server far more than a message: searches (each
    # may read thousands of candidates) and new direct messages (each tells the sockets
    # of up to 8 people).
    search_rate: float = 0.5
    search_burst: int = 10
    dm_rate: float = 0.1
    dm_burst: int = 10
    # Uploads: each holds a GridFS write and, for a picture, a preview made in a thread.
    upload_rate: float = 0.5
    upload_burst: int = 20
    typing_every: float = 2.5  # a connection's typing frames per room, the rest dropped


@dataclass
class _Lease:
    """Tokens of one user's bucket that this process took from Redis and has not spent."""

    tokens: int = 0
    used: float = 0.0  # monotonic time of the last spend or grant
    refill: asyncio.Future[float | None] | None = None


class RateLimits:
    """Cluster-wide limits kept in Redis.

    Message tokens are leased: a process takes a few of a user's tokens from the bucket
    in Redis at once and spends them locally, taking the next lease in the background
    before the current one runs out. A steady sender never waits on Redis, and Redis
    sees one call per lease instead of one per message.

    Login, registration and password attempts go through `throttles`: each is counted
    before its password is checked, in buckets per (account, address), per address,
    per account from unknown addresses and, for password changes, per user.
    """

    def __init__(self, redis: RedisClient, prefix: str, settings: LimitSettings,
                 timeout: float = 0.25, throttle_timeout: float = 1.0,
                 metrics: Metrics | None = None) -> None:
        self.redis = redis
        self.metrics = metrics
        self.prefix = f"{prefix}limit:"
        # The throttles' scripts count in several buckets at once (address, account,
        # both), so their keys share one hash tag: one slot, atomic on a cluster too.
        self.throttle_prefix = f"{{{prefix}throttle}}:"
        self.settings = settings
        # Short: a limiter that waits out a hung Redis would hold up every frame of the
        # connection behind it (they are handled one at a time).
        self.timeout = timeout
        self._bucket = redis.register_script(_BUCKET)
        self._give_back = redis.register_script(_GIVE_BACK)
        # A longer timeout for the throttles: a login waits for a bcrypt anyway, and
        # counting in Redis is exact across processes where the local fallback is not.
        self.throttles = Throttles(redis, throttle_timeout,
                                   known_ttl_s=settings.known_address_days * 86_400)
        self._warn = OncePer(log)
        self._skip_until = 0.0
        # About a second's refill per lease, at most a quarter of the burst: a process
        # holds at most 1.5 leases of a user's tokens ahead of their use.
        self.lease = max(1, min(settings.message_burst // 4, math.ceil(settings.message_rate)))
        # A lease unused this long is dropped: the bucket in Redis has refilled by then,
        # so a user back from a pause gets exactly the burst, not the burst plus a lease.
        self.lease_idle = settings.message_burst / settings.message_rate
        self._leases: dict[str, _Lease] = {}
        self._swept = time.monotonic()

    def refused(self, reason: str) -> None:
        """Count a refusal in chat_refusals_total{reason}."""
        if self.metrics is not None:
            self.metrics.refusals.labels(reason=reason).inc()

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
        """Spend one of the user's message tokens or raise Limited."""
        if self._skipping():
            return
        now = time.monotonic()
        lease = self._leases.get(user_id)
        if lease is None or (lease.refill is None and now - lease.used > self.lease_idle):
            lease = self._leases[user_id] = _Lease(used=now)
            self._sweep(now)
        while lease.tokens < 1:
            if lease.refill is None:
                lease.refill = asyncio.ensure_future(self._refill(user_id, lease))
            # Shielded: the refill is shared with the user's other connections.
            wait = await asyncio.shield(lease.refill)
            if wait is None:  # Redis unavailable: fail open
                return
            if wait and lease.tokens < 1:
                self.refused("message_rate")
                raise Limited("sending too fast", wait)
        lease.tokens -= 1
        lease.used = now
        if lease.tokens <= self.lease // 2 and lease.refill is None:
            lease.refill = asyncio.ensure_future(self._refill(user_id, lease))

    async def costly(self, what: str, user_id: str) -> None:
        """Spend one of the user's tokens for a costly request ("search", "dm",
        "upload"), or raise Limited. Counted in Redis, so across processes; fails open
        like the message rate."""
        if self._skipping():
            return
        rate = float(getattr(self.settings, f"{what}_rate"))
        burst = int(getattr(self.settings, f"{what}_burst"))
        try:
            granted, wait = await asyncio.wait_for(
                self._bucket(keys=[f"{self.prefix}{what}:{user_id}"], args=[rate, burst, 1]),
                self.timeout)
        except (RedisError, OSError, asyncio.TimeoutError) as e:
            self._fail_open(f"{what} rate limit", e)
            return
        if not int(granted):
            self.refused(what)
            raise Limited(f"too many {what} requests; slow down",
                          math.ceil(float(wait) * 1000) / 1000)

    async def _refill(self, user_id: str, lease: _Lease) -> float | None:
        """Add a lease of tokens; the seconds until one is free if none is, None if
        Redis did not answer."""
        s = self.settings
        try:
            granted, wait = await asyncio.wait_for(
                self._bucket(keys=[f"{self.prefix}msg:{user_id}"],
                             args=[s.message_rate, s.message_burst, self.lease]),
                self.timeout)
        except (RedisError, OSError, asyncio.TimeoutError) as e:
            self._fail_open("message rate limit", e)
            return None
        finally:
            lease.refill = None
        lease.tokens += int(granted)
        lease.used = time.monotonic()
        # Rounded up, so a client that waits exactly this long is served.
        return 0.0 if int(granted) else math.ceil(float(wait) * 1000) / 1000

    def _sweep(self, now: float) -> None:
        """Forget idle leases, at most once per idle period."""
        if now - self._swept < self.lease_idle:
            return
        self._swept = now
        idle = [u for u, lease in self._leases.items()
                if lease.refill is None and now - lease.used > self.lease_idle]
        for user_id in idle:
            del self._leases[user_id]

    async def close(self) -> None:
        """Wait for leases still being taken, then give back the tokens leased and not
        used, before Redis is closed."""
        refills = [lease.refill for lease in self._leases.values() if lease.refill]
        await asyncio.gather(*refills, return_exceptions=True)
        s = self.settings
        unused = [(user_id, int(lease.tokens)) for user_id, lease in self._leases.items()
                  if lease.tokens >= 1]
        self._leases.clear()
        try:
            await asyncio.wait_for(asyncio.gather(*(
                self._give_back(keys=[f"{self.prefix}msg:{user_id}"],
                                args=[s.message_rate, s.message_burst, tokens])
                for user_id, tokens in unused)), self.timeout * 4)
        except (RedisError, OSError, asyncio.TimeoutError) as e:
            log.info("leased message tokens not given back: %s", e or type(e).__name__)

    # Login, registration and password throttles ------------------------------------

    async def login_attempt(self, ip: str, name: object) -> Attempt:
        """Count a login attempt before its password is checked, or raise Limited.

        Names that do not exist are counted like names that do, so a 429 reveals
        nothing about which accounts exist.
        """
        address, account = address_key(ip), account_key(name)
        return await self._attempt(self._login_buckets(address, account),
                                   self._known(address, account),
                                   "too many failed logins; try again later", "login")

    async def password_attempt(self, ip: str, user_id: str, name: str) -> Attempt:
        """Count a check of a signed-in user's current password, or raise Limited.

        It counts as a login attempt for that user from that address, and against a
        bucket of the user's own, so a stolen session cannot guess from many addresses.
        """
        s = self.settings
        address, account = address_key(ip), account_key(name)
        own = Bucket(f"{self.throttle_prefix}password:{user_id}", s.login_failures_per_account,
                     s.window_s, REFUND)
        return await self._attempt((*self._login_buckets(address, account), own),
                                   self._known(address, account),
                                   "too many wrong passwords; try again later", "password")

    async def register_attempt(self, ip: str, name: object) -> Attempt:
        """Count a registration from this address, or raise Limited. Every one counts."""
        address = address_key(ip)
        bucket = Bucket(f"{self.throttle_prefix}register-addr:{address}",
                        self.settings.registrations_per_ip, self.settings.window_s, KEEP)
        return await self._attempt(
            (bucket,), self._known(address, account_key(name)),
            "too many registrations from this address; try again later", "register")

    def _login_buckets(self, address: str, account: str) -> tuple[Bucket, ...]:
        s, p = self.settings, self.throttle_prefix
        return (
            # Emptied by a success from there: its owner is back.
            Bucket(f"{p}login:{address}|{account}", s.login_failures_per_account,
                   s.window_s, CLEAR),
            Bucket(f"{p}login-addr:{address}", s.login_failures_per_ip, s.window_s, REFUND),
            Bucket(f"{p}login-account:{account}", s.login_failures_per_account_anywhere,
                   s.account_window_s, REFUND, spare_known=True),
        )

    def _known(self, address: str, account: str) -> str:
        return f"{self.throttle_prefix}login-known:{address}|{account}"

    async def _attempt(self, buckets: tuple[Bucket, ...], known: str,
                       message: str, reason: str) -> Attempt:
        attempt = await self.throttles.count(buckets, known)
        if attempt.wait_ms > 0:
            self.refused(reason)
            # Rounded up to 0.1 s, so a client that waits exactly this long is served.
            raise Limited(message, math.ceil(attempt.wait_ms / 100) / 10)
        return attempt
