"""This process's WebSocket connections, which rooms each is in, and local fan-out.
No I/O imports.

Room bookkeeping is kept apart from transport: a member is anything with `conn_id`,
`user`, `credential`, `send_raw(data)`, `send_batch(batch)`, `shut(code, reason)` and
`abort()`. Leaving costs O(rooms of that connection), so ten thousand sockets closing at
once stays linear.

The frames of one delivery go to each member as one `Batch`: the transport encodes
them once for every member (the WebSocket handler: one buffer of frames, one write per
socket instead of one per frame).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from server.envelope import Outgoing
from server.model import User

# A frame outside the stream, and the connection it is kept from (b"" for none).
Apart = tuple[bytes, bytes]


@dataclass(slots=True)
class Batch:
    """Frames that go to several members in this order; `encoded` is for the transport
    to keep its encoding of them in, made by the first member and reused by the rest."""

    frames: list[bytes]
    encoded: bytes | None = None


class Member(Protocol):
    """What LocalRooms needs of a connection (the WebSocket handler implements it)."""

    conn_id: bytes
    user: User
    credential: str | None  # sha256 of the session id or token it was opened with
    session_id: str | None  # the session it was opened with (None: a bot's token)

    def send_raw(self, data: bytes) -> None: ...

    def send_batch(self, batch: Batch) -> None: ...

    def shut(self, code: int, reason: str) -> None: ...

    def abort(self) -> None: ...


FLOOR_HOLD = 10.0  # seconds a joiner's floor holds (see set_floor)


class LocalRooms:
    """The open connections, which rooms each is in (or joining), per-user counts for
    presence, and the writes of a room's frames to its members."""

    def __init__(self) -> None:
        self._conns: dict[Member, set[str]] = {}  # connection -> its rooms
        self._by_user: dict[str, set[Member]] = {}  # user id -> their connections
        self._bots = 0  # connections of bots among _conns (the status report counts them)
        self._members: dict[str, set[Member]] = {}
        self._users: dict[str, dict[str, int]] = {}
        # Connections between `begin_join` and `finish_join`: live frames wait here so
        # they follow the `joined` frame instead of preceding it.
        self._joining: dict[str, dict[Member, list[Outgoing]]] = {}
        # Members whose `joined` page reached past what the room's other local members
        # have been delivered yet: seqs up to the floor are not sent to them again when
        # they arrive live. Lifted once the room's watermark passes them.
        self._floors: dict[str, dict[Member, int]] = {}
        self._floors_until: dict[str, float] = {}  # room -> when its floors are lifted

    def __contains__(self, room: str) -> bool:
        return room in self._members

    # Connections -------------------------------------------------------------

    @property
    def connections(self) -> Iterable[Member]:
        return self._conns.keys()

    @property
    def open_connections(self) -> int:
        return len(self._conns)

    def connection_kinds(self) -> dict[str, int]:
        """Open connections by kind: {"browser", "bot", "total"}."""
        total = len(self._conns)
        return {"browser": total - self._bots, "bot": self._bots, "total": total}

    def user_count(self) -> int:
        """Distinct users with a connection open here."""
        return len(self._by_user)

    def membership_count(self) -> int:
        """Room memberships of the open connections, joins under way included."""
        return sum(len(rooms) for rooms in self._conns.values())

    def is_connected(self, member: Member) -> bool:
        return member in self._conns

    def connect(self, member: Member) -> None:
        if member not in self._conns:
            self._conns[member] = set()
            self._bots += member.user.bot
        self._by_user.setdefault(member.user.id, set()).add(member)

    def connections_of(self, user_id: str) -> list[Member]:
        """The open connections of one user on this process."""
        return list(self._by_user.get(user_id, ()))

    def disconnect(self, member: Member) -> list[tuple[str, bool, bool]]:
        """Forget a connection and take it out of its rooms; returns, per room left,
        (room, room now empty here, user's last connection in it here)."""
        if member not in self._conns:
            # Closed during the upgrade, before open(): it has no user yet, no rooms.
            return []
        left = []
        for room in list(self._conns.get(member, ())):
            outcome = self.leave(room, member)
            if outcome is not None:
                left.append((room, *outcome))
        del self._conns[member]
        self._bots -= member.user.bot
        mine = self._by_user.get(member.user.id)
        if mine is not None:
            mine.discard(member)
            if not mine:
                del self._by_user[member.user.id]
        return left

    def rooms_of(self, member: Member) -> set[str]:
        return self._conns.get(member, set())

    def shut_credential(self, credential: str, code: int, reason: str) -> None:
        """Close the connections opened with a revoked session or token."""
        for member in [m for m in self._conns if m.credential == credential]:
            member.shut(code, reason)

    def shut_users(self, user_ids: Iterable[str], code: int, reason: str) -> None:
        """Close every connection of these accounts (a deactivated one and its bots)."""
        for member in [m for uid in set(user_ids) for m in self._by_user.get(uid, ())]:
            member.shut(code, reason)

    # Rooms ----------------------------------------------------------------------

    def rooms(self) -> list[str]:
        return list(self._members)

    def members(self, room: str) -> set[Member]:
        return self._members.get(room, set())

    def connection_count(self, room: str) -> int:
        return len(self._members.get(room, ()))

    def has(self, room: str, member: Member) -> bool:
        """Whether the connection is in the room, or joining it."""
        return room in self._conns.get(member, ())

    def local_users(self, room: str) -> list[str]:
        return list(self._users.get(room, {}))

    def has_user(self, room: str, user_id: str) -> bool:
        """Whether a connection of the user here is in the room, or joining it."""
        return user_id in self._users.get(room, ())

    def begin_join(self, room: str, member: Member) -> tuple[bool, bool]:
        """Register a joining member; returns (room is new here, user is new in room here).

        The connection must be connected (it may have closed while its join awaited).
        """
        self._conns[member].add(room)
        new_room = room not in self._members
        members = self._members.setdefault(room, set())
        counts = self._users.setdefault(room, {})
        uid = member.user.id
        new_user = counts.get(uid, 0) == 0
        counts[uid] = counts.get(uid, 0) + 1
        members.discard(member)
        self._joining.setdefault(room, {})[member] = []
        return new_room, new_user

    def finish_join(self, room: str, member: Member, after_seq: int) -> list[Outgoing]:
        """Make a joining member live; returns its held frames not already covered."""
        pending = self._joining.get(room)
        held = pending.pop(member, None) if pending is not None else None
        if pending is not None and not pending:
            del self._joining[room]
        if held is None:  # left (or disconnected) while joining
            return []
        self._members.setdefault(room, set()).add(member)
        return [(seq, data) for seq, data in held if seq == 0 or seq > after_seq]

    def set_floor(self, room: str, member: Member, seq: int, now: float) -> None:
        """Live frames of seqs up to `seq` reached this member in its page already.

        Held for FLOOR_HOLD seconds after the room's latest join: what a page holds
        and is still on its way here (over Redis, or from this process's writer a loop
        turn behind the store) arrives well within that. Not until the watermark
        passes the floor: a room's first joiner starts its watermark at the page's
        top, before the writer's fan-out of those seqs has run.
        """
        self._floors.setdefault(room, {})[member] = seq
        self._floors_until[room] = now + FLOOR_HOLD

    def lift_floors(self, room: str, now: float) -> None:
        """Forget the room's floors once their hold is over."""
        if now >= self._floors_until.get(room, 0.0):
            self._floors.pop(room, None)
            self._floors_until.pop(room, None)

    def has_floors(self, room: str) -> bool:
        return room in self._floors

    def leave(self, room: str, member: Member) -> tuple[bool, bool] | None:
        """Remove a member; returns (room now empty here, user's last connection here),
        or None if it was not in the room."""
        members = self._members.get(room)
        pending = self._joining.get(room)
        was_member = members is not None and member in members
        was_joining = pending is not None and member in pending
        if not (was_member or was_joining):
            return None
        rooms = self._conns.get(member)
        if rooms is not None:
            rooms.discard(room)
        floors = self._floors.get(room)
        if floors is not None:
            floors.pop(member, None)
            if not floors:
                del self._floors[room]
                self._floors_until.pop(room, None)
        if was_member and members is not None:
            members.discard(member)
        if was_joining and pending is not None:
            del pending[member]
            if not pending:
                del self._joining[room]
        counts = self._users[room]
        uid = member.user.id
        counts[uid] -= 1
        last_of_user = counts[uid] == 0
        if last_of_user:
            del counts[uid]
        empty = not counts
        if empty:
            self._members.pop(room, None)
            del self._users[room]
        return empty, last_of_user

    def deliver(self, room: str, frames: Iterable[Outgoing], exclude: bytes = b"") -> int:
        """Write frames to every local member of a room; returns the number of writes.

        The loop only writes: serialization happened once, upstream. A write never
        waits for the socket, so one slow client cannot hold up the next.
        """
        members = self._members.get(room)
        pending = self._joining.get(room)
        floors = self._floors.get(room)
        count = 0
        frames = list(frames)
        if members and not floors:
            batch = Batch([data for _, data in frames])
            for member in tuple(members):
                if member.conn_id != exclude:
                    member.send_batch(batch)
                    count += len(frames)
        elif members and floors:  # a joiner's floor: some frames are not for everyone
            for seq, data in frames:
                for member in tuple(members):
                    if member.conn_id != exclude and (not seq or floors.get(member, 0) < seq):
                        member.send_raw(data)
                        count += 1
        if pending:
            for member, held in pending.items():
                if member.conn_id != exclude:
                    held.extend(frames)
        return count

    def deliver_apart(self, room: str, frames: list[Apart]) -> int:
        """Frames outside the stream (no seq), each kept from the connection named with
        it (a joiner's own `online`; b"" for none); returns the number of writes.

        Each member gets its frames in one write: the members none is kept from share
        one encoding, the others get theirs without their own.
        """
        kept = {exclude for _, exclude in frames if exclude}
        members = self._members.get(room)
        pending = self._joining.get(room)
        count = 0
        if members:
            batch = Batch([data for data, _ in frames])
            for member in tuple(members):
                if member.conn_id in kept:
                    own = [data for data, exclude in frames if exclude != member.conn_id]
                    if own:
                        member.send_batch(Batch(own))
                        count += len(own)
                else:
                    member.send_batch(batch)
                    count += len(frames)
        if pending:
            for member, held in pending.items():
                held.extend((0, data) for data, exclude in frames
                            if exclude != member.conn_id)
        return count
