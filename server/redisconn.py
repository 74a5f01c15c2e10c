"""The Redis clients made from REDIS_URL: one server or a Redis Cluster, found out at start.

REDIS_URL names one server either way. At start-up the process asks it `INFO cluster`:
with `cluster_enabled:1` it is a node of a Redis Cluster, and the process uses redis-py's
cluster client for commands (which finds the other nodes and follows MOVED / ASK) and
sharded pub/sub for the bus (server/subscriber.py); otherwise one client and plain
pub/sub. Nothing else changes: every key that a command or script uses together with
another carries the same hash tag, so it works on both.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, TypeAlias

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, RedisError

from server.subscriber import ChannelSubscriber, ShardedSubscriber, Subscriber

log = logging.getLogger(__name__)

# Either kind: both have the commands the server uses, with the same signatures.
RedisClient: TypeAlias = Redis | RedisCluster


class RedisConnectError(Exception):
    """REDIS_URL does not answer at start-up, or its cluster cannot be mapped."""


def redis_client(url: str, pool_size: int) -> Redis:
    """The client for commands: a pool that makes callers wait for a connection instead
    of failing, and that retries a command over a fresh connection when the pooled one
    turns out dead.

    redis-py's default pool raises once its connections are all busy; a bounded,
    blocking pool turns a burst into a short queue (and a timeout into an error).
    After a Redis restart the pool still holds the connections to the old server, and
    redis-py 8 does not always notice before it uses one ("Connection closed by
    server"); without the retry, such a publish fails although Redis is back.
    """
    return _redis(url, pool_size, Retry(ExponentialBackoff(cap=0.2, base=0.02), 2),
                  retry_on_error=[RedisConnectionError])


def redis_subscriber(url: str) -> Redis:
    """The client for the pub/sub subscriber: one connection, never retried quietly.

    A subscriber that reconnected behind our back would have missed what was published
    meanwhile with no one the wiser; its errors must reach the bus, which resyncs.
    """
    return _redis(url, 1, Retry(NoBackoff(), 0))


def _redis(url: str, size: int, retry: Retry, **options: Any) -> Redis:
    pool = BlockingConnectionPool.from_url(
        url, max_connections=size, timeout=2, socket_timeout=2, socket_connect_timeout=2,
        health_check_interval=10, retry=retry, **options,
    )
    return Redis(connection_pool=pool)


def cluster_client(url: str, pool_size: int) -> RedisCluster:
    """The cluster client for commands: `pool_size` connections per node.

    Unlike the single server's pool, redis-py's cluster pool raises at once when a
    node's connections are all busy (MaxConnectionsError): size it for the peak of
    commands in flight to one node. Its retry follows MOVED and refreshes the slot map
    after a failover by itself; two quick retries keep a failing command short.
    """
    return RedisCluster.from_url(
        url, max_connections=pool_size, socket_timeout=2, socket_connect_timeout=2,
        retry=Retry(ExponentialBackoff(cap=0.2, base=0.02), 2),
    )


async def is_cluster(url: str, timeout: float = 5.0) -> bool:
    """Whether the server at `url` is a node of a Redis Cluster (`INFO cluster`)."""
    probe = redis_subscriber(url)
    try:
        info = await asyncio.wait_for(probe.info("cluster"), timeout)
    except (RedisError, OSError, asyncio.TimeoutError) as e:
        raise RedisConnectError(f"Redis (REDIS_URL) does not answer: {e or type(e).__name__}"
                                ) from e
    finally:
        await probe.aclose()
    return bool(int(info.get("cluster_enabled", 0)))


async def connect(url: str, pool_size: int) -> tuple[RedisClient, Subscriber]:
    """The command client and the bus's subscriber for REDIS_URL, of the right kind."""
    if not await is_cluster(url):
        return redis_client(url, pool_size), ChannelSubscriber(redis_subscriber(url))
    cluster = cluster_client(url, pool_size)
    try:
        await asyncio.wait_for(cluster.initialize(), 10)
    except (RedisError, RedisClusterException, OSError, asyncio.TimeoutError) as e:
        await cluster.aclose()
        raise RedisConnectError(f"Redis Cluster (REDIS_URL) cannot be mapped: "
                                f"{e or type(e).__name__}") from e
    log.info("Redis Cluster of %d primaries: sharded pub/sub",
             len(cluster.get_primaries()))
    return cluster, ShardedSubscriber(cluster)
