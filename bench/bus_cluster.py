"""What the bus costs a process on one Redis and on a Redis Cluster (sharded pub/sub).

Starts Debian's redis-server twice, as one server and as a three-node cluster, builds
the server's own clients for each (`server.redisconn.connect`) and a `Bus` on them,
subscribes `--rooms` rooms, then publishes `--messages` envelopes-sized payloads spread
over the rooms, `--window` in flight, and waits until the bus has heard every one. The
same process publishes and receives, so the CPU per message is one publish plus one
reception: the model's c_recv plus the publish (docs/scaling.md).

Prints per kind and run: wall time, messages/s, process CPU µs per message; then the
medians of `--repeat` runs and the ratio cluster / single.

    python bench/bus_cluster.py [--messages 20000] [--rooms 100] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from server.bus import Bus
from server.children import free_port
from server.redisconn import connect
from tests.services import DEBIAN_REDIS, RedisClusterService


class Counter:
    """A bus listener that counts room messages and wakes the waiter at the target."""

    def __init__(self) -> None:
        self.heard = 0
        self.target = 0
        self.done = asyncio.Event()

    def on_envelope(self, room: str, payload: bytes) -> None:
        self.heard += 1
        if self.heard >= self.target:
            self.done.set()

    def on_command(self, payload: bytes) -> None:
        pass

    async def resync(self) -> None:
        pass


async def run(url: str, messages: int, rooms: int, window: int) -> tuple[float, float]:
    """(wall seconds, CPU µs per message) of one run."""
    redis, subscriber = await connect(url, 64)
    bus = Bus(redis, "bench:", f"bench-{time.monotonic_ns()}", subscriber=subscriber)
    listener = Counter()
    await bus.start(listener)
    names = [f"room{i}" for i in range(rooms)]
    for name in names:
        await bus.subscribe(name)
    payload = b"node - 0.0\n1\t" + b'{"type":"message","body":"' + b"x" * 64 + b'"}'
    listener.target = messages
    sem = asyncio.Semaphore(window)

    async def one(i: int) -> None:
        async with sem:
            await bus.publish(names[i % rooms], payload)

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(messages)))
    await asyncio.wait_for(listener.done.wait(), 60)
    wall = time.perf_counter() - wall
    cpu = time.process_time() - cpu
    await bus.close()
    await redis.aclose()
    return wall, cpu / messages * 1e6


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--messages", type=int, default=20_000)
    p.add_argument("--rooms", type=int, default=100)
    p.add_argument("--window", type=int, default=32)
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bus-bench-"))
    port = free_port()
    single = subprocess.Popen([DEBIAN_REDIS, "--port", str(port), "--bind", "127.0.0.1",
                               "--save", "", "--appendonly", "no", "--dir", str(tmp)],
                              stdout=subprocess.DEVNULL)
    cluster = RedisClusterService.start(tmp / "cluster")
    urls = {"single": f"redis://127.0.0.1:{port}/0", "cluster": cluster.url}
    results: dict[str, list[tuple[float, float]]] = {k: [] for k in urls}
    try:
        time.sleep(0.3)  # the single server's start: it gives no event to wait for
        for n in range(args.repeat):
            for kind, url in urls.items():  # alternated, so both see the same machine
                wall, us = asyncio.run(run(url, args.messages, args.rooms, args.window))
                results[kind].append((wall, us))
                print(f"run {n + 1} {kind:8} {wall:6.2f} s  {args.messages / wall:8.0f} msg/s"
                      f"  {us:6.1f} µs CPU/msg", flush=True)
    finally:
        cluster.stop()
        single.terminate()
        single.wait(10)
    med = {k: (statistics.median(w for w, _ in v), statistics.median(u for _, u in v))
           for k, v in results.items()}
    print(f"\n| median of {args.repeat} | msg/s | µs CPU per message (publish + receive) |")
    print("|---|---:|---:|")
    for kind, (wall, us) in med.items():
        print(f"| {kind} | {args.messages / wall:,.0f} | {us:.1f} |")
    print(f"| cluster / single | {med['single'][0] / med['cluster'][0]:.2f} |"
          f" {med['cluster'][1] / med['single'][1]:.2f} |")


if __name__ == "__main__":
    main()
