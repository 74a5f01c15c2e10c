"""End-to-end tests of sharing files in the browser: attaching (button, paste, drop),
uploads with progress, cancel and refusals, and files on messages (previews, the larger
view, cards, downloads).

People in their own browser contexts against a real `run.py` (fixtures and the `User`
page object of test_browser.py). Pictures are made with Pillow in memory. Everything is
awaited through Playwright's auto-waiting `expect` or `wait_for_function`, never a sleep.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
from pathlib import Path

from PIL import Image
from playwright.sync_api import FilePayload, Locator, expect

from tests import test_browser
from tests.test_browser import XSS, User, unique
from tests.test_browser_team import create_room

# test_browser.py's fixtures, found by pytest under these module-level names.
browser = test_browser.browser
make_server = test_browser.make_server
server = test_browser.server
people = test_browser.people


# ----- helpers ------------------------------------------------------------------------


def png(width: int, height: int, color: tuple[int, int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), color).save(out, "PNG")
    return out.getvalue()


def payload(name: str, data: bytes, mime: str) -> FilePayload:
    return {"name": name, "mimeType": mime, "buffer": data}


def attach_with_button(user: User, *files: FilePayload) -> None:
    """Pick files as a person does: the attach button opens the file chooser."""
    with user.page.expect_file_chooser() as chooser:
        user.t("attach-button").click()
    assert chooser.value.is_multiple()
    chooser.value.set_files(list(files))


def tray_item(user: User, name: str) -> Locator:
    return user.t("attach-item").filter(has=user.page.get_by_test_id("attach-name").filter(
        has_text=name))


def wait_uploaded(user: User, name: str) -> None:
    item = tray_item(user, name)
    expect(item).to_have_attribute("data-state", "done", timeout=30000)
    bar = item.get_by_test_id("attach-progress")
    assert bar.evaluate("b => b.value === b.max && b.max > 0"), "the progress bar is not full"


def send(user: User, text: str = "") -> None:
    box = user.t("composer-input")
    box.fill(text)
    expect(user.t("composer-send")).to_be_enabled()
    user.t("composer-send").click()
    expect(user.t("attach-tray")).to_be_hidden()


def with_file(user: User, name: str) -> Locator:
    """The confirmed message that carries a file called `name`."""
    card = user.page.get_by_test_id("attachment-name").filter(
        has_text=re.compile(f"^{re.escape(name)}$"))
    thumb = user.page.get_by_test_id("attachment-thumb").and_(user.page.get_by_alt_text(
        name, exact=True))
    return user.sent().filter(has=card.or_(thumb))


def api(user: User, method: str, path: str, body: object = None) -> int:
    """Call the HTTP API from the user's page (session cookie and XSRF header, as the
    app does); the status."""
    return int(user.page.evaluate("""async ([method, path, body]) => {
      const xsrf = (document.cookie.match(/(?:^|; )_xsrf=([^;]*)/) || [])[1] || '';
      const init = {method, headers: {'X-XSRFToken': xsrf, 'Content-Type': 'application/json'}};
      if (body !== null) init.body = JSON.stringify(body);
      return (await fetch(path, init)).status;
    }""", [method, path, body]))


def private_room_with(owner: User, *members: User) -> str:
    room = create_room(owner, "pics", private=True)
    for m in members:
        assert api(owner, "POST", f"/api/rooms/{room}/members", {"user": m.name}) == 201
        m.page.locator(f'[data-testid="room-item"][data-room="{room}"]').click()
        expect(m.t("room-title")).to_have_text(re.compile("pics$"))
        expect(m.t("composer-input")).to_be_enabled()
    return room


# ----- tests --------------------------------------------------------------------------


def test_picture_in_a_private_room_previews_live_opens_larger_and_downloads_exact_bytes(
        server, people, tmp_path: Path):
    alice = people(server.url, unique("alice"))
    bob = people(server.url, unique("bob"))
    carol = people(server.url, unique("carol"))
    room = private_room_with(alice, bob)
    picture = png(900, 600, (200, 40, 90))

    attach_with_button(alice, payload("sunset.png", picture, "image/png"))
    wait_uploaded(alice, "sunset.png")
    item = tray_item(alice, "sunset.png")
    expect(item.get_by_test_id("attach-status")).to_have_text(re.compile(r"KB$"))
    send(alice)  # a picture alone makes a message

    # Alice's own message and Bob's, live: a preview from the thumbnail, loaded.
    for user in (alice, bob):
        msg = with_file(user, "sunset.png")
        expect(msg).to_have_count(1)
        thumb = msg.get_by_test_id("attachment-thumb")
        expect(thumb).to_have_attribute("src", re.compile(r"^/api/files/[A-Za-z0-9_-]{22}/thumb$"))
        expect(thumb).to_have_attribute("loading", "lazy")
        user.page.wait_for_function(
            "img => img.complete && img.naturalWidth > 0", arg=thumb.element_handle())
        # The server's preview: at most 320 pixels on its longest side.
        assert thumb.evaluate("img => img.naturalWidth") == 320
    src = str(with_file(bob, "sunset.png").get_by_test_id("attachment-thumb").get_attribute("src"))
    url = src.removesuffix("/thumb")

    # Bob opens the larger view: the whole picture, its name; Escape closes it.
    preview = with_file(bob, "sunset.png").get_by_test_id("attachment-image")
    preview.click()
    dialog = bob.t("image-dialog")
    expect(dialog).to_be_visible()
    expect(bob.t("image-title")).to_have_text("sunset.png")
    full = bob.t("image-full")
    expect(full).to_have_attribute("src", url)
    bob.page.wait_for_function("img => img.complete && img.naturalWidth === 900",
                               arg=full.element_handle())
    bob.page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    expect(preview).to_be_focused()

    # ... and downloads it from there: exactly the bytes Alice uploaded.
    preview.click()
    with bob.page.expect_download() as download:
        bob.t("image-download").click()
    assert download.value.suggested_filename == "sunset.png"
    got = Path(download.value.path()).read_bytes()
    assert hashlib.sha256(got).hexdigest() == hashlib.sha256(picture).hexdigest()
    bob.t("image-close").click()
    expect(dialog).to_be_hidden()

    # A reply to a message of files alone quotes their names.
    msg = with_file(bob, "sunset.png")
    msg.hover()
    msg.get_by_test_id("message-actions").click()
    bob.t("msg-reply").click()
    expect(bob.t("reply-bar")).to_contain_text("📎 sunset.png")
    bob.t("composer-input").press("Escape")
    expect(bob.t("reply-bar")).to_be_hidden()

    # Carol is signed in but not a member: no room, and the file and its preview are
    # as absent for her as a file that never existed.
    carol.page.reload()
    expect(carol.t("me-name")).to_have_text(carol.name)
    expect(carol.page.locator(f'[data-room="{room}"]')).to_have_count(0)
    for path in (url, src):
        r = carol.context.request.get(server.url + path)
        assert r.status == 404, (path, r.status)
        assert r.json()["error"]["code"] == "not_found"
    # While Bob, a member, gets both.
    assert bob.context.request.get(server.url + src).status == 200
    assert bob.context.request.get(server.url + url).body() == picture


def test_other_files_show_as_cards_through_edits_and_reloads_and_go_with_a_delete(
        server, people):
    alice = people(server.url, unique("alice"))
    bob = people(server.url, unique("bob"))
    room = unique("docs")
    bob.create_room(room)
    alice.page.reload()
    alice.open_room(room)
    notes = ("line one\n" * 300).encode()  # 2700 bytes
    name = f"{XSS}.txt"  # names are text, never markup

    attach_with_button(alice, payload(name, notes, "text/plain"),
                       payload("data.bin", bytes(range(256)) * 8, "application/octet-stream"))
    wait_uploaded(alice, name)
    wait_uploaded(alice, "data.bin")
    send(alice, "the notes and the data")

    for user in (alice, bob):
        msg = with_file(user, name)
        expect(msg.get_by_test_id("message-body")).to_have_text("the notes and the data")
        cards = msg.get_by_test_id("attachment-card")
        expect(cards).to_have_count(2)
        expect(cards.nth(0).get_by_test_id("attachment-name")).to_have_text(name)
        expect(cards.nth(0).get_by_test_id("attachment-meta")).to_have_text("Text · 2.6 KB")
        expect(cards.nth(1).get_by_test_id("attachment-name")).to_have_text("data.bin")
        expect(cards.nth(1).get_by_test_id("attachment-meta")).to_have_text("File · 2 KB")
        expect(cards.nth(0).get_by_test_id("attachment-download")).to_have_attribute(
            "download", name)
        expect(msg.locator("img")).to_have_count(0)
    card = with_file(bob, name).get_by_test_id("attachment-card").nth(0)
    with bob.page.expect_download() as download:
        card.get_by_test_id("attachment-download").click()
    assert Path(download.value.path()).read_bytes() == notes

    # An edit changes the text, never the files; a reload draws them from history.
    msg = with_file(alice, name)
    msg.hover()
    msg.get_by_test_id("message-actions").click()
    alice.t("msg-edit").click()
    alice.t("edit-input").fill("the notes, and the data")
    alice.t("edit-input").press("Enter")
    for user in (alice, bob):
        msg = with_file(user, name)
        expect(msg.get_by_test_id("edited")).to_be_visible()
        expect(msg.get_by_test_id("message-body")).to_have_text("the notes, and the data")
        expect(msg.get_by_test_id("attachment-card")).to_have_count(2)
    bob.page.reload()
    expect(with_file(bob, name).get_by_test_id("attachment-card")).to_have_count(2)

    # Deleted: a tombstone with no files, live and after a reload.
    msg = with_file(alice, name)
    msg.hover()
    msg.get_by_test_id("message-actions").click()
    alice.t("msg-delete").click()
    alice.t("confirm-delete").click()
    for user in (alice, bob):
        expect(user.t("tombstone")).to_have_count(1)
        expect(user.t("attachments")).to_have_count(0)
    bob.page.reload()
    expect(bob.t("tombstone")).to_have_count(1)
    expect(bob.t("attachments")).to_have_count(0)


PASTE_JS = """([bytes, name, type]) => {
  const dt = new DataTransfer();
  dt.items.add(new File([new Uint8Array(bytes)], name, {type}));
  const box = document.querySelector('[data-testid="composer-input"]');
  return box.dispatchEvent(new ClipboardEvent('paste', {clipboardData: dt, bubbles: true,
                                                        cancelable: true}));
}"""

DRAG_JS = """([kind, bytes, name, type]) => {
  const dt = new DataTransfer();
  dt.items.add(new File([new Uint8Array(bytes)], name, {type}));
  const log = document.querySelector('[data-testid="message-log"]');
  return log.dispatchEvent(new DragEvent(kind, {dataTransfer: dt, bubbles: true,
                                                cancelable: true}));
}"""


def test_paste_and_drop_each_attach_a_file(server, people):
    alice = people(server.url, unique("alice"))
    bob = people(server.url, unique("bob"))
    room = unique("shots")
    bob.create_room(room)
    alice.page.reload()
    alice.open_room(room)
    shot = list(png(64, 48, (10, 160, 60)))

    # A screenshot pasted into the message box (browsers call it "image.png"): taken
    # as a file with the time in its name, with a local preview; not pasted as text.
    not_cancelled = alice.page.evaluate(PASTE_JS, [shot, "image.png", "image/png"])
    assert not_cancelled is False  # the app took the paste
    expect(alice.t("composer-input")).to_have_value("")
    pasted = alice.t("attach-item").first
    expect(pasted.get_by_test_id("attach-name")).to_have_text(
        re.compile(r"^Pasted image \d{4}-\d\d-\d\d \d\d\.\d\d\.\d\d\.png$"))
    expect(pasted.locator("img.attach-preview")).to_have_attribute("src", re.compile("^blob:"))
    expect(pasted).to_have_attribute("data-state", "done")

    # A file dragged over the room shows the drop target; dropped, it is attached.
    expect(alice.t("drop-zone")).to_be_hidden()
    report = list(b"quarterly numbers\n" * 10)
    alice.page.evaluate(DRAG_JS, ["dragenter", report, "report.txt", "text/plain"])
    expect(alice.t("drop-zone")).to_be_visible()
    expect(alice.t("drop-zone")).to_have_text("Drop files here to attach them")
    taken = alice.page.evaluate(DRAG_JS, ["drop", report, "report.txt", "text/plain"])
    assert taken is False
    expect(alice.t("drop-zone")).to_be_hidden()
    wait_uploaded(alice, "report.txt")
    send(alice, "both")

    msg = with_file(bob, "report.txt")
    expect(msg.get_by_test_id("message-body")).to_have_text("both")
    expect(msg.get_by_test_id("attachment-thumb")).to_have_count(1)
    expect(msg.get_by_test_id("attachment-card")).to_have_count(1)
    # A drag that leaves again takes the target with it.
    alice.page.evaluate(DRAG_JS, ["dragenter", report, "x.txt", "text/plain"])
    expect(alice.t("drop-zone")).to_be_visible()
    alice.page.evaluate(DRAG_JS, ["dragleave", report, "x.txt", "text/plain"])
    expect(alice.t("drop-zone")).to_be_hidden()
    expect(alice.t("attach-tray")).to_be_hidden()


def test_cancel_aborts_an_upload_under_way_and_nothing_is_attached(server, people):
    alice = people(server.url, unique("alice"))
    bob = people(server.url, unique("bob"))
    room = unique("slow")
    bob.create_room(room)
    alice.page.reload()
    alice.open_room(room)
    # A slow uplink (Chromium's own throttling): 4 MB take about 30 s.
    cdp = alice.context.new_cdp_session(alice.page)
    cdp.send("Network.enable")
    cdp.send("Network.emulateNetworkConditions", {
        "offline": False, "latency": 0, "downloadThroughput": -1,
        "uploadThroughput": 128 * 1024})
    big = os.urandom(4 * 1024 * 1024)

    attach_with_button(alice, payload("big.bin", big, "application/octet-stream"))
    item = tray_item(alice, "big.bin")
    expect(item).to_have_attribute("data-state", "uploading")
    alice.page.wait_for_function(
        "() => document.querySelector('[data-testid=attach-progress]').value > 0")
    expect(alice.t("composer-send")).to_be_disabled()
    alice.t("composer-input").fill("nothing attached")
    alice.t("composer-input").press("Enter")
    expect(alice.t("composer-error")).to_have_text("Wait for the files to upload, or cancel them.")
    expect(alice.t("composer-input")).to_have_value("nothing attached")

    item.get_by_test_id("attach-remove").click()
    expect(item).to_have_attribute("data-state", "cancelled")
    expect(item.get_by_test_id("attach-status")).to_have_text("Upload cancelled")
    expect(alice.t("composer-error")).to_have_text("")
    cdp.send("Network.emulateNetworkConditions", {
        "offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1})
    alice.t("composer-send").click()
    expect(alice.t("attach-tray")).to_be_hidden()
    for user in (alice, bob):
        user.wait_for_body("nothing attached")
        expect(user.t("attachments")).to_have_count(0)


def test_a_file_over_the_limit_shows_the_servers_refusal(make_server, people, monkeypatch):
    monkeypatch.setenv("CHAT_MAX_FILE_BYTES", str(100 * 1024))
    server = make_server()
    alice = people(server.url, unique("alice"))
    room = unique("limits")
    alice.create_room(room)

    attach_with_button(alice, payload("huge.bin", os.urandom(300 * 1024), "application/zip"),
                       payload("small.txt", b"fits", "text/plain"))
    item = tray_item(alice, "huge.bin")
    expect(item).to_have_attribute("data-state", "failed", timeout=30000)
    expect(item.get_by_test_id("attach-status")).to_have_text(
        "huge.bin is too large: a file may be at most 100 KB.")
    # The refused one does not hold up the other, and is not sent.
    wait_uploaded(alice, "small.txt")
    send(alice, "only the small one")
    msg = with_file(alice, "small.txt")
    expect(msg.get_by_test_id("attachment-card")).to_have_count(1)
    expect(alice.page.get_by_text("huge.bin")).to_have_count(0)


def test_more_than_ten_files_at_once_are_refused_with_a_reason(server, people):
    alice = people(server.url, unique("alice"))
    alice.create_room(unique("many"))
    attach_with_button(alice, *(payload(f"f{i}.txt", b"x", "text/plain") for i in range(11)))
    expect(alice.t("composer-error")).to_have_text(
        "A message carries at most 10 files: only the first 10 were added.")
    expect(alice.t("attach-item")).to_have_count(10)
    # The ten go out together, in the order they were picked.
    expect(alice.page.locator('[data-testid="attach-item"][data-state="done"]')).to_have_count(
        10, timeout=30000)
    send(alice, "ten files")
    msg = with_file(alice, "f9.txt")
    expect(msg.get_by_test_id("attachment-name")).to_have_text([f"f{i}.txt" for i in range(10)])
