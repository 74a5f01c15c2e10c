"""make_app(): the route table and Tornado settings, with every collaborator injected."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import tornado.web

from server.auth import Auth, Bots
from server.chat import Chat
from server.config import Config
from server.handlers import http
from server.handlers.base import CSP, NotFoundHandler
from server.handlers.bots import BotsHandler, BotTokenHandler, BotTokensHandler
from server.handlers.health import HealthHandler, ReadyHandler
from server.handlers.socket import ChatSocket
from server.handlers.status import MetricsHandler, StatusHandler
from server.inflight import Inflight
from server.limits import ConnectionCaps, RateLimits
from server.logs import log_request
from server.metrics import Metrics
from server.status import StatusReporter

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"


class IndexHandler(tornado.web.RequestHandler):
    """The browser client; rendering it also sets the `_xsrf` cookie."""

    def set_default_headers(self) -> None:
        self.set_header("Content-Security-Policy", CSP)
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("X-Frame-Options", "DENY")
        self.set_header("Referrer-Policy", "same-origin")
        self.set_header("Cache-Control", "no-cache")

    def get(self) -> None:
        self.xsrf_token  # noqa: B018 - touching it sets the _xsrf cookie
        self.render("index.html")


class StaticHandler(tornado.web.StaticFileHandler):
    """Static files with the same security headers as pages."""

    def set_default_headers(self) -> None:
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Content-Security-Policy", CSP)


class PageHandler(IndexHandler):
    """Another page of static/ rendered as a template (for static_url versioning)."""

    def initialize(self, template: str) -> None:
        self.template = template

    def get(self) -> None:
        self.xsrf_token  # noqa: B018 - touching it sets the _xsrf cookie
        self.render(self.template)


def make_app(config: Config, chat: Chat, auth: Auth, bots: Bots, reporter: StatusReporter,
             metrics: Metrics, limits: RateLimits, caps: ConnectionCaps, inflight: Inflight
             ) -> tornado.web.Application:
    """Build the Application with every collaborator injected through the route table."""
    deps = dict(auth=auth, chat=chat, limits=limits, inflight=inflight)
    bot_deps = dict(auth=auth, chat=chat, bots=bots, inflight=inflight)
    operator = dict(auth=auth, admin_users=config.admin_users,
                    status_token=config.status_token)
    ws = dict(chat=chat, auth=auth, limits=limits, caps=caps, inflight=inflight,
              allowed_origins=config.allowed_origins, max_body=config.max_body_chars,
              max_pending_bytes=config.max_pending_bytes)
    routes: list[Any] = [
        (r"/", IndexHandler),
        (r"/api/register", http.RegisterHandler, deps),
        (r"/api/login", http.LoginHandler, deps),
        (r"/api/logout", http.LogoutHandler, deps),
        (r"/api/password", http.PasswordHandler, deps),
        (r"/api/me", http.MeHandler, deps),
        (r"/api/rooms", http.RoomsHandler, deps),
        (r"/api/rooms/([^/]+)/messages", http.MessagesHandler, deps),
        (r"/api/bots", BotsHandler, bot_deps),
        (r"/api/bots/([^/]+)/tokens", BotTokensHandler, bot_deps),
        (r"/api/bots/([^/]+)/tokens/([^/]+)", BotTokenHandler, bot_deps),
        (r"/ws", ChatSocket, ws),
        (r"/healthz", HealthHandler),
        (r"/readyz", ReadyHandler, dict(chat=chat)),
        (r"/status", StatusHandler, dict(operator, reporter=reporter)),
        (r"/metrics", MetricsHandler, dict(operator, metrics=metrics)),
        (r"/status.html", PageHandler, dict(template="status.html")),
    ]
    return tornado.web.Application(
        routes,
        template_path=str(STATIC_DIR),
        static_path=str(STATIC_DIR),
        static_handler_class=StaticHandler,
        cookie_secret=dict(config.cookie_secrets),
        key_version=max(config.cookie_secrets),
        xsrf_cookies=True,
        xsrf_cookie_kwargs=dict(samesite="Lax", httponly=False),
        websocket_ping_interval=config.ws_ping_interval,
        websocket_ping_timeout=config.ws_ping_timeout,
        websocket_max_message_size=config.max_frame_bytes,
        compress_response=True,
        log_function=log_request,
        default_handler_class=NotFoundHandler,
        autoreload=False,
        debug=False,
    )
