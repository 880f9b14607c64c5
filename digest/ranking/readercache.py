"""The reader cache: parsed libraries, fetched author lists and trained models, in one SQLite file.

Next to the vector cache (``DIGEST_READER_CACHE``, default ``<state file>.reader``). Three
tables:

* ``libraries``: per source key (``file:/abs/path`` or ``orcid:ID``, ``arxiv_author:NAME``,
  ``semantic_scholar:ID``), the stamp it was read under (a file's size and mtime), when it was
  fetched (UTC), the SHA-256 of its entries and the entries themselves (JSON). A file is parsed
  again only when its stamp changes; an author list is fetched again after
  :data:`AUTHOR_REFRESH` (weekly).
* ``models``: per subscriber, the last trained :class:`~digest.ranking.reader.ReaderModel` and
  the hash of the signal it was trained from: a send retrains only readers whose signal changed.
* ``forgotten``: what readers removed from what shapes their ranking (``origin:key`` items)
  is not derived data, so it lives in the state store (its ``forgotten`` table: every host
  honours it, deleting this file loses nothing), given as ``state``. Rows an older version kept
  in this file's own ``forgotten`` table are moved into the state when the cache is opened
  with one.

Safe to share between threads; several processes may use the same file (WAL).
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from digest.ranking.library import LibraryEntry
from digest.ranking.reader import Origin, ReaderModel, Theme

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

log = logging.getLogger(__name__)

AUTHOR_REFRESH = timedelta(days=7)
"""How long a fetched author list is used before it is fetched again."""
_CHUNK = 500
"""Subscribers per ``IN (...)`` statement (well below SQLite's limit of bound variables)."""

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS libraries (key TEXT PRIMARY KEY, stamp TEXT NOT NULL, "
    "fetched_at TEXT NOT NULL, sha TEXT NOT NULL, entries TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS models (subscriber TEXT PRIMARY KEY, sha TEXT NOT NULL, "
    "trained_at TEXT NOT NULL, meta TEXT NOT NULL, weights BLOB NOT NULL, themes BLOB NOT NULL)",
    "CREATE TABLE IF NOT EXISTS forgotten (subscriber TEXT NOT NULL, item TEXT NOT NULL, "
    "at TEXT NOT NULL, actor TEXT NOT NULL, PRIMARY KEY (subscriber, item))",
)


class ForgottenItems(Protocol):
    """Where what readers removed is kept: the state store
    (:meth:`~digest.state.store.RecordsMixin.forget` and its two siblings), or
    :class:`KnownForgotten`."""

    def forget(
        self, subscriber: str, items: Iterable[str], *, actor: str, now: datetime | None = None
    ) -> int: ...

    def unforget(self, subscriber: str, items: Iterable[str]) -> int: ...

    def forgotten(self, subscribers: Iterable[str] | None = None) -> dict[str, frozenset[str]]: ...


class KnownForgotten:
    """What readers removed, read beforehand (the ranking context's child process gets it
    with its job and opens no state); read-only.

    Args:
        items: removed items by normalized address.
    """

    def __init__(self, items: dict[str, frozenset[str]]) -> None:
        self.items = items

    def forget(
        self, subscriber: str, items: Iterable[str], *, actor: str, now: datetime | None = None
    ) -> int:
        """Refused: read-only.

        Raises:
            RuntimeError: always.
        """
        raise RuntimeError("what readers removed is read-only here")

    def unforget(self, subscriber: str, items: Iterable[str]) -> int:
        """Refused: read-only.

        Raises:
            RuntimeError: always.
        """
        raise RuntimeError("what readers removed is read-only here")

    def forgotten(self, subscribers: Iterable[str] | None = None) -> dict[str, frozenset[str]]:
        """The removed items of ``subscribers`` (all if ``None``)."""
        if subscribers is None:
            return dict(self.items)
        return {s: self.items[s] for s in subscribers if s in self.items}


class ReaderCache:
    """Parsed libraries, author lists and trained models (one SQLite file), and what readers
    removed (kept by ``state``).

    Args:
        path: the file; ``None`` keeps everything in memory (tests, benchmarks).
        state: where what readers removed is kept (the state store); ``None``: an empty
            :class:`KnownForgotten`.
    """

    def __init__(self, path: Path | None = None, *, state: ForgottenItems | None = None) -> None:
        self.path = path
        self.state: ForgottenItems = state if state is not None else KnownForgotten({})
        self._lock = threading.Lock()
        target = ":memory:"
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            target = str(path)
        self._db = sqlite3.connect(target, check_same_thread=False, timeout=30)
        if path is not None:
            self._db.execute("PRAGMA journal_mode=WAL")
        for statement in _SCHEMA:
            self._db.execute(statement)
        self._db.commit()
        if state is not None:
            self._move_forgotten(state)

    def _move_forgotten(self, state: ForgottenItems) -> None:
        """Move the removed items an older version kept in this file into ``state`` (once:
        the file's rows are deleted after the state has them)."""
        with self._lock:
            rows = self._db.execute("SELECT subscriber, item, at, actor FROM forgotten").fetchall()
        if not rows:
            return
        for subscriber, item, at, actor in rows:
            state.forget(subscriber, [item], actor=actor, now=datetime.fromisoformat(at))
        with self._lock:
            self._db.execute("DELETE FROM forgotten")
            self._db.commit()
        log.info("moved %d removed items of readers from %s into the state", len(rows), self.path)

    def close(self) -> None:
        """Close the file."""
        with self._lock:
            self._db.close()

    # -- libraries ----------------------------------------------------------------------------

    def library(self, key: str) -> tuple[str, datetime, str, list[LibraryEntry]] | None:
        """``(stamp, fetched_at, sha, entries)`` stored for ``key``, or ``None``."""
        with self._lock:
            row = self._db.execute(
                "SELECT stamp, fetched_at, sha, entries FROM libraries WHERE key = ?", (key,)
            ).fetchone()
        if row is None:
            return None
        entries = [LibraryEntry.from_json(e) for e in json.loads(row[3])]
        return row[0], datetime.fromisoformat(row[1]), row[2], entries

    def library_stamp(self, key: str) -> tuple[str, datetime, str] | None:
        """``(stamp, fetched_at, sha)`` for ``key`` without reading the entries (a warm send)."""
        with self._lock:
            row = self._db.execute(
                "SELECT stamp, fetched_at, sha FROM libraries WHERE key = ?", (key,)
            ).fetchone()
        return (row[0], datetime.fromisoformat(row[1]), row[2]) if row else None

    def put_library(
        self, key: str, stamp: str, sha: str, entries: Sequence[LibraryEntry], *, now: datetime
    ) -> None:
        """Store a parsed file or fetched author list (replacing the previous one)."""
        data = json.dumps([e.to_json() for e in entries], ensure_ascii=False)
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO libraries VALUES (?, ?, ?, ?, ?)",
                (key, stamp, now.astimezone(UTC).isoformat(), sha, data),
            )
            self._db.commit()

    # -- models -------------------------------------------------------------------------------

    def model_shas(self, subscribers: Iterable[str]) -> dict[str, str]:
        """The signal hash of each cached model of ``subscribers`` (those that have one),
        without reading the models."""
        wanted = list(subscribers)
        out: dict[str, str] = {}
        with self._lock:
            for i in range(0, len(wanted), _CHUNK):
                part = wanted[i : i + _CHUNK]
                marks = ",".join("?" * len(part))
                out.update(
                    self._db.execute(
                        f"SELECT subscriber, sha FROM models WHERE subscriber IN ({marks})", part
                    )
                )
        return out

    def models(self, subscribers: Iterable[str]) -> dict[str, ReaderModel]:
        """The cached models of ``subscribers`` (those that have one)."""
        import numpy as np

        wanted = list(subscribers)
        out: dict[str, ReaderModel] = {}
        with self._lock:
            for i in range(0, len(wanted), _CHUNK):
                part = wanted[i : i + _CHUNK]
                marks = ",".join("?" * len(part))
                for email, sha, meta, weights, themes in self._db.execute(
                    "SELECT subscriber, sha, meta, weights, themes FROM models "
                    f"WHERE subscriber IN ({marks})",
                    part,
                ):
                    info = json.loads(meta)
                    w = np.frombuffer(weights, dtype=np.float32).copy()
                    vecs = np.frombuffer(themes, dtype=np.float16).astype(np.float32)
                    vecs = vecs.reshape(len(info["themes"]), len(w)) if info["themes"] else vecs
                    out[email] = ReaderModel(
                        weights=w,
                        bias=info["bias"],
                        signal=info["signal"],
                        count=info["count"],
                        sha=sha,
                        themes=tuple(
                            Theme(title, _origin(origin), _unit(vecs[k]))
                            for k, (title, origin) in enumerate(info["themes"])
                        ),
                    )
        return out

    def put_models(self, models: dict[str, ReaderModel], *, now: datetime) -> None:
        """Store freshly trained models (one transaction)."""
        import numpy as np

        rows: list[tuple[Any, ...]] = []
        for email, m in models.items():
            meta = {
                "bias": m.bias,
                "signal": m.signal,
                "count": m.count,
                "themes": [[t.title, t.origin] for t in m.themes],
            }
            themes = (
                np.stack([t.vector for t in m.themes]).astype(np.float16).tobytes()
                if m.themes
                else b""
            )
            rows.append(
                (
                    email,
                    m.sha,
                    now.astimezone(UTC).isoformat(),
                    json.dumps(meta, ensure_ascii=False),
                    m.weights.astype(np.float32).tobytes(),
                    themes,
                )
            )
        with self._lock:
            self._db.executemany("INSERT OR REPLACE INTO models VALUES (?, ?, ?, ?, ?, ?)", rows)
            self._db.commit()

    def drop_model(self, subscriber: str) -> None:
        """Forget the subscriber's cached model (the next send trains afresh)."""
        with self._lock:
            self._db.execute("DELETE FROM models WHERE subscriber = ?", (subscriber,))
            self._db.commit()

    # -- what readers removed -----------------------------------------------------------------

    def forget(self, subscriber: str, items: Iterable[str], *, actor: str, now: datetime) -> int:
        """Remove examples (``Example.item``: ``origin:key``) from what shapes a ranking.

        Args:
            subscriber: the normalized email.
            items: ``origin:key`` strings (``thumbs-up:2406.09246``, ``library:…``).
            actor: who asked (``web``, ``cli``, an operator's name): recorded.
            now: when (aware).

        Returns:
            How many items were newly forgotten (recorded in :attr:`state`). This cache's
            model of the reader is dropped when any was (another host's retrains anyway: the
            removed items are part of the signal's hash).
        """
        changed = self.state.forget(subscriber, items, actor=actor, now=now)
        if changed:
            self.drop_model(subscriber)
        return changed

    def unforget(self, subscriber: str, items: Iterable[str]) -> int:
        """Count removed items again (a paper rated anew after its rating was removed).

        Returns:
            How many items were forgotten and no longer are; the cached model is dropped
            when any was.
        """
        changed = self.state.unforget(subscriber, items)
        if changed:
            self.drop_model(subscriber)
        return changed

    def forgotten(self, subscribers: Iterable[str] | None = None) -> dict[str, frozenset[str]]:
        """Forgotten items per subscriber (all, or those given), from :attr:`state`."""
        return self.state.forgotten(subscribers)


def _origin(value: str) -> Origin:
    known: tuple[Origin, ...] = ("like", "dislike", "thumbs-up", "thumbs-down", "library")
    for origin in known:
        if value == origin:
            return origin
    return "library"


def _unit(vec: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    import numpy as np

    norm = float(np.linalg.norm(vec))
    return vec / norm if norm else vec
