"""Presence frames on their way out: at most one per (room, user) per hold, and all of
a room's frames of one loop turn in one write to each member and one publish.

A disconnect storm (ten thousand sockets closing at once) thus costs each room one
envelope carrying every offline frame, not one publish per user; a reconnecting crowd's
`online` frames, each kept from its own joiner, likewise go out together.
"""

from __future__ import annotations

import asyncio
import functools
import json
import time
from collections.abc import Awaitable, Callable

from server.model import User
from server.protocol.outbound import encode
from server.rooms import Apart
from server.status import Shown

# What a room is told of a user: ("online" or "offline", their state).
State = tuple[str, Shown]
Announce = Callable[[str, User, State, bytes], None]  # room, user, state, exclude
Flush = Callable[[str, list[Apart]], Awaitable[None]]  # room, its frames


class Coalescer:
    """At most one presence frame per (room, user) every `hold` seconds from this process.

    The first change goes out at once. Changes within the hold wait for its end, and
    only the last one goes out, if it differs from what was announced: a user who
    joins and leaves in a loop costs the room one frame per hold, not two per cycle.
    Synchronous: a change only queues a frame (`announce`), so ten thousand departures
    cost no Task each.
    """

    def __init__(self, announce: Announce, hold: float = 2.0) -> None:
        self._announce = announce
        self.hold = hold
        self._last: dict[tuple[str, str], tuple[State, float]] = {}  # -> (state, when)
        self._waiting: dict[tuple[str, str], tuple[User, State, bytes, bool]] = {}
        self._timers: dict[tuple[str, str], asyncio.TimerHandle] = {}

    def change(self, room: str, user: User, state: State, exclude: bytes,
               force: bool = False) -> None:
        """Announce a state; `force` even if it is what this process said last."""
        key = (room, user.id)
        now = time.monotonic()
        last = self._last.get(key)
        if last is None or (now - last[1] >= self.hold and key not in self._waiting):
            if last is not None and last[0] == state and not force:
                return
            self._last[key] = (state, now)
            self._announce(room, user, state, exclude)
            return
        if key not in self._waiting:
            self._timers[key] = asyncio.get_running_loop().call_later(
                last[1] + self.hold - now, self._send_waiting, key)
        force = force or (key in self._waiting and self._waiting[key][3])
        self._waiting[key] = (user, state, exclude, force)

    def _send_waiting(self, key: tuple[str, str]) -> None:
        self._timers.pop(key, None)
        user, state, exclude, force = self._waiting.pop(key)
        if force or self._last[key][0] != state:
            self._last[key] = (state, time.monotonic())
            self._announce(key[0], user, state, exclude)

    def forget_old(self) -> None:
        """Drop what was announced more than a hold ago and has nothing waiting."""
        cutoff = time.monotonic() - self.hold
        for key in [k for k, (_, when) in self._last.items()
                    if when < cutoff and k not in self._waiting]:
            del self._last[key]

    def close(self) -> None:
        """Send what is waiting now: nobody would announce it after this process."""
        for timer in self._timers.values():
            timer.cancel()
        for key in list(self._waiting):
            self._send_waiting(key)


def presence_frame(room: str, user: User, state: State) -> bytes:
    """`protocol.dump` of the `PresenceChange`, joined from parts that are each
    serialized once: a disconnect storm makes ten thousand of these, of users and
    states that repeat."""
    status, shown = state
    return b"".join((b'{"type":"presence","room":', _string(room), b',"user":', _user(user),
                     b',"status":', _string(status), b",", _shown(shown)))


_string_encoder = json.JSONEncoder(ensure_ascii=False).encode


def _string(value: str) -> bytes:
    return _string_encoder(value).encode()


@functools.lru_cache(maxsize=1 << 16)
def _user(user: User) -> bytes:
    return encode(user.as_dict())


@functools.lru_cache(maxsize=1 << 10)
def _shown(shown: Shown) -> bytes:
    """The state's fields and the frame's closing brace."""
    return encode(shown.fields())[1:]


class RoomBatches:
    """A room's presence frames go out together, whichever connection each is kept from:
    those of one loop turn, and while a room's frames keep coming (a crowd joining or
    leaving), those of `gap` seconds. The first frame after a quiet spell leaves at the
    next loop turn; a room busier than that gets one write per member and one publish
    per `gap`, not one per frame: in a reconnecting crowd each joiner's `online` would
    otherwise be a write to every member already back.
    """

    def __init__(self, flush: Flush, gap: float = 0.1) -> None:
        self._flush_room = flush
        self.gap = gap
        # room -> the timer that sends its frames, and the frames
        self._queued: dict[str, tuple[asyncio.Handle, list[Apart]]] = {}
        self._sent: dict[str, float] = {}  # room -> loop time its last batch went out
        self._pruned = 0.0
        self._tasks: set[asyncio.Task[None]] = set()

    def add(self, room: str, frame: bytes, exclude: bytes) -> None:
        queued = self._queued.get(room)
        if queued is None:
            loop = asyncio.get_running_loop()
            wait = self._sent.get(room, -self.gap) + self.gap - loop.time()
            timer = (loop.call_later(wait, self._start, room) if wait > 0
                     else loop.call_soon(self._start, room))
            queued = self._queued[room] = (timer, [])
        queued[1].append((frame, exclude))

    def _start(self, room: str) -> None:
        _, frames = self._queued.pop(room)
        now = asyncio.get_running_loop().time()
        if len(self._sent) > 1000 and now - self._pruned >= self.gap:
            # The rooms quiet for a gap or more need no entry: once per gap at most.
            self._sent = {r: t for r, t in self._sent.items() if now - t < self.gap}
            self._pruned = now
        self._sent[room] = now
        task = asyncio.ensure_future(self._flush_room(room, frames))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """Send what is queued now, and wait for what is on its way."""
        for room, (timer, _) in list(self._queued.items()):
            timer.cancel()
            self._start(room)
        for task in list(self._tasks):
            await task
