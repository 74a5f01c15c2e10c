"""What one signed-in member can do to everyone else: pages that outweigh a reader's
bound, floods of every frame type, presence that flaps. Real sockets, real Redis and
MongoDB; each attack must leave the others connected and served, with nothing lost.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import uuid
from typing import Any

import pymongo
from bson import ObjectId
from tornado.websocket import WebSocketClosedError

from server import protocol
from server.config import Config
from server.handlers.socket import MAX_STRIKES
from server.limits import LimitSettings, RateLimits
from server.runtime import redis_client
from tests.client import Client, Socket
from tests.conftest import close_node, open_node
from tests.test_abuse import Inbox, joined_socket

BIGGEST = "\U0001F600" * (protocol.MAX_BODY_BYTES // 4)  # the most bytes a body may have


def production_limits(config: Config, **extra: Any) -> Config:
    """The test config with the per-connection frame limits a real server has."""
    limits = dataclasses.replace(config.limits, frame_rate=LimitSettings.frame_rate,
                                 frame_burst=LimitSettings.frame_burst,
                                 typing_every=LimitSettings.typing_every)
    return dataclasses.replace(config, limits=limits, **extra)


async def page_through(ws: Socket, room: str, first: dict[str, Any]) -> list[int]:
    """The seqs of a `join since` reply and every `history after` page that follows."""
    seqs = [m["seq"] for m in first["messages"]]
    page = first
    while page["has_more"]:
        page = await ws.call({"type": "history", "room": room, "after": seqs[-1],
                              "limit": 100})
        assert page["type"] == "history", page
        assert page["messages"], "has_more with an empty page"
        seqs += [m["seq"] for m in page["messages"]]
    return seqs


# Pages (item 1) -----------------------------------------------------------------------


async def test_bodies_are_limited_in_bytes_and_refuse_control_characters(make_client):
    client = make_client()
    await client.register()
    ws = await client.ws()
    await ws.join()
    fits = await ws.call({"type": "send", "room": "general", "body": BIGGEST})
    assert fits["type"] == "ack", fits
    over = await ws.call({"type": "send", "room": "general", "body": BIGGEST + "!"})
    assert (over["type"], over["code"]) == ("error", "too_large"), over
    for bad in ("a\x01b", "bell\x07", "line\r\nbreak", "\x1b[31mred"):
        reply = await ws.call({"type": "send", "room": "general", "body": bad})
        assert (reply["type"], reply["code"]) == ("error", "bad_request"), (bad, reply)
    ok = await ws.call({"type": "send", "room": "general", "body": "tab\there\nnew line"})
    assert ok["type"] == "ack", ok


async def test_a_room_full_of_the_largest_messages_stays_joinable(config, services):
    """100 bodies of the most bytes allowed are 1.2 MB: one `joined` of them would pass
    the 1 MiB slow-reader bound, and a client resuming with since would be dropped on
    every reconnect. Pages are cut to a byte budget instead, and say has_more."""
    node = await open_node(config, services)
    try:
        _, writer = await joined_socket(node.base_url)
        seqs = []
        for i in range(0, 100, 20):
            for j in range(i, i + 20):
                await writer.send({"type": "send", "room": "general", "body": BIGGEST,
                                   "ref": f"s{j}"})
            for j in range(i, i + 20):
                seqs.append((await writer.expect("ack", ref=f"s{j}"))["seq"])
        reader_client = Client(node.base_url)
        await reader_client.register()
        reader = await reader_client.ws()
        await reader.send({"type": "join", "room": "general", "since": 0, "ref": "j"})
        raw = await asyncio.wait_for(reader.conn.read_message(), 10)
        while json.loads(raw).get("ref") != "j":
            raw = await asyncio.wait_for(reader.conn.read_message(), 10)
        assert len(raw.encode()) <= protocol.PAGE_BYTES
        first = json.loads(raw)
        assert first["type"] == "joined" and first["has_more"], first.get("type")
        got = await page_through(reader, "general", first)
        # Every record, gap-free: the writer's join event, the 100 messages, the
        # reader's join event.
        assert got == list(range(1, 103)) and sorted(seqs) == list(range(2, 102))
        # The latest page fits too, and says that older messages exist.
        latest = await reader.call({"type": "history", "room": "general"})
        assert latest["has_more"] and latest["messages"][-1]["seq"] == got[-1]
        assert (await reader.call({"type": "ping"}))["type"] == "pong"  # still open
    finally:
        await close_node(node)


async def test_stored_messages_that_escape_to_six_bytes_a_character_still_page(
        config, services, make_client):
    """Bodies stored before control characters were refused weigh six bytes a
    character once JSON-escaped: 50 of them are 1.2 MB. The budget counts what is
    written, not what is stored."""
    client = make_client()
    await client.register()
    status, _, _ = await client.request("POST", "/api/rooms", {"name": "legacy"})
    assert status == 201
    mongo: Any = pymongo.MongoClient(services.mongo_url)
    try:
        author = {"id": client.user["id"], "name": client.user["name"], "bot": False}
        mongo[config.db_name].messages.insert_many([
            {"_id": ObjectId(), "room": "legacy", "seq": seq, "user": author,
             "body": "\x01" * 4000, "ts": 1_700_000_000_000 + seq} for seq in range(1, 51)])
    finally:
        mongo.close()
    ws = await client.ws()
    first = await ws.join("legacy", since=0)
    assert first["has_more"] and len(first["messages"]) < 50
    assert await page_through(ws, "legacy", first) == list(range(1, 51))
    status, body, _ = await client.request("GET", "/api/rooms/legacy/messages?limit=100")
    assert status == 200 and body["has_more"] and body["messages"][-1]["seq"] == 50


async def test_history_before_far_above_the_top_is_the_latest_page(make_client):
    client = make_client()
    await client.register()
    ws = await client.ws()
    await ws.join()
    for i in range(5):
        assert (await ws.call({"type": "send", "room": "general", "body": f"m{i}"}))[
            "type"] == "ack"
    latest = await ws.call({"type": "history", "room": "general"})
    huge = await ws.call({"type": "history", "room": "general", "before": 2**62 - 1})
    # The join event and the five messages.
    assert huge["messages"] == latest["messages"] and len(huge["messages"]) == 6
    assert huge["has_more"] is False


# Floods (item 2) ----------------------------------------------------------------------


async def test_a_typing_flood_reaches_the_room_as_a_handful_of_frames(config, services):
    node = await open_node(production_limits(config), services)
    try:
        _, flooder = await joined_socket(node.base_url)
        _, watcher = await joined_socket(node.base_url)
        inbox = Inbox(watcher)
        loop = asyncio.get_running_loop()
        started = loop.time()
        for _ in range(3000):
            await flooder.send({"type": "typing", "room": "general"})
        # Frames are handled in order: the pong comes after the last typing frame.
        assert (await flooder.call({"type": "ping"}, timeout=30))["type"] == "pong"
        elapsed = loop.time() - started
        await flooder.send({"type": "send", "room": "general", "body": "done", "ref": "d"})
        await inbox.until(lambda: bool(inbox.of("message", body="done")), 10, "the message")
        typing = inbox.of("typing")
        allowed = 1 + int(elapsed / LimitSettings.typing_every) + 1
        assert 1 <= len(typing) <= allowed, (len(typing), elapsed)
        assert not inbox.closed
        await inbox.stop()
    finally:
        await close_node(node)


async def test_join_leave_cycles_reach_the_room_as_a_handful_of_presence_frames(
        config, services):
    node = await open_node(production_limits(config), services)
    try:
        _, watcher = await joined_socket(node.base_url)
        inbox = Inbox(watcher)
        flooder_client, flooder = await joined_socket(node.base_url, room=None)
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            for i in range(300):
                await flooder.send({"type": "join", "room": "general"})
                await flooder.send({"type": "leave", "room": "general", "ref": f"l{i}"})
            replies = []
            while not replies or replies[-1].get("ref") != "l299":
                replies.append(await flooder.recv(timeout=10))
        except (WebSocketClosedError, ConnectionError):
            pass  # closed for flooding: the strike rule
        limited = flooder.conn.close_code == 1008 or any(
            r["type"] == "error" and r["code"] == "rate_limited" for r in replies)
        assert limited, "300 join/leave cycles met no limit"
        elapsed = loop.time() - started
        speaker_client = Client(node.base_url)
        await speaker_client.register()
        speaker = await speaker_client.ws()
        await speaker.join()
        await speaker.call({"type": "send", "room": "general", "body": "still here"})
        await inbox.until(lambda: bool(inbox.of("message", body="still here")), 10,
                          "a message after the flood")
        uid = flooder_client.user["id"]
        flaps = [f for f in inbox.of("presence") if f["user"]["id"] == uid]
        # One frame per hold at most, plus the first and the last.
        assert len(flaps) <= 2 + int(elapsed / config.presence_hold + 1), (len(flaps), elapsed)
        assert not inbox.closed  # nobody was dropped as a slow reader
        await inbox.stop()
    finally:
        await close_node(node)


async def test_control_frames_are_rate_limited_and_a_flood_closes_with_1008(
        config, services):
    node = await open_node(production_limits(config), services)
    try:
        _, ws = await joined_socket(node.base_url, room=None)
        burst = LimitSettings.frame_burst
        for i in range(burst + MAX_STRIKES + 5):
            await ws.send({"type": "ping", "ref": i})
        replies = []
        try:
            while True:
                replies.append(await ws.recv(timeout=10))
        except ConnectionError:
            pass
        pongs = [r for r in replies if r["type"] == "pong"]
        limited = [r for r in replies if r["type"] == "error" and r["code"] == "rate_limited"]
        assert burst <= len(pongs) <= burst + 5, len(pongs)  # refills during the flood
        assert limited and all(r["retry_after"] > 0 for r in limited)
        # The refusal that passes MAX_STRIKES in a row closes the connection instead.
        last_pong = max(i for i, r in enumerate(replies) if r["type"] == "pong")
        assert replies[last_pong + 1:] == limited[-MAX_STRIKES:]
        assert len(replies) - last_pong - 1 == MAX_STRIKES
        assert ws.conn.close_code == 1008
    finally:
        await close_node(node)


async def test_sends_do_not_spend_the_control_frame_bucket(config, services):
    """A send past the frame bucket is stored and acked, and answered by its ack alone:
    sends have their own limit (the message rate)."""
    cfg = production_limits(config)
    cfg = dataclasses.replace(cfg, limits=dataclasses.replace(cfg.limits, frame_burst=2))
    node = await open_node(cfg, services)
    try:
        _, ws = await joined_socket(node.base_url)  # the join spends one token
        for i in range(5):
            await ws.send({"type": "send", "room": "general", "body": f"m{i}", "ref": i})
        await ws.send({"type": "ping", "ref": "last"})  # the bucket's last token
        replies = []
        while len([r for r in replies if r.get("ref") is not None]) < 6:
            replies.append(await ws.recv())
        assert sorted(r["ref"] for r in replies if r["type"] == "ack") == list(range(5))
        assert [r["ref"] for r in replies if r["type"] == "pong"] == ["last"]
    finally:
        await close_node(node)


async def test_a_flood_of_refused_frames_spends_the_bucket_and_closes_with_1008(
        config, services):
    """Typing or sending where one may not (a room not joined, one muted in) and frames
    that do not parse are answered with an error each: they take from the frame bucket
    like join and ping, and once it is empty they are strikes. Refused frames never end
    a run of strikes, so a flood of them is closed, whatever the bucket refills."""
    node = await open_node(production_limits(config), services)
    try:
        owner, _ = await joined_socket(node.base_url, room=None)
        room = uuid.uuid4().hex[:12]
        assert (await owner.request("POST", "/api/rooms", {"name": room}))[0] == 201
        flooder, ws = await joined_socket(node.base_url, room=room)
        status, _, _ = await owner.request("POST", f"/api/rooms/{room}/mutes",
                                           {"user": flooder.user["name"], "seconds": 600})
        assert status == 201
        await ws.expect("room_updated")  # the mute has reached this socket's process
        refusals: list[tuple[dict[str, Any] | str, str]] = [
            ({"type": "typing", "room": room}, "forbidden"),  # muted
            ({"type": "typing", "room": "elsewhere"}, "forbidden"),  # not joined
            ({"type": "send", "room": "elsewhere", "body": "hi"}, "forbidden"),
            ({"type": "edit", "room": "elsewhere", "seq": 1, "body": "hi"}, "forbidden"),
            ({"type": "nonsense"}, "unknown_type"),
            ("not json", "bad_request"),
        ]
        burst = LimitSettings.frame_burst - 1  # the join took one
        sent = burst + MAX_STRIKES + 100
        try:
            for i in range(sent):
                frame, _ = refusals[i % len(refusals)]
                await ws.send(frame if isinstance(frame, str) else {**frame, "ref": i})
        except WebSocketClosedError:
            pass
        replies = []
        try:
            while True:
                replies.append(await ws.recv(timeout=10))
        except (ConnectionError, asyncio.TimeoutError):
            pass  # closed, or (the bug) open and silent
        assert (ws.conn.close_code, ws.conn.close_reason) == (1008, "rate limit exceeded")
        assert all(r["type"] == "error" for r in replies), replies
        limited = [r for r in replies if r["code"] == "rate_limited"]
        assert len(limited) == MAX_STRIKES  # the next strike closed instead
        assert all(r["retry_after"] > 0 for r in limited)
        # Until the bucket ran dry, each refusal got its own answer.
        codes = [refusals[i % len(refusals)][1] for i in range(burst)]
        assert [r["code"] for r in replies[:burst]] == codes
        # Refills during the flood answered a few more, and ended no run of strikes.
        assert len(replies) < burst + MAX_STRIKES + 30 < sent, len(replies)
    finally:
        await close_node(node)


async def test_presence_of_a_flapping_user_ends_in_the_true_state(config, services):
    """Coalescing drops intermediate states, never the last one."""
    node = await open_node(config, services)
    try:
        _, watcher = await joined_socket(node.base_url)
        inbox = Inbox(watcher)
        flapper_client, flapper = await joined_socket(node.base_url, room=None)
        uid = flapper_client.user["id"]
        for _ in range(5):
            assert (await flapper.call({"type": "join", "room": "general"}))["type"] == "joined"
            assert (await flapper.call({"type": "leave", "room": "general"}))["type"] == "left"

        def last_status() -> str | None:
            frames = [f for f in inbox.of("presence") if f["user"]["id"] == uid]
            return frames[-1]["status"] if frames else None
        await inbox.until(lambda: last_status() == "offline", 10, "the final offline")
        assert len([f for f in inbox.of("presence") if f["user"]["id"] == uid]) <= 3
        await inbox.stop()
    finally:
        await close_node(node)



async def test_a_stopping_process_gives_back_the_message_tokens_it_leased(services):
    # A rolling restart must not cost the users of the stopped process their rate: the
    # tokens it leased ahead of their use go back to the bucket in Redis.
    settings = LimitSettings(message_rate=5.0, message_burst=20)
    redis = redis_client(services.redis_url, pool_size=2)
    prefix = f"test:{uuid.uuid4().hex[:8]}:"
    try:
        stopping = RateLimits(redis, prefix, settings)
        await stopping.message("u1")  # leases a few tokens, spends one
        key = f"{prefix}limit:msg:u1"
        leased = float(await redis.hget(key, "tokens"))
        assert leased <= 20 - stopping.lease + 1
        await stopping.close()
        # Back to the burst minus the one message sent (plus a few ms of refill).
        assert float(await redis.hget(key, "tokens")) >= 19
    finally:
        await redis.aclose()
