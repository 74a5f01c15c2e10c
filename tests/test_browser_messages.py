"""End-to-end tests of messages that change: edits, deletes, reactions and replies.

Two people, each in their own browser context, against a real `run.py` (fixtures and
the `User` page object of test_browser.py). Everything is awaited through
Playwright's auto-waiting `expect`, never a sleep.
"""

from __future__ import annotations

import re

from playwright.sync_api import Locator, expect

from tests import test_browser
from tests.proxy import TcpProxy
from tests.test_browser import RECONNECT_MS, User, unique

# test_browser.py's fixtures, found by pytest under these module-level names.
browser = test_browser.browser
make_server = test_browser.make_server
server = test_browser.server
people = test_browser.people


# ----- helpers ------------------------------------------------------------------------


def message(user: User, text: str) -> Locator:
    """The confirmed message whose own text (not a quote of it) contains `text`."""
    body = user.page.get_by_test_id("message-body").filter(has_text=text)
    return user.sent().filter(has=body).last


def act(user: User, msg: Locator, item: str) -> None:
    """Open the message's menu (the "⋯" button) and pick an item."""
    msg.hover()
    msg.get_by_test_id("message-actions").click()
    expect(user.page.get_by_role("menu")).to_be_visible()
    user.t(item).click()


def reaction(msg: Locator, emoji: str) -> Locator:
    return msg.locator(f'[data-testid="reaction"][data-emoji="{emoji}"]')


def react_with(user: User, msg: Locator, emoji: str) -> None:
    act(user, msg, "msg-react")
    expect(user.t("emoji-dialog")).to_be_visible()
    user.t("emoji-grid").locator(f'[data-emoji="{emoji}"]').click()
    expect(user.t("emoji-dialog")).to_be_hidden()


def two_in_a_room(server_url: str, people, alice_url: str | None = None) -> tuple[User, User, str]:
    alice = people(alice_url or server_url, unique("alice"))
    bob = people(server_url, unique("bob"))
    # A new account starts in #general; the room list and that room have loaded
    # before Bob goes on (as a person would: the screen is still filling in).
    bob.expect_room_title("general")
    expect(bob.t("message-log")).to_have_attribute("aria-busy", "false")
    room = unique("life")
    bob.create_room(room)
    alice.page.reload()
    alice.open_room(room)
    return alice, bob, room


# ----- tests --------------------------------------------------------------------------


def test_edit_in_place_escape_cancels_and_the_other_sees_the_edit_live(server, people):
    alice, bob, _ = two_in_a_room(server.url, people)
    alice.say("deploy at 14:00")
    bob.wait_for_body("deploy at 14:00")

    # Escape leaves the text as it was.
    act(alice, message(alice, "deploy at"), "msg-edit")
    box = alice.t("edit-input")
    expect(box).to_be_focused()
    expect(box).to_have_value("deploy at 14:00")
    box.fill("deploy at 16:00")
    box.press("Escape")
    expect(alice.t("edit-input")).to_have_count(0)
    expect(message(alice, "deploy at").get_by_test_id("message-body")).to_have_text(
        "deploy at 14:00")
    expect(message(alice, "deploy at").get_by_test_id("message-actions")).to_be_focused()

    # Shift+Enter is a new line, Enter saves; both see the new text and "(edited)".
    act(alice, message(alice, "deploy at"), "msg-edit")
    box = alice.t("edit-input")
    box.fill("deploy at 15:00")
    box.press("Shift+Enter")
    box.press_sequentially("(after lunch)")
    box.press("Enter")
    for user in (alice, bob):
        msg = message(user, "deploy at")
        expect(msg.get_by_test_id("message-body")).to_have_text("deploy at 15:00\n(after lunch)")
        expect(msg.get_by_test_id("edited")).to_have_text("(edited)")
        expect(msg.get_by_test_id("edited")).to_have_attribute("title", re.compile(r"^Edited "))
    # Bob owns the room: he may delete Alice's message, not edit it.
    msg = message(bob, "deploy at")
    msg.hover()
    msg.get_by_test_id("message-actions").click()
    expect(bob.t("msg-reply")).to_be_visible()
    expect(bob.t("msg-edit")).to_have_count(0)
    expect(bob.t("msg-delete")).to_have_count(1)
    bob.page.keyboard.press("Escape")
    expect(bob.page.get_by_role("menu")).to_have_count(0)
    # Alice, a member, may do neither to Bob's; the menu is reachable by keyboard.
    bob.say("noted")
    msg = message(alice, "noted")
    msg.get_by_test_id("message-actions").focus()
    alice.page.keyboard.press("ArrowDown")
    expect(alice.t("msg-reply")).to_be_focused()
    expect(alice.t("msg-edit")).to_have_count(0)
    expect(alice.t("msg-delete")).to_have_count(0)
    alice.page.keyboard.press("Escape")
    expect(msg.get_by_test_id("message-actions")).to_be_focused()
    # No event line for the edit, and it is not unread for anyone.
    expect(bob.page.locator('[data-testid="event"][data-event="edited"]')).to_have_count(0)


def test_delete_asks_first_and_leaves_a_tombstone_for_both(server, people):
    alice, bob, _ = two_in_a_room(server.url, people)
    alice.say("oops, wrong room")
    alice.say("this one stays")
    bob.wait_for_body("this one stays")

    act(alice, message(alice, "oops"), "msg-delete")
    dialog = alice.t("confirm-dialog")
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text("oops, wrong room")
    expect(alice.t("confirm-cancel")).to_be_focused()
    alice.t("confirm-cancel").click()
    expect(dialog).to_be_hidden()
    expect(message(alice, "oops").get_by_test_id("message-body")).to_have_text("oops, wrong room")

    act(alice, message(alice, "oops"), "msg-delete")
    alice.t("confirm-delete").click()
    for user in (alice, bob):
        tomb = user.sent().filter(has=user.page.get_by_test_id("tombstone"))
        expect(tomb).to_have_count(1)
        expect(tomb.get_by_test_id("tombstone")).to_have_text("This message was deleted")
        expect(tomb.get_by_test_id("message-actions")).to_have_count(0)
        expect(user.sent().filter(has_text="oops")).to_have_count(0)
        expect(message(user, "this one stays")).to_be_visible()
    # After a reload the tombstone comes from the server's page.
    bob.page.reload()
    expect(bob.t("tombstone")).to_have_count(1)
    expect(bob.sent().filter(has_text="oops")).to_have_count(0)


def test_reactions_from_the_picker_count_both_and_toggle_off(server, people):
    alice, bob, _ = two_in_a_room(server.url, people)
    alice.say("shipped it")
    bob.wait_for_body("shipped it")

    react_with(bob, message(bob, "shipped it"), "🎉")
    for user in (alice, bob):
        chip = reaction(message(user, "shipped it"), "🎉")
        expect(chip.get_by_test_id("reaction-count")).to_have_text("1")
    expect(reaction(message(bob, "shipped it"), "🎉")).to_have_attribute("aria-pressed", "true")
    alice_chip = reaction(message(alice, "shipped it"), "🎉")
    expect(alice_chip).to_have_attribute("aria-pressed", "false")
    expect(alice_chip).to_have_attribute("aria-label", re.compile(bob.name))

    # Alice adds hers by clicking the chip: 2 for both, highlighted for each.
    alice_chip.click()
    for user in (alice, bob):
        chip = reaction(message(user, "shipped it"), "🎉")
        expect(chip.get_by_test_id("reaction-count")).to_have_text("2")
        expect(chip).to_have_attribute("aria-pressed", "true")
    expect(reaction(message(bob, "shipped it"), "🎉")).to_have_attribute(
        "aria-label", re.compile(rf"you, {alice.name}|{alice.name}, you"))

    # A shortcode from the picker's field.
    act(alice, message(alice, "shipped it"), "msg-react")
    alice.t("emoji-code").fill("rocket")
    alice.t("emoji-code-submit").click()
    expect(reaction(message(bob, "shipped it"), ":rocket:")).to_contain_text("🚀")

    # Bob takes his back: 1, no longer his.
    reaction(message(bob, "shipped it"), "🎉").click()
    for user in (alice, bob):
        chip = reaction(message(user, "shipped it"), "🎉")
        expect(chip.get_by_test_id("reaction-count")).to_have_text("1")
    expect(reaction(message(bob, "shipped it"), "🎉")).to_have_attribute("aria-pressed", "false")
    # Alice too: the chip goes.
    reaction(message(alice, "shipped it"), "🎉").click()
    for user in (alice, bob):
        expect(reaction(message(user, "shipped it"), "🎉")).to_have_count(0)
    bob.page.reload()
    expect(reaction(message(bob, "shipped it"), "🎉")).to_have_count(0)
    expect(reaction(message(bob, "shipped it"), ":rocket:")).to_have_count(1)


def test_reply_quotes_the_original_counts_replies_and_the_quote_leads_back(server, people):
    alice, bob, room = two_in_a_room(server.url, people)
    alice.say("who has the release checklist?")
    # Enough messages after it that it scrolls out of view.
    bob.start_seeding(room, [f"filler {i}" for i in range(40)])
    bob.finish_seeding()
    alice.wait_for_body("filler 39")
    bob.wait_for_body("filler 39")

    # Bob answers from the message's menu (Reply): the composer says what he answers.
    orig = message(bob, "release checklist")
    orig.scroll_into_view_if_needed()
    act(bob, orig, "msg-reply")
    expect(bob.t("reply-bar")).to_be_visible()
    expect(bob.t("reply-author")).to_have_text(alice.name)
    expect(bob.t("composer-input")).to_be_focused()
    bob.say("I do, sharing it now")
    expect(bob.t("reply-bar")).to_be_hidden()

    for user in (alice, bob):
        reply = message(user, "sharing it now")
        expect(reply.get_by_test_id("quote-author")).to_have_text(alice.name)
        expect(reply.get_by_test_id("quote-text")).to_have_text("who has the release checklist?")
        expect(message(user, "release checklist").get_by_test_id("replies")).to_have_text("1 reply")

    # The quote leads back to the original, highlighted.
    original = message(alice, "who has the release")
    expect(original).not_to_be_in_viewport()
    message(alice, "sharing it now").get_by_test_id("reply-quote").click()
    expect(original).to_be_in_viewport()
    expect(original).to_have_class(re.compile(r"\bflash\b"))

    # A newcomer whose page does not hold the original gets it fetched for the quote.
    carol = people(server.url, unique("carol"))
    carol.page.reload()
    carol.open_room(room)
    expect(message(carol, "sharing it now").get_by_test_id("quote-text")).to_have_text(
        "who has the release checklist?")
    # Escape cancels a reply before it is sent.
    act(carol, message(carol, "sharing it now"), "msg-reply")
    expect(carol.t("reply-bar")).to_be_visible()
    carol.t("composer-input").press("Escape")
    expect(carol.t("reply-bar")).to_be_hidden()


def test_changes_made_while_a_reader_is_offline_show_when_it_returns(server, people):
    proxy = TcpProxy(server.port)
    try:
        alice, bob, _ = two_in_a_room(server.url, people, alice_url=proxy.url)
        bob.say("first: to be edited")
        bob.say("second: to be deleted")
        bob.say("third: to be liked")
        alice.wait_for_body("third: to be liked")

        proxy.cut()
        expect(alice.t("conn-banner")).to_be_visible()
        act(bob, message(bob, "first:"), "msg-edit")
        bob.t("edit-input").fill("first: edited while you were away")
        bob.t("edit-input").press("Enter")
        act(bob, message(bob, "second:"), "msg-delete")
        bob.t("confirm-delete").click()
        react_with(bob, message(bob, "third:"), "👍")
        expect(message(bob, "first:")).to_contain_text("edited while you were away")
        expect(bob.t("tombstone")).to_have_count(1)
        expect(reaction(message(bob, "third:"), "👍")).to_have_count(1)
        # Alice still shows the old state.
        expect(message(alice, "first:").get_by_test_id("message-body")).to_have_text(
            "first: to be edited")
        expect(alice.t("tombstone")).to_have_count(0)

        proxy.resume()
        alice.reconnect_now()
        expect(alice.t("conn-banner")).to_be_hidden(timeout=RECONNECT_MS)
        expect(message(alice, "first:").get_by_test_id("message-body")).to_have_text(
            "first: edited while you were away")
        expect(message(alice, "first:").get_by_test_id("edited")).to_be_visible()
        expect(alice.t("tombstone")).to_have_count(1)
        expect(alice.sent().filter(has_text="second:")).to_have_count(0)
        liked = reaction(message(alice, "third:"), "👍")
        expect(liked.get_by_test_id("reaction-count")).to_have_text("1")
        expect(alice.page.locator('[data-testid="event"][data-event]').filter(
            has_text=re.compile("edited|deleted|reacted"))).to_have_count(0)
        assert alice.seqs() == bob.seqs()
    finally:
        proxy.close()


def test_changes_made_while_offline_go_out_on_reconnect(server, people):
    proxy = TcpProxy(server.port)
    try:
        alice, bob, _ = two_in_a_room(server.url, people, alice_url=proxy.url)
        alice.say("typo here")
        bob.wait_for_body("typo here")
        proxy.cut()
        expect(alice.t("conn-banner")).to_be_visible()
        act(alice, message(alice, "typo"), "msg-edit")
        alice.t("edit-input").fill("typo fixed")
        alice.t("edit-input").press("Enter")
        react_with(alice, message(alice, "typo"), "👀")
        proxy.resume()
        alice.reconnect_now()
        expect(message(bob, "typo").get_by_test_id("message-body")).to_have_text("typo fixed",
                                                                                 timeout=RECONNECT_MS)
        expect(reaction(message(bob, "typo"), "👀")).to_have_count(1)
        expect(message(alice, "typo").get_by_test_id("message-body")).to_have_text("typo fixed")
    finally:
        proxy.close()
