"""Graceful shutdown and worker processes, with real server processes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pymongo
import pytest
from prometheus_client.parser import text_string_to_metric_families

from server import tasks
from server.embedded import free_port
from tests.client import Client
from tests.conftest import STATUS_TOKEN, close_node, mongo_url_of, open_node, redis_url_of
from tests.processes import shared_env, start_server, wait_ready
from tests.test_abuse import RawPeer


class KeepAlive:
    """One HTTP/1.1 connection reused for every request, as a balancer's health check
    keeps it open."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 host: str) -> None:
        self.reader = reader
        self.writer = writer
        self.host = host

    @classmethod
    async def open(cls, base_url: str) -> KeepAlive:
        parts = urlsplit(base_url)
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        return cls(reader, writer, parts.netloc)

    async def get(self, path: str, headers: dict[str, str] | None = None,
                  timeout: float = 5.0) -> tuple[int, Any]:
        """(status, JSON body); ConnectionError once the server has closed the connection."""
        lines = [f"GET {path} HTTP/1.1", f"Host: {self.host}",
                 *(f"{k}: {v}" for k, v in (headers or {}).items())]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        try:
            await self.writer.drain()
            head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), timeout)
            lines = head.decode("latin-1").split("\r\n")
            headers = {k.strip().lower(): v.strip()
                       for k, _, v in (line.partition(":") for line in lines[1:] if line)}
            body = await asyncio.wait_for(
                self.reader.readexactly(int(headers.get("content-length", "0"))), timeout)
        except asyncio.IncompleteReadError as e:
            raise ConnectionError("the server closed the connection") from e
        return int(lines[0].split()[1]), json.loads(body) if body else None

    def close(self) -> None:
        self.writer.close()


HANDOVER = 2.0  # PRESENCE_HANDOVER of these tests' processes (15 s by default)


@contextlib.asynccontextmanager
async def two_processes(services, config, tmp_path: Path
                        ) -> AsyncIterator[tuple[list[subprocess.Popen[bytes]], list[str]]]:
    """Two ready `run.py` processes sharing the services; SIGTERMed at the end."""
    env = {**shared_env(services, config), "PRESENCE_HANDOVER": str(HANDOVER)}
    ports = [free_port(), free_port()]
    procs = [start_server(["--port", str(p), "--shutdown-timeout", "5"], env,
                          tmp_path / f"n{i}.log") for i, p in enumerate(ports)]
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    try:
        for url, proc in zip(urls, procs, strict=True):
            await wait_ready(url, proc)
        yield procs, urls
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            proc.wait(20)


async def test_sigterm_closes_with_1001_and_clients_resume_on_another_process(
        services, config, tmp_path):
    async with two_processes(services, config, tmp_path) as (procs, urls):
        reader = Client(urls[0])
        await reader.register()
        rws = await reader.ws()
        await rws.join("general")
        writer = Client(urls[1])
        await writer.register()
        wws = await writer.ws()
        await wws.join("general")
        seen: list[int] = []
        acked: list[int] = []

        async def read_until_closed() -> tuple[int | None, str | None]:
            while True:
                raw = await rws.conn.read_message()
                if raw is None:
                    return rws.conn.close_code, rws.conn.close_reason
                frame = json.loads(raw)
                if frame["type"] == "message":
                    seen.append(frame["seq"])

        reading = asyncio.ensure_future(read_until_closed())
        for i in range(10):
            acked.append((await wws.call({"type": "send", "room": "general",
                                          "body": f"a{i}"}))["seq"])
        started = time.monotonic()
        procs[0].send_signal(signal.SIGTERM)
        code, _ = await asyncio.wait_for(reading, 10)
        assert code == 1001
        # The reader does not come back: the drained process handed its presence over
        # for HANDOVER seconds, then the survivor announces it offline, long before
        # the presence TTL (30 s) would have.
        offline = await wws.expect("presence", timeout=HANDOVER + 5, status="offline")
        assert offline["user"] == reader.user
        assert time.monotonic() - started >= HANDOVER
        for i in range(10, 20):  # traffic continues while the reader is away
            acked.append((await wws.call({"type": "send", "room": "general",
                                          "body": f"a{i}"}))["seq"])
        assert await asyncio.to_thread(procs[0].wait, 15) == 0
        assert time.monotonic() - started < 10
        # The reader reconnects to the surviving process and resumes from its last seq.
        moved = Client(urls[1])
        moved.cookies = dict(reader.cookies)
        again = await moved.ws()
        joined = await again.join("general", since=seen[-1] if seen else 0)
        seen.extend(m["seq"] for m in joined["messages"])
        assert seen == acked == list(range(acked[0], acked[0] + 20))
        # The stopped process deregistered from /status at once.
        operator = Client(urls[1])
        operator.token = STATUS_TOKEN
        body = (await operator.request("GET", "/status"))[1]
        assert len(body["processes"]) == 1


async def test_a_rolling_restart_shows_no_one_offline_who_came_back_within_the_handover(
        services, config, tmp_path):
    """People whose process drains and who reconnect to another one stay online in
    their rooms (no offline, no online); those who do not come back go offline once
    the handover ends."""
    async with two_processes(services, config, tmp_path) as (procs, urls):
        watcher = Client(urls[1])
        await watcher.register()
        wws = await watcher.ws()
        await wws.join("general")
        mover, stayer = Client(urls[0]), Client(urls[0])
        socks = {}
        for person in (mover, stayer):
            await person.register()
            socks[person.user["name"]] = sock = await person.ws()
            await sock.join("general")
            online = await wws.expect("presence", status="online", user=person.user)
            assert online["room"] == "general"

        procs[0].send_signal(signal.SIGTERM)
        assert (await socks[mover.user["name"]].closed(10))[0] == 1001
        moved = Client(urls[1])
        moved.cookies = dict(mover.cookies)
        again = await moved.ws()
        members = (await again.join("general"))["members"]
        assert {m["name"] for m in members} >= {mover.user["name"], stayer.user["name"]}

        # Everything the watcher hears of presence until the stayer is buried.
        heard: list[dict[str, Any]] = []
        while not heard or heard[-1]["user"] != stayer.user:
            heard.append(await wws.expect("presence", timeout=HANDOVER + 10))
        assert [(f["user"]["name"], f["status"]) for f in heard] == [
            (stayer.user["name"], "offline")]
        assert await asyncio.to_thread(procs[0].wait, 15) == 0


async def test_a_drain_says_draining_at_once_and_drops_a_peer_that_ignores_the_close(
        services, config, tmp_path):
    env = shared_env(services, config)
    port = free_port()
    log = tmp_path / "n.log"
    proc = start_server(["--port", str(port), "--shutdown-timeout", "10"], env, log)
    url = f"http://127.0.0.1:{port}"
    try:
        await wait_ready(url, proc)
        user = Client(url)
        await user.register()
        # Completes the handshake, then never answers the close frame (a frozen tab, a
        # wedged bot): Tornado alone would wait 5 s for its reply.
        deaf = await RawPeer.open(user)
        await deaf.join()
        probe = await KeepAlive.open(url)
        assert (await probe.get("/readyz"))[0] == 200
        # An upgrade can also come on a connection that was open before the drain (a
        # balancer's kept-alive upstream connection): it must not slip in.
        late = await KeepAlive.open(url)
        assert (await late.get("/healthz"))[0] == 200
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        # The drain has begun once readiness says so (the signal is handled by the
        # process's loop, not at the moment it is sent).
        answers = []
        while not answers or answers[-1][0] != 503:
            status, body = await probe.get("/readyz")
            answers.append((status, body["status"]))
        answers = answers[-1:]
        status, body = await late.get("/ws", {
            "Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Cookie": user.cookie_header(),
            "Origin": url})
        assert (status, body["error"]["code"]) == (503, "unavailable"), (status, body)
        late.close()
        with contextlib.suppress(ConnectionError):
            while True:
                status, body = await probe.get("/readyz")
                answers.append((status, body["status"]))
                await asyncio.sleep(0.05)  # a health checker's interval
        probe.close()
        assert answers and set(answers) == {(503, "draining")}, answers
        while (await deaf.frame())[0] != 0x8:  # the close frame came; it stays unanswered
            pass
        assert await asyncio.to_thread(proc.wait, 15) == 0
        elapsed = time.monotonic() - started
        assert elapsed < 2.5, f"{elapsed:.1f} s:\n{log.read_text()}"
        output = log.read_text()
        assert "draining: told 1 WebSocket connection to go" in output, output
        assert "did not answer the close" in output, output
        deaf.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(20)


async def test_a_drain_logs_what_holds_it_once_a_second(config, services, private_mongo,
                                                        caplog):
    url = mongo_url_of(private_mongo)
    node = await open_node(config, services, mongo_url=url)
    client = Client(node.base_url)
    await client.register()
    caplog.set_level(logging.INFO, logger="server.runtime")
    # The request's session lookup hangs in MongoDB for 2.5 s: the drain waits for it.
    with pymongo.MongoClient(url) as mongo:
        mongo.admin.command({"configureFailPoint": "failCommand", "mode": {"times": 1},
                             "data": {"failCommands": ["find"], "blockConnection": True,
                                      "blockTimeMS": 2500}})
    request = asyncio.ensure_future(client.request("GET", "/api/me"))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    try:
        while node.runtime.inflight.count == 0:  # the request reached the server
            assert loop.time() < deadline
            await asyncio.sleep(0.01)
    except AssertionError:
        await close_node(node)
        raise
    node.server.stop()
    await node.runtime.shutdown(node.server, timeout=10)
    status, me, _ = await request
    assert (status, me) == (200, {**client.user, "admin": False})
    said = [r.getMessage() for r in caplog.records if r.name == "server.runtime"]
    assert said[0] == "draining: told 0 WebSocket connections to go; 1 HTTP request in progress"
    held = [m for m in said if m.startswith("draining: 1 HTTP request in progress;")]
    assert len(held) >= 2, said


async def test_clients_hear_of_a_drain_at_once_while_redis_hangs(config, services,
                                                                 private_redis):
    """Leaving /status waits on Redis (up to 2 s when it hangs): the 1001 must not."""
    node = await open_node(config, services, redis_url=redis_url_of(private_redis))
    stopping: asyncio.Future[None] | None = None
    try:
        client = Client(node.base_url)
        await client.register()
        ws = await client.ws()
        await ws.join("general")
        assert private_redis.proc is not None
        os.kill(private_redis.proc.pid, signal.SIGSTOP)  # connections open, no answers
        try:
            node.server.stop()
            loop = asyncio.get_running_loop()
            started = loop.time()
            stopping = asyncio.ensure_future(node.runtime.shutdown(node.server, timeout=10))
            code, reason = await ws.closed(5)
            heard_after = loop.time() - started
        finally:
            os.kill(private_redis.proc.pid, signal.SIGCONT)
        assert (code, reason) == (1001, "server shutting down")
        assert heard_after < 0.5, f"the close came {heard_after:.2f} s into the drain"
    finally:
        if stopping is None:
            await close_node(node)
        else:
            await asyncio.wait_for(stopping, 15)


async def test_processes_flag_forks_workers_that_share_the_port(services, config, tmp_path):
    env = shared_env(services, config)
    port = free_port()
    proc = start_server(["--port", str(port), "--processes", "2"], env, tmp_path / "w.log")
    url = f"http://127.0.0.1:{port}"
    try:
        await wait_ready(url, proc)
        operator = Client(url)
        operator.token = STATUS_TOKEN
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 15
        while True:
            body = (await operator.request("GET", "/status"))[1]
            if len(body["processes"]) == 2:
                break
            assert loop.time() < deadline, body
            await asyncio.sleep(0.2)  # workers report every 2 s; poll the endpoint
        pids = {p["pid"] for p in body["processes"]}
        assert len(pids) == 2 and proc.pid not in pids
    finally:
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 20) == 0
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(
            f"/proc/{pid}/status").read_text().lower()


async def test_a_stopping_supervisor_refuses_new_connections_while_its_workers_drain(
        services, config, tmp_path):
    env = shared_env(services, config)
    port = free_port()
    proc = start_server(["--port", str(port), "--processes", "2"], env, tmp_path / "w.log")
    url = f"http://127.0.0.1:{port}"
    try:
        await wait_ready(url, proc)
        user = Client(url)
        await user.register()
        deaf = await RawPeer.open(user)  # never answers the close: holds a drain ~1 s
        await deaf.join()
        proc.send_signal(signal.SIGTERM)
        # The supervisor's own copy of the listening socket would keep the port
        # accepting connections that no worker serves, until it exits.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 0.5
        while True:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except ConnectionRefusedError:
                break
            writer.close()
            assert loop.time() < deadline, "the port still accepts connections"
            await asyncio.sleep(0.02)  # the workers' drains begin within milliseconds
        assert proc.poll() is None, "exited before the drain was held: nothing was shown"
        deaf.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 20) == 0


def free_port_pair() -> int:
    """A free port whose successor is free too (two workers' metrics ports)."""
    for _ in range(100):
        port = free_port()
        with contextlib.suppress(OSError), socket.socket() as probe:
            probe.bind(("127.0.0.1", port + 1))
            return port
    raise AssertionError("no two adjacent free ports")


async def live_nodes(operator: Client, until: Callable[[dict[str, int]], bool]
                     ) -> dict[str, int]:
    """Node id -> pid of the processes in /status, once `until` holds (bounded)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while True:
        body = (await operator.request("GET", "/status"))[1]
        nodes = {p["id"]: p["pid"] for p in body["processes"]}
        if until(nodes):
            return nodes
        assert loop.time() < deadline, body
        await asyncio.sleep(0.2)  # workers report every 2 s; poll the endpoint


async def node_of_metrics_port(port: int) -> str:
    """The node id in `chat_build_info` of the /metrics served on a worker's own port."""
    scraper = Client(f"http://127.0.0.1:{port}")
    scraper.token = STATUS_TOKEN
    status, _, response = await scraper.request("GET", "/metrics")
    assert status == 200, response.body
    families = {f.name: f for f in text_string_to_metric_families(response.body.decode())}
    (sample,) = families["chat_build_info"].samples
    return sample.labels["node"]


async def test_a_worker_stopped_alone_is_restarted_as_a_new_node_on_its_metrics_port(
        services, config, tmp_path):
    env = shared_env(services, config)
    port, metrics_port = free_port(), free_port_pair()
    log = tmp_path / "w.log"
    proc = start_server(["--port", str(port), "--processes", "2",
                         "--metrics-port", str(metrics_port)], env, log)
    url = f"http://127.0.0.1:{port}"
    try:
        await wait_ready(url, proc)
        operator = Client(url)
        operator.token = STATUS_TOKEN
        before = await live_nodes(operator, lambda nodes: len(nodes) == 2)
        by_port = [await node_of_metrics_port(metrics_port + i) for i in (0, 1)]
        assert sorted(by_port) == sorted(before)  # each worker's own figures, told apart
        victim = by_port[1]
        os.kill(before[victim], signal.SIGTERM)  # the worker alone drains and exits 0
        after = await live_nodes(operator, lambda nodes: len(nodes) == 2 and victim not in nodes)
        (fresh,) = set(after) - set(before)
        assert fresh == f"{victim}.1" and after[fresh] != before[victim]
        assert await node_of_metrics_port(metrics_port + 1) == fresh
        assert (f"worker 1 (pid {before[victim]}) exited with 0 although the supervisor is "
                f"not stopping; restarting it as node {fresh}") in log.read_text()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 20) == 0
    assert log.read_text().count("restarting") == 1  # none when the supervisor stops


async def test_stop_ends_a_background_loop_that_swallowed_a_cancellation() -> None:
    # Before Python 3.12, asyncio.wait_for swallows a cancel that arrives just as its
    # awaitable finishes; a reporting loop around it then ran on and stalled shutdown.
    loop = asyncio.get_running_loop()
    finished = loop.create_future()
    waiting = asyncio.Event()
    rounds = 0

    async def reporting_loop() -> None:
        nonlocal rounds
        while True:
            rounds += 1
            waiting.set()
            try:
                await asyncio.wait_for(finished if rounds == 1 else loop.create_future(), 3600)
            except asyncio.CancelledError:
                if rounds == 1:
                    continue  # what wait_for itself does on Python 3.11 and older
                raise

    task = asyncio.ensure_future(reporting_loop(), loop=loop)
    await waiting.wait()
    finished.set_result(None)  # the awaitable finishes and the cancel arrives together
    await asyncio.wait_for(tasks.stop(task, timeout=5), 10)
    assert task.cancelled() and rounds == 2


async def test_stop_gives_up_on_a_task_that_never_ends_and_says_so(
        caplog: pytest.LogCaptureFixture) -> None:
    deaf = True

    async def ignores_cancels() -> None:
        while deaf:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(3600)

    task = asyncio.ensure_future(ignores_cancels())
    await asyncio.sleep(0)
    await tasks.stop(task, timeout=0.3)
    assert not task.done()
    assert "did not stop within 0.3 s" in caplog.text
    deaf = False
    await tasks.stop(task)
    assert task.done()
