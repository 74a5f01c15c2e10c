"""Where each person has read up to in each room, and the messages that mention them.

`reads`: one document per (room, user), `_id` "<room>|<user id>", `seq` the highest seq
read; it only ever moves forward (`$max`). Unread and mention counts are counted from
the (room, seq) index, capped: a client shows "99+", and zero is always exact.
"""

from __future__ import annotations

from typing import Any

import pymongo
from bson import ObjectId

from server.model import Message
from server.store.core import Collections, _errors
from server.store.members import MEMBER, member_key

UNREAD_CAP = 100
UNREAD_SCAN = 2000  # messages one shared count of several users' unread looks at


class Reads(Collections):
    """Read positions and mentions. Every method raises StoreError when MongoDB fails."""

    async def mark_read(self, room: str, user_id: str, seq: int) -> int:
        """Move the user's read position in the room up to `seq` (never back); returns
        the position now stored."""
        with _errors():
            doc = await self.db.reads.find_one_and_update(
                {"_id": member_key(room, user_id)},
                {"$max": {"seq": seq}, "$set": {"room": room, "uid": user_id}},
                upsert=True, return_document=pymongo.ReturnDocument.AFTER)
        return int(doc["seq"])

    async def read_positions(self, user_id: str, rooms: list[str]) -> dict[str, int]:
        with _errors():
            docs = await self.db.reads.find(
                {"_id": {"$in": [member_key(room, user_id) for room in rooms]}}).to_list(None)
        return {d["room"]: int(d["seq"]) for d in docs}

    async def room_read_positions(self, room: str, user_ids: list[str]) -> dict[str, int]:
        """Several users' read positions in one room (user id -> seq; never read: absent)."""
        with _errors():
            docs = await self.db.reads.find(
                {"_id": {"$in": [member_key(room, uid) for uid in user_ids]}},
                {"uid": 1, "seq": 1}).to_list(None)
        return {d["uid"]: int(d["seq"]) for d in docs}

    async def unread(self, room: str, user_id: str, after: int) -> tuple[int, int]:
        """(unread, mentions) in the room after `after`, each capped at UNREAD_CAP: the
        messages of others (not events, not tombstones), and those that mention the
        user or the whole room."""
        base: dict[str, Any] = {"room": room, "seq": {"$gt": after},
                                "type": {"$exists": False}, "deleted": {"$ne": True},
                                "user.id": {"$ne": user_id}}
        with _errors():
            unread = await self.db.messages.count_documents(base, limit=UNREAD_CAP)
            mentions = 0
            if unread:
                mentions = await self.db.messages.count_documents(
                    {**base, "$or": [{"mentions.users": user_id}, {"mentions.room": True}]},
                    limit=UNREAD_CAP)
        return unread, mentions

    async def unread_of(self, room: str, after: dict[str, int], scan: int = UNREAD_SCAN
                        ) -> dict[str, tuple[int, int]]:
        """`unread` for several users of one room (user id -> read position) in one
        read: the messages after the lowest position, counted here. A user whose counts
        that read cannot settle (more than `scan` messages after the lowest position,
        fewer than the caps found) is missing."""
        if not after:
            return {}
        with _errors():
            docs = await self.db.messages.find(
                {"room": room, "seq": {"$gt": min(after.values())},
                 "type": {"$exists": False}, "deleted": {"$ne": True}},
                {"seq": 1, "user": 1, "mentions": 1}).sort("seq", 1).limit(scan).to_list(None)
        complete = len(docs) < scan
        counts = {}
        for uid, position in after.items():
            unread = mentions = 0
            for d in docs:
                if d["seq"] > position and d["user"]["id"] != uid:
                    unread += 1
                    mentioned = d.get("mentions") or {}
                    if uid in (mentioned.get("users") or ()) or mentioned.get("room"):
                        mentions += 1
            if complete or (unread >= UNREAD_CAP and mentions >= UNREAD_CAP):
                counts[uid] = (min(unread, UNREAD_CAP), min(mentions, UNREAD_CAP))
        return counts

    async def members_named(self, room: str, names: list[str]) -> list[str]:
        """The ids of the room's members among these names (case-insensitive)."""
        if not names:
            return []
        with _errors():
            users = await self.db.users.find(
                {"name_lower": {"$in": [n.lower() for n in names]}}, {"_id": 1}
            ).to_list(len(names))
            keys = [member_key(room, str(u["_id"])) for u in users]
            members = await self.db.members.find(
                {"_id": {"$in": keys}, "state": MEMBER}, {"uid": 1}).to_list(None)
        return [m["uid"] for m in members]

    async def mentions_of(self, user_id: str, rooms: list[str], *, before: str | None,
                          limit: int) -> tuple[list[Message], bool]:
        """The messages that mention the user (by name, or @room in a room of theirs),
        newest first, before the message id `before`, and whether more exist."""
        # Only rooms the user can read now: a mention in a room they left says nothing.
        query: dict[str, Any] = {
            "room": {"$in": rooms}, "type": {"$exists": False}, "deleted": {"$ne": True},
            "user.id": {"$ne": user_id},
            "$or": [{"mentions.users": user_id}, {"mentions.room": True}]}
        if before is not None:
            query["_id"] = {"$lt": ObjectId(before)}
        with _errors():
            docs = await self.db.messages.find(query).sort(
                "_id", pymongo.DESCENDING).limit(limit + 1).to_list(None)
        return [Message.from_doc(d) for d in docs[:limit]], len(docs) > limit
