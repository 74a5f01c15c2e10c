"""The only place that touches Tornado's WebSocket internals; everything else uses
Tornado's public API.

Seven things Tornado has no public API for, each worth the cost of the fence:
- `text_frame(s)` / `send_wire`: the fan-out writes pre-serialized frames straight to
  the socket, the frames of one delivery in one buffer made once for every socket of
  the room (public `write_message` costs a Task per frame, and `IOStream.write` a
  Future);
- `pending_bytes`: the slow-reader bound needs to know what is still queued;
- `DropOnMissedPong`: a peer that missed its pong is dropped at once instead of being
  kept in its rooms for the 5 s of Tornado's close handshake;
- `abort`: a drain drops the peers that have not answered its close frame after a short
  grace, instead of waiting out those same 5 s;
- `PingWheel`: one timer pings every connection, where Tornado runs a Task per
  connection (about 1.3 KB each, most of an idle socket's cost beyond Tornado's own),
  and writes each ping as `send_wire` writes frames (half of an idle process's
  CPU was Tornado's write path for pings);
- `forget_upgrade`: what only the upgrade needed (its request's headers and parsed
  cookies, the 101's response headers: ~3 KB) is dropped once the socket is open;
- `FrameStream`: the socket stays registered for reads between the parts of a frame,
  instead of leaving the event loop and coming back for every frame received, and a
  client's pongs are taken where they arrive, in the stream's read, instead of waking
  the frame reader's Task three reads deep for each.

Supported: Tornado 6.4 up to, not including, 7 (`SUPPORTED`; setup.cfg pins `<7`). They rely on
`WebSocketProtocol13.stream`, `._wire_bytes_out`, `._wire_bytes_in`, `._abort()`,
`.periodic_ping()`, `.start_pinging()`, `.write_ping()`, `._receive_frame()`,
`._received_pong` and `.params`, on `IOStream._write_buffer`, `.socket`, `.reading()`,
`._find_read_pos()`, `._read_buffer`, `._read_buffer_size` and `._read_max_bytes`, on
`HTTPServerRequest._cookies` and on `RequestHandler._headers`.
`tests/test_wsio.py` checks each of them and fails loudly when an upgrade moves one.
"""

from __future__ import annotations

import asyncio
import math
import struct
from typing import Any

import tornado.websocket
from tornado.httputil import HTTPHeaders
from tornado.iostream import IOStream, StreamClosedError

SUPPORTED = ((6, 4), (7, 0))  # Tornado versions [from, to) these internals were checked on

_HEADER_SHORT = struct.Struct("!BB").pack
_HEADER_MEDIUM = struct.Struct("!BBH").pack
_HEADER_LONG = struct.Struct("!BBQ").pack


def _text_header(n: int) -> bytes:
    """The header of an unmasked, uncompressed text frame of n bytes (RFC 6455)."""
    if n < 126:
        return _HEADER_SHORT(0x81, n)
    if n <= 0xFFFF:
        return _HEADER_MEDIUM(0x81, 126, n)
    return _HEADER_LONG(0x81, 127, n)


def text_frame(data: bytes) -> bytes:
    """One text frame, server side: what `send_wire` writes."""
    return _text_header(len(data)) + data


def text_frames(frames: list[bytes]) -> bytes:
    """Text frames one after the other in one buffer: what `send_wire` writes to each of
    a room's sockets."""
    return b"".join(part for data in frames for part in (_text_header(len(data)), data))


def send_wire(conn: tornado.websocket.WebSocketProtocol, wire: bytes) -> None:
    """Write whole frames made by `text_frame(s)`.

    When nothing is queued on a plain TCP stream they go to the socket at once, as
    IOStream would send them; only what the socket does not take (or a TLS stream, or
    an error, which IOStream then handles and reports) goes through IOStream, in order.
    Raises StreamClosedError / WebSocketClosedError like `write_message`.
    """
    stream: Any = conn.stream
    conn._wire_bytes_out += len(wire)  # type: ignore[attr-defined]
    if type(stream) in _PLAIN_TCP and not stream._write_buffer and not stream.closed():
        try:
            sent = stream.socket.send(wire)
        except OSError:
            sent = 0  # EAGAIN, or an error that IOStream's own write will meet and report
        if sent == len(wire):
            return
        wire = wire[sent:]
    stream.write(wire)


_PING = b"\x89\x00"  # FIN + ping, unmasked, no payload


def pending_bytes(conn: tornado.websocket.WebSocketProtocol) -> int:
    """Bytes handed to the connection but not yet taken by the socket.

    The stream's own max_write_buffer_size would raise from inside Tornado's ping
    writes, so the slow-reader bound is checked by the caller with this instead.
    """
    stream: Any = conn.stream
    buffer = stream._write_buffer
    return 0 if buffer is None else len(buffer)  # None once the stream has closed


def abort(conn: tornado.websocket.WebSocketProtocol) -> None:
    """Drop the connection now, without waiting for the peer's reply to a close frame.

    Tornado waits 5 s for that reply; a peer that never sends it (a frozen tab, a
    wedged bot, a vanished network) would hold a graceful shutdown that long. The
    handler's `on_close` runs as for any other closed connection.
    """
    conn._abort()


def forget_upgrade(handler: tornado.websocket.WebSocketHandler) -> None:
    """Drop what only the upgrade needed, kept by Tornado for the connection's life.

    The request's headers and the SimpleCookie parsed from them served prepare() and
    the handshake; the 101's response headers are sent. An open socket reads none of
    them again (Tornado refuses header changes after the upgrade), and
    `request.cookies` would only find none.
    """
    request = handler.request
    request.headers = HTTPHeaders()
    request.__dict__.pop("_cookies", None)
    handler._headers = HTTPHeaders()


class PingWheel:
    """Pings every connection once per interval from one timer: a wheel of slots.

    Tornado's own pinging is a Task per connection sleeping between pings. Here a
    connection sits in one of `SLOTS` sets; each tick pings one slot, so a connection is
    pinged every `interval` (its first ping one interval after it opened, as Tornado's),
    and one that has not answered `timeout` later is closed ("ping timed out", 1000) and
    dropped, as DropOnMissedPong does. The timer runs only while connections are held.
    """

    SLOTS = 20

    def __init__(self, interval: float, timeout: float) -> None:
        self.interval = interval
        # As Tornado: a timeout longer than the interval is the interval; 0 = none.
        self.timeout = min(timeout, interval) if timeout else 0.0
        self._tick_s = interval / self.SLOTS
        self._slots: list[set[DropOnMissedPong]] = [set() for _ in range(self.SLOTS)]
        self._slot_of: dict[DropOnMissedPong, int] = {}
        self._checks: dict[int, list[DropOnMissedPong]] = {}  # tick -> pinged, to check
        self._check_after = max(1, math.ceil(self.timeout / self._tick_s - 1e-9))
        self._tick = 0
        self._timer: asyncio.TimerHandle | None = None

    def __len__(self) -> int:
        return len(self._slot_of)

    def add(self, conn: DropOnMissedPong) -> None:
        # The slot just visited: the next visit is one whole interval away.
        slot = (self._tick - 1) % self.SLOTS
        self._slots[slot].add(conn)
        self._slot_of[conn] = slot
        if self._timer is None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self._tick_s, self._turn)

    def discard(self, conn: DropOnMissedPong) -> None:
        slot = self._slot_of.pop(conn, None)
        if slot is not None:
            self._slots[slot].discard(conn)
            if not self._slot_of:  # the last one: nothing left to ping or check
                self._checks.clear()
                self.close()

    def _turn(self) -> None:
        tick = self._tick
        self._tick = tick + 1
        for conn in self._checks.pop(tick, ()):
            if conn in self._slot_of and not conn._received_pong:
                conn.ping_missed()
        pinged = list(self._slots[tick % self.SLOTS])
        for conn in pinged:
            conn._received_pong = False
            try:
                send_wire(conn, _PING)  # a Future and a buffer round trip less per ping
            except StreamClosedError:
                conn._abort()  # its close() is on the way; it leaves the wheel now
        if pinged and self.timeout:
            self._checks.setdefault(tick + self._check_after, []).extend(pinged)
        if self._slot_of:
            self._timer = asyncio.get_running_loop().call_later(self._tick_s, self._turn)
        else:
            self._timer = None

    def close(self) -> None:
        """Stop the timer (the connections are closed by their owner)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class DropOnMissedPong(tornado.websocket.WebSocketProtocol13):
    """Tornado's protocol, except that a peer that missed its pong is dropped at once.

    Tornado sends the close frame and then waits 5 s for the peer's reply; a peer that
    does not answer pings will not answer that either, and meanwhile it stays in its
    rooms, online and counted against the caps.
    """

    __slots__ = ("wheel",)  # a slot: one more key would unshare the instance dict

    def __init__(self, handler: tornado.websocket.WebSocketHandler, mask_outgoing: bool,
                 params: Any, wheel: PingWheel | None = None) -> None:
        self.wheel = wheel  # pings this connection; None: Tornado's Task does
        super().__init__(handler, mask_outgoing, params)

    def start_pinging(self) -> None:
        if self.wheel is not None:
            if self.ping_interval > 0:
                self.wheel.add(self)
        else:
            super().start_pinging()

    def ping_missed(self) -> None:
        """The peer missed its pong: close as Tornado does, then drop it at once."""
        self.close(reason="ping timed out")
        self._abort()

    def close(self, code: int | None = None, reason: str | None = None) -> None:
        if self.wheel is not None:
            self.wheel.discard(self)
        super().close(code, reason)

    async def periodic_ping(self) -> None:
        await super().periodic_ping()  # returns only after a missed pong (close sent)
        self._abort()

    async def _receive_frame(self) -> None:
        stream = self.stream
        if type(stream) is FrameStream and type(self.handler).on_pong is _NO_ON_PONG:
            stream.pongs_for = self  # until this frame's header is read: see FrameStream
            try:
                await super()._receive_frame()
            finally:  # the read failed (the peer went): no cycle left to the collector
                stream.pongs_for = None
            return
        await super()._receive_frame()


def drop_on_missed_pong(handler: tornado.websocket.WebSocketHandler,
                        default: tornado.websocket.WebSocketProtocol | None,
                        wheel: PingWheel | None = None
                        ) -> tornado.websocket.WebSocketProtocol | None:
    """The protocol for `get_websocket_protocol()`: RFC 6455's, with DropOnMissedPong,
    pinged by `wheel` when one is given (else by Tornado's Task per connection)."""
    if isinstance(default, tornado.websocket.WebSocketProtocol13):
        params: Any = default.params
        return DropOnMissedPong(handler, False, params, wheel)
    return default


# What may wait in a stream's buffer while it keeps listening: any header remainder
# (mask, extended length: at most 12 bytes) and the payload of a typical chat frame.
_LISTEN_WHILE_BUFFERED = 4096


class FrameStream(IOStream):
    """The IOStream of an open WebSocket, listening for reads between a frame's parts.

    A client's frames are masked. Tornado's frame reader reads a frame's 2-byte header
    first; the mask (and a small frame's payload) stays in the buffer while that read's
    Future resolves. IOStream stops listening whenever a read completes with bytes left
    over and none pending, and the reader's next read, an instant later, finds them and
    then starts listening again: two epoll_ctl calls, an asyncio Handle and a selector
    key for every frame received. Every pong is such a frame: with 10,000 idle sockets
    that was 40 % of the process's CPU. Here listening goes on while at most
    `_LISTEN_WHILE_BUFFERED` bytes wait; past that IOStream's own rule applies (stop
    until they are read), so a client sending faster than its frames are handled still
    meets TCP's backpressure. While listening with no read pending, IOStream reads at
    most `_read_max_bytes` (the request's header limit, 64 KB) into the buffer.

    Pongs: every idle socket answers a ping per interval, and each answer woke the
    frame reader's Task for three reads (header, mask, empty payload), then a fourth
    read that found nothing: most of an idle process's CPU. While the reader waits for a
    frame's header (`pongs_for` is its connection), whole masked pongs at the head of
    the buffer are taken here as they arrive, as Tornado would take them (marked
    received, `_wire_bytes_in` counted), and the reader wakes only for other frames. Only
    for a handler without its own `on_pong`, which Tornado would call. (One attribute
    more fits the instance dict's shared keys; a second would unshare them: +1.3 KB.)
    """

    pongs_for: DropOnMissedPong | None = None

    def reading(self) -> bool:
        return super().reading() or 0 < self._read_buffer_size <= _LISTEN_WHILE_BUFFERED

    def _find_read_pos(self) -> int | None:
        conn = self.pongs_for
        if conn is not None:
            buf = self._read_buffer
            # FIN + pong, no extension bits; masked, payload under 126 bytes.
            while self._read_buffer_size >= 2 and buf[0] == 0x8A and 0x80 <= buf[1] < 0xFE:
                size = 6 + buf[1] - 0x80
                if self._read_buffer_size < size:
                    return None  # the rest of the pong is on its way
                del buf[:size]
                self._read_buffer_size -= size
                conn._wire_bytes_in += size
                conn._received_pong = True
            pos = super()._find_read_pos()
            if pos is not None:
                self.pongs_for = None  # the header is read: the rest is the reader's
            return pos
        return super()._find_read_pos()


def listen_between_frames(handler: tornado.websocket.WebSocketHandler) -> None:
    """Make the open socket's stream a `FrameStream` (plain TCP streams only)."""
    conn = handler.ws_connection
    stream: Any = conn.stream if conn is not None else None
    if type(stream) is IOStream and stream._read_max_bytes is not None:
        stream.__class__ = FrameStream


_NO_ON_PONG = tornado.websocket.WebSocketHandler.on_pong  # Tornado's, which does nothing


# The streams whose socket `send_wire` may write to directly: not TLS (SSLIOStream).
_PLAIN_TCP = (IOStream, FrameStream)
