"""Rooms and their messages: the stream of each room, numbered by `seq`."""

from __future__ import annotations

from typing import Any

import pymongo
from bson import ObjectId
from pymongo import ReturnDocument, UpdateOne
from pymongo.errors import BulkWriteError

from server.model import Event, Message, Record, User, record_from_doc
from server.store.core import _errors, _utcnow
from server.store.files import FileRecords

DEFAULT_ROOM = "general"  # every server has it; it heads the first page of rooms


def client_key(room: str, user_id: str, client_id: str) -> str:
    """The stored key that makes (room, user, client_id) unique."""
    return f"{room}|{user_id}|{client_id}"


def mentions_doc(users: list[str], room: bool) -> dict[str, Any] | None:
    """What a message stores of whom it mentions (None for nobody)."""
    return {"users": users, "room": room} if users or room else None


def message_doc(room: str, seq: int, user: User, body: str, ts: int,
                client_id: str | None, reply_to: int | None = None,
                mentions: dict[str, Any] | None = None,
                words: list[str] | None = None,
                attachments: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A new message document; its `ckey` makes a resent client_id a duplicate key."""
    doc: dict[str, Any] = {"_id": ObjectId(), "room": room, "seq": seq,
                           "user": user.as_dict(), "body": body, "ts": ts}
    if client_id is not None:
        doc["client_id"] = client_id
        doc["ckey"] = client_key(room, user.id, client_id)
    if reply_to is not None:
        doc["reply_to"] = reply_to
    if mentions is not None:
        doc["mentions"] = mentions
    if words:
        doc["words"] = words  # the search index of a server without text indexes
    if attachments:
        doc["attachments"] = attachments
    return doc


def event_doc(room: str, seq: int, actor: User, kind: str, target: User | None,
              data: dict[str, Any], ts: int, client_id: str | None = None) -> dict[str, Any]:
    """A new event document. It carries `user` (the actor) and an empty `body` too, as
    its wire form does: whatever reads a room's stream as messages still can. With a
    `client_id` (an edit, a delete, a reaction), a resend is a duplicate key too."""
    doc = {"_id": ObjectId(), "room": room, "seq": seq, "type": Event.TYPE, "event": kind,
           "actor": actor.as_dict(), "target": target.as_dict() if target else None,
           "data": data, "user": actor.as_dict(), "body": "", "ts": ts}
    if client_id is not None:
        doc["client_id"] = client_id
        doc["ckey"] = client_key(room, actor.id, client_id)
    return doc


class RoomsAndMessages(FileRecords):
    """Rooms and messages. Every method raises StoreError when MongoDB fails."""

    # Rooms ------------------------------------------------------------------

    async def create_room(self, name: str, creator: User | None, *, owner: str | None = None,
                          limit: int | None = None, kind: str = "public", topic: str = "",
                          title: str | None = None, people: list[str] | None = None
                          ) -> dict[str, Any]:
        """A new room; with an `owner` and a `limit`, it takes one of the owner's room
        slots (the owner of a bot's room is the bot's owner). Conflict if it exists."""
        doc: dict[str, Any] = {"_id": name, "seq": 0, "kind": kind, "topic": topic,
                               "title": title or name, "created_at": _utcnow(),
                               "created_by": creator.id if creator else None}
        if people is not None:
            doc["people"] = people
        if owner is not None and limit is not None:
            doc["owner"] = owner
            await self._insert_in_slot(self.db.rooms, doc, name, owner_field="owner",
                                       limit=limit)
        else:
            await self._insert_unique(self.db.rooms, doc, name)
        return doc

    async def update_room(self, name: str, **fields: Any) -> dict[str, Any] | None:
        """Set fields of a room (topic, archived); returns it, or None if it is gone."""
        with _errors():
            return await self.db.rooms.find_one_and_update(
                {"_id": name}, {"$set": fields}, return_document=ReturnDocument.AFTER)

    async def room(self, name: str) -> dict[str, Any] | None:
        with _errors():
            return await self.db.rooms.find_one({"_id": name})

    async def rooms_named(self, names: list[str]) -> dict[str, dict[str, Any]]:
        """`room` of many names in one query (missing rooms are missing)."""
        with _errors():
            docs = await self.db.rooms.find({"_id": {"$in": names}}).to_list(None)
        return {d["_id"]: d for d in docs}

    async def rooms(self, *, after: str | None = None, limit: int = 1000,
                    also: list[str] | None = None) -> tuple[list[dict[str, Any]], bool]:
        """A page of the public rooms (and of the rooms named in `also`: the caller's
        private rooms and DMs), and whether more exist beyond it.

        The default room comes first, then every other room by name: a page of rooms
        named `0000...` cannot push `general` out of the first page. `after` is the last
        name of the previous page (`general` for the page after the first room).
        Rooms stored before rooms had kinds are public.
        """
        docs: list[dict[str, Any]] = []
        names: dict[str, Any] = {"$ne": DEFAULT_ROOM}
        query: dict[str, Any] = {"_id": names, "$or": [
            {"kind": "public"}, {"kind": {"$exists": False}}, {"_id": {"$in": also or []}}]}
        with _errors():
            if after is None:
                default = await self.db.rooms.find_one({"_id": DEFAULT_ROOM})
                docs += [default] if default else []
            elif after != DEFAULT_ROOM:
                names["$gt"] = after
            docs += await self.db.rooms.find(query).sort("_id", 1).limit(
                limit + 1 - len(docs)).to_list(None)
        return docs[:limit], len(docs) > limit

    # Messages ---------------------------------------------------------------

    async def recorded_tops(self, rooms: list[str]) -> dict[str, int]:
        """The recorded top seq of each room that exists (absent rooms are missing)."""
        with _errors():
            docs = await self.db.rooms.find({"_id": {"$in": rooms}}, {"seq": 1}).to_list(None)
        return {d["_id"]: int(d["seq"]) for d in docs}

    async def top_seq_after(self, room: str, known: int) -> int:
        """The highest seq stored in a room, given that `known` is stored or recorded.

        Only the messages above `known` are read: those another process has stored
        since, normally a handful.
        """
        with _errors():
            docs = await self.db.messages.find(
                {"room": room, "seq": {"$gt": known}}, {"seq": 1}
            ).sort("seq", pymongo.DESCENDING).limit(1).to_list(None)
        return max([known, *(int(d["seq"]) for d in docs)])

    async def top_seq(self, room: str) -> int | None:
        """The highest seq stored in a room (None if no such room): its recorded top,
        then whatever is stored above it (messages whose record is still on its way)."""
        doc = await self.room(room)
        return None if doc is None else await self.top_seq_after(room, int(doc["seq"]))

    async def record_tops(self, tops: dict[str, int]) -> None:
        """Raise each room's recorded top seq to at least the given one (`$max`)."""
        with _errors():
            await self.db.rooms.bulk_write(
                [UpdateOne({"_id": room}, {"$max": {"seq": seq}}) for room, seq in tops.items()],
                ordered=False)

    # A message's later life: edits, deletes, reactions, replies ------------------------

    async def message(self, room: str, seq: int) -> Message | None:
        """The message at `seq` in its current state (None for none, or an event)."""
        with _errors():
            doc = await self.db.messages.find_one({"room": room, "seq": seq})
        return Message.from_doc(doc) if doc is not None and "type" not in doc else None

    async def apply_edit(self, room: str, seq: int, body: str, edited_at: int,
                         event_seq: int, mentions: dict[str, Any] | None) -> bool:
        """Give a message its new text (and whom it mentions now) unless a later edit
        gave it one already; False if it is deleted (or gone)."""
        change: dict[str, Any] = {"$set": {"body": body, "edited_at": edited_at,
                                           "edit_seq": event_seq},
                                  "$max": {"state_seq": event_seq}}
        unset: dict[str, str] = {}
        if mentions is None:
            unset["mentions"] = ""
        else:
            change["$set"]["mentions"] = mentions
        words = self.words_field(body)  # type: ignore[attr-defined]
        if words is not None:
            change["$set"]["words"] = words
        if unset:
            change["$unset"] = unset
        return await self._change_live(room, seq, change, edit_seq=event_seq)

    async def _change_live(self, room: str, seq: int, change: dict[str, Any],
                           edit_seq: int | None = None) -> bool:
        """Apply a change to a message unless it is deleted; False if it is (or gone).
        With `edit_seq`, only to a message no later edit reached (events of several
        processes, or a retry, may arrive out of order).

        Otherwise the filter is (room, seq) alone: with more predicates the
        MongoDB-wire server takes several times as long. A change that lands on a
        message deleted meanwhile (another process) is undone at once by deleting it
        again.
        """
        query: dict[str, Any] = {"room": room, "seq": seq}
        if edit_seq is not None:
            query["edit_seq"] = {"$not": {"$gte": edit_seq}}
        with _errors():
            before = await self.db.messages.find_one_and_update(
                query, change, projection={"deleted": 1, "type": 1},
                return_document=ReturnDocument.BEFORE)
            if before is None and edit_seq is not None:  # a later edit, or no message
                later = await self.db.messages.find_one(
                    {"room": room, "seq": seq}, projection={"deleted": 1, "type": 1})
                return later is not None and "type" not in later and not later.get("deleted")
        if before is None or "type" in before:
            return False
        if before.get("deleted"):
            await self._tombstone(room, seq, 0)
            return False
        return True

    async def apply_delete(self, room: str, seq: int, event_seq: int) -> None:
        """Make a message a tombstone: its text is gone from the store, and so is the
        text of its earlier edits (kept in their events), and so are its files."""
        await self._tombstone(room, seq, event_seq)

    async def _tombstone(self, room: str, seq: int, event_seq: int) -> None:
        with _errors():
            before = await self.db.messages.find_one_and_update(
                {"room": room, "seq": seq},
                {"$set": {"deleted": True, "body": ""},
                 "$unset": {"reactions": "", "edited_at": "", "mentions": "", "words": "",
                            "attachments": ""},
                 "$max": {"state_seq": event_seq}},
                projection={"attachments.id": 1})
        await self.scrub_edits(room, seq)
        files = [a["id"] for a in (before or {}).get("attachments") or ()]
        if files:
            await self.delete_files(files)

    async def scrub_edits(self, room: str, seq: int) -> None:
        """Remove the text from every edit event of a (deleted) message.

        Found through the `data.message_seq` index alone (with `room` in the filter the
        MongoDB-wire server would read the whole room), then checked here.
        """
        with _errors():
            events = await self.db.messages.find(
                {"data.message_seq": seq}, {"room": 1, "event": 1}).to_list(None)
            ids = [e["_id"] for e in events if e["room"] == room and e.get("event") == "edited"]
            if ids:
                await self.db.messages.update_many({"_id": {"$in": ids}},
                                                   {"$set": {"data.new_body": ""}})

    async def apply_reaction(self, room: str, seq: int, reaction: str, on: bool,
                             event_seq: int) -> bool:
        """Add or remove one person's reaction ("<emoji>\t<user id>"); False if the
        message is deleted (or gone)."""
        change = {"$addToSet" if on else "$pull": {"reactions": reaction},
                  "$max": {"state_seq": event_seq}}
        return await self._change_live(room, seq, change)

    async def count_reply(self, room: str, seq: int, reply_seq: int) -> None:
        with _errors():
            # (room, seq) alone (see _change_live); `seq` was checked to be a message.
            await self.db.messages.update_one(
                {"room": room, "seq": seq},
                {"$inc": {"replies": 1}, "$max": {"state_seq": reply_seq}})

    async def find_by_ckeys(self, ckeys: list[str]) -> dict[str, Record]:
        """Stored messages and events by their `client_key`."""
        with _errors():
            docs = await self.db.messages.find({"ckey": {"$in": ckeys}}).to_list(None)
        return {d["ckey"]: record_from_doc(d) for d in docs}

    async def insert_in_order(self, docs: list[dict[str, Any]]) -> tuple[int, str | None]:
        """Insert message documents in order, stopping at the first duplicate key.

        Returns how many were inserted and, if one was refused, which unique key
        refused it: "seq" (another process stored that seq first), "ckey" (its
        client_id is stored already) or "" (the server did not say). Any other
        failure raises StoreError; then an unknown prefix of `docs` may be stored.
        """
        if not docs:
            return 0, None
        with _errors():
            try:
                await self.db.messages.insert_many(docs, ordered=True)
            except BulkWriteError as e:
                errors = e.details.get("writeErrors", [])
                if (len(errors) != 1 or errors[0].get("code") != 11000
                        or e.details.get("writeConcernErrors")):
                    raise
                pattern = errors[0].get("keyPattern") or {}
                key = "ckey" if "ckey" in pattern else "seq" if "seq" in pattern else ""
                return int(errors[0]["index"]), key
        return len(docs), None

    async def messages(self, room: str, *, before: int | None = None, after: int | None = None,
                       limit: int = 50, top: int | None = None) -> tuple[list[Record], bool]:
        """A page of a room's stream (messages and events), ascending by seq, and
        whether more exist beyond it.

        With `after` the page starts just after it and `has_more` means newer messages
        exist; otherwise the page ends just before `before` (or at the newest) and
        `has_more` means older ones exist. `top` is the room's highest stored seq
        if the caller has just read it (else the recorded one is read).

        Pages are read through bounded seq windows (`seq` between two numbers), widened
        only across gaps: SecantusDB sorts every document a filter matches before it
        applies the limit, so an open range (`seq < before`) costs the whole room's
        history; a window costs the page. On mongod both are index walks.
        """
        want = limit + 1
        ascending = after is not None
        if top is None:
            doc = await self.room(room)
            top = await self.top_seq_after(room, int(doc["seq"])) if doc else 0
        # Pages lie in (lo, hi]. A `before` far above the top is the top: the windows
        # below start where messages are, not at 2**62.
        hi = top if before is None else min(top, before - 1)
        lo = after or 0
        docs: list[dict[str, Any]] = []
        width = want + 16  # a few gaps fit in the first window
        with _errors():
            while lo < hi and len(docs) < want:
                if ascending:
                    window = {"$gt": lo, "$lte": min(hi, lo + width)}
                    lo = window["$lte"]
                else:
                    window = {"$gt": max(lo, hi - width), "$lte": hi}
                    hi = window["$gt"]
                cursor = self.db.messages.find({"room": room, "seq": window}).sort(
                    "seq", pymongo.ASCENDING if ascending else pymongo.DESCENDING
                ).limit(want - len(docs))
                docs += await cursor.to_list(None)
                width *= 4
        has_more = len(docs) > limit
        docs = docs[:limit]
        if not ascending:
            docs.reverse()
        return [record_from_doc(d) for d in docs], has_more
