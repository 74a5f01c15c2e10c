"""examples/echo_bot.py, run as a real subprocess against real servers.

The bot is driven and observed only through the public API: a human's WebSocket sees
the bot come online and answer; the bot's exit code and log tell how it stopped.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from server.embedded import free_port
from tests.client import Client, Socket
from tests.processes import shared_env, start_server, wait_ready

ROOT = Path(__file__).resolve().parent.parent
BOT = ROOT / "examples" / "echo_bot.py"


class BotProcess:
    """The echo bot as a child process, logging to a file the assertions can show."""

    def __init__(self, base_url: str, token: str, rooms: list[str], log: Path) -> None:
        self.log = log
        url = base_url.replace("http", "ws", 1) + "/ws"
        # The token goes in the environment, where only this user can read it; a
        # command line is visible to every user of the machine.
        env = {**os.environ, "CHAT_BOT_TOKEN": token, "PYTHONUNBUFFERED": "1"}
        argv = [sys.executable, str(BOT), "--url", url, "--max-backoff", "0.5", *rooms]
        assert token not in " ".join(argv)
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=out,
                                         stderr=subprocess.STDOUT)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    async def exited(self, timeout: float) -> int:
        """The exit code, waited for off the event loop (the test's server runs on it)."""
        try:
            return await asyncio.to_thread(self.proc.wait, timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"bot still running after {timeout}s:\n{self.output()}") from None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


async def owner_with_bot(base_url: str, rooms: tuple[str, ...] = ("lab",),
                         name: str = "echo") -> tuple[Client, dict[str, Any], str]:
    """A human who owns a bot with one token, and the rooms the tests use."""
    owner = Client(base_url)
    await owner.register()
    for room in rooms:
        status, body, _ = await owner.request("POST", "/api/rooms", {"name": room})
        assert status in (201, 409), body
    status, bot, _ = await owner.request("POST", "/api/bots", {"name": name})
    assert status == 201, bot
    status, issued, _ = await owner.request("POST", f"/api/bots/{name}/tokens", {})
    assert status == 201, issued
    return owner, bot, issued["token"]


async def online(ws: Socket, bot: dict[str, Any], room: str, timeout: float = 20) -> None:
    """Wait until the bot's presence in `room` turns online (it has joined)."""
    await ws.expect("presence", timeout, room=room, user=bot, status="online")


async def send(ws: Socket, room: str, body: str) -> int:
    ack = await ws.call({"type": "send", "room": room, "body": body})
    assert ack["type"] == "ack", ack
    return int(ack["seq"])


async def replies_until(ws: Socket, bot: dict[str, Any], seq: int,
                        timeout: float = 10) -> list[dict[str, Any]]:
    """The bot's messages up to and including its answer to message `seq`.

    The bot handles a room's messages in seq order, so everything it said about
    earlier messages arrives before this answer.
    """
    seen: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        frame = await ws.expect("message", max(0.01, deadline - loop.time()), user=bot)
        seen.append(frame)
        if frame["client_id"] == f"echo-{seq}":
            return seen


async def chatter(owner: Client, name: str, count: int) -> None:
    """Another bot of `owner` posts `count` messages to lab: within its message-rate
    burst (20), so that several of them fill a room fast."""
    status, _, _ = await owner.request("POST", "/api/bots", {"name": name})
    assert status == 201
    status, issued, _ = await owner.request("POST", f"/api/bots/{name}/tokens", {})
    assert status == 201
    client = Client(owner.base)
    client.token = issued["token"]
    ws = await client.ws(origin=None)
    await ws.join("lab")
    for i in range(count):
        await send(ws, "lab", f"{name} says {i}")
    ws.close()


async def room_history(client: Client, room: str) -> list[dict[str, Any]]:
    """Every stored message of a room, through the HTTP API, paging with `after`."""
    messages: list[dict[str, Any]] = []
    while True:
        after = messages[-1]["seq"] if messages else 0
        status, page, _ = await client.request(
            "GET", f"/api/rooms/{room}/messages?after={after}&limit=100")
        assert status == 200, page
        messages += page["messages"]
        if not page["has_more"]:
            return messages


async def test_bot_answers_mentions_in_its_rooms_and_ignores_the_rest(base_url, tmp_path):
    owner, bot, token = await owner_with_bot(base_url)
    human = await owner.ws()
    await human.join("lab")
    await human.join("general")
    # Another bot that mentions the echo bot must not get an answer (no bot loops).
    _, _, other_token = await owner_with_bot(base_url, rooms=(), name="chatty-bot")
    other = Client(base_url)
    other.token = other_token
    other_ws = await other.ws(origin=None)
    await other_ws.join("lab")
    proc = BotProcess(base_url, token, ["general", "lab"], tmp_path / "bot.log")
    try:
        await online(human, bot, "general")
        await online(human, bot, "lab")
        plain = await send(human, "lab", "nobody in particular, echoes are everywhere")
        from_bot = await send(other_ws, "lab", "@echo hello from a bot")
        mention = await send(human, "lab", "hello @ECHO, how are you?")
        got = await replies_until(human, bot, mention)
        assert [m["client_id"] for m in got] == [f"echo-{mention}"], proc.output()
        assert owner.user is not None
        name = owner.user["name"]
        assert got[0]["body"] == f"@{name} you said: hello @ECHO, how are you?"
        assert got[0]["user"]["bot"] is True and got[0]["room"] == "lab"
        assert plain < from_bot < mention
        # Its name without the @ counts as a mention too, in every room it joined.
        bare = await send(human, "general", "echo: are you there?")
        got = await replies_until(human, bot, bare)
        assert [m["room"] for m in got] == ["general"]
        assert proc.proc.poll() is None, proc.output()
    finally:
        proc.kill()


async def test_bot_resumes_with_since_after_a_server_restart_and_answers_once(
        services, config, tmp_path):
    env = shared_env(services, config)
    ports = [free_port(), free_port()]
    urls = [f"http://127.0.0.1:{p}" for p in ports]

    def server(i: int, n: int) -> subprocess.Popen[bytes]:
        return start_server(["--port", str(ports[i]), "--shutdown-timeout", "5"], env,
                            tmp_path / f"server{i}-{n}.log")

    procs = [server(0, 1), server(1, 1)]
    bot_proc: BotProcess | None = None
    try:
        for url, proc in zip(urls, procs, strict=True):
            await wait_ready(url, proc)
        # The human stays on server 1; the bot talks to server 0, which restarts.
        owner, bot, token = await owner_with_bot(urls[1])
        human = await owner.ws()
        await human.join("lab")
        bot_proc = BotProcess(urls[0], token, ["lab"], tmp_path / "bot.log")
        await online(human, bot, "lab")
        first = await send(human, "lab", "@echo before the restart")
        await replies_until(human, bot, first)

        procs[0].send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(procs[0].wait, 15) == 0
        # Server 0 is gone, so the bot has no connection: these are only stored. The
        # mention comes after more than one page (100) of chatter: finding it takes
        # `join` with `since` and then `history` with `after`.
        await asyncio.gather(*(chatter(owner, f"chatter{i}", 18) for i in range(7)))
        missed = await send(human, "lab", "@echo while you were away")
        procs[0] = server(0, 2)
        await wait_ready(urls[0], procs[0])

        got = await replies_until(human, bot, missed, timeout=30)
        assert [m["client_id"] for m in got] == [f"echo-{missed}"], bot_proc.output()
        after = await send(human, "lab", "@echo after the restart")
        got = await replies_until(human, bot, after)
        assert [m["client_id"] for m in got] == [f"echo-{after}"], bot_proc.output()
        # History agrees: one answer per mention, none twice.
        answers = [m["client_id"] for m in await room_history(owner, "lab")
                   if m["user"] == bot and m["type"] == "message"]
        assert answers == [f"echo-{first}", f"echo-{missed}", f"echo-{after}"]
        assert f"rejoined lab after seq {first + 1}" in bot_proc.output()
    finally:
        if bot_proc is not None:
            bot_proc.kill()
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            proc.wait(20)


async def test_revoking_the_token_makes_the_bot_exit_with_code_2(base_url, tmp_path):
    owner, bot, token = await owner_with_bot(base_url)
    human = await owner.ws()
    await human.join("lab")
    proc = BotProcess(base_url, token, ["lab"], tmp_path / "bot.log")
    try:
        await online(human, bot, "lab")
        tokens = (await owner.request("GET", "/api/bots/echo/tokens"))[1]["tokens"]
        status, _, _ = await owner.request("DELETE", f"/api/bots/echo/tokens/{tokens[0]['id']}")
        assert status == 204
        assert await proc.exited(10) == 2, proc.output()
        assert "token rejected" in proc.output() and "1008" in proc.output()
    finally:
        proc.kill()
    # Started with a token the server no longer knows, it gives up at once too.
    again = BotProcess(base_url, token, ["lab"], tmp_path / "again.log")
    try:
        assert await again.exited(10) == 2, again.output()
        assert "HTTP 401" in again.output()
    finally:
        again.kill()
    assert token not in proc.output() + again.output()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_signal_stops_the_bot_cleanly_with_exit_code_0(base_url, tmp_path, sig):
    owner, bot, token = await owner_with_bot(base_url)
    human = await owner.ws()
    await human.join("lab")
    proc = BotProcess(base_url, token, ["lab"], tmp_path / "bot.log")
    try:
        await online(human, bot, "lab")
        proc.proc.send_signal(sig)
        assert await proc.exited(5) == 0, proc.output()
        await human.expect("presence", 10, room="lab", user=bot, status="offline")
        out = proc.output()
        assert "close code 1000" in out and "Traceback" not in out, out
    finally:
        proc.kill()


async def test_a_token_on_the_command_line_is_refused_and_not_echoed():
    token = "chat_" + "T0kenOnTheCommandLine" * 2 + "x"
    env = {k: v for k, v in os.environ.items() if k != "CHAT_BOT_TOKEN"}
    argv = [sys.executable, str(BOT), "--url", f"ws://127.0.0.1:{free_port()}/ws",
            "--token", token, "lab"]
    done = await asyncio.to_thread(subprocess.run, argv, env=env, cwd=ROOT,
                                   capture_output=True, timeout=20)
    out = (done.stdout + done.stderr).decode(errors="replace")
    assert done.returncode == 2, out
    assert "CHAT_BOT_TOKEN" in out and token not in out
    # Without the variable it says where the token belongs, and does not start.
    done = await asyncio.to_thread(subprocess.run, [*argv[:-3], "lab"], env=env, cwd=ROOT,
                                   capture_output=True, timeout=20)
    assert done.returncode == 2 and b"CHAT_BOT_TOKEN" in done.stderr


async def test_signal_while_the_server_is_unreachable_still_exits_promptly(tmp_path):
    proc = BotProcess(f"http://127.0.0.1:{free_port()}", "chat_unused", ["lab"],
                      tmp_path / "bot.log")
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while "reconnecting in" not in proc.output():  # its first attempt has failed
            assert loop.time() < deadline and proc.proc.poll() is None, proc.output()
            await asyncio.sleep(0.05)  # watching a log file: there is no event to await
        proc.proc.send_signal(signal.SIGTERM)
        assert await proc.exited(5) == 0, proc.output()
    finally:
        proc.kill()
