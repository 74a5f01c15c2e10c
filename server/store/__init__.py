"""MongoDB through Motor: users, sessions, tokens, rooms and messages. The only Motor
import. `Store` is one object; its parts live in one module per concept:
`accounts.py` (users, sessions, bots, tokens), `messages.py` (rooms and their
messages), `members.py` (memberships, roles, bans and mutes), `files.py` (shared
files and their bytes in GridFS), `core.py` (errors, and inserts under a unique key or
a quota).
"""

from __future__ import annotations

import contextlib

from motor.motor_asyncio import AsyncIOMotorClient, AsyncIOMotorDatabase

from server.store.accounts import Accounts
from server.store.core import Conflict, QuotaExceeded, StoreError, _errors
from server.store.members import Banned, Members, ban_active, now_ms
from server.store.messages import (
    DEFAULT_ROOM,
    RoomsAndMessages,
    client_key,
    event_doc,
    mentions_doc,
    message_doc,
)
from server.store.reads import UNREAD_CAP, Reads
from server.store.search import Search
from server.store.statuses import Statuses

__all__ = [
    "DEFAULT_ROOM",
    "UNREAD_CAP",
    "Banned",
    "Conflict",
    "QuotaExceeded",
    "Store",
    "StoreError",
    "ban_active",
    "client_key",
    "event_doc",
    "mentions_doc",
    "message_doc",
    "now_ms",
]


class Store(Accounts, RoomsAndMessages, Members, Reads, Search, Statuses):
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
            # Invites are listed and revoked by their public prefix; expired ones are
            # swept a day after they expire (until then the API ignores them).
            await db.invites.create_index("prefix", unique=True)
            await db.invites.create_index("expires_at", expireAfterSeconds=86400)
            await db.messages.create_index([("room", 1), ("seq", 1)], unique=True)
            # Idempotent send: one string key per (room, user, client_id), unique and
            # sparse. A compound partial index would say the same, but SecantusDB never
            # uses a partial index for lookups (a full scan per batch, growing with
            # the collection); a plain sparse one serves both it and mongod.
            await db.messages.create_index("ckey", unique=True, sparse=True)
            # Memberships: a user's rooms, and a room's members.
            await db.members.create_index("uid")
            await db.members.create_index("room")
            # Mentions of a person, newest first (GET /api/mentions).
            await db.messages.create_index("mentions.users", sparse=True)
            # The events about a message (its edits, scrubbed when it is deleted).
            await db.messages.create_index("data.message_seq", sparse=True)
            # Quotas: each room, bot and token an owner creates holds one of the owner's
            # numbered slots ("<owner>|<n>"); see _insert_in_slot.
            for collection, owner_field in (("rooms", "owner"), ("users", "owner_id"),
                                            ("tokens", "user_id")):
                await db[collection].create_index("qslot", unique=True, sparse=True)
                if owner_field != "user_id":  # tokens.user_id is indexed above
                    await db[collection].create_index(owner_field, sparse=True)
        await self.setup_search()
        await self.setup_files()
        with contextlib.suppress(Conflict):
            await self.create_room(DEFAULT_ROOM, creator=None)
