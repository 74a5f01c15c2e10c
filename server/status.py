"""What presence says of a user beyond online/offline: away, and a custom status text
with an optional expiry.

Every process keeps the states that differ from the default (not away, no text) of
every user, so a join lists its members' states without a round trip: a change is
broadcast to all processes (a `MemberChange` "presence"), and a process that starts
reads the statuses from MongoDB and the away users from Redis.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, field
from typing import Any

from server.model import User
from server.protocol.outbound import encode

MAX_STATUS_CHARS = 100
MAX_STATUS_DAYS = 30  # the latest expiry a status may have
# Members listed with their state and its JSON, kept for the next `joined` of their
# rooms; past this many users the whole memo is dropped and refilled as joins go.
MAX_LISTED = 100_000
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")


class StatusError(ValueError):
    """A status text or expiry that is refused; `code` is the documented error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True, slots=True)
class Shown:
    """A user's state as frames show it."""

    away: bool = False
    text: str | None = None
    until: int | None = None  # when the text expires (ms since the epoch), None for never

    def current(self, now: int) -> Shown:
        """Without the text once it has expired."""
        if self.text is not None and self.until is not None and self.until <= now:
            return Shown(self.away)
        return self

    def fields(self) -> dict[str, Any]:
        return {"away": self.away, "status_text": self.text, "status_until": self.until}


DEFAULT = Shown()


@dataclass(frozen=True, slots=True)
class Present:
    """A member of a room as `joined.members` lists it: the user and their state, and
    that pair's JSON object (`wire`), serialized once for every `joined` that lists it."""

    user: User
    shown: Shown
    wire: bytes | None = field(default=None, compare=False, repr=False)

    @classmethod
    def listed(cls, user: User, shown: Shown) -> Present:
        """With its JSON made now."""
        return cls(user, shown, encode(cls(user, shown).as_dict()))

    def as_dict(self) -> dict[str, Any]:
        return {**self.user.as_dict(), **self.shown.fields()}


class Listing(list[Present]):
    """`joined.members` as `present` made it, with the inside of its JSON array
    (`wire`), made with it once for every joiner it is given to."""

    wire: bytes | None = None


def parse_status(body: dict[str, Any], now: int | None = None) -> tuple[str, int | None]:
    """(text, until) from a request body {"text", "until"}; raises StatusError."""
    text = body.get("text")
    if not isinstance(text, str) or not text.strip():
        raise StatusError("bad_request", "text must be a non-empty string")
    text = text.strip()
    if len(text) > MAX_STATUS_CHARS:
        raise StatusError("too_large", f"text is over {MAX_STATUS_CHARS} characters")
    if _CONTROL_RE.search(text):
        raise StatusError("bad_request", "text must not contain control characters")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise StatusError("bad_request", "text is not valid Unicode text") from None
    until = body.get("until")
    if until is not None:
        now = _now_ms() if now is None else now
        if isinstance(until, bool) or not isinstance(until, int):
            raise StatusError("bad_request", "until must be a time in milliseconds or null")
        if until <= now:
            raise StatusError("bad_request", "until must be in the future")
        if until > now + MAX_STATUS_DAYS * 86_400_000:
            raise StatusError("bad_request",
                              f"until must be within {MAX_STATUS_DAYS} days")
    return text, until


class UserStates:
    """This process's copy of every user's non-default state."""

    def __init__(self) -> None:
        self._states: dict[str, Shown] = {}
        # user id -> how `joined.members` listed them last, JSON included: a crowd
        # joining a room of hundreds lists the same members to each joiner.
        self._listed: dict[str, Present] = {}
        self._changes = 0  # of `put`: a listing made before a change is not reused
        # The last listing made, for the joiners given the same member list (a batch of
        # joins of one room shares one): (users, changes, valid until (ms), listing).
        self._last: tuple[list[User], int, float, Listing] | None = None

    def of(self, uid: str, now: int | None = None) -> Shown:
        shown = self._states.get(uid)
        if shown is None:
            return DEFAULT
        return shown.current(_now_ms() if now is None else now)

    def put(self, uid: str, shown: Shown) -> None:
        self._changes += 1
        if shown == DEFAULT:
            self._states.pop(uid, None)
        else:
            self._states[uid] = shown

    def load(self, statuses: dict[str, tuple[str, int | None]], away: set[str]) -> None:
        for uid in set(statuses) | away:
            text, until = statuses.get(uid, (None, None))
            self.put(uid, Shown(uid in away, text, until))

    def present(self, users: list[User], now: int | None = None) -> Listing:
        """The users with their states now, each serialized once while it stays so;
        the same list of users again, with no state changed or expired since, gets the
        same listing (whose JSON is then made once too)."""
        now = _now_ms() if now is None else now
        last = self._last
        if last is not None and last[0] is users and last[1] == self._changes and now < last[2]:
            return last[3]
        listed = self._listed
        out = Listing()
        valid_until = math.inf  # until the first status text shown expires
        for user in users:
            shown = self.of(user.id, now)
            member = listed.get(user.id)
            # Users and states are mostly the very objects listed last time (users are
            # remembered as Redis returned them): compare by identity first.
            if member is None or (member.shown is not shown and member.shown != shown) or (
                    member.user is not user and member.user != user):
                if len(listed) >= MAX_LISTED:
                    listed.clear()
                member = listed[user.id] = Present.listed(user, shown)
            out.append(member)
            if shown.until is not None and shown.text is not None:
                valid_until = min(valid_until, shown.until)
        out.wire = b",".join([m.wire or encode(m.as_dict()) for m in out])
        self._last = (users, self._changes, valid_until, out)
        return out

    def expired(self, now: int | None = None) -> list[tuple[str, int]]:
        """(user id, until) of the status texts that have expired."""
        now = _now_ms() if now is None else now
        return [(uid, s.until) for uid, s in self._states.items()
                if s.text is not None and s.until is not None and s.until <= now]

    @staticmethod
    def encode(shown: Shown) -> dict[str, Any]:
        return shown.fields()

    @staticmethod
    def decode(payload: dict[str, Any]) -> Shown:
        text = payload.get("status_text")
        until = payload.get("status_until")
        return Shown(bool(payload.get("away")), text if isinstance(text, str) else None,
                     until if isinstance(until, int) and not isinstance(until, bool) else None)
