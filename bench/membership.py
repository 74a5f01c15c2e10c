"""What the membership check costs a `join` and a `send`, against the embedded secantusd.

Starts a scratch secantusd (the embedded MongoDB-wire server) in a temp dir, fills a
room with `--members` members (and as many other rooms' memberships, so the collection
is not trivially small), and measures with the server's own code:

1. `join`: the room lookup a join made before rooms had members (`Store.room`), and
   the whole check a join makes now (`Team.access`: the room, then the caller's
   membership document): p50 and p90 of `--samples` sequential calls, in ms.
2. `send`: the check every `send` makes (`Standing.check`: two dictionary lookups, no
   database read), in µs per call over 100 000 calls.

    python bench/membership.py [--samples 500] [--members 2000]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scratch import run_with_scratch_mongo, timed

from server.model import User
from server.standing import Standing
from server.store import Store, now_ms
from server.team import Team


async def run(url: str, samples: int, members: int) -> None:
    store = Store.connect(url, "bench_membership")
    await store.setup()
    people = [User(f"{i:024x}", f"user{i}") for i in range(members)]
    await store.create_room("big", None)
    await store.create_room("other", None)
    for person in people:
        await store.add_member("big", person)
        await store.add_member("other", person)
    team = Team(store, None, None, None, node_id="bench", max_rooms=50)  # type: ignore[arg-type]

    print(f"join, room of {members} members ({samples} calls each)")
    print("  room lookup only (before)   ",
          await timed(samples, lambda i: store.room("big")))
    print("  room + membership (now)     ",
          await timed(samples, lambda i: team.access(people[i % members], "big")))

    standing = Standing()
    standing.archived("archived-room", True)
    standing.muted("big", people[0].id, now_ms() + 60_000)
    user = people[1]
    calls = 100_000
    start = time.perf_counter()
    for _ in range(calls):
        standing.check(user.id, "big")
    per_call = (time.perf_counter() - start) / calls * 1e6
    print(f"send: Standing.check          {per_call:6.2f} µs per call")
    await store.client.drop_database("bench_membership")
    store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--members", type=int, default=2000)
    args = parser.parse_args()
    run_with_scratch_mongo("membership-", lambda url: run(url, args.samples, args.members))


if __name__ == "__main__":
    main()
