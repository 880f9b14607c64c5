"""Ranking: which of an edition's papers a subscriber gets, in which order.

Modules:
    keywords: keyword matching, selection and the score (see its docstring for the rules).
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

__all__ = [
    "BODY_WEIGHT",
    "EDITION_CACHE_SIZE",
    "FIELD_SEPARATOR",
    "MATCHER_CACHE_SIZE",
    "TITLE_WEIGHT",
    "highlight_spans",
    "highlight_terms",
    "keyword_pattern",
    "matched_word",
    "matches",
    "rank",
]
