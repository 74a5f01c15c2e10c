"""`/ws`: the WebSocket transport. Parses frames at the edge and hands them to Chat."""

from __future__ import annotations

import asyncio
import itertools
import logging
import struct
from typing import Any
from urllib.parse import urlsplit

import tornado.web
import tornado.websocket
from tornado.iostream import IOStream, StreamClosedError

from server import protocol
from server.auth import Auth
from server.chat import Chat
from server.handlers.base import CSP, resolve_user
from server.inflight import Inflight
from server.limits import ConnectionCaps, Limited, RateLimits
from server.protocol import ProtocolError
from server.store import StoreError

log = logging.getLogger(__name__)

MAX_IN_FLIGHT = 32  # sends awaiting their ack, per connection
MAX_ROOMS = 100  # rooms one connection may have joined
MAX_STRIKES = 50  # rate-limited sends in a row before the connection is closed (1008)
_ids = itertools.count(1)


class ChatSocket(tornado.websocket.WebSocketHandler):
    """One client connection. Unauthenticated upgrades are refused in prepare()."""

    def initialize(self, chat: Chat, auth: Auth, limits: RateLimits, caps: ConnectionCaps,
                   inflight: Inflight, allowed_origins: tuple[str, ...], max_body: int,
                   max_pending_bytes: int) -> None:
        self.chat = chat
        self.inflight = inflight
        self.auth = auth
        self.limits = limits
        self.caps = caps
        self.allowed_origins = allowed_origins
        self.max_body = max_body
        self.max_pending_bytes = max_pending_bytes
        self._counted = False
        self._strikes = 0
        self.conn_id = b"%s.%d" % (chat.node_id.encode(), next(_ids))
        self.session_id: str | None = None
        self.credential: str | None = None
        self.auth_method = "none"
        self.joined: set[str] = set()
        self._in_flight: set[asyncio.Task[None]] = set()
        self._closing = False

    def set_default_headers(self) -> None:
        self.set_header("Content-Security-Policy", CSP)
        self.set_header("X-Content-Type-Options", "nosniff")

    async def prepare(self) -> None:
        try:
            caller = await resolve_user(self, self.auth)
        except StoreError:
            self.set_status(503)
            self.finish({"error": {"code": "unavailable", "message": "try again"}})
            return
        user = caller.user
        if user is None:
            self.set_status(401)
            self.finish({"error": {"code": "unauthorized",
                                   "message": "log in or present a bearer token"}})
            return
        over = self.caps.check(user["id"], self.request.remote_ip or "")
        if over is not None:
            status, reason = over
            self.set_status(status)
            if status == 429:
                self.set_header("Retry-After", "10")
            self.finish({"error": {"code": "rate_limited" if status == 429 else "unavailable",
                                   "message": reason}})
            return
        self.current_user = user
        self.user = user
        self.session_id = caller.session_id
        self.credential = caller.credential
        self.auth_method = caller.how

    def check_origin(self, origin: str) -> bool:
        """Cross-origin cookie upgrades only from configured origins; bearer needs none.

        Same-origin upgrades never reach this method (Tornado allows them itself).
        """
        if self.auth_method == "bearer":
            return True
        parts = urlsplit(origin.lower())
        if not parts.scheme or not parts.netloc:
            return False  # "null", garbage
        return f"{parts.scheme}://{parts.netloc}" in self.allowed_origins

    def get_websocket_protocol(self) -> tornado.websocket.WebSocketProtocol | None:
        protocol = super().get_websocket_protocol()
        if isinstance(protocol, tornado.websocket.WebSocketProtocol13):
            return _DropOnMissedPong(self, False, protocol.params)
        return protocol

    def get_compression_options(self) -> None:
        # permessage-deflate stays off: a small compressed frame could inflate past
        # our size limit before the limit is checked.
        return None

    def open(self, *args: str, **kwargs: str) -> None:
        # Chat frames are small and must leave at once. With Nagle's algorithm on (the
        # default), a frame written while an earlier one is unacknowledged waits for the
        # peer's delayed ACK: a sender got its own message 40 ms after its ack.
        self.set_nodelay(True)
        self.caps.opened(self.user["id"], self.request.remote_ip or "")
        self._counted = True
        self.chat.connect(self)
        self.send_raw(protocol.dump({"type": "hello", "protocol": protocol.PROTOCOL_VERSION,
                                     "user": self.user, "node": self.chat.node_id}).encode())

    def send_raw(self, data: bytes) -> None:
        """Queue one already-serialized text frame; never waits for the peer."""
        conn = self.ws_connection
        if conn is None or self._closing:
            return
        if _pending_bytes(conn) + len(data) > self.max_pending_bytes:
            # A reader this far behind is not coming back soon: drop it rather than
            # buffer without bound. It resumes with `since` when it reconnects.
            log.info("closing slow consumer %s (%d bytes unsent)", self.user["name"],
                     _pending_bytes(conn))
            self.shut(1008, "too slow: reconnect and resume with since")
            return
        try:
            _send_text_frame(conn, data)
        except StreamClosedError:
            self._closing = True
        except tornado.websocket.WebSocketClosedError:
            self._closing = True

    def send_frame(self, frame: dict[str, Any]) -> None:
        self.send_raw(protocol.dump(frame).encode())

    def shut(self, code: int, reason: str) -> None:
        if not self._closing:
            self._closing = True
            self.close(code, reason)

    async def on_message(self, message: str | bytes) -> None:
        frame: protocol.Frame | None = None
        try:
            frame = protocol.parse(message, self.max_body)
            await self._dispatch(frame)
        except ProtocolError as e:
            self.send_error_frame(e, frame)

    def send_error_frame(self, e: ProtocolError, frame: protocol.Frame | None) -> None:
        """An error frame echoing the frame's ref and, for sends, its client_id."""
        extra: dict[str, Any] = {}
        if isinstance(frame, protocol.Send) and frame.client_id is not None:
            extra["client_id"] = frame.client_id
        if e.retry_after is not None:
            extra["retry_after"] = e.retry_after
        ref = e.ref if e.ref is not None else (frame.ref if frame is not None else None)
        self.send_frame(protocol.error_frame(e.code, e.message, ref, **extra))

    async def _dispatch(self, frame: protocol.Frame) -> None:
        if isinstance(frame, protocol.Send):
            if len(self._in_flight) >= MAX_IN_FLIGHT:
                raise ProtocolError(protocol.RATE_LIMITED,
                                    f"more than {MAX_IN_FLIGHT} sends awaiting their ack",
                                    frame.ref)
            if frame.room not in self.joined:
                raise ProtocolError(protocol.FORBIDDEN,
                                    f"join {frame.room!r} before sending to it", frame.ref)
            try:
                await self.limits.message(self.user["id"])
            except Limited as e:
                self._strikes += 1
                if self._strikes > MAX_STRIKES:
                    self.shut(1008, "rate limit exceeded")
                raise ProtocolError(protocol.RATE_LIMITED, e.message, frame.ref,
                                    retry_after=e.retry_after) from None
            self._strikes = 0
            # Sends run concurrently so that many in flight share one store batch;
            # Chat.post queues them in arrival order before its first await.
            task = asyncio.ensure_future(self._send(frame))
            self._in_flight.add(task)
            task.add_done_callback(self._in_flight.discard)
        elif isinstance(frame, protocol.Join):
            if frame.room not in self.joined and len(self.joined) >= MAX_ROOMS:
                raise ProtocolError(protocol.FORBIDDEN,
                                    f"a connection may join at most {MAX_ROOMS} rooms", frame.ref)
            try:
                self.joined.add(frame.room)
                await self.chat.join(self, frame.room, frame.since, frame.ref)
            except ProtocolError:
                self.joined.discard(frame.room)
                raise
        elif isinstance(frame, protocol.Leave):
            self.joined.discard(frame.room)
            await self.chat.leave(self, frame.room)
            self.send_frame(_with_ref({"type": "left", "room": frame.room}, frame.ref))
        elif isinstance(frame, protocol.History):
            page = await self.chat.history(frame.room, frame.before, frame.after, frame.limit)
            self.send_frame(_with_ref(page, frame.ref))
        elif isinstance(frame, protocol.Typing):
            await self.chat.typing(self, frame.room)
        elif isinstance(frame, protocol.Ping):
            self.send_frame(_with_ref({"type": "pong"}, frame.ref))

    async def _send(self, frame: protocol.Send) -> None:
        try:
            # Chat writes the ack itself, before the message is fanned out.
            await self.chat.post(self, frame.room, frame.body, frame.client_id, frame.ref)
        except ProtocolError as e:
            self.send_error_frame(e, frame)

    def on_close(self) -> None:
        self._closing = True
        if self._counted:
            self._counted = False
            self.caps.closed(self.user["id"], self.request.remote_ip or "")
        rooms, self.joined = list(self.joined), set()
        self.chat.spawn(self.chat.disconnect(self, rooms))
        self.inflight.poke()  # a draining shutdown waits for connections to go


class _DropOnMissedPong(tornado.websocket.WebSocketProtocol13):
    """Tornado's protocol, except that a peer that missed its pong is dropped at once.

    Tornado sends the close frame and then waits 5 s for the peer's reply; a peer that
    does not answer pings will not answer that either, and meanwhile it stays in its
    rooms, online and counted against the caps.
    """

    async def periodic_ping(self) -> None:
        await super().periodic_ping()  # returns only after a missed pong (close sent)
        self._abort()


def _send_text_frame(conn: Any, data: bytes) -> None:
    """Write one unmasked, uncompressed text frame (the server side of RFC 6455).

    The fan-out hot path. write_message() wraps every write in a new Task, and even
    the frame writer below it costs a Future, a done-callback and a scheduled call per
    frame in IOStream.write. When nothing is queued on a plain TCP stream the frame
    goes to the socket at once, as IOStream would send it; only what the socket does
    not take (or a TLS stream, or an error, which IOStream then handles and reports)
    goes through IOStream.
    """
    stream = conn.stream
    n = len(data)
    if n < 126:
        frame = _HEADER_SHORT(0x81, n) + data
    elif n <= 0xFFFF:
        frame = _HEADER_MEDIUM(0x81, 126, n) + data
    else:
        frame = _HEADER_LONG(0x81, 127, n) + data
    conn._wire_bytes_out += len(frame)
    if type(stream) is IOStream and not stream._write_buffer and not stream.closed():
        try:
            sent = stream.socket.send(frame)
        except OSError:
            sent = 0  # EAGAIN, or an error that IOStream's own write will meet and report
        if sent == len(frame):
            return
        frame = frame[sent:]
    stream.write(frame)


_HEADER_SHORT = struct.Struct("!BB").pack
_HEADER_MEDIUM = struct.Struct("!BBH").pack
_HEADER_LONG = struct.Struct("!BBQ").pack


def _pending_bytes(conn: Any) -> int:
    """Bytes written to the socket but not yet sent: the IOStream's write buffer.

    Tornado has no public accessor; the stream's max_write_buffer_size would raise
    from inside Tornado's own ping writes, so the bound is checked here instead.
    """
    return len(conn.stream._write_buffer)


def _with_ref(frame: dict[str, Any], ref: protocol.Ref) -> dict[str, Any]:
    if ref is not None:
        frame["ref"] = ref
    return frame
