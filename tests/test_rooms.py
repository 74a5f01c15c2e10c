"""This process's connections per room: joins, leaves, disconnects and local fan-out."""

from __future__ import annotations

from dataclasses import dataclass, field

from server.model import User
from server.rooms import FLOOR_HOLD, Batch, LocalRooms


@dataclass(eq=False)
class FakeSocket:
    """A connection as LocalRooms sees one; records what it was sent."""

    conn_id: bytes
    user: User
    credential: str | None = None
    sent: list[bytes] = field(default_factory=list)
    closed: tuple[int, str] | None = None

    def send_raw(self, data: bytes) -> None:
        self.sent.append(data)

    def send_batch(self, batch: Batch) -> None:
        self.sent.extend(batch.frames)

    def shut(self, code: int, reason: str) -> None:
        self.closed = (code, reason)

    def abort(self) -> None:
        self.closed = self.closed or (1006, "")


ANN = User("1", "ann")
BOB = User("2", "bob", bot=True)


def connected(rooms: LocalRooms, conn_id: bytes, user: User, **kw: object) -> FakeSocket:
    sock = FakeSocket(conn_id, user, **kw)  # type: ignore[arg-type]
    rooms.connect(sock)
    return sock


def joined(rooms: LocalRooms, sock: FakeSocket, room: str) -> tuple[bool, bool]:
    new = rooms.begin_join(room, sock)
    rooms.finish_join(room, sock, 0)
    return new


def test_first_join_of_a_room_and_of_a_user_are_reported():
    rooms = LocalRooms()
    a1, a2 = connected(rooms, b"a1", ANN), connected(rooms, b"a2", ANN)
    assert joined(rooms, a1, "r") == (True, True)
    assert joined(rooms, a2, "r") == (False, False)  # ann's second tab
    assert rooms.local_users("r") == ["1"]
    assert rooms.rooms_of(a1) == {"r"}


def test_leave_reports_the_last_connection_of_a_user_and_of_the_room():
    rooms = LocalRooms()
    a1, a2 = connected(rooms, b"a1", ANN), connected(rooms, b"a2", ANN)
    joined(rooms, a1, "r")
    joined(rooms, a2, "r")
    assert rooms.leave("r", a1) == (False, False)
    assert rooms.leave("r", a1) is None  # not in it any more
    assert rooms.leave("r", a2) == (True, True)
    assert "r" not in rooms and rooms.rooms() == []


def test_disconnect_leaves_every_room_of_that_connection():
    rooms = LocalRooms()
    a, b = connected(rooms, b"a", ANN), connected(rooms, b"b", BOB)
    joined(rooms, a, "r")
    joined(rooms, a, "s")
    joined(rooms, b, "s")
    assert sorted(rooms.disconnect(a)) == [("r", True, True), ("s", False, True)]
    assert not rooms.is_connected(a) and not rooms.has("s", a)
    assert rooms.connection_kinds() == {"browser": 0, "bot": 1, "total": 1}


def test_deliver_writes_to_every_member_but_the_excluded_one():
    rooms = LocalRooms()
    a, b = connected(rooms, b"a", ANN), connected(rooms, b"b", BOB)
    joined(rooms, a, "r")
    joined(rooms, b, "r")
    assert rooms.deliver("r", [(1, b"m1"), (0, b"typing")], exclude=b"a") == 2
    assert a.sent == [] and b.sent == [b"m1", b"typing"]


def test_frames_for_a_joining_connection_wait_and_skip_what_its_page_covers():
    rooms = LocalRooms()
    a = connected(rooms, b"a", ANN)
    rooms.begin_join("r", a)
    rooms.deliver("r", [(5, b"m5"), (6, b"m6"), (0, b"presence")])
    assert a.sent == []  # nothing before `joined`
    # 5 was on the page
    assert rooms.finish_join("r", a, 5) == [(6, b"m6"), (0, b"presence")]
    rooms.deliver("r", [(7, b"m7")])
    assert a.sent == [b"m7"]


def test_a_connection_that_left_while_joining_is_not_made_a_member():
    rooms = LocalRooms()
    a = connected(rooms, b"a", ANN)
    rooms.begin_join("r", a)
    assert rooms.leave("r", a) == (True, True)
    assert rooms.finish_join("r", a, 0) == []
    assert not rooms.has("r", a)


def test_shut_credential_closes_only_the_connections_opened_with_it():
    rooms = LocalRooms()
    a = connected(rooms, b"a", ANN, credential="x")
    b = connected(rooms, b"b", ANN, credential="y")
    rooms.shut_credential("x", 1008, "credential revoked")
    assert a.closed == (1008, "credential revoked") and b.closed is None


def test_a_joiner_never_gets_again_what_its_page_held_until_the_room_catches_up():
    rooms = LocalRooms()
    old, new = connected(rooms, b"old", ANN), connected(rooms, b"new", BOB)
    joined(rooms, old, "r")
    rooms.begin_join("r", new)
    rooms.finish_join("r", new, 7)
    rooms.set_floor("r", new, 7, now=100.0)  # its page went up to 7; the old member is at 5
    rooms.deliver("r", [(6, b"m6"), (7, b"m7"), (0, b"typing"), (8, b"m8")])
    assert old.sent == [b"m6", b"m7", b"typing", b"m8"]
    assert new.sent == [b"typing", b"m8"]
    rooms.lift_floors("r", 100.0 + FLOOR_HOLD - 1)
    assert rooms.has_floors("r")  # 7 may still come
    rooms.deliver("r", [(7, b"m7 again")])
    assert new.sent[-1] == b"m8"
    rooms.lift_floors("r", 100.0 + FLOOR_HOLD)
    assert not rooms.has_floors("r")
    rooms.deliver("r", [(9, b"m9")])
    assert new.sent[-1] == b"m9"


def test_leaving_drops_a_floor():
    rooms = LocalRooms()
    a = connected(rooms, b"a", ANN)
    joined(rooms, a, "r")
    rooms.set_floor("r", a, 3, now=0.0)
    rooms.leave("r", a)
    assert not rooms.has_floors("r")


class Unopened:
    """A socket closed during its upgrade: on_close runs, open() never did, so it has
    no user (reading one raises AttributeError, as Tornado's handler would)."""


def test_a_socket_closed_before_it_opened_leaves_nothing_and_raises_nothing():
    rooms = LocalRooms()
    a1 = connected(rooms, b"a1", ANN)
    joined(rooms, a1, "r")
    assert rooms.disconnect(Unopened()) == []  # type: ignore[arg-type]
    assert rooms.local_users("r") == ["1"] and rooms.open_connections == 1
