"""The ranking context of one send: what ranking needs beyond the papers and the subscribers.

:class:`RankContextBuilder` reads the state store (each subscriber's 👍/👎, which papers they
already got, the stored liked papers), fetches liked papers missing everywhere from the arXiv
API once, and embeds what the vector cache lacks; :func:`digest.ranking.build_context` does the
pure part. Readers with a library or enough ratings get their model
(:class:`~digest.ranking.learning.ReaderLearner`: author lists fetched weekly, models trained
only when the signal changed, from the reader cache), applied to the edition's papers in one
matrix product. The embedding model and the caches are opened on first use only.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import logging
from collections.abc import Mapping, Sequence

from digest.errors import ConfigError
from digest.models import Edition, Feedback, Paper
from digest.ranking import RankContext, build_context
from digest.ranking.embeddings import Embedder, VectorCache, build_embedder
from digest.ranking.learning import ReaderLearner
from digest.ranking.liked import fetch_missing
from digest.ranking.reader import MODEL_MIN_SIGNAL
from digest.ranking.readercache import ReaderCache
from digest.ranking.semantic import has_library, paper_text
from digest.settings import Settings
from digest.state import StateBackend
from digest.subscribers import Subscriber

log = logging.getLogger(__name__)


def liked_ids(subscribers: Sequence[Subscriber], feedback: Mapping[str, Feedback]) -> set[str]:
    """Every arXiv id ``subscribers`` liked or disliked: in the file and by 👍/👎."""
    ids: set[str] = set()
    for sub in subscribers:
        ids.update(sub.like, sub.dislike)
        fb = feedback.get(sub.email)
        if fb is not None:
            ids.update(fb.likes, fb.dislikes)
    return ids


def compact_feedback(feedback: Mapping[str, Feedback]) -> dict[str, Feedback]:
    """``feedback`` with each arXiv id one shared string: the store returns a string per row
    (200,000 rows at 100,000 subscribers, ~12 MiB); readers rate the same few hundred papers,
    and the context pickled to each render worker then carries each id once."""
    ids: dict[str, str] = {}

    def one(values: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(ids.setdefault(v, v) for v in values)

    return {email: Feedback(one(fb.likes), one(fb.dislikes)) for email, fb in feedback.items()}


def return_freed_memory() -> None:
    """Collect garbage and hand the heap's free pages back to the system (glibc's
    ``malloc_trim``; elsewhere the memory stays with the process, nothing fails)."""
    gc.collect()
    try:
        trim = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return
    trim(0)


def _ratings(sub: Subscriber, feedback: Mapping[str, Feedback]) -> int:
    """How many papers the subscriber rated (YAML like/dislike and 👍/👎, each paper once)."""
    fb = feedback.get(sub.email) or Feedback()
    return len({*sub.like, *sub.dislike, *fb.likes, *fb.dislikes})


class RankContextBuilder:
    """Builds :class:`~digest.ranking.RankContext` for a send or a preview.

    Args:
        settings: ``DIGEST_EMBEDDINGS``, ``DIGEST_ARXIV_API_URL`` and the vector cache path.
        store: feedback, stored papers and the no-repeat history come from here.
    """

    def __init__(self, settings: Settings, store: StateBackend) -> None:
        self.settings = settings
        self.store = store
        self._embedder: Embedder | None = None
        self._embedder_built = False
        self._vectors: VectorCache | None = None
        self._learner: ReaderLearner | None = None
        self._missing_warned: set[str] = set()

    def close(self) -> None:
        """Close the vector and reader caches if they were opened."""
        if self._vectors is not None:
            self._vectors.close()
        if self._learner is not None:
            self._learner.cache.close()

    @property
    def learner(self) -> ReaderLearner:
        """Libraries and reader models (``settings.reader_cache_path``), opened on first use."""
        if self._learner is None:
            self._learner = ReaderLearner(
                self.settings, ReaderCache(self.settings.reader_cache_path)
            )
        return self._learner

    @property
    def embedder(self) -> Embedder | None:
        """The embedding model of ``DIGEST_EMBEDDINGS`` (``None``: off), built on first use.

        Raises:
            ConfigError: an unknown model spec.
        """
        if not self._embedder_built:
            self._embedder = build_embedder(self.settings.embeddings)
            self._embedder_built = True
        return self._embedder

    @property
    def vector_cache(self) -> VectorCache:
        """The persistent vector cache (``settings.vector_cache_path``), opened on first use."""
        if self._vectors is None:
            self._vectors = VectorCache(self.settings.vector_cache_path)
        return self._vectors

    def feedback(self) -> dict[str, Feedback]:
        """Every subscriber's 👍/👎 from the state store, without the ratings they removed on
        the preferences page ("what shapes your ranking": the reader cache's forgotten
        ``thumbs-up:ID`` / ``thumbs-down:ID`` items), each paper id one shared string."""
        feedback = compact_feedback(self.store.feedback())
        if not feedback:
            return feedback
        gone = self.learner.cache.forgotten(list(feedback))
        for email, items in gone.items():
            fb = feedback[email]
            feedback[email] = Feedback(
                tuple(i for i in fb.likes if f"thumbs-up:{i}" not in items),
                tuple(i for i in fb.dislikes if f"thumbs-down:{i}" not in items),
            )
        return feedback

    async def build(
        self, papers: Sequence[Paper], subscribers: Sequence[Subscriber], *, edition: Edition
    ) -> RankContext:
        """What ranking ``subscribers`` over ``papers`` needs beyond them, for one send.

        Gathers from the state store each subscriber's 👍/👎 and which of ``papers`` they
        already got (other editions), finds liked/disliked papers in the stored papers,
        fetches the missing ones once from the arXiv API when ``DIGEST_ARXIV_API_URL`` is set
        (and stores them), and embeds what the vector cache lacks (on a thread).
        A liked id found nowhere is a warning (once per subscriber and id), not an error.

        Raises:
            ConfigError: ``DIGEST_EMBEDDINGS`` names an unknown model.
        """
        feedback = self.feedback()
        in_edition = {p.arxiv_id for p in papers}
        wanted = liked_ids(subscribers, feedback) - in_edition
        stored = self.store.find_papers(wanted) if wanted else {}
        fetched: list[Paper] = []
        missing = sorted(wanted - set(stored))
        if missing and self.settings.arxiv_api_url:
            fetched = await fetch_missing(missing, self.settings)
            for paper in fetched:
                self.store.save_paper(paper)
        readers = [s for s in subscribers if has_library(s)]
        if readers and self.settings.embeddings != "off":
            await self.learner.refresh(readers)
        return await asyncio.to_thread(
            self.build_now,
            papers,
            subscribers,
            edition=edition,
            fetched=fetched,
            feedback=feedback,
            stored=stored,
        )

    def build_now(
        self,
        papers: Sequence[Paper],
        subscribers: Sequence[Subscriber],
        *,
        edition: Edition,
        fetched: Sequence[Paper] = (),
        feedback: Mapping[str, Feedback] | None = None,
        stored: Mapping[str, Paper] | None = None,
    ) -> RankContext:
        """:meth:`build` on this thread, without fetching from the arXiv API (a preview).

        Args:
            papers: the edition's papers.
            subscribers: whom the context is for.
            edition: its key is left out of the no-repeat history.
            fetched: liked papers just fetched (added to the stored ones).
            feedback: 👍/👎 by subscriber, if already read (else read here).
            stored: liked papers found in the store, if already read (else read here).
        """
        if feedback is None:
            feedback = self.feedback()
        in_edition = {p.arxiv_id for p in papers}
        if stored is None:
            wanted = liked_ids(subscribers, feedback) - in_edition
            stored = self.store.find_papers(wanted) if wanted else {}
        liked = {**stored, **{p.arxiv_id: p for p in fetched}}
        for sub in subscribers:
            for pid in sub.like + sub.dislike:
                if pid not in in_edition and pid not in liked:
                    self._warn_missing(sub, pid)
        seen = self.store.sent_papers(in_edition, except_edition=edition.key)

        def context(embedder: Embedder | None) -> RankContext:
            return build_context(
                papers,
                subscribers,
                embedder=embedder,
                cache=self.vector_cache,
                liked_papers=liked,
                seen=seen,
                feedback=feedback,
            )

        try:
            built = context(self.embedder)
            if self.embedder is not None:
                self._learn(built, papers, subscribers, feedback, self.embedder)
            return built
        except ConfigError as e:  # the model is unknown or cannot be loaded
            log.error("ranking without interests and liked papers: %s", e)
            return context(None)
        finally:
            self.release()

    def release(self) -> None:
        """Let go of the embedding model once a context is built (a send renders and delivers
        for minutes after; the next context loads it again, ~0.3 s) and give the memory freed
        back to the system: at 100,000 subscribers with 10 % modelled the sending process
        keeps ~100 MiB less while its render workers run."""
        release = getattr(self._embedder, "release", None)
        if release is not None and release():
            return_freed_memory()

    def _learn(
        self,
        context: RankContext,
        papers: Sequence[Paper],
        subscribers: Sequence[Subscriber],
        feedback: Mapping[str, Feedback],
        embedder: Embedder,
    ) -> None:
        """Give ``context`` the models of readers with a library or enough ratings."""
        readers = [
            s for s in subscribers if has_library(s) or _ratings(s, feedback) >= MODEL_MIN_SIGNAL
        ]
        if not readers or not papers:
            return
        import numpy as np

        by_id = {p.arxiv_id: p for p in papers}
        missing = [pid for pid in by_id if pid not in context.vectors]
        if missing:
            matrix = self.vector_cache.vectors(embedder, [paper_text(by_id[i]) for i in missing])
            vectors = dict(context.vectors)
            vectors.update({pid: matrix[k] for k, pid in enumerate(missing)})
            context.vectors = vectors
        ids = list(by_id)
        paper_matrix = np.stack([context.vectors[i] for i in ids])
        known = {**context.papers, **by_id}
        context.learned = self.learner.learned(
            readers,
            feedback,
            embedder=embedder,
            vectors=self.vector_cache,
            background=paper_matrix,
            texts={pid: paper_text(p) for pid, p in known.items()},
            titles={pid: p.title for pid, p in known.items()},
        )
        context.paper_index = {pid: j for j, pid in enumerate(ids)}

    def _warn_missing(self, sub: Subscriber, arxiv_id: str) -> None:
        key = f"{sub.email} {arxiv_id}"
        if key in self._missing_warned:
            return
        self._missing_warned.add(key)
        how = (
            "arXiv does not know it"
            if self.settings.arxiv_api_url
            else "set DIGEST_ARXIV_API_URL to fetch it"
        )
        # Said once per process at INFO (-v): `digest validate` warns about it, once.
        log.info(
            "%s: liked/disliked paper %s is not among the stored papers (%s); ignored",
            sub.email,
            arxiv_id,
            how,
        )
