"""What one MongoDB call costs the chat server, against the embedded secantusd.

Starts a scratch secantusd (the embedded MongoDB-wire server) in a temp dir and
measures, with Motor as the server uses it:

1. `retry`: a seq `$inc` (findAndModify) and a 2-message insert, with PyMongo's
   retryable writes on and off, after the server has recorded `--writes` earlier writes.
2. `gil`: a find by `_id` while the event loop is busy (CPU-bound callbacks of 2 ms
   filling 80 % of the time, as fan-out does), with the default 5 ms GIL switch
   interval and with the server's 0.5 ms.
3. `history`: the newest page of 50 from a room of `--room-size` messages, read with
   an open range (`seq < top`, sorted) and with the bounded window the store uses.
4. `seq`: what a tick of 13 messages in 10 rooms costs in seq allocation: ten
   concurrent `$inc`s (the allocation before the optimistic sequence), the ordered
   13-document insert that now does it all, and the `$max` record of 10 rooms.

Each figure is the median (p50) and p90 of `--samples` sequential calls, in ms.

    python bench/store_ops.py [--samples 300] [--writes 10000] [--room-size 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import pymongo
from motor.motor_asyncio import AsyncIOMotorClient

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from server.embedded import mongo_service, start_on_free_port

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scratch import timed


async def retry(url: str, samples: int, writes: int) -> None:
    for retry_writes in ("true", "false"):
        await retry_once(url.replace("retryWrites=false", f"retryWrites={retry_writes}"),
                         f"ops_retry_{retry_writes}", samples, writes)


async def retry_once(url: str, db_name: str, samples: int, writes: int) -> None:
    client: AsyncIOMotorClient = AsyncIOMotorClient(url)
    db = client[db_name]
    await db.rooms.insert_one({"_id": "r", "seq": 0})
    for _ in range(writes):  # fill the server's record of retryable writes
        await db.rooms.update_one({"_id": "r"}, {"$inc": {"seq": 1}})
    inc = await timed(samples, lambda i: db.rooms.find_one_and_update(
        {"_id": "r"}, {"$inc": {"seq": 1}}, return_document=pymongo.ReturnDocument.AFTER))
    ins = await timed(samples, lambda i: db.messages.insert_many(
        [{"room": "r", "seq": 2 * i + k, "body": "x" * 64} for k in range(2)]))
    print(f"{url.rsplit('&', 1)[-1]:17} after {writes} writes: $inc {inc} | insert 2 {ins}")
    client.close()


async def gil(url: str, samples: int) -> None:
    client: AsyncIOMotorClient = AsyncIOMotorClient(url)
    db = client.ops_gil
    await db.rooms.insert_one({"_id": "r", "seq": 0})

    async def busy() -> None:
        while True:
            start = time.perf_counter()
            while time.perf_counter() - start < 0.002:
                pass
            await asyncio.sleep(0.0005)

    for interval in (0.005, 0.0005):
        sys.setswitchinterval(interval)
        burner = asyncio.ensure_future(busy())
        result = await timed(samples, lambda i: db.rooms.find_one({"_id": "r"}))
        burner.cancel()
        print(f"find by _id, loop 80 % busy, switch interval {interval * 1000:3.1f} ms: "
              f"{result}")
    sys.setswitchinterval(0.005)
    client.close()


async def history(url: str, samples: int, room_size: int) -> None:
    client: AsyncIOMotorClient = AsyncIOMotorClient(url)
    coll = client.ops_history.messages
    await coll.create_index([("room", 1), ("seq", 1)], unique=True)
    for start in range(1, room_size + 1, 1000):
        await coll.insert_many([{"room": "r", "seq": s, "body": "x" * 64}
                                for s in range(start, min(start + 1000, room_size + 1))])
    top = room_size
    open_range = await timed(samples, lambda i: coll.find(
        {"room": "r", "seq": {"$lte": top}}).sort("seq", -1).limit(51).to_list(None))
    window = await timed(samples, lambda i: coll.find(
        {"room": "r", "seq": {"$gt": top - 67, "$lte": top}}).sort("seq", -1).limit(51)
        .to_list(None))
    print(f"newest 50 of {room_size}: open range {open_range} | bounded window {window}")
    client.close()


async def seq(url: str, samples: int) -> None:
    client: AsyncIOMotorClient = AsyncIOMotorClient(url)
    db = client.ops_seq
    await db.messages.create_index([("room", 1), ("seq", 1)], unique=True)
    await db.messages.create_index("ckey", unique=True, sparse=True)
    rooms = [f"r{i}" for i in range(10)]
    await db.rooms.insert_many([{"_id": r, "seq": 0} for r in rooms])
    user = {"id": "0" * 24, "name": "bench-user", "bot": False}
    incs = await timed(samples, lambda i: asyncio.gather(*(
        db.rooms.find_one_and_update({"_id": r}, {"$inc": {"seq": 1}}) for r in rooms)))
    insert = await timed(samples, lambda i: db.messages.insert_many(
        [{"room": rooms[k % 10], "seq": 13 * i + k + 1, "user": user, "body": "x" * 64,
          "ts": 1, "client_id": f"c{i}-{k}", "ckey": f"c{i}-{k}"} for k in range(13)],
        ordered=True))
    record = await timed(samples, lambda i: db.rooms.bulk_write(
        [pymongo.UpdateOne({"_id": r}, {"$max": {"seq": 13 * i + 13}}) for r in rooms]))
    print(f"10 concurrent $inc {incs} | ordered insert of 13 {insert} | "
          f"$max record of 10 rooms {record}")
    client.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--writes", type=int, default=10_000)
    parser.add_argument("--room-size", type=int, default=5_000)
    parser.add_argument("--only", choices=("retry", "gil", "history", "seq"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="store-ops-") as tmp:
        service = start_on_free_port(lambda: mongo_service(Path(tmp)))
        try:
            url = service.url
            if args.only in (None, "retry"):
                await retry(url, args.samples, args.writes)
            if args.only in (None, "gil"):
                await gil(url, args.samples)
            if args.only in (None, "history"):
                await history(url, max(20, args.samples // 10), args.room_size)
            if args.only in (None, "seq"):
                await seq(url, args.samples)
        finally:
            service.stop()


if __name__ == "__main__":
    asyncio.run(main())
