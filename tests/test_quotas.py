"""Quotas on rooms, bots and tokens: answered 403 `quota_exceeded`, even to racing requests.

These tests run with the shipped quotas (50 rooms per user with their bots, 20 bots per
user, 20 tokens per bot), not the test suite's generous ones.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from typing import Any

import pytest

from server.config import Config, Quotas
from tests.client import Client, unique_name
from tests.test_pages import every_page

MakeClient = Callable[..., Client]
ROOMS, BOTS, TOKENS = Quotas().rooms_per_user, Quotas().bots_per_user, Quotas().tokens_per_bot


@pytest.fixture
def config(config: Config) -> Config:
    return dataclasses.replace(config, quotas=Quotas())


async def person(make_client: MakeClient) -> Client:
    client = make_client()
    await client.register()
    return client


async def create(client: Client, path: str, count: int, name: Callable[[int], str] | None = None,
                 ) -> list[tuple[int, Any]]:
    """`count` POSTs to `path` at once ({"name"} bodies when `name` is given)."""
    replies = await asyncio.gather(*(
        client.request("POST", path, {"name": name(i)} if name else {}) for i in range(count)))
    return [(status, body) for status, body, _ in replies]


def assert_quota_error(status: int, body: Any, limit: int) -> None:
    assert status == 403, (status, body)
    assert body["error"]["code"] == "quota_exceeded", body
    assert body["error"]["limit"] == limit and body["error"]["message"], body


# Quotas ----------------------------------------------------------------------------------


async def test_room_quota_refuses_more_rooms_even_when_requests_race(
        make_client: MakeClient) -> None:
    client = await person(make_client)
    tag = unique_name("q")
    replies = await create(client, "/api/rooms", ROOMS + 30, lambda i: f"{tag}-{i}")
    statuses = [status for status, _ in replies]
    assert statuses.count(201) == ROOMS, statuses
    assert statuses.count(403) == 30, statuses
    for status, body in replies:
        if status == 403:
            assert_quota_error(status, body, ROOMS)
    status, body, _ = await client.request("POST", "/api/rooms", {"name": f"{tag}-late"})
    assert_quota_error(status, body, ROOMS)
    # The quota is the user's: someone else still creates rooms.
    other = await person(make_client)
    status, body, _ = await other.request("POST", "/api/rooms", {"name": f"{tag}-other"})
    assert status == 201, body


async def test_rooms_a_bot_creates_count_against_its_owner(make_client: MakeClient) -> None:
    owner = await person(make_client)
    tag = unique_name("owned")
    statuses = {s for s, _ in await create(owner, "/api/rooms", ROOMS - 1,
                                           lambda i: f"{tag}-{i}")}
    assert statuses == {201}
    assert (await owner.request("POST", "/api/bots", {"name": f"{tag}-bot"}))[0] == 201
    status, issued, _ = await owner.request("POST", f"/api/bots/{tag}-bot/tokens", {})
    assert status == 201, issued
    bot = make_client()
    bot.token = issued["token"]
    status, body, _ = await bot.request("POST", "/api/rooms", {"name": f"{tag}-by-bot"})
    assert status == 201, body
    status, body, _ = await bot.request("POST", "/api/rooms", {"name": f"{tag}-by-bot-2"})
    assert_quota_error(status, body, ROOMS)
    status, body, _ = await owner.request("POST", "/api/rooms", {"name": f"{tag}-mine"})
    assert_quota_error(status, body, ROOMS)


async def test_bot_quota_holds_under_racing_requests_and_deleting_a_bot_frees_a_place(
        make_client: MakeClient) -> None:
    owner = await person(make_client)
    tag = unique_name("b")
    replies = await create(owner, "/api/bots", BOTS + 10, lambda i: f"{tag}-{i}")
    statuses = [status for status, _ in replies]
    assert statuses.count(201) == BOTS and statuses.count(403) == 10, statuses
    assert_quota_error(*next(r for r in replies if r[0] == 403), BOTS)
    created = [body["name"] for status, body in replies if status == 201]
    pages = await every_page(owner, "/api/bots", "bots", 100)
    assert sorted(b["name"] for b in pages[0]) == sorted(created)

    status, _, _ = await owner.request("DELETE", f"/api/bots/{created[0]}")
    assert status == 204
    status, body, _ = await owner.request("POST", "/api/bots", {"name": f"{tag}-again"})
    assert status == 201, body
    status, body, _ = await owner.request("POST", "/api/bots", {"name": f"{tag}-more"})
    assert_quota_error(status, body, BOTS)


async def test_token_quota_holds_under_racing_requests_and_revoking_frees_a_place(
        make_client: MakeClient) -> None:
    owner = await person(make_client)
    bot = unique_name("tokbot")
    assert (await owner.request("POST", "/api/bots", {"name": bot}))[0] == 201
    replies = await create(owner, f"/api/bots/{bot}/tokens", TOKENS + 10)
    statuses = [status for status, _ in replies]
    assert statuses.count(201) == TOKENS and statuses.count(403) == 10, statuses
    assert_quota_error(*next(r for r in replies if r[0] == 403), TOKENS)
    status, listing, _ = await owner.request("GET", f"/api/bots/{bot}/tokens")
    assert status == 200 and len(listing["tokens"]) == TOKENS and "next" not in listing

    first = listing["tokens"][0]["id"]
    assert (await owner.request("DELETE", f"/api/bots/{bot}/tokens/{first}"))[0] == 204
    status, body, _ = await owner.request("POST", f"/api/bots/{bot}/tokens", {})
    assert status == 201, body
    status, body, _ = await owner.request("POST", f"/api/bots/{bot}/tokens", {})
    assert_quota_error(status, body, TOKENS)
    # Revoking them all frees every place.
    status, body, _ = await owner.request("DELETE", f"/api/bots/{bot}/tokens")
    assert status == 200 and body == {"revoked": TOKENS}
    statuses = [s for s, _ in await create(owner, f"/api/bots/{bot}/tokens", TOKENS)]
    assert statuses == [201] * TOKENS
