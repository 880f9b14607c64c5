"""Keyword ranking: which of an edition's papers a subscriber gets, in which order.

Matching
--------
A keyword (or exclude term) matches a text when, case-insensitively, it occurs as whole words:

* no letter, digit or ``_`` directly before or after it ("agent" does not match "reagent");
* a trailing ``*`` matches any continuation of a word ("agent*": agent, agents, agentic);
* a word without ``*`` also matches its English plural in ``s``/``es`` ("agent": agents);
* the words of a multi-word keyword match across any run of whitespace and/or hyphens
  ("reinforcement learning" matches "reinforcement-learning" and a line break; "self-play"
  matches "self play").

A paper's **title** is searched, and separately its **body**: abstract, AI summary and AI
keywords (a multi-word keyword never matches across two of these fields).

Selection
---------
1. A paper matching any ``exclude`` term (title or body) is dropped.
2. ``upvotes < min_upvotes`` drops a paper; a feed-only paper (``upvotes`` is ``None``) counts
   as 0 upvotes, so it passes only when ``min_upvotes`` is 0.
3. With ``only_matching``, a paper matching no keyword is dropped.
4. The rest are sorted (below) and the first ``max_papers`` kept.

Score
-----
::

    score = ln(1 + upvotes) + Σ over the subscriber's keywords k of w(k)

    w(k) = TITLE_WEIGHT (2.0)  if k matches the title
           BODY_WEIGHT  (1.0)  if k matches only the body (abstract, AI summary, AI keywords)
           0                   otherwise

``upvotes`` is the Hugging Face upvote count, 0 for feed-only papers. Papers are sorted by
score, highest first; ties are broken by upvotes (descending; a feed-only paper comes after
a Hugging Face paper with the same score), then comments (descending; unknown last), then arXiv id
(ascending), then title, so the order is fully deterministic.

Consequences:

* No keywords: the order is upvotes descending (``ln(1 + u)`` is strictly increasing).
* A paper matching at least one keyword gets at least ``+1.0``, so it ranks above every
  non-matching paper with the same or fewer upvotes. A far more upvoted non-matching paper can
  still rank above a weak match: one title match is worth multiplying ``1 + upvotes`` by
  e² ≈ 7.4, one body match by e ≈ 2.7.
* A keyword in the title counts twice as much as in the body.
* Feed-only papers all share ``ln(1 + 0) = 0``, so among themselves they are ordered by
  keyword relevance (then comments, id).

Compiled matchers are cached per keyword tuple; per list of papers, the lower-cased texts and
which papers each distinct keyword matches are computed once and shared by every subscriber
ranked over that list, so ranking thousands of subscribers over one edition is cheap.
"""

from __future__ import annotations

import functools
import math
import re
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from digest.models import Paper, RankedPaper
from digest.ranking.reader import Learned
from digest.ranking.semantic import (
    AUTHOR_BONUS,
    DISLIKE_WEIGHT,
    INTEREST_PREFIX,
    INTEREST_WEIGHT,
    LIKE_WEIGHT,
    RELEVANT_LIKE_SIMILARITY,
    RELEVANT_SIMILARITY,
    SIMILARITY_FLOOR,
    UPVOTE_WEIGHT_SEMANTIC,
    WHY_INTEREST_CHARS,
    RankContext,
    SimilarityTable,
    author_key,
)
from digest.subscribers import Subscriber, split_keyword

TITLE_WEIGHT = 2.0
"""Score added per keyword found in the title (in units of ln(1 + upvotes))."""
BODY_WEIGHT = 1.0
"""Score added per keyword found only in the abstract, AI summary or AI keywords."""
FIELD_SEPARATOR = " \x00 "
"""Joins the body fields; ``\\x00`` is neither a word character, whitespace nor a hyphen, so
no keyword can match across two fields."""
MATCHER_CACHE_SIZE = 16384
"""Distinct keyword tuples whose compiled matchers are kept (one per subscriber typically)."""
EDITION_CACHE_SIZE = 32
"""Paper lists whose precomputed texts and term matches are kept (see :class:`_Edition`)."""

_SEPARATOR = r"[\s\-‐‑‒–—]+"
"""Between the words of a keyword: whitespace, ASCII hyphen and Unicode hyphens/dashes."""
_PLURAL = r"(?:e?s)?"
_BEFORE = r"(?<!\w)"
_AFTER = r"(?!\w)"


@dataclass(frozen=True, slots=True)
class _Term:
    """One compiled keyword.

    Attributes:
        text: the keyword as the subscriber wrote it (reported in ``RankedPaper.matched``).
        key: the keyword lower-cased: terms with the same key match the same papers.
        needle: a lower-case literal every match contains (its longest word, without ``*``):
            a cheap substring test that skips the regex for most texts.
        pattern: the whole-word regex, applied to lower-cased text.
    """

    text: str
    key: str
    needle: str
    pattern: re.Pattern[str]

    def found(self, lowered: str) -> bool:
        """Whether the term matches ``lowered`` (text already lower-cased)."""
        return self.needle in lowered and self.pattern.search(lowered) is not None

    def word(self, lowered: str) -> str | None:
        """The text the term matched in ``lowered`` (``"agents"`` for ``agent*``), or ``None``."""
        m = self.pattern.search(lowered) if self.needle in lowered else None
        return " ".join(m.group(0).split()) if m else None


def _regex(keyword: str) -> str:
    """The whole-word regex source of one keyword (no flags; see the module docstring)."""
    pieces = []
    for word in split_keyword(keyword):
        core = word.rstrip("*")
        suffix = r"\w*" if word.endswith("*") else _PLURAL
        pieces.append(re.escape(core) + suffix)
    return _BEFORE + _SEPARATOR.join(pieces) + _AFTER


@functools.lru_cache(maxsize=MATCHER_CACHE_SIZE)
def _term(keyword: str) -> _Term:
    lowered = keyword.lower()
    needle = max((w.rstrip("*") for w in split_keyword(lowered)), key=len, default="")
    return _Term(keyword, lowered, needle, re.compile(_regex(lowered)))


@functools.lru_cache(maxsize=MATCHER_CACHE_SIZE)
def _terms(keywords: tuple[str, ...]) -> tuple[_Term, ...]:
    """The compiled terms of a keyword tuple (terms without a word are skipped)."""
    return tuple(_term(k) for k in keywords if split_keyword(k))


class _Edition:
    """Per-list precomputation shared by every subscriber ranked over the same papers.

    Holds each paper's lower-cased title and body, its base score ``ln(1 + upvotes)`` and
    tie-break key, and, per distinct term, bit masks of the papers it matches (bit ``i`` =
    ``papers[i]``), so a term is searched once per edition, not once per subscriber.
    """

    def __init__(self, papers: tuple[Paper, ...]) -> None:
        self.papers = papers
        self.n = len(papers)
        self.titles = [p.title.lower() for p in papers]
        self.bodies = [
            FIELD_SEPARATOR.join((p.abstract, p.ai_summary or "", *p.ai_keywords)).lower()
            for p in papers
        ]
        self.ids = [p.arxiv_id for p in papers]
        self.upvotes = [p.upvotes if p.upvotes is not None else 0 for p in papers]
        self.base = [math.log1p(max(u, 0)) for u in self.upvotes]
        self.tiebreak = [
            (
                -(p.upvotes if p.upvotes is not None else -1),
                -(p.comments if p.comments is not None else -1),
                p.arxiv_id,
                p.title,
            )
            for p in papers
        ]
        self._masks: dict[str, tuple[int, int]] = {}
        self._words: dict[tuple[str, int], str | None] = {}
        self._authors: list[dict[str, str]] | None = None
        self.id_tuple = tuple(self.ids)
        self._sims: tuple[object, SimilarityTable | None, dict[str, list[float]]] | None = None
        self._positions: tuple[object, list[int] | None] | None = None
        # All titles (bodies) in one string: one substring test rules a term out for all.
        self._all_titles = FIELD_SEPARATOR.join(self.titles)
        self._all_bodies = FIELD_SEPARATOR.join(self.bodies)

    def masks(self, term: _Term) -> tuple[int, int]:
        """``(in_title, in_body)`` bit masks of the papers ``term`` matches."""
        found = self._masks.get(term.key)
        if found is None:
            in_title = in_body = 0
            if term.needle in self._all_titles:
                for i, text in enumerate(self.titles):
                    if term.found(text):
                        in_title |= 1 << i
            if term.needle in self._all_bodies:
                for i, text in enumerate(self.bodies):
                    if term.found(text):
                        in_body |= 1 << i
            found = self._masks[term.key] = (in_title, in_body)
        return found

    def word(self, term: _Term, i: int) -> str | None:
        """The words ``term`` matched in ``papers[i]``: in its title, else in its body (once per
        edition, not once per subscriber whose keyword it is)."""
        key = (term.key, i)
        try:
            return self._words[key]
        except KeyError:
            found = self._words[key] = term.word(self.titles[i]) or term.word(self.bodies[i])
            return found

    def authors(self) -> list[dict[str, str]]:
        """Per paper, its authors by :func:`~digest.ranking.semantic.author_key` (computed once)."""
        if self._authors is None:
            self._authors = [{author_key(a): a for a in p.authors} for p in self.papers]
        return self._authors

    def similarity(self, context: RankContext, key: str) -> list[float] | None:
        """Cosine similarity of each paper to ``context.vectors[key]`` (``None``: unknown key).

        The context's :class:`~digest.ranking.semantic.SimilarityTable` of these papers is
        looked up once per context (made then: one ``(papers × keys)`` product for every
        vector at once; in a render worker it came precomputed); each key's column becomes a
        list on first use and is shared by every subscriber who has that interest or liked
        paper (and by every task's context of one send: they share the tables).
        """
        cached = self._sims
        if cached is None or cached[0] is not context.similarities:
            table = context.similarity_table(self.id_tuple)
            cached = self._sims = (context.similarities, table, {})
        _, table, columns = cached
        if table is None:
            return None
        row = columns.get(key)
        if row is None:
            row = table.column(key)
            if row is None:
                return None
            columns[key] = row
        return row

    def positions(self, context: RankContext) -> list[int] | None:
        """Each paper's position in the context's learned arrays (``None``: a paper is
        missing), computed once per ``paper_index`` (every task's context of a send shares
        it)."""
        cached = self._positions
        if cached is None or cached[0] is not context.paper_index:
            index = context.paper_index
            found = [index.get(pid) for pid in self.ids]
            positions = None if None in found else [j for j in found if j is not None]
            cached = self._positions = (index, positions)
        return cached[1]


_editions: OrderedDict[tuple[int, ...], _Edition] = OrderedDict()
_editions_lock = threading.Lock()


def _edition(papers: Sequence[Paper]) -> _Edition:
    """The cached :class:`_Edition` of ``papers`` (keyed by the identity of each paper).

    The entry holds the papers themselves, so their ids cannot be reused while it is cached.
    """
    key = tuple(map(id, papers))
    with _editions_lock:
        edition = _editions.get(key)
        if edition is not None:
            _editions.move_to_end(key)
            return edition
    edition = _Edition(tuple(papers))
    with _editions_lock:
        _editions[key] = edition
        while len(_editions) > EDITION_CACHE_SIZE:
            _editions.popitem(last=False)
    return edition


def rank(
    papers: Sequence[Paper], subscriber: Subscriber, context: RankContext | None = None
) -> list[RankedPaper]:
    """Select and order ``papers`` for ``subscriber`` (formula in README "Ranking").

    Args:
        papers: one edition's papers, any order (a weekly edition: the whole week's).
        subscriber: whose keywords, interests, likes, authors, exclusions and limits apply.
        context: vectors, send history and feedback for this send
            (:func:`~digest.ranking.semantic.build_context`); ``None``: keywords and upvotes
            only, nothing is left out as already sent.

    Returns:
        At most ``subscriber.max_papers`` papers, best first. Each carries its score, the
        subscriber's keywords that matched (as written, in the subscriber's order), those of
        them found in the title, the words they matched, the one-line reason it was picked
        and whether it is a filler (picked for popularity alone). Deterministic for the same
        input, whatever its order (papers with identical id and title keep their input order).
    """
    edition = _edition(papers)
    keywords = [(term, *edition.masks(term)) for term in _terms(subscriber.keywords)]
    excluded = 0
    for term in _terms(subscriber.exclude):
        in_title, in_body = edition.masks(term)
        excluded |= in_title | in_body
    matching = 0
    for _, in_title, in_body in keywords:
        matching |= in_title | in_body
    min_upvotes = subscriber.min_upvotes
    only_matching = subscriber.only_matching
    signals = _signals(edition, subscriber, context)
    seen = context.seen.get(subscriber.email) if context and subscriber.no_repeat else None
    upvote_weight = UPVOTE_WEIGHT_SEMANTIC if signals is not None and signals.semantic else 1.0

    bonus = signals.bonus if signals is not None else None
    relevant = signals.relevant if signals is not None else None
    authored = signals.by_author if signals is not None else {}
    ids, base, tiebreak, upvotes = edition.ids, edition.base, edition.tiebreak, edition.upvotes
    rows: list[tuple[float, tuple[int, int, str, str], int, float]] = []
    for i in range(edition.n):
        bit = 1 << i
        if excluded & bit or (seen and ids[i] in seen):
            continue
        if upvotes[i] < min_upvotes and i not in authored:
            continue
        relevance = 0.0
        if matching & bit:
            for _, in_title, in_body in keywords:
                if in_title & bit:
                    relevance += TITLE_WEIGHT
                elif in_body & bit:
                    relevance += BODY_WEIGHT
        elif only_matching and not (relevant is not None and relevant[i]):
            continue
        if bonus is not None:
            relevance += bonus[i]
        score = base[i] * upvote_weight + relevance
        rows.append((-score, tiebreak[i], i, score))
    rows.sort()

    out = []
    for _, _, i, score in rows[: subscriber.max_papers]:
        bit = 1 << i
        matched = tuple(t.text for t, in_title, in_body in keywords if (in_title | in_body) & bit)
        in_title_only = tuple(t.text for t, in_title, _ in keywords if in_title & bit)
        words = tuple(
            dict.fromkeys(
                w
                for t, in_title, in_body in keywords
                if (in_title | in_body) & bit
                for w in (edition.word(t, i),)
                if w
            )
        )
        why, filler = _why(i, words, signals)
        out.append(
            RankedPaper(
                edition.papers[i], score, matched, in_title_only, words, why=why, filler=filler
            )
        )
    return out


@dataclass(frozen=True, slots=True)
class _Signals:
    """One subscriber's semantic signals over one edition (lists indexed like the papers).

    Attributes:
        bonus: score added per paper (interest and like similarity, minus dislike; author).
        relevant: whether the paper counts as relevant beyond keywords (similar enough to an
            interest or a liked paper, or by a followed author).
        interests: ``(statement, similarity per paper)`` for each known interest.
        likes: ``(arxiv id, similarity per paper)`` for each known liked paper.
        interest_part: per paper, the interest part of ``bonus`` (for the why line).
        like_part: per paper, the liked-paper part of ``bonus``.
        model_part: per paper, the reader model's part of ``bonus``.
        learned: the reader's model for this send, if any.
        positions: per paper, its position in ``learned``'s arrays.
        by_author: paper index -> the followed author's name as the paper spells it.
    """

    bonus: list[float]
    relevant: list[bool]
    interests: list[tuple[str, list[float]]]
    likes: list[tuple[str, list[float]]]
    interest_part: list[float]
    like_part: list[float]
    by_author: dict[int, str]
    model_part: list[float]
    learned: Learned | None
    positions: list[int]

    @property
    def semantic(self) -> bool:
        """Whether the subscriber ranks by meaning (an interest, a liked paper or a model)."""
        return bool(self.interests or self.likes or self.learned)


def _best(rows: list[list[float]]) -> list[float]:
    """Element-wise maximum of equally long rows."""
    return rows[0] if len(rows) == 1 else list(map(max, *rows))


def _lifted(best: list[float], weight: float) -> list[float]:
    """``weight · max(0, s − floor) / (1 − floor)`` for each similarity ``s``."""
    floor = SIMILARITY_FLOOR
    scale = weight / (1.0 - floor)
    return [(s - floor) * scale if s > floor else 0.0 for s in best]


def _signals(
    edition: _Edition, subscriber: Subscriber, context: RankContext | None
) -> _Signals | None:
    """The subscriber's semantic signals, or ``None`` when there are none to compute.

    Pure Python over the edition's precomputed similarities (:meth:`_Edition.similarity`):
    for 75 papers this is cheaper than a dozen small numpy calls per subscriber.
    """
    n = edition.n
    interests: list[tuple[str, list[float]]] = []
    likes: list[tuple[str, list[float]]] = []
    dislikes: list[list[float]] = []
    if context is not None and context.embedded:
        for text in subscriber.interests:
            row = edition.similarity(context, INTEREST_PREFIX + text)
            if row is not None:
                interests.append((text, row))
        for pid in context.likes(subscriber):
            row = edition.similarity(context, pid)
            if row is not None:
                likes.append((pid, row))
        for pid in context.dislikes(subscriber):
            row = edition.similarity(context, pid)
            if row is not None:
                dislikes.append(row)
    learned = context.learned.get(subscriber.email) if context is not None else None
    positions = edition.positions(context) if learned is not None and context else None
    if positions is None:
        learned = None
    if not (interests or likes or dislikes or subscriber.authors or learned):
        return None
    zero = [0.0] * n
    interest_part = like_part = model_part = bonus = zero
    relevant = [False] * n
    if interests:
        best = _best([row for _, row in interests])
        interest_part = bonus = _lifted(best, INTEREST_WEIGHT)
        relevant = [s >= RELEVANT_SIMILARITY for s in best]
    if likes:
        best = _best([row for _, row in likes])
        like_part = _lifted(best, LIKE_WEIGHT)
        bonus = like_part if bonus is zero else list(map(float.__add__, bonus, like_part))
        relevant = [r or s >= RELEVANT_LIKE_SIMILARITY for r, s in zip(relevant, best, strict=True)]
    if dislikes:
        penalty = _lifted(_best(dislikes), DISLIKE_WEIGHT)
        bonus = list(map(float.__sub__, bonus, penalty))
    if learned is not None and positions is not None:
        part = learned.part
        model_part = [part[j] for j in positions]
        bonus = model_part if bonus is zero else list(map(float.__add__, bonus, model_part))
        relevant = [r or learned.relevant(j) for r, j in zip(relevant, positions, strict=True)]
    if bonus is zero or bonus is interest_part or bonus is like_part or bonus is model_part:
        bonus = list(bonus)  # the author bonus below must not change the parts
    by_author: dict[int, str] = {}
    if subscriber.authors:
        wanted = {author_key(a) for a in subscriber.authors}
        for i, names in enumerate(edition.authors()):
            hit = wanted.intersection(names)
            if hit:
                by_author[i] = names[min(hit)]
                bonus[i] += AUTHOR_BONUS
                relevant[i] = True
    return _Signals(
        bonus=bonus,
        relevant=relevant,
        interests=interests,
        likes=likes,
        interest_part=interest_part,
        like_part=like_part,
        by_author=by_author,
        model_part=model_part,
        learned=learned,
        positions=positions or [],
    )


def _why(i: int, words: tuple[str, ...], signals: _Signals | None) -> tuple[str, bool]:
    """The one-line reason paper ``i`` was picked, and whether it is a filler."""
    if signals is not None and i in signals.by_author:
        return f"by {signals.by_author[i]}", False
    candidates: list[tuple[float, str]] = []
    if words:
        label = "keyword" if len(words) == 1 else "keywords"
        candidates.append((TITLE_WEIGHT, f"{label}: {', '.join(words)}"))
    if signals is not None:
        interest_part, like_part = signals.interest_part[i], signals.like_part[i]
        if signals.interests:
            sim, text = max((row[i], text) for text, row in signals.interests)
            if sim >= RELEVANT_SIMILARITY:
                candidates.append((interest_part, f"matches your interest '{_short(text)}'"))
        if signals.likes:
            sim, pid = max((row[i], pid) for pid, row in signals.likes)
            if sim >= RELEVANT_LIKE_SIMILARITY:
                candidates.append((like_part, f"like {pid} you liked"))
        learned = signals.learned
        if learned is not None and learned.themes:
            j = signals.positions[i]
            if learned.relevant(j):
                theme = learned.themes[min(learned.nearest[j], len(learned.themes) - 1)]
                candidates.append((signals.model_part[i], f"like {theme}"))
    if not candidates:
        return "trending", True
    return max(candidates, key=lambda c: c[0])[1], False


def _short(text: str) -> str:
    """``text`` cut to :data:`WHY_INTEREST_CHARS` characters at a word boundary, with "…"."""
    if len(text) <= WHY_INTEREST_CHARS:
        return text
    cut = text[:WHY_INTEREST_CHARS].rsplit(" ", 1)[0].rstrip(" ,;:-")
    return cut + "…"


def matches(text: str, keyword: str) -> bool:
    """Whether ``keyword`` matches ``text`` under the rules of the module docstring.

    Args:
        text: any text (title, abstract...).
        keyword: a keyword as a subscriber writes it (``"agent*"``, ``"reinforcement
            learning"``).
    """
    return _term(keyword).found(text.lower()) if split_keyword(keyword) else False


@functools.lru_cache(maxsize=MATCHER_CACHE_SIZE)
def _original_case_pattern(keyword: str) -> re.Pattern[str] | None:
    """``keyword``'s whole-word regex, case-insensitive, for text in its original case."""
    if not split_keyword(keyword):
        return None
    return re.compile(_regex(keyword.lower()), re.IGNORECASE)


def matched_word(text: str, keyword: str) -> str | None:
    """The words of ``text`` that ``keyword`` matched first, as written in ``text``.

    Same rules as :func:`matches` (whole words, ``*`` prefix, plurals, hyphen/space-insensitive
    multi-word keywords), so it is ``None`` exactly when :func:`matches` is False.

    Args:
        text: any text, original case (a title, a summary, one AI keyword).
        keyword: as the subscriber wrote it (``"agent*"``).

    Returns:
        E.g. ``"agents"`` for ``"agent*"`` in "Competing Agents" (case kept: ``"Agents"``),
        ``"reinforcement-learning"`` for ``"reinforcement learning"``; ``None`` if no match.
    """
    pattern = _original_case_pattern(keyword)
    if pattern is None:
        return None
    for m in pattern.finditer(text):
        if m.end() > m.start():
            return m.group(0)
    return None


@functools.lru_cache(maxsize=MATCHER_CACHE_SIZE)
def _highlight_pattern(keywords: tuple[str, ...]) -> re.Pattern[str] | None:
    usable = sorted({k for k in keywords if split_keyword(k)}, key=lambda k: (-len(k), k))
    if not usable:
        return None
    return re.compile("|".join(_regex(k) for k in usable), re.IGNORECASE)


def keyword_pattern(keywords: Sequence[str]) -> re.Pattern[str] | None:
    """One case-insensitive regex matching any of ``keywords`` with the ranking's rules.

    The renderer highlights with it, so what is highlighted is exactly what matched: whole
    words, ``*`` prefix, plurals, hyphen/space-insensitive multi-word keywords; longest first.
    Cached per keyword tuple.

    Returns:
        The compiled pattern, or ``None`` when no keyword is usable.
    """
    return _highlight_pattern(tuple(keywords))


def highlight_terms(subscriber: Subscriber) -> re.Pattern[str] | None:
    """One case-insensitive regex matching any of the subscriber's keywords in original text.

    Same rules as ranking (whole words, ``*`` prefix, plurals, hyphen/space-insensitive
    multi-word keywords); longer keywords are tried first so "reinforcement learning" wins
    over "learning". Cached per keyword tuple.

    Args:
        subscriber: whose keywords (``exclude`` terms are not highlighted).

    Returns:
        The compiled pattern, or ``None`` when the subscriber has no keywords.
    """
    return _highlight_pattern(subscriber.keywords)


def highlight_spans(text: str, subscriber: Subscriber) -> list[tuple[int, int]]:
    """Where the subscriber's keywords occur in ``text``, for a renderer to highlight.

    Args:
        text: plain (unescaped) text, e.g. a title or summary.
        subscriber: whose keywords.

    Returns:
        Non-overlapping, non-empty ``(start, end)`` character offsets into ``text``
        (``text[start:end]`` is the matched text), in increasing order; empty if none.
    """
    pattern = highlight_terms(subscriber)
    if pattern is None:
        return []
    return [m.span() for m in pattern.finditer(text) if m.end() > m.start()]
