"""The message writer: every send of this process is stored through one queue.

Sends are stored in ticks. A tick takes everything queued (up to MAX_BATCH), answers
resent `client_id`s from one lookup, reserves the seqs of each room it touches (one
`$inc` per room, all rooms at once) and inserts all the messages with one
`insert_many`. Only then are the senders acked, and the messages fanned out (local
sockets, then one Redis publish per room) before the next tick starts.

Round trips per tick, not per message or per room, are what bound the latency: with
the embedded MongoDB-wire server each costs 1-5 ms, and a tick takes three in a row.
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

# Called once per room of a tick, in order: (room, stored frames, unused seqs).
OnStored = Callable[[str, list[Outgoing], list[int]], Awaitable[None]]


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


class MessageWriter:
    """Stores queued sends in ticks; see the module docstring."""

    def __init__(self, store: Store, on_stored: OnStored, metrics: Metrics) -> None:
        self.store = store
        self.on_stored = on_stored
        self.metrics = metrics
        self._queue: list[Send] = []
        self._task: asyncio.Task[None] | None = None
        self._warning = OncePer(log)

    @property
    def queued(self) -> int:
        """Sends waiting for a tick (not counting the one being stored)."""
        return len(self._queue)

    @property
    def task(self) -> asyncio.Task[None] | None:
        return self._task

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
            while self._queue:
                batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
                try:
                    stored = await self._tick(batch)
                except Exception:
                    log.exception("storing %d message(s) crashed", len(batch))
                    for item in batch:
                        item.fail(unavailable("the message store"))
                    continue
                await self._fan_out(stored)
        finally:
            self._task = None

    async def _fan_out(self, stored: dict[str, tuple[list[Outgoing], list[int]]]) -> None:
        """Hand each room's stored messages on, before the next tick is stored: so every
        room sees its messages (and Redis its publishes) in seq order."""
        try:
            await asyncio.gather(*(self.on_stored(room, frames, unused)
                                   for room, (frames, unused) in stored.items()))
        except Exception:
            log.exception("fan-out of stored messages crashed")

    async def _tick(self, batch: list[Send]) -> dict[str, tuple[list[Outgoing], list[int]]]:
        """Store one batch and ack its senders; returns, per room, the message frames
        to fan out and the seqs that were reserved but not used."""
        started = time.perf_counter()
        try:
            batch = await self._answer_repeats(batch)
        except StoreError as e:
            self._failed(batch, e)
            return {}
        by_room = self._group(batch)
        docs, placed = await self._place(by_room)
        if not docs:
            return {}
        try:
            dup = await self.store.insert_messages(docs)
        except StoreError as e:
            self._failed(placed, e)
            return {}
        originals = await self._originals([docs[i] for i in dup])
        stored: dict[str, tuple[list[Outgoing], list[int]]] = {}
        for i, (item, doc) in enumerate(zip(placed, docs, strict=True)):
            frames, unused = stored.setdefault(item.room, ([], []))
            if i in dup:
                # Stored a moment ago through another process (or connection).
                unused.append(doc["seq"])
                original = originals.get(doc.get("ckey", ""))
                if original is None:
                    item.fail(unavailable("the message store"))
                else:
                    self.metrics.duplicate_sends.inc()
                    item.resolve(_ack(original))
                continue
            message = {"room": item.room, "id": str(doc["_id"]), "seq": doc["seq"],
                       "user": doc["user"], "body": doc["body"], "ts": doc["ts"],
                       "client_id": item.client_id}
            item.resolve(_ack(message))
            frames.append((doc["seq"], protocol.dump({"type": "message", **message}).encode()))
        self.metrics.stored(len(docs) - len(dup), time.perf_counter() - started)
        return stored

    async def _answer_repeats(self, batch: list[Send]) -> list[Send]:
        """Ack the sends whose client_id is already stored; returns the others.

        One lookup for the whole tick, so that a resend never reserves a seq: a
        reserved seq left unused is a gap every member's client would stop to check.
        """
        ckeys = {client_key(item.room, item.user["id"], item.client_id): item
                 for item in batch if item.client_id is not None}
        if not ckeys:
            return batch
        found = await self.store.find_by_ckeys(list(ckeys))
        if not found:
            return batch
        fresh = []
        for item in batch:
            original = None
            if item.client_id is not None:
                original = found.get(client_key(item.room, item.user["id"], item.client_id))
            if original is None:
                fresh.append(item)
            else:
                self.metrics.duplicate_sends.inc()
                item.resolve(_ack(original))
        return fresh

    @staticmethod
    def _group(batch: list[Send]) -> dict[str, list[Send]]:
        """Sends by room in arrival order; a client_id sent twice in one tick is
        stored once, the second answered with the first's outcome."""
        by_room: dict[str, list[Send]] = {}
        firsts: dict[tuple[str, str, str], Send] = {}
        for item in batch:
            if item.client_id is not None:
                key = (item.room, item.user["id"], item.client_id)
                first = firsts.get(key)
                if first is not None:
                    first.future.add_done_callback(_mirror(item))
                    continue
                firsts[key] = item
            by_room.setdefault(item.room, []).append(item)
        return by_room

    async def _place(self, by_room: dict[str, list[Send]]
                     ) -> tuple[list[dict[str, Any]], list[Send]]:
        """Reserve seqs for every room at once; the documents to insert, and their sends."""
        rooms = list(by_room)
        lasts = await asyncio.gather(
            *(self.store.allocate_seqs(room, len(by_room[room])) for room in rooms),
            return_exceptions=True)
        ts = int(time.time() * 1000)
        docs: list[dict[str, Any]] = []
        placed: list[Send] = []
        for room, last in zip(rooms, lasts, strict=True):
            items = by_room[room]
            if isinstance(last, BaseException):
                if not isinstance(last, StoreError):
                    log.error("reserving seqs in %s crashed", room, exc_info=last)
                self._failed(items, last)
                continue
            if last is None:
                for item in items:
                    item.fail(ProtocolError(protocol.NOT_FOUND, f"no room named {room!r}"))
                continue
            first = last - len(items) + 1
            for i, item in enumerate(items):
                doc: dict[str, Any] = {"_id": ObjectId(), "room": room, "seq": first + i,
                                       "user": item.user, "body": item.body, "ts": ts}
                if item.client_id is not None:
                    doc["client_id"] = item.client_id
                    doc["ckey"] = client_key(room, item.user["id"], item.client_id)
                docs.append(doc)
                placed.append(item)
        return docs, placed

    async def _originals(self, dups: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        ckeys = [doc["ckey"] for doc in dups if "ckey" in doc]
        if not ckeys:
            return {}
        try:
            return await self.store.find_by_ckeys(ckeys)
        except StoreError as e:
            self._warning.warning("looking up resent client_ids failed: %s", e)
            return {}

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
