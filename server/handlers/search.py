"""GET /api/search: full-text search over the messages the caller can read."""

from __future__ import annotations

import datetime as dt

from server.auth import Auth
from server.chat import Chat
from server.handlers.base import ApiError
from server.handlers.rooms import TeamHandler
from server.inflight import Inflight
from server.limits import RateLimits
from server.model import User
from server.search import MessageSearch

MAX_LIMIT = 50


def _moment(name: str, raw: str | None) -> int | None:
    """A time bound: ms since the epoch, or a UTC date YYYY-MM-DD (its midnight)."""
    if not raw:
        return None
    if raw.isdigit():
        return int(raw)
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
        raw_limit = arg("limit", None) or "20"
        if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= MAX_LIMIT:
            raise ApiError(400, "bad_request", f"limit must be 1 to {MAX_LIMIT}")
        results, cursor = await self.act(self.search.search(
            self.user, arg("q", None), room=room, author=author,
            after_ms=_moment("after", arg("after", None)),
            before_ms=_moment("before", arg("before", None)), best=order == "best",
            cursor=arg("cursor", None) or None, limit=int(raw_limit)))
        out: dict[str, object] = {"results": results}
        if cursor is not None:
            out["next"] = cursor
        self.write_json(out)
