"""The per-reader model (issue 23): trained from every rating and the library, cached by the
hash of its signal, blended into the hybrid score, named in the why line; and the functions the
preferences and onboarding pages will call (what shapes a ranking, forget, reset, what to rate).
The real WordLlama model is used (offline, from its wheel)."""

from __future__ import annotations

import sqlite3
import textwrap
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np

from digest.core import Digest
from digest.models import Edition, Feedback, Paper
from digest.ranking import build_context, rank
from digest.ranking.embeddings import VectorCache, WordLlamaEmbedder
from digest.ranking.learning import ReaderLearner
from digest.ranking.library import LibraryEntry
from digest.ranking.reader import (
    RECENCY_FLOOR,
    TITLE_ONLY_WEIGHT,
    UNDATED_WEIGHT,
    informative,
    learned_for,
    reader_examples,
    train,
)
from digest.ranking.readercache import ReaderCache
from digest.ranking.semantic import paper_text
from digest.state import open_state
from digest.subscribers import Subscriber
from tests.factories import make_settings

EMBEDDER = WordLlamaEmbedder()
NOW = datetime(2026, 8, 20, 7, 0, tzinfo=UTC)
TOPICS = {
    "robot": [
        "Quadruped locomotion policies trained in simulation transfer to the physical robot",
        "Dexterous robot hand manipulation learned from human video demonstrations",
        "A vision-language-action model controls a robot arm to pick and place objects",
        "Sim-to-real reinforcement learning for legged robots on rough terrain",
        "Imitation learning of bimanual robot manipulation policies from teleoperation",
    ],
    "speech": [
        "A text-to-speech model with zero-shot voice cloning",
        "Automatic speech recognition for low-resource languages with self-supervised audio",
        "Music generation from text prompts with a latent audio diffusion model",
        "A spoken dialogue model that listens and speaks in real time",
        "Speaker diarization and speech separation in noisy meetings",
    ],
}


def paper(i: int, title: str, upvotes: int = 10) -> Paper:
    return Paper(arxiv_id=f"2608.{i:05d}", title=title, abstract=title + ".", upvotes=upvotes)


EDITION = [paper(100 + i, t, upvotes=50 - i) for i, t in enumerate(TOPICS["speech"])] + [
    paper(200, "Quadruped robots learn to walk on ice with simulation-trained policies", 1),
    paper(201, "Large language model agents browse the web to book travel", 40),
]
LIBRARY = [
    LibraryEntry(title=t, abstract=t + ".", year=2025, added=date(2026, 5, 1))
    for t in TOPICS["robot"]
]


def vectors_of(papers: list[Paper], entries: list[LibraryEntry] = ()) -> dict[str, np.ndarray]:  # type: ignore[assignment]
    texts = {p.arxiv_id: paper_text(p) for p in papers} | {e.key: e.text for e in entries}
    mat = EMBEDDER.embed(list(texts.values()))
    return {k: mat[i] for i, k in enumerate(texts)}


# -- the signal --------------------------------------------------------------------------------


def test_every_rating_and_the_library_is_one_signal_weighted_by_recency() -> None:
    sub = Subscriber(email="r@example.org", like=("2401.00001",), dislike=("2401.00002",))
    fb = Feedback(likes=("2401.00003", "2401.00002"), dislikes=("2401.00004", "2401.00003"))
    library = [
        LibraryEntry(title="Recent", abstract="a", added=date(2026, 8, 1)),
        LibraryEntry(title="Old", abstract="a", year=2006),
        LibraryEntry(title="Undated, title only"),
        LibraryEntry(title="Also 👍 by id", abstract="a", arxiv_id="2401.00004"),
    ]
    examples = reader_examples(sub, fb, library, today=date(2026, 8, 1), forgotten=())
    got = {(e.key if not e.key.startswith("library:") else e.title): e for e in examples}
    assert (got["2401.00001"].label, got["2401.00001"].origin) == (1, "like")
    assert (got["2401.00002"].label, got["2401.00002"].origin) == (0, "dislike")  # YAML wins
    assert (got["2401.00003"].label, got["2401.00003"].origin) == (0, "thumbs-down")  # latest
    assert (got["2401.00004"].label, got["2401.00004"].origin) == (0, "thumbs-down")
    assert "Also 👍 by id" not in got  # rated already: counted once, as rated
    assert got["Recent"].weight == 1.0
    assert got["Old"].weight == RECENCY_FLOOR
    assert got["Undated, title only"].weight == UNDATED_WEIGHT * TITLE_ONLY_WEIGHT
    forgotten = reader_examples(
        sub, fb, library, today=date(2026, 8, 1), forgotten={"thumbs-down:2401.00003"}
    )
    assert "2401.00003" not in {e.key for e in forgotten}


def test_a_model_trained_on_a_robotics_library_prefers_robotics() -> None:
    vectors = vectors_of(EDITION, LIBRARY)
    examples = reader_examples(
        Subscriber(email="r@example.org"), None, LIBRARY, today=date(2026, 8, 1)
    )
    background = np.stack([vectors[p.arxiv_id] for p in EDITION])
    model = train(examples, vectors, background)
    assert model is not None and model.count == 5
    probs = model.probabilities(background)
    robot = [p.arxiv_id for p in EDITION].index("2608.00200")
    assert int(np.argmax(probs)) == robot
    assert model.themes and model.themes[0].origin == "library"
    assert train(examples[:2], vectors, background) is None  # too little signal


# -- ranking with the model ----------------------------------------------------------------------


def context_with_models(subs: list[Subscriber], library: list[LibraryEntry]) -> object:
    context = build_context(EDITION, subs, embedder=EMBEDDER, cache=VectorCache(None))
    vectors = vectors_of(EDITION, library)
    matrix = np.stack([vectors[p.arxiv_id] for p in EDITION])
    models = {}
    for sub in subs:
        if sub.library:
            examples = reader_examples(sub, None, library, today=date(2026, 8, 1))
            model = train(examples, vectors, matrix)
            assert model is not None
            models[sub.email] = model
    context.vectors = {**context.vectors, **{p.arxiv_id: vectors[p.arxiv_id] for p in EDITION}}
    context.learned = learned_for(models, matrix)
    context.paper_index = {p.arxiv_id: j for j, p in enumerate(EDITION)}
    return context


def test_the_dual_and_the_primal_fit_reach_the_same_model() -> None:
    """A reader with fewer examples than dimensions is fitted on the n x n dual system (the
    usual case, ~8x cheaper); one with more on the primal one: the same optimum either way."""
    from digest.ranking.reader import MODEL_L2, _fit_dual, _fit_primal, one_blas_thread

    texts = [*TOPICS["robot"], *TOPICS["speech"]]
    base = EMBEDDER.embed(texts).astype(np.float64)
    rng = np.random.default_rng(23)
    for n in (12, 300):  # below and above the 256 dimensions
        rows = base[rng.integers(0, len(base), n)] + 0.05 * rng.standard_normal((n, 256))
        x = rows / np.linalg.norm(rows, axis=1, keepdims=True)
        y = (rng.random(n) < 0.4).astype(np.float64)
        s = rng.uniform(0.2, 1.0, n)
        with one_blas_thread():
            w_dual, b_dual = _fit_dual(x, y, s, MODEL_L2)
            w_primal, b_primal = _fit_primal(x, y, s, MODEL_L2)
        assert np.max(np.abs(w_dual - w_primal)) < 1e-6
        assert abs(b_dual - b_primal) < 1e-6
        # It is the optimum: the gradient of the penalized loss vanishes.
        p = 1.0 / (1.0 + np.exp(-(x @ w_dual + b_dual)))
        assert np.max(np.abs(x.T @ (s * (p - y)) + MODEL_L2 * w_dual)) < 1e-6
        assert abs(float(np.sum(s * (p - y)))) < 1e-6


def test_a_library_lifts_its_topic_and_the_why_line_names_the_liked_paper() -> None:
    reader = Subscriber(email="lib@example.org", library=("robots.bib",), max_papers=3)
    plain = Subscriber(email="plain@example.org", max_papers=3, keywords=("speech",))
    context = context_with_models([reader, plain], LIBRARY)
    ranked = rank(EDITION, reader, context)  # type: ignore[arg-type]
    assert ranked[0].paper.arxiv_id == "2608.00200"  # 1 upvote, yet first
    assert ranked[0].why.startswith("like '") and ranked[0].why.endswith("' in your library")
    assert any(t[:30] in ranked[0].why for t in TOPICS["robot"]), ranked[0].why
    assert not ranked[0].filler
    # A subscriber with no library and no ratings ranks exactly as without any model.
    assert rank(EDITION, plain, context) == rank(EDITION, plain, None)  # type: ignore[arg-type]
    only = Subscriber(email="lib@example.org", library=("robots.bib",), only_matching=True)
    kept = [r.paper.arxiv_id for r in rank(EDITION, only, context)]  # type: ignore[arg-type]
    assert "2608.00200" in kept and "2608.00201" not in kept


def write_setup(tmp_path: Path) -> Path:
    bib = "\n".join(
        f"@article{{r{i}, title = {{{t}}}, abstract = {{{t}.}}, year = 2026, "
        f"date-added = {{2026-05-0{i + 1}}}}}"
        for i, t in enumerate(TOPICS["robot"])
    )
    (tmp_path / "robots.bib").write_text(bib, encoding="utf-8")
    path = tmp_path / "subscribers.yaml"
    path.write_text(
        textwrap.dedent(
            """\
            subscribers:
              - email: lib@example.org
                library: robots.bib
                max_papers: 3
              - email: plain@example.org
                max_papers: 3
            """
        ),
        encoding="utf-8",
    )
    return path


def test_a_send_trains_only_readers_whose_signal_changed(tmp_path: Path) -> None:
    subs_path = write_setup(tmp_path)
    settings = make_settings(
        subscribers=subs_path, state_path=tmp_path / "state.sqlite3", outbox=tmp_path / "out"
    )
    edition = Edition.daily(date(2026, 8, 20))
    reader = Subscriber(email="lib@example.org", library=("robots.bib",), max_papers=3)

    def trained_at() -> str:
        with sqlite3.connect(settings.reader_cache_path) as db:
            return str(db.execute("SELECT trained_at FROM models").fetchone()[0])

    with Digest(settings) as digest:
        digest.ranking.learner._now = NOW
        ranked, rendered = digest.render(edition, EDITION, reader)
        first = trained_at()
    assert ranked[0].paper.arxiv_id == "2608.00200"
    text = " ".join(rendered.text.split())
    assert f"Why: {ranked[0].why}" in text  # the text part says the same
    with Digest(settings) as digest:  # same signal: the cached model, not retrained
        digest.ranking.learner._now = NOW + timedelta(hours=1)
        again, _ = digest.render(edition, EDITION, reader)
        assert trained_at() == first
    assert again == ranked
    lib = tmp_path / "robots.bib"
    lib.write_text(lib.read_text(encoding="utf-8") + "\n@misc{x, title={Robot}}\n", "utf-8")
    with Digest(settings) as digest:  # the library changed: retrained
        digest.ranking.learner._now = NOW + timedelta(hours=2)
        digest.render(edition, EDITION, reader)
        assert trained_at() != first


def test_the_footer_says_what_ranks_a_reader_besides_keywords(tmp_path: Path) -> None:
    """A reader ranked by a library, interests or ratings is not told "you follow no
    keywords, so you get the most upvoted papers"; a keywords-only reader's footer is as
    before."""
    subs_path = write_setup(tmp_path)
    settings = make_settings(
        subscribers=subs_path, state_path=tmp_path / "state.sqlite3", outbox=tmp_path / "out"
    )
    edition = Edition.daily(date(2026, 8, 20))
    readers = {
        "library": Subscriber(email="lib@example.org", library=("robots.bib",)),
        "both": Subscriber(
            email="both@example.org",
            keywords=("speech",),
            interests=("robots that learn to walk",),
            authors=("Chelsea Finn",),
        ),
        "keywords": Subscriber(email="kw@example.org", keywords=("speech",)),
        "nothing": Subscriber(email="plain@example.org"),
        "rated": Subscriber(email="rated@example.org"),
    }
    with Digest(settings) as digest:
        digest.ranking.learner._now = NOW
        digest.store.record_feedback("rated@example.org", "2608.00100", "like")
        footers = {}
        for name, sub in readers.items():
            _, rendered = digest.render(edition, EDITION, sub)
            text = " ".join(rendered.text.split())
            html = " ".join(rendered.html.split())
            footers[name] = text[text.index("You receive this") :]
            assert footers[name].split(";")[1].split(".")[0] in html, name  # HTML says the same
    assert "your papers are ranked by your library." in footers["library"]
    assert (
        "your keywords: speech; your papers are also ranked by your interests and the authors "
        "you follow." in footers["both"]
    )
    assert "your keywords: speech." in footers["keywords"]
    assert "you follow no keywords, so you get the most upvoted papers." in footers["nothing"]
    assert "your papers are ranked by the papers you rated." in footers["rated"]
    for name in ("library", "both", "rated"):
        assert "most upvoted" not in footers[name]


async def test_a_send_lets_go_of_the_model_and_ships_a_compact_context(tmp_path: Path) -> None:
    """What a send keeps while it renders for minutes: not the embedding model (~50 MiB),
    each rated paper's id once (not once per rating), one theme label per distinct label; the
    models are scored a chunk at a time, with the same result."""
    subs_path = write_setup(tmp_path)
    settings = make_settings(
        subscribers=subs_path, state_path=tmp_path / "state.sqlite3", outbox=tmp_path / "out"
    )
    raters = [Subscriber(email=f"r{i}@example.org") for i in range(6)]
    reader = Subscriber(email="lib@example.org", library=("robots.bib",))
    with Digest(settings) as digest:
        digest.ranking.learner._now = NOW
        for sub in raters:
            for p in EDITION[:3]:
                digest.store.record_feedback(sub.email, p.arxiv_id, "like")
            digest.store.record_feedback(sub.email, EDITION[-1].arxiv_id, "dislike")
        context = await digest.ranking.build(
            EDITION, [reader, *raters], edition=Edition.daily(date(2026, 8, 20))
        )
        embedder = digest.ranking.embedder
        assert embedder is not None and embedder._model is None  # type: ignore[attr-defined]
        assert set(context.learned) == {reader.email, *(s.email for s in raters)}
        first = context.feedback["r0@example.org"].likes
        for sub in raters[1:]:
            likes = context.feedback[sub.email].likes
            assert all(a is b for a, b in zip(first, likes, strict=True))
        labels = [context.learned[s.email].themes for s in raters]
        assert all(a is b for a, b in zip(labels[0], labels[1], strict=True))
        # Scored in chunks of two: the same as all at once.
        matrix = np.stack([context.vectors[p.arxiv_id] for p in EDITION])
        texts = {p.arxiv_id: paper_text(p) for p in EDITION}
        feedback = digest.store.feedback()
        learner = digest.ranking.learner
        kwargs = {"embedder": EMBEDDER, "vectors": VectorCache(None), "texts": texts}
        chunked = learner.learned(raters, feedback, background=matrix, chunk=2, **kwargs)
        whole = learned_for(learner.models(raters, feedback, background=matrix, **kwargs), matrix)
        assert chunked == whole


def test_a_broken_library_is_a_warning_and_the_reader_still_gets_an_edition(
    tmp_path: Path,
) -> None:
    subs_path = write_setup(tmp_path)
    (tmp_path / "robots.bib").write_text("@article{a,\n  title = {Open\n", encoding="utf-8")
    settings = make_settings(
        subscribers=subs_path, state_path=tmp_path / "state.sqlite3", outbox=tmp_path / "out"
    )
    reader = Subscriber(email="lib@example.org", library=("robots.bib",), max_papers=3)
    with Digest(settings) as digest:
        ranked, _ = digest.render(Edition.daily(date(2026, 8, 20)), EDITION, reader)
    assert [r.paper.arxiv_id for r in ranked] == ["2608.00100", "2608.00101", "2608.00102"]


# -- what the preferences and onboarding pages will call --------------------------------------


def test_shaping_forget_and_reset(tmp_path: Path) -> None:
    subs_path = write_setup(tmp_path)
    settings = make_settings(subscribers=subs_path, state_path=tmp_path / "state.sqlite3")
    reader = Subscriber(email="lib@example.org", library=("robots.bib",), like=("2608.00104",))
    fb = Feedback(likes=("2608.00100",), dislikes=("2608.00201",))
    store = open_state(settings.effective_state_url)
    cache = ReaderCache(settings.reader_cache_path, state=store)
    learner = ReaderLearner(settings, cache, now=NOW)
    texts = {p.arxiv_id: paper_text(p) for p in EDITION}
    models = learner.models(
        [reader],
        {reader.email: fb},
        embedder=EMBEDDER,
        vectors=VectorCache(None),
        background=np.stack(list(vectors_of(EDITION).values())),
        texts=texts,
    )
    assert reader.email in models
    shaping = learner.shaping(reader, fb, vectors=vectors_of(EDITION, learner.entries(reader)))
    assert shaping.model and 0 < shaping.confidence < 1 and shaping.themes
    items = [i.example.item for i in shaping.influences]
    assert len(items) == 8 and "thumbs-up:2608.00100" in items and "like:2608.00104" in items
    assert learner.forget(reader, ["thumbs-up:2608.00100"], actor="web") == 1
    assert cache.models([reader.email]) == {}  # dropped: retrained at the next send
    left = {i.example.item for i in learner.shaping(reader, fb).influences}
    assert "thumbs-up:2608.00100" not in left
    assert learner.reset(reader, fb, actor="web") == 6  # 👎 + five library entries
    after = {i.example.item for i in learner.shaping(reader, fb).influences}
    assert after == {"like:2608.00104"}  # the file's own likes are edited in the file
    store.close()
    with sqlite3.connect(tmp_path / "state.sqlite3") as db:  # kept by the state
        actors = {row[0] for row in db.execute("SELECT actor FROM forgotten")}
    assert actors == {"web"}


def test_papers_to_rate_are_diverse_uncertain_and_never_rated_before() -> None:
    vectors = vectors_of(EDITION)
    ids = [p.arxiv_id for p in EDITION]
    picked = informative(ids, vectors, None, n=3, exclude={"2608.00101"})
    assert len(picked) == 3 and "2608.00101" not in picked
    topics = {
        "robot" if i == "2608.00200" else "agent" if i == "2608.00201" else "speech" for i in picked
    }
    assert len(topics) >= 2, picked  # not three speech papers in a row
    assert informative(ids, vectors, None, n=3) == informative(ids, vectors, None, n=3)
