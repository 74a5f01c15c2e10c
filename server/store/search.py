"""Full-text search over messages: MongoDB's own text index where the server has one,
else an index of each message's words kept by the chat server itself.

Which one is decided at start-up (`setup_search`), not assumed: mongod and Atlas build
text indexes; the embedded MongoDB-wire server refuses them ("text indexes are not
supported"). Without one, each message stores `words` (its distinct normalised tokens)
under a multikey index, and a query walks the messages holding its rarest word, newest
first, checking the rest in the server.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from typing import Any

import pymongo
from bson import ObjectId
from pymongo.errors import OperationFailure

from server.store.core import Collections, _errors

log = logging.getLogger(__name__)

MAX_WORDS = 300  # distinct words indexed per message
# Words too common to narrow anything down: not indexed by the fallback, ignored in
# queries (a query of only these finds nothing).
STOP_WORDS = frozenset(
    "a an and are as at be by for from has have i in is it its of on or that the this to "
    "was we were will with you".split())
_WORD_RE = re.compile(r"\w+")


def tokens(text: str) -> list[str]:
    """The words of a text, in order: NFKC-normalised, case-folded, runs of letters,
    digits and underscores."""
    return _WORD_RE.findall(unicodedata.normalize("NFKC", text).casefold())


def index_words(text: str) -> list[str]:
    """What the fallback index stores of a message: its distinct words, in order of
    first appearance, without stop words, at most MAX_WORDS."""
    seen: dict[str, None] = {}
    for word in tokens(text):
        if word not in STOP_WORDS and word not in seen:
            seen[word] = None
            if len(seen) >= MAX_WORDS:
                break
    return list(seen)


class Search(Collections):
    """Search over stored messages. Every method raises StoreError when MongoDB fails."""

    text_native: bool = False  # set by setup_search

    async def setup_search(self) -> bool:
        """Use the server's text index if it builds one; else the words index."""
        try:
            await self.db.messages.create_index([("body", pymongo.TEXT)], name="body_text",
                                                default_language="none")
            await self.db.messages.find({"$text": {"$search": "probe"}}).limit(1).to_list(None)
            self.text_native = True
        except OperationFailure as e:
            log.info("full-text search: the server has no text index (%s); using the "
                     "chat server's own word index", (e.details or {}).get("errmsg", e))
            with _errors():
                await self.db.messages.create_index("words", sparse=True)
                # Searches of common words walk recent messages in time windows: the
                # MongoDB-wire server scans the whole collection for an _id range.
                await self.db.messages.create_index("ts")
            self.text_native = False
        return self.text_native

    def words_field(self, body: str) -> list[str] | None:
        """The `words` a message stores for the fallback index (None with a text index)."""
        return None if self.text_native else index_words(body)

    async def word_count(self, word: str, cap: int) -> int:
        """How many messages hold the word, counting up to `cap`."""
        with _errors():
            return int(await self.db.messages.count_documents({"words": word}, limit=cap))

    async def find_window(self, lo: int, hi: int, *, before_id: str | None,
                          limit: int) -> list[dict[str, Any]]:
        """At most `limit` records stored with `ts` in (lo, hi], newest first (ties by
        id); at `ts == hi` only those with an id below `before_id`, when given.

        Both reads are bounded: the range by `limit` (MongoDB sorts and cuts it), the
        records of the one millisecond `hi` by what the writers store per tick. Their
        id is tested here: the MongoDB-wire server scans the whole collection for
        `{"ts": hi, "_id": {"$lt": ...}}`, but reads `{"ts": hi}` through its index.
        """
        newest = [("ts", pymongo.DESCENDING), ("_id", pymongo.DESCENDING)]
        docs: list[dict[str, Any]] = []
        with _errors():
            if before_id is not None:
                below = ObjectId(before_id)
                same = await self.db.messages.find({"ts": hi}).sort(newest).to_list(None)
                docs = [d for d in same if d["_id"] < below][:limit]
            if len(docs) < limit:
                ts = {"$gt": lo, "$lt" if before_id is not None else "$lte": hi}
                docs += await self.db.messages.find({"ts": ts}).sort(newest).limit(
                    limit - len(docs)).to_list(None)
        return docs

    async def find_words(self, word: str, query: dict[str, Any], *, before: str | None,
                         batch: int) -> list[dict[str, Any]]:
        """A batch of messages holding `word` (and matching `query`), newest first,
        before the message id `before`."""
        q: dict[str, Any] = {**query, "words": word}
        if before is not None:
            q["_id"] = {"$lt": ObjectId(before)}
        with _errors():
            return await self.db.messages.find(q).sort("_id", pymongo.DESCENDING).limit(
                batch).to_list(None)

    async def find_text(self, text: str, query: dict[str, Any], *, best: bool, skip: int,
                        limit: int) -> list[dict[str, Any]]:
        """Messages matching a `$text` search (mongod's syntax: words, "phrases",
        -negations), best or newest first."""
        q = {**query, "$text": {"$search": text}}
        with _errors():
            if best:
                cursor = self.db.messages.find(q, {"score": {"$meta": "textScore"}}).sort(
                    [("score", {"$meta": "textScore"}), ("_id", pymongo.DESCENDING)])
            else:
                cursor = self.db.messages.find(q).sort("_id", pymongo.DESCENDING)
            return await cursor.skip(skip).limit(limit).to_list(None)
