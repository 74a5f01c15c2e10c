"""Configuration: one frozen Config built once from flags and the environment."""

from __future__ import annotations

import argparse
import os
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from server import setting_values as parse
from server.limits import LimitSettings
from server.setting_values import REGISTRATION_MODES, ConfigError

__all__ = ["REGISTRATION_MODES", "Config", "ConfigError", "Quotas", "load_config", "redact_url"]


@dataclass(frozen=True)
class Quotas:
    """How many rooms, bots and tokens one account may create: lists stay short, and
    no one can bury the rooms others look for or hide a token behind decoys."""

    rooms_per_user: int = 50  # a bot's rooms count against its owner
    bots_per_user: int = 20
    tokens_per_bot: int = 20


LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
LOG_FORMATS = ("text", "json")
SHUTDOWN_TIMEOUT_MAX = 3600.0


def _choice(raw: str | None, name: str, allowed: tuple[str, ...]) -> str:
    """One of `allowed` (any case), or a ConfigError naming the variable and the values."""
    value = (raw or "").strip().lower()
    if value not in allowed:
        raise ConfigError(f"{name}: {raw!r} is not one of {', '.join(allowed)}")
    return value


_SECRET_PARAMS = re.compile(r"pass|secret|token|key", re.IGNORECASE)


def redact_url(url: str | None) -> str | None:
    """A service URL fit for logs and reprs: its password and secret parameters masked."""
    if not url:
        return url
    parts = urlsplit(url)
    userinfo, at, hosts = parts.netloc.rpartition("@")
    if at and ":" in userinfo:
        userinfo = userinfo.split(":", 1)[0] + ":***"
    query = urlencode([(k, "***" if _SECRET_PARAMS.search(k) else v)
                       for k, v in parse_qsl(parts.query, keep_blank_values=True)], safe="*")
    return urlunsplit(parts._replace(netloc=f"{userinfo}{at}{hosts}", query=query))


@dataclass(frozen=True)
class Config:
    """Every setting the server reads, resolved once at start-up."""

    port: int = 8888
    host: str = ""
    mongo_url: str | None = None  # URLs may carry passwords: __repr__ masks them
    redis_url: str | None = None
    db_name: str = "chat"
    redis_prefix: str = "chat:"
    data_dir: Path = Path("var")
    cookie_secrets: Mapping[int, str] = field(default_factory=dict)
    allowed_origins: tuple[str, ...] = ()
    admin_users: tuple[str, ...] = ()
    registration: str = "open"  # one of REGISTRATION_MODES
    status_token: str | None = None
    xheaders: bool = False
    node_id: str = field(default_factory=lambda: secrets.token_hex(4))
    # Limits; the protocol documents each of them.
    max_frame_bytes: int = 64 * 1024
    max_body_chars: int = 4000
    max_pending_bytes: int = 1024 * 1024
    limits: LimitSettings = field(default_factory=LimitSettings)
    quotas: Quotas = field(default_factory=Quotas)
    # Shared files: bytes per file, bytes all of one person's files together, how long
    # an upload attached to no message is kept, how long one upload's body may take.
    max_file_bytes: int = 25 * 1024 * 1024
    file_quota_bytes: int = 1024 * 1024 * 1024
    file_orphan_seconds: float = 86400.0
    file_upload_timeout: float = 600.0
    # HTTP: a request's body must arrive within http_body_timeout; a connection with no
    # request under way (or whose headers do not arrive) is closed after http_idle_timeout.
    # That is above the 60 s after which proxies close idle upstream connections (nginx's
    # keepalive_timeout, an AWS load balancer's idle timeout): the proxy closes first, so
    # it never sends a request on a connection that the server is closing (a 502).
    http_body_timeout: float = 30.0
    http_idle_timeout: float = 75.0
    ws_ping_interval: float = 20.0
    ws_ping_timeout: float = 20.0
    session_days: int = 30
    bcrypt_rounds: int = 12
    # Requests with bcrypt work queued or running per process; None: 8 per bcrypt thread.
    bcrypt_queue: int | None = None
    presence_ttl: float = 30.0
    presence_hold: float = 2.0  # at most one presence frame per user and room per hold
    # A closed socket's user stays present this long: back by then, nobody heard a thing.
    presence_grace: float = 2.0
    # After a drain, its users stay online for the others this long while they reconnect.
    presence_handover: float = 15.0
    redis_pool_size: int = 64
    shutdown_timeout: float = 10.0
    processes: int = 1
    metrics_port: int | None = None  # /metrics also here; worker i on metrics_port + i
    log_level: str = "info"  # one of LOG_LEVELS
    log_format: str = "text"  # one of LOG_FORMATS

    def __repr__(self) -> str:
        """Every setting except the secrets: cookie secrets, the status token and the
        passwords in service URLs are masked (a repr ends up in logs and tracebacks)."""
        masked: dict[str, str | None] = {
            "status_token": "***" if self.status_token else None,
            "mongo_url": redact_url(self.mongo_url),
            "redis_url": redact_url(self.redis_url),
        }
        items = [f"cookie_secrets=<{len(self.cookie_secrets)} secret(s)>"
                 if f.name == "cookie_secrets" else
                 f"{f.name}={masked[f.name] if f.name in masked else getattr(self, f.name)!r}"
                 for f in fields(self)]
        return f"Config({', '.join(items)})"

    @property
    def embedded_mongo(self) -> bool:
        return self.mongo_url is None

    @property
    def embedded_redis(self) -> bool:
        return self.redis_url is None

    @property
    def cookie_secret(self) -> str:
        """The secret new cookies are signed with (the highest key version)."""
        return self.cookie_secrets[max(self.cookie_secrets)]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="run.py",
        description="Real-time chat server. With no MONGO_URL / REDIS_URL it starts its "
        "own Redis and MongoDB-wire servers under --data-dir.",
    )
    p.add_argument("--port", type=int, help="HTTP port (env PORT, default 8888)")
    p.add_argument("--host", help="address to bind (env HOST, default all interfaces)")
    p.add_argument("--mongo-url", help="MongoDB URL (env MONGO_URL); unset: embedded server")
    p.add_argument("--redis-url", help="Redis URL (env REDIS_URL); unset: embedded server")
    p.add_argument("--db-name", help="MongoDB database name (env CHAT_DB, default chat)")
    p.add_argument("--redis-prefix", help="prefix of every Redis key and channel "
                   "(env CHAT_REDIS_PREFIX, default 'chat:')")
    p.add_argument("--data-dir", help="where embedded services keep data "
                   "(env CHAT_DATA_DIR, default ./var)")
    p.add_argument("--allowed-origins", help="comma-separated extra Origins allowed to open "
                   "/ws with a cookie, besides the server's own (env ALLOWED_ORIGINS)")
    p.add_argument("--admin-users", help="comma-separated usernames allowed to read /status "
                   "and /metrics (env ADMIN_USERS)")
    p.add_argument("--registration", help="who may register: open, invite (holders of an "
                   "invite from a server admin) or closed (env CHAT_REGISTRATION, default open)")
    p.add_argument("--xheaders", action="store_true", default=None,
                   help="trust X-Forwarded-For/-Proto from a reverse proxy (env CHAT_XHEADERS=1)")
    p.add_argument("--message-rate", type=float,
                   help="messages per second per user, refill rate (env CHAT_MESSAGE_RATE, "
                   "default 5)")
    p.add_argument("--message-burst", type=int,
                   help="messages a user may send at once (env CHAT_MESSAGE_BURST, default 20)")
    p.add_argument("--rooms-per-user", type=int,
                   help="rooms one user (with their bots) may create (env CHAT_ROOMS_PER_USER, "
                   "default 50)")
    p.add_argument("--bots-per-user", type=int,
                   help="bots one user may own (env CHAT_BOTS_PER_USER, default 20)")
    p.add_argument("--tokens-per-bot", type=int,
                   help="API tokens one bot may have (env CHAT_TOKENS_PER_BOT, default 20)")
    p.add_argument("--max-file-bytes", type=int,
                   help="largest file one upload may be, in bytes (env CHAT_MAX_FILE_BYTES, "
                   "default 26214400 = 25 MiB)")
    p.add_argument("--file-quota-bytes", type=int,
                   help="bytes of files one account may keep (env CHAT_FILE_QUOTA_BYTES, "
                   "default 1073741824 = 1 GiB)")
    p.add_argument("--processes", type=int,
                   help="worker processes sharing the port; 0 = one per core (env PROCESSES, "
                   "default 1)")
    p.add_argument("--metrics-port", type=int,
                   help="also serve /metrics on this port, each worker of --processes on "
                   "this port plus its index (env METRICS_PORT; default: none)")
    # Checked by load_config, not by argparse: a bad flag and a bad variable get the
    # same message, naming both.
    p.add_argument("--log-level", help=f"{', '.join(LOG_LEVELS)} (env LOG_LEVEL, default info)")
    p.add_argument("--log-format", help="text, or json: one JSON object per line (env "
                   "LOG_FORMAT, default text)")
    p.add_argument("--shutdown-timeout",
                   help="seconds to drain on SIGTERM, 0-3600 (env SHUTDOWN_TIMEOUT, default 10)")
    p.add_argument("--presence-grace", type=float,
                   help="seconds a user whose socket closed stays online in its rooms, so "
                   "that a reload or a short network blip announces nothing (env "
                   "PRESENCE_GRACE, default 2; 0 announces offline at once)")
    p.add_argument("--presence-handover", type=float,
                   help="seconds a drained process's users stay online for the others while "
                   "they reconnect there (env PRESENCE_HANDOVER, default 15)")
    p.epilog = (
        "Operators: 'run.py create-bot NAME --owner USER' creates a bot and prints a token. "
        "Secrets come from the environment only: COOKIE_SECRET (required unless both "
        "services are embedded; several as 'v1:secret,v2:secret', the highest version "
        "signs new cookies); STATUS_TOKEN (optional bearer token for /status and /metrics)."
    )
    return p


def load_config(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None,
                *, need_secret: bool = True) -> Config:
    """Build the Config from command-line flags, falling back to environment variables.

    `need_secret=False` is for commands that sign no cookies (run.py create-bot).
    """
    env = os.environ if env is None else env
    args = _parser().parse_args(argv)

    def pick(flag: object, name: str, default: str | None = None) -> str | None:
        if flag is not None:
            return str(flag)
        return env.get(name) or default

    port_raw = pick(args.port, "PORT", "8888")
    try:
        port = int(port_raw or "8888")
    except ValueError:
        raise ConfigError(f"PORT: {port_raw!r} is not a number") from None
    mongo_url = pick(args.mongo_url, "MONGO_URL")
    redis_url = pick(args.redis_url, "REDIS_URL")
    data_dir = Path(pick(args.data_dir, "CHAT_DATA_DIR", "var") or "var")
    raw_secret = env.get("COOKIE_SECRET")
    if raw_secret:
        cookie_secrets = parse.cookie_secrets(raw_secret)
    elif not need_secret:
        # Signs nothing, and writes nothing: create-bot must not leave a data dir and
        # a secret behind where no server runs.
        cookie_secrets = {1: secrets.token_urlsafe(32)}
    elif mongo_url is None and redis_url is None:
        cookie_secrets = parse.embedded_secret(data_dir)
    else:
        raise ConfigError(
            "COOKIE_SECRET is required when MONGO_URL or REDIS_URL is set "
            "(generate one with: python -c 'import secrets; print(secrets.token_urlsafe(32))')"
        )
    xheaders = args.xheaders if args.xheaders is not None else env.get("CHAT_XHEADERS") == "1"
    return Config(
        port=port,
        host=pick(args.host, "HOST", "") or "",
        mongo_url=mongo_url,
        redis_url=redis_url,
        db_name=pick(args.db_name, "CHAT_DB", "chat") or "chat",
        redis_prefix=pick(args.redis_prefix, "CHAT_REDIS_PREFIX", "chat:") or "chat:",
        data_dir=data_dir,
        cookie_secrets=cookie_secrets,
        allowed_origins=parse.origins(pick(args.allowed_origins, "ALLOWED_ORIGINS", "") or ""),
        admin_users=tuple(n.strip().lower() for n in (pick(args.admin_users, "ADMIN_USERS", "")
                                                      or "").split(",") if n.strip()),
        registration=parse.registration(pick(args.registration, "CHAT_REGISTRATION", "open")),
        status_token=env.get("STATUS_TOKEN") or None,
        xheaders=bool(xheaders),
        log_level=_choice(pick(args.log_level, "LOG_LEVEL", "info"), "LOG_LEVEL (--log-level)",
                          LOG_LEVELS),
        log_format=_choice(pick(args.log_format, "LOG_FORMAT", "text"),
                           "LOG_FORMAT (--log-format)", LOG_FORMATS),
        shutdown_timeout=parse.seconds(pick(args.shutdown_timeout, "SHUTDOWN_TIMEOUT", "10"),
                                       "SHUTDOWN_TIMEOUT (--shutdown-timeout)",
                                       SHUTDOWN_TIMEOUT_MAX),
        presence_grace=parse.seconds(pick(args.presence_grace, "PRESENCE_GRACE", "2"),
                                     "PRESENCE_GRACE", 60),
        presence_handover=parse.seconds(pick(args.presence_handover, "PRESENCE_HANDOVER",
                                             "15"), "PRESENCE_HANDOVER", 3600),
        processes=parse.whole(pick(args.processes, "PROCESSES", "1"), "PROCESSES"),
        metrics_port=parse.whole(pick(args.metrics_port, "METRICS_PORT", "0"),
                                 "METRICS_PORT") or None,
        limits=LimitSettings(
            message_rate=parse.positive(pick(args.message_rate, "CHAT_MESSAGE_RATE", "5"),
                                        "CHAT_MESSAGE_RATE"),
            # A whole number: int() of "0.5" would be a bucket that holds nothing.
            message_burst=parse.count(pick(args.message_burst, "CHAT_MESSAGE_BURST", "20"),
                                      "CHAT_MESSAGE_BURST"),
        ),
        max_file_bytes=parse.count(pick(args.max_file_bytes, "CHAT_MAX_FILE_BYTES",
                                        str(25 * 1024 * 1024)), "CHAT_MAX_FILE_BYTES"),
        file_quota_bytes=parse.count(pick(args.file_quota_bytes, "CHAT_FILE_QUOTA_BYTES",
                                          str(1024 * 1024 * 1024)), "CHAT_FILE_QUOTA_BYTES"),
        quotas=Quotas(
            rooms_per_user=parse.count(pick(args.rooms_per_user, "CHAT_ROOMS_PER_USER", "50"),
                                       "CHAT_ROOMS_PER_USER"),
            bots_per_user=parse.count(pick(args.bots_per_user, "CHAT_BOTS_PER_USER", "20"),
                                      "CHAT_BOTS_PER_USER"),
            tokens_per_bot=parse.count(pick(args.tokens_per_bot, "CHAT_TOKENS_PER_BOT", "20"),
                                       "CHAT_TOKENS_PER_BOT"),
        ),
    )
