"""The numeric half of a send's ranking context, here or in a short-lived child process.

:func:`compute` is everything numpy does for a send: embed the edition's papers, the interest
statements and the liked papers (:func:`~digest.ranking.semantic.build_context`), embed what
the stale reader models need, let the embedding model go, then train and score the models
(:class:`~digest.ranking.learning.ReaderLearner`). Previews and small sends run it on a thread
of their own process (:meth:`RankContextBuilder.build_now
<digest.pipeline.context.RankContextBuilder.build_now>`). A send of
:data:`CONTEXT_PROCESS_MIN_BATCH` subscribers or more runs it in a child process
(``python -m digest.pipeline.contextproc``: :func:`run_in_child` and :func:`main`), which also
makes the similarity tables its render workers rank with, and hands back only those tables and
the models' scores (:class:`ContextParts`, no numpy in them). The sending process then never
loads numpy, the tokenizer or the model, and what the work allocated and fragmented leaves
with the child: at 100,000 subscribers, 10 % with a model, the sending process kept ~115 MB
more for the whole send when it built the context itself (docs/performance.md).

The job goes to the child's stdin and the result comes back on its stdout, pickled (the child
is this installation's own code, as the render workers are); its log records are replayed in
the sending process's loggers. The child exits when the sending process dies. A child that
fails is the caller's to handle (:class:`ChildProcessError`): the builder then builds the
context in its own process, as before.
"""

from __future__ import annotations

import asyncio
import ctypes
import functools
import gc
import logging
import os
import pickle
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from digest.errors import ConfigError
from digest.models import Feedback, Paper
from digest.ranking.embeddings import Embedder, VectorCache, build_embedder
from digest.ranking.learning import ReaderLearner
from digest.ranking.reader import MODEL_MIN_SIGNAL, LearnedTable
from digest.ranking.readercache import KnownForgotten, ReaderCache
from digest.ranking.semantic import (
    RankContext,
    SimilarityTable,
    build_context,
    has_library,
    paper_text,
)
from digest.settings import Settings
from digest.subscribers import Subscriber

log = logging.getLogger(__name__)

CONTEXT_PROCESS_MIN_BATCH = 200
"""Fewest subscribers for which a send computes its ranking context in a child process
(the render workers' threshold): starting one costs ~0.5 s of CPU (an interpreter, numpy and
the tokenizer), nothing next to the minutes such a send renders and delivers for."""
PARENT_POLL_S = 1.0
"""How often the child checks that the sending process is still alive (seconds)."""
STDERR_TAIL_CHARS = 500
"""Characters of a failed child's stderr quoted in the error."""


def return_freed_memory() -> None:
    """Collect garbage, then :func:`trim_heap` (a collection with 100,000 subscribers loaded
    takes ~0.1 s: once per send)."""
    gc.collect()
    trim_heap()


def trim_heap() -> None:
    """Hand the heap's free pages back to the system (glibc's ``malloc_trim``; elsewhere the
    memory stays with the process, nothing fails)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim`` from the symbols already loaded (no ``ldconfig`` run)."""
    try:
        trim: Callable[[int], int] = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    return trim


def release(embedder: Embedder | None) -> None:
    """Let go of ``embedder``'s model, if it has one loaded, and give the memory back."""
    let_go = getattr(embedder, "release", None)
    if let_go is not None and let_go():
        return_freed_memory()


def ratings(sub: Subscriber, feedback: Mapping[str, Feedback]) -> int:
    """How many papers the subscriber rated (YAML like/dislike and 👍/👎, each paper once)."""
    fb = feedback.get(sub.email) or Feedback()
    return len({*sub.like, *sub.dislike, *fb.likes, *fb.dislikes})


def compute(
    papers: Sequence[Paper],
    subscribers: Sequence[Subscriber],
    *,
    embedder: Callable[[], Embedder | None],
    cache: VectorCache,
    learner: ReaderLearner,
    liked: Mapping[str, Paper],
    seen: Mapping[str, frozenset[str]],
    feedback: Mapping[str, Feedback],
) -> RankContext:
    """The ranking context of ``subscribers`` over ``papers``: vectors, models' scores.

    The embedding model is used first, for every text (the edition's papers, interests,
    liked papers, then the examples of each reader whose model must be trained), and let go
    before any model is trained; it is let go at the end in any case.

    Args:
        embedder: returns the model (``None``: embeddings off); called once.
        cache: the vector cache.
        learner: libraries and reader models.
        liked: liked/disliked papers not in ``papers``, by bare id.
        forgotten: what ``subscribers`` removed from what shapes their ranking (read from the
            state by the sending process: the child opens no state).
        seen: per email, ids already sent.
        feedback: per email, 👍/👎.

    Returns:
        The context; without vectors and models (keywords and upvotes only) when the model
        cannot be loaded (logged as an error).
    """
    model: Embedder | None = None

    def context(with_model: Embedder | None) -> RankContext:
        return build_context(
            papers,
            subscribers,
            embedder=with_model,
            cache=cache,
            liked_papers=liked,
            seen=seen,
            feedback=feedback,
        )

    try:
        model = embedder()
        built = context(model)
        if model is not None:
            learn(
                built, papers, subscribers, feedback, embedder=model, cache=cache, learner=learner
            )
        return built
    except ConfigError as e:  # the model is unknown or cannot be loaded
        log.error("ranking without interests and liked papers: %s", e)
        return context(None)
    finally:
        release(model)


def learn(
    context: RankContext,
    papers: Sequence[Paper],
    subscribers: Sequence[Subscriber],
    feedback: Mapping[str, Feedback],
    *,
    embedder: Embedder,
    cache: VectorCache,
    learner: ReaderLearner,
) -> None:
    """Give ``context`` the models of readers with a library or enough ratings: embed what
    the stale ones need, let the model go, train (only the stale) and score them all."""
    readers = [s for s in subscribers if has_library(s) or ratings(s, feedback) >= MODEL_MIN_SIGNAL]
    if not readers or not papers:
        return
    import numpy as np

    by_id = {p.arxiv_id: p for p in papers}
    missing = [pid for pid in by_id if pid not in context.vectors]
    if missing:
        matrix = cache.vectors(embedder, [paper_text(by_id[i]) for i in missing])
        vectors = dict(context.vectors)
        vectors.update({pid: matrix[k] for k, pid in enumerate(missing)})
        context.vectors = vectors
    known = {**context.papers, **by_id}
    texts = {pid: paper_text(p) for pid, p in known.items()}
    titles = {pid: p.title for pid, p in known.items()}
    # Only a library brings texts of its own: the other readers' examples are rated papers,
    # embedded above with the liked and disliked ones (were one missing, training would embed
    # it, loading the model again).
    libraries = [s for s in readers if has_library(s)]
    learner.embed_examples(
        libraries, feedback, embedder=embedder, vectors=cache, texts=texts, titles=titles
    )
    release(embedder)  # training needs the vectors only (the cache holds them)
    ids = list(by_id)
    paper_matrix = np.stack([context.vectors[i] for i in ids])
    context.learned = learner.learned(
        readers,
        feedback,
        embedder=embedder,
        vectors=cache,
        background=paper_matrix,
        texts=texts,
        titles=titles,
    )
    context.paper_index = {pid: j for j, pid in enumerate(ids)}


# -- the child process ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ContextJob:
    """What the child needs to compute a send's context (pickled to its stdin).

    Attributes:
        settings: the embedding model, the vector and reader caches, library paths.
        papers: the edition's papers (every source group's).
        groups: each list of papers ranked together, as its ids in order (a similarity
            table is made for each).
        subscribers: those who rank by meaning or may have a model (the others add nothing).
        feedback: 👍/👎 by email (the send's :class:`~digest.models.FeedbackTable`).
        liked: liked/disliked papers not in ``papers``, by bare id.
        now: the learner's clock at the start of the send (aware UTC).
        log_level: the sending process's root log level (the child logs at it).
    """

    settings: Settings
    papers: list[Paper]
    groups: list[tuple[str, ...]]
    subscribers: list[Subscriber]
    feedback: Mapping[str, Feedback]
    liked: dict[str, Paper]
    forgotten: dict[str, frozenset[str]]
    now: datetime
    log_level: int


@dataclass(frozen=True)
class ContextParts:
    """What the child hands back (pickled on its stdout): nothing that needs numpy.

    Attributes:
        similarities: per group of :attr:`ContextJob.groups`, its similarity table.
        learned: per email, the model's scores (a few flat arrays).
        paper_index: arXiv id → position in each :class:`Learned`'s arrays.
        logs: the child's log records, ``(level, logger name, message)``, in order.
    """

    similarities: dict[tuple[str, ...], SimilarityTable | None]
    learned: LearnedTable
    paper_index: dict[str, int]
    logs: list[tuple[int, str, str]]


async def run_in_child(job: ContextJob) -> ContextParts:
    """Compute ``job`` in a child process (``python -m digest.pipeline.contextproc``) and
    replay its log records here.

    Raises:
        ChildProcessError: the child could not start, failed (its last stderr line is in the
            message) or was killed.
        asyncio.CancelledError: cancelled; the child is killed first.
    """
    data = pickle.dumps(job, protocol=pickle.HIGHEST_PROTOCOL)
    trim_heap()  # what pickling took: this process holds every subscriber meanwhile
    env = dict(os.environ)
    # The child imports this very digest, wherever it was imported from here.
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    started = time.monotonic()
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            __name__,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
    except OSError as e:
        raise ChildProcessError(f"the ranking context process did not start: {e}") from None
    try:
        out, err = await proc.communicate(data)
    except BaseException:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        raise
    del data
    problem = err.decode(errors="replace").strip()
    if proc.returncode != 0:
        last = problem.splitlines()[-1] if problem else "no message"
        raise ChildProcessError(
            f"the ranking context process failed (exit status {proc.returncode}): "
            f"{last[-STDERR_TAIL_CHARS:]}"
        )
    try:
        parts: ContextParts = pickle.loads(out)
    except Exception as e:  # anything unpickling raises: the child's answer is unusable
        raise ChildProcessError(f"the ranking context process answered garbage: {e}") from None
    del out
    trim_heap()
    for level, name, message in parts.logs:
        logging.getLogger(name).log(level, "%s", message)
    if problem:
        log.debug("ranking context process said: %s", problem[-STDERR_TAIL_CHARS:])
    log.debug(
        "ranking context: %d models, %d tables in a child process in %.1f s",
        len(parts.learned),
        len(parts.similarities),
        time.monotonic() - started,
    )
    return parts


class _Records(logging.Handler):
    """Keeps the child's log records, to send them back."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[tuple[int, str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append((record.levelno, record.name, record.getMessage()))


def _exit_with_parent(parent: int) -> None:
    """Child thread: end this process as soon as the sending process has died."""
    while os.getppid() == parent:
        time.sleep(PARENT_POLL_S)
    os._exit(1)


def main() -> int:
    """The child: read a :class:`ContextJob` on stdin, write :class:`ContextParts` on stdout.

    Whatever else writes to stdout (a library's print) goes to stderr instead. Returns the
    exit status (0: the result was written).
    """
    result = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    threading.Thread(
        target=_exit_with_parent, args=(os.getppid(),), name="digest-orphan", daemon=True
    ).start()
    try:
        job: ContextJob = pickle.load(sys.stdin.buffer)
        records = _Records()
        root = logging.getLogger()
        root.addHandler(records)
        root.setLevel(job.log_level)
        settings = job.settings
        cache = VectorCache(settings.vector_cache_path)
        readers = ReaderCache(settings.reader_cache_path, state=KnownForgotten(job.forgotten))
        learner = ReaderLearner(settings, readers, now=job.now)
        try:
            context = compute(
                job.papers,
                job.subscribers,
                embedder=lambda: build_embedder(settings.embeddings),
                cache=cache,
                learner=learner,
                liked=job.liked,
                seen={},
                feedback=job.feedback,
            )
            for ids in job.groups:
                context.similarity_table(ids)
        finally:
            cache.close()
            learner.cache.close()
        parts = ContextParts(
            similarities=context.similarities,
            learned=LearnedTable(context.learned),
            paper_index=dict(context.paper_index),
            logs=records.records,
        )
        with result:
            pickle.dump(parts, result, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:
        traceback.print_exc()
        return 1
    return 0


if __name__ == "__main__":
    # Run as the module's real name, so that what is pickled back names its classes there.
    from digest.pipeline.contextproc import main as run_child

    sys.exit(run_child())
