"""Ranking quality on the labelled evaluation set: nDCG@10 and precision@10 per method.

    python benchmarks/rank_quality.py            # the four methods, with the shipped weights
    python benchmarks/rank_quality.py --grid     # also search the hybrid's weights
    python benchmarks/rank_quality.py --speed    # cost of the semantic part at 10,000 subscribers
    python benchmarks/rank_quality.py --learn    # reader models: temporal replay, learning
                                                 # curve, library cold start (issue 23)

The set (``benchmarks/rank_eval/``, rules in ``docs/ranking-evaluation.md``): 5 personas, each
an interest statement, the keywords such a reader would type, and two liked papers from days
outside the set; 6 real Daily Papers days (96 papers), every paper graded 0/1/2 for every
persona by meaning, from its title and abstract.

Methods:
    upvotes     Hugging Face's own order (no personalization).
    keywords    today's keyword ranking (the persona's keywords, title 2 / body 1 + ln(1+upvotes)).
    interests   cosine similarity to the interest statement alone.
    hybrid      the shipped score: keywords + interest + liked papers + ln(1+upvotes).

nDCG@10 uses gains 2^grade - 1 and the ideal order of that day's graded papers; precision@10
counts papers graded >= 1 among the first min(10, papers that day). Each figure is the mean
over (persona, day) pairs whose day has at least one paper graded >= 1 for that persona.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from digest.models import Feedback, Paper  # noqa: E402
from digest.ranking import RankContext, build_context, keywords, rank  # noqa: E402
from digest.ranking import reader as reader_model  # noqa: E402
from digest.ranking.embeddings import VectorCache, WordLlamaEmbedder  # noqa: E402
from digest.ranking.library import read_library  # noqa: E402
from digest.ranking.semantic import INTEREST_PREFIX, paper_text  # noqa: E402
from digest.sources.hf import parse_daily_papers  # noqa: E402
from digest.subscribers import Subscriber  # noqa: E402

EVAL = ROOT / "benchmarks" / "rank_eval"
DAY_DIRS = (ROOT / "tests" / "fixtures" / "hf-daily-papers", EVAL / "days")
K = 10
METHODS = ("upvotes", "keywords", "interests", "hybrid")
WEIGHTS = ("UPVOTE_WEIGHT_SEMANTIC", "INTEREST_WEIGHT", "LIKE_WEIGHT", "SIMILARITY_FLOOR")


@dataclass(frozen=True)
class Persona:
    name: str
    interest: str
    keywords: tuple[str, ...]
    liked: tuple[Paper, ...]


def load_set() -> tuple[list[Persona], dict[str, list[Paper]], dict[str, dict[str, int]]]:
    """Personas, the papers of each day, and grades[persona][arxiv_id]."""
    raw = json.loads((EVAL / "personas.json").read_text(encoding="utf-8"))
    personas = [
        Persona(
            p["name"],
            p["interest"],
            tuple(p["keywords"]),
            tuple(
                Paper(arxiv_id=x["id"], title=x["title"], abstract=x["abstract"])
                for x in p["liked"]
            ),
        )
        for p in raw["personas"]
    ]
    lines = (EVAL / "labels.tsv").read_text(encoding="utf-8").splitlines()
    header = lines[0].split("\t")
    grades: dict[str, dict[str, int]] = {p.name: {} for p in personas}
    days: dict[str, set[str]] = {}
    for line in lines[1:]:
        cells = dict(zip(header, line.split("\t"), strict=True))
        days.setdefault(cells["day"], set()).add(cells["arxiv_id"])
        for p in personas:
            grades[p.name][cells["arxiv_id"]] = int(cells[p.name])
    papers: dict[str, list[Paper]] = {}
    for day, ids in sorted(days.items()):
        path = next(d / f"{day}.json" for d in DAY_DIRS if (d / f"{day}.json").exists())
        data = json.loads(path.read_text(encoding="utf-8"))
        day_papers = parse_daily_papers(
            data, source="hf", origin=str(path), day=date.fromisoformat(day)
        )
        assert {q.arxiv_id for q in day_papers} == ids, f"{day}: labels do not cover the day"
        papers[day] = day_papers
    return personas, papers, grades


def ndcg(order: Sequence[str], grade: dict[str, int], pool: Sequence[str]) -> float:
    def dcg(ids: Sequence[str]) -> float:
        return sum((2 ** grade[i] - 1) / math.log2(r + 2) for r, i in enumerate(ids[:K]))

    ideal = dcg(sorted(pool, key=lambda i: -grade[i]))
    return dcg(order) / ideal if ideal else float("nan")


def precision(order: Sequence[str], grade: dict[str, int], pool: Sequence[str]) -> float:
    n = min(K, len(pool))
    return sum(1 for i in order[:n] if grade[i] >= 1) / n


Ranker = Callable[[Persona, list[Paper]], list[str]]


def make_rankers(personas: list[Persona], papers: dict[str, list[Paper]]) -> dict[str, Ranker]:
    embedder = WordLlamaEmbedder()
    cache = VectorCache(None)
    every = [p for day in papers.values() for p in day]
    liked = {p.arxiv_id: p for persona in personas for p in persona.liked}

    def sub(persona: Persona, **options: object) -> Subscriber:
        return Subscriber(email=f"{persona.name}@example.org", max_papers=1000, **options)  # type: ignore[arg-type]

    hybrid_subs = {
        p.name: sub(
            p, keywords=p.keywords, interests=(p.interest,), like=tuple(x.arxiv_id for x in p.liked)
        )
        for p in personas
    }
    context = build_context(
        every, list(hybrid_subs.values()), embedder=embedder, cache=cache, liked_papers=liked
    )

    def upvotes(persona: Persona, day: list[Paper]) -> list[str]:
        return [r.paper.arxiv_id for r in rank(day, sub(persona))]

    def by_keywords(persona: Persona, day: list[Paper]) -> list[str]:
        return [r.paper.arxiv_id for r in rank(day, sub(persona, keywords=persona.keywords))]

    def interests(persona: Persona, day: list[Paper]) -> list[str]:
        target = context.vectors[INTEREST_PREFIX + persona.interest]
        sims = {p.arxiv_id: float(context.vectors[p.arxiv_id] @ target) for p in day}
        return sorted(sims, key=lambda i: (-sims[i], i))

    def hybrid(persona: Persona, day: list[Paper]) -> list[str]:
        return [r.paper.arxiv_id for r in rank(day, hybrid_subs[persona.name], context)]

    return {"upvotes": upvotes, "keywords": by_keywords, "interests": interests, "hybrid": hybrid}


def evaluate(
    rankers: dict[str, Ranker],
    personas: list[Persona],
    papers: dict[str, list[Paper]],
    grades: dict[str, dict[str, int]],
    methods: Sequence[str] = METHODS,
) -> dict[str, tuple[float, float, int]]:
    out = {}
    for method in methods:
        n_scores, p_scores = [], []
        for persona in personas:
            for day_papers in papers.values():
                pool = [p.arxiv_id for p in day_papers]
                grade = grades[persona.name]
                if not any(grade[i] for i in pool):
                    continue
                order = rankers[method](persona, day_papers)
                n_scores.append(ndcg(order, grade, pool))
                p_scores.append(precision(order, grade, pool))
        out[method] = (statistics.fmean(n_scores), statistics.fmean(p_scores), len(n_scores))
    return out


def per_persona(
    rankers: dict[str, Ranker],
    personas: list[Persona],
    papers: dict[str, list[Paper]],
    grades: dict[str, dict[str, int]],
) -> None:
    print(f"\n{'persona':<18}" + "".join(f"{m:>11}" for m in METHODS) + "   (nDCG@10)")
    for persona in personas:
        row = evaluate(rankers, [persona], papers, grades)
        print(f"{persona.name:<18}" + "".join(f"{row[m][0]:>11.3f}" for m in METHODS))


def grid(
    rankers: dict[str, Ranker],
    personas: list[Persona],
    papers: dict[str, list[Paper]],
    grades: dict[str, dict[str, int]],
) -> None:
    shipped = {w: getattr(keywords, w) for w in WEIGHTS}
    results = []
    for values in itertools.product(
        (1.0, 0.75, 0.5, 0.25),
        (2.0, 4.0, 6.0, 8.0, 12.0),
        (0.0, 2.0, 4.0, 6.0),
        (0.0, 0.1, 0.2),
    ):
        for w, v in zip(WEIGHTS, values, strict=True):
            setattr(keywords, w, v)
        score = evaluate(rankers, personas, papers, grades, ("hybrid",))["hybrid"]
        results.append((score[0], score[1], *values))
    for w, v in shipped.items():
        setattr(keywords, w, v)
    results.sort(reverse=True)
    print(f"\nGrid search of the hybrid (best 10 of {len(results)}):")
    print(f"{'nDCG@10':>8} {'P@10':>6} {'upvotes':>8} {'interest':>9} {'like':>5} {'floor':>6}")
    for n, p, uw, iw, lw, fl in results[:10]:
        print(f"{n:8.3f} {p:6.3f} {uw:8.2f} {iw:9.1f} {lw:5.1f} {fl:6.2f}")
    print("shipped:", ", ".join(f"{k}={v}" for k, v in shipped.items()))


def similarity_stats(
    personas: list[Persona], papers: dict[str, list[Paper]], grades: dict[str, dict[str, int]]
) -> None:
    """Similarity to the interest by grade: where the relevance threshold should sit."""
    embedder = WordLlamaEmbedder()
    every = [p for day in papers.values() for p in day]
    vecs = embedder.embed([paper_text(p) for p in every])
    by_grade: dict[int, list[float]] = {0: [], 1: [], 2: []}
    for persona in personas:
        target = embedder.embed([persona.interest])[0]
        for p, v in zip(every, vecs, strict=True):
            by_grade[grades[persona.name][p.arxiv_id]].append(float(v @ target))
    print("\nCosine similarity paper ↔ interest, by grade (min / median / max, count):")
    for g, sims in by_grade.items():
        print(
            f"  grade {g}: {min(sims):.3f} / {statistics.median(sims):.3f} / "
            f"{max(sims):.3f}  (n={len(sims)})"
        )


def speed(subscribers: int = 10_000, n_papers: int = 75, repeats: int = 3) -> None:
    """Rank stage at ``subscribers`` x ``n_papers``: keywords only vs. the hybrid."""
    _, papers, _ = load_set()
    pool = [p for day in papers.values() for p in day]
    edition = [pool[i % len(pool)] for i in range(n_papers)]
    edition = [
        Paper(
            arxiv_id=f"2499.{i:05d}",
            title=p.title,
            abstract=p.abstract,
            upvotes=p.upvotes,
            authors=p.authors,
        )
        for i, p in enumerate(edition)
    ]
    topics = [
        "reinforcement learning for reasoning in language models",
        "video generation with diffusion models",
        "LLM agents using tools and the web",
        "robot manipulation and embodied AI",
        "efficient inference and quantization",
    ]
    words = [("reasoning",), ("diffusion", "video"), ("agent*",), ("robot*",), ("quantization",)]
    keyword_subs = [
        Subscriber(email=f"s{i}@example.org", keywords=words[i % 5]) for i in range(subscribers)
    ]
    hybrid_subs = [
        Subscriber(
            email=f"s{i}@example.org",
            keywords=words[i % 5],
            # 1,000 distinct interests (shared by ten subscribers each), two likes each
            interests=(f"{topics[i % 5]} ({i % 1000})",),
            like=(edition[i % n_papers].arxiv_id, edition[(i + 7) % n_papers].arxiv_id),
        )
        for i in range(subscribers)
    ]
    embedder = WordLlamaEmbedder()
    loaded = psutil.Process().memory_info().rss
    embedder.embed(["warm up"])  # the model load (~0.3 s, once per process) is not ranking
    print(
        f"\nModel loaded: RSS +{(psutil.Process().memory_info().rss - loaded) / 2**20:.1f} MiB "
        f"(sending process only: render workers get vectors, not the model)"
    )

    def run(subs: list[Subscriber], with_context: bool) -> tuple[float, float, int]:
        before = psutil.Process().memory_info().rss
        # CPU time of this process: the machine may be shared, wall time would count waiting.
        t0 = time.process_time()
        context = (
            build_context(edition, subs, embedder=embedder, cache=VectorCache(None))
            if with_context
            else None
        )
        t1 = time.process_time()
        for s in subs:
            rank(edition, s, context)
        t2 = time.process_time()
        grown = psutil.Process().memory_info().rss - before
        return t1 - t0, t2 - t1, grown

    base, hybrid = [], []
    for _ in range(repeats):
        base.append(run(keyword_subs, False))
        hybrid.append(run(hybrid_subs, True))
    print(
        f"\nRank stage, {subscribers:,} subscribers x {n_papers} papers ({repeats} runs, "
        f"CPU time of this process):"
    )
    for label, runs in (("keywords only", base), ("hybrid", hybrid)):
        ctx = [r[0] for r in runs]
        per = [r[1] / subscribers * 1e3 for r in runs]
        print(
            f"  {label:<14} rank {min(per):.3f} / {statistics.median(per):.3f} / "
            f"{max(per):.3f} ms per subscriber (min/median/max); context build "
            f"{statistics.median(ctx):.2f} s; RSS growth during the run "
            f"{max(r[2] for r in runs) / 2**20:.1f} MiB"
        )
    added = [
        (h[1] + h[0]) / subscribers * 1e3 - b[1] / subscribers * 1e3
        for h, b in zip(hybrid, base, strict=True)
    ]
    print(
        "  embedding + similarity add "
        f"{min(added):.3f} / {statistics.median(added):.3f} / {max(added):.3f} ms per "
        "subscriber (context build included; first run embeds 1,075 texts, cold cache)"
    )
    ratio = statistics.median(r[1] for r in hybrid) / statistics.median(r[1] for r in base)
    print(f"  hybrid / keywords-only rank time: {ratio:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--grid", action="store_true", help="search the hybrid's weights")
    parser.add_argument("--speed", action="store_true", help="time the rank stage at scale")
    parser.add_argument("--subscribers", type=int, default=10_000)
    parser.add_argument("--learn", action="store_true", help="evaluate the reader models")
    args = parser.parse_args()
    np.seterr(all="raise")
    personas, papers, grades = load_set()
    n_papers = sum(len(v) for v in papers.values())
    print(f"Evaluation set: {len(personas)} personas, {len(papers)} days, {n_papers} papers")
    rankers = make_rankers(personas, papers)
    results = evaluate(rankers, personas, papers, grades)
    print(f"\n{'method':<12}{'nDCG@10':>9}{'P@10':>8}  (mean over {results['hybrid'][2]} pairs)")
    for method in METHODS:
        n, p, _ = results[method]
        print(f"{method:<12}{n:9.3f}{p:8.3f}")
    gain = results["hybrid"][0] - results["keywords"][0]
    print(f"\nhybrid - keywords: {gain:+.3f} nDCG@10 (target: +0.10)")
    per_persona(rankers, personas, papers, grades)
    similarity_stats(personas, papers, grades)
    if args.grid:
        grid(rankers, personas, papers, grades)
    if args.speed:
        speed(args.subscribers)


# -- issue 23: reader models -----------------------------------------------------------------------

TEST_FROM = "2026-01-01"
"""Days from here on are the test days (the 10 of 2026); the 15 before are replayed only."""
VALID_FROM = "2025-01-01"
"""For choosing the model's weights: replay the 10 days of 2024, measure on the 5 of 2025."""
SHOWN = 10
"""Papers an edition shows (``max_papers``)."""
SKIM = 5
"""A simulated reader gives 👎 only to grade-0 papers among the first SKIM shown."""
CURVE = (0, 5, 10, 20, 40)
LIBRARIES = EVAL / "libraries"


class Lab:
    """Vectors of every paper, library entry, interest and liked paper, embedded once."""

    def __init__(self, personas: list[Persona], papers: dict[str, list[Paper]]) -> None:
        self.personas, self.papers = personas, papers
        self.every = [p for day in papers.values() for p in day]
        self.liked = {p.arxiv_id: p for persona in personas for p in persona.liked}
        self.libraries = {
            p.name: read_library(LIBRARIES / f"{p.name}.bib")
            for p in personas
            if (LIBRARIES / f"{p.name}.bib").exists()
        }
        subs = [self.sub(p) for p in personas]
        self.base = build_context(
            self.every,
            subs,
            embedder=WordLlamaEmbedder(),
            cache=VectorCache(None),
            liked_papers=self.liked,
        )
        self.vectors = dict(self.base.vectors)
        entries = [e for lib in self.libraries.values() for e in lib]
        if entries:
            mat = WordLlamaEmbedder().embed([e.text for e in entries])
            self.vectors.update({e.key: mat[i] for i, e in enumerate(entries)})
        for q in self.every:
            self.vectors.setdefault(q.arxiv_id, self.base.vectors[q.arxiv_id])

    def sub(
        self,
        persona: Persona,
        *,
        keywords: bool = True,
        interest: bool = True,
        liked: bool = True,
        library: bool = False,
    ) -> Subscriber:
        return Subscriber(
            email=f"{persona.name}@example.org",
            max_papers=1000,
            keywords=persona.keywords if keywords else (),
            interests=(persona.interest,) if interest else (),
            like=tuple(x.arxiv_id for x in persona.liked) if liked else (),
            library=(f"{persona.name}.bib",) if library else (),
        )

    def rank_day(
        self,
        day: list[Paper],
        sub: Subscriber,
        fb: Feedback,
        *,
        model: bool,
        library: bool = False,
        weight: float | None = None,
        half: float | None = None,
        l2: float | None = None,
    ) -> list[str]:
        ctx = RankContext(
            vectors=self.base.vectors,
            feedback={sub.email: fb},
            papers=self.liked,
        )
        if model:
            lib = self.libraries.get(sub.email.split("@")[0], []) if library else []
            examples = reader_model.reader_examples(sub, fb, lib, today=date(2026, 1, 1))
            mat = np.stack([self.vectors[p.arxiv_id] for p in day])
            saved = reader_model.MODEL_HALF_SIGNAL
            if half is not None:
                reader_model.MODEL_HALF_SIGNAL = half
            try:
                trained = reader_model.train(examples, self.vectors, mat, l2=l2)
                if trained is not None:
                    ctx.learned = reader_model.learned_for({sub.email: trained}, mat, weight=weight)
                    ctx.paper_index = {p.arxiv_id: j for j, p in enumerate(day)}
            finally:
                reader_model.MODEL_HALF_SIGNAL = saved
        return [r.paper.arxiv_id for r in rank(day, sub, ctx)]


def _rate(order: list[str], grade: dict[str, int], fb: Feedback) -> Feedback:
    """What a simulated reader does with an edition: 👍 every shown paper graded 2, 👎 the
    grade-0 ones among the first SKIM (they skim the top), nothing for grade 1."""
    likes, dislikes = list(fb.likes), list(fb.dislikes)
    for rank_, pid in enumerate(order[:SHOWN]):
        if grade[pid] == 2 and pid not in likes:
            likes.append(pid)
        elif grade[pid] == 0 and rank_ < SKIM and pid not in dislikes:
            dislikes.append(pid)
    return Feedback(tuple(likes), tuple(dislikes))


def replay(
    lab: Lab,
    grades: dict[str, dict[str, int]],
    *,
    model: bool,
    measure_from: str = TEST_FROM,
    until: str = "9999",
    **knobs: float | None,
) -> tuple[float, float, int, float]:
    """Temporal split: every day in order, rank (measured from ``measure_from`` on), then the
    reader rates what that edition showed. Returns (nDCG@10, P@10, pairs, mean ratings)."""
    n_scores, p_scores, rated = [], [], []
    for persona in lab.personas:
        grade = grades[persona.name]
        sub = lab.sub(persona)
        likes = set(sub.like)
        fb = Feedback()
        for day_key, day_papers in lab.papers.items():
            if day_key >= until:
                break
            day = [p for p in day_papers if p.arxiv_id not in likes]
            order = lab.rank_day(day, sub, fb, model=model, **knobs)  # type: ignore[arg-type]
            pool = [p.arxiv_id for p in day]
            if day_key >= measure_from and any(grade[i] for i in pool):
                n_scores.append(ndcg(order, grade, pool))
                p_scores.append(precision(order, grade, pool))
            fb = _rate(order, grade, fb)
        rated.append(len(fb.likes) + len(fb.dislikes))
    return (
        statistics.fmean(n_scores),
        statistics.fmean(p_scores),
        len(n_scores),
        statistics.fmean(rated),
    )


def learning_curve(lab: Lab, grades: dict[str, dict[str, int]]) -> dict[int, tuple[float, float]]:
    """Quality on the test days after the first N ratings of the replay (the same ratings for
    both methods: the editions today's hybrid showed on the days before 2026), frozen."""
    out: dict[int, tuple[float, float]] = {}
    budgets: dict[str, list[tuple[str, bool]]] = {}
    for persona in lab.personas:
        grade = grades[persona.name]
        sub = lab.sub(persona)
        fb = Feedback()
        events: list[tuple[str, bool]] = []
        for day_key, day_papers in lab.papers.items():
            if day_key >= TEST_FROM:
                break
            day = [p for p in day_papers if p.arxiv_id not in set(sub.like)]
            order = lab.rank_day(day, sub, fb, model=False)
            after = _rate(order, grade, fb)
            events += [(i, True) for i in after.likes if i not in fb.likes]
            events += [(i, False) for i in after.dislikes if i not in fb.dislikes]
            fb = after
        budgets[persona.name] = events
    for n in CURVE:
        scores: dict[bool, list[float]] = {False: [], True: []}
        for persona in lab.personas:
            grade = grades[persona.name]
            sub = lab.sub(persona)
            taken = budgets[persona.name][:n]
            fb = Feedback(tuple(i for i, up in taken if up), tuple(i for i, up in taken if not up))
            for day_key, day_papers in lab.papers.items():
                if day_key < TEST_FROM:
                    continue
                day = [p for p in day_papers if p.arxiv_id not in set(sub.like)]
                pool = [p.arxiv_id for p in day]
                if not any(grade[i] for i in pool):
                    continue
                for model in (False, True):
                    order = lab.rank_day(day, sub, fb, model=model)
                    scores[model].append(ndcg(order, grade, pool))
        out[n] = (statistics.fmean(scores[False]), statistics.fmean(scores[True]))
    return out


def cold_start(lab: Lab, grades: dict[str, dict[str, int]]) -> dict[str, tuple[float, float]]:
    """Test days, no ratings: hand-written keywords vs. the persona's library alone (its
    grade-2 papers of the days before 2026, as a BibTeX file), and the combinations."""
    configs = {
        "upvotes only": dict(keywords=False, interest=False, liked=False, library=False),
        "keywords only": dict(keywords=True, interest=False, liked=False, library=False),
        "library only": dict(keywords=False, interest=False, liked=False, library=True),
        "hybrid (kw + interest + 2 likes)": dict(
            keywords=True, interest=True, liked=True, library=False
        ),
        "hybrid + library": dict(keywords=True, interest=True, liked=True, library=True),
    }
    out = {}
    for label, cfg in configs.items():
        n_scores, p_scores = [], []
        for persona in lab.personas:
            grade = grades[persona.name]
            sub = lab.sub(persona, **cfg)
            for day_key, day_papers in lab.papers.items():
                if day_key < TEST_FROM:
                    continue
                day = [
                    p for p in day_papers if p.arxiv_id not in {x.arxiv_id for x in persona.liked}
                ]
                pool = [p.arxiv_id for p in day]
                if not any(grade[i] for i in pool):
                    continue
                order = lab.rank_day(day, sub, Feedback(), model=cfg["library"], library=True)
                n_scores.append(ndcg(order, grade, pool))
                p_scores.append(precision(order, grade, pool))
        out[label] = (statistics.fmean(n_scores), statistics.fmean(p_scores))
    return out


def learn_main() -> None:
    np.seterr(all="raise")
    personas, papers, grades = load_set()
    test_days = [d for d in papers if d >= TEST_FROM]
    print(
        f"Evaluation set: {len(personas)} personas, {len(papers)} days "
        f"({len(papers) - len(test_days)} replayed, {len(test_days)} test days from {TEST_FROM}), "
        f"{sum(len(v) for v in papers.values())} papers"
    )
    lab = Lab(personas, papers)
    if "--grid" in sys.argv:
        print("\nValidation (replay 2024, measure 2025; test days unseen): weight, half, l2")
        rows = []
        for weight in (4.0, 8.0, 12.0, 16.0):
            for half in (1.0, 3.0, 6.0):
                for l2 in (0.1, 0.3, 1.0):
                    r = replay(
                        lab,
                        grades,
                        model=True,
                        measure_from=VALID_FROM,
                        until=TEST_FROM,
                        weight=weight,
                        half=half,
                        l2=l2,
                    )
                    rows.append((r[0], weight, half, l2))
        base = replay(lab, grades, model=False, measure_from=VALID_FROM, until=TEST_FROM)
        for n, w, h, l2 in sorted(rows, reverse=True)[:8]:
            print(f"  nDCG@10 {n:.3f}  weight {w:g}  half {h:g}  l2 {l2:g}")
        print(f"  hybrid today on the validation days: {base[0]:.3f}")
    today = replay(lab, grades, model=False)
    learned = replay(lab, grades, model=True)
    print(
        f"\nTemporal replay, measured on the {len(test_days)} test days "
        f"(mean over {today[2]} pairs):"
    )
    print(f"{'method':<28}{'nDCG@10':>9}{'P@10':>8}{'ratings':>9}")
    print(f"{'hybrid today':<28}{today[0]:9.3f}{today[1]:8.3f}{today[3]:9.1f}")
    print(f"{'hybrid + reader model':<28}{learned[0]:9.3f}{learned[1]:8.3f}{learned[3]:9.1f}")
    print(f"  gain {learned[0] - today[0]:+.3f} nDCG@10 (target ≥ +0.05)")
    print("\nLearning curve (test days, ratings frozen after N; nDCG@10):")
    print(f"{'ratings':>8}{'hybrid today':>14}{'+ model':>10}{'gain':>8}")
    for n, (h, m) in learning_curve(lab, grades).items():
        print(f"{n:>8}{h:14.3f}{m:10.3f}{m - h:+8.3f}")
    print("\nLibrary cold start (test days, no ratings):")
    print(f"{'configuration':<34}{'nDCG@10':>9}{'P@10':>8}")
    for label, (n, p) in cold_start(lab, grades).items():
        print(f"{label:<34}{n:9.3f}{p:8.3f}")
    sizes = {k: len(v) for k, v in lab.libraries.items()}
    print(f"  library entries per persona: {sizes}")


if __name__ == "__main__":
    if "--learn" in sys.argv:
        learn_main()
    else:
        main()
