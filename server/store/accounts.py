"""Accounts: users, operators pinned by id, sessions, bots and their API tokens, and
the invites that admit new users."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from bson import ObjectId
from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from server.model import User
from server.store.core import Collections, _errors, _utcnow
from server.store.invites import InviteCodes

# A deactivated account has `deactivated_at`; matching None also matches a missing field.
ACTIVE: dict[str, Any] = {"deactivated_at": None}


class Accounts(InviteCodes, Collections):
    """Users, sessions, tokens and invites. Every method raises StoreError when MongoDB
    fails."""

    # Users ------------------------------------------------------------------

    async def create_user(self, name: str, password_hash: bytes, *, bot: bool = False,
                          owner_id: str | None = None, limit: int | None = None) -> User:
        """A new account; a bot with a `limit` takes one of its owner's bot slots."""
        doc = {
            "_id": ObjectId(),
            "name": name,
            "name_lower": name.lower(),
            "password": password_hash,
            "bot": bot,
            "owner_id": owner_id,
            "created_at": _utcnow(),
        }
        if owner_id is not None and limit is not None:
            await self._insert_in_slot(self.db.users, doc, name, owner_field="owner_id",
                                       limit=limit)
        else:
            await self._insert_unique(self.db.users, doc, name)
        return User.from_doc(doc)

    async def find_user(self, name: str) -> dict[str, Any] | None:
        """The full user document (with password hash) by case-insensitive name."""
        with _errors():
            return await self.db.users.find_one({"name_lower": name.lower()})

    async def user_by_id(self, user_id: str) -> dict[str, Any] | None:
        """The public user object of an account id (None if there is none)."""
        if not ObjectId.is_valid(user_id):
            return None
        with _errors():
            doc = await self.db.users.find_one({"_id": ObjectId(user_id)},
                                               {"name": 1, "bot": 1})
        return User.from_doc(doc).as_dict() if doc else None

    async def user_exists(self, user_id: str) -> bool:
        with _errors():
            return await self.db.users.find_one({"_id": ObjectId(user_id)}, {"_id": 1}) is not None

    async def owner_of(self, user_id: str) -> str | None:
        """The id of the person who owns a bot (None for a person or a missing account)."""
        with _errors():
            doc = await self.db.users.find_one({"_id": ObjectId(user_id)}, {"owner_id": 1})
        return doc.get("owner_id") if doc else None

    async def delete_user(self, user_id: str) -> bool:
        with _errors():
            result = await self.db.users.delete_one({"_id": ObjectId(user_id)})
        return bool(result.deleted_count)

    async def search_users(self, prefix: str, *, limit: int = 20,
                           with_deactivated: bool = False) -> list[dict[str, Any]]:
        """Accounts whose name starts with `prefix` (case-insensitive), by name.

        An anchored, escaped regex on the indexed lowercase name: the index bounds the
        scan to the names that share the prefix.
        """
        query: dict[str, Any] = {"name_lower": {"$regex": "^" + re.escape(prefix.lower())}}
        if not with_deactivated:
            query.update(ACTIVE)
        with _errors():
            return await self.db.users.find(
                query, {"name": 1, "bot": 1, "deactivated_at": 1}).sort(
                "name_lower", 1).limit(limit).to_list(None)

    async def deactivate_user(self, user_id: str, at: dt.datetime) -> None:
        """Mark an account and the bots it owns deactivated (those already marked keep
        their time, so reactivating their owner leaves them as they were)."""
        with _errors():
            await self.db.users.update_one({"_id": ObjectId(user_id), **ACTIVE},
                                           {"$set": {"deactivated_at": at}})
            await self.db.users.update_many({"owner_id": user_id, "bot": True, **ACTIVE},
                                            {"$set": {"deactivated_at": at}})

    async def reactivate_user(self, user_id: str) -> None:
        """Clear an account's mark, and that of the bots deactivated along with it."""
        with _errors():
            doc = await self.db.users.find_one_and_update(
                {"_id": ObjectId(user_id)}, {"$unset": {"deactivated_at": ""}},
                {"deactivated_at": 1})
            at = doc.get("deactivated_at") if doc else None
            if at is not None:
                await self.db.users.update_many(
                    {"owner_id": user_id, "bot": True, "deactivated_at": at},
                    {"$unset": {"deactivated_at": ""}})

    async def is_deactivated(self, user_id: str) -> bool:
        """Whether the account is marked deactivated (a missing account is not)."""
        with _errors():
            return await self.db.users.find_one(
                {"_id": ObjectId(user_id), "deactivated_at": {"$ne": None}},
                {"_id": 1}) is not None

    async def admin_pinned(self, name: str) -> bool:
        """Whether an operator name has been pinned to an account."""
        with _errors():
            return await self.db.admins.find_one({"_id": name.lower()}, {"_id": 1}) is not None

    async def pin_admin(self, name: str, user_id: str) -> str:
        """Pin an operator name to an account the first time it is seen; returns the id
        it is pinned to (the given one, or the one pinned before)."""
        key = name.lower()
        with _errors():
            try:
                doc = await self.db.admins.find_one_and_update(
                    {"_id": key}, {"$setOnInsert": {"user_id": user_id, "pinned_at": _utcnow()}},
                    upsert=True, return_document=ReturnDocument.AFTER)
            except DuplicateKeyError:  # another process pinned it at the same moment
                doc = await self.db.admins.find_one({"_id": key})
        assert doc is not None
        return str(doc["user_id"])

    # Sessions ---------------------------------------------------------------

    async def create_session(self, sid: str, user: User, ttl: dt.timedelta) -> None:
        now = _utcnow()
        doc = {"_id": sid, "user": user.as_dict(), "user_id": user.id, "created_at": now,
               "expires_at": now + ttl}
        with _errors():
            await self.db.sessions.insert_one(doc)

    async def session_user(self, sid: str) -> User | None:
        """The user of a live session; expired ones count as gone before the TTL sweep.

        Deactivating an account deletes its sessions, but one created by a login that
        raced the deactivation would outlive that sweep: the account is checked too.
        """
        with _errors():
            doc = await self.db.sessions.find_one(
                {"_id": sid, "expires_at": {"$gt": _utcnow()}}, {"user": 1}
            )
        if doc is None:
            return None
        user = User.from_doc(doc["user"])
        return None if await self.is_deactivated(user.id) else user

    async def session_users(self, sids: list[str]) -> dict[str, tuple[User, dt.datetime]]:
        """`session_user` of many sessions in two queries: each live session's user
        and expiry (deactivated accounts', and unknown or expired sessions, missing)."""
        with _errors():
            docs = await self.db.sessions.find(
                {"_id": {"$in": sids}, "expires_at": {"$gt": _utcnow()}},
                {"user": 1, "expires_at": 1}).to_list(None)
            found = {d["_id"]: (User.from_doc(d["user"]), d["expires_at"]) for d in docs}
            ids = list({ObjectId(user.id) for user, _ in found.values()})
            gone = {str(d["_id"]) for d in await self.db.users.find(
                {"_id": {"$in": ids}, "deactivated_at": {"$ne": None}}, {"_id": 1}
            ).to_list(None)} if ids else set()
        return {sid: entry for sid, entry in found.items() if entry[0].id not in gone}

    async def delete_session(self, sid: str) -> None:
        with _errors():
            await self.db.sessions.delete_one({"_id": sid})

    async def delete_user_sessions(self, user_id: str, keep: str | None = None) -> list[str]:
        """Delete every session of a user except `keep`; returns the deleted ids."""
        query: dict[str, Any] = {"user_id": user_id}
        if keep is not None:
            query["_id"] = {"$ne": keep}
        with _errors():
            sids = [d["_id"] for d in await self.db.sessions.find(query, {"_id": 1})
                    .to_list(None)]
            if sids:
                await self.db.sessions.delete_many({"_id": {"$in": sids}})
        return sids

    async def set_password(self, user_id: str, password_hash: bytes) -> None:
        with _errors():
            await self.db.users.update_one({"_id": ObjectId(user_id)},
                                           {"$set": {"password": password_hash}})

    # Bots and tokens ----------------------------------------------------------

    async def bots_of(self, owner_id: str, *, after: str | None = None,
                      limit: int = 1000) -> tuple[list[User], bool]:
        """A page of an owner's bots by name (after the name `after`), and whether more
        exist beyond it."""
        query: dict[str, Any] = {"bot": True, "owner_id": owner_id}
        if after is not None:
            query["name_lower"] = {"$gt": after.lower()}
        with _errors():
            docs = await self.db.users.find(query).sort("name_lower", 1).limit(
                limit + 1).to_list(None)
        return [User.from_doc(d) for d in docs[:limit]], len(docs) > limit

    async def create_token(self, user: User, digest: str, prefix: str, label: str, *,
                           limit: int | None = None) -> dict[str, Any]:
        """Store a token's digest; with a `limit`, it takes one of the bot's token slots."""
        doc = {"_id": digest, "user": user.as_dict(), "user_id": user.id, "prefix": prefix,
               "label": label, "created_at": _utcnow()}
        if limit is not None:
            await self._insert_in_slot(self.db.tokens, doc, prefix, owner_field="user_id",
                                       limit=limit)
        else:
            with _errors():
                await self.db.tokens.insert_one(doc)
        return doc

    async def token_user(self, digest: str) -> User | None:
        """The bot of a token, unless the bot (or with it its owner) is deactivated: a
        token issued while its owner was being deactivated works no more than the
        tokens revoked then."""
        with _errors():
            doc = await self.db.tokens.find_one({"_id": digest}, {"user": 1})
        if doc is None:
            return None
        user = User.from_doc(doc["user"])
        return None if await self.is_deactivated(user.id) else user

    async def live_tokens(self, digests: list[str]) -> set[str]:
        """Which of these tokens still stand (`token_user` of many, in two queries)."""
        with _errors():
            docs = await self.db.tokens.find({"_id": {"$in": digests}},
                                             {"user": 1}).to_list(None)
            ids = list({ObjectId(d["user"]["id"]) for d in docs})
            gone = {str(d["_id"]) for d in await self.db.users.find(
                {"_id": {"$in": ids}, "deactivated_at": {"$ne": None}}, {"_id": 1}
            ).to_list(None)} if ids else set()
        return {d["_id"] for d in docs if d["user"]["id"] not in gone}

    async def tokens_of(self, user_id: str, *, after: str | None = None,
                        limit: int = 1000) -> tuple[list[dict[str, Any]], bool] | None:
        """A page of a user's tokens, oldest first, after the token whose public id
        (prefix) is `after`, and whether more exist; None if `after` names no token."""
        query: dict[str, Any] = {"user_id": user_id}
        with _errors():
            if after is not None:
                cursor = await self.db.tokens.find_one({"user_id": user_id, "prefix": after},
                                                       {"created_at": 1})
                if cursor is None:
                    return None
                at = cursor["created_at"]
                query["$or"] = [{"created_at": {"$gt": at}},
                                {"created_at": at, "prefix": {"$gt": after}}]
            docs = await self.db.tokens.find(query).sort(
                [("created_at", 1), ("prefix", 1)]).limit(limit + 1).to_list(None)
        return docs[:limit], len(docs) > limit

    async def delete_token(self, user_id: str, prefix: str) -> str | None:
        """Delete a user's token by its public prefix; returns its digest if it existed."""
        with _errors():
            doc = await self.db.tokens.find_one_and_delete({"user_id": user_id,
                                                            "prefix": prefix})
        return doc["_id"] if doc else None

    async def delete_tokens(self, user_id: str) -> list[str]:
        """Delete every token of a user; returns their digests."""
        with _errors():
            digests = [d["_id"] for d in await self.db.tokens.find(
                {"user_id": user_id}, {"_id": 1}).to_list(None)]
            if digests:
                await self.db.tokens.delete_many({"_id": {"$in": digests}})
        return digests
