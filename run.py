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
from server.app import make_server
from server.auth import AuthError
from server.bots import Bots
from server.config import Config, ConfigError, load_config
from server.embedded import EmbeddedError, EmbeddedServices, _die_with_parent
from server.model import User
from server.runtime import Runtime
from server.store import Store, StoreError

log = logging.getLogger("chat")

SWITCH_INTERVAL_S = 0.0005
# The collector's thresholds once serving (CPython's defaults: 700, 10, 10). See serve().
GC_THRESHOLDS = (50_000, 20, 10)


async def serve(config: Config, mongo_url: str, redis_url: str,
                sockets: list[socket.socket],
                metrics_sockets: list[socket.socket] | None = None) -> None:
    """Serve on the given sockets until SIGINT/SIGTERM, then drain and close.

    `metrics_sockets`, if any, serve this process's /metrics alone (--metrics-port).
    """
    runtime = Runtime(config, mongo_url=mongo_url, redis_url=redis_url)
    server: tornado.httpserver.HTTPServer | None = None
    metrics_server: tornado.httpserver.HTTPServer | None = None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await runtime.start()
        server = make_server(runtime.app, config)
        server.add_sockets(sockets)
        if metrics_sockets:
            metrics_server = tornado.httpserver.HTTPServer(runtime.metrics_app,
                                                           xheaders=config.xheaders)
            metrics_server.add_sockets(metrics_sockets)
        # Everything allocated so far lives as long as the process: move it out of the
        # collector's sight, so full collections (and the p99 they cause) stay short.
        gc.collect()
        gc.freeze()
        # Every 700 allocations (the default) a young collection promotes whatever is
        # alive at that instant, so under load the objects of a request or a join in
        # flight reach the old generation, and a full collection follows each time it
        # has grown by a quarter: one every 2-3 s of a mass reconnect, each walking every
        # socket's objects (0.4-0.6 s at 10,000 sockets). At 50,000 only objects that
        # outlive 50,000 allocations are promoted; the full collections go with them
        # (bench/idle.py, bench/reconnect_storm.py; docs/performance.md).
        gc.set_threshold(*GC_THRESHOLDS)
        # Motor runs every MongoDB call on a worker thread, which needs the GIL twice
        # (to send, then to read the reply). A busy event loop gives it up only every
        # switch interval: 5 ms by default, a delay that lands on every store and
        # every ack. 0.5 ms makes a busy loop hand over within a fraction of a
        # millisecond, at no measurable cost in throughput.
        sys.setswitchinterval(SWITCH_INTERVAL_S)
        log.info("node %s serving http://%s:%d/%s", config.node_id,
                 config.host or "0.0.0.0", config.port,  # noqa: S104 - display only
                 f", /metrics also on port {config.metrics_port}" if metrics_sockets else "")
        await stop.wait()
        log.info("node %s shutting down (up to %.0fs)", config.node_id, config.shutdown_timeout)
    finally:
        started = loop.time()
        for each in (server, metrics_server):
            if each is not None:
                each.stop()  # stop accepting; open connections are drained next
        await runtime.shutdown(server, config.shutdown_timeout)
        if metrics_server is not None:
            await metrics_server.close_all_connections()
        log.info("node %s stopped (drained in %.2fs)", config.node_id, loop.time() - started)


def supervise(config: Config, mongo_url: str, redis_url: str,
              sockets: list[socket.socket],
              metrics_sockets: list[list[socket.socket]] | None = None) -> int:
    """Fork worker processes that share the listening sockets; restart any that exits
    while the supervisor is not stopping, crashed or not.

    SIGTERM/SIGINT are forwarded to every worker, which drains and exits; each worker
    also gets SIGTERM from the kernel if this supervisor dies. Worker i serves its own
    /metrics on metrics_sockets[i], bound here so that a restarted worker finds it.
    """
    count = config.processes or os.cpu_count() or 1
    children: dict[int, int] = {}
    starts = [0] * count
    stopping = False

    def spawn(index: int) -> str:
        # A restarted worker is a new node: its predecessor's presence entries and
        # status report must not be mistaken for its own.
        node_id = f"{config.node_id}-{index}" + (f".{starts[index]}" if starts[index] else "")
        starts[index] += 1
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            _die_with_parent()
            child = dataclasses.replace(
                config, node_id=node_id,
                metrics_port=config.metrics_port + index if config.metrics_port else None)
            code = 0
            try:
                asyncio.run(serve(child, mongo_url, redis_url, sockets,
                                  metrics_sockets[index] if metrics_sockets else None))
            except Exception:
                log.exception("worker %d failed", index)
                code = 1
            finally:
                logging.shutdown()
            os._exit(code)
        children[pid] = index
        if stopping:  # the signal came while this worker was being forked
            os.kill(pid, signal.SIGTERM)
        return node_id

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        if not stopping:
            # Each worker closes its copy of the listening sockets as its drain begins;
            # this process's copy, kept to start replacements, would leave the port
            # accepting connections that no one serves until it exits. Closed, the port
            # refuses at once and a balancer goes on to another machine.
            for sock in [*sockets, *(m for ports in metrics_sockets or [] for m in ports)]:
                sock.close()
        stopping = True
        for pid in list(children):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for i in range(count):
        if not stopping:  # a worker forked now would get closed sockets
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
        if index is None or stopping:
            continue
        code = os.waitstatus_to_exitcode(status)
        if code != 0:
            failures += 1
        # Exiting 0 means the worker drained after a SIGTERM of its own (sent to its pid
        # alone): without a restart the deployment would run on one worker less.
        node_id = spawn(index)
        log.log(logging.ERROR if code else logging.WARNING,
                "worker %d (pid %d) exited with %d although the supervisor is not stopping; "
                "restarting it as node %s", index, pid, code, node_id)
    return 1 if failures and not stopping else 0


def _bind_metrics(config: Config, count: int) -> list[list[socket.socket]]:
    """The sockets of each process's own /metrics: process i on --metrics-port + i."""
    if config.metrics_port is None:
        return []
    bound = []
    for i in range(count):
        port = config.metrics_port + i
        try:
            bound.append(tornado.netutil.bind_sockets(port, config.host or None))
        except OSError as e:
            raise ListenError(f"cannot listen on port {port} (--metrics-port / METRICS_PORT "
                              f"{config.metrics_port} + worker {i}): {e}") from None
    return bound


class ListenError(Exception):
    """A port of the configuration cannot be bound; the message names the setting."""


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
            try:
                services.start()  # on this thread: children die with the thread that forked them
            except EmbeddedError as e:
                return fail(str(e))
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
        if doc.get("deactivated_at"):
            return fail(f"{doc['name']!r} is deactivated: reactivate the account first")
        owner_user = User.from_doc(doc)
        bots = Bots(store, max_bots=config.quotas.bots_per_user,
                    max_tokens=config.quotas.tokens_per_bot)
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
    # The port first: when it is taken, say so at once, before starting anything.
    try:
        sockets = tornado.netutil.bind_sockets(config.port, config.host or None)
    except OSError as e:
        log.error("cannot listen on port %d (--port / PORT): %s", config.port,
                  e.strerror or e)
        return 1
    try:
        metrics = _bind_metrics(config, config.processes or os.cpu_count() or 1)
    except ListenError as e:
        log.error("%s", e)
        return 1
    services = EmbeddedServices(config.data_dir, want_redis=config.embedded_redis,
                                want_mongo=config.embedded_mongo)
    try:
        services.start()
        mongo_url = config.mongo_url or services.mongo_url or ""
        redis_url = config.redis_url or services.redis_url or ""
        if config.processes == 1:
            asyncio.run(serve(config, mongo_url, redis_url, sockets,
                              metrics[0] if metrics else None))
            return 0
        config = dataclasses.replace(config, node_id=secrets.token_hex(3))
        return supervise(config, mongo_url, redis_url, sockets, metrics)
    except (EmbeddedError, ListenError) as e:
        log.error("%s", e)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        services.stop()


if __name__ == "__main__":
    sys.exit(main())
