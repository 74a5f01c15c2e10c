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
class Attachment:
    """A file a message carries: `{"id","name","size","type","url"}` on the wire."""

    id: str
    name: str
    size: int
    type: str  # the media type sniffed from its content

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Attachment:
        """From a `files` record (`_id`) or a message's stored copy (`id`)."""
        fid = doc["id"] if "id" in doc else str(doc["_id"])
        return cls(fid, doc["name"], int(doc["size"]), doc["type"])

    def stored(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "size": self.size, "type": self.type}

    def as_dict(self) -> dict[str, Any]:
        return {**self.stored(), "url": f"/api/files/{self.id}"}


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
    reply_to: int | None = None  # the seq of the message it answers
    # Its current state: what the events about it (edits, deletes, reactions, replies)
    # made of it, up to the event `state_seq`.
    edited_at: int | None = None
    deleted: bool = False
    reactions: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (emoji, user ids), in order
    replies: int = 0
    state_seq: int = 0
    # Whom it mentions: member ids, and whether it mentions the whole room.
    mentions: tuple[str, ...] = ()
    mentions_room: bool = False
    attachments: tuple[Attachment, ...] = ()

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Message:
        mentions = doc.get("mentions") or {}
        return cls(doc["room"], str(doc["_id"]), doc["seq"], User.from_doc(doc["user"]),
                   doc["body"], doc["ts"], doc.get("client_id"), doc.get("reply_to"),
                   doc.get("edited_at"), bool(doc.get("deleted", False)),
                   _reactions(doc.get("reactions") or ()), int(doc.get("replies", 0)),
                   int(doc.get("state_seq", 0)), tuple(mentions.get("users") or ()),
                   bool(mentions.get("room", False)),
                   tuple(Attachment.from_doc(a) for a in doc.get("attachments") or ()))

    def as_dict(self) -> dict[str, Any]:
        out = {"room": self.room, "id": self.id, "seq": self.seq,
               "user": self.user.as_dict(), "body": self.body, "ts": self.ts,
               "client_id": self.client_id}
        # Fields a v1 message never had appear only when they say something.
        if self.reply_to is not None:
            out["reply_to"] = self.reply_to
        if self.edited_at is not None:
            out["edited_at"] = self.edited_at
        if self.deleted:
            out["deleted"] = True
        if self.reactions:
            out["reactions"] = [{"emoji": e, "count": len(users), "users": list(users)}
                                for e, users in self.reactions]
        if self.replies:
            out["replies"] = self.replies
        if self.state_seq:
            out["state_seq"] = self.state_seq
        if self.mentions or self.mentions_room:
            out["mentions"] = {"users": list(self.mentions), "room": self.mentions_room}
        if self.attachments:
            out["attachments"] = [a.as_dict() for a in self.attachments]
        return out


REACTION_SEP = "\t"  # a stored reaction is "<emoji>\t<user id>"


def _reactions(stored: Any) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """Stored reactions, one "<emoji>\t<user id>" each, grouped by emoji in the order
    each emoji first appeared."""
    grouped: dict[str, list[str]] = {}
    for item in stored:
        emoji, _, uid = str(item).partition(REACTION_SEP)
        grouped.setdefault(emoji, []).append(uid)
    return tuple((e, tuple(users)) for e, users in grouped.items())


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
    data: dict[str, Any] = field(default_factory=dict)  # role, until, topic, message_seq...
    client_id: str | None = None  # of an edit, delete or reaction: its idempotency key

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Event:
        target = doc.get("target")
        return cls(doc["room"], str(doc["_id"]), doc["seq"], doc["ts"], doc["event"],
                   User.from_doc(doc["actor"]), User.from_doc(target) if target else None,
                   dict(doc.get("data") or {}), doc.get("client_id"))

    def as_dict(self) -> dict[str, Any]:
        return {"room": self.room, "id": self.id, "seq": self.seq, "ts": self.ts,
                "event": self.event, "actor": self.actor.as_dict(),
                "target": self.target.as_dict() if self.target else None, **self.data,
                "user": self.actor.as_dict(), "body": "", "client_id": self.client_id}


Record = Message | Event


def record_from_doc(doc: dict[str, Any]) -> Record:
    """A stored record of a room's stream, by its `type` (messages have none)."""
    return Event.from_doc(doc) if doc.get("type") == Event.TYPE else Message.from_doc(doc)
