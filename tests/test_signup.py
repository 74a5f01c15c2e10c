"""Who may sign up (open, invite, closed; invites), account deactivation, user search."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

import pymongo
import pytest
from tornado.httpclient import HTTPClientError

from server.config import ConfigError, load_config
from tests.client import PASSWORD, Client, unique_name
from tests.conftest import Node, close_node, open_node

OPERATOR = "operator"  # the conftest config's ADMIN_USERS


@contextlib.asynccontextmanager
async def server(config, services, mode: str) -> AsyncIterator[Node]:
    node = await open_node(dataclasses.replace(config, registration=mode), services)
    try:
        yield node
    finally:
        await close_node(node)


async def operator_of(url: str) -> Client:
    """The server admin: an ADMIN_USERS name registers without an invite while nobody
    holds it, in every mode but closed."""
    admin = Client(url)
    await admin.register(OPERATOR)
    return admin


async def register(url: str, name: str | None = None, invite: Any = None
                   ) -> tuple[int, Any]:
    body: dict[str, Any] = {"username": name or unique_name(), "password": PASSWORD}
    if invite is not None:
        body["invite"] = invite
    status, reply, _ = await Client(url).request("POST", "/api/register", body)
    return status, reply


async def mint(admin: Client, **body: Any) -> dict[str, Any]:
    status, invite, _ = await admin.request("POST", "/api/invites", body)
    assert status == 201, invite
    return invite


def db(services, config):
    return pymongo.MongoClient(services.mongo_url)[config.db_name]


# Modes ------------------------------------------------------------------------------


def test_registration_mode_comes_from_the_flag_or_env_and_is_validated(tmp_path):
    env = {"CHAT_DATA_DIR": str(tmp_path)}
    assert load_config([], env=env).registration == "open"
    assert load_config([], env={**env, "CHAT_REGISTRATION": "invite"}).registration == "invite"
    assert load_config(["--registration", "closed"],
                       env={**env, "CHAT_REGISTRATION": "invite"}).registration == "closed"
    with pytest.raises(ConfigError, match=r"CHAT_REGISTRATION.*open, invite, closed"):
        load_config([], env={**env, "CHAT_REGISTRATION": "friends"})


async def test_open_mode_registers_anyone_and_ignores_an_invite(base_url):
    status, me = await register(base_url, invite="not-a-code")
    assert status == 201 and me["bot"] is False
    status, info, _ = await Client(base_url).request("GET", "/api/server")
    assert (status, info) == (200, {"registration": "open"})


async def test_closed_mode_refuses_every_registration_but_logins_work(config, services):
    async with server(config, services, "open") as node:
        name = unique_name()
        assert (await register(node.base_url, name))[0] == 201
    async with server(config, services, "closed") as node:
        status, info, _ = await Client(node.base_url).request("GET", "/api/server")
        assert (status, info) == (200, {"registration": "closed"})
        for who in (unique_name(), OPERATOR):
            status, body = await register(node.base_url, who, invite="whatever")
            assert status == 403 and body["error"]["code"] == "registration_closed", body
        assert (await Client(node.base_url).login(name))[0] == 200


async def test_invite_mode_needs_a_live_invite_and_each_use_admits_one_account(
        config, services):
    async with server(config, services, "invite") as node:
        url = node.base_url
        info = (await Client(url).request("GET", "/api/server"))[1]
        assert info == {"registration": "invite"}
        for bad in (None, "", "nope", "x" * 500, 42):
            status, body = await register(url, invite=bad)
            assert status == 403 and body["error"]["code"] == "invite_required", (bad, body)
        admin = await operator_of(url)
        invite = await mint(admin, uses=2)
        assert invite["uses_left"] == 2 and len(invite["code"]) >= 22  # ≥ 128 bits
        assert invite["prefix"] == invite["code"][:8]
        for _ in range(2):
            assert (await register(url, invite=invite["code"]))[0] == 201
        status, body = await register(url, invite=invite["code"])
        assert status == 403 and body["error"]["code"] == "invite_required"
        # Surrounding blanks (a sloppy paste) do not matter.
        other = await mint(admin)
        assert (await register(url, invite=f"  {other['code']}\n"))[0] == 201


async def test_parallel_registrations_with_a_one_use_invite_admit_exactly_one(
        config, services):
    async with server(config, services, "invite") as node:
        admin = await operator_of(node.base_url)
        for uses, racers in ((1, 2), (1, 6), (3, 8)):
            code = (await mint(admin, uses=uses))["code"]
            results = await asyncio.gather(*(register(node.base_url, invite=code)
                                             for _ in range(racers)))
            statuses = sorted(status for status, _ in results)
            assert statuses == [201] * uses + [403] * (racers - uses), results


async def test_a_taken_name_gives_the_invite_use_back(config, services):
    async with server(config, services, "invite") as node:
        admin = await operator_of(node.base_url)
        code = (await mint(admin))["code"]
        status, body = await register(node.base_url, OPERATOR, invite=code)
        assert status == 409 and body["error"]["code"] == "name_taken"
        invalid = await register(node.base_url, "x", invite=code)
        assert invalid[0] == 400
        assert (await register(node.base_url, invite=code))[0] == 201
        assert (await admin.request("GET", "/api/invites"))[1]["invites"] == []


async def test_expired_and_revoked_invites_admit_nobody(config, services):
    async with server(config, services, "invite") as node:
        admin = await operator_of(node.base_url)
        old, gone, live = [await mint(admin, uses=5) for _ in range(3)]
        db(services, config).invites.update_one(
            {"prefix": old["prefix"]},
            {"$set": {"expires_at": dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=1)}})
        status, _, _ = await admin.request("DELETE", f"/api/invites/{gone['prefix']}")
        assert status == 204
        status, body, _ = await admin.request("DELETE", f"/api/invites/{gone['prefix']}")
        assert status == 404 and body["error"]["code"] == "not_found"
        for invite in (old, gone):
            status, body = await register(node.base_url, invite=invite["code"])
            assert status == 403 and body["error"]["code"] == "invite_required"
        listed = (await admin.request("GET", "/api/invites"))[1]["invites"]
        assert [i["prefix"] for i in listed] == [live["prefix"]]
        # The injectable clock: a week on, the default expiry has passed.
        node.runtime.registration.clock = lambda: (dt.datetime.now(dt.timezone.utc)
                                                   + dt.timedelta(days=7, seconds=1))
        assert (await register(node.base_url, invite=live["code"]))[0] == 403


async def test_invites_are_listed_without_their_codes(base_url, config, services):
    admin = await operator_of(base_url)
    before = dt.datetime.now(dt.timezone.utc).timestamp() * 1000
    invite = await mint(admin, uses=3, expires_in=3600)
    assert set(invite) >= {"code", "expires_at", "uses_left", "prefix"}
    assert abs(invite["expires_at"] - (before + 3_600_000)) < 5000
    status, listed, response = await admin.request("GET", "/api/invites")
    assert status == 200 and invite["code"].encode() not in response.body
    (entry,) = listed["invites"]
    assert entry["prefix"] == invite["prefix"] and entry["uses_left"] == 3
    assert entry["created_by"] == admin.user and entry["expires_at"] == invite["expires_at"]
    stored = db(services, config).invites.find_one({"prefix": invite["prefix"]})
    assert invite["code"] not in str(stored)
    default = await mint(admin)
    assert default["uses_left"] == 1
    week = 7 * 24 * 3600 * 1000
    assert abs(default["expires_at"] - (before + week)) < 5000


@pytest.mark.parametrize("body", [{"uses": 0}, {"uses": 1001}, {"uses": "3"}, {"uses": True},
                                  {"uses": 1.5}, {"expires_in": 0},
                                  {"expires_in": 90 * 24 * 3600 + 1}, {"expires_in": "1h"}])
async def test_invalid_invite_requests_are_400(base_url, body):
    admin = await operator_of(base_url)
    status, reply, _ = await admin.request("POST", "/api/invites", body)
    assert status == 400 and reply["error"]["code"] == "bad_request", reply


async def test_only_server_admins_manage_invites(base_url, make_client):
    admin = await operator_of(base_url)
    prefix = (await mint(admin))["prefix"]
    person = make_client()
    await person.register()
    for method, path in (("POST", "/api/invites"), ("GET", "/api/invites"),
                         ("DELETE", f"/api/invites/{prefix}")):
        status, body, _ = await person.request(method, path, {} if method == "POST" else None)
        assert status == 403 and body["error"]["code"] == "forbidden", (method, body)
        status, body, _ = await make_client().request(method, path)
        assert status == 401 and body["error"]["code"] == "unauthorized", (method, body)
    bot = await bot_of(person)
    status, body, _ = await bot.request("POST", "/api/invites", {})
    assert status == 403 and body["error"]["code"] == "forbidden"


# Deactivation -------------------------------------------------------------------------


async def bot_of(owner: Client, base: str | None = None) -> Client:
    name = unique_name("bot")
    assert (await owner.request("POST", "/api/bots", {"name": name}))[0] == 201
    status, issued, _ = await owner.request("POST", f"/api/bots/{name}/tokens", {})
    assert status == 201, issued
    bot = Client(base or owner.base)
    bot.token = issued["token"]
    return bot


async def set_state(admin: Client, name: str, action: str) -> tuple[int, Any]:
    status, body, _ = await admin.request("POST", f"/api/admin/users/{name}/{action}")
    return status, body


async def test_deactivation_closes_sockets_on_every_process_and_refuses_every_credential(
        base_url, second_node, make_client):
    admin = await operator_of(base_url)
    victim = make_client()
    me = await victim.register()
    bot = await bot_of(victim)
    bystander = make_client()
    await bystander.register()
    # Sockets on both processes: the person's and their bot's, and someone else's.
    there = Client(second_node.base_url)
    there.cookies = dict(victim.cookies)
    bot_there = Client(second_node.base_url)
    bot_there.token = bot.token
    sockets = [await victim.ws(), await there.ws(), await bot.ws(), await bot_there.ws()]
    other = await bystander.ws()

    assert await set_state(admin, me["name"], "deactivate") == (204, None)
    for ws in sockets:
        assert await ws.closed() == (1008, "account deactivated")
    assert (await other.call({"type": "ping"}))["type"] == "pong"

    for client in (victim, there, bot):  # the saved cookie and the token stop working
        status, body, _ = await client.request("GET", "/api/me")
        assert status == 401, body
        with pytest.raises(HTTPClientError) as err:
            await client.ws_raw()
        assert err.value.code == 401
    wrong = await make_client().login(me["name"], "wrong password!")
    refused = await make_client().login(me["name"])
    assert refused == wrong and refused[0] == 401
    assert refused[1] == {"error": {"code": "unauthorized",
                                    "message": "invalid username or password"}}
    # Deactivating again is harmless.
    assert (await set_state(admin, me["name"], "deactivate"))[0] == 204

    assert (await set_state(admin, me["name"], "reactivate"))[0] == 204
    assert (await victim.request("GET", "/api/me"))[0] == 401  # sessions stay gone
    assert (await make_client().login(me["name"]))[0] == 200
    assert (await bot.request("GET", "/api/me"))[0] == 401  # revoked tokens stay revoked


async def test_a_leftover_session_or_token_of_a_deactivated_account_is_refused(
        base_url, make_client, config, services):
    """Deactivation deletes sessions and tokens; one created by a request that raced it
    (here: put back by hand) is refused all the same."""
    admin = await operator_of(base_url)
    victim = make_client()
    me = await victim.register()
    bot = await bot_of(victim)
    mongo = db(services, config)
    sessions = list(mongo.sessions.find({"user_id": me["id"]}))
    tokens = list(mongo.tokens.find({"user.name": {"$regex": "^bot"}}))
    assert sessions and tokens
    assert (await set_state(admin, me["name"], "deactivate"))[0] == 204
    assert mongo.sessions.count_documents({"user_id": me["id"]}) == 0
    mongo.sessions.insert_many(sessions)
    mongo.tokens.insert_many(tokens)
    assert (await victim.request("GET", "/api/me"))[0] == 401
    assert (await bot.request("GET", "/api/me"))[0] == 401
    # The owner's mark covers their bots until the owner comes back.
    assert (await set_state(admin, me["name"], "reactivate"))[0] == 204
    assert (await victim.request("GET", "/api/me"))[0] == 200
    assert (await bot.request("GET", "/api/me"))[0] == 200


async def test_deactivation_is_for_server_admins_and_not_of_oneself(base_url, make_client):
    admin = await operator_of(base_url)
    person = make_client()
    me = await person.register()
    status, body = await set_state(person, OPERATOR, "deactivate")
    assert status == 403 and body["error"]["code"] == "forbidden"
    status, body, _ = await make_client().request(
        "POST", f"/api/admin/users/{me['name']}/deactivate")
    assert status == 401
    status, body = await set_state(admin, "nobody-here", "deactivate")
    assert status == 404 and body["error"]["code"] == "not_found"
    status, body = await set_state(admin, OPERATOR, "deactivate")
    assert status == 409 and body["error"]["code"] == "cannot_deactivate_self"
    status, body = await set_state(admin, me["name"], "promote")
    assert status == 404
    assert (await person.request("GET", "/api/me"))[0] == 200


async def test_a_deactivated_bot_alone_loses_its_tokens(base_url, make_client):
    admin = await operator_of(base_url)
    owner = make_client()
    await owner.register()
    bot = await bot_of(owner)
    ws = await bot.ws()
    name = (await bot.request("GET", "/api/me"))[1]["name"]
    assert (await set_state(admin, name, "deactivate"))[0] == 204
    assert await ws.closed() == (1008, "account deactivated")
    assert (await bot.request("GET", "/api/me"))[0] == 401
    assert (await owner.request("GET", "/api/me"))[0] == 200


async def test_me_says_whether_the_caller_is_a_server_admin(base_url, make_client):
    admin = await operator_of(base_url)
    assert (await admin.request("GET", "/api/me"))[1]["admin"] is True
    person = make_client()
    await person.register()
    assert (await person.request("GET", "/api/me"))[1]["admin"] is False


# Search ---------------------------------------------------------------------------------


async def test_user_search_by_prefix_is_case_insensitive_sorted_and_capped(
        base_url, make_client):
    searcher = make_client()
    await searcher.register("Zed-searcher")
    names = [f"Pfx{i:02d}" for i in range(25)]
    for name in names:
        await make_client().register(name)
    status, found, _ = await searcher.request("GET", "/api/users?prefix=pFX")
    assert status == 200
    assert [u["name"] for u in found["users"]] == names[:20]
    assert set(found["users"][0]) == {"id", "name", "bot"}
    everyone = (await searcher.request("GET", "/api/users"))[1]["users"]
    assert len(everyone) == 20
    assert (await searcher.request("GET", "/api/users?prefix=pfx3"))[1]["users"] == []
    assert [u["name"] for u in (await searcher.request(
        "GET", "/api/users?prefix=pfx1"))[1]["users"]] == names[10:20]


async def test_user_search_escapes_the_prefix_and_skips_deactivated_accounts(
        base_url, make_client):
    admin = await operator_of(base_url)
    searcher = make_client()
    await searcher.register()
    for name in ("dot.ted", "dotxted", "dot-ted", "gone.user"):
        await make_client().register(name)
    status, found, _ = await searcher.request("GET", "/api/users?prefix=dot.")
    assert status == 200 and [u["name"] for u in found["users"]] == ["dot.ted"]
    for meta in ("..", ".*", "d[o]", "(", "\\"):
        status, found, _ = await searcher.request("GET", f"/api/users?prefix={meta}")
        assert status == 200 and found["users"] == [], meta
    assert (await set_state(admin, "gone.user", "deactivate"))[0] == 204
    assert (await searcher.request("GET", "/api/users?prefix=gone"))[1]["users"] == []
    # Admins may list deactivated accounts too, to reactivate them.
    status, body, _ = await searcher.request("GET", "/api/users?prefix=gone&all=true")
    assert status == 403 and body["error"]["code"] == "forbidden"
    listed = (await admin.request("GET", "/api/users?prefix=gone&all=true"))[1]["users"]
    assert [(u["name"], u["deactivated"]) for u in listed] == [("gone.user", True)]


async def test_user_search_validates_its_prefix_and_needs_a_login(base_url, make_client):
    searcher = make_client()
    await searcher.register()
    status, body, _ = await searcher.request("GET", "/api/users?prefix=" + "a" * 33)
    assert status == 400 and body["error"]["code"] == "bad_request"
    assert (await searcher.request("GET", "/api/users?prefix=" + "a" * 32))[0] == 200
    assert (await make_client().request("GET", "/api/users?prefix=a"))[0] == 401
