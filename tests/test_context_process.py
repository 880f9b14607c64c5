"""A large send computes its ranking context in a child process: the same context as one
built in the sending process (vectors, similarity tables, reader models' scores), the child's
log records in the sending process's log, and a failed child is a warning, not a lost send.
The real WordLlama model is used (offline, from its wheel)."""

from __future__ import annotations

import asyncio
import email
import email.policy
import logging
import re
import shutil
import sys
from collections.abc import Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest

from digest.core import Digest
from digest.models import Edition, Paper
from digest.pipeline.contextproc import compute
from digest.ranking import RankContext, rank
from digest.ranking.embeddings import VectorCache, WordLlamaEmbedder
from digest.ranking.readercache import ReaderCache
from digest.settings import Settings
from digest.sources.file import FileSource
from digest.subscribers import Subscriber
from tests.factories import EXAMPLE_DAYS, MESSAGE_SETTINGS, make_settings

DAY = date(2026, 8, 18)
EDITION = Edition.daily(DAY)
NOW = datetime(2026, 8, 18, 7, 0, tzinfo=UTC)


def papers_of(day: date) -> list[Paper]:
    return asyncio.run(FileSource(EXAMPLE_DAYS).fetch(day))


PAPERS = papers_of(DAY)
OLDER = papers_of(date(2026, 8, 17))


def library(path: Path) -> None:
    """A BibTeX library of five papers of another day (title and abstract)."""
    path.write_text(
        "\n".join(
            f"@article{{e{i}, title = {{{p.title}}}, abstract = {{{p.abstract}}}, year = 2026}}"
            for i, p in enumerate(OLDER[:5])
        ),
        encoding="utf-8",
    )


SUBSCRIBERS = [
    Subscriber(email="interests@example.org", interests=("robots that learn to walk",)),
    Subscriber(email="liked@example.org", like=(OLDER[6].arxiv_id,), dislike=(PAPERS[0].arxiv_id,)),
    Subscriber(email="library@example.org", library=("mine.bib",), max_papers=5),
    Subscriber(email="rated@example.org", keywords=("video",)),
    Subscriber(email="keywords@example.org", keywords=("diffusion",)),
]


def settings_in(root: Path, caches: str) -> Settings:
    """One state in ``root``; vector and reader caches of their own (``caches``), so that each
    build embeds and trains from nothing."""
    return make_settings(
        subscribers=root / "subscribers.yaml",
        state_path=root / "state.sqlite3",
        vector_cache=root / caches / "vectors.sqlite3",
        reader_cache=root / caches / "reader.sqlite3",
    )


@pytest.fixture
def root(tmp_path: Path) -> Path:
    library(tmp_path / "mine.bib")
    (tmp_path / "subscribers.yaml").write_text("subscribers: []\n", encoding="utf-8")
    with Digest(settings_in(tmp_path, "setup")) as digest:
        digest.store.save_paper(OLDER[6])
        for p in [*OLDER[7:11], PAPERS[2]]:
            digest.store.record_feedback("rated@example.org", p.arxiv_id, "like")
        digest.store.record_feedback("rated@example.org", OLDER[12].arxiv_id, "dislike")
        digest.store.save_paper(OLDER[12])
        for p in OLDER[7:11]:
            digest.store.save_paper(p)
    return tmp_path


async def built(settings: Settings, *, child: bool) -> RankContext:
    with Digest(settings) as digest:
        digest.ranking.learner._now = NOW
        if child:
            digest.ranking.process_min_batch = 1
            return await digest.ranking.build(PAPERS, SUBSCRIBERS, edition=EDITION)
        return digest.ranking.build_now(PAPERS, SUBSCRIBERS, edition=EDITION)


async def test_a_context_built_in_a_child_process_is_the_one_built_here(
    root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO):
        there = await built(settings_in(root, "child"), child=True)
    here = await built(settings_in(root, "here"), child=False)
    # What ranking uses: the same floats (tables of the same product, the same models).
    assert set(there.learned) == {"library@example.org", "rated@example.org"}
    assert there.learned == here.learned
    assert there.paper_index == here.paper_index
    assert there.similarities == here.for_workers([PAPERS]).similarities
    assert there.feedback == here.feedback and there.seen == here.seen
    assert not there.vectors  # nothing here needs numpy
    for sub in SUBSCRIBERS:
        assert rank(PAPERS, sub, there) == rank(PAPERS, sub, here), sub.email
    # The child's log records come out of this process's loggers.
    trained = [r for r in caplog.records if r.name == "digest.ranking.learning"]
    assert [r.getMessage() for r in trained] == ["reader models: 2 trained, 0 from the cache"]


async def test_a_failed_child_process_is_a_warning_and_the_context_is_built_here(
    root: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No interpreter where there was one: the child cannot start.
    monkeypatch.setattr(sys, "executable", str(root / "no-such-python"))
    with caplog.at_level(logging.WARNING):
        there = await built(settings_in(root, "child"), child=True)
    here = await built(settings_in(root, "here"), child=False)
    assert "building the ranking context in this process" in caplog.text
    assert there.learned == here.learned and there.vectors.keys() == here.vectors.keys()


async def test_a_small_send_builds_its_context_here(root: Path) -> None:
    settings = settings_in(root, "here")
    with Digest(settings) as digest:
        context = await digest.ranking.build(PAPERS, SUBSCRIBERS, edition=EDITION)
    assert context.vectors  # in this process: the vectors themselves
    assert len(SUBSCRIBERS) < digest.ranking.process_min_batch


RANDOM = re.compile(rb"Message-ID: <[^>]+>|=_[0-9a-f]{32}")
"""What differs between two sends of the same messages: the Message-ID and MIME boundary."""


def messages(outbox: Path) -> dict[str, bytes]:
    """Each recipient's message in a Maildir, its Message-ID and MIME boundary blanked."""
    out: dict[str, bytes] = {}
    for path in (outbox / "new").iterdir():
        raw = path.read_bytes()
        to = email.message_from_bytes(raw, policy=email.policy.default)["To"].addresses[0]
        out[to.addr_spec] = RANDOM.sub(b"", raw)
    return out


async def sent(root: Path, caches: str, *, child: bool) -> dict[str, bytes]:
    """The messages of a send of :data:`SUBSCRIBERS` (a copy of the state, into an outbox)."""
    (root / caches).mkdir()
    shutil.copyfile(root / "state.sqlite3", root / caches / "state.sqlite3")
    settings = make_settings(
        subscribers=root / "subscribers.yaml",
        state_path=root / caches / "state.sqlite3",
        vector_cache=root / caches / "vectors.sqlite3",
        reader_cache=root / caches / "reader.sqlite3",
        outbox=root / caches / "outbox",
        sources=f"file:{EXAMPLE_DAYS}",
        **MESSAGE_SETTINGS,
    )
    with Digest(settings, now=lambda: NOW) as digest:
        digest.ranking.learner._now = NOW
        if child:
            digest.ranking.process_min_batch = 1
        summary = await digest.send(EDITION, SUBSCRIBERS)
    assert summary.sent == len(SUBSCRIBERS), summary.errors
    return messages(root / caches / "outbox")


async def test_a_send_whose_context_comes_from_a_child_process_sends_the_same_bytes(
    root: Path,
) -> None:
    # Interests, a liked paper, a library and 👍/👎 ranked with the child's tables and scores:
    # every message byte for byte the one ranked with a context built in this process.
    there = await sent(root, "child", child=True)
    here = await sent(root, "here", child=False)
    assert there.keys() == {s.email for s in SUBSCRIBERS}
    for email_, raw in here.items():
        assert there[email_] == raw, email_


# -- the model goes before the training ------------------------------------------------------


class Watched:
    """The real model, watched: how many texts each call embeds, and how many reader models
    the reader cache held when the model was let go."""

    def __init__(self, cache: ReaderCache) -> None:
        self.model = WordLlamaEmbedder()
        self.name = self.model.name
        self.cache = cache
        self.calls: list[int] = []
        self.models_at_release: list[int] = []

    def embed(self, texts: Sequence[str]) -> Any:
        self.calls.append(len(texts))
        return self.model.embed(texts)

    def release(self) -> bool:
        emails = [s.email for s in SUBSCRIBERS]
        self.models_at_release.append(len(self.cache.model_shas(emails)))
        return self.model.release()


def test_the_model_embeds_every_text_first_and_is_let_go_before_any_training(
    root: Path,
) -> None:
    # Its ~30 MiB and the training's data are never held at once: the examples of every reader
    # whose model is stale are embedded first (the same calls as before, so the same vectors),
    # then the model goes, then the readers are trained. Before, it went after the training.
    settings = settings_in(root, "here")
    with Digest(settings) as digest:
        learner = digest.ranking.learner
        learner._now = NOW
        watched = Watched(learner.cache)
        context = compute(
            PAPERS,
            SUBSCRIBERS,
            embedder=lambda: watched,
            cache=VectorCache(None),
            learner=learner,
            liked=digest.store.find_papers([OLDER[6].arxiv_id, *(p.arxiv_id for p in OLDER[7:13])]),
            seen={},
            feedback=digest.ranking.feedback(SUBSCRIBERS),
        )
        assert set(context.learned) == {"library@example.org", "rated@example.org"}
        assert watched.models_at_release[0] == 0  # nothing trained yet when it was let go
        assert len(learner.cache.model_shas(list(context.learned))) == 2  # trained after
    assert len(watched.calls) >= 2 and not watched.model._model
