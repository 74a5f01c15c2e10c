"""Departures of closed sockets, held for a grace: a user whose socket closes stays
present in the room for `grace` seconds, and one who joins it again here meanwhile was
never gone (a reloaded tab, a short network blip: the room hears nothing, Redis is not
asked). One timer serves them all: graces end in the order they began, and those that
end within GRACE_TICK of each other are sent together, so a disconnect storm's
departures, closed over a second or two, make a few presence batches.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable

from server.model import User

GRACE_TICK = 0.05  # seconds: departures whose graces end this close go out together

Send = Callable[[str, User], None]  # room, user: the departure goes out now


class Graces:
    """The departures in their grace, oldest first; see the module docstring."""

    def __init__(self, grace: float, send: Send) -> None:
        self.grace = grace
        self._send = send
        # (room, user id) -> (user, loop time the grace ends)
        self._held: OrderedDict[tuple[str, str], tuple[User, float]] = OrderedDict()
        self._timer: asyncio.TimerHandle | None = None

    def hold(self, room: str, user: User) -> None:
        """The user's departure from the room goes out when its grace ends, unless
        called off before."""
        loop = asyncio.get_running_loop()
        key = (room, user.id)
        self._held.pop(key, None)  # (kept in the order their graces end)
        self._held[key] = (user, loop.time() + self.grace)
        if self._timer is None:
            self._timer = loop.call_later(self.grace + GRACE_TICK, self.end)

    def call_off(self, room: str, uid: str) -> bool:
        """The user joins the room here again: whether a departure was held (it is
        dropped)."""
        return self._held.pop((room, uid), None) is not None

    def end(self, everything: bool = False) -> None:
        """Send the departures whose grace is over (`everything`: all of them)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        while self._held:
            key, (user, until) = next(iter(self._held.items()))
            if until > now and not everything:
                self._timer = loop.call_at(until + GRACE_TICK, self.end)
                return
            del self._held[key]
            self._send(key[0], user)
