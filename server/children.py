"""Child server processes: start one, make sure what answers is that child, stop it.

A child is told by the kernel to exit when its parent dies (PR_SET_PDEATHSIG), so even
a kill -9 of the chat server leaves no orphans, and it creates its files with umask
077, so nothing it writes is readable by other users.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import secrets
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


class EmbeddedError(Exception):
    """An embedded service could not be found or did not come up."""


class Refused(Exception):
    """Something answers at the child's address, but not with our credentials."""


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


def _child_setup() -> None:
    """preexec_fn of every child server: die with us, keep its files to ourselves."""
    _die_with_parent()
    os.umask(0o077)


def private_dir(path: Path) -> Path:
    """Create `path` (and its parents) if needed and make it owner-only (0700)."""
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path


def read_secret(path: Path) -> str | None:
    """The secret kept in `path`, made owner-only (0600) if it was not; None if absent."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    with os.fdopen(fd) as f:
        os.fchmod(f.fileno(), 0o600)
        return f.read().strip()


def write_secret(path: Path, secret: str) -> None:
    """Write `secret` to `path` (mode 0600) atomically: a reader never sees half of it."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secret + "\n")
    os.replace(tmp, path)


def secret_file(path: Path) -> str:
    """The secret in `path`, generated there (mode 0600) the first time."""
    existing = read_secret(path)
    if existing:
        return existing
    secret = secrets.token_urlsafe(32)
    write_secret(path, secret)
    return secret


def log_tail(path: Path, lines: int = 3) -> str:
    """The last lines of a child's log, to say why it failed."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return " | ".join(line.strip() for line in text.splitlines()[-lines:] if line.strip())


@dataclass
class ChildService:
    """One child server process, reachable (with credentials) at `url`.

    Subclasses say where it listens (`address`), what it reads on stdin (`config`), and
    how to ask what answers there for its process id with our credentials
    (`answering_pid`). `start()` returns only once the child itself answers: an address
    taken by someone else while the child was starting is an error, never used.
    """

    name: str
    argv: list[str]
    cwd: Path
    log_path: Path
    url: str = field(repr=False)  # carries the credentials: never log it
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def address(self) -> str:
        raise NotImplementedError

    def config(self) -> bytes | None:
        """What to feed the child on its standard input (its configuration), if anything."""
        return None

    def answering_pid(self) -> int | None:
        """The pid of the server answering at `address` with our credentials; None while
        nothing answers there yet. Raises Refused if what answers refuses them."""
        raise NotImplementedError

    def start(self, timeout: float = 30.0) -> None:
        private_dir(self.cwd)
        config = self.config()
        fd = os.open(self.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with os.fdopen(fd, "ab") as out:
            self.proc = subprocess.Popen(
                self.argv,
                cwd=self.cwd,
                stdin=subprocess.DEVNULL if config is None else subprocess.PIPE,
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=_child_setup,
                start_new_session=True,  # a Ctrl-C in the terminal reaches us, not it
            )
        if config is not None:
            assert self.proc.stdin is not None
            with contextlib.suppress(BrokenPipeError):
                self.proc.stdin.write(config)
            self.proc.stdin.close()
        self._wait_ready(timeout)
        log.info("%s started: pid %d, %s", self.name, self.proc.pid, self.address)

    def _wait_ready(self, timeout: float) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                tail = log_tail(self.log_path)
                raise EmbeddedError(f"{self.name} exited with status {self.proc.returncode} "
                                    f"at start-up" + (f": {tail}" if tail else ""))
            try:
                pid = self.answering_pid()
            except Refused as e:
                raise EmbeddedError(f"{self.address} answers, but not as the {self.name} we "
                                    f"started (pid {self.proc.pid}): {e}") from None
            if pid == self.proc.pid:
                return
            if pid is not None:
                raise EmbeddedError(f"{self.address} is served by another process (pid {pid}),"
                                    f" not by the {self.name} we started (pid {self.proc.pid})")
            if time.monotonic() > deadline:
                raise EmbeddedError(f"{self.name} did not answer on {self.address} "
                                    f"within {timeout:.0f}s")
            time.sleep(0.05)  # a process coming up gives no event to wait for

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
