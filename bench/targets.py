"""The three servers the performance table compares, started the same way for every bench.

- `baseline`: the minimal Tornado + Redis server (`bench/baseline_server.py --redis-url`)
  with a scratch Redis of its own;
- `socketio`: python-socketio + its Redis manager (`bench/socketio_server.py`), with a
  scratch Redis of its own;
- `ours`: `run.py` on a fresh data directory (embedded Redis and MongoDB-wire server).

Each scratch Redis is the same valkey-server our server embeds, so the three pay for the
same Redis. CPU and memory are read from /proc for the server process and, separately,
for its services (embedded children, or the scratch Redis).
"""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from run_fanout import BENCH, ROOT, clean_env, start_server
from servers import ServerProcess, cpu_of, rss_kb

from server.embedded_redis import RedisService, redis_service

KINDS = ("baseline", "socketio", "ours")
LABELS = {
    "baseline": "minimal Tornado + Redis",
    "socketio": "python-socketio + Redis",
    "ours": "ours",
}
# How often each pings an idle socket (baseline_server.py's and our default: 20 s;
# python-socketio: Engine.IO's 25 s). An idle window should span whole intervals: the
# baseline's pings of sockets opened together come in one burst per interval, so a 25 s
# window holds one or two bursts depending on where it starts.
PING_INTERVAL_S = {"baseline": 20.0, "socketio": 25.0, "ours": 20.0}


@dataclass
class Target:
    """A running server under test, and the scratch Redis it uses (baselines only)."""

    kind: str
    server: ServerProcess
    redis: RedisService | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def protocol(self) -> str:
        """The frames its clients speak (see `fanout_client.member_class`)."""
        return "socketio" if self.kind == "socketio" else "chat"

    @property
    def label(self) -> str:
        return LABELS[self.kind]

    @property
    def ping_interval(self) -> float:
        return PING_INTERVAL_S[self.kind]

    def cpu_seconds(self) -> dict[str, float]:
        """Cumulative CPU seconds: "server" (the process clients talk to) and its services."""
        used = self.server.cpu_seconds()
        if self.redis is not None and self.redis.proc is not None:
            used["redis-server"] = used.get("redis-server", 0.0) + cpu_of(self.redis.proc.pid)
        return used

    def rss_kb(self) -> dict[str, int]:
        """Resident memory in KiB, split the same way as `cpu_seconds`."""
        used = self.server.rss_kb()
        if self.redis is not None and self.redis.proc is not None:
            used["redis-server"] = used.get("redis-server", 0) + rss_kb(self.redis.proc.pid)
        return used

    def stop(self) -> tuple[int | None, float, list[int]]:
        """Stop the server (SIGTERM), then its scratch Redis."""
        try:
            return self.server.stop()
        finally:
            if self.redis is not None:
                self.redis.stop()


async def start_target(
    kind: str, workdir: Path, tag: str, ours_args: list[str] | None = None
) -> Target:
    """Start a server of `kind` (see KINDS) with logs and data under `workdir`."""
    redis: RedisService | None = None
    if kind in ("baseline", "socketio"):
        redis = redis_service(workdir / f"{tag}-redis", persist=False)
        await asyncio.to_thread(redis.start)
    log = workdir / f"{tag}-{kind}.log"

    def make(port: int) -> ServerProcess:
        if kind == "ours":
            argv = [sys.executable, "run.py", "--port", str(port), "--host", "127.0.0.1",
                    "--data-dir", str(workdir / f"{tag}-{port}-data"), *(ours_args or [])]
            return ServerProcess(kind, argv, cwd=ROOT, port=port, log_path=log,
                                 env=clean_env())
        assert redis is not None
        script = "baseline_server.py" if kind == "baseline" else "socketio_server.py"
        argv = [sys.executable, str(BENCH / script), "--port", str(port),
                "--redis-url", redis.url]
        return ServerProcess(kind, argv, cwd=ROOT, port=port, log_path=log)

    try:
        server, ready_s = await start_server(make)
    except BaseException:
        if redis is not None:
            redis.stop()
        raise
    return Target(kind, server, redis, {"ready_s": round(ready_s, 2)})
