"""One loop turn's joins and leaves: the one pipeline they share, and their answers.

Per room one HSET and one HGETALL (the members, for the joiners) and one HDEL; per user
one HSET or HDEL of their key and, when they left rooms, one HKEYS of it (are they in
those rooms through a live node elsewhere?) instead of reading every such room's
entries back. Ten thousand sockets closing at once cost one command per room and two
per user, not per socket.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from server.model import User
from server.presence_keys import Keys, read_room_entry, room_entry, text

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
        # read their entries back; a leave needs only the leaver's own key (below).
        self._reads: list[int | None] = []
        self._leavers: set[str] = set()  # of rooms nobody enters: their key says the rest
        self._user_reads: dict[str, int] = {}  # user id -> where the HKEYS of their key is

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
                self._leavers.update(x.user.id for x in b.leaves)
        # One command or two per user, whatever the number of their rooms in the
        # batch (a user leaving 20 rooms at once: one HDEL, not 20).
        for uid, fields in users.items():
            user_key = keys.user(uid)
            kept = {f: v for f, v in fields.items() if v is not None}
            if kept:
                pipe.hset(user_key, mapping=kept)
            if len(kept) < len(fields):
                pipe.hdel(user_key, *(f for f, v in fields.items() if v is None))
            if uid in self._leavers:  # after this node's own changes: what others hold
                self._user_reads[uid] = len(pipe)
                pipe.hkeys(user_key)

    def answer(self, results: list[Any]) -> None:
        for (room, b), at in zip(self.rooms.items(), self._reads, strict=True):
            if at is None:  # leaves only: online elsewhere = another live node's room entry
                for x in b.leaves:
                    _tell(x, self._elsewhere(results[self._user_reads[x.user.id]], room))
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
            for e in b.enters:
                if not e.done.done():
                    e.done.set_result((list(members.values()), e.user.id in elsewhere))
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

    def _elsewhere(self, user_fields: Iterable[Any], room: str) -> bool:
        """Whether a user's key (its fields) says they are in `room` through another
        live node: a field "r|<node>|<room>" (node ids are hex: no "|")."""
        for raw in user_fields:
            parts = text(raw).split("|", 2)
            if (len(parts) == 3 and parts[0] == "r" and parts[2] == room
                    and parts[1] != self.node and self.is_live(parts[1])):
                return True
        return False


def _tell(leave: Leave, answer: bool | Exception) -> None:
    """Give a leave its answer; one that fails keeps no other from theirs."""
    try:
        leave.then(answer)
    except Exception:
        log.exception("presence leave answer %r crashed", leave.then)
