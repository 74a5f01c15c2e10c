"""Connect + join throughput: ours against the minimal baseline server, in one run.

For each repeat and each server: start it (ours: `run.py` on a fresh data directory,
embedded Redis and MongoDB-wire server; the baseline: `bench/baseline_server.py`), make
`--users` accounts and `--rooms` rooms before the clock starts (ours needs them; the
baseline takes a name in the URL), then open `--users` WebSockets, `--concurrency` at a
time, each waiting for `hello`, sending `join` and waiting for `joined` (cookie auth,
membership, the join's history page, presence: everything a reconnecting client costs),
and report sockets per second from the first connect to the last `joined`. The sockets
stay open until all are joined, as after a deploy; then all close.

Prints the median of `--repeat` runs per server and the ratio ours / baseline.

    python bench/connect_join.py [--users 500] [--rooms 10] [--concurrency 64] [--repeat 3]
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


async def one_run(kind: str, workdir: Path, args: argparse.Namespace, n: int) -> float:
    def make(port: int) -> ServerProcess:
        if kind == "baseline":
            argv = [sys.executable, str(BENCH / "baseline_server.py"), "--port", str(port)]
            return ServerProcess(kind, argv, cwd=ROOT, port=port,
                                 log_path=workdir / f"{kind}-{n}.log")
        argv = [sys.executable, "run.py", "--port", str(port), "--host", "127.0.0.1",
                "--data-dir", str(workdir / f"{kind}-{n}-data")]
        return ServerProcess(kind, argv, cwd=ROOT, port=port,
                             log_path=workdir / f"{kind}-{n}.log", env=clean_env())

    server, _ = await start_server(make)
    try:
        seats = await seats_for(server.url, args.users, args.rooms, kind == "ours")
        # A first join of a public room also makes the member (and its event): warm up
        # with one storm, measure the second, as after a deploy.
        if kind == "ours":
            await storm(server.url, seats, args.concurrency)
        return await storm(server.url, seats, args.concurrency)
    finally:
        await asyncio.to_thread(server.stop)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=500)
    parser.add_argument("--rooms", type=int, default=10)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    results: dict[str, list[float]] = {"baseline": [], "ours": []}
    with tempfile.TemporaryDirectory(prefix="connect-join-") as tmp:
        for n in range(args.repeat):
            for kind in ("baseline", "ours"):
                rate = await one_run(kind, Path(tmp), args, n)
                results[kind].append(rate)
                print(f"run {n + 1} {kind:8} {rate:8.1f} sockets/s", flush=True)
    base, ours = (statistics.median(results[k]) for k in ("baseline", "ours"))
    print(f"median: baseline {base:.1f}, ours {ours:.1f} sockets/s; ours / baseline "
          f"{ours / base:.2f} ({args.users} users, {args.rooms} rooms, "
          f"{args.concurrency} at a time)")


if __name__ == "__main__":
    asyncio.run(main())
