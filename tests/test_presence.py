"""Presence beyond online/offline (away, status text) and what it costs: entries valid
while their process lives, dead processes buried, departures batched per room.
Real sockets, two real server processes' runtimes, real Redis and MongoDB-wire."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from redis.asyncio import Redis

from server.children import free_port
from server.config import Config
from server.model import User
from server.presence import Presence, PresenceError
from server.presence_frames import RoomBatches
from server.presence_keys import now_ms
from server.redisconn import redis_client
from tests.client import Client, Socket
from tests.conftest import close_node, open_node


@pytest.fixture
def config(config: Config) -> Config:
    # Every change goes out at once: the tests count frames per change.
    return dataclasses.replace(config, presence_hold=0.0)


async def joined(url: str, room: str = "general", client: Client | None = None
                 ) -> tuple[Client, Socket]:
    if client is None:
        client = Client(url)
        await client.register()
    ws = await client.ws()
    await ws.join(room)
    return client, ws


def tab_of(client: Client, url: str) -> Client:
    """The same signed-in user in another tab (or on another process)."""
    other = Client(url)
    other.cookies = dict(client.cookies)
    other.user = client.user
    return other


async def quiet(ws: Socket, kind: str, **match: Any) -> None:
    """No frame of `kind` arrived before the reply to a ping: frames of one room come
    in order, so one sent before the ping would be here."""
    ref = "quiet"
    await ws.send({"type": "ping", "ref": ref})
    while True:
        frame = await ws.recv()
        if frame.get("ref") == ref:
            return
        assert not (frame["type"] == kind and all(frame.get(k) == v for k, v in match.items())
                    ), frame


async def watched_room(base_url: str, second_node: Any, name: str) -> tuple[Socket, Socket]:
    """A new public room, and a watcher in it on each process (the second's first)."""
    owner = Client(base_url)
    await owner.register()
    assert (await owner.request("POST", "/api/rooms", {"name": name}))[0] == 201
    _, remote = await joined(second_node.base_url, name)
    _, local = await joined(base_url, name)
    return remote, local


@contextlib.asynccontextmanager
async def presence_publishes(redis_url: str, channel: bytes
                             ) -> AsyncIterator[Callable[[], Awaitable[list[bytes]]]]:
    """Listens to a room's channel; yields a function that returns the presence
    envelopes published on it so far."""
    listener = Redis.from_url(redis_url)
    pubsub = listener.pubsub()
    await pubsub.subscribe(channel)
    await pubsub.get_message(timeout=1)  # the subscribe confirmation

    async def published() -> list[bytes]:
        found = []
        while (msg := await pubsub.get_message(timeout=0.2)) is not None:
            if msg["type"] == "message" and b'"presence"' in msg["data"]:
                found.append(msg["data"])
        return found
    try:
        yield published
    finally:
        await pubsub.aclose()
        await listener.aclose()


async def test_a_user_idle_in_every_tab_on_every_process_is_away_until_one_returns(
        base_url, second_node):
    _, watcher = await joined(base_url)
    alice, tab1 = await joined(base_url)
    uid = alice.user["id"]
    await watcher.expect("presence", user=alice.user, status="online")
    _, tab2 = await joined(second_node.base_url, client=tab_of(alice, second_node.base_url))
    await tab1.send({"type": "activity", "state": "idle"})
    # Her tab on the other process is still active: not away.
    assert (await tab1.call({"type": "ping"}))["type"] == "pong"
    await quiet(watcher, "presence", away=True)
    await tab2.send({"type": "activity", "state": "idle"})
    away = await watcher.expect("presence", user=alice.user)
    assert away["status"] == "online" and away["away"] is True
    # A newcomer sees her away in the member list.
    _, late = await joined(second_node.base_url, "general")
    entry = next(m for m in (await late.join("general"))["members"] if m["id"] == uid)
    assert entry["away"] is True and entry["status_text"] is None
    await tab1.send({"type": "activity", "state": "active"})
    back = await watcher.expect("presence", user=alice.user)
    assert back["status"] == "online" and back["away"] is False


async def test_activity_repeated_or_invalid_changes_nothing(make_client, base_url):
    _, watcher = await joined(base_url)
    alice, tab = await joined(base_url)
    await watcher.expect("presence", user=alice.user, status="online")
    await tab.send({"type": "activity", "state": "active"})  # active already
    error = await tab.call({"type": "activity", "state": "asleep"})
    assert error["type"] == "error" and error["code"] == "bad_request"
    await quiet(watcher, "presence", user=alice.user)
    await tab.send({"type": "activity", "state": "idle"})
    assert (await watcher.expect("presence", user=alice.user))["away"] is True
    await tab.send({"type": "activity", "state": "idle"})
    await quiet(watcher, "presence", user=alice.user)


async def test_closing_the_only_active_tab_leaves_the_user_away(base_url):
    _, watcher = await joined(base_url)
    alice, idle_tab = await joined(base_url)
    await watcher.expect("presence", user=alice.user, status="online")
    _, active_tab = await joined(base_url, client=tab_of(alice, base_url))
    await idle_tab.send({"type": "activity", "state": "idle"})
    await quiet(watcher, "presence", user=alice.user)
    active_tab.close()
    away = await watcher.expect("presence", user=alice.user)
    assert away["away"] is True and away["status"] == "online"


async def test_status_text_reaches_every_room_on_every_process_and_joiners_until_cleared(
        base_url, second_node):
    alice, _tab = await joined(second_node.base_url)
    _, watcher = await joined(base_url)
    until = int(time.time() * 1000) + 3_600_000
    await watcher.call({"type": "ping"})
    # Set through the other process than the one her socket is on.
    here = tab_of(alice, base_url)
    status, body, _ = await here.request("PUT", "/api/me/status",
                                         {"text": "  In a meeting ", "until": until})
    assert status == 200 and body == {"text": "In a meeting", "until": until}
    seen = await watcher.expect("presence", user=alice.user)
    assert seen["status"] == "online" and seen["status_text"] == "In a meeting"
    assert seen["status_until"] == until and seen["away"] is False
    # Persisted and listed on join, on both processes.
    for url in (base_url, second_node.base_url):
        _, late = await joined(url)
        entry = next(m for m in (await late.join("general"))["members"]
                     if m["id"] == alice.user["id"])
        assert entry["status_text"] == "In a meeting" and entry["status_until"] == until
    assert (await alice.request("GET", "/api/me/status"))[1] == {"text": "In a meeting",
                                                                 "until": until}
    status, _, _ = await alice.request("DELETE", "/api/me/status")
    assert status == 204
    cleared = await watcher.expect("presence", user=alice.user)
    assert cleared["status_text"] is None and cleared["status_until"] is None
    assert (await here.request("GET", "/api/me/status"))[1] == {"text": None, "until": None}


async def test_status_text_expires_by_itself_and_rooms_learn_it(base_url, config):
    _, watcher = await joined(base_url)
    alice, _tab = await joined(base_url)
    await watcher.expect("presence", user=alice.user, status="online")
    until = int(time.time() * 1000) + 1500
    status, _, _ = await alice.request("PUT", "/api/me/status", {"text": "brb", "until": until})
    assert status == 200
    assert (await watcher.expect("presence", user=alice.user))["status_text"] == "brb"
    # Cleared within a heartbeat (ttl / 3) of its expiry.
    gone = await watcher.expect("presence", 1.5 + config.presence_ttl, user=alice.user)
    assert gone["status_text"] is None and int(time.time() * 1000) >= until
    assert (await alice.request("GET", "/api/me/status"))[1] == {"text": None, "until": None}


@pytest.mark.parametrize(("body", "status", "code"), [
    ({"text": ""}, 400, "bad_request"),
    ({"text": "   "}, 400, "bad_request"),
    ({"text": 5}, 400, "bad_request"),
    ({}, 400, "bad_request"),
    ({"text": "x" * 101}, 413, "too_large"),
    ({"text": "a\u0007b"}, 400, "bad_request"),
    ({"text": "ok", "until": 1000}, 400, "bad_request"),
    ({"text": "ok", "until": "15:00"}, 400, "bad_request"),
    ({"text": "ok", "until": True}, 400, "bad_request"),
    ({"text": "ok", "until": 10**15}, 400, "bad_request"),
    ([1, 2], 400, "bad_request"),
])
async def test_a_refused_status_says_why_and_keeps_the_old_one(make_client, body, status, code):
    alice = make_client()
    await alice.register()
    assert (await alice.request("PUT", "/api/me/status", {"text": "Lunch"}))[0] == 200
    got, reply, _ = await alice.request("PUT", "/api/me/status", body)
    assert (got, reply["error"]["code"]) == (status, code), reply
    assert (await alice.request("GET", "/api/me/status"))[1] == {"text": "Lunch", "until": None}


async def test_a_browser_status_change_needs_the_xsrf_token(make_client):
    alice = make_client()
    await alice.register()
    status, _, _ = await alice.request("PUT", "/api/me/status", {"text": "x"}, xsrf=False)
    assert status == 403
    status, _, _ = await alice.request("DELETE", "/api/me/status", xsrf=False)
    assert status == 403


async def test_a_dead_process_is_buried_once_and_its_users_announced_offline_once(
        base_url, second_node, runtime, config):
    """A process killed mid-flight leaves its entries behind: the live processes race
    for its ZREM, and the winner cleans up and announces."""
    _, watcher1 = await joined(base_url)
    _, watcher2 = await joined(second_node.base_url)
    redis: Redis = runtime.redis
    p = f"{config.redis_prefix}presence:"
    ghost, uid = "ghost-node", "0123456789abcdef01234567"
    await redis.zadd(p + "nodes", {ghost: int(time.time() * 1000) - 1})
    await redis.hset(p + "{general}", f"{ghost}|{uid}", "0|ghostly")
    await redis.sadd(p + "node:{" + ghost + "}", "general")
    await redis.hset(p + "user:{" + uid + "}", mapping={f"n|{ghost}": "0",
                                                        f"r|{ghost}|general": ""})
    ghostly = {"id": uid, "name": "ghostly", "bot": False}
    for watcher in (watcher1, watcher2):
        offline = await watcher.expect("presence", 2 * config.presence_ttl, user=ghostly)
        assert offline["status"] == "offline"
    assert await redis.zscore(p + "nodes", ghost) is None
    assert not await redis.exists(p + "node:{" + ghost + "}")
    assert not await redis.hexists(p + "{general}", f"{ghost}|{uid}")
    assert not await redis.exists(p + "user:{" + uid + "}")
    # Both processes have had another heartbeat since: nobody announced it again.
    nodes = [config.node_id, second_node.runtime.config.node_id]
    marks = [await redis.zscore(p + "nodes", n) for n in nodes]
    deadline = asyncio.get_running_loop().time() + 2 * config.presence_ttl
    while True:
        now_marks = [await redis.zscore(p + "nodes", n) for n in nodes]
        if all(a != b for a, b in zip(now_marks, marks, strict=True)):
            break
        assert asyncio.get_running_loop().time() < deadline, "no heartbeat"
        await asyncio.sleep(0.1)  # polling Redis: the heartbeat has no event to await
    for watcher in (watcher1, watcher2):
        await quiet(watcher, "presence", user=ghostly)


async def test_many_clients_leaving_at_once_reach_the_room_once_each_in_few_publishes(
        base_url, second_node, runtime, config, services):
    """Departures of one moment share one pipeline per room and one publish per room."""
    count = 40
    remote, local = await watched_room(base_url, second_node, "storm")
    leavers = [await joined(base_url, "storm") for _ in range(count)]
    ids = {c.user["id"] for c, _ in leavers}
    for watcher in (remote, local):
        online: set[str] = set()
        while not ids <= online:
            online.add((await watcher.expect("presence", status="online"))["user"]["id"])

    def sample(name: str) -> float:
        return runtime.metrics.registry.get_sample_value(name) or 0.0

    batches, batched = sample("chat_presence_batches_total"), sample("chat_presence_batched_total")
    async with presence_publishes(services.redis_url, runtime.bus.channel("storm")) as published:
        for _, ws in leavers:
            ws.close()
        for watcher in (remote, local):
            offline: list[str] = []
            while set(offline) != ids:
                frame = await watcher.expect("presence", 10, status="offline")
                offline.append(frame["user"]["id"])
            assert len(offline) == count  # each exactly once
            await quiet(watcher, "presence", status="offline")
        publishes = await published()
        carried = sum(p.count(b'"status":"offline"') for p in publishes)
        assert carried == count
        assert len(publishes) <= count // 4, len(publishes)
        # The leaves shared a handful of Redis pipelines, not one round trip each.
        assert sample("chat_presence_batched_total") - batched == count
        assert sample("chat_presence_batches_total") - batches <= count // 4


async def test_a_crowd_joining_at_once_is_announced_once_each_in_few_publishes(
        base_url, second_node, runtime, services):
    """Each joiner's `online` is kept from that joiner alone: the frames of a crowd
    joining one room share a publish and a write to each member."""
    count = 24
    remote, local = await watched_room(base_url, second_node, "crowd")
    clients = [Client(base_url) for _ in range(count)]
    await asyncio.gather(*(c.register() for c in clients))
    sockets = await asyncio.gather(*(c.ws() for c in clients))
    async with presence_publishes(services.redis_url, runtime.bus.channel("crowd")) as published:
        replies = await asyncio.gather(*(ws.join("crowd") for ws in sockets))
        ids = {c.user["id"] for c in clients}
        for watcher in (remote, local):
            online: list[str] = []
            while not ids <= set(online):
                online.append((await watcher.expect("presence", status="online"))["user"]["id"])
            assert len([i for i in online if i in ids]) == count  # each exactly once
            await quiet(watcher, "presence", status="online")
        for client, ws, reply in zip(clients, sockets, replies, strict=True):
            # In `members` of its own `joined`, and never told it came online itself.
            assert client.user["id"] in {m["id"] for m in reply["members"]}
            await quiet(ws, "presence", user=client.user)
        publishes = await published()
        assert sum(p.count(b'"status":"online"') for p in publishes) == count
        assert len(publishes) <= count // 3, len(publishes)


async def test_a_rooms_presence_frames_leave_at_once_after_a_quiet_spell_then_a_gap_apart():
    loop = asyncio.get_running_loop()
    flushed: asyncio.Queue[tuple[str, float, list[tuple[bytes, bytes]]]] = asyncio.Queue()

    async def flush(room: str, frames: list[tuple[bytes, bytes]]) -> None:
        flushed.put_nowait((room, loop.time(), frames))

    batches = RoomBatches(flush, gap=1.0)
    start = loop.time()
    batches.add("a", b"a1", b"n.1")
    batches.add("b", b"b1", b"")
    first = {room: (when, frames) for room, when, frames in
             [await flushed.get(), await flushed.get()]}
    assert first["a"][1] == [(b"a1", b"n.1")] and first["b"][1] == [(b"b1", b"")]
    assert max(when for when, _ in first.values()) - start < 0.5  # no wait for a gap
    # The room keeps busy: what follows waits for the gap and goes out together.
    batches.add("a", b"a2", b"n.2")
    batches.add("a", b"a3", b"")
    room, when, frames = await flushed.get()
    assert (room, frames) == ("a", [(b"a2", b"n.2"), (b"a3", b"")])
    assert when - first["a"][0] >= 0.99
    # Closing sends what waits at once.
    batches.add("a", b"a4", b"")
    closing = loop.time()
    await batches.close()
    room, when, frames = flushed.get_nowait()
    assert (room, frames) == ("a", [(b"a4", b"")]) and when - closing < 0.5


async def test_closed_sockets_departures_are_answered_from_their_batch(services):
    # A closed socket's departure waits on nothing: its answer (online elsewhere, or
    # the error) is handed to a callback when the batch's replies arrive, and one
    # callback that fails keeps no other from its answer.
    redis = redis_client(services.redis_url, pool_size=2)
    prefix = f"test:{uuid.uuid4().hex[:8]}:"
    here, there = Presence(redis, prefix, "node-a"), Presence(redis, prefix, "node-b")
    ann, bob = User("u-ann", "ann"), User("u-bob", "bob")
    try:
        await here.start()
        await there.start()
        await asyncio.gather(here.enter("r", ann), here.enter("r", bob), there.enter("r", bob))
        answers: dict[str, bool | PresenceError] = {}

        def crash(_: object) -> None:
            raise RuntimeError("a broken answer handler")

        here.depart("r", ann, crash, gone_from_node=True)
        here.depart("r", ann, lambda a: answers.__setitem__("ann", a), gone_from_node=True)
        here.depart("r", bob, lambda a: answers.__setitem__("bob", a), gone_from_node=True)
        await here.settle(5.0)
        # Bob is still in the room through the other process; Ann is gone from it.
        assert answers == {"ann": False, "bob": True}
        members = await there.members("r")
        assert [m.id for m in members] == ["u-bob"]
    finally:
        await here.close()
        await there.close()
        await redis.aclose()
    # Redis unreachable: the departure gets the error, not silence.
    down = redis_client(f"redis://127.0.0.1:{free_port()}/0", pool_size=1)
    lost = Presence(down, prefix, "node-c")
    got: list[bool | PresenceError] = []
    lost.depart("r", ann, got.append)
    await lost.settle(30.0)
    assert len(got) == 1 and isinstance(got[0], PresenceError)
    await lost.close()
    await down.aclose()


async def test_a_departure_counts_only_processes_live_now_as_elsewhere(services):
    # Leaves that no join shares a batch with ask Redis which processes are live when
    # they run, not what this one learnt at its last heartbeat: one started since
    # counts, one whose liveness ran out since does not. Two rooms, one answer each.
    redis = redis_client(services.redis_url, pool_size=2)
    prefix = f"test:{uuid.uuid4().hex[:8]}:"
    here = Presence(redis, prefix, "node-a")
    fresh, stale = Presence(redis, prefix, "node-b"), Presence(redis, prefix, "node-c")
    ann, bob = User("u-ann", "ann"), User("u-bob", "bob")
    try:
        await here.start()
        assert await here.heartbeat(list) == []  # it knows of itself alone
        await fresh.start()
        await stale.start()
        await asyncio.gather(*(here.enter(room, user) for room in "rs" for user in (ann, bob)),
                             fresh.enter("r", bob), stale.enter("r", ann),
                             stale.enter("s", bob), fresh.enter("s", ann))
        await stale.expire_at(now_ms() - 1)
        answers: dict[tuple[str, str], bool | PresenceError] = {}
        for room in "rs":
            for user in (ann, bob):
                here.depart(room, user, functools.partial(answers.__setitem__, (room, user.name)),
                            gone_from_node=room == "s")
        await here.settle(5.0)
        assert answers == {("r", "ann"): False, ("r", "bob"): True,
                           ("s", "ann"): True, ("s", "bob"): False}
    finally:
        for node in (here, fresh, stale):
            await node.close()
        await redis.aclose()


@pytest.mark.parametrize("back_on", ["this process", "another process"])
async def test_a_socket_back_within_the_presence_grace_announces_nothing(
        base_url, second_node, runtime, config, back_on):
    """A reloaded tab, a short network blip: the socket closes and a new one joins
    within the grace, and the room hears neither offline nor online. Bob, whose socket
    closed at the same moment and who stays away, goes offline when the grace ends."""
    _, watcher = await joined(base_url)
    alice, tab = await joined(base_url)
    bob, bob_tab = await joined(base_url)
    for user in (alice.user, bob.user):
        await watcher.expect("presence", user=user, status="online")
    returns = runtime.metrics.registry.get_sample_value("chat_presence_returns_total")
    closed = time.monotonic()
    tab.close()
    bob_tab.close()
    url = base_url if back_on == "this process" else second_node.base_url
    again = await tab_of(alice, url).ws()
    reply = await again.join("general")
    # Both are still present: Bob's grace has not ended either.
    assert {alice.user["id"], bob.user["id"]} <= {m["id"] for m in reply["members"]}
    heard: list[dict[str, Any]] = []
    while True:
        frame = await watcher.recv(config.presence_grace + 5)
        if frame["type"] != "presence":
            continue
        heard.append(frame)
        if frame["user"] == bob.user and frame["status"] == "offline":
            break
    assert time.monotonic() - closed >= config.presence_grace
    assert [f for f in heard if f["user"] == alice.user] == []
    await quiet(watcher, "presence", user=alice.user)
    late = await (await joined(base_url))[1].join("general")
    members = {m["id"] for m in late["members"]}
    assert alice.user["id"] in members and bob.user["id"] not in members
    # Called off on the process she came back to (the other one sent her departure,
    # and found her there).
    assert (runtime.metrics.registry.get_sample_value("chat_presence_returns_total")
            - returns) == (1 if back_on == "this process" else 0)


async def test_a_stopping_server_sends_the_departures_still_in_their_grace(
        base_url, config, services):
    """A server stopped without a drain does not leave its users present: the
    departures in their grace go out as it closes, not when its liveness runs out."""
    cfg = dataclasses.replace(config, node_id=config.node_id.replace("n1-", "n3-"),
                              presence_grace=60.0)
    node = await open_node(cfg, services)
    try:
        _, watcher = await joined(base_url)
        alice, tab = await joined(node.base_url)
        await watcher.expect("presence", user=alice.user, status="online")
        tab.close()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5
        while node.runtime.rooms.open_connections and loop.time() < deadline:
            await node.runtime.inflight.changed(deadline - loop.time())
        assert node.runtime.rooms.open_connections == 0
    finally:
        await close_node(node)
    redis = Redis.from_url(services.redis_url)
    try:
        entries = await redis.hkeys(f"{config.redis_prefix}presence:{{general}}")
    finally:
        await redis.aclose()
    assert [e for e in entries if e.decode().startswith(cfg.node_id)] == []
    await watcher.expect("presence", user=alice.user, status="offline")


async def test_a_join_after_a_departure_in_the_same_batch_keeps_the_user_present(services):
    # A departure whose grace ended and a join of the same user a moment later share a
    # batch: the later one counts, so the joiner's entry is not deleted under it.
    redis = redis_client(services.redis_url, pool_size=2)
    prefix = f"test:{uuid.uuid4().hex[:8]}:"
    here = Presence(redis, prefix, "node-a")
    ann = User("u-ann", "ann")
    try:
        await here.start()
        await here.enter("r", ann)
        answers: list[bool | PresenceError] = []
        here.depart("r", ann, answers.append, gone_from_node=True)
        members, _ = await here.enter("r", ann)
        await here.settle(5.0)
        assert answers == [False]  # not through another process
        assert [m.id for m in members] == ["u-ann"]
        assert [m.id for m in await here.members("r")] == ["u-ann"]
    finally:
        await here.close()
        await redis.aclose()


async def test_a_user_who_left_while_away_comes_back_active(base_url, second_node):
    _, watcher = await joined(base_url)
    alice, tab = await joined(base_url)
    await watcher.expect("presence", user=alice.user, status="online")
    await tab.send({"type": "activity", "state": "idle"})
    assert (await watcher.expect("presence", user=alice.user))["away"] is True
    tab.close()
    await watcher.expect("presence", user=alice.user, status="offline")
    # Back on the other process, active: no longer away, for the room and for joiners.
    await joined(second_node.base_url, client=tab_of(alice, second_node.base_url))
    await watcher.expect("presence", user=alice.user, status="online", away=False)
    _, late = await joined(base_url)
    entry = next(m for m in (await late.join("general"))["members"]
                 if m["id"] == alice.user["id"])
    assert entry["away"] is False
