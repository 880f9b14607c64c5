"""The ranking context of one send: what ranking needs beyond the papers and the subscribers.

:class:`RankContextBuilder` reads the state store (the 👍/👎 of the subscribers it is built
for, which papers they already got, the stored liked papers), fetches liked papers missing
everywhere from the arXiv API once and author lists weekly; then
:func:`~digest.pipeline.contextproc.compute` embeds what the vector cache lacks
(:func:`digest.ranking.build_context` is the pure part) and gives readers with a library or
enough ratings their model (:class:`~digest.ranking.learning.ReaderLearner`: trained only when
the signal changed, from the reader cache), applied to the edition's papers in one matrix
product. A large send does that numeric half in a child process
(:mod:`digest.pipeline.contextproc`), so the sending process never holds the model, numpy or
the training's garbage while it delivers. The embedding model and the caches are opened on
first use only.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Mapping, Sequence

from digest.models import Edition, Feedback, FeedbackTable, Paper
from digest.pipeline.contextproc import (
    CONTEXT_PROCESS_MIN_BATCH,
    ContextJob,
    compute,
    release,
    return_freed_memory,
    run_in_child,
)
from digest.ranking import RankContext
from digest.ranking.embeddings import Embedder, VectorCache, build_embedder
from digest.ranking.learning import ReaderLearner
from digest.ranking.liked import fetch_missing
from digest.ranking.readercache import ReaderCache
from digest.ranking.semantic import has_library
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


def ranks_by_meaning(sub: Subscriber, feedback: Mapping[str, Feedback]) -> bool:
    """Whether the subscriber adds anything to a context's numeric half: interests, liked or
    disliked papers (in the file or by 👍/👎), or a library (a model)."""
    return bool(
        sub.interests or sub.like or sub.dislike or has_library(sub) or sub.email in feedback
    )


class RankContextBuilder:
    """Builds :class:`~digest.ranking.RankContext` for a send or a preview.

    Args:
        settings: ``DIGEST_EMBEDDINGS``, ``DIGEST_ARXIV_API_URL`` and the vector cache path.
        store: feedback, stored papers and the no-repeat history come from here.

    Attributes:
        process_min_batch: fewest subscribers for which :meth:`build` computes the numeric
            half in a child process (:data:`CONTEXT_PROCESS_MIN_BATCH`; tests lower it).
    """

    process_min_batch: int = CONTEXT_PROCESS_MIN_BATCH

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
            cache = ReaderCache(self.settings.reader_cache_path, state=self.store)
            self._learner = ReaderLearner(self.settings, cache)
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

    def feedback(self, subscribers: Sequence[Subscriber] | None = None) -> FeedbackTable:
        """The 👍/👎 of ``subscribers`` (``None``: everyone's) from the state store (only
        theirs, read a chunk of addresses at a time, kept compact), without the ratings they
        removed on the preferences page ("what shapes your ranking": the state's forgotten
        ``thumbs-up:ID`` / ``thumbs-down:ID`` items, read through the reader cache)."""
        emails = None if subscribers is None else (sub.email for sub in subscribers)
        feedback = self.store.feedback(emails)
        if not feedback:
            return feedback
        gone = self.learner.cache.forgotten(list(feedback))
        for email, items in gone.items():
            fb = feedback[email]
            feedback.add(
                email,
                [i for i in fb.likes if f"thumbs-up:{i}" not in items],
                [i for i in fb.dislikes if f"thumbs-down:{i}" not in items],
            )
        return feedback

    async def build(
        self,
        papers: Sequence[Paper],
        subscribers: Sequence[Subscriber],
        *,
        edition: Edition,
        groups: Sequence[Sequence[Paper]] | None = None,
    ) -> RankContext:
        """What ranking ``subscribers`` over ``papers`` needs beyond them, for one send.

        Gathers from the state store the subscribers' 👍/👎 and which of ``papers`` they
        already got (other editions), finds liked/disliked papers in the stored papers,
        fetches the missing ones once from the arXiv API when ``DIGEST_ARXIV_API_URL`` is set
        (and stores them), refreshes author lists, and computes vectors and models (on a
        thread; in a child process for :attr:`process_min_batch` subscribers or more, whose
        similarity tables of ``groups`` come with it). A liked id found nowhere is a warning
        (once per subscriber and id), not an error.

        Args:
            papers: the edition's papers (every source group's).
            subscribers: whom the context is for.
            edition: its key is left out of the no-repeat history.
            groups: the lists of papers subscribers are ranked on (each source group's);
                ``None``: ``papers``.

        Raises:
            ConfigError: ``DIGEST_EMBEDDINGS`` names an unknown model.
        """
        return_freed_memory()  # what choosing the owed subscribers left: not kept for the send
        feedback = self.feedback(subscribers)
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
        numeric = [s for s in subscribers if ranks_by_meaning(s, feedback)]

        def here(fetched: list[Paper], stored: Mapping[str, Paper]) -> Awaitable[RankContext]:
            """The whole context built in this process (on a thread)."""
            return asyncio.to_thread(
                functools.partial(
                    self.build_now,
                    papers,
                    subscribers,
                    edition=edition,
                    fetched=fetched,
                    feedback=feedback,
                    stored=stored,
                )
            )

        if (
            self.settings.embeddings == "off"
            or not numeric
            or len(subscribers) < self.process_min_batch
        ):
            return await here(fetched, stored)
        liked, seen = self._gather(papers, subscribers, edition, stored, fetched)
        job = ContextJob(
            settings=self.settings,
            papers=list(papers),
            groups=[tuple(p.arxiv_id for p in group) for group in (groups or [papers])],
            subscribers=numeric,
            feedback=feedback,
            liked=liked,
            forgotten=self.learner.cache.forgotten([s.email for s in numeric]),
            now=self.learner.now(),
            log_level=logging.getLogger().getEffectiveLevel(),
        )
        try:
            parts = await run_in_child(job)
        except ChildProcessError as e:
            log.warning("%s; building the ranking context in this process", e)
            return await here(list(liked.values()), {})
        return RankContext(
            seen=seen,
            feedback=feedback,
            learned=parts.learned,
            paper_index=parts.paper_index,
            similarities=parts.similarities,
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
            feedback = self.feedback(subscribers)
        if stored is None:
            wanted = liked_ids(subscribers, feedback) - {p.arxiv_id for p in papers}
            stored = self.store.find_papers(wanted) if wanted else {}
        liked, seen = self._gather(papers, subscribers, edition, stored, fetched)
        return compute(
            papers,
            subscribers,
            embedder=lambda: self.embedder,
            cache=self.vector_cache,
            learner=self.learner,
            liked=liked,
            seen=seen,
            feedback=feedback,
        )

    def _gather(
        self,
        papers: Sequence[Paper],
        subscribers: Sequence[Subscriber],
        edition: Edition,
        stored: Mapping[str, Paper],
        fetched: Sequence[Paper],
    ) -> tuple[dict[str, Paper], Mapping[str, frozenset[str]]]:
        """The liked/disliked papers known (stored and fetched; the missing ones said once)
        and the no-repeat history of ``papers``."""
        in_edition = {p.arxiv_id for p in papers}
        liked = {**stored, **{p.arxiv_id: p for p in fetched}}
        for sub in subscribers:
            for pid in sub.like + sub.dislike:
                if pid not in in_edition and pid not in liked:
                    self._warn_missing(sub, pid)
        seen = self.store.sent_papers(in_edition, except_edition=edition.key)
        return liked, seen

    def release(self) -> None:
        """Let go of the embedding model (:func:`~digest.pipeline.contextproc.compute` does
        once a context is built; the next context loads it again, ~0.2 s) and give the memory
        freed back to the system."""
        release(self._embedder)

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
