"""The second yardstick: python-socketio (AsyncServer on aiohttp) with its Redis manager.

What a Python developer would write for the same job with Socket.IO: an `AsyncServer`
attached to an aiohttp application, `AsyncRedisManager` so that several processes share
rooms through Redis pub/sub, and the same semantics as `bench/baseline_server.py`:
rooms, per-room sequence numbers in memory, an id per message, the sender's `ack` then
the `message` to everyone in the room (through Redis). No auth (the name comes from
`?name=`), no storage. Events mirror our frames: `join` -> `joined`, `send` -> `ack` +
`message`, `leave` -> `left`, each a JSON object with a `ref` echoed back.

    python bench/socketio_server.py --port 18890 --redis-url redis://127.0.0.1:6379/0
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import logging
import signal
import time
import uuid
from typing import Any
from urllib.parse import parse_qs

import socketio
from aiohttp import web

log = logging.getLogger("socketio-baseline")


def make_server(redis_url: str, node: str) -> socketio.AsyncServer:
    """An AsyncServer with the Redis manager and the benchmark's event handlers."""
    manager = socketio.AsyncRedisManager(redis_url, channel=f"bench-socketio-{node}")
    sio = socketio.AsyncServer(async_mode="aiohttp", client_manager=manager,
                               cors_allowed_origins="*")
    users: dict[str, dict[str, Any]] = {}
    last_seq: dict[str, int] = {}
    ids = itertools.count(1)

    def reply(frame: dict[str, Any], data: Any) -> dict[str, Any]:
        ref = data.get("ref") if isinstance(data, dict) else None
        if ref is not None:
            frame["ref"] = ref
        return frame

    async def error(sid: str, data: Any, code: str, message: str) -> None:
        await sio.emit("error", reply({"code": code, "message": message}, data), to=sid)

    @sio.event
    async def connect(sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        name = parse_qs(environ.get("QUERY_STRING", "")).get("name", ["anon"])[0]
        users[sid] = {"id": f"u-{name}", "name": name, "bot": False}

    @sio.event
    async def disconnect(sid: str, *reason: Any) -> None:
        users.pop(sid, None)

    @sio.event
    async def join(sid: str, data: Any) -> None:
        if not isinstance(data, dict) or not isinstance(data.get("room"), str):
            await error(sid, data, "bad_request", "room required")
            return
        room = data["room"]
        await sio.enter_room(sid, room)
        await sio.emit("joined", reply({"room": room, "last_seq": last_seq.get(room, 0),
                                        "members": [], "messages": []}, data), to=sid)

    @sio.event
    async def leave(sid: str, data: Any) -> None:
        room = str(data.get("room", "")) if isinstance(data, dict) else ""
        await sio.leave_room(sid, room)
        await sio.emit("left", reply({"room": room}, data), to=sid)

    @sio.event
    async def send(sid: str, data: Any) -> None:
        room = data.get("room") if isinstance(data, dict) else None
        body = data.get("body") if isinstance(data, dict) else None
        if not isinstance(room, str) or not isinstance(body, str) or not body.strip():
            await error(sid, data, "bad_request", "room and body required")
            return
        if room not in sio.rooms(sid):
            await error(sid, data, "forbidden", "join the room first")
            return
        seq = last_seq[room] = last_seq.get(room, 0) + 1
        msg_id = f"{node}-{next(ids)}"
        ts = int(time.time() * 1000)
        client_id = data.get("client_id")
        await sio.emit("ack", reply({"room": room, "client_id": client_id, "id": msg_id,
                                     "seq": seq, "ts": ts}, data), to=sid)
        await sio.emit("message", {"room": room, "id": msg_id, "seq": seq,
                                   "user": users.get(sid), "body": body, "ts": ts,
                                   "client_id": client_id}, room=room)

    return sio


async def ok(request: web.Request) -> web.Response:
    """`/healthz` and `/readyz`: always 200, so harnesses can wait on either."""
    return web.json_response({"ok": True})


async def serve(port: int, redis_url: str) -> None:
    """Listen on 127.0.0.1:`port` until SIGTERM or SIGINT."""
    node = f"sio-{uuid.uuid4().hex[:6]}"
    app = web.Application()
    sio = make_server(redis_url, node)
    sio.attach(app)
    app.router.add_get("/healthz", ok)
    app.router.add_get("/readyz", ok)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    gc.collect()
    gc.freeze()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("python-socketio listening on 127.0.0.1:%d", port)
    await stop.wait()
    await runner.cleanup()


def main() -> None:
    """Parse flags and serve."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=18890)
    parser.add_argument("--redis-url", required=True,
                        help="redis://, rediss:// or unix:// URL of the Redis to share rooms in")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    asyncio.run(serve(args.port, args.redis_url))


if __name__ == "__main__":
    main()
