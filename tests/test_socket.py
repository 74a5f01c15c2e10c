"""The WebSocket protocol, row by row, over real sockets against real Redis and MongoDB."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import socket

import pymongo
import pytest
from tornado.httpclient import HTTPClientError

from tests.client import Client, Socket, messages_of
from tests.conftest import close_node, mongo_url_of, open_node


async def user_socket(make_client, room: str | None = "general") -> tuple[Client, Socket]:
    client = make_client()
    await client.register()
    ws = await client.ws()
    if room:
        await ws.join(room)
    return client, ws


async def send(ws: Socket, body: str, room: str = "general", **extra) -> dict:
    reply = await ws.call({"type": "send", "room": room, "body": body, **extra})
    assert reply["type"] == "ack", reply
    return reply


async def test_hello_names_the_user_and_protocol(make_client):
    client = make_client()
    me = await client.register()
    ws = await client.ws()
    assert ws.hello["protocol"] == 2
    assert ws.hello["user"] == me == {"id": me["id"], "name": me["name"], "bot": False}
    assert isinstance(ws.hello["node"], str) and ws.hello["node"]


async def test_server_sockets_send_small_frames_at_once(make_client, runtime):
    # With Nagle's algorithm on, a message frame written right after its ack waits
    # for the peer's delayed ACK (40 ms on Linux): TCP_NODELAY keeps chat real-time.
    await user_socket(make_client)
    (conn,) = runtime.rooms.connections
    sock = conn.ws_connection.stream.socket
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


async def test_frames_of_every_length_class_arrive_whole(make_client):
    # A frame's header differs below 126 bytes, up to 64 KiB and beyond; fan-out and
    # replies are written by the server's own frame writer, so all three must hold.
    _, ws = await user_socket(make_client)
    _, other = await user_socket(make_client)
    bodies = ["a", "b" * 300, "é" * 4000]  # one frame of each size up to 64 KiB
    for body in bodies:
        ack = await send(ws, body)
        got = await other.expect("message")
        assert (got["seq"], got["body"]) == (ack["seq"], body)
    for i in range(17):
        await send(ws, f"{i:02d}" + "é" * 3998)
    page = await other.call({"type": "history", "room": "general", "limit": 20})
    assert len(json.dumps(page, ensure_ascii=False).encode()) > 0xFFFF
    assert [m["body"] for m in page["messages"][:3]] == bodies
    assert [m["body"] for m in page["messages"][3:]] == [f"{i:02d}" + "é" * 3998 for i in range(17)]


async def test_unauthenticated_upgrade_is_401_before_handshake(make_client):
    client = make_client()
    with pytest.raises(HTTPClientError) as err:
        await client.ws_raw()
    assert err.value.code == 401
    # The refusal's JSON body is sent like any API answer's.
    headers = err.value.response.headers
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert "default-src" in headers["Content-Security-Policy"]
    assert json.loads(err.value.response.body)["error"]["code"] == "unauthorized"


async def test_cookie_upgrade_from_foreign_origin_is_403(make_client):
    client = make_client()
    await client.register()
    for origin in ("http://evil.example", "null", "http://127.0.0.1.evil.example"):
        with pytest.raises(HTTPClientError) as err:
            await client.ws_raw(origin=origin)
        assert err.value.code == 403, origin


async def test_cookie_upgrade_from_allowed_extra_origin_is_accepted(config, services):
    cfg = dataclasses.replace(config, allowed_origins=("https://chat.example.com",))
    node = await open_node(cfg, services)
    try:
        client = Client(node.base_url)
        await client.register()
        ws = await client.ws(origin="https://chat.example.com")
        assert ws.hello["type"] == "hello"
        ws.close()
        with pytest.raises(HTTPClientError) as err:
            await client.ws_raw(origin="https://other.example.com")
        assert err.value.code == 403
    finally:
        await close_node(node)


async def test_join_returns_last_messages_members_and_last_seq(make_client):
    _, a = await user_socket(make_client)
    acks = [await send(a, f"m{i}") for i in range(55)]
    client_b, b = await user_socket(make_client, room=None)
    joined = await b.join("general")
    # b's first join of the public room is an event: the newest record.
    top = joined["last_seq"]
    assert top == acks[-1]["seq"] + 1
    assert [m["seq"] for m in joined["messages"]] == list(range(top - 49, top + 1))
    assert joined["has_more"] is True
    *messages, event = joined["messages"]
    assert [m["body"] for m in messages] == [f"m{i}" for i in range(6, 55)]
    assert all(m["type"] == "message" for m in messages)
    assert (event["type"], event["event"], event["actor"]) == ("event", "joined",
                                                               client_b.user)
    names = sorted(m["name"] for m in joined["members"])
    assert client_b.user["name"] in names and len(names) == 2


async def test_join_unknown_room_is_not_found_and_connection_stays_open(make_client):
    _, ws = await user_socket(make_client, room=None)
    reply = await ws.call({"type": "join", "room": "nowhere"})
    assert reply["type"] == "error" and reply["code"] == "not_found"
    assert (await ws.call({"type": "ping"}))["type"] == "pong"


async def test_send_acks_sender_then_delivers_to_everyone_in_room(make_client):
    client_a, a = await user_socket(make_client)
    _, b = await user_socket(make_client)
    await a.send({"type": "send", "room": "general", "body": "hello", "client_id": "c-1",
                  "ref": 7})
    first = await a.expect("ack")
    assert first["ref"] == 7 and first["client_id"] == "c-1"
    assert isinstance(first["ts"], int) and isinstance(first["id"], str)
    mine = await a.expect("message")
    theirs = await b.expect("message")
    for msg in (mine, theirs):
        assert msg == {"type": "message", "room": "general", "id": first["id"],
                       "seq": first["seq"], "user": client_a.user, "body": "hello",
                       "ts": first["ts"], "client_id": "c-1"}


async def test_messages_are_delivered_only_to_members_of_the_room(make_client):
    client, a = await user_socket(make_client)
    status, _, _ = await client.request("POST", "/api/rooms", {"name": "side"})
    assert status == 201
    _, b = await user_socket(make_client, room="side")
    await send(a, "in general")
    ack = await b.call({"type": "send", "room": "side", "body": "in side"})
    assert ack["type"] == "ack"
    got = await b.expect("message")
    assert got["room"] == "side"  # b never sees the general message


async def test_send_with_seen_client_id_returns_original_ack_and_delivers_nothing(make_client):
    _, a = await user_socket(make_client)
    _, b = await user_socket(make_client)
    first = await send(a, "once", client_id="dup-1")
    await b.expect("message", body="once")
    again = await send(a, "once", client_id="dup-1")
    assert {k: again[k] for k in ("id", "seq", "ts")} == {k: first[k] for k in ("id", "seq", "ts")}
    marker = await send(a, "after")
    nxt = await b.expect("message")
    assert nxt["seq"] == marker["seq"] == first["seq"] + 1


async def test_concurrent_duplicate_sends_are_stored_once(make_client):
    _, a = await user_socket(make_client)
    for _ in range(5):
        await a.send({"type": "send", "room": "general", "body": "x", "client_id": "same"})
    acks = [await a.expect("ack") for _ in range(5)]
    assert len({ack["seq"] for ack in acks}) == 1
    hist = await a.call({"type": "history", "room": "general"})
    assert [m["client_id"] for m in messages_of(hist["messages"])] == ["same"]


async def test_burst_of_sends_gets_consecutive_seqs_in_order(make_client):
    _, a = await user_socket(make_client)
    acks = await send_many(a, 30, "b")
    assert [ack["client_id"] for ack in acks] == [f"b{i}" for i in range(30)]
    first = acks[0]["seq"]
    assert [ack["seq"] for ack in acks] == list(range(first, first + 30))


async def test_sends_beyond_in_flight_bound_get_rate_limited(config, services, private_mongo):
    url = mongo_url_of(private_mongo)
    node = await open_node(config, services, mongo_url=url)
    try:
        _, a = await user_socket(lambda: Client(node.base_url))
        top = (await a.join("general"))["last_seq"]
        # Inserts take a second: all 60 sends arrive while the first are being stored.
        with pymongo.MongoClient(url) as mongo:
            mongo.admin.command({"configureFailPoint": "failCommand", "mode": "alwaysOn",
                                 "data": {"failCommands": ["insert"], "blockConnection": True,
                                          "blockTimeMS": 1000}})
        try:
            for i in range(60):
                await a.send({"type": "send", "room": "general", "body": "x",
                              "client_id": f"f{i}"})
            replies = {}
            while len(replies) < 60:
                frame = await a.recv(timeout=15)
                if frame["type"] in ("ack", "error"):
                    replies[frame["client_id"]] = frame
        finally:
            with pymongo.MongoClient(url) as mongo:
                mongo.admin.command({"configureFailPoint": "failCommand", "mode": "off"})
        limited = [f for f in replies.values() if f["type"] == "error"]
        assert len(limited) == 60 - 32 and all(f["code"] == "rate_limited" for f in limited)
        stored = sorted(f["seq"] for f in replies.values() if f["type"] == "ack")
        assert stored == list(range(top + 1, top + 33))
    finally:
        await close_node(node)


async def send_many(ws: Socket, n: int, prefix: str, window: int = 16) -> list[dict]:
    """Send n messages keeping at most `window` unacked; returns the acks in order."""
    acks: list[dict] = []
    sent = 0
    while len(acks) < n:
        while sent < n and sent - len(acks) < window:
            await ws.send({"type": "send", "room": "general", "body": f"{prefix}{sent}",
                           "client_id": f"{prefix}{sent}"})
            sent += 1
        acks.append(await ws.expect("ack"))
    return acks


@pytest.mark.parametrize(("frame", "code"), [
    ({"type": "send", "room": "general", "body": ""}, "bad_request"),
    ({"type": "send", "room": "general", "body": " \n\t "}, "bad_request"),
    ({"type": "send", "room": "general", "body": "x" * 4001}, "too_large"),
    ({"type": "send", "room": "general", "body": 5}, "bad_request"),
    ({"type": "send", "room": "Bad Room", "body": "x"}, "bad_request"),
    ({"type": "send", "room": "general", "body": "x", "client_id": ""}, "bad_request"),
    ({"type": "send", "room": "general", "body": "x", "client_id": "a" * 65}, "bad_request"),
    ({"type": "join", "room": "general", "since": -1}, "bad_request"),
    ({"type": "join", "room": "general", "since": "3"}, "bad_request"),
    ({"type": "history", "room": "general", "limit": "all"}, "bad_request"),
    ({"type": "launch"}, "unknown_type"),
    ({"room": "general"}, "bad_request"),
])
async def test_bad_frame_gets_error_with_ref_and_connection_stays_open(make_client, frame, code):
    _, ws = await user_socket(make_client)
    reply = await ws.call(frame)
    assert reply["type"] == "error" and reply["code"] == code, reply
    assert isinstance(reply["message"], str) and reply["message"]
    assert (await ws.call({"type": "ping"}))["type"] == "pong"


async def test_body_of_exactly_4000_characters_is_accepted(make_client):
    _, ws = await user_socket(make_client)
    ack = await send(ws, "é" * 4000)
    page = await ws.call({"type": "history", "room": "general", "after": ack["seq"] - 1})
    assert [m["body"] for m in page["messages"]] == ["é" * 4000]


@pytest.mark.parametrize("raw", ["not json", "[1,2]", "null", '{"type": 3}', "NaN",
                                 "[" * 5000 + "]" * 5000])
async def test_malformed_text_gets_bad_request(make_client, raw):
    _, ws = await user_socket(make_client, room=None)
    await ws.send(raw)
    reply = await ws.recv()
    assert reply["type"] == "error" and reply["code"] == "bad_request"
    assert (await ws.call({"type": "ping"}))["type"] == "pong"


async def test_binary_frame_gets_bad_request(make_client):
    _, ws = await user_socket(make_client, room=None)
    await ws.conn.write_message(b'{"type":"ping"}', binary=True)
    reply = await ws.recv()
    assert reply["code"] == "bad_request"


async def test_frame_over_64_kib_closes_with_1009(make_client):
    _, ws = await user_socket(make_client, room=None)
    await ws.send(json.dumps({"type": "ping", "pad": "x" * (65 * 1024)}))
    code, _ = await ws.closed()
    assert code == 1009


async def test_send_and_typing_need_join_first(make_client):
    _, ws = await user_socket(make_client, room=None)
    reply = await ws.call({"type": "send", "room": "general", "body": "x"})
    assert reply["code"] == "forbidden"
    reply = await ws.call({"type": "typing", "room": "general"})
    assert reply["code"] == "forbidden"


async def test_leave_is_idempotent_and_stops_delivery(make_client):
    _, a = await user_socket(make_client)
    _, b = await user_socket(make_client)
    assert (await b.call({"type": "leave", "room": "general"})) ["type"] == "left"
    assert (await b.call({"type": "leave", "room": "general"}))["type"] == "left"
    await send(a, "after b left")
    reply = await b.call({"type": "send", "room": "general", "body": "x"})
    assert reply["code"] == "forbidden"  # and no message frame arrived before it


async def test_history_pages_backwards_and_forwards(make_client):
    # A room of 30 messages: made by its owner, who joins it first (no join event).
    client, ws = await user_socket(make_client, room=None)
    status, _, _ = await client.request("POST", "/api/rooms", {"name": "hist"})
    assert status == 201
    await ws.join("hist")
    for i in range(30):
        await send(ws, f"h{i}", room="hist")
    page = await ws.call({"type": "history", "room": "hist", "limit": 10})
    assert [m["seq"] for m in page["messages"]] == list(range(21, 31))
    assert page["has_more"] is True
    older = await ws.call({"type": "history", "room": "hist", "before": 21, "limit": 10})
    assert [m["seq"] for m in older["messages"]] == list(range(11, 21))
    oldest = await ws.call({"type": "history", "room": "hist", "before": 11, "limit": 10})
    assert [m["seq"] for m in oldest["messages"]] == list(range(1, 11))
    assert oldest["has_more"] is False
    newer = await ws.call({"type": "history", "room": "hist", "after": 25, "limit": 3})
    assert [m["seq"] for m in newer["messages"]] == [26, 27, 28]
    assert newer["has_more"] is True
    tail = await ws.call({"type": "history", "room": "hist", "after": 28})
    assert [m["seq"] for m in tail["messages"]] == [29, 30] and tail["has_more"] is False
    clamped = await ws.call({"type": "history", "room": "hist", "limit": 0})
    assert len(clamped["messages"]) == 1


def store_directly(config, services, seqs, *, record: int | None = None,
                   room: str = "general") -> None:
    """Store messages with the given seqs straight into MongoDB, as another process
    would; `record` sets the room's recorded top seq."""
    with pymongo.MongoClient(services.mongo_url) as mongo:
        db = mongo[config.db_name]
        user = {"id": "0" * 24, "name": "elsewhere", "bot": False}
        db.messages.insert_many([{"room": room, "seq": seq, "user": user,
                                  "body": f"stored {seq}", "ts": 1} for seq in seqs])
        if record is not None:
            db.rooms.update_one({"_id": room}, {"$set": {"seq": record}})


async def test_history_and_join_read_across_gaps_wider_than_a_page(make_client, config,
                                                                    services):
    # Seq allocation before the optimistic sequence left holes where stores failed:
    # 6-1005, and 1009-1308 at the top.
    # In a room of its own owner (who joins it with no join event), before joining.
    client, ws = await user_socket(make_client, room=None)
    assert (await client.request("POST", "/api/rooms", {"name": "gaps"}))[0] == 201
    store_directly(config, services, [1, 2, 3, 4, 5, 1006, 1007, 1008], record=1308,
                   room="gaps")
    await ws.join("gaps")
    newest = await ws.call({"type": "history", "room": "gaps", "limit": 6})
    assert [m["seq"] for m in newest["messages"]] == [3, 4, 5, 1006, 1007, 1008]
    assert newest["has_more"] is True
    older = await ws.call({"type": "history", "room": "gaps", "before": 1006})
    assert [m["seq"] for m in older["messages"]] == [1, 2, 3, 4, 5]
    assert older["has_more"] is False
    newer = await ws.call({"type": "history", "room": "gaps", "after": 4, "limit": 2})
    assert [m["seq"] for m in newer["messages"]] == [5, 1006] and newer["has_more"] is True
    rest = await ws.call({"type": "history", "room": "gaps", "after": 1006})
    assert [m["seq"] for m in rest["messages"]] == [1007, 1008] and rest["has_more"] is False
    _, late = await user_socket(make_client, room=None)
    joined = await late.join("gaps", since=2)
    # The late joiner's first join of the public room is the event 1309.
    assert [m["seq"] for m in joined["messages"]] == [3, 4, 5, 1006, 1007, 1008, 1309]
    assert joined["messages"][-1]["event"] == "joined"
    assert joined["has_more"] is False and joined["last_seq"] == 1309
    ack = await send(ws, "after the gap", room="gaps")
    assert ack["seq"] == 1310
    assert (await late.expect("message"))["seq"] == 1310


async def test_seq_taken_by_another_process_is_skipped_without_a_hole(make_client, config,
                                                                      services, runtime):
    _, ws = await user_socket(make_client)  # its first join is the event 1
    assert [a["seq"] for a in await send_many(ws, 3, "mine")] == [2, 3, 4]
    # Another process stored 4 and 5 and has not recorded them yet (or died first).
    store_directly(config, services, [5, 6])
    acks = await send_many(ws, 3, "after")
    assert [a["seq"] for a in acks] == [7, 8, 9]
    assert runtime.metrics.registry.get_sample_value("chat_seq_refusals_total") == 1
    page = await ws.call({"type": "history", "room": "general"})
    assert [m["seq"] for m in page["messages"]] == list(range(1, 10))
    _, late = await user_socket(make_client, room=None)
    # Read above the record: 9, then the late joiner's own join event.
    assert (await late.join("general"))["last_seq"] == 10
    # The record catches up in the background, at the latest when the writer closes
    # (read only: nothing is patched).
    await runtime.writer.close()
    with pymongo.MongoClient(services.mongo_url) as mongo:
        assert mongo[config.db_name].rooms.find_one({"_id": "general"})["seq"] == 10


async def test_rooms_top_seq_record_follows_sends_while_the_server_runs(make_client, config,
                                                                       services):
    # Written in the background at most once a second: readers need not wait for
    # shutdown to find it current.
    _, ws = await user_socket(make_client)
    deadline = asyncio.get_running_loop().time() + 10
    with pymongo.MongoClient(services.mongo_url) as mongo:
        rooms = mongo[config.db_name].rooms

        async def recorded(top: int) -> None:
            while rooms.find_one({"_id": "general"})["seq"] != top:
                assert asyncio.get_running_loop().time() < deadline, f"{top} never recorded"
                await asyncio.sleep(0.05)  # no event announces the write: poll MongoDB

        acks = await send_many(ws, 5, "r")
        await recorded(acks[-1]["seq"])
        ack = await send(ws, "one more")
        await recorded(ack["seq"])


async def test_resends_mixed_with_new_sends_take_no_seq(make_client):
    _, ws = await user_socket(make_client)
    first = await send_many(ws, 4, "r")
    # Resends of all four, interleaved with four new messages, sent without waiting.
    for i in range(4):
        await ws.send({"type": "send", "room": "general", "body": f"r{i}",
                       "client_id": f"r{i}", "ref": f"again{i}"})
        await ws.send({"type": "send", "room": "general", "body": f"n{i}",
                       "client_id": f"n{i}", "ref": f"new{i}"})
    acks = {}
    while len(acks) < 8:
        frame = await ws.recv()
        if frame["type"] == "ack":
            acks[frame["ref"]] = frame
    for i in range(4):
        assert {k: acks[f"again{i}"][k] for k in ("seq", "id")} == {
            k: first[i][k] for k in ("seq", "id")}
    top = first[-1]["seq"]
    assert sorted(acks[f"new{i}"]["seq"] for i in range(4)) == list(range(top + 1, top + 5))
    page = await ws.call({"type": "history", "room": "general"})
    assert [m["body"] for m in messages_of(page["messages"])] == [
        "r0", "r1", "r2", "r3", "n0", "n1", "n2", "n3"]


async def test_history_of_unknown_room_is_not_found(make_client):
    _, ws = await user_socket(make_client, room=None)
    reply = await ws.call({"type": "history", "room": "nope"})
    assert reply["code"] == "not_found"


async def test_typing_reaches_others_not_the_typist(make_client):
    client_a, a = await user_socket(make_client)
    _, b = await user_socket(make_client)
    await a.send({"type": "typing", "room": "general"})
    frame = await b.expect("typing")
    assert frame == {"type": "typing", "room": "general", "user": client_a.user}
    # a gets nothing for its own typing: the next thing a sees is its pong.
    assert (await a.call({"type": "ping"}))["type"] == "pong"
    await a.send({"type": "ping", "ref": "direct"})
    assert (await a.recv()) == {"type": "pong", "ref": "direct"}


async def test_ping_pong_echoes_ref(make_client):
    _, ws = await user_socket(make_client, room=None)
    await ws.send({"type": "ping", "ref": "abc"})
    assert await ws.recv() == {"type": "pong", "ref": "abc"}


async def test_presence_online_offline_counts_tabs_once(make_client):
    client_a, a = await user_socket(make_client)
    watcher_client, watcher = await user_socket(make_client)
    online = await a.expect("presence")
    assert online == {"type": "presence", "room": "general", "user": watcher_client.user,
                      "status": "online", "away": False, "status_text": None,
                      "status_until": None}
    second_tab = await client_a.ws()
    await second_tab.join("general")
    # A second tab of a user already online announces nothing; closing one tab neither.
    second_tab.close()
    await asyncio.sleep(0)
    ping = await watcher.call({"type": "ping"})
    assert ping["type"] == "pong"
    a.close()
    offline = await watcher.expect("presence")
    assert offline["user"] == client_a.user and offline["status"] == "offline"


async def test_joined_members_lists_each_user_once(make_client):
    client_a, _a = await user_socket(make_client)
    tab2 = await client_a.ws()
    await tab2.join("general")
    _, b = await user_socket(make_client, room=None)
    joined = await b.join("general")
    ids = [m["id"] for m in joined["members"]]
    assert ids.count(client_a.user["id"]) == 1
    assert all(set(m) == {"id", "name", "bot", "away", "status_text", "status_until"}
               for m in joined["members"])


async def test_rejoin_with_since_returns_missed_messages_in_order(make_client):
    client_a, a = await user_socket(make_client)
    _, b = await user_socket(make_client)
    await send(a, "one")
    seen = await b.expect("message")
    b.close()
    for i in range(5):
        await send(a, f"missed {i}")
    b2 = await (await _relogin(make_client, client_a)).ws()
    joined = await b2.join("general", since=seen["seq"])
    assert [m["body"] for m in joined["messages"]] == [f"missed {i}" for i in range(5)]
    assert joined["has_more"] is False
    await send(a, "live")
    live = await b2.expect("message")
    assert live["body"] == "live" and live["seq"] == joined["messages"][-1]["seq"] + 1


async def _relogin(make_client, client):
    fresh = make_client()
    fresh.cookies = dict(client.cookies)
    return fresh


async def test_join_since_pages_past_100_with_history_after(make_client):
    _, a = await user_socket(make_client)
    await send_many(a, 130, "p")
    _, b = await user_socket(make_client, room=None)
    joined = await b.join("general", since=0)
    assert [m["seq"] for m in joined["messages"]] == list(range(1, 101))
    assert joined["has_more"] is True
    rest = await b.call({"type": "history", "room": "general", "after": 100})
    # 1 is a's join, 2..131 the messages, 132 b's join.
    assert [m["seq"] for m in rest["messages"]] == list(range(101, 133))
    assert rest["has_more"] is False


async def test_messages_sent_while_joining_arrive_once_after_joined(make_client):
    _, a = await user_socket(make_client)
    _, b = await user_socket(make_client, room=None)
    sender = asyncio.ensure_future(_spam(a, 30))
    joined = await b.join("general", since=0)
    await sender
    seen = [m["seq"] for m in joined["messages"]]
    has_more = joined["has_more"]
    assert not has_more
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    # 30 messages and two join events (a's, first; b's, among the messages).
    while (not seen or seen[-1] < 32) and loop.time() < deadline:
        frame = await b.recv()
        if frame["type"] in ("message", "event"):
            seen.append(frame["seq"])
    assert seen == list(range(1, 33))


async def _spam(ws: Socket, n: int) -> None:
    for i in range(n):
        await ws.send({"type": "send", "room": "general", "body": f"s{i}", "client_id": f"s{i}"})
        await asyncio.sleep(0)


async def test_a_room_joined_as_its_last_member_leaves_keeps_hearing_other_processes(
        make_client, runtime, second_node):
    # The last member's departure unsubscribes the room in the background; a join
    # begun before that ran must leave the room subscribed, or nothing another process
    # stores reaches the joiner.
    from tests.test_team import make_room, person
    owner, other = await person(make_client), await person(make_client)
    room = await make_room(owner)
    leaving = await owner.ws()
    await leaving.join(room)
    joiner = await other.ws()
    await joiner.join(room)  # a member already: joining again reads no membership
    await joiner.call({"type": "leave", "room": room})
    conns = {c.user.id: c for c in runtime.chat.rooms.connections}
    join = asyncio.ensure_future(runtime.chat.join(conns[other.user["id"]], room, None))
    runtime.chat.disconnect(conns[owner.user["id"]])  # as its socket closing would
    await join
    await joiner.expect("joined", room=room)
    await asyncio.gather(*runtime.chat._drops)  # the departure's drop, if any, is done
    sender = await person(make_client, second_node.base_url)
    ws = await sender.ws()
    await ws.join(room)
    ack = await ws.call({"type": "send", "room": room, "body": "from afar"})
    assert ack["type"] == "ack", ack
    message = await joiner.expect("message", room=room)
    assert (message["seq"], message["body"]) == (ack["seq"], "from afar")
