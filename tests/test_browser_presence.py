"""Away and status texts in the browser: what one person sees of another, live.

Real `run.py`, real Chromium (fixtures and the `User` page object of test_browser.py).
Alice's page goes idle after 2 s without input (`?idle=2`), so nobody waits minutes.
"""

from __future__ import annotations

import re

from playwright.sync_api import expect

from tests import test_browser
from tests.test_browser import User
from tests.test_browser_team import current_room

browser = test_browser.browser
make_server = test_browser.make_server
server = test_browser.server
people = test_browser.people

SET_STATUS_JS = """async ([text, seconds]) => {
  const xsrf = document.cookie.split(';').map((p) => p.trim().split('='))
    .find(([k]) => k === '_xsrf')?.[1] ?? '';
  const r = await fetch('/api/me/status', {method: 'PUT', credentials: 'same-origin',
    headers: {'Content-Type': 'application/json', 'X-XSRFToken': xsrf},
    body: JSON.stringify({text, until: Date.now() + seconds * 1000})});
  return r.status;
}"""


def start_dm(alice: User, bob: User) -> str:
    alice.t("new-dm").click()
    alice.t("dm-search").fill(bob.name)
    alice.page.locator(f'[data-testid="dm-result"][data-name="{bob.name}"]').click()
    alice.t("dm-start").click()
    expect(alice.t("dm-dialog")).to_be_hidden()
    dm = current_room(alice)
    alice.say("hello")
    return dm


def test_others_see_away_and_status_text_next_to_a_name_until_cleared_or_expired(
        server, people):
    alice = people(f"{server.url}/?idle=2")
    bob = people(server.url)
    dm = start_dm(alice, bob)
    bob.open_room("general")
    her = bob.page.locator(f'[data-testid="member"][data-name="{alice.name}"]')
    her_dm = bob.t("dm-rooms").locator(f'[data-room="{dm}"]')
    expect(her).to_have_attribute("data-online", "true")

    # Two seconds without input on her page: she is away, in the panel and the DM.
    expect(her).to_have_attribute("data-idle", "true")
    expect(her.get_by_test_id("away")).to_have_text("away")
    expect(her_dm.get_by_test_id("dm-presence")).to_have_attribute("data-away", "true")
    # She moves the mouse: back.
    alice.page.mouse.move(200, 200)
    alice.page.mouse.move(240, 260)
    expect(her).to_have_attribute("data-idle", "false")
    expect(her.get_by_test_id("away")).to_have_count(0)
    expect(her_dm.get_by_test_id("dm-presence")).to_have_attribute("data-away", "false")

    # Her status, set from the menu by her name: text, never HTML.
    text = "<b>In a meeting</b> & more"
    alice.t("status-button").click()
    alice.t("status-input").fill(text)
    alice.t("status-expiry").select_option("1h")
    alice.t("status-save").click()
    expect(alice.t("status-form")).to_be_hidden()
    expect(alice.t("my-status")).to_have_text(text)
    expect(her.get_by_test_id("status-text")).to_have_text(text)
    expect(her.get_by_test_id("status-text")).to_have_attribute("title", re.compile("until"))
    expect(her_dm.get_by_test_id("status-text")).to_have_text(text)
    assert bob.page.locator("#member-list b").count() == 0
    # A reload still shows it (persisted, listed on join).
    bob.page.reload()
    bob.open_room("general")
    expect(her.get_by_test_id("status-text")).to_have_text(text)

    # Cleared from the menu.
    alice.t("status-button").click()
    expect(alice.t("status-input")).to_have_value(text)
    alice.t("status-clear").click()
    expect(her.get_by_test_id("status-text")).to_have_count(0)
    expect(her_dm.get_by_test_id("status-text")).to_have_count(0)
    expect(alice.t("my-status")).to_have_text("")

    # One that expires in three seconds goes by itself.
    assert alice.page.evaluate(SET_STATUS_JS, ["brb", 3]) == 200
    expect(her.get_by_test_id("status-text")).to_have_text("brb")
    expect(her.get_by_test_id("status-text")).to_have_count(0, timeout=15_000)


def test_a_refused_status_is_explained_in_the_form(server, people):
    alice = people(server.url)
    alice.t("status-button").click()
    alice.t("status-input").fill("   ")
    alice.t("status-save").click()
    expect(alice.t("status-error")).to_have_text("Write a status, or clear it.")
    alice.t("status-input").press("Escape")
    expect(alice.t("status-form")).to_be_hidden()
