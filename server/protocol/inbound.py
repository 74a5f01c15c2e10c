"""Frames clients send, parsed once at the edge: parse(text) -> typed frame or
ProtocolError."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from server.protocol.common import (
    _CONTROL_RE,
    BAD_REQUEST,
    CLIENT_ID_RE,
    DEFAULT_LIMIT,
    FILE_ID_RE,
    MAX_ATTACHMENTS,
    MAX_BODY_BYTES,
    MAX_BODY_CHARS,
    MAX_LIMIT,
    ROOM_RE,
    TOO_LARGE,
    UNKNOWN_TYPE,
    ProtocolError,
    Ref,
)


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
    reply_to: int | None = None  # the seq of the message this one answers
    attachments: tuple[str, ...] = ()  # ids of files the sender uploaded to the room


@dataclass(frozen=True, slots=True)
class Edit:
    room: str
    seq: int
    body: str
    client_id: str | None = None
    ref: Ref = None


@dataclass(frozen=True, slots=True)
class Delete:
    room: str
    seq: int
    client_id: str | None = None
    ref: Ref = None


@dataclass(frozen=True, slots=True)
class React:
    room: str
    seq: int
    emoji: str
    on: bool
    client_id: str | None = None
    ref: Ref = None


# Frames that change the room's stream: acked, rate-limited like a send, idempotent
# by client_id.
Change = Send | Edit | Delete | React


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


@dataclass(frozen=True, slots=True)
class Read:
    room: str
    seq: int
    ref: Ref = None


@dataclass(frozen=True, slots=True)
class Activity:
    """Whether the user is at this client: "idle" once it has had no focus and no input
    for a while, "active" when they return. Sent on changes only."""

    idle: bool
    ref: Ref = None


Frame = (Join | Leave | Send | Edit | Delete | React | History | Typing | Ping | Read
         | Activity)

# An emoji: a short run of non-ASCII, non-space characters (a Unicode emoji, with its
# modifiers and joiners), or a :shortcode:.
EMOJI_RE = re.compile(r"^(?:[^\x00-\x7f\s]{1,16}|:[a-z0-9_+-]{1,30}:)$")


def valid_room(name: object) -> bool:
    return isinstance(name, str) and ROOM_RE.fullmatch(name) is not None


def clamp_limit(value: int | None) -> int:
    if value is None:
        return DEFAULT_LIMIT
    return max(1, min(MAX_LIMIT, value))


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


# One decoder for every frame: json.loads with options builds a new one per call.
_decode = json.JSONDecoder(parse_constant=_reject_constant).decode


def parse(text: str | bytes, max_body: int = MAX_BODY_CHARS) -> Frame:
    """Turn one text frame into a typed frame; raises ProtocolError for anything invalid."""
    if isinstance(text, bytes):
        raise ProtocolError(BAD_REQUEST, "frames must be JSON text, not binary")
    try:
        raw = _decode(text)
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
    attachments = _attachments(raw, ref)
    # A message of files alone may have no text.
    body = "" if attachments and raw.get("body") == "" else _body(raw, ref, max_body)
    reply_to = _seq(raw, "reply_to", ref)
    if reply_to == 0:
        raise ProtocolError(BAD_REQUEST, "reply_to must be the seq of a message", ref)
    return Send(room, body, _client_id(raw, ref), ref, reply_to, attachments)


def _attachments(raw: dict[str, Any], ref: Ref) -> tuple[str, ...]:
    ids = raw.get("attachments")
    if ids is None:
        return ()
    if (not isinstance(ids, list) or len(ids) > MAX_ATTACHMENTS
            or not all(isinstance(i, str) and FILE_ID_RE.fullmatch(i) for i in ids)):
        raise ProtocolError(BAD_REQUEST, f"attachments must be a list of at most "
                            f"{MAX_ATTACHMENTS} file ids", ref)
    if len(set(ids)) != len(ids):
        raise ProtocolError(BAD_REQUEST, "attachments must not repeat a file", ref)
    return tuple(ids)


def _target(raw: dict[str, Any], ref: Ref) -> int:
    seq = _seq(raw, "seq", ref)
    if not seq:
        raise ProtocolError(BAD_REQUEST, "seq must be the seq of a message", ref)
    return seq


def _edit(raw: dict[str, Any], ref: Ref, max_body: int) -> Edit:
    room = _room(raw, ref)
    return Edit(room, _target(raw, ref), _body(raw, ref, max_body), _client_id(raw, ref), ref)


def _delete(raw: dict[str, Any], ref: Ref, max_body: int) -> Delete:
    room = _room(raw, ref)
    return Delete(room, _target(raw, ref), _client_id(raw, ref), ref)


def _react(raw: dict[str, Any], ref: Ref, max_body: int) -> React:
    room = _room(raw, ref)
    seq = _target(raw, ref)
    emoji = raw.get("emoji")
    if not isinstance(emoji, str) or not EMOJI_RE.fullmatch(emoji):
        raise ProtocolError(BAD_REQUEST, "emoji must be an emoji or a :shortcode:", ref)
    on = raw.get("on", True)
    if not isinstance(on, bool):
        raise ProtocolError(BAD_REQUEST, "on must be true or false", ref)
    return React(room, seq, emoji, on, _client_id(raw, ref), ref)


def _body(raw: dict[str, Any], ref: Ref, max_body: int) -> str:
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
    return body


def _client_id(raw: dict[str, Any], ref: Ref) -> str | None:
    client_id = raw.get("client_id")
    if client_id is not None and (
        not isinstance(client_id, str) or not CLIENT_ID_RE.fullmatch(client_id)
    ):
        raise ProtocolError(BAD_REQUEST, "client_id must be 1 to 64 characters of "
                            "A-Z a-z 0-9 _ . : -", ref)
    return client_id


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


def _read(raw: dict[str, Any], ref: Ref, max_body: int) -> Read:
    room = _room(raw, ref)
    seq = _seq(raw, "seq", ref)
    if seq is None:
        raise ProtocolError(BAD_REQUEST, "seq must be a non-negative integer", ref)
    return Read(room, seq, ref)


def _activity(raw: dict[str, Any], ref: Ref, max_body: int) -> Activity:
    state = raw.get("state")
    if state not in ("active", "idle"):
        raise ProtocolError(BAD_REQUEST, "state must be \"active\" or \"idle\"", ref)
    return Activity(state == "idle", ref)


_BUILDERS: dict[str, Callable[[dict[str, Any], Ref, int], Frame]] = {
    "join": _join,
    "leave": _leave,
    "send": _send,
    "edit": _edit,
    "delete": _delete,
    "react": _react,
    "history": _history,
    "typing": _typing,
    "ping": _ping,
    "read": _read,
    "activity": _activity,
}
