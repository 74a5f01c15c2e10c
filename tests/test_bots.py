"""Bot accounts and API tokens: created by their owner, used over WebSocket and REST."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest
from tornado.httpclient import HTTPClientError

from server import logs
from tests.client import PASSWORD, Client
from tests.test_abuse import RawPeer


async def owner_with_bot(make_client, name: str = "helper-bot") -> tuple[Client, dict, str]:
    owner = make_client()
    await owner.register()
    status, bot, _ = await owner.request("POST", "/api/bots", {"name": name})
    assert status == 201, bot
    status, issued, _ = await owner.request("POST", f"/api/bots/{name}/tokens",
                                            {"label": "ci"})
    assert status == 201, issued
    return owner, bot, issued["token"]


async def test_owner_creates_bot_and_token_shown_once_with_prefix(make_client):
    owner, bot, token = await owner_with_bot(make_client)
    assert bot["bot"] is True and bot["name"] == "helper-bot"
    assert token.startswith("chat_") and len(token) > 40
    status, listing, _ = await owner.request("GET", "/api/bots/helper-bot/tokens")
    assert status == 200 and len(listing["tokens"]) == 1
    listed = listing["tokens"][0]
    assert listed["label"] == "ci" and token.startswith(listed["id"])
    assert token not in str(listing)
    status, bots, _ = await owner.request("GET", "/api/bots")
    assert [b["name"] for b in bots["bots"]] == ["helper-bot"]


async def test_bot_names_share_the_user_namespace(make_client):
    owner, _, _ = await owner_with_bot(make_client, "taken-name")
    other = make_client()
    status, _, _ = await other.request("POST", "/api/register",
                                       {"username": "Taken-Name", "password": "x" * 12})
    assert status == 409
    status, _body, _ = await owner.request("POST", "/api/bots", {"name": "bad name"})
    assert status == 400


async def test_only_the_owner_manages_a_bot(make_client):
    _, _, _ = await owner_with_bot(make_client, "mine")
    stranger = make_client()
    await stranger.register()
    status, body, _ = await stranger.request("POST", "/api/bots/mine/tokens", {})
    assert status == 404 and body["error"]["code"] == "not_found"


async def test_bot_connects_with_bearer_and_its_frames_say_bot(make_client):
    _, bot, token = await owner_with_bot(make_client)
    human = make_client()
    await human.register()
    hws = await human.ws()
    await hws.join("general")
    botc = make_client()
    botc.token = token
    bws = await botc.ws(origin=None)
    assert bws.hello["user"] == {"id": bot["id"], "name": "helper-bot", "bot": True}
    await bws.join("general")
    await bws.call({"type": "send", "room": "general", "body": "beep"})
    msg = await hws.expect("message")
    assert msg["user"]["bot"] is True and msg["body"] == "beep"


async def test_bearer_rest_calls_skip_xsrf_and_work(make_client):
    _, _bot, token = await owner_with_bot(make_client)
    botc = make_client()
    botc.token = token
    status, me, _ = await botc.request("GET", "/api/me")
    assert status == 200 and me["bot"] is True
    status, _room, _ = await botc.request("POST", "/api/rooms", {"name": "bots-only"},
                                         xsrf=False)
    assert status == 201


async def test_bearer_from_any_origin_is_allowed_but_bad_token_is_401(make_client):
    _, _, token = await owner_with_bot(make_client)
    botc = make_client()
    botc.token = token
    ws = await botc.ws(origin="http://elsewhere.example")
    assert ws.hello["user"]["bot"]
    bad = make_client()
    bad.token = token[:-2] + "xx"
    with pytest.raises(HTTPClientError) as err:
        await bad.ws_raw()
    assert err.value.code == 401


async def test_token_in_query_string_or_cookie_is_not_accepted(make_client, base_url):
    _, _, token = await owner_with_bot(make_client)
    anon = make_client()
    status, _, _ = await anon.request("GET", f"/api/me?token={token}")
    assert status == 401
    status, _, _ = await anon.request("GET", f"/api/me?access_token={token}")
    assert status == 401
    anon.cookies["token"] = token
    status, _, _ = await anon.request("GET", "/api/me")
    assert status == 401


async def test_revoking_a_token_closes_the_bot_on_every_process_within_a_second(
        make_client, second_node):
    owner, _, token = await owner_with_bot(make_client)
    sockets = []
    for url in (None, second_node.base_url):
        c = make_client(url)
        c.token = token
        sockets.append(await c.ws(origin=None))
    token_id = (await owner.request("GET", "/api/bots/helper-bot/tokens"))[1]["tokens"][0]["id"]
    status, _, _ = await owner.request("DELETE", f"/api/bots/helper-bot/tokens/{token_id}")
    assert status == 204
    closes = await asyncio.gather(*(s.closed(timeout=1.0) for s in sockets))
    assert [c[0] for c in closes] == [1008, 1008]
    again = make_client()
    again.token = token
    with pytest.raises(HTTPClientError) as err:
        await again.ws_raw(origin=None)
    assert err.value.code == 401


async def test_logout_closes_that_sessions_sockets_everywhere(make_client, second_node):
    user = make_client()
    await user.register()
    here = await user.ws()
    there_client = make_client(second_node.base_url)
    there_client.cookies = dict(user.cookies)
    there = await there_client.ws()
    status, _, _ = await user.request("POST", "/api/logout")
    assert status == 204
    closes = await asyncio.gather(here.closed(1.0), there.closed(1.0))
    assert [c[0] for c in closes] == [1008, 1008]


async def test_bots_cannot_manage_bots_or_use_password_login(make_client):
    _, _bot, token = await owner_with_bot(make_client)
    botc = make_client()
    botc.token = token
    status, _, _ = await botc.request("POST", "/api/bots", {"name": "child"}, xsrf=False)
    assert status == 403
    anon = make_client()
    status, _ = await anon.login("helper-bot", "")
    assert status == 401


async def bot_sockets(make_client, tokens: list[str], urls: list[str | None]) -> list:
    """One bearer WebSocket per (token, server)."""
    sockets = []
    for token, url in zip(tokens, urls, strict=True):
        client = make_client(url)
        client.token = token
        sockets.append(await client.ws(origin=None))
    return sockets


async def assert_tokens_dead(make_client, tokens: list[str]) -> None:
    for token in tokens:
        client = make_client()
        client.token = token
        assert (await client.request("GET", "/api/me"))[0] == 401
        with pytest.raises(HTTPClientError) as err:
            await client.ws_raw(origin=None)
        assert err.value.code == 401


async def test_revoking_all_tokens_closes_every_socket_of_the_bot_everywhere(
        make_client, second_node):
    owner, _, first = await owner_with_bot(make_client)
    second = (await owner.request("POST", "/api/bots/helper-bot/tokens", {}))[1]["token"]
    third = (await owner.request("POST", "/api/bots/helper-bot/tokens", {}))[1]["token"]
    sockets = await bot_sockets(make_client, [first, second],
                                [None, second_node.base_url])
    status, body, _ = await owner.request("DELETE", "/api/bots/helper-bot/tokens")
    assert status == 200 and body == {"revoked": 3}
    closes = await asyncio.gather(*(s.closed(timeout=1.0) for s in sockets))
    assert [c[0] for c in closes] == [1008, 1008]
    await assert_tokens_dead(make_client, [first, second, third])
    status, listing, _ = await owner.request("GET", "/api/bots/helper-bot/tokens")
    assert status == 200 and listing["tokens"] == []
    # The bot remains, and gets new tokens.
    status, issued, _ = await owner.request("POST", "/api/bots/helper-bot/tokens", {})
    assert status == 201
    fresh = make_client()
    fresh.token = issued["token"]
    assert (await fresh.request("GET", "/api/me"))[1]["name"] == "helper-bot"


async def test_deleting_a_bot_revokes_its_tokens_and_closes_its_sockets_everywhere(
        make_client, second_node):
    owner, bot, token = await owner_with_bot(make_client)
    other = (await owner.request("POST", "/api/bots/helper-bot/tokens", {}))[1]["token"]
    sockets = await bot_sockets(make_client, [token, other], [None, second_node.base_url])
    stranger = make_client()
    await stranger.register()
    status, body, _ = await stranger.request("DELETE", "/api/bots/helper-bot")
    assert status == 404 and body["error"]["code"] == "not_found"
    botc = make_client()
    botc.token = token
    status, body, _ = await botc.request("DELETE", "/api/bots/helper-bot")
    assert status == 403  # bots cannot manage bots, themselves included

    status, _, response = await owner.request("DELETE", "/api/bots/helper-bot")
    assert status == 204 and response.body == b""
    closes = await asyncio.gather(*(s.closed(timeout=1.0) for s in sockets))
    assert [c[0] for c in closes] == [1008, 1008]
    await assert_tokens_dead(make_client, [token, other])
    status, bots, _ = await owner.request("GET", "/api/bots")
    assert bots["bots"] == []
    for method, path in (("DELETE", "/api/bots/helper-bot"),
                         ("GET", "/api/bots/helper-bot/tokens"),
                         ("POST", "/api/bots/helper-bot/tokens")):
        status, body, _ = await owner.request(method, path, {} if method == "POST" else None)
        assert status == 404, (method, path, body)
    # The name is free again; the account that takes it is a new one.
    status, again, _ = await owner.request("POST", "/api/bots", {"name": "helper-bot"})
    assert status == 201 and again["id"] != bot["id"]


async def test_password_change_revokes_the_bots_tokens_only_when_asked(make_client):
    owner, _, kept = await owner_with_bot(make_client, "kept-bot")
    status, _, _ = await owner.request("POST", "/api/bots", {"name": "other-bot"})
    assert status == 201
    also_kept = (await owner.request("POST", "/api/bots/other-bot/tokens", {}))[1]["token"]
    new_password = "a second passphrase"
    status, body, _ = await owner.request(
        "POST", "/api/password", {"old_password": PASSWORD, "new_password": new_password})
    assert status == 204, body
    for token in (kept, also_kept):
        client = make_client()
        client.token = token
        assert (await client.request("GET", "/api/me"))[0] == 200

    # A flag that is not a boolean changes nothing.
    status, body, _ = await owner.request(
        "POST", "/api/password", {"old_password": new_password, "new_password": "x" * 12,
                                  "revoke_bot_tokens": "yes"})
    assert status == 400 and body["error"]["code"] == "bad_request"
    assert (await make_client().login(owner.user["name"], new_password))[0] == 200

    sockets = await bot_sockets(make_client, [kept, also_kept], [None, None])
    status, body, _ = await owner.request(
        "POST", "/api/password", {"old_password": new_password, "new_password": PASSWORD,
                                  "revoke_bot_tokens": True})
    assert status == 204, body
    closes = await asyncio.gather(*(s.closed(timeout=1.0) for s in sockets))
    assert [c[0] for c in closes] == [1008, 1008]
    await assert_tokens_dead(make_client, [kept, also_kept])
    # The bots stay, without tokens; this session stays too.
    status, bots, _ = await owner.request("GET", "/api/bots")
    assert status == 200 and [b["name"] for b in bots["bots"]] == ["kept-bot", "other-bot"]
    status, listing, _ = await owner.request("GET", "/api/bots/kept-bot/tokens")
    assert listing["tokens"] == []


async def test_a_401_says_which_credential_failed_on_rest_and_on_the_upgrade(make_client):
    owner, _, token = await owner_with_bot(make_client)
    token_id = (await owner.request("GET", "/api/bots/helper-bot/tokens"))[1]["tokens"][0]["id"]
    assert (await owner.request("DELETE", f"/api/bots/helper-bot/tokens/{token_id}"))[0] == 204
    logged_out = make_client()
    await logged_out.register()
    old_cookie = logged_out.cookie_header()
    assert (await logged_out.request("POST", "/api/logout"))[0] == 204
    cases = [
        ("nothing", {}, "log in or present a bearer token"),
        ("unknown token", {"Authorization": "Bearer chat_" + "x" * 43},
         "unknown or revoked bearer token"),
        ("revoked token", {"Authorization": f"Bearer {token}"},
         "unknown or revoked bearer token"),
        ("logged-out session", {"Cookie": old_cookie},
         "session expired or logged out: log in again"),
        ("badly signed session", {"Cookie": "session=2|1:0|10:1|7:session|4:eA==|00"},
         "session expired or logged out: log in again"),
    ]
    anon = make_client()
    for what, headers, message in cases:
        status, body, _ = await anon.request("GET", "/api/me", headers=headers)
        assert (status, body["error"]) == (401, {"code": "unauthorized", "message": message}), what
        status, _, raw, _ = await RawPeer.handshake(anon.base, headers)
        assert (status, json.loads(raw)["error"]) == (
            401, {"code": "unauthorized", "message": message}), what


async def test_a_token_sent_where_its_id_belongs_is_never_echoed_or_logged(make_client,
                                                                          caplog):
    logs.quiet_noisy_loggers()  # as run.py's logging set-up does, even at --log-level debug
    caplog.set_level(logging.DEBUG)
    owner, _, token = await owner_with_bot(make_client)
    status, body, _ = await owner.request("DELETE", f"/api/bots/helper-bot/tokens/{token}")
    assert status == 404 and body["error"]["code"] == "not_found"
    assert "by its id" in body["error"]["message"]
    status, body, _ = await owner.request("DELETE", f"/api/bots/{token}/tokens/x")
    assert status == 404
    # A Tornado error's own log line (the XSRF refusal) carried the whole URI.
    status, _, response = await make_client().request("POST", f"/api/rooms?note={token}",
                                                      {"name": "x"}, xsrf=False)
    assert status == 403
    assert token not in str(body) and token not in response.body.decode()
    logged = "\n".join(r.getMessage() + " " + str(vars(r)) for r in caplog.records)
    assert token not in logged
    access = [r for r in caplog.records if r.name == "chat.access" and r.status == 404]
    assert [r.path for r in access] == [f"/api/bots/helper-bot/tokens/{token[:13]}[redacted]",
                                        f"/api/bots/{token[:13]}[redacted]/tokens/x"]
    # The token still works: a revoke needs its id.
    bot = make_client()
    bot.token = token
    assert (await bot.request("GET", "/api/me"))[0] == 200


async def test_sockets_whose_credential_went_without_word_are_closed_by_the_audit(
        make_client, runtime, config, services):
    # A revocation whose notice never reached this process (a lost control publish):
    # the token and the session are gone from MongoDB, their sockets still open here.
    import pymongo
    owner, bot, token = await owner_with_bot(make_client)
    bot_client = make_client()
    bot_client.token = token
    bot_socket = await bot_client.ws(origin=None)
    user = make_client()
    await user.register()
    user_socket = await user.ws()
    bystander = await owner.ws()
    with pymongo.MongoClient(services.mongo_url) as mongo:
        db = mongo[config.db_name]
        db.tokens.delete_many({"user.id": bot["id"]})
        db.sessions.delete_many({"user.id": user.user["id"]})
    assert await runtime.audit.run() == 2
    closes = await asyncio.gather(bot_socket.closed(), user_socket.closed())
    assert closes == [(1008, "credential revoked")] * 2
    assert (await bystander.call({"type": "ping"}))["type"] == "pong"
    assert await runtime.audit.run() == 0
