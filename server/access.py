"""This process's copy of room documents and memberships, which every join, history
read and read-position update consults before anything else.

Entries live ACCESS_SECONDS at most; every change of a room or of a membership reaches
every process as a `MemberChange` command (Team.tell), which drops the entry at once
(`forget`), so a kick, ban, mute or role change takes effect everywhere on the next
frame; the process that adds a membership keeps the document it wrote (`learnt`) and
ignores its own "added". Only memberships are kept (state "member"): a banned user, or
a stranger to a room, is looked up each time. Lookups of one loop turn share one `$in`
query.
"""

from __future__ import annotations

from typing import Any

from server.cache import Batch, Expiring
from server.envelope import MemberChange
from server.store import Store
from server.store.members import MEMBER, member_key

ACCESS_SECONDS = 30.0
ACCESS_SIZE = 100_000  # entries per cache (rooms, memberships)

Doc = dict[str, Any]


class AccessCache:
    """Room documents and (room, user) memberships, cached and batched; see above."""

    def __init__(self, store: Store, ttl: float = ACCESS_SECONDS) -> None:
        self.rooms: Expiring[str, Doc] = Expiring(ttl, ACCESS_SIZE)
        self.members: Expiring[str, Doc] = Expiring(ttl, ACCESS_SIZE)
        self._rooms: Batch[str, Doc] = Batch(store.rooms_named)
        self._members: Batch[str, Doc] = Batch(store.members_by_key)

    async def room(self, name: str) -> Doc | None:
        """The room's document (None: no such room); raises StoreError."""
        doc = self.rooms.get(name)
        if doc is None:
            version = self.rooms.version
            doc = await self._rooms.load(name)
            if doc is not None:
                self.rooms.fill(name, doc, version)
        return doc

    def member_version(self) -> int:
        return self.members.version

    async def member(self, room: str, user_id: str) -> Doc | None:
        """The (room, user) document, member or banned (None: neither)."""
        key = member_key(room, user_id)
        doc = self.members.get(key)
        if doc is None:
            version = self.members.version
            doc = await self._members.load(key)
            self.learnt(doc, version)
        return doc

    def learnt(self, doc: Doc | None, version: int) -> None:
        """A member document read (or written) by a query that began at `version`."""
        if doc is not None and doc.get("state") == MEMBER:
            self.members.fill(str(doc["_id"]), doc, version)

    def forget(self, change: MemberChange, *, here: bool = False) -> None:
        """A room or one of its memberships changed (on any process; `here`: this one).
        A membership added here was cached by the add itself (Team.add_member): kept."""
        if change.change == "read" or (here and change.change == "added"):
            return
        if change.user == "*":
            self.rooms.drop(change.room)
        else:
            self.members.drop(member_key(change.room, change.user))
