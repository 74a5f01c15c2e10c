"""What the store benchmarks share: a scratch embedded MongoDB-wire server, and timing
one call at a time."""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from server.embedded import mongo_service, start_on_free_port


async def sample_ms(samples: int, call: Callable[[int], Awaitable[Any]]) -> list[float]:
    """Call `call(i)` for i in range(samples), one at a time; the times in ms, sorted."""
    times = []
    for i in range(samples):
        start = time.perf_counter()
        await call(i)
        times.append((time.perf_counter() - start) * 1000)
    return sorted(times)


def p50_p90(times: list[float]) -> str:
    return (f"p50 {statistics.median(times):6.2f} ms  "
            f"p90 {times[int(len(times) * 0.9)]:6.2f} ms")


async def timed(samples: int, call: Callable[[int], Awaitable[Any]]) -> str:
    return p50_p90(await sample_ms(samples, call))


def run_with_scratch_mongo(prefix: str, run: Callable[[str], Awaitable[None]]) -> None:
    """Start a secantusd in a temp dir, run `run(url)` against it, stop it."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        service = start_on_free_port(lambda: mongo_service(Path(tmp)))
        try:
            asyncio.run(run(service.url))
        finally:
            service.stop()
