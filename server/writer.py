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

The rooms' recorded top seqs (`rooms.seq`) are raised in the background by
`seqs.TopRecord`; nothing waits for it.

Round trips per tick, not per message or per room, bound the latency: with the
embedded MongoDB-wire server each costs 1-5 ms.

The writer only stores and numbers. It settles each send's future with its stored
message and hands every stored tick to one `on_stored` callback (which writes the
acks, then delivers, then publishes); it never writes to a socket.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import time
from collections.abc import Callable
from typing import Any

from server import protocol
from server.logs import OncePer
from server.metrics import Metrics
from server.model import Attachment, Event, Message, Record, User
from server.protocol import ProtocolError
from server.sends import (
    EventSpec,
    OnStored,
    QueuedSend,
    Tick,
    answer_repeats,
    retrieve,
    split_repeats,
    unavailable,
)
from server.seqs import RoomSeqs, TopRecord
from server.store import Store, StoreError, event_doc, message_doc

log = logging.getLogger(__name__)

MAX_BATCH = 200
# Refusals one tick may meet before its remaining sends are answered `unavailable`
# (each costs a round trip; only several processes racing for one room cause many).
MAX_REFUSALS = 16


class MessageWriter:
    """Stores queued sends in ticks; see the module docstring."""

    def __init__(self, store: Store, seqs: RoomSeqs, metrics: Metrics) -> None:
        self.store = store
        self.seqs = seqs
        self.metrics = metrics
        self.on_stored: OnStored | None = None  # set once by whoever fans ticks out
        self._queue: list[QueuedSend] = []
        self._task: asyncio.Task[None] | None = None
        self._awaiting = 0
        self._warning = OncePer(log)
        self.record = TopRecord(store)

    @property
    def queued(self) -> int:
        """Sends waiting for a tick (not counting the one being stored)."""
        return len(self._queue)

    @property
    def awaiting(self) -> int:
        """Sends whose callers still wait for them to be stored (a drain reports them)."""
        return self._awaiting

    async def close(self) -> None:
        """Finish the ticks under way, then record the top seqs not recorded yet."""
        while self._task is not None and not self._task.done():
            await asyncio.wait([self._task])
        await self.record.close()

    async def send(self, user: User, room: str, body: str, client_id: str | None, *,
                   origin: Any, ref: protocol.Ref, timeout: float,
                   reply_to: int | None = None, mentions: dict[str, Any] | None = None,
                   attachments: tuple[Attachment, ...] = ()) -> tuple[Message, bool]:
        """Queue a send and wait until it is stored; returns the stored message (for a
        resent client_id, the original) and whether it is new."""
        item = QueuedSend(user, room, body, client_id, origin, ref,
                          asyncio.get_running_loop().create_future(), reply_to=reply_to,
                          mentions=mentions, attachments=attachments)
        record = await self._store(item, timeout)
        if not isinstance(record, Message):  # the client_id of an edit, reused
            raise ProtocolError(protocol.BAD_REQUEST,
                                f"client_id {client_id!r} was used for another kind of frame")
        return record, item.fresh

    async def record_event(self, actor: User, room: str, event: EventSpec, *,
                           timeout: float, client_id: str | None = None, origin: Any = None,
                           ref: protocol.Ref = None,
                           late: Callable[[Record, bool], None] | None = None
                           ) -> tuple[Event, bool]:
        """Store an event in the room's stream, numbered like a message, and wait.
        Returns it and whether it is new (False: a resent client_id's original). With an
        `origin`, that connection gets its ack first. `late` is told of an event stored
        after its wait timed out (answered `unavailable`), with the same two values."""
        item = QueuedSend(actor, room, "", client_id, origin, ref,
                          asyncio.get_running_loop().create_future(), event)
        stored = await self._store(item, timeout, late)
        if not isinstance(stored, Event):  # the client_id of a message, reused
            raise ProtocolError(protocol.BAD_REQUEST,
                                f"client_id {client_id!r} was used for another kind of frame")
        return stored, item.fresh

    async def _store(self, item: QueuedSend, timeout: float,
                     late: Callable[[Record, bool], None] | None = None) -> Record:
        self._queue.append(item)
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="message-writer")
        self._awaiting += 1
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
                item.future.add_done_callback(retrieve)  # nobody awaits it any more
                if late is not None:
                    item.future.add_done_callback(
                        lambda f: None if f.cancelled() or f.exception() is not None
                        else late(f.result(), item.fresh))
            raise unavailable("the message store") from None
        finally:
            self._awaiting -= 1

    async def _run(self) -> None:
        try:
            ahead = self._next_tick()
            while ahead is not None:
                tick = await ahead
                # The next tick's insert travels while this one is fanned out: the
                # loop's CPU and MongoDB's round trip overlap.
                ahead = self._next_tick()
                if ahead is not None:
                    await asyncio.sleep(0)  # let it hand its insert to Motor first
                # Only sends settled now are acked: one that timed out while queued
                # was answered `unavailable`, and its late store still gets an ack.
                tick.acks = [(item, m) for item, m in tick.acks if item.settle(m)]
                self.record.soon()
                if self.on_stored is not None:
                    try:
                        await self.on_stored(tick)
                    except Exception:
                        log.exception("fan-out of stored messages crashed")
                if ahead is None:  # sends that came during the fan-out
                    ahead = self._next_tick()
        finally:
            self._task = None

    def _next_tick(self) -> asyncio.Future[Tick] | None:
        if not self._queue:
            return None
        batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
        return asyncio.ensure_future(self._tick_or_fail(batch))

    async def _tick_or_fail(self, batch: list[QueuedSend]) -> Tick:
        try:
            return await self._tick(batch)
        except Exception:
            log.exception("storing %d message(s) crashed", len(batch))
            for item in batch:
                item.fail(unavailable("the message store"))
            return Tick()

    async def _tick(self, batch: list[QueuedSend]) -> Tick:
        """Store one batch; returns the sends answered and each room's new messages."""
        started = time.perf_counter()
        firsts, repeats = split_repeats(batch)
        pending = await self._known_rooms(firsts)
        tick = Tick()
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
                self._stored(item, doc, tick)
            pending = pending[done:]
            if refused is None:
                break
            refusals += 1
            if refusals > MAX_REFUSALS:
                self._failed(pending, StoreError(f"{refusals} duplicate keys in one tick"))
                break
            try:
                pending = await self._after_refusal(pending, refused, tick)
            except StoreError as e:
                self._failed(pending, e)
                break
        if repeats:
            answer_repeats(repeats, tick)
        self.metrics.stored(sum(item.fresh and isinstance(r, Message) for item, r in tick.acks),
                            time.perf_counter() - started)
        return tick

    async def _known_rooms(self, items: list[QueuedSend]) -> list[QueuedSend]:
        """Read the recorded top seq of rooms this process has not seen yet; sends to
        rooms that do not exist are answered `not_found`."""
        unknown = list({item.room for item in items if not self.seqs.knows(item.room)})
        if not unknown:
            return items
        try:
            for room, seq in (await self.store.recorded_tops(unknown)).items():
                self.seqs.saw(room, seq)
        except StoreError as e:
            self._failed(items, e)
            return []
        known = []
        for item in items:
            if self.seqs.knows(item.room):
                known.append(item)
            else:
                item.fail(ProtocolError(protocol.NOT_FOUND, f"no room named {item.room!r}"))
        return known

    def _number(self, pending: list[QueuedSend], ts: int) -> list[dict[str, Any]]:
        """Documents for the pending sends, numbered after each room's known top."""
        nexts: dict[str, int] = {}
        docs = []
        for item in pending:
            seq = nexts[item.room] = nexts.get(item.room, self.seqs.top(item.room)) + 1
            if item.event is None:
                docs.append(message_doc(item.room, seq, item.user, item.body, ts,
                                        item.client_id, item.reply_to, item.mentions,
                                        self.store.words_field(item.body),
                                        attachments=[a.stored() for a in item.attachments]))
            else:
                docs.append(event_doc(item.room, seq, item.user, item.event.kind,
                                      item.event.target, item.event.data, ts, item.client_id))
        return docs

    def _stored(self, item: QueuedSend, doc: dict[str, Any], tick: Tick) -> None:
        room, seq = item.room, doc["seq"]
        self.seqs.saw(room, seq)
        self.record.stored(room, seq)
        message: Record
        if item.event is None:
            mentions = item.mentions or {}
            message = Message(room, str(doc["_id"]), seq, item.user, item.body, doc["ts"],
                              item.client_id, item.reply_to,
                              mentions=tuple(mentions.get("users", ())),
                              mentions_room=bool(mentions.get("room", False)),
                              attachments=item.attachments)
        else:
            message = Event(room, str(doc["_id"]), seq, doc["ts"], item.event.kind, item.user,
                            item.event.target, item.event.data, item.client_id)
        tick.acks.append((item, message))
        tick.messages.setdefault(room, []).append(message)

    async def _after_refusal(self, pending: list[QueuedSend], refused: str,
                             tick: Tick) -> list[QueuedSend]:
        """pending[0] was refused: answer the tick's resends, or read its room's top."""
        first = pending[0]
        if refused != "seq" and first.ckey is not None:
            pending = await self._answer_resends(pending, tick)
            if not pending or pending[0] is not first:
                return pending
            if refused == "ckey":  # refused, yet not found: let the sender retry
                first.fail(unavailable("the message store"))
                return pending[1:]
        self.metrics.seq_refusals.inc()
        self.seqs.saw(first.room,
                      await self.store.top_seq_after(first.room, self.seqs.top(first.room)))
        return pending

    async def _answer_resends(self, pending: list[QueuedSend],
                              tick: Tick) -> list[QueuedSend]:
        """Answer the sends whose client_id is stored already; returns the others."""
        originals = await self.store.find_by_ckeys(
            [item.ckey for item in pending if item.ckey is not None])
        rest = []
        for item in pending:
            original = originals.get(item.ckey) if item.ckey is not None else None
            if original is None:
                rest.append(item)
            else:
                self.seqs.saw(item.room, original.seq)
                self.metrics.duplicate_sends.inc()
                item.fresh = False
                tick.acks.append((item, original))
                # Stored by an insert that failed after all (answered `unavailable`), it
                # never went out: it goes with this tick, which every process delivers
                # but for the seqs it has delivered already.
                bisect.insort(tick.messages.setdefault(item.room, []), original,
                              key=lambda record: record.seq)
        return rest

    def _failed(self, items: list[QueuedSend], error: BaseException) -> None:
        self._warning.warning("storing %d message(s) failed: %s", len(items), error)
        self.metrics.store_failures.inc(len(items))
        for item in items:
            item.fail(unavailable("the message store"))
