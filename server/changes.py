"""A message's later life: edits, deletes, reactions and replies.

Each change is an event in the room's stream (`edited`, `deleted`, `reacted`), stored,
numbered, acked and delivered like a message, so a client that was away replays it on
resume. The message's document is then brought to its current state, and carries
`state_seq`: the highest event (or reply) it reflects. A client folds an event into a
message it holds only when the event's seq is above the message's `state_seq`.

Order of work: the event first (it is what every other client and process sees), then
the document. A document update that fails is retried a few times in the background;
a delete's text is removed from the message and from the events of its earlier edits.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from server import protocol, tasks
from server.mentions import mentioned
from server.model import REACTION_SEP, Event, Message, Record, User
from server.protocol import ProtocolError
from server.roles import RANK, Access
from server.sends import EventSpec, unavailable
from server.store import Store, StoreError, client_key, mentions_doc
from server.team import Team
from server.writer import MessageWriter

log = logging.getLogger(__name__)

MAX_EMOJIS = 20  # different reactions on one message
RETRIES = 3
# Brings a message's document to a stored event (and whether the event is new).
Apply = Callable[[Event, bool], Awaitable[None]]


class MessageChanges:
    """Edits, deletes, reactions and reply counts; see the module docstring."""

    def __init__(self, store: Store, writer: MessageWriter, team: Team, *,
                 timeout: float = 5.0) -> None:
        self.store = store
        self.writer = writer
        self.team = team
        self.timeout = timeout
        # Changes to one message made through this process are applied in the order
        # of their events (two toggles of one reaction must not swap).
        self._locks: dict[tuple[str, int], asyncio.Lock] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    async def close(self, timeout: float) -> None:
        """Let the document updates under way finish within `timeout`; stop the rest."""
        self._closed = True
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=timeout)
        for task in list(self._tasks):
            await tasks.stop(task)

    async def edit(self, user: User, room: str, seq: int, body: str, client_id: str | None,
                   origin: Any, ref: protocol.Ref) -> Event:
        async with self._lock(room, seq):
            try:
                message = await self._message(room, seq, ref)
                if message.user.id != user.id:
                    raise ProtocolError(protocol.FORBIDDEN, "only its author edits a message",
                                        ref, reason="not_author")
            except ProtocolError as e:
                return await self._resent_or_raise(e, user, room, "edited", seq, client_id,
                                                   origin, ref)
            # Applied even for a resend: an edit older than the text it meets changes nothing.
            return await self._change(user, room, "edited", {
                "message_seq": seq, "new_body": body, "edited_at": int(time.time() * 1000)},
                client_id, origin, ref, self._edit_doc)

    async def _edit_doc(self, event: Event, fresh: bool) -> None:
        room, seq, body = event.room, event.data["message_seq"], event.data["new_body"]
        mentions = await self._mentioned(room, body)
        if not await self.store.apply_edit(room, seq, body, event.data["edited_at"],
                                           event.seq, mentions):
            await self.store.scrub_edits(room, seq)  # deleted meanwhile: keep no text

    async def mentions(self, room: str, body: str) -> dict[str, Any] | None:
        """Whom a text mentions in the room, as stored: members only."""
        try:
            return await self._mentioned(room, body)
        except StoreError:
            raise unavailable("the message store") from None

    async def _mentioned(self, room: str, body: str) -> dict[str, Any] | None:
        names, whole = mentioned(body)
        users = await self.store.members_named(room, names) if names else []
        return mentions_doc(users, whole)

    async def delete(self, user: User, room: str, seq: int, client_id: str | None,
                     origin: Any, ref: protocol.Ref) -> Event:
        async with self._lock(room, seq):
            try:
                message = await self._message(room, seq, ref, deleted_ok=True)
                if message.user.id != user.id:
                    await self._require_over(user, room, message.user, ref)
            except ProtocolError as e:
                return await self._resent_or_raise(e, user, room, "deleted", seq, client_id,
                                                   origin, ref)
            return await self._change(user, room, "deleted", {"message_seq": seq}, client_id,
                                      origin, ref, self._delete_doc, target=message.user)

    async def _delete_doc(self, event: Event, fresh: bool) -> None:
        await self.store.apply_delete(event.room, event.data["message_seq"], event.seq)

    async def react(self, user: User, room: str, seq: int, emoji: str, on: bool,
                    client_id: str | None, origin: Any, ref: protocol.Ref) -> Event:
        async with self._lock(room, seq):
            try:
                message = await self._message(room, seq, ref)
                emojis = {e for e, _ in message.reactions}
                if on and emoji not in emojis and len(emojis) >= MAX_EMOJIS:
                    raise ProtocolError(protocol.BAD_REQUEST, f"a message has at most "
                                        f"{MAX_EMOJIS} different reactions", ref)
            except ProtocolError as e:
                return await self._resent_or_raise(e, user, room, "reacted", seq, client_id,
                                                   origin, ref)
            return await self._change(user, room, "reacted", {
                "message_seq": seq, "emoji": emoji, "on": on}, client_id, origin, ref,
                self._react_doc)

    async def _react_doc(self, event: Event, fresh: bool) -> None:
        if fresh:  # a resend's original was applied when it was stored
            data = event.data
            await self.store.apply_reaction(
                event.room, data["message_seq"], f"{data['emoji']}{REACTION_SEP}{event.actor.id}",
                data["on"], event.seq)

    async def replied(self, reply: Message) -> None:
        """A reply was stored: count it on the message it answers."""
        if reply.reply_to is not None:
            room, seq, reply_seq = reply.room, reply.reply_to, reply.seq
            await self._apply(lambda: self.store.count_reply(room, seq, reply_seq))

    async def check_reply(self, room: str, reply_to: int, ref: protocol.Ref) -> None:
        await self._message(room, reply_to, ref, deleted_ok=True)

    # -----------------------------------------------------------------------------------

    async def _message(self, room: str, seq: int, ref: protocol.Ref,
                       deleted_ok: bool = False) -> Message:
        try:
            message = await self.store.message(room, seq)
        except StoreError:
            raise unavailable("the message store") from None
        if message is None or (message.deleted and not deleted_ok):
            raise ProtocolError(protocol.NOT_FOUND, f"no message {seq} in {room!r}", ref)
        return message

    async def _change(self, user: User, room: str, kind: str, data: dict[str, Any],
                      client_id: str | None, origin: Any, ref: protocol.Ref, apply: Apply,
                      target: User | None = None) -> Event:
        """Store the change's event, bring the message's document to it, then ack. An
        event stored after its sender was answered `unavailable` (the store was slow)
        still brings the document to it, in the background."""
        def late(event: Record, fresh: bool) -> None:
            if self._same(event, kind, data):
                assert isinstance(event, Event)
                self._spawn(self._locked(event, lambda: apply(event, fresh)))

        event, fresh = await self.writer.record_event(
            user, room, EventSpec(kind, target, data), timeout=self.timeout,
            client_id=client_id, late=late)
        if not self._same(event, kind, data):
            raise ProtocolError(protocol.BAD_REQUEST,
                                f"client_id {client_id!r} was used for another change", ref)
        await self._apply(lambda: apply(event, fresh))
        return self._acked(event, origin, ref)

    @staticmethod
    def _same(event: Record, kind: str, data: dict[str, Any]) -> bool:
        return (isinstance(event, Event) and event.event == kind
                and event.data.get("message_seq") == data["message_seq"])

    async def _resent_or_raise(self, error: ProtocolError, user: User, room: str, kind: str,
                               seq: int, client_id: str | None, origin: Any,
                               ref: protocol.Ref) -> Event:
        """A change refused now (its message deleted or changed since, say) that was
        stored before under this client_id gets its original ack again."""
        if client_id is not None:
            key = client_key(room, user.id, client_id)
            try:
                original = (await self.store.find_by_ckeys([key])).get(key)
            except StoreError:
                original = None
            if original is not None and self._same(original, kind, {"message_seq": seq}):
                assert isinstance(original, Event)
                return self._acked(original, origin, ref)
        raise error

    async def _require_over(self, user: User, room: str, author: User,
                            ref: protocol.Ref) -> None:
        """Deleting another's message takes a moderator, and a role above the author's."""
        access = await self.team.access(user, room)
        rank = await self.team.rank(user, access)
        if rank < RANK["moderator"]:
            raise ProtocolError(protocol.FORBIDDEN, "moderators and above may delete "
                                "others' messages", ref, reason="role")
        try:
            member = await self.team.cache.member(room, author.id)
        except StoreError:
            raise unavailable("the message store") from None
        if member is not None and member.get("state") != "member":
            member = None
        if await self.team.rank(author, Access(access.room, member)) >= rank:
            raise ProtocolError(protocol.FORBIDDEN, "only a role above its author's may "
                                "delete a message", ref, reason="role")

    @staticmethod
    def _acked(event: Event, origin: Any, ref: protocol.Ref) -> Event:
        """Ack a change once its message is in its new state, so that what the author
        reads next (history, mentions, search) has it; others may get the event
        before (they fold it in)."""
        if origin is not None:
            origin.send_raw(protocol.dump(protocol.Ack.of(event), ref))
        return event

    async def _locked(self, event: Event, update: Callable[[], Awaitable[Any]]) -> None:
        async with self._lock(event.room, event.data["message_seq"]):
            await self._apply(update)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        if self._closed:
            work.close()
            return
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _apply(self, update: Callable[[], Awaitable[Any]]) -> None:
        """Bring the document up to date; on failure, retry in the background (the
        event is stored and acked already)."""
        try:
            await update()
        except StoreError as e:
            log.warning("updating a changed message failed, retrying: %s", e)
            self._spawn(self._retry(update))

    async def _retry(self, update: Callable[[], Awaitable[Any]]) -> None:
        for attempt in range(RETRIES):
            await asyncio.sleep(0.5 * 2 ** attempt)  # back off from a failing store
            try:
                await update()
                return
            except StoreError as e:
                error = e
        log.error("a changed message kept its old state after %d retries: %s", RETRIES, error)

    def _lock(self, room: str, seq: int) -> asyncio.Lock:
        key = (room, seq)
        lock = self._locks.get(key)
        if lock is None:
            if len(self._locks) > 10_000:  # forget idle ones
                self._locks = {k: v for k, v in self._locks.items() if v.locked()}
            lock = self._locks[key] = asyncio.Lock()
        return lock
