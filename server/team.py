"""Who may see and do what in a room: room kinds, stored membership, roles, moderation.

Rooms are `public` (listed to everyone; joining makes you a member), `private`
(invisible to non-members: every refusal is the `not_found` of a room that does not
exist) or `dm` (2 to 8 people, fixed; the same people always get the same room).
Members have a role, `owner` > `admin` > `moderator` > `member`, and act only on
members below their own role (PERMISSIONS). Server admins (ADMIN_USERS) moderate
public rooms as admins and may archive them; they see no private room or DM they are
not in.

Every change of membership is an event in the room's stream (`writer.record_event`),
and reaches the sockets it concerns on every process as a `MemberChange` command.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from server import protocol
from server.access import AccessCache
from server.admins import Admins
from server.envelope import MemberChange
from server.model import Event, User
from server.presence import Presence, PresenceError
from server.roles import (
    DM_MAX,
    DM_MIN,
    MAX_TOPIC,
    PERMISSIONS,
    RANK,
    ROOM_MAX,
    Access,
    TeamError,
    dm_name,
    forbidden,
    kind_of,
    not_found,
    room_view,
)
from server.sends import EventSpec, unavailable
from server.store import Banned, Conflict, QuotaExceeded, Store, StoreError, ban_active, now_ms
from server.writer import MessageWriter

log = logging.getLogger(__name__)

Notify = Callable[[MemberChange], Awaitable[None]]


# Unread counts that listings of rooms run at once, all together: the rest of the process
# shares the MongoDB connections and Motor's threads, and must not queue behind them.
UNREAD_AT_ONCE = 4


class Team:
    """Room kinds, visibility, membership and roles; see the module docstring. The
    changes people make to membership are `server.moderation.Moderation`'s."""

    def __init__(self, store: Store, writer: MessageWriter, presence: Presence,
                 admins: Admins, *, node_id: str, max_rooms: int, timeout: float = 5.0
                 ) -> None:
        self.node_id = node_id
        self.store = store
        self.writer = writer
        self.presence = presence
        self.admins = admins
        self.max_rooms = max_rooms
        self.timeout = timeout
        self.notify: Notify | None = None  # set by Chat: carries MemberChange everywhere
        self.cache = AccessCache(store)  # Chat feeds it every MemberChange (forget)
        self._unread_slots = asyncio.Semaphore(UNREAD_AT_ONCE)

    # Seeing ------------------------------------------------------------------------

    async def access(self, user: User, room: str) -> Access:
        """The room as this user may see it; `not_found` if they may not."""
        if not protocol.valid_room(room):
            raise TeamError(protocol.BAD_REQUEST,
                            "room name must match ^[a-z0-9][a-z0-9_-]{0,63}$")
        try:
            doc = await self.cache.room(room)
            if doc is None:
                raise not_found(room)
            member = await self.cache.member(room, user.id)
        except StoreError:
            raise unavailable("the message store") from None
        if member is not None and member.get("state") != "member":
            if kind_of(doc) != "public":
                raise not_found(room)  # a banned user learns nothing more of it
            member = None
        if member is None and kind_of(doc) != "public":
            raise not_found(room)
        return Access(doc, member)

    async def readable(self, user: User, room: str) -> Access:
        """`access`, refusing a banned user the history of a public room too."""
        access = await self.access(user, room)
        if access.member is None:
            await self._refuse_banned(room, user)
        return access

    async def enter(self, user: User, room: str) -> Access:
        """A WebSocket join: a visible room, and for a public room, membership (a
        first join is a `joined` event); `forbidden` with reason `banned` for a ban."""
        access = await self.access(user, room)
        if access.member is not None:
            return access
        try:
            added, member = await self.add_member(room, user)
        except Banned as e:
            raise forbidden(f"you are banned from {room!r}", reason="banned",
                            until=e.until) from None
        except StoreError:
            raise unavailable("the message store") from None
        if added:
            await self.record(user, room, "joined")
            await self.tell(room, user.id, "added", room_view(access.room, member), user)
        return Access(access.room, member)

    async def add_member(self, room: str, user: User, role: str = "member"
                         ) -> tuple[bool, dict[str, Any]]:
        """Store.add_member, and the membership it wrote kept in this process's cache
        (its own "added" change leaves it there). Raises Banned, StoreError."""
        version = self.cache.member_version()
        added, member = await self.store.add_member(room, user, role=role)
        self.cache.learnt(member, version)
        return added, member

    async def rooms(self, user: User, *, after: str | None, limit: int
                    ) -> tuple[list[dict[str, Any]], bool]:
        """A page of the rooms a user sees: public ones and their private rooms and DMs."""
        mine = await self.store.memberships(user.id)
        docs, more = await self.store.rooms(after=after, limit=limit, also=list(mine))
        views = [await self.view_of(d, mine.get(d["_id"])) for d in docs]
        # Read state of the rooms the caller is in: counted concurrently, capped.
        member_views = [v for v in views if v["member"]]
        positions = await self.store.read_positions(user.id, [v["name"] for v in member_views])
        async def count(room: str) -> tuple[int, int]:
            async with self._unread_slots:
                return await self.store.unread(room, user.id, positions.get(room, 0))

        counts = await asyncio.gather(*(count(v["name"]) for v in member_views))
        for view, (unread, mentions) in zip(member_views, counts, strict=True):
            view.update(last_read=positions.get(view["name"], 0), unread=unread,
                        mentions=mentions)
        return views, more

    async def view(self, user: User, room: str) -> dict[str, Any]:
        access = await self.access(user, room)
        return await self.view_of(access.room, access.member)

    async def view_of(self, doc: dict[str, Any], member: dict[str, Any] | None
                    ) -> dict[str, Any]:
        if kind_of(doc) != "dm":
            return room_view(doc, member)
        people = [User.from_doc(m["user"]) for m in await self.store.room_members(doc["_id"])]
        return room_view(doc, member, people)

    async def members(self, user: User, room: str) -> list[dict[str, Any]]:
        await self.readable(user, room)
        docs = await self.store.room_members(room)
        try:
            online = {u.id for u in await self.presence.members(room)}
        except PresenceError:
            online = set()
        now = now_ms()
        out = [{"user": d["user"], "role": d["role"], "online": d["uid"] in online,
                "muted_until": d["muted_until"] if d.get("muted_until", 0) > now else None}
               for d in docs]
        out.sort(key=lambda m: (not m["online"], -RANK[m["role"]], m["user"]["name"]))
        return out

    # Making rooms ------------------------------------------------------------------

    async def create(self, user: User, name: object, kind: object = "public",
                     topic: object = "") -> dict[str, Any]:
        if not isinstance(name, str) or not protocol.valid_room(name):
            raise TeamError(protocol.BAD_REQUEST,
                            "room name must match ^[a-z0-9][a-z0-9_-]{0,63}$")
        if name.startswith("dm-"):
            raise TeamError(protocol.BAD_REQUEST, "room names starting with dm- are reserved")
        if kind not in ("public", "private"):
            raise TeamError(protocol.BAD_REQUEST, "kind must be public or private")
        topic = _topic(topic)
        # A bot's rooms count against its owner's quota, so bots add no rooms to it.
        owner = (await self.store.owner_of(user.id) if user.bot else None) or user.id
        title = name
        for _attempt in range(3):
            if kind == "private":
                # A private room's name never collides with a name someone else asks
                # for: a 409 would tell them that the room exists.
                name = f"{title[:ROOM_MAX - 9]}-{secrets.token_hex(4)}"
            try:
                doc = await self.store.create_room(name, user, owner=owner,
                                                   limit=self.max_rooms, kind=str(kind),
                                                   topic=topic, title=title)
                break
            except Conflict:
                if kind != "private":
                    raise TeamError("name_taken", f"room {name!r} exists") from None
            except QuotaExceeded as e:
                raise TeamError("quota_exceeded",
                                f"you have created {e.limit} rooms, the most allowed",
                                limit=e.limit) from None
        else:
            raise unavailable("the message store")
        _, member = await self.add_member(name, user, role="owner")
        view = room_view(doc, member)
        await self.tell(name, user.id, "added", view, user)
        return view

    async def dm(self, user: User, names: object) -> tuple[dict[str, Any], bool]:
        """The DM of the caller and the named people; (Room, created)."""
        if (not isinstance(names, list) or not all(isinstance(n, str) for n in names)
                or len(names) > DM_MAX):
            raise TeamError(protocol.BAD_REQUEST,
                            f"users must be a list of at most {DM_MAX - 1} names")
        people = {user.id: user}
        for name in names:
            other = await self.user_named(name)
            people[other.id] = other
        if not DM_MIN <= len(people) <= DM_MAX:
            raise TeamError(protocol.BAD_REQUEST,
                            f"a direct message is between {DM_MIN} and {DM_MAX} people")
        name = dm_name(list(people))
        created = True
        try:
            doc = await self.store.create_room(name, user, kind="dm", people=sorted(people))
        except Conflict:
            created = False
            found = await self.store.room(name)
            if found is None:
                raise unavailable("the message store") from None
            doc = found
        members = {}
        for person in people.values():
            _, members[person.id] = await self.add_member(name, person)
        listed = sorted(people.values(), key=lambda u: u.name)
        if created:
            for person in people.values():
                await self.tell(name, person.id, "added",
                                 room_view(doc, members[person.id], listed), user)
        return room_view(doc, members[user.id], listed), created

    async def update(self, actor: User, room: str, body: dict[str, Any]) -> dict[str, Any]:
        """PATCH a room: `topic` (admin+), `archived` (owner, or a server admin for a
        public room)."""
        access = await self.access(actor, room)
        fields: dict[str, Any] = {}
        if "topic" in body:
            await self.require(actor, access, "topic")
            fields["topic"] = _topic(body["topic"])
        if "archived" in body:
            if not isinstance(body["archived"], bool):
                raise TeamError(protocol.BAD_REQUEST, "archived must be true or false")
            await self.require(actor, access, "archive")
            fields["archived"] = body["archived"]
        if not fields:
            raise TeamError(protocol.BAD_REQUEST, "nothing to change: give topic or archived")
        doc = await self.store.update_room(room, **fields)
        if doc is None:
            raise not_found(room)
        if "topic" in fields and fields["topic"] != access.room.get("topic", ""):
            await self.record(actor, room, "topic_changed", data={"topic": fields["topic"]})
        if "archived" in fields and fields["archived"] != bool(access.room.get("archived")):
            await self.record(actor, room, "archived" if fields["archived"] else "unarchived")
        await self.tell(room, "*", "room", room_view(doc, None))
        return await self.view_of(doc, access.member)

    # Membership ----------------------------------------------------------------------

    # Rules -----------------------------------------------------------------------------

    async def rank(self, user: User, access: Access) -> int:
        """The actor's rank in a room: their role, raised to admin in a public room for
        a server admin. -1 for a non-member."""
        rank = RANK[access.role] if access.role else -1
        if access.kind == "public" and rank < RANK["admin"] and await self.admins.is_admin(user):
            rank = RANK["admin"]
        return rank

    async def require(self, actor: User, access: Access, action: str) -> int:
        rank = await self.rank(actor, access)
        allowed = rank >= RANK[PERMISSIONS[action]]
        if (action == "archive" and not allowed and access.kind == "public"
                and await self.admins.is_admin(actor)):
            allowed = True
        if not allowed:
            raise forbidden(f"{PERMISSIONS[action]}s and above may {action.replace('_', ' ')}"
                            f" in {access.name!r}", reason="role")
        return rank

    async def _refuse_banned(self, room: str, user: User) -> None:
        try:
            doc = await self.store.member(room, user.id)
        except StoreError:
            raise unavailable("the message store") from None
        if ban_active(doc):
            assert doc is not None
            raise forbidden(f"you are banned from {room!r}", reason="banned",
                            until=doc.get("until"))

    async def user_named(self, name: object) -> User:
        if not isinstance(name, str) or not name:
            raise TeamError(protocol.BAD_REQUEST, "user must be a user's name")
        doc = await self.store.find_user(name)
        if doc is None or doc.get("deactivated_at"):
            raise TeamError(protocol.NOT_FOUND, f"no user named {name!r}")
        return User.from_doc(doc)

    async def record(self, actor: User, room: str, kind: str, target: User | None = None,
                     data: dict[str, Any] | None = None) -> Event:
        """Record a change in the room's stream (delivered like a message)."""
        event, _ = await self.writer.record_event(actor, room,
                                                  EventSpec(kind, target, data or {}),
                                                  timeout=self.timeout)
        return event

    async def tell(self, room: str, user_id: str, change: str, payload: dict[str, Any],
                    actor: User | None = None) -> None:
        """Tell every socket of a user (on every process) about a change; `actor`, who
        made it, rides along as the payload's "actor"."""
        if actor is not None:
            payload = {**payload, "actor": actor.as_dict()}
        if self.notify is not None:
            await self.notify(MemberChange(self.node_id, room, user_id, change, payload))


def _topic(topic: object) -> str:
    if not isinstance(topic, str) or len(topic) > MAX_TOPIC:
        raise TeamError(protocol.BAD_REQUEST, f"topic must be text of at most {MAX_TOPIC} "
                        "characters")
    return topic.strip()
