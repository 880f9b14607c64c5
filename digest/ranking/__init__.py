"""Ranking: which of an edition's papers a subscriber gets, in which order.

Modules:
    keywords: keyword matching, selection and the hybrid score (README "Ranking").
    semantic: interests, liked/disliked papers, authors, send history: :class:`RankContext`.
    embeddings: the local embedding model and the persistent vector cache.
    liked: fetching a liked paper no stored edition lists (arXiv API).
"""

from __future__ import annotations

from digest.ranking.keywords import (
    BODY_WEIGHT,
    EDITION_CACHE_SIZE,
    FIELD_SEPARATOR,
    MATCHER_CACHE_SIZE,
    TITLE_WEIGHT,
    highlight_spans,
    highlight_terms,
    keyword_pattern,
    matched_word,
    matches,
    rank,
)
from digest.ranking.semantic import RankContext, build_context

__all__ = [
    "BODY_WEIGHT",
    "EDITION_CACHE_SIZE",
    "FIELD_SEPARATOR",
    "MATCHER_CACHE_SIZE",
    "TITLE_WEIGHT",
    "RankContext",
    "build_context",
    "highlight_spans",
    "highlight_terms",
    "keyword_pattern",
    "matched_word",
    "matches",
    "rank",
]
