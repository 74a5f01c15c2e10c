"""A speed-up installed in the embedded MongoDB-wire server's own process (never in
the chat server's): SecantusDB 0.7 re-reads a collection's index catalog for every
document an insert writes.

For each document, `Storage._insert_chunk` asks `_index_options_map` three times (the
unique-key probe, the geo check, the index entries), and each call decodes one catalog
row per index from WiredTiger. With the indexes of `messages` that was a third of an
insert's CPU (`python bench/store_writes.py`). The chunk itself reads its list of
indexes once, at its start, under the collection's lock (which index builds take too),
so this keeps the options map it read first for the rest of the same chunk attempt.
Anything else (updates, deletes, index builds) reads the catalog as before.

Installed only when SecantusDB has exactly the internals this relies on; otherwise
nothing changes and the server runs as shipped.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any


def install() -> bool:
    """Patch SecantusDB's Storage in this process; False if its internals differ."""
    try:
        from secantus import storage
    except ImportError:
        return False
    cls = getattr(storage, "Storage", None)
    retry = getattr(storage, "_retry_write_conflicts", None)
    chunk = getattr(getattr(cls, "_insert_chunk", None), "__wrapped__", None)
    read_map = getattr(cls, "_index_options_map", None)
    if cls is None or retry is None or chunk is None or read_map is None:
        return False
    if getattr(cls, "_chat_catalog_memo", False):
        return True
    memo = threading.local()

    def index_options_map(self: Any, db: str, coll: str) -> dict[str, dict[str, Any]]:
        known: dict[tuple[str, str], dict[str, dict[str, Any]]] | None = getattr(
            memo, "maps", None)
        if known is None:
            return read_map(self, db, coll)
        found = known.get((db, coll))
        if found is None:
            found = known[(db, coll)] = read_map(self, db, coll)
        return found

    def insert_chunk(self: Any, *args: Any, **kwargs: Any) -> Any:
        # One attempt, under the collection lock it takes; a retry starts afresh.
        memo.maps = {}
        try:
            return chunk(self, *args, **kwargs)
        finally:
            memo.maps = None

    wrapped: Callable[..., Any] = retry(insert_chunk)
    cls._index_options_map = index_options_map
    cls._insert_chunk = wrapped
    cls._chat_catalog_memo = True
    return True
