"""Semantic ranking: offline embeddings, similarity, why lines, no repeats, likes, hostile input.

The real WordLlama model (shipped in its wheel) is used throughout: it loads in well under a
second and needs no network.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
from collections.abc import Sequence
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pytest

from digest.core import Digest
from digest.models import Edition, Feedback, Paper
from digest.ranking import RankContext, build_context, rank
from digest.ranking.embeddings import (
    VectorCache,
    Vectors,
    WordLlamaEmbedder,
    build_embedder,
)
from digest.settings import load_settings
from digest.subscribers import Subscriber, load_subscribers
from tests.conftest import FIXTURES
from tests.factories import write_day
from tests.httpserver import ATOM, LocalHTTPServer

INTEREST = "sim-to-real transfer for legged robots"
ROBOT = Paper(
    arxiv_id="2406.20002",
    title="Quadruped locomotion policies trained in simulation run on the physical robot",
    abstract=(
        "We train walking controllers for a four-legged robot entirely in a physics "
        "simulator with domain randomization and deploy them zero-shot on hardware, "
        "closing the reality gap on rough terrain."
    ),
    upvotes=10,
    authors=("Ana Ruiz", "Chelsea Finn"),
)
MATH = Paper(
    arxiv_id="2406.10001",
    title="A benchmark of olympiad problems for large language model math reasoning",
    abstract=(
        "We collect competition mathematics problems and evaluate chain-of-thought prompting "
        "of large language models on them, reporting accuracy by topic."
    ),
    upvotes=10,
)
AGENTS = Paper(
    arxiv_id="2406.30003",
    title="Web agents that book travel",
    abstract="Language-model agents navigate real websites to complete booking tasks.",
    upvotes=10,
)
EMBEDDER = WordLlamaEmbedder()


def context_for(
    papers: Sequence[Paper],
    subs: Sequence[Subscriber],
    *,
    liked: Sequence[Paper] = (),
    seen: dict[str, frozenset[str]] | None = None,
    feedback: dict[str, Feedback] | None = None,
) -> RankContext:
    return build_context(
        papers,
        subs,
        embedder=EMBEDDER,
        cache=VectorCache(None),
        liked_papers={p.arxiv_id: p for p in liked},
        seen=seen,
        feedback=feedback,
    )


# -- the model loads offline ---------------------------------------------------------------


def test_wordllama_loads_and_embeds_with_the_network_forbidden(tmp_path: Path) -> None:
    # A fresh interpreter whose every socket connect (and DNS lookup) raises, with an empty
    # HOME (no ~/.cache/wordllama) and the Hugging Face hub offline.
    script = textwrap.dedent(
        """
        import logging, socket, sys
        attempts = []
        def refuse(*args, **kwargs):
            attempts.append(args)
            raise OSError("network forbidden in this test")
        socket.socket.connect = refuse
        socket.socket.connect_ex = refuse
        socket.create_connection = refuse
        socket.getaddrinfo = refuse
        from digest.ranking.embeddings import WordLlamaEmbedder
        vectors = WordLlamaEmbedder().embed(["legged robots", "language model reasoning"])
        root = logging.getLogger()
        print(vectors.shape, vectors.dtype, len(attempts), len(root.handlers), root.level)
        """
    )
    env = {"HOME": str(tmp_path), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    # 256 dimensions, no connection attempted, the root logger left unconfigured (wordllama
    # calls logging.basicConfig on import; we undo it).
    assert out.stdout.split() == ["(2,", "256)", "float32", "0", "0", "30"]
    assert not (tmp_path / ".cache").exists()


def test_embeddings_are_unit_vectors_and_meaningful() -> None:
    v = EMBEDDER.embed([INTEREST, ROBOT.title + " " + ROBOT.abstract, MATH.title])
    assert v.shape == (3, 256)
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert v[0] @ v[1] > v[0] @ v[2] + 0.1


def test_build_embedder_specs() -> None:
    assert build_embedder("off") is None
    assert isinstance(build_embedder("wordllama"), WordLlamaEmbedder)
    with pytest.raises(Exception, match="unknown model 'bert'"):
        build_embedder("bert")


class CountingEmbedder:
    """Wraps WordLlama and counts the texts it was asked to embed."""

    name = WordLlamaEmbedder.name

    def __init__(self) -> None:
        self.texts: list[str] = []

    def embed(self, texts: Sequence[str]) -> Vectors:
        self.texts.extend(texts)
        return EMBEDDER.embed(texts)


def test_vector_cache_embeds_each_text_once_across_subscribers_and_runs(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3.vectors"
    subs = [
        Subscriber(email=f"s{i}@example.org", interests=(INTEREST,), like=(MATH.arxiv_id,))
        for i in range(50)
    ]
    counting = CountingEmbedder()
    cache = VectorCache(path)
    first = build_context([ROBOT, MATH], subs, embedder=counting, cache=cache)
    cache.close()
    # Two papers and one interest shared by 50 subscribers: three texts embedded.
    assert len(counting.texts) == 3
    again = CountingEmbedder()
    cache = VectorCache(path)  # a later run: read from the file
    second = build_context([ROBOT, MATH], subs, embedder=again, cache=cache)
    cache.close()
    assert again.texts == []
    for key, vec in first.vectors.items():
        assert np.array_equal(vec, second.vectors[key])


def test_no_model_is_loaded_when_nobody_ranks_by_meaning() -> None:
    counting = CountingEmbedder()
    ctx = build_context(
        [ROBOT, MATH],
        [Subscriber(email="k@example.org", keywords=("robot*",))],
        embedder=counting,
        cache=VectorCache(None),
    )
    assert counting.texts == [] and ctx.vectors == {}


# -- similarity and the hybrid score -------------------------------------------------------


def test_a_paraphrase_of_an_interest_outranks_an_unrelated_paper_with_equal_upvotes() -> None:
    sub = Subscriber(email="r@example.org", interests=(INTEREST,))
    # MATH has the smaller id: on equal scores it would come first.
    ranked = rank([MATH, ROBOT], sub, context_for([MATH, ROBOT], [sub]))
    assert [r.paper.arxiv_id for r in ranked] == [ROBOT.arxiv_id, MATH.arxiv_id]
    assert ranked[0].score > ranked[1].score
    assert ranked[0].why == f"matches your interest '{INTEREST}'"
    assert not ranked[0].filler
    assert ranked[1].why == "trending" and ranked[1].filler
    # Without the context the two tie, and the id decides.
    plain = rank([MATH, ROBOT], sub)
    assert [r.paper.arxiv_id for r in plain] == [MATH.arxiv_id, ROBOT.arxiv_id]


def test_only_matching_keeps_papers_close_to_an_interest() -> None:
    sub = Subscriber(email="r@example.org", interests=(INTEREST,), only_matching=True)
    ranked = rank([MATH, ROBOT], sub, context_for([MATH, ROBOT], [sub]))
    assert [r.paper.arxiv_id for r in ranked] == [ROBOT.arxiv_id]


def test_a_liked_paper_pulls_similar_papers_up_and_a_disliked_one_pushes_them_down() -> None:
    liked = Paper(
        arxiv_id="2301.00001",
        title="Learning agile legged locomotion in simulation for real quadrupeds",
        abstract="Reinforcement learning in simulation transfers to a real quadruped robot.",
    )
    fan = Subscriber(email="fan@example.org", like=(liked.arxiv_id,))
    ranked = rank([MATH, ROBOT], fan, context_for([MATH, ROBOT], [fan], liked=[liked]))
    assert ranked[0].paper == ROBOT
    assert ranked[0].why == "like 2301.00001 you liked"
    hater = Subscriber(email="hater@example.org", dislike=(liked.arxiv_id,))
    ranked = rank([ROBOT, MATH], hater, context_for([MATH, ROBOT], [hater], liked=[liked]))
    assert ranked[0].paper == MATH
    assert ranked[1].score < ROBOT_BASE


ROBOT_BASE = float(np.log1p(10))


def test_feedback_likes_count_like_yaml_likes() -> None:
    liked = Paper(
        arxiv_id="2301.00001",
        title="Learning agile legged locomotion in simulation for real quadrupeds",
        abstract="Reinforcement learning in simulation transfers to a real quadruped robot.",
    )
    sub = Subscriber(email="fb@example.org")
    fb = {sub.email: Feedback(likes=(liked.arxiv_id,))}
    ctx = context_for([MATH, ROBOT], [sub], liked=[liked], feedback=fb)
    assert rank([MATH, ROBOT], sub, ctx)[0].paper == ROBOT


# -- why this paper ------------------------------------------------------------------------


def test_why_line_for_each_reason() -> None:
    papers = [ROBOT, MATH, AGENTS]
    by_author = Subscriber(email="a@example.org", authors=("chelsea finn",))
    assert rank(papers, by_author)[0].why == "by Chelsea Finn"
    kw = Subscriber(email="k@example.org", keywords=("agent*",))
    top = rank(papers, kw)[0]
    assert (top.paper, top.why, top.matched_words) == (AGENTS, "keyword: agents", ("agents",))
    two = Subscriber(email="k2@example.org", keywords=("agent*", "web"))
    assert rank(papers, two)[0].why == "keywords: agents, web"
    nobody = Subscriber(email="n@example.org")
    assert {r.why for r in rank(papers, nobody)} == {"trending"}
    assert all(r.filler for r in rank(papers, nobody))
    long = "legged robots that learn to walk in simulation and then walk in the real world"
    sub = Subscriber(email="i@example.org", interests=(long,))
    top = rank(papers, sub, context_for(papers, [sub]))[0]
    assert top.paper == ROBOT
    assert top.why == "matches your interest 'legged robots that learn to walk in…'"


def test_a_followed_author_is_always_included_even_below_min_upvotes() -> None:
    quiet = Paper(arxiv_id="2406.40004", title="A quiet paper", authors=("Chelsea  Finn",))
    sub = Subscriber(
        email="a@example.org",
        authors=("Chelsea Finn",),
        keywords=("agent*",),
        only_matching=True,
        min_upvotes=5,
        max_papers=1,
    )
    ranked = rank([AGENTS, quiet], sub)
    assert [r.paper for r in ranked] == [quiet]
    assert ranked[0].why == "by Chelsea  Finn"


def test_fillers_are_grouped_under_their_own_heading(tmp_path: Path) -> None:
    settings = load_settings(env_file=None, state_path=tmp_path / "s.sqlite3")
    with Digest(settings) as digest:
        sub = Subscriber(email="k@example.org", keywords=("agent*",))
        # MATH and ROBOT rank above AGENTS? no: AGENTS matches, so it comes first anyway;
        # give the fillers more upvotes so they outrank it and still land under the heading.
        loud = [
            Paper(arxiv_id="2406.50005", title="Popular thing one", upvotes=500),
            AGENTS,
            Paper(arxiv_id="2406.50006", title="Popular thing two", upvotes=400),
        ]
        ranked, rendered = digest.render(Edition.daily(date(2024, 6, 14)), loud, sub)
    assert ranked[0].paper.title == "Popular thing one"  # the score order is unchanged
    html, text = rendered.html, rendered.text
    html = html[html.index("</h1>") :]  # the subject and preheader name the top paper too
    text = text[text.index("-----") :]
    assert html.index("book travel") < html.index("Also trending") < html.index("Popular thing")
    assert html.count("Also trending") == 1
    assert "keyword: agents" in html and html.count(">trending<") == 2
    assert text.index("book travel") < text.index("ALSO TRENDING") < text.index("Popular thing")
    assert "Why: keyword: agents" in text and text.count("Why: trending") == 2


# -- never the same paper twice ------------------------------------------------------------


def numbered(n: int, start: int) -> list[Paper]:
    return [
        Paper(arxiv_id=f"2406.{i:05d}", title=f"Paper number {i}", upvotes=100 - i)
        for i in range(start, start + n)
    ]


def sent_ids(digest: Digest, who: str, edition: str) -> list[str]:
    return digest.store.delivery_papers(who, edition)


MON, TUE = date(2024, 6, 10), date(2024, 6, 11)


def digest_for(tmp_path: Path) -> Digest:
    settings = load_settings(
        env_file=None,
        sources=f"file:{tmp_path / 'papers'}",
        state_path=tmp_path / "state.sqlite3",
        outbox=tmp_path / "outbox",
        sender="Papers <papers@example.org>",
    )
    return Digest(settings, now=lambda: datetime(2024, 6, 17, 12, tzinfo=UTC))


async def test_no_paper_is_repeated_across_two_consecutive_editions(tmp_path: Path) -> None:
    # Tuesday lists three of Monday's papers again (a paper trends for days) and three new.
    write_day(tmp_path / "papers", MON, numbered(6, 1))
    write_day(tmp_path / "papers", TUE, numbered(6, 4))
    subs = [
        Subscriber(email="once@example.org", max_papers=4),
        Subscriber(email="again@example.org", max_papers=4, no_repeat=False),
    ]
    with digest_for(tmp_path) as digest:
        for day in (MON, TUE):
            summary = await digest.send(Edition.daily(day), subs)
            assert summary.sent == 2, summary.errors
        monday = sent_ids(digest, "once@example.org", MON.isoformat())
        tuesday = sent_ids(digest, "once@example.org", TUE.isoformat())
        assert monday == ["2406.00001", "2406.00002", "2406.00003", "2406.00004"]
        assert not set(monday) & set(tuesday)
        assert tuesday == ["2406.00005", "2406.00006", "2406.00007", "2406.00008"]
        # Off for this subscriber: Tuesday's top papers again.
        again = sent_ids(digest, "again@example.org", TUE.isoformat())
        assert again == ["2406.00004", "2406.00005", "2406.00006", "2406.00007"]
        # Resending Tuesday itself does not hide Tuesday's own papers.
        await digest.send(Edition.daily(TUE), subs[:1], resend=True)
        assert sent_ids(digest, "once@example.org", TUE.isoformat()) == tuesday


async def test_weekly_edition_leaves_out_what_the_subscriber_got_daily(tmp_path: Path) -> None:
    write_day(tmp_path / "papers", MON, numbered(6, 1))
    write_day(tmp_path / "papers", TUE, numbered(6, 7))
    daily = Subscriber(email="both@example.org", max_papers=3)
    weekly = daily.model_copy(update={"frequency": "weekly", "max_papers": 20})
    with digest_for(tmp_path) as digest:
        await digest.send(Edition.daily(MON), [daily])
        got_daily = set(sent_ids(digest, daily.email, MON.isoformat()))
        await digest.send(Edition.weekly(2024, 24), [weekly])
        got_weekly = set(sent_ids(digest, daily.email, "2024-W24"))
    assert len(got_daily) == 3 and len(got_weekly) == 9
    assert not got_daily & got_weekly


# -- likes from YAML: stored papers, the arXiv API, unknown ids ----------------------------


async def test_unknown_liked_id_is_a_warning_not_a_crash(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_day(tmp_path / "papers", MON, [ROBOT, MATH])
    sub = Subscriber(email="u@example.org", like=("2101.99999",), interests=(INTEREST,))
    with digest_for(tmp_path) as digest, caplog.at_level(logging.INFO):
        summary = await digest.send(Edition.daily(MON), [sub])
        await digest.send(Edition.daily(TUE), [sub])
    assert summary.sent == 1
    said = [r for r in caplog.records if "2101.99999" in r.getMessage()]
    # Once per process, at INFO: `digest validate` is where it is a warning (test_first_hour).
    assert [(r.levelno, r.getMessage()) for r in said] == [
        (
            logging.INFO,
            "u@example.org: liked/disliked paper 2101.99999 is not among the stored papers "
            "(set DIGEST_ARXIV_API_URL to fetch it); ignored",
        )
    ]


async def test_a_liked_paper_is_fetched_once_from_the_arxiv_api_and_stored(
    tmp_path: Path,
) -> None:
    capture = FIXTURES / "feeds" / "arxiv-api-query-2025-11.xml"
    write_day(tmp_path / "papers", MON, [ROBOT, MATH])
    sub = Subscriber(email="l@example.org", like=("1309.4668",))
    with LocalHTTPServer() as server:
        server.add("/api/query", file=capture, content_type=ATOM)
        settings = load_settings(
            env_file=None,
            sources=f"file:{tmp_path / 'papers'}",
            state_path=tmp_path / "state.sqlite3",
            outbox=tmp_path / "outbox",
            arxiv_api_url=server.url("/api/query"),
            http_retries=0,
        )
        for _ in range(2):
            with Digest(settings) as digest:
                await digest.rank_context([ROBOT, MATH], [sub], edition=Edition.daily(MON))
        assert server.count("/api/query") == 1
        assert "id_list=1309.4668" in server.requests[0].target
        with Digest(settings) as digest:
            stored = digest.store.find_papers(["1309.4668"])
            ctx = await digest.rank_context([ROBOT, MATH], [sub], edition=Edition.daily(MON))
    assert stored["1309.4668"].title
    assert "1309.4668" in ctx.vectors


# -- hostile input in the subscribers file -------------------------------------------------


def problems_of(tmp_path: Path, body: str) -> list[str]:
    path = tmp_path / "subscribers.yaml"
    path.write_text(textwrap.dedent(body), encoding="utf-8")
    try:
        load_subscribers(path)
    except Exception as e:
        return [p.split(": ", 1)[1] for p in getattr(e, "problems", [str(e)])]
    return []


def test_personal_options_are_validated(tmp_path: Path) -> None:
    long = "a" * 10_000
    problems = problems_of(
        tmp_path,
        f"""
        subscribers:
          - email: a@example.org
            interests: ["", "   ", "{long}", "!!!"]
            like: [hello, 2406.10000, "https://arxiv.org/abs/2406.09246v2"]
            dislike: ["2406.09246"]
            authors: ["", "12345"]
          - email: b@example.org
            interests: robots
          - email: c@example.org
            no_repeat: maybe
          - email: d@example.org
            only_matching: true
        """,
    )
    assert problems == [
        "subscribers[0].interests[0]: empty interest; remove it or write what you want to "
        "read about, e.g. 'sim-to-real transfer for legged robots'",
        "subscribers[0].interests[1]: empty interest; remove it or write what you want to "
        "read about, e.g. 'sim-to-real transfer for legged robots'",
        "subscribers[0].interests[2]: interest is 10000 characters; keep it under 500 "
        "(a sentence or two; add another interest for another topic)",
        "subscribers[0].interests[3]: interest '!!!' has no word in it",
        "subscribers[0].like[0]: 'hello' is not an arXiv id; write it like '2406.09246'",
        "subscribers[0].like[1]: YAML read this arXiv id as the number 2406.1; put it in "
        "quotes, e.g. '2406.10000'",
        "subscribers[0].authors[0]: empty author name; remove it or write a name",
        "subscribers[0].authors[1]: '12345' has no letter; write the author's name",
        "subscribers[1].interests: must be a list, e.g. ['robots']",
        "subscribers[2].no_repeat: must be true or false, got 'maybe'",
        "subscribers[3].only_matching: only_matching is true but there are no keywords, "
        "interests, likes or authors: nothing would ever be sent",
    ]


def test_liked_ids_are_normalized_and_cross_checked(tmp_path: Path) -> None:
    path = tmp_path / "subscribers.yaml"
    path.write_text(
        "subscribers:\n"
        "  - email: a@example.org\n"
        "    like: [2406.09246, 'arXiv:2405.18407v3', 'cs/0112017']\n"
        '    interests: ["  sim-to-real\\n  transfer  "]\n',
        encoding="utf-8",
    )
    sub = load_subscribers(path).get("a@example.org")
    assert sub is not None
    assert sub.like == ("2406.09246", "2405.18407", "cs/0112017")
    assert sub.interests == ("sim-to-real transfer",)
    assert sub.no_repeat is True
    assert problems_of(
        tmp_path,
        """
        subscribers:
          - email: a@example.org
            like: ["2406.09246"]
            dislike: ["2406.09246v2"]
        """,
    ) == ["subscribers[0].dislike: 2406.09246 listed in both like and dislike; keep it in one"]


def test_a_version_1_state_file_migrates_and_keeps_its_history(tmp_path: Path) -> None:
    import sqlite3

    from digest.state import SCHEMA_VERSION, StateStore
    from digest.state.schema import statements

    path = tmp_path / "old.sqlite3"
    db = sqlite3.connect(path, isolation_level=None)
    for statement in statements(0, "sqlite"):
        db.execute(statement)
    db.execute("PRAGMA user_version = 1")
    db.execute(
        "INSERT INTO deliveries (subscriber, edition, status, attempts, created_at, updated_at)"
        " VALUES ('a@example.org', '2024-06-10', 'sent', 1, '2024-06-10T07:00:00+00:00', "
        "'2024-06-10T07:00:00+00:00')"
    )
    db.close()
    with StateStore(path) as store:
        assert store.schema_version == SCHEMA_VERSION >= 2
        row = store.get("a@example.org", "2024-06-10")
        assert row is not None and row.status == "sent"
        assert store.sent_papers(["2406.00001"]) == {}  # sent before history was recorded
        assert store.claim("a@example.org", "2024-06-11", "<m@x>", ["2406.00001"])
        store.mark_sent("a@example.org", "2024-06-11")
        assert store.sent_papers(["2406.00001", "2406.00002"]) == {
            "a@example.org": frozenset({"2406.00001"})
        }
        assert store.record_feedback("a@example.org", "2406.00001", "like")
        assert not store.record_feedback("a@example.org", "2406.00001", "like")
        assert store.record_feedback("a@example.org", "2406.00001", "dislike")
        assert store.feedback() == {"a@example.org": Feedback((), ("2406.00001",))}
