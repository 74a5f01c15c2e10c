"""What make_app() and make_server() set for every request: cross-origin protection,
the `_xsrf` cookie's flags, and the HTTP server's bounds on bodies and idle connections."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from http.cookies import SimpleCookie
from typing import Any

import pytest

from server.config import Config
from tests.client import Client, unique_name
from tests.conftest import close_node, open_node
from tests.services import Services

MakeClient = Callable[..., Client]


async def create_room(client: Client, headers: dict[str, str]) -> tuple[int, Any]:
    status, body, _ = await client.request("POST", "/api/rooms", {"name": unique_name("xo")},
                                           headers=headers)
    return status, body


# Cross-origin protection -----------------------------------------------------------------


@pytest.mark.parametrize("headers", [
    {"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"},
    {"Origin": "http://evil.example"},  # an older browser: no Sec-Fetch-Site
    # Another port of the same host can read our _xsrf cookie (cookies ignore ports),
    # so a valid token is not enough: the Origin must be ours.
    {"Origin": "http://127.0.0.1:1", "Sec-Fetch-Site": "same-site"},
    {"Origin": "http://127.0.0.1:1"},
    {"Origin": "null", "Sec-Fetch-Site": "cross-site"},
], ids=["cross-site", "cross-site-old-browser", "same-site", "same-site-old-browser", "null"])
async def test_cookie_post_from_another_origin_is_refused_despite_a_valid_xsrf_token(
        make_client: MakeClient, headers: dict[str, str]) -> None:
    client = make_client()
    await client.register()
    status, body = await create_room(client, headers)
    assert status == 403, body
    assert body["error"]["code"] == "cross_origin" and body["error"]["message"], body
    # Logout is a POST too: the session survives a forged one.
    status, _, _ = await client.request("POST", "/api/logout", headers=headers)
    assert status == 403
    assert (await client.request("GET", "/api/me"))[0] == 200


async def test_cookie_post_from_our_own_origin_or_without_origin_is_accepted(
        make_client: MakeClient, base_url: str) -> None:
    client = make_client()
    await client.register()
    for headers in ({}, {"Origin": base_url}, {"Sec-Fetch-Site": "same-origin"},
                    {"Origin": base_url, "Sec-Fetch-Site": "same-origin"}):
        status, body = await create_room(client, headers)
        assert status == 201, (headers, body)


async def test_bearer_post_from_another_origin_is_accepted(make_client: MakeClient) -> None:
    owner = make_client()
    await owner.register()
    bot = unique_name("xbot")
    assert (await owner.request("POST", "/api/bots", {"name": bot}))[0] == 201
    client = make_client()
    client.token = (await owner.request("POST", f"/api/bots/{bot}/tokens", {}))[1]["token"]
    status, body = await create_room(client, {"Origin": "http://evil.example",
                                              "Sec-Fetch-Site": "cross-site"})
    assert status == 201, body


async def test_allowed_origins_may_send_cookie_posts(config: Config, services: Services) -> None:
    cfg = dataclasses.replace(config, allowed_origins=("https://chat.example.com",))
    node = await open_node(cfg, services)
    try:
        client = Client(node.base_url)
        await client.register()
        status, body = await create_room(client, {"Origin": "https://chat.example.com",
                                                  "Sec-Fetch-Site": "cross-site"})
        assert status == 201, body
        status, body = await create_room(client, {"Origin": "https://other.example.com",
                                                  "Sec-Fetch-Site": "cross-site"})
        assert status == 403, body
    finally:
        await close_node(node)


# The _xsrf cookie ------------------------------------------------------------------------


def xsrf_morsel(response: Any) -> Any:
    for raw in response.headers.get_list("Set-Cookie"):
        jar: SimpleCookie = SimpleCookie()
        jar.load(raw)
        if "_xsrf" in jar:
            return jar["_xsrf"]
    raise AssertionError(response.headers.get_list("Set-Cookie"))


async def test_xsrf_cookie_is_secure_over_https_only(config: Config, services: Services) -> None:
    node = await open_node(dataclasses.replace(config, xheaders=True), services)
    try:
        for path in ("/", "/status.html"):
            _, _, response = await Client(node.base_url).request(
                "GET", path, headers={"X-Forwarded-Proto": "https"})
            morsel = xsrf_morsel(response)
            assert morsel["secure"] is True, (path, morsel.OutputString())
            assert morsel["samesite"].lower() == "lax" and not morsel["httponly"]
            _, _, response = await Client(node.base_url).request("GET", path)
            assert not xsrf_morsel(response)["secure"], path
    finally:
        await close_node(node)


# The HTTP server's bounds ----------------------------------------------------------------


async def closed_after(port: int, data: bytes, timeout: float = 10.0) -> tuple[float, bytes]:
    """Send `data` and nothing more; (seconds until the server closed, what it answered)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    loop = asyncio.get_running_loop()
    start = loop.time()
    try:
        writer.write(data)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), timeout)
        return loop.time() - start, answer
    finally:
        writer.close()


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


async def test_a_body_that_does_not_arrive_in_time_drops_the_connection(
        config: Config, services: Services) -> None:
    node = await open_node(dataclasses.replace(config, http_body_timeout=0.5), services)
    try:
        head = (b"POST /api/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: 100\r\n\r\n")
        elapsed, answer = await closed_after(port_of(node.base_url), head + b'{"user')
        assert answer == b"" and 0.4 <= elapsed < 5, (elapsed, answer)
        # The server serves everyone else meanwhile and after.
        assert (await Client(node.base_url).request("GET", "/healthz"))[0] == 200
    finally:
        await close_node(node)


async def test_headers_that_do_not_arrive_in_time_drop_the_connection(
        config: Config, services: Services) -> None:
    node = await open_node(dataclasses.replace(config, http_idle_timeout=0.5), services)
    try:
        elapsed, answer = await closed_after(port_of(node.base_url),
                                             b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        assert answer == b"" and 0.4 <= elapsed < 5, (elapsed, answer)
    finally:
        await close_node(node)


async def test_a_body_over_64_kib_is_refused_with_400_and_the_connection_closed(
        base_url: str) -> None:
    head = (b"POST /api/rooms HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
            % (64 * 1024 + 1))
    _, answer = await closed_after(port_of(base_url), head)
    assert answer.startswith(b"HTTP/1.1 400"), answer
