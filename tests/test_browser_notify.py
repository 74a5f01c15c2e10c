"""Desktop notifications in the browser client: asked for only after a click, shown
for mentions and DMs while the tab is hidden, muted per room, and a click on one opens
the room at the message. The Notification API and the page's visibility are replaced by
an init script (it runs outside the page's CSP) that records what the page does."""

from __future__ import annotations

import re

from playwright.sync_api import expect

from tests import test_browser
from tests.test_browser import unique

# test_browser.py's fixtures, found by pytest under these module-level names.
browser = test_browser.browser
make_server = test_browser.make_server
server = test_browser.server
people = test_browser.people

RECORDER_JS = """
window.__notes = [];
window.__asked = 0;
window.__perm = 'default';
window.Notification = class {
  constructor(title, options = {}) {
    this.title = title;
    this.body = options.body;
    window.__notes.push(this);
  }
  close() { this.closed = true; }
  static get permission() { return window.__perm; }
  static requestPermission() {
    window.__asked += 1;
    window.__perm = 'granted';
    return Promise.resolve('granted');
  }
};
Object.defineProperty(Document.prototype, 'visibilityState', {
  configurable: true, get() { return window.__hidden ? 'hidden' : 'visible'; } });
Object.defineProperty(Document.prototype, 'hidden', {
  configurable: true, get() { return Boolean(window.__hidden); } });
"""


def notes(page) -> list[dict[str, str]]:
    return page.evaluate("window.__notes.map(n => ({title: n.title, body: n.body}))")


def test_notifications_ask_on_click_notify_mentions_mute_per_room_and_open_the_message(
        server, people):
    mona = people(server.url, unique("mona"), sign_up=False)
    mona.context.add_init_script(RECORDER_JS)
    mona.sign_up()
    nick = people(server.url, unique("nick"))
    room = unique("alerts")
    nick.create_room(room)
    mona.page.reload()
    mona.open_room(room)
    nick.say("warming up")
    mona.wait_for_body("warming up")
    assert mona.page.evaluate("window.__asked") == 0  # never on page load

    # Nothing is shown before the user says yes.
    mona.page.evaluate("window.__hidden = true")
    nick.say(f"@{mona.name} are you there?")
    expect(mona.room(room).get_by_test_id("mentions")).to_have_count(0)  # on screen
    mona.page.evaluate("window.__hidden = false")
    assert notes(mona.page) == []

    mona.t("notify-menu").click()
    mona.t("notify-enable").click()
    expect(mona.t("notice")).to_contain_text("Desktop notifications are on")
    assert mona.page.evaluate("window.__asked") == 1

    # Hidden tab: a mention notifies, other messages do not.
    mona.page.evaluate("window.__hidden = true")
    nick.say("just chatting")
    nick.say(f"@{mona.name} the deploy needs you")
    mona.page.wait_for_function("window.__notes.length === 1")
    assert notes(mona.page) == [{"title": f"{nick.name} in #{room}",
                                 "body": f"@{mona.name} the deploy needs you"}]

    # Muted for this room: no more notifications from it (kept in this browser).
    mona.page.evaluate("window.__hidden = false")
    mona.t("room-menu").click()
    mona.t("notify-room-off").click()
    expect(mona.t("notice")).to_contain_text("No desktop notifications")
    mona.page.evaluate("window.__hidden = true")
    nick.say(f"@{mona.name} still there?")
    mona.wait_for_body("still there?")
    assert len(notes(mona.page)) == 1
    mona.page.evaluate("window.__hidden = false")
    mona.t("room-menu").click()
    expect(mona.t("notify-room-on")).to_be_visible()
    mona.page.keyboard.press("Escape")

    # A click on the notification opens the room at its message, highlighted.
    mona.open_room("general")
    mona.page.evaluate("window.__notes[0].onclick()")
    expect(mona.t("room-title")).to_have_text(f"#{room}")
    target = mona.sent().filter(has_text="the deploy needs you")
    expect(target).to_have_class(re.compile(r"\bflash\b"))
