"""Real Redis and MongoDB-wire servers for the tests: embedded children or outside URLs."""

from __future__ import annotations

import os
import secrets
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from server.children import Refused, private_dir
from server.embedded import (
    ChildService,
    MongoService,
    RedisService,
    free_port,
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


# Debian's redis-server (Redis 7): the cluster tests run against the Redis CI ships, not
# the embedded valkey, and fail, never skip, without it.
DEBIAN_REDIS = "/usr/bin/redis-server"
CLUSTER_SLOTS = 16384


@dataclass
class ClusterNodeService(ChildService):
    """One cluster-enabled redis-server on a loopback TCP port, with a password."""

    host: str = "127.0.0.1"
    port: int = 0
    settings: dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def config(self) -> bytes:
        return "".join(f'{k} "{v}"\n' for k, v in self.settings.items()).encode()

    def client(self) -> redis.Redis:
        return redis.Redis(self.host, self.port, password=self.settings["requirepass"],
                           socket_timeout=5, socket_connect_timeout=1,
                           retry=Retry(NoBackoff(), 0))

    def answering_pid(self) -> int | None:
        client = self.client()
        try:
            return int(client.info("server")["process_id"])
        except redis.AuthenticationError:
            raise Refused("it refused our password") from None
        except redis.ConnectionError:
            return None
        finally:
            client.close()


def cluster_node(workdir: Path, password: str) -> ClusterNodeService:
    port, bus_port = free_port(), free_port()
    settings = {
        "bind": "127.0.0.1", "port": str(port), "cluster-enabled": "yes",
        "cluster-port": str(bus_port), "cluster-config-file": "nodes.conf",
        "cluster-node-timeout": "2000", "dir": str(workdir), "daemonize": "no",
        "save": "", "appendonly": "no", "requirepass": password, "masterauth": password,
    }
    return ClusterNodeService("redis-server (cluster)", [DEBIAN_REDIS, "-"], workdir,
                              workdir / "redis.log", f"redis://:{password}@127.0.0.1:{port}/0",
                              port=port, settings=settings)


@dataclass
class RedisClusterService:
    """A Redis Cluster of primaries only (no replicas), the slots split evenly."""

    nodes: list[ClusterNodeService]
    password: str

    @property
    def url(self) -> str:
        """What REDIS_URL says: any one node, with the password the others share."""
        return f"redis://:{self.password}@127.0.0.1:{self.nodes[0].port}/0"

    @classmethod
    def start(cls, tmp: Path, size: int = 3, timeout: float = 30.0) -> RedisClusterService:
        if not os.access(DEBIAN_REDIS, os.X_OK):
            raise RuntimeError(f"{DEBIAN_REDIS} is missing: apt-get install redis-server")
        password = secrets.token_urlsafe(16)
        cluster = cls([], password)
        try:
            for i in range(size):
                cluster.nodes.append(start_on_free_port(
                    lambda i=i: cluster_node(private_dir(tmp / f"node{i}"), password)))
            cluster._form(timeout)
        except BaseException:
            cluster.stop()
            raise
        return cluster

    def _form(self, timeout: float) -> None:
        """Give each node its share of the slots, introduce them, wait for state ok."""
        clients = [n.client() for n in self.nodes]
        try:
            share = CLUSTER_SLOTS // len(clients)
            for i, client in enumerate(clients):
                last = CLUSTER_SLOTS - 1 if i == len(clients) - 1 else (i + 1) * share - 1
                client.execute_command("CLUSTER ADDSLOTSRANGE", i * share, last)
            for node in self.nodes[1:]:
                clients[0].execute_command("CLUSTER MEET", node.host, node.port,
                                           node.settings["cluster-port"])
        finally:
            for c in clients:
                c.close()
        self.wait_ok(timeout)

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Wait until every node knows every other and says cluster_state:ok."""
        clients = [n.client() for n in self.nodes]
        try:
            deadline = time.monotonic() + timeout
            while not all(self._ready(c) for c in clients):
                if time.monotonic() > deadline:
                    raise RuntimeError("the Redis cluster did not reach cluster_state:ok")
                time.sleep(0.05)  # gossip converging gives no event to wait for
        finally:
            for c in clients:
                c.close()

    def _ready(self, client: redis.Redis) -> bool:
        info = client.cluster("INFO")
        return (info["cluster_state"] == "ok"
                and int(info["cluster_known_nodes"]) == len(self.nodes))

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
