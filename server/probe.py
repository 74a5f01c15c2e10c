"""One check of the services every process depends on, shared by /readyz and /status."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from server.bus import Bus, BusError
from server.metrics import Metrics
from server.store import Store, StoreError


class ServiceProbe:
    """Pings MongoDB and Redis; says whether the Redis subscriber is connected."""

    def __init__(self, store: Store, bus: Bus, metrics: Metrics | None = None,
                 timeout: float = 2.0) -> None:
        self.store = store
        self.bus = bus
        self.metrics = metrics
        self.timeout = timeout

    async def check(self) -> dict[str, dict[str, Any]]:
        """{"mongodb": {"ok", "rtt_ms"} or {"ok", "error"}, "redis": the same}.

        Each check also sets the chat_mongo_* and chat_redis_* gauges.
        """
        mongodb: dict[str, Any]
        start = time.perf_counter()
        try:
            await asyncio.wait_for(self.store.ping(), self.timeout)
            mongodb = {"ok": True, "rtt_ms": _ms_since(start)}
        except (StoreError, asyncio.TimeoutError) as e:
            mongodb = {"ok": False, "error": type(e).__name__}
        redis: dict[str, Any]
        try:
            redis = {"ok": True, "rtt_ms": round(await self.bus.ping() * 1000, 3)}
        except BusError as e:
            redis = {"ok": False, "error": type(e).__name__}
        results = {"mongodb": mongodb, "redis": redis}
        if self.metrics is not None:
            self.metrics.services_checked(results)
        return results

    @property
    def subscriber_connected(self) -> bool:
        return self.bus.connected


def _ms_since(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 3)
