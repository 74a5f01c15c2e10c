"""`python run.py` as an operator runs it: a real process, embedded services, signals.

Every server binds 127.0.0.1 on a free port with its data in a temporary directory;
every wait is bounded. The embedded children are identified through /proc (pid plus
start time, so a recycled pid is never mistaken for one of ours) and their exit is
awaited through pidfds, not guessed with sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import tornado.ioloop
from tornado.httpclient import AsyncHTTPClient, HTTPClientError

from server.embedded import free_port
from tests.client import PASSWORD, Client

ROOT = Path(__file__).resolve().parent.parent
RUN_PY = ROOT / "run.py"
# Everything run.py reads from the environment: the tests set what they mean to.
CHAT_ENV = {"PORT", "HOST", "MONGO_URL", "REDIS_URL", "COOKIE_SECRET", "CHAT_DATA_DIR",
            "CHAT_DB", "CHAT_REDIS_PREFIX", "ALLOWED_ORIGINS", "CHAT_XHEADERS", "LOG_LEVEL",
            "LOG_FORMAT", "SHUTDOWN_TIMEOUT"}
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in CHAT_ENV}
    env.update(extra)
    return env


# Processes, through /proc ----------------------------------------------------------------

ProcId = tuple[int, int]  # (pid, start time in clock ticks since boot)


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, start time) of a process, or None if there is none."""
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = data[data.rindex(")") + 2:].split()
    return fields[0], int(fields[1]), int(fields[19])


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except (FileNotFoundError, ProcessLookupError):
        return ""


def descendants(root: int) -> dict[ProcId, str]:
    """Every live process below `root`, with its command line."""
    children: dict[int, list[tuple[int, int]]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (st := _stat(int(entry.name))) is not None:
            children.setdefault(st[1], []).append((int(entry.name), st[2]))
    found: dict[ProcId, str] = {}
    todo = [root]
    while todo:
        for pid, start in children.get(todo.pop(), []):
            found[(pid, start)] = _cmdline(pid)
            todo.append(pid)
    return found


def running(proc: ProcId) -> bool:
    """The process still exists, is the same one, and is not a zombie."""
    st = _stat(proc[0])
    return st is not None and st[2] == proc[1] and st[0] not in ("Z", "X")


def wait_gone(procs: list[ProcId], timeout: float) -> list[ProcId]:
    """Wait until every process has exited (pidfds turn readable); the ones still running."""
    fds: dict[int, ProcId] = {}
    try:
        for proc in procs:
            try:
                fd = os.pidfd_open(proc[0])
            except ProcessLookupError:
                continue
            if running(proc):
                fds[fd] = proc
            else:
                os.close(fd)
        deadline = time.monotonic() + timeout
        pending = set(fds)
        while pending and (left := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select(list(pending), [], [], left)
            pending -= set(ready)
    finally:
        for fd in fds:
            os.close(fd)
    return [p for p in procs if running(p)]


# The server process ----------------------------------------------------------------------


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


Launch = Callable[[Path], Server]


@pytest.fixture
def launch(tmp_path: Path) -> Iterator[Launch]:
    """Start `python run.py` on loopback; whatever is still running at the end is killed."""
    started: list[Server] = []

    def start(data_dir: Path) -> Server:
        port = free_port()
        log = tmp_path / f"run-{len(started)}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, str(RUN_PY), "--host", "127.0.0.1", "--port", str(port),
                 "--data-dir", str(data_dir), "--shutdown-timeout", "5"],
                cwd=tmp_path, env=clean_env(), stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT,
            )
        server = Server(proc, port, log)
        started.append(server)
        return server

    yield start
    for server in started:
        if server.proc.poll() is None:
            tree = list(descendants(server.proc.pid))
            server.proc.kill()
            server.proc.wait(STOP_TIMEOUT)
            wait_gone(tree, 10)


async def wait_ready(server: Server) -> None:
    """Poll /readyz until the freshly started process answers 200 (bounded)."""
    http = AsyncHTTPClient()
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if server.proc.poll() is not None:
            pytest.fail(f"run.py exited with {server.proc.returncode}:\n{server.output()}")
        with contextlib.suppress(OSError, HTTPClientError):
            response = await http.fetch(server.base_url + "/readyz", request_timeout=2)
            if response.code == 200:
                return
        if time.monotonic() > deadline:
            pytest.fail(f"/readyz not 200 within {START_TIMEOUT}s:\n{server.output()}")
        await asyncio.sleep(0.1)  # a real process coming up has no event to await


def embedded_children(server: Server) -> list[ProcId]:
    """The valkey-server and secantusd-py processes (and anything they started)."""
    tree = descendants(server.proc.pid)
    commands = " | ".join(tree.values())
    assert "valkey-server" in commands, commands
    assert "secantus" in commands, commands
    return list(tree)


async def stop(server: Server, sig: signal.Signals) -> int:
    server.proc.send_signal(sig)
    try:
        return await asyncio.to_thread(server.proc.wait, STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"run.py still running {STOP_TIMEOUT}s after {sig.name}:\n"
                    f"{server.output()}")


# Command line ----------------------------------------------------------------------------


def test_help_exits_0_and_documents_every_option() -> None:
    done = subprocess.run([sys.executable, str(RUN_PY), "--help"], cwd=ROOT, env=clean_env(),
                          capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    for option in ("--port", "--data-dir", "--allowed-origins", "--host", "PORT",
                   "CHAT_DATA_DIR", "ALLOWED_ORIGINS", "MONGO_URL", "REDIS_URL",
                   "COOKIE_SECRET", "--metrics-port", "METRICS_PORT"):
        assert option in done.stdout, option


@pytest.mark.parametrize("service_env", [
    {"REDIS_URL": "redis://127.0.0.1:9/0"},
    {"MONGO_URL": "mongodb://127.0.0.1:9/"},
], ids=["redis", "mongo"])
def test_refuses_to_start_with_a_service_url_and_no_cookie_secret(
    tmp_path: Path, service_env: dict[str, str]
) -> None:
    data_dir = tmp_path / "data"
    done = subprocess.run(
        [sys.executable, str(RUN_PY), "--host", "127.0.0.1", "--port", str(free_port()),
         "--data-dir", str(data_dir)],
        cwd=tmp_path, env=clean_env(**service_env), capture_output=True, text=True,
        timeout=30, check=False,
    )
    assert done.returncode != 0
    assert "COOKIE_SECRET" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    # It stopped before starting anything.
    assert not (data_dir / "redis").exists() and not (data_dir / "mongo").exists()


# Embedded lifecycle ----------------------------------------------------------------------


async def test_sigterm_exits_0_without_orphans_and_data_survives_a_restart(
    io_loop: tornado.ioloop.IOLoop, launch: Launch, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    first = launch(data_dir)
    await wait_ready(first)
    children = embedded_children(first)
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    for name in ("cookie_secret", "redis.password", "mongo.password"):
        assert stat.S_IMODE((data_dir / name).stat().st_mode) == 0o600, name
        # The services' URLs carry these: they are never logged.
        assert (data_dir / name).read_text().strip() not in first.output(), name

    alice = Client(first.base_url)
    user = await alice.register("alice")
    # An operator command finds the running server's services (and their credentials).
    made = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, str(RUN_PY), "create-bot", "helper", "--owner", "alice",
         "--data-dir", str(data_dir)],
        cwd=tmp_path, env=clean_env(), capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    assert made.stdout.strip().splitlines()[-1].startswith("chat_")
    sock = await alice.ws()
    await sock.join("general")
    ack = await sock.call({"type": "send", "room": "general", "body": "kept across restarts",
                           "client_id": "keep-1"})
    assert ack["type"] == "ack", ack
    sock.close()

    assert await stop(first, signal.SIGTERM) == 0, first.output()
    still = [p for p in children if running(p)]
    assert not still, f"orphans after SIGTERM: {still}"

    second = launch(data_dir)
    await wait_ready(second)
    # The same secret file and the stored session: yesterday's cookie still works.
    returning = Client(second.base_url)
    returning.cookies = dict(alice.cookies)
    status, me, _ = await returning.request("GET", "/api/me")
    assert (status, me) == (200, {**user, "admin": False})

    fresh = Client(second.base_url)
    status, body = await fresh.login("alice", PASSWORD)
    assert status == 200, body
    status, page, _ = await fresh.request("GET", "/api/rooms/general/messages")
    assert status == 200, page
    kept = [m for m in page["messages"] if m["client_id"] == "keep-1"]
    assert [(m["seq"], m["body"], m["user"]) for m in kept] == [
        (ack["seq"], "kept across restarts", user)]

    second_children = embedded_children(second)
    assert await stop(second, signal.SIGTERM) == 0, second.output()
    assert not [p for p in second_children if running(p)]


def test_a_taken_port_fails_at_once_naming_the_option_and_starts_nothing(
        tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, str(RUN_PY), "--host", "127.0.0.1", "--port", str(port),
             "--data-dir", str(data_dir)],
            cwd=tmp_path, env=clean_env(), capture_output=True, text=True, timeout=30,
            check=False)
        took = time.monotonic() - started
    assert done.returncode == 1
    assert f"cannot listen on port {port} (--port / PORT)" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert took < 5, f"took {took:.1f}s to fail"
    assert not (data_dir / "redis").exists() and not (data_dir / "mongo").exists()


async def test_a_second_server_on_the_same_data_dir_says_it_is_in_use(
    io_loop: tornado.ioloop.IOLoop, launch: Launch, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    first = launch(data_dir)
    await wait_ready(first)
    second = launch(data_dir)
    code = await asyncio.to_thread(second.proc.wait, STOP_TIMEOUT)
    assert code == 1, second.output()
    assert f"the data dir {data_dir} is in use by another server (pid {first.proc.pid})" \
        in second.output(), second.output()
    assert "Traceback" not in second.output()
    # The first one never noticed.
    client = Client(first.base_url)
    await client.register("still-served")
    ws = await client.ws()
    await ws.join("general")
    ack = await ws.call({"type": "send", "room": "general", "body": "fine"})
    assert ack["type"] == "ack", ack
    ws.close()
    assert await stop(first, signal.SIGTERM) == 0, first.output()


async def test_sigkill_of_run_py_leaves_no_orphans(
    io_loop: tornado.ioloop.IOLoop, launch: Launch, tmp_path: Path
) -> None:
    server = launch(tmp_path / "data")
    await wait_ready(server)
    children = embedded_children(server)
    assert await stop(server, signal.SIGKILL) == -signal.SIGKILL
    # The kernel tells each child its parent died (PR_SET_PDEATHSIG: SIGTERM). Each then
    # stops gracefully: secantusd takes 3.5-4 s when idle, and once took over 10 s on a
    # busy CI machine.
    still = await asyncio.to_thread(wait_gone, children, 30.0)
    assert not still, f"orphans after SIGKILL: {still}"


async def test_create_bot_command_prints_a_working_token(make_client, services, config):
    owner = make_client()
    await owner.register()
    env = {**os.environ, "MONGO_URL": services.mongo_url, "CHAT_DB": config.db_name}
    env.pop("COOKIE_SECRET", None)
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "run.py", "create-bot", "cli-bot", "--owner", owner.user["name"]],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    token = done.stdout.strip().splitlines()[-1]
    assert token.startswith("chat_")
    bot = make_client()
    bot.token = token
    ws = await bot.ws(origin=None)
    assert ws.hello["user"]["name"] == "cli-bot" and ws.hello["user"]["bot"] is True
    unknown = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "run.py", "create-bot", "cli-bot2", "--owner", "nobody-here"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert unknown.returncode == 1 and "nobody-here" in unknown.stderr
    # It says which database it looked in.
    url = urlsplit(services.mongo_url)
    hosts = f"{url.hostname}:{url.port}"  # never the credentials the URL may carry
    assert f"in database '{config.db_name}' of MongoDB at {hosts}" in unknown.stderr
    by_bot = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "run.py", "create-bot", "cli-bot3", "--owner", "cli-bot"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert by_bot.returncode == 1
    assert "'cli-bot' is a bot: the owner must be a person" in by_bot.stderr, by_bot.stderr


def test_create_bot_refuses_to_start_an_empty_database_where_no_data_dir_is(
        tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = subprocess.run(
        [sys.executable, str(RUN_PY), "create-bot", "helper", "--owner", "ada"],
        cwd=elsewhere, env=clean_env(), capture_output=True, text=True, timeout=60,
        check=False)
    assert done.returncode == 1
    assert f"no data dir {elsewhere / 'var'}" in done.stderr, done.stderr
    assert "--data-dir" in done.stderr and "Traceback" not in done.stderr
    assert list(elsewhere.iterdir()) == []  # no ./var, no secret, no database


async def test_create_bot_names_the_running_servers_data_dir_it_used(
    io_loop: tornado.ioloop.IOLoop, launch: Launch, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    server = launch(data_dir)
    await wait_ready(server)
    await Client(server.base_url).register("ada")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, str(RUN_PY), "create-bot", "helper", "--owner", "ada",
         "--data-dir", str(data_dir)],
        cwd=elsewhere, env=clean_env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert (f"using database 'chat' of the embedded MongoDB-wire server of the server "
            f"running on {data_dir}") in done.stderr, done.stderr
    assert done.stdout.strip().splitlines()[-1].startswith("chat_")
    assert await stop(server, signal.SIGTERM) == 0, server.output()
