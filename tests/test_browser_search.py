"""End-to-end tests of search and of links to a message.

People in their own browser contexts against a real `run.py` (fixtures and the `User`
page object of test_browser.py); awaited through Playwright's `expect`, never a sleep.
"""

from __future__ import annotations

import re

from playwright.sync_api import expect

from tests import test_browser
from tests.test_browser import User, unique
from tests.test_browser_team import create_room

# test_browser.py's fixtures, found by pytest under these module-level names.
browser = test_browser.browser
make_server = test_browser.make_server
server = test_browser.server
people = test_browser.people


def search(user: User, query: str) -> None:
    """Search, and follow "Load more" to the end (a page may come back short, §22)."""
    user.t("search-input").fill(query)
    user.t("search-input").press("Enter")
    expect(user.t("search-panel")).to_be_visible()
    expect(user.t("search-status")).not_to_have_text("Searching…")
    while user.t("search-more").is_visible():
        user.t("search-more").click()
        expect(user.t("search-status")).not_to_have_text("Searching…")


def test_search_finds_words_marks_them_and_never_shows_a_private_room(server, people):
    hana = people(server.url, unique("hana"))
    ivan = people(server.url, unique("ivan"))
    public = unique("plans")
    hana.create_room(public)
    hana.say("The deploy window is Friday at noon")
    for i in range(30):
        hana.say(f"filler line {i}")
    secret = create_room(hana, "hush", private=True)
    hana.say("Salary review on Friday, keep it quiet")
    hana.wait_for_body("Salary review", timeout=40000)

    # Ivan opens search with the keyboard ("/" when not typing) and finds the public hit.
    ivan.page.reload()
    ivan.open_room("general")
    ivan.t("message-log").focus()
    ivan.page.keyboard.press("/")
    expect(ivan.t("search-input")).to_be_focused()
    search(ivan, "friday")
    hits = ivan.t("search-hit")
    expect(hits).to_have_count(1)
    group = ivan.t("search-group")
    expect(group.locator("h3")).to_have_text(f"#{public}")
    expect(hits.first.locator("mark")).to_have_text("Friday")
    expect(hits.first.get_by_test_id("search-snippet")).to_have_text(
        "The deploy window is Friday at noon")
    expect(ivan.t("search-panel")).not_to_contain_text("Salary")
    search(ivan, "salary")
    expect(ivan.t("search-status")).to_have_text("No messages found.")
    expect(ivan.t("search-hit")).to_have_count(0)

    # Hana, a member of the private room, finds both, grouped by room.
    hana.page.keyboard.press("Control+k")
    expect(hana.t("search-input")).to_be_focused()
    search(hana, "friday")
    expect(hana.t("search-group")).to_have_count(2)
    expect(hana.t("search-group").first.locator("h3")).to_have_text(re.compile("hush"))
    # Only the room on screen.
    hana.t("search-here").check()
    expect(hana.t("search-group")).to_have_count(1)
    expect(hana.t("search-group").locator("h3")).to_have_text(re.compile("hush"))
    hana.page.keyboard.press("Escape")
    expect(hana.t("search-panel")).to_be_hidden()
    assert secret

    # A hit opens its room at the message, far back in the log, highlighted.
    search(ivan, "deploy window")
    ivan.t("search-hit").first.click()
    expect(ivan.t("search-panel")).to_be_hidden()
    expect(ivan.t("room-title")).to_have_text(f"#{public}")
    target = ivan.sent().filter(has_text="The deploy window")
    expect(target).to_be_in_viewport()
    expect(target).to_have_class(re.compile(r"\bflash\b"))


def test_load_more_follows_next(server, people):
    jo = people(server.url, unique("jo"))
    room = unique("log")
    jo.create_room(room)
    jo.start_seeding(room, [f"needle number {i}" for i in range(25)])
    jo.finish_seeding()
    jo.t("search-input").fill("needle")
    jo.t("search-input").press("Enter")
    expect(jo.t("search-hit")).to_have_count(20)
    jo.t("search-more").click()
    expect(jo.t("search-hit")).to_have_count(25)
    expect(jo.t("search-more")).to_be_hidden()


def test_permalink_opens_the_room_at_the_message_and_highlights_it(server, people):
    kai = people(server.url, unique("kai"))
    room = unique("history")
    kai.create_room(room)
    kai.say("the very first decision")
    kai.start_seeding(room, [f"later message {i}" for i in range(120)])
    kai.finish_seeding()
    kai.wait_for_body("later message 119")
    first = kai.sent().filter(has_text="the very first decision")
    first.hover()
    seq = int(first.get_attribute("data-seq") or 0)

    # Copy link from the menu gives the permalink.
    kai.context.grant_permissions(["clipboard-read", "clipboard-write"])
    first.get_by_test_id("message-actions").click()
    kai.t("msg-link").click()
    expect(kai.t("notice")).to_have_text("Link copied.")
    link = kai.page.evaluate("navigator.clipboard.readText()")
    assert link == f"{kai.base_url}/#room={room}&seq={seq}"

    # Someone else follows it in a fresh page: the room opens, paged back to it.
    lea = people(server.url, unique("lea"))
    lea.page.goto(link)
    expect(lea.t("room-title")).to_have_text(f"#{room}")
    target = lea.sent().filter(has_text="the very first decision")
    expect(target).to_be_in_viewport()
    expect(target).to_have_class(re.compile(r"\bflash\b"))
    expect(lea.page).to_have_url(re.compile(r"/$"))
