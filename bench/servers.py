"""Start, probe and stop the servers under test as child processes (loopback only)."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

READY_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 30.0
CHILD_GRACE_S = 2.0


def free_port() -> int:
    """A free TCP port on 127.0.0.1 below the kernel's ephemeral range.

    A port from the ephemeral range (what binding to port 0 returns) can be taken by
    any outgoing connection before the server listens on it, such as the server's own
    connections to its embedded Redis and MongoDB: then its listen fails.
    """
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            ephemeral_low = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral_low = 32768
    for _ in range(100):
        port = random.randrange(max(1024, ephemeral_low - 12000), ephemeral_low)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below the ephemeral range")


def _children() -> dict[int, list[int]]:
    """Parent pid -> child pids, from /proc."""
    tree: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def descendants(pid: int) -> list[int]:
    """`pid` and every process below it, as /proc shows them now."""
    tree = _children()
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(tree.get(current, []))
    return found


def rss_kb(pid: int) -> int:
    """Resident set size of one live process in KiB (VmRSS of /proc/<pid>/status; 0 if gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_of(pid: int) -> float:
    """User + system CPU seconds of one live process (0 if it is gone)."""
    return _cpu_of(pid)


def _cpu_of(pid: int) -> float:
    """User + system CPU seconds of one live process (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # After the command name: state is field 3, utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class ServerProcess:
    """A server under test: started with a command, ready when a URL answers 200."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        cwd: Path,
        port: int,
        log_path: Path,
        env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.cwd = cwd
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.tree: list[int] = []

    @property
    def pid(self) -> int:
        """The server's own pid."""
        assert self.proc is not None
        return self.proc.pid

    def start(self, ready_path: str = "/readyz") -> float:
        """Start the process and wait until `ready_path` answers 200; return seconds taken."""
        started = time.perf_counter()
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                self.argv, cwd=self.cwd, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = started + READY_TIMEOUT_S
        while time.perf_counter() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.proc.returncode}: {self.log_tail()}"
                )
            if _answers_200(self.url + ready_path):
                self.tree = descendants(self.pid)
                return time.perf_counter() - started
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"{self.name}: {ready_path} not 200 within {READY_TIMEOUT_S:.0f} s")

    def cpu_seconds(self) -> dict[str, float]:
        """CPU seconds used so far by the server and by each kind of child it runs."""
        used: dict[str, float] = {}
        for pid in descendants(self.pid):
            name = "server" if pid == self.pid else _role(pid)
            used[name] = used.get(name, 0.0) + _cpu_of(pid)
        return used

    def rss_kb(self) -> dict[str, int]:
        """Resident memory (KiB) of the server and of each kind of child it runs."""
        used: dict[str, int] = {}
        for pid in descendants(self.pid):
            name = "server" if pid == self.pid else _role(pid)
            used[name] = used.get(name, 0) + rss_kb(pid)
        return used

    def stop(self) -> tuple[int | None, float, list[int]]:
        """SIGTERM and wait; return (exit code, seconds, pids of children left behind).

        A server that ignores SIGTERM for STOP_TIMEOUT_S is killed; children still
        alive CHILD_GRACE_S after it exited are killed by pid (started by this run).
        """
        assert self.proc is not None
        tree = sorted(set(self.tree) | set(descendants(self.pid)))
        started = time.perf_counter()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        # A clean shutdown stops the children before the parent exits; allow a little
        # slack for the kernel to finish them, then call whatever is left a leftover.
        deadline = time.perf_counter() + CHILD_GRACE_S
        leftovers = [pid for pid in tree if pid != self.pid and _alive(pid)]
        while leftovers and time.perf_counter() < deadline:
            time.sleep(0.05)
            leftovers = [pid for pid in leftovers if _alive(pid)]
        for pid in leftovers:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return self.proc.returncode, time.perf_counter() - started, leftovers

    def log_tail(self, lines: int = 15) -> str:
        """The last lines of the server's output."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def _role(pid: int) -> str:
    """A short name for a child process: the embedded service it is, or its command."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().decode(errors="replace").split("\0")
    except OSError:
        return "gone"
    line = " ".join(argv)
    if "secantus" in line:
        return "secantusd"
    if "redis-server" in line or "valkey-server" in line:
        return "redis-server"
    return Path(argv[0]).name or "child"


def _answers_200(url: str) -> bool:
    """True when GET `url` answers 200 within 5 s."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
