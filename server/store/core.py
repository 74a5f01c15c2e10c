"""What every part of the store shares: its errors, and inserts under a unique key."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from collections.abc import Iterator
from typing import Any

from motor.motor_asyncio import AsyncIOMotorDatabase
from pymongo.errors import DuplicateKeyError, PyMongoError

log = logging.getLogger(__name__)

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


class Collections:
    """The database every part of the store reads and writes."""

    db: AsyncIOMotorDatabase

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
