"""Moderation: adding and removing people, roles, bans and mutes, each recorded in the
room's stream and told to the people it concerns on every process.

The rules of who may do what (roles, `PERMISSIONS`, visibility) live in `server.team`;
this module applies them to changes of membership.
"""

from __future__ import annotations

from typing import Any

from server import protocol
from server.model import User
from server.roles import (
    MAX_SECONDS,
    RANK,
    ROLES,
    Access,
    TeamError,
    forbidden,
    not_found,
    room_view,
)
from server.store import Banned, now_ms
from server.team import Team


class Moderation:
    """Membership changes made by people to rooms: join, add, leave, kick, roles,
    bans and mutes. Every refusal is a TeamError with a documented code."""

    def __init__(self, team: Team) -> None:
        self.team = team
        self.store = team.store

    async def add(self, actor: User, room: str, name: object) -> dict[str, Any]:
        """Join a public room yourself, or (admin+) add someone to a room."""
        access = await self.team.access(actor, room)
        target = await self.team.user_named(name)
        if access.kind == "dm":
            raise forbidden("the people of a direct message are fixed: start another one")
        if target.id == actor.id:
            if access.kind != "public":
                raise not_found(room) if access.member is None else forbidden(
                    "you are a member already")
            entered = await self.team.enter(actor, room)
            return room_view(entered.room, entered.member)
        await self.team.require(actor, access, "add")
        try:
            added, member = await self.team.add_member(room, target)
        except Banned as e:
            raise forbidden(f"{target.name} is banned from {room!r}", reason="banned",
                            until=e.until) from None
        if added:
            await self.team.record(actor, room, "added", target)
            view = await self.team.view_of(access.room, member)
            await self.team.tell(room, target.id, "added", view, actor)
        return room_view(access.room, member)

    async def remove(self, actor: User, room: str, name: object) -> None:
        """Leave a room (yourself) or kick someone (moderator+)."""
        access = await self.team.access(actor, room)
        target = await self.team.user_named(name)
        if access.kind == "dm":
            raise forbidden("the people of a direct message are fixed")
        if target.id == actor.id:
            if access.member is None:
                raise forbidden(f"you are not a member of {room!r}")
            if access.role == "owner":
                raise forbidden("the owner hands ownership over before leaving")
            await self.store.remove_member(room, actor.id)
            await self.team.record(actor, room, "left")
            await self.team.tell(room, actor.id, "removed", {"room": room, "reason": "left"},
                             actor)
            return
        await self._require_over(actor, access, "kick", target)
        await self.store.remove_member(room, target.id)
        await self.team.record(actor, room, "removed", target)
        await self.team.tell(room, target.id, "removed", {"room": room, "reason": "kicked"},
                         actor)

    async def set_role(self, actor: User, room: str, name: object, role: object) -> dict[str, Any]:
        access = await self.team.access(actor, room)
        target = await self.team.user_named(name)
        if not isinstance(role, str) or role not in RANK:
            raise TeamError(protocol.BAD_REQUEST, f"role must be one of {', '.join(ROLES)}")
        if access.kind == "dm":
            raise forbidden("a direct message has no roles")
        action = {"owner": "transfer", "admin": "make_admin"}.get(role, "make_moderator")
        await self._require_over(actor, access, action, target)
        if role == "owner":
            # Handing ownership over: the previous owner becomes an admin.
            await self.store.set_member(room, actor.id, role="admin")
            await self.team.record(actor, room, "role_changed", actor, {"role": "admin"})
            await self.team.tell(room, actor.id, "role",
                             room_view(access.room, {**(access.member or {}), "role": "admin"}))
        doc = await self.store.set_member(room, target.id, role=role)
        if doc is None:
            raise TeamError(protocol.NOT_FOUND, f"{target.name} is not a member of {room!r}")
        await self.team.record(actor, room, "role_changed", target, {"role": role})
        await self.team.tell(room, target.id, "role", room_view(access.room, doc))
        return {"user": doc["user"], "role": doc["role"]}

    async def ban(self, actor: User, room: str, name: object, seconds: object) -> int | None:
        access = await self.team.access(actor, room)
        target = await self.team.user_named(name)
        until = None if seconds is None else now_ms() + 1000 * _seconds(seconds)
        await self._require_over(actor, access, "ban", target, member_needed=False)
        await self.store.ban_member(room, target, until, actor)
        await self.team.record(actor, room, "banned", target, {"until": until})
        await self.team.tell(room, target.id, "removed",
                         {"room": room, "reason": "banned", "until": until}, actor)
        return until

    async def bans(self, actor: User, room: str) -> list[dict[str, Any]]:
        """The bans in force (admin+): who, until when, by whom."""
        access = await self.team.access(actor, room)
        await self.team.require(actor, access, "ban")
        docs = await self.store.room_bans(room)
        by = {d["by"]: None for d in docs if d.get("by")}
        names = {uid: await self.store.user_by_id(uid) for uid in by}
        return [{"user": d["user"], "until": d.get("until"),
                 "by": names.get(d.get("by") or "")} for d in docs]

    async def unban(self, actor: User, room: str, name: object) -> None:
        access = await self.team.access(actor, room)
        target = await self.team.user_named(name)
        await self.team.require(actor, access, "ban")
        if not await self.store.unban_member(room, target.id):
            raise TeamError(protocol.NOT_FOUND, f"{target.name} is not banned from {room!r}")
        await self.team.record(actor, room, "unbanned", target)

    async def mute(self, actor: User, room: str, name: object, seconds: object) -> int:
        access = await self.team.access(actor, room)
        target = await self.team.user_named(name)
        if seconds is None:
            raise TeamError(protocol.BAD_REQUEST, "a mute needs seconds")
        until = now_ms() + 1000 * _seconds(seconds)
        await self._require_over(actor, access, "mute", target)
        doc = await self.store.set_member(room, target.id, muted_until=until)
        if doc is None:
            raise TeamError(protocol.NOT_FOUND, f"{target.name} is not a member of {room!r}")
        await self.team.record(actor, room, "muted", target, {"until": until})
        await self.team.tell(room, target.id, "muted", room_view(access.room, doc))
        return until

    async def unmute(self, actor: User, room: str, name: object) -> None:
        access = await self.team.access(actor, room)
        target = await self.team.user_named(name)
        await self._require_over(actor, access, "mute", target)
        doc = await self.store.set_member(room, target.id, muted_until=0)
        if doc is None:
            raise TeamError(protocol.NOT_FOUND, f"{target.name} is not a member of {room!r}")
        await self.team.record(actor, room, "unmuted", target)
        await self.team.tell(room, target.id, "muted", room_view(access.room, doc))

    async def _require_over(self, actor: User, access: Access, action: str, target: User,
                            member_needed: bool = True) -> dict[str, Any] | None:
        """The actor may take `action` and the target is below the actor's role; returns
        the target's membership."""
        rank = await self.team.require(actor, access, action)
        if target.id == actor.id:
            raise forbidden(f"you cannot {action.replace('_', ' ')} yourself")
        member = await self.store.member(access.name, target.id)
        if member is not None and member.get("state") != "member":
            member = None
        if member is None and member_needed:
            raise TeamError(protocol.NOT_FOUND,
                            f"{target.name} is not a member of {access.name!r}")
        if member is not None and RANK[member["role"]] >= rank:
            raise forbidden(f"{target.name} is a {member['role']}: you may only act on "
                            "members below your own role", reason="role")
        return member



def _seconds(seconds: object) -> int:
    if (not isinstance(seconds, int) or isinstance(seconds, bool)
            or not 1 <= seconds <= MAX_SECONDS):
        raise TeamError(protocol.BAD_REQUEST,
                        f"seconds must be a whole number from 1 to {MAX_SECONDS}")
    return seconds
