"""Where presence lives in Redis, and how its entries read back.

Keys (every multi-key step touches one hash slot; the global `nodes` key is its own):
- `presence:nodes`: a sorted set of live processes (node ids) scored by the time (ms)
  each one's liveness expires. One ZADD per process per heartbeat keeps it alive.
- `presence:{<room>}`: a hash, field `<node>|<user id>` -> `<bot>|<name>`: the user is in
  the room through that node. An entry is valid while its node is live: nothing per
  socket or per room is refreshed.
- `presence:node:{<node>}`: a set of the rooms where that node has entries, so whoever
  finds the node dead can remove them.
- `presence:user:{<user id>}`: a hash, field `n|<node>` -> "1" (all the user's sockets
  on that node are idle) or "0", and `r|<node>|<room>` for each room the user is in
  through that node: the user is away when every live node says idle, and a change of
  theirs (away, status text) is announced in the rooms listed there.
- `presence:away`: a hash of the users who are away now (for a process that starts).

Names match ^[A-Za-z0-9_.-]+$ and user ids and node ids are hex, so "|" occurs in none
of them.
"""

from __future__ import annotations

import functools
import time
from typing import Any

from server.model import User


class Keys:
    """The key names under one prefix."""

    __slots__ = ("away", "nodes", "prefix")

    def __init__(self, prefix: str) -> None:
        self.prefix = f"{prefix}presence:"
        self.nodes = self.prefix + "nodes"
        self.away = self.prefix + "away"

    def room(self, room: str) -> str:
        return f"{self.prefix}{{{room}}}"

    def node(self, node: str) -> str:
        return f"{self.prefix}node:{{{node}}}"

    def user(self, uid: str) -> str:
        return f"{self.prefix}user:{{{uid}}}"


def now_ms() -> int:
    """The clock of liveness scores: wall time in ms, shared by every process."""
    return int(time.time() * 1000)


def text(raw: Any) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def room_entry(node: str, user: User) -> tuple[str, str]:
    """The field and value of the user's entry in a room hash, through `node`."""
    return f"{node}|{user.id}", f"{int(user.bot)}|{user.name}"


@functools.lru_cache(maxsize=1 << 16)
def read_room_entry(raw_field: Any, raw_value: Any) -> tuple[str, User]:
    """(node, user) of a room entry, as Redis returned it. Remembered: every batch of
    joins reads the whole room back, mostly the same entries."""
    node, uid = text(raw_field).split("|", 1)
    bot, name = text(raw_value).split("|", 1)
    return node, User(uid, name, bot == "1")
