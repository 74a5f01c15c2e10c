"""What a membership change, made on any process, does to this process's sockets.

Every change of a room or of who is in it reaches every process as a `MemberChange`
command (Team.tell, Delivery.command): the cached room or membership is dropped, the
user's sockets are told (`room_added`, `room_removed`, `room_updated`, `read`), a
removal takes those sockets out of the room, and a room's update reaches everyone in it.
"""

from __future__ import annotations

from collections.abc import Callable

from server import protocol
from server.access import AccessCache
from server.delivery import Delivery
from server.envelope import MemberChange
from server.joinreads import JoinReads
from server.presence_hub import CHANGE, PresenceHub
from server.rooms import LocalRooms, Member
from server.standing import Standing

Depart = Callable[[Member, list[tuple[str, bool, bool]]], None]  # Chat._depart


class MemberChanges:
    """Applies membership changes to this process's sockets; see the module docstring."""

    def __init__(self, node_id: str, cache: AccessCache, hub: PresenceHub,
                 standing: Standing, rooms: LocalRooms, delivery: Delivery,
                 join_reads: JoinReads, depart: Depart) -> None:
        self.node_id = node_id
        self.cache = cache
        self.hub = hub
        self.standing = standing
        self.rooms = rooms
        self.delivery = delivery
        self.join_reads = join_reads
        self._depart = depart

    def apply(self, change: MemberChange) -> None:
        """Apply a membership change (from any process) to this process's sockets."""
        self.cache.forget(change, here=change.node == self.node_id)
        room, payload = change.room, change.payload
        if change.change == CHANGE:  # a user's away state or status text
            self.hub.apply(change)
            return
        if change.user == "*":  # the room itself: topic, archived
            self.standing.archived(room, bool(payload.get("archived")))
            shared = {k: v for k, v in payload.items() if k not in ("member", "role",
                                                                    "muted_until")}
            frame = protocol.dump(protocol.RoomUpdated(shared))
            self.delivery.deliver(room, [(0, frame)])
            return
        conns = self.rooms.connections_of(change.user)
        match change.change:
            case "added":
                view = {k: v for k, v in payload.items() if k != "actor"}
                out = protocol.dump(protocol.RoomAdded(view, payload.get("actor")))
            case "read":
                self.join_reads.moved(room, change.user, int(payload.get("seq", 0)))
                out = protocol.dump(protocol.ReadPosition(room, int(payload.get("seq", 0))))
                exclude = str(payload.get("exclude", "")).encode()
                conns = [c for c in conns if c.conn_id != exclude]
            case "removed":
                self.standing.forget_user(room, change.user)
                out = protocol.dump(protocol.RoomRemoved(
                    room, str(payload.get("reason", "")), payload.get("until"),
                    payload.get("actor")))
                for conn in conns:
                    outcome = self.rooms.leave(room, conn)
                    if outcome is not None:
                        self._depart(conn, [(room, *outcome)])
            case _:  # "role", "muted": the user's Room, changed
                if conns:
                    self.standing.muted(room, change.user, int(payload.get("muted_until") or 0))
                else:
                    self.standing.forget_user(room, change.user)
                out = protocol.dump(protocol.RoomUpdated(payload))
        for conn in conns:
            conn.send_raw(out)
