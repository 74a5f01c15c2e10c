"""The Markdown subset (static/markdown.js) in a real Chromium: what it renders, and a
Hypothesis fuzz test that no input, however hostile, makes anything but the allowed
elements and attributes (no script, no event handlers, no javascript:/data: links)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from playwright.sync_api import Page, expect

from tests import test_browser
from tests.test_browser import unique

# test_browser.py's fixtures, found by pytest under these module-level names.
browser = test_browser.browser
make_server = test_browser.make_server
server = test_browser.server
people = test_browser.people

ALLOWED_TAGS = {"strong", "em", "del", "code", "pre", "blockquote", "ul", "ol", "li", "a",
                "span", "br", "p"}
ALLOWED_ATTRS = {"href", "class", "title", "rel", "target"}
SAFE_SCHEMES = ("http://", "https://", "mailto:")
SYNTAX = set("*_~`[]()>-+:@\\#!.0123456789\n")

RENDER_ALL_JS = """async (texts) => {
  const load = (name) => import(document.querySelector(`link[data-module="${name}"]`).href);
  const [md, render] = await Promise.all([load('markdown'), load('render')]);
  return texts.map((text) => {
    const host = document.createElement('div');
    host.append(md.renderMarkdown(text, { document, links: render.linkRanges,
                                          safeHref: render.safeHref, me: 'ann' }));
    const elements = [...host.querySelectorAll('*')].map((el) => ({
      tag: el.localName,
      attrs: [...el.attributes].map((a) => [a.name, a.value]),
    }));
    return { elements, text: host.textContent, html: host.innerHTML };
  });
}"""


@pytest.fixture
def page(server, people) -> Iterator[Page]:
    """A page of the app (signed out is enough: its modules are what is tested)."""
    user = people(server.url, unique("md"), sign_up=False)
    user.open()
    yield user.page


def render_all(page: Page, texts: list[str]) -> list[dict[str, Any]]:
    return list(page.evaluate(RENDER_ALL_JS, texts))


def test_the_documented_subset_renders_as_documented(page):
    out = render_all(page, [
        "**bold** *it* _it2_ ~~gone~~ `x < y` snake_case_name 2 * 3 * 4",
        "```\n  keep   spaces\n<b>no</b>\n```",
        "> quoted **strong**\n> > deeper\nafter",
        "- one\n- two\n1. first\n2. second",
        "[docs](https://example.com/a_(b)) [bad](javascript:alert(1)) mailto:ann@example.com",
        "hi @ann and @bob, cc @room :tada: :nope: \\*not italic\\* ann@example.com",
    ])
    html = [o["html"] for o in out]
    assert html[0] == ("<strong>bold</strong> <em>it</em> <em>it2</em> <del>gone</del> "
                       "<code>x &lt; y</code> snake_case_name 2 * 3 * 4")
    assert html[1] == "<pre><code>  keep   spaces\n&lt;b&gt;no&lt;/b&gt;</code></pre>"
    assert html[2] == ("<blockquote>quoted <strong>strong</strong><blockquote>deeper"
                       "</blockquote></blockquote>after")
    assert html[3] == ("<ul><li>one</li><li>two</li></ul>"
                       "<ol><li>first</li><li>second</li></ol>")
    link = '<a href="https://example.com/a_(b)" rel="noopener noreferrer" target="_blank"'
    assert link in html[4]
    assert "javascript:" not in "".join(str(a) for e in out[4]["elements"] for a in e["attrs"])
    assert "[bad](javascript:alert(1))" in out[4]["text"]
    assert 'href="mailto:ann@example.com"' in html[4]
    assert '<span class="mention mention-me">@ann</span>' in html[5]
    assert '<span class="mention">@bob</span>' in html[5]
    assert '<span class="mention mention-room">@room</span>' in html[5]
    assert '<span class="emoji" title=":tada:">🎉</span>' in html[5]
    assert ":nope:" in out[5]["text"] and "*not italic*" in out[5]["text"]
    assert "ann@example.com" in out[5]["text"] and html[5].count('class="mention') == 3


def test_a_formatted_message_reaches_the_other_side_formatted(server, people):
    ann = people(server.url, unique("ann"))
    ben = people(server.url, unique("ben"))
    ann.say("**ship** it `now`\n- a\n- b")
    ben.wait_for_body("ship")
    body = ben.sent().last.get_by_test_id("message-body")
    expect(body.locator("strong")).to_have_text("ship")
    expect(body.locator("code")).to_have_text("now")
    expect(body.locator("li")).to_have_count(2)
    ann.t("formatting-help").click()
    expect(ann.t("format-dialog")).to_be_visible()
    ann.page.keyboard.press("Escape")
    expect(ann.t("format-dialog")).to_be_hidden()


FRAGMENTS = [
    "*", "**", "_", "__", "~~", "`", "```", "```\n", "\n", "\n\n", "> ", "- ", "1. ", "+ ",
    "[", "]", "(", ")", "](", "[x](", "\\", "@", "@room", "@ann", ":", ":tada:", ":+1:",
    "<script>alert(1)</script>", "<img src=x onerror=alert(1)>", "<iframe src=//x>",
    "<style>*{}</style>", "<a href=javascript:alert(1)>", "javascript:alert(1)",
    "[x](javascript:alert(1))", "[x](data:text/html,<script>alert(1)</script>)",
    "data:text/html;base64,PHNjcmlwdD4=", "[x](JaVaScRiPt:alert(1))", "[x](https://ok.example)",
    "https://example.com/a_(b)", "mailto:a@b.c", "http://", "\" onmouseover=\"x", "'", "&lt;",
    "&#x3C;", "<!--", "-->", "<svg onload=alert(1)>", "\U0001d518\U0001d52b\U0001d526",
    "\u202e", "\u200b", "é", "👍🏽",
    "[[[[", "]]]]", "((((", "))))", "[a [b](https://x.y) c](https://z)",
]
texts = st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=8)),
                 max_size=25).map("".join)


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(batch=st.lists(texts, min_size=1, max_size=15))
# Found by the fuzzer: text after what looks like a closing fence, and after an
# opening fence, must be shown.
@example(batch=["```\n```<!--", "```<b>\nx\n```", "```js\nx\n```\ny"])
def test_fuzzed_input_never_makes_unsafe_dom(page, batch):
    for text, out in zip(batch, render_all(page, batch), strict=True):
        for el in out["elements"]:
            assert el["tag"] in ALLOWED_TAGS, (text, el)
            for name, value in el["attrs"]:
                assert name in ALLOWED_ATTRS and not name.startswith("on"), (text, el)
                if name == "href":
                    assert el["tag"] == "a" and value.startswith(SAFE_SCHEMES), (text, el)
        # HTML-ish text stays text: every "<" typed is a "<" shown.
        assert out["text"].count("<") == text.count("<"), text
        if not SYNTAX & set(text) and "http" not in text and "mailto" not in text:
            assert out["text"] == text and not out["elements"], text
