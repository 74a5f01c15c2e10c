"""Real Redis and MongoDB-wire servers for the tests: embedded children or outside URLs."""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from pathlib import Path

from server.embedded import (
    ChildService,
    mongo_service,
    redis_service,
    start_on_free_port,
)
from server.embedded import mongo_url as embedded_mongo_url
from server.embedded import redis_url as embedded_redis_url


@dataclass
class Services:
    """The servers a test session talks to; the children can be stopped and restarted."""

    redis_url: str
    mongo_url: str
    redis: ChildService | None = None
    mongo: ChildService | None = None

    @classmethod
    def start(cls, tmp: Path) -> Services:
        redis = mongo = None
        redis_url = os.environ.get("REDIS_URL")
        mongo_url = os.environ.get("MONGO_URL")
        if not redis_url:
            redis = start_on_free_port(lambda: redis_service(tmp, persist=False))
            redis_url = embedded_redis_url(redis.port)
        if not mongo_url:
            mongo = start_on_free_port(lambda: mongo_service(tmp, test_commands=True))
            mongo_url = embedded_mongo_url(mongo.port)
        return cls(redis_url, mongo_url, redis, mongo)

    def stop(self) -> None:
        for svc in (self.mongo, self.redis):
            if svc is not None:
                svc.stop()

    def signal_redis(self, sig: signal.Signals) -> None:
        assert self.redis is not None and self.redis.proc is not None
        os.kill(self.redis.proc.pid, sig)
