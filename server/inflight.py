"""What a drain waits for: HTTP requests and WebSocket departures in progress, and
whether the drain has begun (probes and upgrades look at that)."""

from __future__ import annotations

import asyncio
import contextlib


class Inflight:
    """A counter whose changes can be awaited, and the process's draining flag."""

    def __init__(self) -> None:
        self.count = 0
        # Set once, by the shutdown path, before anything else it does: from then on
        # /readyz answers 503 "draining" and WebSocket upgrades are refused.
        self.draining = False
        self._changed = asyncio.Event()

    def enter(self) -> None:
        self.count += 1

    def exit(self) -> None:
        self.count -= 1
        self.poke()

    def poke(self) -> None:
        """Wake whoever waits in changed() (also used when a connection goes)."""
        self._changed.set()

    async def changed(self, timeout: float) -> None:
        """Wait until the next change, or `timeout` seconds."""
        self._changed.clear()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._changed.wait(), max(0.0, timeout))
