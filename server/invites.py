"""Who may sign up: the registration mode, and the invites server admins hand out.

`open`: anyone may register (an invite, if sent, is ignored). `invite`: a registration
needs a live invite, of which it takes one use. `closed`: nobody may register.

An invite code is `secrets.token_urlsafe(24)` (192 random bits), shown once to the
admin who mints it and stored only as its SHA-256, next to its first PREFIX_LEN
characters: a public id to list and revoke it by (what is left unknown, 144 bits, is
still far beyond guessing).

Ordering, so that concurrent registrations never spend more uses than there are and a
use is only spent on an account made: the invite is first read (it must be usable: a
bad invite costs no bcrypt), then the password is hashed, then one use is taken by a
single atomic update (`uses_left > 0`, not expired, `$inc -1`), then the account is
inserted; if the name turns out taken (or the store fails), the use is given back.
Between taking and giving back, another registration may find the last use gone and be
refused although the use comes back a moment later: that refusal is the price of never
admitting one registration too many.
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
from collections.abc import Callable
from typing import Any

from server.auth import AuthError
from server.config import REGISTRATION_MODES
from server.model import User
from server.store import Conflict, Store, StoreError
from server.tokens import token_digest

log = logging.getLogger(__name__)

INVITE_REQUIRED = "invite_required"
REGISTRATION_CLOSED = "registration_closed"

PREFIX_LEN = 8
MAX_CODE_LEN = 64  # longer strings are no code of ours: refused without a lookup
DEFAULT_USES = 1
MAX_USES = 1000
DEFAULT_EXPIRES_IN = 7 * 24 * 3600
MAX_EXPIRES_IN = 90 * 24 * 3600


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _ms(at: dt.datetime) -> int:
    return int(at.timestamp() * 1000)


class Registration:
    """The server's registration mode and its invites."""

    def __init__(self, store: Store, mode: str = "open", *, admin_names: tuple[str, ...] = (),
                 clock: Callable[[], dt.datetime] = _utcnow) -> None:
        if mode not in REGISTRATION_MODES:
            raise ValueError(f"unknown registration mode {mode!r}")
        self.store = store
        self.mode = mode
        self.admin_names = frozenset(n.lower() for n in admin_names)
        self.clock = clock

    # Registering ---------------------------------------------------------------

    async def admit(self, name: object, invite: object) -> InviteTicket | None:
        """What lets this registration through: None (open mode, or an ADMIN_USERS name
        no account holds yet) or a ticket for one use of the invite; AuthError otherwise.

        In invite mode an ADMIN_USERS name that is not pinned to an account needs no
        invite, so that the operator can register first and then mint invites. Whoever
        registers such a name first becomes an operator in open mode too: the server
        warns about unregistered ADMIN_USERS names at start-up for that reason.
        """
        if self.mode == "closed":
            raise AuthError(REGISTRATION_CLOSED, "this server does not accept new accounts")
        if self.mode == "open":
            return None
        if (isinstance(name, str) and name.lower() in self.admin_names
                and await self.store.find_user(name) is None
                and not await self.store.admin_pinned(name)):
            return None
        if not isinstance(invite, str) or not invite.strip():
            raise AuthError(INVITE_REQUIRED, "registration needs an invite code from a "
                            "server admin")
        code = invite.strip()
        digest = token_digest(code)
        if len(code) > MAX_CODE_LEN or await self.store.find_invite(digest, self.clock()) is None:
            raise AuthError(INVITE_REQUIRED, "that invite code is unknown, expired, used up "
                            "or revoked")
        return InviteTicket(self, digest)

    # Invites ---------------------------------------------------------------------

    async def mint(self, admin: User, uses: object = None,
                   expires_in: object = None) -> tuple[str, dict[str, Any]]:
        """A new invite: its code (returned only here) and its public view."""
        uses = DEFAULT_USES if uses is None else uses
        expires_in = DEFAULT_EXPIRES_IN if expires_in is None else expires_in
        if isinstance(uses, bool) or not isinstance(uses, int) or not 1 <= uses <= MAX_USES:
            raise AuthError("bad_request", f"uses must be an integer from 1 to {MAX_USES}")
        if (isinstance(expires_in, bool) or not isinstance(expires_in, (int, float))
                or not 1 <= expires_in <= MAX_EXPIRES_IN):
            raise AuthError("bad_request", "expires_in must be a number of seconds from 1 to "
                            f"{MAX_EXPIRES_IN} (90 days)")
        expires_at = self.clock() + dt.timedelta(seconds=expires_in)
        for _ in range(5):
            code = secrets.token_urlsafe(24)
            try:
                doc = await self.store.create_invite(token_digest(code), code[:PREFIX_LEN],
                                                     uses, expires_at, admin)
            except Conflict:  # two codes sharing 48 bits: draw again
                continue
            return code, invite_view(doc)
        raise StoreError("could not store a new invite")

    async def active(self) -> list[dict[str, Any]]:
        """The invites that can still be used, oldest first (never their codes)."""
        return [invite_view(d) for d in await self.store.active_invites(self.clock())]

    async def revoke(self, prefix: str) -> bool:
        return await self.store.delete_invite(prefix)


class InviteTicket:
    """One use of one invite, for one registration (see the module's ordering)."""

    def __init__(self, registration: Registration, digest: str) -> None:
        self.registration = registration
        self.digest = digest
        self.taken = False

    async def take(self) -> None:
        reg = self.registration
        if not await reg.store.take_invite(self.digest, reg.clock()):
            raise AuthError(INVITE_REQUIRED, "that invite code is used up, expired or revoked")
        self.taken = True

    async def give_back(self) -> None:
        if not self.taken:
            return
        self.taken = False
        try:
            await self.registration.store.give_back_invite(self.digest)
        except StoreError as e:
            log.warning("an invite use taken by a failed registration was not returned: %s", e)


def invite_view(doc: dict[str, Any]) -> dict[str, Any]:
    """An invite as the API lists it: its prefix, never its code or digest."""
    return {"prefix": doc["prefix"], "uses_left": doc["uses_left"], "uses": doc["uses"],
            "expires_at": _ms(doc["expires_at"]), "created_at": _ms(doc["created_at"]),
            "created_by": doc["created_by"]}
