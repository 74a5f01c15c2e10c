"""Faults injected for real: failing MongoDB commands, Redis killed and restarted,
both services restarted. Acked messages are never lost; unstored ones never published."""

from __future__ import annotations

import asyncio
import dataclasses
import signal

import pymongo
from redis.asyncio import Redis

from server.runtime import redis_client
from tests.client import Client, messages_of
from tests.conftest import close_node, mongo_url_of, open_node, redis_url_of
from tests.proxy import TcpProxy


def fail_point(mongo_url: str, commands: list[str], times: int, code: int = 2) -> None:
    """Arm MongoDB's failCommand: the next `times` matching commands fail with `code`."""
    with pymongo.MongoClient(mongo_url) as client:
        client.admin.command({"configureFailPoint": "failCommand", "mode": {"times": times},
                              "data": {"failCommands": commands, "errorCode": code}})


def clear_fail_point(mongo_url: str) -> None:
    with pymongo.MongoClient(mongo_url) as client:
        client.admin.command({"configureFailPoint": "failCommand", "mode": "off"})


async def joined(url: str) -> tuple[Client, object]:
    client = Client(url)
    await client.register()
    ws = await client.ws()
    await ws.join("general")
    return client, ws


async def test_store_failure_answers_unavailable_and_publishes_nothing(config, services,
                                                                       private_mongo):
    url = mongo_url_of(private_mongo)
    node = await open_node(config, services, mongo_url=url)
    try:
        _, a = await joined(node.base_url)
        _, b = await joined(node.base_url)
        fail_point(url, ["insert", "update"], times=3)
        try:
            reply = await a.call({"type": "send", "room": "general", "body": "lost?",
                                  "client_id": "f1"})
        finally:
            clear_fail_point(url)
        assert reply["type"] == "error" and reply["code"] == "unavailable"
        assert reply["client_id"] == "f1"
        # The retry with the same client_id is stored once and is the first thing b sees.
        ack = await a.call({"type": "send", "room": "general", "body": "lost?",
                            "client_id": "f1"})
        assert ack["type"] == "ack"
        first = await b.expect("message")
        assert first["client_id"] == "f1" and first["seq"] == ack["seq"]
        history = await b.call({"type": "history", "room": "general"})
        assert [m["client_id"] for m in messages_of(history["messages"])] == ["f1"]
    finally:
        await close_node(node)


async def test_history_answers_unavailable_while_mongodb_fails(config, services, private_mongo):
    url = mongo_url_of(private_mongo)
    node = await open_node(config, services, mongo_url=url)
    try:
        _, a = await joined(node.base_url)
        fail_point(url, ["find"], times=2)
        try:
            reply = await a.call({"type": "history", "room": "general"})
        finally:
            clear_fail_point(url)
        assert reply["type"] == "error" and reply["code"] == "unavailable"
        assert (await a.call({"type": "history", "room": "general"}))["type"] == "history"
    finally:
        await close_node(node)


async def test_messages_and_accounts_survive_restart_of_both_services(
        config, private_mongo, private_redis):
    mongo, redis = mongo_url_of(private_mongo), redis_url_of(private_redis)
    node = await open_node(config, mongo_url=mongo, redis_url=redis)
    try:
        client, ws = await joined(node.base_url)
        for i in range(3):
            assert (await ws.call({"type": "send", "room": "general",
                                   "body": f"keep {i}"}))["type"] == "ack"
    finally:
        await close_node(node)
    for svc in (private_mongo, private_redis):
        await asyncio.to_thread(svc.stop)
        await asyncio.to_thread(svc.start)
    node = await open_node(config, mongo_url=mongo, redis_url=redis)
    try:
        again = Client(node.base_url)
        status, _ = await again.login(client.user["name"])
        assert status == 200
        ws = await again.ws()
        joined_frame = await ws.join("general", since=0)
        assert [m["body"] for m in messages_of(joined_frame["messages"])] == [
            f"keep {i}" for i in range(3)]
    finally:
        await close_node(node)


async def test_redis_restart_resubscribes_and_resyncs_missed_messages(config, services,
                                                                       private_redis):
    redis = redis_url_of(private_redis)
    node1 = await open_node(config, services, redis_url=redis)
    node2 = await open_node(dataclasses.replace(config, node_id=config.node_id + "-b"),
                            services, redis_url=redis)
    try:
        _, a = await joined(node1.base_url)
        _, b = await joined(node2.base_url)
        await a.call({"type": "send", "room": "general", "body": "before"})
        assert (await b.expect("message"))["body"] == "before"
        private_redis.proc.send_signal(signal.SIGKILL)
        await asyncio.to_thread(private_redis.proc.wait)
        during = []
        for i in range(3):
            reply = await a.call({"type": "send", "room": "general", "body": f"during {i}"})
            assert reply["type"] == "ack", reply  # stored in MongoDB, so acked
            during.append(reply["seq"])
        await asyncio.to_thread(private_redis.start)
        got = [(await b.expect("message", timeout=15))["seq"] for _ in during]
        # A publish retried into the restarted Redis can overtake the resync of the
        # earlier ones: the protocol orders by seq, live order may differ.
        assert sorted(got) == during
        after = await a.call({"type": "send", "room": "general", "body": "after"})
        live = await b.expect("message", timeout=10)
        assert live["seq"] == after["seq"]
    finally:
        await close_node(node1)
        await close_node(node2)


async def test_readyz_follows_redis_down_and_back(config, services, private_redis):
    node = await open_node(config, services, redis_url=redis_url_of(private_redis))
    try:
        client = Client(node.base_url)
        assert (await client.request("GET", "/readyz"))[0] == 200
        private_redis.proc.send_signal(signal.SIGKILL)
        await asyncio.to_thread(private_redis.proc.wait)
        status, body, _ = await client.request("GET", "/readyz")
        assert status == 503 and body["checks"]["redis"] != "ok"
        await asyncio.to_thread(private_redis.start)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while (await client.request("GET", "/readyz"))[0] != 200:
            assert loop.time() < deadline, "not ready 10 s after Redis came back"
            await asyncio.sleep(0.2)  # polling a probe endpoint, as a load balancer does
    finally:
        await close_node(node)


async def test_pooled_redis_connections_outlive_a_redis_restart(private_redis):
    """The pool still holds connections to the Redis that died; using one after the
    restart must not fail the command (redis-py 8 does not notice them in time)."""
    redis = redis_client(redis_url_of(private_redis), pool_size=8)
    try:
        await asyncio.gather(*(redis.publish("warm-up", b"x") for _ in range(8)))
        # Counted by the server: eight pooled connections besides the counting one.
        counter = redis_client(redis_url_of(private_redis), pool_size=1)
        assert len(await counter.client_list()) == 8 + 1
        await counter.aclose()
        private_redis.proc.send_signal(signal.SIGKILL)
        await asyncio.to_thread(private_redis.proc.wait)
        await asyncio.to_thread(private_redis.start)
        results = await asyncio.gather(*(redis.publish("after", b"x") for _ in range(8)),
                                       return_exceptions=True)
        assert results == [0] * 8
    finally:
        await redis.aclose()


async def test_a_publish_that_only_one_process_lost_still_reaches_the_others(
        config, services, private_redis):
    """Redis stays up for node1, so its subscriber never resyncs; node2 alone loses Redis
    while storing a message. node1's members still get it, once, when node2 is back."""
    proxy = TcpProxy(private_redis.socket_path)  # node2's only way to Redis
    node1 = await open_node(config, services, redis_url=redis_url_of(private_redis))
    node2 = await open_node(dataclasses.replace(config, node_id=config.node_id + "-b"),
                            services, redis_url=f"redis://:{private_redis.password}"
                            f"@127.0.0.1:{proxy.port}/0")
    try:
        _, a = await joined(node1.base_url)
        _, b = await joined(node2.base_url)
        await b.call({"type": "send", "room": "general", "body": "before"})
        assert (await a.expect("message"))["body"] == "before"
        proxy.cut()
        lost = await b.call({"type": "send", "room": "general", "body": "stored, unpublished"})
        assert lost["type"] == "ack", lost
        # The ack goes out before the publish; resume only once that has failed.
        registry = node2.runtime.metrics.registry
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5
        while not registry.get_sample_value("chat_publish_failures_total"):
            assert loop.time() < deadline, "the publish through the cut proxy never failed"
            await asyncio.sleep(0.05)
        proxy.resume()
        got = await a.expect("message", timeout=10)
        assert (got["seq"], got["body"]) == (lost["seq"], "stored, unpublished")
        assert node1.runtime.bus.resubscribes == 0  # not a resync: the notice did it
        after = await b.call({"type": "send", "room": "general", "body": "after"})
        got = await a.expect("message", timeout=10)
        assert got["seq"] == after["seq"], "delivered twice or out of order"
    finally:
        await close_node(node1)
        await close_node(node2)
        proxy.close()


async def test_a_message_published_twice_is_delivered_once(config, services):
    node1 = await open_node(config, services)
    node2 = await open_node(dataclasses.replace(config, node_id=config.node_id + "-b"),
                            services)
    spy = Redis.from_url(services.redis_url)
    pubsub = spy.pubsub()
    try:
        _, a = await joined(node1.base_url)
        _, b = await joined(node2.base_url)
        channel = node2.runtime.bus.channel("general")
        await pubsub.subscribe(channel)
        first = await b.call({"type": "send", "room": "general", "body": "once"})
        assert (await a.expect("message"))["seq"] == first["seq"]
        published = None
        while published is None or b'"seq":%d' % first["seq"] not in published["data"]:
            published = await pubsub.get_message(timeout=5)
            assert published is not None, "node2's publish never seen on Redis"
            if published["type"] != "message":
                published = None
        # What a retried PUBLISH does: the same payload a second time.
        await spy.publish(channel, published["data"])
        second = await b.call({"type": "send", "room": "general", "body": "next"})
        got = await a.expect("message")
        assert got["seq"] == second["seq"], f"{got['body']!r} arrived twice"
        assert node1.runtime.metrics.registry.get_sample_value("chat_bus_duplicates_total") == 1
    finally:
        await pubsub.aclose()
        await spy.aclose()
        await close_node(node1)
        await close_node(node2)

