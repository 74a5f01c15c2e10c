"""The only place that touches Tornado's WebSocket internals; everything else uses
Tornado's public API.

Four things Tornado has no public API for, each worth the cost of the fence:
- `send_text_frame`: the fan-out writes a pre-serialized frame straight to the socket
  (public `write_message` costs a Task per frame, and `IOStream.write` a Future);
- `pending_bytes`: the slow-reader bound needs to know what is still queued;
- `DropOnMissedPong`: a peer that missed its pong is dropped at once instead of being
  kept in its rooms for the 5 s of Tornado's close handshake;
- `abort`: a drain drops the peers that have not answered its close frame after a short
  grace, instead of waiting out those same 5 s.

Supported: Tornado 6.4 up to, not including, 7 (`SUPPORTED`; setup.cfg pins `<7`). They rely on
`WebSocketProtocol13.stream`, `._wire_bytes_out`, `._abort()`, `.periodic_ping()` and
`.params`, and on `IOStream._write_buffer` and `.socket`. `tests/test_wsio.py` checks
each of them and fails loudly when an upgrade moves one.
"""

from __future__ import annotations

import struct
from typing import Any

import tornado.websocket
from tornado.iostream import IOStream

SUPPORTED = ((6, 4), (7, 0))  # Tornado versions [from, to) these internals were checked on

_HEADER_SHORT = struct.Struct("!BB").pack
_HEADER_MEDIUM = struct.Struct("!BBH").pack
_HEADER_LONG = struct.Struct("!BBQ").pack


def send_text_frame(conn: tornado.websocket.WebSocketProtocol, data: bytes) -> None:
    """Write one unmasked, uncompressed text frame (the server side of RFC 6455).

    When nothing is queued on a plain TCP stream the frame goes to the socket at once,
    as IOStream would send it; only what the socket does not take (or a TLS stream, or
    an error, which IOStream then handles and reports) goes through IOStream. Raises
    StreamClosedError / WebSocketClosedError like `write_message`.
    """
    stream: Any = conn.stream
    n = len(data)
    if n < 126:
        frame = _HEADER_SHORT(0x81, n) + data
    elif n <= 0xFFFF:
        frame = _HEADER_MEDIUM(0x81, 126, n) + data
    else:
        frame = _HEADER_LONG(0x81, 127, n) + data
    conn._wire_bytes_out += len(frame)  # type: ignore[attr-defined]
    if type(stream) is IOStream and not stream._write_buffer and not stream.closed():
        try:
            sent = stream.socket.send(frame)
        except OSError:
            sent = 0  # EAGAIN, or an error that IOStream's own write will meet and report
        if sent == len(frame):
            return
        frame = frame[sent:]
    stream.write(frame)


def pending_bytes(conn: tornado.websocket.WebSocketProtocol) -> int:
    """Bytes handed to the connection but not yet taken by the socket.

    The stream's own max_write_buffer_size would raise from inside Tornado's ping
    writes, so the slow-reader bound is checked by the caller with this instead.
    """
    stream: Any = conn.stream
    return len(stream._write_buffer)


def abort(conn: tornado.websocket.WebSocketProtocol) -> None:
    """Drop the connection now, without waiting for the peer's reply to a close frame.

    Tornado waits 5 s for that reply; a peer that never sends it (a frozen tab, a
    wedged bot, a vanished network) would hold a graceful shutdown that long. The
    handler's `on_close` runs as for any other closed connection.
    """
    conn._abort()


class DropOnMissedPong(tornado.websocket.WebSocketProtocol13):
    """Tornado's protocol, except that a peer that missed its pong is dropped at once.

    Tornado sends the close frame and then waits 5 s for the peer's reply; a peer that
    does not answer pings will not answer that either, and meanwhile it stays in its
    rooms, online and counted against the caps.
    """

    async def periodic_ping(self) -> None:
        await super().periodic_ping()  # returns only after a missed pong (close sent)
        self._abort()


def drop_on_missed_pong(handler: tornado.websocket.WebSocketHandler,
                        default: tornado.websocket.WebSocketProtocol | None
                        ) -> tornado.websocket.WebSocketProtocol | None:
    """The protocol for `get_websocket_protocol()`: RFC 6455's, with DropOnMissedPong."""
    if isinstance(default, tornado.websocket.WebSocketProtocol13):
        params: Any = default.params
        return DropOnMissedPong(handler, False, params)
    return default
