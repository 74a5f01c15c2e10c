"""The WebSocket wire schema: parse(text) -> typed frame or ProtocolError, and the typed
frames the server sends, serialized by dump(frame, ref) -> bytes."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from server.model import Message, User

PROTOCOL_VERSION = 1
ROOM_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
CLIENT_ID_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
MAX_BODY_CHARS = 4000
# Also a bound in bytes: 4000 characters of CJK text (3 bytes each) fit, 4000 emoji do not.
MAX_BODY_BYTES = 12000
# C0 control characters other than tab and newline: JSON escapes each into six bytes,
# and no client means to send them.
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b-\x1f]")
# What one page of history (`joined`, `history`, the REST route) may weigh: a page is
# cut to fit, with `has_more`, so that no page can pass a reader's slow-reader bound.
PAGE_BYTES = 256 * 1024
DEFAULT_LIMIT = 50
MAX_LIMIT = 100

# Error codes: the complete list, documented in docs/protocol.md.
BAD_REQUEST = "bad_request"
UNKNOWN_TYPE = "unknown_type"
NOT_FOUND = "not_found"
FORBIDDEN = "forbidden"
RATE_LIMITED = "rate_limited"
TOO_LARGE = "too_large"
UNAVAILABLE = "unavailable"

Ref = str | int | None


class ProtocolError(Exception):
    """A frame the server cannot accept; becomes an `error` frame with `code`."""

    def __init__(self, code: str, message: str, ref: Ref = None,
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.ref = ref
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class Join:
    room: str
    since: int | None = None
    ref: Ref = None


@dataclass(frozen=True, slots=True)
class Leave:
    room: str
    ref: Ref = None


@dataclass(frozen=True, slots=True)
class Send:
    room: str
    body: str
    client_id: str | None = None
    ref: Ref = None


@dataclass(frozen=True, slots=True)
class History:
    room: str
    before: int | None = None
    after: int | None = None
    limit: int = DEFAULT_LIMIT
    ref: Ref = None


@dataclass(frozen=True, slots=True)
class Typing:
    room: str
    ref: Ref = None


@dataclass(frozen=True, slots=True)
class Ping:
    ref: Ref = None


Frame = Join | Leave | Send | History | Typing | Ping


# Frames the server sends ------------------------------------------------------


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
    members: list[User]
    messages: list[Message]
    has_more: bool

    def as_dict(self) -> dict[str, Any]:
        return {"room": self.room, "last_seq": self.last_seq,
                "members": [u.as_dict() for u in self.members],
                "messages": _stream(self.messages), "has_more": self.has_more}


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
    def of(cls, m: Message) -> Ack:
        return cls(m.room, m.client_id, m.id, m.seq, m.ts)

    def as_dict(self) -> dict[str, Any]:
        return {"room": self.room, "client_id": self.client_id, "id": self.id,
                "seq": self.seq, "ts": self.ts}


@dataclass(frozen=True, slots=True)
class HistoryPage:
    TYPE: ClassVar[str] = "history"
    room: str
    messages: list[Message]
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

    def as_dict(self) -> dict[str, Any]:
        return {"room": self.room, "user": self.user.as_dict(), "status": self.status}


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

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.client_id is not None:
            out["client_id"] = self.client_id
        if self.retry_after is not None:
            out["retry_after"] = self.retry_after
        return out


def _stream(records: list[Message]) -> list[dict[str, Any]]:
    """A page of a room's stream, each record with its `type`."""
    return [{"type": r.TYPE, **r.as_dict()} for r in records]


def fit_page(records: list[Message], newest: bool,
             budget: int = PAGE_BYTES) -> tuple[list[Message], bool]:
    """The records that fit in `budget` bytes once serialized, kept from the newest end
    (a page that ends at the top or before a seq) or the oldest (a page after a seq);
    and whether any were cut. The first one kept always fits: a record is far smaller."""
    total = 0
    kept = 0
    for record in (reversed(records) if newest else records):
        total += len(dump(record)) + 1
        if kept and total > budget:
            break
        kept += 1
    if kept == len(records):
        return records, False
    return (records[len(records) - kept:] if newest else records[:kept]), True


def dump(frame: Outbound | Message, ref: Ref = None) -> bytes:
    """Serialize one frame compactly, `ref` last; the only JSON encoder of sent frames."""
    obj = {"type": frame.TYPE, **frame.as_dict()}
    if ref is not None:
        obj["ref"] = ref
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def valid_room(name: object) -> bool:
    return isinstance(name, str) and ROOM_RE.fullmatch(name) is not None


def clamp_limit(value: int | None) -> int:
    if value is None:
        return DEFAULT_LIMIT
    return max(1, min(MAX_LIMIT, value))


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse(text: str | bytes, max_body: int = MAX_BODY_CHARS) -> Frame:
    """Turn one text frame into a typed frame; raises ProtocolError for anything invalid."""
    if isinstance(text, bytes):
        raise ProtocolError(BAD_REQUEST, "frames must be JSON text, not binary")
    try:
        raw = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        raise ProtocolError(BAD_REQUEST, "frame is not valid JSON") from None
    if not isinstance(raw, dict):
        raise ProtocolError(BAD_REQUEST, "frame must be a JSON object")
    ref = raw.get("ref")
    if ref is not None and not _valid_ref(ref):
        raise ProtocolError(BAD_REQUEST, "ref must be a string of at most 64 characters "
                            "or an integer")
    kind = raw.get("type")
    if not isinstance(kind, str):
        raise ProtocolError(BAD_REQUEST, "frame needs a string 'type'", ref)
    builder = _BUILDERS.get(kind)
    if builder is None:
        raise ProtocolError(UNKNOWN_TYPE, f"unknown frame type {kind[:32]!r}", ref)
    return builder(raw, ref, max_body)


def _valid_ref(ref: object) -> bool:
    if isinstance(ref, bool):
        return False
    if isinstance(ref, int):
        return -(2**53) <= ref <= 2**53
    return isinstance(ref, str) and len(ref) <= 64 and _encodable(ref)


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _room(raw: dict[str, Any], ref: Ref) -> str:
    room = raw.get("room")
    if not valid_room(room):
        raise ProtocolError(BAD_REQUEST, "room must match ^[a-z0-9][a-z0-9_-]{0,63}$", ref)
    return str(room)


def _seq(raw: dict[str, Any], key: str, ref: Ref) -> int | None:
    value = raw.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**62:
        raise ProtocolError(BAD_REQUEST, f"{key} must be a non-negative integer", ref)
    return value


def _join(raw: dict[str, Any], ref: Ref, max_body: int) -> Join:
    return Join(_room(raw, ref), _seq(raw, "since", ref), ref)


def _leave(raw: dict[str, Any], ref: Ref, max_body: int) -> Leave:
    return Leave(_room(raw, ref), ref)


def _send(raw: dict[str, Any], ref: Ref, max_body: int) -> Send:
    room = _room(raw, ref)
    body = raw.get("body")
    if not isinstance(body, str):
        raise ProtocolError(BAD_REQUEST, "body must be a string", ref)
    if not body:
        raise ProtocolError(BAD_REQUEST, "body must not be empty", ref)
    if not body.strip():
        raise ProtocolError(BAD_REQUEST, "body must not be whitespace only", ref)
    if len(body) > max_body:
        raise ProtocolError(TOO_LARGE, f"body is over {max_body} characters", ref)
    try:
        encoded = len(body.encode("utf-8"))
    except UnicodeEncodeError:
        raise ProtocolError(BAD_REQUEST, "body is not valid Unicode text", ref) from None
    if encoded > MAX_BODY_BYTES:
        raise ProtocolError(TOO_LARGE, f"body is over {MAX_BODY_BYTES} bytes of UTF-8", ref)
    if _CONTROL_RE.search(body):
        raise ProtocolError(BAD_REQUEST, "body must not contain control characters other "
                            "than newline and tab", ref)
    client_id = raw.get("client_id")
    if client_id is not None and (
        not isinstance(client_id, str) or not CLIENT_ID_RE.fullmatch(client_id)
    ):
        raise ProtocolError(BAD_REQUEST, "client_id must be 1 to 64 characters of "
                            "A-Z a-z 0-9 _ . : -", ref)
    return Send(room, body, client_id, ref)


def _history(raw: dict[str, Any], ref: Ref, max_body: int) -> History:
    room = _room(raw, ref)
    limit = raw.get("limit")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)):
        raise ProtocolError(BAD_REQUEST, "limit must be an integer", ref)
    return History(room, _seq(raw, "before", ref), _seq(raw, "after", ref),
                   clamp_limit(limit), ref)


def _typing(raw: dict[str, Any], ref: Ref, max_body: int) -> Typing:
    return Typing(_room(raw, ref), ref)


def _ping(raw: dict[str, Any], ref: Ref, max_body: int) -> Ping:
    return Ping(ref)


_BUILDERS: dict[str, Callable[[dict[str, Any], Ref, int], Frame]] = {
    "join": _join,
    "leave": _leave,
    "send": _send,
    "history": _history,
    "typing": _typing,
    "ping": _ping,
}
