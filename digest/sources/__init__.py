"""Paper sources: one small interface, ``fetch(day) -> list[Paper]``, chosen by spec string.

Specs: ``hf`` (Hugging Face Daily Papers API), ``file:PATH`` (a JSON file in the API's shape or a
directory of ``YYYY-MM-DD.json`` files), ``feed:URL`` (RSS/Atom, e.g. arXiv; also a local path;
options after ``#``, e.g. ``feed:https://rss.arxiv.org/rss/cs.LG#types=new+cross``).

Modules: :mod:`~digest.sources.hf`, :mod:`~digest.sources.file`, :mod:`~digest.sources.feed`,
:mod:`~digest.sources.merge` (:func:`merge_papers`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import date
from pathlib import Path
from typing import Protocol, runtime_checkable

import httpx

from digest.errors import ConfigError
from digest.models import Paper
from digest.settings import Settings
from digest.sources._http import HttpOptions
from digest.sources.feed import FEED_PREFIX, FeedCache, FeedSource
from digest.sources.file import FILE_PREFIX, FileSource
from digest.sources.hf import HF_SOURCE_NAME, HfSource
from digest.sources.merge import merge_papers

log = logging.getLogger(__name__)


@runtime_checkable
class Source(Protocol):
    """A paper source.

    Attributes:
        name: the spec it was built from (``hf``, ``file:PATH``, ``feed:URL``); used in errors,
            logs and as the key under which its papers are stored in the state file.
    """

    name: str

    async def fetch(self, day: date) -> list[Paper]:
        """The papers listed for the UTC day ``day``; an empty list for a day with none.

        Raises:
            SourceError: network failure after retries, bad HTTP status, malformed data.
        """
        ...


def build_source(
    spec: str,
    settings: Settings,
    *,
    client: httpx.AsyncClient | None = None,
    feed_cache: FeedCache | None = None,
) -> Source:
    """Build one source from its spec.

    Args:
        spec: ``hf``, ``file:PATH`` or ``feed:URL[#types=...]`` (surrounding spaces ignored).
            The source's ``name`` is the stripped spec.
        settings: read for ``hf_api_url``, ``http_timeout`` (seconds) and ``http_retries``.
        client: a shared ``httpx.AsyncClient`` for HTTP sources (the caller closes it);
            ``None``: each fetch opens its own.
        feed_cache: where a ``feed:`` source keeps bodies and ETag/Last-Modified for
            conditional GET (e.g. backed by the state file); ``None``: in memory.

    Returns:
        The source. Nothing is fetched or opened yet.

    Raises:
        ConfigError: an unknown spec, an empty path/URL, or a bad ``feed:`` option.
    """
    spec = spec.strip()
    options = HttpOptions.from_settings(settings)
    if spec == HF_SOURCE_NAME:
        return HfSource(settings.hf_api_url, client=client, options=options, name=spec)
    if spec.startswith(FILE_PREFIX):
        path = spec.removeprefix(FILE_PREFIX).strip()
        if not path:
            raise ConfigError(f"source {spec!r}: missing path after 'file:'")
        return FileSource(Path(path).expanduser(), name=spec)
    if spec.startswith(FEED_PREFIX):
        return FeedSource.from_spec(spec, client=client, options=options, cache=feed_cache)
    raise ConfigError(f"unknown source {spec!r}: use 'hf', 'file:PATH' or 'feed:URL'")


def build_sources(
    specs: Iterable[str],
    settings: Settings,
    *,
    client: httpx.AsyncClient | None = None,
    feed_cache: FeedCache | None = None,
) -> list[Source]:
    """Build every configured source, e.g. from ``settings.source_specs``.

    Args:
        specs: source specs; a spec given twice is built once.
        settings: see :func:`build_source`.
        client: a shared ``httpx.AsyncClient`` for every HTTP source, or ``None``.
        feed_cache: shared by every ``feed:`` source (entries are keyed by URL), or ``None``
            for one in-memory cache per source.

    Returns:
        The sources in spec order.

    Raises:
        ConfigError: no spec at all, or listing every bad spec at once.
    """
    sources: list[Source] = []
    seen: set[str] = set()
    problems: list[str] = []
    for spec in specs:
        if spec.strip() in seen:
            continue
        seen.add(spec.strip())
        try:
            sources.append(build_source(spec, settings, client=client, feed_cache=feed_cache))
        except ConfigError as e:
            problems.extend(e.problems)
    if problems:
        message = problems[0] if len(problems) == 1 else "; ".join(problems)
        raise ConfigError(message, problems)
    if not sources:
        raise ConfigError("no paper source configured (e.g. 'hf' or 'file:PATH')")
    return sources


__all__ = [
    "FeedCache",
    "FeedSource",
    "FileSource",
    "HfSource",
    "HttpOptions",
    "Source",
    "build_source",
    "build_sources",
    "merge_papers",
]
