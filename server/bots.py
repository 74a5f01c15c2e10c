"""Bot accounts owned by people, and their API tokens (shown once, stored hashed)."""

from __future__ import annotations

import datetime as dt

from server.auth import AuthError, QuotaError, validate_username
from server.model import User
from server.store import Conflict, QuotaExceeded, Store
from server.tokens import new_token, token_digest


class Bots:
    """Bot accounts owned by users, and their API tokens."""

    def __init__(self, store: Store, *, max_bots: int = 20, max_tokens: int = 20) -> None:
        self.store = store
        self.max_bots = max_bots  # per owner
        self.max_tokens = max_tokens  # per bot

    async def create(self, owner: User, name: object) -> User:
        botname = validate_username(name)
        try:
            bot = await self.store.create_user(botname, b"", bot=True, owner_id=owner.id,
                                               limit=self.max_bots)
        except Conflict:
            raise AuthError("name_taken", "that name is taken") from None
        except QuotaExceeded as e:
            raise QuotaError(f"you own {e.limit} bots, the most allowed: delete one first",
                             e.limit) from None
        return bot

    async def of_owner(self, owner: User, *, after: str | None = None,
                       limit: int = 1000) -> tuple[list[User], bool]:
        """A page of the owner's bots by name, and whether more exist."""
        return await self.store.bots_of(owner.id, after=after, limit=limit)

    async def owned(self, owner: User, name: str) -> User | None:
        doc = await self.store.find_user(name)
        if doc is None or not doc.get("bot") or doc.get("owner_id") != owner.id:
            return None
        return User.from_doc(doc)

    async def issue_token(self, bot: User, label: str = "") -> tuple[str, dict[str, object]]:
        """A new token: returned once here, stored only as its SHA-256."""
        token, prefix = new_token()
        digest = token_digest(token)
        try:
            doc = await self.store.create_token(bot, digest, prefix, label,
                                                limit=self.max_tokens)
        except QuotaExceeded as e:
            raise QuotaError(f"{bot.name} has {e.limit} tokens, the most allowed: revoke one "
                             "first", e.limit) from None
        # A token issued while its bot was being deleted must not outlive it: the
        # deletion sweeps tokens again after removing the bot, and this check covers
        # a token stored after that sweep.
        if not await self.store.user_exists(bot.id):
            await self.store.delete_tokens(bot.id)
            raise AuthError("not_found", f"no bot named {bot.name!r}")
        # Likewise for an owner deactivated meanwhile: deactivation marks the owner
        # before it sweeps their bots' tokens, so either that sweep finds this token or
        # this check finds the mark.
        owner = await self.store.owner_of(bot.id)
        if owner is not None and await self.store.is_deactivated(owner):
            await self.store.delete_tokens(bot.id)
            raise AuthError("forbidden", "the bot's owner is deactivated")
        return token, _token_view(doc)

    async def tokens(self, bot: User, *, after: str | None = None,
                     limit: int = 1000) -> tuple[list[dict[str, object]], bool] | None:
        """A page of the bot's tokens, oldest first; None if `after` names no token."""
        page = await self.store.tokens_of(bot.id, after=after, limit=limit)
        if page is None:
            return None
        docs, more = page
        return [_token_view(d) for d in docs], more

    async def revoke(self, bot: User, token_id: str) -> str | None:
        """Delete a token by its public id; returns its digest (to close its sockets)."""
        return await self.store.delete_token(bot.id, token_id)

    async def revoke_all(self, bot: User) -> list[str]:
        """Delete every token of a bot; returns their digests (to close their sockets)."""
        return await self.store.delete_tokens(bot.id)

    async def revoke_all_of_owner(self, owner: User) -> list[str]:
        """Delete every token of every bot the owner has; returns their digests."""
        digests: list[str] = []
        after: str | None = None
        while True:
            bots, more = await self.store.bots_of(owner.id, after=after)
            for bot in bots:
                digests += await self.store.delete_tokens(bot.id)
            if not more:
                return digests
            after = bots[-1].name

    async def delete(self, bot: User) -> list[str]:
        """Delete a bot and its tokens; returns the tokens' digests (to close sockets).

        Tokens first: a token whose bot is gone would still authenticate (it carries a
        copy of the bot's user), so none may be left behind. Then the bot, then its
        tokens once more, for one issued meanwhile.
        """
        digests = await self.store.delete_tokens(bot.id)
        await self.store.delete_user(bot.id)
        return digests + await self.store.delete_tokens(bot.id)


def _token_view(doc: dict[str, object]) -> dict[str, object]:
    created = doc["created_at"]
    assert isinstance(created, dt.datetime)
    return {"id": doc["prefix"], "label": doc.get("label", ""),
            "created_at": int(created.timestamp() * 1000)}
