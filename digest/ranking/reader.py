"""A model per reader: a small logistic regression over paper embeddings, from every rating.

What a reader taught us is one signal (:func:`reader_examples`): ``like``/``dislike`` in the
YAML, 👍/👎 from the email, and the papers of their library (files and author lists, see
:mod:`digest.ranking.library`). Liked papers and library entries are positives, disliked ones
negatives; the papers of the edition being ranked are weak negatives ("background", as in
Scholar Inbox: a reader likes a few of the many papers they see). A library entry weighs by
recency (:data:`RECENCY_HALF_LIFE_DAYS`) and half as much without an abstract.

From :data:`MODEL_MIN_SIGNAL` examples on, :func:`train` fits a weighted, L2-regularized
logistic regression (Newton steps, numpy only: no scikit-learn in the sending process) and
:func:`learned_for` turns it into what ranking needs: per paper of the edition, the model's
part of the score, ``MODEL_WEIGHT · confidence · P(like)``, where ``confidence = n / (n +
MODEL_HALF_SIGNAL)`` grows with the signal, so a reader with little of it keeps today's hybrid
almost unchanged. The part is added to the hybrid score (README "Ranking"). Trained models are
cached by ``(subscriber, SHA-256 of their signal)`` in the reader cache
(:mod:`digest.ranking.readercache`): a send retrains only the readers whose signal changed.

The model also keeps up to :data:`MAX_THEMES` *themes*: the liked examples it scores highest,
each far enough from the others; a card lifted by the model names the nearest theme in its why
line ("like 'Attention Is All You Need' in your library").

Everything here except :class:`Learned` runs in the sending process; :class:`Learned` is what a
render worker receives (plain arrays of floats and bytes: no numpy needed there).
"""

from __future__ import annotations

import hashlib
import math
import sys
from array import array
from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import date
from typing import TYPE_CHECKING, Literal

from digest.models import Feedback

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from digest.ranking.library import LibraryEntry
    from digest.subscribers import Subscriber

MODEL_VERSION = "lr1"
"""Part of every signal hash: a change of the training code retrains every model."""
MODEL_MIN_SIGNAL = 3
"""Fewest examples (ratings and library entries) for which a reader gets a model; with fewer,
ranking is today's hybrid exactly."""
MODEL_WEIGHT = 12.0
"""Score (in units of ln(1 + upvotes)) for a paper the model is sure the reader likes, at full
confidence (chosen on the training days of the evaluation, docs/ranking-evaluation.md)."""
MODEL_HALF_SIGNAL = 3.0
"""Signal (total example weight) at which the model's part is half of ``MODEL_WEIGHT``."""
MODEL_L2 = 0.3
"""L2 penalty on the weights (not the bias): small signals stay close to "no preference"."""
BACKGROUND_SHARE = 1.0
"""Total weight of the background (the edition's papers, label 0) relative to the total weight
of the positives."""
RELEVANT_PROBABILITY = 0.5
"""P(like) at which the model alone makes a paper relevant (``only_matching`` keeps it)."""
TITLE_ONLY_WEIGHT = 0.5
"""Weight of a library entry without an abstract, relative to one with."""
RECENCY_HALF_LIFE_DAYS = 730
"""A library entry's weight halves every two years of age (added date, else publication)."""
RECENCY_FLOOR = 0.1
"""The least weight of a (dated) library entry, however old."""
UNDATED_WEIGHT = 0.5
"""Recency weight of a library entry whose export gives no date."""
RATING_WEIGHT = 1.0
"""Weight of one 👍/👎 or YAML like/dislike."""
NEWTON_STEPS = 12
"""Most Newton steps of the fit (it converges in 5–8 on real signals)."""
NEWTON_TOLERANCE = 1e-6
"""Stop when the largest step of a weight is below this."""
MAX_THEMES = 5
"""Themes (representative liked examples) kept per model for the why line."""
THEME_DISTINCT = 0.8
"""Cosine similarity above which a liked example is too close to a chosen theme to be another."""
THEME_TITLE_CHARS = 60
"""Characters of a theme's title quoted in the why line."""

Origin = Literal["like", "dislike", "thumbs-up", "thumbs-down", "library"]


@dataclass(frozen=True, slots=True)
class Example:
    """One labelled paper of a reader's signal.

    Attributes:
        key: its vector's key: a bare arXiv id, or ``library:`` + hash for a library entry.
        label: 1 liked (YAML like, 👍, library), 0 disliked (YAML dislike, 👎).
        weight: how much it counts (1 for a rating; recency × abstract for a library entry).
        origin: where it comes from (for the why line and the preferences page).
        title: the paper's title, or ``""`` when unknown.
        text: what is embedded, when the example carries it (a library entry); a rated
            paper's text comes from the stored papers.
    """

    key: str
    label: int
    weight: float
    origin: Origin
    title: str = ""
    text: str = ""

    @property
    def item(self) -> str:
        """What :meth:`ReaderCache.forget` takes to remove this example: ``origin:key``."""
        return f"{self.origin}:{self.key}"


def recency_weight(when: date | None, today: date) -> float:
    """``0.5 ** (age / RECENCY_HALF_LIFE_DAYS)``, at least :data:`RECENCY_FLOOR`;
    :data:`UNDATED_WEIGHT` for ``None``. A date in the future counts as today."""
    if when is None:
        return UNDATED_WEIGHT
    age = max(0, (today - when).days)
    return max(RECENCY_FLOOR, float(0.5 ** (age / RECENCY_HALF_LIFE_DAYS)))


def reader_examples(
    subscriber: Subscriber,
    feedback: Feedback | None,
    library: Sequence[LibraryEntry] = (),
    *,
    today: date,
    titles: Mapping[str, str] | None = None,
    forgotten: Iterable[str] = (),
) -> list[Example]:
    """The reader's whole signal: YAML like/dislike, 👍/👎, then the library.

    A paper both liked and disliked counts as the later verdict (the YAML wins over feedback,
    as in :meth:`~digest.ranking.semantic.RankContext.likes`); a library entry that is also
    rated counts once, as rated.

    Args:
        subscriber: ``like``/``dislike`` in the YAML.
        feedback: 👍/👎 from the state store (``store.feedback()[email]``), or ``None``.
        library: the reader's library entries (files and author lists, deduplicated).
        today: the UTC day recency is measured from.
        titles: known titles by arXiv id (for the why line); optional.
        forgotten: ``origin:key`` items the reader removed (:class:`ReaderCache`).

    Returns:
        The examples, YAML first, then feedback oldest first, then the library in its order.
    """
    fb = feedback or Feedback()
    titles = titles or {}
    gone = set(forgotten)
    out: list[Example] = []
    taken: set[str] = set()

    def add(
        key: str, label: int, weight: float, origin: Origin, title: str = "", text: str = ""
    ) -> None:
        ex = Example(key, label, weight, origin, title or titles.get(key, ""), text)
        if key not in taken and ex.item not in gone:
            taken.add(key)
            out.append(ex)

    for pid in subscriber.like:
        add(pid, 1, RATING_WEIGHT, "like")
    for pid in subscriber.dislike:
        add(pid, 0, RATING_WEIGHT, "dislike")
    later = {pid: 1 for pid in fb.likes} | {pid: 0 for pid in fb.dislikes}
    for pid in (*reversed(fb.likes), *reversed(fb.dislikes)):
        if pid in later:
            label = later.pop(pid)
            add(pid, label, RATING_WEIGHT, "thumbs-up" if label else "thumbs-down")
    for entry in library:
        if entry.arxiv_id and entry.arxiv_id in taken:
            continue
        weight = recency_weight(entry.dated, today)
        if not entry.abstract:
            weight *= TITLE_ONLY_WEIGHT
        add(entry.key, 1, weight, "library", entry.title, entry.text)
        if entry.arxiv_id:
            taken.add(entry.arxiv_id)
    return out


def signal_sha(examples: Sequence[Example], embedder_name: str) -> str:
    """SHA-256 of everything a model is trained from (examples, weights, model, code version)."""
    h = hashlib.sha256(f"{MODEL_VERSION}\n{embedder_name}\n".encode())
    for ex in sorted(examples, key=lambda e: e.key):
        h.update(f"{ex.key}\t{ex.label}\t{ex.weight:.4f}\n".encode())
    return h.hexdigest()


@dataclass(frozen=True, slots=True)
class Theme:
    """A representative liked example of a model (why lines name it).

    Attributes:
        title: the example's title (or its arXiv id when the title is unknown).
        origin: ``library``, ``like`` or ``thumbs-up``.
        vector: its unit embedding (float32, the model's dimension).
    """

    title: str
    origin: Origin
    vector: npt.NDArray[np.float32]

    @property
    def label(self) -> str:
        """The why line's words: ``'Title…' in your library`` / ``'Title…' you liked``."""
        title = _short(self.title)
        return f"'{title}' in your library" if self.origin == "library" else f"'{title}' you liked"


@dataclass(frozen=True)
class ReaderModel:
    """One reader's trained classifier.

    Attributes:
        weights: ``(dim,)`` float32 weights over the unit paper embedding.
        bias: the intercept.
        signal: total weight of the labelled examples (drives the confidence).
        count: number of labelled examples.
        sha: :func:`signal_sha` of what it was trained from.
        themes: up to :data:`MAX_THEMES` representative liked examples.
    """

    weights: npt.NDArray[np.float32]
    bias: float
    signal: float
    count: int
    sha: str
    themes: tuple[Theme, ...] = ()

    @property
    def confidence(self) -> float:
        """``signal / (signal + MODEL_HALF_SIGNAL)``: 0 with no signal, → 1 with much."""
        return self.signal / (self.signal + MODEL_HALF_SIGNAL)

    def probabilities(self, papers: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
        """P(like) of each row of ``papers`` (``(n, dim)`` unit vectors)."""
        import numpy as np

        z = papers.astype(np.float64) @ self.weights.astype(np.float64) + self.bias
        return 1.0 / (1.0 + np.exp(-np.clip(z, -30, 30)))


def train(
    examples: Sequence[Example],
    vectors: Mapping[str, npt.NDArray[np.float32]],
    background: npt.NDArray[np.float32],
    *,
    sha: str = "",
    l2: float | None = None,
) -> ReaderModel | None:
    """Fit the reader's logistic regression (weighted, L2, Newton's method).

    Args:
        examples: the reader's signal (:func:`reader_examples`); those without a vector are
            left out.
        vectors: unit vectors by example key.
        background: ``(m, dim)`` unit vectors of papers the reader was shown or could have
            been (label 0, together weighing :data:`BACKGROUND_SHARE` × the positives).
        sha: the signal hash to record.
        l2: the penalty (default :data:`MODEL_L2`).

    Returns:
        The model, or ``None`` with fewer than :data:`MODEL_MIN_SIGNAL` usable examples or
        no liked one.
    """
    import numpy as np

    usable = [ex for ex in examples if ex.key in vectors and ex.weight > 0]
    positives = [ex for ex in usable if ex.label == 1]
    if len(usable) < MODEL_MIN_SIGNAL or not positives:
        return None
    x = np.asarray([vectors[ex.key] for ex in usable], dtype=np.float64)
    y = np.asarray([float(ex.label) for ex in usable])
    s = np.asarray([ex.weight for ex in usable])
    if len(background):
        pos_total = sum(ex.weight for ex in positives)
        x = np.vstack([x, np.asarray(background, dtype=np.float64)])
        y = np.concatenate([y, np.zeros(len(background))])
        s = np.concatenate(
            [s, np.full(len(background), BACKGROUND_SHARE * pos_total / len(background))]
        )
    penalty = MODEL_L2 if l2 is None else l2
    # Fewer examples than dimensions (the usual reader: 5-40 ratings and the edition's 75
    # papers, against 256 dimensions): Newton's method on the n x n dual system; else on the
    # (dim + 1) x (dim + 1) primal one. Both reach the same optimum.
    fit = _fit_dual if len(x) < x.shape[1] else _fit_primal
    w, bias = fit(x, y, s, penalty)
    model = ReaderModel(
        weights=w.astype(np.float32),
        bias=bias,
        signal=sum(ex.weight for ex in usable),
        count=len(usable),
        sha=sha,
    )
    return _with_themes(model, positives, vectors)


def one_blas_thread() -> AbstractContextManager[object]:
    """A block in which numpy's BLAS/LAPACK runs on one thread (``threadpoolctl``).

    The systems of :func:`train` are ~100-square: OpenBLAS's threads cost more than they give
    there (measured on 2 cores: a 110-square solve 455 µs of CPU with 2 threads, 69 µs with
    one). :meth:`~digest.ranking.learning.ReaderLearner.models` trains every stale model of a
    send inside one such block (entering it costs ~0.1 ms).
    """
    from threadpoolctl import threadpool_limits

    limits: AbstractContextManager[object] = threadpool_limits(limits=1, user_api="blas")
    return limits


def _fit_primal(
    x: npt.NDArray[np.float64],
    y: npt.NDArray[np.float64],
    s: npt.NDArray[np.float64],
    penalty: float,
) -> tuple[npt.NDArray[np.float64], float]:
    """Weighted L2 logistic regression, Newton's method on the weights and the bias.

    Args:
        x: ``(n, dim)`` rows; y: ``(n,)`` labels 0/1; s: ``(n,)`` example weights.
        penalty: the L2 penalty on the weights (the bias is not penalized).

    Returns:
        ``(weights (dim,), bias)``. Each step solves a ``(dim + 1)``-square system.
    """
    import numpy as np

    xb = np.hstack([x, np.ones((len(x), 1))])  # the bias column
    dim = xb.shape[1]
    pen = np.full(dim, penalty)
    pen[-1] = 0.0
    w = np.zeros(dim)
    for _ in range(NEWTON_STEPS):
        p = 1.0 / (1.0 + np.exp(-np.clip(xb @ w, -30, 30)))
        grad = xb.T @ (s * (p - y)) + pen * w
        hess = (xb.T * (s * p * (1 - p))) @ xb + np.diag(pen + 1e-9)
        step = np.linalg.solve(hess, grad)
        w -= step
        if float(np.max(np.abs(step))) < NEWTON_TOLERANCE:
            break
    return w[:-1], float(w[-1])


def _fit_dual(
    x: npt.NDArray[np.float64],
    y: npt.NDArray[np.float64],
    s: npt.NDArray[np.float64],
    penalty: float,
) -> tuple[npt.NDArray[np.float64], float]:
    """The same fit as :func:`_fit_primal`, with ``weights = x.T @ alpha`` (the optimum of an
    L2-penalized loss lies in the span of the rows), so each Newton step solves an
    ``(n + 1)``-square system instead of a ``(dim + 1)``-square one.

    With ``K = x x.T``, ``f = K alpha + b``, ``g = s (p - y)`` and ``W = diag(s p (1 - p))``,
    the Newton step ``(d_alpha, d_b)`` solves::

        (W K + penalty I) d_alpha + W 1 d_b = g + penalty alpha
        1' W K d_alpha    + 1' W 1 d_b     = 1' g

    (the primal step's equations with ``K`` factored out of the first block). The stopping
    rule is the primal one, on the step of the weights ``x.T d_alpha`` and of the bias.
    """
    import numpy as np

    n = len(x)
    k = x @ x.T
    alpha = np.zeros(n)
    bias = 0.0
    f = np.zeros(n)
    a = np.empty((n + 1, n + 1))
    rhs = np.empty(n + 1)
    diagonal = np.diag_indices(n)
    for _ in range(NEWTON_STEPS):
        p = 1.0 / (1.0 + np.exp(-np.clip(f, -30, 30)))
        g = s * (p - y)
        curve = s * p * (1 - p)
        a[:n, :n] = curve[:, None] * k
        a[diagonal] += penalty
        a[:n, n] = curve
        a[n, :n] = curve @ k
        a[n, n] = curve.sum() + 1e-9
        rhs[:n] = g + penalty * alpha
        rhs[n] = g.sum()
        step = np.linalg.solve(a, rhs)
        alpha -= step[:n]
        bias -= float(step[n])
        f = k @ alpha + bias
        largest = max(float(np.max(np.abs(x.T @ step[:n]))), abs(float(step[n])))
        if largest < NEWTON_TOLERANCE:
            break
    return x.T @ alpha, bias


def _with_themes(
    model: ReaderModel, positives: Sequence[Example], vectors: Mapping[str, npt.NDArray[np.float32]]
) -> ReaderModel:
    """``model`` with its themes: liked examples by ``weight × P(like)``, mutually distinct."""
    import numpy as np

    mat = np.stack([vectors[ex.key] for ex in positives])
    strength = model.probabilities(mat) * np.asarray([ex.weight for ex in positives])
    chosen: list[int] = []
    for i in np.argsort(-strength, kind="stable"):
        if all(float(mat[i] @ mat[j]) < THEME_DISTINCT for j in chosen):
            chosen.append(int(i))
            if len(chosen) == MAX_THEMES:
                break
    themes = tuple(
        Theme(positives[i].title or positives[i].key, positives[i].origin, mat[i]) for i in chosen
    )
    return ReaderModel(model.weights, model.bias, model.signal, model.count, model.sha, themes)


@dataclass(frozen=True, slots=True)
class Learned:
    """What ranking needs of one reader's model for one send (small, picklable, no numpy).

    Attributes:
        part: per paper of the context (``RankContext.paper_index``), the model's part of the
            score: ``MODEL_WEIGHT · confidence · P(like)`` (float32 array).
        scale: ``MODEL_WEIGHT · confidence`` (``part / scale`` is P(like)).
        nearest: per paper, the index of the nearest theme in ``themes``.
        themes: the why line's words per theme (:attr:`Theme.label`).
    """

    part: array[float]
    scale: float
    nearest: bytes
    themes: tuple[str, ...] = ()

    def relevant(self, j: int) -> bool:
        """Whether the model alone makes paper ``j`` relevant (P(like) ≥ 0.5)."""
        return self.scale > 0 and self.part[j] >= RELEVANT_PROBABILITY * self.scale


def learned_for(
    models: Mapping[str, ReaderModel],
    papers: npt.NDArray[np.float32],
    *,
    weight: float | None = None,
) -> dict[str, Learned]:
    """Score every paper for every model: one matrix product for all readers.

    Args:
        models: per subscriber email, their model.
        papers: ``(n, dim)`` unit vectors of the context's papers (in ``paper_index`` order).
        weight: :data:`MODEL_WEIGHT` unless given (the evaluation's grid).

    Returns:
        Per email, the :class:`Learned` ranking uses.
    """
    import numpy as np

    full = MODEL_WEIGHT if weight is None else weight
    out: dict[str, Learned] = {}
    if not models or not len(papers):
        return out
    emails = list(models)
    p64 = papers.astype(np.float64)
    chunk = 1024
    for start in range(0, len(emails), chunk):
        part_emails = emails[start : start + chunk]
        w = np.stack([models[e].weights for e in part_emails]).astype(np.float64)
        b = np.asarray([models[e].bias for e in part_emails])
        prob = 1.0 / (1.0 + np.exp(-np.clip(p64 @ w.T + b, -30, 30)))  # (papers, readers)
        for r, email in enumerate(part_emails):
            model = models[email]
            scale = full * model.confidence
            part = array("f", (prob[:, r] * scale).astype(np.float32).tobytes())
            if model.themes:
                t = np.stack([th.vector for th in model.themes]).astype(np.float32)
                nearest = bytes(np.argmax(papers @ t.T, axis=1).astype(np.uint8))
            else:
                nearest = bytes(len(papers))
            # One string per distinct label: readers who rated the same papers share them (in
            # this process and, through pickle's memo, in each render worker).
            labels = tuple(sys.intern(th.label) for th in model.themes)
            out[email] = Learned(part, scale, nearest, labels)
    return out


def _short(text: str) -> str:
    """``text`` cut to :data:`THEME_TITLE_CHARS` at a word boundary, with "…"."""
    text = " ".join(text.split())
    if len(text) <= THEME_TITLE_CHARS:
        return text
    return text[:THEME_TITLE_CHARS].rsplit(" ", 1)[0].rstrip(" ,;:-") + "…"


# -- what the preferences and onboarding pages will call ----------------------------------------


@dataclass(frozen=True, slots=True)
class Influence:
    """One example and how much it shapes the reader's ranking.

    Attributes:
        example: the rating or library entry.
        strength: ``weight × |w·x|``: how much the model leans on it (0 when untrained).
    """

    example: Example
    strength: float


def influences(
    examples: Sequence[Example],
    model: ReaderModel | None,
    vectors: Mapping[str, npt.NDArray[np.float32]],
) -> list[Influence]:
    """What shapes a reader's ranking, strongest first (the preferences page lists these, each
    removable with :meth:`ReaderCache.forget`).

    Args:
        examples: the reader's signal (:func:`reader_examples`).
        model: their model, or ``None`` (then the order is the examples' weights).
        vectors: unit vectors by example key (missing ones count 0).
    """
    out = []
    for ex in examples:
        vec = vectors.get(ex.key)
        lean = 1.0
        if model is not None:
            lean = abs(float(vec @ model.weights)) if vec is not None else 0.0
        out.append(Influence(ex, ex.weight * lean))
    out.sort(key=lambda i: (-i.strength, i.example.key))
    return out


def informative(
    candidates: Sequence[str],
    vectors: Mapping[str, npt.NDArray[np.float32]],
    model: ReaderModel | None = None,
    *,
    n: int = 10,
    exclude: Iterable[str] = (),
) -> list[str]:
    """About ``n`` papers whose 👍/👎 would teach the most: uncertain and diverse.

    With a model, each candidate's uncertainty is ``1 − |2·P(like) − 1|``; without one, every
    candidate is equally uncertain. Papers are then picked greedily, each maximizing
    ``uncertainty × (1 − max cosine to those already picked)`` (farthest-point sampling
    weighted by uncertainty), so the page never shows ten papers of one topic, nor only the
    top ones.

    Args:
        candidates: arXiv ids of recent papers (e.g. the last edition's), in a stable order.
        vectors: unit vectors by id (candidates without one are skipped).
        model: the reader's model, if any.
        n: how many to pick.
        exclude: ids already rated (never offered again).

    Returns:
        Up to ``n`` ids, most informative first; deterministic.
    """
    import numpy as np

    skip = set(exclude)
    ids = [c for c in dict.fromkeys(candidates) if c in vectors and c not in skip]
    if not ids or n <= 0:
        return []
    mat = np.stack([vectors[c] for c in ids]).astype(np.float64)
    if model is not None:
        prob = model.probabilities(mat.astype(np.float32))
        uncertainty = 1.0 - np.abs(2.0 * prob - 1.0) + 1e-3
    else:
        uncertainty = np.ones(len(ids))
    centre = mat.mean(axis=0)
    closest = np.full(len(ids), -math.inf)
    picked: list[int] = []
    # The first pick: the most uncertain of the papers nearest the centre of the candidates.
    first_score = uncertainty * (1.0 + mat @ centre)
    for _ in range(min(n, len(ids))):
        score = first_score if not picked else uncertainty * (1.0 - closest)
        score = np.where(np.isin(np.arange(len(ids)), picked), -math.inf, score)
        best = int(np.argmax(score))
        picked.append(best)
        closest = np.maximum(closest, mat @ mat[best])
    return [ids[i] for i in picked]


@dataclass
class Shaping:
    """What shapes one reader's ranking (for the preferences page).

    Attributes:
        influences: ratings and library entries, strongest first.
        themes: the strongest learned themes (:attr:`Theme.label`).
        model: whether a model is in use (enough signal), and its confidence (0..1).
        theme_items: see below.
    """

    influences: list[Influence] = field(default_factory=list)
    themes: tuple[str, ...] = ()
    model: bool = False
    confidence: float = 0.0
    theme_items: tuple[str, ...] = ()
    """Per theme, the ``origin:key`` item :meth:`ReaderCache.forget` takes to remove the
    liked paper behind it (``""`` when it is no longer among the examples)."""
