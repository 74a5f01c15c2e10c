"""Several server nodes sharing one Redis and one MongoDB deliver to each other's clients."""

from __future__ import annotations

import asyncio
import signal

from server.embedded import free_port
from tests.client import Client
from tests.processes import shared_env, start_server, wait_ready


async def joined_user(url: str, room: str = "general") -> tuple[Client, object]:
    client = Client(url)
    await client.register()
    ws = await client.ws()
    await ws.join(room)
    return client, ws


async def test_messages_cross_nodes_both_ways(base_url, second_node):
    _, a = await joined_user(base_url)
    _, b = await joined_user(second_node.base_url)
    assert a.hello["node"] != b.hello["node"]
    ack = await a.call({"type": "send", "room": "general", "body": "from 1", "client_id": "x1"})
    got = await b.expect("message")
    assert got["body"] == "from 1" and got["seq"] == ack["seq"]
    ack2 = await b.call({"type": "send", "room": "general", "body": "from 2"})
    got2 = await a.expect("message", body="from 2")
    assert got2["seq"] == ack2["seq"] == ack["seq"] + 1


async def test_two_nodes_sending_to_one_room_at_once_share_one_gapless_sequence(
        base_url, second_node):
    per_sender, senders_per_node = 25, 3
    _, watch_a = await joined_user(base_url)
    _, watch_b = await joined_user(second_node.base_url)
    sockets = [(await joined_user(url))[1]
               for url in (base_url, second_node.base_url) for _ in range(senders_per_node)]
    # Each first join was an event: the messages are numbered after them.
    base = (await watch_a.call({"type": "history", "room": "general"}))["messages"][-1]["seq"]
    assert base == 2 + len(sockets)

    async def burst(ws, name: str) -> list[dict]:
        for i in range(per_sender):
            await ws.send({"type": "send", "room": "general", "body": f"{name}-{i}",
                           "client_id": f"{name}-{i}"})
        return [await ws.expect("ack", timeout=15) for _ in range(per_sender)]

    acks = [a for batch in await asyncio.gather(
        *(burst(ws, f"s{n}") for n, ws in enumerate(sockets))) for a in batch]
    total = per_sender * len(sockets)
    assert sorted(a["seq"] for a in acks) == list(range(base + 1, base + total + 1))
    for watcher in (watch_a, watch_b):
        got = [await watcher.expect("message", timeout=15) for _ in range(total)]
        assert sorted(m["seq"] for m in got) == list(range(base + 1, base + total + 1))
        assert {m["seq"]: m["id"] for m in got} == {a["seq"]: a["id"] for a in acks}
    stored: list[int] = []
    while len(stored) < base + total:
        page = await watch_a.call({"type": "history", "room": "general",
                                   "after": stored[-1] if stored else 0, "limit": 100})
        assert page["messages"], stored
        stored += [m["seq"] for m in page["messages"]]
    assert stored == list(range(1, base + total + 1))
    late = (await joined_user(second_node.base_url))[1]
    assert (await late.join("general"))["last_seq"] == base + total + 1  # + its join


async def test_presence_and_typing_cross_nodes(base_url, second_node):
    _, watcher = await joined_user(base_url)
    client_b, b = await joined_user(second_node.base_url)
    online = await watcher.expect("presence")
    assert online["user"] == client_b.user and online["status"] == "online"
    await b.send({"type": "typing", "room": "general"})
    typing = await watcher.expect("typing")
    assert typing["user"] == client_b.user
    b.close()
    offline = await watcher.expect("presence")
    assert offline["user"] == client_b.user and offline["status"] == "offline"


async def test_user_online_on_two_nodes_goes_offline_only_when_both_close(base_url, second_node):
    _, watcher = await joined_user(base_url)
    client_b, b1 = await joined_user(second_node.base_url)
    await watcher.expect("presence", status="online")
    other = Client(base_url)
    other.cookies = dict(client_b.cookies)
    b2 = await other.ws()
    joined = await b2.join("general")
    assert sum(m["id"] == client_b.user["id"] for m in joined["members"]) == 1
    b1.close()
    # Still online through node 1: the next presence frame watcher sees is the final one.
    assert (await watcher.call({"type": "ping"}))["type"] == "pong"
    b2.close()
    offline = await watcher.expect("presence")
    assert offline["status"] == "offline" and offline["user"] == client_b.user


async def test_session_from_one_node_opens_the_other(base_url, second_node):
    client = Client(base_url)
    me = await client.register()
    other = Client(second_node.base_url)
    other.cookies = dict(client.cookies)
    status, body, _ = await other.request("GET", "/api/me")
    assert status == 200 and body == {**me, "admin": False}


async def test_two_server_processes_deliver_to_each_others_clients(services, config, tmp_path):
    env = shared_env(services, config)
    ports = [free_port(), free_port()]
    procs = [start_server(["--port", str(p)], env, tmp_path / f"node{i}.log")
             for i, p in enumerate(ports)]
    try:
        urls = [f"http://127.0.0.1:{p}" for p in ports]
        for url, proc in zip(urls, procs, strict=False):
            await wait_ready(url, proc)
        _client_a, a = await joined_user(urls[0])
        client_b, b = await joined_user(urls[1])
        online = await a.expect("presence")
        assert online["user"] == client_b.user
        ack = await a.call({"type": "send", "room": "general", "body": "across processes"})
        got = await b.expect("message")
        assert got["body"] == "across processes" and got["seq"] == ack["seq"]
        b.close()
        offline = await a.expect("presence")
        assert offline["status"] == "offline"
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            assert proc.wait(20) == 0
