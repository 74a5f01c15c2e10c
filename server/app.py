"""make_app(): the route table and Tornado settings, with every collaborator injected."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import tornado.web

from server.auth import Auth
from server.chat import Chat
from server.config import Config
from server.handlers import http
from server.handlers.base import CSP
from server.handlers.health import HealthHandler, ReadyHandler
from server.handlers.socket import ChatSocket

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


def make_app(config: Config, chat: Chat, auth: Auth, **extra: Any) -> tornado.web.Application:
    """Build the Application; `extra` adds named handler dependencies (status, metrics)."""
    deps = dict(auth=auth, chat=chat)
    ws = dict(chat=chat, auth=auth, allowed_origins=config.allowed_origins,
              max_body=config.max_body_chars)
    routes: list[Any] = [
        (r"/", IndexHandler),
        (r"/api/register", http.RegisterHandler, deps),
        (r"/api/login", http.LoginHandler, deps),
        (r"/api/logout", http.LogoutHandler, deps),
        (r"/api/password", http.PasswordHandler, deps),
        (r"/api/me", http.MeHandler, deps),
        (r"/api/rooms", http.RoomsHandler, deps),
        (r"/api/rooms/([^/]+)/messages", http.MessagesHandler, deps),
        (r"/ws", ChatSocket, ws),
        (r"/healthz", HealthHandler),
        (r"/readyz", ReadyHandler, dict(chat=chat)),
    ]
    routes.extend(extra.get("routes", []))
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
        autoreload=False,
        debug=False,
    )
