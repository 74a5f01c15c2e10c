"""Each room's recent records, in memory: joins and resumes within them read nothing
from MongoDB.

A room's window holds every record of its stream in (start, high], serialized once,
exactly as MongoDB would return it now. It is filled from a page a join read (up to
the room's top), and extended by the records the fan-out delivers here, in seq order
(records that arrive above a gap wait until it fills; a hole that never fills keeps
the window below the room's top, so it is not used until a read replaces it).

A record's document changes after its event is stored and delivered: an edit, a
delete (which also scrubs the text of the message's edit events), a reaction, a reply
(its target's reply count). Nothing is applied here: such an event (a reaction or reply
only if its target lies in the window) drops the room's window, and a read under way
fills nothing. A page read from MongoDB is kept only from above its last record whose
state is not provably final (`unsettled_upto`): the document update of an event may
land after the read.

Bounded: RECENT_RECORDS records per room (oldest dropped first), RECENT_ROOMS rooms
(least recently used dropped first); a room's window goes when its last local member
leaves (nothing is delivered for it any more).
"""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from server import protocol
from server.model import REACTION_SEP, Event, Message, Record, _reactions

RECENT_RECORDS = 200
RECENT_ROOMS = 2000
CHANGES = ("edited", "deleted", "reacted")


@dataclass(frozen=True, slots=True)
class Entry:
    """A record of a room's stream: its frame as sent, and what counting unread needs."""

    seq: int
    frame: bytes  # protocol.dump(record): a `message` frame, and an item of a page
    author: str | None = None  # a message's author (None: an event)
    deleted: bool = False
    mentions: tuple[str, ...] = ()
    mentions_room: bool = False
    event: str = ""  # an event's kind
    target: int | None = None  # the message an event is about, or a reply answers

    @classmethod
    def of(cls, record: Record, frame: bytes | None = None) -> Entry:
        frame = protocol.dump(record) if frame is None else frame
        if isinstance(record, Message):
            return cls(record.seq, frame, record.user.id, record.deleted, record.mentions,
                       record.mentions_room, "", record.reply_to)
        target = record.data.get("message_seq")
        return cls(record.seq, frame, None, False, (), False, record.event,
                   target if isinstance(target, int) else None)

    @classmethod
    def parse(cls, seq: int, frame: bytes) -> Entry:
        """From a frame another process sent (its `message` frame, or an event's)."""
        d: dict[str, Any] = json.loads(frame)
        if d.get("type") == Event.TYPE:
            target = d.get("message_seq")
            return cls(seq, frame, None, False, (), False, str(d.get("event", "")),
                       target if isinstance(target, int) else None)
        mentions = d.get("mentions") or {}
        return cls(seq, frame, d["user"]["id"], bool(d.get("deleted", False)),
                   tuple(mentions.get("users") or ()), bool(mentions.get("room", False)),
                   "", d.get("reply_to"))


@dataclass(slots=True)
class Window:
    """Every record of a room in (start, high], ascending. `start` 0: nothing older;
    otherwise a record at or below `start` exists."""

    start: int
    high: int
    entries: list[Entry]

    def latest(self, count: int) -> tuple[list[Entry], bool] | None:
        """The newest `count` records and whether older exist, if known."""
        if len(self.entries) < count and self.start:
            return None
        return self.entries[-count:], len(self.entries) > count or self.start > 0

    def after(self, since: int, count: int) -> tuple[list[Entry], bool] | None:
        """The first `count` records after `since` and whether more follow, if known."""
        if since < self.start:
            return None
        after = [e for e in self.entries if e.seq > since]
        return after[:count], len(after) > count

    def covers(self, seq: int) -> bool:
        """Whether every record after `seq` is here."""
        return seq >= self.start


@dataclass(slots=True)
class _Room:
    window: Window | None = None
    pending: dict[int, Entry] = field(default_factory=dict)  # delivered above a gap
    version: int = 0  # bumped by every drop: fills read before it are void
    reading: int = 0  # reads under way


@dataclass(frozen=True, slots=True)
class Reading:
    """A read under way (`RecentRecords.begin`)."""

    room: str
    state: _Room
    version: int


class RecentRecords:
    """The windows of this process's rooms; see the module docstring."""

    def __init__(self, per_room: int = RECENT_RECORDS, rooms: int = RECENT_ROOMS) -> None:
        self.per_room = per_room
        self.size = rooms
        self._rooms: OrderedDict[str, _Room] = OrderedDict()
        self.served = 0  # pages answered from a window (for tests and measurements)
        self.drops = 0

    def window(self, room: str) -> Window | None:
        state = self._rooms.get(room)
        if state is None or state.window is None:
            return None
        self._rooms.move_to_end(room)
        return state.window

    def begin(self, room: str) -> Reading:
        """A read of the room's top and pages starts: what is delivered from now on is
        kept for the window it may fill."""
        state = self._rooms.get(room)
        if state is None:
            state = self._rooms[room] = _Room()
            while len(self._rooms) > self.size:
                self._rooms.popitem(last=False)
        else:
            self._rooms.move_to_end(room)
        state.reading += 1
        return Reading(room, state, state.version)

    def end(self, reading: Reading, records: list[Record] | None = None,
            entries: list[Entry] | None = None, start: int = 0, top: int = 0
            ) -> Window | None:
        """The read is over; with `records` (every record of the room in (start, top],
        read from MongoDB; `entries` theirs, if made already), fill the window unless
        it was dropped meanwhile. Returns the room's window."""
        state = reading.state
        state.reading -= 1
        if self._rooms.get(reading.room) is not state:
            return None
        if records is not None and state.version == reading.version:
            current = state.window
            if current is None or current.high < top or (current.high == top
                                                         and start < current.start):
                cut = unsettled_upto(records)
                made = entries if entries is not None else [Entry.of(r) for r in records]
                kept = [e for e in made if e.seq > cut]
                state.window = Window(max(start, cut), top, kept)
                self._trim(state.window)
                self._absorb(reading.room, state)
        if state.window is None and not state.reading:
            state.pending.clear()
        return state.window

    def delivered(self, room: str, frames: list[tuple[int, bytes]],
                  records: list[Record] | None = None) -> None:
        """Records delivered here (seq order); `records` if at hand, else parsed."""
        state = self._rooms.get(room)
        if state is None or (state.window is None and not state.reading):
            return
        for i, (seq, frame) in enumerate(frames):
            if not seq or (state.window is not None and seq <= state.window.high):
                continue
            entry = Entry.of(records[i], frame) if records is not None else Entry.parse(seq,
                                                                                        frame)
            state.pending[seq] = entry
        self._absorb(room, state)

    def forget(self, room: str) -> None:
        """Nothing of the room is delivered here any more."""
        state = self._rooms.pop(room, None)
        if state is not None:
            state.version += 1

    def _absorb(self, room: str, state: _Room) -> None:
        """Move pending records that continue the window into it."""
        window = state.window
        if window is None:
            if len(state.pending) > self.per_room:
                state.pending.pop(min(state.pending))
            return
        pending = state.pending
        for seq in [s for s in pending if s <= window.high]:
            del pending[seq]
        while window.high + 1 in pending:
            entry = pending.pop(window.high + 1)
            if _changes(window, entry):
                self._drop(state)
                return
            window.entries.append(entry)
            window.high = entry.seq
        self._trim(window)
        if len(pending) > self.per_room:  # a gap that does not fill
            self._drop(state)

    def _drop(self, state: _Room) -> None:
        self.drops += 1
        state.window = None
        state.version += 1
        if not state.reading:
            state.pending.clear()

    def _trim(self, window: Window) -> None:
        extra = len(window.entries) - self.per_room
        if extra > 0:
            window.start = window.entries[extra - 1].seq
            del window.entries[:extra]


def _changes(window: Window, entry: Entry) -> bool:
    """Whether the record changes documents the window holds (or may hold)."""
    if entry.event in ("edited", "deleted"):
        return True
    return (entry.event == "reacted" or entry.author is not None) and (
        entry.target is not None and entry.target > window.start)


def unsettled_upto(records: list[Record]) -> int:
    """The highest seq of a page (every record of a room up to its top) whose stored
    state may still change without a later event: a message whose document does not
    yet show all the events and replies about it in the page, those events, and an
    edit of an older message that a delete may still scrub. 0 for none."""
    messages = {r.seq: r for r in records if isinstance(r, Message)}
    about: dict[int, list[Record]] = {}
    cut = 0
    for r in records:
        if isinstance(r, Event):
            target = r.data.get("message_seq")
            if r.event not in CHANGES or not isinstance(target, int):
                continue
            if target in messages:
                about.setdefault(target, []).append(r)
            elif r.event == "edited" and r.data.get("new_body"):
                cut = max(cut, r.seq)
        elif r.reply_to is not None and r.reply_to in messages:
            about.setdefault(r.reply_to, []).append(r)
    for seq, message in messages.items():
        related = about.get(seq, [])
        if not _current(message, related):
            cut = max(cut, seq, *(r.seq for r in related))
    return cut


def _current(m: Message, related: list[Record]) -> bool:
    """Whether a message's document shows every event and reply about it (in order)."""
    events = [r for r in related if isinstance(r, Event)]
    replies = len(related) - len(events)
    if m.state_seq != max((r.seq for r in related), default=0) or m.replies != replies:
        return False
    edits = [e for e in events if e.event == "edited"]
    if any(e.event == "deleted" for e in events):
        return (m.deleted and m.body == "" and not m.reactions and m.edited_at is None
                and not m.mentions and not m.mentions_room and not m.attachments
                and not any(e.data.get("new_body") for e in edits))
    if m.deleted:
        return False
    if edits and (m.body != edits[-1].data.get("new_body")
                  or m.edited_at != edits[-1].data.get("edited_at")):
        return False
    reactions: list[str] = []
    for e in events:
        if e.event == "reacted":
            key = f"{e.data.get('emoji')}{REACTION_SEP}{e.actor.id}"
            if e.data.get("on") and key not in reactions:
                reactions.append(key)
            elif not e.data.get("on") and key in reactions:
                reactions.remove(key)
    return m.reactions == _reactions(reactions)


def count_unread(entries: list[Entry], last_read: int, user_id: str, cap: int,
                 upto: int | None = None) -> tuple[int, int]:
    """(unread, mentions) among records after `last_read` (up to `upto`): others'
    messages, not deleted; each capped."""
    unread = mentions = 0
    for e in entries:
        if upto is not None and e.seq > upto:
            break
        if e.seq > last_read and e.author is not None and e.author != user_id and not e.deleted:
            unread += 1
            if user_id in e.mentions or e.mentions_room:
                mentions += 1
    return min(unread, cap), min(mentions, cap)
