"""The WordLlama embedder reads the wheel's files itself: the same vectors as wordllama's own
``WordLlamaInference.embed``, bit for bit, on real paper texts and hostile ones."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from digest.ranking.embeddings import (
    MAX_EMBED_CHARS,
    WORDLLAMA_CONFIG,
    WORDLLAMA_DIM,
    WordLlamaEmbedder,
    _normalized,
)
from digest.ranking.semantic import paper_text
from digest.sources.file import FileSource
from tests.factories import EXAMPLE_DAYS

HOSTILE = [
    "",
    " ",
    "\n\t\r",
    "\x00\x01\x7f",
    "Ünïcödé ΑΒΓ 日本語の論文 😀🤖 עברית العربية",
    "a" * 5000,  # cut at MAX_EMBED_CHARS, as before
    "x" * 3999 + "yz",
    "supercalifragilisticexpialidocious" * 40,
    "robots that learn to walk",
    "<script>alert(1)</script> &amp; ' \" \\",
]


@pytest.fixture(scope="module")
def wordllama() -> Iterator[Any]:
    """wordllama's own inference object, loaded the way digest loaded it before (offline, the
    root logger restored: importing wordllama calls logging.basicConfig)."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        import wordllama
        from wordllama import WordLlama
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    yield WordLlama.load(
        config=WORDLLAMA_CONFIG,
        dim=WORDLLAMA_DIM,
        cache_dir=Path(wordllama.__file__).parent,
        disable_download=True,
    )


def example_texts() -> list[str]:
    source = FileSource(EXAMPLE_DAYS)
    days = sorted(date.fromisoformat(p.stem) for p in EXAMPLE_DAYS.glob("*.json"))
    papers = [p for day in days[:3] for p in asyncio.run(source.fetch(day))]
    return [paper_text(p) for p in papers]


def test_the_vectors_are_wordllamas_own_bit_for_bit(wordllama: Any) -> None:
    # Real abstracts and hostile texts mixed, so that batches of 16 pad to different lengths
    # (a text's vector depends on its batch's padded length in the last bits).
    texts = example_texts()
    texts[5:5] = HOSTILE
    assert len(texts) > 3 * 16
    ours = WordLlamaEmbedder().embed(texts)
    theirs = wordllama.embed([t[:MAX_EMBED_CHARS] for t in texts], batch_size=16)
    assert ours.dtype == np.float32 and ours.shape == (len(texts), WORDLLAMA_DIM)
    assert np.array_equal(ours, _normalized(theirs))
    assert not np.any(ours[5])  # the empty text: a zero row, as before


def test_a_released_model_loads_again_with_the_same_vectors() -> None:
    embedder = WordLlamaEmbedder()
    first = embedder.embed(HOSTILE)
    assert embedder.release() and not embedder.release()
    assert np.array_equal(embedder.embed(HOSTILE), first)
    assert embedder.embed([]).shape == (0, WORDLLAMA_DIM)
