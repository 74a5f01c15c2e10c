"""Limits each process keeps by itself, with no Redis: its open WebSocket connections per
user, per address and in all (`ConnectionCaps`), and a connection's own token bucket for
the frames that are not messages (`FrameBucket`).
"""

from __future__ import annotations

import time
from collections import Counter

from server.limits import LimitSettings


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


class FrameBucket:
    """A connection's own token bucket for frames other than `send` (join, leave,
    history, ping): local, no Redis, two floats per connection."""

    __slots__ = ("_stamp", "_tokens", "burst", "rate")

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._stamp = time.monotonic()

    def take(self) -> float:
        """Take a token; returns 0.0, or the seconds until one is available."""
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / self.rate
