"""Invites: codes that admit new accounts while registration is by invite only.

A code is stored only as its SHA-256 (`_id`), like API tokens, with a short public
prefix to list and revoke it by. Each use is taken by one atomic update, so an invite
with one use left admits one registration however many race for it.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from pymongo import ReturnDocument

from server.model import User
from server.store.core import Collections, _errors, _utcnow


class InviteCodes(Collections):
    """The `invites` collection. Every method raises StoreError when MongoDB fails."""

    async def create_invite(self, digest: str, prefix: str, uses: int,
                            expires_at: dt.datetime, creator: User) -> dict[str, Any]:
        """Store an invite; Conflict if another one has the same prefix."""
        doc = {"_id": digest, "prefix": prefix, "uses_left": uses, "uses": uses,
               "expires_at": expires_at, "created_at": _utcnow(),
               "created_by": creator.as_dict()}
        await self._insert_unique(self.db.invites, doc, prefix)
        return doc

    async def find_invite(self, digest: str, now: dt.datetime) -> dict[str, Any] | None:
        """The invite if it can still be used now (a read: nothing is taken)."""
        with _errors():
            return await self.db.invites.find_one(_usable(digest, now))

    async def take_invite(self, digest: str, now: dt.datetime) -> bool:
        """Take one use of an invite, atomically; False if it is unknown, expired,
        used up or revoked."""
        with _errors():
            doc = await self.db.invites.find_one_and_update(
                _usable(digest, now), {"$inc": {"uses_left": -1}},
                return_document=ReturnDocument.AFTER)
        return doc is not None

    async def give_back_invite(self, digest: str) -> None:
        """Return a use taken by a registration that then failed (a revoked invite
        stays revoked: there is nothing to return it to)."""
        with _errors():
            await self.db.invites.update_one({"_id": digest}, {"$inc": {"uses_left": 1}})

    async def active_invites(self, now: dt.datetime, limit: int = 1000) -> list[dict[str, Any]]:
        """Invites with a use left that have not expired, oldest first."""
        with _errors():
            return await self.db.invites.find(
                {"uses_left": {"$gt": 0}, "expires_at": {"$gt": now}},
                {"_id": 0}).sort([("created_at", 1), ("prefix", 1)]).limit(limit).to_list(None)

    async def delete_invite(self, prefix: str) -> bool:
        with _errors():
            result = await self.db.invites.delete_one({"prefix": prefix})
        return bool(result.deleted_count)


def _usable(digest: str, now: dt.datetime) -> dict[str, Any]:
    return {"_id": digest, "uses_left": {"$gt": 0}, "expires_at": {"$gt": now}}
