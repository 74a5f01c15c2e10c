"""One upload under way, and the words of file operations: `FileError` (each code with
its HTTP status), a file's name as shown, the API's file object.

An `Upload` takes the bytes of one file as they arrive: each chunk is checked against
the size limit and the uploader's quota, fed to the type sniffer and written to GridFS;
`finish` records the file as stored, `abort` forgets it (or leaves it to the sweep).
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any

from server import protocol
from server.model import Attachment
from server.protocol import ProtocolError
from server.sniff import Sniffer
from server.store import StoreError
from server.store.files import STORED, UPLOADING, BlobWriter

if TYPE_CHECKING:
    from server.files import Files

log = logging.getLogger(__name__)

MAX_NAME = 255  # characters of a file name
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class FileError(ProtocolError):
    """A refused file operation; `code` is a documented error code, `status` its
    HTTP status."""

    STATUS = {protocol.BAD_REQUEST: 400, protocol.FORBIDDEN: 403, protocol.NOT_FOUND: 404,
              protocol.TOO_LARGE: 413, "quota_exceeded": 403, "range_not_satisfiable": 416,
              "image_too_large": 422, "bad_image": 422, protocol.UNAVAILABLE: 503}

    @property
    def status(self) -> int:
        return self.STATUS.get(self.code, 400)


def no_such_file(file_id: str) -> FileError:
    return FileError(protocol.NOT_FOUND, f"no file {file_id[:32]!r}")


def unavailable() -> FileError:
    return FileError(protocol.UNAVAILABLE, "the file store is unavailable, try again")


def clean_name(raw: str | None) -> str:
    """A file's name as shown: its last path segment, without control characters."""
    name = (raw or "").replace("\\", "/").rsplit("/", 1)[-1].strip()
    if not name or len(name) > MAX_NAME or _CONTROL.search(name) or name in (".", ".."):
        raise FileError(protocol.BAD_REQUEST, f"name must be a file name of 1 to {MAX_NAME} "
                        "characters without control characters")
    return name


def view(doc: dict[str, Any]) -> dict[str, Any]:
    """The API's file object: `{"id","name","size","type","url"}`."""
    return Attachment.from_doc(doc).as_dict()


class Upload:
    """One upload under way: bytes in, checked against the limits, into GridFS."""

    def __init__(self, files: Files, doc: dict[str, Any], writer: BlobWriter,
                 room_left: int) -> None:
        self.files = files
        self.doc = doc
        self.writer = writer
        self.received = 0
        self._room_left = room_left  # bytes this upload may take of the quota
        self._sniffer = Sniffer()
        self.done = False

    @property
    def id(self) -> str:
        return str(self.doc["_id"])

    async def write(self, data: bytes) -> None:
        self.received += len(data)
        if self.received > self.files.max_bytes:
            raise FileError(protocol.TOO_LARGE, f"a file may be at most {self.files.max_bytes}"
                            " bytes", limit=self.files.max_bytes)
        if self.received > self._room_left:
            raise FileError("quota_exceeded", "your files would take more than the "
                            f"{self.files.quota} bytes allowed: delete some first",
                            limit=self.files.quota)
        self._sniffer.feed(data)
        await self.writer.write(data)

    async def finish(self) -> dict[str, Any]:
        """The upload is complete: store its last chunk and record it."""
        try:
            await self.writer.close()
            doc = await self.files.store.update_file(self.id, {
                "state": STORED, "size": self.received, "type": self._sniffer.result(),
                "orphan_until": self.files.orphan_until(),
            }, state=UPLOADING)
        except StoreError as e:
            log.warning("storing upload %s failed: %s", self.id, e)
            await self.abort()
            raise unavailable() from None
        if doc is None:  # swept meanwhile: it took longer than the upload timeout
            await self.abort()
            raise unavailable()
        self.done = True
        return view(doc)

    async def abort(self) -> None:
        """Forget the upload: its chunks and its record (or leave them to the sweep)."""
        if self.done:
            return
        self.done = True
        try:
            await self.writer.abort()
            await self.files.store.delete_files([self.id])
        except StoreError as e:
            log.warning("dropping upload %s failed, the sweep will: %s", self.id, e)
