"""The message writer: every send of this process is stored through one queue.

Sends are stored in ticks. A tick takes everything queued (up to MAX_BATCH) in every
room and inserts it with one ordered `insert_many`, each message numbered with the
next seq of its room that this process knows of (the optimistic sequence). The
unique indexes decide the rare cases, one extra round trip each:

- (room, seq) refuses a seq another process stored first: read that room's newest
  seq and number the rest of the tick after it;
- ckey refuses a `client_id` already stored (a resend): answer the resends of the
  tick with their original acks and store the rest.

The insert is ordered, so it stops at the refused message and a room's seqs never
get a hole: nothing is reserved that a failure could leave unused.

Ticks are pipelined: as soon as one tick's insert returns, the next tick's insert
is handed to MongoDB, and only then are the first tick's senders acked and its
messages delivered to local sockets (room by room, yielding to the loop in between)
and published on Redis. So MongoDB's round trip overlaps the loop's fan-out, while
each room's messages still go out in seq order, tick after tick.

The rooms' recorded top seqs (`rooms.seq`) are raised with one `$max` for all in
the background, at most every RECORD_EVERY seconds, and once more by `close()`. The
record only saves readers a scan: `Store.top_seq` reads it and then whatever was
stored above it, so nothing waits for it.

Round trips per tick, not per message or per room, bound the latency: with the
embedded MongoDB-wire server each costs 1-5 ms.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from bson import ObjectId

from server import protocol
from server.logs import OncePer
from server.metrics import Metrics
from server.protocol import ProtocolError
from server.rooms import Outgoing
from server.store import Store, StoreError, User, client_key

log = logging.getLogger(__name__)

MAX_BATCH = 200
# The record is one write for all rooms, yet a MongoDB-wire server written in Python
# (SecantusDB) spends about as much on it as on inserting a tick's messages.
RECORD_EVERY = 1.0
# Refusals one tick may meet before its remaining sends are answered `unavailable`
# (each costs a round trip; only several processes racing for one room cause many).
MAX_REFUSALS = 16

# Hands a room's stored messages of one tick to local sockets (synchronously) ...
Deliver = Callable[[str, list[Outgoing]], None]
# ... and to the other processes, through the room's Redis channel.
Publish = Callable[[str, list[Outgoing]], Awaitable[None]]


class Sender(Protocol):
    """What the writer needs of the connection a send came from."""

    user: User

    def send_raw(self, data: bytes) -> None: ...


def unavailable(what: str) -> ProtocolError:
    return ProtocolError(protocol.UNAVAILABLE, f"{what} is unavailable, try again")


@dataclass(eq=False)
class Send:
    """One queued send; its future resolves to the ack (or fails with ProtocolError)."""

    conn: Sender
    room: str
    ref: protocol.Ref
    body: str
    client_id: str | None
    future: asyncio.Future[dict[str, Any]] = field(repr=False)
    # What makes (room, user, client_id) unique, in the store and within a tick.
    ckey: str | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        if self.client_id is not None:
            self.ckey = client_key(self.room, self.user["id"], self.client_id)

    @property
    def user(self) -> User:
        return self.conn.user

    def resolve(self, ack: dict[str, Any]) -> None:
        """Write the ack to the sender now, so it always precedes the message frame."""
        if self.future.done():
            return
        frame = {**ack, "ref": self.ref} if self.ref is not None else ack
        self.conn.send_raw(protocol.dump(frame).encode())
        self.future.set_result(ack)

    def fail(self, error: ProtocolError) -> None:
        if not self.future.done():
            self.future.set_exception(error)


@dataclass
class _Stored:
    """What a tick stored: acks to write, then message frames to fan out, per room."""

    acks: list[tuple[Send, dict[str, Any]]] = field(default_factory=list)
    frames: dict[str, list[Outgoing]] = field(default_factory=dict)


class MessageWriter:
    """Stores queued sends in ticks; see the module docstring."""

    def __init__(self, store: Store, deliver: Deliver, publish: Publish,
                 metrics: Metrics) -> None:
        self.store = store
        self.deliver = deliver
        self.publish = publish
        self.metrics = metrics
        self._queue: list[Send] = []
        self._task: asyncio.Task[None] | None = None
        self._warning = OncePer(log)
        # Per room: the highest seq known to be stored (own inserts, other processes'
        # messages seen, the record read at join). Never above the truth: a stale
        # value costs one refusal, never a wrong seq.
        self._tops: dict[str, int] = {}
        self._unrecorded: dict[str, int] = {}  # tops stored but not yet in rooms.seq
        self._recording: asyncio.Task[None] | None = None  # a record write under way
        self._record_later: asyncio.TimerHandle | None = None
        self._recorded_at = -RECORD_EVERY  # loop time of the last record write
        self._closed = False

    @property
    def queued(self) -> int:
        """Sends waiting for a tick (not counting the one being stored)."""
        return len(self._queue)

    async def close(self) -> None:
        """Finish the ticks under way, then record the top seqs not recorded yet."""
        while self._task is not None and not self._task.done():
            await asyncio.wait([self._task])
        self._closed = True
        if self._record_later is not None:
            self._record_later.cancel()
            self._record_later = None
        if self._recording is not None:
            await asyncio.wait([self._recording])
        if self._unrecorded:
            await self._record()

    def top(self, room: str) -> int:
        """The highest seq of a room this process knows to be stored (0 if none)."""
        return self._tops.get(room, 0)

    def saw(self, room: str, seq: int) -> None:
        """A message of the room, stored by anyone, was seen with this seq."""
        if seq > self._tops.get(room, -1):
            self._tops[room] = seq

    async def send(self, conn: Sender, room: str, body: str, client_id: str | None,
                   ref: protocol.Ref, timeout: float) -> dict[str, Any]:
        """Queue a send and wait for its ack (already written to the sender)."""
        item = Send(conn, room, ref, body, client_id,
                    asyncio.get_running_loop().create_future())
        self._queue.append(item)
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="message-writer")
        try:
            return await asyncio.wait_for(asyncio.shield(item.future), timeout)
        except asyncio.TimeoutError:
            # Still queued behind a stuck store: drop it, so that while MongoDB hangs
            # the queue holds only sends younger than `timeout` (never stored: the
            # sender retries with its client_id). Already in a tick: it may still be
            # stored, and then a late ack follows.
            try:
                self._queue.remove(item)
            except ValueError:
                item.future.add_done_callback(_retrieve)  # nobody awaits it any more
            raise unavailable("the message store") from None

    async def _run(self) -> None:
        try:
            ahead = self._next_tick()
            while ahead is not None:
                stored = await ahead
                # The next tick's insert travels while this one's acks and messages
                # are written: the loop's CPU and MongoDB's round trip overlap.
                ahead = self._next_tick()
                if ahead is not None:
                    await asyncio.sleep(0)  # let it hand its insert to Motor first
                for item, ack in stored.acks:
                    item.resolve(ack)
                await self._fan_out(stored.frames)
                if ahead is None:  # sends that came during the fan-out
                    ahead = self._next_tick()
        finally:
            self._task = None

    def _next_tick(self) -> asyncio.Future[_Stored] | None:
        if not self._queue:
            return None
        batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
        return asyncio.ensure_future(self._tick_or_fail(batch))

    async def _tick_or_fail(self, batch: list[Send]) -> _Stored:
        try:
            return await self._tick(batch)
        except Exception:
            log.exception("storing %d message(s) crashed", len(batch))
            for item in batch:
                item.fail(unavailable("the message store"))
            return _Stored()

    async def _fan_out(self, stored: dict[str, list[Outgoing]]) -> None:
        """Deliver and publish, before the next tick, so every room's messages go out
        in seq order; the top seqs are recorded meanwhile."""
        self._record_soon()
        try:
            for room, frames in stored.items():
                self.deliver(room, frames)
                await asyncio.sleep(0)  # reads, store replies and acks between rooms
            await asyncio.gather(*(self.publish(room, frames)
                                   for room, frames in stored.items()))
        except Exception:
            log.exception("fan-out of stored messages crashed")

    def _record_soon(self) -> None:
        """Record the unrecorded tops now, or RECORD_EVERY after the last write."""
        if (self._closed or not self._unrecorded or self._record_later is not None
                or self._recording is not None):
            return
        loop = asyncio.get_running_loop()
        self._record_later = loop.call_at(self._recorded_at + RECORD_EVERY, self._record_now)

    def _record_now(self) -> None:
        self._record_later = None
        self._recording = asyncio.ensure_future(self._record())

    async def _record(self) -> None:
        """One write of the unrecorded tops; those stored meanwhile follow later."""
        tops, self._unrecorded = self._unrecorded, {}
        try:
            await self.store.record_seqs(tops)
        except StoreError as e:  # the next tick records these tops again
            self._warning.warning("recording top seqs failed: %s", e)
            for room, seq in tops.items():
                self._unrecorded[room] = max(seq, self._unrecorded.get(room, 0))
            return
        finally:
            self._recorded_at = asyncio.get_running_loop().time()
            self._recording = None
        self._record_soon()

    async def _tick(self, batch: list[Send]) -> _Stored:
        """Store one batch; returns the acks to write and each room's message frames."""
        started = time.perf_counter()
        pending = await self._known_rooms(self._firsts(batch))
        stored = _Stored()
        ts = int(time.time() * 1000)
        refusals = 0
        while pending:
            docs = self._number(pending, ts)
            try:
                done, refused = await self.store.insert_in_order(docs)
            except StoreError as e:
                # An unknown prefix may be stored: resends find it by client_id, and
                # the next insert in its room is refused until the top is read again.
                self._failed(pending, e)
                break
            for item, doc in zip(pending[:done], docs[:done], strict=True):
                self._stored(item, doc, stored)
            pending = pending[done:]
            if refused is None:
                break
            refusals += 1
            if refusals > MAX_REFUSALS:
                self._failed(pending, StoreError(f"{refusals} duplicate keys in one tick"))
                break
            try:
                pending = await self._after_refusal(pending, refused)
            except StoreError as e:
                self._failed(pending, e)
                break
        self.metrics.stored(len(stored.acks), time.perf_counter() - started)
        return stored

    async def _known_rooms(self, items: list[Send]) -> list[Send]:
        """Read the recorded top seq of rooms this process has not seen yet; sends to
        rooms that do not exist are answered `not_found`."""
        unknown = list({item.room for item in items if item.room not in self._tops})
        if not unknown:
            return items
        try:
            for room, seq in (await self.store.room_seqs(unknown)).items():
                self.saw(room, seq)
        except StoreError as e:
            self._failed(items, e)
            return []
        known = []
        for item in items:
            if item.room in self._tops:
                known.append(item)
            else:
                item.fail(ProtocolError(protocol.NOT_FOUND, f"no room named {item.room!r}"))
        return known

    def _number(self, pending: list[Send], ts: int) -> list[dict[str, Any]]:
        """Documents for the pending sends, numbered after each room's known top."""
        nexts: dict[str, int] = {}
        docs = []
        for item in pending:
            seq = nexts[item.room] = nexts.get(item.room, self._tops[item.room]) + 1
            doc: dict[str, Any] = {"_id": ObjectId(), "room": item.room, "seq": seq,
                                   "user": item.user, "body": item.body, "ts": ts}
            if item.ckey is not None:
                doc["client_id"] = item.client_id
                doc["ckey"] = item.ckey
            docs.append(doc)
        return docs

    def _stored(self, item: Send, doc: dict[str, Any], stored: _Stored) -> None:
        room, seq = item.room, doc["seq"]
        self.saw(room, seq)
        self._unrecorded[room] = seq
        message = {"room": room, "id": str(doc["_id"]), "seq": seq, "user": doc["user"],
                   "body": doc["body"], "ts": doc["ts"], "client_id": item.client_id}
        stored.acks.append((item, _ack(message)))
        stored.frames.setdefault(room, []).append(
            (seq, protocol.dump({"type": "message", **message}).encode()))

    async def _after_refusal(self, pending: list[Send], refused: str) -> list[Send]:
        """pending[0] was refused: answer the tick's resends, or read its room's top."""
        first = pending[0]
        if refused != "seq" and first.ckey is not None:
            pending = await self._answer_resends(pending)
            if not pending or pending[0] is not first:
                return pending
            if refused == "ckey":  # refused, yet not found: let the sender retry
                first.fail(unavailable("the message store"))
                return pending[1:]
        self.metrics.seq_refusals.inc()
        self._tops[first.room] = await self.store.top_seq_after(first.room,
                                                                self._tops[first.room])
        return pending

    async def _answer_resends(self, pending: list[Send]) -> list[Send]:
        """Ack the sends whose client_id is stored already; returns the others."""
        originals = await self.store.find_by_ckeys(
            [item.ckey for item in pending if item.ckey is not None])
        rest = []
        for item in pending:
            original = originals.get(item.ckey) if item.ckey is not None else None
            if original is None:
                rest.append(item)
            else:
                self.saw(item.room, original["seq"])
                self.metrics.duplicate_sends.inc()
                item.resolve(_ack(original))
        return rest

    @staticmethod
    def _firsts(batch: list[Send]) -> list[Send]:
        """The batch without repeats: a client_id sent twice in one tick is stored
        once, the second answered with the first's outcome."""
        firsts: dict[str, Send] = {}
        out = []
        for item in batch:
            if item.ckey is not None:
                first = firsts.get(item.ckey)
                if first is not None:
                    first.future.add_done_callback(_mirror(item))
                    continue
                firsts[item.ckey] = item
            out.append(item)
        return out

    def _failed(self, items: list[Send], error: BaseException) -> None:
        self._warning.warning("storing %d message(s) failed: %s", len(items), error)
        self.metrics.store_failures.inc(len(items))
        for item in items:
            item.fail(unavailable("the message store"))


def _ack(m: dict[str, Any]) -> dict[str, Any]:
    return {"type": "ack", "room": m["room"], "client_id": m["client_id"], "id": m["id"],
            "seq": m["seq"], "ts": m["ts"]}


def _retrieve(fut: asyncio.Future[Any]) -> None:
    """Mark an abandoned future's exception as seen (asyncio logs it otherwise)."""
    if not fut.cancelled():
        fut.exception()


def _mirror(target: Send) -> Callable[[asyncio.Future[Any]], None]:
    def copy(source: asyncio.Future[dict[str, Any]]) -> None:
        if target.future.done():
            return
        if source.cancelled():
            target.future.cancel()
        elif (exc := source.exception()) is not None:
            target.future.set_exception(exc)
        else:
            target.resolve(source.result())
    return copy
