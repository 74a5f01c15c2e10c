"""The HTTP side of shared files: streamed uploads, downloads with ranges, previews.

Every rule lives in `server.files.Files`; these handlers move bytes and map refusals
to HTTP statuses. Downloads are served so that no file can act as a page of ours:
`nosniff`, a CSP that allows nothing and sandboxes, and `attachment` for everything
but the safe image types.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable
from typing import Any, TypeVar
from urllib.parse import quote

import tornado.web
from tornado.http1connection import HTTP1Connection
from tornado.iostream import StreamClosedError

from server import protocol
from server.auth import Auth
from server.files import Files
from server.handlers.base import SECURITY_HEADERS, ApiError, BaseHandler
from server.inflight import Inflight
from server.limits import Limited, RateLimits
from server.protocol import ProtocolError
from server.roles import TeamError
from server.sniff import SAFE_IMAGES
from server.store import StoreError
from server.uploads import FileError, Upload

T = TypeVar("T")

FILE_CSP = "default-src 'none'; sandbox"
FILE_CACHE = "private, max-age=86400"
_STATUS = {protocol.NOT_FOUND: 404, protocol.FORBIDDEN: 403, protocol.TOO_LARGE: 413,
           protocol.UNAVAILABLE: 503}
CHUNK_SLACK = 1024 * 1024
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
# Past any file's size; a position with more digits than this means "past the end"
# (int() refuses strings of over 4300 digits, and nothing needs to be that exact).
_FAR = 10**18


class FilesHandler(BaseHandler):
    """A handler acting through Files; its refusals become documented API errors."""

    def initialize(self, auth: Auth, inflight: Inflight, files: Files  # type: ignore[override]
                   ) -> None:
        super().initialize(auth, inflight)
        self.files = files

    async def act(self, action: Awaitable[T]) -> T:
        try:
            return await action
        except (FileError, TeamError) as e:
            raise ApiError(e.status, e.code, e.message, **e.details) from None
        except ProtocolError as e:
            raise ApiError(_STATUS.get(e.code, 400), e.code, e.message, **e.details) from None


@tornado.web.stream_request_body
class UploadHandler(FilesHandler):
    """POST /api/rooms/<room>/files?name=<file name>: the body is the file's bytes."""

    def initialize(self, auth: Auth, inflight: Inflight, files: Files,  # type: ignore[override]
                   limits: RateLimits) -> None:
        super().initialize(auth, inflight, files)
        self.limits = limits
        self.upload: Upload | None = None
        self.body_read = False
        self.refused = False

    async def prepare(self) -> None:
        connection = self.request.connection
        # Tornado's HTTP/1 connection: the only kind its HTTPServer makes.
        assert isinstance(connection, HTTP1Connection)
        # Tornado reads a streamed body only once prepare() is done, and none of it
        # after a refusal here (the answer is sent with `Connection: close`, and the
        # connection closed). The usual 64 KiB limit stays until the upload is admitted,
        # so a request that is no admitted upload gets no more of its body read than
        # any other request.
        await super().prepare()
        if self.request.method != "POST":
            return
        room = self.path_args[0]
        name = self.get_query_argument("name", None)
        try:
            await self.limits.costly("upload", self.user.id)
        except Limited as e:
            raise ApiError(429, "rate_limited", e.message, retry_after=e.retry_after) from None
        self.upload = await self.act(self.files.begin(self.user, room, name,
                                                      self._declared()))
        # The byte that passes the limit reaches data_received, which refuses the
        # upload with a 413. Tornado itself counts a chunked body by the sizes its
        # chunks announce, and cuts it off (400, connection closed) only past
        # CHUNK_SLACK more: any sane chunk size gets our answer.
        connection.set_max_body_size(self.files.max_bytes + CHUNK_SLACK)
        connection.set_body_timeout(self.files.upload_timeout)

    def _declared(self) -> int | None:
        raw = self.request.headers.get("Content-Length")
        if raw is None:
            return None
        try:
            return max(0, int(raw))
        except ValueError:
            return None  # Tornado refuses the request itself

    async def data_received(self, chunk: bytes) -> None:
        if self.upload is None or self.refused:
            return
        try:
            await self.upload.write(chunk)
        except (FileError, StoreError) as e:
            # Refused the moment the body passes a limit: the chunks stored so far go.
            self.refused = True
            await self.upload.abort()
            error = e if isinstance(e, FileError) else FileError(
                protocol.UNAVAILABLE, "the file store is unavailable, try again")
            api = ApiError(error.status, error.code, error.message, **error.details)
            self.send_error(api.status_code, exc_info=(ApiError, api, None))

    async def post(self, room: str) -> None:
        self.body_read = True
        assert self.upload is not None
        self.write_json(await self.act(self.upload.finish()), 201)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        if not self.body_read:
            # Tornado closes the connection once the answer is sent, without reading
            # the rest of the body.
            self.set_header("Connection", "close")
        super().write_error(status_code, **kwargs)

    def on_finish(self) -> None:
        declared = self._declared()
        connection = self.request.connection
        if (self.upload is None and not self.body_read and declared is not None
                and isinstance(connection, HTTP1Connection) and connection.stream.closed()):
            # Refused before admission, answered and closed: nothing more is read.
            # Tornado still checks the Content-Length against the 64 KiB limit, and
            # would log each refusal of a larger one as a malformed message.
            connection.set_max_body_size(declared)

    def on_connection_close(self) -> None:
        if self.upload is not None and not self.upload.done:
            self.files.abort_soon(self.upload)
        super().on_connection_close()


class FileHandler(FilesHandler):
    """GET /api/files/<id>: a file's bytes, whole or one range."""

    def set_default_headers(self) -> None:
        for name, value in SECURITY_HEADERS.items():
            self.set_header(name, value)
        self.set_header("Content-Security-Policy", FILE_CSP)
        self.set_header("Cache-Control", "no-store")

    async def prepare(self) -> None:
        # Bytes go out exactly as stored: compress_response would gzip a text file,
        # and its ranges and Content-Length would no longer match. Tornado has no
        # per-handler switch for it; its transforms list is the one.
        self._transforms = []
        await super().prepare()

    async def get(self, file_id: str) -> None:
        await self._serve(file_id, send_body=True)

    async def head(self, file_id: str) -> None:
        await self._serve(file_id, send_body=False)

    async def _serve(self, file_id: str, send_body: bool) -> None:
        doc, reader = await self.act(self.files.open(self.user, file_id))
        size = reader.length
        self.set_header("Content-Type", doc["type"] or "application/octet-stream")
        self.set_header("Content-Disposition",
                        disposition(doc["name"], doc["type"] in SAFE_IMAGES))
        self.set_header("Cache-Control", FILE_CACHE)
        self.set_header("Accept-Ranges", "bytes")
        etag = f'"{doc["_id"]}"'  # a file's bytes never change
        self.set_header("Etag", etag)
        if self.check_etag_header():
            self.set_status(304)
            self.finish()
            return
        start, end = 0, size - 1
        wanted = self.request.headers.get("Range")
        if wanted is not None and self.request.headers.get("If-Range", etag) == etag:
            span = parse_range(wanted, size)
            if span == "unsatisfiable":
                # Written here: send_error would drop Content-Range with the other headers.
                self.set_status(416)
                self.set_header("Content-Range", f"bytes */{size}")
                self.set_header("Cache-Control", "no-store")
                self.clear_header("Content-Disposition")
                self.set_header("Content-Type", "application/json; charset=UTF-8")
                self.finish(json.dumps({"error": {
                    "code": "range_not_satisfiable",
                    "message": f"the range is outside the file's {size} bytes",
                    "size": size}}))
                return
            if isinstance(span, tuple):
                start, end = span
                self.set_status(206)
                self.set_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.set_header("Content-Length", str(end - start + 1 if size else 0))
        if not send_body or size == 0:
            self.finish()
            return
        try:
            async for piece in reader.read_range(start, end):
                self.write(piece)
                await self.flush()
        except StreamClosedError:
            return  # the client went away
        self.finish()


class ThumbHandler(FilesHandler):
    """GET /api/files/<id>/thumb: a small preview of an image."""

    def set_default_headers(self) -> None:
        for name, value in SECURITY_HEADERS.items():
            self.set_header(name, value)
        self.set_header("Content-Security-Policy", FILE_CSP)
        self.set_header("Cache-Control", "no-store")

    async def get(self, file_id: str) -> None:
        data, kind = await self.act(self.files.thumbnail(self.user, file_id))
        self.set_header("Content-Type", kind)
        self.set_header("Content-Disposition", disposition("preview", True))
        self.set_header("Cache-Control", FILE_CACHE)
        self.finish(data)


def disposition(name: str, inline: bool) -> str:
    """Content-Disposition with the name both as plain ASCII and as RFC 5987 UTF-8."""
    fallback = re.sub(r"[^A-Za-z0-9._ -]", "_", name).strip() or "file"
    return (f"{'inline' if inline else 'attachment'}; filename=\"{fallback}\"; "
            f"filename*=UTF-8''{quote(name, safe='')}")


def parse_range(header: str, size: int) -> tuple[int, int] | str | None:
    """One byte range of a file of `size` bytes: (first, last), "unsatisfiable", or
    None to serve the whole file (several ranges, or a header this does not parse)."""
    match = _RANGE.match(header.strip())
    if match is None:
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:  # the last n bytes
        n = _position(last)
        if n == 0 or size == 0:
            return "unsatisfiable"
        return max(0, size - n), size - 1
    start = _position(first)
    end = _position(last) if last else _FAR
    if end < start:
        return None  # invalid: ignored
    if start >= size:
        return "unsatisfiable"
    return start, min(end, size - 1)


def _position(digits: str) -> int:
    """A byte position of a Range header, however many digits it has (at most _FAR)."""
    digits = digits.lstrip("0") or "0"
    return int(digits) if len(digits) < len(str(_FAR)) else _FAR
