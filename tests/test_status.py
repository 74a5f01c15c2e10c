"""UserStates: the states `joined.members` lists, each member's JSON made once."""

import json

from server import protocol
from server.model import User
from server.status import Present, Shown, UserStates

ANN = User("u1", "ann", False)
BOB = User("u2", "Bøb \"the\" bot", True)


def members_of(frame: bytes) -> list[dict]:
    return json.loads(frame)["members"]


def joined(members: list) -> bytes:
    return protocol.dump_joined(protocol.Joined("r", 3, members, [], False), [], 7)


def test_a_members_listing_is_the_same_bytes_as_the_frame_serialized_whole():
    states = UserStates()
    states.put(BOB.id, Shown(True, "lunch", 1 << 50))
    listed = states.present([ANN, BOB])
    assert all(isinstance(m, Present) and m.wire for m in listed)
    assert joined(listed) == protocol.dump(protocol.Joined("r", 3, listed, [], False), 7)
    assert members_of(joined(listed)) == [
        {"id": "u1", "name": "ann", "bot": False, "away": False, "status_text": None,
         "status_until": None},
        {"id": "u2", "name": "Bøb \"the\" bot", "bot": True, "away": True,
         "status_text": "lunch", "status_until": 1 << 50}]


def test_a_member_is_serialized_once_until_their_state_or_name_changes():
    states = UserStates()
    first = states.present([ANN, BOB])
    again = states.present([BOB, ANN])
    assert again[0] is first[1] and again[1] is first[0]  # nothing made anew
    states.put(ANN.id, Shown(True))
    away = states.present([ANN])[0]
    assert away is not first[0] and json.loads(away.wire)["away"] is True
    renamed = User(ANN.id, "annie", False)
    listed = states.present([renamed])[0]
    assert json.loads(listed.wire)["name"] == "annie" and json.loads(listed.wire)["away"]
    states.put(ANN.id, Shown())
    assert json.loads(states.present([renamed])[0].wire)["away"] is False


def test_a_status_text_that_has_expired_is_no_longer_listed():
    states = UserStates()
    states.put(ANN.id, Shown(False, "brb", 2_000))
    before = states.present([ANN], now=1_000)[0]
    assert (json.loads(before.wire)["status_text"], before.shown.until) == ("brb", 2_000)
    after = states.present([ANN], now=2_000)[0]
    assert json.loads(after.wire) == {"id": "u1", "name": "ann", "bot": False, "away": False,
                                      "status_text": None, "status_until": None}


def test_joiners_given_the_same_member_list_share_one_listing_until_a_state_changes():
    # A batch of joins of one room hands every joiner the same list of users: the
    # listing and its JSON are made once for all of them, and made anew once a state
    # changes or a status text shown in it expires.
    states = UserStates()
    states.put(BOB.id, Shown(False, "brb", 5_000))
    users = [ANN, BOB]
    first = states.present(users, now=1_000)
    frame = joined(first)
    assert states.present(users, now=1_001) is first
    assert joined(states.present(users, now=1_002)) == frame
    states.put(ANN.id, Shown(True))
    away = states.present(users, now=1_004)
    assert away is not first and members_of(joined(away))[0]["away"] is True
    assert states.present(users, now=4_999) is away
    expired = states.present(users, now=5_000)
    assert expired is not away
    assert members_of(joined(expired))[1]["status_text"] is None
    assert states.present(list(users), now=5_001) is not expired  # another batch's list
