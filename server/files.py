"""Shared files: uploads streamed into GridFS, attached to messages, read back by the
people who can read their room, previewed, and swept when nobody attached them.

Who may do what:
- upload to a room: a member who may speak there (not muted; the room not archived);
- read a file: its uploader until a message carries it, then whoever can read the
  room it was uploaded to. Everyone else gets the `not_found` of an id that does not
  exist (ids are 128 random bits besides);
- attach files to a message: their uploader, in the room they were uploaded to, each
  file to one message.

An upload is recorded (`uploading`, with the bytes it may take counted against the
quota) before its first byte is stored, so that uploads racing each other all see each
other; its bytes go into GridFS chunk by chunk as they arrive, and its record takes its
real size when it completes. An upload that announces its size (`Content-Length`) holds
that; one that does not (a chunked body) holds the most it may become, the per-file
limit or what is left of the quota, and is refused the moment it passes that. A file
attached to no message within `orphan_seconds` is swept; so is an upload that never
completed. A message that is deleted takes its files with it (store.apply_delete).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import secrets
from dataclasses import dataclass
from typing import Any

from server import protocol, tasks
from server.model import Attachment, Message, User
from server.previews import PreviewError, Previews
from server.roles import TeamError
from server.sniff import SAFE_IMAGES
from server.store import Store, StoreError, client_key
from server.store.files import (
    ATTACHED,
    DELETING,
    STORED,
    UPLOADING,
    BlobReader,
)
from server.team import Team
from server.thumbs import MAX_PIXELS
from server.uploads import FileError, Upload, clean_name, no_such_file, unavailable

log = logging.getLogger(__name__)

SWEEP_EVERY = 600.0  # seconds between sweeps (at most)
SWEEP_BATCH = 100
# How long a file attached to a send is kept without the message being known stored
# (it normally is within seconds; the sweep then looks for the message itself).
CLAIM_GRACE = 3600.0


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


@dataclass
class Claim:
    """Files attached to one send: by `key` (the send's client key) and `token` (this
    attempt, so that a failure gives back only what it took)."""

    ids: list[str]
    key: str
    token: str
    attachments: tuple[Attachment, ...]


class Files:
    """Uploads, downloads, previews, attachments and the sweep; see the module
    docstring."""

    def __init__(self, store: Store, team: Team, *, max_bytes: int, quota: int,
                 orphan_seconds: float, upload_timeout: float,
                 max_pixels: int = MAX_PIXELS) -> None:
        self.store = store
        self.team = team
        self.max_bytes = max_bytes
        self.quota = quota
        self.orphan_seconds = orphan_seconds
        self.upload_timeout = upload_timeout
        self.previews = Previews(store, unavailable, max_pixels)
        self._sweeper: asyncio.Task[None] | None = None
        self._aborts: set[asyncio.Task[None]] = set()

    # Lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        self.previews.start()
        self._sweeper = asyncio.create_task(self._sweep_loop(), name="file-sweep")

    async def close(self) -> None:
        await tasks.stop(self._sweeper)
        if self._aborts:
            await asyncio.wait(self._aborts, timeout=5)
        self.previews.close()

    # Uploads --------------------------------------------------------------------------

    async def begin(self, user: User, room: str, name: str | None,
                    declared: int | None) -> Upload:
        """Start an upload of `declared` bytes (None: not said) to a room; refuses
        before any byte is read what the limits already refuse."""
        clean = clean_name(name)
        access = await self.team.readable(user, room)
        if access.member is None:
            raise FileError(protocol.FORBIDDEN, f"join {room!r} before sharing files in it",
                            reason="not_member")
        if access.room.get("archived"):
            raise FileError(protocol.FORBIDDEN, f"{room!r} is archived: it is read-only",
                            reason="archived")
        if access.muted_until:
            raise FileError(protocol.FORBIDDEN, f"you are muted in {room!r}",
                            reason="muted", until=access.muted_until)
        if declared is not None and declared > self.max_bytes:
            raise FileError(protocol.TOO_LARGE, f"a file may be at most {self.max_bytes} "
                            "bytes", limit=self.max_bytes)
        now = _utcnow()
        file_id = secrets.token_urlsafe(16)
        # What this upload holds of the quota while it is under way: all it may take.
        held_here = self.max_bytes if declared is None else declared
        doc: dict[str, Any] = {"_id": file_id, "room": access.name, "uid": user.id,
               "user": user.as_dict(), "name": clean, "size": held_here,
               "type": "", "state": UPLOADING, "created_at": now,
               "orphan_until": now + dt.timedelta(seconds=self.upload_timeout + 60)}
        try:
            await self.store.insert_file(doc)
            # Counted after our own record is in: of uploads racing each other, the
            # later to count sees the earlier at no less than they will end up taking
            # (a hold only ever shrinks), so together they never pass the quota.
            others = await self.store.bytes_held(user.id) - held_here
        except StoreError:
            await self._drop(file_id)  # else its hold stays until the sweep
            raise unavailable() from None
        left = self.quota - others
        if left < (declared or 0):
            await self._drop(file_id)
            raise FileError("quota_exceeded", f"your files would take more than the "
                            f"{self.quota} bytes allowed: delete some first", limit=self.quota)
        if held_here > left:  # an unannounced size: the hold shrinks to what is left
            held_here = doc["size"] = left
            try:
                kept = await self.store.update_file(file_id, {"size": left}, state=UPLOADING)
            except StoreError:
                kept = None
            if kept is None:
                await self._drop(file_id)
                raise unavailable()
        try:
            writer = self.store.open_blob_upload(file_id, clean)
        except StoreError:
            await self._drop(file_id)
            raise unavailable() from None
        return Upload(self, doc, writer, held_here)

    def orphan_until(self) -> dt.datetime:
        return _utcnow() + dt.timedelta(seconds=self.orphan_seconds)

    def abort_soon(self, upload: Upload) -> None:
        """Abort an upload whose client went away (from a synchronous callback)."""
        task = asyncio.ensure_future(upload.abort())
        self._aborts.add(task)
        task.add_done_callback(self._aborts.discard)

    async def _drop(self, file_id: str) -> None:
        try:
            await self.store.delete_files([file_id])
        except StoreError as e:
            log.warning("dropping upload %s failed, the sweep will: %s", file_id, e)

    # Reading ----------------------------------------------------------------------------

    async def readable(self, user: User, file_id: str) -> dict[str, Any]:
        """A file's record if this user may read it; `not_found` exactly as for an id
        that does not exist otherwise (a ban from its room included)."""
        if not protocol.FILE_ID_RE.fullmatch(file_id):
            raise no_such_file(file_id)
        try:
            doc = await self.store.file(file_id)
        except StoreError:
            raise unavailable() from None
        if doc is None or doc["state"] not in (STORED, ATTACHED):
            raise no_such_file(file_id)
        if doc["state"] == STORED and doc["uid"] != user.id:
            raise no_such_file(file_id)
        try:
            await self.team.readable(user, doc["room"])
        except TeamError as e:
            if e.code == protocol.UNAVAILABLE:
                raise unavailable() from None
            raise no_such_file(file_id) from None
        return doc

    async def open(self, user: User, file_id: str) -> tuple[dict[str, Any], BlobReader]:
        doc = await self.readable(user, file_id)
        try:
            reader = await self.store.open_blob(file_id)
        except StoreError:
            raise unavailable() from None
        if reader is None:
            raise no_such_file(file_id)
        return doc, reader

    async def thumbnail(self, user: User, file_id: str) -> tuple[bytes, str]:
        """A preview of an image file, made on first request and kept: (bytes, type)."""
        doc = await self.readable(user, file_id)
        if doc.get("type") not in SAFE_IMAGES:
            raise FileError(protocol.NOT_FOUND, "only images (PNG, JPEG, GIF, WebP) have "
                            "previews")
        try:
            preview = await self.previews.of(file_id, doc)
        except PreviewError as e:
            raise FileError(e.code, e.message) from None
        if preview is None:
            raise no_such_file(file_id)
        return preview

    # Attachments --------------------------------------------------------------------------

    async def attach(self, user: User, room: str, ids: tuple[str, ...], client_id: str | None,
                     ref: protocol.Ref = None) -> Claim:
        """Attach the user's uploads to a send in `room`. A resend with the same
        client_id may name the files its first attempt attached."""
        key = client_key(room, user.id, client_id) if client_id else secrets.token_hex(8)
        try:
            docs = await self.store.files(list(ids))
        except StoreError:
            raise unavailable() from None
        fresh = []
        for file_id in ids:
            doc = docs.get(file_id)
            if doc is None or doc["uid"] != user.id or doc["room"] != room:
                raise FileError(protocol.NOT_FOUND, f"no file {file_id!r} of yours in "
                                f"{room!r}", ref)
            if doc["state"] == STORED:
                fresh.append(file_id)
            elif not (doc["state"] == ATTACHED and doc.get("claim") == key):
                why = ("still uploading" if doc["state"] == UPLOADING
                       else "attached to another message")
                raise FileError(protocol.BAD_REQUEST, f"file {file_id!r} is {why}", ref)
        token = secrets.token_hex(8)
        try:
            # Held for CLAIM_GRACE: the sweep spares it while the message is stored.
            taken = await self.store.claim_files(
                fresh, key, token, _utcnow() + dt.timedelta(seconds=CLAIM_GRACE)
            ) if fresh else 0
            if taken != len(fresh):
                await self.store.release_files(token, self.orphan_until())
                raise FileError(protocol.BAD_REQUEST, "a file was attached to another "
                                "message meanwhile", ref)
        except StoreError:
            raise unavailable() from None
        return Claim(list(ids), key, token,
                     tuple(Attachment.from_doc(docs[file_id]) for file_id in ids))

    async def release(self, claim: Claim) -> None:
        """The send failed before anything was stored: the files are free again."""
        try:
            await self.store.release_files(claim.token, self.orphan_until())
        except StoreError as e:  # the sweep checks for a holder before it deletes
            log.warning("releasing attached files failed: %s", e)

    async def settle(self, claim: Claim, message: Message, fresh: bool) -> None:
        """The message is stored. For a resend, the files its first attempt did not
        carry are given back."""
        held = [a.id for a in message.attachments]
        try:
            if not fresh:
                await self.store.release_files(claim.token, self.orphan_until(),
                                               [i for i in claim.ids if i not in held])
            if held:
                await self.store.settle_files(held, claim.key, message.id)
        except StoreError as e:  # the sweep finds the holder and settles them then
            log.warning("settling attached files failed: %s", e)

    # The sweep ----------------------------------------------------------------------------

    async def sweep(self, now: dt.datetime | None = None) -> int:
        """Remove the files no message holds whose time is up; returns how many."""
        now = now or _utcnow()
        removed = 0
        while True:
            due = await self.store.due_files(now, SWEEP_BATCH)
            doomed = []
            settled = 0
            for doc in due:
                if doc["state"] == ATTACHED:
                    holder = await self.store.holder_of(doc["_id"])
                    if holder is not None:  # stored, but never settled
                        await self.store.settle_files([doc["_id"]], doc.get("claim", ""),
                                                      holder)
                        settled += 1
                        continue
                # Only if it is still in the state it was judged by: a send may be
                # attaching it right now (and then its claim fails, or this does).
                if await self.store.update_file(doc["_id"], {"state": DELETING},
                                                state=doc["state"]) is not None:
                    doomed.append(doc["_id"])
            await self.store.delete_files(doomed)
            removed += len(doomed)
            if len(due) < SWEEP_BATCH or not (doomed or settled):
                return removed

    async def _sweep_loop(self) -> None:
        every = max(1.0, min(SWEEP_EVERY, self.orphan_seconds / 4))
        while True:
            await asyncio.sleep(every)
            try:
                removed = await self.sweep()
                if removed:
                    log.info("swept %d unattached file(s)", removed)
            except StoreError as e:
                log.warning("the file sweep failed: %s", e)
            except Exception:
                log.exception("the file sweep crashed; continuing")
