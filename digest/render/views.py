"""What the templates see: :class:`PaperView` per paper, labels, subject, preheader, text helpers.

Everything here is pure (no I/O) and independent of the templates; the views and wrapped texts
that recur in every message (a paper with the same matched keywords) are cached.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from markupsafe import Markup, escape

from digest.models import Edition, Paper, RankedPaper
from digest.ranking import keyword_pattern, matched_word

PACKAGED_TEMPLATES_DIR = Path(__file__).parent.parent / "templates"
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
HIGHLIGHT_OPEN = f'<span class="{HIGHLIGHT_CLASS}">'
"""What :func:`highlight` writes before a matched keyword."""
HIGHLIGHT_CLOSE = "</span>"
"""What :func:`highlight` writes after a matched keyword."""
#: Star counts from this value on are shown abbreviated (``1.2k``).
THOUSAND = 1000

_WS_RE = re.compile(r"\s+")

FEEDBACK_PLACEHOLDER = "https://feedback.invalid/{verdict}/{id}"
"""Stands for a card's 👍/👎 link while rendering and inlining (``.invalid``: RFC 2606)."""
FILLER_HEADING = "Also trending"
"""Heading over the papers picked for popularity alone, after the relevant ones."""


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
        why: one short line saying why the paper was picked (``RankedPaper.why``; a keyword
            reason names only the words the card shows: see ``keyword_why``).
        keyword_why: the keyword reason to say instead of the ranking's when a matched keyword
            is not visible on the card (it matched only in the abstract while the AI summary
            is shown, or past the shown part of the abstract): the chips' words, else
            ``keyword in the abstract: robot*``; ``None`` when every matched keyword shows.
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
    keyword_why: str | None = None
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
        out.append(f"{HIGHLIGHT_OPEN}{escape(m.group(0))}{HIGHLIGHT_CLOSE}")
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
    return _fill(collapse(text), width, indent, indent if first_indent is None else first_indent)


def _fill(text: str, width: int, indent: str, first_indent: str) -> str:
    """``textwrap.fill(text, width, initial_indent=first_indent, subsequent_indent=indent,
    break_long_words=False, break_on_hyphens=False)`` for a ``text`` already collapsed (words
    separated by single spaces): the same greedy fill, in ~1/5 of the time (tested against
    textwrap on random and hostile texts).

    A word is put on the current line if the line's length plus a space plus the word stays
    within ``width`` minus the line's indent; a word longer than that goes whole on a line of
    its own, and the line ends after it (as textwrap's long-word rule does).
    """
    if not text:
        return ""
    if width <= 0:
        raise ValueError(f"invalid width {width!r} (must be > 0)")
    lines: list[str] = []
    line: list[str] = []
    used = 0
    prefix, room = first_indent, width - len(first_indent)
    for word in text.split(" "):
        size = len(word)
        if line and used + 1 + size <= room:
            line.append(word)
            used += 1 + size
            continue
        if line:
            lines.append(prefix + " ".join(line))
            line = []
            prefix, room = indent, width - len(indent)
        if size > room:  # a long word: alone on its line, which ends after it
            lines.append(prefix + word)
            prefix, room = indent, width - len(indent)
        else:
            line, used = [word], size
    if line:
        lines.append(prefix + " ".join(line))
    return "\n".join(lines)


_WRAP_CACHE_SIZE = 8192
"""Distinct wrapped texts kept: a paper's summary, title and authors recur in every message
that lists it (a fill costs ~6 µs a paragraph, textwrap ~35 µs)."""


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


_EDITION_LABELS_CACHED = 64
"""Editions whose labels are kept: every message of a send asks for the same few
(``strftime`` per call cost ~1 % of making a message)."""


def _month_day(day: date) -> str:
    return f"{day:%b} {day.day}"


@functools.lru_cache(maxsize=_EDITION_LABELS_CACHED)
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


@functools.lru_cache(maxsize=_EDITION_LABELS_CACHED)
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


def list_title(name: str | None = None) -> str:
    """The list's name where no edition is in view (web pages, the confirmation email, the
    Atom feed): DIGEST_LIST_NAME, else ``"Daily Papers"``."""
    return name or DAILY_BRAND


def brand(edition: Edition, name: str | None = None) -> str:
    """The list's name for ``edition``: ``name`` (DIGEST_LIST_NAME; ``"NAME (weekly)"`` for
    a weekly edition), else ``"Daily Papers"`` / ``"Weekly Papers"``."""
    if name:
        return f"{name} (weekly)" if edition.frequency == "weekly" else name
    return WEEKLY_BRAND if edition.frequency == "weekly" else DAILY_BRAND


@functools.lru_cache(maxsize=_EDITION_LABELS_CACHED)
def period_label(edition: Edition) -> str:
    """When the edition's papers trended, for prose: ``on Thursday``, ``in the week of Aug 17–23``.

    Never "today": an edition is sent after its day has ended.
    """
    if edition.frequency == "weekly":
        return f"in the week of {date_label(edition)}"
    if not edition.days:
        return f"on {edition.key}"
    return f"on {edition.days[0]:%A}"


@functools.lru_cache(maxsize=_EDITION_LABELS_CACHED)
def see_all_url(edition: Edition) -> str:
    """That edition's page on Hugging Face: ``https://huggingface.co/papers/date/2026-08-20``
    (daily) or ``…/papers/week/2026-W34`` (weekly)."""
    if edition.frequency == "weekly" and edition.days:
        year, week, _ = edition.days[0].isocalendar()
        return HF_WEEK_URL.format(year=year, week=week)
    if edition.days:
        return HF_DAY_URL.format(day=edition.days[-1].isoformat())
    return DEFAULT_SITE_URL


def make_subject(
    edition: Edition, papers: Sequence[RankedPaper], list_name: str | None = None
) -> str:
    """The Subject line.

    Examples: ``Daily Papers · May 29: <top title> and 9 more``, ``Daily Papers · May 29:
    <title>`` (one paper), ``Weekly Papers · Aug 17–23: <top title> and 4 more``,
    ``Daily Papers · May 29: no papers``. Whitespace in the title is collapsed so the subject
    is one line, and the part before `` and N more`` is cut at a word boundary to
    :data:`SUBJECT_MAX_CHARS` characters. ``list_name`` (DIGEST_LIST_NAME) replaces the brand.
    """
    prefix = f"{brand(edition, list_name)}{SUBJECT_SEPARATOR}{date_label(edition)}: "
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


def plural(n: int, word: str) -> str:
    """``1 upvote``, ``0 upvotes``, ``12 subscribers``: ``n`` and ``word`` with an ``s`` unless
    ``n`` is 1 (the email, the CLI and the logs say it alike)."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _stats(p: Paper) -> str:
    parts = []
    if p.upvotes is not None:
        parts.append("▲ " + plural(p.upvotes, "upvote"))
    if p.comments:
        parts.append(plural(p.comments, "comment"))
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
        changes: dict[str, object] = {}
        if rp.filler and relevant and i == len(relevant) + 1:
            changes["first_filler"] = True
        if feedback and rp.paper.arxiv_id in feedback:
            # Placeholders that depend on the paper only: the block stays the same for every
            # subscriber (one inline per paper, cached); Renderer.render puts the real,
            # per-subscriber links in afterwards.
            changes["like_url"] = FEEDBACK_PLACEHOLDER.format(verdict="like", id=rp.paper.arxiv_id)
            changes["dislike_url"] = FEEDBACK_PLACEHOLDER.format(
                verdict="dislike", id=rp.paper.arxiv_id
            )
        views.append(paper_view(i, rp, thumbnails=thumbnails, **changes))
    return views


def paper_view(
    rank: int, ranked: RankedPaper, *, thumbnails: bool = False, **changes: object
) -> PaperView:
    """The template view of ``ranked`` at 1-based position ``rank``.

    Everything but ``rank``, ``score`` and the why line depends only on the paper, the
    matched keywords and ``thumbnails``: that part is computed once per distinct combination
    (cached).

    Args:
        thumbnails: show the paper's thumbnail (``DIGEST_THUMBNAILS``) when it has an HTTPS one.
        changes: other fields to set (``first_filler``, ``like_url``, ``dislike_url``).
    """
    try:
        view = _shared_view(ranked.paper, tuple(ranked.matched), thumbnails)
    except TypeError:  # an unhashable paper (not ours): no cache
        view = _paper_view(rank, ranked, thumbnails=thumbnails)
        return dataclasses.replace(view, **changes) if changes else view  # type: ignore[arg-type]
    why = _card_why(ranked.why, view.keyword_why)
    changes.update(rank=rank, score=ranked.score, why=why, filler=ranked.filler)
    return _copy_view(view, changes)


_KEYWORD_WHY = ("keyword: ", "keywords: ")
"""How the ranking's keyword reason starts (:func:`digest.ranking.keywords._why`)."""


def _card_why(why: str, keyword_reason: str | None) -> str:
    """The ranking's reason, or the card's keyword reason where the ranking's names a keyword
    the card does not show."""
    return keyword_reason if keyword_reason is not None and why.startswith(_KEYWORD_WHY) else why


def keyword_why(
    keywords: Sequence[str], shown: Sequence[str], ai_keywords: Sequence[str], chips: Sequence[str]
) -> str | None:
    """The keyword reason a card can back up, or ``None`` when every keyword shows.

    Args:
        keywords: the subscriber's keywords that matched the paper (as written).
        shown: the texts the card shows (title, shown summary).
        ai_keywords: HF's AI keywords (a match there has a chip with a note).
        chips: the card's chips (:func:`keyword_chips`).

    Returns:
        ``keywords: agents, robots`` from the chips when some keyword matched only where the
        card does not show (the abstract behind an AI summary); ``keyword in the abstract:
        robot*`` when none of them shows; ``None`` when all show (the ranking's line stands).
    """
    hidden = [k for k in keywords if not any(matched_word(t, k) for t in (*shown, *ai_keywords))]
    if not hidden:
        return None
    words = list(dict.fromkeys(c.split(" · ")[0] for c in chips))
    if words:
        return f"{'keyword' if len(words) == 1 else 'keywords'}: {', '.join(words)}"
    label = "keyword" if len(hidden) == 1 else "keywords"
    return f"{label} in the abstract: {', '.join(hidden)}"


_VIEW_FIELDS = tuple(f.name for f in dataclasses.fields(PaperView))
_VIEW_FIELD_SET = frozenset(_VIEW_FIELDS)


def _view_copier() -> Callable[[PaperView, dict[str, object]], PaperView]:
    """A function that copies a :class:`PaperView` with ``changes``, written out field by field
    (each slot set through its descriptor, so the frozen ``__setattr__`` is not in the way)."""
    lines = ["def copy(view, changes):", "    new = new_(PaperView)", "    get = changes.get"]
    names: dict[str, object] = {"new_": object.__new__, "PaperView": PaperView}
    for i, name in enumerate(_VIEW_FIELDS):
        names[f"set{i}"] = getattr(PaperView, name).__set__
        lines.append(f"    set{i}(new, get({name!r}, view.{name}))")
    lines.append("    return new")
    exec("\n".join(lines), names)  # our own field names, fixed at import
    return names["copy"]  # type: ignore[return-value]


_copy_fields = _view_copier()


def _copy_view(view: PaperView, changes: dict[str, object]) -> PaperView:
    """``dataclasses.replace(view, **changes)`` without its checks and ``__init__`` call
    (~18 µs → ~11 µs measured here; a message copies one view per paper). ``changes`` holds
    field names."""
    if not changes.keys() <= _VIEW_FIELD_SET:
        unknown = sorted(changes.keys() - _VIEW_FIELD_SET)
        raise TypeError(f"PaperView has no field {unknown[0]!r}")
    return _copy_fields(view, changes)


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
    chips = keyword_chips(keywords, (title, summary), p.ai_keywords)
    card_reason = keyword_why(keywords, (title, summary), p.ai_keywords, chips)
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
        chips=chips,
        keyword_why=card_reason,
        thumbnail_url=thumbnail,
        thumbnail_alt=f"Figure: {shorten(title, THUMBNAIL_ALT_MAX_CHARS)}",
        code_url=p.github_repo or None,
        stars=format_count(p.github_stars) if p.github_stars else None,
        project_url=p.project_page or None,
        paper=p,
        score=ranked.score,
        why=_card_why(ranked.why, card_reason),
        filler=ranked.filler,
    )
