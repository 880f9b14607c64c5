"""Local text embeddings: one small model interface and a persistent vector cache.

Nothing here touches the network. The default model is WordLlama ``l2_supercat`` (256
dimensions), whose weights and tokenizer ship inside the ``wordllama`` wheel; it needs numpy
only (no torch) and loads in about 0.3 s, 32 MiB of float32 weights. It is loaded with
``disable_download=True``. In wordllama 0.4.0 the loader looks for the bundled tokenizer in
``wordllama/tokenizer/`` while the wheel ships it in ``wordllama/tokenizers/``; passing the
package directory as ``cache_dir`` makes the loader's cache lookup find it (verified with
0.4.0.post1, the version pinned in ``pyproject.toml``).

An optional backend, ``sentence-transformers:/path/to/model``, loads a sentence-transformers
model from a local directory (``pip install 'digest[sentence-transformers]'``), offline.

Vectors are cached by ``(model name, SHA-256 of the text)`` in memory and in a small SQLite
file next to the state file (``DIGEST_VECTOR_CACHE``, default ``<state file>.vectors``): a paper
is embedded once per edition, an interest statement or a liked paper once for all subscribers
and runs. The cache is derived data: deleting the file only costs re-embedding.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from digest.errors import ConfigError

if TYPE_CHECKING:
    # numpy (~12 MB) is imported where vectors are made, not with this module: a send that
    # ranks by keywords alone, and every render worker, never loads it.
    import numpy as np
    import numpy.typing as npt

    Vectors = npt.NDArray[np.float32]
    """A ``(n, dim)`` float32 matrix of L2-normalized rows (cosine similarity = dot product)."""

log = logging.getLogger(__name__)


def __getattr__(name: str) -> Any:
    if name == "Vectors":  # the alias at run time, for callers that use it outside annotations
        import numpy as np
        import numpy.typing as npt

        return npt.NDArray[np.float32]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


WORDLLAMA = "wordllama"
"""Spec of the default model (WordLlama ``l2_supercat``, 256 dimensions)."""
WORDLLAMA_CONFIG = "l2_supercat"
WORDLLAMA_DIM = 256
SENTENCE_TRANSFORMERS_PREFIX = "sentence-transformers:"
"""Spec prefix of the optional backend: ``sentence-transformers:/path/to/model``."""
OFF = "off"
"""Spec that turns embeddings off (interests and liked papers then have no effect)."""
MAX_EMBED_CHARS = 4000
"""Characters of a text that are embedded (title + abstract fit; the rest is cut)."""
_EMBED_BATCH = 16
"""Texts per model call: wordllama pads a batch to its longest text (batch × tokens × 256
float32), so small batches keep the transient memory to a few MiB."""


class Embedder(Protocol):
    """A text embedding model: the one I/O boundary of semantic ranking.

    Attributes:
        name: identifies the model and its version in the vector cache key; two embedders
            with the same name must return the same vectors.
    """

    name: str

    def embed(self, texts: Sequence[str]) -> Vectors:
        """Embed ``texts``.

        Returns:
            A ``(len(texts), dim)`` float32 matrix of L2-normalized rows (a text with no
            known token gives a zero row).

        Raises:
            ConfigError: the model cannot be loaded.
        """
        ...


def _normalized(matrix: npt.NDArray[Any]) -> Vectors:
    import numpy as np

    out = np.ascontiguousarray(matrix, dtype=np.float32)
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    out /= norms
    return out


class WordLlamaEmbedder:
    """WordLlama ``l2_supercat`` (256 dimensions), loaded from the wheel, never downloaded.

    The model is loaded on the first :meth:`embed` (about 0.3 s), once per process.
    """

    name = f"wordllama-{WORDLLAMA_CONFIG}-{WORDLLAMA_DIM}"

    def __init__(self) -> None:
        self._model: Any = None
        self._lock = threading.Lock()

    def _load(self) -> Any:
        with self._lock:
            if self._model is None:
                self._model = load_wordllama()
            return self._model

    def release(self) -> bool:
        """Let go of the model (~50 MiB with its tokenizer); the next :meth:`embed` loads it
        again. A send calls this once its ranking context is built. Returns whether a model
        was loaded."""
        with self._lock:
            loaded, self._model = self._model is not None, None
        return loaded

    def embed(self, texts: Sequence[str]) -> Vectors:
        """See :meth:`Embedder.embed`."""
        import numpy as np

        if not texts:
            return np.zeros((0, WORDLLAMA_DIM), dtype=np.float32)
        model = self._load()
        raw = model.embed([t[:MAX_EMBED_CHARS] for t in texts], batch_size=_EMBED_BATCH)
        return _normalized(raw)


def load_wordllama() -> Any:
    """Load WordLlama ``l2_supercat``/256 from the installed wheel, with downloads disabled.

    Importing ``wordllama`` calls ``logging.basicConfig(level=INFO)`` (a library configuring
    the root logger); the root logger's handlers and level are restored afterwards.

    Returns:
        The ``WordLlamaInference`` object.

    Raises:
        ConfigError: ``wordllama`` is not installed or its files are missing.
    """
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        import wordllama
        from wordllama import WordLlama
    except ImportError as e:
        raise ConfigError(
            f"the wordllama package is not installed ({e}); reinstall digest, or set "
            "DIGEST_EMBEDDINGS=off"
        ) from None
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    package_dir = Path(wordllama.__file__).parent
    try:
        return WordLlama.load(
            config=WORDLLAMA_CONFIG,
            dim=WORDLLAMA_DIM,
            cache_dir=package_dir,  # where the wheel's tokenizers/ folder is (see module doc)
            disable_download=True,
        )
    except (FileNotFoundError, OSError, ValueError) as e:
        raise ConfigError(
            f"cannot load the WordLlama model from {package_dir}: {e}; reinstall wordllama "
            "(pip install --force-reinstall wordllama), or set DIGEST_EMBEDDINGS=off"
        ) from None


class SentenceTransformerEmbedder:
    """A sentence-transformers model from a local directory (optional extra), offline.

    Args:
        path: directory holding the model (``config.json``, weights...).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.name = f"sentence-transformers:{path.resolve()}"
        self._model: Any = None
        self._lock = threading.Lock()

    def _load(self) -> Any:
        with self._lock:
            if self._model is None:
                if not self.path.is_dir():
                    raise ConfigError(
                        f"DIGEST_EMBEDDINGS: model directory {self.path} does not exist"
                    )
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
                try:
                    from sentence_transformers import SentenceTransformer
                except ImportError:
                    raise ConfigError(
                        "DIGEST_EMBEDDINGS uses sentence-transformers, which is not installed: "
                        "pip install 'digest[sentence-transformers]'"
                    ) from None
                self._model = SentenceTransformer(str(self.path), local_files_only=True)
            return self._model

    def release(self) -> bool:
        """Let go of the model; the next :meth:`embed` loads it again. Returns whether a
        model was loaded."""
        with self._lock:
            loaded, self._model = self._model is not None, None
        return loaded

    def embed(self, texts: Sequence[str]) -> Vectors:
        """See :meth:`Embedder.embed`."""
        import numpy as np

        model = self._load()
        raw = model.encode([t[:MAX_EMBED_CHARS] for t in texts], batch_size=_EMBED_BATCH)
        return _normalized(np.asarray(raw))


def build_embedder(spec: str) -> Embedder | None:
    """The embedder named by ``spec`` (``DIGEST_EMBEDDINGS``); ``None`` for ``off``.

    Args:
        spec: ``wordllama``, ``off`` or ``sentence-transformers:/path/to/model``.

    Raises:
        ConfigError: an unknown spec.
    """
    spec = spec.strip()
    if spec == WORDLLAMA:
        return WordLlamaEmbedder()
    if spec == OFF:
        return None
    if spec.startswith(SENTENCE_TRANSFORMERS_PREFIX):
        path = spec[len(SENTENCE_TRANSFORMERS_PREFIX) :].strip()
        if not path:
            raise ConfigError(
                "DIGEST_EMBEDDINGS: give the model directory, sentence-transformers:/path"
            )
        return SentenceTransformerEmbedder(Path(path).expanduser())
    raise ConfigError(
        f"DIGEST_EMBEDDINGS: unknown model {spec!r}; use 'wordllama', 'off' or "
        "'sentence-transformers:/path/to/model'"
    )


def text_key(text: str) -> str:
    """The cache key of a text: hex SHA-256 of its UTF-8 bytes."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


class VectorCache:
    """Vectors by ``(model, text)``, in memory and optionally in a SQLite file.

    Safe to share between threads; several processes may use the same file (SQLite WAL,
    ``INSERT OR IGNORE``: the same text always gets the same vector).

    Args:
        path: the cache file; ``None`` keeps vectors in memory only.
    """

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self._memory: dict[tuple[str, str], npt.NDArray[np.float32]] = {}
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        if path is not None:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                db = sqlite3.connect(path, check_same_thread=False, timeout=30)
                db.execute("PRAGMA journal_mode=WAL")
                db.execute(
                    "CREATE TABLE IF NOT EXISTS vectors (model TEXT NOT NULL, "
                    "text_sha256 TEXT NOT NULL, vector BLOB NOT NULL, "
                    "PRIMARY KEY (model, text_sha256))"
                )
                db.commit()
                self._db = db
            except sqlite3.Error as e:
                log.warning("vector cache %s unusable (%s); vectors are kept in memory", path, e)

    def close(self) -> None:
        """Close the file (the in-memory vectors stay usable)."""
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def vectors(self, embedder: Embedder, texts: Sequence[str]) -> Vectors:
        """The vectors of ``texts`` under ``embedder``, embedding only the ones not cached.

        Returns:
            A ``(len(texts), dim)`` matrix, row ``i`` for ``texts[i]``.

        Raises:
            ConfigError: the model cannot be loaded.
        """
        import numpy as np

        keys = [text_key(t) for t in texts]
        found: dict[str, npt.NDArray[np.float32]] = {}
        with self._lock:
            for key in keys:
                vec = self._memory.get((embedder.name, key))
                if vec is not None:
                    found[key] = vec
            missing = [k for k in dict.fromkeys(keys) if k not in found]
            if missing and self._db is not None:
                found.update(self._read(embedder.name, missing))
                for key in missing:
                    if key in found:
                        self._memory[(embedder.name, key)] = found[key]
        todo = {k: t for k, t in zip(keys, texts, strict=True) if k not in found}
        if todo:
            fresh = embedder.embed(list(todo.values()))
            with self._lock:
                rows = []
                for key, vec in zip(todo, fresh, strict=True):
                    vec = np.array(vec, dtype=np.float32)
                    found[key] = vec
                    self._memory[(embedder.name, key)] = vec
                    rows.append((embedder.name, key, vec.tobytes()))
                self._store(rows)
        if not keys:
            return np.zeros((0, 0), dtype=np.float32)
        return np.stack([found[k] for k in keys])

    def _read(self, model: str, keys: Sequence[str]) -> dict[str, npt.NDArray[np.float32]]:
        import numpy as np

        assert self._db is not None
        out: dict[str, npt.NDArray[np.float32]] = {}
        chunk = 500
        try:
            for i in range(0, len(keys), chunk):
                part = keys[i : i + chunk]
                marks = ",".join("?" * len(part))
                for key, blob in self._db.execute(
                    f"SELECT text_sha256, vector FROM vectors WHERE model = ? "
                    f"AND text_sha256 IN ({marks})",
                    (model, *part),
                ):
                    out[key] = np.frombuffer(blob, dtype=np.float32).copy()
        except sqlite3.Error as e:
            log.warning("vector cache %s unreadable (%s); re-embedding", self.path, e)
        return out

    def _store(self, rows: Sequence[tuple[str, str, bytes]]) -> None:
        if self._db is None or not rows:
            return
        try:
            self._db.executemany("INSERT OR IGNORE INTO vectors VALUES (?, ?, ?)", rows)
            self._db.commit()
        except sqlite3.Error as e:
            log.warning("vector cache %s not written (%s)", self.path, e)
