"""Read positions kept by the server for every device of a user, unread and mention
counts, and `@name` / `@room` mentions."""

from __future__ import annotations

from typing import Any

from tests.client import Client, Socket, messages_of
from tests.test_changes import change, say, socket_in
from tests.test_team import api, make_room, person


async def room_view(client: Client, room: str) -> dict[str, Any]:
    rooms = (await api(client, "GET", "/api/rooms?limit=1000", expect=200))["rooms"]
    return next(r for r in rooms if r["name"] == room)


async def read(ws: Socket, room: str, seq: int) -> dict[str, Any]:
    reply = await ws.call({"type": "read", "room": room, "seq": seq})
    assert reply["type"] == "read", reply
    return reply


async def test_a_read_position_follows_the_user_to_every_device_and_never_moves_back(
        make_client, second_node):
    owner = await person(make_client)
    reader = await person(make_client)
    room = await make_room(owner)
    ws_owner = await socket_in(owner, room)
    laptop = await socket_in(reader, room)
    phone_client = Client(second_node.base_url)
    phone_client.cookies = dict(reader.cookies)
    phone = await phone_client.ws()  # the same user on the other process, in no room
    acks = [await say(ws_owner, room, f"m{i}") for i in range(5)]
    assert (await read(laptop, room, acks[2]["seq"]))["seq"] == acks[2]["seq"]
    moved = await phone.expect("read")
    assert (moved["room"], moved["seq"]) == (room, acks[2]["seq"])
    # Never back; never past the room's top.
    assert (await read(laptop, room, 1))["seq"] == acks[2]["seq"]
    assert (await read(laptop, room, 10**9))["seq"] == acks[-1]["seq"]
    view = await room_view(reader, room)
    assert (view["last_read"], view["unread"], view["mentions"]) == (acks[-1]["seq"], 0, 0)


async def test_unread_counts_others_messages_and_is_never_wrong_about_zero(make_client):
    owner, reader = await person(make_client), await person(make_client)
    room = await make_room(owner)
    ws_owner = await socket_in(owner, room)
    ws = await socket_in(reader, room)
    mine = await say(ws, room, "my own")
    await read(ws, room, mine["seq"])
    joined = await (await reader.ws()).join(room)
    assert (joined["last_read"], joined["unread"], joined["mentions"]) == (mine["seq"], 0, 0)
    await say(ws, room, "my own again")  # own messages are never unread
    assert (await room_view(reader, room))["unread"] == 0
    first = await say(ws_owner, room, "news")
    await change(ws_owner, {"type": "react", "room": room, "seq": first["seq"],
                            "emoji": "👍"})  # events are not unread either
    assert (await room_view(reader, room))["unread"] == 1
    acks = []
    for start in range(0, 104, 16):  # within the 32 sends a socket may have in flight
        batch = range(start, min(start + 16, 104))
        for i in batch:
            await ws_owner.send({"type": "send", "room": room, "body": f"more {i}"})
        acks += [await ws_owner.expect("ack") for _ in batch]
    view = await room_view(reader, room)
    assert view["unread"] == 100  # capped: "99+"
    await read(ws, room, max(a["seq"] for a in acks))
    assert (await room_view(reader, room))["unread"] == 0


async def test_mentions_of_members_are_recorded_and_listed_newest_first(make_client):
    owner, bob, outsider = [await person(make_client) for _ in range(3)]
    room = await make_room(owner, "private")
    await api(owner, "POST", f"/api/rooms/{room}/members", {"user": bob.user["name"]}, 201)
    ws = await socket_in(owner, room)
    ws_bob = await socket_in(bob, room)
    hello = await say(ws, room, f"hi @{bob.user['name']} and @{outsider.user['name']}")
    everyone = await say(ws, room, "@room standup in 5")
    plain = await say(ws, room, f"mail {bob.user['name']}@example.com")
    records = {m["seq"]: m for m in messages_of(
        (await api(bob, "GET", f"/api/rooms/{room}/messages", expect=200))["messages"])}
    # The outsider cannot see the room: not recorded, so not notified, nothing leaks.
    assert records[hello["seq"]]["mentions"] == {"users": [bob.user["id"]], "room": False}
    assert records[everyone["seq"]]["mentions"] == {"users": [], "room": True}
    assert "mentions" not in records[plain["seq"]]
    listed = (await api(bob, "GET", "/api/mentions", expect=200))["mentions"]
    assert [m["seq"] for m in listed] == [everyone["seq"], hello["seq"]]
    first_page = await api(bob, "GET", "/api/mentions?limit=1", expect=200)
    assert [m["seq"] for m in first_page["mentions"]] == [everyone["seq"]]
    rest = await api(bob, "GET", f"/api/mentions?limit=1&before={first_page['next']}",
                     expect=200)
    assert [m["seq"] for m in rest["mentions"]] == [hello["seq"]]
    assert (await api(outsider, "GET", "/api/mentions", expect=200))["mentions"] == []
    view = await room_view(bob, room)
    assert (view["unread"], view["mentions"]) == (3, 2)
    # An edit that drops the mention drops it from the list too.
    await change(ws, {"type": "edit", "room": room, "seq": hello["seq"], "body": "hi all"})
    await ws_bob.expect("event", event="edited")
    listed = (await api(bob, "GET", "/api/mentions", expect=200))["mentions"]
    assert [m["seq"] for m in listed] == [everyone["seq"]]
    # A room one has left mentions nobody any more.
    await api(bob, "DELETE", f"/api/rooms/{room}/members/{bob.user['name']}", expect=204)
    assert (await api(bob, "GET", "/api/mentions", expect=200))["mentions"] == []
