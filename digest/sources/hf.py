"""The ``hf`` source: Hugging Face Daily Papers (``GET {hf_api_url}?date=YYYY-MM-DD``).

The API returns a JSON list with one object per paper listed that UTC day (an empty list on a
day without papers, e.g. weekends). This module is the only place that knows the API's field
names; :func:`parse_daily_papers` is also used by the ``file:`` source.

Field mapping (item = one element of the list, paper = ``item["paper"]``):

==================  ===========================================================================
Paper field         API field
==================  ===========================================================================
arxiv_id            ``paper.id`` (version suffix dropped)
title               ``paper.title`` (else ``item.title``), whitespace collapsed
abstract            ``paper.summary``, whitespace and newlines collapsed
authors             ``paper.authors[].name``, in order (hidden authors included)
daily_date          date of ``paper.submittedOnDailyAt`` (UTC), else the requested day
published_at        ``paper.publishedAt`` (UTC)
upvotes             ``paper.upvotes`` (0 when absent)
comments            ``item.numComments``
ai_summary          ``paper.ai_summary``
ai_keywords         ``paper.ai_keywords``
github_repo         ``paper.githubRepo``
github_stars        ``paper.githubStars``
project_page        ``paper.projectPage``
thumbnail           ``item.thumbnail``, else the older ``item.mediaUrl``
==================  ===========================================================================

Only ``paper.id`` and a title are required; every other field is optional (2024 captures have
no AI fields, no GitHub fields and no ``submittedOnDailyAt``). A value of the wrong JSON type
is treated as absent.

Validated item by item (:func:`digest.models.paper_problems`): links (``githubRepo``,
``projectPage``, ``thumbnail``) must be http(s) URLs, counts (``upvotes``, ``numComments``,
``githubStars``) whole numbers in ``0..MAX_COUNT``. A bad item (not an object, no id or title,
a ``javascript:`` link, ``upvotes: 10**400``...) is dropped with a warning naming its index,
id and field; the rest of the day is used. A response whose items are *all* bad is a
:class:`~digest.errors.SourceError` (e.g. a capture saved as Python ``repr()`` strings).
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, date, datetime
from typing import Any

import httpx

from digest.errors import SourceError
from digest.models import Paper, paper_problems
from digest.settings import DEFAULT_HF_API_URL
from digest.sources._http import HttpOptions, http_get
from digest.sources._text import collapse_ws, normalize_arxiv_id

log = logging.getLogger(__name__)

HF_SOURCE_NAME = "hf"
REPR_HINT = "the file looks like Python repr() output, re-export it as JSON"
API_FIELDS = {
    "arxiv_id": "paper.id",
    "title": "paper.title",
    "upvotes": "paper.upvotes",
    "comments": "numComments",
    "github_repo": "paper.githubRepo",
    "github_stars": "paper.githubStars",
    "project_page": "paper.projectPage",
    "thumbnail": "thumbnail",
}
"""Our field → the API field it came from, for warnings about a dropped item."""
_JSON_TYPE_NAMES = {
    dict: "an object",
    list: "a list",
    str: "a string",
    int: "a number",
    float: "a number",
    bool: "a boolean",
    type(None): "null",
}


class HfSource:
    """Hugging Face Daily Papers over HTTP.

    Args:
        api_url: the endpoint; ``?date=YYYY-MM-DD`` is added per request.
        client: a shared ``httpx.AsyncClient`` (not closed by the source); ``None`` opens a
            short-lived client per :meth:`fetch`.
        options: timeout (seconds) and retries; see :class:`~digest.sources._http.HttpOptions`.
        name: the source's name in errors, logs and the state file.
    """

    def __init__(
        self,
        api_url: str = DEFAULT_HF_API_URL,
        *,
        client: httpx.AsyncClient | None = None,
        options: HttpOptions | None = None,
        name: str = HF_SOURCE_NAME,
    ) -> None:
        self.name = name
        self.api_url = api_url
        self._client = client
        self._options = options or HttpOptions()

    def __repr__(self) -> str:
        return f"HfSource({self.api_url!r})"

    async def fetch(self, day: date) -> list[Paper]:
        """The papers listed on Daily Papers for the UTC day ``day``, in the API's order.

        Args:
            day: the Daily Papers date (UTC).

        Returns:
            The papers; an empty list for a day without papers.

        Raises:
            SourceError: network failure or 5xx after the retries, any 4xx, invalid JSON, or a
                malformed item (the message names the URL and the item index).
        """
        response = await http_get(
            self.api_url,
            source=self.name,
            options=self._options,
            client=self._client,
            params={"date": day.isoformat()},
        )
        origin = response.url
        data = load_json(response.content, source=self.name, origin=origin)
        papers = parse_daily_papers(data, source=self.name, origin=origin, day=day)
        log.debug("source %s: %d papers for %s", self.name, len(papers), day)
        return papers


def load_json(content: bytes, *, source: str, origin: str) -> Any:
    """Decode a JSON document.

    Args:
        content: the raw bytes (UTF-8, or UTF-16/32 with BOM).
        source: the source's name, for errors.
        origin: the URL or file path it came from, for errors.

    Returns:
        The decoded value.

    Raises:
        SourceError: empty or invalid JSON, naming ``origin`` and the line and column; JSON
            nested deeper than the interpreter's recursion limit (about 1,000 levels).
    """
    if not content.strip():
        raise SourceError(source, f"{origin}: empty response, expected a JSON list of papers")
    try:
        return json.loads(content)
    except json.JSONDecodeError as e:
        raise SourceError(
            source, f"{origin}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}"
        ) from e
    except UnicodeDecodeError as e:
        raise SourceError(source, f"{origin}: not UTF-8 text, expected JSON ({e.reason})") from e
    except RecursionError:  # "[[[[...": the decoder recurses once per level
        raise SourceError(
            source, f"{origin}: JSON nested too deeply to be a list of papers; refused"
        ) from None


def parse_daily_papers(data: Any, *, source: str, origin: str, day: date) -> list[Paper]:
    """Convert a Daily Papers API response (already JSON-decoded) into papers.

    Args:
        data: the decoded response: a list of items ``{"paper": {...}, "numComments": ...}``.
            Items that are the paper object itself (no ``"paper"`` key) are accepted too.
        source: the source's name, stored in :attr:`Paper.source` and used in errors.
        origin: the URL or file path, for errors.
        day: the requested UTC day, used as ``daily_date`` when an item has no
            ``paper.submittedOnDailyAt``.

    Returns:
        The usable papers in the response's order; an empty list for an empty response. Each
        bad item is dropped with a warning naming ``origin``, its index, id and field.

    Raises:
        SourceError: ``data`` is not a list, or it has items and none is usable. The message
            is one line naming ``origin``, the first bad item's index and its problem.
    """
    if not isinstance(data, list):
        hint = ""
        if isinstance(data, dict) and isinstance(data.get("error"), str):
            hint = f" (the server said: {collapse_ws(data['error'])})"
        raise SourceError(
            source, f"{origin}: expected a JSON list of papers, got {_type_name(data)}{hint}"
        )
    papers: list[Paper] = []
    dropped: list[str] = []
    for index, item in enumerate(data):
        try:
            papers.append(_convert(item, index, source=source, origin=origin, day=day))
        except _BadItem as e:
            dropped.append(str(e))
    if dropped and not papers:
        more = f"; none of the {len(data)} items is usable" if len(data) > 1 else ""
        raise SourceError(source, f"{origin}: {dropped[0]}{more}")
    for problem in dropped:
        log.warning(
            "source %s: %s: dropped %s; using the other %d", source, origin, problem, len(papers)
        )
    return papers


class _BadItem(Exception):
    """One item of a response cannot be used: ``str()`` is ``item N (id) problem``."""


def _type_name(value: object) -> str:
    return _JSON_TYPE_NAMES.get(type(value), type(value).__name__)


def _convert(item: Any, index: int, *, source: str, origin: str, day: date) -> Paper:
    def fail(problem: str) -> _BadItem:
        return _BadItem(f"item {index} {problem}")

    if not isinstance(item, dict):
        problem = f"is {_type_name(item)}, not an object"
        if isinstance(item, str) and item.lstrip().startswith(("{'", '{"')):
            problem += f": {REPR_HINT}"
        raise fail(problem)
    paper = item.get("paper", item)
    if not isinstance(paper, dict):
        raise fail(f"has a 'paper' that is {_type_name(paper)}, not an object")

    raw_id = _str(paper, "id")
    if raw_id is None:
        raise fail("has no paper id ('paper.id')")
    arxiv_id = normalize_arxiv_id(raw_id) or raw_id.strip()
    title = _str(paper, "title") or _str(item, "title")
    if title is None:
        raise fail(f"({arxiv_id}) has no title ('paper.title')")

    daily = _datetime(paper, "submittedOnDailyAt")
    converted = Paper(
        arxiv_id=arxiv_id,
        title=collapse_ws(title),
        abstract=collapse_ws(_str(paper, "summary") or ""),
        authors=_authors(paper.get("authors")),
        daily_date=daily.date() if daily else day,
        published_at=_datetime(paper, "publishedAt"),
        upvotes=_int(paper, "upvotes") or 0,
        comments=_int(item, "numComments"),
        ai_summary=_opt_text(paper, "ai_summary"),
        ai_keywords=_keywords(paper.get("ai_keywords")),
        github_repo=_str(paper, "githubRepo"),
        github_stars=_int(paper, "githubStars"),
        project_page=_str(paper, "projectPage"),
        thumbnail=_str(item, "thumbnail") or _str(item, "mediaUrl"),
        source=source,
    )
    problems = paper_problems(converted)
    if problems:
        raise fail(
            f"({arxiv_id}) "
            + "; ".join(f"'{API_FIELDS.get(name, name)}' {problem}" for name, problem in problems)
        )
    return converted


def _str(obj: dict[str, Any], key: str) -> str | None:
    """A non-blank string field, else ``None`` (absent, null, wrong type, blank)."""
    value = obj.get(key)
    return value.strip() if isinstance(value, str) and value.strip() else None


def _opt_text(obj: dict[str, Any], key: str) -> str | None:
    value = _str(obj, key)
    return collapse_ws(value) if value else None


def _int(obj: dict[str, Any], key: str) -> int | None:
    value = obj.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _datetime(obj: dict[str, Any], key: str) -> datetime | None:
    """An ISO 8601 timestamp (``2024-05-28T17:47:19.000Z``) as aware UTC, else ``None``."""
    value = _str(obj, key)
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        return parsed.astimezone(UTC)
    except (ValueError, OverflowError):  # OverflowError: 9999-12-31T23:00-14:00
        log.debug("ignoring unparseable %s %r", key, value)
        return None


def _authors(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        return ()
    names = (
        collapse_ws(a["name"])
        for a in value
        if isinstance(a, dict) and "name" in a and isinstance(a["name"], str)
    )
    return tuple(n for n in names if n)


def _keywords(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        return ()
    return tuple(collapse_ws(k) for k in value if isinstance(k, str) and k.strip())
