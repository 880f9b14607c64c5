"""Benchmark of the subscribers loader: seconds, memory kept and peak memory, per list size.

Prints figures; asserts nothing (CI does not run it). For each size the subscribers file is
written like ``bench_send.write_subscribers`` (1–5 keywords, a name, ``max_papers``, a
quarter ``only_matching``; ``send_at`` under ``defaults``), then loaded in a fresh interpreter
that has imported ``digest`` first, ``--runs`` times, interleaved with the references:

* **this tree**: ``load_subscribers`` (the streaming path: line reader, libyaml for odd items);
* **ruamel** (``--ruamel``): the same loader forced onto the ruamel node-tree path (what reads
  a file with a problem; slow and large: at 100,000 it takes tens of seconds and most of a
  GB);
* **before** (``--before DIR``): ``load_subscribers`` of another checkout's ``digest``
  package (e.g. ``git archive OLD digest | tar -x -C DIR``), in the same run.

Seconds are wall time of the load; "kept" is RSS after the load minus RSS before it, "peak"
the high-water mark (``ru_maxrss``) minus RSS before it, in MB (2**20 bytes); bytes per
subscriber = kept / n. Min/median/max over the runs.

Usage::

    .venv/bin/python benchmarks/bench_load.py                      # 10,000 and 100,000
    .venv/bin/python benchmarks/bench_load.py --sizes 100000 --runs 3 --before /tmp/old

Targets (2-core machine, 100,000 subscribers): ≤ 3 s and ≤ 60 MB above the interpreter.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))

from bench_send import EXAMPLES, SEED, vocabulary, write_subscribers  # noqa: E402

DEFAULT_SIZES = (10_000, 100_000)
DEFAULT_RUNS = 3
TARGET_LOAD_S = 3.0
TARGET_LOAD_MB = 60.0
TARGET_SIZE = 100_000
MB = 2**20

_SNIPPET = """
import json, resource, sys, time
import psutil
import digest.core
from pathlib import Path
from digest.subscribers import load_subscribers
from digest.subscribers import yaml as loader
path = Path(sys.argv[1])
proc = psutil.Process()
before = proc.memory_info().rss
t0 = time.perf_counter()
if sys.argv[2] == "ruamel":
    subs, problems = loader._load(path.read_bytes(), path, None, streamed=False)
    assert subs is not None, problems
else:
    subs = load_subscribers(path)
wall = time.perf_counter() - t0
after = proc.memory_info().rss
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"n": len(subs), "wall": wall, "kept": (after - before) / 2**20,
                  "peak": (peak - before) / 2**20}))
"""


def measure(path: Path, tree: Path, mode: str) -> dict[str, float]:
    """One load in a fresh interpreter importing ``digest`` from ``tree``."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run(
        [sys.executable, "-c", _SNIPPET, str(path), mode],
        cwd=tree,
        env=env,
        check=True,
        capture_output=True,
    ).stdout
    result: dict[str, float] = json.loads(out)
    return result


def spread(values: list[float], unit: str, digits: int = 2) -> str:
    return (
        f"{min(values):.{digits}f} / {statistics.median(values):.{digits}f} / "
        f"{max(values):.{digits}f} {unit}"
    )


def verdict(ok: bool) -> str:
    return "MET" if ok else "NOT MET"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(DEFAULT_SIZES))
    parser.add_argument("--runs", type=int, default=DEFAULT_RUNS)
    parser.add_argument("--ruamel", action="store_true", help="also the ruamel node-tree path")
    parser.add_argument("--before", type=Path, help="a tree with another digest/ to compare")
    args = parser.parse_args()
    print(
        f"subscribers loader benchmark: {psutil.cpu_count()} CPUs, load average "
        f"{psutil.getloadavg()[0]:.1f} at start; min / median / max of {args.runs} run(s)"
    )
    cases = [("this tree", ROOT, "stream")]
    if args.before is not None:
        cases.append(("before", args.before.resolve(), "stream"))
    if args.ruamel:
        cases.append(("ruamel path", ROOT, "ruamel"))
    with tempfile.TemporaryDirectory(prefix="digest-bench-load-") as tmp:
        vocab = vocabulary(EXAMPLES)
        for n in args.sizes:
            path = Path(tmp) / f"subscribers-{n}.yaml"
            write_subscribers(path, n, vocab, random.Random(SEED))
            print(f"\n{n:,} subscribers ({path.stat().st_size / MB:.1f} MB of YAML)")
            results: dict[str, list[dict[str, float]]] = {name: [] for name, _, _ in cases}
            for _ in range(args.runs):
                for name, tree, mode in cases:  # interleaved: load changes hit each alike
                    results[name].append(measure(path, tree, mode))
            base = statistics.median(r["wall"] for r in results["this tree"])
            for name, runs in results.items():
                walls = [r["wall"] for r in runs]
                kept = [r["kept"] for r in runs]
                per = [r["kept"] * MB / n for r in runs]
                line = (
                    f"  {name:12} {spread(walls, 's')}; kept {spread(kept, 'MB', 1)} "
                    f"({spread(per, 'B/subscriber', 0)}); peak "
                    f"{spread([r['peak'] for r in runs], 'MB', 1)}"
                )
                if name != "this tree":
                    line += f"; {statistics.median(walls) / base:.1f}x this tree's time"
                print(line)
            if n == TARGET_SIZE:
                mine = results["this tree"]
                wall = statistics.median(r["wall"] for r in mine)
                peak = statistics.median(r["peak"] for r in mine)
                kept = statistics.median(r["kept"] for r in mine)
                print(
                    f"  target ≤ {TARGET_LOAD_S:g} s: {verdict(wall <= TARGET_LOAD_S)} "
                    f"(median {wall:.2f} s); ≤ {TARGET_LOAD_MB:g} MB kept: "
                    f"{verdict(kept <= TARGET_LOAD_MB)} ({kept:.1f} MB), peak "
                    f"{verdict(peak <= TARGET_LOAD_MB)} ({peak:.1f} MB)"
                )


if __name__ == "__main__":
    main()
