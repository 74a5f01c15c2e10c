"""Search latency and indexing cost on the embedded MongoDB-wire server (no text index:
the chat server's own word index answers).

Starts a scratch secantusd in a temp dir, stores `--messages` messages across 100 public
rooms (bodies of 4-16 words drawn from a 20,000-word vocabulary with a Zipf-like
distribution, like chat; spread over 30 days), then times `MessageSearch.search`
(newest first, pages of 20)
for `--queries` queries of each kind: one word (drawn from the vocabulary by frequency,
so common words come up as often as people type them), two words, a two-word phrase.

Indexing cost: the CPU to compute a message's `words` (µs per message), and the storage
of the `words` field and index: the database's size with and without them, from
`dbStats` after inserting the same messages into two databases.

    python bench/search.py [--messages 100000] [--queries 50]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import struct
import sys
import time
from pathlib import Path
from typing import Any

from bson import ObjectId

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scratch import run_with_scratch_mongo

from server.model import User
from server.search import MessageSearch
from server.store import Store, message_doc
from server.store.search import index_words

ROOMS = 100
VOCABULARY = 20_000
DAYS = 30  # the history's time span


def corpus(n: int, rng: random.Random) -> tuple[list[str], list[float]]:
    words = [f"w{i}" for i in range(VOCABULARY)]
    weights = [1.0 / (i + 1) for i in range(VOCABULARY)]  # Zipf, s = 1
    return words, weights


def bodies(n: int, rng: random.Random) -> list[str]:
    words, weights = corpus(n, rng)
    return [" ".join(rng.choices(words, weights, k=rng.randint(4, 16))) for _ in range(n)]


async def fill(store: Store, texts: list[str], with_words: bool) -> float:
    """Insert the messages in batches; returns the seconds spent computing words."""
    author = User("a" * 24, "author")
    spent = 0.0
    now = int(time.time())
    batch: list[dict[str, Any]] = []
    seqs = [0] * ROOMS
    for i, body in enumerate(texts):
        room = i % ROOMS
        seqs[room] += 1
        words = None
        if with_words:
            start = time.perf_counter()
            words = index_words(body)
            spent += time.perf_counter() - start
        # Spread over the last DAYS days, oldest first, as a chat's history is.
        at = now - DAYS * 86400 + int(i * DAYS * 86400 / len(texts))
        doc = message_doc(f"room{room}", seqs[room], author, body, at * 1000, None,
                          words=words)
        doc["_id"] = ObjectId(struct.pack(">I", at) + os.urandom(8))
        batch.append(doc)
        if len(batch) == 5000:
            await store.db.messages.insert_many(batch, ordered=False)
            batch = []
    if batch:
        await store.db.messages.insert_many(batch, ordered=False)
    return spent


async def size(store: Store) -> int:
    stats = await store.db.command("dbStats")
    return int(stats.get("storageSize", 0) + stats.get("indexSize", 0))


async def run(url: str, n: int, queries: int) -> None:
    rng = random.Random(42)
    texts = bodies(n, rng)
    # Long timeouts: dbStats of a large database takes the MongoDB-wire server a while.
    plain = Store.connect(url, "bench_search_plain", timeout_ms=600_000)
    indexed = Store.connect(url, "bench_search", timeout_ms=600_000)
    await plain.setup()
    await indexed.setup()
    plain.text_native = True  # store no words: the baseline of what messages cost alone
    for store in (plain, indexed):
        for room in range(ROOMS):
            await store.create_room(f"room{room}", None)
    start = time.perf_counter()
    await fill(plain, texts, with_words=False)
    plain_s = time.perf_counter() - start
    start = time.perf_counter()
    cpu = await fill(indexed, texts, with_words=True)
    indexed_s = time.perf_counter() - start
    plain_size, indexed_size = await size(plain), await size(indexed)
    print(f"{n} messages in {ROOMS} rooms", flush=True)
    print(f"  words per message: {cpu / n * 1e6:.1f} µs of CPU to compute")
    print(f"  insert: {plain_s:.1f} s without words, {indexed_s:.1f} s with "
          f"({(indexed_s - plain_s) / n * 1e6:+.0f} µs per message)")
    if plain_size and indexed_size:
        print(f"  storage: {plain_size / 2**20:.1f} MiB without, {indexed_size / 2**20:.1f} MiB"
              f" with ({(indexed_size - plain_size) / n:+.0f} bytes per message)")
    words, weights = corpus(n, rng)
    searcher = MessageSearch(indexed)
    reader = User("b" * 24, "reader")
    kinds = {
        "one word": lambda: rng.choices(words, weights)[0],
        "two words": lambda: " ".join(rng.choices(words, weights, k=2)),
        "phrase": lambda: '"' + " ".join(rng.choice(texts).split()[:2]) + '"',
    }
    for kind, make in kinds.items():
        times = []
        for _ in range(queries):
            q = make()
            start = time.perf_counter()
            await searcher.search(reader, q, limit=20)
            times.append((time.perf_counter() - start) * 1000)
        times.sort()
        print(f"  {kind:9}  p50 {statistics.median(times):7.1f} ms   "
              f"p99 {times[min(len(times) - 1, int(len(times) * 0.99))]:7.1f} ms", flush=True)
    for store in (plain, indexed):
        await store.client.drop_database(store.db.name)
        store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=50)
    args = parser.parse_args()
    run_with_scratch_mongo("search-", lambda url: run(url, args.messages, args.queries))


if __name__ == "__main__":
    main()
