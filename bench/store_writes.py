"""What one stored message costs the embedded MongoDB-wire server, in its own CPU.

Starts a scratch secantusd (the embedded MongoDB-wire server) in a temp dir and reads
its CPU seconds (user + system, from /proc/<pid>/stat) before and after storing
messages, so the figure is the server's alone, whatever the client costs.

- `writer` (default): the chat server's own write path, as the code at this commit
  has it: `Store.setup()` (every index the server creates), rooms created as the
  server does, then `--messages` sends through `MessageWriter` with `--in-flight` of
  them waiting at once (each with a `client_id`, like the browser's and the load
  generator's), bodies of 4-16 words from a Zipf vocabulary (like chat). Run it at two
  commits to compare them.
- `indexes`: the same documents inserted with `insert_many` in ticks of `--tick` into
  collections that differ only in their indexes, to price each index on its own.

Prints secantusd CPU-ms per 1,000 stored messages (= µs per message), messages/s, and
this process's own CPU-ms per 1,000 (in `writer` mode: the writer, Motor and BSON, the
chat server's side of storing), each the median of `--repeat` runs (a fresh database
each).

    python bench/store_writes.py [--messages 4000] [--in-flight 200] [--repeat 3]
    python bench/store_writes.py --mode indexes [--tick 100]

`--untuned` runs secantusd without `server/secantus_tuning.py`, to price that too.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from motor.motor_asyncio import AsyncIOMotorClient

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from server import writer as writer_module
from server.embedded import mongo_service, start_on_free_port
from server.metrics import Metrics
from server.model import User
from server.seqs import RoomSeqs
from server.store import Store, message_doc
from server.store.search import index_words
from server.writer import MessageWriter

VOCABULARY = 20_000


def bodies(n: int, rng: random.Random) -> list[str]:
    """Chat-like bodies: 4-16 words from a Zipf-distributed vocabulary."""
    words = [f"w{i}" for i in range(VOCABULARY)]
    weights = [1.0 / (i + 1) for i in range(VOCABULARY)]
    return [" ".join(rng.choices(words, weights, k=rng.randint(4, 16))) for _ in range(n)]


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a live process."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def measured(pid: int, n: int, work: Callable[[], Awaitable[None]]
                   ) -> tuple[float, float, float]:
    """Run `work` (which stores n messages): secantusd µs per message, messages/s, and
    this process's µs per message (the writer, Motor and BSON: the chat server's side)."""
    cpu0, own0, wall0 = cpu_seconds(pid), time.process_time(), time.perf_counter()
    await work()
    wall = time.perf_counter() - wall0
    return (1e6 * (cpu_seconds(pid) - cpu0) / n, n / wall,
            1e6 * (time.process_time() - own0) / n)


async def writer_run(url: str, pid: int, db_name: str, n: int, rooms: int, in_flight: int,
                     texts: list[str]) -> tuple[float, float, float]:
    store = Store.connect(url, db_name, timeout_ms=120_000)
    await store.setup()
    names = [f"room{r}" for r in range(rooms)]
    for name in names:
        await store.create_room(name, None)
    writer = MessageWriter(store, RoomSeqs(), Metrics("bench"))
    users = [User(f"{u:024x}", f"user{u}") for u in range(in_flight)]

    async def sender(k: int, count: int, offset: int) -> None:
        for i in range(count):
            j = offset + i * in_flight + k
            await writer.send(users[k], names[j % rooms], texts[j % len(texts)],
                              f"c{offset}-{k}-{i}", origin=None, ref=None, timeout=60.0)

    async def burst(count: int, offset: int) -> None:
        per = max(1, count // in_flight)
        await asyncio.gather(*(sender(k, per, offset) for k in range(in_flight)))

    await burst(in_flight * 2, 0)  # warm-up: rooms' tops read, caches filled
    per = max(1, n // in_flight)
    result = await measured(pid, per * in_flight, lambda: burst(per * in_flight, 10**6))
    await writer.close()
    await store.client.drop_database(db_name)
    store.close()
    return result


# Index sets of the `indexes` mode: name -> [(keys, options)] besides `_id`.
BASE = [([("ckey", 1)], {"unique": True, "sparse": True}),
        ([("mentions.users", 1)], {"sparse": True}),
        ([("data.message_seq", 1)], {"sparse": True}),
        ([("attachments.id", 1)], {"sparse": True})]
ROOM_SEQ = [([("room", 1), ("seq", 1)], {"unique": True})]
WORDS = [([("words", 1)], {"sparse": True})]
TS = [([("ts", 1)], {})]
INDEX_SETS: dict[str, tuple[list[tuple[list[tuple[str, int]], dict[str, Any]]], str]] = {
    "_id only": ([], "oid"),
    "sparse ones (ckey, mentions, events, files)": (BASE, "oid"),
    "+ (room, seq)": (BASE + ROOM_SEQ, "oid"),
    "+ (room, seq) + ts": (BASE + ROOM_SEQ + TS, "oid"),
    "+ (room, seq) + ts + words": (BASE + ROOM_SEQ + TS + WORDS, "oid"),
    "_id = room/seq, sparse ones + ts + words": (BASE + TS + WORDS, "roomseq"),
    "_id = room/seq, sparse ones + ts": (BASE + TS, "roomseq"),
}


async def indexes_run(url: str, pid: int, db_name: str, n: int, rooms: int, tick: int,
                      texts: list[str], name: str) -> tuple[float, float, float]:
    client: AsyncIOMotorClient = AsyncIOMotorClient(url)
    coll = client[db_name].messages
    specs, id_kind = INDEX_SETS[name]
    for keys, options in specs:
        await coll.create_index(keys, **options)
    author = User("a" * 24, "author")
    seqs = [0] * rooms
    ts = int(time.time() * 1000)

    def doc(i: int) -> dict[str, Any]:
        r = i % rooms
        seqs[r] += 1
        body = texts[i % len(texts)]
        d = message_doc(f"room{r}", seqs[r], author, body, ts, f"c{i}",
                        words=index_words(body) if WORDS[0] in specs else None)
        if id_kind == "roomseq":
            d["_id"] = f"room{r}\x00{seqs[r]:012d}"
        return d

    async def insert(start: int, count: int) -> None:
        for at in range(start, start + count, tick):
            await coll.insert_many([doc(i) for i in range(at, min(at + tick, start + count))],
                                   ordered=True)

    await insert(0, 2 * tick)  # warm-up
    result = await measured(pid, n, lambda: insert(2 * tick, n))
    await client.drop_database(db_name)
    client.close()
    return result


def summary(label: str, results: list[tuple[float, float, float]]) -> str:
    cpu = [r[0] for r in results]
    rate = [r[1] for r in results]
    own = [r[2] for r in results]
    return (f"{label:44} secantusd {statistics.median(cpu):7.0f} CPU-ms per 1,000 messages "
            f"({' / '.join(f'{c:.0f}' for c in cpu)}); "
            f"{statistics.median(rate):6.0f} messages/s; client side "
            f"{statistics.median(own):4.0f} CPU-ms per 1,000")


async def run(url: str, pid: int, args: argparse.Namespace) -> None:
    texts = bodies(5000, random.Random(42))
    if args.mode == "writer":
        results = [await writer_run(url, pid, f"bench_writes_{i}", args.messages, args.rooms,
                                    args.in_flight, texts) for i in range(args.repeat)]
        print(summary(f"writer, {args.in_flight} in flight, ticks <= {args.max_batch}",
                      results),
              flush=True)
        return
    for name in INDEX_SETS:
        results = [await indexes_run(url, pid, f"bench_idx_{i}", args.messages, args.rooms,
                                     args.tick, texts, name) for i in range(args.repeat)]
        print(summary(name, results), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=("writer", "indexes"), default="writer")
    parser.add_argument("--messages", type=int, default=4000)
    parser.add_argument("--rooms", type=int, default=100)
    parser.add_argument("--in-flight", type=int, default=200)
    parser.add_argument("--tick", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--max-batch", type=int, default=writer_module.MAX_BATCH,
                        help="sends per tick at most (the writer's MAX_BATCH)")
    parser.add_argument("--untuned", action="store_true",
                        help="run secantusd as shipped (without server/secantus_tuning.py)")
    args = parser.parse_args()
    writer_module.MAX_BATCH = args.max_batch
    with tempfile.TemporaryDirectory(prefix="store-writes-") as tmp:
        service = start_on_free_port(
            lambda: mongo_service(Path(tmp), tuned=not args.untuned))
        try:
            assert service.pid is not None
            asyncio.run(run(service.url, service.pid, args))
        finally:
            service.stop()


if __name__ == "__main__":
    main()
