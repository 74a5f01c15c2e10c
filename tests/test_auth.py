"""Sessions and passwords under attack: rotation, expiry, timing, bcrypt off the IOLoop."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import statistics
import time

import pymongo
import pytest
from tornado.httpclient import HTTPClientError

from tests.client import PASSWORD, Client
from tests.conftest import close_node, open_node


async def test_old_cookies_stay_valid_until_their_key_is_dropped(config, services):
    old = dataclasses.replace(config, cookie_secrets={1: "old-secret-0123456789abcdef"})
    node = await open_node(old, services)
    try:
        client = Client(node.base_url)
        await client.register()
        old_cookie = client.cookies["session"]
        assert old_cookie.startswith("2|1:1|")  # signed with key version 1
    finally:
        await close_node(node)
    rotated = dataclasses.replace(config, cookie_secrets={1: "old-secret-0123456789abcdef",
                                                          2: "new-secret-0123456789abcdef"})
    node = await open_node(rotated, services)
    try:
        client.base = node.base_url
        assert (await client.request("GET", "/api/me"))[0] == 200
        fresh = Client(node.base_url)
        await fresh.login(client.user["name"])
        assert fresh.cookies["session"].startswith("2|1:2|")  # new cookies use key 2
    finally:
        await close_node(node)
    dropped = dataclasses.replace(config, cookie_secrets={2: "new-secret-0123456789abcdef"})
    node = await open_node(dropped, services)
    try:
        client.base = node.base_url
        client.cookies["session"] = old_cookie
        assert (await client.request("GET", "/api/me"))[0] == 401
        with pytest.raises(HTTPClientError) as err:
            await client.ws_raw()
        assert err.value.code == 401
        fresh.base = node.base_url
        assert (await fresh.request("GET", "/api/me"))[0] == 200
    finally:
        await close_node(node)


async def test_expired_session_is_401_on_http_and_upgrade(make_client, config, services):
    client = make_client()
    me = await client.register()
    with pymongo.MongoClient(services.mongo_url) as mongo:
        mongo[config.db_name].sessions.update_many(
            {"user_id": me["id"]},
            {"$set": {"expires_at": dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=1)}})
    assert (await client.request("GET", "/api/me"))[0] == 401
    with pytest.raises(HTTPClientError) as err:
        await client.ws_raw()
    assert err.value.code == 401


async def test_every_login_gets_a_new_session_id(make_client):
    first = make_client()
    await first.register()
    second = make_client()
    await second.login(first.user["name"])
    third = make_client()
    await third.login(first.user["name"])
    cookies = {c.cookies["session"] for c in (first, second, third)}
    assert len(cookies) == 3
    for c in (first, second, third):  # separate devices stay logged in
        assert (await c.request("GET", "/api/me"))[0] == 200


async def test_password_change_closes_other_sessions_sockets_within_a_second(make_client):
    here = make_client()
    await here.register()
    there = make_client()
    await there.login(here.user["name"])
    other_socket = await there.ws()
    own_socket = await here.ws()
    status, _, _ = await here.request("POST", "/api/password",
                                      {"old_password": PASSWORD, "new_password": "n" * 12})
    assert status == 204
    code, _ = await other_socket.closed(timeout=1.0)
    assert code == 1008
    assert (await own_socket.call({"type": "ping"}))["type"] == "pong"
    assert (await there.request("GET", "/api/me"))[0] == 401
    assert (await make_client().login(here.user["name"], "n" * 12))[0] == 200


async def test_unknown_user_and_wrong_password_cost_the_same_bcrypt_time(config, services):
    # Real cost factor, so a skipped bcrypt (about 1 ms) would stand out against one
    # that ran (tens of milliseconds).
    node = await open_node(dataclasses.replace(config, bcrypt_rounds=10), services)
    try:
        client = Client(node.base_url)
        await client.register()
        name = client.user["name"]

        async def timed(username: str) -> tuple[float, int, object]:
            probe = Client(node.base_url)
            await probe.request("GET", "/")
            start = time.perf_counter()
            status, body = await probe.login(username, "definitely-wrong")
            return time.perf_counter() - start, status, body

        wrong = [await timed(name) for _ in range(5)]
        unknown = [await timed("no-such-user-x") for _ in range(5)]
        assert {s for _, s, _ in wrong + unknown} == {401}
        assert len({str(b) for _, _, b in wrong + unknown}) == 1
        ratio = statistics.median(t for t, _, _ in unknown) / statistics.median(
            t for t, _, _ in wrong)
        assert 0.5 < ratio < 2.0, ratio
    finally:
        await close_node(node)


async def test_concurrent_logins_do_not_block_other_clients(config, services):
    node = await open_node(dataclasses.replace(config, bcrypt_rounds=12), services)
    try:
        user = Client(node.base_url)
        await user.register()
        chatter = Client(node.base_url)
        await chatter.register()
        ws = await chatter.ws()
        worst = 0.0
        logins = asyncio.gather(*(Client(node.base_url).login(user.user["name"])
                                  for _ in range(20)))
        logins_task = asyncio.ensure_future(logins)
        while not logins_task.done():
            start = time.perf_counter()
            assert (await ws.call({"type": "ping"}))["type"] == "pong"
            worst = max(worst, time.perf_counter() - start)
            await asyncio.sleep(0.02)  # pacing of the probe, not a wait for an event
        assert all(status == 200 for status, _ in logins_task.result())
        assert worst < 0.1, f"a ping waited {worst * 1000:.0f} ms behind bcrypt"
    finally:
        await close_node(node)
