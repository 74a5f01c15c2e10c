"""End-to-end tests of the browser's outbox: what the user sent reaches the room once,
whatever happens to the connection, the store or the page in between (§12-§13).

A real `run.py` and Chromium (fixtures and the `User` page object of test_browser.py).
The network faults are real: the browser talks to the server through a loopback relay
(tests/proxy.py) whose WebSocket connections a test can make go silent or refuse.
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pymongo
import pytest
from playwright.sync_api import Dialog, Locator, Route, expect

from tests import test_browser
from tests.proxy import TcpProxy
from tests.services import Services
from tests.test_browser import RECONNECT_MS, User
from tests.test_browser_messages import act, message, two_in_a_room

# test_browser.py's fixtures, found by pytest under these module-level names.
browser = test_browser.browser
make_server = test_browser.make_server
server = test_browser.server
people = test_browser.people

Pair = tuple[socket.socket, socket.socket]


class WsProxy(TcpProxy):
    """A TcpProxy that tells WebSocket connections (an upgrade of `GET /ws`) from plain
    HTTP ones, and can fail them the two ways a network does: silently (bytes are
    dropped, and the browser never learns that the server side went), or by refusing
    new ones. Page loads and API calls keep working throughout."""

    def __init__(self, target: int | Path) -> None:
        self.ws_pairs: set[Pair] = set()
        self.deaf: set[socket.socket] = set()  # sockets whose bytes are dropped
        self.silent: set[Pair] = set()  # their browser side stays open whatever happens
        self.ws_refused = False
        self.marked = threading.Condition()
        super().__init__(target)

    def _pump(self, src: socket.socket, dst: socket.socket, pair: Pair) -> None:
        first = src is pair[0]
        try:
            while data := src.recv(65536):
                if first:
                    first = False
                    if data.startswith(b"GET /ws"):
                        with self.marked:
                            self.ws_pairs.add(pair)
                            self.marked.notify_all()
                        if self.ws_refused:
                            break
                if src not in self.deaf:
                    dst.sendall(data)
        except OSError:
            pass
        if pair in self.silent:
            # The server's side may close (its ping timed out); the browser's must not
            # hear of it: a dead route says nothing.
            with contextlib.suppress(OSError):
                pair[1].close()
            return
        self._drop(pair)

    def _live_ws(self) -> list[Pair]:
        with self.lock:
            return [p for p in self.ws_pairs if p in self.pairs]

    def wait_for_ws(self) -> None:
        """Until a WebSocket connection is relayed (the page connected)."""
        with self.marked:
            assert self.marked.wait_for(lambda: bool(self._live_ws()), timeout=RECONNECT_MS / 1000)

    def silence(self, *, up: bool, down: bool) -> None:
        """From now on drop what the open WebSocket connections carry: browser to server
        (`up`), server to browser (`down`). New connections are relayed as usual."""
        for pair in self._live_ws():
            self.silent.add(pair)
            if up:
                self.deaf.add(pair[0])
            if down:
                self.deaf.add(pair[1])

    def refuse_ws(self) -> None:
        """Drop the WebSocket connections and refuse new ones until allow_ws()."""
        self.ws_refused = True
        for pair in self._live_ws():
            self.silent.discard(pair)
            self._drop(pair)

    def allow_ws(self) -> None:
        self.ws_refused = False


@pytest.fixture
def proxy(server) -> Iterator[WsProxy]:
    relay = WsProxy(server.port)
    yield relay
    relay.close()


FAILED_WATCH_JS = """() => {
  // Whether a message of the user ever showed as failed ("Not sent", Retry, Discard).
  window.__failedSeen = false;
  const check = () => {
    if (document.querySelector('[data-testid="message"][data-state="failed"]')) {
      window.__failedSeen = true;
    }
  };
  new MutationObserver(check).observe(document.body,
    { subtree: true, childList: true, attributes: true, attributeFilter: ['data-state'] });
  check();
}"""


def watch_for_failures(user: User) -> None:
    user.page.evaluate(FAILED_WATCH_JS)


def nothing_failed(user: User) -> None:
    assert user.page.evaluate("window.__failedSeen") is False
    notices = user.page.evaluate("window.__notices")
    assert not [n for n in notices if "failed" in n.lower() or "not sent" in n.lower()], notices


def pending(user: User) -> Locator:
    return user.page.locator('[data-testid="message"][data-state="pending"]')


def once_each(user: User, *texts: str) -> None:
    for text in texts:
        assert user.bodies().count(text) == 1, (text, user.bodies())


def reload_leaving_unsent(user: User) -> None:
    """Reload although the page warns that messages are unsent (its beforeunload), as
    a person who confirms "Leave" does: the tab's storage keeps them."""
    warned: list[str] = []

    def leave(dialog: Dialog) -> None:
        if dialog.type == "beforeunload":
            warned.append(dialog.type)
            dialog.accept()
        else:
            user._dialog(dialog)  # anything else is a problem, as in every test

    user.page.remove_listener("dialog", user._dialog)
    user.page.on("dialog", leave)
    try:
        user.page.reload()
    finally:
        user.page.remove_listener("dialog", leave)
        user.page.on("dialog", user._dialog)
    assert warned, "the page did not say that a message was unsent"


def assert_contiguous(user: User) -> list[int]:
    seqs = user.record_seqs()
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), seqs
    return seqs


# ----- tests --------------------------------------------------------------------------


@pytest.mark.parametrize("lost", ["both ways", "server to browser"])
def test_sends_on_a_silently_dead_connection_go_out_again_once(server, people, proxy, lost):
    """No ack within the timeout: the client gives up on the socket, reconnects and
    resends with the same client_ids, so a message that never arrived is delivered and
    one whose ack was lost is not doubled; an edit is not dropped either."""
    alice, bob, _ = two_in_a_room(server.url, people, alice_url=proxy.url)
    alice.say("before the silence")
    bob.wait_for_body("before the silence")
    proxy.wait_for_ws()
    watch_for_failures(alice)

    proxy.silence(up=lost == "both ways", down=True)
    alice.say("into the void")
    act(alice, message(alice, "before the silence"), "msg-edit")
    alice.t("edit-input").fill("before the silence, edited")
    alice.t("edit-input").press("Enter")
    expect(pending(alice)).to_have_count(1)
    expect(alice.t("conn-banner")).to_be_hidden()  # the socket looks fine

    # The client stops waiting for the acks, replaces the connection and resends.
    expect(pending(alice)).to_have_count(0, timeout=RECONNECT_MS)
    for user in (alice, bob):
        user.wait_for_body("into the void")
        expect(message(user, "before the silence").get_by_test_id("message-body")).to_have_text(
            "before the silence, edited")
    # A message sent after the resends reaches Bob after them: any double would be in.
    alice.say("and back")
    bob.wait_for_body("and back")
    for user in (alice, bob):
        once_each(user, "into the void", "and back")
    assert alice.seqs() == bob.seqs()
    nothing_failed(alice)


def test_a_send_the_store_refuses_is_retried_until_stored_once(server, people, services: Services):
    """`unavailable` is not a failure: the message waits, says why, and goes out again
    with its client_id (after a growing backoff) once the store is back; no click."""
    alice = people(server.url, test_browser.unique("alice"))
    bob = people(server.url, test_browser.unique("bob"))
    bob.expect_room_title("general")
    watch_for_failures(alice)
    with pymongo.MongoClient(services.mongo_url) as mongo:
        mongo.admin.command({"configureFailPoint": "failCommand", "mode": "alwaysOn",
                             "data": {"failCommands": ["insert", "update"], "errorCode": 2}})
        try:
            alice.say("when the store is back")
            status = pending(alice).get_by_test_id("message-status")
            expect(status).to_have_text(re.compile("cannot store messages.*Retrying"))
        finally:
            mongo.admin.command({"configureFailPoint": "failCommand", "mode": "off"})
    for user in (alice, bob):
        user.wait_for_body("when the store is back", timeout=RECONNECT_MS)
    expect(pending(alice)).to_have_count(0)
    alice.say("and after")
    bob.wait_for_body("and after")
    for user in (alice, bob):
        once_each(user, "when the store is back", "and after")
    nothing_failed(alice)


def test_unsent_messages_survive_a_reload_whose_room_list_fails(server, people, proxy):
    """The room list does not load at boot: the saved unsent message waits for it
    instead of being forgotten, and goes out once the rooms are known."""
    alice, bob, room = two_in_a_room(server.url, people, alice_url=proxy.url)
    proxy.refuse_ws()
    expect(alice.t("conn-banner")).to_be_visible()
    alice.say("written offline")
    expect(pending(alice).get_by_test_id("message-status")).to_have_text(
        "Waiting for the connection…")

    refused: list[str] = []

    def fail_once(route: Route) -> None:
        if route.request.method == "GET" and not refused:
            refused.append(route.request.url)
            route.fulfill(status=503, json={"error": {"code": "unavailable",
                                                      "message": "try again"}})
        else:
            route.continue_()

    rooms_url = re.compile(r"/api/rooms(\?.*)?$")
    alice.page.route(rooms_url, fail_once)
    with alice.page.expect_response(rooms_url) as answer:
        reload_leaving_unsent(alice)
    assert answer.value.status == 503 and refused
    expect(alice.t("chat-screen")).to_be_visible()
    expect(alice.t("conn-banner")).to_be_visible()

    proxy.allow_ws()
    alice.reconnect_now()
    expect(alice.t("conn-banner")).to_be_hidden(timeout=RECONNECT_MS)
    bob.wait_for_body("written offline")
    alice.open_room(room)
    alice.wait_for_body("written offline")
    expect(pending(alice)).to_have_count(0)
    # Nothing is left to send after another reload.
    alice.page.reload()
    alice.open_room(room)
    expect(alice.sent().filter(has_text="written offline")).to_have_count(1)
    expect(pending(alice)).to_have_count(0)
    once_each(bob, "written offline")


def test_a_resent_message_from_long_ago_leaves_no_hole_in_scrollback(server, people, proxy):
    """A message stored long ago whose ack was lost is resent after a reload; its ack
    carries a seq far below the page shown, which must not be put at the top of the log
    (paging back from there would skip everything in between)."""
    alice, bob, room = two_in_a_room(server.url, people, alice_url=proxy.url)
    alice.say("an early word")
    bob.wait_for_body("an early word")
    proxy.wait_for_ws()
    proxy.silence(up=False, down=True)  # the server stores it; its ack is lost
    alice.say("said long ago")
    bob.wait_for_body("said long ago")
    proxy.refuse_ws()  # Alice stays away while the room moves on
    later = [f"later {i}" for i in range(60)]
    bob.start_seeding(room, later)
    assert bob.finish_seeding() == len(later)

    # The reload finds the unsent message in the tab's storage; it goes out once the
    # room has joined, on a page of the latest records only.
    reload_leaving_unsent(alice)
    expect(alice.t("chat-screen")).to_be_visible()
    proxy.allow_ws()
    alice.reconnect_now()
    expect(alice.t("conn-banner")).to_be_hidden(timeout=RECONNECT_MS)
    alice.open_room(room)
    alice.wait_for_body("later 59")
    expect(pending(alice)).to_have_count(0)  # the resend's ack settled it
    expect(alice.sent().filter(has_text="said long ago")).to_have_count(0)  # not on this page
    assert_contiguous(alice)

    # Scrolling back brings it, in its place, and everything in between.
    log = alice.t("message-log")
    for _ in range(5):
        if alice.t("log-start").is_visible():
            break
        held = alice.records().count()
        log.evaluate("el => { el.scrollTop = 0; }")
        alice.page.wait_for_function(MORE_OR_START_JS, arg=held)
    expect(alice.t("log-start")).to_be_visible()
    seqs = assert_contiguous(alice)
    assert seqs[0] == 1, seqs
    once_each(alice, "an early word", "said long ago", *later)


MORE_OR_START_JS = """(held) => document.getElementById('log-start').checkVisibility()
  || document.querySelectorAll(
    '[data-testid="message"][data-state="sent"], [data-testid="event"]').length > held"""
