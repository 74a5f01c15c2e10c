"""What processes say to each other through Redis: envelopes and control commands."""

from __future__ import annotations

import pytest

from server.envelope import (
    CloseCredential,
    CloseUser,
    Envelope,
    EnvelopeError,
    Handover,
    MemberChange,
    Unpublished,
    decode_command,
    encode_command,
)


def test_an_envelope_round_trips_with_its_frames_in_order():
    frames = [(7, b'{"type":"message","seq":7}'), (8, b'{"type":"message","seq":8}'),
              (0, b'{"type":"typing"}')]
    envelope = Envelope(b"node-1", b"node-1.42", 1700000000.25, frames)
    again = Envelope.decode(envelope.encode())
    assert again == envelope


def test_an_envelope_without_exclusion_decodes_to_an_empty_one():
    payload = Envelope(b"n", b"", 1.5, [(1, b"{}")]).encode()
    assert payload.startswith(b"n - 1.500000\n")
    assert Envelope.decode(payload).exclude == b""


def test_frames_keep_tabs_and_spaces_inside_them():
    frames = [(3, b'{"body":"a\\tb c"}')]
    assert Envelope.decode(Envelope(b"n", b"", 0.0, frames).encode()).frames == frames


@pytest.mark.parametrize("payload", [b"", b"n -", b"n - x\n1\t{}", b"n - 1.0\nseven\t{}"])
def test_a_malformed_envelope_is_an_envelope_error(payload):
    with pytest.raises(EnvelopeError):
        Envelope.decode(payload)


@pytest.mark.parametrize("command", [
    CloseCredential("a" * 64),
    Unpublished("node-2", "general", 5, 9),
    MemberChange("node-1", "ops", "6b08", "removed", {"room": "ops", "reason": "banned",
                                                      "until": None}),
    CloseUser(("a" * 24,), 1008, "account deactivated"),
    CloseUser(("a" * 24, "b" * 24, "c" * 24), 1008, "account deactivated"),
    Handover("9f1c2e", 1765000000123),
])
def test_commands_round_trip(command):
    assert decode_command(encode_command(command)) == command


def test_commands_keep_their_documented_wire_form():
    # Processes of two releases share the control channel during a rolling deploy.
    assert encode_command(CloseCredential("abc")) == b"close-credential abc"
    assert encode_command(Unpublished("n", "r", 1, 2)) == b"unpublished n r 1 2"
    assert (encode_command(CloseUser(("u1", "u2"), 1008, "account deactivated"))
            == b"close-user 1008 u1,u2 account deactivated")
    assert encode_command(Handover("n", 1765000000123)) == b"handover n 1765000000123"


@pytest.mark.parametrize("payload", [b"", b"close-credential", b"unpublished n r 1",
                                     b"unpublished n r one 2", b"reboot now", b"\xff\xfe",
                                     b"member [1,2]", b'member ["n","r","u","c",[]]',
                                     b"member {",
                                     b"close-user", b"close-user 1008 u1", b"close-user x u1 r",
                                     b"close-user 1008 u1,,u2 r",
                                     b"handover", b"handover n", b"handover  5",
                                     b"handover n soon", b"handover n 1 2"])
def test_a_malformed_command_is_an_envelope_error(payload):
    with pytest.raises(EnvelopeError):
        decode_command(payload)
