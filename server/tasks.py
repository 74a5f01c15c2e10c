"""Stopping background tasks so that they really stop."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

log = logging.getLogger(__name__)


async def stop(task: asyncio.Task[Any] | None, timeout: float = 5.0) -> None:
    """Cancel `task` and wait until it has finished, at most `timeout` seconds.

    Cancels again while the task runs on: before Python 3.12, `asyncio.wait_for`
    swallows a cancellation that arrives just as the awaitable it wraps finishes
    (CPython gh-86296), and a loop around it then carries on as if nothing happened.
    Unlike `await task`, this never raises the task's error, nor swallows a
    cancellation of the caller.
    """
    if task is None:
        return
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not task.done():
        remaining = deadline - loop.time()
        if remaining <= 0:
            log.warning("background task %s did not stop within %.1f s",
                        task.get_name(), timeout)
            return
        task.cancel()
        await asyncio.wait([task], timeout=min(0.1, remaining))
    if not task.cancelled() and task.exception() is not None:
        log.warning("background task %s had failed: %r", task.get_name(), task.exception())
