"""Graceful shutdown and worker processes, with real server processes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time
from pathlib import Path

import pytest

from server import tasks
from server.embedded import free_port
from tests.client import Client
from tests.conftest import STATUS_TOKEN
from tests.processes import shared_env, start_server, wait_ready


async def test_sigterm_closes_with_1001_and_clients_resume_on_another_process(
        services, config, tmp_path):
    env = shared_env(services, config)
    ports = [free_port(), free_port()]
    procs = [start_server(["--port", str(p), "--shutdown-timeout", "5"], env,
                          tmp_path / f"n{i}.log") for i, p in enumerate(ports)]
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    try:
        for url, proc in zip(urls, procs, strict=False):
            await wait_ready(url, proc)
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
        # The drain announces the departure at once, not after the presence TTL (30 s).
        offline = await wws.expect("presence", timeout=3, status="offline")
        assert offline["user"] == reader.user
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
        assert seen == acked == list(range(1, 21))
        # The stopped process deregistered from /status at once.
        operator = Client(urls[1])
        operator.token = STATUS_TOKEN
        body = (await operator.request("GET", "/status"))[1]
        assert len(body["processes"]) == 1
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            proc.wait(20)


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
