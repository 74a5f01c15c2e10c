"""Liveness and readiness probes for load balancers and orchestrators."""

from __future__ import annotations

import asyncio

import tornado.web

from server.bus import BusError
from server.chat import Chat
from server.store import StoreError


class HealthHandler(tornado.web.RequestHandler):
    """200 while the process runs and its IOLoop answers."""

    def get(self) -> None:
        self.set_header("Cache-Control", "no-store")
        self.write({"status": "ok"})


class ReadyHandler(tornado.web.RequestHandler):
    """200 when MongoDB and Redis both answer (and Redis pub/sub is connected), else 503."""

    def initialize(self, chat: Chat) -> None:
        self.chat = chat

    async def get(self) -> None:
        self.set_header("Cache-Control", "no-store")
        checks: dict[str, str] = {}
        try:
            await asyncio.wait_for(self.chat.store.ping(), 2.0)
            checks["mongodb"] = "ok"
        except (StoreError, asyncio.TimeoutError) as e:
            checks["mongodb"] = f"down: {type(e).__name__}"
        try:
            await self.chat.bus.ping()
            checks["redis"] = "ok" if self.chat.bus.connected else "down: subscriber"
        except BusError as e:
            checks["redis"] = f"down: {type(e).__name__}"
        ready = all(v == "ok" for v in checks.values())
        self.set_status(200 if ready else 503)
        self.write({"status": "ready" if ready else "unavailable", "checks": checks})
