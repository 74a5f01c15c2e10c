"""What this process knows of each room's seqs, and the record of rooms' top seqs.

One vocabulary for the whole message path:
- the room's **top** is the highest seq known to be stored (by this process or by any
  other, seen in a message, or read from MongoDB). The writer numbers new messages
  after it. It is never above the truth: a stale top costs one refused insert, never
  a wrong seq.
- a room with local members has a **watermark**: up to which seq every stored message
  was delivered here, and which seqs were delivered lately (see `Watermark`).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque

from server.logs import OncePer
from server.store import Store, StoreError

log = logging.getLogger(__name__)

# The record is one write for all rooms, yet a MongoDB-wire server written in Python
# (SecantusDB) spends about as much on it as on inserting a tick's messages.
RECORD_EVERY = 1.0


class Watermark:
    """Up to which seq this process has delivered every stored message of a room, and
    which seqs it delivered lately.

    `upto` moves only over seqs delivered here (stored here, received from Redis,
    read back from MongoDB) or shown by MongoDB to be holes, never past a message
    that pub/sub dropped; so a resync knows exactly where to start. The recent seqs
    keep a message that arrives twice (read back, then published late; or published
    twice) from being delivered twice; a hole is not among them, so a message that was
    still being stored when MongoDB showed it missing is delivered when it comes.
    """

    __slots__ = ("_order", "above", "recent", "upto", "was")

    RECENT = 4096

    def __init__(self, upto: int) -> None:
        self.upto = upto
        self.above: set[int] = set()  # delivered seqs beyond a hole
        self.was = -1  # upto at the previous check, while seqs sat above it
        self.recent: set[int] = set()
        self._order: deque[int] = deque()

    def seen(self, seq: int) -> None:
        """`seq` was delivered here."""
        if seq in self.recent:
            return
        self.recent.add(seq)
        self._order.append(seq)
        if len(self._order) > self.RECENT:
            self.recent.discard(self._order.popleft())
        self._advance(seq)

    def _advance(self, seq: int) -> None:
        if seq <= self.upto:
            return
        self.above.add(seq)
        while self.upto + 1 in self.above:
            self.upto += 1
            self.above.discard(self.upto)

    def delivered(self, seq: int) -> bool:
        return seq in self.recent or seq in self.above

    def delivered_from(self, seq: int) -> bool:
        """Whether any seq from `seq` up may have been delivered here (then ask
        `delivered`). Cheap, and False for a tick that nothing delivered ahead of the
        writer: every delivered seq is at most `upto` or in `above`."""
        return seq <= self.upto or bool(self.above)

    def through(self, after: int, last: int) -> None:
        """Every seq in (after, last] is delivered or a hole."""
        for seq in range(max(after, self.upto) + 1, last + 1):
            self._advance(seq)

    def stuck(self) -> bool:
        """Whether a hole has held the watermark since the previous call."""
        stuck = bool(self.above) and self.upto == self.was
        self.was = self.upto if self.above else -1
        return stuck


class RoomSeqs:
    """Each room's top, and the watermark of each room with local members."""

    __slots__ = ("_marks", "_tops")

    def __init__(self) -> None:
        self._tops: dict[str, int] = {}
        self._marks: dict[str, Watermark] = {}

    def knows(self, room: str) -> bool:
        """Whether the room's top has been learnt (the writer reads it once otherwise)."""
        return room in self._tops

    def top(self, room: str) -> int:
        return self._tops.get(room, 0)

    def saw(self, room: str, seq: int) -> None:
        """A message of the room, stored by anyone, carries this seq."""
        if seq > self._tops.get(room, -1):
            self._tops[room] = seq

    def watch(self, room: str, upto: int) -> None:
        """Start a watermark at `upto` (the top read after subscribing), if none yet."""
        if room not in self._marks:
            self._marks[room] = Watermark(upto)

    def unwatch(self, room: str) -> None:
        """The room's last local member left: deliveries are not tracked any more."""
        self._marks.pop(room, None)

    def mark(self, room: str) -> Watermark | None:
        return self._marks.get(room)

    def stuck(self) -> list[str]:
        """Rooms whose watermark a hole has held since the previous call."""
        return [room for room, mark in self._marks.items() if mark.stuck()]


class TopRecord:
    """Raises the rooms' recorded top seqs (`rooms.seq`) with one `$max` for all, in
    the background, at most every RECORD_EVERY seconds, and once more on close().

    The record only saves readers a scan: `Store.top_seq` reads it and then whatever
    was stored above it, so nothing waits for it.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self._unrecorded: dict[str, int] = {}  # tops stored but not yet recorded
        self._recording: asyncio.Task[None] | None = None  # a record write under way
        self._later: asyncio.TimerHandle | None = None
        self._recorded_at = -RECORD_EVERY  # loop time of the last record write
        self._closed = False
        self._warning = OncePer(log)

    def stored(self, room: str, seq: int) -> None:
        self._unrecorded[room] = seq

    def soon(self) -> None:
        """Record the unrecorded tops now, or RECORD_EVERY after the last write."""
        if (self._closed or not self._unrecorded or self._later is not None
                or self._recording is not None):
            return
        loop = asyncio.get_running_loop()
        self._later = loop.call_at(self._recorded_at + RECORD_EVERY, self._now)

    async def close(self) -> None:
        self._closed = True
        if self._later is not None:
            self._later.cancel()
            self._later = None
        if self._recording is not None:
            await asyncio.wait([self._recording])
        if self._unrecorded:
            await self._record()

    def _now(self) -> None:
        self._later = None
        self._recording = asyncio.ensure_future(self._record())

    async def _record(self) -> None:
        """One write of the unrecorded tops; those stored meanwhile follow later."""
        tops, self._unrecorded = self._unrecorded, {}
        try:
            await self.store.record_tops(tops)
        except StoreError as e:  # recorded again with the next tops
            self._warning.warning("recording top seqs failed: %s", e)
            for room, seq in tops.items():
                self._unrecorded[room] = max(seq, self._unrecorded.get(room, 0))
            return
        finally:
            self._recorded_at = asyncio.get_running_loop().time()
            self._recording = None
        self.soon()
