"""Real Redis and MongoDB-wire servers for the tests: embedded children or outside URLs."""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from pathlib import Path

from server.embedded import (
    MongoService,
    RedisService,
    mongo_service,
    redis_service,
    start_on_free_port,
)


@dataclass
class Services:
    """The servers a test session talks to; the children can be stopped and restarted."""

    redis_url: str
    mongo_url: str
    redis: RedisService | None = None
    mongo: MongoService | None = None

    @classmethod
    def start(cls, tmp: Path) -> Services:
        redis = mongo = None
        redis_url = os.environ.get("REDIS_URL")
        mongo_url = os.environ.get("MONGO_URL")
        if not redis_url:
            redis = redis_service(tmp, persist=False)
            redis.start()
            redis_url = redis.url
        if not mongo_url:
            mongo = start_on_free_port(lambda: mongo_service(tmp, test_commands=True))
            mongo_url = mongo.url
        return cls(redis_url, mongo_url, redis, mongo)

    def stop(self) -> None:
        for svc in (self.mongo, self.redis):
            if svc is not None:
                svc.stop()

    def signal_redis(self, sig: signal.Signals) -> None:
        assert self.redis is not None and self.redis.proc is not None
        os.kill(self.redis.proc.pid, sig)
