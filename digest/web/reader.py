"""What the web pages do with a reader's library and model (issue 23), without HTTP.

* :class:`LibraryFiles`: uploaded library files (BibTeX, RIS, CSL-JSON), parsed with the same
  parser and limits as a ``library:`` file (:func:`~digest.ranking.library.parse_library`),
  then kept in ``libraries/`` next to the subscribers file, named by the SHA-256 of their bytes
  (``libraries/3f2a…-zotero.bib``), and referenced from the subscriber's ``library:`` list,
  which the sender reads. Bounded: :data:`MAX_UPLOAD_BYTES` a file,
  :data:`~digest.subscribers.model.MAX_LIBRARY_FILES` per subscriber, :data:`MAX_STORED_FILES`
  files and :data:`MAX_STORED_BYTES` bytes in the folder. A file no subscriber lists any more
  is deleted. A broken or oversized file is refused before anything is written.
* :func:`check_authors`: an ORCID iD, arXiv author or Semantic Scholar id given on a web form
  is fetched once (through the bounded HTTP client) before it is saved; a 404, a server that
  trickles or a reply in the wrong shape is an error next to the field, and nothing is saved.
  The fetched list goes into the reader cache, so the next send need not fetch it again.
* :func:`papers_to_rate`: about ten recent papers worth a 👍/👎 (the onboarding page).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from digest.errors import ConfigError, SourceError
from digest.models import Edition, Feedback, Paper
from digest.ranking.authors import AuthorKind, author_setting, fetch_author
from digest.ranking.learning import ReaderLearner
from digest.ranking.library import entries_sha, library_format, parse_library
from digest.ranking.semantic import paper_text
from digest.settings import Settings
from digest.subscribers import Subscriber
from digest.subscribers.model import MAX_LIBRARY_FILES

log = logging.getLogger(__name__)

LIBRARY_DIR = "libraries"
"""Folder of uploaded library files, next to the subscribers file."""
MAX_UPLOAD_BYTES = 2 * 2**20
"""Largest library file accepted by upload (2 MiB: about 2,000 entries with abstracts)."""
UPLOAD_BODY_BYTES = MAX_UPLOAD_BYTES + 64 * 1024
"""Request body limit of the upload route: the file and the form around it (the other routes
keep :data:`~digest.web.security.MAX_BODY_BYTES`)."""
MAX_STORED_FILES = 5000
"""Most files in ``libraries/`` (an upload beyond is refused, with a page saying so)."""
MAX_STORED_BYTES = 1024 * 2**20
"""Most bytes in ``libraries/`` (1 GiB)."""
RATE_COUNT = 10
"""Papers offered on the onboarding page."""
RATE_EDITIONS = 3
"""Recent editions whose papers are candidates for the onboarding page."""
_SAFE_STEM_RE = re.compile(r"[^A-Za-z0-9_-]+")
_STEM_CHARS = 40


class UploadRefused(Exception):
    """An uploaded library cannot be kept (broken, too large, too many): nothing was written.

    Attributes:
        message: one sentence for the subscriber (names the file and, where the parser says,
            the line).
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True, slots=True)
class StoredLibrary:
    """An accepted upload.

    Attributes:
        path: what the subscriber's ``library:`` list holds (``libraries/<sha>-<name>.bib``,
            relative to the subscribers file).
        entries: the papers read from it.
    """

    path: str
    entries: int


class LibraryFiles:
    """The uploaded library files of one installation (``libraries/`` next to the YAML).

    Args:
        settings: ``DIGEST_SUBSCRIBERS`` (the folder is beside it).
    """

    def __init__(self, settings: Settings) -> None:
        self.base = settings.subscribers.parent
        self.folder = self.base / LIBRARY_DIR
        self._lock = asyncio.Lock()

    @property
    def lock(self) -> asyncio.Lock:
        """Held while a file is added or removed (and the YAML references changed)."""
        return self._lock

    def accept(self, filename: str, data: bytes, current: Sequence[str]) -> StoredLibrary:
        """Parse an upload and write it into the folder (the YAML is the caller's).

        Args:
            filename: the name the browser sent (its suffix gives the format).
            data: the file's bytes.
            current: the subscriber's ``library:`` list now.

        Returns:
            Where it was stored and how many papers it holds.

        Raises:
            UploadRefused: no file chosen, an unknown format, over :data:`MAX_UPLOAD_BYTES`,
                not parseable (the parser's message: ``NAME:LINE: …``), no entry, already
                :data:`~digest.subscribers.model.MAX_LIBRARY_FILES` files, or the folder is
                full. Nothing was written.
        """
        name = Path(filename.replace("\\", "/")).name
        if not name or not data:
            raise UploadRefused("Choose a library file to upload (.bib, .ris or .json).")
        fmt = library_format(name)
        if fmt is None:
            raise UploadRefused(
                f"{_shown(name)}: unknown format; export your library as BibTeX (.bib), RIS "
                "(.ris) or CSL-JSON (.json)."
            )
        if len(data) > MAX_UPLOAD_BYTES:
            raise UploadRefused(too_large_message(name))
        try:
            entries = parse_library(data, name=_shown(name), fmt=fmt)
        except ConfigError as e:
            raise UploadRefused(f"{e}. Nothing was saved.") from None
        if not entries:
            raise UploadRefused(f"{_shown(name)}: no paper with a title in this file.")
        path = self.relative(data, name)
        if path in current:
            return StoredLibrary(path, len(entries))
        if len(current) >= MAX_LIBRARY_FILES:
            raise UploadRefused(
                f"You have {len(current)} library files already, the most there may be; "
                "remove one first."
            )
        target = self.base / path
        if not target.exists():
            self._check_room(len(data))
            _write_atomically(target, data)
        log.info("library upload stored: %s (%d entries)", target.name, len(entries))
        return StoredLibrary(path, len(entries))

    def relative(self, data: bytes, name: str) -> str:
        """``libraries/<first 16 hex of SHA-256>-<safe stem><suffix>`` for an upload."""
        digest = hashlib.sha256(data).hexdigest()[:16]
        stem = _SAFE_STEM_RE.sub("-", Path(name).stem).strip("-")[:_STEM_CHARS] or "library"
        return f"{LIBRARY_DIR}/{digest}-{stem}{Path(name).suffix.lower()}"

    def is_upload(self, path: str) -> bool:
        """Whether a ``library:`` path is one of ours (``libraries/…``)."""
        return path.startswith(LIBRARY_DIR + "/") and "/" not in path[len(LIBRARY_DIR) + 1 :]

    def delete_unused(self, path: str, subscribers: Iterable[Subscriber]) -> bool:
        """Delete an uploaded file that no subscriber lists any more; ``True`` if deleted."""
        if not self.is_upload(path) or any(path in s.library for s in subscribers):
            return False
        try:
            (self.base / path).unlink()
        except FileNotFoundError:
            return False
        except OSError as e:
            log.warning("library %s not deleted: %s", path, e)
            return False
        return True

    def _check_room(self, size: int) -> None:
        files = list(self.folder.iterdir()) if self.folder.is_dir() else []
        used = sum(f.stat().st_size for f in files if f.is_file())
        if len(files) >= MAX_STORED_FILES or used + size > MAX_STORED_BYTES:
            log.warning("library upload refused: %s is full (%d files)", self.folder, len(files))
            raise UploadRefused(
                "This list cannot store more library files right now; please give your ORCID "
                "iD or arXiv author name instead, or ask the list's operator."
            )


def too_large_message(name: str = "") -> str:
    """What an upload over :data:`MAX_UPLOAD_BYTES` is told."""
    what = f"{_shown(name)} is" if name else "This file is"
    return (
        f"{what} larger than {MAX_UPLOAD_BYTES // 2**20} MB. Export a smaller part of your "
        "library (a collection, or the last few years) and upload that. Nothing was saved."
    )


def _shown(name: str) -> str:
    """A file name as pages and errors show it (control characters out, at most 80)."""
    clean = "".join(ch if ch.isprintable() else "?" for ch in name)
    return clean[:80] or "the file"


def _write_atomically(target: Path, data: bytes) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".upload-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


async def check_authors(
    current: Subscriber,
    values: Mapping[str, Any],
    learner: ReaderLearner,
    settings: Settings,
) -> dict[str, str]:
    """Fetch each author iD a form sets anew; errors by field (``{}``: all fetched).

    An iD already in the file is not fetched again (the weekly refresh does that), nor one whose
    API this list has no endpoint for (``DIGEST_ORCID_API_URL`` … unset: saved as the file
    would take it; the send warns). A fetched list is stored in the reader cache, so the next
    send uses it without fetching.

    Args:
        current: the subscriber as the file has them now.
        values: the validated form values (:data:`~digest.web.service.AUTHOR_ID_FIELDS`).
        learner: its cache receives the lists.
        settings: the endpoints and HTTP bounds.

    Returns:
        Field → one sentence for the page, for each iD that could not be fetched.
    """
    errors: dict[str, str] = {}
    kinds: tuple[AuthorKind, ...] = ("orcid", "arxiv_author", "semantic_scholar")
    for kind in kinds:
        ident = values.get(kind)
        if not ident or ident == getattr(current, kind) or not author_setting(kind, settings):
            continue  # unchanged, or the list fetches no such lists (the send says so)
        try:
            entries = await fetch_author(kind, str(ident), settings)
        except SourceError as e:
            errors[kind] = f"could not fetch the papers of {ident}: {e.detail}. Nothing was saved."
            continue
        if not entries:
            errors[kind] = f"no papers found for {ident}; check it. Nothing was saved."
            continue
        learner.cache.put_library(
            f"{kind}:{ident}", "", entries_sha(entries), entries, now=learner.now()
        )
    return errors


async def papers_to_rate(
    sub: Subscriber,
    feedback: Feedback | None,
    candidates: Sequence[Paper],
    learner: ReaderLearner,
    vectors: Any,
    embedder: Any,
) -> list[Paper]:
    """About :data:`RATE_COUNT` of ``candidates`` whose 👍/👎 would teach the most.

    Args:
        sub: the subscriber.
        feedback: their 👍/👎 (papers rated are never offered again).
        candidates: recent papers (the last editions').
        learner: the reader model (uncertain papers first when there is one).
        vectors: the :class:`~digest.ranking.embeddings.VectorCache`.
        embedder: the embedding model (only for papers the cache lacks).
    """
    by_id = {p.arxiv_id: p for p in candidates}
    if not by_id or embedder is None:
        return []
    ids = list(by_id)

    def pick() -> list[str]:
        matrix = vectors.vectors(embedder, [paper_text(by_id[i]) for i in ids])
        found = {pid: matrix[k] for k, pid in enumerate(ids)}
        return learner.to_rate(sub, ids, found, feedback, n=RATE_COUNT)

    picked = await asyncio.to_thread(pick)
    return [by_id[i] for i in picked]


def recent_editions(sent: Sequence[tuple[str, datetime]], today: datetime) -> list[Edition]:
    """The editions whose papers the onboarding page offers: the last :data:`RATE_EDITIONS`
    sent daily editions, else yesterday's (UTC)."""
    out: list[Edition] = []
    for key, _ in sent:
        try:
            out.append(Edition.daily(date.fromisoformat(key)))
        except ValueError:
            continue  # a weekly edition: its days are daily editions too
        if len(out) == RATE_EDITIONS:
            break
    return out or [Edition.daily((today - timedelta(days=1)).date())]
