"""Deactivating an account: it keeps its name and its messages, but can no longer log in,
and everything it (and the bots it owns) had open stops, on every process.

The order matters. The account (and its bots) are marked first; from then on every
session and token lookup refuses them, a login is refused like a wrong password, and a
token issued meanwhile is refused as well (see Bots.issue_token). Then its sessions are
deleted and its bots' tokens revoked, and last every process closes their sockets
(close code 1008, `account deactivated`). Reactivating clears the marks; the sessions
and tokens stay gone: the person logs in again, and their bots need new tokens.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Awaitable, Callable

from server.bots import Bots
from server.envelope import CloseUser, Command
from server.model import User
from server.store import Store

log = logging.getLogger(__name__)

CLOSE_CODE = 1008
CLOSE_REASON = "account deactivated"


class Deactivation:
    """Deactivates and reactivates accounts; `broadcast` carries a command to every
    process (Delivery.command)."""

    def __init__(self, store: Store, bots: Bots,
                 broadcast: Callable[[Command], Awaitable[None]]) -> None:
        self.store = store
        self.bots = bots
        self.broadcast = broadcast

    async def deactivate(self, user: User) -> None:
        """Idempotent: running it again sweeps sessions, tokens and sockets once more."""
        await self.store.deactivate_user(user.id, dt.datetime.now(dt.timezone.utc))
        closing = [user.id]
        if user.bot:
            revoked = len(await self.store.delete_tokens(user.id))
        else:
            await self.store.delete_user_sessions(user.id)
            revoked = len(await self.bots.revoke_all_of_owner(user))
            closing += [bot.id for bot in await self._bots_of(user)]
        await self.broadcast(CloseUser(tuple(closing), CLOSE_CODE, CLOSE_REASON))
        log.info("deactivated account %s (%s); %d bot token(s) revoked", user.name, user.id,
                 revoked)

    async def reactivate(self, user: User) -> None:
        await self.store.reactivate_user(user.id)
        log.info("reactivated account %s (%s)", user.name, user.id)

    async def _bots_of(self, owner: User) -> list[User]:
        found: list[User] = []
        after: str | None = None
        while True:
            bots, more = await self.store.bots_of(owner.id, after=after)
            found += bots
            if not more:
                return found
            after = bots[-1].name
