"""Bot accounts owned by users, and their API tokens (shown once, stored hashed)."""

from __future__ import annotations

from typing import Any

from server.auth import Auth, AuthError, QuotaError
from server.bots import Bots
from server.chat import Chat
from server.handlers.base import ApiError, BaseHandler
from server.inflight import Inflight
from server.model import User

_STATUS = {"name_taken": 409, "not_found": 404, "quota_exceeded": 403, "forbidden": 403}


def _api_error(e: AuthError) -> ApiError:
    extra = {"limit": e.limit} if isinstance(e, QuotaError) else {}
    return ApiError(_STATUS.get(e.code, 400), e.code, e.message, **extra)


ID_LENGTH = 13  # a token's public id: "chat_" and the token's next 8 characters


class BotHandlerBase(BaseHandler):
    def initialize(self, auth: Auth, inflight: Inflight, bots: Bots,  # type: ignore[override]
                   chat: Chat) -> None:
        super().initialize(auth, inflight)
        self.bots = bots
        self.chat = chat

    async def prepare(self) -> None:
        await super().prepare()
        if self.user.bot:
            raise ApiError(403, "forbidden", "bots cannot manage bots")

    async def owned_bot(self, name: str) -> User:
        bot = await self.bots.owned(self.user, name)
        if bot is None:
            raise ApiError(404, "not_found", f"you own no bot named {name!r}")
        return bot

    async def close_all(self, digests: list[str]) -> None:
        """Close the sockets of revoked tokens on every process."""
        for digest in digests:
            await self.chat.close_credential(digest)


class BotsHandler(BotHandlerBase):
    async def get(self) -> None:
        after, limit = self.page_args()
        bots, more = await self.bots.of_owner(self.user, after=after, limit=limit)
        self.write_page("bots", [b.as_dict() for b in bots], more,
                        bots[-1].name if bots else None)

    async def post(self) -> None:
        body = self.json_body()
        try:
            bot = await self.bots.create(self.user, body.get("name"))
        except AuthError as e:
            raise _api_error(e) from None
        self.write_json(bot.as_dict(), 201)


class BotHandler(BotHandlerBase):
    async def delete(self, name: str) -> None:
        """Delete the bot: its tokens stop working and its sockets close everywhere."""
        bot = await self.owned_bot(name)
        await self.close_all(await self.bots.delete(bot))
        self.set_status(204)
        self.finish()


class BotTokensHandler(BotHandlerBase):
    async def get(self, name: str) -> None:
        after, limit = self.page_args()
        bot = await self.owned_bot(name)
        page = await self.bots.tokens(bot, after=after, limit=limit)
        if page is None:
            raise ApiError(400, "bad_request", f"after names no token of {name!r} "
                           "(revoked since?): list again from the start")
        tokens, more = page
        self.write_page("tokens", tokens, more, str(tokens[-1]["id"]) if tokens else None)

    async def post(self, name: str) -> None:
        bot = await self.owned_bot(name)
        label = self.json_body().get("label", "") if self.request.body else ""
        if not isinstance(label, str) or len(label) > 64:
            raise ApiError(400, "bad_request", "label must be a string of at most 64 characters")
        try:
            token, info = await self.bots.issue_token(bot, label)
        except AuthError as e:
            raise _api_error(e) from None
        out: dict[str, Any] = {"token": token, **info}
        self.write_json(out, 201)

    async def delete(self, name: str) -> None:
        """Revoke every token of the bot; answers how many there were."""
        bot = await self.owned_bot(name)
        digests = await self.bots.revoke_all(bot)
        await self.close_all(digests)
        self.write_json({"revoked": len(digests)})


class BotTokenHandler(BotHandlerBase):
    async def delete(self, name: str, token_id: str) -> None:
        bot = await self.owned_bot(name)
        digest = await self.bots.revoke(bot, token_id)
        if digest is None:
            if len(token_id) > ID_LENGTH:  # perhaps the token itself: never echo it
                raise ApiError(404, "not_found", f"no such token id for {name!r}: revoke a "
                               f"token by its id (its first {ID_LENGTH} characters, as "
                               f"listed), never by the token itself")
            raise ApiError(404, "not_found", f"no token {token_id!r} for {name!r}")
        await self.chat.close_credential(digest)
        self.set_status(204)
        self.finish()
