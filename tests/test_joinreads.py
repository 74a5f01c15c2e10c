"""Joins of one room arriving together share their reads, and each gets exactly what a
read of its own would have given: the same page, the same read state."""

from __future__ import annotations

import asyncio
import json

from server import protocol
from server.joinreads import JOIN_BACKLOG, SINCE_PAGE
from tests.client import Client
from tests.test_api import seed


async def test_joins_and_resumes_of_one_turn_share_one_read_and_match_reads_of_their_own(
        runtime, base_url):
    chat, store = runtime.chat, runtime.store
    author = Client(base_url)
    await author.register()
    ws = await author.ws()
    await ws.join("general")
    seqs = await seed(ws, "general", 130)
    # Current state, not what was first stored: a deleted and an edited message.
    await ws.call({"type": "delete", "room": "general", "seq": seqs[-3]})
    await ws.call({"type": "edit", "room": "general", "seq": seqs[-2], "body": "edited"})
    reader = Client(base_url)
    await reader.register()
    rws = await reader.ws()
    await rws.join("general")
    await rws.call({"type": "read", "room": "general", "seq": seqs[-10]})
    top = await store.top_seq("general")
    asks = [(author.user["id"], None), (reader.user["id"], None), (reader.user["id"], 0),
            (author.user["id"], seqs[5]), (reader.user["id"], seqs[-20]),
            (reader.user["id"], top), (author.user["id"], top - 1)]

    before = chat.join_reads.batches
    pages = await asyncio.gather(*(chat.join_reads.read("general", uid, 0, since)
                                   for uid, since in asks))
    assert chat.join_reads.batches == before + 1

    for (uid, since), page in zip(asks, pages, strict=True):
        if since is None:
            alone = await store.messages("general", limit=JOIN_BACKLOG, top=top)
        else:
            alone = await store.messages("general", after=since, limit=SINCE_PAGE, top=top)
        assert page.top == top
        assert ([e.frame for e in page.messages], page.has_more) == (
            [protocol.dump(r) for r in alone[0]], alone[1]), (uid, since)
        last_read = (await store.read_positions(uid, ["general"])).get("general", 0)
        unread, mentions = await store.unread("general", uid, last_read)
        assert (page.read.last_read, page.read.unread, page.read.mentions) == (
            last_read, unread, mentions), (uid, since)
    frames = {e.seq: json.loads(e.frame) for e in pages[0].messages}
    assert frames[seqs[-3]]["deleted"] and frames[seqs[-2]]["body"] == "edited"
    assert pages[1].read.unread == 8  # the author's nine after the read position, one deleted

