"""What make_server() sets for every connection: the HTTP server's bounds on bodies and
idle connections."""

from __future__ import annotations

import asyncio
import dataclasses

from server.config import Config
from tests.client import Client
from tests.conftest import close_node, open_node
from tests.services import Services

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
