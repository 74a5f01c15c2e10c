"""The fan-out scenario's parameters, their bounds and their command-line flags."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, fields
from typing import NamedTuple

MAX_CONNECTIONS = 5000
MAX_DURATION_S = 600.0
MAX_RATE = 1000.0
MAX_WORKERS = 8
MAX_SOURCE_IPS = 200
BAR_P99_MS = 50.0


@dataclass(frozen=True)
class Scenario:
    """One fan-out run; the defaults are the load the bar is stated for."""

    rooms: int = 10
    members: int = 50
    senders_per_room: int = 4
    rate: float = 5.0
    window: int = 8
    duration: float = 20.0
    drain_timeout: float = 5.0
    body_bytes: int = 64
    workers: int = 2
    connect_concurrency: int = 50
    listener_accounts: int = 25
    source_ips: int = 10
    room_prefix: str = "bench"
    user_prefix: str = "bench"
    password: str = "bench-password-1"
    auth: str = "auto"
    protocol: str = "chat"

    def check(self) -> None:
        """Refuse loads outside the harness's bounds."""
        if not 1 <= self.rooms * self.members <= MAX_CONNECTIONS:
            raise ValueError(f"rooms x members must be 1..{MAX_CONNECTIONS}")
        if not 1 <= self.senders_per_room <= self.members:
            raise ValueError("senders_per_room must be 1..members")
        if not 0 < self.duration <= MAX_DURATION_S or not 0 <= self.drain_timeout <= 120:
            raise ValueError(f"duration must be in (0, {MAX_DURATION_S}], drain 0..120 s")
        if not 0 <= self.rate <= MAX_RATE or self.window < 1:
            raise ValueError(f"rate must be 0..{MAX_RATE} (0 = closed loop), window >= 1")
        if not 1 <= self.workers <= min(MAX_WORKERS, self.rooms):
            raise ValueError(f"workers must be 1..min({MAX_WORKERS}, rooms)")
        if self.listener_accounts < 1 or self.connect_concurrency < 1:
            raise ValueError("listener_accounts and connect_concurrency must be >= 1")
        if not 0 <= self.source_ips <= MAX_SOURCE_IPS:
            raise ValueError(f"source_ips must be 0..{MAX_SOURCE_IPS}")
        if self.auth not in ("auto", "none", "accounts"):
            raise ValueError("auth must be auto, none or accounts")
        if self.protocol not in ("chat", "socketio"):
            raise ValueError("protocol must be chat or socketio")

    @property
    def offered_deliveries_per_s(self) -> float:
        """Deliveries per second the schedule asks for (0 in closed-loop mode)."""
        return self.rooms * self.senders_per_room * self.rate * self.members

    def rooms_names(self) -> list[str]:
        """The room names, in order."""
        return [f"{self.room_prefix}-{r}" for r in range(self.rooms)]

    def source_ip(self, n: int) -> str:
        """The loopback address the n-th connection or account request comes from.

        '' (the OS default, 127.0.0.1) when `source_ips` is 0. Spreading clients over
        127.0.0.2, 127.0.0.3, ... models users behind different addresses, so per-address
        caps apply as they would in production rather than to the whole benchmark.
        """
        if not self.source_ips:
            return ""
        return f"127.0.0.{2 + n % self.source_ips}"

    def seats(self) -> list[tuple[str, str, bool, str]]:
        """(room, user name, sends?, source address) for every connection.

        Senders have an account each (per-user rate limits apply to them); listeners
        share `listener_accounts` accounts round-robin, like a user with several tabs.
        """
        seats: list[tuple[str, str, bool, str]] = []
        listener = 0
        for r, room in enumerate(self.rooms_names()):
            for m in range(self.members):
                if m < self.senders_per_room:
                    name, sends = f"{self.user_prefix}_s{r}_{m}", True
                else:
                    name, sends = f"{self.user_prefix}_l{listener % self.listener_accounts}", False
                    listener += 1
                seats.append((room, name, sends, self.source_ip(len(seats))))
        return seats


class Seat(NamedTuple):
    """One connection to open: room, user, Cookie header ('' without auth), role, source."""

    room: str
    name: str
    cookie: str
    sends: bool
    source_ip: str


def add_flags(parser: argparse.ArgumentParser) -> None:
    """Flags for every `Scenario` field, defaults from the dataclass."""
    d = Scenario()
    add = parser.add_argument
    add("--rooms", type=int, default=d.rooms)
    add("--members", type=int, default=d.members, help="connections per room, senders included")
    add("--senders-per-room", type=int, default=d.senders_per_room)
    add("--rate", type=float, default=d.rate, help="msg/s per sender; 0 = closed loop")
    add("--window", type=int, default=d.window,
        help="at rate 0: sends per sender whose message has not come back yet")
    add("--duration", type=float, default=d.duration, help="seconds of sending")
    add("--drain-timeout", type=float, default=d.drain_timeout,
        help="after the last send, give up on owed deliveries after this long without any")
    add("--body-bytes", type=int, default=d.body_bytes)
    add("--workers", type=int, default=d.workers,
        help="load-generator processes; each owns whole rooms (senders and members)")
    add("--connect-concurrency", type=int, default=d.connect_concurrency)
    add("--listener-accounts", type=int, default=d.listener_accounts,
        help="accounts shared by the non-sending connections")
    add("--source-ips", type=int, default=d.source_ips,
        help="spread clients over this many loopback addresses 127.0.0.2...; 0 = OS default")
    add("--room-prefix", default=d.room_prefix)
    add("--user-prefix", default=d.user_prefix)
    add("--password", default=d.password)
    add("--auth", choices=("auto", "none", "accounts"), default=d.auth,
        help="auto: accounts when GET / sets an _xsrf cookie")
    add("--protocol", choices=("chat", "socketio"), default=d.protocol,
        help="chat: our frames (ours, baseline_server.py); socketio: socketio_server.py")


def from_flags(args: argparse.Namespace) -> Scenario:
    """Build a `Scenario` from parsed flags."""
    return Scenario(**{f.name: getattr(args, f.name) for f in fields(Scenario)})
