"""Rendering: escaping, highlights, both parts in step, subjects, templates, inlining."""

from __future__ import annotations

import dataclasses
import random
import re
import textwrap
from datetime import date
from pathlib import Path

import pytest
from premailer import Premailer

from digest.errors import ConfigError
from digest.models import Edition, Paper, RankedPaper
from digest.render import (
    BLOCK_END,
    BLOCK_START,
    PREMAILER_OPTIONS,
    SUMMARY_MAX_CHARS,
    TEXT_WIDTH,
    EmailContext,
    Renderer,
    author_line,
    highlight,
    make_subject,
    shorten,
    unmark,
)
from tests.factories import FakeSubscriber, papers_from_fixture

DAY = date(2025, 5, 29)
UNSUB = "https://digest.example.org/unsubscribe/TOKEN123"


def ranked(papers: list[Paper], keywords: tuple[str, ...] = ()) -> list[RankedPaper]:
    out = []
    for p in papers:
        matched = tuple(k for k in keywords if k.lower() in f"{p.title} {p.abstract}".lower())
        in_title = tuple(k for k in matched if k.lower() in p.title.lower())
        out.append(RankedPaper(p, float(p.upvotes or 0), matched, in_title))
    return out


def context(
    papers: list[RankedPaper],
    *,
    edition: Edition | None = None,
    subscriber: FakeSubscriber | None = None,
    unsubscribe_url: str | None = UNSUB,
    unsubscribe_mailto: str | None = None,
    total: int | None = None,
) -> EmailContext:
    return EmailContext(
        edition=edition or Edition.daily(DAY),
        papers=papers,
        subscriber=subscriber if subscriber is not None else FakeSubscriber(),
        unsubscribe_url=unsubscribe_url,
        unsubscribe_mailto=unsubscribe_mailto,
        total_papers=total if total is not None else len(papers),
    )


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer(site_url="https://papers.example.org/")


@pytest.fixture(scope="module")
def real_day() -> list[Paper]:
    return papers_from_fixture("2026-08-20.json")


# --- escaping and highlights ----------------------------------------------------------------


def test_untrusted_title_and_abstract_are_escaped_in_html_and_literal_in_text(
    renderer: Renderer,
) -> None:
    evil = Paper(
        arxiv_id="2401.00001",
        title="<script>alert(1)</script> Attacks",
        abstract="Tom & Jerry use <b>bold</b> R&D claims.",
        authors=("Mallory",),
        upvotes=3,
    )
    sub = FakeSubscriber(keywords=("R&D",))
    out = renderer.render(context(ranked([evil], sub.keywords), subscriber=sub))

    assert "<script>" not in out.html
    assert "&lt;script&gt;alert(1)&lt;/script&gt; Attacks" in out.html
    assert "<b>" not in out.html
    assert "Tom &amp; Jerry" in out.html
    assert re.search(r'<span class="hl"[^>]*>R&amp;D</span> claims', out.html)
    assert "<script>alert(1)</script> Attacks" in out.text
    assert "Tom & Jerry use <b>bold</b> R&D claims." in out.text


def test_highlight_escapes_each_segment() -> None:
    assert str(highlight("a <b> & LLMs", ("<b>", "llm"))) == (
        'a <span class="hl">&lt;b&gt;</span> &amp; <span class="hl">LLMs</span>'
    )
    assert str(highlight("a <b>", ())) == "a &lt;b&gt;"
    # whole words only: "RL" is not highlighted inside "RLHF"
    assert "hl" not in str(highlight("RLHF helps", ("RL",)))
    # the ranking's rules: "*" prefixes and hyphenated multi-word keywords highlight too
    assert str(highlight("Multi-Agent RL", ("agent*",))) == (
        'Multi-<span class="hl">Agent</span> RL'
    )
    assert str(highlight("deep reinforcement-learning", ("reinforcement learning",))) == (
        'deep <span class="hl">reinforcement-learning</span>'
    )


def test_matched_keywords_are_highlighted_and_shown_as_chips(
    renderer: Renderer, real_day: list[Paper]
) -> None:
    sub = FakeSubscriber(keywords=("agent", "reasoning"))
    papers = [rp for rp in ranked(real_day, sub.keywords) if "agent" in rp.matched_in_title]
    assert papers, "fixture day has a paper with 'agent' in its title"
    out = renderer.render(context(papers[:1], subscriber=sub))

    title_html = re.search(r'<h2 class="title".*?</h2>', out.html, re.S)
    assert title_html is not None
    assert re.search(
        r'<span class="hl" style="[^"]*background-color[^"]*">agents?</span>',
        title_html.group(0),
        re.I,
    )
    for kw in papers[0].matched:
        assert re.search(rf'<span class="chip"[^>]*>{re.escape(kw)}</span>', out.html)
    assert "Matched: " + ", ".join(papers[0].matched) in out.text


def test_no_highlight_or_chips_without_keywords(renderer: Renderer, real_day: list[Paper]) -> None:
    out = renderer.render(context(ranked(real_day[:5]), subscriber=FakeSubscriber()))
    assert 'class="hl"' not in out.html
    assert 'class="chip"' not in out.html
    assert "Matched:" not in out.text
    assert "you follow no keywords" in out.text


# --- content --------------------------------------------------------------------------------


def test_both_parts_carry_the_same_papers_links_and_unsubscribe(
    renderer: Renderer, real_day: list[Paper]
) -> None:
    papers = real_day[:10]
    out = renderer.render(context(ranked(papers), total=len(real_day)))
    assert any(p.github_repo for p in papers) and any(p.project_page for p in papers)
    for p in papers:
        links = [p.hf_url, p.arxiv_abs_url, p.arxiv_pdf_url]
        links += [u for u in (p.github_repo, p.project_page) if u]
        for url in links:
            assert f'href="{url}"' in out.html, url
            assert url in out.text, url
        assert p.title in " ".join(out.text.split())  # wrapped over lines
        assert f"&#9650;&nbsp;{p.upvotes}" in out.html or f"▲\xa0{p.upvotes}<" in out.html
        assert f"▲ {p.upvotes} upvote" in out.text
    assert f'href="{UNSUB}"' in out.html
    assert UNSUB in out.text
    assert "Unsubscribe" in out.html and "Unsubscribe" in out.text
    # order: same papers, same order, in both parts
    # each card links its Hugging Face page twice: the title and a "Hugging Face" link
    html_ids = list(dict.fromkeys(re.findall(r"huggingface\.co/papers/([\d.]+)\"", out.html)))
    text_ids = re.findall(r"Hugging Face: https://huggingface\.co/papers/([\d.]+)", out.text)
    assert html_ids == text_ids == [p.arxiv_id for p in papers]


def test_stars_and_comments_are_shown(renderer: Renderer) -> None:
    p = Paper(
        "2401.00002",
        "Starry",
        "abs",
        ("A",),
        upvotes=7,
        comments=2,
        github_repo="https://github.com/x/y",
        github_stars=1234,
    )
    out = renderer.render(context(ranked([p])))
    assert re.search(r"Code <span class=\"muted\"[^>]*>★\xa01.2k</span>", out.html)
    assert "https://github.com/x/y (★ 1.2k)" in out.text
    assert "2 comments" in out.text and "2\xa0comments" in out.html

    zero = Paper("2401.00009", "No stars yet", github_repo="https://github.com/x/z", github_stars=0)
    out = renderer.render(context(ranked([zero])))
    assert "https://github.com/x/z\n" in out.text
    assert "★" not in out.html and "★" not in out.text


def test_ai_summary_preferred_else_abstract_shortened_at_word_boundary(
    renderer: Renderer,
) -> None:
    abstract = " ".join(f"word{i}" for i in range(200))
    with_ai = Paper("2401.00003", "With AI", abstract, ai_summary="One short AI sentence.")
    without = Paper("2401.00004", "Without AI", abstract)
    out = renderer.render(context(ranked([with_ai, without])))

    assert "One short AI sentence." in out.html and "One short AI sentence." in out.text
    shown = shorten(abstract, SUMMARY_MAX_CHARS)
    assert shown.endswith("…") and len(shown) <= SUMMARY_MAX_CHARS
    assert abstract.startswith(shown[:-1]) and abstract[len(shown) - 1] == " "
    assert shown in out.html
    assert "word199" not in out.html  # rest of the abstract is gone
    assert shorten("short text", SUMMARY_MAX_CHARS) == "short text"


def test_authors_first_three_then_et_al() -> None:
    assert author_line(("A", "B", "C", "D")) == "A, B, C et al."
    assert author_line(("A", "B", "C")) == "A, B, C"
    assert author_line(("A",)) == "A"
    assert author_line(()) == ""


def test_feed_only_paper_shows_no_upvotes(renderer: Renderer) -> None:
    p = Paper("2401.00005", "From a feed", "abstract", ("A",), upvotes=None)
    out = renderer.render(context(ranked([p])))
    assert 'class="votes"' not in out.html
    assert "▲" not in out.text


def test_text_part_wraps_prose_but_never_breaks_urls(
    renderer: Renderer, real_day: list[Paper]
) -> None:
    long_url = "https://example.org/" + "x" * 120
    p = Paper("2401.00006", "T " * 60, "word " * 100, ("A",), upvotes=1, project_page=long_url)
    out = renderer.render(context(ranked([*real_day[:5], p])))
    for line in out.text.splitlines():
        assert len(line) <= TEXT_WIDTH or "https://" in line, line
    assert any(line.endswith(" " + long_url) for line in out.text.splitlines())


def test_header_has_date_and_site_link_and_hidden_preheader(
    renderer: Renderer, real_day: list[Paper]
) -> None:
    out = renderer.render(context(ranked(real_day[:3])))
    assert "Thursday, May 29, 2025" in out.html
    assert 'href="https://papers.example.org/"' in out.html
    assert out.preheader.startswith("Also: " + real_day[1].title[:20])
    pre = re.search(r'<div class="preheader" style="([^"]*)">([^<]*)', out.html)
    assert pre is not None
    assert "display:none" in pre.group(1)
    assert pre.group(2).startswith(out.preheader)


def test_footer_says_why_and_falls_back_to_mailto_then_reply(
    renderer: Renderer, real_day: list[Paper]
) -> None:
    sub = FakeSubscriber(keywords=("agent", "robotics"))
    papers = ranked(real_day[:2], sub.keywords)
    out = renderer.render(context(papers, subscriber=sub))
    why = "ada@example.org is subscribed to Daily Papers digests; your keywords: agent, robotics."
    assert why in " ".join(out.text.split())
    assert "ada@example.org</strong> is subscribed" in out.html

    mailto = renderer.render(
        context(papers, subscriber=sub, unsubscribe_url=None, unsubscribe_mailto="u@example.org")
    )
    assert 'href="mailto:u@example.org?subject=unsubscribe"' in mailto.html
    assert "mailto:u@example.org?subject=unsubscribe" in mailto.text

    reply = renderer.render(context(papers, subscriber=sub, unsubscribe_url=None))
    assert "reply to this message" in reply.html
    assert "reply to this message" in reply.text
    assert 'href="mailto:' not in reply.html


# --- subjects and empty editions ------------------------------------------------------------


def test_subject_formats(real_day: list[Paper]) -> None:
    rp = ranked(real_day[:10])
    daily = Edition.daily(DAY)
    long_top = real_day[0].title  # 90 characters: cut at a word so the subject fits an inbox
    assert len("Daily Papers · May 29: " + long_top) > 78
    assert make_subject(daily, rp) == (
        "Daily Papers · May 29: Zetta ζ: An Efficient Closed-Loop Embodied Harness for… and 9 more"
    )
    assert len(make_subject(daily, rp).rsplit(" and ", 1)[0]) <= 78
    short = Paper("2405.00001", "Scaling Laws for Tiny Agents")
    rp = [RankedPaper(short, 1.0), *rp[1:]]
    top = short.title
    assert make_subject(daily, rp) == f"Daily Papers · May 29: {top} and 9 more"
    assert make_subject(daily, rp[:1]) == f"Daily Papers · May 29: {top}"
    assert make_subject(daily, []) == "Daily Papers · May 29: no papers"
    weekly = Edition.weekly(2026, 34)
    assert make_subject(weekly, rp[:5]) == f"Weekly Papers · Aug 17–23: {top} and 4 more"
    assert make_subject(Edition.weekly(2026, 36), rp[:2]).startswith(
        "Weekly Papers · Aug 31–Sep 6: "
    )
    spaced = RankedPaper(Paper("1", "A  very\n long   title"), 1.0)
    assert make_subject(daily, [spaced]) == "Daily Papers · May 29: A very long title"


def test_empty_edition_has_friendly_body(renderer: Renderer) -> None:
    out = renderer.render(context([]))
    assert out.subject == "Daily Papers · May 29: no papers"
    assert "No papers on Thursday" in out.html and "No papers on Thursday" in out.text
    assert 'class="paper"' not in out.html
    assert UNSUB in out.text and UNSUB in out.html


# --- CSS inlining ---------------------------------------------------------------------------


def test_styles_are_inlined_and_media_rules_kept(renderer: Renderer, real_day: list[Paper]) -> None:
    out = renderer.render(context(ranked(real_day[:3])))
    assert re.search(r'<p class="summary" style="[^"]*font-size:15px', out.html)
    assert re.search(r'<h2 class="title" style="[^"]*font-weight:700', out.html)
    outside_mso = re.sub(r"<!--\[if mso\]>.*?<!\[endif\]-->", "", out.html, flags=re.S)
    style = re.search(r"<style[^>]*>(.*?)</style>", outside_mso, re.S)
    assert style is not None
    css = style.group(1)
    assert "@media (prefers-color-scheme: dark)" in css
    assert "max-width: 620px" in css
    assert "!important" in css  # media rules must beat the inline styles
    assert ".summary {" not in css.split("@media")[0]  # plain rules were inlined, not kept
    assert '<meta name="color-scheme" content="light dark">' in out.html


def test_renderer_is_reusable_and_output_stable(renderer: Renderer, real_day: list[Paper]) -> None:
    ctx = context(ranked(real_day[:4]))
    assert renderer.render(ctx) == renderer.render(ctx)


# --- templates ------------------------------------------------------------------------------


def test_override_dir_replaces_one_template_and_keeps_the_other(
    tmp_path: Path, real_day: list[Paper]
) -> None:
    (tmp_path / "digest.txt.j2").write_text(
        "CUSTOM {{ subject }}\n{% for p in papers %}{{ p.hf_url }}\n{% endfor %}"
    )
    r = Renderer(tmp_path)
    out = r.render(context(ranked(real_day[:2])))
    assert out.text.startswith("CUSTOM Daily Papers · May 29: ")
    assert real_day[1].hf_url in out.text
    assert 'class="paper"' in out.html  # packaged HTML template
    assert r.text_template_path == str(tmp_path / "digest.txt.j2")


def test_override_html_is_autoescaped(tmp_path: Path) -> None:
    (tmp_path / "digest.html.j2").write_text(
        "<html><body>{% for p in papers %}<p>{{ p.title }}</p>{% endfor %}</body></html>"
    )
    out = Renderer(tmp_path).render(context(ranked([Paper("1", "<i>x</i>")])))
    assert "&lt;i&gt;x&lt;/i&gt;" in out.html


def test_undefined_variable_in_override_names_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "digest.txt.j2").write_text("line one\nline two\n{{ no_such_variable }}\n")
    r = Renderer(tmp_path)
    with pytest.raises(ConfigError) as e:
        r.render(context([]))
    assert f"{tmp_path / 'digest.txt.j2'}:3:" in str(e.value)
    assert "no_such_variable" in str(e.value)


def test_syntax_error_in_override_names_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "digest.html.j2").write_text("<html>\n{% for p in papers %}\n</html>\n")
    with pytest.raises(ConfigError, match=r"digest\.html\.j2:\d+: "):
        Renderer(tmp_path)


def test_missing_templates_dir_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="DIGEST_TEMPLATES_DIR"):
        Renderer(tmp_path / "nope")


def test_repo_root_templates_link_points_at_packaged_templates() -> None:
    root = Path(__file__).parent.parent / "templates"
    assert (root / "digest.html.j2").read_text() == (
        Path(__file__).parent.parent / "digest" / "templates" / "digest.html.j2"
    ).read_text()


def test_cached_paper_blocks_give_exactly_premailers_whole_document(real_day: list[Paper]) -> None:
    fresh = Renderer()  # its own block cache
    keyword_sets = [(), ("agent",), ("video", "diffusion"), ("agent", "reasoning", "LLM")]
    for round_ in range(2):  # the first round fills the cache, the second uses it
        for keywords in keyword_sets:
            for papers in (real_day[:5], real_day[2:9], real_day[:1], []):
                ctx = context(
                    ranked(papers, keywords), subscriber=FakeSubscriber(keywords=keywords)
                )
                variables = fresh.context_for(ctx)
                raw = fresh._run(fresh._html, variables)
                assert (BLOCK_START in raw) == bool(papers)
                whole = fresh.inline_whole(unmark(raw))
                assert fresh.inline(raw) == whole, (round_, keywords, len(papers))
                assert BLOCK_START not in whole and BLOCK_END not in whole
    assert fresh.block_hits > 0


def test_a_contextual_selector_turns_the_block_cache_off(tmp_path: Path) -> None:
    html = (
        "<html><head><style>.card .title { color: red; } .title { font-weight: 700; }</style>"
        "</head><body><table class='card'>"
        f"{BLOCK_START}<tr><td class='title'>A</td></tr>{BLOCK_END}"
        "</table><p class='title'>B</p></body></html>"
    )
    fresh = Renderer()
    assert fresh.inline(html) == fresh.inline_whole(unmark(html))
    assert fresh.block_hits == 0 and fresh.block_misses == 0


def test_a_message_with_some_new_blocks_inlines_only_those(real_day: list[Paper]) -> None:
    fresh = Renderer()

    def raw(papers: list[Paper]) -> str:
        ctx = context(ranked(papers, ()), subscriber=FakeSubscriber(keywords=()))
        return fresh._run(fresh._html, fresh.context_for(ctx))

    first, second = raw(real_day[:3]), raw(real_day[:6])  # same papers at ranks 1–3, then 3 new
    assert fresh.inline(first) == fresh.inline_whole(unmark(first))
    assert (fresh.block_hits, fresh.block_misses) == (0, 3)
    assert fresh.inline(second) == fresh.inline_whole(unmark(second))
    assert (fresh.block_hits, fresh.block_misses) == (3, 6)
    assert fresh.inline(second) == fresh.inline_whole(unmark(second))
    assert (fresh.block_hits, fresh.block_misses) == (9, 6)


@pytest.mark.parametrize(
    "body",
    [
        # Classes spelled every way HTML allows; each rule matches or not as premailer says.
        "<p class=\"title\">a</p><p CLASS='summary hl'>b</p><p class=link>c</p>",
        '<p class = "  meta\n rank ">d</p><span class="chip\tmuted">e</span>',
        # A character reference in a class attribute: no rule may be skipped.
        '<p class="&#116;itle">f</p><p class="summary">g</p>',
        # "class=" in text and an attribute that only ends in "class" (superset is fine).
        '<p data-class="date">class="intro"</p><p class="footer-p">h</p><p>i</p>',
        '<table class="card font"><tr><td class="paper">j</td></tr></table>',
    ],
)
def test_skipping_absent_classes_gives_exactly_premailers_output(body: str) -> None:
    css = (Path(__file__).parent.parent / "digest" / "templates" / "digest.html.j2").read_text()
    style = css[css.index("<style>") : css.index("</style>") + len("</style>")]
    html = f'<!DOCTYPE html><html><head>{style}</head><body class="body">{body}</body></html>'
    plain = Premailer(**PREMAILER_OPTIONS).transform(html, pretty_print=False)
    assert Renderer().inline_whole(html) == plain
    assert 'style="' in plain  # the rules did apply somewhere


def test_feedback_links_go_in_in_one_pass_as_the_replacements_did() -> None:
    from markupsafe import escape

    from digest.render import FEEDBACK_PLACEHOLDER, put_feedback

    ids = ["2608.16590", "2608.1659", "hep-th/9901001", "2608.00001v2"]
    feedback = {
        i: (f"https://x.example/fb?v=like&id={i}&t=A", f"https://x.example/d/{i}") for i in ids
    }
    slots = [FEEDBACK_PLACEHOLDER.format(verdict=v, id=i) for i in ids for v in ("like", "dislike")]
    text = "head\n" + "\n".join(f"    More: {s} tail" for s in slots) + "\nend"
    unknown = FEEDBACK_PLACEHOLDER.format(verdict="like", id="9999.99999")
    got = put_feedback(text + " " + unknown, feedback)
    # The same as replacing each placeholder, longest id first (a prefix id cannot steal it).
    want = text
    for i in sorted(ids, key=len, reverse=True):
        for verdict, url in zip(("like", "dislike"), feedback[i], strict=True):
            want = want.replace(FEEDBACK_PLACEHOLDER.format(verdict=verdict, id=i), url)
    assert got == want + " " + unknown
    assert "feedback.invalid" not in got.replace(unknown, "")
    html = put_feedback(f'<a href="{slots[0]}">', feedback, escape)
    assert html == '<a href="https://x.example/fb?v=like&amp;id=2608.16590&amp;t=A">'
    assert put_feedback("no links here", feedback) == "no links here"
    assert put_feedback("https://feedback.invalid/like/", {}) == "https://feedback.invalid/like/"


def test_a_copied_paper_view_is_dataclasses_replace_field_for_field() -> None:
    # _copy_view (a generated field-by-field copy) stands in for dataclasses.replace.
    from digest.render.views import _copy_view, _shared_view

    paper = papers_from_fixture("2026-08-20.json")[0]
    view = _shared_view(paper, ("diffusion",), False)
    changes: dict[str, object] = {
        "rank": 7,
        "score": 2.5,
        "why": "matches diffusion",
        "filler": True,
        "like_url": "https://x.example/like",
    }
    copy = _copy_view(view, dict(changes))
    assert copy == dataclasses.replace(view, **changes)  # type: ignore[arg-type]
    assert copy is not view and view.rank == 0
    with pytest.raises(TypeError, match="no field 'nope'"):
        _copy_view(view, {"nope": 1})


def test_feedback_ids_of_any_characters_and_hostile_runs_are_found_as_by_a_scan() -> None:
    from digest.render import FEEDBACK_PLACEHOLDER, put_feedback

    def by_scan(text: str, feedback: dict[str, tuple[str, str]]) -> str:
        # The definition: at each placeholder, the longest id that follows it.
        out, pos = [], 0
        prefix = FEEDBACK_PLACEHOLDER.split("{", 1)[0]
        for m in re.finditer(re.escape(prefix) + "(like|dislike)/", text):
            start = m.end()
            if start < pos:
                continue
            found = max((i for i in feedback if text.startswith(i, start)), key=len, default=None)
            if found is not None:
                out += [text[pos : m.start()], feedback[found][m.group(1) == "dislike"]]
                pos = start + len(found)
        return "".join(out) + text[pos:] if out else text

    rng = random.Random(3)
    pools = [
        ["2608.16590", "2608.1659", "hep-th/9901001", "2608.00001v2"],  # the usual characters
        ["2608.16590", "id with space", "ü-id", "a+b", ""],  # others: the scan
    ]
    for ids in pools:
        feedback = {i: (f"L<{i}>", f"D<{i}>") for i in ids}
        for _ in range(300):
            parts = []
            for _ in range(rng.randint(0, 8)):
                slot = FEEDBACK_PLACEHOLDER.format(verdict=rng.choice(("like", "dislike")), id="")
                tail = rng.choice([*ids, "9999.1", "", "x" * 5000, "2608.16590.", "2608.16590v2"])
                parts.append(slot + tail + rng.choice(["", " ", ")", "\n", "."]))
            text = "".join(parts)
            assert put_feedback(text, feedback) == by_scan(text, feedback)


def test_wrap_fills_as_textwrap_does_on_random_and_hostile_texts() -> None:
    # _fill stands in for textwrap.fill(break_long_words=False, break_on_hyphens=False) on
    # collapsed text: long words and URLs, widths below a word's length, indents wider than
    # the width, non-ASCII, no-break and other Unicode spaces.
    from digest.render.views import _fill, collapse

    rng = random.Random(5)
    words = ["a", "bb", "word", "x" * 20, "y" * 80, "ü", "—", "e-mail", "\u00a0", "\u2003"]
    words += ["https://example.org/" + "p" * 90, "\t", "\n", "  ", "-", "\u2028"]
    for _ in range(3000):
        chosen = [rng.choice(words) for _ in range(rng.randint(0, 40))]
        text = collapse((" " if rng.random() < 0.5 else "").join(chosen))
        width = rng.choice([1, 2, 5, 10, 20, 40, 76, 100])
        indent = rng.choice(["", "  ", "    ", " " * 30, "> "])
        first = rng.choice([indent, "", "1. ", " " * 12, "x" * 50])
        want = textwrap.fill(
            text,
            width=width,
            initial_indent=first,
            subsequent_indent=indent,
            break_long_words=False,
            break_on_hyphens=False,
        )
        assert _fill(text, width, indent, first) == want, (text, width, indent, first)
