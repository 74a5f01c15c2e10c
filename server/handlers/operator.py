"""Operator endpoints: /status (cluster JSON) and /metrics (Prometheus text)."""

from __future__ import annotations

import hmac

from prometheus_client import CONTENT_TYPE_LATEST

from server.admins import Admins
from server.auth import Auth
from server.handlers.base import ApiError, BaseHandler, bearer_token, unauthorized_message
from server.metrics import Metrics
from server.reporter import StatusReporter


class OperatorHandler(BaseHandler):
    """Open to an admin user's session or `Authorization: Bearer $STATUS_TOKEN`."""

    login_required = False

    def initialize(self, auth: Auth, admins: Admins,  # type: ignore[override]
                   status_token: str | None) -> None:
        super().initialize(auth)
        self.admins = admins
        self.status_token = status_token

    async def prepare(self) -> None:
        token = bearer_token(self.request)
        if token is not None and self.status_token and hmac.compare_digest(
            token.encode(), self.status_token.encode()
        ):
            return
        await super().prepare()
        if self.current_user is None:
            message = ("operator credentials required" if self.caller.how == "none"
                       else unauthorized_message(self.caller))
            raise ApiError(401, "unauthorized", message)
        if not await self.admins.is_admin(self.user):
            raise ApiError(403, "forbidden", "operators only")


class StatusHandler(OperatorHandler):
    def initialize(self, auth: Auth, admins: Admins,  # type: ignore[override]
                   status_token: str | None, reporter: StatusReporter) -> None:
        super().initialize(auth, admins, status_token)
        self.reporter = reporter

    async def get(self) -> None:
        self.write_json(await self.reporter.cluster())


class MetricsHandler(OperatorHandler):
    def initialize(self, auth: Auth, admins: Admins,  # type: ignore[override]
                   status_token: str | None, metrics: Metrics) -> None:
        super().initialize(auth, admins, status_token)
        self.metrics = metrics

    def get(self) -> None:
        self.set_header("Content-Type", CONTENT_TYPE_LATEST)
        self.finish(self.metrics.exposition())
