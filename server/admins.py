"""Operators: the ADMIN_USERS names, each pinned to the account that first held it."""

from __future__ import annotations

import logging

from server.model import User
from server.store import Store

log = logging.getLogger(__name__)


class Admins:
    """Who may read /status and /metrics with a session.

    A name alone is not enough: whoever registers an admin name that nobody holds yet
    would become an operator. Each name is pinned to the id of the first person seen
    holding it (at start-up, or at their first operator request); from then on only
    that account is the operator of that name, even if the name is later registered
    again by someone else. An operator re-pins a name by deleting its document from
    the `admins` collection.
    """

    def __init__(self, store: Store, names: tuple[str, ...]) -> None:
        self.store = store
        self.names = frozenset(name.lower() for name in names)

    async def check(self) -> list[str]:
        """Pin the admin names that are registered; warn about (and return) the others."""
        missing = []
        for name in sorted(self.names):
            doc = await self.store.find_user(name)
            if doc is None or doc.get("bot"):
                missing.append(name)
                continue
            user = User.from_doc(doc)
            pinned = await self.store.pin_admin(name, user.id)
            if pinned != user.id:
                log.warning("ADMIN_USERS: %r belongs to account %s, not to the operator "
                            "account %s it was pinned to; it is not an operator", name,
                            user.id, pinned)
        if missing:
            log.warning("ADMIN_USERS names that no person has registered yet: %s (whoever "
                        "registers one first becomes an operator: register them now)",
                        ", ".join(missing))
        return missing

    async def is_admin(self, user: User) -> bool:
        """Whether this account is the operator its name was pinned to (pinning it if
        the name has no account pinned yet)."""
        name = user.name.lower()
        if user.bot or name not in self.names:
            return False
        return await self.store.pin_admin(name, user.id) == user.id
