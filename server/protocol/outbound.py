"""Frames the server sends, typed, and the one encoder: dump(frame, ref) -> bytes."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, TypeVar

from server.model import Record, User
from server.protocol.common import PAGE_BYTES, PROTOCOL_VERSION, Ref

T = TypeVar("T")


class Listed(Protocol):
    """A member as `joined.members` lists it. One that has a `wire` attribute (bytes,
    not None) carries its JSON object serialized already (server/status.py, Present)."""

    def as_dict(self) -> dict[str, Any]: ...


class Outbound(Protocol):
    """A frame the server sends: its `type` and its fields in wire order."""

    TYPE: ClassVar[str]

    def as_dict(self) -> dict[str, Any]: ...


@dataclass(frozen=True, slots=True)
class Hello:
    TYPE: ClassVar[str] = "hello"
    user: User
    node: str

    def as_dict(self) -> dict[str, Any]:
        return {"protocol": PROTOCOL_VERSION, "user": self.user.as_dict(), "node": self.node}


@dataclass(frozen=True, slots=True)
class Joined:
    TYPE: ClassVar[str] = "joined"
    room: str
    last_seq: int
    members: Sequence[Listed]  # users, or users with their presence state
    messages: list[Record]
    has_more: bool
    read: ReadState | None = None

    def as_dict(self) -> dict[str, Any]:
        out = {"room": self.room, "last_seq": self.last_seq,
               "members": [u.as_dict() for u in self.members],
               "messages": _stream(self.messages), "has_more": self.has_more}
        if self.read is not None:
            out.update(self.read.as_dict())
        return out


@dataclass(frozen=True, slots=True)
class ReadState:
    """Where the user has read up to in a room, and what is unread after it (counts
    capped at 100: a client shows "99+"; zero is exact)."""

    last_read: int
    unread: int
    mentions: int

    def as_dict(self) -> dict[str, Any]:
        return {"last_read": self.last_read, "unread": self.unread, "mentions": self.mentions}


@dataclass(frozen=True, slots=True)
class ReadPosition:
    """To every socket of a user: their read position in a room moved (any device)."""

    TYPE: ClassVar[str] = "read"
    room: str
    seq: int

    def as_dict(self) -> dict[str, Any]:
        return {"room": self.room, "seq": self.seq}


@dataclass(frozen=True, slots=True)
class Left:
    TYPE: ClassVar[str] = "left"
    room: str

    def as_dict(self) -> dict[str, Any]:
        return {"room": self.room}


@dataclass(frozen=True, slots=True)
class Ack:
    TYPE: ClassVar[str] = "ack"
    room: str
    client_id: str | None
    id: str
    seq: int
    ts: int

    @classmethod
    def of(cls, m: Record) -> Ack:
        return cls(m.room, m.client_id, m.id, m.seq, m.ts)

    def as_dict(self) -> dict[str, Any]:
        return {"room": self.room, "client_id": self.client_id, "id": self.id,
                "seq": self.seq, "ts": self.ts}


@dataclass(frozen=True, slots=True)
class HistoryPage:
    TYPE: ClassVar[str] = "history"
    room: str
    messages: list[Record]
    has_more: bool

    def as_dict(self) -> dict[str, Any]:
        return {"room": self.room, "messages": _stream(self.messages),
                "has_more": self.has_more}


@dataclass(frozen=True, slots=True)
class TypingNow:
    TYPE: ClassVar[str] = "typing"
    room: str
    user: User

    def as_dict(self) -> dict[str, Any]:
        return {"room": self.room, "user": self.user.as_dict()}


@dataclass(frozen=True, slots=True)
class PresenceChange:
    TYPE: ClassVar[str] = "presence"
    room: str
    user: User
    status: str  # "online" or "offline"
    away: bool = False  # all the user's sockets are idle
    status_text: str | None = None  # the user's custom status
    status_until: int | None = None  # when it expires (ms), None for never

    def as_dict(self) -> dict[str, Any]:
        return {"room": self.room, "user": self.user.as_dict(), "status": self.status,
                "away": self.away, "status_text": self.status_text,
                "status_until": self.status_until}


@dataclass(frozen=True, slots=True)
class RoomAdded:
    """To every socket of a user who became a member (or created the room)."""

    TYPE: ClassVar[str] = "room_added"
    room: dict[str, Any]  # a Room, as GET /api/rooms/<room> says
    actor: dict[str, Any] | None = None  # who added them (themselves for a join)

    def as_dict(self) -> dict[str, Any]:
        return {"room": self.room, "actor": self.actor}


@dataclass(frozen=True, slots=True)
class RoomUpdated:
    """A room's topic or state, or the user's role or mute in it, changed."""

    TYPE: ClassVar[str] = "room_updated"
    room: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {"room": self.room}


@dataclass(frozen=True, slots=True)
class RoomRemoved:
    """To every socket of a user who left, was kicked or was banned: the room is gone
    from this connection (no more frames of it) and from the user's rooms."""

    TYPE: ClassVar[str] = "room_removed"
    room: str
    reason: str  # "left", "kicked" or "banned"
    until: int | None = None  # a ban's end (ms), None for a ban until lifted
    actor: dict[str, Any] | None = None  # who removed them (themselves for "left")

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"room": self.room, "reason": self.reason, "actor": self.actor}
        if self.reason == "banned":
            out["until"] = self.until
        return out


@dataclass(frozen=True, slots=True)
class Pong:
    TYPE: ClassVar[str] = "pong"

    def as_dict(self) -> dict[str, Any]:
        return {}


@dataclass(frozen=True, slots=True)
class Error:
    TYPE: ClassVar[str] = "error"
    code: str
    message: str
    client_id: str | None = None  # a failed send's, so the client knows which
    retry_after: float | None = None
    details: dict[str, Any] | None = None  # "reason", "until" of a `forbidden`

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"code": self.code, "message": self.message,
                               **(self.details or {})}
        if self.client_id is not None:
            out["client_id"] = self.client_id
        if self.retry_after is not None:
            out["retry_after"] = self.retry_after
        return out


def _stream(records: list[Record]) -> list[dict[str, Any]]:
    """A page of a room's stream, each record with its `type`."""
    return [{"type": r.TYPE, **r.as_dict()} for r in records]


def fit_page(records: list[Record], newest: bool,
             budget: int = PAGE_BYTES) -> tuple[list[Record], bool]:
    """The records that fit in `budget` bytes once serialized, kept from the newest end
    (a page that ends at the top or before a seq) or the oldest (a page after a seq);
    and whether any were cut. The first one kept always fits: a record is far smaller."""
    return _fit(records, [len(dump(r)) for r in records], newest, budget)


def fit_frames(frames: list[bytes], newest: bool, budget: int = PAGE_BYTES
               ) -> tuple[list[bytes], bool]:
    """`fit_page` of records serialized already (each `dump(record)`)."""
    return _fit(frames, [len(f) for f in frames], newest, budget)


def _fit(items: list[T], sizes: list[int], newest: bool, budget: int) -> tuple[list[T], bool]:
    total = 0
    kept = 0
    for size in (reversed(sizes) if newest else sizes):
        total += size + 1
        if kept and total > budget:
            break
        kept += 1
    if kept == len(items):
        return items, False
    return (items[len(items) - kept:] if newest else items[:kept]), True


def dump_joined(frame: Joined, items: list[bytes], ref: Ref = None) -> bytes:
    """`dump(frame, ref)` of a `joined` whose records (its `messages`, left empty) are
    serialized already: each record is serialized once, for the page and its size."""
    head = {"type": Joined.TYPE, "room": frame.room, "last_seq": frame.last_seq}
    members = getattr(frame.members, "wire", None)  # a listing made once for its joiners
    if members is None:
        members = b",".join([_member(m) for m in frame.members])
    tail: dict[str, Any] = {"has_more": frame.has_more}
    if frame.read is not None:
        tail.update(frame.read.as_dict())
    if ref is not None:
        tail["ref"] = ref
    return b"".join((encode(head)[:-1], b',"members":[', members,
                     b'],"messages":[', b",".join(items), b"],", encode(tail)[1:]))


def _member(member: Listed) -> bytes:
    wire = getattr(member, "wire", None)
    return wire if wire is not None else encode(member.as_dict())


# One encoder for every frame: json.dumps with options builds a new one per call.
_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def encode(obj: dict[str, Any]) -> bytes:
    """`obj` as compact UTF-8 JSON: every sent frame, and parts of frames made once."""
    return _encode(obj).encode()


def dump(frame: Outbound | Record, ref: Ref = None) -> bytes:
    """Serialize one frame compactly, `ref` last; the only JSON encoder of sent frames."""
    obj = {"type": frame.TYPE, **frame.as_dict()}
    if ref is not None:
        obj["ref"] = ref
    return encode(obj)
