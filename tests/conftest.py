"""Fixtures: real Redis and MongoDB-wire servers, the real app, clients over real sockets.

Session-scoped services are started once (or taken from REDIS_URL / MONGO_URL); each
test gets its own database name and Redis key prefix, so tests never see each
other's data. pytest-tornasync runs each test on a fresh IOLoop and does not run
async fixtures, so async set-up goes through io_loop.run_sync().
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

try:
    import tornado.httpserver
except ModuleNotFoundError as e:  # pytest run outside the project's virtualenv
    raise pytest.UsageError(
        f"{e}: the tests need the project installed with its test extras. Run the "
        "README's test command, which does that in .venv: bash .ci/run, or "
        "python3 -m venv .venv && . .venv/bin/activate && pip install -e '.[test]' "
        "&& python -m pytest") from None
import tornado.ioloop
import tornado.testing
import tornado.web

from server.app import make_server
from server.config import Config, Quotas
from server.embedded import (
    ChildService,
    MongoService,
    RedisService,
    mongo_service,
    redis_service,
    start_on_free_port,
)
from server.limits import LimitSettings
from server.runtime import Runtime
from tests.client import Client
from tests.services import Services

TEST_SECRET = "test-cookie-secret-not-for-production"
STATUS_TOKEN = "status-token-for-tests-only"


@pytest.fixture(scope="session")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    svc = Services.start(tmp_path_factory.mktemp("services"))
    yield svc
    svc.stop()


@pytest.fixture
def config(services: Services, tmp_path: Path) -> Config:
    tag = uuid.uuid4().hex[:10]
    return Config(
        port=0,
        mongo_url=services.mongo_url,
        redis_url=services.redis_url,
        db_name=f"test_{tag}",
        redis_prefix=f"test:{tag}:",
        data_dir=tmp_path,
        cookie_secrets={1: TEST_SECRET},
        bcrypt_rounds=4,
        presence_ttl=3.0,
        node_id=f"n1-{tag}",
        admin_users=("operator",),
        # Tests send bursts and register many users from one address; the limit tests
        # set the production-like values they exercise.
        limits=LimitSettings(message_rate=10_000, message_burst=10_000,
                             registrations_per_ip=100_000, login_failures_per_ip=1_000,
                             frame_rate=10_000, frame_burst=10_000, typing_every=0.0,
                             search_rate=10_000, search_burst=10_000, dm_rate=10_000,
                             dm_burst=10_000, upload_rate=10_000, upload_burst=10_000),
        # Likewise for rooms, bots and tokens; the quota tests set the shipped values.
        quotas=Quotas(rooms_per_user=10_000, bots_per_user=1_000, tokens_per_bot=1_000),
        status_token=STATUS_TOKEN,
    )


def start_runtime(io_loop: tornado.ioloop.IOLoop, config: Config,
                  services: Services) -> Runtime:
    runtime = Runtime(config, mongo_url=services.mongo_url, redis_url=services.redis_url)
    io_loop.run_sync(runtime.start, timeout=30)
    return runtime


@pytest.fixture
def runtime(io_loop: tornado.ioloop.IOLoop, config: Config,
            services: Services) -> Iterator[Runtime]:
    rt = start_runtime(io_loop, config, services)
    yield rt
    io_loop.run_sync(rt.close, timeout=30)


@pytest.fixture
def app(runtime: Runtime) -> tornado.web.Application:
    return runtime.app


@pytest.fixture
def http_server(io_loop: tornado.ioloop.IOLoop, app: tornado.web.Application, config: Config,
                http_server_port: tuple[object, int]
                ) -> Iterator[tornado.httpserver.HTTPServer]:
    """The main test server, built as run.py builds it (pytest-tornasync's has no limits)."""
    server = make_server(app, config)
    server.add_socket(http_server_port[0])
    yield server
    server.stop()
    io_loop.run_sync(server.close_all_connections, timeout=10)


@pytest.fixture
def base_url(http_server: tornado.httpserver.HTTPServer,
             http_server_port: tuple[object, int]) -> str:
    return f"http://127.0.0.1:{http_server_port[1]}"


@pytest.fixture
def make_client(base_url: str) -> Callable[..., Client]:
    """Factory of clients of the main test server (or of another base URL)."""
    def make(url: str | None = None) -> Client:
        return Client(url or base_url)
    return make


@dataclasses.dataclass
class Node:
    """A second server sharing the first one's Redis, MongoDB, database and prefix."""

    runtime: Runtime
    server: tornado.httpserver.HTTPServer
    base_url: str


async def open_node(config: Config, services: Services | None = None, *,
                    mongo_url: str | None = None, redis_url: str | None = None) -> Node:
    """Start a whole server (runtime + HTTP) from inside an async test."""
    rt = Runtime(config, mongo_url=mongo_url or (services.mongo_url if services else ""),
                 redis_url=redis_url or (services.redis_url if services else ""))
    await rt.start()
    sock, port = tornado.testing.bind_unused_port()
    server = make_server(rt.app, config)
    server.add_socket(sock)
    return Node(rt, server, f"http://127.0.0.1:{port}")


async def close_node(node: Node) -> None:
    node.server.stop()
    await node.server.close_all_connections()
    await node.runtime.close()


@pytest.fixture
def second_node(io_loop: tornado.ioloop.IOLoop, config: Config, services: Services,
                http_server: tornado.httpserver.HTTPServer) -> Iterator[Node]:
    cfg = dataclasses.replace(config, node_id=config.node_id.replace("n1-", "n2-"))
    rt = start_runtime(io_loop, cfg, services)
    sock, port = tornado.testing.bind_unused_port()
    server = make_server(rt.app, cfg)
    server.add_socket(sock)
    yield Node(rt, server, f"http://127.0.0.1:{port}")
    server.stop()
    io_loop.run_sync(server.close_all_connections, timeout=10)
    io_loop.run_sync(rt.close, timeout=30)


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisService]:
    """A Redis of this test's own, which the test may kill and restart (start() again:
    the same socket and password)."""
    svc = redis_service(tmp_path / "private", persist=False)
    svc.start()
    yield svc
    svc.stop()


@pytest.fixture
def private_mongo(tmp_path: Path) -> Iterator[MongoService]:
    """A secantusd-py of this test's own, with failpoints enabled, which it may restart
    (start() again: the same port and credentials)."""
    svc = start_on_free_port(lambda: mongo_service(tmp_path / "private",
                                                   test_commands=True))
    yield svc
    svc.stop()


def redis_url_of(svc: ChildService) -> str:
    """The URL of a private service, with its credentials."""
    return svc.url


def mongo_url_of(svc: ChildService) -> str:
    """The URL of a private service, with its credentials."""
    return svc.url
