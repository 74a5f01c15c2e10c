"""What presence costs the server process: idle joined sockets, and all of them closing
at once; one source tree against another (before / after a change), in one run.

One embedded Redis and MongoDB-wire server (started here, shared by every server run,
so the accounts are made once); for each repeat and each tree, `run.py` of that tree
starts against them with its own Redis prefix, and `--users` people open `--tabs`
sockets each (at most 20 per user, the server's cap), joined to one of `--rooms` rooms.
Then, from /proc, the Tornado process's CPU:

- idle: over `--idle` seconds with every socket joined and silent (the presence
  heartbeat runs every 10 s: a minute holds six);
- storm: from closing every socket at once until the process has been quiet for a
  second (its CPU grew by under 5 ms in 0.5 s twice in a row), less the idle rate.

Prints each run and the medians per tree, and after / before.

    python bench/presence_cost.py --before /work/main [--after .] [--users 100]
        [--tabs 20] [--rooms 10] [--idle 60] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from accounts import ApiClient
from fanout_client import Member, Stats
from run_fanout import ROOT, clean_env, start_server
from scenario import Seat
from servers import ServerProcess

sys.path.insert(0, str(ROOT))
from server.embedded import EmbeddedServices

PASSWORD = "bench-password-123"
QUIET_CPU_S = 0.005  # CPU per 0.5 s under which the server counts as quiet


def cpu_of(server: ServerProcess) -> float:
    return server.cpu_seconds().get("server", 0.0)


async def quiet_after(server: ServerProcess, timeout: float = 60.0) -> float:
    """Wait until the server's CPU grew by under QUIET_CPU_S in 0.5 s twice in a row;
    returns the seconds waited (the quiet second included)."""
    start = time.perf_counter()
    last = cpu_of(server)
    calm = 0
    while calm < 2 and time.perf_counter() - start < timeout:
        await asyncio.sleep(0.5)
        now = cpu_of(server)
        calm = calm + 1 if now - last < QUIET_CPU_S else 0
        last = now
    return time.perf_counter() - start


def seats_of(accounts: dict[str, str], args: argparse.Namespace) -> list[Seat]:
    seats = []
    for i, (name, cookie) in enumerate(sorted(accounts.items())):
        for tab in range(args.tabs):
            ip = f"127.0.0.{2 + (i * args.tabs + tab) % 200}"
            seats.append(Seat(f"pcroom{i % args.rooms}", name, cookie, False, ip))
    return seats


async def make_accounts(url: str, args: argparse.Namespace) -> dict[str, str]:
    names = [f"pc{i}" for i in range(args.users)]
    # The server admits 20 registrations per address.
    wanted = [(name, f"127.0.1.{1 + i // 20}") for i, name in enumerate(names)]
    api = ApiClient(url)
    try:
        accounts = await api.accounts(wanted, PASSWORD)
        for r in range(args.rooms):
            await api.ensure_room(f"pcroom{r}", accounts[names[0]])
    finally:
        api.close()
    return {name: a.cookie for name, a in accounts.items()}


async def one_run(tree: Path, label: str, workdir: Path, env: dict[str, str],
                  args: argparse.Namespace, n: int,
                  accounts: dict[str, str] | None) -> tuple[float, float, dict[str, str]]:
    def make(port: int) -> ServerProcess:
        argv = [sys.executable, "run.py", "--port", str(port), "--host", "127.0.0.1",
                "--data-dir", str(workdir / f"{label}-{n}-data"),
                "--redis-prefix", f"pc{n}{label}:"]
        return ServerProcess(label, argv, cwd=tree, port=port,
                             log_path=workdir / f"{label}-{n}.log", env=env)

    server, _ = await start_server(make)
    try:
        if accounts is None:
            accounts = await make_accounts(server.url, args)
        stats = Stats()
        members = [Member(seat, stats) for seat in seats_of(accounts, args)]
        gate = asyncio.Semaphore(64)

        async def one(member: Member) -> None:
            async with gate:
                await member.connect(server.url)

        await asyncio.gather(*(one(m) for m in members))
        await quiet_after(server)
        before, started = cpu_of(server), time.perf_counter()
        await asyncio.sleep(args.idle)
        idle_rate = (cpu_of(server) - before) / (time.perf_counter() - started)
        stats.closing = True
        before = cpu_of(server)
        for member in members:
            member.close()
        waited = await quiet_after(server)
        storm = max(0.0, cpu_of(server) - before - idle_rate * waited)
        return 100 * idle_rate, storm, accounts
    finally:
        await asyncio.to_thread(server.stop)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", type=Path, required=True, help="source tree before")
    parser.add_argument("--after", type=Path, default=ROOT, help="source tree after")
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--tabs", type=int, default=20)
    parser.add_argument("--rooms", type=int, default=10)
    parser.add_argument("--idle", type=float, default=60.0)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    if not 1 <= args.tabs <= 20:
        parser.error("--tabs must be 1..20 (the server's cap per user)")
    trees = {"before": args.before.resolve(), "after": args.after.resolve()}
    idle: dict[str, list[float]] = {k: [] for k in trees}
    storm: dict[str, list[float]] = {k: [] for k in trees}
    with tempfile.TemporaryDirectory(prefix="presence-cost-") as tmp:
        work = Path(tmp)
        services = EmbeddedServices(work / "services", want_redis=True, want_mongo=True)
        services.start()
        try:
            env = {**clean_env(), "MONGO_URL": str(services.mongo_url),
                   "REDIS_URL": str(services.redis_url),
                   "COOKIE_SECRET": secrets.token_hex(32)}
            accounts = None
            for n in range(args.repeat):
                for label, tree in trees.items():
                    pct, cpu, accounts = await one_run(tree, label, work, env, args, n,
                                                       accounts)
                    idle[label].append(pct)
                    storm[label].append(cpu)
                    print(f"run {n + 1} {label:6} idle {pct:6.2f} % of a core, "
                          f"storm {cpu:6.2f} CPU-s", flush=True)
        finally:
            services.stop()
    sockets = args.users * args.tabs
    med = {k: (statistics.median(idle[k]), statistics.median(storm[k])) for k in trees}
    print(f"median ({sockets} sockets: {args.users} users x {args.tabs} tabs, "
          f"{args.rooms} rooms, load {os.getloadavg()[0]:.1f}):")
    for label in trees:
        print(f"  {label:6} idle {med[label][0]:6.2f} % of a core, "
              f"storm {med[label][1]:6.2f} CPU-s")
    b, a = med["before"], med["after"]
    print(f"  after / before: idle {a[0] / b[0] if b[0] else float('nan'):.2f}, "
          f"storm {a[1] / b[1] if b[1] else float('nan'):.2f}")


if __name__ == "__main__":
    asyncio.run(main())
