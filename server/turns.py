"""A connection's sends to a room are queued in the order they were sent (protocol §7).

A plain send is queued with the writer before its first await, so plain sends keep
their order by themselves. A send with a reply, a mention or attachments reads MongoDB
first; it takes a turn, and a send of the same connection and room that comes behind
it waits for that turn (and takes one itself) before it is queued. An edit, delete or
reaction waits for the turn ahead of it too, so it is stored after the sends before it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

Key = tuple[bytes, str]  # (connection id, room)


class Turns:
    """The turn of each (connection, room)'s last send not queued yet."""

    def __init__(self) -> None:
        self._last: dict[Key, asyncio.Future[None]] = {}

    def ahead(self, key: Key) -> asyncio.Future[None] | None:
        """The turn to wait for before queuing, if one is still open."""
        turn = self._last.get(key)
        return None if turn is None or turn.done() else turn

    @contextlib.contextmanager
    def take(self, key: Key) -> Iterator[asyncio.Future[None]]:
        """A turn for a send that waits before it is queued: set it once queued (or it
        is set when the send ends, whatever happened)."""
        turn = self._last[key] = asyncio.get_running_loop().create_future()
        try:
            yield turn
        finally:
            if not turn.done():
                turn.set_result(None)
            if self._last.get(key) is turn:
                del self._last[key]
