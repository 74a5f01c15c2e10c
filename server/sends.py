"""Sends on their way to the store: what waits for a tick, and what a tick answered.

A `QueuedSend` is one message or event queued by `MessageWriter`; its future resolves
to the stored record, or fails with a `ProtocolError`. A `Tick` is what one insert
stored, handed to the fan-out (`OnStored`). Within one tick a `client_id` sent twice
is stored once (`split_repeats`); the repeats get the first one's outcome
(`answer_repeats`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from server import protocol
from server.model import Attachment, Record, User
from server.protocol import ProtocolError
from server.store import client_key


def unavailable(what: str) -> ProtocolError:
    return ProtocolError(protocol.UNAVAILABLE, f"{what} is unavailable, try again")


@dataclass(frozen=True)
class EventSpec:
    """What an event records: its kind, whom it concerns and its details."""

    kind: str
    target: User | None = None
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(eq=False)
class QueuedSend:
    """One send waiting to be stored; its future resolves to the stored record (or
    fails with ProtocolError). `origin` and `ref` ride along for whoever writes the ack
    (an event has no origin and gets no ack)."""

    user: User
    room: str
    body: str
    client_id: str | None
    origin: Any
    ref: protocol.Ref
    future: asyncio.Future[Record] = field(repr=False)
    event: EventSpec | None = None
    reply_to: int | None = None
    mentions: dict[str, Any] | None = None  # as stored (store.mentions_doc)
    attachments: tuple[Attachment, ...] = ()
    # False once it is answered with the record of an earlier send of its client_id.
    fresh: bool = True
    # What makes (room, user, client_id) unique, in the store and within a tick.
    ckey: str | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        if self.client_id is not None:
            self.ckey = client_key(self.room, self.user.id, self.client_id)

    def settle(self, message: Record) -> bool:
        """Resolve with the stored message; False if it was settled already."""
        if self.future.done():
            return False
        self.future.set_result(message)
        return True

    def fail(self, error: BaseException) -> None:
        if not self.future.done():
            self.future.set_exception(error)


@dataclass
class Tick:
    """What one tick stored: every send answered, in order, with its message (a resend
    with the original), and each room's new messages in seq order."""

    acks: list[tuple[QueuedSend, Record]] = field(default_factory=list)
    messages: dict[str, list[Record]] = field(default_factory=dict)


OnStored = Callable[[Tick], Awaitable[None]]


def split_repeats(batch: list[QueuedSend]
            ) -> tuple[list[QueuedSend], dict[QueuedSend, list[QueuedSend]]]:
    """The batch without repeats, and the repeats of each: a client_id sent twice in
    one tick is stored once, the second answered with the first's outcome."""
    firsts: dict[str, QueuedSend] = {}
    repeats: dict[QueuedSend, list[QueuedSend]] = {}
    out = []
    for item in batch:
        if item.ckey is not None:
            first = firsts.get(item.ckey)
            if first is not None:
                repeats.setdefault(first, []).append(item)
                continue
            firsts[item.ckey] = item
        out.append(item)
    return out, repeats


def answer_repeats(repeats: dict[QueuedSend, list[QueuedSend]], tick: Tick) -> None:
    """Give each repeat its first's outcome: the same message, or the same error."""
    answered = {id(item): message for item, message in tick.acks}
    for first, items in repeats.items():
        message = answered.get(id(first))
        for item in items:
            item.fresh = False
            if message is not None:
                tick.acks.append((item, message))
            elif first.future.done() and first.future.exception() is not None:
                item.fail(first.future.exception())  # type: ignore[arg-type]
            else:
                item.fail(unavailable("the message store"))


def retrieve(fut: asyncio.Future[Any]) -> None:
    """Mark an abandoned future's exception as seen (asyncio logs it otherwise)."""
    if not fut.cancelled():
        fut.exception()
