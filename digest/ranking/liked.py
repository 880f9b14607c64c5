"""Liked papers that no stored edition lists: fetched once by id, then kept in the state store.

A subscriber may like (``like:`` in the YAML) a paper older than anything ``digest`` stored.
Its text is needed once, to embed it: it is fetched from the arXiv API
(``DIGEST_ARXIV_API_URL``, e.g. ``https://export.arxiv.org/api/query``, ``id_list=`` query,
Atom reply) and stored with :meth:`~digest.state.StateStore.save_paper`, so it is never
fetched again. Without the setting, or when arXiv does not know the id, the like is skipped
with a warning: ranking goes on without it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from digest.errors import SourceError
from digest.models import Paper
from digest.settings import Settings
from digest.sources._http import HttpOptions, http_get
from digest.sources.feed import parse_feed

log = logging.getLogger(__name__)

ARXIV_ID_LIST_MAX = 100
"""Ids per arXiv API request (``id_list``); ``max_results`` is set to the same."""
SOURCE_NAME = "arxiv-api"


async def fetch_arxiv_papers(arxiv_ids: Sequence[str], settings: Settings) -> list[Paper]:
    """Fetch papers by bare arXiv id from the arXiv API (``settings.arxiv_api_url``).

    Args:
        arxiv_ids: bare ids (no version).
        settings: ``arxiv_api_url``, HTTP timeout (s) and retries.

    Returns:
        The papers arXiv returned (ids it does not know are simply missing); empty when the
        API is not configured.

    Raises:
        SourceError: the API cannot be reached or replies with an error or a broken feed.
    """
    url = settings.arxiv_api_url
    if not url or not arxiv_ids:
        return []
    options = HttpOptions.from_settings(settings)
    out: list[Paper] = []
    for i in range(0, len(arxiv_ids), ARXIV_ID_LIST_MAX):
        part = list(arxiv_ids[i : i + ARXIV_ID_LIST_MAX])
        response = await http_get(
            url,
            source=SOURCE_NAME,
            options=options,
            params={"id_list": ",".join(part), "max_results": str(len(part))},
        )
        papers = parse_feed(
            response.content,
            source=SOURCE_NAME,
            origin=url,
            types=None,
            content_type=response.headers.get("content-type"),
        )
        wanted = set(part)
        out.extend(p for p in papers if p.arxiv_id in wanted)
    return out


async def fetch_missing(arxiv_ids: Sequence[str], settings: Settings) -> list[Paper]:
    """:func:`fetch_arxiv_papers`, but a failure is a warning (ranking goes on without)."""
    try:
        return await fetch_arxiv_papers(arxiv_ids, settings)
    except SourceError as e:
        log.warning("could not fetch liked papers %s: %s", ", ".join(arxiv_ids), e)
        return []
