"""The Tornado internals behind server/wsio.py: each must still be where it was.

If a Tornado upgrade moves one, these fail by name, before any chat test does.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
from typing import Any

import tornado
import tornado.ioloop
import tornado.websocket
from tornado.iostream import IOStream

from server import wsio
from tests.client import Client
from tests.conftest import close_node, open_node
from tests.test_abuse import RawPeer  # a client that answers nothing unless told to


def test_the_installed_tornado_is_a_supported_one():
    low, high = wsio.SUPPORTED
    assert low <= tornado.version_info[:2] < high, (
        f"Tornado {tornado.version} is outside {low}..{high}: check server/wsio.py")


def test_the_protocol_methods_overridden_and_called_still_exist():
    proto = tornado.websocket.WebSocketProtocol13
    assert inspect.iscoroutinefunction(proto.periodic_ping)
    assert inspect.iscoroutinefunction(proto._receive_frame)
    assert "self._read_bytes(2)" in inspect.getsource(proto._receive_frame)  # header first
    assert callable(IOStream._find_read_pos)
    assert callable(proto._abort)
    assert callable(proto.start_pinging) and callable(proto.write_ping)
    assert "_received_pong" in inspect.getsource(proto.__init__)
    assert "params" in inspect.signature(proto.__init__).parameters


async def _server_side(make_client, runtime) -> tuple[Client, object]:
    client = make_client()
    await client.register()
    ws = await client.ws()
    (handler,) = runtime.rooms.connections
    return ws, handler.ws_connection


async def test_a_live_connection_has_the_attributes_the_fence_uses(make_client, runtime):
    _, conn = await _server_side(make_client, runtime)
    handler: Any = conn.handler
    assert isinstance(conn, wsio.DropOnMissedPong)
    assert isinstance(conn.stream, IOStream) and conn.stream.socket is not None
    assert len(conn.stream._write_buffer) == 0
    assert isinstance(conn._wire_bytes_out, int) and isinstance(conn._wire_bytes_in, int)
    assert isinstance(conn.stream._read_buffer, bytearray)
    # What only the upgrade needed is forgotten once the socket is open.
    assert "_cookies" not in handler.request.__dict__
    assert not handler.request.headers and not handler._headers
    assert not handler.request.cookies


async def test_frames_received_leave_the_socket_in_the_event_loop(make_client, runtime):
    """A frame's header is read first and the rest waits in the buffer: the socket is
    not taken out of the event loop and put back for that (FrameStream)."""
    ws, conn = await _server_side(make_client, runtime)
    stream: Any = conn.stream
    assert isinstance(stream, wsio.FrameStream)
    assert isinstance(stream._read_buffer_size, int)
    assert isinstance(stream._read_max_bytes, int)
    # Its frames go to the socket directly, as a plain IOStream's do, not through
    # IOStream.write (which counts what it was given).
    written = stream._total_write_index
    wsio.send_wire(conn, wsio.text_frame(b'{"type":"pong","ref":"direct"}'))
    assert await ws.recv() == {"type": "pong", "ref": "direct"}
    assert stream._total_write_index == written
    selector_loop: Any = tornado.ioloop.IOLoop.current().selector_loop
    fd = stream.socket.fileno()
    removed: list[int] = []
    real = selector_loop.remove_reader

    def remove_reader(each: int) -> bool:
        removed.append(each)
        return real(each)

    selector_loop.remove_reader = remove_reader
    try:
        for _ in range(20):
            assert (await ws.call({"type": "ping"}))["type"] == "pong"
        assert fd not in removed
        # A frame larger than what the stream listens on for arrives whole all the same.
        await ws.join("general")
        body = "é" * 4000  # 8,000 bytes
        assert len(body.encode()) > wsio._LISTEN_WHILE_BUFFERED
        ack = await ws.call({"type": "send", "room": "general", "body": body,
                             "client_id": "c-large"})
        assert ack["type"] == "ack", ack
        message = await ws.expect("message")
        assert message["body"] == body
    finally:
        del selector_loop.remove_reader


async def test_pongs_are_taken_by_the_stream_and_other_frames_still_reach_the_reader(
        make_client, runtime):
    """An idle socket's pong is taken where it arrives (FrameStream), without waking the
    frame reader; whatever comes around it, split anywhere, is read as before."""
    client = make_client()
    await client.register()
    peer = await RawPeer.open(client)
    (handler,) = runtime.rooms.connections
    conn: Any = handler.ws_connection
    assert isinstance(conn.stream, wsio.FrameStream)
    handled: list[int] = []
    real = conn._handle_message

    def handle_message(opcode: int, data: bytes) -> Any:
        handled.append(opcode)
        return real(opcode, data)

    conn._handle_message = handle_message
    try:
        wire_in = conn._wire_bytes_in
        pongs = [RawPeer.encode(0xA, b""), RawPeer.encode(0xA, b"echo"),
                 RawPeer.encode(0xA, b"p" * 125)]
        ping = RawPeer.encode(0x1, b'{"type":"ping","ref":"after"}')
        conn._received_pong = False
        wire = b"".join(pongs) + ping + pongs[0]
        for i in range(0, len(wire), 3):  # in pieces that cut headers, masks and payloads
            await peer.send_bytes(wire[i:i + 3])
        assert await peer.recv_json() == {"type": "pong", "ref": "after"}
        deadline = asyncio.get_running_loop().time() + 2
        while conn._wire_bytes_in < wire_in + len(wire):
            assert asyncio.get_running_loop().time() < deadline, conn._wire_bytes_in - wire_in
            await asyncio.sleep(0.01)
        assert conn._wire_bytes_in == wire_in + len(wire)  # every byte counted, once
        assert conn._received_pong
        assert handled == [0x1]  # the reader saw the text frame alone
        # A ping from the client is still the reader's (Tornado answers it with a pong),
        # and so is a pong in a frame the stream does not take (unmasked: Tornado's call).
        await peer.write(0x9, b"hi")
        assert await peer.frame() == (0xA, b"hi")
        conn._received_pong = False
        await peer.send_bytes(b"\x8a\x00")
        await peer.write(0x1, b'{"type":"ping","ref":"unmasked"}')
        assert await peer.recv_json() == {"type": "pong", "ref": "unmasked"}
        assert conn._received_pong and handled == [0x1, 0x9, 0xA, 0x1]
    finally:
        del conn._handle_message
        peer.close()


async def test_a_frame_written_around_tornado_arrives_and_is_counted(make_client, runtime):
    ws, conn = await _server_side(make_client, runtime)
    before = conn._wire_bytes_out
    wsio.send_wire(conn, wsio.text_frame(b'{"type":"pong","ref":"direct"}'))
    assert await ws.recv() == {"type": "pong", "ref": "direct"}
    assert conn._wire_bytes_out == before + 2 + len(b'{"type":"pong","ref":"direct"}')


async def test_a_batch_of_frames_in_one_write_arrives_as_each_frame_in_order(
        make_client, runtime):
    ws, conn = await _server_side(make_client, runtime)
    # Frames of the three header sizes of RFC 6455: under 126 bytes, up to 65535, above.
    frames = [b'{"type":"pong","ref":"%d","pad":"%s"}' % (i, b"x" * size)
              for i, size in enumerate((10, 125, 126, 70_000, 0, 65_535))]
    before = conn._wire_bytes_out
    wire = wsio.text_frames(frames)
    wsio.send_wire(conn, wire)
    for i, size in enumerate((10, 125, 126, 70_000, 0, 65_535)):
        assert await ws.recv() == {"type": "pong", "ref": str(i), "pad": "x" * size}
    assert conn._wire_bytes_out == before + len(wire)
    headers = [2 if len(f) < 126 else 4 if len(f) <= 0xFFFF else 10 for f in frames]
    assert sorted(set(headers)) == [2, 4, 10]
    assert len(wire) == sum(len(f) for f in frames) + sum(headers)


async def test_pending_bytes_counts_what_the_socket_did_not_take(make_client, runtime):
    ws, conn = await _server_side(make_client, runtime)
    assert wsio.pending_bytes(conn) == 0
    # Written in one go, with no turn of the loop for the client to read: once the
    # kernel's buffers are full, the rest waits in Tornado's write buffer.
    frame = b'{"type":"pong","pad":"' + b"x" * 65536 + b'"}'
    written = 0
    while not wsio.pending_bytes(conn):
        assert written < 1000, "64 MB went out without ever queueing"
        wsio.send_wire(conn, wsio.text_frame(frame))
        written += 1
    assert 0 < wsio.pending_bytes(conn) <= len(frame) + 14
    for _ in range(written):  # all of them arrive, whole, once the client reads
        assert len((await ws.recv())["pad"]) == 65536
    assert wsio.pending_bytes(conn) == 0


async def test_a_frame_for_a_closed_stream_is_dropped_quietly(make_client, runtime):
    # A presence or message frame can be fanned out to a socket whose stream has just
    # closed (on_close not run yet): Tornado has dropped its write buffer by then.
    _, conn = await _server_side(make_client, runtime)
    (handler,) = runtime.rooms.connections
    conn.stream.close()
    assert wsio.pending_bytes(conn) == 0
    handler.send_raw(b'{"type":"pong"}')  # no exception: the socket is marked closing
    assert handler._closing


async def test_abort_drops_a_peer_that_never_answers_the_close(make_client, runtime):
    client = make_client()
    await client.register()
    peer = await RawPeer.open(client)
    (handler,) = runtime.rooms.connections
    handler.shut(1001, "server shutting down")
    assert (await peer.frame())[0] == 0x8  # the close frame; the peer stays silent
    assert runtime.rooms.open_connections == 1  # Tornado would wait 5 s for the reply
    handler.abort()
    loop = asyncio.get_running_loop()
    data = await asyncio.wait_for(loop.sock_recv(peer.sock, 1024), 1)
    assert data == b""  # the TCP connection is gone
    deadline = loop.time() + 1
    while runtime.rooms.open_connections and loop.time() < deadline:
        await runtime.inflight.changed(deadline - loop.time())  # on_close pokes it
    assert runtime.rooms.open_connections == 0
    peer.close()


async def test_one_timer_pings_every_socket_and_keeps_those_that_answer(config, services):
    interval = 0.4
    node = await open_node(dataclasses.replace(config, ws_ping_interval=interval,
                                               ws_ping_timeout=interval), services)
    peers: list[RawPeer] = []
    try:
        for _ in range(3):
            client = Client(node.base_url)
            await client.register()
            peers.append(await RawPeer.open(client))
        handlers = list(node.runtime.rooms.connections)
        assert len(handlers) == 3
        # No Task per connection: the wheel holds them all.
        assert all(h.ws_connection._ping_coroutine is None for h in handlers)
        (wheel,) = {h.ws_connection.wheel for h in handlers}
        assert len(wheel) == 3
        loop = asyncio.get_running_loop()
        opened = loop.time()
        for _ in range(3):  # each peer is pinged every interval, and answers
            for peer in peers:
                opcode, payload = await peer.frame(timeout=interval * 3)
                assert (opcode, payload) == (0x9, b"")
                await peer.write(0xA, payload)
        elapsed = loop.time() - opened
        assert interval * 2 <= elapsed <= interval * 3 + 1.0  # three pings, ~one interval apart
        assert len(node.runtime.rooms.connections) == 3
        assert len(wheel) == 3
        peers.pop().close()  # a peer gone leaves the wheel at once
        deadline = loop.time() + 2
        while len(wheel) != 2 and loop.time() < deadline:
            await node.runtime.inflight.changed(deadline - loop.time())
        assert len(wheel) == 2
    finally:
        for peer in peers:
            peer.close()
        await close_node(node)
    assert len(wheel) == 0 and wheel._timer is None  # no timer left behind
