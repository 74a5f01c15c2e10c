"""The REST API: accounts, sessions, rooms and history."""

from __future__ import annotations

from server.auth import BUSY, Auth, AuthError
from server.bots import Bots
from server.chat import Chat
from server.handlers.base import SESSION_COOKIE, ApiError, BaseHandler
from server.inflight import Inflight
from server.invites import INVITE_REQUIRED, REGISTRATION_CLOSED, Registration
from server.limits import Limited, RateLimits
from server.model import User
from server.store import StoreError
from server.tokens import token_digest

_AUTH_STATUS = {"bad_request": 400, "name_taken": 409, "unauthorized": 401, BUSY: 503}


def _auth_error(e: AuthError) -> ApiError:
    extra = {} if e.retry_after is None else {"retry_after": e.retry_after}
    return ApiError(_AUTH_STATUS.get(e.code, 400), e.code, e.message, **extra)


def _limited(e: Limited) -> ApiError:
    return ApiError(429, "rate_limited", e.message, retry_after=e.retry_after)


class SessionHandler(BaseHandler):
    """Shared by register and login: start a session and set its cookie."""

    login_required = False

    def initialize(self, auth: Auth, inflight: Inflight, limits: RateLimits  # type: ignore[override]
                   ) -> None:
        super().initialize(auth, inflight)
        self.limits = limits

    async def start_session(self, user: User) -> None:
        sid = await self.auth.start_session(user)
        self.set_signed_cookie(
            SESSION_COOKIE, sid, expires_days=self.auth.session_days, httponly=True,
            samesite="Lax", secure=self.request.protocol == "https", path="/",
        )


class RegisterHandler(SessionHandler):
    """Who may register is the Registration's call: anyone, invite holders, no one."""

    def initialize(self, auth: Auth, inflight: Inflight, limits: RateLimits,  # type: ignore[override]
                   registration: Registration) -> None:
        super().initialize(auth, inflight, limits)
        self.registration = registration

    async def post(self) -> None:
        body = self.json_body()
        name = body.get("username")
        try:
            attempt = await self.limits.register_attempt(self.request.remote_ip or "", name)
        except Limited as e:
            raise _limited(e) from None
        try:
            ticket = await self.registration.admit(name, body.get("invite"))
            user = await self.auth.register(name, body.get("password"), ticket=ticket)
            await self.start_session(user)
        except AuthError as e:
            if e.code == BUSY:
                await attempt.cancelled()
            if e.code in (INVITE_REQUIRED, REGISTRATION_CLOSED):
                raise ApiError(403, e.code, e.message) from None
            raise _auth_error(e) from None
        await attempt.succeeded()
        self.write_json(user.as_dict(), 201)


class LoginHandler(SessionHandler):
    """Counted before the password is checked: parallel guesses cannot all slip through."""

    async def post(self) -> None:
        body = self.json_body()
        name = body.get("username")
        try:
            attempt = await self.limits.login_attempt(self.request.remote_ip or "", name)
        except Limited as e:
            raise _limited(e) from None
        try:
            user = await self.auth.login(name, body.get("password"),
                                         trusted=attempt.known_caller)
        except AuthError as e:
            if e.code == BUSY:
                await attempt.cancelled()  # no password was checked
            raise _auth_error(e) from None
        except StoreError:
            await attempt.cancelled()  # the user was not found: no password was checked
            raise
        await attempt.succeeded()
        await self.start_session(user)
        self.write_json(user.as_dict())


class RevokingHandler(BaseHandler):
    """A handler that ends sessions, whose sockets Chat then closes on every process."""

    def initialize(self, auth: Auth, inflight: Inflight, chat: Chat  # type: ignore[override]
                   ) -> None:
        super().initialize(auth, inflight)
        self.chat = chat


class LogoutHandler(RevokingHandler):
    async def post(self) -> None:
        if self.session_id is not None:
            await self.auth.end_session(self.session_id)
            await self.chat.close_credential(token_digest(self.session_id))
        self.clear_cookie(SESSION_COOKIE, path="/")
        self.set_status(204)
        self.finish()


class PasswordHandler(RevokingHandler):
    """Wrong current passwords count like failed logins of that user."""

    def initialize(self, auth: Auth, inflight: Inflight, chat: Chat,  # type: ignore[override]
                   bots: Bots, limits: RateLimits) -> None:
        super().initialize(auth, inflight, chat)
        self.bots = bots
        self.limits = limits

    async def post(self) -> None:
        if self.current_user is None or self.user.bot:
            raise ApiError(403, "forbidden", "bots have no password")
        body = self.json_body()
        revoke_bot_tokens = body.get("revoke_bot_tokens", False)
        if not isinstance(revoke_bot_tokens, bool):
            raise ApiError(400, "bad_request", "revoke_bot_tokens must be true or false")
        try:
            attempt = await self.limits.password_attempt(
                self.request.remote_ip or "", self.user.id, self.user.name)
        except Limited as e:
            raise _limited(e) from None
        try:
            revoked = await self.auth.change_password(
                self.user, body.get("old_password"), body.get("new_password"), self.session_id,
                trusted=attempt.known_caller)
        except AuthError as e:
            if e.code != "unauthorized":  # an invalid new password or BUSY: nothing checked
                await attempt.cancelled()
            raise _auth_error(e) from None
        await attempt.succeeded()
        for sid in revoked:
            await self.chat.close_credential(token_digest(sid))
        if revoke_bot_tokens:  # a stolen session may have issued tokens: end them too
            for digest in await self.bots.revoke_all_of_owner(self.user):
                await self.chat.close_credential(digest)
        self.set_status(204)
        self.finish()


class MeHandler(BaseHandler):
    async def get(self) -> None:
        self.write_json(self.user.as_dict())
