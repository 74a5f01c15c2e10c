"""The embedded MongoDB-wire server: secantusd-py with --auth and a generated user.

secantusd-py cannot listen on a unix socket, so it listens on a loopback port and
admits only its one user (`chat`, SCRAM-SHA-256, role root), whose password is
data_dir/mongo.password (0600, kept across restarts). The user is created inside the
secantusd process itself, after it opens its storage and before it listens: no server
without authentication is ever reachable, not even for a moment.
"""

from __future__ import annotations

import importlib.util
import json
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import pymongo
import pymongo.errors

from server.children import (
    ChildService,
    EmbeddedError,
    Refused,
    free_port,
    private_dir,
    secret_file,
)

USER = "chat"


OPLOG_RETENTION_S = 60


def secantusd_command() -> list[str]:
    """Command line that runs SecantusDB's MongoDB-wire server with this interpreter,
    creating its user first (see _SECANTUSD)."""
    if importlib.util.find_spec("secantus") is None:
        raise EmbeddedError(
            "no secantusd-py: pip install 'tornado-chat[embedded]' or set MONGO_URL")
    return [sys.executable, "-c", _SECANTUSD]


# secantusd-py, run so that its user exists with our password before it listens: the
# server's start() first creates the user on the storage it has just opened (or sets the
# password and roles of the one there), then listens. No server without authentication
# is ever reachable, and a storage from before --auth, or restored without the user,
# gets it back. The password comes on stdin, never on the command line.
_SECANTUSD = """
import json, os, sys, threading, time
from secantus.cli import main
from secantus.commands import CommandContext, dispatch
from secantus.server import SecantusDBServer

req = json.load(sys.stdin)
listen = SecantusDBServer.start

if req.get("tuning"):  # server/secantus_tuning.py, loaded by path: see its docstring
    import importlib.util
    spec = importlib.util.spec_from_file_location("chat_secantus_tuning", req["tuning"])
    tuning = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tuning)
    if not tuning.install():
        print("secantus_tuning: this SecantusDB differs; running it as shipped", file=sys.stderr)

def provision_then_listen(server):
    ctx = CommandContext(connection_id=0, storage=server.storage, cursors=server.cursors,
                         db_name="admin")
    user = {"pwd": req["password"], "roles": ["root"], "$db": "admin"}
    reply = dispatch({"createUser": req["user"], "mechanisms": ["SCRAM-SHA-256"], **user}, ctx)
    if reply.get("code") == 51003:  # the user exists
        reply = dispatch({"updateUser": req["user"], **user}, ctx)
    if not reply.get("ok"):
        sys.exit("cannot create the user: %s" % reply.get("errmsg"))
    listen(server)

SecantusDBServer.start = provision_then_listen

# When the chat server dies without stopping us (SIGKILL), the kernel sends SIGTERM
# (PR_SET_PDEATHSIG) and secantusd shuts down, which has been seen to hang: exit anyway
# once the parent has been gone for 20 s (an idle shutdown takes 4 s).
parent = os.getppid()

def watch_parent():
    while os.getppid() == parent:
        time.sleep(1.0)
    time.sleep(20.0)
    os._exit(1)

threading.Thread(target=watch_parent, name="orphan-watchdog", daemon=True).start()
sys.exit(main())
"""


@dataclass
class MongoService(ChildService):
    """secantusd-py with --auth on a loopback port (it cannot listen on a unix socket)."""

    port: int = 0
    password_file: Path = Path()
    password: str = field(default="", repr=False)
    tuned: bool = True  # standalone, with server/secantus_tuning.py in its process

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def config(self) -> bytes:
        tuning = str(Path(__file__).with_name("secantus_tuning.py")) if self.tuned else None
        return json.dumps({"user": USER, "password": self.password,
                           "tuning": tuning}).encode()

    def answering_pid(self) -> int | None:
        try:
            socket.create_connection(("127.0.0.1", self.port), 0.2).close()
        except OSError:
            return None
        client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(
            self.url, serverSelectionTimeoutMS=2000, connectTimeoutMS=2000,
            socketTimeoutMS=5000)
        try:
            return int(client.admin.command("serverStatus")["pid"])
        except pymongo.errors.OperationFailure as e:
            if e.code in (13, 18):  # Unauthorized, AuthenticationFailed
                raise Refused(f"it refused the credentials in {self.password_file}") from None
            raise Refused(f"serverStatus failed: {e.code} {e.details}") from None
        except pymongo.errors.PyMongoError:
            return None  # not speaking yet, or not speaking MongoDB at all
        finally:
            client.close()


def mongo_service(data_dir: Path, port: int | None = None,
                  test_commands: bool = False, tuned: bool = True) -> MongoService:
    """A secantusd-py child (MongoDB wire protocol) with its data in data_dir/mongo.

    It runs with its data dir as working directory so it never picks up a stray
    ./secantusd.toml from where the chat server was started.
    """
    port = port or free_port()
    private_dir(data_dir)
    workdir = private_dir(data_dir / "mongo")
    argv = [
        *secantusd_command(),
        "--host", "127.0.0.1",
        "--port", str(port),
        "--storage-path", str((workdir / "db").resolve()),
        "--auth",
        "--log-level", "WARNING",
        # Untuned (a replica set; see `tuned`), the oplog holds every write, a deleted
        # message's text included, until it is pruned: the chat uses no change streams,
        # so a minute is enough (default 1 h).
        "--oplog-retention-seconds", str(OPLOG_RETENTION_S),
    ]
    if test_commands:
        argv.append("--enable-test-commands")
    if tuned:
        # A standalone server keeps no oplog: one write fewer per stored document, and
        # no copy of a deleted message's text. It costs change streams and
        # transactions, which the chat does not use (a real mongod is a replica set).
        argv.append("--standalone")
    password_file = data_dir / "mongo.password"
    password = secret_file(password_file)
    return MongoService("secantusd-py", argv, workdir, data_dir / "mongo.log",
                        mongo_url(port, password), port=port,
                        password_file=password_file, password=password, tuned=tuned)


def mongo_url(port: int, password: str) -> str:
    """The URL of an embedded secantusd, as its user, with retryable writes off.

    SecantusDB keeps the reply of every retryable write for 30 minutes (up to
    10,000) and scans all of them twice per write, so with PyMongo's default
    `retryWrites=true` each write costs ~7 ms once the record is full, against
    ~1.2 ms without. Nothing is lost by turning them off: a send whose store
    failed is answered `unavailable` and retried by its client, and its
    `client_id` keeps the retry from being stored twice. A `MONGO_URL` given by
    the operator is used as it is.
    """
    return (f"mongodb://{USER}:{quote_plus(password)}@127.0.0.1:{port}/"
            "?directConnection=true&retryWrites=false&authSource=admin"
            "&authMechanism=SCRAM-SHA-256")
