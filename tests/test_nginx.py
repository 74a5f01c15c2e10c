"""Rolling restarts behind real nginx, configured from the text of docs/operations.md.

The nginx configuration under test is the one the operations guide prints: its
`upstream`, `map` and `location` are taken from the document, and only the addresses,
the listening port and the file paths are changed. A doc that drifts from what works
fails here.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import json
import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from tornado.httpclient import HTTPClientError
from tornado.iostream import StreamClosedError
from tornado.websocket import WebSocketClosedError

from server.config import Config
from server.embedded import free_port
from tests.client import Client
from tests.processes import ROOT, shared_env, start_server, wait_ready

NGINX = Path("/usr/sbin/nginx")
OPERATIONS = ROOT / "docs" / "operations.md"
BACK_WITHIN = 2.0  # seconds from losing a connection to being joined again
CLIENTS = 8
SENDERS = 4
SEND_EVERY = 0.25  # seconds; under the default 5 messages per user per second
ROOMS = ("general", "deploys")


# --- the configuration, from the document ------------------------------------------

def doc_nginx_config() -> str:
    """The complete nginx configuration printed in docs/operations.md §7."""
    text = OPERATIONS.read_text()
    blocks = re.findall(r"```nginx\n(.*?)```", text, re.S)
    complete = [b for b in blocks if "upstream chat_backend" in b]
    assert len(complete) == 1, "docs/operations.md should print one complete nginx config"
    return complete[0]


def _blocks(conf: str, head: str) -> list[str]:
    """Every top-level block of `conf` whose opening line starts with `head`."""
    found = []
    lines = conf.splitlines()
    i = 0
    while i < len(lines):
        if lines[i].startswith(head) and lines[i].rstrip().endswith("{"):
            depth, body = 0, []
            for line in lines[i:]:
                code = line.split("#", 1)[0]
                depth += code.count("{") - code.count("}")
                body.append(line)
                if depth == 0:
                    break
            found.append("\n".join(body))
            i += len(body)
        else:
            i += 1
    return found


def nginx_config(doc: str, upstreams: list[int], port: int, prefix: Path) -> str:
    """The document's configuration with our processes, port and files put in."""
    (upstream,) = _blocks(doc, "upstream chat_backend")
    server_lines = re.findall(r"^(\s*)server\s+\S+(.*);", upstream, re.M)
    assert server_lines, upstream
    params = {rest for _, rest in server_lines}
    assert len(params) == 1, f"the documented servers differ in their parameters: {params}"
    indent, rest = server_lines[0]
    ours = "\n".join(f"{indent}server 127.0.0.1:{p}{rest};" for p in upstreams)
    upstream = re.sub(r"^\s*server\s+\S+.*;.*\n", "", upstream, flags=re.M)
    upstream = upstream.replace("{", "{\n" + ours, 1)
    (mapping,) = _blocks(doc, "map ")
    proxied = [b for b in _blocks(doc, "server ") if "proxy_pass" in b]
    assert len(proxied) == 1, proxied
    # Plain HTTP on a free loopback port instead of TLS on 443.
    server = re.sub(r"^\s*(listen|server_name|ssl_\w+)\s.*\n", "", proxied[0], flags=re.M)
    server = server.replace("{", f"{{\n    listen 127.0.0.1:{port};", 1)
    temp = "\n".join(f"    {kind}_temp_path {prefix / kind};"
                     for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    # As root, nginx would run its workers as nobody, who cannot enter pytest's tmp dirs.
    user = "user root;\n" if os.geteuid() == 0 else ""
    return f"""{user}worker_processes 2;
pid {prefix / 'nginx.pid'};
error_log {prefix / 'error.log'} warn;
events {{ worker_connections 1024; }}
http {{
    log_format upstreams '$status $request_method $uri upstream=$upstream_addr '
                         'status=$upstream_status $request_time';
    access_log {prefix / 'access.log'} upstreams;
{temp}

{mapping}

{upstream}

{server}
}}
"""


def test_the_documented_config_is_what_the_nginx_test_runs(tmp_path):
    """Catches a doc edit that the parser would silently skip."""
    conf = nginx_config(doc_nginx_config(), [8001, 8002], 8080, tmp_path)
    for line in ("least_conn;", "max_fails=0", "proxy_next_upstream error timeout http_503;",
                 "proxy_next_upstream_tries", "proxy_connect_timeout", "zone chat_backend",
                 "server 127.0.0.1:8001 max_fails=0;", "listen 127.0.0.1:8080;",
                 "proxy_set_header Upgrade $http_upgrade;", "map $http_upgrade",
                 "keepalive_timeout"):
        assert line in conf, conf
    assert "10.0.0." not in conf and "ssl_certificate" not in conf, conf


def seconds_of(value: str) -> float:
    """An nginx time (`60`, `60s`, `2m`, `500ms`) in seconds."""
    m = re.fullmatch(r"(\d+)(ms|s|m|h)?", value)
    assert m, value
    return int(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[m.group(2) or "s"]


def test_nginx_closes_an_idle_upstream_connection_before_the_server_does():
    """Else nginx can reuse a connection the server is closing: a 502 on a POST."""
    (upstream,) = _blocks(doc_nginx_config(), "upstream chat_backend")
    found = re.findall(r"^\s*keepalive_timeout\s+(\S+);", upstream, re.M)
    nginx_idle = seconds_of(found[0]) if found else 60.0  # nginx's default
    server_idle = Config().http_idle_timeout
    assert nginx_idle < server_idle, (nginx_idle, server_idle)
    # The guide states the server's timeout as it is.
    text = OPERATIONS.read_text()
    stated = {float(n) for n in re.findall(r"by the server\s+after (\d+) s", text)}
    assert stated == {server_idle}, stated


def directives(conf: str) -> set[tuple[str, ...]]:
    """The statements of an nginx configuration with the blocks they sit in, comments and
    spacing left out; the addresses (and number) of an upstream's servers too."""
    found: set[tuple[str, ...]] = set()
    context: list[str] = []
    code = "\n".join(line.split("#", 1)[0] for line in conf.splitlines())
    for token in re.findall(r"[^;{}]+[;{]|}", code):
        words = " ".join(token[:-1].split()) if token != "}" else ""
        if token == "}":
            context.pop()
        elif token.endswith("{"):
            context.append(words)
        else:
            if context and context[0].startswith("upstream "):
                words = re.sub(r"^server \S+", "server ADDRESS", words)
            found.add((*context, words))
    assert not context, context
    return found


def test_the_readme_config_is_the_documented_one():
    """The README's nginx example is §7's configuration without the HTTP-to-HTTPS
    redirect: nothing the guide explains (body sizes, timeouts, retries) is left out."""
    (example,) = re.findall(r"```nginx\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    doc = doc_nginx_config()
    proxied = [b for b in _blocks(doc, "server ") if "proxy_pass" in b]
    documented = "\n".join([*_blocks(doc, "upstream "), *_blocks(doc, "map "), *proxied])
    ours, theirs = directives(example), directives(documented)
    assert ours == theirs, {"README only": ours - theirs, "guide only": theirs - ours}


def launch_nginx(conf: str, prefix: Path) -> subprocess.Popen[bytes]:
    if not NGINX.exists():
        pytest.fail(f"{NGINX} is missing: install Debian's nginx (apt-get install nginx), "
                    "which .ci/run does")
    (prefix / "nginx.conf").write_text(conf)
    with open(prefix / "nginx.out", "wb") as out:
        return subprocess.Popen(
            [str(NGINX), "-p", str(prefix), "-c", str(prefix / "nginx.conf"),
             "-e", str(prefix / "error.log"), "-g", "daemon off;"],
            stdout=out, stderr=subprocess.STDOUT)


async def start_nginx(conf: str, prefix: Path, port: int) -> subprocess.Popen[bytes]:
    proc = launch_nginx(conf, prefix)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while loop.time() < deadline:
        assert proc.poll() is None, (prefix / "nginx.out").read_text() + (
            prefix / "error.log").read_text()
        with contextlib.suppress(OSError):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return proc
        await asyncio.sleep(0.05)  # polling a starting process: there is no event to await
    raise TimeoutError("nginx did not start")


# --- clients that behave like the browser's ----------------------------------------

@dataclass
class Member:
    """One user's WebSocket through nginx that reconnects when it is closed, resumes
    its room with `since`, and resends unacknowledged messages with their client_id."""

    client: Client
    room: str
    name: str
    last: int = 0  # the highest seq of the contiguous run received
    ahead: dict[int, dict[str, Any]] = field(default_factory=dict)  # received past a gap
    duplicates: list[int] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    outages: list[float] = field(default_factory=list)  # seconds from loss to joined
    refused: list[str] = field(default_factory=list)  # failed connection attempts
    nodes: list[str] = field(default_factory=list)
    acked: dict[str, int] = field(default_factory=dict)
    stop_sending: bool = False
    finished: bool = False

    def __post_init__(self) -> None:
        self.live = asyncio.Event()  # connected and joined
        self.progress = asyncio.Event()  # `last` moved
        self.waiting: dict[str, asyncio.Future[bool]] = {}
        self.ws: Any = None

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        lost_at: float | None = None
        while not self.finished:
            ws = await self._connect()
            self.ws = ws
            self.nodes.append(ws.hello["node"])
            await ws.send({"type": "join", "room": self.room, "since": self.last,
                           "ref": "join"})
            while (raw := await ws.conn.read_message()) is not None:
                frame = json.loads(raw)
                if self._take(frame, ws) and lost_at is not None:
                    self.outages.append(loop.time() - lost_at)
            lost_at = loop.time()
            self.live.clear()
            for fut in self.waiting.values():
                if not fut.done():
                    fut.set_result(False)

    async def _connect(self) -> Any:
        delay = 0.0
        while True:  # like the browser: at once, then a short and growing backoff
            try:
                return await self.client.ws()
            except HTTPClientError as e:
                self.refused.append(f"HTTP {e.code}")
            except (OSError, StreamClosedError) as e:
                self.refused.append(type(e).__name__)
            delay = min(1.0, delay * 2 or 0.05)
            await asyncio.sleep(delay)  # a reconnect backoff, not a wait for an event

    def _take(self, frame: dict[str, Any], ws: Any) -> bool:
        """Handle one frame; True when it completes a join."""
        kind = frame["type"]
        if kind in ("joined", "history") and frame.get("room") == self.room:
            for message in frame["messages"]:
                self._message(message, live=kind == "joined")
            if frame.get("has_more"):
                with contextlib.suppress(WebSocketClosedError):  # then it reconnects
                    ws.conn.write_message(json.dumps({"type": "history", "room": self.room,
                                                      "after": self.last, "limit": 100}))
                return False
            first = not self.live.is_set()
            self.live.set()
            return first
        if kind in ("message", "event") and frame["room"] == self.room:
            self._message(frame, live=True)
        elif kind == "ack":
            self.acked[frame["client_id"]] = frame["seq"]
            fut = self.waiting.get(frame["client_id"])
            if fut is not None and not fut.done():
                fut.set_result(True)
        elif kind == "error":
            self.errors.append(frame)
            if frame.get("ref") == "join":
                ws.close()  # start over, as the browser does
            fut = self.waiting.get(frame.get("ref") or "")
            if fut is not None and not fut.done():
                fut.set_result(False)
        return False

    def _message(self, message: dict[str, Any], live: bool) -> None:
        seq = message["seq"]
        if seq <= self.last or seq in self.ahead:
            if live:
                self.duplicates.append(seq)
            return
        self.ahead[seq] = message
        while self.last + 1 in self.ahead:
            self.last += 1
            del self.ahead[self.last]
        self.progress.set()

    async def send_until_stopped(self) -> None:
        loop = asyncio.get_running_loop()
        for i in itertools.count():
            if self.stop_sending:
                return
            cid = f"{self.name}-{i}"
            while cid not in self.acked:  # resent after a reconnect, same client_id
                await self.live.wait()
                self.waiting[cid] = fut = loop.create_future()
                try:
                    await self.ws.send({"type": "send", "room": self.room,
                                        "body": f"message {i} from {self.name}",
                                        "client_id": cid, "ref": cid})
                except WebSocketClosedError:
                    pass  # the reader sees the close and resolves `fut`
                if not await fut and cid not in self.acked:
                    await asyncio.sleep(0.05)  # an error frame: retry shortly
            await asyncio.sleep(SEND_EVERY)  # the pace of a chatty user

    async def reach(self, seq: int, timeout: float) -> None:
        async with asyncio.timeout(timeout):
            while self.last < seq:
                self.progress.clear()
                await self.progress.wait()

    def close(self) -> None:
        self.finished = True
        if self.ws is not None:
            self.ws.close()


async def stored(client: Client, room: str) -> list[dict[str, Any]]:
    """Every message of the room, oldest first, through the HTTP API."""
    messages: list[dict[str, Any]] = []
    while True:
        after = messages[-1]["seq"] if messages else 0
        status, body, _ = await client.request(
            "GET", f"/api/rooms/{room}/messages?after={after}&limit=100")
        assert status == 200, (status, body)
        messages += body["messages"]
        if not body["has_more"]:
            return messages


# --- the test ------------------------------------------------------------------------

async def test_rolling_restarts_behind_the_documented_nginx_lose_nothing_and_clients_return_within_2s(  # noqa: E501
        services, config, tmp_path):
    env = shared_env(services, config)
    ports = [free_port(), free_port()]
    front = free_port()
    prefix = tmp_path / "nginx"
    prefix.mkdir()
    logs = itertools.count()

    def start(port: int) -> subprocess.Popen[bytes]:
        return start_server(["--port", str(port), "--host", "127.0.0.1", "--xheaders",
                             "--shutdown-timeout", "5"], env,
                            tmp_path / f"server-{port}-{next(logs)}.log")

    procs = [start(p) for p in ports]
    nginx: subprocess.Popen[bytes] | None = None
    members: list[Member] = []
    tasks: list[asyncio.Future[Any]] = []
    url = f"http://127.0.0.1:{front}"
    try:
        for port, proc in zip(ports, procs, strict=True):
            await wait_ready(f"http://127.0.0.1:{port}", proc)
        nginx = await start_nginx(nginx_config(doc_nginx_config(), ports, front, prefix),
                                  prefix, front)
        for i in range(CLIENTS):
            client = Client(url)
            await client.register()  # through nginx: the XSRF cookie and session too
            if i == 0:
                status, body, _ = await client.request("POST", "/api/rooms",
                                                       {"name": ROOMS[1]})
                assert status == 201, (status, body)
            members.append(Member(client, ROOMS[i % len(ROOMS)], f"c{i}"))
        tasks = [asyncio.ensure_future(m.run()) for m in members]
        for m in members:
            await asyncio.wait_for(m.live.wait(), 10)
        assert len({m.nodes[0] for m in members}) == 2, "least_conn should use both"
        senders = [asyncio.ensure_future(m.send_until_stopped()) for m in members[:SENDERS]]
        tasks += senders

        restarts = []
        for _round in range(2):
            for index, port in enumerate(ports):
                began = time.monotonic()
                procs[index].send_signal(signal.SIGTERM)
                code = await asyncio.to_thread(procs[index].wait, 15)
                assert code == 0, code
                stopped = time.monotonic()
                procs[index] = start(port)
                await wait_ready(f"http://127.0.0.1:{port}", procs[index])
                restarts.append((port, stopped - began, time.monotonic() - stopped))

        try:
            await asyncio.wait_for(asyncio.gather(*(m.live.wait() for m in members)), 10)
        except TimeoutError:
            pytest.fail("clients not back 10 s after the last restart: "
                        f"{[(m.name, m.refused[-5:]) for m in members if not m.live.is_set()]}"
                        f"; failed attempts: {[len(m.refused) for m in members]}; nginx: "
                        f"{(prefix / 'error.log').read_text()[-2000:]}")
        for m in members[:SENDERS]:
            m.stop_sending = True
        await asyncio.wait_for(asyncio.gather(*senders), 10)
        checker = Client(url)
        checker.cookies = dict(members[0].client.cookies)
        history = {room: await stored(checker, room) for room in ROOMS}
        for m in members:
            await m.reach(len(history[m.room]), timeout=10)
    finally:
        for m in members:
            m.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        if nginx is not None:
            nginx.send_signal(signal.SIGQUIT)  # graceful stop
        for proc in [*procs, *([nginx] if nginx else [])]:
            try:
                await asyncio.to_thread(proc.wait, 20)
            except subprocess.TimeoutExpired:
                proc.kill()

    outages = sorted(o for m in members for o in m.outages)
    access = (prefix / "access.log").read_text().splitlines()
    bad_gateway = [line for line in access if line.startswith("502 ")]
    refused = [r for m in members for r in m.refused]
    # "upstream=A, B": nginx found a process refusing (or answering 503) and went on.
    passed_on = [line for line in access if "upstream=" in line and ", " in line]
    print(f"\nrolling restarts (port, drain s, start s): "
          f"{[(p, round(d, 2), round(s, 2)) for p, d, s in restarts]}")
    print(f"reconnects: {len(outages)}, back within: max {outages[-1]:.3f} s, "
          f"median {outages[len(outages) // 2]:.3f} s; failed attempts: {len(refused)} "
          f"{collections.Counter(refused)}; 502s in nginx's log: {len(bad_gateway)}; "
          f"requests nginx passed on to the next process: {len(passed_on)}")
    print(f"messages stored: { {room: len(msgs) for room, msgs in history.items()} }")

    # Every client lost its connection at least once per restart of its process, and
    # was joined again within the bound, on its first attempt.
    for m in members:
        assert len(m.outages) >= 3, (m.name, m.nodes, m.outages)
        assert max(m.outages) < BACK_WITHIN, (m.name, m.outages, m.refused)
    assert not refused, collections.Counter(refused)
    assert not bad_gateway, bad_gateway
    # Every acknowledged message is stored once, in a gapless sequence, and every member
    # of its room received each message once, in order.
    acked = {cid: seq for m in members for cid, seq in m.acked.items()}
    assert len(acked) > 40, len(acked)
    for room, messages in history.items():
        assert [msg["seq"] for msg in messages] == list(range(1, len(messages) + 1))
        by_cid = collections.Counter(msg["client_id"] for msg in messages
                                     if msg["type"] == "message")  # not join events
        assert all(n == 1 for n in by_cid.values()), by_cid.most_common(3)
        for m in members[:SENDERS]:
            if m.room == room:
                assert {cid: by_cid[cid] for cid in m.acked} == dict.fromkeys(m.acked, 1)
                seqs = {msg["client_id"]: msg["seq"] for msg in messages}
                assert {cid: seqs[cid] for cid in m.acked} == m.acked
    for m in members:
        assert m.last == len(history[m.room]) and not m.ahead, (m.name, m.last, m.ahead)
        assert not m.duplicates, (m.name, m.duplicates)
        unexpected = [e for e in m.errors if e.get("code") != "unavailable"]
        assert not unexpected, unexpected
