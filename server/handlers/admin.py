"""Server admins' API: invites (who may sign up) and deactivating accounts.

A server admin is an ADMIN_USERS name pinned to its account (server/admins.py); anyone
else, bots included, gets 403 `forbidden`.
"""

from __future__ import annotations

from server.admins import Admins
from server.auth import USERNAME_RE, Auth, AuthError
from server.deactivation import Deactivation
from server.handlers.base import ApiError, BaseHandler
from server.inflight import Inflight
from server.invites import PREFIX_LEN, Registration
from server.model import User
from server.store import Store

SELF_DEACTIVATION = "cannot_deactivate_self"


class AdminHandler(BaseHandler):
    """A request only server admins may make."""

    def initialize(self, auth: Auth, inflight: Inflight,  # type: ignore[override]
                   admins: Admins) -> None:
        super().initialize(auth, inflight)
        self.admins = admins

    async def prepare(self) -> None:
        await super().prepare()
        if not await self.admins.is_admin(self.user):
            raise ApiError(403, "forbidden", "only server admins may do this")


class _InviteAdmin(AdminHandler):
    """A server admin's request about invites."""

    def initialize(self, auth: Auth, inflight: Inflight, admins: Admins,  # type: ignore[override]
                   registration: Registration) -> None:
        super().initialize(auth, inflight, admins)
        self.registration = registration


class InvitesHandler(_InviteAdmin):
    """GET and POST /api/invites: list and mint."""

    async def get(self) -> None:
        self.write_json({"invites": await self.registration.active()})

    async def post(self) -> None:
        body = self.json_body() if self.request.body else {}
        try:
            code, view = await self.registration.mint(self.user, body.get("uses"),
                                                      body.get("expires_in"))
        except AuthError as e:
            raise ApiError(400, e.code, e.message) from None
        self.write_json({"code": code, **view}, 201)


class InviteHandler(_InviteAdmin):
    """DELETE /api/invites/<prefix>. Not a subclass of InvitesHandler: its get and post
    take no prefix, and Tornado's own 405 answers the methods this route lacks."""

    async def delete(self, prefix: str) -> None:
        if len(prefix) != PREFIX_LEN or not await self.registration.revoke(prefix):
            raise ApiError(404, "not_found", f"no invite {prefix[:PREFIX_LEN]!r}: revoke an "
                           f"invite by its prefix (its first {PREFIX_LEN} characters, as "
                           "listed)")
        self.set_status(204)
        self.finish()


class AccountStateHandler(AdminHandler):
    """POST /api/admin/users/<name>/deactivate and …/reactivate."""

    def initialize(self, auth: Auth, inflight: Inflight, admins: Admins,  # type: ignore[override]
                   store: Store, deactivation: Deactivation) -> None:
        super().initialize(auth, inflight, admins)
        self.store = store
        self.deactivation = deactivation

    async def post(self, name: str, action: str) -> None:
        doc = await self.store.find_user(name) if USERNAME_RE.fullmatch(name) else None
        if doc is None:
            raise ApiError(404, "not_found", f"no account named {name!r}")
        account = User.from_doc(doc)
        if action == "deactivate":
            if account.id == self.user.id:
                raise ApiError(409, SELF_DEACTIVATION, "you cannot deactivate your own account")
            await self.deactivation.deactivate(account)
        else:
            await self.deactivation.reactivate(account)
        self.set_status(204)
        self.finish()
