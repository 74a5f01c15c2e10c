"""HTTP set-up for benchmarks: XSRF token, accounts (register or log in) and rooms.

Only loopback targets are accepted: every request of the benchmark stays on this machine.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from tornado.httpclient import AsyncHTTPClient, HTTPResponse

LOOPBACK_NAMES = {"localhost"}


class SetupError(RuntimeError):
    """The target refused a set-up step (registration, login, room creation)."""


def check_loopback(url: str) -> str:
    """Return `url` without a trailing slash; refuse anything but a loopback http URL."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.scheme != "http" or parts.port is None:
        raise ValueError(f"target must look like http://127.0.0.1:PORT, got {url!r}")
    if host not in LOOPBACK_NAMES:
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise ValueError(f"benchmarks only target loopback addresses, not {host!r}")
    return url.rstrip("/")


def ws_url(target: str) -> str:
    """The `/ws` endpoint for an http target."""
    return "ws" + target[len("http") :] + "/ws"


def _cookies(response: HTTPResponse) -> dict[str, str]:
    """Name -> value for every Set-Cookie of `response` (values kept verbatim)."""
    jar: dict[str, str] = {}
    for header in response.headers.get_list("Set-Cookie"):
        name, _, value = header.split(";", 1)[0].partition("=")
        jar[name.strip()] = value.strip()
    return jar


@dataclass(frozen=True)
class Account:
    """A logged-in user: the Cookie header to present on `/ws` and the API."""

    username: str
    cookie: str


class ApiClient:
    """Talks to our server's HTTP API the way a browser does (XSRF cookie + header)."""

    def __init__(self, target: str, timeout: float = 30.0) -> None:
        self.target = check_loopback(target)
        self.origin = self.target
        self.timeout = timeout
        self.http = AsyncHTTPClient(force_instance=True)
        self.xsrf = ""

    async def needs_accounts(self) -> bool:
        """True when `GET /` hands out an `_xsrf` cookie, i.e. the target is our server."""
        response = await self.http.fetch(
            self.target + "/", raise_error=False, request_timeout=self.timeout
        )
        self.xsrf = _cookies(response).get("_xsrf", "")
        return bool(self.xsrf)

    async def _post(
        self, path: str, payload: dict[str, str], cookie: str = "", source_ip: str = ""
    ) -> HTTPResponse:
        if not self.xsrf and not await self.needs_accounts():
            raise SetupError(f"{self.target}/ set no _xsrf cookie")
        cookies = f"_xsrf={self.xsrf}" + (f"; {cookie}" if cookie else "")
        return await self.http.fetch(
            self.target + path,
            method="POST",
            body=json.dumps(payload),
            headers={
                "Content-Type": "application/json",
                "Cookie": cookies,
                "X-XSRFToken": self.xsrf,
                "Origin": self.origin,
            },
            raise_error=False,
            request_timeout=self.timeout,
            network_interface=source_ip or None,
        )

    async def account(self, username: str, password: str, source_ip: str = "") -> Account:
        """Register `username`, or log in when it exists; return its session.

        Registering from an address that hit the server's registration throttle (429)
        falls back to logging in too: on a long-running target the account may exist.
        """
        credentials = {"username": username, "password": password}
        response = await self._post("/api/register", credentials, source_ip=source_ip)
        if response.code in (409, 429):
            response = await self._post("/api/login", credentials, source_ip=source_ip)
        if response.code not in (200, 201):
            raise SetupError(f"account {username}: HTTP {response.code} {response.body!r}")
        session = _cookies(response).get("session")
        if not session:
            raise SetupError(f"account {username}: no session cookie in the answer")
        return Account(username, f"session={session}")

    async def accounts(
        self, wanted: Iterable[tuple[str, str]], password: str, concurrency: int = 4
    ) -> dict[str, Account]:
        """Sessions for (username, source address) pairs, `concurrency` at a time (bcrypt)."""
        gate = asyncio.Semaphore(concurrency)

        async def one(name: str, source_ip: str) -> Account:
            async with gate:
                return await self.account(name, password, source_ip)

        done = await asyncio.gather(*(one(name, ip) for name, ip in wanted))
        return {account.username: account for account in done}

    async def ensure_room(self, name: str, account: Account) -> None:
        """Create room `name` unless it exists."""
        response = await self._post("/api/rooms", {"name": name}, cookie=account.cookie)
        if response.code not in (200, 201, 409):
            raise SetupError(f"room {name}: HTTP {response.code} {response.body!r}")

    def close(self) -> None:
        """Release the HTTP client."""
        self.http.close()
