"""`/ws`: the WebSocket transport. Parses frames at the edge and hands them to Chat."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from asyncio import Future
from typing import Any
from urllib.parse import urlsplit

import tornado.web
import tornado.websocket
from tornado.iostream import StreamClosedError

from server import protocol, wsio
from server.auth import Auth
from server.caps import ConnectionCaps, FrameBucket
from server.chat import Chat
from server.handlers.base import SECURITY_HEADERS, resolve_user, unauthorized_message
from server.inflight import Inflight
from server.limits import Limited, RateLimits
from server.metrics import Metrics
from server.model import User
from server.protocol import ProtocolError
from server.rooms import Batch, LocalRooms
from server.store import StoreError

log = logging.getLogger(__name__)

MAX_IN_FLIGHT = 32  # sends awaiting their ack, per connection
MAX_ROOMS = 100  # rooms one connection may have joined
MAX_STRIKES = 50  # rate-limited frames with none served between them: then closed (1008)
_ids = itertools.count(1)


class ChatSocket(tornado.websocket.WebSocketHandler):
    """One client connection. Unauthenticated upgrades are refused in prepare()."""

    # Our per-connection state lives in slots: Tornado's handler already sets ~21
    # attributes, and an instance dict past 30 keys stops sharing its keys with the
    # other instances (1.6 KB per socket instead of ~0.3 KB).
    __slots__ = ("_closing", "_counted", "_frames", "_in_flight", "_looked_up", "_shut_code",
                 "_shut_conn", "_strikes", "_typed", "allowed_origins", "auth", "auth_method",
                 "caps", "chat", "conn_id", "credential", "inflight", "limits", "max_body",
                 "max_pending_bytes", "metrics", "pings", "rooms", "session_id", "user")

    user: User

    def initialize(self, chat: Chat, rooms: LocalRooms, auth: Auth, limits: RateLimits,
                   caps: ConnectionCaps, inflight: Inflight, allowed_origins: tuple[str, ...],
                   max_body: int, max_pending_bytes: int, metrics: Metrics,
                   pings: wsio.PingWheel | None = None) -> None:
        self.chat = chat
        self.metrics = metrics
        self.rooms = rooms
        self.inflight = inflight
        self.auth = auth
        self.limits = limits
        self.caps = caps
        self.allowed_origins = allowed_origins
        self.max_body = max_body
        self.max_pending_bytes = max_pending_bytes
        self.pings = pings
        self._counted = False
        self._strikes = 0
        self.conn_id = b"%s.%d" % (chat.node_id.encode(), next(_ids))
        self.session_id: str | None = None
        self.credential: str | None = None
        self.auth_method = "none"
        self._frames = FrameBucket(limits.settings.frame_rate, limits.settings.frame_burst)
        # Created on first use: most sockets never type or send.
        self._typed: dict[str, float] | None = None  # room -> its last typing frame's time
        self._in_flight: set[asyncio.Task[None]] | None = None
        self._closing = False
        self._shut_conn: tornado.websocket.WebSocketProtocol | None = None
        self._shut_code: int | None = None  # the close code, when the server closed first

    def finish(self, chunk: str | bytes | dict[str, Any] | None = None) -> Future[None]:
        # A refusal's body gets the security headers; the 101 of an accepted upgrade
        # carries no document, and every header is formatted and written per socket.
        if self.get_status() != 101:
            for name, value in SECURITY_HEADERS.items():
                self.set_header(name, value)
        return super().finish(chunk)

    async def prepare(self) -> None:
        self._looked_up = time.monotonic()
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
                                   "message": unauthorized_message(caller)}})
            return
        if self.inflight.draining:
            # Checked after the lookup's await, so an upgrade under way when the drain
            # began is refused too: one accepted now would never be told to go, and
            # would hold the drain until its deadline.
            self.set_status(503)
            self.finish({"error": {"code": "unavailable", "message": "server shutting down"}})
            return
        over = self.caps.check(user.id, self.request.remote_ip or "")
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
        return wsio.drop_on_missed_pong(self, super().get_websocket_protocol(), self.pings)

    def get_compression_options(self) -> None:
        # permessage-deflate stays off: a small compressed frame could inflate past
        # our size limit before the limit is checked.
        return None

    def open(self, *args: str, **kwargs: str) -> None:
        # Chat frames are small and must leave at once. With Nagle's algorithm on (the
        # default), a frame written while an earlier one is unacknowledged waits for the
        # peer's delayed ACK: a sender got its own message 40 ms after its ack.
        self.set_nodelay(True)
        wsio.forget_upgrade(self)  # headers and cookies: ~3 KB per socket otherwise
        wsio.listen_between_frames(self)  # not out of the event loop and back per frame
        self.caps.opened(self.user.id, self.request.remote_ip or "")
        self._counted = True
        self.chat.connect(self)
        self.metrics.ws_connects.inc()
        if self.auth.revoked(self.credential, self.user.id, self._looked_up):
            # Revoked after the lookup, before this socket was among those a
            # revocation closes: close it now.
            self.shut(1008, "credential revoked")
            return
        self.send_raw(protocol.dump(protocol.Hello(self.user, self.chat.node_id)))

    def on_finish(self) -> None:
        # The upgrade's HTTP response: 101, or the refusal (prepare, origin, headers).
        status = self.get_status()
        if status != 101:
            self.metrics.ws_refused.labels(status=str(status)).inc()

    def send_raw(self, data: bytes) -> None:
        """Queue one already-serialized text frame; never waits for the peer."""
        self._write(wsio.text_frame(data))

    def send_batch(self, batch: Batch) -> None:
        """Queue a delivery's frames in one write, encoded once for all its sockets."""
        if batch.encoded is None:
            batch.encoded = wsio.text_frames(batch.frames)
        self._write(batch.encoded)

    def _write(self, wire: bytes) -> None:
        conn = self._writable()
        if conn is None:
            return
        try:
            wsio.send_wire(conn, wire)
        except (StreamClosedError, tornado.websocket.WebSocketClosedError):
            self._closing = True

    def _writable(self) -> tornado.websocket.WebSocketProtocol | None:
        """The connection, unless closing, or closed now for reading too slowly."""
        conn = self.ws_connection
        if conn is None or self._closing:
            return None
        if wsio.pending_bytes(conn) > self.max_pending_bytes:
            # A reader this far behind is not coming back soon: drop it rather than
            # buffer without bound. It resumes with `since` when it reconnects. Only
            # what is queued counts: any one frame (a page of history at most) goes.
            log.info("closing slow consumer %s (%d bytes unsent)", self.user.name,
                     wsio.pending_bytes(conn))
            self.metrics.slow_reader_closes.inc()
            self.shut(1008, "too slow: reconnect and resume with since")
            return None
        return conn

    def send_frame(self, frame: protocol.Outbound, ref: protocol.Ref = None) -> None:
        self.send_raw(protocol.dump(frame, ref))

    def shut(self, code: int, reason: str) -> None:
        if not self._closing:
            self._closing = True
            self._shut_code = code
            # Tornado forgets its protocol object on close(), while the close handshake
            # is still pending; abort() needs it then. Released in on_close.
            self._shut_conn = self.ws_connection
            self.close(code, reason)

    def abort(self) -> None:
        """Drop the connection without waiting for the close handshake (shutdown)."""
        self._closing = True
        conn = self.ws_connection or self._shut_conn
        if conn is not None:
            wsio.abort(conn)

    async def on_message(self, message: str | bytes) -> None:
        frame: protocol.Frame | None = None
        try:
            frame = protocol.parse(message, self.max_body)
            await self._dispatch(frame)
        except ProtocolError as e:
            self.send_error_frame(e if frame is not None else (self._charge(e.ref) or e), frame)

    def send_error_frame(self, e: ProtocolError, frame: protocol.Frame | None) -> None:
        """An error frame echoing the frame's ref and, for sends, its client_id."""
        client_id = frame.client_id if isinstance(frame, protocol.Change) else None
        ref = e.ref if e.ref is not None else (frame.ref if frame is not None else None)
        self.send_frame(protocol.Error(e.code, e.message, client_id, e.retry_after,
                                       e.details), ref)

    async def _dispatch(self, frame: protocol.Frame) -> None:
        if isinstance(frame, protocol.Change):
            started = time.perf_counter()
            in_flight = self._in_flight
            if in_flight is None:
                in_flight = self._in_flight = set()
            if len(in_flight) >= MAX_IN_FLIGHT:
                self.limits.refused("sends_in_flight")
                raise self._charge(frame.ref) or ProtocolError(
                    protocol.RATE_LIMITED, f"more than {MAX_IN_FLIGHT} sends awaiting their ack",
                    frame.ref)
            if not self.rooms.has(frame.room, self):
                raise self._charge(frame.ref) or ProtocolError(
                    protocol.FORBIDDEN, f"join {frame.room!r} before sending to it", frame.ref)
            try:
                await self.limits.message(self.user.id)
            except Limited as e:
                raise self._strike(e.message, e.retry_after, frame.ref) from None
            self._strikes = 0
            # A message clears its author's typing indicator for the others: the next
            # keystroke may say so again at once.
            if isinstance(frame, protocol.Send) and self._typed:
                self._typed.pop(frame.room, None)
            # Sends run concurrently so that many in flight share one store batch;
            # Chat.post queues them in arrival order before its first await.
            task = asyncio.ensure_future(self._send(frame, started))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
            return  # sends have their own limit: the frame bucket is for the rest
        elif isinstance(frame, protocol.Typing):
            # At most one per room every few seconds reaches the room; the rest are
            # dropped without a reply (a client repeats typing while the user types).
            now = time.monotonic()
            typed = self._typed
            if typed is None:
                typed = self._typed = {}
            if now - typed.get(frame.room, -1e9) < self.limits.settings.typing_every:
                return
            try:
                await self.chat.typing(self, frame.room)
            except ProtocolError as e:
                raise self._charge(frame.ref) or e from None
            typed[frame.room] = now
            return
        if (strike := self._charge(frame.ref)) is not None:
            raise strike
        if isinstance(frame, protocol.Join):
            joined = self.rooms.rooms_of(self)
            if frame.room not in joined and len(joined) >= MAX_ROOMS:
                raise ProtocolError(protocol.FORBIDDEN,
                                    f"a connection may join at most {MAX_ROOMS} rooms", frame.ref)
            await self.chat.join(self, frame.room, frame.since, frame.ref)
        elif isinstance(frame, protocol.Leave):
            await self.chat.leave(self, frame.room)
            if self._typed:
                self._typed.pop(frame.room, None)
            self.send_frame(protocol.Left(frame.room), frame.ref)
        elif isinstance(frame, protocol.History):
            page = await self.chat.history(self.user, frame.room, frame.before, frame.after,
                                           frame.limit)
            self.send_frame(page, frame.ref)
        elif isinstance(frame, protocol.Ping):
            self.send_frame(protocol.Pong(), frame.ref)
        elif isinstance(frame, protocol.Activity):
            # No reply: the user's presence in their rooms says it (`away`).
            await self.chat.activity(self, frame.idle)
        elif isinstance(frame, protocol.Read):
            # This socket gets the `read` frame as the reply; the user's others get it
            # without a ref.
            position = await self.chat.read(self, frame.room, frame.seq)
            self.send_frame(protocol.ReadPosition(frame.room, position), frame.ref)
        self._strikes = 0  # served: a refusal (raised above) never ends a run of strikes

    def _charge(self, ref: protocol.Ref) -> ProtocolError | None:
        """Take a frame token: None, or the strike to answer with when none is left. Every
        frame but a served send or typing takes one: a refusal's reply costs the same."""
        wait = self._frames.take()
        if not wait:
            return None
        self.limits.refused("frame_rate")
        return self._strike("too many frames; slow down", wait, ref)

    def _strike(self, message: str, retry_after: float, ref: protocol.Ref) -> ProtocolError:
        """A rate-limited frame; too many in a row close the connection (1008)."""
        self._strikes += 1
        if self._strikes > MAX_STRIKES:
            self.shut(1008, "rate limit exceeded")
        return ProtocolError(protocol.RATE_LIMITED, message, ref,
                             retry_after=round(retry_after, 3))

    async def _send(self, frame: protocol.Change, started: float) -> None:
        try:
            # The ack is written by Delivery, before the message reaches anyone.
            if isinstance(frame, protocol.Send):
                await self.chat.post(self, frame.room, frame.body, frame.client_id, frame.ref,
                                     frame.reply_to, frame.attachments)
            else:
                await self.chat.change(self, frame)
        except ProtocolError as e:
            self.send_error_frame(e, frame)
        else:
            self.metrics.send_ack.observe(time.perf_counter() - started)

    def on_close(self) -> None:
        self._closing = True
        self._shut_conn = None
        if self._counted:
            self._counted = False
            self.caps.closed(self.user.id, self.request.remote_ip or "")
            # Tornado's close_code is the peer's: the reply to our close, or its own.
            self.metrics.disconnected(self._shut_code or self.close_code)
        self.chat.disconnect(self)
        self.inflight.poke()  # a draining shutdown waits for connections to go

