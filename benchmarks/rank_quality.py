"""Ranking quality on the labelled evaluation set: nDCG@10 and precision@10 per method.

    python benchmarks/rank_quality.py            # the four methods, with the shipped weights
    python benchmarks/rank_quality.py --grid     # also search the hybrid's weights
    python benchmarks/rank_quality.py --speed    # cost of the semantic part at 10,000 subscribers

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

from digest.models import Paper  # noqa: E402
from digest.ranking import build_context, keywords, rank  # noqa: E402
from digest.ranking.embeddings import VectorCache, WordLlamaEmbedder  # noqa: E402
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


if __name__ == "__main__":
    main()
