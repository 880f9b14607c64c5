"""Domain types shared by every stage: papers, ranked papers, editions.

All datetimes are timezone-aware UTC unless a field says otherwise. Dates (``datetime.date``)
are UTC calendar days: the Daily Papers date of Hugging Face is a UTC day.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

HF_PAPER_URL = "https://huggingface.co/papers/{id}"
ARXIV_ABS_URL = "https://arxiv.org/abs/{id}"
ARXIV_PDF_URL = "https://arxiv.org/pdf/{id}"
MAX_COUNT = 10**9
"""Largest upvote, comment or star count accepted (real ones are below 10^6)."""
MAX_URL_CHARS = 2048
"""Longest link accepted, characters."""
LINK_FIELDS = ("github_repo", "project_page", "thumbnail", "pdf_url", "abs_url")
"""The :class:`Paper` fields that end up in an ``href`` or ``src``: http(s) URLs only."""
COUNT_FIELDS = ("upvotes", "comments", "github_stars")
"""The :class:`Paper` counts: ``None`` or ``0..MAX_COUNT``."""
_URL_FORBIDDEN = re.compile(r"[\x00-\x20\x7f]")
"""Spaces and control characters: browsers drop or split on them (``java\tscript:``)."""


@dataclass(frozen=True, slots=True)
class Paper:
    """One paper as every stage after the sources sees it.

    Sources convert their API's fields into this type; nothing past a source knows the
    API's field names.

    Attributes:
        arxiv_id: bare arXiv identifier without version, e.g. ``"2405.18407"``.
        title: title with whitespace collapsed to single spaces.
        abstract: the abstract (plain text, whitespace collapsed); may be empty.
        authors: author names in paper order.
        daily_date: the UTC day the paper was listed on (HF Daily Papers date, or the
            feed's announcement day); ``None`` if unknown.
        published_at: when the paper was published on arXiv (UTC), if known.
        upvotes: Hugging Face upvotes; ``None`` when the source has no such notion (feeds).
        comments: number of comments on the HF discussion; ``None`` if unknown.
        ai_summary: HF's one-sentence AI summary (``paper.ai_summary``), if any.
        ai_keywords: HF's AI keywords (``paper.ai_keywords``); empty if none.
        github_repo: code repository URL (``paper.githubRepo``), if any.
        github_stars: stars of ``github_repo`` (``paper.githubStars``), if known.
        project_page: project page URL (``paper.projectPage``), if any.
        thumbnail: thumbnail image URL, if any.
        source: name of the source that produced it (``hf``, ``file:...``, ``feed:...``);
            after merging, the comma-joined names of all sources that listed it.
        announce_type: arXiv announcement type (``new``, ``cross``, ``replace``...) for feed
            papers, ``None`` otherwise.
        pdf_url: explicit PDF link from the source; ``None`` means derive from the id.
        abs_url: explicit abstract page link from the source; ``None`` means derive.
    """

    arxiv_id: str
    title: str
    abstract: str = ""
    authors: tuple[str, ...] = ()
    daily_date: date | None = None
    published_at: datetime | None = None
    upvotes: int | None = None
    comments: int | None = None
    ai_summary: str | None = None
    ai_keywords: tuple[str, ...] = ()
    github_repo: str | None = None
    github_stars: int | None = None
    project_page: str | None = None
    thumbnail: str | None = None
    source: str = ""
    announce_type: str | None = None
    pdf_url: str | None = None
    abs_url: str | None = None

    @property
    def hf_url(self) -> str:
        """The paper's Hugging Face page, ``https://huggingface.co/papers/{id}``."""
        return HF_PAPER_URL.format(id=self.arxiv_id)

    @property
    def arxiv_abs_url(self) -> str:
        """The arXiv abstract page (explicit link from the source, else derived from the id)."""
        return self.abs_url or ARXIV_ABS_URL.format(id=self.arxiv_id)

    @property
    def arxiv_pdf_url(self) -> str:
        """The arXiv PDF (explicit link from the source, else derived from the id)."""
        return self.pdf_url or ARXIV_PDF_URL.format(id=self.arxiv_id)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serializable dict (dates as ISO 8601 strings), for the state file."""
        out = dataclasses.asdict(self)
        out["authors"] = list(self.authors)
        out["ai_keywords"] = list(self.ai_keywords)
        out["daily_date"] = self.daily_date.isoformat() if self.daily_date else None
        out["published_at"] = self.published_at.isoformat() if self.published_at else None
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Paper:
        """Inverse of :meth:`to_dict`; unknown keys are ignored (forward compatibility)."""
        names = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in data.items() if k in names}
        kw["authors"] = tuple(kw.get("authors") or ())
        kw["ai_keywords"] = tuple(kw.get("ai_keywords") or ())
        if kw.get("daily_date"):
            kw["daily_date"] = date.fromisoformat(kw["daily_date"])
        if kw.get("published_at"):
            kw["published_at"] = datetime.fromisoformat(kw["published_at"])
        return cls(**kw)


def is_http_url(value: str) -> bool:
    """True for an absolute ``http://`` or ``https://`` URL with a host.

    Refused: any other scheme (``javascript:``, ``data:``, ``file:``...), relative URLs, URLs
    with spaces or control characters anywhere (browsers strip them, so ``java\tscript:``
    would run), an invalid port, more than :data:`MAX_URL_CHARS` characters.
    """
    if len(value) > MAX_URL_CHARS or _URL_FORBIDDEN.search(value):
        return False
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 (raises ValueError for a bad port)
    except ValueError:
        return False
    return parts.scheme.lower() in ("http", "https") and bool(parts.hostname)


def paper_problems(paper: Paper) -> list[tuple[str, str]]:
    """What makes ``paper`` unusable, as ``(field, problem)`` pairs; empty when it is fine.

    Checked: an id and a title; every :data:`LINK_FIELDS` value is an http(s) URL
    (:func:`is_http_url`); every :data:`COUNT_FIELDS` value is an ``int`` in ``0..MAX_COUNT``.
    Sources drop a paper with problems (with a warning naming it); so does the state file when
    it loads papers stored by an older version.
    """
    out: list[tuple[str, str]] = []
    if not isinstance(paper.arxiv_id, str) or not paper.arxiv_id.strip():
        out.append(("arxiv_id", "is empty"))
    if not isinstance(paper.title, str) or not paper.title.strip():
        out.append(("title", "is empty"))
    for name in LINK_FIELDS:
        value = getattr(paper, name)
        if value is not None and not (isinstance(value, str) and is_http_url(value)):
            out.append((name, f"is not an http(s) URL ({_excerpt(value)})"))
    for name in COUNT_FIELDS:
        value = getattr(paper, name)
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool):
            out.append((name, f"is not a whole number ({_excerpt(value)})"))
        elif not 0 <= value <= MAX_COUNT:
            out.append((name, f"is out of range 0..{MAX_COUNT:,} ({_excerpt(value)})"))
    return out


def _excerpt(value: object, limit: int = 60) -> str:
    """A short, printable ``repr`` (a hostile value must not flood a log line)."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 10**18:
        return f"a number of {len(str(abs(value)))} digits"
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def papers_from_stored(items: Iterable[Any], *, origin: str) -> list[Paper]:
    """Stored paper dicts (:meth:`Paper.to_dict`) back to papers, validated again.

    A stored item that no longer converts or fails :func:`paper_problems` (stored by a
    version that checked less) is dropped with a warning naming it; the rest are returned.

    Args:
        items: the decoded JSON list.
        origin: where they come from, for the warning (e.g. the state file, day and source).
    """
    out: list[Paper] = []
    for index, item in enumerate(items):
        try:
            if not isinstance(item, dict):
                raise TypeError(f"is {type(item).__name__}, not an object")
            paper = Paper.from_dict(item)
        except (ValueError, TypeError, KeyError) as e:
            log.warning("%s: dropped stored item %d: %s", origin, index, e)
            continue
        problems = paper_problems(paper)
        if problems:
            log.warning(
                "%s: dropped stored paper %s: %s",
                origin,
                _excerpt(paper.arxiv_id),
                "; ".join(f"{name} {problem}" for name, problem in problems),
            )
            continue
        out.append(paper)
    return out


@dataclass(frozen=True, slots=True)
class RankedPaper:
    """A paper selected for one subscriber, with why it was selected.

    Attributes:
        paper: the paper.
        score: the ranking score (higher first); see README "Ranking" for the formula.
        matched: the subscriber's keywords (as written in their YAML) that matched, in the
            order the subscriber listed them; empty when none matched.
        matched_in_title: the subset of ``matched`` found in the title.
        matched_words: the words that matched, lower-cased, as they occur in the paper
            (``"agents"`` for the keyword ``agent*``), title first, without repeats.
        why: one short line saying why the paper was picked ("matches your interest '…'",
            "like 2406.09246 you liked", "by Chelsea Finn", "keyword: agents", "trending");
            empty when not ranked by :func:`~digest.ranking.rank`.
        filler: ``True`` when the paper was picked for its popularity alone (no keyword,
            interest, liked paper or author): the email lists fillers under their own heading.
    """

    paper: Paper
    score: float
    matched: tuple[str, ...] = ()
    matched_in_title: tuple[str, ...] = ()
    matched_words: tuple[str, ...] = ()
    why: str = ""
    filler: bool = False


@dataclass(frozen=True, slots=True)
class Feedback:
    """What one subscriber taught us from the email (👍/👎), from the state store.

    Attributes:
        likes: bare arXiv ids the subscriber gave 👍, oldest first.
        dislikes: bare arXiv ids given 👎, oldest first.
    """

    likes: tuple[str, ...] = ()
    dislikes: tuple[str, ...] = ()


TEST_EDITION_PREFIX = "test:"
"""Edition keys of test sends (``digest send --to``) start with this; never a real edition."""


def is_test_edition(key: str) -> bool:
    """Whether a state row's edition key is a test send's (``test:2026-08-20[:EMAIL]``)."""
    return key.startswith(TEST_EDITION_PREFIX)


@dataclass(frozen=True, slots=True)
class Edition:
    """Which papers an edition covers.

    Attributes:
        key: the edition key stored in the state file: ``YYYY-MM-DD`` for a daily edition
            (the Daily Papers UTC date), ``YYYY-Www`` (ISO week) for a weekly one.
        days: the UTC dates whose papers the edition carries, oldest first.
        frequency: ``"daily"`` or ``"weekly"``.
    """

    key: str
    days: tuple[date, ...]
    frequency: str = "daily"

    @classmethod
    def daily(cls, day: date) -> Edition:
        """The daily edition for the Daily Papers date ``day``."""
        return cls(key=day.isoformat(), days=(day,), frequency="daily")

    @classmethod
    def weekly(cls, iso_year: int, iso_week: int) -> Edition:
        """The weekly edition for ISO week ``iso_week`` of ``iso_year`` (Monday..Sunday)."""
        days = tuple(date.fromisocalendar(iso_year, iso_week, d) for d in range(1, 8))
        return cls(key=f"{iso_year}-W{iso_week:02d}", days=days, frequency="weekly")

    @classmethod
    def parse(cls, key: str) -> Edition | None:
        """The edition of a stored key, ``2026-08-20`` or ``2026-W34``; ``None`` for any other
        text (a test send's ``test:…``, a welcome's ``welcome:…``, a malformed key)."""
        m = _EDITION_KEY_RE.match(key)
        if not m:
            return None
        try:
            if m.group(4):
                return cls.weekly(int(m.group(4)), int(m.group(5)))
            return cls.daily(date.fromisoformat(key))
        except ValueError:
            return None


_EDITION_KEY_RE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})$|^(\d{4})-W(\d{2})$")


@dataclass(slots=True)
class RunSummary:
    """Counts of one ``send`` run (or one daemon tick).

    Attributes:
        sent: messages accepted by the transport.
        skipped: subscribers skipped (already had the edition, inactive, nothing to send).
        failed: permanent failures recorded this run.
        bounced: of ``failed``, hard bounces (5xx for the recipient) whose address is now on
            the suppression list: handled, so they do not make the run a failure.
        deferred: transient failures that stay owed for the next run.
        unknown: messages whose outcome is unknown (the relay's reply to the end of data was
            lost or stalled, or ``sending`` rows found after a crash): not resent automatically.
        paused: subscribers held back because their domain group is paused (complaint rate,
            :mod:`digest.reputation`): they stay owed until ``digest resume``.
        errors: one line per failure, ``email: reason``.
        breaker: the circuit breaker's report line when it stopped the run (the relay stopped
            answering: see ``DIGEST_SMTP_BREAKER_AFTER``), else ``None``.
    """

    sent: int = 0
    skipped: int = 0
    failed: int = 0
    bounced: int = 0
    deferred: int = 0
    unknown: int = 0
    paused: int = 0
    errors: list[str] = field(default_factory=list)
    breaker: str | None = None

    @property
    def ok(self) -> bool:
        """True when nothing failed (bar suppressed hard bounces), was deferred or ended
        ``unknown`` (the relay may or may not have the message: someone must look)."""
        return self.failed - self.bounced == 0 and self.deferred == 0 and self.unknown == 0
