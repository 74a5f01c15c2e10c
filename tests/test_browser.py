"""End-to-end tests of the browser client in a real headless Chromium.

Playwright drives Debian's `chromium` (never a browser download) against real
`run.py` server processes that use the session's real Redis and MongoDB-wire services.
The servers run as subprocesses, so these are plain synchronous tests with
Playwright's sync API: no IOLoop of pytest-tornasync's is running in this thread.

After a failure, look in the test's tmp_path: each server's log (serverN.log) and a
screenshot of every page as it was at the end (last-<user>.png).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from playwright.sync_api import (
    Browser,
    ConsoleMessage,
    Dialog,
    Locator,
    ViewportSize,
    expect,
    sync_playwright,
)

from tests.proxy import TcpProxy
from tests.services import Services

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
SECRET = "browser-test-cookie-secret-0123456789"
PASSWORD = "correct horse battery"
DESKTOP: ViewportSize = {"width": 1280, "height": 800}
PHONE: ViewportSize = {"width": 390, "height": 780}
XSS = "<img src=x onerror=alert(1)>"
WAIT_MS = 15000
RECONNECT_MS = 40000  # backoff may have grown to ~16 s while the server was away
expect.set_options(timeout=WAIT_MS)

# Set CHAT_SCREENSHOT=docs/screenshot.png to refresh the README's picture from a run.
SCREENSHOT = os.environ.get("CHAT_SCREENSHOT")


# ----- servers ----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ServerProcess:
    """`python run.py` on a fixed port, against shared services; can stop and start again."""

    services: Services
    db_name: str
    prefix: str
    log_path: Path
    redis_url: str | None = None  # instead of the session's Redis
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        # Service URLs carry passwords: through the environment, never argv (ps shows it).
        env = {**os.environ, "COOKIE_SECRET": SECRET, "LOG_LEVEL": "info",
               "ADMIN_USERS": "operator", "MONGO_URL": self.services.mongo_url,
               "REDIS_URL": self.redis_url or self.services.redis_url}
        args = [sys.executable, "run.py", "--host", "127.0.0.1", "--port", str(self.port),
                "--db-name", self.db_name, "--redis-prefix", self.prefix,
                "--data-dir", str(self.log_path.parent), "--shutdown-timeout", "2"]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=log,
                                         stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            with contextlib.suppress(OSError, urllib.error.URLError):
                with urllib.request.urlopen(self.url + "/readyz", timeout=2) as r:  # noqa: S310
                    if r.status == 200:
                        return
            time.sleep(0.1)
        raise RuntimeError(f"server not ready after 30 s:\n{self.log()}")

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]


@pytest.fixture
def make_server(services: Services, tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """Start run.py processes; all those of one test share a database and Redis prefix."""
    tag = uuid.uuid4().hex[:10]
    started: list[ServerProcess] = []

    def make(redis_url: str | None = None) -> ServerProcess:
        n = len(started) + 1
        server = ServerProcess(services, f"browser_{tag}", f"browser:{tag}:",
                               tmp_path / f"server{n}.log", redis_url)
        server.start()
        started.append(server)
        return server

    yield make
    for server in reversed(started):
        server.stop()


@pytest.fixture
def server(make_server: Callable[..., ServerProcess]) -> ServerProcess:
    return make_server()


# ----- browser ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


class User:
    """One person in their own browser context (own cookies), with what went wrong."""

    def __init__(self, browser: Browser, base_url: str, name: str,
                 viewport: ViewportSize | None = None) -> None:
        self.name = name
        self.base_url = base_url
        self.context = browser.new_context(viewport=viewport or DESKTOP)
        self.page = self.context.new_page()
        self.page.set_default_timeout(WAIT_MS)
        self.problems: list[str] = []
        self.dialogs: list[str] = []
        self.console: list[str] = []  # the page's console, for failure messages
        self.page.add_init_script(NOTICE_LOG_JS)
        self.page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))
        self.page.on("console", self._console)
        self.page.on("dialog", self._dialog)

    def _console(self, msg: ConsoleMessage) -> None:
        text = msg.text
        self.console = [*self.console[-19:], f"{msg.type}: {text}"]
        if "Content Security Policy" in text or "Refused to" in text:
            self.problems.append(f"CSP: {text}")

    def _dialog(self, dialog: Dialog) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def t(self, testid: str) -> Locator:
        return self.page.get_by_test_id(testid)

    def open(self) -> None:
        self.page.goto(self.base_url)
        expect(self.t("boot")).to_be_hidden()

    def sign_up(self) -> None:
        self.open()
        self.t("auth-switch").click()
        self.submit(self.name, PASSWORD)
        expect(self.t("chat-screen")).to_be_visible()
        expect(self.t("me-name")).to_have_text(self.name)

    def log_in(self, password: str = PASSWORD) -> None:
        self.submit(self.name, password)

    def submit(self, name: str, password: str) -> None:
        self.t("auth-username").fill(name)
        self.t("auth-password").fill(password)
        self.t("auth-submit").click()

    def room(self, name: str) -> Locator:
        return self.page.locator(f'[data-testid="room-item"][data-room="{name}"]')

    def describe(self) -> str:
        """What the page shows and said, for a failure message: a notice is gone from
        the screen after a few seconds, and the screenshot comes only at teardown."""
        state = self.page.evaluate("""() => ({
          title: document.getElementById('room-title')?.textContent,
          rooms: [...document.querySelectorAll('[data-testid="room-item"]')]
            .map((e) => e.dataset.room),
          newRoomError: document.getElementById('new-room-error')?.textContent,
          notices: window.__notices ?? [],
        })""")
        return f"{self.name}'s page: {state}; console: {self.console}"

    def expect_room_title(self, name: str) -> None:
        try:
            expect(self.t("room-title")).to_have_text(f"#{name}")
        except AssertionError as e:
            raise AssertionError(f"{e}\n{self.describe()}") from e

    def open_room(self, name: str) -> None:
        self.room(name).click()
        self.expect_room_title(name)
        expect(self.t("composer-input")).to_be_enabled()
        expect(self.t("message-log")).to_have_attribute("aria-busy", "false")

    def create_room(self, name: str) -> None:
        self.t("new-room-name").fill(name)
        self.t("new-room-submit").click()
        self.expect_room_title(name)
        expect(self.t("message-log")).to_have_attribute("aria-busy", "false")

    def reconnect_now(self) -> bool:
        """Press "Retry now" if the page is waiting out its backoff. Whether the button
        shows depends on the client's own timer (it is hidden while a retry is under way
        and once the connection is back), so the check and the click run together in the
        page, where that timer cannot fire between them. True when it was pressed."""
        return bool(self.page.evaluate("""() => {
          const button = document.querySelector('[data-testid="conn-retry"]');
          if (!button || !button.checkVisibility()) return false;
          button.click();
          return true;
        }"""))

    def say(self, text: str) -> None:
        box = self.t("composer-input")
        box.fill(text)
        box.press("Enter")
        expect(box).to_have_value("")

    def sent(self) -> Locator:
        """Confirmed messages in the room on screen."""
        return self.page.locator('[data-testid="message"][data-state="sent"]')

    def records(self) -> Locator:
        """Confirmed messages and event lines (joined, left...) in the room on screen:
        together they hold every seq of the room's stream."""
        return self.page.locator('[data-testid="message"][data-state="sent"], '
                                 '[data-testid="event"]')

    def record_seqs(self) -> list[int]:
        return [int(s) for s in self.records().evaluate_all("els => els.map(e => e.dataset.seq)")]

    def bodies(self) -> list[str]:
        return self.sent().locator('[data-testid="message-body"]').all_inner_texts()

    def seqs(self) -> list[int]:
        return [int(s) for s in self.sent().evaluate_all("els => els.map(e => e.dataset.seq)")]

    def wait_for_body(self, text: str, timeout: int = WAIT_MS) -> None:
        expect(self.sent().filter(has_text=text).last).to_be_visible(timeout=timeout)

    def start_seeding(self, room: str, bodies: list[str]) -> None:
        """Start sending `bodies` in order over a WebSocket of this user's own (not the
        UI), at whatever rate the server allows; finish_seeding() waits for the acks."""
        self.page.evaluate(SEED_JS, [room, bodies, uuid.uuid4().hex[:8]])

    def finish_seeding(self) -> int:
        return int(self.page.evaluate("window.__seeding", None))

    def close(self) -> None:
        self.context.close()


# Every notice the page shows (they go away by themselves), in window.__notices.
NOTICE_LOG_JS = """
window.__notices = [];
document.addEventListener('DOMContentLoaded', () => {
  const toast = document.getElementById('toast');
  if (!toast) return;
  new MutationObserver(() => {
    const text = toast.textContent.trim();
    if (text && window.__notices.at(-1) !== text) window.__notices.push(text);
  }).observe(toast, { childList: true, characterData: true, subtree: true });
});
"""

SEED_JS = """([room, bodies, tag]) => {
  // One at a time, in order; a rate_limited answer is retried after retry_after with
  // the same client_id.
  window.__seeding = new Promise((ok, fail) => {
    const ws = new WebSocket(`${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws`);
    let i = 0;
    const send = () => ws.send(JSON.stringify(
      {type: 'send', room, body: bodies[i], client_id: `${tag}-${i}`}));
    ws.onerror = () => fail(new Error('seeding socket failed'));
    ws.onmessage = (ev) => {
      const f = JSON.parse(ev.data);
      if (f.type === 'hello') ws.send(JSON.stringify({type: 'join', room}));
      else if (f.type === 'joined') send();
      else if (f.type === 'ack') {
        i += 1;
        if (i === bodies.length) { ws.close(); ok(i); } else send();
      } else if (f.type === 'error' && f.code === 'rate_limited') {
        setTimeout(send, (f.retry_after || 0.2) * 1000);
      } else if (f.type === 'error') fail(new Error(`${f.code}: ${f.message}`));
    };
  });
  return true;
}"""


@pytest.fixture
def people(browser: Browser, tmp_path: Path) -> Iterator[Callable[..., User]]:
    """Factory of Users; on teardown checks no page broke CSP, threw or opened a dialog.

    Each page's last state is saved as tmp_path/last-<name>.png, for failures."""
    users: list[User] = []

    def make(base_url: str, name: str | None = None, viewport: ViewportSize | None = None,
             sign_up: bool = True) -> User:
        user = User(browser, base_url, name or f"u{uuid.uuid4().hex[:8]}", viewport)
        users.append(user)
        if sign_up:
            user.sign_up()
        return user

    yield make
    for user in users:
        with contextlib.suppress(Exception):
            user.page.screenshot(path=str(tmp_path / f"last-{user.name}.png"))
        problems, dialogs = user.problems, user.dialogs
        user.close()
        assert not problems, problems
        assert not dialogs, f"a page opened a dialog: {dialogs}"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


# ----- tests --------------------------------------------------------------------------


def test_two_users_chat_live_with_presence_typing_and_unread(server, people, tmp_path):
    alice = people(server.url, "alice")
    bob = people(server.url, "bob")
    # Both start in the default room; Alice opens a new one and Bob finds it.
    alice.create_room("lobby")
    bob.page.reload()
    bob.open_room("lobby")
    expect(alice.page.locator('[data-testid="member"]')).to_have_count(2)
    expect(bob.page.locator('[data-testid="member"]')).to_have_count(2)

    alice.say("Morning! Is the deploy still on for today?")
    bob.wait_for_body("Is the deploy still on")
    bob.t("composer-input").press_sequentially("Yes")
    expect(alice.t("typing")).to_have_text("bob is typing…")
    bob.t("composer-input").press("Shift+Enter")
    bob.t("composer-input").press_sequentially("right after lunch. Notes: "
                                               "https://example.com/deploy-notes.")
    bob.t("composer-input").press("Enter")
    alice.wait_for_body("right after lunch")
    expect(alice.t("typing")).to_have_text("")  # cleared by the message itself
    assert alice.bodies()[-1] == ("Yes\nright after lunch. Notes: "
                                  "https://example.com/deploy-notes.")
    link = alice.sent().last.locator("a")
    expect(link).to_have_attribute("href", "https://example.com/deploy-notes")
    expect(link).to_have_attribute("rel", "noopener noreferrer")
    expect(link).to_have_attribute("target", "_blank")

    alice.say("Great, I'll watch the dashboards.")
    alice.say("Ping me if anything looks off.")
    bob.wait_for_body("Ping me if anything")
    # Consecutive messages by one author are grouped; authors and times are shown.
    last_two = alice.sent().nth(-1), alice.sent().nth(-2)
    expect(last_two[0]).to_have_class(re.compile(r"\bcont\b"))
    expect(last_two[1]).not_to_have_class(re.compile(r"\bcont\b"))
    expect(last_two[1].get_by_test_id("message-author")).to_have_text("alice")
    expect(last_two[1].locator("time")).to_have_attribute("datetime", re.compile(r"^\d{4}-"))
    assert bob.bodies() == alice.bodies()
    assert bob.seqs() == alice.seqs() == sorted(set(alice.seqs()))

    # Typing that stops clears itself.
    bob.t("composer-input").press_sequentially("hmm")
    expect(alice.t("typing")).to_have_text("bob is typing…")
    expect(alice.t("typing")).to_have_text("", timeout=12000)

    # Unread count on a joined room that is not on screen, cleared by opening it.
    bob.open_room("general")
    bob.say("Anyone seen the coffee order?")
    expect(alice.room("general").get_by_test_id("unread")).to_have_text("1")
    expect(alice.page).to_have_title(re.compile(r"^\(1\) "))
    expect(alice.room("lobby").get_by_test_id("unread")).to_have_count(0)
    alice.open_room("lobby")
    alice.page.screenshot(path=str(ROOT / SCREENSHOT if SCREENSHOT else tmp_path / "chat.png"))
    alice.open_room("general")
    alice.wait_for_body("coffee order")
    expect(alice.room("general").get_by_test_id("unread")).to_have_count(0)

    # Bob leaves the lobby for good (from the room's menu): Alice sees him go.
    bob.open_room("lobby")
    bob.t("room-menu").click()
    bob.t("leave-room").click()
    expect(bob.room("lobby")).to_have_attribute("data-testid", "room-item")  # in Browse now
    expect(bob.t("joined-rooms").locator('[data-room="lobby"]')).to_have_count(0)
    alice.open_room("lobby")
    expect(alice.page.locator('[data-testid="member"]')).to_have_count(1)
    expect(alice.page.locator('[data-testid="event"]').last).to_have_text(re.compile("bob left"))


def test_sign_up_and_log_in_show_inline_errors_and_session_survives_reload(server, people):
    name = unique("carol")
    carol = people(server.url, name, sign_up=False)
    carol.open()
    carol.t("auth-switch").click()
    carol.submit(name, "short")
    expect(carol.t("auth-password-error")).to_contain_text("at least 8")
    expect(carol.t("auth-password")).to_have_attribute("aria-invalid", "true")
    carol.submit(name, "x" * 73)
    expect(carol.t("auth-password-error")).to_contain_text("at most 72")
    carol.submit("no spaces allowed", PASSWORD)
    expect(carol.t("auth-username-error")).to_contain_text("Username must be")
    carol.submit(name, PASSWORD)
    expect(carol.t("chat-screen")).to_be_visible()

    # The name is taken now, for anyone else.
    other = people(server.url, unique("x"), sign_up=False)
    other.open()
    other.t("auth-switch").click()
    other.submit(name, PASSWORD)
    expect(other.t("auth-username-error")).to_have_text("That username is taken. Pick another one.")
    other.t("auth-switch").click()  # back to sign in
    other.submit(name, "wrong password!")
    expect(other.t("auth-error")).to_have_text("Wrong username or password.")

    # History and session survive a reload.
    carol.say("note to self: buy milk")
    carol.say(f"second note {name}")
    before = carol.bodies()
    carol.page.reload()
    expect(carol.t("chat-screen")).to_be_visible()
    expect(carol.t("me-name")).to_have_text(name)
    carol.wait_for_body(f"second note {name}")
    assert carol.bodies() == before

    # Log out revokes the session: a reload stays signed out.
    carol.t("logout").click()
    expect(carol.t("auth-screen")).to_be_visible()
    carol.page.reload()
    expect(carol.t("auth-screen")).to_be_visible()
    carol.log_in()
    expect(carol.t("chat-screen")).to_be_visible()
    carol.wait_for_body(f"second note {name}")


def test_scroll_back_loads_older_pages_and_keeps_position(server, people):
    dave = people(server.url, unique("dave"))
    erin = people(server.url, unique("erin"))
    fay = people(server.url, unique("fay"))
    room = unique("history")
    dave.create_room(room)
    fay.page.reload()
    fay.open_room(room)
    # 130 messages from two people at once (each may only send so fast): dave's and
    # fay's interleave, each in their own order.
    dave_says = [f"dave's old message {i}" for i in range(1, 66)]
    fay_says = [f"fay's old message {i}" for i in range(1, 66)]
    dave.start_seeding(room, dave_says)
    fay.start_seeding(room, fay_says)
    assert dave.finish_seeding() == 65
    assert fay.finish_seeding() == 65
    erin.page.reload()
    erin.open_room(room)
    # The newest page: 50 records of the stream, Erin's own "joined" the newest.
    expect(erin.records()).to_have_count(50)
    expect(erin.sent()).to_have_count(49)
    assert {erin.bodies()[-1]} <= {dave_says[-1], fay_says[-1]}
    log = erin.t("message-log")
    assert log.evaluate("el => el.scrollHeight - el.scrollTop - el.clientHeight") < 50

    # Scrolling to the top loads the previous page and keeps the same message in view.
    top_body = erin.bodies()[0]
    anchor = erin.t("message-body").filter(has_text=re.compile(f"^{re.escape(top_body)}$"))
    log.evaluate("el => { el.scrollTop = 0; }")
    expect(erin.records()).to_have_count(100)
    expect(log).to_have_attribute("aria-busy", "false")
    # The message that was at the top is still there: the page grew above it.
    offset = anchor.evaluate(
        "el => el.getBoundingClientRect().top"
        " - el.closest('[role=log]').getBoundingClientRect().top")
    assert 0 <= offset < 200, offset
    assert log.evaluate("el => el.scrollTop") > 500

    log.evaluate("el => { el.scrollTop = 0; }")
    expect(erin.sent()).to_have_count(130)
    expect(erin.records()).to_have_count(132)  # and fay's and erin's "joined"
    expect(erin.t("log-start")).to_be_visible()
    expect(erin.t("load-older")).to_be_hidden()
    seen = erin.bodies()
    assert [b for b in seen if b.startswith("dave")] == dave_says
    assert [b for b in seen if b.startswith("fay")] == fay_says
    assert erin.record_seqs() == list(range(1, 133))
    assert erin.seqs() == list(range(2, 132))

    # Scrolled up: a new message does not move the view; a marker offers the way down.
    log.evaluate("el => { el.scrollTop = 0; }")
    dave.say("fresh news")
    expect(erin.t("new-messages")).to_be_visible()
    assert log.evaluate("el => el.scrollTop") < 50
    expect(erin.t("new-divider")).to_have_count(1)
    erin.t("new-messages").click()
    expect(erin.t("new-messages")).to_be_hidden()
    assert log.evaluate("el => el.scrollHeight - el.scrollTop - el.clientHeight") < 50
    # At the bottom, new messages keep it pinned there.
    dave.say("more news")
    erin.wait_for_body("more news")
    expect(erin.t("new-messages")).to_be_hidden()
    assert log.evaluate("el => el.scrollHeight - el.scrollTop - el.clientHeight") < 50


def test_html_in_messages_renders_as_text_and_runs_nothing(server, people):
    mallory = people(server.url, unique("mallory"))
    victim = people(server.url, unique("victim"), viewport=PHONE)
    payloads = [XSS, "<script>alert(2)</script>", "javascript:alert(3)",
                '<a href="javascript:alert(4)">click</a>',
                'http://x.test/"><img src=y onerror=alert(5)>']
    for text in payloads:
        mallory.say(text)
    victim.wait_for_body("onerror=alert(5)")
    for user in (mallory, victim):
        bodies = user.bodies()[-len(payloads):]
        assert bodies == payloads
        log = user.t("message-log")
        assert log.locator("img, script, iframe").count() == 0
        hrefs = log.locator("a").evaluate_all("els => els.map(a => a.href)")
        assert all(h.startswith(("http://", "https://")) for h in hrefs), hrefs
    assert victim.page.evaluate("document.querySelectorAll('img').length") == 0
    victim.page.wait_for_timeout(300)  # give a (wrongly) injected handler a chance to fire
    assert victim.dialogs == [] and mallory.dialogs == []


PAREN_FLOOD = "http://a" + ")" * 3992  # 4000 characters, the longest body allowed
WIKI = "Read https://en.wikipedia.org/wiki/Foo_(bar) first (see https://example.com/docs)."
WIKI_LINKS = [["https://en.wikipedia.org/wiki/Foo_(bar)", "https://en.wikipedia.org/wiki/Foo_(bar)"],
              ["https://example.com/docs", "https://example.com/docs"]]

RENDER_JS = """async (bodies) => {
  // Render each body as a message with the page's own render module, the way the
  // message list does, and time it inside the page.
  const render = await import(document.querySelector('link[data-module="render"]').href);
  const me = { id: 'me', name: 'me', bot: false };
  const host = document.createElement('ol');
  document.body.append(host);
  const start = performance.now();
  const items = bodies.map((body, i) => {
    const li = render.messageItem({ key: `s${i}`, seq: i + 1, user: me, ts: Date.now(), body, me });
    host.append(li);
    return li;
  });
  const ms = performance.now() - start;
  const out = items.map((li) => ({
    text: li.querySelector('[data-testid="message-body"]').textContent,
    links: [...li.querySelectorAll('a')].map((a) => [a.textContent, a.href]),
  }));
  host.remove();
  return { ms, items: out };
}"""


def test_one_message_cannot_freeze_the_browser_and_links_keep_their_parentheses(server, people):
    mia = people(server.url, unique("mia"))
    # 50 messages built to make link detection slow render in well under a second.
    out = mia.page.evaluate(RENDER_JS, [PAREN_FLOOD] * 50)
    assert out["ms"] < 250, f"50 messages took {out['ms']:.0f} ms to render"
    for item in out["items"]:
        assert item["text"] == PAREN_FLOOD
        assert item["links"] == [["http://a", "http://a/"]]
    # A URL becomes a link up to 2048 characters; a longer one stays plain text.
    longest, too_long = ("https://example.com/" + "a" * (n - 20) for n in (2048, 2049))
    out = mia.page.evaluate(RENDER_JS, [longest, too_long, WIKI])
    assert [item["text"] for item in out["items"]] == [longest, too_long, WIKI]
    assert out["items"][0]["links"] == [[longest, longest]]
    assert out["items"][1]["links"] == []
    assert out["items"][2]["links"] == WIKI_LINKS

    # The same through the server, as another user sees them.
    noah = people(server.url, unique("noah"))
    for text in (WIKI, PAREN_FLOOD, too_long):
        mia.say(text)
    expect(noah.sent()).to_have_count(3)
    assert noah.bodies() == [WIKI, PAREN_FLOOD, too_long]
    links = [noah.sent().nth(i).locator("a").evaluate_all(
        "els => els.map(a => [a.textContent, a.href])") for i in range(3)]
    assert links == [WIKI_LINKS, [["http://a", "http://a/"]], []]


def test_sending_faster_than_allowed_waits_and_delivers_everything_once(server, people):
    nina = people(server.url, unique("nina"))
    omar = people(server.url, unique("omar"))
    burst = [f"burst {i}" for i in range(1, 31)]  # more than the server's burst of 20
    for text in burst:
        nina.say(text)
    expect(nina.page.locator('[data-testid="message"][data-state="pending"]')).to_have_count(
        0, timeout=30000)
    expect(nina.page.locator('[data-testid="message"][data-state="failed"]')).to_have_count(0)
    for user in (nina, omar):
        expect(user.sent()).to_have_count(30)
        # Each once. (Order is kept in practice, but sends already in flight when the
        # first is refused may legitimately win a refilled token, so not asserted.)
        assert sorted(user.bodies()) == sorted(burst)
        assert user.seqs() == sorted(set(user.seqs()))


def assert_complete(user: User, expected_tail: list[str]) -> None:
    """The room's records (messages and events) are contiguous by seq, its messages each
    once, ending as expected."""
    seqs = user.record_seqs()
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), seqs
    bodies = user.bodies()
    assert bodies[-len(expected_tail):] == expected_tail
    assert len(set(bodies)) == len(bodies)


def test_dropped_connection_shows_banner_and_recovers_without_gap_or_duplicate(server, people):
    proxy = TcpProxy(server.port)
    try:
        henry = people(proxy.url, unique("henry"))  # behind a cuttable "network"
        iris = people(server.url, unique("iris"))
        room = unique("ops")
        iris.create_room(room)
        iris.say("before the drop")
        henry.page.reload()
        henry.open_room(room)
        henry.wait_for_body("before the drop")

        proxy.cut()
        expect(henry.t("conn-banner")).to_be_visible()
        expect(henry.t("conn-banner")).to_contain_text("Connection lost")
        missed = [f"while you were away {i}" for i in range(1, 6)]
        for text in missed:
            iris.say(text)
        henry.say("typed while offline")
        pending = henry.page.locator('[data-testid="message"][data-state="pending"]')
        expect(pending).to_have_count(1)
        expect(pending.get_by_test_id("message-status")).to_have_text("Waiting for the connection…")
        expect(henry.t("conn-banner")).to_contain_text("Reconnecting in")  # between retries
        proxy.resume()

        expect(henry.t("conn-banner")).to_be_hidden(timeout=RECONNECT_MS)
        iris.wait_for_body("typed while offline")
        henry.wait_for_body("typed while offline")
        expect(pending).to_have_count(0)
        expected = ["before the drop", *missed, "typed while offline"]
        assert_complete(henry, expected)
        assert_complete(iris, expected)
        assert henry.seqs() == iris.seqs()
        # Live again in both directions.
        iris.say("welcome back")
        henry.wait_for_body("welcome back")
        assert_complete(henry, [*expected, "welcome back"])
    finally:
        proxy.close()


def test_server_restart_shows_banner_and_recovers_without_gap_or_duplicate(make_server, people):
    first = make_server()
    second = make_server()  # same database and Redis: the other node of a cluster
    jack = people(first.url, unique("jack"))
    kim = people(second.url, unique("kim"))
    jack.say("hello from node one")
    kim.wait_for_body("hello from node one")

    first.stop()  # SIGTERM: clients are told to go away (1001) and reconnect
    expect(jack.t("conn-banner")).to_be_visible()
    missed = [f"sent during the restart {i}" for i in range(1, 4)]
    for text in missed:
        kim.say(text)
    first.start()

    expect(jack.t("conn-banner")).to_be_hidden(timeout=RECONNECT_MS)
    jack.wait_for_body(missed[-1])
    assert_complete(jack, ["hello from node one", *missed])
    assert jack.seqs() == kim.seqs()
    jack.say("back on node one")
    kim.wait_for_body("back on node one")
    assert_complete(kim, ["hello from node one", *missed, "back on node one"])


def test_keyboard_only_phone_width_and_accessible_structure(server, people):
    lee = people(server.url, unique("lee"), viewport=PHONE)
    page = lee.page
    expect(page.get_by_role("log")).to_have_attribute("aria-live", "polite")
    expect(page.get_by_role("textbox", name=re.compile(r"^Message #"))).to_be_visible()
    # The rooms drawer opens from the keyboard, a room is created there, Escape closes it.
    lee.t("toggle-rooms").focus()
    page.keyboard.press("Enter")
    expect(lee.t("toggle-rooms")).to_have_attribute("aria-expanded", "true")
    expect(lee.t("sidebar")).to_be_visible()
    room = unique("kb")
    lee.t("new-room-name").focus()
    page.keyboard.type(room)
    page.keyboard.press("Enter")
    expect(lee.t("room-title")).to_have_text(f"#{room}")
    expect(lee.t("toggle-rooms")).to_have_attribute("aria-expanded", "false")
    lee.t("composer-input").focus()
    page.keyboard.type("typed with keys only")
    page.keyboard.press("Enter")
    lee.wait_for_body("typed with keys only")
    # Nothing overflows sideways at phone width.
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    # The server sends the security headers the client relies on.
    response = page.request.get(server.url + "/")
    headers = response.headers
    assert "script-src 'self'" in headers["content-security-policy"]
    assert headers["x-content-type-options"] == "nosniff"
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    # Every asset is referenced through a versioned static URL.
    html = response.text()
    assets = re.findall(r'(?:src|href)="(/static/[^"]+)"', html)
    assert assets and all("?v=" in a for a in assets), assets


def test_redis_restart_loses_no_message_between_two_nodes(make_server, people, private_redis):
    redis_url = private_redis.url
    first, second = make_server(redis_url), make_server(redis_url)
    pat = people(first.url, unique("pat"))
    quinn = people(second.url, unique("quinn"))
    quinn.say("before the outage")
    pat.wait_for_body("before the outage")

    # Redis gone: messages are still stored (and acked), but cannot reach the other node.
    private_redis.proc.send_signal(signal.SIGKILL)
    private_redis.proc.wait(10)
    during = [f"during the outage {i}" for i in range(1, 4)]
    for text in during:
        quinn.say(text)
    quinn.wait_for_body(during[-1])
    private_redis.start()

    # Whether the server resyncs or the client notices the seq gap, nothing is missing.
    pat.wait_for_body(during[-1], timeout=RECONNECT_MS)
    quinn.say("after the outage")
    pat.wait_for_body("after the outage", timeout=RECONNECT_MS)
    expected = ["before the outage", *during, "after the outage"]
    assert_complete(pat, expected)
    assert pat.seqs() == quinn.seqs()



CLIENT_PROTOCOL_JS = """async () => {
  // Drive static/chat.js directly, as the server would, to pin down its recovery logic.
  // Built from its modules as app.js builds it, each by its versioned URL.
  const load = (name) => import(document.querySelector(`link[data-module="${name}"]`).href);
  const [{ defineChat }, { defineRoom }, roomlog, presence, reading, { Outbox }, errors,
         { withRoomList }] =
    await Promise.all(['chat', 'room', 'roomlog', 'presence', 'reading', 'outbox', 'chaterrors',
                       'roomlist'].map(load));
  const Room = defineRoom({ ...roomlog, ...presence, ...reading });
  const Chat = defineChat({ Room, Outbox, errors, withRoomList });
  const sent = [];
  const view = new Proxy({}, { get: (_, k) => (k === 'isReading' ? () => true : () => {}) });
  const storage = {
    joinedRooms: () => [], setJoinedRooms() {}, lastRead: () => 0, setLastRead() {},
    outbox: () => [], setOutbox() {},
  };
  const me = { id: 'me', name: 'me', bot: false };
  const chat = new Chat({ me, send: (f) => { sent.push(f); return online; }, storage, view });
  let online = true;
  const last = (type) => sent.filter((f) => f.type === type).at(-1);
  const msg = (seq, user = { id: 'u', name: 'u', bot: false }, extra = {}) => (
    { type: 'message', room: 'r', id: `m${seq}`, seq, user, body: `b${seq}`, ts: 1, ...extra });
  const pause = (ms) => new Promise((ok) => setTimeout(ok, ms));
  const seqs = () => chat.rooms.get('r').messages.map((m) => m.seq);
  const out = {};

  chat.handle({ type: 'hello', user: me });
  chat.join('r');
  chat.handle({ type: 'joined', room: 'r', ref: last('join').ref, last_seq: 3, members: [],
                messages: [1, 2, 3].map((s) => msg(s)), has_more: true });
  out.firstJoin = last('join');
  // A live message beyond last + 1 is a gap: fetched with `history after`.
  chat.handle(msg(5));
  chat.handle(msg(5));
  await pause(1000);
  out.gapFetch = last('history');
  chat.handle({ type: 'history', room: 'r', ref: out.gapFetch.ref, has_more: false,
                messages: [4, 5].map((s) => msg(s)) });
  out.afterGap = seqs();

  // Offline: a message waits; the rejoin asks for everything after seq 5, pages on,
  // then the waiting message goes out with its client_id.
  chat.disconnected();
  online = false;
  chat.post('r', 'hello');
  const clientId = [...chat.rooms.get('r').outbox.keys()][0];
  out.sentWhileOffline = sent.filter((f) => f.type === 'send').length;
  online = true;
  chat.handle({ type: 'hello', user: me });
  out.rejoin = last('join');
  chat.handle({ type: 'joined', room: 'r', ref: out.rejoin.ref, last_seq: 9, members: [],
                messages: [5, 6, 7].map((s) => msg(s)), has_more: true });
  out.page = last('history');
  chat.handle({ type: 'history', room: 'r', ref: out.page.ref, has_more: false,
                messages: [8, 9].map((s) => msg(s)) });
  out.send = last('send');
  chat.handle({ type: 'message', ...msg(10, me, { client_id: clientId, body: 'hello' }) });
  chat.handle({ type: 'ack', room: 'r', ref: out.send.ref, client_id: clientId, id: 'm10',
                seq: 10, ts: 1 });
  out.final = seqs();
  out.outbox = chat.rooms.get('r').outbox.size;
  out.contiguous = chat.rooms.get('r').contiguous;
  out.sendClientId = out.send.client_id === clientId;
  return out;
}"""


def test_client_recovery_logic_fills_gaps_dedupes_and_resends(server, people):
    rita = people(server.url, unique("rita"))
    out = rita.page.evaluate(CLIENT_PROTOCOL_JS)
    assert "since" not in out["firstJoin"]
    assert {k: out["gapFetch"][k] for k in ("room", "after")} == {"room": "r", "after": 3}
    assert out["afterGap"] == [1, 2, 3, 4, 5]
    assert out["sentWhileOffline"] == 0
    assert out["rejoin"]["since"] == 5
    assert out["page"]["after"] == 7
    assert out["sendClientId"] is True
    assert out["final"] == list(range(1, 11))
    assert out["outbox"] == 0 and out["contiguous"] == 10


def test_operator_page_draws_live_status_and_refuses_others(server, people):
    """/status.html shows processes, services and totals to an operator, and explains
    itself to anyone else, with no inline script (the CSP would block it)."""
    visitor = people(server.url)
    visitor.page.goto(server.url + "/status.html")
    expect(visitor.t("problem")).to_contain_text("not an operator")
    operator = people(server.url, name="operator")
    chatter = people(server.url)
    chatter.open_room("general")
    chatter.say("count this one")
    operator.page.goto(server.url + "/status.html")
    expect(operator.t("processes").locator("tbody tr")).to_have_count(1)
    expect(operator.t("services")).to_contain_text("mongodb: up")
    expect(operator.t("services")).to_contain_text("redis: up")
    expect(operator.t("totals")).to_contain_text("Connections")
    expect(operator.t("updated")).to_contain_text("Updated")
    expect(operator.t("problem")).to_be_hidden()
    row = operator.t("processes").locator("tbody tr").first
    expect(row).to_contain_text("connected")


def test_a_field_entered_while_the_rooms_load_keeps_the_caret(server, people):
    """The room list arrives after the chat shows; someone who went into the "Create a
    room" field meanwhile keeps typing there (the message box does not take the caret)."""
    user = people(server.url, sign_up=False)
    # The page's own fetch of /api/rooms answers 2 s late.
    user.page.add_init_script("""
      const real = window.fetch;
      window.fetch = async (url, init) => {
        if (String(url).includes('/api/rooms?') && (init?.method ?? 'GET') === 'GET') {
          await new Promise((r) => setTimeout(r, 2000));
        }
        return real(url, init);
      };
    """)
    user.open()
    user.t("auth-switch").click()
    user.submit(user.name, PASSWORD)
    expect(user.t("chat-screen")).to_be_visible()
    field = user.t("new-room-name")
    field.click()
    field.press_sequentially("late")
    user.expect_room_title("general")  # the room list came
    expect(field).to_be_focused()
    field.press_sequentially("-news")
    expect(field).to_have_value("late-news")
