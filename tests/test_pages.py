"""Every list (rooms, bots, tokens) comes in pages: `limit`, `after`, and `next` when more
exist; the default room heads the first page of rooms."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from tests.client import Client, unique_name

MakeClient = Callable[..., Client]


async def person(make_client: MakeClient) -> Client:
    client = make_client()
    await client.register()
    return client


async def create(client: Client, path: str, count: int, name: Callable[[int], str]
                 ) -> list[tuple[int, Any]]:
    """`count` POSTs of {"name"} to `path` at once."""
    replies = await asyncio.gather(*(
        client.request("POST", path, {"name": name(i)}) for i in range(count)))
    return [(status, body) for status, body, _ in replies]


async def every_page(client: Client, path: str, key: str, limit: int) -> list[list[Any]]:
    """Follow `next` through a list; the pages as they came."""
    pages: list[list[Any]] = []
    query = f"?limit={limit}"
    while True:
        status, body, _ = await client.request("GET", path + query)
        assert status == 200, body
        pages.append(body[key])
        if "next" not in body:
            return pages
        assert body["next"] == (body[key][-1]["name"] if key != "tokens"
                                else body[key][-1]["id"]), body
        query = f"?limit={limit}&after={body['next']}"


async def test_general_heads_the_first_page_of_rooms_however_many_sort_before_it(
        make_client: MakeClient) -> None:
    # Rooms that sort before "general", from three users (each within the room quota).
    tag = unique_name("")
    for u in range(3):
        spammer = await person(make_client)
        replies = await create(spammer, "/api/rooms", 40, lambda i, u=u: f"0000{tag}-{u}-{i:02d}")
        assert {s for s, _ in replies} == {201}
    newcomer = await person(make_client)
    status, body, _ = await newcomer.request("GET", "/api/rooms")
    assert status == 200, body
    names = [r["name"] for r in body["rooms"]]
    assert names[0] == "general" and len(names) == 100  # the default page
    assert body["next"] == names[-1]
    assert names[1:] == sorted(names[1:])


async def test_rooms_pages_list_every_room_once_in_order(make_client: MakeClient) -> None:
    client = await person(make_client)
    tag = unique_name("p")
    # Names on both sides of "general".
    mine = [f"a{tag}-{i}" for i in range(4)] + [f"z{tag}-{i}" for i in range(3)]
    assert {s for s, _ in await create(client, "/api/rooms", len(mine),
                                       lambda i: mine[i])} == {201}
    pages = await every_page(client, "/api/rooms", "rooms", 2)
    assert all(len(page) == 2 for page in pages[:-1]) and 1 <= len(pages[-1]) <= 2
    names = [r["name"] for page in pages for r in page]
    assert names == ["general", *sorted(mine)]
    room_keys = {"name", "title", "kind", "topic", "last_seq", "member", "role", "archived"}
    read_keys = {"last_read", "unread", "mentions"}  # of the rooms one is a member of
    assert all(set(r) == room_keys | (read_keys if r["member"] else set())
               for page in pages for r in page)
    # `limit=1`: the page after the first room (general) starts from the beginning.
    status, body, _ = await client.request("GET", "/api/rooms?limit=1")
    assert status == 200 and [r["name"] for r in body["rooms"]] == ["general"]
    assert body["next"] == "general"
    status, body, _ = await client.request("GET", "/api/rooms?limit=1&after=general")
    assert status == 200 and [r["name"] for r in body["rooms"]] == [sorted(mine)[0]]


async def test_bots_and_tokens_come_in_pages(make_client: MakeClient) -> None:
    owner = await person(make_client)
    tag = unique_name("pg")
    names = [f"{tag}-{c}" for c in "edcba"]
    for name in names:
        assert (await owner.request("POST", "/api/bots", {"name": name}))[0] == 201
    pages = await every_page(owner, "/api/bots", "bots", 2)
    assert [[b["name"] for b in page] for page in pages] == [
        sorted(names)[0:2], sorted(names)[2:4], sorted(names)[4:]]

    issued = []
    for i in range(5):
        status, body, _ = await owner.request("POST", f"/api/bots/{names[0]}/tokens",
                                              {"label": f"t{i}"})
        assert status == 201, body
        issued.append(body["id"])
    pages = await every_page(owner, f"/api/bots/{names[0]}/tokens", "tokens", 2)
    assert [len(page) for page in pages] == [2, 2, 1]
    listed = [t for page in pages for t in page]
    assert [t["label"] for t in listed] == [f"t{i}" for i in range(5)]  # oldest first
    assert sorted(t["id"] for t in listed) == sorted(issued)
    # A cursor naming a token that is gone cannot be resumed from.
    status, body, _ = await owner.request("DELETE", f"/api/bots/{names[0]}/tokens/{issued[1]}")
    assert status == 204
    status, body, _ = await owner.request(
        "GET", f"/api/bots/{names[0]}/tokens?limit=2&after={issued[1]}")
    assert status == 400 and body["error"]["code"] == "bad_request"


@pytest.mark.parametrize("path", ["/api/rooms", "/api/bots", "/api/bots/{bot}/tokens"])
async def test_list_limits_are_integers_clamped_to_1_through_1000(
        make_client: MakeClient, path: str) -> None:
    owner = await person(make_client)
    bot = unique_name("lim")
    assert (await owner.request("POST", "/api/bots", {"name": bot}))[0] == 201
    for _ in range(2):
        assert (await owner.request("POST", f"/api/bots/{bot}/tokens", {}))[0] == 201
    await owner.request("POST", "/api/rooms", {"name": unique_name("lim")})
    url = path.format(bot=bot)
    for bad in ("ten", "1.5", "1e3"):
        status, body, _ = await owner.request("GET", f"{url}?limit={bad}")
        assert status == 400 and body["error"]["code"] == "bad_request", (bad, body)
    status, body, _ = await owner.request("GET", f"{url}?after={'x' * 129}")
    assert status == 400
    for clamped in ("0", "-5"):
        status, body, _ = await owner.request("GET", f"{url}?limit={clamped}")
        key = next(iter(body))
        assert status == 200 and len(body[key]) == 1, body
    status, body, _ = await owner.request("GET", f"{url}?limit=5000")
    assert status == 200 and "next" not in body
