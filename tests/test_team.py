"""Room kinds, stored membership, roles and moderation, over the public HTTP API and
WebSocket protocol, on one process and across two."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

from server.envelope import MemberChange, encode_command
from tests.client import Client, Socket, unique_name


async def person(make_client, url: str | None = None, name: str | None = None) -> Client:
    client = make_client(url)
    await client.register(name)
    return client


async def api(client: Client, method: str, path: str, body: Any = None,
              expect: int | None = None) -> Any:
    status, reply, _ = await client.request(method, path, body)
    if expect is not None:
        assert status == expect, (method, path, status, reply)
    return reply if expect is not None else (status, reply)


async def make_room(owner: Client, kind: str = "public", topic: str = "") -> str:
    title = unique_name("room")
    room = await api(owner, "POST", "/api/rooms", {"name": title, "kind": kind,
                                                   "topic": topic}, 201)
    assert (room["title"], room["kind"], room["role"], room["member"]) == (title, kind,
                                                                            "owner", True)
    # A private room's name is the title with a random suffix: nobody can learn that
    # it exists by asking for its name.
    if kind == "private":
        assert room["name"].startswith(title + "-") and len(room["name"]) == len(title) + 9
    else:
        assert room["name"] == title
    return room["name"]


async def joined_socket(client: Client, room: str) -> Socket:
    ws = await client.ws()
    await ws.join(room)
    return ws


async def stream(client: Client, room: str) -> list[dict[str, Any]]:
    page = await api(client, "GET", f"/api/rooms/{room}/messages?limit=100", expect=200)
    return page["messages"]


def events(records: list[dict[str, Any]], kind: str | None = None) -> list[dict[str, Any]]:
    return [r for r in records if r["type"] == "event" and (kind is None or r["event"] == kind)]


async def send(ws: Socket, room: str, body: str) -> dict[str, Any]:
    return await ws.call({"type": "send", "room": room, "body": body})


# Seeing a private room ---------------------------------------------------------------

async def test_a_private_room_is_exactly_as_invisible_as_a_room_that_does_not_exist(
        make_client):
    owner, outsider = await person(make_client), await person(make_client)
    room = await make_room(owner, "private", topic="salaries")
    ws_owner = await joined_socket(owner, room)
    assert (await send(ws_owner, room, "the secret"))["type"] == "ack"
    missing = unique_name("room")

    listed = await api(outsider, "GET", "/api/rooms?limit=1000", expect=200)
    assert room not in [r["name"] for r in listed["rooms"]]
    assert room in [r["name"] for r in (await api(owner, "GET", "/api/rooms?limit=1000",
                                                  expect=200))["rooms"]]
    for path in ("", "/messages", "/members"):
        hidden = await api(outsider, "GET", f"/api/rooms/{room}{path}")
        absent = await api(outsider, "GET", f"/api/rooms/{missing}{path}")
        assert hidden[0] == absent[0] == 404
        assert hidden[1]["error"]["code"] == absent[1]["error"]["code"] == "not_found"
        assert (hidden[1]["error"]["message"].replace(room, "X")
                == absent[1]["error"]["message"].replace(missing, "X"))
    for method, path, body in (("POST", "/members", {"user": outsider.user["name"]}),
                               ("PATCH", "", {"topic": "mine now"}),
                               ("POST", "/mutes", {"user": owner.user["name"], "seconds": 5}),
                               ("DELETE", f"/members/{owner.user['name']}", None)):
        status, reply = await api(outsider, method, f"/api/rooms/{room}{path}", body)
        assert (status, reply["error"]["code"]) == (404, "not_found"), (method, path)

    # Asking for its title as a name of one's own reveals nothing: it is free.
    title = (await api(owner, "GET", f"/api/rooms/{room}", expect=200))["title"]
    assert (await api(outsider, "POST", "/api/rooms", {"name": title, "kind": "private"},
                      201))["name"] != room
    assert (await api(outsider, "POST", "/api/rooms", {"name": title}, 201))["name"] == title

    ws = await outsider.ws()
    for frame in ({"type": "join", "room": room}, {"type": "history", "room": room},
                  {"type": "join", "room": missing}):
        reply = await ws.call(frame)
        assert (reply["type"], reply["code"]) == ("error", "not_found")
    for frame in ({"type": "send", "room": room, "body": "hi"},
                  {"type": "typing", "room": room}):
        reply = await ws.call(frame)
        assert reply["type"] == "error" and reply["code"] in ("forbidden", "not_found")
    # Nothing of the room reached the outsider's socket meanwhile.
    await send(ws_owner, room, "still secret")
    reply = await ws.call({"type": "ping"})
    assert reply["type"] == "pong"


async def test_adding_someone_to_a_private_room_tells_every_socket_of_theirs(make_client):
    owner, friend = await person(make_client), await person(make_client)
    room = await make_room(owner, "private")
    elsewhere = await friend.ws()  # a tab that has not joined anything
    await api(owner, "POST", f"/api/rooms/{room}/members", {"user": friend.user["name"]}, 201)
    added = await elsewhere.expect("room_added")
    assert added["room"]["name"] == room and added["room"]["role"] == "member"
    assert (await api(friend, "GET", f"/api/rooms/{room}", expect=200))["member"] is True
    await joined_socket(friend, room)
    (event,) = events(await stream(owner, room), "added")
    assert event["actor"]["id"] == owner.user["id"] and event["target"]["id"] == friend.user["id"]


# Public rooms, membership and the stream's events -----------------------------------

async def test_joining_a_public_room_makes_you_a_member_and_is_an_event(make_client):
    owner, joiner = await person(make_client), await person(make_client)
    room = await make_room(owner)
    watcher = await joined_socket(owner, room)
    assert (await api(joiner, "GET", f"/api/rooms/{room}", expect=200))["member"] is False
    ws = await joiner.ws()
    joined = await ws.join(room)
    event = await watcher.expect("event", event="joined")
    assert event["actor"]["id"] == joiner.user["id"] and event["seq"] == joined["last_seq"]
    # A v1 client reading every record as a message finds the fields it reads.
    assert event["user"] == event["actor"] and event["body"] == ""
    assert joined["messages"][-1]["type"] == "event"
    view = await api(joiner, "GET", f"/api/rooms/{room}", expect=200)
    assert (view["member"], view["role"]) == (True, "member")
    # Joining again (another tab) is no new event.
    await (await joiner.ws()).join(room)
    assert len(events(await stream(owner, room), "joined")) == 1
    members = await api(owner, "GET", f"/api/rooms/{room}/members", expect=200)
    assert {(m["user"]["name"], m["role"]) for m in members["members"]} == {
        (owner.user["name"], "owner"), (joiner.user["name"], "member")}


async def test_leaving_for_good_is_a_membership_change_seen_on_every_socket(make_client):
    owner, member = await person(make_client), await person(make_client)
    room = await make_room(owner)
    one, two = await joined_socket(member, room), await joined_socket(member, room)
    await api(member, "DELETE", f"/api/rooms/{room}/members/{member.user['name']}", expect=204)
    for ws in (one, two):
        removed = await ws.expect("room_removed")
        assert removed == {"type": "room_removed", "room": room, "reason": "left",
                           "actor": member.user}
    await send(await joined_socket(owner, room), room, "after")
    assert (await one.call({"type": "send", "room": room, "body": "x"}))["code"] == "forbidden"
    assert events(await stream(owner, room), "left")
    status, reply = await api(owner, "DELETE",
                              f"/api/rooms/{room}/members/{owner.user['name']}")
    assert (status, reply["error"]["code"]) == (403, "forbidden")  # owners hand over first


async def test_resuming_with_since_replays_the_events_missed(make_client):
    owner, member = await person(make_client), await person(make_client)
    room = await make_room(owner)
    ws = await member.ws()
    top = (await ws.join(room))["last_seq"]
    ws.close()
    await api(owner, "PATCH", f"/api/rooms/{room}", {"topic": "release friday"}, 200)
    again = await (await member.ws()).join(room, since=top)
    (changed,) = [r for r in again["messages"] if r["type"] == "event"]
    assert (changed["event"], changed["topic"], changed["seq"]) == (
        "topic_changed", "release friday", top + 1)


# Roles ------------------------------------------------------------------------------

async def test_each_role_acts_only_on_members_below_it(make_client):
    owner, admin, mod, a, b = [await person(make_client) for _ in range(5)]
    room = await make_room(owner)
    for c in (admin, mod, a, b):
        await (await c.ws()).join(room)

    def role_path(c: Client) -> str:
        return f"/api/rooms/{room}/members/{c.user['name']}/role"

    # Members may not moderate; admins may not make admins; only the owner may.
    assert (await api(a, "DELETE", f"/api/rooms/{room}/members/{b.user['name']}"))[0] == 403
    assert (await api(a, "PUT", role_path(b), {"role": "moderator"}))[0] == 403
    await api(owner, "PUT", role_path(admin), {"role": "admin"}, 200)
    assert (await api(admin, "PUT", role_path(b), {"role": "admin"}))[0] == 403
    await api(admin, "PUT", role_path(mod), {"role": "moderator"}, 200)
    # A moderator kicks members, not moderators or admins.
    assert (await api(mod, "DELETE", f"/api/rooms/{room}/members/{admin.user['name']}"))[0] == 403
    await api(mod, "DELETE", f"/api/rooms/{room}/members/{a.user['name']}", expect=204)
    # Bans are for admins and up.
    status, reply = await api(mod, "POST", f"/api/rooms/{room}/bans", {"user": b.user["name"]})
    assert (status, reply["error"]["reason"]) == (403, "role")
    # Nobody acts on the owner; the owner hands ownership over and becomes an admin.
    assert (await api(admin, "POST", f"/api/rooms/{room}/mutes",
                      {"user": owner.user["name"], "seconds": 60}))[0] == 403
    await api(owner, "PUT", role_path(admin), {"role": "owner"}, 200)
    roles = {m["user"]["name"]: m["role"] for m in
             (await api(owner, "GET", f"/api/rooms/{room}/members", expect=200))["members"]}
    assert roles[admin.user["name"]] == "owner" and roles[owner.user["name"]] == "admin"
    changes = [(e["target"]["name"], e["role"]) for e in
               events(await stream(owner, room), "role_changed")]
    assert changes == [(admin.user["name"], "admin"), (mod.user["name"], "moderator"),
                       (owner.user["name"], "admin"), (admin.user["name"], "owner")]
    assert (await api(a, "PUT", role_path(b), {"role": "king"}))[0] == 400


async def test_a_role_that_is_not_a_string_is_400_bad_request(make_client):
    """A list or an object is no role: 400 like an unknown one, not a 500 (a list is not
    even hashable, so looking it up among the roles raised)."""
    owner, member = await person(make_client), await person(make_client)
    room = await make_room(owner)
    await (await member.ws()).join(room)
    path = f"/api/rooms/{room}/members/{member.user['name']}/role"
    for role in ([], ["admin"], {}, {"role": "admin"}, 1, True, None):
        status, reply = await api(owner, "PUT", path, {"role": role})
        assert (status, reply["error"]["code"]) == (400, "bad_request"), (role, reply)
    members = (await api(owner, "GET", f"/api/rooms/{room}/members", expect=200))["members"]
    assert {m["user"]["name"]: m["role"] for m in members}[member.user["name"]] == "member"


# Moderation -------------------------------------------------------------------------

async def test_a_kicked_member_stops_receiving_at_once_and_may_rejoin(make_client):
    owner, troll, other = [await person(make_client) for _ in range(3)]
    room = await make_room(owner)
    ws_owner = await joined_socket(owner, room)
    ws_troll = await joined_socket(troll, room)
    await joined_socket(other, room)
    await api(owner, "DELETE", f"/api/rooms/{room}/members/{troll.user['name']}", expect=204)
    removed = await ws_troll.expect("room_removed")
    assert (removed["room"], removed["reason"], removed["actor"]) == (room, "kicked",
                                                                      owner.user)
    await send(ws_owner, room, "after the kick")
    reply = await ws_troll.call({"type": "ping"})
    assert reply["type"] == "pong"  # and no message frame came before it
    kick = events(await stream(owner, room), "removed")[-1]
    assert (kick["actor"]["id"], kick["target"]["id"]) == (owner.user["id"], troll.user["id"])
    assert (await ws_troll.join(room))["room"] == room  # a kick is not a ban


async def test_a_ban_refuses_rejoining_until_it_ends_or_is_lifted(make_client):
    owner, troll = await person(make_client), await person(make_client)
    room = await make_room(owner)
    ws = await joined_socket(troll, room)
    reply = await api(owner, "POST", f"/api/rooms/{room}/bans",
                      {"user": troll.user["name"], "seconds": 3600}, 201)
    removed = await ws.expect("room_removed")
    assert (removed["reason"], removed["until"]) == ("banned", reply["until"])
    refused = await ws.call({"type": "join", "room": room})
    assert (refused["code"], refused["reason"], refused["until"]) == (
        "forbidden", "banned", reply["until"])
    status, body = await api(troll, "GET", f"/api/rooms/{room}/messages")
    assert (status, body["error"]["reason"]) == (403, "banned")
    # Nor can anyone add them back while it lasts.
    status, body = await api(owner, "POST", f"/api/rooms/{room}/members",
                             {"user": troll.user["name"]})
    assert (status, body["error"]["reason"]) == (403, "banned")
    bans = await api(owner, "GET", f"/api/rooms/{room}/bans", expect=200)
    assert [(b["user"]["name"], b["until"], b["by"]["name"]) for b in bans["bans"]] == [
        (troll.user["name"], reply["until"], owner.user["name"])]
    assert (await api(troll, "GET", f"/api/rooms/{room}/bans"))[0] == 403
    await api(owner, "DELETE", f"/api/rooms/{room}/bans/{troll.user['name']}", expect=204)
    assert (await ws.join(room))["room"] == room
    kinds = [e["event"] for e in events(await stream(owner, room))]
    assert kinds[-3:] == ["banned", "unbanned", "joined"]


async def test_a_muted_member_reads_but_cannot_send_or_type(make_client):
    owner, loud = await person(make_client), await person(make_client)
    room = await make_room(owner)
    ws_owner = await joined_socket(owner, room)
    ws = await joined_socket(loud, room)
    muted = await api(owner, "POST", f"/api/rooms/{room}/mutes",
                      {"user": loud.user["name"], "seconds": 600}, 201)
    updated = await ws.expect("room_updated")
    assert updated["room"]["muted_until"] == muted["until"]
    for frame in ({"type": "send", "room": room, "body": "hi"},
                  {"type": "typing", "room": room}):
        reply = await ws.call(frame)
        assert (reply["code"], reply["reason"], reply["until"]) == (
            "forbidden", "muted", muted["until"])
    await send(ws_owner, room, "you can still read")
    assert (await ws.expect("message"))["body"] == "you can still read"
    members = (await api(owner, "GET", f"/api/rooms/{room}/members", expect=200))["members"]
    assert {m["user"]["name"]: m["muted_until"] for m in members}[loud.user["name"]] == muted[
        "until"]
    await api(owner, "DELETE", f"/api/rooms/{room}/mutes/{loud.user['name']}", expect=204)
    await ws.expect("room_updated")
    assert (await send(ws, room, "thanks"))["type"] == "ack"
    assert [e["event"] for e in events(await stream(owner, room))][-2:] == ["muted", "unmuted"]


async def test_an_archived_room_is_read_only(make_client):
    owner = await person(make_client)
    room = await make_room(owner)
    ws = await joined_socket(owner, room)
    await api(owner, "PATCH", f"/api/rooms/{room}", {"archived": True}, 200)
    assert (await ws.expect("room_updated"))["room"]["archived"] is True
    reply = await ws.call({"type": "send", "room": room, "body": "late"})
    assert (reply["code"], reply["reason"]) == ("forbidden", "archived")


async def test_server_admins_moderate_public_rooms_but_never_see_private_ones(make_client):
    status, _, _ = await make_client().request(
        "POST", "/api/register", {"username": "operator", "password": "correct horse battery"})
    assert status == 201  # "operator" is the tests' ADMIN_USERS name
    admin = make_client()
    assert (await admin.login("operator"))[0] == 200
    owner, troll = await person(make_client), await person(make_client)
    public = await make_room(owner)
    await joined_socket(troll, public)
    await api(admin, "DELETE", f"/api/rooms/{public}/members/{troll.user['name']}", expect=204)
    private = await make_room(owner, "private")
    assert (await api(admin, "GET", f"/api/rooms/{private}/messages"))[0] == 404
    assert (await api(admin, "PATCH", f"/api/rooms/{private}", {"archived": True}))[0] == 404


# Direct messages --------------------------------------------------------------------

async def test_the_same_people_always_get_the_same_direct_message(make_client):
    a, b, c = [await person(make_client) for _ in range(3)]
    watching = await b.ws()
    room = await api(a, "POST", "/api/dms", {"users": [b.user["name"]]}, 201)
    assert room["kind"] == "dm"
    assert sorted(u["name"] for u in room["members"]) == sorted([a.user["name"],
                                                                 b.user["name"]])
    assert (await watching.expect("room_added"))["room"]["name"] == room["name"]
    again = await api(b, "POST", "/api/dms", {"users": [a.user["name"]]}, 200)
    assert again["name"] == room["name"]
    group = await api(a, "POST", "/api/dms", {"users": [b.user["name"], c.user["name"]]}, 201)
    assert group["name"] != room["name"]
    # A third person learns nothing of the 1:1, and nobody joins it.
    assert (await api(c, "GET", f"/api/rooms/{room['name']}"))[0] == 404
    assert room["name"] not in [r["name"] for r in
                                (await api(c, "GET", "/api/rooms", expect=200))["rooms"]]
    status, _ = await api(a, "POST", f"/api/rooms/{room['name']}/members",
                          {"user": c.user["name"]})
    assert status == 403
    ws = await joined_socket(a, room["name"])
    assert (await send(ws, room["name"], "just us"))["type"] == "ack"
    assert (await api(a, "POST", "/api/dms", {"users": []}))[0] == 400
    assert (await api(a, "POST", "/api/dms", {"users": ["nobody-" + unique_name()]}))[0] == 404


# Across processes ---------------------------------------------------------------------

async def test_moderation_on_one_process_takes_effect_on_the_other_within_a_second(
        make_client, second_node):
    owner = await person(make_client)
    troll = await person(make_client, second_node.base_url)
    loud = await person(make_client, second_node.base_url)
    room = await make_room(owner)
    ws_troll = await joined_socket(troll, room)
    ws_loud = await joined_socket(loud, room)
    loop = asyncio.get_running_loop()
    start = loop.time()
    await api(owner, "POST", f"/api/rooms/{room}/bans", {"user": troll.user["name"]}, 201)
    await api(owner, "POST", f"/api/rooms/{room}/mutes",
              {"user": loud.user["name"], "seconds": 60}, 201)
    await ws_troll.expect("room_removed", timeout=1.0)
    await ws_loud.expect("room_updated", timeout=1.0)
    assert loop.time() - start < 1.0
    reply = await ws_loud.call({"type": "send", "room": room, "body": "x"})
    assert reply["reason"] == "muted"
    assert (await ws_troll.call({"type": "join", "room": room}))["reason"] == "banned"
    ws_owner = await joined_socket(owner, room)
    await send(ws_owner, room, "not for the banned")
    assert (await ws_loud.expect("message"))["body"] == "not for the banned"
    assert (await ws_troll.call({"type": "ping"}))["type"] == "pong"


async def test_first_joins_racing_on_two_processes_reach_everyone_once(make_client,
                                                                      second_node):
    owner = await person(make_client)
    room = await make_room(owner)
    clients = [await person(make_client, url) for url in
               [None, second_node.base_url] * 5]
    sockets = [await c.ws() for c in clients]

    async def join_and_read(ws: Socket) -> list[int]:
        joined = await ws.join(room)
        seqs = [r["seq"] for r in joined["messages"]]
        loop = asyncio.get_running_loop()
        # Read for longer than the watermark check interval (1 s here): a record
        # delivered twice would come from its catch-up.
        deadline = loop.time() + 2.5
        while loop.time() < deadline:
            try:
                frame = await ws.recv(timeout=max(0.01, deadline - loop.time()))
            except asyncio.TimeoutError:
                break
            if frame["type"] in ("message", "event"):
                seqs.append(frame["seq"])
        return seqs

    got = await asyncio.gather(*(join_and_read(ws) for ws in sockets))
    for seqs in got:
        assert sorted(seqs) == list(range(1, len(clients) + 1)), seqs


async def test_a_process_ignores_its_own_membership_change_coming_back(runtime, make_client):
    # A process applies its own changes at once; Redis echoes them to it too.
    client = await person(make_client)
    ws = await client.ws()
    mine = MemberChange(runtime.config.node_id, "general", client.user["id"], "added",
                        {"name": "general"})
    runtime.delivery.on_command(encode_command(mine))
    runtime.delivery.on_command(encode_command(dataclasses.replace(mine, node="another")))
    await ws.send({"type": "ping", "ref": "p"})
    assert await ws.recv() == {"type": "room_added", "room": {"name": "general"}, "actor": None}
    assert (await ws.recv())["type"] == "pong"
