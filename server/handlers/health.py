"""Liveness and readiness probes for load balancers and orchestrators."""

from __future__ import annotations

import tornado.web

from server.probe import ServiceProbe


class HealthHandler(tornado.web.RequestHandler):
    """200 while the process runs and its IOLoop answers."""

    def get(self) -> None:
        self.set_header("Cache-Control", "no-store")
        self.write({"status": "ok"})


class ReadyHandler(tornado.web.RequestHandler):
    """200 when MongoDB and Redis both answer (and Redis pub/sub is connected), else 503."""

    def initialize(self, probe: ServiceProbe) -> None:
        self.probe = probe

    async def get(self) -> None:
        self.set_header("Cache-Control", "no-store")
        services = await self.probe.check()
        checks = {name: "ok" if s["ok"] else f"down: {s['error']}"
                  for name, s in services.items()}
        if checks["redis"] == "ok" and not self.probe.subscriber_connected:
            checks["redis"] = "down: subscriber"
        ready = all(v == "ok" for v in checks.values())
        self.set_status(200 if ready else 503)
        self.write({"status": "ready" if ready else "unavailable", "checks": checks})
