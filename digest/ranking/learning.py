"""Readers' libraries and models for one send, and what the web pages will call.

:class:`ReaderLearner` ties :mod:`~digest.ranking.library` (files), :mod:`~digest.ranking.authors`
(fetched author lists), :mod:`~digest.ranking.reader` (the model) and the
:class:`~digest.ranking.readercache.ReaderCache` together:

* :meth:`ReaderLearner.refresh` fetches the author lists that are missing or older than a week;
* :meth:`ReaderLearner.models` returns each reader's model, trained only when their signal
  changed (the cheap part, a hash of the ratings and of each library's entries, is compared
  with the cached model's first);
* :meth:`ReaderLearner.shaping`, :meth:`ReaderLearner.forget`, :meth:`ReaderLearner.reset` and
  :meth:`ReaderLearner.to_rate` are what the preferences and onboarding pages need: what shapes
  a reader's ranking, removing part of it, resetting it, and ~10 papers worth rating.

A broken library file or a failed fetch is a warning for that reader (once per send), never an
error for the send: the reader is ranked on what else they gave.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from digest.errors import ConfigError, SourceError
from digest.models import Feedback
from digest.ranking.authors import AUTHOR_KINDS, SETTING_NAMES, AuthorKind, author_setting
from digest.ranking.library import LibraryEntry, dedupe, entries_sha, read_library
from digest.ranking.reader import (
    MODEL_MIN_SIGNAL,
    MODEL_VERSION,
    Example,
    Learned,
    ReaderModel,
    Shaping,
    influences,
    informative,
    learned_for,
    one_blas_thread,
    reader_examples,
    train,
)
from digest.ranking.readercache import AUTHOR_REFRESH, ReaderCache
from digest.ranking.semantic import has_library
from digest.settings import Settings
from digest.subscribers import Subscriber

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from digest.ranking.embeddings import Embedder, VectorCache

log = logging.getLogger(__name__)

MODEL_CHUNK = 1024
"""Readers whose models are loaded or trained, then scored, at a time
(:meth:`ReaderLearner.learned`)."""
FETCH_CONCURRENCY = 4
"""Author lists fetched at once (each through the bounded HTTP client)."""
FILE_PREFIX = "file:"


def recency_day(today: date) -> date:
    """The day recency is measured from: the first of ``today``'s month (so recency weights,
    and with them the signal hash, change once a month, not every day)."""
    return today.replace(day=1)


class ReaderLearner:
    """Libraries, signals and models of the readers of one installation.

    Args:
        settings: the subscribers file (library paths are relative to it), the author APIs.
        cache: the reader cache.
        now: the clock (aware UTC).
    """

    def __init__(
        self, settings: Settings, cache: ReaderCache, *, now: datetime | None = None
    ) -> None:
        self.settings = settings
        self.cache = cache
        self._now = now
        self._warned: set[str] = set()

    def now(self) -> datetime:
        """The current time (the injected one, else the system clock)."""
        from digest.clock import utc_now

        return self._now or utc_now()

    # -- library sources ----------------------------------------------------------------------

    def file_path(self, name: str) -> Path:
        """A ``library`` path resolved against the subscribers file's folder."""
        path = Path(name).expanduser()
        return path if path.is_absolute() else self.settings.subscribers.parent / path

    def authors_of(self, sub: Subscriber) -> list[tuple[AuthorKind, str]]:
        """The author lists a subscriber names: ``(kind, id or name)``."""
        out: list[tuple[AuthorKind, str]] = []
        for kind in AUTHOR_KINDS:
            value = getattr(sub, kind)
            if value:
                out.append((kind, str(value)))
        return out

    async def refresh(self, subscribers: Iterable[Subscriber]) -> None:
        """Fetch the author lists that are not cached or older than a week (a failure keeps
        the old list and is a warning)."""
        from digest.ranking.authors import fetch_author

        now = self.now()
        todo: dict[str, tuple[AuthorKind, str]] = {}
        for sub in subscribers:
            for kind, ident in self.authors_of(sub):
                key = f"{kind}:{ident}"
                if key in todo:
                    continue
                if not author_setting(kind, self.settings):
                    self._warn(key, f"{key}: {SETTING_NAMES[kind]} is not set; not fetched")
                    continue
                known = self.cache.library_stamp(key)
                if known is None or now - known[1] >= AUTHOR_REFRESH:
                    todo[key] = (kind, ident)
        gate = asyncio.Semaphore(FETCH_CONCURRENCY)

        async def one(key: str, kind: AuthorKind, ident: str) -> None:
            async with gate:
                try:
                    entries = await fetch_author(kind, ident, self.settings)
                except SourceError as e:
                    self._warn(key, f"{key}: not fetched ({e}); using the last list, if any")
                    return
            self.cache.put_library(key, "", entries_sha(entries), entries, now=now)

        await asyncio.gather(*(one(k, *v) for k, v in todo.items()))

    def _file_sha(self, name: str, sub: Subscriber) -> str | None:
        """The entries' hash of one library file, parsing it only when its stamp changed."""
        path = self.file_path(name)
        key = FILE_PREFIX + str(path.resolve())
        try:
            st = path.stat()
        except OSError as e:
            self._warn(f"{sub.email} {key}", f"{sub.email}: library {path}: {e.strerror or e}")
            return None
        stamp = f"{st.st_size}:{st.st_mtime_ns}"
        known = self.cache.library_stamp(key)
        if known is not None and known[0] == stamp:
            return known[2]
        try:
            entries = read_library(path)
        except ConfigError as e:
            self._warn(f"{sub.email} {key} {stamp}", f"{sub.email}: {e}; library ignored")
            return None
        sha = entries_sha(entries)
        self.cache.put_library(key, stamp, sha, entries, now=self.now())
        return sha

    def library_shas(self, sub: Subscriber) -> list[tuple[str, str]]:
        """``(source key, entries hash)`` of each usable library source, in order."""
        out = []
        for name in sub.library:
            sha = self._file_sha(name, sub)
            if sha is not None:
                out.append((FILE_PREFIX + str(self.file_path(name).resolve()), sha))
        for kind, ident in self.authors_of(sub):
            key = f"{kind}:{ident}"
            known = self.cache.library_stamp(key)
            if known is not None:
                out.append((key, known[2]))
        return out

    def entries(self, sub: Subscriber) -> list[LibraryEntry]:
        """The subscriber's library: every usable file and cached author list, deduplicated."""
        out: list[LibraryEntry] = []
        for key, _ in self.library_shas(sub):
            found = self.cache.library(key)
            if found is not None:
                out.extend(found[3])
        return dedupe(out)

    # -- signals and models -------------------------------------------------------------------

    def quick_sha(
        self,
        sub: Subscriber,
        feedback: Feedback | None,
        forgotten: frozenset[str],
        embedder_name: str,
    ) -> tuple[str, int] | None:
        """A hash of everything the reader's model would be trained from, without reading any
        library's entries, and a lower bound of the examples' count; ``None`` when there is
        too little signal for a model."""
        fb = feedback or Feedback()
        ratings = len(set(sub.like) | set(sub.dislike) | set(fb.likes) | set(fb.dislikes))
        shas = self.library_shas(sub) if has_library(sub) else []
        if ratings < MODEL_MIN_SIGNAL and not shas:
            return None
        # Recency weights are computed when the model is trained; the day is not part of the
        # hash, so readers are not all retrained together when the month turns.
        h = hashlib.sha256(f"{MODEL_VERSION}\n{embedder_name}\n".encode())
        for part in (sub.like, sub.dislike, fb.likes, fb.dislikes, sorted(forgotten)):
            h.update(("\x1f".join(part) + "\x1e").encode())
        for key, sha in shas:
            h.update(f"{key}\t{sha}\n".encode())
        return h.hexdigest(), ratings

    def examples(
        self,
        sub: Subscriber,
        feedback: Feedback | None,
        *,
        titles: Mapping[str, str] | None = None,
        forgotten: Iterable[str] = (),
    ) -> list[Example]:
        """The reader's signal (:func:`~digest.ranking.reader.reader_examples`) with their
        library read from the files and the cache."""
        library = self.entries(sub) if has_library(sub) else []
        return reader_examples(
            sub,
            feedback,
            library,
            today=recency_day(self.now().date()),
            titles=titles,
            forgotten=forgotten,
        )

    def models(
        self,
        subscribers: Sequence[Subscriber],
        feedback: Mapping[str, Feedback],
        *,
        embedder: Embedder,
        vectors: VectorCache,
        background: npt.NDArray[np.float32],
        texts: Mapping[str, str],
        titles: Mapping[str, str] | None = None,
    ) -> dict[str, ReaderModel]:
        """Each reader's model: the cached one when their signal is unchanged, else trained.

        Args:
            subscribers: whom to rank.
            feedback: 👍/👎 per email.
            embedder: the embedding model (for library entries and rated papers not cached).
            vectors: the vector cache.
            background: ``(m, dim)`` vectors of the edition's papers (weak negatives).
            texts: the text of each rated paper known (by arXiv id), for its vector.
            titles: titles by arXiv id, for themes.

        Returns:
            Per email, the model of every reader with enough signal.
        """
        out, trained = self._models(
            subscribers,
            feedback,
            embedder=embedder,
            vectors=vectors,
            background=background,
            texts=texts,
            titles=titles,
        )
        if trained:
            log.info("reader models: %d trained, %d from the cache", trained, len(out) - trained)
        return out

    def learned(
        self,
        subscribers: Sequence[Subscriber],
        feedback: Mapping[str, Feedback],
        *,
        embedder: Embedder,
        vectors: VectorCache,
        background: npt.NDArray[np.float32],
        texts: Mapping[str, str],
        titles: Mapping[str, str] | None = None,
        chunk: int = MODEL_CHUNK,
    ) -> dict[str, Learned]:
        """What ranking needs of each reader's model (:func:`~digest.ranking.reader.learned_for`
        over ``background``, the edition's papers), :data:`MODEL_CHUNK` readers at a time: the
        models of a chunk (~6 KiB each with their themes) are let go once scored, so a send of
        10,000 modelled readers never holds 10,000 models. Arguments as :meth:`models`.
        """
        out: dict[str, Learned] = {}
        total = trained = 0
        for start in range(0, len(subscribers), chunk):
            models, fresh = self._models(
                subscribers[start : start + chunk],
                feedback,
                embedder=embedder,
                vectors=vectors,
                background=background,
                texts=texts,
                titles=titles,
            )
            out.update(learned_for(models, background))
            total += len(models)
            trained += fresh
        if trained:
            log.info("reader models: %d trained, %d from the cache", trained, total - trained)
        return out

    def _models(
        self,
        subscribers: Sequence[Subscriber],
        feedback: Mapping[str, Feedback],
        *,
        embedder: Embedder,
        vectors: VectorCache,
        background: npt.NDArray[np.float32],
        texts: Mapping[str, str],
        titles: Mapping[str, str] | None = None,
    ) -> tuple[dict[str, ReaderModel], int]:
        """:meth:`models` and how many of them were trained (not cached)."""
        forgotten = self.cache.forgotten([s.email for s in subscribers])
        out: dict[str, ReaderModel] = {}
        stale: list[tuple[Subscriber, str]] = []
        quick: dict[str, str] = {}
        for sub in subscribers:
            found = self.quick_sha(
                sub, feedback.get(sub.email), forgotten.get(sub.email, frozenset()), embedder.name
            )
            if found is not None:
                quick[sub.email] = found[0]
        cached = self.cache.models(quick)
        for sub in subscribers:
            sha = quick.get(sub.email)
            if sha is None:
                continue
            model = cached.get(sub.email)
            if model is not None and model.sha == sha:
                out[sub.email] = model
            else:
                stale.append((sub, sha))
        fresh: dict[str, ReaderModel] = {}
        with one_blas_thread():  # n x n systems of ~100: threads cost more than they give
            for sub, sha in stale:
                examples = self.examples(
                    sub,
                    feedback.get(sub.email),
                    titles=titles,
                    forgotten=forgotten.get(sub.email, ()),
                )
                keyed = {ex.key: _example_text(ex, texts) for ex in examples}
                keyed = {k: t for k, t in keyed.items() if t}
                matrix = vectors.vectors(embedder, list(keyed.values())) if keyed else None
                vecs = {k: matrix[i] for i, k in enumerate(keyed)} if matrix is not None else {}
                model = train(examples, vecs, background, sha=sha)
                if model is not None:
                    out[sub.email] = fresh[sub.email] = model
                elif sub.email in cached:
                    self.cache.drop_model(sub.email)
        if fresh:
            self.cache.put_models(fresh, now=self.now())
        return out, len(fresh)

    # -- the preferences and onboarding pages -------------------------------------------------

    def shaping(
        self,
        sub: Subscriber,
        feedback: Feedback | None,
        *,
        vectors: Mapping[str, npt.NDArray[np.float32]] | None = None,
        titles: Mapping[str, str] | None = None,
    ) -> Shaping:
        """What shapes the reader's ranking: ratings and library entries (strongest first,
        each removable with :meth:`forget` by its ``example.item``) and the learned themes.

        Args:
            sub: the subscriber.
            feedback: their 👍/👎.
            vectors: example vectors, for the strength of each (without: by weight only).
            titles: titles of rated papers by arXiv id.
        """
        forgotten = self.cache.forgotten([sub.email]).get(sub.email, frozenset())
        examples = self.examples(sub, feedback, titles=titles, forgotten=forgotten)
        model = self.cache.models([sub.email]).get(sub.email)
        themes = model.themes if model else ()
        by_theme = {(ex.origin, ex.title or ex.key): ex.item for ex in examples}
        return Shaping(
            influences=influences(examples, model, vectors or {}),
            themes=tuple(t.label for t in themes),
            model=model is not None,
            confidence=model.confidence if model else 0.0,
            theme_items=tuple(by_theme.get((t.origin, t.title), "") for t in themes),
        )

    def forget(self, sub: Subscriber, items: Iterable[str], *, actor: str) -> int:
        """Remove examples (their ``item``, ``origin:key``) from what shapes the ranking; the
        model is retrained at the next send. Returns how many were newly removed."""
        return self.cache.forget(sub.email, items, actor=actor, now=self.now())

    def reset(self, sub: Subscriber, feedback: Feedback | None, *, actor: str) -> int:
        """ "Reset what was learned": forget every 👍/👎 and library entry of the reader (the
        YAML's own ``like``/``dislike`` stay: they are the reader's file, edited there).

        Returns:
            How many items were forgotten.
        """
        examples = self.examples(sub, feedback)
        items = [ex.item for ex in examples if ex.origin not in ("like", "dislike")]
        return self.forget(sub, items, actor=actor)

    def to_rate(
        self,
        sub: Subscriber,
        candidates: Sequence[str],
        vectors: Mapping[str, npt.NDArray[np.float32]],
        feedback: Feedback | None,
        *,
        n: int = 10,
    ) -> list[str]:
        """About ``n`` recent papers to 👍/👎 on the onboarding page: uncertain for the
        reader's model (if any) and diverse; never one already rated."""
        fb = feedback or Feedback()
        rated = {*sub.like, *sub.dislike, *fb.likes, *fb.dislikes}
        model = self.cache.models([sub.email]).get(sub.email)
        return informative(candidates, vectors, model, n=n, exclude=rated)

    def _warn(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning("%s", message)


def _example_text(ex: Example, texts: Mapping[str, str]) -> str:
    """The text embedded for an example: a rated paper's text, or a library entry's."""
    return ex.text or texts.get(ex.key, "")
