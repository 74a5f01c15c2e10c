"""Joins and resumes answered from a process's recent records: exactly what MongoDB
would answer (records, fields, state, read counts), and without reading it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Coroutine
from typing import Any

from server import protocol
from server.model import Event, Message, User
from server.recent import RecentRecords, unsettled_upto
from server.store import message_doc, now_ms
from tests.client import Socket
from tests.test_api import seed
from tests.test_changes import change, say, socket_in
from tests.test_files import png, uploaded
from tests.test_team import make_room, person


async def reads(runtime) -> int:
    """Reads the MongoDB-wire server has answered so far (its own opcounters)."""
    status = await runtime.store.db.client.admin.command("serverStatus")
    ops = status["opcounters"]
    return int(ops["query"]) + int(ops["getmore"]) + int(ops["command"])


async def reads_during(runtime, work: Coroutine[Any, Any, Any]) -> tuple[Any, int]:
    """The result of awaiting `work` (not started yet), and the reads it caused (the
    counter's own command taken off)."""
    first = await reads(runtime)
    idle = await reads(runtime) - first  # what one look at the counters costs
    before = await reads(runtime)
    result = await work
    return result, await reads(runtime) - before - idle


async def stored(runtime, room: str, since: int | None) -> dict[str, Any]:
    """What a join's page is, read from MongoDB now."""
    store = runtime.store
    top = await store.top_seq(room)
    if since is None:
        records, more = await store.messages(room, limit=50, top=top)
    else:
        records, more = await store.messages(room, after=since, limit=100, top=top)
    return {"last_seq": top, "has_more": more,
            "messages": [json.loads(protocol.dump(r)) for r in records]}


async def until_seq(ws: Socket, seq: int) -> None:
    while (await ws.recv()).get("seq") != seq:
        pass


def page_of(joined: dict[str, Any]) -> dict[str, Any]:
    return {k: joined[k] for k in ("last_seq", "has_more", "messages")}


async def test_joins_from_memory_equal_mongodb_after_edits_deletes_reactions_replies_and_files(
        make_client, runtime, second_node):
    node2 = second_node.runtime
    recent = node2.chat.join_reads.recent
    owner = await person(make_client)
    other = await person(make_client, second_node.base_url)
    room = await make_room(owner)
    ws = await socket_in(owner, room)
    watcher = await socket_in(other, room)  # the second process holds the room from here
    seqs = await seed(ws, room, 60)
    reply = await say(ws, room, "an answer", reply_to=seqs[30])
    await say(ws, room, f"hello @{other.user['name']}")
    file = await uploaded(owner, room, png(), "a.png")
    await say(ws, room, "a picture", attachments=[file["id"]])
    await change(ws, {"type": "edit", "room": room, "seq": seqs[-1], "body": "edited"})
    await change(ws, {"type": "edit", "room": room, "seq": seqs[-2], "body": "to go"})
    await change(ws, {"type": "delete", "room": room, "seq": seqs[-2]})  # scrubs its edit
    await change(ws, {"type": "react", "room": room, "seq": seqs[-3], "emoji": "👍"})
    await change(ws, {"type": "react", "room": room, "seq": seqs[-4], "emoji": "🎉"})
    last = await change(ws, {"type": "react", "room": room, "seq": seqs[-4], "emoji": "🎉",
                             "on": False})
    await until_seq(watcher, last["seq"])
    assert recent.window(room) is None  # the changes dropped what it held
    # A read position inside what the process holds: its counts need no query either.
    position = await watcher.call({"type": "read", "room": room, "seq": seqs[40]})
    assert position["type"] != "error", position

    # The first join after them reads MongoDB (every change is applied: each was
    # acked once its message was in its new state), and keeps what it read.
    first = await (await other.ws()).join(room)
    assert page_of(first) == await stored(runtime, room, None)
    served = recent.served
    fresh = await other.ws()
    again, read_count = await reads_during(node2, fresh.join(room))
    resumed, resume_reads = await reads_during(node2, (await other.ws()).join(
        room, since=seqs[20]))
    assert recent.served == served + 2
    assert (read_count, resume_reads) == (0, 0)
    assert page_of(again) == page_of(first)
    assert page_of(resumed) == await stored(runtime, room, seqs[20])
    unread = await runtime.store.unread(room, other.user["id"], seqs[40])
    assert (again["last_read"], resumed["last_read"]) == (seqs[40], seqs[40])
    assert (again["unread"], again["mentions"]) == (resumed["unread"], resumed["mentions"]) \
        == unread == (len(seqs) - 41 - 1 + 3, 1)  # one deleted; reply, mention, picture
    messages = {m["seq"]: m for m in again["messages"]}
    assert messages[seqs[30]]["replies"] == 1 and messages[reply["seq"]]["reply_to"] == seqs[30]
    assert messages[seqs[-1]]["body"] == "edited"
    assert messages[seqs[-2]]["deleted"] and messages[seqs[-2]]["body"] == ""
    assert [m["new_body"] for m in again["messages"]
            if m.get("event") == "edited" and m["message_seq"] == seqs[-2]] == [""]
    assert messages[seqs[-3]]["reactions"][0]["emoji"] == "👍"
    assert "reactions" not in messages[seqs[-4]]
    assert any(m.get("attachments") == [file] for m in again["messages"])

    # Messages stored through the other process extend what this one holds.
    more = [await say(ws, room, f"later {i}") for i in range(3)]
    await until_seq(watcher, more[-1]["seq"])
    later, later_reads = await reads_during(node2, fresh.join(room))
    assert later_reads == 0 and recent.served == served + 3
    assert page_of(later) == await stored(runtime, room, None)
    assert later["messages"][-1]["body"] == "later 2"


async def test_a_message_whose_publish_was_lost_makes_the_join_read_mongodb(
        make_client, runtime, second_node):
    node2 = second_node.runtime
    recent = node2.chat.join_reads.recent
    owner = await person(make_client)
    other = await person(make_client, second_node.base_url)
    room = await make_room(owner)
    ws = await socket_in(owner, room)
    watcher = await socket_in(other, room)
    await seed(ws, room, 5)
    top = await runtime.store.top_seq(room)
    # Stored, never published (its process died between the two): a hole here.
    lost = message_doc(room, top + 1, User(owner.user["id"], owner.user["name"], False),
                       "lost", now_ms(), None)
    assert await runtime.store.insert_in_order([lost]) == (1, None)
    after = await say(ws, room, "after the hole")
    assert after["seq"] == top + 2
    await until_seq(watcher, after["seq"])
    served = recent.served
    joined = await (await other.ws()).join(room)
    assert recent.served == served
    assert [m["body"] for m in joined["messages"][-2:]] == ["lost", "after the hole"]
    assert page_of(joined) == await stored(runtime, room, None)
    # What that read found fills the window again: the next join reads only the top
    # (the hole keeps the watermark below it until it is caught up).
    _, count = await reads_during(node2, (await other.ws()).join(room))
    assert count == 1 and recent.served == served + 1


async def test_a_crowd_of_resumes_in_one_room_costs_one_query_and_then_none(
        make_client, runtime):
    join_reads = runtime.chat.join_reads
    owner = await person(make_client)
    room = await make_room(owner)
    ws = await socket_in(owner, room)
    seqs = await seed(ws, room, 80)
    top = await runtime.store.top_seq(room)
    crowd = [(f"u{i}", seqs[i % 70]) for i in range(40)] + [(f"v{i}", None) for i in range(10)]

    async def resume_all() -> list[Any]:
        return await asyncio.gather(*(join_reads.read(room, uid, 0, since)
                                      for uid, since in crowd))

    pages, first_reads = await reads_during(runtime, resume_all())
    assert first_reads == 1  # the read positions of fifty users, none known yet
    _, second_reads = await reads_during(runtime, resume_all())
    assert second_reads == 0
    for (uid, since), page in zip(crowd, pages, strict=True):
        records, more = (await runtime.store.messages(room, limit=50, top=top) if since is None
                         else await runtime.store.messages(room, after=since, limit=100,
                                                           top=top))
        assert ([e.frame for e in page.messages], page.has_more) == (
            [protocol.dump(r) for r in records], more)
        unread = await runtime.store.unread(room, uid, 0)
        assert (page.read.unread, page.read.mentions) == unread == (80, 0)


async def test_a_crowd_arriving_over_several_turns_reads_the_page_once(make_client, runtime):
    join_reads = runtime.chat.join_reads
    owner = await person(make_client)
    room = await make_room(owner)
    ws = await socket_in(owner, room)
    await seed(ws, room, 40)
    crowd = [f"c{i}" for i in range(10)]
    # Their read positions known, so that only pages are read below.
    await asyncio.gather(*(join_reads.read(room, uid, 0, None) for uid in crowd))
    join_reads.recent.forget(room)  # as after the room's last local member left

    async def over_turns() -> list[Any]:
        joins = []
        for _ in range(5):  # five loop turns, five batches of the same ten users
            joins += [asyncio.ensure_future(join_reads.read(room, uid, 0, None))
                      for uid in crowd]
            # The joins ask at the loop's next turn; their batch is taken at the one after.
            await asyncio.sleep(0)
            await asyncio.sleep(0)
        return await asyncio.gather(*joins)

    batches = join_reads.batches
    pages, count = await reads_during(runtime, over_turns())
    assert join_reads.batches == batches + 5
    assert count == 1  # the first batch's page; the next four are answered from it
    records, more = await runtime.store.messages(room, limit=50)
    for page in pages:
        assert ([e.frame for e in page.messages], page.has_more) == (
            [protocol.dump(r) for r in records], more)


async def test_resumes_below_the_window_count_unread_in_one_shared_read(make_client, runtime):
    join_reads = runtime.chat.join_reads
    join_reads.recent.per_room = 30  # a small window: the resumes fall below it
    owner = await person(make_client)
    room = await make_room(owner)
    ws = await socket_in(owner, room)
    seqs = await seed(ws, room, 60)
    crowd = [(f"w{i}", seqs[i]) for i in range(20)]
    await asyncio.gather(*(join_reads.read(room, uid, 0, None) for uid, _ in crowd))

    async def resume_all() -> list[Any]:
        return await asyncio.gather(*(join_reads.read(room, uid, 0, since)
                                      for uid, since in crowd))

    pages, count = await reads_during(runtime, resume_all())
    assert count == 2  # one page read after the lowest `since`, one count of unread
    for page in pages:
        assert (page.read.unread, page.read.mentions) == (60, 0)


def test_a_page_is_kept_only_above_what_its_documents_do_not_show_yet():
    user = User("u1", "ann", False)

    def message(seq: int, **state: Any) -> Message:
        return Message("r", f"id{seq}", seq, user, state.pop("body", "hi"), 1, **state)

    def event(seq: int, kind: str, **data: Any) -> Event:
        return Event("r", f"id{seq}", seq, 1, kind, user, None, data)

    edit = event(3, "edited", message_seq=2, new_body="new", edited_at=5)
    assert unsettled_upto([message(1), message(2, body="new", edited_at=5, state_seq=3),
                           edit]) == 0
    # The event is stored (and delivered), its document update not yet made.
    assert unsettled_upto([message(1), message(2), edit, message(4)]) == 3
    # Deleted, its edit's text not yet scrubbed; then scrubbed.
    tomb = message(2, body="", deleted=True, state_seq=4)
    gone = event(4, "deleted", message_seq=2)
    assert unsettled_upto([message(1), tomb, edit, gone, message(5)]) == 4
    scrubbed = event(3, "edited", message_seq=2, new_body="", edited_at=5)
    assert unsettled_upto([message(1), tomb, scrubbed, gone, message(5)]) == 0
    # A reaction toggled twice, a reply counted; an edit of a message older than the
    # page that a delete could still scrub.
    assert unsettled_upto([message(1, state_seq=3), event(2, "reacted", message_seq=1,
                                                          emoji="x", on=True),
                           event(3, "reacted", message_seq=1, emoji="x", on=False)]) == 0
    assert unsettled_upto([message(1), message(2, reply_to=1)]) == 2
    assert unsettled_upto([message(1, replies=1, state_seq=2), message(2, reply_to=1)]) == 0
    assert unsettled_upto([event(7, "edited", message_seq=1, new_body="x", edited_at=1),
                           message(8)]) == 7


def test_a_joined_frame_of_records_serialized_once_is_the_same_bytes():
    user = User("u1", "Zoë", False)
    records = [Message("r", "id1", 1, user, "héllo \"there\" 🎉", 1, mentions=("u1",)),
               Event("r", "id2", 2, 3, "edited", user, None,
                     {"message_seq": 1, "new_body": "x", "edited_at": 4})]
    read = protocol.ReadState(1, 2, 3)
    for ref in (None, 7, "r-1"):
        for frame in (protocol.Joined("r", 2, [user], records, True, read),
                      protocol.Joined("r", 2, [], records, False, None)):
            items = [protocol.dump(r) for r in frame.messages]
            empty = protocol.Joined(frame.room, frame.last_seq, frame.members, [],
                                    frame.has_more, frame.read)
            assert protocol.dump_joined(empty, items, ref) == protocol.dump(frame, ref)


def test_records_wait_above_a_gap_and_the_window_keeps_its_bounds():
    user = User("u1", "ann", False)
    records = [Message("a", f"id{s}", s, user, f"m{s}", 1) for s in range(1, 7)]
    recent = RecentRecords(per_room=3, rooms=2)
    reading = recent.begin("a")
    window = recent.end(reading, records[:2], start=0, top=2)
    assert window is not None and (window.start, window.high) == (0, 2)

    def deliver(*seqs: int) -> None:
        chosen = [records[s - 1] for s in seqs]
        recent.delivered("a", [(r.seq, protocol.dump(r)) for r in chosen], chosen)

    deliver(4)  # 3 is on its way (another process): 4 waits
    assert window.high == 2
    deliver(3)
    assert (window.start, window.high) == (1, 4)  # three records: 1 is gone
    assert window.latest(3) == (window.entries, True)
    assert [e.seq for e in window.entries] == [2, 3, 4]
    assert window.after(0, 10) is None and window.after(2, 10) is not None
    edit = Event("a", "id5", 5, 1, "edited", user, None, {"message_seq": 4, "new_body": "x"})
    recent.delivered("a", [(5, protocol.dump(edit))])  # parsed, as another process's
    assert recent.window("a") is None
    # Beyond the bound in rooms, the least recently used goes.
    for room in ("b", "c"):
        recent.end(recent.begin(room), [], start=0, top=0)
    assert recent.window("a") is None and recent.window("b") is not None
    assert recent.window("c") is not None
