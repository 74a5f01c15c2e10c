"""The REST API of rooms: listing and making them, their history, members, roles,
bans and mutes, and direct messages. Every rule lives in `server.team.Team`; these
handlers only read arguments and map refusals to HTTP statuses."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, TypeVar

from bson import ObjectId

from server import protocol
from server.auth import Auth
from server.chat import Chat
from server.handlers.base import ApiError, BaseHandler
from server.inflight import Inflight
from server.limits import Limited, RateLimits
from server.moderation import Moderation
from server.protocol import ProtocolError
from server.roles import TeamError
from server.team import Team

T = TypeVar("T")

_CHAT_STATUS = {
    protocol.BAD_REQUEST: 400,
    protocol.NOT_FOUND: 404,
    protocol.FORBIDDEN: 403,
    protocol.RATE_LIMITED: 429,
    protocol.TOO_LARGE: 413,
    protocol.UNAVAILABLE: 503,
}


class TeamHandler(BaseHandler):
    """A handler acting through Team; its refusals become documented API errors."""

    def initialize(self, auth: Auth, inflight: Inflight, chat: Chat,  # type: ignore[override]
                   limits: RateLimits) -> None:
        super().initialize(auth, inflight)
        self.chat = chat
        self.team: Team = chat.team
        self.moderation: Moderation = chat.moderation
        self.limits = limits

    async def spend(self, what: str) -> None:
        """A costly request (search, a new DM): 429 beyond the user's rate."""
        try:
            await self.limits.costly(what, self.user.id)
        except Limited as e:
            raise ApiError(429, "rate_limited", e.message, retry_after=e.retry_after) from None

    async def act(self, action: Awaitable[T]) -> T:
        try:
            return await action
        except TeamError as e:
            raise ApiError(e.status, e.code, e.message, **e.details) from None
        except ProtocolError as e:
            raise ApiError(_CHAT_STATUS.get(e.code, 400), e.code, e.message,
                           **e.details) from None

    def body_field(self, name: str) -> Any:
        return self.json_body().get(name)

    def done(self, status: int = 204) -> None:
        self.set_status(status)
        self.finish()


# A page of rooms counts the unread messages and mentions of every room in it that the
# caller is a member of, one or two queries each: 1000 of them held the process's
# MongoDB access for seconds. `limit` above this is clamped to it.
ROOMS_PAGE_MAX = 100


class RoomsHandler(TeamHandler):
    async def get(self) -> None:
        after, limit = self.page_args()
        rooms, more = await self.act(self.team.rooms(self.user, after=after,
                                                     limit=min(limit, ROOMS_PAGE_MAX)))
        self.write_page("rooms", rooms, more, rooms[-1]["name"] if rooms else None)

    async def post(self) -> None:
        body = self.json_body()
        room = await self.act(self.team.create(self.user, body.get("name"),
                                               body.get("kind", "public"),
                                               body.get("topic", "")))
        self.write_json(room, 201)


class RoomHandler(TeamHandler):
    async def get(self, room: str) -> None:
        self.write_json(await self.act(self.team.view(self.user, room)))

    async def patch(self, room: str) -> None:
        self.write_json(await self.act(self.team.update(self.user, room, self.json_body())))


class MembersHandler(TeamHandler):
    async def get(self, room: str) -> None:
        members = await self.act(self.team.members(self.user, room))
        self.write_json({"members": members})

    async def post(self, room: str) -> None:
        room_view = await self.act(self.moderation.add(self.user, room, self.body_field("user")))
        self.write_json(room_view, 201)


class MemberHandler(TeamHandler):
    async def delete(self, room: str, name: str) -> None:
        await self.act(self.moderation.remove(self.user, room, name))
        self.done()


class RoleHandler(TeamHandler):
    async def put(self, room: str, name: str) -> None:
        member = await self.act(self.moderation.set_role(self.user, room, name,
                                                   self.body_field("role")))
        self.write_json(member)


class BansHandler(TeamHandler):
    async def get(self, room: str) -> None:
        self.write_json({"bans": await self.act(self.moderation.bans(self.user, room))})

    async def post(self, room: str) -> None:
        body = self.json_body()
        until = await self.act(self.moderation.ban(self.user, room, body.get("user"),
                                             body.get("seconds")))
        self.write_json({"user": body.get("user"), "until": until}, 201)


class BanHandler(TeamHandler):
    async def delete(self, room: str, name: str) -> None:
        await self.act(self.moderation.unban(self.user, room, name))
        self.done()


class MutesHandler(TeamHandler):
    async def post(self, room: str) -> None:
        body = self.json_body()
        until = await self.act(self.moderation.mute(self.user, room, body.get("user"),
                                              body.get("seconds")))
        self.write_json({"user": body.get("user"), "until": until}, 201)


class MuteHandler(TeamHandler):
    async def delete(self, room: str, name: str) -> None:
        await self.act(self.moderation.unmute(self.user, room, name))
        self.done()


class DmsHandler(TeamHandler):
    async def post(self) -> None:
        await self.spend("dm")
        room, created = await self.act(self.team.dm(self.user, self.body_field("users")))
        self.write_json(room, 201 if created else 200)


class MentionsHandler(TeamHandler):
    """GET /api/mentions?before=<message id>&limit=: the caller's mentions, newest first."""

    async def get(self) -> None:
        _, limit = self.page_args()
        limit = min(limit, 100)
        before = self.get_query_argument("before", None) or None
        if before is not None and not ObjectId.is_valid(before):
            raise ApiError(400, "bad_request", "before must be a message id")
        rooms = list(await self.team.store.memberships(self.user.id))
        found, more = await self.team.store.mentions_of(self.user.id, rooms, before=before,
                                                        limit=limit)
        out: dict[str, Any] = {"mentions": [{"type": m.TYPE, **m.as_dict()} for m in found]}
        if more and found:
            out["next"] = found[-1].id
        self.write_json(out)


class MessagesHandler(TeamHandler):
    def _int_arg(self, name: str, signed: bool = False) -> int | None:
        raw = self.get_query_argument(name, None)
        if raw is None or raw == "":
            return None
        try:
            value = int(raw)
        except ValueError:
            raise ApiError(400, "bad_request", f"{name} must be an integer") from None
        if signed:
            return value
        if value < 0 or value >= 2**62:
            raise ApiError(400, "bad_request", f"{name} must be a non-negative integer")
        return value

    async def get(self, room: str) -> None:
        if not protocol.valid_room(room):
            raise ApiError(400, "bad_request", "room name must match ^[a-z0-9][a-z0-9_-]{0,63}$")
        before, after = self._int_arg("before"), self._int_arg("after")
        limit = protocol.clamp_limit(self._int_arg("limit", signed=True))
        page = await self.act(self.chat.history(self.user, room, before, after, limit))
        self.write_json(page.as_dict())
