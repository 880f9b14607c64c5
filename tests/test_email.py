"""The email in every client (issue 14): subject, wording, links, chips, preheader, Outlook
fallbacks, layout without @media, contrast in light and dark mode, thumbnails.

Rendering is checked on the real Daily Papers of 2026-08-20; layout and contrast in headless
Chromium (tests/browser.py), with the colours the browser computes.
"""

from __future__ import annotations

import dataclasses
import re
from datetime import date
from typing import Any

import pytest

from digest.models import Edition, Paper, RankedPaper
from digest.ranking import matched_word, matches, rank
from digest.render import EmailContext, Renderer, keyword_chips, make_subject
from digest.subscribers import Subscriber
from tests.browser import evaluate
from tests.factories import papers_from_fixture

DAY = Edition.daily(date(2026, 8, 20))
WEEK = Edition.weekly(2026, 34)
ADA = Subscriber(
    email="ada@example.org",
    name="Ada",
    keywords=("robot*", "embodied", "reinforcement learning", "agent*"),
    max_papers=8,
)
THUMB = "https://cdn-thumbnails.huggingface.co/social-thumbnails/papers/{id}.png"


@pytest.fixture(scope="module")
def papers() -> list[Paper]:
    return papers_from_fixture("2026-08-20.json")


def render(
    papers: list[Paper],
    subscriber: Subscriber = ADA,
    *,
    edition: Edition = DAY,
    thumbnails: bool = False,
) -> Any:
    ranked = rank(papers, subscriber)
    ctx = EmailContext(
        edition=edition,
        papers=ranked,
        subscriber=subscriber,
        unsubscribe_url="https://papers.mylab.org/u/abc",
        unsubscribe_mailto=None,
        total_papers=len(papers),
    )
    return Renderer(thumbnails=thumbnails).render(ctx)


def cards(html: str) -> list[str]:
    return re.findall(r'<td class="paper".*?</td>\s*</tr>', html, re.S)


# --- subject and wording ---------------------------------------------------------------------


@pytest.mark.parametrize("edition", [DAY, WEEK])
def test_subject_fits_an_inbox_before_and_n_more(papers: list[Paper], edition: Edition) -> None:
    for top in papers:  # every real title as the top one
        ranked = [RankedPaper(top, 1.0), *[RankedPaper(p, 0.0) for p in papers[:9]]]
        subject = make_subject(edition, ranked)
        head, _, tail = subject.rpartition(" and ")
        assert tail == "9 more"
        assert len(head) <= 78, subject
        assert "\n" not in subject


@pytest.mark.parametrize("edition", [DAY, WEEK])
def test_a_past_edition_never_says_today(papers: list[Paper], edition: Edition) -> None:
    for subject in (ADA, Subscriber(email="x@mylab.org")):
        out = render(papers, subject, edition=edition)
        assert "today" not in out.html.lower() and "today" not in out.text.lower()
    empty = render(papers, Subscriber(email="y@mylab.org", keywords=("zzz",), only_matching=True))
    assert "No papers on Thursday" in empty.html
    assert "today" not in (empty.subject + empty.html + empty.text + empty.preheader).lower()
    out = render(papers)
    assert "The top 8 of 15 trending papers on Thursday, ranked for your keywords." in out.html


def test_see_all_links_to_that_dates_daily_papers_page(papers: list[Paper]) -> None:
    out = render(papers)
    url = "https://huggingface.co/papers/date/2026-08-20"
    assert re.search(rf'<a class="cta-link" href="{url}"[^>]*>See all papers of Aug 20', out.html)
    assert url in out.text
    weekly = render(papers, edition=WEEK)
    assert 'href="https://huggingface.co/papers/week/2026-W34"' in weekly.html


def test_each_card_has_a_separate_hugging_face_link(papers: list[Paper]) -> None:
    out = render(papers)
    found = cards(out.html)
    assert len(found) == 8
    ranked = rank(papers, ADA)
    shown = [r for r in ranked if not r.filler] + [r for r in ranked if r.filler]  # grouped
    for card, rp in zip(found, shown, strict=True):
        link = re.search(r'<a class="link" href="([^"]+)"[^>]*>Hugging Face</a>', card)
        assert link is not None and link.group(1) == rp.paper.hf_url
        assert card.count(f'href="{rp.paper.hf_url}"') == 2  # the title and the link


# --- keyword chips ---------------------------------------------------------------------------


def test_chips_show_the_word_that_matched_not_the_pattern(papers: list[Paper]) -> None:
    out = render(papers)
    chips = re.findall(r'<span class="chip"[^>]*>([^<]*)</span>', out.html)
    assert chips
    assert not any("*" in c for c in chips), chips
    assert "agents" in chips and "agent" in chips and "robot" in chips
    matched_lines = [line for line in out.text.splitlines() if "Matched:" in line]
    assert matched_lines and not any("*" in line for line in matched_lines)


def test_a_chip_only_for_a_visible_match_or_one_in_ai_keywords() -> None:
    in_title = Paper("1", "Robots That Learn", abstract="x", ai_summary="A summary.")
    hidden = Paper("2", "Plain Title", abstract="about robotics", ai_summary="A summary.")
    ai_only = Paper("3", "Other Title", ai_summary="A summary.", ai_keywords=("robot arms",))
    shown_abstract = Paper("4", "Plain Title", abstract="A robotic hand.")
    ada = Subscriber(email="a@mylab.org", keywords=("robot*",))
    views = {rp.paper.arxiv_id: rp for rp in rank([in_title, hidden, ai_only, shown_abstract], ada)}
    assert all(views[i].matched == ("robot*",) for i in "1234")  # all four matched
    out = render([in_title, hidden, ai_only, shown_abstract], ada)
    by_id = {re.search(r"papers/(\d)", c).group(1): c for c in cards(out.html)}  # type: ignore[union-attr]
    chip = r'<span class="chip"[^>]*>([^<]*)</span>'
    assert re.findall(chip, by_id["1"]) == ["robots"]
    assert re.findall(chip, by_id["2"]) == []  # only in the abstract, which is not shown
    assert re.findall(chip, by_id["3"]) == ["robot · in AI keywords"]
    assert re.findall(chip, by_id["4"]) == ["robotic"]


def test_keyword_chips_keep_acronyms_and_drop_duplicates() -> None:
    assert keyword_chips(("LLM*", "llms"), ("Small LLMs Reason",), ()) == ("LLMs",)
    assert keyword_chips(("agent*",), ("Competing Agents",), ()) == ("agents",)
    assert keyword_chips(("x",), ("nothing here",), ("no",)) == ()


@pytest.mark.parametrize(
    ("text", "keyword", "word"),
    [
        ("Competing Agents", "agent*", "Agents"),
        ("multi-agent RL", "agent*", "agent"),
        ("a reagent", "agent", None),
        ("deep reinforcement-learning", "reinforcement learning", "reinforcement-learning"),
        ("Reinforcement\nLearning", "reinforcement learning", "Reinforcement\nLearning"),
        ("two agents", "agent", "agents"),
        ("self play", "self-play", "self play"),
        ("", "agent", None),
    ],
)
def test_matched_word_is_what_the_keyword_matched(
    text: str, keyword: str, word: str | None
) -> None:
    assert matched_word(text, keyword) == word


def test_matched_word_agrees_with_matches_on_real_papers(papers: list[Paper]) -> None:
    keywords = ["agent*", "robot", "diffusion", "reinforcement learning", "LLM*", "video", "rl"]
    for p in papers:
        for text in (p.title, p.abstract, p.ai_summary or ""):
            for k in keywords:
                assert (matched_word(text, k) is not None) == matches(text, k), (text, k)


# --- preheader and Outlook fallbacks ---------------------------------------------------------


def test_preheader_is_hidden_without_a_colour_equal_to_the_background(
    papers: list[Paper],
) -> None:
    html = render(papers).html
    div = re.search(r'<div class="preheader" style="([^"]*)"', html)
    assert div is not None
    style = div.group(1).replace(" ", "")
    for part in ("display:none", "max-height:0", "overflow:hidden", "mso-hide:all"):
        assert part in style, style
    assert "color" not in style


def test_outlook_gets_a_ghost_table_and_plain_fonts(papers: list[Paper]) -> None:
    html = render(papers).html
    opened = re.findall(r'<!--\[if mso\]><table role="presentation"[^>]*width="600"', html)
    closed = re.findall(r"<!--\[if mso\]></td></tr></table><!\[endif\]-->", html)
    assert len(opened) == len(closed) == 1
    mso = re.search(r"<!--\[if mso\]>\s*<noscript>(.*?)<!\[endif\]-->", html, re.S)
    assert mso is not None
    assert "<o:PixelsPerInch>96</o:PixelsPerInch>" in mso.group(1)
    assert re.search(r"font-family: Arial, Helvetica, sans-serif !important", mso.group(1))
    assert re.search(r'class="container"[^>]*width="100%"', html)  # fluid, not width="600"


# --- in a browser: layout and contrast -------------------------------------------------------

OVERFLOW_SCRIPT = """
var width = document.documentElement.clientWidth, wide = [];
document.querySelectorAll('body *').forEach(function (el) {
  var r = el.getBoundingClientRect();
  if (r.width > 0 && r.right > width + 1) wide.push(el.tagName + '.' + el.className);
});
return {scroll: document.documentElement.scrollWidth, width: width, wide: wide.slice(0, 5)};
"""


def without_style_blocks(html: str) -> str:
    """What Gmail's mobile webmail keeps: inline styles only, no <style> (and no @media)."""
    return re.sub(r"<style\b.*?</style>", "", html, flags=re.S | re.I)


@pytest.mark.parametrize("keep_media", [True, False], ids=["with @media", "inline styles only"])
def test_375px_wide_phone_needs_no_horizontal_scrolling(
    papers: list[Paper], keep_media: bool
) -> None:
    html = render(papers, thumbnails=True).html
    if not keep_media:
        html = without_style_blocks(html)
    got = evaluate(html, OVERFLOW_SCRIPT, width=375, images=False)
    assert got["scroll"] <= 375, got
    assert got["wide"] == [], got


CONTRAST_SCRIPT = """
function rgb(c) {
  var m = c.match(/rgba?\\(([^)]+)\\)/); if (!m) return null;
  var p = m[1].split(',').map(parseFloat);
  return {r: p[0], g: p[1], b: p[2], a: p.length > 3 ? p[3] : 1};
}
function lum(c) {
  var ch = [c.r, c.g, c.b].map(function (v) {
    v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4);
  });
  return 0.2126 * ch[0] + 0.7152 * ch[1] + 0.0722 * ch[2];
}
function background(el) {
  for (; el; el = el.parentElement) {
    var c = rgb(getComputedStyle(el).backgroundColor);
    if (c && c.a > 0) return c;
  }
  return {r: 255, g: 255, b: 255, a: 1};
}
var failures = [], checked = 0;
document.querySelectorAll('body *').forEach(function (el) {
  if (el.closest('.preheader') || el.id === 'digest-test-result') return;
  var own = Array.prototype.some.call(el.childNodes, function (n) {
    return n.nodeType === 3 && n.textContent.trim() !== '';
  });
  var r = el.getBoundingClientRect();
  if (!own || r.width === 0 || r.height === 0) return;
  var s = getComputedStyle(el), fg = rgb(s.color), bg = background(el);
  var a = lum(fg), b = lum(bg);
  var ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
  var size = parseFloat(s.fontSize), bold = parseInt(s.fontWeight, 10) >= 700;
  var need = (size >= 24 || (bold && size >= 18.66)) ? 3 : 4.5;
  checked += 1;
  if (ratio < need) failures.push({
    element: el.tagName.toLowerCase() + '.' + el.className, text: el.textContent.slice(0, 30),
    color: s.color, background: bg,
    ratio: Math.round(ratio * 100) / 100, need: need});
});
return {failures: failures, checked: checked,
        body: getComputedStyle(document.body).backgroundColor};
"""


@pytest.mark.parametrize("dark", [False, True], ids=["light", "dark"])
def test_every_text_meets_wcag_aa_contrast(papers: list[Paper], dark: bool) -> None:
    html = render(papers, ADA, thumbnails=True).html
    got = evaluate(html, CONTRAST_SCRIPT, dark=dark, images=False)
    assert got["checked"] > 100, got  # every card's rank, votes, title, summary, chips, links
    assert got["body"] == ("rgb(11, 13, 18)" if dark else "rgb(243, 244, 246)"), got
    assert got["failures"] == [], got["failures"]


# --- thumbnails ------------------------------------------------------------------------------


def with_thumbnails(papers: list[Paper]) -> list[Paper]:
    return [dataclasses.replace(p, thumbnail=THUMB.format(id=p.arxiv_id)) for p in papers]


def test_thumbnails_are_off_by_default(papers: list[Paper]) -> None:
    assert "<img" not in render(with_thumbnails(papers)).html


def test_thumbnails_are_sized_with_alt_text_and_https_only(papers: list[Paper]) -> None:
    some = with_thumbnails(papers)
    some[0] = dataclasses.replace(some[0], thumbnail="http://insecure.example/x.png")
    some[1] = dataclasses.replace(some[1], thumbnail="javascript:alert(1)")
    out = render(some, Subscriber(email="x@mylab.org", max_papers=15), thumbnails=True)
    images = re.findall(r"<img [^>]*>", out.html)
    assert len(images) == 13
    for img in images:
        assert 'width="536"' in img
        assert re.search(r'alt="Figure: [^"]+"', img)
        assert re.search(r'src="https://cdn-thumbnails\.huggingface\.co/[^"]+\.png"', img)
        assert re.search(r"max-width:536px", img) and re.search(r"height:auto", img)
    assert "insecure.example" not in out.html and "javascript:" not in out.html


def test_thumbnails_never_block_the_layout_with_images_off(papers: list[Paper]) -> None:
    html = render(with_thumbnails(papers), thumbnails=True).html
    script = """
    var imgs = Array.prototype.map.call(document.images, function (i) {
      return i.getBoundingClientRect().height; });
    return {heights: imgs, scroll: document.documentElement.scrollWidth};
    """
    got = evaluate(html, script, width=600, images=False)
    assert len(got["heights"]) == 8
    assert max(got["heights"]) < 60, got  # the alt text's line(s), no empty 300 px box
    assert got["scroll"] <= 600
