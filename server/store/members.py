"""Who belongs to a room, with which role, and who is banned or muted in it.

One document per (room, user) in `members`, `_id` "<room>|<user id>": `state` is
"member" or "banned" (a ban replaces the membership, so that one read answers both
"may this person join?" and "with which role?"). Times (`until`, `muted_until`) are
milliseconds since the Unix epoch; a ban without `until` lasts until it is lifted.
"""

from __future__ import annotations

import time
from typing import Any

from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from server.model import User
from server.store.core import Collections, _errors

MEMBER = "member"
BANNED = "banned"


def now_ms() -> int:
    return int(time.time() * 1000)


def member_key(room: str, user_id: str) -> str:
    return f"{room}|{user_id}"


class Banned(Exception):
    """The user is banned from the room until `until` (ms; None: until lifted)."""

    def __init__(self, until: int | None) -> None:
        super().__init__("banned")
        self.until = until


def ban_active(doc: dict[str, Any] | None, now: int | None = None) -> bool:
    if doc is None or doc.get("state") != BANNED:
        return False
    until = doc.get("until")
    return until is None or until > (now if now is not None else now_ms())


class Members(Collections):
    """Membership documents. Every method raises StoreError when MongoDB fails."""

    async def member(self, room: str, user_id: str) -> dict[str, Any] | None:
        """The (room, user) document, member or banned; None for neither."""
        with _errors():
            return await self.db.members.find_one({"_id": member_key(room, user_id)})

    async def members_by_key(self, keys: list[str]) -> dict[str, dict[str, Any]]:
        """`member` of many (room, user) keys (`member_key`) in one query."""
        with _errors():
            docs = await self.db.members.find({"_id": {"$in": keys}}).to_list(None)
        return {d["_id"]: d for d in docs}

    async def add_member(self, room: str, user: User, role: str = "member"
                         ) -> tuple[bool, dict[str, Any]]:
        """Make the user a member (if not one already); returns (added, the document).
        Raises Banned while a ban lasts; an expired ban is replaced."""
        key = member_key(room, user.id)
        doc = {"_id": key, "room": room, "uid": user.id, "user": user.as_dict(),
               "role": role, "state": MEMBER, "since": now_ms()}
        with _errors():
            try:
                await self.db.members.insert_one(doc)
                return True, doc
            except DuplicateKeyError:
                pass
            existing = await self.db.members.find_one({"_id": key})
            if existing is None:  # removed meanwhile: try once more
                await self.db.members.insert_one(doc)
                return True, doc
            if existing.get("state") == MEMBER:
                return False, existing
            if ban_active(existing):
                raise Banned(existing.get("until"))
            replaced = await self.db.members.find_one_and_replace(
                {"_id": key, "state": BANNED}, doc, return_document=ReturnDocument.AFTER)
            if replaced is None:  # someone else changed it: whatever it is now wins
                existing = await self.db.members.find_one({"_id": key})
                if existing is not None and existing.get("state") == MEMBER:
                    return False, existing
                raise Banned(existing.get("until") if existing else None)
            return True, replaced

    async def remove_member(self, room: str, user_id: str) -> dict[str, Any] | None:
        """End a membership; returns the member document it removed (None if none)."""
        with _errors():
            return await self.db.members.find_one_and_delete(
                {"_id": member_key(room, user_id), "state": MEMBER})

    async def ban_member(self, room: str, user: User, until: int | None,
                         by: User) -> dict[str, Any] | None:
        """Ban (ending any membership); returns the document it replaced, if any."""
        doc = {"room": room, "uid": user.id, "user": user.as_dict(), "state": BANNED,
               "until": until, "by": by.id, "since": now_ms()}
        with _errors():
            return await self.db.members.find_one_and_replace(
                {"_id": member_key(room, user.id)}, doc, upsert=True,
                return_document=ReturnDocument.BEFORE)

    async def unban_member(self, room: str, user_id: str) -> bool:
        with _errors():
            result = await self.db.members.delete_one(
                {"_id": member_key(room, user_id), "state": BANNED})
        return bool(result.deleted_count)

    async def set_member(self, room: str, user_id: str, **fields: Any) -> dict[str, Any] | None:
        """Change fields of a membership (role, muted_until); returns it, or None if the
        user is not a member."""
        with _errors():
            return await self.db.members.find_one_and_update(
                {"_id": member_key(room, user_id), "state": MEMBER}, {"$set": fields},
                return_document=ReturnDocument.AFTER)

    async def room_members(self, room: str, *, limit: int = 5000) -> list[dict[str, Any]]:
        """The members of a room (bans not included), by name."""
        with _errors():
            docs = await self.db.members.find({"room": room, "state": MEMBER}).to_list(limit)
        return sorted(docs, key=lambda d: d["user"]["name"])

    async def room_bans(self, room: str, *, limit: int = 5000) -> list[dict[str, Any]]:
        with _errors():
            docs = await self.db.members.find({"room": room, "state": BANNED}).to_list(limit)
        return [d for d in docs if ban_active(d)]

    async def banned_rooms(self, user_id: str) -> set[str]:
        """The rooms the user is banned from now."""
        with _errors():
            docs = await self.db.members.find({"uid": user_id, "state": BANNED}).to_list(None)
        return {d["room"] for d in docs if ban_active(d)}

    async def memberships(self, user_id: str, *, limit: int = 10000) -> dict[str, dict[str, Any]]:
        """The rooms a user is a member of: room name -> member document."""
        with _errors():
            docs = await self.db.members.find({"uid": user_id, "state": MEMBER}).to_list(limit)
        return {d["room"]: d for d in docs}
