"""Shared files over the public HTTP API and WebSocket protocol: uploads streamed into
GridFS, downloads with ranges, previews, attachments, the sweep and the limits."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import io
import json
import socket
import struct
import zlib
from typing import Any
from urllib.parse import quote, urlsplit

import pytest
from PIL import Image
from tornado.httpclient import AsyncHTTPClient, HTTPRequest

from tests.client import Client, messages_of
from tests.conftest import close_node, open_node
from tests.test_bots import owner_with_bot
from tests.test_changes import say, socket_in
from tests.test_team import api, make_room, person


def png(width: int = 40, height: int = 20, color: tuple[int, int, int] = (200, 30, 30)
        ) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), color).save(out, "PNG")
    return out.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))


def png_claiming(width: int, height: int) -> bytes:
    """A few bytes of PNG whose header claims the given size: a decompression bomb's
    front door."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr)
            + png_chunk(b"IDAT", zlib.compress(b"\x00" * 1024)) + png_chunk(b"IEND", b""))


async def upload(client: Client, room: str, data: bytes, name: str = "f.bin",
                 **kwargs: Any) -> tuple[int, Any]:
    status, body, _ = await client.request(
        "POST", f"/api/rooms/{room}/files?name={quote(name)}", raw=data, **kwargs)
    return status, body


async def uploaded(client: Client, room: str, data: bytes, name: str = "f.bin"
                   ) -> dict[str, Any]:
    status, body = await upload(client, room, data, name)
    assert status == 201, (status, body)
    return body


async def chunked_upload(client: Client, room: str, name: str, pieces: list[bytes],
                         hold: asyncio.Event | None = None) -> tuple[int, Any]:
    """An upload without a Content-Length (chunked), as a stream sends it: the first
    piece, then (once `hold` is set, if given) the others."""
    async def producer(write):
        for n, piece in enumerate(pieces):
            if n == 1 and hold is not None:
                await hold.wait()
            await write(piece)

    request = HTTPRequest(f"{client.base}/api/rooms/{room}/files?name={quote(name)}",
                          method="POST", body_producer=producer, request_timeout=20,
                          headers={"Cookie": client.cookie_header(),
                                   "X-XSRFToken": client.cookies["_xsrf"]})
    response = await AsyncHTTPClient().fetch(request, raise_error=False)
    return response.code, json.loads(response.body) if response.body else None


async def until(check, what: str) -> None:
    """Wait for a state of the server that no event announces (within 5 s)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    while not await check():
        assert loop.time() < deadline, what
        await asyncio.sleep(0.02)


async def download(client: Client, file_id: str, headers: dict[str, str] | None = None
                   ) -> tuple[int, Any, Any]:
    return await client.request("GET", f"/api/files/{file_id}", headers=headers)


async def member_of(client: Client, room: str) -> None:
    await api(client, "POST", f"/api/rooms/{room}/members", {"user": client.user["name"]}, 201)


async def file_docs(runtime, uid: str) -> list[dict[str, Any]]:
    return await runtime.store.db.files.find({"uid": uid}).to_list(None)


async def deleted(runtime, file_id: str) -> None:
    """Wait until a file's record is gone: a delete is acked before the message's
    document (and its files) are brought up to date."""
    for _ in range(100):
        if await runtime.store.file(file_id) is None:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"file {file_id} is still there")


# Upload and download ------------------------------------------------------------------

async def test_a_member_downloads_the_exact_bytes_another_member_uploaded(make_client):
    owner, other = await person(make_client), await person(make_client)
    room = await make_room(owner)
    await member_of(other, room)
    data = png()
    made = await uploaded(owner, room, data, "red dot.png")
    assert set(made) == {"id", "name", "size", "type", "url"}
    assert (made["name"], made["size"], made["type"]) == ("red dot.png", len(data), "image/png")
    assert made["url"] == f"/api/files/{made['id']}" and len(made["id"]) == 22

    # Unattached, it is its uploader's alone.
    assert (await download(other, made["id"]))[0] == 404
    ws = await socket_in(owner, room)
    await say(ws, room, "look", attachments=[made["id"]])

    status, _, response = await download(other, made["id"])
    assert status == 200 and response.body == data
    headers = response.headers
    assert headers["Content-Type"] == "image/png"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Content-Security-Policy"] == "default-src 'none'; sandbox"
    assert headers["Content-Disposition"].startswith("inline;")
    assert "filename*=UTF-8''red%20dot.png" in headers["Content-Disposition"]
    assert headers["Cache-Control"].startswith("private")
    assert headers["Content-Length"] == str(len(data))
    etag = headers["Etag"]
    status, _, again = await download(other, made["id"], {"If-None-Match": etag})
    assert status == 304 and not again.body


async def test_a_private_room_hides_its_files_like_ids_that_do_not_exist(make_client):
    owner, outsider = await person(make_client), await person(make_client)
    room = await make_room(owner, "private")
    made = await uploaded(owner, room, b"salaries\n", "pay.txt")
    ws = await socket_in(owner, room)
    await say(ws, room, "here", attachments=[made["id"]])

    status, body = await upload(outsider, room, b"x")
    assert (status, body["error"]["code"]) == (404, "not_found")
    missing_room = await upload(outsider, "no-such-room", b"x")
    assert missing_room[1]["error"]["message"].replace("no-such-room", room) == \
        body["error"]["message"]

    hidden = await download(outsider, made["id"])
    absent = await download(outsider, "A" * 22)
    assert hidden[0] == absent[0] == 404
    assert hidden[1]["error"]["code"] == absent[1]["error"]["code"] == "not_found"
    assert hidden[1]["error"]["message"].replace(made["id"], "A" * 22) == \
        absent[1]["error"]["message"]
    thumb = await outsider.request("GET", f"/api/files/{made['id']}/thumb")
    assert thumb[0] == 404
    # A visible room where one is no member: join it first.
    public = await make_room(owner)
    status, body = await upload(outsider, public, b"x")
    assert (status, body["error"]["code"], body["error"]["reason"]) == (
        403, "forbidden", "not_member")


async def test_a_content_type_comes_from_the_bytes_not_the_name(make_client):
    owner = await person(make_client)
    room = await make_room(owner)
    made = await uploaded(owner, room, "not an image, héllo\n".encode(), "evil.png")
    assert made["type"] == "text/plain; charset=utf-8"
    status, _, response = await download(owner, made["id"])
    assert status == 200
    assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert response.headers["Content-Disposition"].startswith("attachment;")
    assert (await owner.request("GET", f"/api/files/{made['id']}/thumb"))[0] == 404
    html = await uploaded(owner, room, b"\x00<svg onload=alert(1)>", "x.svg")
    assert html["type"] == "application/octet-stream"
    gif = await uploaded(owner, room, b"GIF89a" + b"\x00" * 20, "a.txt")
    assert gif["type"] == "image/gif"


async def test_range_requests_return_the_slice_or_416(make_client):
    owner = await person(make_client)
    room = await make_room(owner)
    data = bytes(range(256)) * 4000  # 1 024 000 bytes: several GridFS chunks
    made = await uploaded(owner, room, data)
    for header, start, end in (("bytes=0-9", 0, 9), ("bytes=300000-700000", 300000, 700000),
                               ("bytes=1023990-", 1023990, len(data) - 1),
                               ("bytes=-5", len(data) - 5, len(data) - 1),
                               ("bytes=1023999-99999999", 1023999, len(data) - 1)):
        status, _, response = await download(owner, made["id"], {"Range": header})
        assert status == 206, header
        assert response.body == data[start:end + 1], header
        assert response.headers["Content-Range"] == f"bytes {start}-{end}/{len(data)}"
    status, body, response = await download(owner, made["id"], {"Range": f"bytes={len(data)}-"})
    assert status == 416, (status, response.headers, response.body)
    assert body["error"]["code"] == "range_not_satisfiable"
    assert response.headers["Content-Range"] == f"bytes */{len(data)}"
    status, _, response = await owner.request("HEAD", f"/api/files/{made['id']}",
                                              headers={"Range": "bytes=10-19"})
    assert (status, response.body) == (206, b"")
    assert response.headers["Content-Length"] == "10"
    # Several ranges (or a range this server does not parse): the whole file.
    status, _, response = await download(owner, made["id"], {"Range": "bytes=0-1,5-6"})
    assert status == 200 and response.body == data


async def test_a_range_with_thousands_of_digits_is_answered_as_http_says(make_client):
    owner = await person(make_client)
    room = await make_room(owner)
    data = b"0123456789"
    made = await uploaded(owner, room, data)
    huge = "9" * 5000  # more digits than int() takes from a string
    status, body, response = await download(owner, made["id"], {"Range": f"bytes={huge}-"})
    assert (status, body["error"]["code"]) == (416, "range_not_satisfiable"), response.body
    assert response.headers["Content-Range"] == "bytes */10"
    for header in (f"bytes=0-{huge}", f"bytes=-{huge}", f"bytes=0-{'0' * 5000}9"):
        status, _, response = await download(owner, made["id"], {"Range": header})
        assert (status, response.body) == (206, data), (header[:20], response.body)
        assert response.headers["Content-Range"] == "bytes 0-9/10"
    status, _, response = await download(owner, made["id"], {"Range": f"bytes=3-{'0' * 5000}5"})
    assert (status, response.body) == (206, b"345")


# Limits ------------------------------------------------------------------------------

async def test_the_size_limit_holds_to_the_byte_and_a_refused_upload_leaves_nothing(
        config, services):
    node = await open_node(dataclasses.replace(config, max_file_bytes=1000), services)
    try:
        owner = Client(node.base_url)
        await owner.register()
        room = await make_room(owner)
        assert (await upload(owner, room, b"a" * 1000))[0] == 201
        status, body = await upload(owner, room, b"a" * 1001)
        assert (status, body["error"]["code"], body["error"]["limit"]) == (413, "too_large",
                                                                           1000)

        # Without a Content-Length (chunked), the stream is cut the moment it passes.
        async def producer(write):
            for _ in range(5):
                await write(b"b" * 300)

        request = HTTPRequest(f"{node.base_url}/api/rooms/{room}/files?name=big",
                              method="POST", body_producer=producer,
                              headers={"Cookie": owner.cookie_header(),
                                       "X-XSRFToken": owner.cookies["_xsrf"]})
        response = await AsyncHTTPClient().fetch(request, raise_error=False)
        assert response.code == 413, response.body
        # The abort (removing what was written) finishes after the answer: poll for it.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5
        while True:
            docs = await file_docs(node.runtime, owner.user["id"])
            chunks = await node.runtime.store.db["blobs.chunks"].count_documents(
                {"files_id": {"$nin": [d["_id"] for d in docs if d["size"] == 1000]}})
            if ([d["size"] for d in docs], chunks) == ([1000], 0):
                break
            assert loop.time() < deadline, (docs, chunks)
            await asyncio.sleep(0.02)
    finally:
        await close_node(node)


async def test_a_content_length_over_the_limit_is_refused_before_the_body_is_sent(
        make_client, base_url, config, runtime):
    owner = await person(make_client)
    room = await make_room(owner)
    parts = urlsplit(base_url)
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        await loop.sock_connect(sock, (parts.hostname, parts.port))
        head = (f"POST /api/rooms/{room}/files?name=huge.bin HTTP/1.1\r\n"
                f"Host: {parts.netloc}\r\nCookie: {owner.cookie_header()}\r\n"
                f"X-XSRFToken: {owner.cookies['_xsrf']}\r\n"
                f"Content-Length: {config.max_file_bytes + 1}\r\n\r\n")
        await loop.sock_sendall(sock, head.encode())
        reply = b""
        while b"\r\n\r\n" not in reply or b"}}" not in reply:
            piece = await asyncio.wait_for(loop.sock_recv(sock, 65536), 5)
            assert piece, reply
            reply += piece
    finally:
        sock.close()
    assert reply.startswith(b"HTTP/1.1 413 "), reply
    head, _, body = reply.partition(b"\r\n\r\n")
    assert b"Connection: close" in head
    assert json.loads(body)["error"]["code"] == "too_large"
    assert await file_docs(runtime, owner.user["id"]) == []


async def exchange(base_url: str, head: str) -> tuple[socket.socket, bytes]:
    """Send a request's head over a raw socket; the answer, read until the server
    closes the connection (within 5 s), and the socket."""
    parts = urlsplit(base_url)
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    await loop.sock_connect(sock, (parts.hostname, parts.port))
    await loop.sock_sendall(sock, head.encode())
    reply = b""
    try:
        while piece := await asyncio.wait_for(loop.sock_recv(sock, 65536), 5):
            reply += piece
    except ConnectionResetError:
        pass
    return sock, reply


async def test_a_body_is_read_only_for_an_admitted_upload(make_client, base_url):
    owner = await person(make_client)
    room = await make_room(owner)
    loop = asyncio.get_running_loop()
    # A caller who is not authenticated announces a gigabyte: answered at once and
    # cut off; the server reads none of the body.
    sock, reply = await exchange(
        base_url, f"POST /api/rooms/{room}/files?name=huge.bin HTTP/1.1\r\n"
        f"Host: {urlsplit(base_url).netloc}\r\nAuthorization: Bearer chat_not-a-token\r\n"
        "Content-Length: 1000000000\r\n\r\n")
    try:
        assert reply.startswith(b"HTTP/1.1 401 "), reply
        head, _, body = reply.partition(b"\r\n\r\n")
        assert b"Connection: close" in head
        assert json.loads(body)["error"]["code"] == "unauthorized"
        piece, sent = b"x" * 65536, 0
        with pytest.raises((BrokenPipeError, ConnectionResetError)):
            while sent < 64 * 2**20:  # far more than the sockets' buffers hold
                await asyncio.wait_for(loop.sock_sendall(sock, piece), 5)
                sent += len(piece)
    finally:
        sock.close()
    # Authenticated but no upload (any other method): the usual 64 KiB limit holds,
    # so a gigabyte's announcement is refused before a byte of it is read.
    sock, reply = await exchange(
        base_url, f"GET /api/rooms/{room}/files HTTP/1.1\r\n"
        f"Host: {urlsplit(base_url).netloc}\r\nCookie: {owner.cookie_header()}\r\n"
        "Content-Length: 1000000000\r\n\r\n")
    sock.close()
    assert reply.startswith(b"HTTP/1.1 400 "), reply


async def test_the_quota_counts_every_file_of_a_person(config, services):
    node = await open_node(dataclasses.replace(config, file_quota_bytes=2500), services)
    try:
        owner = Client(node.base_url)
        await owner.register()
        room = await make_room(owner)
        first = await uploaded(owner, room, b"a" * 1000)
        await uploaded(owner, room, b"a" * 1000)
        status, body = await upload(owner, room, b"a" * 1000)
        assert (status, body["error"]["code"], body["error"]["limit"]) == (
            403, "quota_exceeded", 2500)
        assert len(await file_docs(node.runtime, owner.user["id"])) == 2
        # A deleted message's files give their room back.
        ws = await socket_in(owner, room)
        ack = await say(ws, room, "", attachments=[first["id"]])
        reply = await ws.call({"type": "delete", "room": room, "seq": ack["seq"]})
        assert reply["type"] == "ack", reply
        await deleted(node.runtime, first["id"])
        assert (await upload(owner, room, b"a" * 1000))[0] == 201
    finally:
        await close_node(node)


async def test_uploads_without_a_content_length_hold_the_quota_while_under_way(
        config, services):
    node = await open_node(dataclasses.replace(config, max_file_bytes=1000,
                                               file_quota_bytes=1500), services)
    try:
        owner = Client(node.base_url)
        await owner.register()
        room = await make_room(owner)

        async def stored() -> list[int]:
            docs = await file_docs(node.runtime, owner.user["id"])
            assert all(d["state"] != "uploading" for d in docs), docs
            return sorted(d["size"] for d in docs)

        # A stream under way may still become a whole file (1000 bytes): others get
        # only what that leaves.
        hold = asyncio.Event()
        first = asyncio.ensure_future(chunked_upload(owner, room, "a", [b"a" * 100,
                                                                        b"a" * 200], hold))

        async def admitted() -> bool:
            docs = await file_docs(node.runtime, owner.user["id"])
            return any(d["name"] == "a" and d["state"] == "uploading" for d in docs)

        await until(admitted, "the first upload is not under way")
        status, body = await chunked_upload(owner, room, "b", [b"b" * 500, b"b" * 500])
        assert (status, body["error"]["code"], body["error"]["limit"]) == (
            403, "quota_exceeded", 1500)
        status, body = await upload(owner, room, b"c" * 1000, "c")  # with Content-Length
        assert (status, body["error"]["code"]) == (403, "quota_exceeded")
        assert (await chunked_upload(owner, room, "d", [b"d" * 250, b"d" * 250]))[0] == 201
        hold.set()
        status, made = await first
        assert (status, made["size"]) == (201, 300)  # its real size, once complete
        # 800 bytes kept: a stream of the 700 left fits, one byte more does not.
        assert (await chunked_upload(owner, room, "e", [b"e" * 700]))[0] == 201
        status, body = await chunked_upload(owner, room, "f", [b"f"])
        assert (status, body["error"]["code"]) == (403, "quota_exceeded")
        assert await stored() == [300, 500, 700]

        # Streams racing each other: together they never pass the quota.
        racer = Client(node.base_url)
        await racer.register()
        await member_of(racer, room)
        answers = await asyncio.gather(*(
            chunked_upload(racer, room, f"r{n}", [b"r" * 500, b"r" * 500])
            for n in range(4)))
        assert all(status == 201 or (status, body["error"]["code"]) == (
            403, "quota_exceeded") for status, body in answers), answers
        docs = await file_docs(node.runtime, racer.user["id"])
        assert sum(d["size"] for d in docs) <= 1500, docs
        assert [d["size"] for d in docs] == [1000] * sum(s == 201 for s, _ in answers)
    finally:
        await close_node(node)


async def test_a_cookie_upload_needs_the_xsrf_header_and_a_bearer_one_does_not(make_client):
    owner = await person(make_client)
    room = await make_room(owner)
    status, body = await upload(owner, room, b"hi", xsrf=False)
    assert (status, body["error"]["code"]) == (403, "xsrf")
    assert (await upload(owner, room, b"hi", headers={"X-XSRFToken": "nope"}))[0] == 403

    _, bot, token = await owner_with_bot(make_client, "file-bot")
    await api(owner, "POST", f"/api/rooms/{room}/members", {"user": bot["name"]}, 201)
    robot = make_client()
    robot.token = token
    made = await uploaded(robot, room, b"beep")
    assert made["type"] == "text/plain; charset=utf-8"
    status, _, response = await download(robot, made["id"])
    assert status == 200 and response.body == b"beep"
    anonymous = make_client()
    assert (await download(anonymous, made["id"]))[0] == 401


async def test_a_muted_member_and_an_archived_room_take_no_uploads(make_client):
    owner, other = await person(make_client), await person(make_client)
    room = await make_room(owner)
    await member_of(other, room)
    await api(owner, "POST", f"/api/rooms/{room}/mutes", {"user": other.user["name"],
                                                         "seconds": 60}, 201)
    status, body = await upload(other, room, b"x")
    assert (status, body["error"]["reason"]) == (403, "muted")
    await api(owner, "PATCH", f"/api/rooms/{room}", {"archived": True}, 200)
    status, body = await upload(owner, room, b"x")
    assert (status, body["error"]["reason"]) == (403, "archived")


# Previews ------------------------------------------------------------------------------

async def test_an_image_gets_a_small_preview_made_once(make_client, runtime):
    owner = await person(make_client)
    room = await make_room(owner)
    made = await uploaded(owner, room, png(1000, 500), "wide.png")
    status, _, response = await owner.request("GET", f"/api/files/{made['id']}/thumb")
    assert status == 200 and response.headers["Content-Type"] == "image/jpeg"
    assert response.headers["Content-Security-Policy"] == "default-src 'none'; sandbox"
    with Image.open(io.BytesIO(response.body)) as thumb:
        assert thumb.size == (320, 160)
    doc = await runtime.store.file(made["id"])
    assert doc["thumb"] == "image/jpeg"
    again = await owner.request("GET", f"/api/files/{made['id']}/thumb")
    assert again[2].body == response.body


async def test_an_image_bomb_gets_no_preview_and_the_server_stays_up(make_client):
    owner = await person(make_client)
    room = await make_room(owner)
    made = await uploaded(owner, room, png_claiming(50000, 50000), "bomb.png")
    assert made["type"] == "image/png" and made["size"] < 2000
    for _ in range(2):  # refused, and remembered as refused
        status, body, _ = await owner.request("GET", f"/api/files/{made['id']}/thumb")
        assert (status, body["error"]["code"]) == (422, "image_too_large")
    broken = await uploaded(owner, room, b"\x89PNG\r\n\x1a\n" + b"garbage" * 10, "bad.png")
    status, body, _ = await owner.request("GET", f"/api/files/{broken['id']}/thumb")
    assert (status, body["error"]["code"]) == (422, "bad_image")
    assert (await owner.request("GET", "/healthz"))[0] == 200
    small = await uploaded(owner, room, png(), "ok.png")
    assert (await owner.request("GET", f"/api/files/{small['id']}/thumb"))[0] == 200


async def test_an_image_pillow_fails_on_oddly_gets_bad_image_and_is_not_retried(
        make_client, runtime):
    owner = await person(make_client)
    room = await make_room(owner)
    good = png()
    # An empty iCCP chunk after the image data: Pillow fails on it with an IndexError.
    odd = good[:-12] + png_chunk(b"iCCP", b"") + good[-12:]
    made = await uploaded(owner, room, odd, "odd.png")
    assert made["type"] == "image/png"
    for _ in range(2):
        status, body, _ = await owner.request("GET", f"/api/files/{made['id']}/thumb")
        assert (status, body["error"]["code"]) == (422, "bad_image")
    assert (await runtime.store.file(made["id"]))["thumb_error"] == "bad_image"
    status, _, response = await download(owner, made["id"])
    assert (status, response.body) == (200, odd)


# Attachments ---------------------------------------------------------------------------

async def test_a_message_carries_its_attachments_live_and_in_history(make_client):
    owner, other = await person(make_client), await person(make_client)
    room = await make_room(owner)
    ws, watcher = await socket_in(owner, room), await socket_in(other, room)
    a = await uploaded(owner, room, png(), "a.png")
    b = await uploaded(owner, room, b"%PDF-1.7\n...", "b.pdf")
    ack = await say(ws, room, "", attachments=[a["id"], b["id"]], client_id="m-1")
    live = await watcher.expect("message", seq=ack["seq"])
    assert live["body"] == "" and live["attachments"] == [a, b]
    assert b["type"] == "application/pdf"
    page = messages_of((await api(other, "GET", f"/api/rooms/{room}/messages",
                                  expect=200))["messages"])
    assert page[-1]["attachments"] == [a, b]
    # A resend with the same client_id is the same message; a file goes to one message.
    again = await ws.call({"type": "send", "room": room, "body": "", "client_id": "m-1",
                           "attachments": [a["id"], b["id"]]})
    assert (again["type"], again["seq"]) == ("ack", ack["seq"])
    reply = await ws.call({"type": "send", "room": room, "body": "again",
                           "attachments": [a["id"]]})
    assert (reply["type"], reply["code"]) == ("error", "bad_request")
    # Someone else's file, an unknown one, too many, an empty body without files.
    theirs = await uploaded(other, room, b"mine")
    for frame, code in (({"attachments": [theirs["id"]]}, "not_found"),
                        ({"attachments": ["B" * 22]}, "not_found"),
                        ({"attachments": ["C" * 22] * 2}, "bad_request"),
                        ({"attachments": [f"{i:022d}" for i in range(11)]}, "bad_request"),
                        ({"attachments": "x"}, "bad_request"),
                        ({}, "bad_request")):
        reply = await ws.call({"type": "send", "room": room, "body": "", **frame})
        assert (reply["type"], reply["code"]) == ("error", code), frame
    # A file uploaded to another room cannot be attached here.
    elsewhere = await make_room(owner)
    stray = await uploaded(owner, elsewhere, b"x")
    reply = await ws.call({"type": "send", "room": room, "body": "x",
                           "attachments": [stray["id"]]})
    assert (reply["type"], reply["code"]) == ("error", "not_found")
    # A refused send gives its files back.
    fresh = await uploaded(owner, room, b"later")
    reply = await ws.call({"type": "send", "room": room, "body": "x", "reply_to": 99999,
                           "attachments": [fresh["id"]]})
    assert reply["type"] == "error"
    await say(ws, room, "now", attachments=[fresh["id"]])


async def test_an_unattached_upload_is_swept_and_an_attached_one_stays(make_client, runtime):
    owner = await person(make_client)
    room = await make_room(owner)
    loose = await uploaded(owner, room, b"forgotten")
    kept = await uploaded(owner, room, b"kept")
    ws = await socket_in(owner, room)
    await say(ws, room, "keep this", attachments=[kept["id"]])
    assert await runtime.files.sweep() == 0  # nothing is due yet
    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=2)
    assert await runtime.files.sweep(later) == 1
    assert (await download(owner, loose["id"]))[0] == 404
    assert await runtime.store.db["blobs.chunks"].count_documents(
        {"files_id": loose["id"]}) == 0
    status, _, response = await download(owner, kept["id"])
    assert status == 200 and response.body == b"kept"


async def test_deleting_a_message_deletes_its_files(make_client, runtime):
    owner, other = await person(make_client), await person(make_client)
    room = await make_room(owner)
    await member_of(other, room)
    ws = await socket_in(owner, room)
    made = await uploaded(owner, room, png(), "gone.png")
    ack = await say(ws, room, "soon gone", attachments=[made["id"]])
    assert (await download(other, made["id"]))[0] == 200
    assert (await other.request("GET", f"/api/files/{made['id']}/thumb"))[0] == 200
    reply = await ws.call({"type": "delete", "room": room, "seq": ack["seq"]})
    assert reply["type"] == "ack", reply
    await deleted(runtime, made["id"])
    for who in (owner, other):
        assert (await download(who, made["id"]))[0] == 404
        assert (await who.request("GET", f"/api/files/{made['id']}/thumb"))[0] == 404
    assert await runtime.store.db["blobs.chunks"].count_documents(
        {"files_id": {"$in": [made["id"], made["id"] + ".thumb"]}}) == 0
    page = messages_of((await api(other, "GET", f"/api/rooms/{room}/messages",
                                  expect=200))["messages"])
    assert page[-1]["deleted"] is True and "attachments" not in page[-1]


async def test_uploads_are_rate_limited_per_person(config, services):
    # Each upload holds a GridFS write and maybe a preview: a burst, then a rate.
    limits = dataclasses.replace(config.limits, upload_rate=0.01, upload_burst=2)
    node = await open_node(dataclasses.replace(config, limits=limits), services)
    try:
        alice, bob = Client(node.base_url), Client(node.base_url)
        await alice.register()
        await bob.register()
        room = await make_room(alice)
        for n in range(2):
            await uploaded(alice, room, b"x" * 10, f"{n}.txt")
        status, body = await upload(alice, room, b"y" * 10, "late.txt")
        assert status == 429, (status, body)
        assert body["error"]["code"] == "rate_limited" and body["error"]["retry_after"] > 0
        await uploaded(bob, await make_room(bob), b"z" * 10)  # per person
    finally:
        await close_node(node)
