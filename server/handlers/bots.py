"""Bot accounts owned by users, and their API tokens (shown once, stored hashed)."""

from __future__ import annotations

from typing import Any

from server.auth import AuthError, Bots
from server.chat import Chat
from server.handlers.base import ApiError, BaseHandler
from server.store import StoreError, User


class BotHandlerBase(BaseHandler):
    bots: Bots
    chat: Chat

    async def prepare(self) -> None:
        await super().prepare()
        if self.user["bot"]:
            raise ApiError(403, "forbidden", "bots cannot manage bots")

    async def owned_bot(self, name: str) -> User:
        try:
            bot = await self.bots.owned(self.user, name)
        except StoreError:
            raise ApiError(503, "unavailable", "the account store is unavailable") from None
        if bot is None:
            raise ApiError(404, "not_found", f"you own no bot named {name!r}")
        return bot


class BotsHandler(BotHandlerBase):
    async def get(self) -> None:
        try:
            bots = await self.bots.of_owner(self.user)
        except StoreError:
            raise ApiError(503, "unavailable", "the account store is unavailable") from None
        self.write_json({"bots": bots})

    async def post(self) -> None:
        body = self.json_body()
        try:
            bot = await self.bots.create(self.user, body.get("name"))
        except AuthError as e:
            raise ApiError(409 if e.code == "name_taken" else 400, e.code, e.message) from None
        except StoreError:
            raise ApiError(503, "unavailable", "the account store is unavailable") from None
        self.write_json(bot, 201)


class BotTokensHandler(BotHandlerBase):
    async def get(self, name: str) -> None:
        bot = await self.owned_bot(name)
        try:
            tokens = await self.bots.tokens(bot)
        except StoreError:
            raise ApiError(503, "unavailable", "the account store is unavailable") from None
        self.write_json({"tokens": tokens})

    async def post(self, name: str) -> None:
        bot = await self.owned_bot(name)
        label = self.json_body().get("label", "") if self.request.body else ""
        if not isinstance(label, str) or len(label) > 64:
            raise ApiError(400, "bad_request", "label must be a string of at most 64 characters")
        try:
            token, info = await self.bots.issue_token(bot, label)
        except StoreError:
            raise ApiError(503, "unavailable", "the account store is unavailable") from None
        out: dict[str, Any] = {"token": token, **info}
        self.write_json(out, 201)


class BotTokenHandler(BotHandlerBase):
    async def delete(self, name: str, token_id: str) -> None:
        bot = await self.owned_bot(name)
        try:
            digest = await self.bots.revoke(bot, token_id)
        except StoreError:
            raise ApiError(503, "unavailable", "the account store is unavailable") from None
        if digest is None:
            raise ApiError(404, "not_found", f"no token {token_id!r} for {name!r}")
        await self.chat.close_credential_everywhere(digest)
        self.set_status(204)
        self.finish()
