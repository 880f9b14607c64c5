"""Render one edition for one subscriber: subject, preheader, HTML part and text part.

The HTML part comes from ``digest.html.j2`` (Jinja2, autoescaped: titles and abstracts are
untrusted), its ``<style>`` block inlined onto the elements by premailer so that clients which
drop ``<style>`` (Gmail for non-Google accounts, many webmails) still show it styled; the
``@media`` rules (mobile, ``prefers-color-scheme: dark``) cannot be inlined and stay in a
``<style>`` block, marked ``!important`` so they win over the inline styles. The text part
comes from ``digest.txt.j2`` and carries the same papers and links.

Templates are looked up first in ``templates_dir`` (``DIGEST_TEMPLATES_DIR``), then in the
packaged ``digest/templates``: a directory overriding only one of the two templates is fine.
The variables a template receives are listed in :meth:`Renderer.context_for`.

Cost: premailer dominates (lxml parse, one XPath query per CSS rule, serialization). One
:class:`premailer.Premailer` instance is built per :class:`Renderer` and reused for every
message (``Premailer(html=None)`` + ``transform(html)``); premailer caches the parsed
stylesheet, the compiled selectors and the parsed declarations process-wide, and
:class:`_CachingPremailer` also memoizes, per distinct ``<style>`` text, the rule list and the
serialized ``@media`` CSS that premailer would otherwise rebuild with cssutils for every
message (37 ms → 9 ms for a ten-paper digest). Only the first message pays for cssutils.
premailer also runs one XPath query per rule over the whole document; rules whose classes no
element of the document has are left out of that loop
(:meth:`_CachingPremailer.transform_only_present`), which cannot change the output.

Per-paper cache: most of a transform is proportional to the document's size, and a digest is
mostly paper blocks that recur across subscribers (the same paper at the same rank with the
same highlights). A template may mark each repeated block ``<!--digest:block-->`` …
``<!--digest:end-->`` (the packaged one marks each paper row). When every selector of its
``<style>`` blocks is context-free (a tag, classes and ids only: no combinator, no pseudo-class),
an element's inlined style depends on that element alone, so :meth:`Renderer.inline` runs
premailer on the document with each block replaced by a placeholder comment and splices the
cached inlined blocks back; blocks not seen yet stay in that document, marked (premailer keeps
comments), and are cached from its output. The result is byte-for-byte premailer's on the whole
document (tested), at a fraction of the cost. Any other stylesheet, or a template without
markers, is inlined whole.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import re
import textwrap
import threading
import traceback
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, Protocol

import cssutils
import jinja2
from markupsafe import Markup, escape
from premailer import Premailer

from digest.errors import ConfigError
from digest.models import Edition, Paper, RankedPaper
from digest.ranking import keyword_pattern, matched_word

log = logging.getLogger(__name__)

PACKAGED_TEMPLATES_DIR = Path(__file__).parent / "templates"
HTML_TEMPLATE = "digest.html.j2"
TEXT_TEMPLATE = "digest.txt.j2"
DEFAULT_SITE_URL = "https://huggingface.co/papers"
HF_DAY_URL = "https://huggingface.co/papers/date/{day}"
"""Hugging Face's Daily Papers page of one date (the "See all papers" link of a daily edition)."""
HF_WEEK_URL = "https://huggingface.co/papers/week/{year}-W{week:02d}"
"""Hugging Face's papers page of one ISO week (the link of a weekly edition)."""
SUBJECT_MAX_CHARS = 78
"""The Subject up to " and N more" is cut to this many characters (RFC 5322's recommended line
length; inboxes show about this much)."""
AI_KEYWORDS_NOTE = "in AI keywords"
"""Said on a keyword chip whose match is only in Hugging Face's AI keywords (not shown)."""
THUMBNAIL_ALT_MAX_CHARS = 60
"""A thumbnail's alt text (shown where images are off) names the paper in this many chars."""
THUMBNAIL_WIDTH_PX = 536
"""Width of a thumbnail: the 600 px container less the card's 32 px paddings."""

DAILY_BRAND = "Daily Papers"
WEEKLY_BRAND = "Weekly Papers"
SUBJECT_SEPARATOR = " · "
DATE_RANGE_DASH = "–"  # en dash, as in "Aug 17–23"

#: Abstracts (shown when HF has no AI summary) are cut at a word boundary near this length.
SUMMARY_MAX_CHARS = 300
#: Authors listed before "et al.".
MAX_AUTHORS_SHOWN = 3
#: The hidden preheader (inbox preview line) is cut at a word boundary near this length.
PREHEADER_MAX_CHARS = 140
#: Other titles named in the preheader.
PREHEADER_TITLES = 2
#: Column at which the text part wraps prose (URLs are never broken, so a URL line may be
#: longer).
TEXT_WIDTH = 76
ELLIPSIS = "…"
MAILTO_SUBJECT = "unsubscribe"
#: CSS class of the highlight around a matched keyword in titles and summaries.
HIGHLIGHT_CLASS = "hl"
#: Star counts from this value on are shown abbreviated (``1.2k``).
THOUSAND = 1000

# cssutils reports every property it does not know (mso-*, color-scheme, -webkit-*) through
# its own logger at ERROR/WARNING level; the CSS is ours and fine, so only CRITICAL passes.
cssutils.log.setLevel(logging.CRITICAL)

#: Distinct <style> blocks whose parsed rules a Renderer keeps (a template whose CSS varies
#: per message would otherwise grow the cache without bound).
_MAX_CACHED_STYLESHEETS = 32

_WS_RE = re.compile(r"\s+")

FEEDBACK_PLACEHOLDER = "https://feedback.invalid/{verdict}/{id}"
"""Stands for a card's 👍/👎 link while rendering and inlining (``.invalid``: RFC 2606)."""
FILLER_HEADING = "Also trending"
"""Heading over the papers picked for popularity alone, after the relevant ones."""
BLOCK_START = "<!--digest:block-->"
"""Marks the start of a repeated block (one paper) in the HTML template's output."""
BLOCK_END = "<!--digest:end-->"
"""Marks the end of a repeated block."""
_BLOCK_SLOT = "<!--digest:slot-->"
_BLOCK_RE = re.compile(re.escape(BLOCK_START) + "(.*?)" + re.escape(BLOCK_END), re.DOTALL)
_PIECE_RE = re.compile(
    re.escape(_BLOCK_SLOT) + "|" + re.escape(BLOCK_START) + "(.*?)" + re.escape(BLOCK_END),
    re.DOTALL,
)
"""A slot (group None) or a marked block (group: its text) in premailer's output."""
_STYLE_RE = re.compile(r"<style\b([^>]*)>(.*?)</style\s*>", re.DOTALL | re.IGNORECASE)
_SIMPLE_SELECTOR_RE = re.compile(r"^(?:[A-Za-z][A-Za-z0-9-]*|\*)?(?:[.#][A-Za-z_-][\w-]*)*$")
"""A selector matching an element by its own tag, classes and id only (context-free)."""

#: Inlined paper blocks a Renderer keeps (~3 KB each).
_MAX_CACHED_BLOCKS = 4096


PREMAILER_OPTIONS: dict[str, Any] = dict(
    html=None,
    method="html",
    # Media queries and :hover rules cannot be inlined; they stay in a <style> block,
    # premailer marks their declarations !important and must not strip that again.
    keep_style_tags=False,
    strip_important=False,
    remove_classes=False,  # the @media rules select by class
    exclude_pseudoclasses=True,
    disable_link_rewrites=True,
    allow_network=False,
    allow_loading_external_files=False,
    align_floating_images=False,
    # bgcolor= copies of every background (even on <span>) cost ~4 KB per 30 papers;
    # the template sets bgcolor itself where old Outlook needs it (tables, cells). Nor width=
    # / height= from CSS widths: an image's width="100%" and height="auto" would be wrong for
    # Outlook, which sizes images by the attribute (the template sets width="536").
    disable_basic_attributes=["bgcolor", "width", "height"],
    disable_validation=True,
    cache_css_parsing=True,
    cssutils_logging_level=logging.CRITICAL,
)
"""The options of the premailer instance every Renderer uses."""


class SubscriberLike(Protocol):
    """What rendering needs of :class:`digest.subscribers.Subscriber` (structural type)."""

    @property
    def email(self) -> str:
        """The subscriber's address, lower-cased."""
        ...

    @property
    def name(self) -> str | None:
        """Display name, if any."""
        ...

    @property
    def keywords(self) -> tuple[str, ...]:
        """Keywords as written in the subscribers file; empty = unpersonalized."""
        ...


@dataclass(frozen=True, slots=True)
class EmailContext:
    """Everything that varies between two rendered messages.

    Attributes:
        edition: the edition being sent (its ``days`` and ``frequency`` make the date label).
        papers: the papers selected for this subscriber, best first (from ``ranking.rank``).
        subscriber: the recipient; ``None`` for an unpersonalized preview.
        unsubscribe_url: this subscriber's HTTPS unsubscribe link (token filled in), if any.
        unsubscribe_mailto: an unsubscribe address (``unsubscribe@example.org``) or a
            ``mailto:`` URL, used when there is no ``unsubscribe_url``.
        total_papers: how many papers the edition had before selection (``len(papers)``
            or more).
        preferences_url: this subscriber's "Manage preferences" link (``digest serve``), if any.
        archive_url: the edition's "View in browser" link (unpersonalized), if any.
        postal_address: the sender's postal address for the footer (DIGEST_POSTAL_ADDRESS).
        feedback: per arXiv id, the card's (👍 like URL, 👎 dislike URL)
            (:func:`~digest.message.feedback_urls_for`); papers absent get no links.
    """

    edition: Edition
    papers: Sequence[RankedPaper]
    subscriber: SubscriberLike | None
    unsubscribe_url: str | None
    unsubscribe_mailto: str | None
    total_papers: int
    preferences_url: str | None = None
    archive_url: str | None = None
    postal_address: str | None = None
    feedback: Mapping[str, tuple[str, str]] = dataclasses.field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RenderedEmail:
    """One rendered message, before MIME assembly (see :func:`digest.message.build_message`).

    Attributes:
        subject: the Subject, one line, whitespace collapsed (may be non-ASCII).
        html: the complete HTML document, CSS inlined, ``@media`` rules in a ``<style>``.
        text: the plain-text alternative, ``\\n`` line endings, prose wrapped at
            :data:`TEXT_WIDTH` columns.
        preheader: the inbox preview line (hidden at the top of the HTML body).
    """

    subject: str
    html: str
    text: str
    preheader: str


@dataclass(frozen=True, slots=True)
class PaperView:
    """One paper as the templates see it: every string ready to print.

    Attributes:
        rank: 1-based position in this message.
        arxiv_id: the arXiv id.
        title: plain title (for the text part).
        title_html: the title, escaped, matched keywords wrapped in ``<span class="hl">``.
        hf_url: Hugging Face paper page.
        abs_url: arXiv abstract page.
        pdf_url: arXiv PDF.
        upvotes: HF upvotes, ``None`` for feed-only papers (shown as nothing).
        comments: HF comment count, ``None`` if unknown.
        stats: ``"▲ 12 upvotes · 3 comments"`` for the text part; parts that are unknown
            (or zero comments) are left out, so it may be empty.
        authors: ``"A, B, C et al."`` (first :data:`MAX_AUTHORS_SHOWN`), may be empty.
        summary: HF's AI summary when present, else the abstract cut near
            :data:`SUMMARY_MAX_CHARS` at a word boundary; plain text.
        summary_html: ``summary`` escaped, matched keywords highlighted.
        summary_is_ai: whether ``summary`` is HF's AI summary.
        keywords: the subscriber's keywords that matched this paper, in their order, as
            written (``agent*``).
        chips: what the keyword chips say: the words that matched where the reader sees them
            (title, shown summary: ``agents``), or ``agents · in AI keywords`` for a match
            only in HF's AI keywords; a keyword matched only in a hidden field (the abstract
            when the AI summary is shown) gets no chip. In the subscriber's keyword order.
        thumbnail_url: the paper's thumbnail (HTTPS only) when thumbnails are on, else None.
        thumbnail_alt: the thumbnail's alt text.
        code_url: code repository, if any.
        stars: the repository's stars formatted (``"1.2k"``), ``None`` if unknown or zero.
        project_url: project page, if any.
        paper: the underlying :class:`~digest.models.Paper`.
        score: the ranking score.
        why: one short line saying why the paper was picked (``RankedPaper.why``).
        filler: picked for popularity alone ("trending").
        first_filler: the first filler after relevant papers: the templates put the
            :data:`FILLER_HEADING` before it.
        like_url: the card's 👍 link ("more like this"), if any.
        dislike_url: the card's 👎 link ("less like this"), if any.
    """

    rank: int
    arxiv_id: str
    title: str
    title_html: Markup
    hf_url: str
    abs_url: str
    pdf_url: str
    upvotes: int | None
    comments: int | None
    stats: str
    authors: str
    summary: str
    summary_html: Markup
    summary_is_ai: bool
    keywords: tuple[str, ...]
    chips: tuple[str, ...]
    thumbnail_url: str | None
    thumbnail_alt: str
    code_url: str | None
    stars: str | None
    project_url: str | None
    paper: Paper
    score: float
    why: str = ""
    filler: bool = False
    first_filler: bool = False
    like_url: str | None = None
    dislike_url: str | None = None


# --- text helpers ---------------------------------------------------------------------------


def collapse(text: str) -> str:
    """``text`` with every run of whitespace (newlines included) turned into one space."""
    return _WS_RE.sub(" ", text).strip()


def shorten(text: str, limit: int) -> str:
    """Cut ``text`` (whitespace collapsed) at the last word boundary before ``limit`` chars.

    Args:
        text: any text.
        limit: maximum length in characters, the ellipsis included.

    Returns:
        ``text`` unchanged when it fits, else its longest prefix ending at a word boundary
        (trailing punctuation dropped) followed by ``…``. A single word longer than
        ``limit`` is cut mid-word.
    """
    text = collapse(text)
    if len(text) <= limit:
        return text
    cut = text[: limit - len(ELLIPSIS) + 1]
    space = cut.rfind(" ")
    cut = cut[:space] if space > 0 else cut[: limit - len(ELLIPSIS)]
    return cut.rstrip(" ,;:.-–—(") + ELLIPSIS


def author_line(authors: Sequence[str]) -> str:
    """``"A, B, C et al."``: the first :data:`MAX_AUTHORS_SHOWN` authors, "et al." if more."""
    shown = ", ".join(collapse(a) for a in authors[:MAX_AUTHORS_SHOWN])
    return f"{shown} et al." if len(authors) > MAX_AUTHORS_SHOWN else shown


def format_count(n: int) -> str:
    """A count for humans: ``950``, ``1.2k``, ``12k``."""
    if n < THOUSAND:
        return str(n)
    k = n / THOUSAND
    return f"{k:.1f}k".replace(".0k", "k") if k < 10 else f"{round(k)}k"


def highlight(text: str, keywords: Sequence[str]) -> Markup:
    """``text`` HTML-escaped, each occurrence of a keyword wrapped in ``<span class="hl">``.

    Matching runs on the plain text and every segment is escaped on its own, so neither the
    text nor a keyword (``"<b>"``) can inject markup.

    Args:
        text: untrusted plain text (title, summary).
        keywords: the keywords to highlight, with the ranking's matching rules
            (:func:`digest.ranking.keyword_pattern`: whole words, ``*`` prefix, plurals,
            hyphen/space-insensitive multi-word keywords).

    Returns:
        Safe markup for the HTML template.
    """
    pattern = keyword_pattern(keywords)
    if pattern is None:
        return escape(text)
    out: list[str] = []
    pos = 0
    for m in pattern.finditer(text):
        if m.end() == m.start():
            continue
        out.append(escape(text[pos : m.start()]))
        out.append(f'<span class="{HIGHLIGHT_CLASS}">{escape(m.group(0))}</span>')
        pos = m.end()
    out.append(escape(text[pos:]))
    return Markup("".join(out))


def _wrap(
    text: str, width: int = TEXT_WIDTH, indent: str = "", first_indent: str | None = None
) -> str:
    """Fill ``text`` to ``width`` columns without ever breaking a word or URL (uncached).

    Args:
        text: prose; whitespace is collapsed.
        width: maximum line length in characters (a longer word stays whole on its line).
        indent: prefix of every line after the first.
        first_indent: prefix of the first line; defaults to ``indent``.

    Returns:
        The wrapped lines joined with ``\\n`` (no trailing newline).
    """
    return textwrap.fill(
        collapse(text),
        width=width,
        initial_indent=indent if first_indent is None else first_indent,
        subsequent_indent=indent,
        break_long_words=False,
        break_on_hyphens=False,
    )


_WRAP_CACHE_SIZE = 8192
"""Distinct wrapped texts kept: a paper's summary, title and authors recur in every message
that lists it (textwrap costs ~0.03 ms a paragraph)."""


@functools.lru_cache(maxsize=_WRAP_CACHE_SIZE)
def _wrap_cached(text: str, width: int, indent: str, first_indent: str | None) -> str:
    return _wrap(text, width, indent, first_indent)


def wrap(
    text: str, width: int = TEXT_WIDTH, indent: str = "", first_indent: str | None = None
) -> str:
    """Fill ``text`` to ``width`` columns without ever breaking a word or URL.

    Args:
        text: prose; whitespace is collapsed.
        width: maximum line length in characters (a longer word stays whole on its line).
        indent: prefix of every line after the first.
        first_indent: prefix of the first line; defaults to ``indent``.

    Returns:
        The wrapped lines joined with ``\\n`` (no trailing newline). Results are cached per
        distinct arguments.
    """
    if type(text) is not str:  # Markup or anything else: as before, uncached
        return _wrap(text, width, indent, first_indent)
    return _wrap_cached(text, width, indent, first_indent)


def _month_day(day: date) -> str:
    return f"{day:%b} {day.day}"


def date_label(edition: Edition) -> str:
    """The edition's dates for the subject: ``May 29``, ``Aug 17–23``, ``Aug 31–Sep 6``."""
    if not edition.days:
        return edition.key
    first, last = edition.days[0], edition.days[-1]
    if first == last:
        return _month_day(first)
    if (first.year, first.month) == (last.year, last.month):
        return f"{_month_day(first)}{DATE_RANGE_DASH}{last.day}"
    return f"{_month_day(first)}{DATE_RANGE_DASH}{_month_day(last)}"


def long_date_label(edition: Edition) -> str:
    """The edition's dates for the header: ``Thursday, May 29, 2025`` or ``Aug 17–23, 2026``."""
    if not edition.days:
        return edition.key
    first, last = edition.days[0], edition.days[-1]
    if first == last:
        return f"{first:%A}, {_month_day(first)}, {first.year}"
    if first.year == last.year:
        return f"{date_label(edition)}, {last.year}"
    return f"{_month_day(first)}, {first.year}{DATE_RANGE_DASH}{_month_day(last)}, {last.year}"


def brand(edition: Edition) -> str:
    """``"Weekly Papers"`` for weekly editions, else ``"Daily Papers"``."""
    return WEEKLY_BRAND if edition.frequency == "weekly" else DAILY_BRAND


def period_label(edition: Edition) -> str:
    """When the edition's papers trended, for prose: ``on Thursday``, ``in the week of Aug 17–23``.

    Never "today": an edition is sent after its day has ended.
    """
    if edition.frequency == "weekly":
        return f"in the week of {date_label(edition)}"
    if not edition.days:
        return f"on {edition.key}"
    return f"on {edition.days[0]:%A}"


def see_all_url(edition: Edition) -> str:
    """That edition's page on Hugging Face: ``https://huggingface.co/papers/date/2026-08-20``
    (daily) or ``…/papers/week/2026-W34`` (weekly)."""
    if edition.frequency == "weekly" and edition.days:
        year, week, _ = edition.days[0].isocalendar()
        return HF_WEEK_URL.format(year=year, week=week)
    if edition.days:
        return HF_DAY_URL.format(day=edition.days[-1].isoformat())
    return DEFAULT_SITE_URL


def make_subject(edition: Edition, papers: Sequence[RankedPaper]) -> str:
    """The Subject line.

    Examples: ``Daily Papers · May 29: <top title> and 9 more``, ``Daily Papers · May 29:
    <title>`` (one paper), ``Weekly Papers · Aug 17–23: <top title> and 4 more``,
    ``Daily Papers · May 29: no papers``. Whitespace in the title is collapsed so the subject
    is one line, and the part before `` and N more`` is cut at a word boundary to
    :data:`SUBJECT_MAX_CHARS` characters.
    """
    prefix = f"{brand(edition)}{SUBJECT_SEPARATOR}{date_label(edition)}: "
    if not papers:
        return f"{prefix}no papers"
    top = shorten(papers[0].paper.title, max(SUBJECT_MAX_CHARS - len(prefix), len(ELLIPSIS) + 1))
    if len(papers) == 1:
        return prefix + top
    return f"{prefix}{top} and {len(papers) - 1} more"


def make_preheader(edition: Edition, papers: Sequence[RankedPaper]) -> str:
    """The inbox preview line: the next titles after the top one (which is in the subject)."""
    if not papers:
        return (
            f"Nothing new on Hugging Face Daily Papers {period_label(edition)}. See you next time!"
        )
    if len(papers) == 1:
        p = papers[0].paper
        return shorten(p.ai_summary or p.abstract or p.title, PREHEADER_MAX_CHARS)
    titles = [collapse(rp.paper.title) for rp in papers[1 : 1 + PREHEADER_TITLES]]
    return shorten("Also: " + " · ".join(titles), PREHEADER_MAX_CHARS)


def mailto_url(address_or_url: str | None) -> str | None:
    """``mailto:ADDR?subject=unsubscribe`` for an address; a ``mailto:`` URL is kept as is."""
    if not address_or_url:
        return None
    if address_or_url.lower().startswith("mailto:"):
        return address_or_url
    return f"mailto:{address_or_url}?subject={MAILTO_SUBJECT}"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _stats(p: Paper) -> str:
    parts = []
    if p.upvotes is not None:
        parts.append("▲ " + _plural(p.upvotes, "upvote"))
    if p.comments:
        parts.append(_plural(p.comments, "comment"))
    return " · ".join(parts)


def _chip_word(word: str) -> str:
    """A matched word for a chip: a capital from title case dropped ("Agents" → "agents"),
    acronyms kept ("LLMs")."""
    return word[0].lower() + word[1:] if word[1:] == word[1:].lower() else word


def keyword_chips(
    keywords: Sequence[str], shown: Sequence[str], ai_keywords: Sequence[str]
) -> tuple[str, ...]:
    """What the keyword chips of one paper say (see :attr:`PaperView.chips`).

    Args:
        keywords: the subscriber's keywords that matched, in their order (``agent*``).
        shown: the texts the reader sees (title, the summary shown).
        ai_keywords: HF's AI keywords of the paper (not shown in the email).

    Returns:
        One chip per keyword, duplicates (by lower-cased text) dropped.
    """
    chips: list[str] = []
    seen: set[str] = set()
    for keyword in keywords:
        label: str | None = None
        for text in shown:
            word = matched_word(text, keyword)
            if word:
                label = _chip_word(word)
                break
        if label is None:
            for text in ai_keywords:
                word = matched_word(text, keyword)
                if word:
                    label = f"{_chip_word(word)} · {AI_KEYWORDS_NOTE}"
                    break
        if label is not None and label.lower() not in seen:
            seen.add(label.lower())
            chips.append(label)
    return tuple(chips)


_VIEW_CACHE_SIZE = 4096
"""Distinct (paper, matched keywords, thumbnails) views kept: a paper's view costs ~0.2 ms
(highlighting, chips) and recurs in every message that lists it with the same matches."""


def paper_views(
    papers: Sequence[RankedPaper],
    *,
    thumbnails: bool = False,
    feedback: Mapping[str, tuple[str, str]] | None = None,
) -> list[PaperView]:
    """The template views of a selection: relevant papers first, then the fillers.

    Each group keeps the ranking's order; positions are numbered in display order, and the
    first filler after a relevant paper is marked ``first_filler`` (its heading).
    """
    relevant = [rp for rp in papers if not rp.filler]
    fillers = [rp for rp in papers if rp.filler]
    views = []
    for i, rp in enumerate([*relevant, *fillers], start=1):
        view = paper_view(i, rp, thumbnails=thumbnails)
        if rp.filler and relevant and i == len(relevant) + 1:
            view = dataclasses.replace(view, first_filler=True)
        if feedback and rp.paper.arxiv_id in feedback:
            # Placeholders that depend on the paper only: the block stays the same for every
            # subscriber (one inline per paper, cached); Renderer.render puts the real,
            # per-subscriber links in afterwards.
            view = dataclasses.replace(
                view,
                like_url=FEEDBACK_PLACEHOLDER.format(verdict="like", id=rp.paper.arxiv_id),
                dislike_url=FEEDBACK_PLACEHOLDER.format(verdict="dislike", id=rp.paper.arxiv_id),
            )
        views.append(view)
    return views


def paper_view(rank: int, ranked: RankedPaper, *, thumbnails: bool = False) -> PaperView:
    """The template view of ``ranked`` at 1-based position ``rank``.

    Everything but ``rank``, ``score`` and the why line depends only on the paper, the
    matched keywords and ``thumbnails``: that part is computed once per distinct combination
    (cached).

    Args:
        thumbnails: show the paper's thumbnail (``DIGEST_THUMBNAILS``) when it has an HTTPS one.
    """
    try:
        view = _shared_view(ranked.paper, tuple(ranked.matched), thumbnails)
    except TypeError:  # an unhashable paper (not ours): no cache
        return _paper_view(rank, ranked, thumbnails=thumbnails)
    return dataclasses.replace(
        view, rank=rank, score=ranked.score, why=ranked.why, filler=ranked.filler
    )


@functools.lru_cache(maxsize=_VIEW_CACHE_SIZE)
def _shared_view(paper: Paper, matched: tuple[str, ...], thumbnails: bool) -> PaperView:
    return _paper_view(
        0, RankedPaper(paper=paper, score=0.0, matched=matched), thumbnails=thumbnails
    )


def _paper_view(rank: int, ranked: RankedPaper, *, thumbnails: bool = False) -> PaperView:
    p = ranked.paper
    title = collapse(p.title)
    is_ai = bool(p.ai_summary and p.ai_summary.strip())
    summary = collapse(p.ai_summary or "") if is_ai else shorten(p.abstract, SUMMARY_MAX_CHARS)
    keywords = tuple(ranked.matched)
    thumbnail = p.thumbnail if thumbnails and p.thumbnail else None
    if thumbnail is not None and not thumbnail.lower().startswith("https://"):
        thumbnail = None
    return PaperView(
        rank=rank,
        arxiv_id=p.arxiv_id,
        title=title,
        title_html=highlight(title, keywords),
        hf_url=p.hf_url,
        abs_url=p.arxiv_abs_url,
        pdf_url=p.arxiv_pdf_url,
        upvotes=p.upvotes,
        comments=p.comments,
        stats=_stats(p),
        authors=author_line(p.authors),
        summary=summary,
        summary_html=highlight(summary, keywords),
        summary_is_ai=is_ai,
        keywords=keywords,
        chips=keyword_chips(keywords, (title, summary), p.ai_keywords),
        thumbnail_url=thumbnail,
        thumbnail_alt=f"Figure: {shorten(title, THUMBNAIL_ALT_MAX_CHARS)}",
        code_url=p.github_repo or None,
        stars=format_count(p.github_stars) if p.github_stars else None,
        project_url=p.project_page or None,
        paper=p,
        score=ranked.score,
        why=ranked.why,
        filler=ranked.filler,
    )


# --- the renderer ---------------------------------------------------------------------------


class Renderer:
    """Renders :class:`EmailContext` objects into :class:`RenderedEmail` objects.

    Build one per process (templates are compiled once, the premailer instance and its CSS
    caches are reused) and call :meth:`render` per subscriber. Thread-safe for rendering.

    Args:
        templates_dir: a directory whose ``digest.html.j2`` and/or ``digest.txt.j2`` replace
            the packaged ones (``DIGEST_TEMPLATES_DIR``); ``None`` for the packaged ones only.
        site_url: the link in the email header (``DIGEST_SITE_URL``).
        thumbnails: show papers' thumbnails (``DIGEST_THUMBNAILS``).

    Raises:
        ConfigError: ``templates_dir`` is not a directory, or a template has a syntax error
            (the message names the file and line).
    """

    def __init__(
        self,
        templates_dir: Path | None = None,
        *,
        site_url: str = DEFAULT_SITE_URL,
        thumbnails: bool = False,
    ):
        loaders: list[jinja2.BaseLoader] = []
        if templates_dir is not None:
            if not templates_dir.is_dir():
                raise ConfigError(f"DIGEST_TEMPLATES_DIR: {templates_dir} is not a directory")
            loaders.append(jinja2.FileSystemLoader(templates_dir))
        loaders.append(jinja2.FileSystemLoader(PACKAGED_TEMPLATES_DIR))
        self.site_url = site_url
        self.thumbnails = thumbnails
        self._env = jinja2.Environment(
            loader=jinja2.ChoiceLoader(loaders),
            autoescape=_autoescape,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=True,
            auto_reload=False,
        )
        self._env.filters["wrap"] = wrap
        self._env.filters["highlight"] = highlight
        self._env.filters["count"] = format_count
        self._html = self._load(HTML_TEMPLATE)
        self._text = self._load(TEXT_TEMPLATE)
        self._premailer = _CachingPremailer(**PREMAILER_OPTIONS)

        self._blocks: OrderedDict[tuple[tuple[str, ...], str], str] = OrderedDict()
        self._style_verdicts: dict[tuple[str, ...], bool] = {}
        self._blocks_lock = threading.Lock()
        self.block_hits = 0
        """Paper blocks whose inlined HTML came from the cache (statistics)."""
        self.block_misses = 0
        """Paper blocks inlined by premailer because they were not cached yet (statistics)."""

    @property
    def html_template_path(self) -> str | None:
        """The file the HTML template was loaded from."""
        return self._html.filename

    @property
    def text_template_path(self) -> str | None:
        """The file the text template was loaded from."""
        return self._text.filename

    def _load(self, name: str) -> jinja2.Template:
        try:
            return self._env.get_template(name)
        except jinja2.TemplateSyntaxError as e:
            where = e.filename or name
            raise ConfigError(f"template {where}:{e.lineno}: {e.message}") from e
        except jinja2.TemplateNotFound as e:  # pragma: no cover - packaged ones always exist
            raise ConfigError(f"template {name} not found") from e

    def context_for(self, ctx: EmailContext) -> dict[str, Any]:
        """The variables both templates receive.

        Returns:
            A dict with: ``subject``, ``preheader``, ``brand`` (``Daily Papers``/``Weekly
            Papers``), ``date_label`` (``May 29``), ``long_date`` (``Thursday, May 29,
            2025``), ``edition``, ``is_weekly``, ``papers`` (list of :class:`PaperView`),
            ``shown`` (len(papers)), ``total_papers``, ``site_url``, ``subscriber`` (or
            ``None``), ``email`` (or ``None``), ``name`` (or ``None``), ``keywords`` (tuple),
            ``unsubscribe_url``, ``unsubscribe_mailto`` (a ``mailto:`` URL or ``None``),
            ``preferences_url``, ``archive_url``, ``postal_address`` (each or ``None``),
            ``text_width``, ``highlight_class``, ``period`` (``on Thursday``, ``in the week of
            Aug 17–23``: never "today"), ``see_all_url`` (the edition's page on Hugging Face).
        """
        sub = ctx.subscriber
        return {
            "subject": make_subject(ctx.edition, ctx.papers),
            "preheader": make_preheader(ctx.edition, ctx.papers),
            "brand": brand(ctx.edition),
            "date_label": date_label(ctx.edition),
            "long_date": long_date_label(ctx.edition),
            "edition": ctx.edition,
            "is_weekly": ctx.edition.frequency == "weekly",
            "papers": paper_views(ctx.papers, thumbnails=self.thumbnails, feedback=ctx.feedback),
            "filler_heading": FILLER_HEADING,
            "period": period_label(ctx.edition),
            "see_all_url": see_all_url(ctx.edition),
            "shown": len(ctx.papers),
            "total_papers": max(ctx.total_papers, len(ctx.papers)),
            "site_url": self.site_url,
            "subscriber": sub,
            "email": sub.email if sub is not None else None,
            "name": sub.name if sub is not None else None,
            "keywords": tuple(sub.keywords) if sub is not None else (),
            "unsubscribe_url": ctx.unsubscribe_url,
            "unsubscribe_mailto": mailto_url(ctx.unsubscribe_mailto),
            "preferences_url": ctx.preferences_url,
            "archive_url": ctx.archive_url,
            "postal_address": ctx.postal_address,
            "text_width": TEXT_WIDTH,
            "highlight_class": HIGHLIGHT_CLASS,
        }

    def render(self, ctx: EmailContext) -> RenderedEmail:
        """Render both parts for one subscriber.

        Args:
            ctx: the edition, the subscriber's papers and their unsubscribe links.

        Returns:
            The subject, the inlined HTML, the text and the preheader.

        Raises:
            ConfigError: a template failed (undefined variable, bad filter...), naming the
                template file and line.
        """
        variables = self.context_for(ctx)
        html = self.inline(self._run(self._html, variables))
        text = self._run(self._text, variables)
        for arxiv_id, (like, dislike) in ctx.feedback.items():
            for verdict, url in (("like", like), ("dislike", dislike)):
                slot = FEEDBACK_PLACEHOLDER.format(verdict=verdict, id=arxiv_id)
                html = html.replace(slot, str(escape(url)))
                text = text.replace(slot, url)
        return RenderedEmail(
            subject=variables["subject"],
            html=html,
            text=text,
            preheader=variables["preheader"],
        )

    def inline(self, html: str) -> str:
        """``html`` with its ``<style>`` rules inlined (``@media`` rules kept in ``<style>``).

        Block markers (:data:`BLOCK_START` … :data:`BLOCK_END`) are removed; marked blocks
        are inlined once per distinct text and cached when the stylesheet allows it (see the
        module docstring); the result is the same as :meth:`inline_whole` on the unmarked
        document.
        """
        if BLOCK_START not in html:
            return self.inline_whole(html)
        blocks: list[str] = []

        def to_slot(m: re.Match[str]) -> str:
            blocks.append(m.group(1))
            return _BLOCK_SLOT

        skeleton = _BLOCK_RE.sub(to_slot, html)
        styles = self._context_free_styles(skeleton)
        if styles is None or BLOCK_START in skeleton or BLOCK_END in skeleton:
            return self.inline_whole(unmark(html))
        cached = self._cached_blocks(styles, blocks)
        # One premailer pass over the skeleton with the blocks not cached yet left in place,
        # still marked (comments survive premailer), and a slot for each cached one.
        slots = iter(range(len(blocks)))
        document = _BLOCK_RE.sub(
            lambda m: m.group(0) if cached[next(slots)] is None else _BLOCK_SLOT, html
        )
        inlined = self.inline_whole(document)
        pieces = _PIECE_RE.split(inlined)
        # re.split with one group: text, (slot | inlined block), text, ...; a slot's group is
        # None, a block's is its inlined text.
        found = pieces[1::2]
        expected = [hit is None for hit in cached]
        # Different only if the HTML parser moved a slot or a marker: then inline it whole.
        if [piece is not None for piece in found] != expected:  # pragma: no cover
            return self.inline_whole(unmark(html))
        new = [(b, p) for b, p in zip(blocks, found, strict=True) if p is not None]
        if new:
            self._cache_blocks(styles, [b for b, _ in new], [p for _, p in new])
        out = [pieces[0]]
        for hit, piece, after in zip(cached, found, pieces[2::2], strict=True):
            out.append(hit if hit is not None else piece)
            out.append(after)
        return "".join(out)

    def inline_whole(self, html: str) -> str:
        """``html`` inlined by premailer in one pass (no block cache)."""
        return self._premailer.transform_only_present(html)

    def _cached_blocks(self, styles: tuple[str, ...], blocks: list[str]) -> list[str | None]:
        """The cached inlined text of each block, ``None`` for a block not cached yet."""
        out: list[str | None] = []
        with self._blocks_lock:
            for block in blocks:
                hit = self._blocks.get((styles, block))
                if hit is None:
                    self.block_misses += 1
                else:
                    self.block_hits += 1
                    self._blocks.move_to_end((styles, block))
                out.append(hit)
        return out

    def _cache_blocks(self, styles: tuple[str, ...], blocks: list[str], inlined: list[str]) -> None:
        with self._blocks_lock:
            for block, result in zip(blocks, inlined, strict=True):
                self._blocks[(styles, block)] = result
            while len(self._blocks) > _MAX_CACHED_BLOCKS:
                self._blocks.popitem(last=False)

    def _context_free_styles(self, html: str) -> tuple[str, ...] | None:
        """The ``<style>`` blocks of ``html`` if every inlined selector is context-free."""
        found = list(_STYLE_RE.finditer(html))
        styles = tuple(m.group(0) for m in found)
        verdict = self._style_verdicts.get(styles)
        if verdict is None:
            verdict = len(found) == html.lower().count("<style") and all(
                _is_context_free(self._premailer, m.group(1), m.group(2), index)
                for index, m in enumerate(found)
            )
            with self._blocks_lock:
                if len(self._style_verdicts) >= _MAX_CACHED_STYLESHEETS:
                    self._style_verdicts.clear()
                self._style_verdicts[styles] = verdict
        return styles if verdict else None

    @staticmethod
    def _run(template: jinja2.Template, variables: dict[str, Any]) -> str:
        try:
            return template.render(variables)
        except jinja2.TemplateError as e:
            where = template.filename or template.name or "?"
            line = _template_line(e, where)
            raise ConfigError(f"template {where}:{line}: {e}") from e


class _CachingPremailer(Premailer):  # type: ignore[misc]  # premailer is untyped
    """A :class:`premailer.Premailer` that turns each distinct ``<style>`` text into rules once.

    premailer caches the cssutils parse of a stylesheet, but on every ``transform`` it still
    walks the parsed sheet to rebuild its ``(specificity, selector, declarations)`` rules and
    re-serializes the ``@media`` rules with cssutils: about 75 % of a transform's time for a
    ten-paper digest. Our ``<style>`` block is the same in every message, so both results are
    memoized here, keyed by the CSS text (and the block's position). The result is identical:
    the rules are immutable tuples and the leftover CSS string is what premailer would build.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._rules_cache: dict[tuple[str, int], tuple[list[Any], list[Any]]] = {}
        self._leftover_css: dict[int, tuple[list[Any], str]] = {}
        self._required_classes: dict[str, frozenset[str] | None] = {}
        self._lock = threading.Lock()
        self._local = threading.local()

    def transform_only_present(self, html: str) -> str:
        """``transform(html, pretty_print=False)``, skipping rules that cannot match ``html``.

        premailer runs one XPath query over the whole document per CSS rule (~30 µs each, 45
        rules in the packaged stylesheet), also for rules whose classes no element of this
        document has: most of them in a document of a few paper blocks. A rule made of a tag,
        classes and an id only (:data:`_SIMPLE_SELECTOR_RE`) is left out when one of its
        classes appears in none of ``html``'s ``class`` attributes; it would match nothing,
        so the output is unchanged. The class list errs on the side of too many (any
        ``class=`` text counts); an attribute with a character reference turns this off.
        """
        self._local.classes = _document_classes(html)
        try:
            out: str = self.transform(html, pretty_print=False)
        finally:
            self._local.classes = None
        return out

    def _parse_style_rules(self, css_body: str, ruleset_index: int) -> tuple[list[Any], list[Any]]:
        key = (css_body, ruleset_index)
        hit = self._rules_cache.get(key)
        if hit is None:
            with self._lock:
                hit = self._rules_cache.get(key)
                if hit is None:
                    if len(self._rules_cache) >= _MAX_CACHED_STYLESHEETS:
                        self._rules_cache.clear()
                        self._leftover_css.clear()
                        self._required_classes.clear()
                    hit = super()._parse_style_rules(css_body, ruleset_index)
                    self._rules_cache[key] = hit
        classes: frozenset[str] | None = getattr(self._local, "classes", None)
        if classes is None:
            return hit
        rules, leftover = hit
        kept = [rule for rule in rules if self._may_match(rule[1], classes)]
        return kept, leftover  # the same leftover list: _css_rules_to_string's cache key

    def _may_match(self, selector: str, classes: frozenset[str]) -> bool:
        required = self._required_classes.get(selector, _UNKNOWN)
        if required is _UNKNOWN:
            required = (
                frozenset(_CLASS_IN_SELECTOR_RE.findall(selector))
                if _SIMPLE_SELECTOR_RE.match(selector)
                else None  # anything else is always kept
            )
            self._required_classes[selector] = required
        return required is None or required <= classes

    def _css_rules_to_string(self, rules: list[Any]) -> str:
        # ``rules`` is the leftover list of a cached _parse_style_rules result: same object,
        # same text. The cache entry keeps the list alive, so its id() cannot be reused.
        hit = self._leftover_css.get(id(rules))
        if hit is not None and hit[0] is rules:
            return hit[1]
        with self._lock:
            text: str = super()._css_rules_to_string(rules)
            self._leftover_css[id(rules)] = (rules, text)
        return text


_UNKNOWN: Any = object()
_CLASS_ATTR_RE = re.compile(
    r"""class\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s"'=<>`]+))""", re.IGNORECASE
)
_CLASS_IN_SELECTOR_RE = re.compile(r"\.([A-Za-z_-][\w-]*)")


def _document_classes(html: str) -> frozenset[str] | None:
    """Every class name in ``html``'s ``class`` attributes (a superset), or ``None`` when an
    attribute holds a character reference (its decoded value is not known here)."""
    names: set[str] = set()
    for m in _CLASS_ATTR_RE.finditer(html):
        value = m.group(1) or m.group(2) or m.group(3) or ""
        if "&" in value:
            return None
        names.update(value.split())
        names.update(re.split(r"[ \t\r\n\f]+", value))
    return frozenset(names)


def unmark(html: str) -> str:
    """``html`` without block markers (:data:`BLOCK_START`, :data:`BLOCK_END`)."""
    return html.replace(BLOCK_START, "").replace(BLOCK_END, "")


def _is_context_free(premailer: Premailer, attributes: str, css: str, index: int) -> bool:
    """Whether every selector premailer would inline from this ``<style>`` is context-free."""
    if "media=" in attributes.lower():  # premailer may skip it: keep the exact whole path
        return False
    rules, _leftover = premailer._parse_style_rules(css, index)
    return all(_SIMPLE_SELECTOR_RE.match(selector) for _spec, selector, _bulk in rules)


def _autoescape(name: str | None) -> bool:
    return name is not None and name.endswith((".html.j2", ".html", ".htm"))


def _template_line(error: BaseException, filename: str) -> int | str:
    """The template line where ``error`` was raised (Jinja maps its frames to it), or "?"."""
    line: int | str = getattr(error, "lineno", None) or "?"
    for frame, lineno in traceback.walk_tb(error.__traceback__):
        if frame.f_code.co_filename == filename:
            line = lineno
    return line
