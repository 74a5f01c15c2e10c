"""Faults injected for real: failing MongoDB commands, Redis killed and restarted,
both services restarted. Acked messages are never lost; unstored ones never published."""

from __future__ import annotations

import asyncio
import dataclasses
import signal
from collections.abc import Callable
from typing import Any

import pymongo
from redis.asyncio import Redis
from redis.asyncio.client import PubSub

from server.runtime import redis_client
from tests.client import Client, Socket, messages_of
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



async def until(done: Callable[[], bool], what: str, timeout: float = 10) -> None:
    """Poll in-process state that no event announces."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not done():
        assert loop.time() < deadline, f"not {what} within {timeout} s"
        await asyncio.sleep(0.02)


async def published(pubsub: PubSub, seq: int) -> None:
    """Wait until the spied channel carries the message `seq`."""
    while True:
        frame = await pubsub.get_message(timeout=5)
        assert frame is not None, f"seq {seq} never published"
        if frame["type"] == "message" and b'"seq":%d' % seq in frame["data"]:
            return


async def stream(ws: Socket, body: str) -> list[dict[str, Any]]:
    """The acks and messages a socket gets up to the message with `body`."""
    frames: list[dict[str, Any]] = []
    while not frames or frames[-1].get("body") != body:
        frame = await ws.recv()
        if frame["type"] in ("ack", "message"):
            frames.append(frame)
    return frames


async def test_a_recovery_during_a_resync_resyncs_again(config, services, private_redis):
    """node1's subscriber recovers and its resync passes the room; before that resync
    ends, the subscriber is lost again and node2 publishes a message node1 misses. The
    second recovery must catch it up although the first resync is still running."""
    proxy = TcpProxy(private_redis.socket_path)  # node1's only way to Redis
    node1 = await open_node(config, services, redis_url=f"redis://:{private_redis.password}"
                            f"@127.0.0.1:{proxy.port}/0")
    node2 = await open_node(dataclasses.replace(config, node_id=config.node_id + "-b"),
                            services, redis_url=redis_url_of(private_redis))
    spy = Redis.from_url(redis_url_of(private_redis))
    pubsub = spy.pubsub()
    try:
        _, a = await joined(node1.base_url)
        _, b = await joined(node2.base_url)
        await pubsub.subscribe(node2.runtime.bus.channel("general"))
        bus, delivery = node1.runtime.bus, node1.runtime.delivery
        walk, walked, release = delivery.resync, asyncio.Event(), asyncio.Event()

        async def long_resync() -> None:  # as if more rooms followed this one
            await walk()
            walked.set()
            await release.wait()

        delivery.resync = long_resync  # type: ignore[method-assign]
        proxy.cut()
        await until(lambda: not bus.connected, "lost")
        proxy.resume()
        await asyncio.wait_for(walked.wait(), 10)  # the first resync has passed the room
        proxy.cut()
        await until(lambda: not bus.connected, "lost again")
        missed = await b.call({"type": "send", "room": "general", "body": "missed"})
        assert missed["type"] == "ack", missed
        await published(pubsub, missed["seq"])  # gone by for node1: no Unpublished notice
        proxy.resume()
        await until(lambda: bus.resubscribes == 2, "recovered again")
        release.set()
        got = await a.expect("message", timeout=10)
        assert (got["seq"], got["body"]) == (missed["seq"], "missed")
    finally:
        await pubsub.aclose()
        await spy.aclose()
        await close_node(node1)
        await close_node(node2)
        proxy.close()


async def test_a_catch_up_during_a_held_fan_out_is_not_delivered_again_by_the_writer(
        config, private_mongo, private_redis):
    """A hung Redis holds tick T1's publish while T2 is stored; a catch-up (here a
    resync) meanwhile reads T2's message from MongoDB and delivers it. The writer's
    fan-out of T2 must then ack it and publish it, but not deliver it here again."""
    url = mongo_url_of(private_mongo)
    node = await open_node(config, mongo_url=url, redis_url=redis_url_of(private_redis))
    writer, delivery = node.runtime.writer, node.runtime.delivery
    try:
        _, a = await joined(node.base_url)
        _, b = await joined(node.base_url)
        with pymongo.MongoClient(url) as client:  # T1's insert waits, so T2 queues behind
            client.admin.command({"configureFailPoint": "failCommand", "mode": {"times": 1},
                                  "data": {"failCommands": ["insert"],
                                           "blockConnection": True, "blockTimeMS": 1000}})
        await a.send({"type": "send", "room": "general", "body": "one", "ref": "one"})
        await until(lambda: writer.awaiting == 1 and not writer.queued, "T1 being stored")
        private_redis.proc.send_signal(signal.SIGSTOP)
        try:
            await a.send({"type": "send", "room": "general", "body": "two", "ref": "two"})
            await until(lambda: writer.queued == 1, "T2 queued")
            one = (await a.expect("ack", ref="one"))["seq"]  # T1's publish now waits on Redis
            await until(lambda: delivery.seqs.top("general") == one + 1, "T2 stored")
            await delivery.resync()
            assert writer.awaiting == 1, "T2 acked already: no race to test"
        finally:
            private_redis.proc.send_signal(signal.SIGCONT)
        await a.send({"type": "send", "room": "general", "body": "three", "ref": "three"})
        frames = await stream(a, "three")
        assert [f["ref"] for f in frames if f["type"] == "ack"] == ["two", "three"]
        assert [f["seq"] for f in frames if f["type"] == "message"] == [one, one + 1, one + 2]
        assert [f["seq"] for f in await stream(b, "three")] == [one, one + 1, one + 2]
    finally:
        await close_node(node)
