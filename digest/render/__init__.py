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

The code is split in three: this module (:class:`Renderer`: templates, variables, the render),
:mod:`digest.render.views` (what the templates see: paper views, labels, text helpers) and
:mod:`digest.render.inline` (premailer and its block cache).
"""

from __future__ import annotations

import dataclasses
import re
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import jinja2
from markupsafe import escape

from digest.errors import ConfigError
from digest.models import Edition, RankedPaper
from digest.render.views import (
    AI_KEYWORDS_NOTE,
    DAILY_BRAND,
    DATE_RANGE_DASH,
    DEFAULT_SITE_URL,
    ELLIPSIS,
    FEEDBACK_PLACEHOLDER,
    FILLER_HEADING,
    HF_DAY_URL,
    HF_WEEK_URL,
    HIGHLIGHT_CLASS,
    HTML_TEMPLATE,
    MAILTO_SUBJECT,
    MAX_AUTHORS_SHOWN,
    PACKAGED_TEMPLATES_DIR,
    PREHEADER_MAX_CHARS,
    PREHEADER_TITLES,
    SUBJECT_MAX_CHARS,
    SUBJECT_SEPARATOR,
    SUMMARY_MAX_CHARS,
    TEXT_TEMPLATE,
    TEXT_WIDTH,
    THOUSAND,
    THUMBNAIL_ALT_MAX_CHARS,
    THUMBNAIL_WIDTH_PX,
    WEEKLY_BRAND,
    PaperView,
    author_line,
    brand,
    collapse,
    date_label,
    format_count,
    highlight,
    keyword_chips,
    long_date_label,
    mailto_url,
    make_preheader,
    make_subject,
    paper_view,
    paper_views,
    period_label,
    see_all_url,
    shorten,
    wrap,
)

if TYPE_CHECKING:
    from digest.render.inline import (
        BLOCK_END,
        BLOCK_START,
        PREMAILER_OPTIONS,
        unmark,
    )
    from digest.settings import Settings

_FROM_INLINE = frozenset({"BLOCK_END", "BLOCK_START", "PREMAILER_OPTIONS", "unmark"})
"""Names of :mod:`digest.render.inline` this package exports, imported on first use: premailer,
cssutils, lxml and requests (~20 MB) load only in a process that inlines (not in the sending
process of a send rendered by workers)."""


def __getattr__(name: str) -> Any:
    if name in _FROM_INLINE:
        from digest.render import inline

        return getattr(inline, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


SPLICED_INLINER_BLOCKS = 512
"""Inlined blocks a spliced renderer's inliner keeps (the splicer has its own)."""

__all__ = [
    "AI_KEYWORDS_NOTE",
    "BLOCK_END",
    "BLOCK_START",
    "DAILY_BRAND",
    "DATE_RANGE_DASH",
    "DEFAULT_SITE_URL",
    "ELLIPSIS",
    "FEEDBACK_PLACEHOLDER",
    "FILLER_HEADING",
    "HF_DAY_URL",
    "HF_WEEK_URL",
    "HIGHLIGHT_CLASS",
    "HTML_TEMPLATE",
    "MAILTO_SUBJECT",
    "MAX_AUTHORS_SHOWN",
    "PACKAGED_TEMPLATES_DIR",
    "PREHEADER_MAX_CHARS",
    "PREHEADER_TITLES",
    "PREMAILER_OPTIONS",
    "SUBJECT_MAX_CHARS",
    "SUBJECT_SEPARATOR",
    "SUMMARY_MAX_CHARS",
    "TEXT_TEMPLATE",
    "TEXT_WIDTH",
    "THOUSAND",
    "THUMBNAIL_ALT_MAX_CHARS",
    "THUMBNAIL_WIDTH_PX",
    "WEEKLY_BRAND",
    "EmailContext",
    "PaperView",
    "RenderedEmail",
    "Renderer",
    "SubscriberLike",
    "author_line",
    "brand",
    "collapse",
    "date_label",
    "format_count",
    "highlight",
    "keyword_chips",
    "long_date_label",
    "mailto_url",
    "make_preheader",
    "make_subject",
    "paper_view",
    "paper_views",
    "period_label",
    "put_feedback",
    "see_all_url",
    "shorten",
    "unmark",
    "wrap",
]


_FEEDBACK_PREFIX = FEEDBACK_PLACEHOLDER.split("{", 1)[0]
_FEEDBACK_SLOT_RE = re.compile(re.escape(_FEEDBACK_PREFIX) + "(like|dislike)/")
_ID_RUN_RE = re.compile(r"[A-Za-z0-9._/-]+")
"""The characters of an arXiv id (``2406.09246``, ``hep-th/9901001``, ``2406.09246v2``)."""


def put_feedback(
    text: str,
    feedback: Mapping[str, tuple[str, str]],
    escape_url: Callable[[str], object] = str,
) -> str:
    """``text`` with each card's 👍/👎 placeholder (:data:`FEEDBACK_PLACEHOLDER`) replaced by
    its URL, in one pass over the text.

    Args:
        text: a rendered part (HTML or text).
        feedback: per arXiv id, the card's (like URL, dislike URL).
        escape_url: applied to each URL before it goes in (``markupsafe.escape`` for HTML).

    Returns:
        The text; a placeholder whose id is not in ``feedback`` is left as it is. Where one
        id is a prefix of another, the longest that follows the placeholder wins.
    """
    out: list[str] = []
    pos = 0
    # An id of the usual characters is found by one dict lookup per prefix of the run of
    # such characters after the placeholder, longest first; any other id: by a scan.
    by_run = all(_ID_RUN_RE.fullmatch(i) for i in feedback)
    longest = max(map(len, feedback), default=0)
    for m in _FEEDBACK_SLOT_RE.finditer(text):
        start = m.end()
        if start < pos:
            continue
        found: str | None = None
        if by_run:
            run = _ID_RUN_RE.match(text, start)
            end = min(run.end(), start + longest) if run else start
            while end > start and found is None:
                if text[start:end] in feedback:
                    found = text[start:end]
                end -= 1
        else:
            found = max((i for i in feedback if text.startswith(i, start)), key=len, default=None)
        if found is None:
            continue
        out.append(text[pos : m.start()])
        out.append(str(escape_url(feedback[found][0 if m.group(1) == "like" else 1])))
        pos = start + len(found)
    if not out:
        return text
    out.append(text[pos:])
    return "".join(out)


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
        web: the edition is shown on the web archive (``/archive/KEY``), not mailed: the footer
            invites to subscribe instead of saying how to unsubscribe.
        ranked_by: what ranks the subscriber's papers besides keywords and upvotes, in the
            footer's words (:func:`~digest.ranking.semantic.ranked_by`); ``()``: the footer
            names the keywords, or says the papers are the most upvoted.
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
    web: bool = False
    ranked_by: tuple[str, ...] = ()


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


class Renderer:
    """Renders :class:`EmailContext` objects into :class:`RenderedEmail` objects.

    Build one per process (templates are compiled once, the premailer instance and its CSS
    caches are reused) and call :meth:`render` per subscriber. Thread-safe for rendering.

    Args:
        templates_dir: a directory whose ``digest.html.j2`` and/or ``digest.txt.j2`` replace
            the packaged ones (``DIGEST_TEMPLATES_DIR``); ``None`` for the packaged ones only.
        site_url: the link in the email header (``DIGEST_SITE_URL``).
        thumbnails: show papers' thumbnails (``DIGEST_THUMBNAILS``).
        splice: build each part from cached pieces (:mod:`digest.render.splice`) when it
            comes from the packaged template; the output is the same either way (``False``:
            Jinja and premailer on each message's whole document, for comparison).
        list_name: the list's name (``DIGEST_LIST_NAME``) in the subject and the email;
            ``None``: ``Daily Papers`` / ``Weekly Papers``.

    Raises:
        ConfigError: ``templates_dir`` is not a directory, or a template has a syntax error
            (the message names the file and line).
    """

    @classmethod
    def from_settings(cls, settings: Settings) -> Renderer:
        """The renderer of DIGEST_TEMPLATES_DIR, DIGEST_SITE_URL, DIGEST_THUMBNAILS and
        DIGEST_LIST_NAME (a send, a preview, a render worker and the archive use this one).

        Raises:
            ConfigError: as the constructor.
        """
        return cls(
            settings.templates_dir,
            site_url=settings.site_url,
            thumbnails=settings.thumbnails,
            list_name=settings.list_name,
        )

    def __init__(
        self,
        templates_dir: Path | None = None,
        *,
        site_url: str = DEFAULT_SITE_URL,
        thumbnails: bool = False,
        splice: bool = True,
        list_name: str | None = None,
    ):
        loaders: list[jinja2.BaseLoader] = []
        if templates_dir is not None:
            if not templates_dir.is_dir():
                raise ConfigError(f"DIGEST_TEMPLATES_DIR: {templates_dir} is not a directory")
            loaders.append(jinja2.FileSystemLoader(templates_dir))
        loaders.append(jinja2.FileSystemLoader(PACKAGED_TEMPLATES_DIR))
        self.site_url = site_url
        self.thumbnails = thumbnails
        self.list_name = list_name
        self._env = jinja2.Environment(
            loader=jinja2.ChoiceLoader(loaders),
            autoescape=_autoescape,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=True,
            auto_reload=False,
        )
        from digest.render.inline import BlockInliner
        from digest.render.splice import Splicer, TextSplicer, wrap_filter

        self._env.filters["wrap"] = wrap_filter
        self._env.filters["highlight"] = highlight
        self._env.filters["count"] = format_count
        self._html = self._load(HTML_TEMPLATE)
        self._text = self._load(TEXT_TEMPLATE)
        packaged = (
            self._html.filename is not None
            and Path(self._html.filename).resolve()
            == (PACKAGED_TEMPLATES_DIR / HTML_TEMPLATE).resolve()
        )
        # With the splicer keeping every paper block, the inliner's own cache only bridges
        # a learn (memory: ~2.5 KB a block).
        self._inliner = (
            BlockInliner(SPLICED_INLINER_BLOCKS) if splice and packaged else BlockInliner()
        )
        self._splicer = (
            Splicer(
                self._inliner,
                lambda variables: self._run(self._html, variables),
                self._exact_html,
            )
            if splice and packaged
            else None
        )
        packaged_text = (
            self._text.filename is not None
            and Path(self._text.filename).resolve()
            == (PACKAGED_TEMPLATES_DIR / TEXT_TEMPLATE).resolve()
        )
        self._text_splicer = (
            TextSplicer(lambda variables: self._run(self._text, variables))
            if splice and packaged_text
            else None
        )

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

    @property
    def block_hits(self) -> int:
        """Paper blocks whose inlined HTML came from the cache (statistics)."""
        return self._inliner.block_hits

    @property
    def block_misses(self) -> int:
        """Paper blocks inlined by premailer because they were not cached yet (statistics)."""
        return self._inliner.block_misses

    def inline(self, html: str) -> str:
        """``html`` with its ``<style>`` rules inlined: :meth:`BlockInliner.inline`."""
        return self._inliner.inline(html)

    def inline_whole(self, html: str) -> str:
        """``html`` inlined by premailer in one pass: :meth:`BlockInliner.inline_whole`."""
        return self._inliner.inline_whole(html)

    def context_for(self, ctx: EmailContext) -> dict[str, Any]:
        """The variables both templates receive.

        Returns:
            A dict with: ``subject``, ``preheader``, ``brand`` (DIGEST_LIST_NAME, else ``Daily
            Papers``/``Weekly Papers``), ``date_label`` (``May 29``), ``long_date`` (``Thursday,
            May 29, 2025``), ``edition``, ``is_weekly``, ``papers`` (list of
            :class:`PaperView`), ``shown`` (len(papers)), ``total_papers``, ``site_url``,
            ``subscriber`` (or ``None``), ``email`` (or ``None``), ``name`` (or ``None``),
            ``keywords`` (tuple), ``unsubscribe_url``, ``unsubscribe_mailto`` (a ``mailto:`` URL
            or ``None``), ``preferences_url``, ``archive_url``, ``postal_address`` (each or
            ``None``), ``text_width``, ``highlight_class``, ``period`` (``on Thursday``, ``in
            the week of Aug 17–23``: never "today"), ``see_all_url`` (the edition's page on
            Hugging Face), ``block_start`` and ``block_end`` (empty strings marking each paper's
            part of the text template, see :mod:`digest.render.splice`), ``ranked_by`` (``""``,
            or ``your interests and your library``: what else ranks the papers).
        """
        sub = ctx.subscriber
        return {
            "subject": make_subject(ctx.edition, ctx.papers, self.list_name),
            "preheader": make_preheader(ctx.edition, ctx.papers),
            "brand": brand(ctx.edition, self.list_name),
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
            "web": ctx.web,
            "subscriber": sub,
            "email": sub.email if sub is not None else None,
            "name": sub.name if sub is not None else None,
            "keywords": tuple(sub.keywords) if sub is not None else (),
            "ranked_by": _and_list(ctx.ranked_by),
            "unsubscribe_url": ctx.unsubscribe_url,
            "unsubscribe_mailto": mailto_url(ctx.unsubscribe_mailto),
            "preferences_url": ctx.preferences_url,
            "archive_url": ctx.archive_url,
            "postal_address": ctx.postal_address,
            "text_width": TEXT_WIDTH,
            "highlight_class": HIGHLIGHT_CLASS,
            "block_start": "",
            "block_end": "",
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
        html = self._splicer.html(variables, ctx.feedback) if self._splicer else None
        if html is None:
            html = self._exact_html(variables, ctx.feedback)
        text = self._text_splicer.text(variables) if self._text_splicer else None
        if text is None:
            text = self._run(self._text, variables)
        if ctx.feedback:
            text = put_feedback(text, ctx.feedback)
        return RenderedEmail(
            subject=variables["subject"],
            html=html,
            text=text,
            preheader=variables["preheader"],
        )

    def render_message(self, name: str, variables: Mapping[str, Any]) -> RenderedEmail:
        """Render ``NAME.html.j2`` (inlined by premailer) and ``NAME.txt.j2`` with
        ``variables`` (the packaged templates, or DIGEST_TEMPLATES_DIR's): a message that is
        not an edition, e.g. the welcome (``welcome``).

        Args:
            name: the templates' base name.
            variables: what they use; ``subject`` and ``preheader`` are required, and
                ``site_url``, ``text_width`` are given when missing.

        Raises:
            ConfigError: a template is missing or failed (naming its file and line).
        """
        values = {"site_url": self.site_url, "text_width": TEXT_WIDTH, **variables}
        html = self.inline_whole(self._run(self._load(f"{name}.html.j2"), values))
        text = self._run(self._load(f"{name}.txt.j2"), values)
        return RenderedEmail(
            subject=str(values["subject"]), html=html, text=text, preheader=str(values["preheader"])
        )

    def _exact_html(
        self, variables: Mapping[str, Any], feedback: Mapping[str, tuple[str, str]]
    ) -> str:
        """The HTML part the exact way: the template, premailer (with the block cache), then
        the feedback links in place of their placeholders."""
        html = self.inline(self._run(self._html, dict(variables)))
        return put_feedback(html, feedback, escape) if feedback else html

    @staticmethod
    def _run(template: jinja2.Template, variables: dict[str, Any]) -> str:
        try:
            return template.render(variables)
        except jinja2.TemplateError as e:
            where = template.filename or template.name or "?"
            line = _template_line(e, where)
            raise ConfigError(f"template {where}:{line}: {e}") from e


def _and_list(items: Sequence[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``; ``""`` for none."""
    if len(items) < 2:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _autoescape(name: str | None) -> bool:
    return name is not None and name.endswith((".html.j2", ".html", ".htm"))


def _template_line(error: BaseException, filename: str) -> int | str:
    """The template line where ``error`` was raised (Jinja maps its frames to it), or "?"."""
    line: int | str = getattr(error, "lineno", None) or "?"
    for frame, lineno in traceback.walk_tb(error.__traceback__):
        if frame.f_code.co_filename == filename:
            line = lineno
    return line
