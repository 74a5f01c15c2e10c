"""What a process knows of a room's seqs: the top, and the watermark of deliveries."""

from __future__ import annotations

from server.seqs import RoomSeqs, Watermark


def test_watermark_moves_over_contiguous_deliveries_only():
    mark = Watermark(10)
    mark.seen(12)
    assert mark.upto == 10  # 11 is missing: a resync starts after 10
    mark.seen(11)
    assert mark.upto == 12
    assert mark.delivered(11) and mark.delivered(12)
    assert not mark.delivered(13)


def test_a_seq_mongodb_showed_missing_is_still_delivered_when_it_comes():
    """The watermark passes holes, but only what was delivered counts as a duplicate:
    a message still being stored when a catch-up read past it must not be dropped."""
    mark = Watermark(10)
    mark.seen(11)
    mark.seen(13)
    mark.through(11, 13)  # a catch-up read found 12 missing
    assert mark.upto == 13
    assert not mark.delivered(12)
    mark.seen(12)  # stored late, arrives live
    assert mark.delivered(12) and mark.delivered(13)


def test_a_seq_seen_twice_is_recorded_once():
    mark = Watermark(0)
    mark.seen(1)
    mark.seen(1)
    assert mark.upto == 1 and mark.delivered(1)


def test_recent_deliveries_are_remembered_up_to_a_bound():
    mark = Watermark(0)
    for seq in range(1, Watermark.RECENT + 11):
        mark.seen(seq)
    assert mark.upto == Watermark.RECENT + 10
    assert mark.delivered(Watermark.RECENT + 10)
    assert not mark.delivered(5)  # forgotten, and long below the watermark
    assert len(mark.recent) == Watermark.RECENT


def test_stuck_only_after_a_hole_held_the_watermark_for_a_whole_interval():
    mark = Watermark(0)
    mark.seen(2)  # 1 is missing
    assert not mark.stuck()  # first look: it may still come
    assert mark.stuck()  # still missing one interval later
    mark.seen(1)
    assert not mark.stuck()


def test_room_seqs_top_only_rises():
    seqs = RoomSeqs()
    assert not seqs.knows("r") and seqs.top("r") == 0
    seqs.saw("r", 0)
    assert seqs.knows("r")  # a room with no messages yet is known too
    seqs.saw("r", 7)
    seqs.saw("r", 3)  # an older message seen late
    assert seqs.top("r") == 7


def test_room_seqs_watch_keeps_the_first_watermark_until_unwatched():
    seqs = RoomSeqs()
    seqs.watch("r", 5)
    mark = seqs.mark("r")
    assert mark is not None and mark.upto == 5
    seqs.watch("r", 9)  # a second joiner must not move it past undelivered seqs
    assert seqs.mark("r") is mark
    seqs.unwatch("r")
    assert seqs.mark("r") is None


def test_room_seqs_reports_stuck_rooms():
    seqs = RoomSeqs()
    seqs.watch("a", 0)
    seqs.watch("b", 0)
    mark = seqs.mark("a")
    assert mark is not None
    mark.seen(2)
    assert seqs.stuck() == []
    assert seqs.stuck() == ["a"]
