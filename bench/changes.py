"""What an edit or a reaction costs next to a message, against the embedded secantusd.

Starts a scratch secantusd (the embedded MongoDB-wire server) in a temp dir and stores,
through the server's own MessageWriter and MessageChanges (no sockets, no Redis: the
store path only), `--samples` of each, one at a time:

1. `send`: a new message (one ordered insert, the room's top recorded in the background);
2. `edit`: an edit of one of those messages (the message is read and checked, the
   `edited` event inserted, the message document updated);
3. `react`: a reaction toggled on and off (read, event insert, document update).

Prints p50 and p90 in ms and the ratio to `send`.

    python bench/changes.py [--samples 300]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scratch import p50_p90, run_with_scratch_mongo, sample_ms

from server.changes import MessageChanges
from server.metrics import Metrics
from server.model import User
from server.seqs import RoomSeqs
from server.store import Store
from server.writer import MessageWriter


def line(name: str, times: list[float], base: float | None) -> str:
    ratio = f"  x{statistics.median(times) / base:4.2f}" if base else ""
    return f"  {name:6} {p50_p90(times)}{ratio}"


async def run(url: str, samples: int) -> None:
    store = Store.connect(url, "bench_changes")
    await store.setup()
    writer = MessageWriter(store, RoomSeqs(), Metrics("bench"))
    changes = MessageChanges(store, writer, None)  # type: ignore[arg-type]
    author = User("a" * 24, "author")
    await store.create_room("bench", None)
    seqs: list[int] = []

    async def send(i: int) -> None:
        message, _ = await writer.send(author, "bench", f"message {i}", f"m{i}", origin=None,
                                       ref=None, timeout=10)
        seqs.append(message.seq)

    async def edit(i: int) -> None:
        await changes.edit(author, "bench", seqs[i], f"edited {i}", f"e{i}", None, None)

    async def react(i: int) -> None:
        await changes.react(author, "bench", seqs[i // 2], "👍", i % 2 == 0, f"r{i}", None,
                            None)

    print(f"one at a time, {samples} each")
    sends = await sample_ms(samples, send)
    base = statistics.median(sends)
    print(line("send", sends, None))
    print(line("edit", await sample_ms(samples, edit), base))
    print(line("react", await sample_ms(samples, react), base))
    await writer.close()
    await store.client.drop_database("bench_changes")
    store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=300)
    args = parser.parse_args()
    run_with_scratch_mongo("changes-", lambda url: run(url, args.samples))


if __name__ == "__main__":
    main()
