"""Cost of reader models in a send (issue 23): ms per subscriber added, RSS, what workers get.

    python benchmarks/bench_reader.py                       # 20,000 subscribers, 10 % modelled
    python benchmarks/bench_reader.py --subscribers 100000  # the issue's size (slower)

Every subscriber has 1–3 keywords (as in bench_send); 10 % also have a reader model: 90 % of
those from 5–40 👍/👎 on real papers of the evaluation days, 10 % from one of 20 shared library
files (BibTeX, 20 real papers each). Each run measures three sends, back to back (min / median /
max over the runs):

* today: ``build_context`` + ``rank`` for every subscriber, no models (the hybrid of today);
* cold: the same send with models and an empty reader cache: every library file parsed, its
  entries embedded (the vector cache holds the papers, as after earlier sends, not the library
  entries), every model trained (the first send with models);
* warm: again, every model cached (the steady state: a daily send where nobody's signal
  changed): signal hashes, cache reads, one matrix product for all models, ``rank``.

"Added per subscriber" is (cold or warm − today) / subscribers, over all subscribers, modelled
or not. CPU time of this process (the machine may be shared). Also printed: the pickled size
of the context's models (what each render worker receives once) and the RSS growth of the
sending process over the first cold send.
"""

from __future__ import annotations

import argparse
import pickle
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from rank_quality import load_set  # noqa: E402

from digest.models import Feedback, Paper  # noqa: E402
from digest.ranking import build_context, rank  # noqa: E402
from digest.ranking.embeddings import VectorCache, WordLlamaEmbedder  # noqa: E402
from digest.ranking.learning import ReaderLearner  # noqa: E402
from digest.ranking.reader import learned_for  # noqa: E402
from digest.ranking.readercache import ReaderCache  # noqa: E402
from digest.ranking.semantic import paper_text  # noqa: E402
from digest.settings import load_settings  # noqa: E402
from digest.subscribers import Subscriber  # noqa: E402

N_PAPERS = 75
MODELLED = 0.10
LIBRARY_SHARE = 0.10
LIBRARY_FILES = 20
WORDS = ("reasoning", "diffusion", "agent*", "robot*", "quantization", "speech", "multimodal")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscribers", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    rng = random.Random(23)
    _, days, _ = load_set()
    pool = [p for day in days.values() for p in day]
    edition = [
        Paper(
            arxiv_id=f"2699.{i:05d}",
            title=p.title,
            abstract=p.abstract,
            upvotes=p.upvotes,
            authors=p.authors,
        )
        for i, p in enumerate(rng.sample(pool, N_PAPERS))
    ]
    rated_pool = [p for p in pool if p.arxiv_id not in {q.arxiv_id for q in edition}]
    tmp = Path(tempfile.mkdtemp(prefix="bench-reader-"))
    for f in range(LIBRARY_FILES):
        entries = rng.sample(rated_pool, 20)
        (tmp / f"lib{f}.bib").write_text(
            "\n".join(
                f"@article{{e{i}, title = {{{p.title.replace('{', '').replace('}', '')}}}, "
                f"abstract = {{{p.abstract.replace('{', '').replace('}', '')}}}, year = 2025}}"
                for i, p in enumerate(entries)
            ),
            encoding="utf-8",
        )
    subs: list[Subscriber] = []
    feedback: dict[str, Feedback] = {}
    n_model = int(args.subscribers * MODELLED)
    for i in range(args.subscribers):
        words = tuple(rng.sample(WORDS, rng.randint(1, 3)))
        email = f"s{i}@example.org"
        if i < n_model * LIBRARY_SHARE:
            subs.append(
                Subscriber(email=email, keywords=words, library=(f"lib{i % LIBRARY_FILES}.bib",))
            )
        else:
            subs.append(Subscriber(email=email, keywords=words))
            if i < n_model:
                rated = rng.sample(rated_pool, rng.randint(5, 40))
                cut = max(1, len(rated) // 3)
                feedback[email] = Feedback(
                    tuple(p.arxiv_id for p in rated[:cut]),
                    tuple(p.arxiv_id for p in rated[cut:]),
                )
    settings = load_settings(
        env_file=None, subscribers=tmp / "subscribers.yaml", state_path=tmp / "state.sqlite3"
    )
    embedder = WordLlamaEmbedder()
    embedder.embed(["warm up"])
    texts = {p.arxiv_id: paper_text(p) for p in [*rated_pool, *edition]}
    titles = {p.arxiv_id: p.title for p in rated_pool}
    vectors = VectorCache(None)
    vectors.vectors(embedder, list(texts.values()))  # the vector cache is warm in a real send
    process = psutil.Process()

    def today() -> float:
        t0 = time.process_time()
        ctx = build_context(edition, subs, embedder=embedder, cache=vectors, feedback=feedback)
        for s in subs:
            rank(edition, s, ctx)
        return time.process_time() - t0

    def with_models(learner: ReaderLearner) -> tuple[float, float, int]:
        t0 = time.process_time()
        ctx = build_context(edition, subs, embedder=embedder, cache=vectors, feedback=feedback)
        ids = [p.arxiv_id for p in edition]
        missing = [p for p in edition if p.arxiv_id not in ctx.vectors]
        if missing:
            mat = vectors.vectors(embedder, [paper_text(p) for p in missing])
            ctx.vectors = {**ctx.vectors, **{p.arxiv_id: mat[k] for k, p in enumerate(missing)}}
        matrix = np.stack([ctx.vectors[i] for i in ids])
        readers = [s for s in subs if s.library or s.email in feedback]
        models = learner.models(
            readers,
            feedback,
            embedder=embedder,
            vectors=vectors,
            background=matrix,
            texts=texts,
            titles=titles,
        )
        ctx.learned = learned_for(models, matrix)
        ctx.paper_index = {pid: j for j, pid in enumerate(ids)}
        t1 = time.process_time()
        for s in subs:
            rank(edition, s, ctx)
        size = len(pickle.dumps(dict(ctx.learned), protocol=pickle.HIGHEST_PROTOCOL))
        return time.process_time() - t0, t1 - t0, size

    before = process.memory_info().rss
    base, cold, warm, prep, size, grown = [], [], [], [], 0, 0
    for run in range(args.runs):
        base.append(today())
        cache = ReaderCache(tmp / f"run{run}.reader")  # empty: libraries parsed, models trained
        vectors = VectorCache(None)
        vectors.vectors(embedder, list(texts.values()))  # the papers, not the library entries
        total, _, _ = with_models(ReaderLearner(settings, cache))
        cold.append(total)
        if run == 0:
            grown = process.memory_info().rss - before
        total, setup, size = with_models(ReaderLearner(settings, cache))
        warm.append(total)
        prep.append(setup)
        cache.close()
    n = args.subscribers

    def added(values: list[float]) -> list[float]:
        return [1e3 * (v - b) / n for v, b in zip(values, base, strict=True)]

    def mmm(values: list[float]) -> str:
        return f"{min(values):.3f} / {statistics.median(values):.3f} / {max(values):.3f}"

    print(
        f"{n:,} subscribers × {N_PAPERS} papers, {n_model:,} with a model "
        f"({int(n_model * LIBRARY_SHARE):,} from {LIBRARY_FILES} library files, the rest from "
        f"5–40 ratings); {args.runs} runs, CPU s of this process (min / median / max)"
    )
    print(f"  today (hybrid, no models):  {mmm(base)} s")
    print(f"  with models, cold (trained): {mmm(cold)} s")
    print(f"  with models, warm (cached):  {mmm(warm)} s (of which models {mmm(prep)} s)")
    print(f"  added per subscriber, cold:  {mmm(added(cold))} ms (target ≤ 0.5)")
    print(f"  added per subscriber, warm:  {mmm(added(warm))} ms (target ≤ 0.5)")
    per_model = [1e3 * (c - b) / max(1, n_model) for c, b in zip(cold, base, strict=True)]
    print(f"  cold, per modelled reader:   {mmm(per_model)} ms")
    print(f"  ratio warm / today:          {statistics.median(warm) / statistics.median(base):.2f}")
    print(
        f"  models in the context (pickled, each render worker gets it once): "
        f"{size / 2**20:.1f} MiB = {size / max(1, n_model):.0f} B per modelled reader"
    )
    print(f"  RSS growth of this process over the first cold send: {grown / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
