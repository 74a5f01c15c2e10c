"""What one page of history costs, read the way the server reads it (`Store.messages`).

Starts a scratch secantusd (the embedded MongoDB-wire server) in a temp dir, stores a
room of `--room-size` messages (100 000 by default), then times pages of 50:

- `top`: the newest page (what `join` and `history` without a cursor read);
- `middle`: `before` = half the room (scrolling back);
- `after`: the oldest page after a seq a tenth of the way in (resuming with `since`);
- `huge before`: `before` = 2**62 - 1, far above the room's newest seq (a client can
  send it; it must cost what the newest page costs).

Each figure is the median (p50) and p90 of `--samples` sequential calls, in ms.

    python bench/history_pages.py [--room-size 100000] [--samples 50]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bson import ObjectId

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from server.embedded import mongo_service, start_on_free_port
from server.store import Store, StoreError

HUGE = 2**62 - 1


async def fill(store: Store, room: str, size: int) -> None:
    """`size` messages of one room, inserted 1000 at a time, and the room's record."""
    await store.create_room(room, creator=None)
    author = {"id": "0" * 24, "name": "bench", "bot": False}
    for start in range(1, size + 1, 1000):
        docs = [{"_id": ObjectId(), "room": room, "seq": seq, "user": author,
                 "body": f"message {seq} of the history benchmark", "ts": seq}
                for seq in range(start, min(size, start + 999) + 1)]
        await store.insert_in_order(docs)
    await store.record_tops({room: size})


async def timed(samples: int, read: object) -> tuple[float, float]:
    times = []
    for _ in range(samples):
        start = time.perf_counter()
        await read()  # type: ignore[operator]
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.9)]


async def main(room_size: int, samples: int) -> None:
    with tempfile.TemporaryDirectory(prefix="history-bench-") as tmp:
        svc = start_on_free_port(lambda: mongo_service(Path(tmp)))
        store = Store.connect(svc.url, "history_bench")
        try:
            await store.setup()
            started = time.perf_counter()
            await fill(store, "big", room_size)
            print(f"stored {room_size} messages in {time.perf_counter() - started:.1f} s")
            # `huge before` goes last: where it times out, the server is still busy
            # with the abandoned query for a while, and would slow what follows.
            pages = {
                "top": lambda: store.messages("big", limit=50),
                "middle": lambda: store.messages("big", before=room_size // 2, limit=50),
                "after": lambda: store.messages("big", after=room_size // 10, limit=50),
                "huge before": lambda: store.messages("big", before=HUGE, limit=50),
            }
            for name, read in pages.items():
                started = time.perf_counter()
                try:
                    got, _ = await read()
                except StoreError as e:  # the server answers such a request `unavailable`
                    print(f"{name:12s} failed after {time.perf_counter() - started:.1f} s: {e}")
                    continue
                assert len(got) == 50, (name, len(got))
                p50, p90 = await timed(samples, read)
                print(f"{name:12s} p50 {p50:8.2f} ms  p90 {p90:8.2f} ms")
        finally:
            store.close()
            svc.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--room-size", type=int, default=100_000)
    parser.add_argument("--samples", type=int, default=50)
    args = parser.parse_args()
    asyncio.run(main(args.room_size, args.samples))
