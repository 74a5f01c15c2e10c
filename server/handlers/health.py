"""Liveness and readiness probes for load balancers and orchestrators."""

from __future__ import annotations

import tornado.web

from server.inflight import Inflight
from server.probe import ServiceProbe


class HealthHandler(tornado.web.RequestHandler):
    """200 while the process runs and its IOLoop answers."""

    def get(self) -> None:
        self.set_header("Cache-Control", "no-store")
        self.write({"status": "ok"})


class ReadyHandler(tornado.web.RequestHandler):
    """200 when MongoDB and Redis both answer (and Redis pub/sub is connected), else 503;
    503 "draining" from the moment a graceful shutdown begins."""

    def initialize(self, probe: ServiceProbe, inflight: Inflight) -> None:
        self.probe = probe
        self.inflight = inflight

    async def get(self) -> None:
        self.set_header("Cache-Control", "no-store")
        if self.inflight.draining:
            self._draining()
            return
        services = await self.probe.check()
        if self.inflight.draining:  # began while the services were asked
            self._draining()
            return
        checks = {name: "ok" if s["ok"] else f"down: {s['error']}"
                  for name, s in services.items()}
        if checks["redis"] == "ok" and not self.probe.subscriber_connected:
            checks["redis"] = "down: subscriber"
        ready = all(v == "ok" for v in checks.values())
        self.set_status(200 if ready else 503)
        self.write({"status": "ready" if ready else "unavailable", "checks": checks})

    def _draining(self) -> None:
        # A keep-alive probe connection stays open during the drain: it must hear this
        # at once, not the services' state.
        self.log_quietly = True  # an expected answer while draining, not an error
        self.set_status(503)
        self.write({"status": "draining", "checks": {}})
