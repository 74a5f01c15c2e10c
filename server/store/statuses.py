"""Custom status texts: `users.status` = {"text", "until"} (until in ms, or None for a
status that stays until cleared)."""

from __future__ import annotations

from bson import ObjectId

from server.store.core import Collections, _errors


class Statuses(Collections):
    """Status texts of accounts. Every method raises StoreError when MongoDB fails."""

    async def set_status(self, user_id: str, text: str, until: int | None) -> None:
        with _errors():
            await self.db.users.update_one({"_id": ObjectId(user_id)},
                                           {"$set": {"status": {"text": text, "until": until}}})

    async def clear_status(self, user_id: str, until: int | None = None) -> bool:
        """Remove the status; with `until`, only the status expiring then (so that of
        the processes that find it expired, one clears it, and a newer one stays).
        Returns whether a status was removed."""
        query: dict[str, object] = {"_id": ObjectId(user_id), "status": {"$exists": True}}
        if until is not None:
            query["status.until"] = until
        with _errors():
            result = await self.db.users.update_one(query, {"$unset": {"status": ""}})
        return bool(result.modified_count)

    async def status_of(self, user_id: str) -> tuple[str, int | None] | None:
        with _errors():
            doc = await self.db.users.find_one({"_id": ObjectId(user_id)}, {"status": 1})
        status = (doc or {}).get("status")
        return (status["text"], status.get("until")) if status else None

    async def statuses(self) -> dict[str, tuple[str, int | None]]:
        """Every account's status (read once when a process starts)."""
        with _errors():
            docs = await self.db.users.find({"status": {"$exists": True}},
                                            {"status": 1}).to_list(None)
        return {str(d["_id"]): (d["status"]["text"], d["status"].get("until")) for d in docs}
