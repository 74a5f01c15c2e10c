"""The wire schema: every frame parses to a typed object or raises ProtocolError."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server import protocol
from server.model import Message, User
from server.presence_frames import presence_frame
from server.protocol import ProtocolError, parse
from server.status import Shown


def test_parses_each_client_frame_type():
    assert parse('{"type":"join","room":"general","since":4,"ref":"a"}') == protocol.Join(
        "general", 4, "a")
    assert parse('{"type":"leave","room":"r-1"}') == protocol.Leave("r-1")
    assert parse('{"type":"send","room":"r","body":"hi","client_id":"c.1"}') == protocol.Send(
        "r", "hi", "c.1")
    assert parse('{"type":"history","room":"r","before":9,"limit":500}') == protocol.History(
        "r", 9, None, 100)
    assert parse('{"type":"typing","room":"r"}') == protocol.Typing("r")
    assert parse('{"type":"ping","ref":3}') == protocol.Ping(3)
    assert parse('{"type":"activity","state":"idle"}') == protocol.Activity(True)
    assert parse('{"type":"activity","state":"active","ref":1}') == protocol.Activity(False, 1)


def test_history_limit_is_clamped_and_defaults_to_50():
    assert parse('{"type":"history","room":"r"}').limit == 50
    assert parse('{"type":"history","room":"r","limit":0}').limit == 1
    assert parse('{"type":"history","room":"r","limit":-5}').limit == 1


@pytest.mark.parametrize(("text", "code"), [
    ('{"type":"send","room":"r","body":"x","extra":true}', None),
    ('{"type":"join","room":"r","since":true}', "bad_request"),
    ('{"type":"join","room":"r","since":1.5}', "bad_request"),
    ('{"type":"join","room":"r","since":99999999999999999999999}', "bad_request"),
    ('{"type":"join","room":"-r"}', "bad_request"),
    ('{"type":"join","room":"' + "a" * 65 + '"}', "bad_request"),
    ('{"type":"send","room":"r","body":"\\ud800"}', "bad_request"),
    ('{"type":"ping","ref":{"a":1}}', "bad_request"),
    ('{"type":"ping","ref":true}', "bad_request"),
    ('{"type":"ping","ref":"' + "r" * 65 + '"}', "bad_request"),
    ('{"type":"PING"}', "unknown_type"),
    ('{"type":"activity"}', "bad_request"),
    ('{"type":"activity","state":"away"}', "bad_request"),
    ('{"type":"send","room":"r","body":NaN}', "bad_request"),
    ('{"type":"send","room":"r","body":"x","client_id":"has space"}', "bad_request"),
])
def test_invalid_fields_raise_the_documented_code(text, code):
    if code is None:
        assert isinstance(parse(text), protocol.Send)  # unknown fields are ignored
        return
    with pytest.raises(ProtocolError) as err:
        parse(text)
    assert err.value.code == code


def test_error_keeps_the_ref_of_a_frame_it_rejects():
    with pytest.raises(ProtocolError) as err:
        parse('{"type":"send","room":"r","body":"","ref":"x1"}')
    assert err.value.ref == "x1"


@pytest.mark.parametrize(("body", "message"), [
    ("", "body must not be empty"),
    (" \n\t ", "body must not be whitespace only"),
])
def test_an_empty_and_a_blank_body_are_told_apart(body, message):
    with pytest.raises(ProtocolError) as err:
        parse(json.dumps({"type": "send", "room": "r", "body": body}))
    assert (err.value.code, err.value.message) == ("bad_request", message)


ANN = User("u1", "ann")
MESSAGE = Message("general", "m1", 7, ANN, "héllo", 1700000000000, "c-1")


def test_dump_is_compact_utf8_json_with_type_first_and_ref_last():
    assert protocol.dump(MESSAGE, ref="r1") == (
        '{"type":"message","room":"general","id":"m1","seq":7,'
        '"user":{"id":"u1","name":"ann","bot":false},"body":"héllo","ts":1700000000000,'
        '"client_id":"c-1","ref":"r1"}').encode()


def _wire(frame, ref=None):
    return json.loads(protocol.dump(frame, ref))


def test_each_server_frame_has_its_documented_fields():
    user = {"id": "u1", "name": "ann", "bot": False}
    assert _wire(protocol.Hello(ANN, "node-1")) == {
        "type": "hello", "protocol": protocol.PROTOCOL_VERSION, "user": user, "node": "node-1"}
    assert _wire(protocol.Joined("general", 7, [ANN], [MESSAGE], False), 3) == {
        "type": "joined", "room": "general", "last_seq": 7, "members": [user],
        "messages": [_wire(MESSAGE)], "has_more": False, "ref": 3}
    assert _wire(protocol.Left("general")) == {"type": "left", "room": "general"}
    assert _wire(protocol.Ack.of(MESSAGE)) == {
        "type": "ack", "room": "general", "client_id": "c-1", "id": "m1", "seq": 7,
        "ts": 1700000000000}
    assert _wire(protocol.HistoryPage("general", [MESSAGE], True)) == {
        "type": "history", "room": "general", "messages": [_wire(MESSAGE)], "has_more": True}
    assert _wire(protocol.TypingNow("general", ANN)) == {
        "type": "typing", "room": "general", "user": user}
    assert _wire(protocol.PresenceChange("general", ANN, "online")) == {
        "type": "presence", "room": "general", "user": user, "status": "online",
        "away": False, "status_text": None, "status_until": None}
    assert _wire(protocol.PresenceChange("general", ANN, "online", True, "Lunch", 17)) == {
        "type": "presence", "room": "general", "user": user, "status": "online",
        "away": True, "status_text": "Lunch", "status_until": 17}
    assert _wire(protocol.Pong(), "p") == {"type": "pong", "ref": "p"}


def test_error_frames_carry_client_id_and_retry_after_only_when_known():
    assert _wire(protocol.Error("bad_request", "no")) == {
        "type": "error", "code": "bad_request", "message": "no"}
    assert _wire(protocol.Error("rate_limited", "slow down", "c-1", 0.5), 9) == {
        "type": "error", "code": "rate_limited", "message": "slow down", "client_id": "c-1",
        "retry_after": 0.5, "ref": 9}


def test_a_message_survives_its_stored_document_shape():
    doc = {"_id": "m1", "room": "general", "seq": 7, "user": ANN.as_dict(), "body": "héllo",
           "ts": 1700000000000, "client_id": "c-1", "ckey": "general|u1|c-1"}
    assert Message.from_doc(doc) == MESSAGE
    assert User.from_doc({"_id": "u1", "name": "ann", "bot": False, "password": b"x"}) == ANN


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True)
    | st.text(alphabet=st.characters(codec=None)),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
frame_like = st.fixed_dictionaries(
    {"type": st.sampled_from(["join", "leave", "send", "history", "typing", "ping", "x"])},
    optional={"room": json_values | st.sampled_from(["general", "a", "A"]),
              "body": json_values, "since": json_values, "before": json_values,
              "after": json_values, "limit": json_values, "client_id": json_values,
              "ref": json_values},
)


@settings(max_examples=400, deadline=None)
@given(st.one_of(json_values, frame_like))
def test_any_json_value_parses_or_raises_protocol_error(value):
    text = json.dumps(value)
    try:
        frame = parse(text)
    except ProtocolError as e:
        assert e.code in {"bad_request", "unknown_type", "too_large"}
        return
    # Whatever parsed must be serializable back to UTF-8 JSON without surprises.
    for field in getattr(frame, "__slots__", ()):
        value = getattr(frame, field)
        if isinstance(value, str):
            value.encode("utf-8")


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(codec=None), max_size=200))
def test_arbitrary_text_never_escapes_as_another_exception(text):
    try:
        parse(text)
    except ProtocolError:
        pass


def test_deep_nesting_is_bad_request_not_recursion_error():
    with pytest.raises(ProtocolError) as err:
        parse("[" * 100000 + "]" * 100000)
    assert err.value.code == "bad_request"


@settings(max_examples=200, deadline=None)
@given(room=st.text(min_size=1, max_size=40), name=st.text(max_size=40), bot=st.booleans(),
       status=st.sampled_from(["online", "offline"]), away=st.booleans(),
       text=st.none() | st.text(max_size=60), until=st.none() | st.integers(0, 2**53))
def test_a_presence_frame_made_from_parts_is_the_frame_dump_makes(
        room, name, bot, status, away, text, until):
    # Presence frames are joined from pieces serialized once (a disconnect storm makes
    # ten thousand): byte for byte what the one encoder of frames would make.
    user = User("6b085a124e792b331343bf87", name, bot)
    made = presence_frame(room, user, (status, Shown(away, text, until)))
    assert made == protocol.dump(protocol.PresenceChange(room, user, status, away, text, until))
    assert json.loads(made)["user"] == {"id": user.id, "name": name, "bot": bot}
