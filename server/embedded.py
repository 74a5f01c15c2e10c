"""The embedded Redis and MongoDB-wire servers run.py starts, which admit only it.

Both run as separate processes, never inside the server's own: they would compete for
its GIL, and SecantusDB's GPL code stays at arm's length. Redis listens on a unix
socket inside the 0700 data dir and asks for a password (embedded_redis.py);
secantusd-py runs with --auth and a generated user (embedded_mongo.py). The password
files (`redis.password`, `mongo.password`, mode 0600) live in the data dir and are
reused across restarts. Nothing here logs a URL: the URLs carry the passwords.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from server.children import (
    ChildService,
    EmbeddedError,
    _die_with_parent,
    free_port,
    private_dir,
    read_secret,
)
from server.embedded_mongo import MongoService, mongo_service, mongo_url
from server.embedded_redis import RedisService, redis_service, redis_url

__all__ = ["ChildService", "EmbeddedError", "EmbeddedServices", "MongoService",
           "RedisService", "_die_with_parent", "free_port", "mongo_service", "mongo_url",
           "redis_service", "redis_url", "start_on_free_port"]

log = logging.getLogger(__name__)


S = TypeVar("S", bound=ChildService)


def start_on_free_port(make: Callable[[], S], attempts: int = 3) -> S:
    """Start a child on a kernel-chosen port, again on another if it loses a race for it.

    The port is free when chosen, but the kernel may hand it to an outgoing connection,
    or another program may bind it, before the child does; the child then exits at
    start-up, or something else answers there, and start() says so.
    """
    for attempt in range(1, attempts + 1):
        svc = make()
        try:
            svc.start()
        except EmbeddedError as e:
            svc.stop()
            if attempt == attempts:
                raise
            log.warning("%s; retrying on another port", e)
            continue
        return svc
    raise AssertionError("unreachable")


@dataclass
class EmbeddedServices:
    """The services run.py starts when MONGO_URL / REDIS_URL are not given.

    They hold the data dir's lock while they run: a second server on the same data dir
    is told so instead of fighting over the same files.
    """

    data_dir: Path
    want_redis: bool
    want_mongo: bool
    redis: RedisService | None = None
    mongo: MongoService | None = None
    _lock_fd: int | None = field(default=None, repr=False)

    @property
    def _state_file(self) -> Path:
        return self.data_dir / "services.json"

    def start(self) -> None:
        """Start what is wanted; record where, so `run.py create-bot` can find them."""
        if not (self.want_redis or self.want_mongo):
            return
        try:
            private_dir(self.data_dir)
            self._lock()
            if self.want_redis:
                self.redis = redis_service(self.data_dir)
                self.redis.start()
            if self.want_mongo:
                self.mongo = start_on_free_port(lambda: mongo_service(self.data_dir))
        except OSError as e:
            self.stop()
            raise EmbeddedError(f"cannot start the embedded services in {self.data_dir}: "
                                f"{e}") from e
        except BaseException:
            self.stop()
            raise
        state = {"pid": os.getpid(),
                 "redis_socket": str(self.redis.socket_path) if self.redis else None,
                 "mongo_port": self.mongo.port if self.mongo else None}
        self._state_file.write_text(json.dumps(state) + "\n")

    def _lock(self) -> None:
        path = self.data_dir / "lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise EmbeddedError(
                f"the data dir {self.data_dir} is in use by another server (pid {holder}); "
                "give each run.py its own --data-dir, or run them all against shared "
                "services (MONGO_URL and REDIS_URL)") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd

    def stop(self) -> None:
        for svc in (self.mongo, self.redis):
            if svc is not None:
                svc.stop()
        if self._lock_fd is not None:  # what is in the data dir is ours to clean up
            with contextlib.suppress(FileNotFoundError):
                self._state_file.unlink()
            os.close(self._lock_fd)  # releases the lock; the file stays, harmlessly
            self._lock_fd = None

    @staticmethod
    def running(data_dir: Path) -> dict[str, str] | None:
        """URLs of the embedded services of a server running on this data dir, if any."""
        try:
            state = json.loads((data_dir / "services.json").read_text())
            os.kill(int(state["pid"]), 0)
        except (OSError, ValueError, KeyError, TypeError):
            return None
        urls = {}
        redis_password = read_secret(data_dir / "redis.password")
        if state.get("redis_socket") and redis_password:
            urls["redis_url"] = redis_url(Path(state["redis_socket"]), redis_password)
        mongo_password = read_secret(data_dir / "mongo.password")
        if state.get("mongo_port") and mongo_password:
            urls["mongo_url"] = mongo_url(int(state["mongo_port"]), mongo_password)
        return urls

    @property
    def redis_url(self) -> str | None:
        return self.redis.url if self.redis else None

    @property
    def mongo_url(self) -> str | None:
        return self.mongo.url if self.mongo else None
