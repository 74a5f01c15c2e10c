"""Who may speak where, for the users joined here: each (room, user id)'s mute and the
archived rooms. Set at join from the room and membership documents (`note`), kept
current by the MemberChange commands every process receives, and dropped with a
user's last socket in a room (`forget_user`) or the room's last local socket
(`forget_room`). A send or typing checks it without a database read.
"""

from __future__ import annotations

from server import protocol
from server.protocol import ProtocolError
from server.roles import Access
from server.store import now_ms


class Standing:
    """Mutes and archived rooms of the rooms joined here; see the module docstring."""

    def __init__(self) -> None:
        self._muted: dict[tuple[str, str], int] = {}  # (room, user id) -> until, ms
        self._archived: set[str] = set()

    def check(self, user_id: str, room: str) -> None:
        """Refuse a send or typing in an archived room, or from a muted member."""
        if room in self._archived:
            raise ProtocolError(protocol.FORBIDDEN, f"{room!r} is archived: it is read-only",
                                reason="archived")
        until = self._muted.get((room, user_id), 0)
        if until > now_ms():
            raise ProtocolError(protocol.FORBIDDEN, f"you are muted in {room!r}",
                                reason="muted", until=until)

    def note(self, access: Access) -> None:
        """What a join found: the room's archived flag and the joiner's mute."""
        self.archived(access.name, bool(access.room.get("archived")))
        if access.member is not None:
            self.muted(access.name, access.member["uid"], access.muted_until)

    def archived(self, room: str, archived: bool) -> None:
        if archived:
            self._archived.add(room)
        else:
            self._archived.discard(room)

    def muted(self, room: str, user_id: str, until: int) -> None:
        """The user is muted in the room until `until` (ms); 0 or a past time: not."""
        if until > now_ms():
            self._muted[(room, user_id)] = until
        else:
            self._muted.pop((room, user_id), None)

    def forget_user(self, room: str, user_id: str) -> None:
        self._muted.pop((room, user_id), None)

    def forget_room(self, room: str) -> None:
        self._archived.discard(room)
