"""What every HTTP handler shares: who is calling, JSON in and out, security headers."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import tornado.web
from tornado.log import app_log, gen_log

from server.auth import COOKIE_MEMO_KEY_MAX, Auth
from server.inflight import Inflight
from server.logs import redact
from server.model import User
from server.store import StoreError
from server.tokens import token_digest

log = logging.getLogger(__name__)

SESSION_COOKIE = "session"

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)

# Every response: pages, static files, the API, WebSocket upgrades.
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}

# Lists (rooms, bots, tokens) come in pages: `limit` is clamped to 1..PAGE_MAX.
PAGE_DEFAULT = 100
PAGE_MAX = 1000

_DEFAULT_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    429: "rate_limited",
    503: "unavailable",
}


class ApiError(tornado.web.HTTPError):
    """An HTTP error with a documented code and a message safe to show."""

    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(status, reason=None, log_message=None)
        self.code = code
        self.message = message
        self.extra = extra


def bearer_token(request: Any) -> str | None:
    """The token of an `Authorization: Bearer` header, never from a query or cookie."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


@dataclass(frozen=True)
class Caller:
    """Who made a request and with which credential."""

    user: User | None
    how: str  # "bearer", "cookie" or "none"
    session_id: str | None = None
    # sha256 of the session id or token: names the credential on the control channel
    # (to close its sockets everywhere) without revealing it.
    credential: str | None = None


async def resolve_user(handler: tornado.web.RequestHandler, auth: Auth) -> Caller:
    """The caller of a request: bearer token first, else the signed session cookie."""
    token = bearer_token(handler.request)
    if token is not None:
        return Caller(await auth.token_user(token), "bearer", None, token_digest(token))
    header = handler.request.headers.get("Cookie")
    if header and len(header) > COOKIE_MEMO_KEY_MAX:
        header = None  # parsed and checked every time: see COOKIE_MEMO_KEY_MAX
    raw = auth.cookies.get(header) if header else None
    if raw is None:
        # min_version=2: with versioned secrets Tornado asserts (a 500) on an old-format
        # value unless told that only version 2 is acceptable.
        raw = handler.get_signed_cookie(SESSION_COOKIE, max_age_days=auth.session_days,
                                        min_version=2)
        if raw is not None and header:
            auth.cookies.fill(header, raw, auth.cookies.version)
    if raw is None:
        # A cookie that was sent but fails its signature (or is too old) still says
        # how the caller tried: the 401 then tells them to log in again.
        return Caller(None, "cookie" if handler.get_cookie(SESSION_COOKIE) else "none")
    sid = raw.decode("ascii", "replace")
    return Caller(await auth.session_user(sid), "cookie", sid, token_digest(sid))


class XsrfCookieHandler(tornado.web.RequestHandler):
    """A page that sets the `_xsrf` cookie: `Secure` when served over HTTPS.

    Tornado's `xsrf_cookie_kwargs` apply to every request alike, and a `Secure` cookie
    set over plain HTTP would never come back, so the flag is decided per request.
    """

    def set_cookie(self, name: str, value: str | bytes, *args: Any, **kwargs: Any) -> None:
        if (name == self.settings.get("xsrf_cookie_name", "_xsrf")
                and self.request.protocol == "https"):
            kwargs["secure"] = True
        super().set_cookie(name, value, *args, **kwargs)


def unauthorized_message(caller: Caller) -> str:
    """The 401 message: which credential failed, or that none was presented."""
    if caller.how == "bearer":
        return "unknown or revoked bearer token"
    if caller.how == "cookie":
        return "session expired or logged out: log in again"
    return "log in or present a bearer token"


class BaseHandler(tornado.web.RequestHandler):
    """JSON API handler: JSON errors, security headers, caller resolved in prepare()."""

    login_required = True

    def initialize(self, auth: Auth, inflight: Inflight | None = None) -> None:
        self.auth = auth
        self.inflight = inflight
        self.session_id: str | None = None
        self.auth_method = "none"
        self._counted = False

    def set_default_headers(self) -> None:
        for name, value in SECURITY_HEADERS.items():
            self.set_header(name, value)
        self.set_header("Cache-Control", "no-store")

    def check_xsrf_cookie(self) -> None:
        # Bearer-authenticated requests carry no cookies, so they cannot be forged
        # cross-site; browsers' cookie requests must present the XSRF token.
        if bearer_token(self.request) is not None:
            return
        super().check_xsrf_cookie()

    def check_trusted_origin(self, origin: str) -> bool:
        # Cross-origin protection, like XSRF, guards cookies. A request with a bearer
        # header is authenticated by that token alone (an invalid one is a 401, never
        # the cookie's user), so a forged one gains nothing.
        if bearer_token(self.request) is not None:
            return True
        return super().check_trusted_origin(origin)

    async def prepare(self) -> None:
        if self.inflight is not None:
            self.inflight.enter()  # graceful shutdown waits for this request
            self._counted = True
        caller = await resolve_user(self, self.auth)
        self.caller = caller
        self.current_user = caller.user
        self.session_id = caller.session_id if caller.user else None
        self.auth_method = caller.how if caller.user else "none"
        if self.login_required and caller.user is None:
            raise ApiError(401, "unauthorized", unauthorized_message(caller))

    def _release(self) -> None:
        if self._counted and self.inflight is not None:
            self._counted = False
            self.inflight.exit()

    def on_finish(self) -> None:
        self._release()

    def on_connection_close(self) -> None:
        self._release()
        super().on_connection_close()

    @property
    def user(self) -> User:
        user: User | None = self.current_user
        assert user is not None
        return user

    def json_body(self) -> dict[str, Any]:
        try:
            body = json.loads(self.request.body or b"null")
        except (ValueError, RecursionError):
            raise ApiError(400, "bad_request", "body must be a JSON object") from None
        if not isinstance(body, dict):
            raise ApiError(400, "bad_request", "body must be a JSON object")
        return body

    def page_args(self) -> tuple[str | None, int]:
        """A list request's `after` cursor (None: from the start) and clamped `limit`."""
        limit = PAGE_DEFAULT
        raw = self.get_query_argument("limit", None)
        if raw:
            try:
                limit = max(1, min(PAGE_MAX, int(raw)))
            except ValueError:
                raise ApiError(400, "bad_request", "limit must be an integer") from None
        after = self.get_query_argument("after", None) or None
        if after is not None and len(after) > 128:
            raise ApiError(400, "bad_request", "after must be at most 128 characters")
        return after, limit

    def write_page(self, key: str, items: list[Any], more: bool, last: str | None) -> None:
        """`{key: items}`, plus `next` (the cursor for `after`) when more exist."""
        out: dict[str, Any] = {key: items}
        if more and last is not None:
            out["next"] = last
        self.write_json(out)

    def write_json(self, obj: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.finish(json.dumps(obj, separators=(",", ":")))

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        """Tornado's logging of errors, naming the request by its redacted path.

        Tornado's own lines carry the whole URI, query string included: a token pasted
        into it would reach the logs.
        """
        where = f"{self.request.method} {redact(self.request.path)} ({self.request.remote_ip})"
        if isinstance(value, StoreError):  # answered 503; MongoDB's own log says why
            log.warning("%s: the store failed: %s", where, value)
        elif isinstance(value, tornado.web.HTTPError):
            if message := value.get_message():
                gen_log.warning("%d %s: %s", value.status_code, where, message)
        else:
            app_log.error("Uncaught exception %s", where, exc_info=(typ, value, tb))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """Every error is `{"error": {"code", "message"}}`: no HTML, no traceback.

        A StoreError that a handler let through is a 503: MongoDB failed, try again.
        """
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, StoreError):
            status_code = 503
            self.set_status(503)
            exc = ApiError(503, "unavailable", "the store is unavailable, try again")
        if isinstance(exc, ApiError):
            code, message, extra = exc.code, exc.message, exc.extra
        else:
            code = _DEFAULT_CODES.get(status_code, "internal" if status_code >= 500 else "error")
            if isinstance(exc, tornado.web.HTTPError) and exc.log_message and status_code < 500:
                message = exc.log_message % exc.args if exc.args else exc.log_message
            else:
                message = _phrase(status_code)
            extra = {}
        if status_code == 403 and ("XSRF" in message or "_xsrf" in message):
            code = "xsrf"
            message = "missing or invalid XSRF token: send the _xsrf cookie in X-XSRFToken"
        elif (status_code == 403 and not isinstance(exc, ApiError)
              and "origin" in message.lower() and message.endswith("not allowed")):
            # Tornado's cross_origin_protection refused a cookie request from elsewhere.
            code = "cross_origin"
            message = ("cross-origin request refused: only the server's own origin and "
                       "ALLOWED_ORIGINS may send cookie requests")
        retry = extra.pop("retry_after", None)
        if retry is not None:
            self.set_header("Retry-After", str(int(retry) + 1))
            extra["retry_after"] = retry
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        # Messages may quote what the client sent: never a token, wherever it was put.
        self.finish(json.dumps({"error": {"code": code, "message": redact(message), **extra}}))


class NotFoundHandler(BaseHandler):
    """Unknown paths: a JSON 404 like every other error."""

    login_required = False

    def initialize(self) -> None:  # type: ignore[override]
        self.session_id = None
        self.auth_method = "none"
        self.inflight = None
        self._counted = False

    async def prepare(self) -> None:
        raise ApiError(404, "not_found", "no such path")


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "error"
