"""Full-text search over the rooms a person can read, on the embedded MongoDB-wire
server (which has no text indexes: the chat server's own word index answers)."""

from __future__ import annotations

import base64
import dataclasses
import json
import time
import urllib.parse
from typing import Any

from tests.client import Client, Socket
from tests.conftest import close_node, open_node
from tests.test_changes import change, say, socket_in
from tests.test_team import api, make_room, person


async def search(client: Client, expect: int = 200, **params: Any) -> Any:
    path = "/api/search?" + urllib.parse.urlencode(params)
    return await api(client, "GET", path, expect=expect)


def hits(reply: dict[str, Any]) -> list[tuple[str, str]]:
    return [(r["room"], r["message"]["body"]) for r in reply["results"]]


def forged(data: Any) -> str:
    """A cursor as the server encodes one, holding what a client chose."""
    text = data if isinstance(data, str) else json.dumps(data)
    return base64.urlsafe_b64encode(text.encode()).decode()


async def burst(ws: Socket, room: str, bodies: list[str]) -> list[dict[str, Any]]:
    """Send all the bodies before reading any ack (a writer tick then stores most of
    them together, with one `ts`); the acks in the order sent."""
    for i, body in enumerate(bodies):
        await ws.send({"type": "send", "room": room, "body": body, "ref": f"burst-{i}"})
    acks: dict[str, dict[str, Any]] = {}
    while len(acks) < len(bodies):
        frame = await ws.expect("ack")
        acks[frame["ref"]] = frame
    return [acks[f"burst-{i}"] for i in range(len(bodies))]


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


async def test_forged_cursors_are_refused_before_any_walk(make_client):
    # A cursor `ts` far in the future once walked back through windows growing 4 times
    # each, until one window read every message stored; numbers beyond what BSON holds
    # and deeply nested JSON were 500s.
    alice = await person(make_client)
    room = await make_room(alice)
    ws = await socket_in(alice, room)
    await say(ws, room, "hello from the present")
    now = int(time.time() * 1000)
    oid = "65f000000000000000000000"
    for data in ({"ts": 4102444800000}, {"ts": 4102444800000, "id": oid},
                 {"ts": now + 3_600_000}, {"ts": 2**64}, {"ts": -(2**64)}, {"ts": 0},
                 {"ts": now * 1.0}, {"ts": True}, {"ts": str(now)}, {"ts": now, "id": 7},
                 {"ts": now, "id": "not-an-id"}, {"before": "zz"}, {"before": 2**64},
                 {"offset": 2**64}, {"offset": -1}, {"skip": 2**64}, {"skip": -1},
                 {"other": 1}, [now], "[" * 5000, "{\"ts\":" * 5000, "9" * 5000):
        reply = await search(alice, expect=400, q="hello", cursor=forged(data))
        assert reply["error"]["code"] == "bad_request", data
        assert "cursor" in reply["error"]["message"]
        reply = await search(alice, expect=400, q="hello", order="best", cursor=forged(data))
        assert reply["error"]["code"] == "bad_request", data
    # A cursor of a process whose clock is a little ahead still goes on from its `ts`.
    ahead = await search(alice, q="hello", cursor=forged({"ts": now + 30_000}))
    assert hits(ahead) == [(room, "hello from the present")]


async def test_numbers_in_the_query_string_are_ascii_digits_or_400(make_client):
    alice = await person(make_client)
    room = await make_room(alice)
    await say(await socket_in(alice, room), room, "numbers")
    for name, raw in (("after", "\u00b2"), ("before", "\u00b2"), ("limit", "\u00b2"),
                      ("after", "\u0663"), ("limit", "\u0663"), ("after", "9" * 5000),
                      ("before", "9" * 5000), ("limit", "9" * 5000), ("after", "1" * 16),
                      ("limit", "+5"), ("limit", "5.0"), ("after", "-1")):
        reply = await search(alice, expect=400, q="numbers", **{name: raw})
        assert reply["error"]["code"] == "bad_request", (name, raw)
        assert name in reply["error"]["message"], (name, raw)
    assert hits(await search(alice, q="numbers", after="0", before="9" * 15,
                             limit="01")) == [(room, "numbers")]


async def test_a_page_of_the_recent_walk_reads_at_most_the_scan_budget(
        make_client, monkeypatch):
    # A window once read every record in it whatever the budget: one busy stretch,
    # met by a wide window, came back whole. Now no page reads more than SCAN_LIMIT
    # records, even inside one writer tick's records (one `ts`), and the pages still
    # give every hit once, newest first.
    monkeypatch.setattr("server.search.RARE", 3)
    monkeypatch.setattr("server.search.SCAN_LIMIT", 5)
    alice = await person(make_client)
    room = await make_room(alice)
    ws = await socket_in(alice, room)
    acks = await burst(ws, room, [f"standup notes {i}" for i in range(12)])
    acks += await burst(ws, room, ["unrelated", "standup again", "unrelated too"])
    wanted = [a["seq"] for a in reversed(acks[:12] + acks[13:14])]
    seqs: list[int] = []
    cursor = None
    for _ in range(50):  # the burst's pages, then a year of empty history per page
        page = await search(alice, q="standup", limit=50,
                            **({"cursor": cursor} if cursor else {}))
        assert len(page["results"]) <= 5
        seqs += [r["seq"] for r in page["results"]]
        cursor = page.get("next")
        if not cursor:
            break
    assert seqs == wanted and cursor is None
    # The walk keeps within the dates asked for: after the last record, it reads
    # nothing and is done (it used to read the newest window whole, then stop short).
    after = max(a["ts"] for a in acks) + 1
    assert await search(alice, q="standup", after=str(after)) == {"results": []}
