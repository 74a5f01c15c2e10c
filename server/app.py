"""make_app(): the route table and Tornado settings, with every collaborator injected;
make_server(): the HTTP server's limits."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import tornado.httpserver
import tornado.web

from server.admins import Admins
from server.auth import Auth
from server.bots import Bots
from server.caps import ConnectionCaps
from server.chat import Chat
from server.config import Config
from server.deactivation import Deactivation
from server.files import Files
from server.handlers import admin, http, users
from server.handlers import files as files_api
from server.handlers import rooms as rooms_api
from server.handlers.base import SECURITY_HEADERS, NotFoundHandler, XsrfCookieHandler
from server.handlers.bots import BotHandler, BotsHandler, BotTokenHandler, BotTokensHandler
from server.handlers.health import HealthHandler, ReadyHandler
from server.handlers.operator import MetricsHandler, StatusHandler
from server.handlers.search import SearchHandler
from server.handlers.socket import ChatSocket
from server.inflight import Inflight
from server.invites import Registration
from server.limits import RateLimits
from server.logs import log_request
from server.metrics import Metrics
from server.probe import ServiceProbe
from server.reporter import StatusReporter
from server.rooms import LocalRooms
from server.search import MessageSearch
from server.store import Store
from server.wsio import PingWheel

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"


class IndexHandler(XsrfCookieHandler):
    """The browser client; rendering it also sets the `_xsrf` cookie."""

    def set_default_headers(self) -> None:
        for name, value in SECURITY_HEADERS.items():
            self.set_header(name, value)
        self.set_header("Cache-Control", "no-cache")

    def get(self) -> None:
        self.xsrf_token  # noqa: B018 - touching it sets the _xsrf cookie
        self.render("index.html")


class StaticHandler(tornado.web.StaticFileHandler):
    """Static files with the same security headers as pages."""

    def set_default_headers(self) -> None:
        for name, value in SECURITY_HEADERS.items():
            self.set_header(name, value)


class PageHandler(IndexHandler):
    """Another page of static/ rendered as a template (for static_url versioning)."""

    def initialize(self, template: str) -> None:
        self.template = template

    def get(self) -> None:
        self.xsrf_token  # noqa: B018 - touching it sets the _xsrf cookie
        self.render(self.template)


def route_name(pattern: str) -> str:
    """A route's name in metrics: `/api/rooms/([^/]+)/messages` is
    `/api/rooms/{room}/messages`, each group named after the segment before it."""
    return re.sub(r"([a-z_]+)/\([^)]*\)",
                  lambda m: f"{m.group(1)}/{{{m.group(1).removesuffix('s')}}}", pattern)


def request_observer(metrics: Metrics, routes: list[Any]
                     ) -> Callable[[tornado.web.RequestHandler], None]:
    """The Application's `log_function`: the access log line, and the request counted in
    chat_http_requests_total by its route's pattern.

    Labels name routes, never raw paths, so no request can add a series: a path that
    matched no route (the 404 of NotFoundHandler) counts as route "other". A handler
    class serves one route, or several (PageHandler: /admin.html and /status.html); for
    those the route is found again by matching the path as Tornado did.
    """
    by_class: dict[type, list[tuple[re.Pattern[str], str]]] = {}
    for pattern, handler_class, *_ in routes:
        # Tornado anchors a route's pattern at the end and matches it from the start.
        by_class.setdefault(handler_class, []).append(
            (re.compile(pattern if pattern.endswith("$") else pattern + "$"),
             route_name(pattern)))
    names = {cls: rules[0][1] for cls, rules in by_class.items() if len(rules) == 1}
    names.setdefault(StaticHandler, "/static/{path}")
    shared = {cls: rules for cls, rules in by_class.items() if len(rules) > 1}

    def name_of(handler: tornado.web.RequestHandler) -> str:
        name = names.get(type(handler))
        if name is not None:
            return name
        path = handler.request.path
        return next((name for regex, name in shared.get(type(handler), ())
                     if regex.match(path)), "other")

    def log_function(handler: tornado.web.RequestHandler) -> None:
        log_request(handler)
        request = handler.request
        metrics.request_done(name_of(handler), request.method or "",
                             handler.get_status(), request.request_time())
    return log_function


def make_app(config: Config, *, store: Store, rooms: LocalRooms, chat: Chat, auth: Auth,
             bots: Bots, probe: ServiceProbe, reporter: StatusReporter, metrics: Metrics,
             limits: RateLimits, caps: ConnectionCaps, inflight: Inflight, admins: Admins,
             registration: Registration, deactivation: Deactivation, files: Files
             ) -> tornado.web.Application:
    """Build the Application with every collaborator injected through the route table."""
    api = dict(auth=auth, inflight=inflight)
    operator = dict(auth=auth, admins=admins, status_token=config.status_token)
    team = dict(api, chat=chat, limits=limits)
    ws = dict(chat=chat, rooms=rooms, auth=auth, limits=limits, caps=caps, inflight=inflight,
              allowed_origins=config.allowed_origins, max_body=config.max_body_chars,
              max_pending_bytes=config.max_pending_bytes, metrics=metrics,
              # One timer pings every socket (its timer stops when no socket is left).
              pings=(PingWheel(config.ws_ping_interval, config.ws_ping_timeout)
                     if config.ws_ping_interval > 0 else None))
    routes: list[Any] = [
        # First: Tornado tries the rules in order, and a crowd reconnecting after a
        # deploy asks for this one thousands of times a second.
        (r"/ws", ChatSocket, ws),
        (r"/", IndexHandler),
        (r"/api/register", http.RegisterHandler,
         dict(api, limits=limits, registration=registration)),
        (r"/api/login", http.LoginHandler, dict(api, limits=limits)),
        (r"/api/logout", http.LogoutHandler, dict(api, chat=chat)),
        (r"/api/password", http.PasswordHandler, dict(api, chat=chat, bots=bots, limits=limits)),
        (r"/api/me", users.MeHandler, dict(api, admins=admins)),
        (r"/api/me/status", users.StatusHandler, dict(api, chat=chat)),
        (r"/api/rooms", rooms_api.RoomsHandler, team),
        (r"/api/rooms/([^/]+)", rooms_api.RoomHandler, team),
        (r"/api/rooms/([^/]+)/messages", rooms_api.MessagesHandler, team),
        (r"/api/rooms/([^/]+)/members", rooms_api.MembersHandler, team),
        (r"/api/rooms/([^/]+)/members/([^/]+)", rooms_api.MemberHandler, team),
        (r"/api/rooms/([^/]+)/members/([^/]+)/role", rooms_api.RoleHandler, team),
        (r"/api/rooms/([^/]+)/bans", rooms_api.BansHandler, team),
        (r"/api/rooms/([^/]+)/bans/([^/]+)", rooms_api.BanHandler, team),
        (r"/api/rooms/([^/]+)/mutes", rooms_api.MutesHandler, team),
        (r"/api/rooms/([^/]+)/mutes/([^/]+)", rooms_api.MuteHandler, team),
        (r"/api/rooms/([^/]+)/files", files_api.UploadHandler,
         dict(api, files=files, limits=limits)),
        (r"/api/files/([^/]+)", files_api.FileHandler, dict(api, files=files)),
        (r"/api/files/([^/]+)/thumb", files_api.ThumbHandler, dict(api, files=files)),
        (r"/api/dms", rooms_api.DmsHandler, team),
        (r"/api/mentions", rooms_api.MentionsHandler, team),
        (r"/api/search", SearchHandler, dict(team, search=MessageSearch(store))),
        (r"/api/bots", BotsHandler, dict(api, bots=bots, chat=chat)),
        (r"/api/bots/([^/]+)", BotHandler, dict(api, bots=bots, chat=chat)),
        (r"/api/bots/([^/]+)/tokens", BotTokensHandler, dict(api, bots=bots, chat=chat)),
        (r"/api/bots/([^/]+)/tokens/([^/]+)", BotTokenHandler, dict(api, bots=bots, chat=chat)),
        (r"/api/server", users.ServerHandler, dict(api, registration=registration)),
        (r"/api/users", users.UsersHandler, dict(api, store=store, admins=admins)),
        (r"/api/invites", admin.InvitesHandler, dict(api, admins=admins,
                                                     registration=registration)),
        (r"/api/invites/([^/]+)", admin.InviteHandler, dict(api, admins=admins,
                                                            registration=registration)),
        (r"/api/admin/users/([^/]+)/(deactivate|reactivate)", admin.AccountStateHandler,
         dict(api, admins=admins, store=store, deactivation=deactivation)),
        (r"/admin.html", PageHandler, dict(template="admin.html")),
        (r"/healthz", HealthHandler),
        (r"/readyz", ReadyHandler, dict(probe=probe, inflight=inflight)),
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
        # State-changing requests with cookies from another origin are refused (403)
        # even with a valid _xsrf token: a page on another port of the same host can
        # read that cookie. Bearer requests are exempt (BaseHandler).
        cross_origin_protection=True,
        trusted_origins=list(config.allowed_origins),
        websocket_ping_interval=config.ws_ping_interval,
        websocket_ping_timeout=config.ws_ping_timeout,
        websocket_max_message_size=config.max_frame_bytes,
        compress_response=True,
        log_function=request_observer(metrics, routes),
        default_handler_class=NotFoundHandler,
        autoreload=False,
        debug=False,
    )


def make_server(app: tornado.web.Application, config: Config) -> tornado.httpserver.HTTPServer:
    """The HTTP server in front of the app, as run.py and the tests build it.

    Bodies are bounded in size and in time (a client that trickles or withholds its
    body is dropped after `http_body_timeout`), and a connection whose headers never
    come, or that sits idle between requests, is closed after `http_idle_timeout`.
    """
    return tornado.httpserver.HTTPServer(
        app, xheaders=config.xheaders, max_buffer_size=1024 * 1024,
        max_body_size=64 * 1024, body_timeout=config.http_body_timeout,
        idle_connection_timeout=config.http_idle_timeout,
    )


def make_metrics_app(config: Config, *, auth: Auth, admins: Admins,
                     metrics: Metrics) -> tornado.web.Application:
    """`/metrics` alone, for a port of this process's own (`--metrics-port`).

    Workers of `--processes N` share the main port, so a scrape there reaches any one of
    them; on its own port each worker's series stay its own.
    """
    operator = dict(auth=auth, admins=admins, status_token=config.status_token)
    routes: list[Any] = [(r"/metrics", MetricsHandler, dict(operator, metrics=metrics))]
    return tornado.web.Application(
        routes,
        cookie_secret=dict(config.cookie_secrets),
        key_version=max(config.cookie_secrets),
        log_function=request_observer(metrics, routes),
        default_handler_class=NotFoundHandler,
        autoreload=False,
        debug=False,
    )
