"""The spliced HTML part (digest.render.splice) is byte for byte the exact path's, or not used."""

from __future__ import annotations

import itertools
import random
from dataclasses import replace
from datetime import date
from pathlib import Path

import pytest
from lxml import etree  # type: ignore[import-untyped]
from markupsafe import Markup, escape

from digest.models import Edition, Paper, RankedPaper
from digest.render import EmailContext, Renderer, unmark
from digest.render.splice import (
    _fast_paths_hold,
    _roundtrip,
    chip_texts,
    highlight_segments,
    serialized_attribute,
    serialized_text,
)
from digest.render.views import highlight
from tests.factories import FakeSubscriber, papers_from_fixture

DAY = date(2026, 8, 20)

HOSTILE_NAMES = [
    "Ada",
    None,
    "José Müller-Lüdenscheidt",
    'Bobby "Tables" <script>alert(1)</script> & Co',
    "O'Brien &amp; sons",
    "🤖 Robo  two  spaces",
    "tab\there",
    "nul\x00byte",
    "vertical\x0btab and \x7fdel",
    "C1 \x85 control",
    "cr\rreturn",
    "ends in cr\r",
    "   ",
    "xqdgst1q (looks like a placeholder)",
    "XQDGST2Q upper",
    "中文 名字",
    "bidi \u202eevil\u202c",
    "zero\u200bwidth",
    "a" * 300,
]
HOSTILE_KEYWORDS = [
    (),
    ("agent",),
    ("<b>", "a&b", "reasoning"),
    ("vidéo", "diffusion", "LLM"),
    ('"quoted"', "it's"),
]
HOSTILE_WHY = [
    "",
    "Matches your keywords: agent",
    "<why> & 'why' \"why\"",
    "ünïcödé why",
    "cr\rwhy",
]
URLS = [
    None,
    "https://papers.example.org/unsubscribe?token=abc-DEF_123.x",
    "https://papers.example.org/u?a=1&token=abc",
    "https://papers.example.org/u?token=a b$c",
    "https://papers.example.org/ünsubscribe?token=é",
    '  https://papers.example.org/u?q="x"<y>',
]


@pytest.fixture(scope="module")
def day() -> list[Paper]:
    return papers_from_fixture("2026-08-20.json")


def selection(
    papers: list[Paper], keywords: tuple[str, ...], whys: list[str], fillers: int = 0
) -> list[RankedPaper]:
    out = []
    for i, p in enumerate(papers):
        text = f"{p.title} {p.abstract}".lower()
        matched = tuple(k for k in keywords if k.lower() in text)
        out.append(
            RankedPaper(
                p,
                float(p.upvotes or 0),
                matched,
                why=whys[i % len(whys)],
                filler=i >= len(papers) - fillers,
            )
        )
    return out


RANKED_BY: tuple[tuple[str, ...], ...] = (
    (),
    ("your interests",),
    (),
    ("your interests", "the authors you follow", "your library", "the papers you rated"),
    ("the papers you rated",),
)
"""What else ranks a reader (the footer says it), crossed with the rest."""


def contexts(day: list[Paper]) -> list[EmailContext]:
    """A few hundred messages crossing hostile names, keywords, why lines and links."""
    editions = [Edition.daily(DAY), Edition.weekly(2026, 34)]
    out = []
    combos = itertools.product(
        range(len(HOSTILE_NAMES)), range(len(HOSTILE_KEYWORDS)), range(len(URLS))
    )
    for n, (i, k, u) in enumerate(combos):
        if n % 3:  # a third of the cross product keeps the test fast and still covers each
            continue
        keywords = HOSTILE_KEYWORDS[k]
        count = (0, 1, 3, 7)[n % 4]
        start = n % 9
        papers = day[start : start + count]
        whys = HOSTILE_WHY[(n % len(HOSTILE_WHY)) :] + HOSTILE_WHY[: (n % len(HOSTILE_WHY))]
        ranked = selection(papers, keywords, whys, fillers=n % 3)
        email = f"reader{n}@example.org" if n % 5 else f"ünï{n}@bücher.example"
        feedback = (
            {
                r.paper.arxiv_id: (
                    f"https://papers.example.org/fb?v=like&id={r.paper.arxiv_id}&t=x{n}",
                    f"https://papers.example.org/fb?v=dislike&id={r.paper.arxiv_id}",
                )
                for r in ranked
            }
            if n % 2
            else {}
        )
        out.append(
            EmailContext(
                edition=editions[n % len(editions)],
                papers=ranked,
                subscriber=FakeSubscriber(email=email, name=HOSTILE_NAMES[i], keywords=keywords),
                unsubscribe_url=URLS[u],
                unsubscribe_mailto="unsubscribe@example.org" if n % 4 == 1 else None,
                total_papers=len(day) if n % 2 else len(papers),
                preferences_url=URLS[(u + 1) % len(URLS)],
                archive_url=URLS[(u + 2) % len(URLS)],
                postal_address="1 Rue & Co <Paris>" if n % 3 == 0 else None,
                feedback=feedback,
                ranked_by=RANKED_BY[n % len(RANKED_BY)],
            )
        )
    return out


@pytest.mark.parametrize("thumbnails", [False, True])
def test_spliced_messages_are_byte_identical_to_the_exact_path(
    day: list[Paper], thumbnails: bool
) -> None:
    fast = Renderer(thumbnails=thumbnails)
    exact = Renderer(thumbnails=thumbnails, splice=False)
    assert fast._splicer is not None and exact._splicer is None
    cases = contexts(day)
    for round_ in range(2):  # the first round learns the shapes, the second reuses them
        for n, ctx in enumerate(cases):
            got, want = fast.render(ctx), exact.render(ctx)
            assert got.html == want.html, (round_, n, ctx.subscriber)
            assert got == want
    splicer = fast._splicer
    assert splicer.enabled
    # Most messages are spliced; values the splice cannot vouch for ("\r", blank names) go to
    # the exact path, message by message.
    assert splicer.spliced > len(cases)
    assert 0 < splicer.fallbacks < splicer.spliced
    text = fast._text_splicer
    assert text is not None and text.enabled
    assert text.spliced == 2 * len(cases)  # raw values: nothing to fall back on


def test_the_exact_path_is_premailer_on_the_whole_document(day: list[Paper]) -> None:
    # The contract the splice is held to: the exact path equals one premailer pass over the
    # unmarked document (the block cache's own guarantee), here with hostile values.
    exact = Renderer(splice=False)
    for ctx in contexts(day)[:40]:
        variables = exact.context_for(ctx)
        raw = exact._run(exact._html, variables)
        assert exact.inline(raw) == exact.inline_whole(unmark(raw))


def test_values_are_serialized_as_lxml_does() -> None:
    assert _fast_paths_hold()
    assert serialized_text("a & b <c> \"d\" 'e'", "p") == "a &amp; b &lt;c&gt; \"d\" 'e'"
    assert serialized_text("nul\x00", "p") == "nul\ufffd"
    assert serialized_text("Ünïcode 🤖", "title") == "Ünïcode 🤖"
    assert serialized_attribute("https://x.example/a b?é&c", "a", "href") == (
        '"https://x.example/a%20b?%C3%A9&amp;c"'
    )
    assert serialized_attribute('  https://x.example/?q="x"', "a", "href") == (
        "'https://x.example/?q=\"x\"'"
    )


def test_a_template_of_ones_own_keeps_the_exact_path(tmp_path: Path, day: list[Paper]) -> None:
    packaged = Path(__file__).parent.parent / "digest" / "templates" / "digest.html.j2"
    (tmp_path / "digest.html.j2").write_text(
        packaged.read_text().replace("Hi {{ name }},", "Hi {{ name | upper }},")
    )
    custom = Renderer(templates_dir=tmp_path)
    assert custom._splicer is None
    ctx = replace(contexts(day)[3], subscriber=FakeSubscriber(name="Ada"))
    assert "Hi ADA," in custom.render(ctx).html


def test_a_changed_placeholder_turns_splicing_off_instead_of_leaking(day: list[Paper]) -> None:
    # The packaged template never filters a per-message value; if one did (here patched in),
    # the placeholder would come out altered: the splicer must notice and step aside.
    fast = Renderer()
    assert fast._splicer is not None
    fast._html = fast._env.from_string(
        fast._html.environment.loader.get_source(fast._env, "digest.html.j2")[0].replace(
            "Hi {{ name }},", "Hi {{ name | upper }},"
        )
    )
    exact = Renderer(splice=False)
    exact._html = fast._html
    ctx = replace(contexts(day)[3], subscriber=FakeSubscriber(name="Ada"))
    assert fast.render(ctx) == exact.render(ctx)
    assert "Hi ADA," in fast.render(ctx).html
    assert not fast._splicer.enabled


def test_a_changed_value_in_the_text_template_turns_text_splicing_off(day: list[Paper]) -> None:
    fast = Renderer()
    source = fast._env.loader.get_source(fast._env, "digest.txt.j2")[0]
    fast._text = fast._env.from_string(source.replace("Hi {{ name }},", "Hi {{ name[:2] }},"))
    exact = Renderer(splice=False)
    exact._text = fast._text
    ctx = replace(contexts(day)[3], subscriber=FakeSubscriber(name="Ada"))
    assert fast.render(ctx) == exact.render(ctx)
    assert "Hi Ad," in fast.render(ctx).text
    assert fast._text_splicer is not None and not fast._text_splicer.enabled


def test_a_text_template_without_block_markers_keeps_the_exact_path(day: list[Paper]) -> None:
    fast = Renderer()
    source = fast._env.loader.get_source(fast._env, "digest.txt.j2")[0]
    fast._text = fast._env.from_string(
        source.replace("{{ block_start }}", "").replace("{{ block_end }}", "")
    )
    exact = Renderer(splice=False)
    exact._text = fast._text
    for ctx in contexts(day)[:12]:
        assert fast.render(ctx) == exact.render(ctx)
    assert fast._text_splicer is not None and not fast._text_splicer.enabled


def test_a_cut_value_in_the_html_template_is_caught_by_the_first_check(day: list[Paper]) -> None:
    fast = Renderer()
    source = fast._env.loader.get_source(fast._env, "digest.html.j2")[0]
    fast._html = fast._env.from_string(source.replace("Hi {{ name }},", "Hi {{ name[:2] }},"))
    exact = Renderer(splice=False)
    exact._html = fast._html
    ctx = replace(contexts(day)[3], subscriber=FakeSubscriber(name="Ada"))
    assert fast.render(ctx) == exact.render(ctx)
    assert "Hi Ad," in fast.render(ctx).html
    assert fast._splicer is not None and not fast._splicer.enabled


def test_a_papers_text_part_is_learned_once_whatever_keywords_matched(day: list[Paper]) -> None:
    # The "Matched:" line is a value of the text part (CHIPS_TEXT): 60 readers with different
    # matched keywords on the same 6 papers share one cached text part per paper (per whether
    # any keyword matched, and whether it is last), and every text is the template's own.
    papers = day[:6]
    words = sorted({w for p in papers for w in p.title.lower().split() if len(w) > 3})
    fast = Renderer()
    exact = Renderer(splice=False)
    for n in range(60):
        keywords = tuple(words[(n * 7 + j) % len(words)] for j in range(n % 5))
        if n % 11 == 3:  # a long one, so that the Matched line wraps differently
            keywords += ("x" * 70, "très-long « mot » & <b>")
        ranked = selection(papers, keywords, [""])
        ctx = EmailContext(
            edition=Edition.daily(DAY),
            papers=ranked,
            subscriber=FakeSubscriber(email=f"r{n}@example.org", keywords=keywords),
            unsubscribe_url="https://papers.example.org/u?token=t",
            unsubscribe_mailto=None,
            total_papers=len(papers),
        )
        assert fast.render(ctx).text == exact.render(ctx).text, n
    text = fast._text_splicer
    assert text is not None and text.enabled
    assert text.spliced == 60
    # 6 papers × (some keyword matched or not), the last one also as not last: at most 6 × 2 × 2.
    assert len(text._cache.blocks) <= len(papers) * 4


# -- highlights and chips are values, not part of a block (issue 13) -----------------------

HIGHLIGHT_PAPERS = [
    Paper(
        arxiv_id="2608.00001",
        title="Agent Reasoning with LLMs: multi-agent learning for agents",
        abstract="Reinforcement learning and learning to reason: an agent-based study of LLM "
        "agents, agentic reasoning & <tools>, ending in reasoning",
        ai_keywords=("tool use", "agents"),
        upvotes=40,
    ),
    Paper(
        arxiv_id="2608.00002",
        title='Diffusion & <Transformers>: "quoted" it\'s 🤖 vidéo généré 👨\u200d👩 \x01',
        abstract="",  # no summary at all
        ai_summary=None,
        upvotes=30,
    ),
    Paper(
        arxiv_id="2608.00003",
        title="Diffusion",  # a whole title highlighted
        abstract="Diffusion diffusion DIFFUSION models, 中文 模型 and émoji 🤖 everywhere: "
        "a&b <b>bold</b> 'single' \"double\" nul\x00byte and \x7fdel, then diffusion",
        upvotes=20,
    ),
    Paper(
        arxiv_id="2608.00004",
        title="Überraschung: ünïcode models for vidéo, reasoning, agents, LLMs and diffusion",
        abstract="x",
        ai_summary="An AI summary on reasoning agents for vidéo diffusion with LLMs.",
        ai_keywords=("world models",),
        upvotes=10,
    ),
    Paper(
        arxiv_id="2608.00005",
        title="Reinforcement Learning from Human Feedback, reinforcement-learning, RL",
        abstract="Learning learning learning; reinforcement learning (RL) at the end: learning",
        upvotes=5,
    ),
]
HIGHLIGHT_VOCABULARY = [
    "agent",
    "agent*",
    "multi-agent",
    "reasoning",
    "reinforcement learning",
    "learning",
    "LLM",
    "diffusion",
    "vidéo",
    "ünïcode",
    "Überraschung",
    "中文",
    "🤖",
    "<Transformers>",
    "transformers",
    '"quoted"',
    "it's",
    "a&b",
    "bold",
    "tool use",
    "world models",
    "RL",
    "models",
    "nul",
    "end",
]


FIVE_CHIPS = ("reasoning", "agent*", "vidéo", "diffusion", "LLM")
"""Five chips on the fourth paper, and more highlights than chips on the first."""


def highlight_contexts(papers: list[Paper], count: int, seed: int) -> list[EmailContext]:
    """``count`` readers with random keyword sets (1 to 6 of the vocabulary; every tenth
    :data:`FIVE_CHIPS`) over ``papers``."""
    rng = random.Random(seed)
    out = []
    for n in range(count):
        keywords = (
            FIVE_CHIPS
            if n % 10 == 0
            else tuple(rng.sample(HIGHLIGHT_VOCABULARY, rng.randint(1, 6)))
        )
        chosen = rng.sample(papers, rng.randint(1, len(papers)))
        ranked = [
            RankedPaper(p, float(p.upvotes or 0), keywords, why=f"keyword: {keywords[0]}")
            for p in chosen
        ]
        out.append(
            EmailContext(
                edition=Edition.daily(DAY),
                papers=ranked,
                subscriber=FakeSubscriber(
                    email=f"reader{n}@example.org", name=f"Reader {n}", keywords=keywords
                ),
                unsubscribe_url=f"https://papers.example.org/u?token=t{n}",
                unsubscribe_mailto=None,
                total_papers=len(papers),
                feedback={
                    r.paper.arxiv_id: (
                        f"https://papers.example.org/fb?v=like&id={r.paper.arxiv_id}&t={n}",
                        f"https://papers.example.org/fb?v=dislike&id={r.paper.arxiv_id}&t={n}",
                    )
                    for r in ranked
                }
                if n % 2
                else {},
            )
        )
    return out


def test_highlights_and_chips_splice_byte_identically_for_any_keywords() -> None:
    fast = Renderer()
    exact = Renderer(splice=False)
    cases = highlight_contexts(HIGHLIGHT_PAPERS, 150, seed=13)
    chip_counts: set[int] = set()
    highlighted = 0
    for n, ctx in enumerate(cases):
        got, want = fast.render(ctx), exact.render(ctx)
        assert got.html == want.html, (n, ctx.subscriber)
        assert got == want
        variables = exact.context_for(ctx)
        chip_counts.update(len(v.chips) for v in variables["papers"])
        highlighted += got.html.count('class="hl"')
    assert {0, 1, 2, 5} <= chip_counts
    assert highlighted > 500
    splicer = fast._splicer
    assert splicer is not None and splicer.enabled
    assert splicer.spliced == len(cases) and splicer.fallbacks == 0
    # Each paper has a few blocks (chips or not × feedback links or not), whatever the
    # keywords.
    assert len(splicer._cache.blocks) <= 4 * len(HIGHLIGHT_PAPERS)


def test_the_number_of_html_blocks_does_not_grow_with_distinct_keyword_sets(
    day: list[Paper],
) -> None:
    fast = Renderer()
    exact = Renderer(splice=False)
    vocabulary = sorted(
        {w.lower().strip(".,:;()") for p in day for w in p.title.split() if len(w) > 4}
    )
    rng = random.Random(20)
    readers: dict[tuple[str, ...], None] = {}
    while len(readers) < 200:  # 200 distinct keyword sets
        readers[tuple(rng.sample(vocabulary, rng.randint(1, 5)))] = None
    for n, keywords in enumerate(readers):
        ranked = selection(day, keywords, ["", f"keyword: {keywords[0]}"])
        ctx = EmailContext(
            edition=Edition.daily(DAY),
            papers=ranked,
            subscriber=FakeSubscriber(email=f"r{n}@example.org", name="Ada", keywords=keywords),
            unsubscribe_url=None,
            unsubscribe_mailto="unsubscribe@example.org",
            total_papers=len(day),
        )
        if n % 4 == 0:  # a quarter checked against the exact path keeps the test fast
            assert fast.render(ctx).html == exact.render(ctx).html, n
        else:
            fast.render(ctx)
    splicer = fast._splicer
    assert splicer is not None and splicer.enabled and splicer.fallbacks == 0
    # Per paper: why line or not × chips or not.
    assert len(splicer._cache.blocks) <= 4 * len(day)


@pytest.mark.parametrize(
    ("text", "keywords"),
    [
        ("Agent reasoning", ("agent", "reasoning")),  # a match at the start, adjacent ones
        ("the agent", ("agent",)),  # a match at the end
        ("agent", ("agent",)),  # the whole text
        ("no match here", ("agent",)),
        ("a & b <c> \"d\" 'e' 🤖 é", ("b",)),
        ("nul\x00 agent", ("agent",)),
    ],
)
def test_highlight_segments_are_the_markup_text_serialized(
    text: str, keywords: tuple[str, ...]
) -> None:
    markup = highlight(text, keywords)
    segments = highlight_segments(markup)
    assert segments is not None and len(segments) % 2 == 1
    rebuilt = segments[0] + "".join(
        f'<span class="hl">{segments[i]}</span>{segments[i + 1]}'
        for i in range(1, len(segments), 2)
    )
    # What lxml makes of the markup in a paragraph (premailer parses and serializes so).
    out = _roundtrip(f"<html><body><p>qZq{markup}qZq</p></body></html>")
    assert rebuilt == out[out.index("qZq") + 3 : out.rindex("qZq")]


def test_values_the_splice_cannot_vouch_for_take_the_exact_path() -> None:
    assert highlight_segments("agent") is None  # a str, not markup: Jinja would escape it
    assert highlight_segments(Markup("<b>agent</b>")) is None  # other markup than highlights
    assert highlight_segments(Markup('<span class="hl">agent')) is None  # unclosed
    assert highlight_segments(Markup(" ")) is None  # blank
    assert highlight_segments(highlight(" agent", ("agent",))) is None  # blank before a match
    assert highlight_segments(highlight("cr\ragent", ("agent",))) is None  # "cr\r" ends in "\r"
    # A blank between two matches, or after the last one, follows a </span>: kept by lxml.
    assert highlight_segments(highlight("agent reasoning ", ("agent", "reasoning"))) == (
        "",
        "agent",
        " ",
        "reasoning",
        " ",
    )
    assert chip_texts(("agents", "a&b <c>")) == ("agents", "a&amp;b &lt;c&gt;")
    assert chip_texts(()) is None
    assert chip_texts((" ",)) is None
    assert chip_texts((Markup("<b>"),)) is None
    assert chip_texts(["agents"]) is None


def test_a_value_holding_the_serializers_marker_is_kept_whole() -> None:
    # serialized_text cuts lxml's output between its own "qZq" markers: a value holding
    # "qZq" (with a character outside the fast set, so lxml serializes it) must not be cut.
    for value in ("a\x7f qZq b", "qZq\x7f", "\x7fqZqqZq", "x\x00qZq</p>y"):
        body = f"<html><body><p>{escape(value)}</p></body></html>"
        tree = etree.fromstring(body, etree.HTMLParser()).getroottree()
        whole = etree.tostring(tree, method="html", encoding="utf-8").decode("utf-8")
        want = whole[whole.index("<p>") + 3 : whole.rindex("</p>")]
        assert serialized_text(value, "p") == want, value
    title = "Agents \x7f qZq tail for reasoning"
    paper = Paper(arxiv_id="2608.00099", title=title, abstract="Reasoning qZq\x7f agents.")
    fast, exact = Renderer(), Renderer(splice=False)
    for n in range(20):  # past the first checks: every value spliced, none compared
        ctx = EmailContext(
            edition=Edition.daily(DAY),
            papers=[RankedPaper(paper, 1.0, ("reasoning",) if n % 2 else ())],
            subscriber=FakeSubscriber(email=f"r{n}@example.org", keywords=("reasoning",)),
            unsubscribe_url="https://papers.example.org/u?token=t",
            unsubscribe_mailto=None,
            total_papers=1,
        )
        got, want_email = fast.render(ctx), exact.render(ctx)
        assert got == want_email, n
        assert "qZq tail" in got.html
