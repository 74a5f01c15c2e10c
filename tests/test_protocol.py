"""The wire schema: every frame parses to a typed object or raises ProtocolError."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server import protocol
from server.protocol import ProtocolError, parse


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


def test_dump_is_compact_utf8_json():
    assert protocol.dump({"a": "é", "b": [1]}) == '{"a":"é","b":[1]}'


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
