"""What a process keeps of sessions, rooms and memberships never outlives a revocation
made on another process: logouts, password changes and kicks take effect at once."""

from __future__ import annotations

import pytest
from tornado.httpclient import HTTPClientError

from tests.client import PASSWORD, Client
from tests.test_api import seed
from tests.test_team import api, make_room, person


def copy_of(client: Client, url: str) -> Client:
    """The same browser's cookies, talking to another process."""
    other = Client(url)
    other.cookies = dict(client.cookies)
    return other


async def refused(client: Client) -> int:
    with pytest.raises(HTTPClientError) as e:
        await client.ws_raw()
    return e.value.code


async def test_a_session_logged_out_on_one_process_opens_no_socket_on_the_other(
        make_client, second_node):
    client = await person(make_client)
    there = copy_of(client, second_node.base_url)
    # The other process has looked the session up (and kept it) for this socket.
    ws = await there.ws()
    assert (await there.ws()).hello["user"] == client.user
    assert (await client.request("POST", "/api/logout"))[0] == 204
    assert (await ws.closed())[0] == 1008  # the revocation has reached that process
    assert await refused(there) == 401
    assert (await there.request("GET", "/api/me"))[0] == 401


async def test_a_password_change_ends_the_other_sessions_on_every_process(
        make_client, second_node):
    laptop = await person(make_client)
    phone = make_client(second_node.base_url)
    assert (await phone.login(laptop.user["name"]))[0] == 200
    ws = await phone.ws()
    status, _, _ = await laptop.request("POST", "/api/password", {
        "old_password": PASSWORD, "new_password": "a new password 1"})
    assert status == 204
    assert (await ws.closed())[0] == 1008
    assert await refused(phone) == 401
    # The session that changed it keeps working, here and there.
    assert (await copy_of(laptop, second_node.base_url).ws()).hello["user"] == laptop.user


async def test_a_kicked_member_is_refused_at_once_on_the_process_that_knew_them(
        make_client, second_node):
    owner = await person(make_client)
    room = await make_room(owner, kind="private")
    member = await person(make_client, second_node.base_url)
    await api(owner, "POST", f"/api/rooms/{room}/members", {"user": member.user["name"]}, 201)
    ws = await member.ws()
    await ws.join(room)  # its process now knows the membership
    await api(owner, "DELETE", f"/api/rooms/{room}/members/{member.user['name']}", expect=204)
    await ws.expect("room_removed")
    again = await ws.call({"type": "join", "room": room})
    assert again["type"] == "error" and again["code"] == "not_found"
    assert (await api(member, "GET", f"/api/rooms/{room}/messages"))[0] == 404
    # Added back: the next join sees the new membership at once too.
    await api(owner, "POST", f"/api/rooms/{room}/members", {"user": member.user["name"]}, 201)
    await ws.expect("room_added")
    assert (await ws.join(room))["room"] == room


async def test_a_role_given_on_one_process_is_the_role_on_the_other(make_client,
                                                                     second_node):
    owner = await person(make_client)
    room = await make_room(owner)
    helper = await person(make_client, second_node.base_url)
    troll = await person(make_client, second_node.base_url)
    ws_troll = await troll.ws()
    await ws_troll.join(room)
    ws = await helper.ws()
    await ws.join(room)  # helper's membership (role member) is known there
    kick = f"/api/rooms/{room}/members/{troll.user['name']}"
    assert (await api(helper, "DELETE", kick))[0] == 403
    await api(owner, "PUT", f"/api/rooms/{room}/members/{helper.user['name']}/role",
              {"role": "moderator"}, 200)
    await ws.expect("room_updated")
    assert (await api(helper, "DELETE", kick))[0] == 204
    await ws_troll.expect("room_removed")


async def test_a_read_position_moved_on_one_process_is_the_one_a_join_on_the_other_gets(
        make_client, base_url, second_node):
    author = await person(make_client)
    ws = await author.ws()
    await ws.join("general")
    seqs = await seed(ws, "general", 5)
    reader = await person(make_client, second_node.base_url)
    there = await reader.ws()
    first = await there.join("general")  # that process now knows the position
    assert (first["last_read"], first["unread"]) == (0, 5)
    here = await copy_of(reader, base_url).ws()
    await here.join("general")
    await here.call({"type": "read", "room": "general", "seq": seqs[3]})
    assert (await there.expect("read"))["seq"] == seqs[3]
    again = await (await reader.ws()).join("general")
    assert (again["last_read"], again["unread"], again["mentions"]) == (seqs[3], 1, 0)


async def test_a_membership_made_by_a_join_is_kept_for_the_next_join(make_client, runtime):
    """A first join of a public room writes the membership: this process keeps what it
    wrote, and the user's next socket joins without reading it back."""
    owner = await person(make_client)
    room = await make_room(owner)
    newcomer = await person(make_client)
    first = await newcomer.ws()
    await first.join(room)  # the first join adds the member (a "joined" event)
    members = runtime.chat.team.cache.members
    misses = members.misses
    second = await newcomer.ws()
    assert (await second.join(room))["room"] == room
    assert members.misses == misses
    # Removed, and added back by the owner on this process: the add keeps the new
    # membership too, and the join after it reads nothing back either.
    await api(owner, "DELETE", f"/api/rooms/{room}/members/{newcomer.user['name']}",
              expect=204)
    await second.expect("room_removed")
    await api(owner, "POST", f"/api/rooms/{room}/members", {"user": newcomer.user["name"]},
              201)
    await second.expect("room_added")
    misses = members.misses
    assert (await second.join(room))["room"] == room
    assert members.misses == misses
