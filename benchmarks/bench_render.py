"""Benchmark of making one message (rank → render → build), spliced against the exact path.

Prints figures; asserts nothing (CI does not run it). The same personalized subscribers as
``bench_send.py`` (1–5 keywords each, drawn from the bundled days) × a real day of papers.
Two renderers run interleaved, round by round, on the same messages, in one process:

* **exact**: ``Renderer(splice=False)``: Jinja and premailer on each message's whole document
  (with the paper-block cache), the path every template of one's own takes;
* **spliced**: the default ``Renderer()``: pieces inlined once per shape, messages assembled
  (:mod:`digest.render.splice`).

Each renderer first makes ``--warm`` messages (a long send reaches that steady state: the
shapes it has seen stop growing), then each round times ``--messages`` more in CPU time (so
another process on the machine disturbs it less). Reported per message, min / median / max
over ``--runs``: ranking, render (both parts), build (MIME + headers), their sum, and the ratio
exact / spliced of the render. Also: whether every spliced message equals the exact one, and
how many shapes the splicer keeps.

Usage::

    .venv/bin/python benchmarks/bench_render.py                 # 4,000 warm, 2,000 timed, 3 runs
    .venv/bin/python benchmarks/bench_render.py --warm 20000 --messages 5000
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_send  # noqa: E402

from digest.core import Digest  # noqa: E402
from digest.models import Edition  # noqa: E402
from digest.pipeline.workers import build_for, render_ranked  # noqa: E402
from digest.ranking import rank  # noqa: E402
from digest.render import Renderer  # noqa: E402
from digest.subscribers import load_subscribers  # noqa: E402


def stat(values: list[float]) -> str:
    return f"{min(values):.3f} / {statistics.median(values):.3f} / {max(values):.3f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--warm", type=int, default=4000, help="messages before timing")
    parser.add_argument("--messages", type=int, default=2000, help="messages timed per round")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--day", type=date.fromisoformat, default=date(2026, 8, 18))
    args = parser.parse_args(argv)
    total = args.warm + args.messages * args.runs
    with tempfile.TemporaryDirectory(prefix="bench-render-") as tmp_name:
        tmp = Path(tmp_name)
        vocab = bench_send.vocabulary(bench_send.EXAMPLES)
        bench_send.write_subscribers(tmp / "subscribers.yaml", total, vocab, random.Random(7))
        subs = list(load_subscribers(tmp / "subscribers.yaml"))
        settings = bench_send.settings_for(tmp, 2525, 1, "render.sqlite3", 0)
        edition = Edition.daily(args.day)
        with Digest(settings) as digest:
            papers = asyncio.run(digest.papers_for(edition)).papers
            now = digest.now()
            renderers = {"exact": Renderer(splice=False), "spliced": Renderer()}
            print(
                f"make-one-message benchmark: day {edition.key} ({len(papers)} papers), "
                f"{args.warm} warm-up messages, {args.messages} timed per round, {args.runs} "
                f"round(s); CPU time per message in ms"
            )
            for renderer in renderers.values():
                for sub in subs[: args.warm]:
                    ranked = rank(papers, sub, None)
                    if ranked:
                        render_ranked(settings, renderer, edition, ranked, len(papers), sub)
            figures: dict[str, dict[str, list[float]]] = {
                name: {"rank": [], "render": [], "build": [], "total": []} for name in renderers
            }
            same = True
            for i in range(args.runs):
                batch = subs[args.warm + i * args.messages : args.warm + (i + 1) * args.messages]
                t = time.process_time()
                pairs = [(s, rank(papers, s, None)) for s in batch]
                rank_ms = (time.process_time() - t) / len(batch) * 1e3
                pairs = [(s, r) for s, r in pairs if r]
                outputs = {}
                for name, renderer in renderers.items():
                    t = time.process_time()
                    rendered = [
                        render_ranked(settings, renderer, edition, r, len(papers), s)
                        for s, r in pairs
                    ]
                    render_ms = (time.process_time() - t) / len(pairs) * 1e3
                    t = time.process_time()
                    for (s, _), x in zip(pairs, rendered, strict=True):
                        build_for(settings, x, s, edition, now)
                    build_ms = (time.process_time() - t) / len(pairs) * 1e3
                    outputs[name] = rendered
                    f = figures[name]
                    f["rank"].append(rank_ms)
                    f["render"].append(render_ms)
                    f["build"].append(build_ms)
                    f["total"].append(rank_ms + render_ms + build_ms)
                same = same and outputs["exact"] == outputs["spliced"]
            print(f"  {'':8} {'rank':>22} {'render':>22} {'build':>22} {'total':>22}")
            for name, f in figures.items():
                print(
                    f"  {name:8} "
                    + " ".join(f"{stat(f[k]):>22}" for k in ("rank", "render", "build", "total"))
                )
            exact, spliced = figures["exact"]["render"], figures["spliced"]["render"]
            ratio = [e / s for e, s in zip(exact, spliced, strict=True)]
            print(f"render exact / spliced = {stat(ratio)} (min / median / max)")
            fast = renderers["spliced"]
            html, text = fast._splicer, fast._text_splicer
            assert html is not None and text is not None
            print(
                f"spliced output identical to exact: {same}; HTML shapes: "
                f"{len(html._cache.skeletons)} skeletons, {len(html._cache.blocks)} paper blocks "
                f"({html.fallbacks} messages left to the exact path); text: "
                f"{len(text._cache.blocks)} paper parts"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
