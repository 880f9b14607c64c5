"""Semantic signals: similarity to interests and liked/disliked papers, authors, history.

What one send needs beyond the papers and the subscriber is gathered once, in the sending
process, into a :class:`RankContext` (picklable, handed to render workers once): the vectors of
the edition's papers and of every interest statement and liked/disliked paper (from the
:class:`~digest.ranking.embeddings.VectorCache`), which papers each subscriber already got, and
what each learned from 👍/👎 feedback. Ranking itself then only multiplies small matrices.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from digest.models import Feedback, Paper
from digest.subscribers import Subscriber, normalize_arxiv_id

if TYPE_CHECKING:  # numpy is imported where vectors are used (see digest.ranking.embeddings)
    import numpy as np
    import numpy.typing as npt

    from digest.ranking.embeddings import Embedder, VectorCache, Vectors
    from digest.ranking.reader import Learned

INTEREST_PREFIX = "interest:"
"""Prefix of interest statements' keys in :attr:`RankContext.vectors`."""

# The weights of the hybrid score (README "Ranking"), chosen on the evaluation set
# (benchmarks/rank_quality.py, docs/ranking-evaluation.md), in units of ln(1 + upvotes).
UPVOTE_WEIGHT_SEMANTIC = 0.5
"""Weight of ``ln(1 + upvotes)`` for a subscriber with interests or liked papers (1 for
everyone else, today's formula): who says what they want trades popularity for relevance."""
INTEREST_WEIGHT = 8.0
"""Score for a paper identical in meaning to an interest (lifted similarity 1)."""
LIKE_WEIGHT = 4.0
"""Score for a paper identical to a liked paper."""
DISLIKE_WEIGHT = 4.0
"""Score taken off for a paper identical to a disliked paper (mirrors ``LIKE_WEIGHT``)."""
SIMILARITY_FLOOR = 0.1
"""Cosine similarity counted as no similarity at all; the lift is
``max(0, s - floor) / (1 - floor)``."""
RELEVANT_SIMILARITY = 0.35
"""Cosine similarity to an interest at which a paper counts as relevant (``only_matching``
keeps it, the why line names the interest): the best F1 against the evaluation grades."""
RELEVANT_LIKE_SIMILARITY = 0.5
"""The same for similarity to a liked paper (two abstracts share more words than an abstract
and a one-line interest, so unrelated pairs score higher)."""
AUTHOR_BONUS = 100.0
"""Score added to a paper by a followed author: it always makes the cut."""
WHY_INTEREST_CHARS = 40
"""Characters of an interest quoted in the why line."""


def has_library(sub: Subscriber) -> bool:
    """Whether the subscriber gave a library file or an author to fetch (ORCID, arXiv author,
    Semantic Scholar)."""
    return bool(sub.library or sub.orcid or sub.arxiv_author or sub.semantic_scholar)


def ranked_by(subscriber: Subscriber, context: RankContext | None) -> tuple[str, ...]:
    """What ranks the subscriber's papers besides keywords and upvotes, in the email's words.

    Returns:
        Some of ``your interests``, ``the authors you follow``, ``your library`` and ``the
        papers you rated`` (YAML ``like``/``dislike``, 👍/👎), in that order; ``()`` for a
        subscriber ranked by keywords and upvotes alone (their email says what it always said).
    """
    out: list[str] = []
    if subscriber.interests:
        out.append("your interests")
    if subscriber.authors:
        out.append("the authors you follow")
    if has_library(subscriber):
        out.append("your library")
    rated = bool(subscriber.like or subscriber.dislike)
    if not rated and context is not None:
        fb = context.feedback.get(subscriber.email)
        rated = bool(fb and (fb.likes or fb.dislikes))
    if rated:
        out.append("the papers you rated")
    return tuple(out)


def paper_text(paper: Paper) -> str:
    """The text of ``paper`` that is embedded: title, abstract and AI summary (if any)."""
    parts = [paper.title, paper.abstract]
    if paper.ai_summary:
        parts.append(paper.ai_summary)
    return "\n".join(p for p in parts if p)


def bare_id(arxiv_id: str) -> str:
    """``arxiv_id`` without version or prefix (unchanged if it is not an arXiv id)."""
    return normalize_arxiv_id(arxiv_id) or arxiv_id.strip()


def author_key(name: str) -> str:
    """A name compared case-, accent- and punctuation-insensitively ("Chelsea  Finn." and
    "chelsea finn" are the same)."""
    decomposed = unicodedata.normalize("NFKD", name)
    letters = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    words = "".join(ch if ch.isalnum() else " " for ch in letters.casefold()).split()
    return " ".join(words)


@dataclass
class RankContext:
    """Everything beyond the papers and the subscriber that ranking uses (one per send).

    Attributes:
        vectors: unit vectors by arXiv id (the edition's papers, and the liked and disliked
            papers that could be found) and by ``"interest:" + statement``.
        seen: per subscriber email, bare arXiv ids already sent to them in earlier editions
            (only ids of this edition's papers need to be there).
        feedback: per subscriber email, what 👍/👎 taught.
        papers: liked/disliked papers by bare id (for the why line), when known.
        learned: per subscriber email, what their model (:mod:`digest.ranking.reader`) makes
            of each paper; only readers with enough signal have one.
        paper_index: arXiv id → position in each :class:`~digest.ranking.reader.Learned`'s
            arrays (the papers the models were applied to).
    """

    vectors: dict[str, npt.NDArray[np.float32]] = field(default_factory=dict)
    seen: Mapping[str, frozenset[str]] = field(default_factory=dict)
    feedback: Mapping[str, Feedback] = field(default_factory=dict)
    papers: Mapping[str, Paper] = field(default_factory=dict)
    learned: Mapping[str, Learned] = field(default_factory=dict)
    paper_index: Mapping[str, int] = field(default_factory=dict)
    _matrices: dict[tuple[str, ...], Vectors] = field(default_factory=dict, repr=False)

    def likes(self, subscriber: Subscriber) -> tuple[str, ...]:
        """The subscriber's liked ids: YAML ``like`` then 👍 feedback, minus later 👎."""
        fb = self.feedback.get(subscriber.email, Feedback())
        disliked = set(subscriber.dislike) | set(fb.dislikes)
        ids = dict.fromkeys((*subscriber.like, *fb.likes))
        return tuple(i for i in ids if i not in disliked or i in subscriber.like)

    def dislikes(self, subscriber: Subscriber) -> tuple[str, ...]:
        """The subscriber's disliked ids: YAML ``dislike`` then 👎 feedback."""
        fb = self.feedback.get(subscriber.email, Feedback())
        liked = set(subscriber.like) | set(fb.likes)
        ids = dict.fromkeys((*subscriber.dislike, *fb.dislikes))
        return tuple(i for i in ids if i not in liked or i in subscriber.dislike)

    def matrix(self, keys: Sequence[str]) -> Vectors | None:
        """The stacked vectors of ``keys`` that are known (``None`` if none is), cached."""
        key = tuple(keys)
        found = self._matrices.get(key)
        if found is None:
            rows = [self.vectors[k] for k in key if k in self.vectors]
            if not rows:
                return None
            import numpy as np

            found = self._matrices[key] = np.stack(rows)
        return found

    def known(self, keys: Iterable[str]) -> list[str]:
        """The keys among ``keys`` that have a vector, in order."""
        return [k for k in keys if k in self.vectors]

    def __getstate__(self) -> dict[str, object]:
        state = dict(self.__dict__)
        state["_matrices"] = {}
        return state


def build_context(
    papers: Sequence[Paper],
    subscribers: Iterable[Subscriber],
    *,
    embedder: Embedder | None,
    cache: VectorCache,
    liked_papers: Mapping[str, Paper] | None = None,
    seen: Mapping[str, frozenset[str]] | None = None,
    feedback: Mapping[str, Feedback] | None = None,
) -> RankContext:
    """Gather the vectors and history one send ranks with.

    Each distinct text is embedded at most once (and not at all when the cache has it): the
    edition's papers, every interest statement of ``subscribers``, and every liked/disliked
    paper found in ``papers`` or ``liked_papers``.

    Args:
        papers: the edition's papers.
        subscribers: who will be ranked.
        embedder: the model; ``None`` (embeddings off) gives a context without vectors.
        cache: the vector cache.
        liked_papers: liked/disliked papers by bare id, from the state store (those not in
            ``papers``).
        seen: per email, ids already sent to the subscriber.
        feedback: per email, 👍/👎 learned.

    Raises:
        ConfigError: the model cannot be loaded.
    """
    context = RankContext(
        seen=dict(seen or {}), feedback=dict(feedback or {}), papers=dict(liked_papers or {})
    )
    subscribers = list(subscribers)
    needed = any(
        sub.interests or context.likes(sub) or context.dislikes(sub) for sub in subscribers
    )
    if embedder is None or not needed:
        return context  # nobody ranks by meaning: the model is not even loaded
    texts: dict[str, str] = {}
    by_id = {p.arxiv_id: p for p in papers}
    for p in papers:
        texts[p.arxiv_id] = paper_text(p)
    for sub in subscribers:
        for interest in sub.interests:
            texts.setdefault(INTEREST_PREFIX + interest, interest)
        for pid in (*context.likes(sub), *context.dislikes(sub)):
            if pid in texts:
                continue
            paper = by_id.get(pid) or context.papers.get(pid)
            if paper is not None:
                texts[pid] = paper_text(paper)
    keys = list(texts)
    if keys:
        matrix = cache.vectors(embedder, [texts[k] for k in keys])
        context.vectors = {k: matrix[i] for i, k in enumerate(keys)}
    return context
