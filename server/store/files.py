"""Shared files: their records (`files`) and their bytes (GridFS bucket `blobs`).

One document per upload in `files`, `_id` the file's public id (128 random bits,
URL-safe): who uploaded it to which room, its name, size, sniffed type and `state`:

- `uploading`: bytes are arriving; nobody may read it yet;
- `stored`: complete, attached to no message; only its uploader may read it;
- `attached`: claimed by a message (`claim`: the send's key); everyone who can read
  the room may read it.

`orphan_until` is when the sweep removes the file unless a message holds it by then;
it is unset once the message that holds it is known to be stored. The bytes live in
GridFS under the same id (`blobs.files` / `blobs.chunks`), a thumbnail under
"<id>.thumb". GridFS writes its `blobs.files` document only when an upload completes,
so chunks of an interrupted upload are found through the `files` record, never
through GridFS.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

from gridfs.errors import NoFile
from motor.motor_asyncio import AsyncIOMotorGridFSBucket, AsyncIOMotorGridIn, AsyncIOMotorGridOut
from pymongo import ReturnDocument

from server.store.core import Collections, StoreError, _errors

BUCKET = "blobs"
CHUNK_BYTES = 255 * 1024  # GridFS's default chunk size
UPLOADING, STORED, ATTACHED, DELETING = "uploading", "stored", "attached", "deleting"


def thumb_id(file_id: str) -> str:
    return f"{file_id}.thumb"


class BlobWriter:
    """An upload under way into GridFS: chunks are written as they fill."""

    def __init__(self, grid_in: AsyncIOMotorGridIn) -> None:
        self._in = grid_in

    async def write(self, data: bytes) -> None:
        with _errors():
            await self._in.write(data)

    async def close(self) -> None:
        with _errors():
            await self._in.close()

    async def abort(self) -> None:
        """Stop and delete the chunks written so far."""
        with _errors():
            await self._in.abort()


class BlobReader:
    """A stored blob, read in chunks from any offset."""

    def __init__(self, grid_out: AsyncIOMotorGridOut) -> None:
        self._out = grid_out

    @property
    def length(self) -> int:
        return int(self._out.length)

    async def read_range(self, start: int, end: int, piece: int = CHUNK_BYTES
                         ) -> AsyncIterator[bytes]:
        """Bytes start..end (inclusive), piece by piece: never the whole blob at once."""
        with _errors():
            self._out.seek(start)
        left = end - start + 1
        while left > 0:
            with _errors():
                data: bytes = await self._out.read(min(piece, left))
            if not data:
                raise StoreError("blob shorter than its length")
            left -= len(data)
            yield data


class FileRecords(Collections):
    """Records and bytes of shared files. Every method raises StoreError when MongoDB
    fails."""

    _blobs: AsyncIOMotorGridFSBucket | None = None  # made on first use

    @property
    def _bucket(self) -> AsyncIOMotorGridFSBucket:
        bucket = getattr(self, "_blobs", None)
        if bucket is None:
            bucket = self._blobs = AsyncIOMotorGridFSBucket(self.db, bucket_name=BUCKET)
        return bucket

    async def setup_files(self) -> None:
        with _errors():
            await self.db.files.create_index("uid")
            await self.db.files.create_index("orphan_until", sparse=True)
            # Finds the message holding a file (the sweep's last check), and a deleted
            # message's files.
            await self.db.messages.create_index("attachments.id", sparse=True)
            # GridFS's own index, made here since Motor makes it lazily only on reads.
            await self.db[f"{BUCKET}.chunks"].create_index([("files_id", 1), ("n", 1)],
                                                           unique=True)

    # Records --------------------------------------------------------------------------

    async def insert_file(self, doc: dict[str, Any]) -> None:
        with _errors():
            await self.db.files.insert_one(doc)

    async def file(self, file_id: str) -> dict[str, Any] | None:
        with _errors():
            return await self.db.files.find_one({"_id": file_id})

    async def files(self, ids: list[str]) -> dict[str, dict[str, Any]]:
        with _errors():
            docs = await self.db.files.find({"_id": {"$in": ids}}).to_list(None)
        return {d["_id"]: d for d in docs}

    async def update_file(self, file_id: str, fields: dict[str, Any],
                          unset: tuple[str, ...] = (), state: str | None = None
                          ) -> dict[str, Any] | None:
        """Set fields of a file (only in `state`, if given); the updated record."""
        query: dict[str, Any] = {"_id": file_id}
        if state is not None:
            query["state"] = state
        change: dict[str, Any] = {"$set": fields}
        if unset:
            change["$unset"] = {name: "" for name in unset}
        with _errors():
            return await self.db.files.find_one_and_update(
                query, change, return_document=ReturnDocument.AFTER)

    async def bytes_held(self, uid: str) -> int:
        """What a user's files take (an upload under way counts the bytes it holds)."""
        with _errors():
            docs = await self.db.files.find({"uid": uid, "state": {"$ne": DELETING}},
                                            {"size": 1}).to_list(None)
        return sum(int(d.get("size") or 0) for d in docs)

    async def claim_files(self, ids: list[str], claim: str, token: str,
                          until: dt.datetime) -> int:
        """Attach stored files to a send (kept until `until` unless settled); returns
        how many were attached."""
        with _errors():
            result = await self.db.files.update_many(
                {"_id": {"$in": ids}, "state": STORED},
                {"$set": {"state": ATTACHED, "claim": claim, "token": token,
                          "orphan_until": until}})
        return int(result.modified_count)

    async def release_files(self, token: str, until: dt.datetime,
                            ids: list[str] | None = None) -> None:
        """Give back files a send attached (all of them, or those in `ids`), to be
        swept at `until` unless attached again."""
        query: dict[str, Any] = {"token": token, "state": ATTACHED}
        if ids is not None:
            query["_id"] = {"$in": ids}
        with _errors():
            await self.db.files.update_many(query, {
                "$set": {"state": STORED, "orphan_until": until},
                "$unset": {"claim": "", "token": ""}})

    async def settle_files(self, ids: list[str], claim: str, message_id: str) -> None:
        """The message holding these files is stored: they stay as long as it does."""
        with _errors():
            await self.db.files.update_many(
                {"_id": {"$in": ids}, "state": ATTACHED, "claim": claim},
                {"$set": {"message": message_id}, "$unset": {"orphan_until": ""}})

    async def due_files(self, now: dt.datetime, limit: int = 100) -> list[dict[str, Any]]:
        """Files whose `orphan_until` has passed."""
        with _errors():
            return await self.db.files.find({"orphan_until": {"$lte": now}}).limit(
                limit).to_list(None)

    async def holder_of(self, file_id: str) -> str | None:
        """The id of the message that carries a file, if one does."""
        with _errors():
            doc = await self.db.messages.find_one({"attachments.id": file_id}, {"_id": 1})
        return None if doc is None else str(doc["_id"])

    async def delete_files(self, ids: list[str]) -> None:
        """Remove files and their bytes. Each is made unreadable first (`deleting`, due
        now), so a failure half-way leaves it to the sweep, never half-readable."""
        if not ids:
            return
        with _errors():
            await self.db.files.update_many({"_id": {"$in": ids}}, {"$set": {
                "state": DELETING, "orphan_until": dt.datetime.now(dt.timezone.utc)}})
            for file_id in ids:
                await self.delete_blob(file_id)
                await self.delete_blob(thumb_id(file_id))
            await self.db.files.delete_many({"_id": {"$in": ids}})

    # Bytes ------------------------------------------------------------------------------

    def open_blob_upload(self, blob_id: str, name: str) -> BlobWriter:
        with _errors():
            grid_in = self._bucket.open_upload_stream_with_id(blob_id, name,
                                                              chunk_size_bytes=CHUNK_BYTES)
        return BlobWriter(grid_in)

    async def put_blob(self, blob_id: str, name: str, data: bytes) -> None:
        writer = self.open_blob_upload(blob_id, name)
        await writer.write(data)
        await writer.close()

    async def open_blob(self, blob_id: str) -> BlobReader | None:
        """A stored blob, or None if it is not (completely) stored."""
        with _errors():
            try:
                return BlobReader(await self._bucket.open_download_stream(blob_id))
            except NoFile:
                return None

    async def delete_blob(self, blob_id: str) -> None:
        """Delete a blob's chunks and its GridFS document, if any."""
        with _errors():
            await self.db[f"{BUCKET}.chunks"].delete_many({"files_id": blob_id})
            await self.db[f"{BUCKET}.files"].delete_one({"_id": blob_id})


__all__ = ["ATTACHED", "DELETING", "STORED", "UPLOADING", "BlobReader", "BlobWriter",
           "FileRecords", "thumb_id"]
