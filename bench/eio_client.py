"""The load generator's Socket.IO client: raw Engine.IO v4 frames over a picows WebSocket.

python-socketio's own client costs far more CPU per event than the server under test,
so the benchmarks speak the wire format directly: the server's open packet `0{...}` is
answered with `40` (connect to the default namespace), its `40{"sid":...}` counts as
our `hello`, pings `2` are answered `3`, and events are `42["name",{...}]`. An event
`name` with an object `data` becomes the frame `{"type": name, **data}` our accounting
in `fanout_client.Member` already understands; frames we send go out the same way.
"""

from __future__ import annotations

import json
from typing import Any

from accounts import check_loopback
from fanout_client import TEXT, Member


class EioMember(Member):
    """A `Member` that speaks Socket.IO to `bench/socketio_server.py`."""

    def url_for(self, target: str) -> str:
        base = "ws" + check_loopback(target)[len("http"):]
        return f"{base}/socket.io/?EIO=4&transport=websocket&name={self.name}"

    def send_frame(self, frame: dict[str, Any]) -> None:
        assert self.ws is not None
        data = dict(frame)
        event = data.pop("type")
        self.ws.send(TEXT, "42" + json.dumps([event, data]))

    def on_message(self, text: str, now: int) -> None:
        if text.startswith("42"):
            try:
                event, data = json.loads(text[2:])[:2]
            except (ValueError, TypeError):
                self.stats.malformed += 1
                return
            if isinstance(data, dict):
                self.on_frame({**data, "type": event}, now)
            else:
                self.stats.malformed += 1
        elif text == "2":  # Engine.IO ping: answer at once, as every client library does
            assert self.ws is not None
            self.ws.send(TEXT, "3")
        elif text.startswith("40"):  # connected to the namespace: the server said hello
            self.on_frame({"type": "hello"}, now)
        elif text.startswith("0"):  # Engine.IO open: connect to the default namespace
            assert self.ws is not None
            self.ws.send(TEXT, "40")
        elif text.startswith("41") or text.startswith("44"):  # namespace gone or refused
            self.stats.errors["socketio_" + text[:2]] += 1
