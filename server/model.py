"""The records every layer shares: a user as others see them, and the records of a
room's stream: messages and events (membership and moderation changes), each with its
own `seq`.

Both are frozen: one built from a MongoDB document is handed to the wire, to Redis and
back to MongoDB without anyone changing it on the way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
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


@dataclass(frozen=True, slots=True)
class Event:
    """A change to a room recorded in its stream: who did what to whom.

    On the wire it also carries `user` (the actor), an empty `body` and a null
    `client_id`, so that a v1 client that reads every record of a page as a message
    keeps working.
    """

    TYPE: ClassVar[str] = "event"
    room: str
    id: str
    seq: int
    ts: int
    event: str  # joined, left, added, removed, banned, unbanned, muted, unmuted, ...
    actor: User
    target: User | None = None
    data: dict[str, Any] = field(default_factory=dict)  # role, until, topic, reason

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Event:
        target = doc.get("target")
        return cls(doc["room"], str(doc["_id"]), doc["seq"], doc["ts"], doc["event"],
                   User.from_doc(doc["actor"]), User.from_doc(target) if target else None,
                   dict(doc.get("data") or {}))

    def as_dict(self) -> dict[str, Any]:
        return {"room": self.room, "id": self.id, "seq": self.seq, "ts": self.ts,
                "event": self.event, "actor": self.actor.as_dict(),
                "target": self.target.as_dict() if self.target else None, **self.data,
                "user": self.actor.as_dict(), "body": "", "client_id": None}


Record = Message | Event


def record_from_doc(doc: dict[str, Any]) -> Record:
    """A stored record of a room's stream, by its `type` (messages have none)."""
    return Event.from_doc(doc) if doc.get("type") == Event.TYPE else Message.from_doc(doc)
