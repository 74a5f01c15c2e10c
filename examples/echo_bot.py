#!/usr/bin/env python3
"""Echo bot: answers messages that mention it, in the rooms named on its command line.

    CHAT_BOT_TOKEN=chat_... python examples/echo_bot.py --url ws://127.0.0.1:8888/ws room1 room2

The token comes only from the environment (CHAT_BOT_TOKEN): a command line is readable by
every user of the machine (`ps`, /proc/<pid>/cmdline), a process's environment only by
its own user.

Uses only the public protocol (docs/protocol.md): `Authorization: Bearer <token>`, `hello`
for its own name, `join`; after a drop it reconnects with exponential backoff and jitter
and resumes with `join` `since` (paging `history` `after` while `has_more`). Messages are
de-duplicated by seq, which may arrive out of order. A reply's `client_id` is derived from
the message it answers, so a resend is never stored twice; replies are paced under the
server's rate limits. It never answers bots (itself included), so bots cannot loop.

Exit codes: 0 after Ctrl-C or SIGTERM; 2 when the server rejects or revokes the token
(HTTP 401 on connect, or close code 1008 "credential revoked"), or when the command line
is wrong (no CHAT_BOT_TOKEN, say): retrying cannot help.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import re
import signal
import sys
from dataclasses import dataclass, field
from typing import Any

from tornado.httpclient import HTTPClientError, HTTPRequest
from tornado.websocket import WebSocketClientConnection, WebSocketClosedError, websocket_connect

log = logging.getLogger("echo_bot")

Frame = dict[str, Any]
MAX_BODY = 4000  # characters per message; longer is refused with `too_large`
MAX_IN_FLIGHT = 16  # unacknowledged sends per connection (the server refuses past 32)
RATE, BURST = 4.0, 10  # our sends per second (the server allows 5/s, bursts of 20, per user)
GRACE = 1.0  # seconds a hole in a room's seqs may last before we ask history to fill it


class TokenRejected(Exception):
    """The token is unknown or revoked: reconnecting cannot help."""


@dataclass
class Room:
    """What the bot knows about one room, kept across connections."""

    contiguous: int | None = None  # every seq up to here is handled; None before 1st join
    floor: int = 0  # seqs up to here predate the bot's start: never answered
    done: set[int] = field(default_factory=set)  # seqs handled lately, to drop duplicates
    top: int = 0  # the highest seq handled; above `contiguous` means a hole below it
    paging: bool = False  # a catch-up through `history after` is under way
    timer: asyncio.TimerHandle | None = None  # a pending look at a hole in the seqs

    def settle(self, upto: int) -> None:
        """Move the resume point to `upto` (if higher), then over handled seqs after it."""
        seq = max(self.contiguous or 0, upto)
        while seq + 1 in self.done:
            seq += 1
        self.contiguous = seq
        if len(self.done) > 2000:
            self.done = {s for s in self.done if s > seq - 1000}


class EchoBot:
    """One bot identity: a reconnect loop around one WebSocket connection at a time."""

    def __init__(self, url: str, token: str, rooms: list[str], max_backoff: float = 30.0) -> None:
        self.url, self.token, self.max_backoff = url, token, max_backoff
        self.rooms = {name: Room() for name in rooms}
        self.me: Frame = {}
        self.mention = re.compile("(?!)")  # matches nothing until `hello` names us
        self.outbox: dict[str, Frame] = {}  # client_id -> reply not yet acknowledged
        self.in_flight: set[str] = set()  # client_ids sent on this connection, unacked
        self.joined: set[str] = set()  # rooms joined on this connection
        self.tokens, self.stamp, self.resume_at = float(BURST), 0.0, 0.0
        self.pump_timer: asyncio.TimerHandle | None = None
        self.ws: WebSocketClientConnection | None = None
        self.stopping = asyncio.Event()

    def stop(self) -> None:
        """Close the connection with 1000 and stop reconnecting (Ctrl-C, SIGTERM)."""
        self.stopping.set()
        if self.ws is not None:
            self.ws.close(1000, "bot stopping")

    async def run(self) -> int:
        """Connect, serve, reconnect with backoff; returns the process exit code."""
        failures = 0
        while not self.stopping.is_set():
            code, wait = None, 0.0
            try:
                code = await self._session()
            except TokenRejected as e:
                log.error("token rejected (%s): get a new token; not reconnecting", e)
                return 2
            except HTTPClientError as e:  # 429 (too many connections), 503, ...
                log.warning("connection refused: HTTP %s", e.code)
                if e.response is not None:
                    wait = float(e.response.headers.get("Retry-After", "0") or 0)
            except (OSError, WebSocketClosedError, asyncio.TimeoutError) as e:
                log.warning("connection failed: %s", e or type(e).__name__)
            if self.stopping.is_set():
                break
            if code is not None:
                failures = 0  # it got as far as `hello`: back off from the start again
            cap = min(self.max_backoff, 2.0**failures)
            delay = random.uniform(0, 1) if code == 1001 else random.uniform(cap / 2, cap)
            failures = min(failures + 1, 10)
            log.info("reconnecting in %.1fs", max(delay, wait))
            try:
                await asyncio.wait_for(self.stopping.wait(), max(delay, wait))
            except asyncio.TimeoutError:
                pass
        log.info("stopped")
        return 0

    async def _session(self) -> int | None:
        """One connection, upgrade to close; returns its close code if `hello` came."""
        request = HTTPRequest(self.url, headers={"Authorization": f"Bearer {self.token}"},
                              connect_timeout=10, request_timeout=10)
        connecting = asyncio.ensure_future(websocket_connect(request, ping_interval=20,
                                                             ping_timeout=20))
        stopped = asyncio.ensure_future(self.stopping.wait())
        await asyncio.wait({connecting, stopped}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        if not connecting.done():
            connecting.cancel()
            return None
        try:
            ws = connecting.result()
        except HTTPClientError as e:
            if e.code == 401:
                raise TokenRejected("HTTP 401 on connect") from None
            raise
        self.ws, self.in_flight, self.joined = ws, set(), set()
        if self.stopping.is_set():  # a signal arrived while the upgrade completed
            ws.close(1000, "bot stopping")
        greeted = False
        try:
            while (raw := await ws.read_message()) is not None:
                frame = json.loads(raw)
                greeted = greeted or frame.get("type") == "hello"
                self._on_frame(frame)
        finally:
            self.ws = None
        code, reason = ws.close_code, ws.close_reason or ""
        # 1008 is also "too slow" and "rate limit exceeded": for those, reconnect.
        if code == 1008 and reason == "credential revoked":
            raise TokenRejected(f"closed with 1008 {reason!r}")
        log.info("disconnected: close code %s %s", code, reason)
        return code if greeted else None

    def _send(self, frame: Frame) -> None:
        """Write a frame on the current connection, if there is one."""
        if self.ws is None:
            return
        try:
            sent = self.ws.write_message(json.dumps(frame))
        except WebSocketClosedError:
            return  # closing: the next connection rejoins and resends what matters
        sent.add_done_callback(lambda f: f.cancelled() or f.exception())

    def _on_frame(self, frame: Frame) -> None:
        kind = frame.get("type")
        if kind == "hello":
            self.me = frame["user"]
            name = re.escape(self.me["name"])
            self.mention = re.compile(rf"(?<![\w.-])@?{name}(?![\w-])", re.IGNORECASE)
            log.info("connected to node %s as %s", frame.get("node"), self.me["name"])
            for room, state in self.rooms.items():
                join: Frame = {"type": "join", "room": room, "ref": f"join:{room}"}
                if state.contiguous is not None:
                    join["since"] = state.contiguous  # resume after what we have
                self._send(join)
        elif kind == "joined":
            self._on_joined(frame)
        elif kind == "history":
            self._on_page(frame["room"], frame["messages"], frame["has_more"])
        elif kind == "message":
            self._consume(frame)
        elif kind == "ack":
            client_id = frame.get("client_id") or ""
            self.outbox.pop(client_id, None)
            self.in_flight.discard(client_id)
            self._pump()
        elif kind == "error":
            self._on_error(frame)
        # presence, typing, pong, left and unknown types need nothing from an echo bot.

    def _on_joined(self, joined: Frame) -> None:
        room = joined["room"]
        state = self.rooms[room]
        self.joined.add(room)
        if state.contiguous is None:
            # First join ever: the backlog is old news; answer only what comes next.
            state.floor = max((m["seq"] for m in joined["messages"]), default=0)
            state.settle(state.floor)
            log.info("joined %s at seq %d", room, state.floor)
        else:
            log.info("rejoined %s after seq %d", room, state.contiguous)
            state.paging = True
            self._on_page(room, joined["messages"], joined["has_more"])
        self._pump()  # unacknowledged replies to this room go out again, same client_id

    def _on_page(self, room: str, messages: list[Frame], has_more: bool) -> None:
        """Consume a page of `seq > contiguous`; then ask for the next one, if any."""
        state = self.rooms[room]
        for message in messages:
            self._consume(message)
        # A page holds every stored seq up to its last (any other is a gap); an empty
        # one means nothing after `contiguous` is stored yet.
        state.settle(messages[-1]["seq"] if messages else state.top)
        if has_more and messages:
            self._send({"type": "history", "room": room, "after": messages[-1]["seq"],
                        "limit": 100, "ref": f"page:{room}"})
        else:
            state.paging = False
            self._watch(room)

    def _consume(self, message: Frame) -> None:
        """Handle each seq of a room once, and answer it if it mentions the bot."""
        room, seq, user = message["room"], message["seq"], message["user"]
        state = self.rooms.get(room)
        if state is None or state.contiguous is None or seq <= state.floor or seq in state.done:
            return
        state.done.add(seq)
        state.top = max(state.top, seq)
        state.settle(state.contiguous)
        self._watch(room)
        if user["bot"] or user["id"] == self.me.get("id") or not self.mention.search(
                message["body"]):
            return  # never answer bots: two echo bots would talk forever
        client_id = f"echo-{seq}"
        body = f"@{user['name']} you said: {message['body']}"[:MAX_BODY]
        self.outbox[client_id] = {"type": "send", "room": room, "body": body,
                                  "client_id": client_id, "ref": client_id}
        log.info("answering seq %d in %s", seq, room)
        self._pump()

    def _watch(self, room: str) -> None:
        """On a hole in the seqs, look again after GRACE (usually it fills by itself:
        messages stored by other server processes can arrive out of order)."""
        state = self.rooms[room]
        if state.top > (state.contiguous or 0) and not state.paging and state.timer is None:
            state.timer = asyncio.get_running_loop().call_later(GRACE, self._fill, room, self.ws)

    def _fill(self, room: str, ws: WebSocketClientConnection | None) -> None:
        """Still a hole: read history after it; seqs the pages lack are gaps (failed stores)."""
        state = self.rooms[room]
        state.timer = None
        if ws is self.ws and not state.paging and state.top > (state.contiguous or 0):
            state.paging = True
            self._send({"type": "history", "room": room, "after": state.contiguous,
                        "limit": 100, "ref": f"page:{room}"})

    def _pump(self, timer: bool = False) -> None:
        """Send queued replies: in order, at most MAX_IN_FLIGHT unacked, RATE per second."""
        if timer:
            self.pump_timer = None
        elif self.pump_timer is not None:
            return  # waiting for a send token or the server's retry_after
        loop = asyncio.get_running_loop()
        for client_id, frame in self.outbox.items():
            if self.ws is None or len(self.in_flight) >= MAX_IN_FLIGHT:
                return
            if client_id in self.in_flight or frame["room"] not in self.joined:
                continue
            now = loop.time()
            self.tokens = min(BURST, self.tokens + (now - self.stamp) * RATE)
            self.stamp = now
            wait = max(self.resume_at - now, (1 - self.tokens) / RATE)
            if wait > 0:
                self.pump_timer = loop.call_later(wait, self._pump, True)
                return
            self.tokens -= 1
            self.in_flight.add(client_id)
            self._send(frame)

    def _on_error(self, error: Frame) -> None:
        code, ref = error.get("code"), str(error.get("ref") or "")
        log.warning("server error %s (%s): %s", code, ref or "-", error.get("message"))
        if ref in self.outbox:  # one of our replies (its ref is its client_id)
            self.in_flight.discard(ref)
            if code in ("rate_limited", "unavailable"):  # not stored (yet): same frame later
                delay = float(error.get("retry_after") or 1.0)
                self.resume_at = asyncio.get_running_loop().time() + delay
                self._pump()
            else:
                del self.outbox[ref]  # bad_request, too_large, ...: resending cannot help
        elif ref.startswith(("join:", "page:")) and code == "unavailable" and self.ws:
            self.ws.close(4000, "resynchronising")  # reconnect, rejoin with since


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Answer messages that mention this bot.")
    parser.add_argument("rooms", nargs="+", help="rooms to join")
    parser.add_argument("--url", default="ws://127.0.0.1:8888/ws", help="the server's /ws URL")
    # Refused rather than unknown, so that the error says where the token goes instead.
    parser.add_argument("--token", help=argparse.SUPPRESS)
    parser.add_argument("--max-backoff", type=float, default=30.0,
                        help="longest wait between reconnect attempts, seconds")
    parser.epilog = "The API token is read from the environment variable CHAT_BOT_TOKEN."
    args = parser.parse_args(argv)
    if args.token is not None:
        parser.error("--token is not accepted: any user can read a command line; put the "
                     "token in the environment variable CHAT_BOT_TOKEN instead")
    token = os.environ.get("CHAT_BOT_TOKEN", "").strip()
    if not token:
        parser.error("a token is required in the environment variable CHAT_BOT_TOKEN")
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    async def serve() -> int:
        bot = EchoBot(args.url, token, args.rooms, args.max_backoff)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, bot.stop)
        return await bot.run()

    return asyncio.run(serve())


if __name__ == "__main__":
    sys.exit(main())
