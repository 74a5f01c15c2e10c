"""Edits, deletes, reactions and replies: events in the room's stream, over real
sockets, Redis and MongoDB, on one process and across two."""

from __future__ import annotations

import copy
from typing import Any

import pymongo

from tests.client import Client, Socket, messages_of
from tests.test_team import api, make_room, person


async def socket_in(client: Client, room: str) -> Socket:
    ws = await client.ws()
    await ws.join(room)
    return ws


async def say(ws: Socket, room: str, body: str, **extra: Any) -> dict[str, Any]:
    ack = await ws.call({"type": "send", "room": room, "body": body, **extra})
    assert ack["type"] == "ack", ack
    return ack


async def change(ws: Socket, frame: dict[str, Any]) -> dict[str, Any]:
    reply = await ws.call(frame)
    assert reply["type"] == "ack", reply
    return reply


async def page(client: Client, room: str) -> list[dict[str, Any]]:
    return (await api(client, "GET", f"/api/rooms/{room}/messages?limit=100", expect=200))[
        "messages"]


def fold(held: dict[int, dict[str, Any]], record: dict[str, Any]) -> None:
    """docs/protocol.md's folding rule: what a client does with each record it gets."""
    if record["type"] == "message":
        held.setdefault(record["seq"], copy.deepcopy(record))
        original = held.get(record.get("reply_to") or -1)
        if original is not None and record["seq"] > original.get("state_seq", 0):
            original["replies"] = original.get("replies", 0) + 1
            original["state_seq"] = record["seq"]
        return
    if record["type"] != "event" or "message_seq" not in record:
        return
    m = held.get(record["message_seq"])
    if m is None or record["seq"] <= m.get("state_seq", 0):
        return
    m["state_seq"] = record["seq"]
    if record["event"] == "deleted":
        m.update(deleted=True, body="")
        m.pop("reactions", None)
        m.pop("edited_at", None)
    elif m.get("deleted"):
        return  # an edit or reaction that raced with the delete changes nothing
    elif record["event"] == "edited":
        m.update(body=record["new_body"], edited_at=record["edited_at"])
    elif record["event"] == "reacted":
        groups = {r["emoji"]: list(r["users"]) for r in m.get("reactions", [])}
        users = groups.setdefault(record["emoji"], [])
        uid = record["actor"]["id"]
        if record["on"] and uid not in users:
            users.append(uid)
        elif not record["on"] and uid in users:
            users.remove(uid)
        reactions = [{"emoji": e, "count": len(u), "users": u} for e, u in groups.items() if u]
        if reactions:
            m["reactions"] = reactions
        else:
            m.pop("reactions", None)


def state(held: dict[int, dict[str, Any]]) -> dict[int, dict[str, Any]]:
    keys = ("body", "deleted", "edited_at", "reactions", "replies", "reply_to")
    return {seq: {k: m.get(k) for k in keys} for seq, m in held.items()}


async def test_an_edit_reaches_everyone_and_history_shows_the_new_text(make_client):
    owner, other = await person(make_client), await person(make_client)
    room = await make_room(owner)
    ws, watcher = await socket_in(owner, room), await socket_in(other, room)
    sent = await say(ws, room, "helo")
    await watcher.expect("message")
    ack = await change(ws, {"type": "edit", "room": room, "seq": sent["seq"], "body": "hello",
                            "client_id": "e1"})
    event = await watcher.expect("event", event="edited")
    assert (event["seq"], event["message_seq"], event["new_body"]) == (ack["seq"], sent["seq"],
                                                                       "hello")
    assert event["actor"] == owner.user and event["client_id"] == "e1"
    (message,) = messages_of(await page(other, room))
    assert (message["body"], message["edited_at"], message["state_seq"]) == (
        "hello", event["edited_at"], event["seq"])
    # Only the author edits; a message that does not exist is not_found.
    refused = await watcher.call({"type": "edit", "room": room, "seq": sent["seq"],
                                  "body": "mine now"})
    assert (refused["code"], refused["reason"]) == ("forbidden", "not_author")
    missing = await ws.call({"type": "edit", "room": room, "seq": 999, "body": "x"})
    assert missing["code"] == "not_found"
    # A resend of the edit is answered with the original ack and stores nothing.
    again = await change(ws, {"type": "edit", "room": room, "seq": sent["seq"],
                              "body": "hello", "client_id": "e1"})
    assert (again["seq"], again["id"]) == (ack["seq"], ack["id"])


async def test_a_delete_leaves_a_tombstone_and_no_text_in_mongodb(make_client, config,
                                                                   services):
    owner, author = await person(make_client), await person(make_client)
    room = await make_room(owner)
    ws_owner, ws = await socket_in(owner, room), await socket_in(author, room)
    secret = await say(ws, room, "my password is hunter2")
    await change(ws, {"type": "edit", "room": room, "seq": secret["seq"],
                      "body": "my password is hunter3"})
    keep = await say(ws_owner, room, "unrelated")
    # A member cannot delete another's message; the author and moderators can.
    refused = await ws.call({"type": "delete", "room": room, "seq": keep["seq"]})
    assert (refused["code"], refused["reason"]) == ("forbidden", "role")
    await change(ws_owner, {"type": "delete", "room": room, "seq": secret["seq"]})
    event = await ws.expect("event", event="deleted")
    assert event["message_seq"] == secret["seq"] and event["target"] == author.user
    tomb = next(m for m in await page(author, room) if m["seq"] == secret["seq"])
    assert (tomb["deleted"], tomb["body"], tomb.get("edited_at")) == (True, "", None)
    with pymongo.MongoClient(services.mongo_url) as mongo:
        docs = list(mongo[config.db_name].messages.find({"room": room}))
    assert not any("hunter" in repr(d) for d in docs), [d for d in docs if "hunter" in repr(d)]
    # A deleted message cannot be edited or reacted to.
    for frame in ({"type": "edit", "room": room, "seq": secret["seq"], "body": "back"},
                  {"type": "react", "room": room, "seq": secret["seq"], "emoji": "👍"}):
        assert (await ws.call(frame))["code"] == "not_found"


async def test_reactions_count_each_person_once_per_emoji(make_client):
    owner, a, b = [await person(make_client) for _ in range(3)]
    room = await make_room(owner)
    ws_owner = await socket_in(owner, room)
    ws_a, ws_b = await socket_in(a, room), await socket_in(b, room)
    sent = await say(ws_owner, room, "ship it?")
    for ws in (ws_a, ws_a, ws_b):  # a twice: still one reaction
        await change(ws, {"type": "react", "room": room, "seq": sent["seq"], "emoji": "👍"})
    await change(ws_b, {"type": "react", "room": room, "seq": sent["seq"], "emoji": ":tada:"})
    await change(ws_b, {"type": "react", "room": room, "seq": sent["seq"], "emoji": ":tada:",
                        "on": False})
    message = next(m for m in await page(owner, room) if m["seq"] == sent["seq"])
    assert message["reactions"] == [{"emoji": "👍", "count": 2,
                                     "users": [a.user["id"], b.user["id"]]}]
    bad = await ws_a.call({"type": "react", "room": room, "seq": sent["seq"],
                           "emoji": "<b>"})
    assert bad["code"] == "bad_request"


async def test_a_reply_quotes_its_original_which_counts_it_once(make_client):
    owner = await person(make_client)
    room = await make_room(owner)
    ws = await socket_in(owner, room)
    question = await say(ws, room, "lunch?")
    answer = await say(ws, room, "yes", reply_to=question["seq"], client_id="r1")
    again = await say(ws, room, "yes", reply_to=question["seq"], client_id="r1")
    assert again["seq"] == answer["seq"]
    records = {m["seq"]: m for m in messages_of(await page(owner, room))}
    assert records[answer["seq"]]["reply_to"] == question["seq"]
    assert records[question["seq"]]["replies"] == 1
    missing = await ws.call({"type": "send", "room": room, "body": "?", "reply_to": 999})
    assert missing["code"] == "not_found"


async def test_a_client_away_during_changes_resumes_into_exactly_the_current_state(
        make_client, second_node):
    owner = await person(make_client)
    member = await person(make_client, second_node.base_url)
    room = await make_room(owner)
    ws = await socket_in(owner, room)
    away = await member.ws()
    joined = await away.join(room)
    held: dict[int, dict[str, Any]] = {}
    for record in joined["messages"]:
        fold(held, record)
    first = await say(ws, room, "first draft")
    second = await say(ws, room, "oops, secret")
    third = await say(ws, room, "vote here")
    for _ in range(3):  # the member's copy is live, up to here
        fold(held, await away.expect("message"))
    top = third["seq"]
    away.close()
    # Meanwhile, on the other process: an edit, a delete, reactions, a reply.
    await change(ws, {"type": "edit", "room": room, "seq": first["seq"], "body": "final"})
    await change(ws, {"type": "delete", "room": room, "seq": second["seq"]})
    await change(ws, {"type": "react", "room": room, "seq": third["seq"], "emoji": "👍"})
    await change(ws, {"type": "react", "room": room, "seq": third["seq"], "emoji": "👎"})
    await change(ws, {"type": "react", "room": room, "seq": third["seq"], "emoji": "👎",
                      "on": False})
    await say(ws, room, "see above", reply_to=third["seq"])
    back = await (await member.ws()).join(room, since=top)
    for record in back["messages"]:
        fold(held, record)
    fresh: dict[int, dict[str, Any]] = {}
    for record in await page(member, room):
        fold(fresh, record)
    assert state(held) == state(fresh)
    assert held[first["seq"]]["body"] == "final" and held[second["seq"]]["deleted"]
    assert held[third["seq"]]["replies"] == 1
    assert [r["emoji"] for r in held[third["seq"]]["reactions"]] == ["👍"]


async def test_muted_members_cannot_edit_or_react_but_may_delete_their_own(make_client):
    owner, loud = await person(make_client), await person(make_client)
    room = await make_room(owner)
    ws = await socket_in(loud, room)
    sent = await say(ws, room, "regret")
    await api(owner, "POST", f"/api/rooms/{room}/mutes", {"user": loud.user["name"],
                                                          "seconds": 60}, 201)
    await ws.expect("room_updated")
    for frame in ({"type": "edit", "room": room, "seq": sent["seq"], "body": "x"},
                  {"type": "react", "room": room, "seq": sent["seq"], "emoji": "👍"}):
        assert (await ws.call(frame))["reason"] == "muted"
    await change(ws, {"type": "delete", "room": room, "seq": sent["seq"]})


async def test_a_resent_edit_never_undoes_a_later_one_and_is_acked_after_a_delete(make_client):
    owner = await person(make_client)
    room = await make_room(owner)
    ws = await socket_in(owner, room)
    sent = await say(ws, room, "v0")
    first = {"type": "edit", "room": room, "seq": sent["seq"], "body": "v1", "client_id": "e1"}
    ack1 = await change(ws, first)
    ack2 = await change(ws, {**first, "body": "v2", "client_id": "e2"})
    # The first edit's ack was lost: the client resends it (protocol §12).
    again = await change(ws, first)
    assert (again["seq"], again["id"]) == (ack1["seq"], ack1["id"])
    (message,) = messages_of(await page(owner, room))
    assert (message["body"], message["state_seq"]) == ("v2", ack2["seq"])
    # Deleted since: a resend is still answered with its original ack, not not_found.
    await change(ws, {"type": "delete", "room": room, "seq": sent["seq"], "client_id": "d1"})
    late = await change(ws, first)
    assert (late["seq"], late["id"]) == (ack1["seq"], ack1["id"])
    assert (await ws.call({**first, "client_id": "e3"}))["code"] == "not_found"


async def test_a_moderator_deletes_members_messages_but_not_those_of_higher_roles(make_client):
    owner, admin, mod, member = [await person(make_client) for _ in range(4)]
    room = await make_room(owner)
    sockets = {c.user["name"]: await socket_in(c, room) for c in (owner, admin, mod, member)}
    for who, role in ((admin, "admin"), (mod, "moderator")):
        await api(owner, "PUT", f"/api/rooms/{room}/members/{who.user['name']}/role",
                  {"role": role}, 200)
    said = {name: await say(ws, room, f"from {name}") for name, ws in sockets.items()}
    mod_ws = sockets[mod.user["name"]]
    for above in (owner, admin):
        refused = await mod_ws.call({"type": "delete", "room": room,
                                     "seq": said[above.user["name"]]["seq"]})
        assert (refused["code"], refused["reason"]) == ("forbidden", "role"), refused
    await change(mod_ws, {"type": "delete", "room": room, "seq": said[member.user["name"]]["seq"]})
    await change(sockets[admin.user["name"]], {
        "type": "delete", "room": room, "seq": said[mod.user["name"]]["seq"]})
    deleted = {m["seq"] for m in messages_of(await page(owner, room)) if m.get("deleted")}
    assert deleted == {said[member.user["name"]]["seq"], said[mod.user["name"]]["seq"]}


async def test_sends_that_read_first_keep_their_place_among_a_connections_sends(make_client):
    # A reply, a mention and a plain send, back to back: stored in the order sent
    # (protocol §7), although the first two read MongoDB before they are queued.
    owner, other = await person(make_client), await person(make_client)
    room = await make_room(owner)
    ws = await socket_in(owner, room)
    await socket_in(other, room)
    first = await say(ws, room, "first")
    frames = [{"body": "a reply", "reply_to": first["seq"]},
              {"body": f"hi @{other.user['name']}"}, {"body": "plain"},
              {"body": f"again @{other.user['name']}"}, {"body": "plain again"}]
    for i, extra in enumerate(frames):
        await ws.send({"type": "send", "room": room, "client_id": f"o{i}", "ref": i, **extra})
    acks: dict[int, int] = {}
    while len(acks) < len(frames):
        frame = await ws.recv()
        if frame["type"] == "ack":
            acks[frame["ref"]] = frame["seq"]
    assert [acks[i] for i in range(len(frames))] == sorted(acks.values()), acks

