"""One loop turn's joins and leaves: the one pipeline they share, and their answers.

Per room one HSET and one HGETALL (the members, for the joiners) and one HDEL; per user
one HSET or HDEL of their key. A room that only loses members reads nothing back per
user: one ZRANGE of the live nodes serves the whole turn, and only when another node is
live does a second round trip ask each such room, in one HMGET, for the leavers' entries
through those nodes (online elsewhere). Ten thousand sockets closing at once on a node
alone cost one command per room and one per user, not per socket.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from server.model import User
from server.presence_keys import Keys, now_ms, read_room_entry, room_entry, text

log = logging.getLogger(__name__)

@dataclass(slots=True)
class Enter:
    user: User
    idle: bool
    done: asyncio.Future[tuple[list[User], bool]]


@dataclass(slots=True)
class Leave:
    user: User
    gone_from_node: bool  # the user has no socket in any room here any more
    then: Callable[[Any], None]  # given online-elsewhere (bool), or the error


@dataclass(slots=True)
class RoomBatch:
    enters: list[Enter] = field(default_factory=list)
    leaves: list[Leave] = field(default_factory=list)
    empty_here: bool = False  # the room's last local member left
    order: list[Enter | Leave] = field(default_factory=list)  # both, as they came

    def add(self, item: Enter | Leave) -> None:
        self.order.append(item)
        if isinstance(item, Enter):
            self.enters.append(item)
        else:
            self.leaves.append(item)


class Turn:
    """The rooms' batches of one turn, through this node: `build` writes the pipeline,
    `answer` (or `fail`) resolves every join and leave from its replies."""

    def __init__(self, rooms: dict[str, RoomBatch], node: str, keys: Keys,
                 is_live: Callable[[str], bool]) -> None:
        self.rooms = rooms
        self.node = node
        self.keys = keys
        self.is_live = is_live
        # Where each room's HGETALL is among the replies: only rooms someone enters
        # read their entries back. The others' leaves are answered by `check`.
        self._reads: list[int | None] = []
        self._nodes_at: int | None = None  # where the ZRANGE of live nodes is
        self._checked: list[list[str]] = []  # per room `check` asks: the leavers' ids

    def __len__(self) -> int:
        return sum(len(b.enters) + len(b.leaves) for b in self.rooms.values())

    def build(self, pipe: Any) -> None:
        node, keys = self.node, self.keys
        mine = keys.node(node)
        # Per user: field of their key -> value, or None to delete; the last word wins.
        users: dict[str, dict[str, str | None]] = {}
        for room, b in self.rooms.items():
            key = keys.room(room)
            # A user who joined and left in the same turn: the later of the two counts.
            last: dict[str, Enter | Leave] = {}
            for item in b.order:
                last[item.user.id] = item
            here = {uid: i for uid, i in last.items() if isinstance(i, Enter)}
            if here:
                pipe.hset(key, mapping=dict(room_entry(node, e.user) for e in here.values()))
                pipe.sadd(mine, room)
            gone = [uid for uid, i in last.items() if isinstance(i, Leave)]
            if gone:
                pipe.hdel(key, *(f"{node}|{uid}" for uid in gone))
            for item in b.order:
                fields = users.setdefault(item.user.id, {})
                if isinstance(item, Enter):
                    fields[f"r|{node}|{room}"] = ""
                    fields[f"n|{node}"] = "1" if item.idle else "0"
                else:
                    fields[f"r|{node}|{room}"] = None
                    if item.gone_from_node:
                        fields[f"n|{node}"] = None
            if b.empty_here and not here:
                pipe.srem(mine, room)
            if b.enters:
                self._reads.append(len(pipe))
                pipe.hgetall(key)
            else:
                self._reads.append(None)
        # One command or two per user, whatever the number of their rooms in the
        # batch (a user leaving 20 rooms at once: one HDEL, not 20).
        for uid, fields in users.items():
            user_key = keys.user(uid)
            kept = {f: v for f, v in fields.items() if v is not None}
            if kept:
                pipe.hset(user_key, mapping=kept)
            if len(kept) < len(fields):
                pipe.hdel(user_key, *(f for f, v in fields.items() if v is None))
        if None in self._reads:
            self._nodes_at = len(pipe)
            pipe.zrange(keys.nodes, 0, -1, withscores=True)

    def others(self, results: list[Any]) -> list[str]:
        """The other nodes live when the pipeline ran (none: no leaver is elsewhere)."""
        if self._nodes_at is None:
            return []
        now = now_ms()
        return [n for n, until in ((text(r), score) for r, score in results[self._nodes_at])
                if n != self.node and until > now]

    def check(self, pipe: Any, others: list[str]) -> None:
        """Per room nobody enters, one HMGET of its leavers' entries through `others`:
        a node that started since this node's heartbeat is among them (a node says it
        is live before it writes an entry)."""
        for (room, b), at in zip(self.rooms.items(), self._reads, strict=True):
            if at is None:
                uids = list(dict.fromkeys(x.user.id for x in b.leaves))
                self._checked.append(uids)
                pipe.hmget(self.keys.room(room), [f"{n}|{u}" for u in uids for n in others])

    def answer(self, results: list[Any], checks: list[Any] | None = None,
               check_failed: Callable[[], Exception] | None = None) -> None:
        """Answer from the pipeline's replies and, when `check` ran, its replies (or
        its error, for the leaves it was to answer)."""
        checked = iter(zip(self._checked, checks or (), strict=True))
        for b, at in zip(self.rooms.values(), self._reads, strict=True):
            if at is None:  # leaves only: online elsewhere = another live node's entry
                if check_failed is not None:
                    for x in b.leaves:
                        _tell(x, check_failed())
                    continue
                there = _there(*next(checked)) if checks is not None else set()
                for x in b.leaves:
                    _tell(x, x.user.id in there)
                continue
            members: dict[str, User] = {}
            elsewhere: set[str] = set()
            for raw_field, raw_value in results[at].items():
                entry_node, member = read_room_entry(raw_field, raw_value)
                if not self.is_live(entry_node):
                    continue
                members.setdefault(member.id, member)
                if entry_node != self.node:
                    elsewhere.add(member.id)
            listed = list(members.values())  # one list for them all (`UserStates.present`)
            for e in b.enters:
                if not e.done.done():
                    e.done.set_result((listed, e.user.id in elsewhere))
            for x in b.leaves:
                _tell(x, x.user.id in elsewhere)

    def fail(self, error: Callable[[], Exception]) -> None:
        """Every join and leave fails with an exception of its own."""
        for b in self.rooms.values():
            for e in b.enters:
                if not e.done.done():
                    e.done.set_exception(error())
            for x in b.leaves:
                _tell(x, error())


def _there(leavers: list[str], values: list[Any]) -> set[str]:
    """The leavers of a checked room with an entry through another live node (HMGET's
    values come per leaver, one per other node)."""
    per = len(values) // len(leavers)
    return {u for i, u in enumerate(leavers) if any(values[i * per:(i + 1) * per])}


def _tell(leave: Leave, answer: bool | Exception) -> None:
    """Give a leave its answer; one that fails keeps no other from theirs."""
    try:
        leave.then(answer)
    except Exception:
        log.exception("presence leave answer %r crashed", leave.then)
