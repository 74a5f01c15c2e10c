"""End-to-end tests of read positions kept by the server, unread and mention badges.

The same person in two browser contexts (two devices), and someone else who writes;
fixtures and the `User` page object of test_browser.py. Everything is awaited through
Playwright's auto-waiting `expect`, never a sleep.
"""

from __future__ import annotations

import re

from playwright.sync_api import expect

from tests import test_browser
from tests.test_browser import PASSWORD, User, unique

# test_browser.py's fixtures, found by pytest under these module-level names.
browser = test_browser.browser
make_server = test_browser.make_server
server = test_browser.server
people = test_browser.people


def second_device(people, url: str, name: str) -> User:
    """`name`, signed in once more in a browser context of its own."""
    user = people(url, name, sign_up=False)
    user.open()
    user.submit(name, PASSWORD)
    expect(user.t("chat-screen")).to_be_visible()
    return user


def test_unread_counts_follow_the_person_to_every_device(server, people):
    dana = people(server.url, unique("dana"))
    room = unique("news")
    dana.create_room(room)
    dana.open_room("general")
    phone = second_device(people, server.url, dana.name)
    phone.open_room("general")
    eve = people(server.url, unique("eve"))
    eve.page.reload()
    eve.open_room(room)
    for i in range(3):
        eve.say(f"headline {i}")

    # Both devices count 3 unread, in the sidebar and the title.
    for device in (dana, phone):
        expect(device.room(room).get_by_test_id("unread")).to_have_text("3")
        expect(device.page).to_have_title(re.compile(r"^\(3\) "))
        expect(device.page.locator('link[rel="icon"]')).to_have_attribute("data-badge", "dot")

    # Reading on one device clears the other within a second.
    dana.open_room(room)
    dana.wait_for_body("headline 2")
    expect(phone.room(room).get_by_test_id("unread")).to_have_count(0, timeout=1500)
    expect(phone.page).not_to_have_title(re.compile(r"^\("))
    expect(phone.page.locator('link[rel="icon"]')).to_have_attribute("data-badge", "")

    # The position is the server's: a fresh page agrees, nothing in localStorage.
    eve.say("headline 3")
    expect(phone.room(room).get_by_test_id("unread")).to_have_text("1")
    phone.page.reload()
    expect(phone.room(room).get_by_test_id("unread")).to_have_text("1")
    keys = phone.page.evaluate("Object.keys(localStorage)")
    assert not [k for k in keys if k.endswith(":read")], keys


def test_mentions_are_highlighted_and_counted_apart(server, people):
    finn = people(server.url, unique("finn"))
    gail = people(server.url, unique("gail"))
    room = unique("team")
    finn.create_room(room)
    gail.page.reload()
    gail.open_room(room)
    gail.open_room("general")

    finn.say(f"@{gail.name} can you look at the **build**? cc @room")
    finn.say("unrelated chatter")
    badge = gail.room(room).get_by_test_id("mentions")
    expect(badge).to_have_text("@1")
    expect(gail.room(room).get_by_test_id("unread")).to_have_text("2")
    expect(gail.page.locator('link[rel="icon"]')).to_have_attribute("data-badge", "1")

    gail.open_room(room)
    msg = gail.sent().filter(has_text="can you look")
    expect(msg).to_have_class(re.compile(r"\bmentions-me\b"))
    expect(msg.locator(".mention-me")).to_have_text(f"@{gail.name}")
    expect(msg.locator(".mention-room")).to_have_text("@room")
    expect(msg.locator("strong")).to_have_text("build")
    expect(gail.room(room).get_by_test_id("mentions")).to_have_count(0)
    # The author's own view marks the name, not as a mention of them.
    own = finn.sent().filter(has_text="can you look")
    expect(own.locator(".mention")).to_have_count(2)
    expect(own.locator(".mention-me")).to_have_count(0)


def test_typing_at_lists_the_rooms_members_to_mention(server, people):
    hugo = people(server.url, unique("hugo"))
    room = unique("crew")
    hugo.create_room(room)
    names = [f"iris{unique('')[1:]}", f"ivy{unique('')[1:]}"]
    for name in names:
        other = people(server.url, name)
        other.page.reload()
        other.open_room(room)
    box = hugo.t("composer-input")
    box.press_sequentially("thanks @i")
    options = hugo.t("mention-option")
    expect(options).to_have_count(2)
    expect(box).to_have_attribute("aria-expanded", "true")
    expect(options.first).to_have_attribute("aria-selected", "true")
    box.press("ArrowDown")
    expect(options.nth(1)).to_have_attribute("aria-selected", "true")
    box.press("Enter")  # picks, does not send
    expect(box).to_have_value(f"thanks @{sorted(names)[1]} ")
    expect(hugo.t("mention-list")).to_be_hidden()
    box.press_sequentially("and @ro")
    expect(options).to_have_count(1)
    box.press("Tab")
    expect(box).to_have_value(f"thanks @{sorted(names)[1]} and @room ")
    box.press_sequentially("@ir")
    expect(options).to_have_count(1)
    box.press("Escape")
    expect(hugo.t("mention-list")).to_be_hidden()
    box.press("Enter")
    hugo.wait_for_body("and @room")
    expect(hugo.sent().last.locator(".mention")).to_have_count(2)  # "@ir" names nobody
