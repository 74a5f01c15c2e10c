"""Two server processes on a real three-node Redis Cluster (Debian's redis-server 7).

REDIS_URL names one node of the cluster; the processes find out it is a cluster and use
sharded pub/sub, each room's channel on the node that owns its slot. These tests start
their own cluster whatever REDIS_URL the rest of the suite uses, and fail without
/usr/bin/redis-server.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from redis.crc import key_slot

from server.embedded import free_port
from tests.client import Client, Socket, messages_of
from tests.conftest import STATUS_TOKEN
from tests.processes import start_server
from tests.services import RedisClusterService, Services
from tests.test_metrics import scrape, value


@dataclass
class ClusterServers:
    """Two chat server processes sharing one Redis Cluster and one MongoDB."""

    cluster: RedisClusterService
    prefix: str
    urls: list[str]

    def node_of(self, room: str) -> int:
        """Index of the cluster node that owns the room channel's slot."""
        slot = key_slot(f"{self.prefix}room:{room}".encode())
        with self.cluster.nodes[0].client() as client:
            ranges = client.cluster("SLOTS")
        port = next(int(primary[1]) for start, end, primary, *_ in ranges
                    if start <= slot <= end)
        return next(i for i, node in enumerate(self.cluster.nodes) if node.port == port)

    def shard_subscribers(self, node: int, room: str) -> int:
        """How many connections SSUBSCRIBEd the room's channel on that node."""
        channel = f"{self.prefix}room:{room}"
        with self.cluster.nodes[node].client() as client:
            return int(dict(client.pubsub_shardnumsub(channel))[channel.encode()])


def _wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "server exited during start-up"
        try:
            with urllib.request.urlopen(url + "/readyz", timeout=2) as response:  # noqa: S310
                if response.status == 200:
                    return
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(0.1)  # polling a starting process: there is no event to await
    raise TimeoutError(url)


@pytest.fixture(scope="module")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterService]:
    cluster = RedisClusterService.start(tmp_path_factory.mktemp("redis-cluster"))
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module")
def servers(redis_cluster: RedisClusterService, services: Services,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterServers]:
    tag = uuid.uuid4().hex[:10]
    prefix = f"test:{tag}:"
    env = {**os.environ, "MONGO_URL": services.mongo_url, "REDIS_URL": redis_cluster.url,
           "COOKIE_SECRET": "cluster-test-secret-0123456789", "CHAT_DB": f"test_{tag}",
           "CHAT_REDIS_PREFIX": prefix, "STATUS_TOKEN": STATUS_TOKEN,
           "CHAT_MESSAGE_RATE": "1000", "CHAT_MESSAGE_BURST": "1000"}
    logs: Path = tmp_path_factory.mktemp("cluster-servers")
    ports = [free_port(), free_port()]
    procs = [start_server(["--port", str(p)], env, logs / f"node{i}.log")
             for i, p in enumerate(ports)]
    try:
        urls = [f"http://127.0.0.1:{p}" for p in ports]
        for url, proc in zip(urls, procs, strict=True):
            _wait_ready(url, proc)
        yield ClusterServers(redis_cluster, prefix, urls)
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            assert proc.wait(20) == 0, (logs / "node0.log").read_text()[-3000:]


def rooms_on_every_node(servers: ClusterServers) -> list[str]:
    """One room name per cluster node, each room's channel on a different node."""
    by_node: dict[int, str] = {}
    n = 0
    while len(by_node) < len(servers.cluster.nodes):
        room = f"shard{uuid.uuid4().hex[:6]}{n}"
        by_node.setdefault(servers.node_of(room), room)
        n += 1
    return [by_node[i] for i in sorted(by_node)]


async def member(url: str, rooms: list[str], client: Client | None = None
                 ) -> tuple[Client, Socket]:
    client = client or Client(url)
    if client.user is None:
        await client.register()
    ws = await client.ws()
    for room in rooms:
        await ws.join(room)
    return client, ws


async def create_rooms(url: str, rooms: list[str]) -> Client:
    owner = Client(url)
    await owner.register()
    for room in rooms:
        status, body, _ = await owner.request("POST", "/api/rooms", {"name": room})
        assert status == 201, body
    return owner


async def received(ws: Socket, count: int) -> list[dict[str, Any]]:
    """The next `count` message frames, then proof that no copy of them follows: the
    server answers a ping after everything it sent before it."""
    got = [await ws.expect("message", timeout=15) for _ in range(count)]
    ref = "after-messages"
    await ws.send({"type": "ping", "ref": ref})
    while (frame := await ws.recv()).get("ref") != ref:
        assert frame["type"] != "message", f"unexpected message after all: {frame}"
    return got


async def test_rooms_on_every_node_deliver_to_the_other_process_once_and_in_order(servers):
    rooms = rooms_on_every_node(servers)
    assert {servers.node_of(r) for r in rooms} == {0, 1, 2}
    await create_rooms(servers.urls[0], rooms)
    _, sender = await member(servers.urls[0], rooms)
    _, watcher = await member(servers.urls[1], rooms)
    for i, room in enumerate(rooms):
        # Sharded pub/sub: the channel is subscribed on its own node, by both processes.
        assert servers.shard_subscribers(i, room) == 2
        assert all(servers.shard_subscribers(j, room) == 0 for j in range(3) if j != i)
    before = [await scrape(url) for url in servers.urls]

    per_room = 20
    acks: dict[str, list[int]] = {room: [] for room in rooms}
    for n in range(per_room):
        for room in rooms:
            ack = await sender.call({"type": "send", "room": room, "body": f"{room} {n}"})
            assert ack["type"] == "ack", ack
            acks[room].append(ack["seq"])

    got = await received(watcher, per_room * len(rooms))
    for room in rooms:
        in_room = [m for m in got if m["room"] == room]
        assert [m["body"] for m in in_room] == [f"{room} {n}" for n in range(per_room)]
        assert [m["seq"] for m in in_room] == acks[room]
    after = [await scrape(url) for url in servers.urls]
    # They came over Redis, not read back from MongoDB, and nothing was lost meanwhile.
    delivered = (value(after[1], "chat_bus_latency_seconds_count")
                 - value(before[1], "chat_bus_latency_seconds_count"))
    assert delivered >= per_room * len(rooms)
    for b, a in zip(before, after, strict=True):
        assert value(a, "chat_catch_ups_total") == value(b, "chat_catch_ups_total")
        assert value(a, "chat_redis_resubscribes_total") == value(
            b, "chat_redis_resubscribes_total")
    sender.close()
    watcher.close()


async def test_logout_on_one_process_closes_the_sessions_sockets_on_the_other(servers):
    client = Client(servers.urls[0])
    me = await client.register()
    assert (await client.login(me["name"]))[0] == 200  # the login throttle's script, too
    elsewhere = Client(servers.urls[1])
    elsewhere.cookies = dict(client.cookies)
    sock = await elsewhere.ws()
    status, _, _ = await client.request("POST", "/api/logout")
    assert status == 204
    code, _ = await sock.closed()
    assert code == 1008


async def test_failed_logins_on_both_processes_count_against_one_limit(servers):
    """The throttle's script counts in several keys at once: on a cluster they share a
    slot, so the count is one across processes (10 failures per account and address)."""
    name = (await Client(servers.urls[0]).register())["name"]
    statuses = [(await Client(servers.urls[n % 2]).login(name, "wrong password"))[0]
                for n in range(10)]
    assert statuses == [401] * 10
    assert (await Client(servers.urls[1]).login(name, "wrong password"))[0] == 429
    assert (await Client(servers.urls[0]).login(name, "wrong password"))[0] == 429


async def test_presence_and_typing_cross_processes_on_a_cluster(servers):
    room = rooms_on_every_node(servers)[0]
    await create_rooms(servers.urls[0], [room])
    _, watcher = await member(servers.urls[0], [room])
    other, ws = await member(servers.urls[1], [room])
    online = await watcher.expect("presence")
    assert online["user"] == other.user and online["status"] == "online"
    await ws.send({"type": "typing", "room": room})
    assert (await watcher.expect("typing"))["user"] == other.user
    ws.close()
    offline = await watcher.expect("presence")
    assert offline["user"] == other.user and offline["status"] == "offline"
    watcher.close()


def move_slot(cluster: RedisClusterService, slot: int, to: int) -> None:
    """Give an empty slot to node `to` (what resharding does once its keys moved)."""
    clients = [n.client() for n in cluster.nodes]
    try:
        assert all(c.cluster("COUNTKEYSINSLOT", slot) == 0 for c in clients)
        target = clients[to].cluster("MYID")
        target = target.decode() if isinstance(target, bytes) else target
        for client in [clients[to], *(c for i, c in enumerate(clients) if i != to)]:
            client.execute_command("CLUSTER SETSLOT", slot, "NODE", target)
    finally:
        for c in clients:
            c.close()


async def test_a_room_whose_slot_moves_to_another_node_keeps_delivering(servers):
    room = rooms_on_every_node(servers)[0]
    owner = await create_rooms(servers.urls[0], [room])
    _, sender = await member(servers.urls[0], [room], owner)
    _, watcher = await member(servers.urls[1], [room])
    first = await sender.call({"type": "send", "room": room, "body": "before"})
    assert [m["body"] for m in await received(watcher, 1)] == ["before"]

    source = servers.node_of(room)
    target = (source + 1) % 3
    move_slot(servers.cluster, key_slot(f"{servers.prefix}room:{room}".encode()), target)
    assert servers.node_of(room) == target
    # The old node drops the channel's subscribers; both processes subscribe again on
    # the new owner by themselves (and read back from MongoDB what they may have missed).
    deadline = asyncio.get_running_loop().time() + 15
    while servers.shard_subscribers(target, room) < 2:
        assert asyncio.get_running_loop().time() < deadline, "not resubscribed"
        await asyncio.sleep(0.1)  # the resubscription is another process's: poll it
    bodies = [f"after {n}" for n in range(5)]
    acks = [await sender.call({"type": "send", "room": room, "body": b}) for b in bodies]
    got = await received(watcher, len(bodies))
    assert [m["body"] for m in got] == bodies
    assert [m["seq"] for m in got] == [a["seq"] for a in acks]
    assert acks[0]["seq"] > first["seq"]
    history = await watcher.call({"type": "history", "room": room})
    assert [m["body"] for m in messages_of(history["messages"])] == ["before", *bodies]
    # Each process counts the loss once its probes prove the new subscription hears.
    for url in servers.urls:
        while value(await scrape(url), "chat_redis_resubscribes_total") < 1:
            assert asyncio.get_running_loop().time() < deadline + 15, "no resync"
            await asyncio.sleep(0.1)  # polled: the count is in another process
    sender.close()
    watcher.close()


async def test_messages_sent_while_a_node_is_down_arrive_once_after_it_returns(servers):
    room = rooms_on_every_node(servers)[0]
    owner = await create_rooms(servers.urls[0], [room])
    _, sender = await member(servers.urls[0], [room], owner)
    _, watcher = await member(servers.urls[1], [room])
    node = servers.cluster.nodes[servers.node_of(room)]
    resyncs = [value(await scrape(url), "chat_redis_resubscribes_total")
               for url in servers.urls]
    node.stop()
    try:
        # Stored and acknowledged although the room's channel has no node to go to.
        bodies = [f"while down {n}" for n in range(3)]
        acks = [await sender.call({"type": "send", "room": room, "body": b}, timeout=15)
                for b in bodies]
        assert [a["type"] for a in acks] == ["ack"] * 3, acks
    finally:
        node.start()  # the same port and node id: it takes its slots back
    servers.cluster.wait_ok()  # for the tests after this one
    # Each once. Not necessarily in seq order (protocol §7): a publish still retrying
    # when the node returns can arrive live before the resync reads the others back.
    got = sorted(await received(watcher, len(bodies)), key=lambda m: m["seq"])
    assert [m["body"] for m in got] == bodies
    assert [m["seq"] for m in got] == [a["seq"] for a in acks]
    live = await sender.call({"type": "send", "room": room, "body": "back"}, timeout=15)
    (back,) = await received(watcher, 1)
    assert back["body"] == "back" and back["seq"] == live["seq"]
    # Both processes lost their connection to the node, and resynced once it answered.
    deadline = asyncio.get_running_loop().time() + 15
    for url, before in zip(servers.urls, resyncs, strict=True):
        while value(await scrape(url), "chat_redis_resubscribes_total") <= before:
            assert asyncio.get_running_loop().time() < deadline, "no resync"
            await asyncio.sleep(0.1)  # polled: the count is in another process
    sender.close()
    watcher.close()
