"""Fan-out load generator: many WebSocket members per room, a few senders, exact accounting.

Scenario `fanout`: `rooms` rooms of `members` connections each (picows clients, whose
frames are parsed in C, so the load generator leaves the cores to the server);
`senders_per_room` of those members send at `rate` msg/s
for `duration` s, open loop (a slow server does not slow the schedule down). Every
message acknowledged to a sender must reach every member of its room exactly once.
Latency is send -> receipt in the process that sent it. Rooms are split over `workers`
processes so that the load generator itself is not the bottleneck.

Loopback only, bounded in connections and time, stops by itself:

    python bench/loadgen.py fanout --target http://127.0.0.1:18887
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import sys
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from typing import Any

import scenario as scenario_flags
from accounts import Account, ApiClient, SetupError, check_loopback
from cpu import CpuProbe, Window, wait_until_idle
from fanout_client import DRAIN_CAP_S, run_slice
from report import build_result, merge, summary
from scenario import Scenario, Seat

START_DELAY_S = 0.3
READY_TIMEOUT_S = 300.0


def progress(message: str) -> None:
    """One line on stderr, so a watcher (or a profiler script) can follow the phases."""
    print(f"loadgen {time.strftime('%H:%M:%S')}: {message}", file=sys.stderr, flush=True)


async def prepare_seats(api: ApiClient, scenario: Scenario) -> tuple[list[Seat], float]:
    """Accounts (registered once, bounded concurrency) and rooms; return seats and seconds."""
    started = time.perf_counter()
    plan = scenario.seats()
    names = list(dict.fromkeys(name for _, name, _, _ in plan))
    use_accounts = scenario.auth == "accounts" or (
        scenario.auth == "auto" and await api.needs_accounts()
    )
    cookies = {name: "" for name in names}
    if use_accounts:
        wanted = [(name, scenario.source_ip(i)) for i, name in enumerate(names)]
        accounts: dict[str, Account] = await api.accounts(wanted, scenario.password)
        cookies = {name: account.cookie for name, account in accounts.items()}
        owner = accounts[names[0]]
        for room in scenario.rooms_names():
            await api.ensure_room(room, owner)
    seats = [Seat(room, name, cookies[name], sends, ip) for room, name, sends, ip in plan]
    return seats, time.perf_counter() - started


def _recv(conn: Connection, timeout: float) -> tuple[str, Any]:
    """Blocking receive of one (kind, value) message with a timeout."""
    if not conn.poll(timeout):
        raise TimeoutError(f"no word from a load-generator worker in {timeout:.0f} s")
    kind, value = conn.recv()
    if kind == "error":
        raise SetupError(f"worker: {value}")
    return kind, value


def _worker_main(conn: Connection, target: str, scenario: Scenario, seats: list[Seat]) -> None:
    """Entry point of a worker process: run its rooms, send back the raw counts."""

    async def ready(connect_s: float) -> float:
        conn.send(("ready", connect_s))
        loop = asyncio.get_running_loop()
        _, start_at = await loop.run_in_executor(None, _recv, conn, READY_TIMEOUT_S)
        return float(start_at)

    try:
        conn.send(("done", asyncio.run(run_slice(target, scenario, seats, ready))))
    except Exception as exc:  # the process's top level: report instead of dying silently
        conn.send(("error", f"{type(exc).__name__}: {exc}"))


async def _run_workers(
    target: str,
    scenario: Scenario,
    seats: list[Seat],
    window: Window,
    before_start: Callable[[], Awaitable[None]],
) -> list[dict[str, Any]]:
    """Run the rooms in `scenario.workers` processes, room r in worker r % workers."""
    loop = asyncio.get_running_loop()
    by_room = {room: r % scenario.workers for r, room in enumerate(scenario.rooms_names())}
    shares: list[list[Seat]] = [[] for _ in range(scenario.workers)]
    for seat in seats:
        shares[by_room[seat.room]].append(seat)
    ctx = multiprocessing.get_context("spawn")
    conns: list[Connection] = []
    procs = []
    pool = ThreadPoolExecutor(max_workers=scenario.workers)

    async def expect(conn: Connection, timeout: float) -> Any:
        _, value = await loop.run_in_executor(pool, _recv, conn, timeout)
        return value

    try:
        for share in shares:
            parent_end, child_end = ctx.Pipe()
            proc = ctx.Process(
                target=_worker_main, args=(child_end, target, scenario, share), daemon=True
            )
            proc.start()
            child_end.close()
            conns.append(parent_end)
            procs.append(proc)
        await asyncio.gather(*(expect(conn, READY_TIMEOUT_S) for conn in conns))
        await before_start()
        start_at = time.monotonic() + START_DELAY_S
        loop.call_later(START_DELAY_S, window.begin)
        for conn in conns:
            conn.send(("start", start_at))
        budget = START_DELAY_S + scenario.duration + DRAIN_CAP_S + 60.0
        partials = await asyncio.gather(*(expect(conn, budget) for conn in conns))
        window.end()
        progress("done")
        return partials
    finally:
        for proc in procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.terminate()
                proc.join()
        pool.shutdown(wait=False, cancel_futures=True)


async def run_fanout(
    target: str,
    scenario: Scenario,
    label: str = "",
    cpu_probe: CpuProbe | None = None,
    idle_wait: float = 0.0,
) -> dict[str, Any]:
    """Run the fan-out scenario against `target`; return the result record.

    `cpu_probe`, when given, returns the server's cumulative CPU seconds per part; it is
    sampled around the measured window. With `idle_wait` > 0, sending starts only once the
    machine has been quiet for 2 s (or `idle_wait` s have passed), all sockets open.
    """
    scenario.check()
    target = check_loopback(target)
    api = ApiClient(target)
    try:
        seats, accounts_s = await prepare_seats(api, scenario)
        progress(f"{len({seat.name for seat in seats})} users and "
                 f"{scenario.rooms} rooms ready in {accounts_s:.1f} s; connecting {len(seats)}")
    finally:
        api.close()
    window = Window(cpu_probe, on_begin=lambda: progress("sending now"))
    idle: list[float | None] = []

    async def until_idle() -> None:
        if idle_wait > 0:
            idle.append(await wait_until_idle(idle_wait))

    if scenario.workers == 1:

        async def ready(connect_s: float) -> float:
            await until_idle()
            asyncio.get_running_loop().call_later(START_DELAY_S, window.begin)
            return time.monotonic() + START_DELAY_S

        partials = [await run_slice(target, scenario, seats, ready)]
        window.end()
        progress("done")
    else:
        partials = await _run_workers(target, scenario, seats, window, until_idle)
    return build_result(
        scenario, label, target, merge(partials), window, accounts_s, idle[0] if idle else None
    )


def main() -> None:
    """Run one scenario against `--target`; print the summary and a JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenario", choices=("fanout",))
    parser.add_argument("--target", required=True, help="http://127.0.0.1:PORT")
    parser.add_argument("--label", default="")
    parser.add_argument("--wait-idle", type=float, default=0.0, metavar="SECONDS",
                        help="before sending, wait up to this long for a quiet machine")
    scenario_flags.add_flags(parser)
    args = parser.parse_args()
    try:
        result = asyncio.run(
            run_fanout(args.target, scenario_flags.from_flags(args), label=args.label,
                       idle_wait=args.wait_idle)
        )
    except (SetupError, ValueError, ConnectionError, OSError) as exc:
        sys.exit(f"loadgen: {exc}")
    print(summary(result))
    print(json.dumps(result, sort_keys=True), flush=True)
    sys.exit(0 if result["passed"] else 1)


if __name__ == "__main__":
    main()
