#!/usr/bin/env python3
"""Start the chat server (python run.py --help lists every option), or manage bots:
python run.py create-bot NAME --owner USER."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import logging
import os
import secrets
import signal
import socket
import sys
from urllib.parse import urlsplit

import tornado.httpserver
import tornado.netutil

from server import logs
from server.auth import AuthError, Bots
from server.config import Config, ConfigError, load_config
from server.embedded import EmbeddedError, EmbeddedServices, _die_with_parent
from server.model import User
from server.runtime import Runtime
from server.store import Store, StoreError

log = logging.getLogger("chat")

SWITCH_INTERVAL_S = 0.0005


async def serve(config: Config, mongo_url: str, redis_url: str,
                sockets: list[socket.socket]) -> None:
    """Serve on the given sockets until SIGINT/SIGTERM, then drain and close."""
    runtime = Runtime(config, mongo_url=mongo_url, redis_url=redis_url)
    server: tornado.httpserver.HTTPServer | None = None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await runtime.start()
        server = tornado.httpserver.HTTPServer(
            runtime.app, xheaders=config.xheaders, max_buffer_size=1024 * 1024,
            max_body_size=64 * 1024, idle_connection_timeout=120,
        )
        server.add_sockets(sockets)
        # Everything allocated so far lives as long as the process: move it out of the
        # collector's sight, so full collections (and the p99 they cause) stay short.
        gc.collect()
        gc.freeze()
        # Motor runs every MongoDB call on a worker thread, which needs the GIL twice
        # (to send, then to read the reply). A busy event loop gives it up only every
        # switch interval: 5 ms by default, a delay that lands on every store and
        # every ack. 0.5 ms makes a busy loop hand over within a fraction of a
        # millisecond, at no measurable cost in throughput.
        sys.setswitchinterval(SWITCH_INTERVAL_S)
        log.info("node %s serving http://%s:%d/", config.node_id,
                 config.host or "0.0.0.0", config.port)  # noqa: S104 - display only
        await stop.wait()
        log.info("node %s shutting down (up to %.0fs)", config.node_id, config.shutdown_timeout)
    finally:
        if server is not None:
            server.stop()  # stop accepting; open connections are drained next
        await runtime.shutdown(server, config.shutdown_timeout)
        log.info("node %s stopped", config.node_id)


def supervise(config: Config, mongo_url: str, redis_url: str,
              sockets: list[socket.socket]) -> int:
    """Fork worker processes that share the listening sockets; restart crashed ones.

    SIGTERM/SIGINT are forwarded to every worker, which drains and exits; each worker
    also gets SIGTERM from the kernel if this supervisor dies.
    """
    count = config.processes or os.cpu_count() or 1
    children: dict[int, int] = {}
    stopping = False

    def spawn(index: int) -> None:
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            _die_with_parent()
            child = dataclasses.replace(config, node_id=f"{config.node_id}-{index}")
            code = 0
            try:
                asyncio.run(serve(child, mongo_url, redis_url, sockets))
            except Exception:
                log.exception("worker %d failed", index)
                code = 1
            finally:
                logging.shutdown()
            os._exit(code)
        children[pid] = index

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for pid in list(children):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for i in range(count):
        spawn(i)
    log.info("supervising %d worker processes", count)
    failures = 0
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        except InterruptedError:
            continue
        index = children.pop(pid, None)
        if index is None:
            continue
        code = os.waitstatus_to_exitcode(status)
        if not stopping and code != 0:
            failures += 1
            log.error("worker %d (pid %d) exited with %d; restarting", index, pid, code)
            spawn(index)
    return 1 if failures and not stopping else 0


async def create_bot(config: Config, name: str, owner: str, label: str) -> int:
    """Create (or reuse) a bot owned by OWNER and print a new API token for it.

    It says on stderr which database it uses: run from the wrong directory, it would
    otherwise look for OWNER in an empty database and say only that there is no such user.
    """
    def fail(message: str) -> int:
        print(f"run.py create-bot: {message}", file=sys.stderr)
        return 1

    services = None
    if config.mongo_url is not None:
        mongo_url: str | None = config.mongo_url
        where = f"MongoDB at {_hosts(config.mongo_url)} (MONGO_URL)"
    else:
        data_dir = config.data_dir.resolve()
        if not data_dir.is_dir():
            # Starting the embedded MongoDB-wire server here would create an empty
            # database (and a new cookie secret) where no server ever ran.
            return fail(f"no data dir {data_dir}: run this where the server runs, or give "
                        "the server's --data-dir (CHAT_DATA_DIR), or its MONGO_URL")
        mongo_url = (EmbeddedServices.running(data_dir) or {}).get("mongo_url")
        if mongo_url is not None:
            where = f"the embedded MongoDB-wire server of the server running on {data_dir}"
        else:
            where = f"the embedded MongoDB-wire server on {data_dir}, started for this command"
            services = EmbeddedServices(data_dir, want_redis=False, want_mongo=True)
            services.start()  # on this thread: children die with the thread that forked them
            mongo_url = services.mongo_url
    assert mongo_url is not None
    database = f"database {config.db_name!r} of {where}"
    print(f"run.py create-bot: using {database}", file=sys.stderr)
    store = Store.connect(mongo_url, config.db_name)
    try:
        await store.setup()
        doc = await store.find_user(owner)
        if doc is None:
            return fail(f"no user named {owner!r} in {database}")
        if doc.get("bot"):
            return fail(f"{doc['name']!r} is a bot: the owner must be a person")
        owner_user = User.from_doc(doc)
        bots = Bots(store)
        bot = await bots.owned(owner_user, name)
        if bot is None:
            bot = await bots.create(owner_user, name)
        token, info = await bots.issue_token(bot, label)
    except AuthError as e:
        return fail(e.message)
    except StoreError as e:
        return fail(f"database unavailable: {e}")
    finally:
        store.close()
        if services is not None:
            services.stop()
    print(f"bot {bot.name} (owner {owner_user.name}), token id {info['id']}")
    print(token)
    print("The token is shown once; connect with the header  Authorization: Bearer <token>",
          file=sys.stderr)
    return 0


def _hosts(url: str) -> str:
    """The hosts of a MongoDB URL, without the credentials it may carry."""
    return urlsplit(url).netloc.rpartition("@")[2] or "?"


def _bot_command(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="run.py create-bot",
                                description="Create a bot account and print an API token.")
    p.add_argument("name", help="the bot's username")
    p.add_argument("--owner", required=True, help="the user who owns the bot")
    p.add_argument("--label", default="", help="a note to recognise the token by")
    args, rest = p.parse_known_args(argv)
    try:
        config = load_config(rest, need_secret=False)
    except ConfigError as e:
        print(f"run.py: {e}", file=sys.stderr)
        return 2
    logs.configure("warning", "text")
    return asyncio.run(create_bot(config, args.name, args.owner, args.label))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["create-bot"]:
        return _bot_command(argv[1:])
    try:
        config = load_config(argv)
    except ConfigError as e:
        print(f"run.py: {e}", file=sys.stderr)
        return 2
    logs.configure(config.log_level, config.log_format)
    services = EmbeddedServices(config.data_dir, want_redis=config.embedded_redis,
                                want_mongo=config.embedded_mongo)
    try:
        services.start()
        mongo_url = config.mongo_url or services.mongo_url or ""
        redis_url = config.redis_url or services.redis_url or ""
        sockets = tornado.netutil.bind_sockets(config.port, config.host or None)
        if config.processes == 1:
            asyncio.run(serve(config, mongo_url, redis_url, sockets))
            return 0
        config = dataclasses.replace(config, node_id=secrets.token_hex(3))
        return supervise(config, mongo_url, redis_url, sockets)
    except EmbeddedError as e:
        log.error("%s", e)
        return 1
    except OSError as e:
        log.error("cannot listen on port %d: %s", config.port, e)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        services.stop()


if __name__ == "__main__":
    sys.exit(main())
