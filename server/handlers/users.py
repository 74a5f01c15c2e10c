"""Finding people, who the caller is, and what the server lets anyone know before
signing in."""

from __future__ import annotations

from typing import Any

from server.admins import Admins
from server.auth import Auth
from server.chat import Chat
from server.handlers import http
from server.handlers.base import ApiError, BaseHandler
from server.inflight import Inflight
from server.invites import Registration
from server.status import Shown, StatusError, parse_status
from server.store import Store, StoreError, now_ms

SEARCH_LIMIT = 20
PREFIX_MAX = 32  # the longest username


class UsersHandler(BaseHandler):
    """GET /api/users?prefix=: active accounts whose name starts with the prefix."""

    def initialize(self, auth: Auth, inflight: Inflight, store: Store,  # type: ignore[override]
                   admins: Admins) -> None:
        super().initialize(auth, inflight)
        self.store = store
        self.admins = admins

    async def get(self) -> None:
        prefix = self.get_query_argument("prefix", "")
        if len(prefix) > PREFIX_MAX:
            raise ApiError(400, "bad_request", f"prefix must be at most {PREFIX_MAX} characters")
        everyone = self.get_query_argument("all", "") in ("1", "true")
        if everyone and not await self.admins.is_admin(self.user):
            raise ApiError(403, "forbidden", "only server admins may list deactivated accounts")
        docs = await self.store.search_users(prefix, limit=SEARCH_LIMIT,
                                             with_deactivated=everyone)
        users: list[dict[str, Any]] = []
        for doc in docs:
            entry = {"id": str(doc["_id"]), "name": doc["name"], "bot": bool(doc.get("bot"))}
            if everyone:
                entry["deactivated"] = doc.get("deactivated_at") is not None
            users.append(entry)
        self.write_json({"users": users})


class MeHandler(http.MeHandler):
    """GET /api/me: the caller's user object, and whether they are a server admin."""

    def initialize(self, auth: Auth, inflight: Inflight,  # type: ignore[override]
                   admins: Admins) -> None:
        super().initialize(auth, inflight)
        self.admins = admins

    async def get(self) -> None:
        self.write_json({**self.user.as_dict(), "admin": await self.admins.is_admin(self.user)})


class ServerHandler(BaseHandler):
    """GET /api/server: what a sign-in page needs to know, without signing in."""

    login_required = False

    def initialize(self, auth: Auth, inflight: Inflight,  # type: ignore[override]
                   registration: Registration) -> None:
        super().initialize(auth, inflight)
        self.registration = registration

    async def get(self) -> None:
        self.write_json({"registration": self.registration.mode})


class StatusHandler(BaseHandler):
    """GET / PUT / DELETE /api/me/status: the caller's custom status text, which every
    room where they are online learns at once."""

    def initialize(self, auth: Auth, inflight: Inflight,  # type: ignore[override]
                   chat: Chat) -> None:
        super().initialize(auth, inflight)
        self.chat = chat

    async def get(self) -> None:
        try:
            status = await self.chat.store.status_of(self.user.id)
        except StoreError:
            raise ApiError(503, "unavailable", "the account store is unavailable") from None
        text, until = status if status else (None, None)
        shown = Shown(False, text, until).current(now_ms())
        self.write_json({"text": shown.text, "until": shown.until})

    async def put(self) -> None:
        try:
            text, until = parse_status(self.json_body())
        except StatusError as e:
            raise ApiError(413 if e.code == "too_large" else 400, e.code, e.message) from None
        await self._set(text, until)

    async def delete(self) -> None:
        await self._set(None, None)
        self.set_status(204)

    async def _set(self, text: str | None, until: int | None) -> None:
        try:
            shown = await self.chat.hub.set_status(self.user, text, until)
        except StoreError:
            raise ApiError(503, "unavailable", "the account store is unavailable") from None
        if text is not None:
            self.write_json({"text": shown.text, "until": shown.until})
