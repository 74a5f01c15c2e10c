"""Connect + join throughput: ours against the minimal baseline server, in one run.

For each repeat and each server: start it (ours: `run.py` on a fresh data directory,
embedded Redis and MongoDB-wire server; the baseline: `bench/baseline_server.py`), make
`--users` accounts and `--rooms` rooms before the clock starts (ours needs them; the
baseline takes a name in the URL), then open `--users` WebSockets, `--concurrency` at a
time, each waiting for `hello`, sending `join` and waiting for `joined` (cookie auth,
membership, the join's history page, presence: everything a reconnecting client costs),
and report sockets per second from the first connect to the last `joined`. The sockets
stay open until all are joined, as after a deploy; then all close. A run measures
`--storms` such storms one after the other (sockets/s over their summed durations: a
storm of 500 lasts well under a second, too short to stand alone on a shared machine).

Prints the median of `--repeat` runs per server and the ratio ours / baseline.
`--pause S` waits S seconds between the warm-up storm and the measured one: past the
presence hold (2 s), every rejoin is announced `online` to its room again, as on a
process that has just started. `--tree DIR` runs our server from another checkout (an
A/B of two trees in one window: run it twice).

    python bench/connect_join.py [--users 500] [--rooms 10] [--concurrency 64] [--repeat 3]
                                 [--storms 3] [--pause 0] [--tree DIR]
                                 [--servers baseline,ours]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from accounts import ApiClient
from fanout_client import Stats, member_class
from run_fanout import BENCH, ROOT, clean_env, start_server
from scenario import Seat
from servers import ServerProcess

PASSWORD = "bench-password-123"
# Seconds for the closes to be handled, presence included: ours keeps a closed socket's
# user present for its presence grace (2 s) before the departure is sent and announced.
SETTLE = 3.5


async def storm(url: str, seats: list[Seat], concurrency: int, protocol: str = "chat") -> float:
    """Connect and join every seat, `concurrency` at a time; sockets per second."""
    stats = Stats()
    members = [member_class(protocol)(seat, stats) for seat in seats]
    gate = asyncio.Semaphore(concurrency)

    async def one(member: Any) -> None:
        async with gate:
            await member.connect(url)

    start = time.perf_counter()
    await asyncio.gather(*(one(m) for m in members))
    elapsed = time.perf_counter() - start
    stats.closing = True
    for member in members:
        member.close()
    return len(members) / elapsed


async def seats_for(url: str, users: int, rooms: int, ours: bool) -> list[Seat]:
    names = [f"cj{i}" for i in range(users)]
    room_names = [f"cjroom{r}" for r in range(rooms)]
    # One loopback address each, apart from the other benches' 127.0.0.x: the server
    # admits 200 sockets and 20 registrations per address, and a server that already
    # served other scenarios has spent some of those.
    ips = [f"127.0.{1 + i // 250}.{2 + i % 250}" for i in range(users)]
    if not ours:
        return [Seat(room_names[i % rooms], name, "", False, ips[i])
                for i, name in enumerate(names)]
    api = ApiClient(url)
    try:
        accounts = await api.accounts(list(zip(names, ips, strict=True)), PASSWORD)
        for room in room_names:
            await api.ensure_room(room, accounts[names[0]])
    finally:
        api.close()
    return [Seat(room_names[i % rooms], name, accounts[name].cookie, False, ips[i])
            for i, name in enumerate(names)]


async def one_run(kind: str, workdir: Path, args: argparse.Namespace, n: int
                  ) -> tuple[float, float]:
    """Sockets per second of the measured storm, and the server's CPU milliseconds per
    socket for it and its sockets' closing (read once the closes have settled)."""
    def make(port: int) -> ServerProcess:
        if kind == "baseline":
            argv = [sys.executable, str(BENCH / "baseline_server.py"), "--port", str(port)]
            return ServerProcess(kind, argv, cwd=ROOT, port=port,
                                 log_path=workdir / f"{kind}-{n}.log")
        argv = [sys.executable, "run.py", "--port", str(port), "--host", "127.0.0.1",
                "--data-dir", str(workdir / f"{kind}-{n}-data")]
        return ServerProcess(kind, argv, cwd=args.tree, port=port,
                             log_path=workdir / f"{kind}-{n}.log", env=clean_env())

    server, _ = await start_server(make)
    try:
        seats = await seats_for(server.url, args.users, args.rooms, kind == "ours")
        # A first join of a public room also makes the member (and its event): warm up
        # with one storm, measure the second, as after a deploy.
        if kind == "ours":
            await storm(server.url, seats, args.concurrency)
            await asyncio.sleep(args.pause)
        before = server.cpu_seconds()["server"]
        elapsed = 0.0
        for i in range(args.storms):  # each as the first: `--pause` after the last one's closes
            if i:
                await asyncio.sleep(args.pause)
            elapsed += len(seats) / await storm(server.url, seats, args.concurrency)
        await asyncio.sleep(SETTLE)
        sockets = len(seats) * args.storms
        return sockets / elapsed, (server.cpu_seconds()["server"] - before) * 1000 / sockets
    finally:
        await asyncio.to_thread(server.stop)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=500)
    parser.add_argument("--rooms", type=int, default=10)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--pause", type=float, default=0.0,
                        help="seconds between the warm-up storm and the measured one")
    parser.add_argument("--storms", type=int, default=3,
                        help="measured storms per run (sockets/s over all of them)")
    parser.add_argument("--tree", type=Path, default=ROOT,
                        help="the checkout our server runs from")
    parser.add_argument("--servers", default="baseline,ours")
    args = parser.parse_args()
    kinds = [k for k in ("baseline", "ours") if k in args.servers.split(",")]
    results: dict[str, list[float]] = {k: [] for k in kinds}
    cpus: dict[str, list[float]] = {k: [] for k in kinds}
    with tempfile.TemporaryDirectory(prefix="connect-join-") as tmp:
        for n in range(args.repeat):
            for kind in kinds:
                rate, cpu_ms = await one_run(kind, Path(tmp), args, n)
                results[kind].append(rate)
                cpus[kind].append(cpu_ms)
                print(f"run {n + 1} {kind:8} {rate:8.1f} sockets/s, server CPU "
                      f"{cpu_ms:.2f} ms per socket (join and close)", flush=True)
    meds = {k: statistics.median(v) for k, v in results.items()}
    for kind in kinds:
        print(f"median {kind}: {meds[kind]:.1f} sockets/s, "
              f"{statistics.median(cpus[kind]):.2f} CPU-ms per socket")
    if len(meds) < 2:
        return
    base, ours = meds["baseline"], meds["ours"]
    print(f"median: baseline {base:.1f}, ours {ours:.1f} sockets/s; ours / baseline "
          f"{ours / base:.2f} ({args.users} users, {args.rooms} rooms, "
          f"{args.concurrency} at a time)")


if __name__ == "__main__":
    asyncio.run(main())
