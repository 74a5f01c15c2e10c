"""What processes say to each other through Redis: room envelopes and control commands.

A room channel carries envelopes: the frames one process wrote to a room in one go,
already serialized for the WebSocket, so every process forwards them without parsing
JSON. The control channel carries commands for the whole cluster.

Envelope wire format (bytes; the header fields separated by single spaces):

    <node> <exclude connection id, or -> <publish time, Unix seconds>\\n
    <seq>\\t<frame>\\n<seq>\\t<frame>...

`seq` is 0 for frames outside the room's stream (presence, typing). A frame is one
line: compact JSON never contains a raw newline.

Control commands: `close-credential <sha256>`, `unpublished <node> <room> <lo> <hi>`,
`member <JSON [node, room, user, change, payload]>` and
`close-user <close code> <user id>,<user id>... <reason>` (the reason may hold spaces).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

# A frame fanned out to a room: (seq, or 0 for frames without one; serialized frame).
Outgoing = tuple[int, bytes]


class EnvelopeError(ValueError):
    """A payload that is not a well-formed envelope or command."""


@dataclass(frozen=True, slots=True)
class Envelope:
    """A room's frames from one process, in seq order."""

    node: bytes
    exclude: bytes  # the connection that must not get them (b"" for none)
    sent: float  # time.time() at publish, for the cross-process latency metric
    frames: list[Outgoing]

    def encode(self) -> bytes:
        header = b"%s %s %.6f" % (self.node, self.exclude or b"-", self.sent)
        return b"\n".join([header, *(b"%d\t%s" % frame for frame in self.frames)])

    @classmethod
    def decode(cls, payload: bytes) -> Envelope:
        try:
            header, _, rest = payload.partition(b"\n")
            node, exclude, sent = header.split(b" ", 2)
            frames = []
            for line in rest.split(b"\n"):
                seq, _, data = line.partition(b"\t")
                frames.append((int(seq), data))
            return cls(node, b"" if exclude == b"-" else exclude, float(sent), frames)
        except ValueError as e:
            raise EnvelopeError(f"malformed envelope: {e}") from None


@dataclass(frozen=True, slots=True)
class CloseCredential:
    """Close every socket opened with this session or token (sha256), everywhere."""

    credential: str


@dataclass(frozen=True, slots=True)
class Unpublished:
    """`node` stored seqs lo..hi of `room` but could not publish them."""

    node: str
    room: str
    lo: int
    hi: int


@dataclass(frozen=True, slots=True)
class MemberChange:
    """A room's membership changed for `user` (a user id, or "*" for the whole room):
    `change` is "added", "removed", "role", "muted" or "room"; `payload` is what the
    user's sockets are told (a Room, or {"room","reason","until"} for a removal).
    `node` applied it already and ignores its own broadcast."""

    node: str
    room: str
    user: str
    change: str
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class CloseUser:
    """Close every socket of these accounts (a person and their bots), everywhere."""

    user_ids: tuple[str, ...]
    code: int
    reason: str


@dataclass(frozen=True, slots=True)
class Handover:
    """`node` has drained: its presence entries stand for its users until `until` (ms
    since the epoch), while they reconnect elsewhere; whoever buries the node then
    announces offline only those who did not come back."""

    node: str
    until: int


Command = CloseCredential | Unpublished | MemberChange | CloseUser | Handover


def encode_command(command: Command) -> bytes:
    match command:
        case CloseCredential(credential):
            return b"close-credential " + credential.encode()
        case Unpublished(node, room, lo, hi):
            return b"unpublished %s %s %d %d" % (node.encode(), room.encode(), lo, hi)
        case MemberChange(node, room, user, change, payload):
            return b"member " + json.dumps([node, room, user, change, payload],
                                           separators=(",", ":")).encode()
        case CloseUser(user_ids, code, reason):
            return b"close-user %d %s %s" % (code, ",".join(user_ids).encode(),
                                             reason.encode())
        case Handover(node, until):
            return b"handover %s %d" % (node.encode(), until)


def decode_command(payload: bytes) -> Command:
    try:
        text = payload.decode()
        kind, _, arg = text.partition(" ")
        match kind:
            case "close-credential" if arg:
                return CloseCredential(arg)
            case "unpublished":
                node, room, lo, hi = arg.split(" ")
                return Unpublished(node, room, int(lo), int(hi))
            case "member":
                node, room, user, change, payload = json.loads(arg)
                if all(isinstance(x, str) for x in (node, room, user, change)) and isinstance(
                        payload, dict):
                    return MemberChange(node, room, user, change, payload)
            case "close-user":
                code, ids, reason = arg.split(" ", 2)
                user_ids = tuple(ids.split(","))
                if all(user_ids):
                    return CloseUser(user_ids, int(code), reason)
            case "handover":
                node, until = arg.split(" ")
                if node:
                    return Handover(node, int(until))
    except (ValueError, TypeError):  # UnicodeDecodeError and JSONDecodeError are ones
        pass
    raise EnvelopeError(f"malformed command: {payload[:200]!r}")
