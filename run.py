#!/usr/bin/env python3
"""Start the chat server: python run.py --help lists every option."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

import tornado.httpserver

from server.config import Config, ConfigError, load_config
from server.embedded import EmbeddedError, EmbeddedServices
from server.runtime import Runtime

log = logging.getLogger("chat")


def setup_logging(config: Config) -> None:
    logging.basicConfig(
        level=getattr(logging, config.log_level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s",
    )


async def serve(config: Config) -> None:
    """Run until SIGINT/SIGTERM, then drain and close everything in reverse order."""
    services = EmbeddedServices(config.data_dir, want_redis=config.embedded_redis,
                                want_mongo=config.embedded_mongo)
    runtime: Runtime | None = None
    server: tornado.httpserver.HTTPServer | None = None
    try:
        if config.embedded_redis or config.embedded_mongo:
            await asyncio.to_thread(services.start)
        runtime = Runtime(config, mongo_url=config.mongo_url or services.mongo_url or "",
                          redis_url=config.redis_url or services.redis_url or "")
        await runtime.start()
        server = tornado.httpserver.HTTPServer(
            runtime.app, xheaders=config.xheaders, max_buffer_size=1024 * 1024,
            max_body_size=64 * 1024, idle_connection_timeout=120,
        )
        server.listen(config.port, config.host)
        log.info("chat server %s listening on http://%s:%d/ (%s)", config.node_id,
                 config.host or "0.0.0.0", config.port,  # noqa: S104 - display only
                 "embedded services" if services.redis or services.mongo else "external services")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        log.info("shutting down")
    finally:
        if server is not None:
            server.stop()
        if runtime is not None:
            await runtime.shutdown(server, config.shutdown_timeout)
        await asyncio.to_thread(services.stop)


def main(argv: list[str] | None = None) -> int:
    try:
        config = load_config(argv)
    except ConfigError as e:
        print(f"run.py: {e}", file=sys.stderr)
        return 2
    setup_logging(config)
    try:
        asyncio.run(serve(config))
    except EmbeddedError as e:
        log.error("%s", e)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
