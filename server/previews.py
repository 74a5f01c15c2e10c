"""Previews of image files: made on first request, off the event loop, and kept.

A preview is made by `thumbs.make_thumbnail` in a small thread pool (`THUMB_JOBS` at
once: each holds its whole image in memory), stored in GridFS beside its file, and
served from there afterwards; an image no preview can be made of is remembered as such
on the file's record, so it is not decoded again. Who may see a file is Files' to say:
`Previews` is asked only for files already found readable.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from server.store import Store, StoreError
from server.store.files import thumb_id
from server.thumbs import MAX_PIXELS, ThumbnailError, make_thumbnail

log = logging.getLogger(__name__)

THUMB_JOBS = 2  # previews made at once per process: each holds its image in memory


class PreviewError(Exception):
    """No preview: `code` is a documented error code (`image_too_large`, `bad_image`)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Previews:
    def __init__(self, store: Store, unavailable: Callable[[], Exception],
                 max_pixels: int = MAX_PIXELS) -> None:
        self.store = store
        self.unavailable = unavailable  # what a store failure is answered with
        self.max_pixels = max_pixels
        self._executor: ThreadPoolExecutor | None = None
        self._jobs = asyncio.Semaphore(THUMB_JOBS)

    def start(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=THUMB_JOBS,
                                            thread_name_prefix="thumbs")

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False)

    async def of(self, file_id: str, doc: dict[str, Any]) -> tuple[bytes, str] | None:
        """The preview of the image file `doc`: (bytes, type); None if its bytes are
        gone. Raises PreviewError when none can be made (now or before)."""
        if doc.get("thumb_error"):
            raise PreviewError(doc["thumb_error"], "no preview can be made of this image")
        if doc.get("thumb"):
            kept = await self._read_all(thumb_id(file_id))
            if kept is not None:
                return kept, str(doc["thumb"])
        async with self._jobs:
            data = await self._read_all(file_id)
            if data is None:
                return None
            loop = asyncio.get_running_loop()
            try:
                thumb, kind = await loop.run_in_executor(self._executor, make_thumbnail, data,
                                                         self.max_pixels)
            except ThumbnailError as e:
                await self._note(file_id, {"thumb_error": e.code})
                raise PreviewError(e.code, e.message) from None
        try:
            await self.store.delete_blob(thumb_id(file_id))  # a half-stored earlier try
            await self.store.put_blob(thumb_id(file_id), "thumb", thumb)
        except StoreError as e:  # served anyway; made again next time
            log.warning("storing the preview of %s failed: %s", file_id, e)
            return thumb, kind
        await self._note(file_id, {"thumb": kind})
        return thumb, kind

    async def _read_all(self, blob_id: str) -> bytes | None:
        try:
            reader = await self.store.open_blob(blob_id)
            if reader is None:
                return None
            if reader.length == 0:
                return b""
            return b"".join([piece async for piece in reader.read_range(0, reader.length - 1)])
        except StoreError:
            raise self.unavailable() from None

    async def _note(self, file_id: str, fields: dict[str, Any]) -> None:
        try:
            await self.store.update_file(file_id, fields)
        except StoreError as e:
            log.warning("recording the preview of %s failed: %s", file_id, e)
