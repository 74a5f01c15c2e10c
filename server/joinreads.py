"""The reads of a join, shared: the joins of one room that arrive in the same loop turn
(a reconnecting crowd) read the room's top, its page and their read positions together,
and what this process holds of the room's recent records (`server.recent`) answers
them without MongoDB when it reaches the top and covers their page. A room's batches
are read one after the other: a crowd arriving over several loop turns reads the room's
page once, and the later batches are answered from the records the first one brought.

Every join in a batch asked after it had subscribed and registered as joining (so
anything stored later reaches it live, held until its `joined`), and the batch's reads
begin after all of them asked: each joiner gets exactly the page a read of its own
would have given. Per room and batch: the top (no query when this process already
delivers the room without a hole: its watermark is the top), one page read for the
joins without `since` and one for the resumes (after the lowest `since`; none for the
pages the recent records hold, none for a resume with nothing missed), one read of the
read positions this process does not know (it keeps them POSITION_SECONDS, moved on by
every `read` command), and one count of unread messages for the joiners whose read
position lies below both the page and the recent records.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from server import protocol
from server.cache import Expiring
from server.delivery import Delivery
from server.model import Record
from server.recent import Entry, Window, count_unread
from server.seqs import RoomSeqs
from server.store import UNREAD_CAP, Store
from server.store.members import member_key

JOIN_BACKLOG = 50  # records of a join's page without `since`
SINCE_PAGE = 100  # records of a resume's page
RESUME_READ_MAX = 1000  # records one shared resume read may fetch
# Read positions, kept current by the `read` commands every process receives.
POSITION_SECONDS = 30.0
POSITION_SIZE = 100_000

Page = tuple[list[Entry], bool]  # records, and whether more lie beyond them
# Records read from MongoDB that reach the top: every record in (start, top].
Fill = tuple[list[Record], list[Entry], int]


@dataclass(slots=True)
class Joining:
    """One join's question and, once read, its answer."""

    user_id: str
    known: int  # a seq known to be stored (the room document's recorded top)
    since: int | None
    done: asyncio.Future[JoinPage] = field(default_factory=lambda: asyncio.get_running_loop()
                                           .create_future())


@dataclass(frozen=True, slots=True)
class JoinPage:
    top: int
    messages: list[Entry]  # each record serialized once, as a page item
    has_more: bool
    read: protocol.ReadState


class JoinReads:
    """Batches the reads of concurrent joins per room; see the module docstring."""

    def __init__(self, store: Store, delivery: Delivery, seqs: RoomSeqs) -> None:
        self.store = store
        self.delivery = delivery
        self.recent = delivery.recent
        self.seqs = seqs
        self._pending: dict[str, list[Joining]] = {}
        self.positions: Expiring[str, int] = Expiring(POSITION_SECONDS, POSITION_SIZE)
        self._running: set[asyncio.Task[None]] = set()
        # The batch of each room being read now: the room's next batch waits for it
        # and is then mostly served by the records it brought (a crowd reconnecting
        # over several loop turns reads a room's page once, not once per turn).
        self._reading: dict[str, asyncio.Future[None]] = {}
        self.batches = 0  # room batches read (for tests and measurements)

    def read(self, room: str, user_id: str, known: int, since: int | None
             ) -> asyncio.Future[JoinPage]:
        """The top, page and read state of a join that has subscribed already (a Future
        shared by nothing else, so a join waits without a Task); raises StoreError."""
        if not self._pending:
            asyncio.get_running_loop().call_soon(self._flush)
        joining = Joining(user_id, known, since)
        self._pending.setdefault(room, []).append(joining)
        return joining.done

    def moved(self, room: str, user_id: str, seq: int) -> None:
        """A user's read position in a room moved to `seq` (a `read` command)."""
        key = member_key(room, user_id)
        known = self.positions.get(key)
        self.positions.drop(key)  # and reads under way keep what they found to themselves
        if known is not None:
            self.positions.fill(key, max(known, seq), self.positions.version)

    def _flush(self) -> None:
        pending, self._pending = self._pending, {}
        for room, joins in pending.items():
            self.batches += 1
            task = asyncio.ensure_future(self._read_room(room, joins))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _read_room(self, room: str, joins: list[Joining]) -> None:
        before = self._reading.get(room)
        mine = self._reading[room] = asyncio.get_running_loop().create_future()
        try:
            if before is not None:
                await asyncio.shield(before)  # its outcome is its joiners' business
            await self._answer(room, joins)
        except Exception as e:  # StoreError, or a bug: every joiner gets it, none hangs
            for j in joins:
                if not j.done.done():
                    j.done.set_exception(e)
        finally:
            mine.set_result(None)
            if self._reading.get(room) is mine:
                del self._reading[room]

    async def _top(self, room: str, known: int) -> int:
        mark = self.seqs.mark(room)
        if mark is not None and not mark.above:
            # Everything up to the watermark was delivered here, hence is stored; what
            # is stored above it has not been delivered yet, and reaches the joiners
            # live (they registered before this read).
            return mark.upto
        return await self.delivery.read_top(room, known)

    async def _answer(self, room: str, joins: list[Joining]) -> None:
        reading = self.recent.begin(room)
        fills: list[Fill] = []
        try:
            top, pages, read = await self._pages(room, joins, fills)
        except BaseException:
            self.recent.end(reading)
            raise
        fill = min(fills, key=lambda f: f[2]) if fills else None  # the widest
        window = (self.recent.end(reading, *fill, top=top) if fill is not None
                  else self.recent.end(reading))
        if window is not None and window.high < top:
            window = None
        counts: dict[int, tuple[int, int]] = {}
        below: dict[str, int] = {}  # users whose unread only MongoDB can count
        for j in joins:
            last_read = read[j.user_id]
            if window is not None and window.covers(last_read):
                counts[id(j)] = count_unread(window.entries, last_read, j.user_id,
                                             UNREAD_CAP, top)
                continue
            counted = _unread(*pages[id(j)], j.since, last_read, j.user_id)
            if counted is None:
                below[j.user_id] = last_read
            else:
                counts[id(j)] = counted
        found = await self.store.unread_of(room, below) if below else {}
        for j in joins:
            if id(j) not in counts:
                counted = found.get(j.user_id)
                if counted is None:  # more than one shared read settles
                    counted = await self.store.unread(room, j.user_id, read[j.user_id])
                counts[id(j)] = counted
            if not j.done.done():
                messages, has_more = pages[id(j)]
                j.done.set_result(JoinPage(top, messages, has_more, protocol.ReadState(
                    read[j.user_id], *counts[id(j)])))

    async def _pages(self, room: str, joins: list[Joining], fills: list[Fill]
                     ) -> tuple[int, dict[int, Page], dict[str, int]]:
        """The top, each join's page (from the recent records, or read) and each
        joiner's read position; the pages read that reach the top go to `fills`."""
        top = await self._top(room, max(j.known for j in joins))
        window: Window | None = self.recent.window(room)
        if window is not None and window.high != top:
            window = None
        pages: dict[int, Page] = {}
        latest: list[Joining] = []
        resumes: list[Joining] = []
        for j in joins:
            served: Page | None = None
            if j.since is not None and j.since >= top:
                served = ([], False)
            elif window is not None:
                served = (window.latest(JOIN_BACKLOG) if j.since is None
                          else window.after(j.since, SINCE_PAGE))
                if served is not None:
                    self.recent.served += 1
            if served is not None:
                pages[id(j)] = served
            elif j.since is None:
                latest.append(j)
            else:
                resumes.append(j)
        reads: list[asyncio.Future[Any]] = []

        async def read_latest() -> None:
            records, more = await self.store.messages(room, limit=JOIN_BACKLOG, top=top)
            entries = [Entry.of(r) for r in records]
            for j in latest:
                pages[id(j)] = (entries, more)
            fills.append((records, entries, records[0].seq - 1 if more else 0))

        async def read_resumes() -> None:
            pages.update(await self._resumes(room, top, resumes, fills))

        if latest:
            reads.append(asyncio.ensure_future(read_latest()))
        if resumes:
            reads.append(asyncio.ensure_future(read_resumes()))
        read: dict[str, int] = {}
        for j in joins:
            known_position = self.positions.get(member_key(room, j.user_id))
            if known_position is not None:
                read[j.user_id] = known_position
        unknown = list({j.user_id for j in joins} - read.keys())
        version = self.positions.version
        positions = (asyncio.ensure_future(self.store.room_read_positions(room, unknown))
                     if unknown else None)
        if positions is not None:
            reads.append(positions)
        if reads:  # none when the recent records served every page and positions are known
            try:
                await asyncio.gather(*reads)
            finally:
                for each in reads:
                    each.cancel()
        found = positions.result() if positions is not None else {}
        for uid in unknown:
            read[uid] = found.get(uid, 0)
            self.positions.fill(member_key(room, uid), read[uid], version)
        return top, pages, read

    async def _resumes(self, room: str, top: int, resumes: list[Joining], fills: list[Fill]
                       ) -> dict[int, Page]:
        """One read after the lowest `since`, sliced per resume; a resume whose slice
        that read cannot fill reads on its own."""
        lowest = min(j.since or 0 for j in resumes)
        span = max(j.since or 0 for j in resumes) - lowest
        records, more = await self.store.messages(
            room, after=lowest, limit=min(SINCE_PAGE + span, RESUME_READ_MAX), top=top)
        entries = [Entry.of(r) for r in records]
        if not more and records:  # every record after the lowest `since`, to the top
            if lowest:  # a record at or below a window's start must exist: the first
                fills.append((records[1:], entries[1:], records[0].seq))
            else:
                fills.append((records, entries, 0))
        pages: dict[int, Page] = {}
        for j in resumes:
            since = j.since or 0
            after = [e for e in entries if e.seq > since]
            if len(after) >= SINCE_PAGE:
                pages[id(j)] = (after[:SINCE_PAGE], len(after) > SINCE_PAGE or more)
            elif not more:
                pages[id(j)] = (after, False)
            else:
                alone, alone_more = await self.store.messages(room, after=since,
                                                              limit=SINCE_PAGE, top=top)
                pages[id(j)] = ([Entry.of(r) for r in alone], alone_more)
        return pages


def _unread(entries: list[Entry], has_more: bool, since: int | None, last_read: int,
            user_id: str) -> tuple[int, int] | None:
    """(unread, mentions) after `last_read` counted from a page, if it holds every
    record after it up to the top; else None."""
    if since is None:  # the newest records: older ones exist if has_more
        if has_more and (not entries or last_read < entries[0].seq - 1):
            return None
    elif has_more or last_read < since:  # the records after `since`
        return None
    return count_unread(entries, last_read, user_id, UNREAD_CAP)
