"""One load-generator process's share of the fan-out scenario: its rooms' connections.

Every room lives wholly in one process, its senders too, so each latency is a send time
and a receipt time read from the same clock in the same process (`perf_counter_ns`,
the send time carried in the body as `t=<ns>;`).

The WebSocket client is picows (`bench/requirements.txt`): its Cython frame parser calls
`Member.on_ws_frame` once per frame with no coroutine, future or task in between, which
costs a fraction of Tornado's `websocket_connect` read path per received frame.
"""

from __future__ import annotations

import asyncio
import gc
import json
import resource
import time
from array import array
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from accounts import SetupError, ws_url
from picows import (
    WSCloseCode,
    WSFrame,
    WSHandshakeError,
    WSListener,
    WSMsgType,
    WSTransport,
    ws_connect,
)
from scenario import Scenario, Seat

TEXT = WSMsgType.TEXT
CONTINUATION = WSMsgType.CONTINUATION
CLOSE = WSMsgType.CLOSE

CONNECT_TIMEOUT_S = 30.0
DRAIN_CAP_S = 120.0

_DECODER: Any = json.JSONDecoder()  # its scan_once is the C scanner behind json.loads
_scan: Callable[[str, int], tuple[Any, int]] = _DECODER.scan_once


def _loads(text: str) -> Any:
    """`json.loads(text)`, without its Python-level layers when nothing surrounds the value."""
    try:
        value, end = _scan(text, 0)
    except StopIteration:  # not a value at 0 (blanks first, or not JSON): json.loads decides
        return json.loads(text)
    return value if end == len(text) else json.loads(text)


class Stats:
    """Counters shared by every connection of one process."""

    def __init__(self) -> None:
        self.latencies_ms = array("d")
        self.ack_latencies_ms = array("d")
        self.ack_sent_s = array("d")  # perf_counter send time (s) of each ack above
        self.deliveries = 0
        self.duplicates = 0
        self.foreign = 0
        self.malformed = 0
        self.disconnects = 0
        self.unexpected_acks = 0
        self.errors: Counter[str] = Counter()
        self.acked: dict[str, set[int]] = {}
        self.first_send_ns = 0
        self.last_delivery_ns = 0
        self.closing = False


class Member(WSListener):
    """One WebSocket connection in one room, and the sequence numbers it received.

    It is its own picows listener: `on_ws_frame` runs inside picows's parser, once per
    frame, so the common case (one unfragmented text frame) stays a few attribute reads,
    one UTF-8 decode and one `json.loads`.
    """

    def __init__(self, seat: Seat, stats: Stats) -> None:
        super().__init__()
        self.room = seat.room
        self.name = seat.name
        self.cookie = seat.cookie
        self.source_ip = seat.source_ip
        self.stats = stats
        self.ws: WSTransport | None = None
        self.seen: set[int] = set()
        self.sender: Sender | None = None
        self.fragments: list[bytes] | None = None  # a fragmented message being reassembled
        loop = asyncio.get_running_loop()
        self.hello: asyncio.Future[dict[str, Any]] = loop.create_future()
        self.joined: asyncio.Future[dict[str, Any]] = loop.create_future()

    def _listener(self) -> Member:
        return self

    async def connect(self, target: str) -> None:
        """Open the socket, wait for `hello`, join the room and wait for `joined`."""
        url = self.url_for(target)
        headers = {"Origin": target}
        if self.cookie:
            headers["Cookie"] = self.cookie
        try:
            ws, _ = await asyncio.wait_for(
                ws_connect(
                    self._listener,
                    url,
                    extra_headers=headers,
                    websocket_handshake_timeout=CONNECT_TIMEOUT_S,
                    max_redirects=0,
                    # The source address, like Tornado's `network_interface` before.
                    local_addr=(self.source_ip, 0) if self.source_ip else None,
                ),
                CONNECT_TIMEOUT_S,
            )
        except WSHandshakeError as exc:
            status = "no valid HTTP answer" if exc.response is None else int(exc.response.status)
            raise SetupError(f"/ws upgrade for {self.name}: HTTP {status}") from exc
        except asyncio.TimeoutError as exc:
            raise SetupError(
                f"/ws upgrade for {self.name}: no answer in {CONNECT_TIMEOUT_S:g} s"
            ) from exc
        self.ws = ws
        await asyncio.wait_for(asyncio.shield(self.hello), CONNECT_TIMEOUT_S)
        self.send_frame({"type": "join", "room": self.room, "ref": "join"})
        await asyncio.wait_for(asyncio.shield(self.joined), CONNECT_TIMEOUT_S)

    def url_for(self, target: str) -> str:
        """The WebSocket URL to open (the user name in the query where there is no cookie)."""
        return ws_url(target) + ("" if self.cookie else f"?name={self.name}")

    def send_frame(self, frame: dict[str, Any]) -> None:
        """Write one protocol frame."""
        assert self.ws is not None
        self.ws.send(TEXT, json.dumps(frame))

    def on_ws_connected(self, transport: WSTransport) -> None:
        """The upgrade succeeded: frames may arrive before `ws_connect` returns."""
        self.ws = transport

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        """picows hands over every frame but pings (it answers those itself)."""
        now = time.perf_counter_ns()
        if frame.fin and frame.msg_type is TEXT:
            self._on_text(frame.get_payload_as_utf8_text, now)
        else:
            self._on_other_frame(transport, frame, now)

    def _on_text(self, decode: Callable[[], str], now: int) -> None:
        try:
            text = decode()
        except UnicodeDecodeError:
            self.stats.malformed += 1
            return
        self.on_message(text, now)

    def _on_other_frame(self, transport: WSTransport, frame: WSFrame, now: int) -> None:
        """Close, pong, binary and fragmented frames: none of them is expected in bulk."""
        kind = frame.msg_type
        payload = b""
        if kind is CLOSE:
            # Finish the server's close handshake; on_ws_disconnected does the counting.
            transport.send_close(WSCloseCode.OK)
            transport.disconnect()
            return
        if kind is CONTINUATION:
            if self.fragments is None:  # a continuation of nothing: a server bug
                self.stats.malformed += 1
                return
            self.fragments.append(frame.get_payload_as_bytes())
            if not frame.fin:
                return
            payload, self.fragments = b"".join(self.fragments), None
        elif kind is TEXT or kind is WSMsgType.BINARY:
            if not frame.fin:  # the first fragment of a message
                if self.fragments is not None:  # the previous message never finished
                    self.stats.malformed += 1
                self.fragments = [frame.get_payload_as_bytes()]
                return
            payload = frame.get_payload_as_bytes()  # binary: read as JSON, like Tornado's client
        else:
            return  # PONG: we send no pings
        self._on_text(payload.decode, now)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        """The connection is gone, by either side's doing."""
        if not self.stats.closing:
            self.stats.disconnects += 1
        for fut in (self.hello, self.joined):
            if not fut.done():
                fut.set_exception(ConnectionError(f"{self.name}: closed during set-up"))

    def on_message(self, text: str, now: int) -> None:
        """Account for one message received at `now` (perf_counter_ns); stays cheap."""
        try:
            frame = _loads(text)
        except ValueError:
            self.stats.malformed += 1
            return
        self.on_frame(frame, now)

    def on_frame(self, frame: Any, now: int) -> None:
        """Account for one parsed frame."""
        stats = self.stats
        try:
            kind = frame["type"]
            if kind == "message":
                body = frame["body"]
                if frame["room"] != self.room or not body.startswith("t="):
                    stats.foreign += 1
                    return
                seq = frame["seq"]
                if seq in self.seen:
                    stats.duplicates += 1
                    return
                self.seen.add(seq)
                stats.deliveries += 1
                stats.last_delivery_ns = now
                stats.latencies_ms.append((now - int(body[2 : body.index(";")])) / 1e6)
                if self.sender is not None and self.sender.awaiting_echo:
                    self.sender.on_echo(frame.get("client_id"))
            elif kind == "ack":
                if self.sender is None:
                    stats.unexpected_acks += 1
                else:
                    self.sender.on_ack(frame, now)
            elif kind == "error":
                stats.errors[str(frame.get("code"))] += 1
                if self.sender is not None:
                    self.sender.on_error(frame)
                if frame.get("ref") == "join" and not self.joined.done():
                    self.joined.set_exception(SetupError(f"join {self.room}: {frame}"))
            elif kind == "hello" and not self.hello.done():
                self.hello.set_result(frame)
            elif kind == "joined" and frame.get("room") == self.room and not self.joined.done():
                self.joined.set_result(frame)
        except (ValueError, KeyError, TypeError, AttributeError):
            stats.malformed += 1

    def close(self) -> None:
        """Close the socket if it is open: a close frame, then hang up."""
        if self.ws is not None:
            self.ws.send_close(WSCloseCode.OK)
            self.ws.disconnect()


class Sender:
    """Sends one member's share of the schedule and matches acks to sends."""

    def __init__(self, member: Member, tag: str, scenario: Scenario) -> None:
        self.member = member
        self.tag = tag
        self.scenario = scenario
        self.sent_at: dict[str, int] = {}  # client_id -> perf_counter_ns at send
        self.pending: dict[str, int] = {}  # sends answered by neither ack nor error yet
        self.acked_ids: set[str] = set()
        self.sent = 0
        self.rejected = 0
        self.acked_after_error = 0
        self.error_after_ack = 0
        self.max_lag_s = 0.0
        # Closed loop: a send stays "in flight" until its message comes back to this
        # sender's own connection (it is a member of its room), not merely acked, so that
        # a server that acks before fanning out cannot pile up an unbounded backlog.
        self.gate = asyncio.Semaphore(scenario.window)
        self.awaiting_echo: set[str] = set()
        self.padding = "x" * max(0, scenario.body_bytes - 24)
        member.sender = self

    def _send(self) -> None:
        client_id = f"{self.tag}-{self.sent}"
        now = time.perf_counter_ns()
        stats = self.member.stats
        if not stats.first_send_ns:
            stats.first_send_ns = now
        self.pending[client_id] = self.sent_at[client_id] = now
        if self.scenario.rate == 0:
            self.awaiting_echo.add(client_id)
        frame = {
            "type": "send",
            "room": self.member.room,
            "body": f"t={now};{self.padding}",
            "client_id": client_id,
            "ref": client_id,
        }
        self.member.send_frame(frame)
        self.sent += 1

    async def run(self, start: float) -> None:
        """Send on schedule from loop time `start` (open loop), or closed loop at rate 0."""
        loop = asyncio.get_running_loop()
        scenario = self.scenario
        delay = start - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        if scenario.rate == 0:
            end = start + scenario.duration
            while loop.time() < end:
                await self.gate.acquire()
                self._send()
            return
        interval = 1.0 / scenario.rate
        for i in range(round(scenario.rate * scenario.duration)):
            delay = start + i * interval - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                self.max_lag_s = max(self.max_lag_s, -delay)
            self._send()

    def on_ack(self, frame: dict[str, Any], now: int) -> None:
        """Record the ack's seq as owed to every member of the room."""
        client_id = frame.get("client_id") or ""
        stats = self.member.stats
        sent_ns = self.sent_at.get(client_id)
        if sent_ns is None or client_id in self.acked_ids:
            stats.unexpected_acks += 1
            return
        if self.pending.pop(client_id, None) is None:
            # Answered with an error first, acknowledged later: the message exists.
            self.rejected -= 1
            self.acked_after_error += 1
        self.acked_ids.add(client_id)
        stats.ack_latencies_ms.append((now - sent_ns) / 1e6)
        stats.ack_sent_s.append(sent_ns / 1e9)
        stats.acked.setdefault(frame["room"], set()).add(frame["seq"])

    def on_error(self, frame: dict[str, Any]) -> None:
        """An error frame answering one of our sends: rejected, unless an ack follows."""
        ref = frame.get("ref") or ""
        if self.pending.pop(ref, None) is not None:
            self.rejected += 1
            self.on_echo(ref)  # no message will come back for it
        elif ref in self.acked_ids:
            self.error_after_ack += 1

    def on_echo(self, client_id: Any) -> None:
        """This sender's own message came back (or never will): one more may go."""
        if client_id in self.awaiting_echo:
            self.awaiting_echo.discard(client_id)
            self.gate.release()

    @property
    def acked(self) -> int:
        """Sends acknowledged so far."""
        return len(self.acked_ids)


async def drain(stats: Stats, senders: list[Sender], scenario: Scenario) -> None:
    """Wait until every owed delivery and ack is in, or nothing has arrived for a while.

    Gives up after `drain_timeout` s without progress (or DRAIN_CAP_S in all): a
    message still missing then counts as lost.
    """
    loop = asyncio.get_running_loop()
    cap = loop.time() + DRAIN_CAP_S
    last_progress, seen = loop.time(), (-1, -1)
    while loop.time() < cap:
        owed = sum(len(seqs) for seqs in stats.acked.values()) * scenario.members
        pending = sum(len(s.pending) for s in senders)
        if not pending and stats.deliveries >= owed:
            return
        if (stats.deliveries, pending) != seen:
            seen, last_progress = (stats.deliveries, pending), loop.time()
        elif loop.time() - last_progress > scenario.drain_timeout:
            return
        await asyncio.sleep(0.02)


def member_class(protocol: str) -> type[Member]:
    """The client class speaking `protocol` ("chat": ours and the baseline; "socketio")."""
    if protocol == "socketio":
        from eio_client import EioMember

        return EioMember
    return Member


def cpu_seconds() -> float:
    """User + system CPU seconds of this process."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def run_slice(
    target: str,
    scenario: Scenario,
    seats: list[Seat],
    ready: Callable[[float], Awaitable[float]],
) -> dict[str, Any]:
    """Connect `seats`, report ready, send from the agreed start and count what arrives.

    `ready(connect_s)` returns the start time on the `time.monotonic()` clock, shared by
    every process on the machine. Returns this process's raw counts and samples.
    """
    stats = Stats()
    members = [member_class(scenario.protocol)(seat, stats) for seat in seats]
    senders = [
        Sender(member, f"{member.name}-{i}", scenario)
        for i, (member, seat) in enumerate(zip(members, seats, strict=True))
        if seat.sends
    ]
    gate = asyncio.Semaphore(scenario.connect_concurrency)

    async def connect(member: Member) -> None:
        async with gate:
            await member.connect(target)

    loop = asyncio.get_running_loop()
    try:
        started = time.perf_counter()
        await asyncio.gather(*(connect(member) for member in members))
        connect_s = time.perf_counter() - started
        start_at = await ready(connect_s)  # may wait a while for a quiet machine
        start = loop.time() + (start_at - time.monotonic())

        # Keep the collector out of the measurement: set-up objects are frozen and
        # per-frame objects die by reference counting.
        gc.collect()
        gc.freeze()
        gc.disable()
        cpu0 = cpu_seconds()
        # Stagger senders evenly over one send interval instead of bursting together.
        spread = (1.0 / scenario.rate / len(senders)) if scenario.rate and senders else 0.0
        await asyncio.gather(*(s.run(start + i * spread) for i, s in enumerate(senders)))
        await drain(stats, senders, scenario)
        cpu_s = cpu_seconds() - cpu0
    finally:
        stats.closing = True
        for member in members:
            member.close()
        gc.enable()
        gc.unfreeze()

    acked, rejected = sum(s.acked for s in senders), sum(s.rejected for s in senders)
    return {
        "connections": len(members),
        "connect_s": connect_s,
        "sent": sum(s.sent for s in senders),
        "acked": acked,
        "rejected": rejected,
        "acks_missing": sum(len(s.pending) for s in senders),
        "errors": dict(stats.errors),
        "expected_deliveries": sum(len(s) for s in stats.acked.values()) * scenario.members,
        "deliveries": stats.deliveries,
        "lost": sum(len(stats.acked.get(m.room, set()) - m.seen) for m in members),
        "duplicates": stats.duplicates,
        "unacked_delivered": sum(len(m.seen - stats.acked.get(m.room, set())) for m in members),
        "foreign_messages": stats.foreign,
        "malformed": stats.malformed,
        "disconnects": stats.disconnects,
        "unexpected_acks": stats.unexpected_acks,
        "acked_after_error": sum(s.acked_after_error for s in senders),
        "error_after_ack": sum(s.error_after_ack for s in senders),
        "first_send_ns": stats.first_send_ns,
        "last_delivery_ns": stats.last_delivery_ns,
        "max_send_lag_s": max((s.max_lag_s for s in senders), default=0.0),
        "cpu_s": cpu_s,
        "latencies_ms": stats.latencies_ms.tobytes(),
        "ack_latencies_ms": stats.ack_latencies_ms.tobytes(),
        "ack_sent_s": stats.ack_sent_s.tobytes(),
    }
