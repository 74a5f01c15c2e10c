"""Many idle sockets, each joined to a room, held open by load-generator processes.

What `idle.py` and `hangup.py` share: the seats (for our server, accounts made before
any clock starts), worker processes that connect their share and wait for orders, a
probe of the server's memory and CPU, and the hang-up of every socket at one moment.

Each worker raises its RLIMIT_NOFILE to the hard limit. Sockets come from the loopback
addresses 127.0.0.2... (`SOCKETS_PER_ADDRESS` each, under the server's 200 per address);
our server's accounts hold `SOCKETS_PER_USER` sockets each (its cap is 20), in as many
different rooms.
"""

from __future__ import annotations

import asyncio
import math
import multiprocessing
import resource
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from typing import Any

from accounts import ApiClient, SetupError
from fanout_client import Stats, member_class
from scenario import Seat
from targets import Target

PASSWORD = "bench-password-123"
SOCKETS_PER_USER = 20
SOCKETS_PER_ADDRESS = 100
MAX_SOURCE_ADDRESSES = 250
WORKER_TIMEOUT_S = 600.0
SAMPLE_S = 0.1


def raise_nofile() -> int:
    """Raise this process's open-file limit to the hard limit; return the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    return soft


def source_ip(i: int, n: int) -> str:
    """The loopback address socket `i` of `n` comes from."""
    addresses = min(MAX_SOURCE_ADDRESSES, max(1, math.ceil(n / SOCKETS_PER_ADDRESS)))
    return f"127.0.0.{2 + i % addresses}"


async def make_seats(target: Target, n: int, rooms: int, prefix: str = "idle") -> list[Seat]:
    """`n` seats over `rooms` rooms; for our server, register the accounts and rooms now."""
    room_names = [f"{prefix}room{r}" for r in range(rooms)]
    users = math.ceil(n / SOCKETS_PER_USER) if target.kind == "ours" else n
    names = [f"{prefix}{u}" for u in range(users)]
    # Socket i: user i // SOCKETS_PER_USER (ours), room i % rooms: a user's sockets are in
    # as many different rooms (SOCKETS_PER_USER consecutive rooms).
    plan = [(room_names[i % rooms], names[i * users // n], source_ip(i, n)) for i in range(n)]
    if target.kind != "ours":
        return [Seat(room, name, "", False, ip) for room, name, ip in plan]
    api = ApiClient(target.url)
    try:
        # Registrations spread over every address (the server throttles them per address).
        wanted = [(name, source_ip(u, n)) for u, name in enumerate(names)]
        accounts = await api.accounts(wanted, PASSWORD)
        for r, room in enumerate(room_names):
            # At most 50 rooms per user: spread the rooms' creation over the accounts.
            await api.ensure_room(room, accounts[names[(r // 40) % users]])
    finally:
        api.close()
    return [Seat(room, name, accounts[name].cookie, False, ip) for room, name, ip in plan]


def _worker_main(conn: Connection, target: str, protocol: str, seats: list[Seat],
                 concurrency: int) -> None:
    """Entry point of a worker process: connect, report, wait for the hang-up order."""
    raise_nofile()
    try:
        asyncio.run(_hold(conn, target, protocol, seats, concurrency))
    except Exception as exc:  # the process's top level: report instead of dying silently
        conn.send(("error", f"{type(exc).__name__}: {exc}"))


async def _hold(conn: Connection, target: str, protocol: str, seats: list[Seat],
                concurrency: int) -> None:
    stats = Stats()
    members = [member_class(protocol)(seat, stats) for seat in seats]
    gate = asyncio.Semaphore(concurrency)

    async def one(member: Any) -> None:
        async with gate:
            await member.connect(target)

    started = time.perf_counter()
    await asyncio.gather(*(one(m) for m in members))
    conn.send(("ready", time.perf_counter() - started))
    loop = asyncio.get_running_loop()
    while True:
        order, value = await loop.run_in_executor(None, _recv, conn, WORKER_TIMEOUT_S)
        if order == "count":
            conn.send(("count", stats.disconnects))
        elif order == "close":
            delay = float(value) - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            stats.closing = True
            for member in members:
                member.close()
            conn.send(("closed", stats.disconnects))
            return


def _recv(conn: Connection, timeout: float) -> tuple[str, Any]:
    if not conn.poll(timeout):
        raise TimeoutError(f"no word in {timeout:.0f} s")
    kind, value = conn.recv()
    if kind == "error":
        raise SetupError(f"worker: {value}")
    return kind, value


class HeldSockets:
    """`seats` connected by `workers` processes; ask them how many dropped; hang up."""

    def __init__(self, target: Target, seats: list[Seat], workers: int,
                 concurrency: int = 64) -> None:
        self.target = target
        self.seats = seats
        self.workers = max(1, min(workers, len(seats)))
        self.concurrency = concurrency
        self.conns: list[Connection] = []
        self.procs: list[Any] = []
        self.pool = ThreadPoolExecutor(max_workers=self.workers)
        self.connect_s = 0.0

    async def _ask(self, timeout: float = WORKER_TIMEOUT_S) -> list[Any]:
        loop = asyncio.get_running_loop()
        answers = await asyncio.gather(
            *(loop.run_in_executor(self.pool, _recv, c, timeout) for c in self.conns)
        )
        return [value for _, value in answers]

    async def connect(self) -> float:
        """Start the workers; return when every socket has joined (seconds taken)."""
        ctx = multiprocessing.get_context("spawn")
        for w in range(self.workers):
            parent_end, child_end = ctx.Pipe()
            share = self.seats[w :: self.workers]
            proc = ctx.Process(target=_worker_main, daemon=True, args=(
                child_end, self.target.url, self.target.protocol, share, self.concurrency))
            proc.start()
            child_end.close()
            self.conns.append(parent_end)
            self.procs.append(proc)
        started = time.perf_counter()
        await self._ask()
        self.connect_s = time.perf_counter() - started
        return self.connect_s

    async def dropped(self) -> int:
        """Sockets the server closed so far."""
        for conn in self.conns:
            conn.send(("count", None))
        return sum(await self._ask(60))

    async def hang_up(self, at: float) -> int:
        """Every worker closes all its sockets at monotonic time `at`; return drops before."""
        for conn in self.conns:
            conn.send(("close", at))
        return sum(await self._ask(120))

    def stop(self) -> None:
        """Make sure no worker outlives the run."""
        for proc in self.procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.terminate()
                proc.join()
        self.pool.shutdown(wait=False, cancel_futures=True)


async def sample_until_quiet(
    probe: Callable[[], dict[str, float]], quiet_pct: float, quiet_s: float, timeout: float,
    at_least: float = 0.0,
) -> list[tuple[float, dict[str, float]]]:
    """Sample `probe` every 100 ms until a `quiet_s` stretch used under `quiet_pct` % of a
    core (all parts together), not before `at_least` s, or `timeout` s. Returns (seconds,
    cumulative CPU) samples."""
    start = time.monotonic()
    samples = [(0.0, probe())]
    span = max(1, round(quiet_s / SAMPLE_S))
    while True:
        await asyncio.sleep(SAMPLE_S)
        now = time.monotonic() - start
        samples.append((now, probe()))
        if len(samples) > span:
            then, before = samples[-1 - span]
            used = sum(samples[-1][1].values()) - sum(before.values())
            quiet = used < quiet_pct / 100 * (now - then) and now >= at_least
            if quiet or now >= timeout:
                return samples
