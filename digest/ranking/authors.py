"""A reader's own papers, fetched by author: arXiv author query, ORCID works, Semantic Scholar.

Each fetch goes through the bounded HTTP client (:func:`digest.sources._http.http_get`:
timeout per operation, a deadline for the whole fetch, a size cap) and returns
:class:`~digest.ranking.library.LibraryEntry` items; the reader cache keeps them a week
(:data:`~digest.ranking.readercache.AUTHOR_REFRESH`). The endpoints are settings, so tests
point them at a local server:

* ``arxiv_author: "Chelsea Finn"`` → ``GET {DIGEST_ARXIV_API_URL}?search_query=au:"Chelsea
  Finn"&sortBy=submittedDate&sortOrder=descending&max_results=N`` (Atom, arXiv API);
* ``orcid: 0000-0002-1825-0097`` → ``GET {DIGEST_ORCID_API_URL}/0000-0002-1825-0097/works``
  (ORCID public API v3.0, JSON: ``group[].work-summary[]`` with ``title.title.value``,
  ``publication-date.year.value``, ``external-ids.external-id[]``); ORCID lists no
  abstracts, so these entries are title-only;
* ``semantic_scholar: 1741101`` → ``GET {DIGEST_SEMANTIC_SCHOLAR_API_URL}/author/1741101/papers
  ?fields=title,abstract,year,externalIds&limit=N`` (Graph API v1: ``data[]`` with ``title``,
  ``abstract``, ``year``, ``externalIds.ArXiv``).

Every failure is a :class:`~digest.errors.SourceError` naming the author and the problem.
"""

from __future__ import annotations

import json
from typing import Any, Literal
from urllib.parse import quote

from digest.errors import SourceError
from digest.ranking.library import MAX_LIBRARY_ENTRIES, LibraryEntry, dedupe, make_entry
from digest.settings import Settings
from digest.subscribers import normalize_arxiv_id

AUTHOR_MAX_PAPERS = 200
"""Most papers taken from one author fetch (the most recent first where the API sorts)."""
AuthorKind = Literal["arxiv_author", "orcid", "semantic_scholar"]
AUTHOR_KINDS: tuple[AuthorKind, ...] = ("arxiv_author", "orcid", "semantic_scholar")
"""The subscriber options that name an author to fetch (each one a library source)."""


def author_setting(kind: AuthorKind, settings: Settings) -> str | None:
    """The endpoint setting a kind of author fetch uses (``None``: not configured)."""
    if kind == "arxiv_author":
        return settings.arxiv_api_url
    if kind == "orcid":
        return settings.orcid_api_url
    return settings.semantic_scholar_api_url


SETTING_NAMES: dict[AuthorKind, str] = {
    "arxiv_author": "DIGEST_ARXIV_API_URL",
    "orcid": "DIGEST_ORCID_API_URL",
    "semantic_scholar": "DIGEST_SEMANTIC_SCHOLAR_API_URL",
}
"""The environment variable each kind needs."""


async def fetch_author(kind: AuthorKind, ident: str, settings: Settings) -> list[LibraryEntry]:
    """Fetch an author's papers.

    Args:
        kind: ``arxiv_author`` (a name), ``orcid`` (an iD) or ``semantic_scholar`` (an id).
        ident: the name or id as the subscriber gave it (validated by the subscriber model).
        settings: the endpoint (see :func:`author_setting`) and the HTTP bounds.

    Returns:
        At most :data:`AUTHOR_MAX_PAPERS` entries, deduplicated.

    Raises:
        SourceError: the endpoint is not configured, cannot be reached, refuses (a 404 for an
            unknown iD), answers too slowly or too much, or answers in an unexpected shape.
    """
    # The HTTP stack (httpx, feedparser) only when fetching: the process that builds a send's
    # ranking context from cached author lists does not load it.
    from digest.sources._http import HttpOptions, http_get
    from digest.sources.feed import parse_feed

    base = author_setting(kind, settings)
    source = f"{kind}:{ident}"
    if not base:
        raise SourceError(source, f"{SETTING_NAMES[kind]} is not set; cannot fetch {kind}")
    options = HttpOptions.from_settings(settings)
    if kind == "arxiv_author":
        reply = await http_get(
            base,
            source=source,
            options=options,
            params={
                "search_query": f'au:"{ident}"',
                "sortBy": "submittedDate",
                "sortOrder": "descending",
                "max_results": str(AUTHOR_MAX_PAPERS),
            },
        )
        papers = parse_feed(
            reply.content,
            source=source,
            origin=base,
            types=None,
            content_type=reply.headers.get("content-type"),
        )
        entries = [
            make_entry(
                p.title,
                p.abstract,
                p.published_at.year if p.published_at else None,
                None,
                p.arxiv_id,
            )
            for p in papers
        ]
    elif kind == "orcid":
        url = f"{base.rstrip('/')}/{quote(ident, safe='')}/works"
        reply = await http_get(
            url, source=source, options=options, headers={"Accept": "application/json"}
        )
        entries = _orcid_works(_json(reply.content, source))
    else:
        url = f"{base.rstrip('/')}/author/{quote(ident, safe='')}/papers"
        reply = await http_get(
            url,
            source=source,
            options=options,
            params={"fields": "title,abstract,year,externalIds", "limit": str(AUTHOR_MAX_PAPERS)},
        )
        entries = _s2_papers(_json(reply.content, source), source)
    return dedupe(entries)[: min(AUTHOR_MAX_PAPERS, MAX_LIBRARY_ENTRIES)]


def _json(content: bytes, source: str) -> Any:
    try:
        return json.loads(content)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SourceError(source, f"the reply is not JSON ({e})") from None


def _value(node: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(node, dict):
            return None
        node = node.get(key)
    return node


def _orcid_works(data: Any) -> list[LibraryEntry]:
    """ORCID v3.0 ``/works``: one entry per group (the group's first summary)."""
    groups = data.get("group") if isinstance(data, dict) else None
    if not isinstance(groups, list):
        raise SourceError("orcid", "the reply has no 'group' list (ORCID API v3.0 /works)")
    out = []
    for group in groups:
        summaries = group.get("work-summary") if isinstance(group, dict) else None
        if not isinstance(summaries, list) or not summaries:
            continue
        work = summaries[0]
        title = _value(work, "title", "title", "value")
        if not isinstance(title, str) or not title.strip():
            continue
        year_text = _value(work, "publication-date", "year", "value")
        year = int(year_text) if isinstance(year_text, str) and year_text.isdigit() else None
        arxiv = None
        ids = _value(work, "external-ids", "external-id")
        for ext in ids if isinstance(ids, list) else []:
            if not isinstance(ext, dict):
                continue
            kind = str(ext.get("external-id-type", "")).lower()
            value = str(ext.get("external-id-value", ""))
            if kind == "arxiv" or (kind == "doi" and "arxiv" in value.lower()):
                arxiv = normalize_arxiv_id(value.rsplit("arXiv.", 1)[-1]) or arxiv
        out.append(make_entry(title, "", year, None, arxiv))
        if len(out) >= AUTHOR_MAX_PAPERS:
            break
    return out


def _s2_papers(data: Any, source: str) -> list[LibraryEntry]:
    """Semantic Scholar ``/author/{id}/papers``: ``data[]`` of papers."""
    items = data.get("data") if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise SourceError(source, "the reply has no 'data' list (Semantic Scholar Graph API)")
    out = []
    for item in items:
        if not isinstance(item, dict):
            continue
        title = item.get("title")
        if not isinstance(title, str) or not title.strip():
            continue
        abstract = item.get("abstract")
        year = item.get("year")
        ext = item.get("externalIds")
        arxiv = ext.get("ArXiv") if isinstance(ext, dict) else None
        out.append(
            make_entry(
                title,
                abstract if isinstance(abstract, str) else "",
                year if isinstance(year, int) and not isinstance(year, bool) else None,
                None,
                normalize_arxiv_id(arxiv) if isinstance(arxiv, str) else None,
            )
        )
    return out
