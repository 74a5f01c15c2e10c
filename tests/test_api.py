"""The public HTTP API over real sockets: accounts, sessions, XSRF, rooms, history, probes."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from http.cookies import SimpleCookie
from typing import Any

import pytest
import tornado.web
from tornado.httpclient import HTTPClientError

from server.config import Config
from tests.client import PASSWORD, Client, Socket, unique_name

MakeClient = Callable[..., Client]
ME_KEYS = {"id", "name", "bot"}


# Helpers ---------------------------------------------------------------------------------


def session_morsel(response: Any) -> Any:
    """The `session` cookie's Set-Cookie morsel of a response (None if it sets none)."""
    for raw in response.headers.get_list("Set-Cookie"):
        jar: SimpleCookie = SimpleCookie()
        jar.load(raw)
        if "session" in jar:
            return jar["session"]
    return None


def assert_error(status: int, body: Any, response: Any, expected_status: int) -> None:
    """A JSON error body `{"error": {"code", "message"}}` without any traceback."""
    assert status == expected_status, (status, body)
    assert response.headers.get("Content-Type", "").startswith("application/json"), (
        response.headers.get("Content-Type"), response.body)
    assert isinstance(body, dict) and isinstance(body.get("error"), dict), body
    assert isinstance(body["error"].get("code"), str) and body["error"]["code"], body
    assert isinstance(body["error"].get("message"), str) and body["error"]["message"], body
    assert b"Traceback" not in response.body and b'File "' not in response.body


async def registered(make_client: MakeClient, name: str | None = None) -> Client:
    client = make_client()
    await client.register(name or unique_name())
    return client


def clone(make_client: MakeClient, source: Client) -> Client:
    """A second user agent holding a copy of another's cookies (e.g. a stolen old cookie)."""
    other = make_client()
    other.cookies = dict(source.cookies)
    return other


async def seed(sock: Socket, room: str, count: int, prefix: str = "m") -> list[int]:
    """Send `count` messages to a joined room over the WebSocket; their seqs in send order.

    Sends go out in chunks below the per-connection in-flight limit, each chunk's acks
    awaited before the next.
    """
    seq_by_cid: dict[str, int] = {}
    for start in range(0, count, 25):
        chunk = [f"{prefix}{i}" for i in range(start, min(count, start + 25))]
        for cid in chunk:
            await sock.send({"type": "send", "room": room, "body": f"body {cid}",
                             "client_id": cid})
        waiting = set(chunk)
        while waiting:
            frame = await sock.recv()
            assert frame["type"] != "error", frame
            if frame["type"] == "ack":
                seq_by_cid[frame["client_id"]] = frame["seq"]
                waiting.discard(frame["client_id"])
    return [seq_by_cid[f"{prefix}{i}"] for i in range(count)]


async def room_with_messages(make_client: MakeClient, count: int) -> tuple[Client, str,
                                                                            list[int]]:
    client = await registered(make_client)
    room = unique_name("room")
    status, body, _ = await client.request("POST", "/api/rooms", {"name": room})
    assert status == 201, body
    sock = await client.ws()
    try:
        await sock.join(room)
        seqs = await seed(sock, room, count)
    finally:
        sock.close()
    return client, room, seqs


async def page(client: Client, room: str, query: str = "") -> dict[str, Any]:
    status, body, _ = await client.request(
        "GET", f"/api/rooms/{room}/messages{'?' + query if query else ''}")
    assert status == 200, (status, body)
    assert set(body) == {"room", "messages", "has_more"}, body
    assert body["room"] == room
    return body  # type: ignore[no-any-return]


def seqs_of(body: dict[str, Any]) -> list[int]:
    return [m["seq"] for m in body["messages"]]


# Register --------------------------------------------------------------------------------


async def test_register_answers_201_with_me_object_and_signed_httponly_lax_session_cookie(
    make_client: MakeClient, config: Config
) -> None:
    client = make_client()
    name = unique_name("Reg")
    status, body, response = await client.request(
        "POST", "/api/register", {"username": name, "password": PASSWORD})
    assert status == 201, body
    assert set(body) == ME_KEYS
    assert body["name"] == name and body["bot"] is False
    assert isinstance(body["id"], str) and body["id"]

    morsel = session_morsel(response)
    assert morsel is not None, response.headers.get_list("Set-Cookie")
    raw_header = next(h for h in response.headers.get_list("Set-Cookie")
                      if h.startswith("session="))
    assert "httponly" in raw_header.lower()
    assert morsel["httponly"] is True
    assert morsel["samesite"].lower() == "lax"
    assert morsel["path"] == "/"
    # Signed with the configured secret: only this server can have issued it.
    assert tornado.web.decode_signed_value(
        dict(config.cookie_secrets), "session", morsel.value) is not None
    # The cookie holds an opaque session id, not the user's name or id.
    assert name not in morsel.value and body["id"] not in morsel.value

    status, me, _ = await client.request("GET", "/api/me")
    assert status == 200 and me == {**body, "admin": False}


async def test_register_rejects_taken_name_case_insensitively_with_409(
    make_client: MakeClient
) -> None:
    name = unique_name("Taken")
    await registered(make_client, name)
    for variant in (name, name.lower(), name.upper()):
        status, body, response = await make_client().request(
            "POST", "/api/register", {"username": variant, "password": PASSWORD})
        assert_error(status, body, response, 409)


@pytest.mark.parametrize("username", [
    "ab", "x" * 33, "has space", "semi;colon", "ünïcode", "slash/name", "", None, 12345,
    ["list"],
])
async def test_register_rejects_invalid_username_with_400(
    make_client: MakeClient, username: object
) -> None:
    status, body, response = await make_client().request(
        "POST", "/api/register", {"username": username, "password": PASSWORD})
    assert_error(status, body, response, 400)


async def test_register_accepts_usernames_at_both_length_limits(make_client: MakeClient) -> None:
    for name in ("a.b", "Z-" + "9" * 30):
        status, body, _ = await make_client().request(
            "POST", "/api/register", {"username": name, "password": PASSWORD})
        assert status == 201, (name, body)


@pytest.mark.parametrize("password", [
    pytest.param("x" * 7, id="7-bytes"),
    pytest.param("x" * 73, id="73-ascii-bytes"),
    # 72 characters but 73 bytes: the 2-byte 'é' crosses bcrypt's 72-byte limit.
    pytest.param("x" * 71 + "é", id="72-chars-73-bytes"),
    pytest.param("é" * 36 + "x", id="37-chars-73-bytes"),
    pytest.param("\U0001f600" * 19, id="19-emoji-76-bytes"),
    pytest.param(12345678, id="integer"),
    pytest.param(None, id="null"),
    pytest.param(["correct", "horse"], id="list"),
])
async def test_register_rejects_invalid_password_with_400(
    make_client: MakeClient, password: object
) -> None:
    client = make_client()
    name = unique_name()
    status, body, response = await client.request(
        "POST", "/api/register", {"username": name, "password": password})
    assert_error(status, body, response, 400)
    assert session_morsel(response) is None
    # Nothing was created: the name is still free.
    await client.register(name)


async def test_register_accepts_password_of_exactly_72_utf8_bytes_and_8_bytes(
    make_client: MakeClient
) -> None:
    for password in ("é" * 36, "\U0001f600" * 18, "12345678"):
        client = make_client()
        name = unique_name()
        await client.register(name, password)
        status, _ = await make_client().login(name, password)
        assert status == 200, password


async def test_register_with_malformed_json_body_is_400_json(make_client: MakeClient) -> None:
    client = make_client()
    for raw in (b"{not json", b"[1, 2]", b'"string"', b""):
        status, body, response = await client.request("POST", "/api/register", raw=raw)
        assert_error(status, body, response, 400)


# Login and logout ------------------------------------------------------------------------


async def test_login_answers_200_with_me_object_and_a_new_session_cookie(
    make_client: MakeClient
) -> None:
    first = await registered(make_client)
    assert first.user is not None
    client = make_client()
    status, body, response = await client.request(
        "POST", "/api/login", {"username": first.user["name"], "password": PASSWORD})
    assert status == 200, body
    assert body == first.user
    morsel = session_morsel(response)
    assert morsel is not None and morsel["httponly"] is True
    assert morsel["samesite"].lower() == "lax"
    assert morsel.value != first.cookies["session"]
    status, me, _ = await client.request("GET", "/api/me")
    assert status == 200 and me == {**first.user, "admin": False}


async def test_login_failures_all_answer_401_with_the_identical_body(
    make_client: MakeClient
) -> None:
    owner = await registered(make_client)
    assert owner.user is not None
    name = owner.user["name"]
    attempts: list[Any] = [
        {"username": unique_name("nobody"), "password": PASSWORD},  # unknown user
        {"username": name, "password": PASSWORD + "!"},  # wrong password
        {"username": name, "password": "p" * 100},  # over bcrypt's 72 bytes
        {"username": name, "password": "é" * 40},  # 80 bytes of UTF-8
        {"username": name},  # missing password
        {"password": PASSWORD},  # missing username
        {},
        {"username": name, "password": ""},
        {"username": name, "password": 12345678},
        {"username": "x", "password": PASSWORD},  # not even a valid name
    ]
    bodies = []
    for attempt in attempts:
        client = make_client()
        status, body, response = await client.request("POST", "/api/login", attempt)
        assert_error(status, body, response, 401)
        assert session_morsel(response) is None, attempt
        bodies.append(response.body)
    assert len(set(bodies)) == 1, bodies


async def test_logout_answers_204_and_revokes_the_session_on_the_server(
    make_client: MakeClient
) -> None:
    client = await registered(make_client)
    old = clone(make_client, client)

    status, body, response = await client.request("POST", "/api/logout")
    assert status == 204, body
    assert response.body == b""

    # The old cookie, replayed by someone who kept it, opens nothing any more.
    status, body, response = await old.request("GET", "/api/me")
    assert_error(status, body, response, 401)
    with pytest.raises(HTTPClientError) as refused:
        await old.ws_raw()
    assert refused.value.code == 401
    # And the client that logged out has no session either.
    status, _, _ = await client.request("GET", "/api/me")
    assert status == 401


async def test_a_cookie_remembered_for_reconnects_still_needs_its_session(
    make_client: MakeClient, runtime
) -> None:
    # A reconnect with the same Cookie header skips parsing it and checking its
    # signature again, never the session behind it: after logout it opens nothing.
    client = await registered(make_client)
    old = clone(make_client, client)
    (await old.ws()).conn.close()
    hits = runtime.auth.cookies.hits
    (await old.ws()).conn.close()
    assert runtime.auth.cookies.hits == hits + 1
    status, _, _ = await client.request("POST", "/api/logout")
    assert status == 204
    with pytest.raises(HTTPClientError) as refused:
        await old.ws_raw()
    assert refused.value.code == 401


async def test_a_long_cookie_header_is_checked_every_time_and_never_remembered(
    make_client: MakeClient, runtime
) -> None:
    # Other cookies of the site can make the header long; a client varying one of them
    # must not be able to fill the memo with megabytes of headers.
    client = await registered(make_client)
    size = len(runtime.auth.cookies)
    for i in range(3):
        client.cookies["filler"] = f"{i}{'x' * 2000}"
        status, body, _ = await client.request("GET", "/api/me")
        assert status == 200, body
        (await client.ws()).conn.close()
    assert len(runtime.auth.cookies) == size
    status, _, _ = await client.request("POST", "/api/logout")
    assert status == 204
    status, _, _ = await client.request("GET", "/api/me")
    assert status == 401


async def test_logout_closes_the_sessions_open_websockets(make_client: MakeClient) -> None:
    client = await registered(make_client)
    sock = await client.ws()
    status, _, _ = await client.request("POST", "/api/logout")
    assert status == 204
    code, _ = await sock.closed()
    assert code == 1008


# Who am I --------------------------------------------------------------------------------


async def test_me_without_a_cookie_is_401(make_client: MakeClient) -> None:
    status, body, response = await make_client().request("GET", "/api/me")
    assert_error(status, body, response, 401)


FORGERIES = ["flipped signature", "signed with another secret",
             "properly signed, unknown session", "unsigned session id", "garbage"]


def forge(kind: str, good: str, config: Config) -> str:
    """A session cookie value that must not authenticate anyone."""
    secrets = dict(config.cookie_secrets)
    sid = tornado.web.decode_signed_value(secrets, "session", good)
    assert sid is not None
    if kind == "flipped signature":
        return good[:-1] + ("0" if good[-1] != "0" else "1")
    if kind == "signed with another secret":
        return tornado.web.create_signed_value(
            {1: "some-other-secret-of-enough-length"}, "session", sid, key_version=1).decode()
    if kind == "properly signed, unknown session":
        return tornado.web.create_signed_value(
            secrets, "session", "no-such-session", key_version=max(secrets)).decode()
    if kind == "unsigned session id":
        return sid.decode()
    assert kind == "garbage"
    return "not-a-cookie"


@pytest.mark.parametrize("kind", FORGERIES)
async def test_tampered_or_forged_session_cookie_opens_neither_me_nor_ws(
    make_client: MakeClient, config: Config, kind: str
) -> None:
    client = await registered(make_client)
    other = make_client()
    other.cookies = {"session": forge(kind, client.cookies["session"], config)}
    with pytest.raises(HTTPClientError) as refused:
        await other.ws_raw()
    status, body, response = await other.request("GET", "/api/me")
    assert (status, refused.value.code) == (401, 401), (body, refused.value)
    assert_error(status, body, response, 401)


# XSRF and bearer tokens ------------------------------------------------------------------


async def test_post_without_xsrf_token_is_403_json_not_html(make_client: MakeClient) -> None:
    client = await registered(make_client)
    assert "_xsrf" in client.cookies
    # Cookie present but no header; then a header that does not match the cookie.
    cases: list[dict[str, str]] = [{}, {"X-XSRFToken": "2|deadbeef|00|1"}]
    codes = set()
    for headers in cases:
        status, body, response = await client.request(
            "POST", "/api/rooms", {"name": unique_name("xsrf")}, headers=headers, xsrf=False)
        assert_error(status, body, response, 403)
        assert b"<html" not in response.body.lower()
        codes.add(body["error"]["code"])
    # A missing and a wrong token are the same failure to a client: one error code.
    assert len(codes) == 1, codes
    # No _xsrf cookie at all (a fresh agent), on register too.
    fresh = make_client()
    status, body, response = await fresh.request(
        "POST", "/api/register", {"username": unique_name(), "password": PASSWORD}, xsrf=False)
    assert_error(status, body, response, 403)


async def test_bearer_requests_skip_xsrf_but_an_unknown_token_is_401(
    make_client: MakeClient
) -> None:
    for token in ("chat_" + "x" * 43, "not-even-our-format"):
        client = make_client()
        client.token = token
        status, body, response = await client.request(
            "POST", "/api/rooms", {"name": unique_name("bearer")})
        assert "X-XSRFToken" not in response.request.headers
        assert_error(status, body, response, 401)
        status, body, response = await client.request("GET", "/api/me")
        assert_error(status, body, response, 401)


async def test_valid_bearer_token_needs_no_xsrf_token(make_client: MakeClient) -> None:
    owner = await registered(make_client)
    bot_name = unique_name("bot")
    status, bot, _ = await owner.request("POST", "/api/bots", {"name": bot_name})
    assert status == 201, bot
    status, issued, _ = await owner.request("POST", f"/api/bots/{bot_name}/tokens", {})
    assert status == 201, issued

    client = make_client()
    client.token = issued["token"]
    room = unique_name("botroom")
    status, body, response = await client.request("POST", "/api/rooms", {"name": room})
    assert not client.cookies and "X-XSRFToken" not in response.request.headers
    assert status == 201, body
    status, me, _ = await client.request("GET", "/api/me")
    assert status == 200 and me == {**bot, "admin": False} and me["bot"] is True


# Password change -------------------------------------------------------------------------


async def test_password_change_keeps_current_session_and_revokes_the_others(
    make_client: MakeClient
) -> None:
    me = await registered(make_client)
    assert me.user is not None
    name = me.user["name"]
    other_tab = make_client()
    assert (await other_tab.login(name))[0] == 200
    other_sock = await other_tab.ws()
    my_sock = await me.ws()

    new_password = "a brand new passphrase"
    status, body, _ = await me.request(
        "POST", "/api/password", {"old_password": PASSWORD, "new_password": new_password})
    assert status == 204, body

    assert (await me.request("GET", "/api/me"))[0] == 200
    status, body, response = await other_tab.request("GET", "/api/me")
    assert_error(status, body, response, 401)
    code, _ = await other_sock.closed()
    assert code == 1008
    assert (await my_sock.call({"type": "ping"}))["type"] == "pong"

    assert (await make_client().login(name, PASSWORD))[0] == 401
    assert (await make_client().login(name, new_password))[0] == 200


async def test_password_change_with_wrong_old_or_invalid_new_password_changes_nothing(
    make_client: MakeClient
) -> None:
    me = await registered(make_client)
    assert me.user is not None
    name = me.user["name"]
    attempts: list[tuple[dict[str, Any], tuple[int, ...]]] = [
        ({"old_password": "wrong password", "new_password": "another password"}, (401, 403)),
        ({"old_password": PASSWORD, "new_password": "short"}, (400,)),
        ({"old_password": PASSWORD, "new_password": "é" * 37}, (400,)),
        ({"old_password": PASSWORD}, (400,)),
    ]
    for attempt, statuses in attempts:
        status, body, response = await me.request("POST", "/api/password", attempt)
        assert status in statuses, (attempt, status, body)
        assert_error(status, body, response, status)
    assert (await me.request("GET", "/api/me"))[0] == 200
    assert (await make_client().login(name, PASSWORD))[0] == 200


async def test_password_change_needs_a_session(make_client: MakeClient) -> None:
    status, body, response = await make_client().request(
        "POST", "/api/password", {"old_password": PASSWORD, "new_password": "x" * 12})
    assert_error(status, body, response, 401)


# Rooms -----------------------------------------------------------------------------------


async def test_rooms_list_contains_general(make_client: MakeClient) -> None:
    client = await registered(make_client)
    status, body, _ = await client.request("GET", "/api/rooms")
    assert status == 200, body
    assert "general" in [r["name"] for r in body["rooms"]]


async def test_rooms_list_needs_a_session(make_client: MakeClient) -> None:
    status, body, response = await make_client().request("GET", "/api/rooms")
    assert_error(status, body, response, 401)


async def test_create_room_answers_201_and_lists_it_then_409_on_duplicate(
    make_client: MakeClient
) -> None:
    client = await registered(make_client)
    room = unique_name("team")
    status, body, _ = await client.request("POST", "/api/rooms", {"name": room})
    assert status == 201, body
    assert body["name"] == room
    status, body, _ = await client.request("GET", "/api/rooms")
    assert room in [r["name"] for r in body["rooms"]]

    other = await registered(make_client)
    status, body, response = await other.request("POST", "/api/rooms", {"name": room})
    assert_error(status, body, response, 409)
    status, body, response = await other.request("POST", "/api/rooms", {"name": "general"})
    assert_error(status, body, response, 409)


@pytest.mark.parametrize("name", [
    "Upper", "-dash-first", "_under-first", "has space", "a" * 65, "", "dot.ted", "ümlaut",
    None, 7, ["general"],
])
async def test_create_room_rejects_invalid_name_with_400(
    make_client: MakeClient, name: object
) -> None:
    client = await registered(make_client)
    status, body, response = await client.request("POST", "/api/rooms", {"name": name})
    assert_error(status, body, response, 400)


async def test_create_room_accepts_names_at_both_length_limits(make_client: MakeClient) -> None:
    client = await registered(make_client)
    for name in ("7", "z_-" + "9" * 61):
        status, body, _ = await client.request("POST", "/api/rooms", {"name": name})
        assert status == 201, (name, body)


async def test_create_room_without_a_session_is_401(make_client: MakeClient) -> None:
    client = make_client()
    status, body, response = await client.request("POST", "/api/rooms",
                                                  {"name": unique_name("anon")})
    assert_error(status, body, response, 401)


async def test_a_page_of_rooms_holds_at_most_100_whatever_limit_asks(
    make_client: MakeClient
) -> None:
    """Every room of a page that the caller is a member of costs it an unread and a
    mention count: `limit=1000` over a thousand rooms held the process's MongoDB access
    for seconds. Pages stop at 100 rooms, and `next` leads on to the rest."""
    client = await registered(make_client)
    tag = unique_name("cap")
    names = [f"{tag}-{i:03d}" for i in range(105)]
    for start in range(0, len(names), 20):
        made = await asyncio.gather(*(client.request("POST", "/api/rooms", {"name": name})
                                      for name in names[start:start + 20]))
        assert [status for status, _, _ in made] == [201] * len(made)
    status, first, _ = await client.request("GET", "/api/rooms?limit=1000")
    assert status == 200, first
    assert len(first["rooms"]) == 100 and first["next"] == first["rooms"][-1]["name"]
    assert all(r["member"] and "unread" in r for r in first["rooms"][1:])
    status, rest, _ = await client.request("GET", f"/api/rooms?limit=1000&after={first['next']}")
    assert status == 200 and "next" not in rest, rest
    assert [r["name"] for r in first["rooms"] + rest["rooms"]] == ["general", *names]


# History ---------------------------------------------------------------------------------


async def test_history_of_a_new_room_is_empty_without_more(make_client: MakeClient) -> None:
    client, room, _ = await room_with_messages(make_client, 0)
    body = await page(client, room)
    assert body["messages"] == [] and body["has_more"] is False


async def test_history_messages_are_ascending_and_shaped_like_message_frames(
    make_client: MakeClient
) -> None:
    client, room, seqs = await room_with_messages(make_client, 5)
    assert seqs == sorted(seqs) and len(set(seqs)) == 5
    body = await page(client, room)
    assert seqs_of(body) == seqs
    assert body["has_more"] is False
    assert client.user is not None
    for i, message in enumerate(body["messages"]):
        assert set(message) == {"type", "room", "id", "seq", "user", "body", "ts",
                                "client_id"}, message
        assert message["type"] == "message" and message["room"] == room
        assert message["body"] == f"body m{i}" and message["client_id"] == f"m{i}"
        assert message["user"] == client.user
        assert isinstance(message["ts"], int) and not isinstance(message["ts"], bool)
        assert message["ts"] > 1_600_000_000_000  # milliseconds, not seconds
        assert isinstance(message["id"], str) and message["id"]


async def test_history_without_cursor_is_the_latest_page_and_has_more_means_older_exist(
    make_client: MakeClient
) -> None:
    client, room, seqs = await room_with_messages(make_client, 60)
    body = await page(client, room)
    assert seqs_of(body) == seqs[-50:]  # default limit 50
    assert body["has_more"] is True

    body = await page(client, room, "limit=60")
    assert seqs_of(body) == seqs and body["has_more"] is False
    body = await page(client, room, "limit=59")
    assert seqs_of(body) == seqs[1:] and body["has_more"] is True


async def test_history_before_pages_backwards_and_has_more_means_older_exist(
    make_client: MakeClient
) -> None:
    client, room, seqs = await room_with_messages(make_client, 12)
    body = await page(client, room, f"before={seqs[10]}&limit=4")
    assert seqs_of(body) == seqs[6:10]
    assert body["has_more"] is True

    body = await page(client, room, f"before={seqs[4]}&limit=4")
    assert seqs_of(body) == seqs[0:4]
    assert body["has_more"] is False  # exactly the oldest four: nothing older

    body = await page(client, room, f"before={seqs[0]}")
    assert body["messages"] == [] and body["has_more"] is False

    # Walking back page by page from the newest yields everything once, in order.
    seen: list[int] = []
    query = "limit=5"
    while True:
        body = await page(client, room, query)
        seen = seqs_of(body) + seen
        if not body["has_more"]:
            break
        query = f"limit=5&before={body['messages'][0]['seq']}"
    assert seen == seqs


async def test_history_after_pages_forwards_and_has_more_means_newer_exist(
    make_client: MakeClient
) -> None:
    client, room, seqs = await room_with_messages(make_client, 12)
    body = await page(client, room, f"after={seqs[1]}&limit=4")
    assert seqs_of(body) == seqs[2:6]
    assert body["has_more"] is True

    body = await page(client, room, f"after={seqs[7]}&limit=4")
    assert seqs_of(body) == seqs[8:12]
    assert body["has_more"] is False  # exactly the newest four: nothing newer

    body = await page(client, room, f"after={seqs[-1]}")
    assert body["messages"] == [] and body["has_more"] is False

    body = await page(client, room, "after=0&limit=3")
    assert seqs_of(body) == seqs[:3] and body["has_more"] is True

    seen: list[int] = []
    after = 0
    while True:
        body = await page(client, room, f"after={after}&limit=5")
        seen += seqs_of(body)
        if not body["has_more"]:
            break
        after = body["messages"][-1]["seq"]
    assert seen == seqs


async def test_history_limit_is_clamped_to_1_through_100(make_client: MakeClient) -> None:
    client, room, seqs = await room_with_messages(make_client, 105)
    body = await page(client, room, "limit=1000")
    assert seqs_of(body) == seqs[-100:] and body["has_more"] is True
    body = await page(client, room, "limit=101")
    assert seqs_of(body) == seqs[-100:]
    body = await page(client, room, "limit=100")
    assert seqs_of(body) == seqs[-100:]
    body = await page(client, room, "after=0&limit=500")
    assert seqs_of(body) == seqs[:100] and body["has_more"] is True
    body = await page(client, room, "limit=0")
    assert seqs_of(body) == seqs[-1:] and body["has_more"] is True
    body = await page(client, room, "limit=1")
    assert seqs_of(body) == seqs[-1:]


async def test_history_negative_limit_is_clamped_to_1_like_the_websocket_history(
    make_client: MakeClient
) -> None:
    """DESIGN: `limit` is clamped to 1..100; the `history` frame clamps -5 to 1."""
    client, room, seqs = await room_with_messages(make_client, 3)
    sock = await client.ws()
    reply = await sock.call({"type": "history", "room": room, "limit": -5})
    sock.close()
    assert reply["type"] == "history" and [m["seq"] for m in reply["messages"]] == seqs[-1:]
    body = await page(client, room, "limit=-5")
    assert seqs_of(body) == seqs[-1:] and body["has_more"] is True


async def test_history_of_an_unknown_room_is_404(make_client: MakeClient) -> None:
    client = await registered(make_client)
    status, body, response = await client.request(
        "GET", f"/api/rooms/{unique_name('ghost')}/messages")
    assert_error(status, body, response, 404)


@pytest.mark.parametrize("query", [
    "before=abc", "after=1.5", "limit=ten", "before=-1", "after=-3",
    "before=99999999999999999999999", "limit=1e3",
])
async def test_history_with_bad_parameters_is_400(make_client: MakeClient, query: str) -> None:
    client = await registered(make_client)
    status, body, response = await client.request(
        "GET", f"/api/rooms/general/messages?{query}")
    assert_error(status, body, response, 400)


async def test_history_of_an_invalid_room_name_is_400(make_client: MakeClient) -> None:
    client = await registered(make_client)
    status, body, response = await client.request("GET", "/api/rooms/Not_Valid/messages")
    assert_error(status, body, response, 400)


async def test_history_needs_a_session(make_client: MakeClient) -> None:
    status, body, response = await make_client().request(
        "GET", "/api/rooms/general/messages")
    assert_error(status, body, response, 401)


# Probes, errors and headers --------------------------------------------------------------


async def test_healthz_and_readyz_answer_200(make_client: MakeClient) -> None:
    client = make_client()
    status, body, _ = await client.request("GET", "/healthz")
    assert status == 200, body
    status, body, _ = await client.request("GET", "/readyz")
    assert status == 200, body


async def test_api_errors_are_json_without_tracebacks(make_client: MakeClient) -> None:
    client = await registered(make_client)
    cases: list[tuple[str, str, bytes | None, int]] = [
        ("DELETE", "/api/me", None, 405),
        ("PUT", "/api/rooms", b"{}", 405),
        ("POST", "/api/rooms", b"\xff\xfe not utf-8", 400),
        ("POST", "/api/rooms", b"[" * 60_000, 400),  # deep nesting, within the 64 KiB body
    ]
    xsrf = {"X-XSRFToken": client.cookies["_xsrf"]}
    for method, path, raw, expected in cases:
        status, body, response = await client.request(method, path, raw=raw, headers=xsrf)
        assert status == expected, (method, path, status, response.body[:200])
        assert_error(status, body, response, expected)


async def test_an_invite_by_prefix_answers_get_and_post_with_405_json(
    make_client: MakeClient
) -> None:
    """`/api/invites/<prefix>` only revokes: GET and POST are 405 like any method a route
    lacks, not a 500 from the invite list's handlers, which take no prefix."""
    admin = await registered(make_client, "operator")  # the conftest config's ADMIN_USERS
    status, invite, _ = await admin.request("POST", "/api/invites", {})
    assert status == 201, invite
    path = f"/api/invites/{invite['prefix']}"
    for method, body in (("GET", None), ("POST", {}), ("POST", {"uses": 2})):
        status, reply, response = await admin.request(method, path, body)
        assert_error(status, reply, response, 405)
        assert reply["error"]["code"] == "method_not_allowed", (method, reply)
    status, listed, _ = await admin.request("GET", "/api/invites")
    assert [i["prefix"] for i in listed["invites"]] == [invite["prefix"]]  # nothing minted
    assert (await admin.request("DELETE", path))[0] == 204


async def test_unknown_api_paths_are_404_json(make_client: MakeClient) -> None:
    """DESIGN: every `/api/*` error is the JSON error body, unrouted paths included."""
    client = await registered(make_client)
    for path in ("/api/nonexistent", "/api/rooms/general/messages/extra"):
        status, body, response = await client.request("GET", path)
        assert_error(status, body, response, 404)


async def test_index_page_sends_security_headers_and_the_xsrf_cookie(
    make_client: MakeClient
) -> None:
    client = make_client()
    status, _, response = await client.request("GET", "/")
    assert status == 200
    csp = response.headers.get("Content-Security-Policy", "")
    assert csp and "default-src" in csp
    assert "'unsafe-inline'" not in csp and "'unsafe-eval'" not in csp
    assert response.headers.get("X-Content-Type-Options") == "nosniff"
    frame_options = response.headers.get("X-Frame-Options", "").upper()
    assert frame_options in ("DENY", "SAMEORIGIN") or "frame-ancestors" in csp
    assert "_xsrf" in client.cookies


async def test_api_responses_send_security_headers(make_client: MakeClient) -> None:
    client = await registered(make_client)
    _, _, response = await client.request("GET", "/api/me")
    assert response.headers.get("X-Content-Type-Options") == "nosniff"
    assert response.headers.get("Content-Type", "").startswith("application/json")
    assert response.headers.get("Cache-Control") == "no-store"

