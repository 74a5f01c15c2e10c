"""GET /api/search: full-text search over the messages the caller can read."""

from __future__ import annotations

import datetime as dt
import re

from server.auth import Auth
from server.chat import Chat
from server.handlers.base import ApiError
from server.handlers.rooms import TeamHandler
from server.inflight import Inflight
from server.limits import RateLimits
from server.model import User
from server.search import MessageSearch

MAX_LIMIT = 50


def _number(raw: str) -> int | None:
    """A count or a time in ms, in ASCII digits: `"²".isdigit()` is true, but `int()`
    refuses it, and a number of thousands of digits, which BSON could not hold anyway."""
    return int(raw) if re.fullmatch(r"[0-9]{1,15}", raw) else None


def _moment(name: str, raw: str | None) -> int | None:
    """A time bound: ms since the epoch, or a UTC date YYYY-MM-DD (its midnight)."""
    if not raw:
        return None
    ms = _number(raw)
    if ms is not None:
        return ms
    try:
        day = dt.datetime.strptime(raw, "%Y-%m-%d").replace(tzinfo=dt.timezone.utc)
    except ValueError:
        raise ApiError(400, "bad_request",
                       f"{name} must be ms since the epoch or a date YYYY-MM-DD") from None
    return int(day.timestamp() * 1000)


class SearchHandler(TeamHandler):
    def initialize(self, auth: Auth, inflight: Inflight, chat: Chat,  # type: ignore[override]
                   limits: RateLimits, search: MessageSearch) -> None:
        super().initialize(auth, inflight, chat, limits)
        self.search = search

    async def get(self) -> None:
        await self.spend("search")
        arg = self.get_query_argument
        room = arg("room", None) or None
        if room is not None:
            await self.act(self.team.readable(self.user, room))  # 404 as everywhere else
        author: User | None = None
        name = arg("user", None) or None
        if name is not None:
            doc = await self.team.store.find_user(name)
            if doc is None:
                self.write_json({"results": []})
                return
            author = User.from_doc(doc)
        order = arg("order", "newest")
        if order not in ("newest", "best"):
            raise ApiError(400, "bad_request", "order must be newest or best")
        limit = _number(arg("limit", None) or "20")
        if limit is None or not 1 <= limit <= MAX_LIMIT:
            raise ApiError(400, "bad_request", f"limit must be 1 to {MAX_LIMIT}")
        results, cursor = await self.act(self.search.search(
            self.user, arg("q", None), room=room, author=author,
            after_ms=_moment("after", arg("after", None)),
            before_ms=_moment("before", arg("before", None)), best=order == "best",
            cursor=arg("cursor", None) or None, limit=limit))
        out: dict[str, object] = {"results": results}
        if cursor is not None:
            out["next"] = cursor
        self.write_json(out)
