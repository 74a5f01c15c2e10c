"""The records every layer shares: a user as others see them, and a stored message.

Both are frozen: one built from a MongoDB document is handed to the wire, to Redis and
back to MongoDB without anyone changing it on the way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar


@dataclass(frozen=True, slots=True)
class User:
    """The public user object `{"id","name","bot"}` of frames, presence and the API."""

    id: str
    name: str
    bot: bool = False

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> User:
        """From a `users` document (`_id`) or a stored copy of the public object (`id`)."""
        uid = doc["id"] if "id" in doc else str(doc["_id"])
        return cls(uid, doc["name"], bool(doc.get("bot", False)))

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "bot": self.bot}


@dataclass(frozen=True, slots=True)
class Message:
    """A stored message, in the shape of the `message` frame (which adds `"type"`)."""

    TYPE: ClassVar[str] = "message"  # its kind among the records of a room's stream
    room: str
    id: str
    seq: int
    user: User
    body: str
    ts: int  # milliseconds since the Unix epoch, set by the server
    client_id: str | None = None

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Message:
        return cls(doc["room"], str(doc["_id"]), doc["seq"], User.from_doc(doc["user"]),
                   doc["body"], doc["ts"], doc.get("client_id"))

    def as_dict(self) -> dict[str, Any]:
        return {"room": self.room, "id": self.id, "seq": self.seq,
                "user": self.user.as_dict(), "body": self.body, "ts": self.ts,
                "client_id": self.client_id}
