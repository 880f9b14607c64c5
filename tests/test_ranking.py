"""Ranking: selection, order, keyword matching, highlighting; on real Daily Papers and by hand."""

from __future__ import annotations

import itertools
import json
import math
import random
import re
from pathlib import Path
from typing import Any

import pytest

from digest.models import Paper
from digest.ranking import (
    BODY_WEIGHT,
    TITLE_WEIGHT,
    highlight_spans,
    highlight_terms,
    matches,
    rank,
)
from digest.subscribers import Subscriber

HF_FIXTURES = Path(__file__).parent / "fixtures" / "hf-daily-papers"
DAYS = sorted(p.stem for p in HF_FIXTURES.glob("*.json"))
MANY = 1000  # max_papers that keeps every paper


def real_papers(day: str) -> list[Paper]:
    """The Papers of one captured Daily Papers day (only the fields ranking reads)."""
    items = json.loads((HF_FIXTURES / f"{day}.json").read_text(encoding="utf-8"))
    return [
        Paper(
            arxiv_id=item["paper"]["id"],
            title=" ".join(item["paper"]["title"].split()),
            abstract=" ".join(item["paper"]["summary"].split()),
            upvotes=item["paper"]["upvotes"],
            comments=item.get("numComments"),
            ai_summary=item["paper"].get("ai_summary"),
            ai_keywords=tuple(item["paper"].get("ai_keywords") or ()),
        )
        for item in items
    ]


def sub(**kwargs: Any) -> Subscriber:
    kwargs.setdefault("max_papers", MANY)
    return Subscriber(email="reader@example.org", **kwargs)


def paper(
    arxiv_id: str,
    title: str = "Untitled",
    abstract: str = "",
    upvotes: int | None = 0,
    comments: int | None = 0,
    **kwargs: Any,
) -> Paper:
    return Paper(
        arxiv_id=arxiv_id,
        title=title,
        abstract=abstract,
        upvotes=upvotes,
        comments=comments,
        **kwargs,
    )


def ids(ranked: list[Any]) -> list[str]:
    return [r.paper.arxiv_id for r in ranked]


def all_text(p: Paper) -> str:
    return " ".join((p.title, p.abstract, p.ai_summary or "", *p.ai_keywords))


# --- no keywords -----------------------------------------------------------------------------


@pytest.mark.parametrize("day", DAYS)
def test_without_keywords_order_is_upvotes_then_comments_then_id(day: str) -> None:
    papers = real_papers(day)
    ranked = rank(papers, sub())
    expected = sorted(papers, key=lambda p: (-(p.upvotes or 0), -(p.comments or 0), p.arxiv_id))
    assert ids(ranked) == [p.arxiv_id for p in expected]
    assert all(r.matched == () and r.matched_in_title == () for r in ranked)


def test_ties_on_real_day() -> None:
    ranked = ids(rank(real_papers("2026-08-20"), sub()))
    # 59 upvotes and 1 comment each: by arXiv id
    assert ranked[2:4] == ["2608.17426", "2608.18565"]
    # 12 upvotes: three with 1 comment (by id), then the one with 0 comments
    assert ranked[9:13] == ["2608.13947", "2608.18701", "2608.18746", "2608.18423"]


def test_default_subscriber_gets_the_top_ten() -> None:
    papers = real_papers("2025-05-29")
    ranked = rank(papers, Subscriber.default())
    assert len(papers) > 10
    assert ids(ranked) == ids(rank(papers, sub()))[:10]


@pytest.mark.parametrize("day", DAYS)
def test_order_does_not_depend_on_input_order(day: str) -> None:
    papers = real_papers(day)
    who = sub(keywords=["language model*", "agent*", "video", "RL"], max_papers=7)
    expected = rank(papers, who)
    rng = random.Random(day)
    for _ in range(5):
        shuffled = papers[:]
        rng.shuffle(shuffled)
        assert rank(shuffled, who) == expected


# --- exclude, only_matching, min_upvotes, max_papers -----------------------------------------


def test_exclude_never_appears_on_real_day() -> None:
    papers = real_papers("2026-08-20")
    bench = re.compile(r"(?<!\w)benchmark\w*", re.IGNORECASE)
    hit = {p.arxiv_id for p in papers if bench.search(all_text(p))}
    assert 0 < len(hit) < len(papers)
    ranked = rank(papers, sub(exclude=["benchmark*"], keywords=["benchmark*", "video"]))
    assert set(ids(ranked)) == {p.arxiv_id for p in papers} - hit


@pytest.mark.parametrize(
    "where",
    [
        {"title": "A Survey of Things"},
        {"abstract": "We survey things."},
        {"ai_summary": "A survey."},
        {"ai_keywords": ("literature survey",)},
    ],
)
def test_exclude_matches_every_field(where: dict[str, Any]) -> None:
    papers = [paper("1", upvotes=99, **where), paper("2", upvotes=1)]
    assert ids(rank(papers, sub(exclude=["survey"]))) == ["2"]
    assert ids(rank(papers, sub(exclude=["poll"]))) == ["1", "2"]


def test_only_matching_keeps_only_matches_on_real_day() -> None:
    papers = real_papers("2026-08-20")
    agent = re.compile(r"(?<!\w)agent\w*", re.IGNORECASE)
    expected = {p.arxiv_id for p in papers if agent.search(all_text(p))}
    assert 0 < len(expected) < len(papers)
    ranked = rank(papers, sub(keywords=["agent*"], only_matching=True))
    assert set(ids(ranked)) == expected
    assert all(r.matched == ("agent*",) for r in ranked)
    # without only_matching the others follow
    assert len(rank(papers, sub(keywords=["agent*"]))) == len(papers)


def test_min_upvotes_on_real_day() -> None:
    papers = real_papers("2026-08-20")
    ranked = rank(papers, sub(min_upvotes=54))
    assert [r.paper.upvotes for r in ranked] == [92, 74, 59, 59, 54]


def test_feed_only_papers_pass_min_upvotes_only_when_zero() -> None:
    papers = [paper("hf", upvotes=3), paper("feed", upvotes=None, comments=None)]
    assert ids(rank(papers, sub(min_upvotes=0))) == ["hf", "feed"]
    assert ids(rank(papers, sub(min_upvotes=1))) == ["hf"]


@pytest.mark.parametrize("limit", [1, 3, 15, 16])
def test_max_papers(limit: int) -> None:
    papers = real_papers("2026-08-20")
    ranked = rank(papers, sub(max_papers=limit))
    assert len(ranked) == min(limit, len(papers))
    assert ids(ranked) == ids(rank(papers, sub()))[:limit]


def test_empty_input() -> None:
    assert rank([], sub(keywords=["x"])) == []


# --- score and order with keywords ---------------------------------------------------------


def test_score_formula() -> None:
    p = paper(
        "1",
        title="Video diffusion",
        abstract="An agent for video.",
        ai_keywords=("world model",),
        upvotes=20,
    )
    (ranked,) = rank([p], sub(keywords=["diffusion", "agent*", "world model", "absent"]))
    assert ranked.matched == ("diffusion", "agent*", "world model")
    assert ranked.matched_in_title == ("diffusion",)
    assert ranked.score == pytest.approx(math.log1p(20) + TITLE_WEIGHT + 2 * BODY_WEIGHT)
    assert TITLE_WEIGHT > BODY_WEIGHT > 0


def test_title_match_ranks_above_abstract_match() -> None:
    papers = [
        paper("1", title="Scaling laws", abstract="We study diffusion models.", upvotes=10),
        paper("2", title="Diffusion at scale", abstract="We study scaling.", upvotes=10),
    ]
    ranked = rank(papers, sub(keywords=["diffusion"]))
    assert ids(ranked) == ["2", "1"]
    assert ranked[0].matched_in_title == ("diffusion",)
    assert ranked[1].matched == ("diffusion",) and ranked[1].matched_in_title == ()


def test_match_beats_non_match_with_same_or_fewer_upvotes_on_real_days() -> None:
    keywords = ["diffusion", "video", "agent*", "reinforcement learning", "language model*"]
    for day in DAYS:
        ranked = rank(real_papers(day), sub(keywords=keywords))
        for i, hi in enumerate(ranked):
            for lo in ranked[i + 1 :]:
                if lo.matched and not hi.matched:
                    assert (hi.paper.upvotes or 0) > (lo.paper.upvotes or 0), (day, hi, lo)


def test_much_more_upvoted_non_match_can_still_rank_above_a_weak_match() -> None:
    papers = [paper("match", abstract="about agents", upvotes=1), paper("popular", upvotes=500)]
    assert ids(rank(papers, sub(keywords=["agent"]))) == ["popular", "match"]


KEYWORDS = ["alpha", "beta gamma", "delta*"]
SPELLINGS = {
    "alpha": ["alpha", "Alpha", "ALPHAS"],
    "beta gamma": ["beta gamma", "Beta-Gamma", "beta\ngamma"],
    "delta*": ["delta", "deltas", "Deltaic"],
}
FILLER = "lorem ipsum dolor sit amet consectetur"
FIELDS = ("title", "abstract", "ai_summary", "ai_keywords", None)


def random_case(
    rng: random.Random,
) -> tuple[list[Paper], Subscriber, dict[str, tuple[set[str], set[str]]]]:
    """Random papers with known keyword placement; returns (papers, subscriber, truth).

    truth[arxiv_id] = (keywords in the title, keywords anywhere).
    """
    keywords = rng.sample(KEYWORDS, rng.randint(1, len(KEYWORDS)))
    papers, truth = [], {}
    for n in range(rng.randint(2, 25)):
        fields: dict[str, list[str]] = {"title": [], "abstract": [], "ai_summary": []}
        kw_list: list[str] = []
        in_title: set[str] = set()
        anywhere: set[str] = set()
        for kw in KEYWORDS:
            where = rng.choice(FIELDS)
            if where is None:
                continue
            text = rng.choice(SPELLINGS[kw])
            if where == "ai_keywords":
                kw_list.append(text)
            else:
                fields[where].append(text)
            if kw in keywords:
                anywhere.add(kw)
                if where == "title":
                    in_title.add(kw)
        upvotes = rng.choice([None, *range(0, 6), rng.randint(0, 300)])
        arxiv_id = f"2501.{n:05d}"
        papers.append(
            Paper(
                arxiv_id=arxiv_id,
                title=" ".join([FILLER[: rng.randint(0, 20)], *fields["title"]]),
                abstract=" ".join([FILLER, *fields["abstract"], FILLER]),
                ai_summary=" ".join(fields["ai_summary"]) or None,
                ai_keywords=tuple(kw_list),
                upvotes=upvotes,
                comments=rng.choice([None, 0, 1, 2]),
            )
        )
        truth[arxiv_id] = (in_title, anywhere)
    return papers, sub(keywords=keywords), truth


def test_randomized_properties() -> None:
    rng = random.Random(20260820)
    pairs_checked = 0
    for _ in range(400):
        papers, who, truth = random_case(rng)
        ranked = rank(papers, who)
        assert len(ranked) == len(papers)
        position = {r.paper.arxiv_id: i for i, r in enumerate(ranked)}
        for r in ranked:
            in_title, anywhere = truth[r.paper.arxiv_id]
            # matched: exactly the keywords placed, in the subscriber's order
            assert r.matched == tuple(k for k in who.keywords if k in anywhere)
            assert r.matched_in_title == tuple(k for k in who.keywords if k in in_title)
            up = r.paper.upvotes or 0
            expected = math.log1p(up) + TITLE_WEIGHT * len(in_title)
            expected += BODY_WEIGHT * len(anywhere - in_title)
            assert r.score == pytest.approx(expected)
        # scores never increase down the list
        assert all(a.score >= b.score for a, b in itertools.pairwise(ranked))
        # a match ranks above every non-match with the same or fewer upvotes
        for m in ranked:
            for n in ranked:
                if m.matched and not n.matched and (m.paper.upvotes or 0) >= (n.paper.upvotes or 0):
                    assert position[m.paper.arxiv_id] < position[n.paper.arxiv_id]
                    pairs_checked += 1
    assert pairs_checked > 1000


def test_feed_only_papers_are_ordered_by_relevance() -> None:
    papers = [
        paper("a", title="Plain", abstract="nothing here", upvotes=None, comments=None),
        paper("b", title="Plain", abstract="about agents", upvotes=None, comments=None),
        paper("c", title="Agents", abstract="nothing", upvotes=None, comments=None),
        paper("d", title="Agents with diffusion", abstract="x", upvotes=None, comments=None),
        paper("e", title="Plain", abstract="nothing", upvotes=0, comments=0),
    ]
    ranked = rank(papers, sub(keywords=["agent", "diffusion"]))
    # d: 2 title matches; c: 1 title; b: 1 body; then the non-matches: the HF paper with
    # 0 upvotes before the feed-only one.
    assert ids(ranked) == ["d", "c", "b", "e", "a"]


# --- matching rules ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("keyword", "text", "expected"),
    [
        ("agent", "An agent acts", True),
        ("agent", "AGENT", True),
        ("agent", "multi-agent systems", True),
        ("agent", "the agents", True),  # plural
        ("agent", "the agent's plan", True),
        ("agent", "a reagent", False),
        ("agent", "agentic workflows", False),
        ("agent", "agent_based", False),
        ("agent*", "agentic workflows", True),
        ("agent*", "Agents", True),
        ("agent*", "reagents", False),
        ("reinforcement learning", "Reinforcement Learning", True),
        ("reinforcement learning", "reinforcement-learning", True),
        ("reinforcement learning", "reinforcement\n  learning", True),
        ("reinforcement learning", "reinforcement – learning", True),
        ("reinforcement learning", "reinforcement meta-learning", False),
        ("reinforcement learning", "reinforcementlearning", False),
        ("self-play", "self play", True),
        ("self-play", "Self-Play", True),
        ("language model*", "large language modeling", True),
        ("RL", "world", False),
        ("RL", "Co-RL", True),
        ("RL", "(RL)", True),
        ("3d", "3D scenes", True),
        ("3d", "13D", False),
        ("c++", "written in C++.", True),
        ("c++", "abc++", False),
        ("LLM", "LLMs are", True),
        ("process", "processes", True),
    ],
)
def test_matches(keyword: str, text: str, expected: bool) -> None:
    assert matches(text, keyword) is expected


def test_multi_word_keyword_never_matches_across_fields() -> None:
    p = paper("1", abstract="we use reinforcement", ai_summary="learning is fun")
    assert rank([p], sub(keywords=["reinforcement learning"]))[0].matched == ()
    q = paper("2", abstract="we use reinforcement learning")
    assert rank([q], sub(keywords=["reinforcement learning"]))[0].matched == (
        "reinforcement learning",
    )


def test_matched_keywords_as_written_in_subscriber_order_on_real_day() -> None:
    papers = real_papers("2026-08-20")
    who = sub(keywords=["Video", "zebra", "BENCHMARK*", "vision-language"], only_matching=True)
    ranked = {r.paper.arxiv_id: r for r in rank(papers, who)}
    semcomp = ranked["2608.17426"]  # "SemComp-Bench: Benchmarking ... in Video Generation"
    assert semcomp.matched == ("Video", "BENCHMARK*", "vision-language")
    assert semcomp.matched_in_title == ("Video", "BENCHMARK*")
    assert "zebra" not in {k for r in ranked.values() for k in r.matched}


# --- highlighting --------------------------------------------------------------------------


def test_highlight_spans() -> None:
    who = sub(keywords=["RL", "reinforcement learning", "agent*", "learning"])
    text = "Reinforcement-learning agents, RL and world models; reagents; learning."
    spans = highlight_spans(text, who)
    assert [text[a:b] for a, b in spans] == [
        "Reinforcement-learning",
        "agents",
        "RL",
        "learning",
    ]
    assert spans == sorted(spans)
    assert highlight_terms(who) is highlight_terms(sub(keywords=list(who.keywords)))


def test_highlight_without_keywords() -> None:
    assert highlight_terms(sub()) is None
    assert highlight_spans("anything", sub()) == []
