"""End-to-end tests of rooms, membership and moderation in the browser client.

Two or three people, each in their own browser context, against a real `run.py`
(fixtures and the `User` page object of test_browser.py). Everything is awaited through
Playwright's auto-waiting `expect`, never a sleep.
"""

from __future__ import annotations

import re

from playwright.sync_api import Locator, expect

from tests import test_browser
from tests.test_browser import User

# test_browser.py's fixtures, found by pytest under these module-level names.
browser = test_browser.browser
make_server = test_browser.make_server
server = test_browser.server
people = test_browser.people

TIME = r"\d{1,2}:\d{2}"


# ----- helpers ------------------------------------------------------------------------


def current_room(user: User) -> str:
    """The name of the room on screen (a private room's carries a random suffix)."""
    item = user.page.locator('[data-testid="room-item"][aria-current="page"]')
    expect(item).to_have_count(1)
    return str(item.get_attribute("data-room"))


def create_room(user: User, title: str, *, private: bool = False, topic: str = "") -> str:
    user.t("new-room-name").fill(title)
    if private:
        user.t("new-room-private").check()
    if topic:
        user.t("new-room-topic").fill(topic)
    user.t("new-room-submit").click()
    expect(user.t("room-title")).to_have_text(re.compile(rf"{re.escape(title)}$"))
    expect(user.t("message-log")).to_have_attribute("aria-busy", "false")
    return current_room(user)


def mine(user: User, room: str) -> Locator:
    """The room's entry among the user's own channels and DMs."""
    return user.page.locator(f'#joined-rooms [data-room="{room}"], #dm-rooms [data-room="{room}"]')


def browse(user: User, room: str) -> Locator:
    return user.t("other-rooms").locator(f'[data-room="{room}"]')


def join_from_browse(user: User, room: str) -> None:
    browse(user, room).click()
    expect(user.t("room-title")).to_have_text(f"#{room}")
    expect(mine(user, room)).to_be_visible()
    expect(user.t("composer-input")).to_be_enabled()


def member(user: User, name: str) -> Locator:
    return user.page.locator(f'[data-testid="member"][data-name="{name}"]')


def act_on(user: User, name: str, action: str) -> None:
    """Open the member's menu in the members panel and pick an action."""
    member(user, name).get_by_test_id("member-actions").click()
    user.t(action).click()
    expect(user.page.get_by_role("menu")).to_have_count(0)


def events(user: User) -> Locator:
    """The text of the event lines in the room on screen."""
    return user.page.locator('[data-testid="event"] [data-testid="event-text"]')


# ----- tests --------------------------------------------------------------------------


def test_private_room_made_with_the_switch_has_a_lock_and_stays_hidden_from_others(
        server, people):
    alice = people(server.url, "alice")
    bob = people(server.url, "bob")
    carol = people(server.url, "carol")
    plans = create_room(alice, "plans", private=True, topic="Q3 launch")
    assert plans.startswith("plans-") and plans != "plans"
    expect(mine(alice, plans).get_by_test_id("lock")).to_be_visible()
    expect(mine(alice, plans)).to_have_attribute("data-kind", "private")
    expect(alice.t("room-kind")).to_have_text("Private channel")
    expect(alice.t("room-topic")).to_have_text("Q3 launch")
    expect(alice.t("room-title").get_by_test_id("lock")).to_be_visible()

    # A public room made afterwards reaches everyone's Browse list; the private one never.
    create_room(alice, "lobby")
    for other in (bob, carol):
        other.page.reload()
        expect(browse(other, "lobby")).to_be_visible()
        expect(other.page.locator(f'[data-room="{plans}"]')).to_have_count(0)
        expect(other.t("sidebar")).not_to_contain_text("plans")

    # Alice adds Bob (room menu, people picker): the room appears for him live, locked.
    alice.page.locator(f'#joined-rooms [data-room="{plans}"]').click()
    alice.t("room-menu").click()
    alice.t("add-people").click()
    expect(alice.t("dm-dialog")).to_be_visible()
    alice.t("dm-search").fill("bo")
    alice.page.locator('[data-testid="dm-result"][data-name="bob"]').click()
    expect(alice.t("dm-chosen")).to_have_text(re.compile("bob"))
    alice.t("dm-start").click()
    expect(alice.t("dm-dialog")).to_be_hidden()
    expect(mine(bob, plans).get_by_test_id("lock")).to_be_visible()
    expect(events(alice).last).to_have_text(re.compile("alice added bob"))
    mine(bob, plans).click()
    expect(bob.t("room-title")).to_have_text(re.compile("plans$"))
    bob.say("thanks for the invite")
    alice.wait_for_body("thanks for the invite")
    # Carol still sees nothing of it, even after a reload.
    carol.page.reload()
    expect(browse(carol, "lobby")).to_be_visible()
    expect(carol.page.locator(f'[data-room="{plans}"]')).to_have_count(0)
    expect(carol.t("sidebar")).not_to_contain_text("plans")


def test_browse_lists_public_rooms_with_topics_and_a_click_joins(server, people):
    alice = people(server.url, "alice")
    bob = people(server.url, "bob")
    create_room(alice, "design", topic="Pixels and fonts")
    bob.page.reload()
    expect(bob.t("browse-rooms")).to_have_attribute("aria-expanded", "true")
    expect(browse(bob, "design").get_by_test_id("browse-topic")).to_have_text("Pixels and fonts")
    expect(mine(bob, "design")).to_have_count(0)

    join_from_browse(bob, "design")
    expect(browse(bob, "design")).to_have_count(0)
    expect(bob.t("room-topic")).to_have_text("Pixels and fonts")
    expect(bob.t("room-kind")).to_have_text("Public channel")
    # Alice sees him join: a line in the log (not a message, not unread) and the roster.
    expect(events(alice).last).to_have_text(re.compile(r"^bob joined"))
    expect(alice.sent()).to_have_count(0)
    expect(member(alice, "bob")).to_have_attribute("data-online", "true")
    # Membership is the server's: another device of Bob's has the room too.
    other_device = people(server.url, "bob", sign_up=False)
    other_device.open()
    other_device.log_in()
    expect(mine(other_device, "design")).to_be_visible()


def test_new_message_picker_starts_a_dm_the_other_sees_live_and_answers(server, people):
    alice = people(server.url, "alice")
    bob = people(server.url, "bobby")
    people(server.url, "bolt")  # another match for the prefix
    alice.t("new-dm").click()
    expect(alice.t("dm-dialog")).to_be_visible()
    alice.t("dm-search").press_sequentially("bo")
    expect(alice.t("dm-result")).to_have_count(2)
    # Keyboard: the first match is highlighted; the arrows move, Enter picks.
    highlighted = alice.page.locator('[data-testid="dm-result"][aria-selected="true"]')
    expect(highlighted).to_have_attribute("data-name", "bobby")
    alice.t("dm-search").press("ArrowDown")
    expect(highlighted).to_have_attribute("data-name", "bolt")
    alice.t("dm-search").press("ArrowUp")
    expect(highlighted).to_have_attribute("data-name", "bobby")
    alice.t("dm-search").press("Enter")
    expect(alice.t("dm-chip")).to_have_text([re.compile("^bobby")])
    alice.t("dm-start").click()
    expect(alice.t("dm-dialog")).to_be_hidden()
    expect(alice.t("room-title")).to_have_text("bobby")
    expect(alice.t("room-kind")).to_have_text("Direct message")
    dm = current_room(alice)
    assert dm.startswith("dm-")
    alice.say("psst, got a minute?")

    # Bob's sidebar shows the conversation live, named after Alice, with her presence.
    item = bob.t("dm-rooms").locator(f'[data-room="{dm}"]')
    expect(item).to_have_text(re.compile("alice"))
    expect(item.get_by_test_id("dm-presence")).to_have_attribute("data-online", "true")
    expect(item.get_by_test_id("unread")).to_have_text("1")
    item.click()
    bob.wait_for_body("psst, got a minute?")
    bob.say("sure, what's up?")
    alice.wait_for_body("sure, what's up?")
    expect(alice.t("dm-rooms").locator(f'[data-room="{dm}"]').get_by_test_id("dm-presence")
           ).to_have_attribute("data-online", "true")
    # Starting it again reopens the same conversation.
    alice.open_room("general")
    alice.t("new-dm").click()
    alice.t("dm-search").fill("bobby")
    alice.page.locator('[data-testid="dm-result"][data-name="bobby"]').click()
    alice.t("dm-start").click()
    expect(alice.t("room-title")).to_have_text("bobby")
    assert current_room(alice) == dm
    alice.wait_for_body("sure, what's up?")
    expect(alice.t("dm-rooms").locator("[data-room]")).to_have_count(1)


def test_members_panel_shows_everyone_online_first_with_role_badges(server, people):
    alice = people(server.url, "alice")
    aaron = people(server.url, "aaron")
    bob = people(server.url, "bob")
    room = create_room(alice, "crew")
    for user in (aaron, bob):
        user.page.reload()
        join_from_browse(user, room)
    expect(alice.t("member")).to_have_count(3)
    act_on(alice, "aaron", "make-moderator")
    expect(member(alice, "aaron").get_by_test_id("role")).to_have_text("Mod")
    expect(events(alice).last).to_have_text(re.compile("alice made aaron a moderator"))
    expect(member(alice, "alice").get_by_test_id("role")).to_have_text("Owner")
    expect(member(alice, "bob").get_by_test_id("role")).to_have_count(0)
    # Online first, then by role: alice (owner), aaron (moderator), bob.
    names = alice.t("member").evaluate_all("els => els.map(e => e.dataset.name)")
    assert names == ["alice", "aaron", "bob"]

    # Aaron closes the app: he stays a member, shown offline, after the online ones.
    aaron.page.goto("about:blank")
    expect(member(alice, "aaron")).to_have_attribute("data-online", "false")
    expect(alice.t("member")).to_have_count(3)
    names = alice.t("member").evaluate_all("els => els.map(e => e.dataset.name)")
    assert names == ["alice", "bob", "aaron"]
    expect(alice.t("room-sub")).to_have_text("2 of 3 online")
    # Nobody but an owner/admin/moderator gets a menu; Bob has none on anyone.
    expect(bob.t("member-actions")).to_have_count(0)
    expect(bob.t("member")).to_have_count(3)


def test_moderator_kicks_a_member_who_loses_the_room_live_with_a_notice(server, people):
    alice = people(server.url, "alice")
    bob = people(server.url, "bob")
    carol = people(server.url, "carol")
    room = create_room(alice, "ops")
    for user in (bob, carol):
        user.page.reload()
        join_from_browse(user, room)
    act_on(alice, "bob", "make-moderator")
    expect(bob.t("room-menu")).to_be_visible()
    # Bob, now a moderator, has a menu on Carol but none on Alice (the owner).
    expect(member(bob, "carol").get_by_test_id("member-actions")).to_be_visible()
    expect(member(bob, "alice").get_by_test_id("member-actions")).to_have_count(0)

    # From the keyboard: Enter opens the menu, ArrowUp wraps to the last item, Enter.
    member(bob, "carol").get_by_test_id("member-actions").focus()
    bob.page.keyboard.press("Enter")
    expect(bob.t("mute-10m")).to_be_focused()
    bob.page.keyboard.press("ArrowUp")
    expect(bob.t("kick")).to_be_focused()
    bob.page.keyboard.press("Enter")

    # "by bob" comes from the "removed" event, which the server sends just before
    # room_removed (that frame does not say who): without it the notice still tells.
    expect(carol.t("notice")).to_have_text(
        re.compile(rf"^You were removed from #{room}( by bob)?\.$"))
    expect(mine(carol, room)).to_have_count(0)
    expect(carol.t("room-title")).not_to_have_text(f"#{room}")
    expect(browse(carol, room)).to_be_visible()  # a public room: she may come back
    for user in (alice, bob):
        expect(events(user).last).to_have_text(re.compile("^bob removed carol"))
        expect(member(user, "carol")).to_have_count(0)
    # Carol rejoins and reads what happened while she was out.
    join_from_browse(carol, room)
    expect(events(carol).filter(has_text="bob removed carol")).to_have_count(1)


def test_muted_member_sees_the_composer_disabled_until_unmuted(server, people):
    alice = people(server.url, "alice")
    bob = people(server.url, "bob")
    room = create_room(alice, "town")
    bob.page.reload()
    join_from_browse(bob, room)
    bob.say("first!")
    alice.wait_for_body("first!")

    act_on(alice, "bob", "mute-10m")
    expect(bob.t("composer-input")).to_be_disabled()
    expect(bob.t("composer-send")).to_be_disabled()
    expect(bob.t("composer-blocked")).to_have_text(re.compile(rf"^You are muted until .*{TIME}"))
    expect(events(bob).last).to_have_text(re.compile(rf"^alice muted bob until .*{TIME}"))
    expect(member(alice, "bob").get_by_test_id("muted")).to_have_count(1)
    # Other rooms are not affected.
    bob.open_room("general")
    expect(bob.t("composer-blocked")).to_be_hidden()
    bob.room(room).click()
    expect(bob.t("composer-input")).to_be_disabled()

    act_on(alice, "bob", "unmute")
    expect(bob.t("composer-input")).to_be_enabled()
    expect(bob.t("composer-blocked")).to_be_hidden()
    expect(events(bob).last).to_have_text(re.compile("^alice unmuted bob"))
    expect(member(alice, "bob").get_by_test_id("muted")).to_have_count(0)
    bob.say("thanks")
    alice.wait_for_body("thanks")
    # A reload while muted still shows it (from GET /api/rooms).
    act_on(alice, "bob", "mute-1h")
    expect(bob.t("composer-input")).to_be_disabled()
    bob.page.reload()
    bob.room(room).click()
    expect(bob.t("composer-blocked")).to_have_text(re.compile(rf"^You are muted until .*{TIME}"))


def test_topic_edited_in_place_shows_in_everyones_header(server, people):
    alice = people(server.url, "alice")
    bob = people(server.url, "bob")
    room = create_room(alice, "garden")
    bob.page.reload()
    join_from_browse(bob, room)
    expect(bob.t("edit-topic")).to_be_hidden()  # a member may not set it

    alice.t("edit-topic").click()
    alice.t("topic-input").fill("Tomatoes <b>first</b>")
    alice.t("topic-input").press("Enter")
    expect(alice.t("topic-form")).to_be_hidden()
    for user in (alice, bob):
        expect(user.t("room-topic")).to_have_text("Tomatoes <b>first</b>")
        expect(events(user).last).to_have_text(
            re.compile("alice changed the topic to “Tomatoes <b>first</b>”"))
    assert bob.page.locator("b").count() == 0
    # Escape gives up an edit.
    alice.t("edit-topic").click()
    alice.t("topic-input").fill("never saved")
    alice.t("topic-input").press("Escape")
    expect(alice.t("room-topic")).to_have_text("Tomatoes <b>first</b>")
    expect(alice.t("edit-topic")).to_be_focused()
