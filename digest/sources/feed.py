"""The ``feed:URL`` source: RSS 2.0, RSS 1.0 and Atom feeds, tuned for arXiv.

Spec syntax::

    feed:URL[#OPTION=VALUE[&OPTION=VALUE...]]

    feed:https://rss.arxiv.org/atom/cs.AI                    new submissions only (default)
    feed:https://rss.arxiv.org/rss/cs.LG#types=new+cross     new and cross-listed
    feed:https://rss.arxiv.org/rss/cs.CL#types=all           every announcement type
    feed:/var/lib/digest/cs.AI.xml                            a local file (or file:///...)

``URL`` is an ``http(s)://`` URL, a ``file://`` URL or a local path. A fragment is never sent
to a server, so the part after the last ``#`` holds our options when it looks like
``name=value`` pairs joined by ``&`` (otherwise it stays part of the URL/path). Options:

* ``types``: ``+``-separated arXiv announcement types to keep: ``new``, ``cross``,
  ``replace``, ``replace-cross``, or ``all``. Default ``new``. Entries that carry no
  announcement type (the export API, non-arXiv feeds) are always kept. (``+``, not ``,``:
  ``DIGEST_SOURCES`` is itself a comma-separated list; a comma is accepted only when the
  source is built directly from a spec string.)

Which day does a feed paper belong to? A feed has no per-date query, so ``fetch(day)``
downloads the feed and returns the entries whose date, converted to UTC, is ``day``. An
entry's date is its ``published`` (Atom) / ``pubDate`` (RSS 2.0) time, else its ``updated``
time, else the feed's own ``pubDate``/``updated``/``dc:date`` (RSS 1.0 has no item dates).
For the arXiv RSS service every entry carries the announcement time (midnight US Eastern,
which is 04:00/05:00 UTC of the same day), so ``day`` is the announcement day; for the
export API it is the first version's submission time. Entries without any date are skipped.

What is kept from an entry (``Paper.upvotes`` is always ``None``: feeds have no votes):

* ``arxiv_id``: from the entry id (``oai:arXiv.org:ID``, ``http://arxiv.org/abs/IDvN``), else
  an ``arxiv.org/abs|pdf`` link; version dropped; old-style ids (``hep-th/9901001``) work.
  Entries without an arXiv id are skipped.
* ``abstract``: the summary, HTML removed, whitespace collapsed, with the RSS service's
  ``arXiv:ID Announce Type: X Abstract:`` prefix stripped.
* ``announce_type``: ``arxiv:announce_type``, else from that prefix, else from the legacy RSS
  1.0 title suffix (``(arXiv:ID [cs.LG] UPDATED)`` → ``replace``, ``CROSS LISTED`` →
  ``cross``, none → ``new``), which is removed from the title.
* ``authors``: one name per ``<author>``; a single comma-joined ``dc:creator`` string is
  split on commas and ``and`` (``Jr.``-style suffixes stay with their name); TeX accents
  (``Andr\\'e``) become Unicode.
* ``pdf_url`` / ``abs_url``: from the entry's arxiv.org links, by ``type="application/pdf"``,
  ``title="pdf"`` or an ``/pdf/`` path for the PDF, an ``/abs/`` path for the abstract page
  (the export API's November 2025 layout has two bare links, so ``rel`` alone cannot tell
  them apart). ``http://`` arXiv links are upgraded to ``https://``.

Errors: a document that is not a feed, or a feed whose entries are all unusable, is a
:class:`~digest.errors.SourceError`. A feed with ``bozo`` set (not well-formed) but with usable
entries is used, with a warning. A well-formed feed with no entries (e.g. an export API query
without results, or the RSS service on a day without announcements) is an empty list.

HTTP: timeout, retries and backoff as for ``hf``, plus conditional GET: the body and its
``ETag``/``Last-Modified`` are kept in a :class:`FeedCache` (in memory by default; pass one
backed by the state file to persist it) and a ``304 Not Modified`` reuses the stored copy.
"""

from __future__ import annotations

import asyncio
import calendar
import logging
import re
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit
from urllib.request import url2pathname
from xml.sax import SAXParseException

import feedparser
import httpx

from digest.errors import ConfigError, SourceError
from digest.models import Paper, paper_problems
from digest.sources._http import HttpOptions, http_get
from digest.sources._text import (
    arxiv_id_in_url,
    collapse_ws,
    detex_accents,
    html_to_text,
    normalize_arxiv_id,
)

log = logging.getLogger(__name__)

FEED_PREFIX = "feed:"
ANNOUNCE_TYPES = frozenset({"new", "cross", "replace", "replace-cross"})
"""The announcement types of the arXiv RSS service."""
DEFAULT_ANNOUNCE_TYPES = frozenset({"new"})
ALL_TYPES = "all"
"""``types=all``: keep every announcement type (no filtering)."""

_OPTIONS_RE = re.compile(r"[a-z_]+=[^&#]*(?:&[a-z_]+=[^&#]*)*")
_ANNOUNCE_PREFIX_RE = re.compile(
    r"^\s*arXiv:\S+\s+Announce\s+Type:\s*(?P<type>[\w-]+)\s*(?:Abstract:\s*)?", re.IGNORECASE
)
_LEGACY_TITLE_RE = re.compile(r"\.?\s*\(arXiv:\S+\s+\[[^\]]*\](?P<flag>\s+[A-Z][A-Z ]*)?\)\s*$")
_LEGACY_FLAGS = {"": "new", "UPDATED": "replace", "CROSS LISTED": "cross"}
_AUTHOR_SPLIT_RE = re.compile(r"\s*[,;]\s*(?:and\s+)?|\s+and\s+|\s*&\s*")
_NAME_SUFFIX_RE = re.compile(r"(?:Jr|Sr|II|III|IV)\.?")
_PDF_TYPE = "application/pdf"
_ARXIV_HOSTS = frozenset({"arxiv.org", "www.arxiv.org", "export.arxiv.org"})


class FeedCache(Protocol):
    """Where a feed source keeps the last body of each URL with its HTTP validators.

    Implement it over the state file to survive restarts; :class:`MemoryFeedCache` is the
    default. Methods are synchronous and called from the event loop, so keep them quick.
    """

    def get(self, url: str) -> tuple[str | None, str | None, bytes] | None:
        """``(etag, last_modified, body)`` stored for ``url``, or ``None``."""
        ...

    def put(self, url: str, etag: str | None, last_modified: str | None, body: bytes) -> None:
        """Store ``body`` of ``url`` with its ``ETag`` and ``Last-Modified`` header values."""
        ...


class MemoryFeedCache:
    """A :class:`FeedCache` in a dict: lives as long as the process."""

    def __init__(self) -> None:
        self._entries: dict[str, tuple[str | None, str | None, bytes]] = {}

    def get(self, url: str) -> tuple[str | None, str | None, bytes] | None:
        """``(etag, last_modified, body)`` stored for ``url``, or ``None``."""
        return self._entries.get(url)

    def put(self, url: str, etag: str | None, last_modified: str | None, body: bytes) -> None:
        """Store ``body`` of ``url`` with its validators (replacing any previous copy)."""
        self._entries[url] = (etag, last_modified, body)


@dataclass(frozen=True, slots=True)
class FeedSpec:
    """A parsed ``feed:`` spec.

    Attributes:
        url: the feed's URL or local path, without our ``#options``.
        types: announcement types to keep, or ``None`` for all.
    """

    url: str
    types: frozenset[str] | None = DEFAULT_ANNOUNCE_TYPES


def parse_feed_spec(spec: str) -> FeedSpec:
    """Parse ``feed:URL[#types=...]`` (the ``feed:`` prefix is optional here).

    Args:
        spec: the source spec as configured.

    Returns:
        The URL and options.

    Raises:
        ConfigError: empty URL, unknown option, or unknown announcement type.
    """
    target = spec.removeprefix(FEED_PREFIX).strip()
    url, options = target, ""
    if "#" in target:
        base, fragment = target.rsplit("#", 1)
        if _OPTIONS_RE.fullmatch(fragment):
            url, options = base, fragment
    if not url:
        raise ConfigError(f"source {spec!r}: missing URL or path after 'feed:'")
    types: frozenset[str] | None = DEFAULT_ANNOUNCE_TYPES
    for pair in filter(None, options.split("&")):
        key, _, value = pair.partition("=")
        if key != "types":
            raise ConfigError(f"source {spec!r}: unknown option {key!r} (known: types)")
        wanted = {t.strip().lower() for t in re.split(r"[+,]", value) if t.strip()}
        if wanted == {ALL_TYPES}:
            types = None
            continue
        unknown = wanted - ANNOUNCE_TYPES
        if unknown or not wanted:
            known = ", ".join(sorted(ANNOUNCE_TYPES))
            what = (
                f"unknown announcement type {', '.join(sorted(unknown))!r}"
                if unknown
                else ("'types=' is empty")
            )
            raise ConfigError(f"source {spec!r}: {what}; use {known} or {ALL_TYPES}")
        types = frozenset(wanted)
    return FeedSpec(url=url, types=types)


@dataclass(frozen=True, slots=True)
class _Body:
    content: bytes
    content_type: str | None = None
    etag: str | None = None
    last_modified: str | None = None
    from_cache: bool = False


class FeedSource:
    """Papers from an RSS/Atom feed (arXiv's RSS service or export API, or any feed).

    Args:
        url: an ``http(s)://`` URL, a ``file://`` URL or a local path.
        types: arXiv announcement types to keep (default ``{"new"}``); ``None`` keeps all.
        client: a shared ``httpx.AsyncClient`` (not closed by the source); ``None`` opens a
            short-lived client per :meth:`fetch`.
        options: timeout (seconds) and retries.
        cache: where bodies and validators are kept for conditional GET; default in memory.
        name: the source's name; default ``feed:{url}``.
    """

    def __init__(
        self,
        url: str,
        *,
        types: frozenset[str] | None = DEFAULT_ANNOUNCE_TYPES,
        client: httpx.AsyncClient | None = None,
        options: HttpOptions | None = None,
        cache: FeedCache | None = None,
        name: str | None = None,
    ) -> None:
        self.url = url
        self.types = types
        self.name = name or f"{FEED_PREFIX}{url}"
        self.cache: FeedCache = cache if cache is not None else MemoryFeedCache()
        self._client = client
        self._options = options or HttpOptions()
        self._path = _local_path(url)

    @classmethod
    def from_spec(
        cls,
        spec: str,
        *,
        client: httpx.AsyncClient | None = None,
        options: HttpOptions | None = None,
        cache: FeedCache | None = None,
    ) -> FeedSource:
        """Build from ``feed:URL[#types=...]``; the source's name is ``spec``.

        Raises:
            ConfigError: see :func:`parse_feed_spec`.
        """
        parsed = parse_feed_spec(spec)
        return cls(
            parsed.url,
            types=parsed.types,
            client=client,
            options=options,
            cache=cache,
            name=spec if spec.startswith(FEED_PREFIX) else None,
        )

    def __repr__(self) -> str:
        return f"FeedSource({self.url!r}, types={sorted(self.types) if self.types else 'all'})"

    async def fetch(self, day: date) -> list[Paper]:
        """The feed's papers whose entry date (UTC) is ``day``; see the module docstring.

        Args:
            day: the UTC day.

        Returns:
            The papers in feed order, filtered by announcement type; may be empty.

        Raises:
            SourceError: network failure or 5xx after retries, 4xx, unreadable file, a document
                that is not a feed, or a feed without any usable entry.
        """
        body = await self._load()
        papers = parse_feed(
            body.content,
            source=self.name,
            origin=self.url,
            types=self.types,
            content_type=body.content_type,
        )
        if not body.from_cache and (body.etag or body.last_modified):
            self.cache.put(self.url, body.etag, body.last_modified, body.content)
        selected = [p for p in papers if p.daily_date == day]
        log.debug("source %s: %d of %d papers on %s", self.name, len(selected), len(papers), day)
        return selected

    async def _load(self) -> _Body:
        if self._path is not None:
            try:
                return _Body(await asyncio.to_thread(self._path.read_bytes))
            except OSError as e:
                raise SourceError(self.name, f"{self._path}: cannot read: {e.strerror or e}") from e
        cached = self.cache.get(self.url)
        headers: dict[str, str] = {}
        if cached is not None:
            etag, last_modified, _ = cached
            if etag:
                headers["If-None-Match"] = etag
            if last_modified:
                headers["If-Modified-Since"] = last_modified
        response = await http_get(
            self.url,
            source=self.name,
            options=self._options,
            client=self._client,
            headers=headers,
        )
        if response.status_code == 304:
            if cached is None:
                raise SourceError(self.name, f"GET {self.url}: HTTP 304 without a cached copy")
            log.debug("source %s: not modified, using the cached copy", self.name)
            return _Body(cached[2], from_cache=True)
        return _Body(
            response.content,
            content_type=response.headers.get("content-type"),
            etag=response.headers.get("etag"),
            last_modified=response.headers.get("last-modified"),
        )


def _local_path(url: str) -> Path | None:
    parts = urlsplit(url)
    if parts.scheme in {"http", "https"}:
        return None
    if parts.scheme == "file":
        return Path(url2pathname(parts.path))
    return Path(url).expanduser()


def parse_feed(
    content: bytes,
    *,
    source: str,
    origin: str,
    types: frozenset[str] | None = DEFAULT_ANNOUNCE_TYPES,
    content_type: str | None = None,
) -> list[Paper]:
    """Convert a feed document into papers (every day; :meth:`FeedSource.fetch` picks one).

    Args:
        content: the raw document (RSS 2.0, RSS 1.0 or Atom).
        source: the source's name, stored in :attr:`Paper.source` and used in errors.
        origin: URL or path, for errors and logs.
        types: announcement types to keep; ``None`` keeps all. Entries without a type are kept.
        content_type: the HTTP ``Content-Type``, if any (helps feedparser with the charset).

    Returns:
        Papers in feed order with ``daily_date`` set to the entry's UTC date; may be empty.

    Raises:
        SourceError: not a feed, or no entry is usable (no arXiv id, title or date).
    """
    headers = {"content-type": content_type} if content_type else None
    parsed = feedparser.parse(content, response_headers=headers)
    problem = _describe_bozo(parsed) if parsed.get("bozo") else ""
    entries: list[Any] = list(parsed.get("entries") or [])
    if not entries:
        if problem or not parsed.get("version"):
            raise SourceError(
                source, f"{origin}: not an RSS or Atom feed ({problem or 'no feed found'})"
            )
        log.debug("source %s: %s has no entries", source, origin)
        return []

    feed_dt = _feed_datetime(parsed.get("feed") or {})
    papers: list[Paper] = []
    skipped: Counter[str] = Counter()
    filtered = 0
    for entry in entries:
        paper, reason = _convert(entry, feed_dt, source)
        if paper is None:
            skipped[reason] += 1
        elif types is not None and paper.announce_type and paper.announce_type not in types:
            filtered += 1
        else:
            papers.append(paper)

    usable = len(papers) + filtered
    why = ", ".join(f"{n} {reason}" for reason, n in sorted(skipped.items()))
    if usable == 0:
        detail = f"; the document is not well-formed: {problem}" if problem else ""
        raise SourceError(
            source, f"{origin}: none of the {len(entries)} entries is usable ({why}){detail}"
        )
    if problem:
        log.warning(
            "source %s: %s is not well-formed (%s); using its %d readable entries",
            source,
            origin,
            problem,
            usable,
        )
    if skipped:
        log.warning(
            "source %s: %s: skipped %d entries (%s)", source, origin, sum(skipped.values()), why
        )
    if filtered:
        log.debug("source %s: %d entries of other announcement types left out", source, filtered)
    return papers


def _describe_bozo(parsed: Any) -> str:
    exc = parsed.get("bozo_exception")
    if isinstance(exc, SAXParseException):  # str() adds "<unknown>:LINE:COL", often off by one
        return collapse_ws(exc.getMessage())
    text = collapse_ws(str(exc)) if exc is not None else ""
    return text or (type(exc).__name__ if exc is not None else "malformed")


def _struct_to_utc(value: Any) -> datetime | None:
    if not isinstance(value, time.struct_time):
        return None
    return datetime.fromtimestamp(calendar.timegm(value), tz=UTC)


def _feed_datetime(feed: Mapping[str, Any]) -> datetime | None:
    for key in ("published_parsed", "updated_parsed"):
        dt = _struct_to_utc(feed.get(key))
        if dt is not None:
            return dt
    return None


def _convert(entry: Any, feed_dt: datetime | None, source: str) -> tuple[Paper | None, str]:
    """One entry → a paper, or ``(None, reason)`` when it is unusable."""
    links = [link for link in entry.get("links") or [] if isinstance(link, Mapping)]
    arxiv_id = _entry_arxiv_id(entry, links)
    if arxiv_id is None:
        return None, "without an arXiv id"

    title, legacy_type = _title(entry)
    if not title:
        return None, "without a title"

    dt = _struct_to_utc(entry.get("published_parsed")) or _struct_to_utc(
        entry.get("updated_parsed")
    )
    published = dt
    dt = dt or feed_dt
    if dt is None:
        return None, "without a date"

    abstract, prefix_type = _abstract(entry)
    announce = entry.get("arxiv_announce_type")
    announce_type = (
        (collapse_ws(announce).lower() if isinstance(announce, str) and announce.strip() else None)
        or prefix_type
        or legacy_type
    )
    abs_url, pdf_url = _links(links)
    paper = Paper(
        arxiv_id=arxiv_id,
        title=title,
        abstract=abstract,
        authors=_authors(entry),
        daily_date=dt.date(),
        published_at=published,
        upvotes=None,
        source=source,
        announce_type=announce_type,
        pdf_url=pdf_url,
        abs_url=abs_url,
    )
    problems = paper_problems(paper)
    if problems:
        name, problem = problems[0]
        log.warning("source %s: dropped entry %s: %s %s", source, arxiv_id, name, problem)
        return None, "with an unusable field"
    return paper, ""


def _entry_arxiv_id(entry: Any, links: list[Mapping[str, Any]]) -> str | None:
    raw_id = entry.get("id")
    if isinstance(raw_id, str):
        found = normalize_arxiv_id(raw_id)
        if found:
            return found
    hrefs = [entry.get("link")] + [link.get("href") for link in links]
    for href in hrefs:
        if isinstance(href, str):
            found = arxiv_id_in_url(href)
            if found:
                return found
    return None


def _text_of(entry: Any, key: str) -> str:
    value = entry.get(key)
    if not isinstance(value, str):
        return ""
    detail = entry.get(f"{key}_detail") or {}
    if "html" in str(detail.get("type", "")) and ("<" in value or "&" in value):
        return html_to_text(value)
    return collapse_ws(value)


def _title(entry: Any) -> tuple[str, str | None]:
    """The title without the legacy ``(arXiv:ID [cat] FLAG)`` suffix, and the type it implies."""
    title = _text_of(entry, "title")
    match = _LEGACY_TITLE_RE.search(title)
    if not match:
        return title, None
    flag = collapse_ws(match.group("flag") or "")
    return title[: match.start()].strip(), _LEGACY_FLAGS.get(flag)


def _abstract(entry: Any) -> tuple[str, str | None]:
    """The abstract without the ``arXiv:ID Announce Type: X Abstract:`` prefix, and X."""
    text = _text_of(entry, "summary")
    if not text:
        content = entry.get("content") or []
        if content and isinstance(content[0], Mapping):
            text = _text_of(content[0], "value")
    match = _ANNOUNCE_PREFIX_RE.match(text)
    if not match:
        return text, None
    return text[match.end() :].strip(), match.group("type").lower()


def split_authors(names: str) -> list[str]:
    """Split one comma-joined author string into names.

    ``"A. Smith, B. Jones and C. Wu"`` → ``["A. Smith", "B. Jones", "C. Wu"]``. Commas,
    semicolons, ``&`` and the word ``and`` separate names (``Anderson`` does not); a ``Jr.``,
    ``Sr.``, ``II``, ``III`` or ``IV`` after a comma stays with the preceding name.

    Args:
        names: the joined names, plain text.

    Returns:
        The names in order, whitespace collapsed, empty parts dropped.
    """
    out: list[str] = []
    for part in _AUTHOR_SPLIT_RE.split(collapse_ws(names)):
        part = part.strip()
        if not part:
            continue
        if out and _NAME_SUFFIX_RE.fullmatch(part):
            out[-1] = f"{out[-1]}, {part}"
        else:
            out.append(part)
    return out


def _authors(entry: Any) -> tuple[str, ...]:
    raw: list[str] = []
    for author in entry.get("authors") or []:
        name = author.get("name") if isinstance(author, Mapping) else None
        if isinstance(name, str) and name.strip():
            raw.append(name)
    if not raw and isinstance(entry.get("author"), str):
        raw.append(entry["author"])
    names = [detex_accents(html_to_text(n) if "<" in n else collapse_ws(n)) for n in raw]
    if len(names) == 1:
        names = split_authors(names[0])
    return tuple(n for n in names if n)


def _links(links: list[Mapping[str, Any]]) -> tuple[str | None, str | None]:
    """``(abs_url, pdf_url)`` from the entry's arxiv.org links."""
    abs_url: str | None = None
    pdf_url: str | None = None
    for link in links:
        href = link.get("href")
        if not isinstance(href, str) or not href.strip():
            continue
        parts = urlsplit(href.strip())
        if parts.hostname not in _ARXIV_HOSTS:
            continue
        href = parts._replace(scheme="https").geturl()
        is_pdf = (
            link.get("type") == _PDF_TYPE
            or str(link.get("title", "")).lower() == "pdf"
            or parts.path.startswith("/pdf/")
        )
        if is_pdf:
            pdf_url = pdf_url or href
        elif parts.path.startswith("/abs/"):
            abs_url = abs_url or href
    return abs_url, pdf_url
