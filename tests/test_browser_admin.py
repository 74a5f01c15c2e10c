"""The browser side of who may sign up: the admin page (invites, deactivation) and the
sign-in form in each registration mode, in a real headless Chromium.

Servers and browsers come from test_browser.py's fixtures: `run.py` processes on the
session's Redis and MongoDB, Debian's chromium driven by Playwright, and a check on
teardown that no page broke the CSP, threw, or opened a dialog.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from playwright.sync_api import expect

from tests import test_browser
from tests.test_browser import PASSWORD, ServerProcess, User, unique

# test_browser.py's fixtures, found by pytest under these names.
browser = test_browser.browser
make_server = test_browser.make_server
people = test_browser.people


@pytest.fixture
def server_in(make_server: Callable[..., ServerProcess],
              monkeypatch: pytest.MonkeyPatch) -> Callable[[str], ServerProcess]:
    """A server whose registration mode is the given one (through CHAT_REGISTRATION)."""
    def start(mode: str) -> ServerProcess:
        monkeypatch.setenv("CHAT_REGISTRATION", mode)
        return make_server()
    return start


def open_admin_page(admin: User) -> None:
    expect(admin.t("admin-link")).to_be_visible()
    admin.t("admin-link").click()
    expect(admin.t("invites")).to_be_visible()
    expect(admin.t("accounts")).to_be_visible()


def test_an_admin_mints_an_invite_and_a_newcomer_registers_with_it(server_in, people):
    server = server_in("invite")
    # The ADMIN_USERS name registers without an invite while nobody holds it.
    admin = people(server.url, "operator")
    open_admin_page(admin)
    expect(admin.t("registration-mode")).to_contain_text("by invite")
    expect(admin.t("invites-empty")).to_be_visible()
    admin.t("invite-uses").fill("1")
    admin.t("invite-create").click()
    expect(admin.t("new-invite")).to_be_visible()
    code = admin.t("invite-code").input_value()
    assert len(code) >= 22
    admin.t("invite-copy").click()
    expect(admin.t("invite-copied")).not_to_be_empty()
    rows = admin.t("invite-row")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text(code[:8])
    expect(rows.first).to_contain_text("1 of 1")
    expect(rows.first).not_to_contain_text(code)

    newcomer = people(server.url, unique("new"), sign_up=False)
    newcomer.open()
    expect(newcomer.t("auth-invite")).to_be_hidden()  # signing in needs no invite
    newcomer.t("auth-switch").click()
    expect(newcomer.t("auth-invite")).to_be_visible()
    newcomer.submit(newcomer.name, PASSWORD)  # no code yet: the field says so
    expect(newcomer.t("auth-invite-error")).to_contain_text("invite code")
    newcomer.t("auth-invite").fill("not-the-code")
    newcomer.t("auth-submit").click()
    expect(newcomer.t("auth-invite-error")).to_contain_text("does not work")
    newcomer.t("auth-invite").fill(code)
    newcomer.t("auth-submit").click()
    expect(newcomer.t("chat-screen")).to_be_visible()
    expect(newcomer.t("me-name")).to_have_text(newcomer.name)
    expect(newcomer.t("admin-link")).to_be_hidden()

    admin.page.reload()
    expect(admin.t("invites-empty")).to_be_visible()  # its one use is spent
    expect(admin.t("invite-row")).to_have_count(0)


def test_an_admin_revokes_an_invite_in_the_page(server_in, people):
    server = server_in("invite")
    admin = people(server.url, "operator")
    open_admin_page(admin)
    for _ in range(2):
        admin.t("invite-create").click()
    expect(admin.t("invite-row")).to_have_count(2)
    admin.t("invite-revoke").first.click()
    expect(admin.t("invite-row")).to_have_count(1)
    expect(admin.t("admin-status")).to_contain_text("revoked")


def test_with_registration_closed_the_form_says_so(server_in, people):
    server = server_in("closed")
    visitor = people(server.url, sign_up=False)
    visitor.open()
    expect(visitor.t("auth-switch")).to_be_hidden()
    expect(visitor.t("auth-switch-text")).to_contain_text("not accepting new accounts")
    expect(visitor.t("auth-invite")).to_be_hidden()


def test_the_admin_page_refuses_people_who_are_not_admins(server_in, people):
    server = server_in("open")
    person = people(server.url)
    expect(person.t("admin-link")).to_be_hidden()
    person.page.goto(server.url + "/admin.html")
    expect(person.t("problem")).to_contain_text("Only server admins")
    expect(person.t("invites")).to_be_hidden()


def test_an_admin_deactivates_a_connected_user_who_is_sent_to_sign_in(server_in, people):
    server = server_in("open")
    victim = people(server.url, unique("victim"))
    victim.open_room("general")
    admin = people(server.url, "operator")
    open_admin_page(admin)
    expect(admin.t("user-result")).to_have_count(2)  # everyone, before any search
    admin.t("user-search").fill(victim.name[:9])
    expect(admin.t("user-result")).to_have_count(1)
    result = admin.page.locator(f'[data-testid="user-result"][data-name="{victim.name}"]')
    expect(result).to_be_visible()
    result.get_by_test_id("user-action").click()
    expect(result.get_by_test_id("confirm-yes")).to_be_visible()
    result.get_by_test_id("confirm-no").click()  # a change of mind does nothing
    expect(result.get_by_test_id("confirm-yes")).to_have_count(0)
    result.get_by_test_id("user-action").click()
    result.get_by_test_id("confirm-yes").click()
    expect(admin.t("admin-status")).to_contain_text("deactivated")
    expect(result).to_contain_text("deactivated")

    # The victim's socket closes (1008 account deactivated): back to sign-in, told why.
    expect(victim.t("auth-screen")).to_be_visible()
    expect(victim.t("auth-note")).to_contain_text("deactivated")
    victim.t("auth-switch").click()  # the form still shows sign-up, as last used
    expect(victim.t("auth-title")).to_have_text("Sign in")
    victim.log_in()
    expect(victim.t("auth-error")).to_contain_text("Wrong username or password")

    result.get_by_test_id("user-action").click()
    result.get_by_test_id("confirm-yes").click()
    expect(admin.t("admin-status")).to_contain_text("active again")
    victim.log_in()
    expect(victim.t("chat-screen")).to_be_visible()
