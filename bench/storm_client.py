"""The reconnect storm's clients: one room each, resume with `since` on the other process.

A `Resumer` follows docs/protocol.md §13: it keeps every `seq` it received (messages and
events share the room's numbers), the highest contiguous one (from `last_seq` of its first
`joined`), and when its server closes the socket it waits a random 0..1 s
(what the protocol asks after close 1001), connects to the *other* process, sends
`join` with `since` = contiguous and pages `history after` while `has_more`. It is
"back" once that is done. Accounting is exact by `seq`: a `seq` at or below `since`
delivered again after the resume, or any `seq` delivered twice live, is a duplicate;
an acknowledged `seq` a client never got is lost.

Workers (one process per share of the clients) connect, report, wait for everyone to be
back, then check the received seqs against the senders' acknowledged ones.
"""

from __future__ import annotations

import asyncio
import json
import random
import resource
import time
from collections import Counter
from multiprocessing.connection import Connection
from typing import Any

from accounts import ws_url
from picows import WSCloseCode, WSFrame, WSListener, WSMsgType, WSTransport, ws_connect
from scenario import Seat

TEXT = WSMsgType.TEXT
CONNECT_TIMEOUT_S = 30.0
REFUSED_RETRY_S = 1.0


class Resumer(WSListener):
    """One client in one room, surviving the loss of its server process."""

    def __init__(self, seat: Seat, other_url: str, jitter_s: float, shared: Counter[str],
                 since_skew: int = 0):
        super().__init__()
        self.since_skew = since_skew  # harness self-check: resume past what we hold
        self.seat = seat
        self.other_url = other_url
        self.jitter_s = jitter_s
        self.counts = shared  # close codes, refusals, duplicates of this worker
        self.seen: set[int] = set()
        self.contiguous = 0
        self.since: int | None = None  # what the resume asked for
        self.ws: WSTransport | None = None
        self.ready: asyncio.Future[None] | None = None
        self.back_at = 0.0  # monotonic time the resume completed
        self.closed_at = 0.0
        self.stopping = False
        self.resuming = False

    def _listener(self) -> Resumer:
        return self

    async def connect(self, url: str, since: int | None = None) -> None:
        """Open, wait for hello, join (with `since` when resuming), page until complete."""
        self.since = since
        self.ready = asyncio.get_running_loop().create_future()
        ws, _ = await asyncio.wait_for(ws_connect(
            self._listener, ws_url(url),
            extra_headers={"Origin": url, "Cookie": self.seat.cookie},
            local_addr=(self.seat.source_ip, 0), max_redirects=0,
            websocket_handshake_timeout=CONNECT_TIMEOUT_S), CONNECT_TIMEOUT_S)
        self.ws = ws
        await asyncio.wait_for(asyncio.shield(self.ready), CONNECT_TIMEOUT_S)

    def _send(self, frame: dict[str, Any]) -> None:
        assert self.ws is not None
        self.ws.send(TEXT, json.dumps(frame))

    def _add(self, seq: int) -> None:
        if seq in self.seen:
            self.counts["duplicates"] += 1
            return
        self.seen.add(seq)
        while self.contiguous + 1 in self.seen:
            self.contiguous += 1

    def _page(self, frame: dict[str, Any]) -> None:
        """A `joined` or `history` page: add it; page on, or the client is complete."""
        last = self.since or 0
        if self.since is None:  # a first join: everything up to last_seq is history to us
            self.contiguous = max(self.contiguous, int(frame.get("last_seq", 0)))
        for message in frame.get("messages", ()):
            seq = message["seq"]
            if self.since is not None and seq <= self.since:
                self.counts["duplicates"] += 1  # the page went below what we asked for
                continue
            if seq in self.seen:
                self.counts["already_had"] += 1  # above contiguous: legitimately re-sent
            else:
                self._add(seq)
            last = max(last, seq)
        if self.since is not None and frame.get("has_more"):
            self._send({"type": "history", "room": self.seat.room, "after": last,
                        "limit": 100, "ref": "page"})
        elif self.ready is not None and not self.ready.done():
            self.ready.set_result(None)

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.ws = transport  # hello may come before ws_connect returns

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type is WSMsgType.CLOSE:
            self.counts[f"close_{frame.get_close_code().value}"] += 1
            transport.send_close(WSCloseCode.OK)
            transport.disconnect()
            return
        if frame.msg_type is not TEXT:
            return
        msg = json.loads(frame.get_payload_as_utf8_text())
        kind = msg.get("type")
        if kind in ("message", "event") and msg.get("room") == self.seat.room:
            self._add(msg["seq"])
        elif kind == "hello":
            join: dict[str, Any] = {"type": "join", "room": self.seat.room, "ref": "join"}
            if self.since is not None:
                join["since"] = self.since
            self._send(join)
        elif kind in ("joined", "history") and msg.get("room") == self.seat.room:
            self._page(msg)
        elif kind == "presence" and self.closed_at:
            # What the restart cost the rooms in presence frames (seen on B).
            self.counts[f"presence_{msg.get('status')}_after_restart"] += 1
        elif kind == "error":
            self.counts[f"error_{msg.get('code')}"] += 1
            if self.ready is not None and not self.ready.done():
                self.ready.set_exception(ConnectionError(f"{self.seat.name}: {msg}"))

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if self.ready is not None and not self.ready.done():
            self.ready.set_exception(ConnectionError(f"{self.seat.name}: closed"))
        if self.stopping or self.resuming:
            return
        self.resuming = True
        self.closed_at = time.monotonic()
        asyncio.get_running_loop().create_task(self.resume())

    async def resume(self) -> None:
        """Reconnect to the other process after the jitter; retry until it takes us."""
        await asyncio.sleep(random.uniform(0, self.jitter_s))
        while not self.stopping:
            try:
                await self.connect(self.other_url, since=self.contiguous + self.since_skew)
                self.back_at = time.monotonic()
                self.resuming = False
                return
            except Exception as exc:  # refused upgrade, timeout, error frame: try again
                self.counts["refused"] += 1
                self.counts["refused: " + str(exc)[:60]] += 1
                if self.ws is not None:
                    self.ws.disconnect()
                await asyncio.sleep(REFUSED_RETRY_S)

    def close(self) -> None:
        self.stopping = True
        if self.ws is not None:
            self.ws.send_close(WSCloseCode.OK)
            self.ws.disconnect()


def worker_main(conn: Connection, first_url: str, other_url: str, seats: list[Seat],
                jitter_s: float, concurrency: int, since_skew: int = 0) -> None:
    """Entry point of a worker process."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    try:
        asyncio.run(_work(conn, first_url, other_url, seats, jitter_s, concurrency,
                          since_skew))
    except Exception as exc:  # the process's top level: report instead of dying silently
        conn.send(("error", f"{type(exc).__name__}: {exc}"))


async def _work(conn: Connection, first_url: str, other_url: str, seats: list[Seat],
                jitter_s: float, concurrency: int, since_skew: int) -> None:
    counts: Counter[str] = Counter()
    clients = [Resumer(seat, other_url, jitter_s, counts, since_skew) for seat in seats]
    gate = asyncio.Semaphore(concurrency)

    async def first(client: Resumer) -> None:
        async with gate:
            await client.connect(first_url)

    await asyncio.gather(*(first(c) for c in clients))
    conn.send(("ready", len(clients)))
    loop = asyncio.get_running_loop()
    waiting = len(clients)
    while waiting:  # thousands of clients: poll rather than one future each
        await asyncio.sleep(0.05)
        waiting = sum(1 for c in clients if not c.back_at)
    conn.send(("back", [c.back_at for c in clients]))
    _, acked = await loop.run_in_executor(None, conn.recv)
    # Wait for the last live deliveries: until nothing is missing, or 10 s of no progress.
    last, quiet_since = -1, time.monotonic()
    while time.monotonic() - quiet_since < 10:
        missing = sum(len(acked.get(c.seat.room, set()) - c.seen) for c in clients)
        if not missing:
            break
        if missing != last:
            last, quiet_since = missing, time.monotonic()
        await asyncio.sleep(0.1)
    lost = sum(len(acked.get(c.seat.room, set()) - c.seen) for c in clients)
    for c in clients:
        c.close()
    conn.send(("result", {"lost": lost, "counts": dict(counts)}))
