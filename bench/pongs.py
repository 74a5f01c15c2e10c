"""What a ping and its pong cost the server: the heart of an idle socket's CPU.

Starts a Tornado server in a child process that speaks WebSocket exactly as ours does
(`server/wsio.py`: the ping wheel, DropOnMissedPong, FrameStream) and pings every socket
once per `--interval`, opens `--sockets` WebSockets to it from this process (picows,
answering each ping at once), lets them settle, and reads the child's CPU seconds from
/proc over `--window` seconds. Prints the server's % of a core and its CPU per ping and
pong, each run and the median. `--tree DIR` measures the wsio of another checkout (a git
worktree of an older commit), so two trees can be compared in one window.

    python bench/pongs.py [--sockets 2000] [--interval 1] [--window 15] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from servers import cpu_of, free_port

ROOT = Path(__file__).resolve().parent.parent


def serve(tree: str, port: int, interval: float) -> None:
    """The child: a WebSocket endpoint that says nothing, pinged by wsio's wheel."""
    sys.path.insert(0, tree)
    import tornado.web
    import tornado.websocket

    from server import wsio

    wheel = wsio.PingWheel(interval, interval)

    class Quiet(tornado.websocket.WebSocketHandler):
        def check_origin(self, origin: str) -> bool:
            return True

        def get_websocket_protocol(self) -> tornado.websocket.WebSocketProtocol | None:
            return wsio.drop_on_missed_pong(self, super().get_websocket_protocol(), wheel)

        def open(self) -> None:
            if hasattr(wsio, "listen_between_frames"):  # not in trees before FrameStream
                wsio.listen_between_frames(self)

        def on_message(self, message: str | bytes) -> None:
            pass

    async def main() -> None:
        app = tornado.web.Application([(r"/ws", Quiet)], websocket_ping_interval=interval,
                                      websocket_ping_timeout=interval)
        app.listen(port, "127.0.0.1")
        print("ready", flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())


async def measure(tree: str, sockets: int, interval: float, window: float) -> float:
    """One run: the server's % of a core while `sockets` idle sockets answer pings."""
    from picows import WSListener, ws_connect

    port = free_port()
    child = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--serve", str(port), "--tree", tree,
        "--interval", str(interval), stdout=subprocess.PIPE)
    transports = []
    try:
        assert child.stdout is not None and (await child.stdout.readline()).strip() == b"ready"
        for _ in range(sockets):
            transport, _ = await ws_connect(WSListener, f"ws://127.0.0.1:{port}/ws",
                                            enable_auto_pong=True)
            transports.append(transport)
        await asyncio.sleep(3 * interval)  # every socket pinged a few times: settled
        before = cpu_of(child.pid)
        await asyncio.sleep(window)
        return 100 * (cpu_of(child.pid) - before) / window
    finally:
        for transport in transports:
            transport.disconnect()
        child.kill()
        await child.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sockets", type=int, default=2000)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--window", type=float, default=15.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--tree", default=str(ROOT))
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.tree, args.serve, args.interval)
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)  # the child inherits it
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4 * args.sockets)), hard))
    pongs_per_s = args.sockets / args.interval
    runs = []
    for i in range(args.repeat):
        pct = asyncio.run(measure(args.tree, args.sockets, args.interval, args.window))
        runs.append(pct)
        print(f"run {i + 1}: {pct:.2f} % of a core, "
              f"{10_000 * pct / pongs_per_s:.1f} µs per ping and pong", flush=True)
    median = statistics.median(runs)
    print(f"median of {len(runs)}: {median:.2f} % of a core for {pongs_per_s:,.0f} pongs/s, "
          f"{10_000 * median / pongs_per_s:.1f} µs per ping and pong ({args.tree})")


if __name__ == "__main__":
    main()
