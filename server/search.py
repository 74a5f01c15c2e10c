"""Searching the messages a person can read: words and "phrases", optionally in one
room, by one author, within dates; newest or best first; in pages.

What a caller can read: every public room they are not banned from, and the private
rooms and DMs they are a member of. Deleted messages are never found (their text and
words are gone), nor old versions of edited ones (only the current text is indexed).

Two engines (see store/search.py): MongoDB's `$text` where the server has text indexes,
else the chat server's own word index, walked newest first from the query's rarest
word. The second decides phrases, authors and rooms in the server over batches of
candidates, and stops after SCAN_LIMIT candidates per request: a page can then come
back short, with a cursor to go on from.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import math
import re
import time
from dataclasses import dataclass
from typing import Any

from bson import ObjectId

from server import protocol
from server.model import Message, User
from server.roles import TeamError, kind_of
from server.sends import unavailable
from server.store import Store, StoreError
from server.store.search import STOP_WORDS, tokens

MAX_QUERY = 200  # characters
MAX_TERMS = 8
BATCH = 200  # candidates read per round trip (fallback)
SCAN_LIMIT = 5000  # candidates looked at per request (fallback)
BEST_POOL = 500  # newest matches ranked for "best" (fallback)
RARE = 1000  # a word in fewer messages is walked through its index (fallback)
COUNT_TTL = 600.0  # seconds a common word's count is reused
OLDEST = dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc)  # no message is older
OLDEST_MS = int(OLDEST.timestamp() * 1000)
WINDOW = 10 * 60 * 1000  # ms: the recent walk's first window; the next ones 4 times wider,
MAX_WINDOW = 7 * 24 * 3600 * 1000  # up to a week (all of it is read by the MongoDB server)
MAX_WINDOWS = 64  # windows walked per request: a year of quiet history
SKEW = 60_000  # ms another process's clock may be ahead of this one's (a cursor's `ts`)
MAX_SKIP = 2**31 - 1  # a cursor's `skip` ($text pages)
SNIPPET = 80  # characters of context on each side of the first match


def bad(message: str) -> TeamError:
    return TeamError(protocol.BAD_REQUEST, message)


@dataclass(frozen=True)
class Query:
    """A parsed query: the words every hit holds, and the phrases it holds in order."""

    text: str
    words: list[str]
    phrases: list[list[str]]

    @classmethod
    def parse(cls, text: object) -> Query:
        if not isinstance(text, str) or not text.strip() or len(text) > MAX_QUERY:
            raise bad(f"q must be 1 to {MAX_QUERY} characters")
        phrases = [tokens(p) for p in re.findall(r'"([^"]*)"', text)]
        phrases = [p for p in phrases if len(p) > 1]
        words = list(dict.fromkeys(w for w in tokens(text) if w not in STOP_WORDS))
        if not words:
            raise bad("q has no word to search for (very common words are not indexed)")
        if len(words) > MAX_TERMS:
            raise bad(f"q may have at most {MAX_TERMS} words")
        return cls(text, words, phrases)

    def matches(self, body: str) -> bool:
        found = tokens(body)
        have = set(found)
        if not all(w in have for w in self.words):
            return False
        return all(_contains(found, phrase) for phrase in self.phrases)

    def score(self, body: str) -> float:
        found = tokens(body)
        hits = sum(1 for w in found if w in self.words)
        return hits / (1.0 + math.log(1 + len(found)))


@dataclass(frozen=True)
class Scope:
    """Which messages a search may return: in these rooms, by this author, in this time
    range; never events or deleted messages."""

    rooms: frozenset[str]
    author: str | None = None
    after_ms: int | None = None
    before_ms: int | None = None

    def accepts(self, doc: dict[str, Any]) -> bool:
        return (doc["room"] in self.rooms and "type" not in doc and not doc.get("deleted")
                and (self.author is None or doc["user"]["id"] == self.author)
                and (self.after_ms is None or doc["ts"] >= self.after_ms)
                and (self.before_ms is None or doc["ts"] < self.before_ms))

    def mongo(self) -> dict[str, Any]:
        """The same as a MongoDB filter (for `$text`, which mongod plans well)."""
        q: dict[str, Any] = {"room": {"$in": sorted(self.rooms)}, "type": {"$exists": False},
                             "deleted": {"$ne": True}}
        if self.author is not None:
            q["user.id"] = self.author
        if self.after_ms is not None or self.before_ms is not None:
            q["ts"] = {k: v for k, v in (("$gte", self.after_ms), ("$lt", self.before_ms))
                       if v is not None}
        return q


def _contains(seq: list[str], part: list[str]) -> bool:
    n = len(part)
    return any(seq[i:i + n] == part for i in range(len(seq) - n + 1))


def snippet(body: str, words: list[str]) -> list[dict[str, Any]]:
    """A window of the text around the first match, as segments: {"text", "match"}.
    Text, never markup: a client renders each segment as text, marking matches."""
    if not words:
        return [{"text": body[: 2 * SNIPPET], "match": False}]
    pattern = re.compile("|".join(rf"(?<!\w){re.escape(w)}(?!\w)" for w in words),
                         re.IGNORECASE)
    first = pattern.search(body)
    start = max(0, (first.start() if first else 0) - SNIPPET)
    end = min(len(body), (first.end() if first else 0) + SNIPPET)
    window = body[start:end]
    segments: list[dict[str, Any]] = []
    if start > 0:
        segments.append({"text": "…", "match": False})
    at = 0
    for m in pattern.finditer(window):
        if m.start() > at:
            segments.append({"text": window[at:m.start()], "match": False})
        segments.append({"text": m.group(0), "match": True})
        at = m.end()
    if at < len(window):
        segments.append({"text": window[at:], "match": False})
    if end < len(body):
        segments.append({"text": "…", "match": False})
    return segments


def _cursor(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data, separators=(",", ":")).encode()).decode()


def _uncursor(raw: str | None) -> dict[str, Any]:
    """A cursor this server gave, checked whole: its ids are ids and its numbers in the
    range the server gives (a `ts` neither in the future nor before OLDEST), so a forged
    one can neither widen the walk nor hold a number MongoDB refuses."""
    if not raw:
        return {}
    try:
        data = json.loads(base64.urlsafe_b64decode(raw.encode()))
    except (ValueError, UnicodeError, RecursionError):
        raise bad("cursor is not one this server gave") from None
    if not isinstance(data, dict):
        raise bad("cursor is not one this server gave")
    now = int(time.time() * 1000)
    bounds = {"ts": (OLDEST_MS, now + SKEW), "offset": (0, BEST_POOL), "skip": (0, MAX_SKIP)}
    for key, value in data.items():
        if key in bounds:
            ok = type(value) is int and bounds[key][0] <= value <= bounds[key][1]
        else:
            ok = key in ("before", "id") and isinstance(value, str) and ObjectId.is_valid(value)
        if not ok:
            raise bad("cursor is not one this server gave")
    return data


class MessageSearch:
    """Search over the rooms a person can read; see the module docstring."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._counts: dict[str, tuple[int, float]] = {}  # word -> (count, when)

    async def readable_rooms(self, user: User) -> list[str]:
        """Every public room the user is not banned from, and their other rooms."""
        mine = await self.store.memberships(user.id)
        public, after = [], None
        while True:
            docs, more = await self.store.rooms(after=after, limit=1000)
            public += [d["_id"] for d in docs if kind_of(d) == "public"]
            if not more or not docs:
                break
            after = docs[-1]["_id"]
        banned = await self.store.banned_rooms(user.id)
        return sorted(set(mine) | (set(public) - banned))

    async def search(self, user: User, q: object, *, room: str | None = None,
                     author: User | None = None, after_ms: int | None = None,
                     before_ms: int | None = None, best: bool = False,
                     cursor: str | None = None, limit: int = 20
                     ) -> tuple[list[dict[str, Any]], str | None]:
        query = Query.parse(q)
        state = _uncursor(cursor)
        try:
            rooms = await self.readable_rooms(user)
            if room is not None:
                rooms = [room] if room in rooms else []
            if not rooms:
                return [], None
            scope = Scope(frozenset(rooms), author.id if author else None, after_ms,
                          before_ms)
            if self.store.text_native:
                docs, nxt = await self._native(query, scope, best, state, limit)
            elif best:
                docs, nxt = await self._best(query, scope, state, limit)
            else:
                docs, nxt = await self._newest(query, scope, state, limit)
        except StoreError:
            raise unavailable("the message store") from None
        results = []
        for doc in docs:
            message = Message.from_doc(doc)
            results.append({"room": message.room, "seq": message.seq,
                            "message": {"type": Message.TYPE, **message.as_dict()},
                            "snippet": snippet(message.body, query.words)})
        return results, _cursor(nxt) if nxt else None

    async def _newest(self, query: Query, scope: Scope, state: dict[str, Any],
                      limit: int) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
        """Newest first: through the index of the query's rarest word when one is rare,
        else through the newest messages, in growing time windows (a query of only
        common words finds its hits among recent messages)."""
        before = state.get("before")
        if "ts" in state:  # a page of the recent walk
            return await self._recent(query, scope, state, limit)
        counts = {w: await self._count(w) for w in query.words}
        rare = min(query.words, key=lambda w: counts[w])
        if counts[rare] == 0:
            return [], None
        if counts[rare] >= RARE:
            return await self._recent(query, scope, {}, limit)
        found: list[dict[str, Any]] = []
        scanned = 0
        while len(found) < limit and scanned < SCAN_LIMIT:
            # Only the word and the cursor go to the store: with more in the filter, the
            # MongoDB-wire server would pick the (room, seq) index and read every room.
            batch = await self.store.find_words(rare, {}, before=before, batch=BATCH)
            if not batch:
                return found, None
            for doc in batch:
                scanned += 1
                before = str(doc["_id"])
                if scope.accepts(doc) and query.matches(doc["body"]):
                    found.append(doc)
                    if len(found) == limit:
                        break
            if len(batch) < BATCH and len(found) < limit:
                return found, None
        return found, {"before": before}

    async def _count(self, word: str) -> int:
        """How many messages hold a word (up to RARE), remembered for a while: counting
        a common word costs more than the search that follows."""
        now = time.monotonic()
        known = self._counts.get(word)
        if known is not None and now - known[1] < COUNT_TTL and known[0] >= RARE:
            return known[0]
        count = await self.store.word_count(word, RARE)
        if len(self._counts) > 10_000:
            self._counts.clear()
        self._counts[word] = (count, now)
        return count

    async def _recent(self, query: Query, scope: Scope, state: dict[str, Any],
                      limit: int) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
        """Newest first through time windows (10 minutes, then 4 times wider each, up to
        a week), within the scope's dates; at most SCAN_LIMIT records read in all."""
        top = int(time.time() * 1000) + 1000
        if scope.before_ms is not None:
            top = min(top, scope.before_ms - 1)
        floor = OLDEST_MS if scope.after_ms is None else max(OLDEST_MS, scope.after_ms - 1)
        hi, after_id = state.get("ts", top), state.get("id")
        if hi > top:  # all of (.., top] is past the cursor: nothing to skip
            hi, after_id = top, None
        width = WINDOW
        found: list[dict[str, Any]] = []
        scanned = 0
        for _ in range(MAX_WINDOWS):
            if hi <= floor:
                return found, None
            lo = max(floor, hi - width)
            budget = SCAN_LIMIT - scanned
            # The cursor's own ts comes again: only what the previous page did not read.
            window = await self.store.find_window(lo, hi, before_id=after_id, limit=budget)
            after_id = None
            for doc in window:
                scanned += 1
                if scope.accepts(doc) and query.matches(doc["body"]):
                    found.append(doc)
                    if len(found) == limit:
                        return found, {"ts": doc["ts"], "id": str(doc["_id"])}
            if len(window) == budget:  # the budget ends inside this window
                last = window[-1]
                return found, {"ts": last["ts"], "id": str(last["_id"])}
            hi = lo
            width = min(width * 4, MAX_WINDOW)
        return found, ({"ts": hi} if hi > floor else None)

    async def _best(self, query: Query, scope: Scope, state: dict[str, Any],
                    limit: int) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
        """Rank the newest BEST_POOL matches; pages go through that ranking."""
        offset = state.get("offset", 0)
        pool, more = await self._newest(query, scope, {}, BEST_POOL)
        del more
        ranked = sorted(pool, key=lambda d: (query.score(d["body"]), d["_id"]), reverse=True)
        page = ranked[offset:offset + limit]
        nxt = {"offset": offset + limit} if offset + limit < len(ranked) else None
        return page, nxt

    async def _native(self, query: Query, scope: Scope, best: bool,
                      state: dict[str, Any], limit: int
                      ) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
        skip = state.get("skip", 0)
        docs = await self.store.find_text(query.text, scope.mongo(), best=best, skip=skip,
                                          limit=limit + 1)
        # $text matches stemmed words; keep what the query means here: every word, and
        # the phrases in order.
        more = len(docs) > limit
        docs = [d for d in docs[:limit] if query.matches(d["body"])]
        return docs, {"skip": skip + limit} if more else None
