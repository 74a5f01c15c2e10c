"""The vocabulary of rooms and roles: room kinds, roles and the least role of each action,
the refusals of team actions, a caller's `Access` to a room and the `Room` object of the
API. Who may see and do what is decided in `server.team`, with these words.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from server import protocol
from server.model import User
from server.protocol import ProtocolError
from server.store import now_ms

KINDS = ("public", "private", "dm")
ROLES = ("member", "moderator", "admin", "owner")
RANK = {role: rank for rank, role in enumerate(ROLES)}
# The lowest role allowed each action (on members below the actor's own role).
PERMISSIONS = {
    "post": "member", "react": "member", "edit_own": "member", "delete_own": "member",
    "delete_others": "moderator", "mute": "moderator", "kick": "moderator",
    "ban": "admin", "add": "admin", "topic": "admin", "make_moderator": "admin",
    "make_admin": "owner", "transfer": "owner", "archive": "owner",
}
DM_MIN, DM_MAX = 2, 8
ROOM_MAX = 64  # characters in a room name
MAX_TOPIC = 250
MAX_SECONDS = 10 * 365 * 86400


class TeamError(ProtocolError):
    """A refused team action; `code` is a protocol error code (`conflict` for a name
    that is taken, `quota_exceeded` for a quota), `status` its HTTP status."""

    STATUS = {protocol.BAD_REQUEST: 400, protocol.FORBIDDEN: 403, protocol.NOT_FOUND: 404,
              "name_taken": 409, "quota_exceeded": 403, protocol.UNAVAILABLE: 503}

    @property
    def status(self) -> int:
        return self.STATUS.get(self.code, 400)


def not_found(room: str) -> TeamError:
    return TeamError(protocol.NOT_FOUND, f"no room named {room!r}")


def forbidden(message: str, **details: Any) -> TeamError:
    return TeamError(protocol.FORBIDDEN, message, **details)


def dm_name(user_ids: list[str]) -> str:
    """The one room name of a set of people."""
    digest = hashlib.sha256(",".join(sorted(set(user_ids))).encode()).hexdigest()
    return f"dm-{digest[:24]}"


def kind_of(room: dict[str, Any]) -> str:
    return str(room.get("kind") or "public")  # rooms stored before kinds are public


@dataclass(frozen=True, slots=True)
class Access:
    """A room the caller can see, and their membership (None: a non-member of a
    public room)."""

    room: dict[str, Any]
    member: dict[str, Any] | None

    @property
    def name(self) -> str:
        return str(self.room["_id"])

    @property
    def kind(self) -> str:
        return kind_of(self.room)

    @property
    def role(self) -> str | None:
        return self.member["role"] if self.member else None

    @property
    def muted_until(self) -> int:
        until = int(self.member.get("muted_until") or 0) if self.member else 0
        return until if until > now_ms() else 0


def room_view(room: dict[str, Any], member: dict[str, Any] | None,
              people: list[User] | None = None) -> dict[str, Any]:
    """The `Room` object of the API and of `room_added` / `room_updated`."""
    view: dict[str, Any] = {"name": room["_id"], "title": room.get("title") or room["_id"],
                            "kind": kind_of(room), "topic": room.get("topic", ""),
                            "last_seq": room.get("seq", 0),
                            "member": member is not None,
                            "role": member["role"] if member else None,
                            "archived": bool(room.get("archived", False))}
    if member is not None and member.get("muted_until", 0) > now_ms():
        view["muted_until"] = member["muted_until"]
    if people is not None:
        view["members"] = [u.as_dict() for u in people]
    return view
