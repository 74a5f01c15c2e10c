"""Log set-up for run.py (the only place that configures handlers) and the access log."""

from __future__ import annotations

import json
import logging
import re
import time
from typing import Any

import tornado.web

access = logging.getLogger("chat.access")

_RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, pid, logger, msg, and any `extra` fields."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "pid": record.process,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RESERVED and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


# Their DEBUG records carry whole commands and replies: password hashes, session ids,
# message bodies. They stay at WARNING whatever --log-level says.
NOISY_LOGGERS = ("pymongo", "motor", "redis")


class OncePer:
    """A warning logged at most once per `interval` seconds, with a count of the rest.

    During an outage every send fails the same way; one line every few seconds says
    so without flooding the logs.
    """

    def __init__(self, logger: logging.Logger, interval: float = 10.0) -> None:
        self.logger = logger
        self.interval = interval
        self._last = -interval
        self._skipped = 0

    def warning(self, msg: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._last < self.interval:
            self._skipped += 1
            return
        self._last = now
        if self._skipped:
            msg += " (%d more like it not logged)"
            args = (*args, self._skipped)
            self._skipped = 0
        self.logger.warning(msg, *args)


def quiet_noisy_loggers() -> None:
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def configure(level: str = "info", fmt: str = "text") -> None:
    """Log to stderr at `level` in `fmt` ("text" or "json"), as Config checked them: an
    unknown level or format raises ValueError rather than quietly logging otherwise."""
    if fmt not in ("text", "json"):
        raise ValueError(f"unknown log format {fmt!r}")
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):  # getLevelName answers "Level X" for an unknown name
        raise ValueError(f"unknown log level {level!r}")
    handler = logging.StreamHandler()
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(
            "%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)
    # Tornado's own access log is replaced by log_request below.
    logging.getLogger("tornado.access").setLevel(logging.WARNING)
    quiet_noisy_loggers()


# A bot token is "chat_" and 43 URL-safe characters (server/auth.py, new_token). Pasted
# where its id or a name belongs, it travels in the path: only its public id (the first
# 13 characters, which cannot authenticate) is kept.
_TOKEN = re.compile(r"chat_[A-Za-z0-9_-]{43}")


def redact(text: str) -> str:
    """`text` with every token-shaped run cut down to its public id and `[redacted]`."""
    if "chat_" not in text:
        return text
    return _TOKEN.sub(lambda m: m.group()[:13] + "[redacted]", text)


# Polled by probes, scrapers and dashboards: their successes are logged at DEBUG only.
QUIET_PATHS = frozenset(("/healthz", "/readyz", "/metrics", "/status"))


def log_request(handler: tornado.web.RequestHandler) -> None:
    """Application `log_function`: method, path (never the query), status, duration.

    The query string is left out on purpose: whatever a client put there (a token
    pasted by mistake) never reaches the logs; a token in the path is redacted. A
    handler that sets `log_quietly` (the "draining" answer of /readyz, expected during
    every shutdown) is logged at DEBUG.
    """
    status = handler.get_status()
    request = handler.request
    path = redact(request.path)
    duration_ms = round(request.request_time() * 1000, 2)
    level = logging.INFO if status < 400 else (logging.WARNING if status < 500 else logging.ERROR)
    if (path in QUIET_PATHS and status < 400) or getattr(handler, "log_quietly", False):
        level = logging.DEBUG
    access.log(level, "%s %s %d %.2fms", request.method, path, status, duration_ms,
               extra={"method": request.method, "path": path, "status": status,
                      "duration_ms": duration_ms, "remote_ip": request.remote_ip,
                      "at": time.time()})
