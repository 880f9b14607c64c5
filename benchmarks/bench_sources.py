"""Bounded sources under hostile servers: memory and time, before/after figures (issue 8 item 5).

Prints figures; asserts nothing. A local HTTP server (``tests/httpserver.py``, in this process)
serves hostile answers; each fetch runs ``HfSource.fetch`` in a *child process* so its peak RSS
(``ru_maxrss``) is its own:

1. **huge**: a generated 300 MB body without ``Content-Length`` (the worst case: it can only be
   refused while streaming), and the same with ``Content-Length``;
2. **trickle**: a 200 kB Daily Papers capture sent one byte every 50 ms (hours in total; every
   read completes within the read timeout): seconds until the fetch ends;
3. **reference**: the same capture at full speed.

``--code DIR`` imports ``digest`` from another checkout (e.g. a worktree of the commit before the
change) for the "before" figures; a child that has not finished after ``--cap`` seconds is
killed and reported as such.

Usage::

    .venv/bin/python benchmarks/bench_sources.py [--code DIR] [--deadline 10] [--cap 60]
        [--only huge]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.httpserver import LocalHTTPServer  # noqa: E402

CAPTURE = ROOT / "tests" / "fixtures" / "hf-daily-papers" / "2026-08-20.json"
HUGE_BYTES = 300 * 1024 * 1024
API = "/api/daily_papers"

CHILD = r"""
import asyncio, json, resource, sys, time
code = sys.argv[3]
sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in repr(f)]  # not our install
sys.path.insert(0, code)
from datetime import date
from digest.sources import HfSource, HttpOptions
url, deadline = sys.argv[1], float(sys.argv[2])
try:
    options = HttpOptions(timeout_s=20.0, retries=0, retry_base_s=0.0, deadline_s=deadline)
except TypeError:  # a digest without the deadline
    options = HttpOptions(timeout_s=20.0, retries=0, retry_base_s=0.0)
start = time.monotonic()
try:
    papers = asyncio.run(HfSource(url, options=options).fetch(date(2026, 8, 20)))
    outcome = f"{len(papers)} papers"
except Exception as e:
    outcome = f"{type(e).__name__}: {str(e)[:110]}"
import digest
assert digest.__file__.startswith(code), digest.__file__
print(json.dumps({"seconds": time.monotonic() - start, "outcome": outcome,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def run_child(code: Path, url: str, deadline: float, cap: float) -> dict[str, object]:
    start = time.monotonic()
    try:
        done = subprocess.run(
            [sys.executable, "-c", CHILD, url, str(deadline), str(code)],
            capture_output=True,
            text=True,
            timeout=cap,
        )
    except subprocess.TimeoutExpired:
        took = time.monotonic() - start
        return {"seconds": took, "outcome": f"still running after {cap:g} s: killed"}
    if done.returncode != 0:
        return {"seconds": time.monotonic() - start, "outcome": done.stderr.strip()[-200:]}
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--code", type=Path, default=ROOT, help="checkout to import digest from")
    parser.add_argument("--deadline", type=float, default=10.0, help="deadline_s, seconds")
    parser.add_argument("--cap", type=float, default=60.0, help="kill a child after, seconds")
    parser.add_argument("--only", default="", help="run the cases whose label has this word")
    args = parser.parse_args()
    cases = {
        "reference (200 kB at full speed)": ("/ok", {"file": CAPTURE}),
        "huge, 300 MB, no Content-Length": ("/huge", {"size": HUGE_BYTES, "declare_length": False}),
        "huge, 300 MB, Content-Length": ("/huge-declared", {"size": HUGE_BYTES}),
        "trickle, 1 byte / 50 ms": ("/trickle", {"file": CAPTURE, "trickle_s": 0.05}),
    }
    print(f"digest from {args.code}; deadline {args.deadline:g} s; cap {args.cap:g} s")
    with LocalHTTPServer() as server:
        for label, (path, route) in cases.items():
            if args.only not in label:
                continue
            server.add(path, **route)  # type: ignore[arg-type]
            result = run_child(args.code, server.url(path), args.deadline, args.cap)
            sent = server.bytes_sent(f"{path}?date=2026-08-20")
            rss = result.get("peak_rss_mb")
            rss_text = f"peak RSS {float(rss):7.1f} MB" if isinstance(rss, float) else " " * 20
            print(
                f"{label:34s} {float(str(result['seconds'])):7.2f} s  {rss_text}  "
                f"sent {sent / 2**20:8.1f} MiB  {result['outcome']}"
            )


if __name__ == "__main__":
    main()
