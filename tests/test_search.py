"""Full-text search over the rooms a person can read, on the embedded MongoDB-wire
server (which has no text indexes: the chat server's own word index answers)."""

from __future__ import annotations

import dataclasses
import urllib.parse
from typing import Any

from tests.client import Client
from tests.conftest import close_node, open_node
from tests.test_changes import change, say, socket_in
from tests.test_team import api, make_room, person


async def search(client: Client, expect: int = 200, **params: Any) -> Any:
    path = "/api/search?" + urllib.parse.urlencode(params)
    return await api(client, "GET", path, expect=expect)


def hits(reply: dict[str, Any]) -> list[tuple[str, str]]:
    return [(r["room"], r["message"]["body"]) for r in reply["results"]]


async def test_search_finds_words_and_phrases_only_where_the_caller_can_read(
        runtime, make_client):
    assert runtime.store.text_native is False  # the embedded server: the fallback index
    alice, bob, eve = [await person(make_client) for _ in range(3)]
    public = await make_room(alice)
    private = await make_room(alice, "private")
    ws = await socket_in(alice, public)
    await ws.join(private)
    await say(ws, public, "The deploy window is Friday at noon")
    await say(ws, public, "friday lunch? noon works")
    await say(ws, private, "Salary review deploy Friday, keep it quiet")
    await socket_in(bob, public)

    found = await search(bob, q="friday noon")
    assert hits(found) == [(public, "friday lunch? noon works"),
                           (public, "The deploy window is Friday at noon")]  # newest first
    phrase = await search(bob, q='"deploy window"')
    assert hits(phrase) == [(public, "The deploy window is Friday at noon")]
    # The private room's text is the owner's to find, never a non-member's.
    assert (public, "Salary review deploy Friday, keep it quiet") not in hits(
        await search(alice, q="deploy"))
    assert (private, "Salary review deploy Friday, keep it quiet") in hits(
        await search(alice, q="deploy"))
    for who in (bob, eve):
        assert all(room != private for room, _ in hits(await search(who, q="salary")))
        status, body = await api(who, "GET", f"/api/search?q=salary&room={private}")
        assert (status, body["error"]["code"]) == (404, "not_found")
    # Snippets mark the matched words, as text segments.
    segments = found["results"][1]["snippet"]
    assert [s["text"] for s in segments if s["match"]] == ["Friday", "noon"]
    assert "".join(s["text"] for s in segments) == "The deploy window is Friday at noon"


async def test_deleted_messages_and_old_versions_are_never_found(make_client):
    alice = await person(make_client)
    room = await make_room(alice)
    ws = await socket_in(alice, room)
    typo = await say(ws, room, "the pasword is swordfish")
    await change(ws, {"type": "edit", "room": room, "seq": typo["seq"],
                      "body": "the password is in the vault"})
    gone = await say(ws, room, "temporary token abc123xyz")
    await change(ws, {"type": "delete", "room": room, "seq": gone["seq"]})
    assert hits(await search(alice, q="swordfish")) == []
    assert hits(await search(alice, q="vault")) == [(room, "the password is in the vault")]
    assert hits(await search(alice, q="abc123xyz")) == []


async def test_filters_order_and_pages(make_client):
    alice, bob = await person(make_client), await person(make_client)
    room = await make_room(alice)
    other = await make_room(alice)
    ws_a, ws_b = await socket_in(alice, room), await socket_in(bob, room)
    await ws_a.join(other)
    for i in range(7):
        await say(ws_a if i % 2 else ws_b, room, f"release note {i}")
    await say(ws_a, other, "release elsewhere release release")
    by_alice = await search(bob, q="release", user=alice.user["name"], room=room)
    assert [b for _, b in hits(by_alice)] == ["release note 5", "release note 3",
                                              "release note 1"]
    first = await search(bob, q="release", room=room, limit=4)
    assert len(first["results"]) == 4 and "next" in first
    rest = await search(bob, q="release", room=room, limit=4, cursor=first["next"])
    assert len(rest["results"]) == 3 and "next" not in rest
    seqs = [r["seq"] for r in first["results"] + rest["results"]]
    assert seqs == sorted(seqs, reverse=True) and len(set(seqs)) == 7
    best = await search(bob, q="release", order="best")
    assert hits(best)[0] == (other, "release elsewhere release release")
    future = await search(bob, q="release", after="2999-01-01")
    assert future["results"] == []
    for params in ({"q": ""}, {"q": "the and of"}, {"q": "x", "order": "random"},
                   {"q": "x", "after": "yesterday"}, {"q": "x", "cursor": "!!"},
                   {"q": "x", "limit": "500"}):
        assert (await search(bob, expect=400, **params))["error"]["code"] == "bad_request"
    assert (await search(bob, q="release", user="nobody-at-all"))["results"] == []


async def test_common_words_are_found_through_recent_messages_page_by_page(
        make_client, monkeypatch):
    # A word in at least RARE messages is not walked through its index but through
    # time windows of recent messages; make "common" mean 3 here.
    monkeypatch.setattr("server.search.RARE", 3)
    alice = await person(make_client)
    room = await make_room(alice)
    ws = await socket_in(alice, room)
    acks = [await say(ws, room, f"standup notes {i}") for i in range(8)]
    await say(ws, room, "unrelated")
    seqs: list[int] = []
    cursor = None
    for _ in range(5):
        params = {"q": "standup", "limit": 3, **({"cursor": cursor} if cursor else {})}
        page = await search(alice, **params)
        seqs += [r["seq"] for r in page["results"]]
        cursor = page.get("next")
        if not cursor:
            break
    assert seqs == [a["seq"] for a in reversed(acks)]


async def test_searches_and_new_direct_messages_are_rate_limited_per_user(config, services):
    # Each search may read thousands of candidates: a user gets a burst, then a rate.
    limits = dataclasses.replace(config.limits, search_rate=0.01, search_burst=2,
                                 dm_rate=0.01, dm_burst=1)
    node = await open_node(dataclasses.replace(config, limits=limits), services)
    try:
        alice, bob = Client(node.base_url), Client(node.base_url)
        await alice.register()
        await bob.register()
        for _ in range(2):
            await search(alice, q="anything")
        refused = await search(alice, expect=429, q="anything")
        assert refused["error"]["code"] == "rate_limited" and refused["error"]["retry_after"] > 0
        await search(bob, q="anything")  # per user
        await api(alice, "POST", "/api/dms", {"users": [bob.user["name"]]}, 201)
        status, body = await api(alice, "POST", "/api/dms", {"users": [bob.user["name"]]})
        assert (status, body["error"]["code"]) == (429, "rate_limited")
    finally:
        await close_node(node)
