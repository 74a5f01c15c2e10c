"""Delivery: every frame of a room reaches every member, on this process and on the
others, once, and what Redis drops is read back from MongoDB.

The path of a stored tick (`stored`, the writer's `on_stored`):
1. each sender gets its ack, before anyone gets the message;
2. this process's members of each room get the frames not delivered yet (`deliver`);
3. one `Envelope` per room, all in one Redis pipeline, carries them to the others.

Another process's envelope arrives through `on_envelope` and goes to the local
members, minus the seqs delivered already. Redis pub/sub is at-most-once, so:
- after the subscriber reconnects, `resync` reads every watched room back from its
  watermark (`seqs.Watermark`);
- a process whose publish failed tells the others which seqs (`Unpublished`) once
  Redis takes publishes again, and they read those back;
- a watermark that a hole holds for a whole check interval is caught up too.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from server import protocol, tasks
from server.bus import Bus, BusError
from server.envelope import (
    CloseCredential,
    CloseUser,
    Command,
    Envelope,
    EnvelopeError,
    Handover,
    MemberChange,
    Outgoing,
    Unpublished,
    decode_command,
    encode_command,
)
from server.logs import OncePer
from server.metrics import Metrics
from server.model import Record
from server.recent import RecentRecords
from server.rooms import Apart, LocalRooms
from server.sends import Tick
from server.seqs import RoomSeqs
from server.store import Store, StoreError

log = logging.getLogger(__name__)

PAGE = 100  # messages per MongoDB read when catching up


class Delivery:
    """Fans frames out to local members and to the other processes; recovers losses."""

    def __init__(self, store: Store, bus: Bus, rooms: LocalRooms, seqs: RoomSeqs,
                 metrics: Metrics, *, node_id: str, check_interval: float = 10.0) -> None:
        self.store = store
        self.bus = bus
        self.rooms = rooms
        self.seqs = seqs
        self.metrics = metrics
        self._node = node_id.encode()
        # Each room's recent records, fed by every delivery here (for joins).
        self.recent = RecentRecords()
        self._check_interval = check_interval
        self._publish_warning = OncePer(log)
        # Rooms whose messages were stored but not published: room -> (lowest, highest seq)
        self._unpublished: dict[str, tuple[int, int]] = {}
        self._announcer: asyncio.Task[None] | None = None
        self._checker: asyncio.Task[None] | None = None
        self._catching_up: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        # Set by Chat: applies a membership change to this process's sockets.
        self.on_member_change: Callable[[MemberChange], None] | None = None
        # Set by the runtime: drops what a revocation makes stale (cached sessions).
        self.on_revoke: Callable[[CloseCredential | CloseUser], None] | None = None
        # Set by Chat: another process drained and hands its users' presence over.
        self.on_handover: Callable[[Handover], None] | None = None

    async def start(self) -> None:
        """Start listening to Redis; raises BusError if it cannot subscribe."""
        await self.bus.start(self)
        self._checker = asyncio.create_task(self._check_loop(), name="watermark-check")

    async def close(self, timeout: float) -> None:
        """Let announcements and catch-ups under way finish (up to `timeout`), then stop."""
        pending = [*self._tasks, *([self._announcer] if self._announcer else [])]
        if pending:
            await asyncio.wait(pending, timeout=timeout)
        for task in (self._announcer, self._checker, *self._tasks):
            await tasks.stop(task)
        await self.bus.close()

    # Rooms this process has members in -------------------------------------------

    async def subscribe(self, room: str, again: bool = False) -> None:
        """Subscribe to the room's channel unless subscribed (or `again`, for a room
        that has just got its first local member); raises BusError."""
        if again or not self.bus.is_subscribed(room):
            await self.bus.subscribe(room)

    def watch(self, room: str, top: int) -> None:
        """Track deliveries from `top`, read after subscribing: all later ones come live."""
        self.seqs.watch(room, top)

    def drop(self, room: str) -> Coroutine[Any, Any, None]:
        """The room's last local member left: forget it now; await the result to unsubscribe."""
        self.seqs.unwatch(room)
        self.recent.forget(room)
        return self._unsubscribe(room)

    async def _unsubscribe(self, room: str) -> None:
        if room not in self.rooms:  # a member may have joined again meanwhile
            await self.bus.unsubscribe(room)

    async def read_top(self, room: str, known: int | None = None) -> int:
        """The room's highest stored seq, read from MongoDB (0 for no room). With
        `known` (a seq known to be stored or recorded, such as the room document's
        recorded top read a moment ago), only what lies above it is read."""
        if known is not None:
            top = await self.store.top_seq_after(room, max(known, self.seqs.top(room)))
        else:
            top = await self.store.top_seq(room) or 0
        self.seqs.saw(room, top)
        return top

    # Out -----------------------------------------------------------------------

    async def stored(self, tick: Tick) -> None:
        """Acks, then each room's messages here, one room at a time with a yield between
        (the writer awaits this before the next tick's fan-out: seq order holds), then to
        the other processes."""
        for send, record in tick.acks:
            if send.origin is not None:
                send.origin.send_raw(protocol.dump(protocol.Ack.of(record), send.ref))
        envelopes = {}
        for room, messages in tick.messages.items():
            frames = envelopes[room] = [(m.seq, protocol.dump(m)) for m in messages]
            mark = self.seqs.mark(room)
            if mark is not None and mark.delivered_from(messages[0].seq):
                # A catch-up (it reads MongoDB) may have delivered some while this waited.
                keep = [i for i, m in enumerate(messages) if not mark.delivered(m.seq)]
                frames, messages = [frames[i] for i in keep], [messages[i] for i in keep]
            if frames:
                self.deliver(room, frames, records=messages)
            await asyncio.sleep(0)
        payloads = {room: Envelope(self._node, b"", time.time(), frames).encode()
                    for room, frames in envelopes.items()}
        for room, error in (await self.bus.publish_many(payloads) if payloads else {}).items():
            self._publish_failed(room, envelopes[room], error)

    async def fan_out(self, room: str, frame: bytes, exclude: bytes) -> None:
        """A frame outside the stream (presence, typing) to every member but one."""
        frames = [(0, frame)]
        self.deliver(room, frames, exclude)
        await self.publish(room, frames, exclude)

    def deliver(self, room: str, frames: list[Outgoing], exclude: bytes = b"",
                records: list[Record] | None = None) -> None:
        """Write frames to this process's members of the room; seqs count as delivered
        (and records as recent: `records` are the frames' own, if at hand)."""
        start = time.perf_counter()
        count = self.rooms.deliver(room, frames, exclude)
        self.metrics.delivered(count, time.perf_counter() - start)
        mark = self.seqs.mark(room)
        if mark is not None:
            for seq, _ in frames:
                if seq:
                    mark.seen(seq)
        if self.rooms.has_floors(room):
            self.rooms.lift_floors(room, time.monotonic())
        self.recent.delivered(room, frames, records)

    def deliver_apart(self, room: str, frames: list[Apart]) -> None:
        """Frames outside the stream (presence) to this process's members of the room,
        each kept from the connection named with it (b"" for none)."""
        start = time.perf_counter()
        count = self.rooms.deliver_apart(room, frames)
        self.metrics.delivered(count, time.perf_counter() - start)

    async def publish(self, room: str, frames: list[Outgoing], exclude: bytes = b"") -> None:
        """One Redis publish of a room's frames, serialized once for every process."""
        try:
            await self.bus.publish(room, Envelope(self._node, exclude, time.time(),
                                                  frames).encode())
        except BusError as e:
            self._publish_failed(room, frames, e)

    async def command(self, command: Command) -> None:
        """Carry out a cluster-wide command here and send it to the other processes."""
        if isinstance(command, MemberChange):
            if self.on_member_change is not None:
                self.on_member_change(command)
        else:
            self._apply(command)
        try:
            await self.bus.publish_control(encode_command(command))
        except BusError as e:
            log.warning("%s not broadcast: %s", type(command).__name__, e)

    def _publish_failed(self, room: str, frames: list[Outgoing], error: BusError) -> None:
        # Stored already: other processes read the messages back from MongoDB, when
        # their subscriber recovers or when we announce what failed.
        self.metrics.publish_failures.inc()
        self._publish_warning.warning("publish to %s failed: %s", room, error)
        seqs = [seq for seq, _ in frames if seq]
        if not seqs:
            return  # presence and typing are not worth a catch-up
        lo, hi = self._unpublished.get(room, (seqs[0], seqs[0]))
        self._unpublished[room] = (min(lo, *seqs), max(hi, *seqs))
        if self._announcer is None or self._announcer.done():
            self._announcer = asyncio.create_task(self._announce_unpublished(),
                                                  name="announce-unpublished")

    async def _announce_unpublished(self) -> None:
        """Once Redis takes publishes again, tell the other processes which stored
        messages never reached them, so they read those from MongoDB. Their own
        subscriber's recovery misses a publish that failed while it stayed up (a Redis
        only this process lost, a broken pooled connection, a timeout): such a message
        would reach their members only when a later one revealed the gap."""
        delay = 0.1
        node = self._node.decode()
        while self._unpublished:
            await asyncio.sleep(delay)
            for room, (lo, hi) in list(self._unpublished.items()):
                try:
                    await self.bus.publish_control(
                        encode_command(Unpublished(node, room, lo, hi)))
                except BusError:
                    delay = min(delay * 2, 2.0)
                    break
                if self._unpublished.get(room) == (lo, hi):
                    del self._unpublished[room]
                log.info("announced unpublished messages %d-%d of %s", lo, hi, room)

    # In (the bus calls these) ---------------------------------------------------------

    def on_envelope(self, room: str, payload: bytes) -> None:
        """Another process's frames for a room: deliver what is new here."""
        try:
            envelope = Envelope.decode(payload)
        except EnvelopeError as e:
            log.warning("ignoring a message on %s: %s", room, e)
            return
        if envelope.node == self._node or room not in self.rooms:
            return
        self.metrics.bus_latency.observe(max(0.0, time.time() - envelope.sent))
        mark = self.seqs.mark(room)
        frames: list[Outgoing] = []
        for seq, data in envelope.frames:
            if seq and mark is not None and mark.delivered(seq):
                # Read back from MongoDB already, or published twice (a retried PUBLISH).
                self.metrics.bus_duplicates.inc()
                continue
            frames.append((seq, data))
        if frames:
            if frames[-1][0]:  # messages (in seq order), not presence or typing
                self.seqs.saw(room, frames[-1][0])
            self.deliver(room, frames, envelope.exclude)

    def on_command(self, payload: bytes) -> None:
        try:
            command = decode_command(payload)
        except EnvelopeError as e:
            log.warning("ignoring a control message: %s", e)
            return
        self._apply(command)

    def _apply(self, command: Command) -> None:
        if isinstance(command, CloseCredential | CloseUser) and self.on_revoke is not None:
            self.on_revoke(command)
        match command:
            case CloseCredential(credential):
                self.rooms.shut_credential(credential, 1008, "credential revoked")
            case CloseUser(user_ids, code, reason):
                self.rooms.shut_users(user_ids, code, reason)
            case Unpublished(node, room, lo, hi):
                self._on_unpublished(node, room, lo, hi)
            case MemberChange(node) if (self.on_member_change is not None
                                        and node.encode() != self._node):
                self.on_member_change(command)
            case Handover(node) if self.on_handover is not None and node.encode() != self._node:
                self.on_handover(command)

    def _on_unpublished(self, node: str, room: str, lo: int, hi: int) -> None:
        """Another process stored messages lo..hi of a room but could not publish them."""
        mark = self.seqs.mark(room)
        if node.encode() == self._node or mark is None:
            return
        span = range(lo, hi + 1)
        if len(span) > mark.RECENT or any(not mark.delivered(seq) for seq in span):
            self._spawn(self._catch_up([room], start=lo - 1))

    async def resync(self) -> None:
        """After Redis comes back, fetch what pub/sub may have dropped from MongoDB."""
        self.metrics.resyncs.inc()
        await self._catch_up(self.rooms.rooms())

    # Recovery --------------------------------------------------------------------

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _catch_up(self, rooms: list[str], start: int | None = None) -> None:
        """Deliver every stored message after a room's watermark (or after `start`, if
        lower) not yet delivered here.

        Starting at the watermark, not at the highest seq delivered, matters: while
        Redis was away this process kept delivering its own messages, whose seqs
        interleave with the other processes' lost ones.
        """
        for room in rooms:
            mark = self.seqs.mark(room)
            if mark is None:
                continue
            after = mark.upto if start is None else min(start, mark.upto)
            try:
                top = await self.read_top(room)
                for _page in range(20):
                    messages, has_more = await self.store.messages(room, after=after,
                                                                   limit=PAGE, top=top)
                    fresh = [m for m in messages if not mark.delivered(m.seq)]
                    if fresh:
                        self.metrics.catch_ups.inc(len(fresh))
                        self.deliver(room, [(m.seq, protocol.dump(m)) for m in fresh],
                                     records=fresh)
                    if messages:
                        self.seqs.saw(room, messages[-1].seq)
                        # Seqs of the page's range that MongoDB lacks are failed stores.
                        mark.through(after, messages[-1].seq)
                        after = messages[-1].seq
                    if not has_more:
                        break
            except StoreError as e:
                log.warning("resync of %s failed: %s", room, e)

    async def _check_loop(self) -> None:
        """Catch up rooms whose watermark sat below delivered seqs for a whole interval:
        a publish was lost without the subscriber noticing, or a store failed."""
        while True:
            await asyncio.sleep(self._check_interval)
            stuck = self.seqs.stuck()
            if stuck and (self._catching_up is None or self._catching_up.done()):
                self._catching_up = self._spawn(self._catch_up(stuck))
