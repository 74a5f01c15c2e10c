"""A test client that speaks the public HTTP API and WebSocket protocol, nothing more."""

from __future__ import annotations

import asyncio
import itertools
import json
from http.cookies import SimpleCookie
from typing import Any

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest, HTTPResponse
from tornado.websocket import WebSocketClientConnection, websocket_connect

PASSWORD = "correct horse battery"
_names = itertools.count(1)


def unique_name(prefix: str = "user") -> str:
    return f"{prefix}{next(_names)}"


class Client:
    """One browser-like user agent: a cookie jar, the XSRF dance, JSON in and out."""

    def __init__(self, base_url: str) -> None:
        self.base = base_url.rstrip("/")
        self.http = AsyncHTTPClient()
        self.cookies: dict[str, str] = {}
        self.user: dict[str, Any] | None = None
        self.token: str | None = None

    @property
    def origin(self) -> str:
        return self.base

    def cookie_header(self) -> str:
        return "; ".join(f"{k}={v}" for k, v in self.cookies.items())

    def _absorb(self, response: HTTPResponse) -> None:
        for raw in response.headers.get_list("Set-Cookie"):
            jar: SimpleCookie = SimpleCookie()
            jar.load(raw)
            for key, morsel in jar.items():
                if morsel["expires"] and not morsel.value:
                    self.cookies.pop(key, None)
                elif morsel.value == "" or "1970" in str(morsel["expires"]):
                    self.cookies.pop(key, None)
                else:
                    self.cookies[key] = morsel.value

    async def request(self, method: str, path: str, body: Any = None, *,
                      headers: dict[str, str] | None = None, raw: bytes | None = None,
                      xsrf: bool = True) -> tuple[int, Any, HTTPResponse]:
        """(status, parsed JSON or None, response), whatever the status."""
        hdrs = dict(headers or {})
        unsafe = method not in ("GET", "HEAD", "OPTIONS")
        if unsafe and xsrf and "_xsrf" not in self.cookies and self.token is None:
            await self.request("GET", "/")
        if self.cookies and "Cookie" not in hdrs:
            hdrs["Cookie"] = self.cookie_header()
        if unsafe and xsrf and "_xsrf" in self.cookies:
            hdrs.setdefault("X-XSRFToken", self.cookies["_xsrf"])
        if self.token is not None:
            hdrs.setdefault("Authorization", f"Bearer {self.token}")
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None
                                            else (b"" if method == "POST" else None))
        req = HTTPRequest(self.base + path, method=method, headers=hdrs, body=data,
                          follow_redirects=False, request_timeout=20)
        try:
            response = await self.http.fetch(req, raise_error=False)
        except HTTPClientError as e:  # pragma: no cover - raise_error=False
            assert e.response is not None
            response = e.response
        self._absorb(response)
        parsed = None
        if response.body and response.headers.get("Content-Type", "").startswith(
            "application/json"
        ):
            parsed = json.loads(response.body)
        return response.code, parsed, response

    async def register(self, name: str | None = None, password: str = PASSWORD
                       ) -> dict[str, Any]:
        name = name or unique_name()
        status, body, _ = await self.request("POST", "/api/register",
                                             {"username": name, "password": password})
        assert status == 201, (status, body)
        self.user = body
        return body

    async def login(self, name: str, password: str = PASSWORD) -> tuple[int, Any]:
        status, body, _ = await self.request("POST", "/api/login",
                                             {"username": name, "password": password})
        if status == 200:
            self.user = body
        return status, body

    async def ws(self, *, origin: str | None = "self", headers: dict[str, str] | None = None
                 ) -> Socket:
        """Open /ws with this client's credentials and read its `hello`."""
        sock = await self.ws_raw(origin=origin, headers=headers)
        hello = await sock.recv()
        assert hello["type"] == "hello", hello
        sock.hello = hello
        return sock

    async def ws_raw(self, *, origin: str | None = "self",
                     headers: dict[str, str] | None = None) -> Socket:
        hdrs = dict(headers or {})
        if self.cookies:
            hdrs.setdefault("Cookie", self.cookie_header())
        if self.token is not None:
            hdrs.setdefault("Authorization", f"Bearer {self.token}")
        if origin == "self":
            hdrs.setdefault("Origin", self.base)
        elif origin is not None:
            hdrs.setdefault("Origin", origin)
        url = self.base.replace("http", "ws", 1) + "/ws"
        conn = await websocket_connect(HTTPRequest(url, headers=hdrs, request_timeout=10))
        return Socket(conn)


class Socket:
    """A WebSocket client with JSON frames and timeouts on every read."""

    def __init__(self, conn: WebSocketClientConnection) -> None:
        self.conn = conn
        self.hello: dict[str, Any] = {}
        self.refs = itertools.count(1)

    async def send(self, frame: dict[str, Any] | str) -> None:
        await self.conn.write_message(frame if isinstance(frame, str) else json.dumps(frame))

    async def recv(self, timeout: float = 5.0) -> dict[str, Any]:
        raw = await asyncio.wait_for(self.conn.read_message(), timeout)
        if raw is None:
            raise ConnectionError(f"closed: {self.conn.close_code} {self.conn.close_reason}")
        return json.loads(raw)

    async def expect(self, kind: str, timeout: float = 5.0, **match: Any) -> dict[str, Any]:
        """The next frame of type `kind` (matching `match`); other frames are skipped."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            frame = await self.recv(max(0.01, deadline - loop.time()))
            if frame["type"] == kind and all(frame.get(k) == v for k, v in match.items()):
                return frame

    async def call(self, frame: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
        """Send a frame with a fresh ref and return the reply that echoes it."""
        ref = f"r{next(self.refs)}"
        await self.send({**frame, "ref": ref})
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            reply = await self.recv(max(0.01, deadline - loop.time()))
            if reply.get("ref") == ref:
                return reply

    async def join(self, room: str = "general", **extra: Any) -> dict[str, Any]:
        reply = await self.call({"type": "join", "room": room, **extra})
        assert reply["type"] == "joined", reply
        return reply

    async def closed(self, timeout: float = 5.0) -> tuple[int | None, str | None]:
        """Wait for the server to close; returns (code, reason)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            raw = await asyncio.wait_for(self.conn.read_message(),
                                         max(0.01, deadline - loop.time()))
            if raw is None:
                return self.conn.close_code, self.conn.close_reason

    def close(self) -> None:
        self.conn.close()


def messages_of(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The messages of a page of a room's stream, without its events (a first join of
    a public room is one)."""
    return [r for r in records if r["type"] == "message"]
