"""The embedded services admit only the chat server: a stranger on the same machine,
without the password or the credentials, is refused; even with them, Redis cannot be
made to write files elsewhere; a port another process holds is never used."""

from __future__ import annotations

import contextlib
import os
import socket
import stat
from collections.abc import Iterator
from pathlib import Path

import pymongo
import pymongo.errors
import pytest
import redis

from server.embedded import (
    EmbeddedError,
    EmbeddedServices,
    MongoService,
    RedisService,
    mongo_service,
    redis_service,
)
from server.runtime import redis_client
from tests.proxy import TcpProxy


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def tcp_listeners(pid: int) -> list[int]:
    """The TCP ports process `pid` listens on (from /proc)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        # A descriptor may close between the listing and its reading (a server that has
        # just started opens and closes files): it was no listening socket then.
        with contextlib.suppress(FileNotFoundError):
            inodes.add(os.readlink(f"/proc/{pid}/fd/{fd}"))
    ports = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and f"socket:[{fields[9]}]" in inodes:  # 0A: LISTEN
                ports.append(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def raw_command(sock_path: Path, *commands: bytes) -> list[bytes]:
    """Send inline commands over the unix socket as any local client could; the
    one-line replies, in order."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(5)
        s.connect(str(sock_path))
        s.sendall(b"".join(c + b"\r\n" for c in commands))
        received = b""
        while received.count(b"\r\n") < len(commands):
            chunk = s.recv(4096)
            if not chunk:
                break
            received += chunk
    return received.split(b"\r\n")[:len(commands)]


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[EmbeddedServices]:
    """Both services as run.py starts them, on a data dir of this test's own."""
    services = EmbeddedServices(tmp_path / "data", want_redis=True, want_mongo=True)
    services.start()
    yield services
    services.stop()


def test_redis_has_no_tcp_port_and_refuses_a_client_without_the_password(
        private_redis: RedisService) -> None:
    assert private_redis.pid is not None
    assert tcp_listeners(private_redis.pid) == []
    assert raw_command(private_redis.socket_path, b"SET k forged")[0].startswith(b"-NOAUTH")
    stranger = redis.Redis(unix_socket_path=str(private_redis.socket_path))
    with pytest.raises(redis.AuthenticationError):
        stranger.publish("chat:room:general", b'{"type":"message"}')
    stranger.close()
    wrong = redis.Redis(unix_socket_path=str(private_redis.socket_path), password="guess")
    with pytest.raises(redis.AuthenticationError):
        wrong.ping()
    wrong.close()


@pytest.mark.parametrize("command", [
    b"CONFIG SET dir /tmp", b"CONFIG GET dir", b"DEBUG SLEEP 0", b"MODULE LIST",
    b"REPLICAOF 127.0.0.1 9", b"ACL SETUSER default nopass", b"SHUTDOWN NOSAVE",
])
def test_admin_commands_are_refused_even_with_the_password(
        private_redis: RedisService, command: bytes) -> None:
    replies = raw_command(private_redis.socket_path,
                          b"AUTH " + private_redis.password.encode(), command, b"PING")
    assert replies[0] == b"+OK"  # the password is right
    assert replies[1].startswith(b"-ERR unknown command"), replies
    assert replies[2] == b"+PONG"  # and the server is still there


async def test_the_password_admits_what_the_chat_server_does(
        private_redis: RedisService) -> None:
    client = redis_client(private_redis.url, pool_size=2)
    pubsub = client.pubsub()
    try:
        await pubsub.subscribe("c")
        assert await client.publish("c", b"x") == 1
        got = None
        while got is None or got["type"] != "message":
            got = await pubsub.get_message(timeout=5)
            assert got is not None
        assert got["data"] == b"x"
        assert await client.eval("return redis.call('incrby', KEYS[1], ARGV[1])",
                                 1, "n", 3) == 3
    finally:
        await pubsub.aclose()
        await client.aclose()


def test_mongo_refuses_a_client_without_the_credentials(
        private_mongo: MongoService) -> None:
    stranger: pymongo.MongoClient[dict[str, object]] = pymongo.MongoClient(
        f"mongodb://127.0.0.1:{private_mongo.port}/?directConnection=true",
        serverSelectionTimeoutMS=5000)
    with stranger:
        with pytest.raises(pymongo.errors.OperationFailure) as refused:
            stranger.chat.tokens.insert_one({"token": "forged", "user": "ada"})
        assert refused.value.code == 13  # Unauthorized
    guess: pymongo.MongoClient[dict[str, object]] = pymongo.MongoClient(
        f"mongodb://chat:guess@127.0.0.1:{private_mongo.port}/?directConnection=true"
        "&authSource=admin", serverSelectionTimeoutMS=5000)
    with guess, pytest.raises(pymongo.errors.OperationFailure) as refused:
        guess.chat.tokens.insert_one({"token": "forged"})
    assert refused.value.code == 18  # AuthenticationFailed
    with pymongo.MongoClient(private_mongo.url) as ours:
        assert ours.chat.tokens.count_documents({}) == 0


def test_secrets_are_owner_only_and_never_on_a_command_line(
        embedded: EmbeddedServices) -> None:
    data = embedded.data_dir
    assert mode(data) == 0o700
    for name in ("redis.password", "mongo.password", "lock", "redis.log", "mongo.log"):
        assert mode(data / name) == 0o600, name
    for name in ("redis", "mongo"):
        assert mode(data / name) == 0o700, name
    assert embedded.redis is not None and embedded.mongo is not None
    assert embedded.redis.socket_path.parent == data.resolve() / "redis"
    passwords = [(data / f).read_text().strip() for f in ("redis.password",
                                                         "mongo.password")]
    assert all(len(p) >= 32 for p in passwords) and passwords[0] != passwords[1]
    for pid in (embedded.redis.pid, embedded.mongo.pid):
        cmdline = Path(f"/proc/{pid}/cmdline").read_text()
        assert not [p for p in passwords if p in cmdline]
    assert not [p for p in passwords if p in (data / "services.json").read_text()]
    # What `run.py create-bot` uses to reach a running server's services.
    found = EmbeddedServices.running(data)
    assert found == {"redis_url": embedded.redis_url, "mongo_url": embedded.mongo_url}


def test_the_same_data_dir_restarts_with_the_same_credentials(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = EmbeddedServices(data, want_redis=True, want_mongo=True)
    first.start()
    try:
        assert first.mongo_url is not None
        with pymongo.MongoClient(first.mongo_url) as client:
            client.chat.kept.insert_one({"n": 1})
    finally:
        first.stop()
    second = EmbeddedServices(data, want_redis=True, want_mongo=True)
    second.start()
    try:
        assert (second.redis_url, second.mongo_url) != (None, None)
        assert second.redis_url == first.redis_url  # same socket, same password
        assert second.mongo_url is not None
        with pymongo.MongoClient(second.mongo_url) as client:
            assert client.chat.kept.count_documents({"n": 1}) == 1
    finally:
        second.stop()


def test_a_second_server_on_the_same_data_dir_is_refused(
        embedded: EmbeddedServices) -> None:
    second = EmbeddedServices(embedded.data_dir, want_redis=True, want_mongo=True)
    with pytest.raises(EmbeddedError, match=rf"in use by another server \(pid {os.getpid()}\)"):
        second.start()
    assert second.redis is None and second.mongo is None
    # The first one's services and its record of them are untouched.
    assert EmbeddedServices.running(embedded.data_dir) is not None
    assert redis.Redis.from_url(embedded.redis_url or "").ping()


def test_a_port_answered_by_another_mongodb_is_refused(
        private_mongo: MongoService, tmp_path: Path) -> None:
    """Someone else's server holds the port: ours must not take it for its child."""
    ours = mongo_service(tmp_path / "ours", port=private_mongo.port)
    with pytest.raises(EmbeddedError, match=rf"127\.0\.0\.1:{private_mongo.port} answers, "
                       "but not as the secantusd-py we started"):
        ours.start()
    ours.stop()


def test_a_port_taken_by_something_else_fails_with_the_reason(tmp_path: Path) -> None:
    squatter = TcpProxy(9)  # listens, and speaks no MongoDB
    try:
        ours = mongo_service(tmp_path / "ours", port=squatter.port)
        with pytest.raises(EmbeddedError, match=r"exited with status 1 at start-up: .*"
                           r"Address already in use"):
            ours.start()
        ours.stop()
    finally:
        squatter.close()


def test_a_data_dir_too_deep_for_a_unix_socket_is_refused_with_the_reason(
        tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 100)
    with pytest.raises(EmbeddedError, match="too long a path for a unix socket"):
        redis_service(deep)
