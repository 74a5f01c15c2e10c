"""MongoDB through Motor: users, sessions, rooms and messages. The only Motor import."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from collections.abc import Iterator
from typing import Any

import pymongo
from bson import ObjectId
from motor.motor_asyncio import AsyncIOMotorClient, AsyncIOMotorDatabase
from pymongo import ReturnDocument, UpdateOne
from pymongo.errors import BulkWriteError, DuplicateKeyError, PyMongoError

from server.model import Message, User

log = logging.getLogger(__name__)

DEFAULT_ROOM = "general"


class StoreError(Exception):
    """MongoDB could not be reached or refused the operation."""


class Conflict(Exception):
    """A unique name (user or room) is already taken."""


class QuotaExceeded(Exception):
    """The owner already holds as many rooms, bots or tokens as their quota allows."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"quota of {limit} reached")
        self.limit = limit


def _slot_key(owner: str, slot: int) -> str:
    return f"{owner}|{slot}"


def _is_slot_conflict(e: DuplicateKeyError) -> bool:
    details = e.details or {}
    return "qslot" in (details.get("keyPattern") or {}) or "qslot" in str(
        details.get("errmsg", ""))


@contextlib.contextmanager
def _errors() -> Iterator[None]:
    """Every MongoDB failure leaves the store as StoreError; callers never see PyMongo."""
    try:
        yield
    except PyMongoError as e:
        raise StoreError(str(e)) from e


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def client_key(room: str, user_id: str, client_id: str) -> str:
    """The stored key that makes (room, user, client_id) unique."""
    return f"{room}|{user_id}|{client_id}"


def message_doc(room: str, seq: int, user: User, body: str, ts: int,
                client_id: str | None) -> dict[str, Any]:
    """A new message document; its `ckey` makes a resent client_id a duplicate key."""
    doc: dict[str, Any] = {"_id": ObjectId(), "room": room, "seq": seq,
                           "user": user.as_dict(), "body": body, "ts": ts}
    if client_id is not None:
        doc["client_id"] = client_id
        doc["ckey"] = client_key(room, user.id, client_id)
    return doc


class Store:
    """All persistent state. Every method raises StoreError when MongoDB fails."""

    def __init__(self, client: AsyncIOMotorClient, db_name: str) -> None:
        self.client = client
        self.db: AsyncIOMotorDatabase = client[db_name]

    @classmethod
    def connect(cls, url: str, db_name: str, timeout_ms: int = 5000) -> Store:
        client: AsyncIOMotorClient = AsyncIOMotorClient(
            url,
            tz_aware=True,
            serverSelectionTimeoutMS=timeout_ms,
            connectTimeoutMS=timeout_ms,
            socketTimeoutMS=timeout_ms,
            maxPoolSize=64,
            appname="tornado-chat",
        )
        return cls(client, db_name)

    def close(self) -> None:
        self.client.close()

    async def ping(self) -> None:
        with _errors():
            await self.client.admin.command("ping")

    async def setup(self) -> None:
        """Create indexes and the default room; safe to run on every start."""
        db = self.db
        with _errors():
            await db.users.create_index("name_lower", unique=True)
            await db.sessions.create_index("expires_at", expireAfterSeconds=0)
            await db.sessions.create_index("user_id")
            await db.tokens.create_index("user_id")
            await db.messages.create_index([("room", 1), ("seq", 1)], unique=True)
            # Idempotent send: one string key per (room, user, client_id), unique and
            # sparse. A compound partial index would say the same, but SecantusDB never
            # uses a partial index for lookups (a full scan per batch, growing with
            # the collection); a plain sparse one serves both it and mongod.
            await db.messages.create_index("ckey", unique=True, sparse=True)
            # Quotas: each room, bot and token an owner creates holds one of the owner's
            # numbered slots ("<owner>|<n>"); see _insert_in_slot.
            for collection, owner_field in (("rooms", "owner"), ("users", "owner_id"),
                                            ("tokens", "user_id")):
                await db[collection].create_index("qslot", unique=True, sparse=True)
                if owner_field != "user_id":  # tokens.user_id is indexed above
                    await db[collection].create_index(owner_field, sparse=True)
        with contextlib.suppress(Conflict):
            await self.create_room(DEFAULT_ROOM, creator=None)

    @staticmethod
    async def _insert_unique(collection: Any, doc: dict[str, Any], name: str) -> None:
        """Insert a document whose unique key is a name; Conflict if it is taken."""
        with _errors():
            try:
                await collection.insert_one(doc)
            except DuplicateKeyError:
                raise Conflict(name) from None

    @staticmethod
    async def _insert_in_slot(collection: Any, doc: dict[str, Any], name: str, *,
                              owner_field: str, limit: int) -> None:
        """Insert a document that counts against its owner's quota of `limit`.

        Each such document holds one of its owner's slots 0..limit-1 in a unique key
        (`qslot`), so requests that race cannot take more than `limit` slots between
        them (a count followed by an insert could: every request would count before
        any inserted), and deleting the document frees its slot. Conflict if the
        name is taken, QuotaExceeded if every slot is.
        """
        owner = doc[owner_field]
        # A retry means that another request took the slot we chose: after `limit`
        # of those every slot is taken, and the count below says so.
        for _ in range(limit + 2):
            with _errors():
                held = await collection.find({owner_field: owner}, {"qslot": 1}).to_list(limit)
            if len(held) >= limit:
                break
            taken = {d.get("qslot") for d in held}
            doc["qslot"] = next(key for key in (_slot_key(owner, n) for n in range(limit))
                                if key not in taken)
            with _errors():
                try:
                    await collection.insert_one(doc)
                    return
                except DuplicateKeyError as e:
                    if not _is_slot_conflict(e):
                        raise Conflict(name) from None
        raise QuotaExceeded(limit)

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
        """The user of a live session; expired ones count as gone before the TTL sweep."""
        with _errors():
            doc = await self.db.sessions.find_one(
                {"_id": sid, "expires_at": {"$gt": _utcnow()}}, {"user": 1}
            )
        return User.from_doc(doc["user"]) if doc else None

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
        with _errors():
            doc = await self.db.tokens.find_one({"_id": digest}, {"user": 1})
        return User.from_doc(doc["user"]) if doc else None

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

    # Rooms ------------------------------------------------------------------

    async def create_room(self, name: str, creator: User | None, *, owner: str | None = None,
                          limit: int | None = None) -> dict[str, Any]:
        """A new room; with an `owner` and a `limit`, it takes one of the owner's room
        slots (the owner of a bot's room is the bot's owner)."""
        doc = {"_id": name, "seq": 0, "created_at": _utcnow(),
               "created_by": creator.id if creator else None}
        if owner is not None and limit is not None:
            doc["owner"] = owner
            await self._insert_in_slot(self.db.rooms, doc, name, owner_field="owner",
                                       limit=limit)
        else:
            await self._insert_unique(self.db.rooms, doc, name)
        return doc

    async def room(self, name: str) -> dict[str, Any] | None:
        with _errors():
            return await self.db.rooms.find_one({"_id": name})

    async def rooms(self, *, after: str | None = None,
                    limit: int = 1000) -> tuple[list[dict[str, Any]], bool]:
        """A page of rooms and whether more exist beyond it.

        The default room comes first, then every other room by name: a page of rooms
        named `0000...` cannot push `general` out of the first page. `after` is the last
        name of the previous page (`general` for the page after the first room).
        """
        docs: list[dict[str, Any]] = []
        query: dict[str, Any] = {"_id": {"$ne": DEFAULT_ROOM}}
        with _errors():
            if after is None:
                default = await self.db.rooms.find_one({"_id": DEFAULT_ROOM})
                docs += [default] if default else []
            elif after != DEFAULT_ROOM:
                query["_id"]["$gt"] = after
            docs += await self.db.rooms.find(query).sort("_id", 1).limit(
                limit + 1 - len(docs)).to_list(None)
        return docs[:limit], len(docs) > limit

    # Messages ---------------------------------------------------------------

    async def room_seqs(self, rooms: list[str]) -> dict[str, int]:
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

    async def record_seqs(self, tops: dict[str, int]) -> None:
        """Raise each room's recorded top seq to at least the given one (`$max`)."""
        with _errors():
            await self.db.rooms.bulk_write(
                [UpdateOne({"_id": room}, {"$max": {"seq": seq}}) for room, seq in tops.items()],
                ordered=False)

    async def find_by_ckeys(self, ckeys: list[str]) -> dict[str, Message]:
        """Stored messages by their `client_key`."""
        with _errors():
            docs = await self.db.messages.find({"ckey": {"$in": ckeys}}).to_list(None)
        return {d["ckey"]: Message.from_doc(d) for d in docs}

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
                       limit: int = 50, top: int | None = None) -> tuple[list[Message], bool]:
        """A page of a room's history, ascending by seq, and whether more exist beyond it.

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
        return [Message.from_doc(d) for d in docs], has_more
