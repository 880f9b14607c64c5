"""Benchmark of `digest send` against the physical limits, measured in the same run.

Prints figures; asserts nothing (CI does not run it). Each round runs, back to back against
the same sink:

1. **C limit**: Postfix's ``smtp-source`` (C) sends N messages of the digests' mean size over
   the same number of connections.
2. **Python transport limit**: a minimal aiosmtplib pool (one process, ``concurrency``
   connections, each ``sendmail`` of pre-built real digest messages; no state, no render).
3. **digest**: ``digest send`` through the CLI (a fresh process: imports, settings, the
   subscribers YAML load, papers, rank, render, build, claim, SMTP, mark_sent, state file
   with its real settings), N personalized subscribers.

Peak RSS is that of the whole process tree (the CLI process and its render workers, summed),
sampled every :data:`RSS_SAMPLE_S` seconds. The sink is Postfix's ``smtp-sink`` (C, another
process: it does not compete for the GIL and costs little CPU); install it with
``apt-get install -y postfix`` (Debian/Ubuntu; it is in the ``postfix`` package), or the
aiosmtpd sink of ``tests/smtpserver.py`` is used and the report says so. Then, separately:

With ``--modelled SHARE`` that share of the subscribers has a reader model (issue 23): a tenth
of them a library file (one of 20 BibTeX files of 20 real papers each, next to the subscribers
file), the others 5–40 👍/👎 on real papers of the evaluation days (recorded in each run's
fresh state file before the run, the papers stored as known papers). Each run starts with empty
vector and reader caches: every paper, rated paper and library entry is embedded and every
model trained (the costliest send).

   With ``--home state`` (issue 22) each run also sends from the list in the state: the file
   is imported into that run's fresh state file first (not timed), then ``digest send`` with
   ``DIGEST_SUBSCRIBERS=state`` reads it in chunks; its wall time is compared with the file
   home's (target: within 10 %).
4. **Subscriber load**: ``load_subscribers`` of the N-subscriber file in a fresh interpreter
   (``digest`` imported first): seconds, and RSS above that interpreter.
5. **Latency** (issue 3): an aiosmtpd sink delaying each DATA reply by 100 ms; ``Digest.send``
   with pools of 4 and 8 connections (ideal: concurrency / 0.1 s messages per second).

``--metrics-cost`` instead (issue 24): ``Digest.send`` in this process against the sink,
rounds alternating without metrics (``digest send``) and with a Prometheus registry counting
every reply, duration and bounce (what ``digest run`` does), msg/s of each; and the cost of
one message's counting alone.

Usage (min/median/max over ``--runs``)::

    .venv/bin/python benchmarks/bench_send.py --subscribers 100000 --runs 3
    .venv/bin/python benchmarks/bench_send.py --quick          # 2,000 subscribers, 1 run
    .venv/bin/python benchmarks/bench_send.py --subscribers 100000 --modelled 0.1
    .venv/bin/python benchmarks/bench_send.py --metrics-cost --subscribers 2000 --runs 5

Targets (2-core machine, 100,000 subscribers): digest ≤ 150 s end to end, whole-tree peak
RSS ≤ 250 MB, digest ≥ 0.30 × the aiosmtplib pool; load ≤ 3 s and ≤ 60 MB; latency ≥ 0.9 ×
ideal.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import pickle
import random
import re
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from digest.core import Digest  # noqa: E402
from digest.metrics import NO_METRICS, Metrics, Recorder  # noqa: E402
from digest.models import Edition  # noqa: E402
from digest.pipeline.workers import make_message  # noqa: E402
from digest.settings import Settings  # noqa: E402
from digest.state import open_state  # noqa: E402
from digest.subscribers import Subscriber, load_subscribers  # noqa: E402
from digest.subscribers.home import StateHome  # noqa: E402
from tests.smtpserver import ServerProcess  # noqa: E402

EXAMPLES = ROOT / "examples" / "hf-daily-papers"
DEFAULT_DAY = date(2026, 8, 18)
"""The busiest bundled day (29 papers)."""
DEFAULT_SUBSCRIBERS = 10_000
QUICK_SUBSCRIBERS = 2000
DEFAULT_RUNS = 3
DEFAULT_CONCURRENCY = 8
PREBUILT_MESSAGES = 2000
"""Distinct pre-built messages the aiosmtplib pool cycles through (real digests)."""
SMTP_SINK = "/usr/sbin/smtp-sink"
SMTP_SOURCE = "/usr/sbin/smtp-source"
SINK_BACKLOG = 256
SINK_USER = "nobody"
"""smtp-sink refuses to run as root without dropping privileges (``-u``)."""
LATENCY_DELAY_MS = 100.0
LATENCY_CONCURRENCIES = (4, 8)
LATENCY_SECONDS = 4.0
RSS_SAMPLE_S = 0.05
LIBRARY_SHARE = 0.10
"""Of the modelled subscribers (``--modelled``), the share with a library file (the others
have 👍/👎)."""
LIBRARY_FILES = 20
LIBRARY_ENTRIES = 20
RATINGS = (5, 40)
"""Fewest and most 👍/👎 of a modelled subscriber without a library (a third of them 👍)."""
SEED = 20260818
MB = 1024 * 1024
SENDER = "Daily Papers <papers@bench.example.org>"
ENVELOPE = "papers@bench.example.org"
SECRET_KEY = "bench-secret-key-not-a-real-one-0123456789"

# Targets (printed next to the figures, never asserted).
TARGET_WALL_100K_S = 150.0
TARGET_RSS_MB = 250.0
TARGET_STATE_VS_FILE = 1.10
"""A send from the list in the state: at most this × the file's wall time (issue 22)."""
TARGET_VS_POOL = 0.30
TARGET_LOAD_S = 3.0
TARGET_LOAD_MB = 60.0
LATENCY_EFFICIENCY = 0.9

_STOPWORDS_TEXT = (
    "about above across after again against along among and any are based because been "
    "before being between both but can could does doing down during each from further "
    "have into its itself more most much not off once only other over own same should "
    "some such than that the their them then there these they this those through under "
    "until very via was were what when where which while who why will with within without "
    "would your towards toward using large new"
)
_STOPWORDS = frozenset(_STOPWORDS_TEXT.split())


# -- inputs ------------------------------------------------------------------------------------


def vocabulary(directory: Path) -> list[str]:
    """Keywords drawn from the real days: every AI keyword and every longer title word."""
    words: set[str] = set()
    for path in sorted(directory.glob("*.json")):
        for item in json.loads(path.read_text(encoding="utf-8")):
            paper = item.get("paper", item)
            for kw in paper.get("ai_keywords") or ():
                kw = re.sub(r"[^\w\s-]+", " ", kw).strip()
                if kw and len(kw) <= 40:
                    words.add(kw.lower())
            for word in re.findall(r"[A-Za-z][A-Za-z0-9-]{3,}", paper.get("title", "")):
                if word.lower() not in _STOPWORDS:
                    words.add(word.lower().strip("-"))
    return sorted(w for w in words if re.search(r"[a-z0-9]", w))


@dataclass
class Modelled:
    """Who has a reader model (``--modelled``): library files by subscriber index, 👍/👎 by
    address, and the rated papers (stored in each run's state file)."""

    library: dict[int, str] = field(default_factory=dict)
    ratings: dict[str, tuple[list[str], list[str]]] = field(default_factory=dict)
    papers: list[Any] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.library) + len(self.ratings)


def make_modelled(tmp: Path, n: int, share: float, day: date, rng: random.Random) -> Modelled:
    """Library files in ``tmp`` and 👍/👎 for ``share`` of ``n`` subscribers (see the module
    docstring); the rated papers are those of the evaluation days other than ``day``."""
    out = Modelled()
    count = int(n * share)
    if not count:
        return out
    from rank_quality import load_set

    _, days, _ = load_set()
    pool = [p for key, papers in sorted(days.items()) if key != day.isoformat() for p in papers]
    for f in range(LIBRARY_FILES):
        entries = rng.sample(pool, LIBRARY_ENTRIES)
        (tmp / f"lib{f}.bib").write_text(
            "\n".join(
                f"@article{{e{i}, title = {{{_bib(p.title)}}}, abstract = {{{_bib(p.abstract)}}}, "
                "year = 2025}"
                for i, p in enumerate(entries)
            ),
            encoding="utf-8",
        )
    rated: dict[str, Any] = {}
    for i in range(count):
        if i < count * LIBRARY_SHARE:
            out.library[i] = f"lib{i % LIBRARY_FILES}.bib"
            continue
        papers = rng.sample(pool, rng.randint(*RATINGS))
        cut = max(1, len(papers) // 3)
        out.ratings[f"reader{i:06d}@bench.example.org"] = (
            [p.arxiv_id for p in papers[:cut]],
            [p.arxiv_id for p in papers[cut:]],
        )
        rated.update((p.arxiv_id, p) for p in papers)
    out.papers = list(rated.values())
    return out


def _bib(text: str) -> str:
    return text.replace("{", "").replace("}", "")


def seed_state(path: Path, modelled: Modelled) -> None:
    """A state file holding the modelled subscribers' 👍/👎 and the papers they rated."""
    store = open_state(f"sqlite:///{path}")
    try:
        with store.transaction():
            for paper in modelled.papers:
                store.save_paper(paper)
            for email, (likes, dislikes) in modelled.ratings.items():
                for pid in likes:
                    store.record_feedback(email, pid, "like")
                for pid in dislikes:
                    store.record_feedback(email, pid, "dislike")
    finally:
        store.close()


def write_subscribers(
    path: Path,
    n: int,
    vocab: Sequence[str],
    rng: random.Random,
    library: dict[int, str] | None = None,
) -> None:
    """A subscribers YAML of ``n`` personalized subscribers (1–5 keywords each), as text;
    ``library``: a library file for some of them, by index."""
    library = library or {}
    with path.open("w", encoding="utf-8") as f:
        f.write('defaults:\n  send_at: "07:30"\nsubscribers:\n')
        for i in range(n):
            keywords = ", ".join(json.dumps(k) for k in rng.sample(list(vocab), rng.randint(1, 5)))
            f.write(
                f"  - email: reader{i:06d}@bench.example.org\n"
                f"    name: Reader {i}\n"
                f"    keywords: [{keywords}]\n"
                f"    max_papers: {rng.choice((3, 5, 8, 10, 15))}\n"
            )
            if rng.random() < 0.25:
                f.write("    only_matching: true\n")
            if i in library:
                f.write(f"    library: {library[i]}\n")


def env_for(
    tmp: Path,
    port: int,
    concurrency: int,
    state: Path,
    workers: int | None,
    home: str = "file",
) -> dict[str, str]:
    """The environment of a ``digest send`` run (no ``.env``: it runs in ``tmp``)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIGEST_")}
    env.update(
        DIGEST_SOURCES=f"file:{EXAMPLES}",
        DIGEST_SUBSCRIBERS="state" if home == "state" else str(tmp / "subscribers.yaml"),
        DIGEST_STATE_PATH=str(state),
        DIGEST_FROM=SENDER,
        DIGEST_UNSUBSCRIBE_URL="https://papers.example.org/unsubscribe?token={token}",
        DIGEST_UNSUBSCRIBE_MAILTO="unsubscribe@bench.example.org",
        DIGEST_SECRET_KEY=SECRET_KEY,
        DIGEST_SMTP_HOST="127.0.0.1",
        DIGEST_SMTP_PORT=str(port),
        DIGEST_SMTP_SECURITY="none",
        DIGEST_SMTP_CONCURRENCY=str(concurrency),
        DIGEST_SMTP_MAX_ATTEMPTS="1",
    )
    if workers is not None:
        env["DIGEST_RENDER_WORKERS"] = str(workers)
    return env


def settings_for(
    tmp: Path, port: int, concurrency: int, state: str, workers: int | None
) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]  # never read a developer's .env
        sources=f"file:{EXAMPLES}",
        subscribers=tmp / "subscribers.yaml",
        state_path=tmp / state,
        sender=SENDER,
        unsubscribe_url="https://papers.example.org/unsubscribe?token={token}",
        unsubscribe_mailto="unsubscribe@bench.example.org",
        secret_key=SECRET_KEY,  # type: ignore[arg-type]
        smtp_host="127.0.0.1",
        smtp_port=port,
        smtp_security="none",
        smtp_concurrency=concurrency,
        smtp_max_attempts=1,
        render_workers=workers,
    )


# -- measuring -----------------------------------------------------------------------------------


def _kind(command: str) -> str:
    """What a child of ``digest send`` is, by its command line."""
    if "contextproc" in command:
        return "context"
    if "resource_tracker" in command:
        return "tracker"
    return "worker"


class TreeRss:
    """Samples the summed RSS of a process and all its descendants; keeps the peak (MB), and
    each process's own peak (``parts``: the root first, then its children by start)."""

    def __init__(self, pid: int) -> None:
        self.peak = 0.0
        self.parts: dict[int, float] = {}
        self.kinds: dict[int, str] = {}
        self._root = psutil.Process(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> float:
        total = 0
        try:
            procs = [self._root, *self._root.children(recursive=True)]
        except psutil.Error:
            return 0.0
        for proc in procs:
            with contextlib.suppress(psutil.Error):  # exited meanwhile
                rss = proc.memory_info().rss
                total += rss
                self.parts[proc.pid] = max(self.parts.get(proc.pid, 0.0), rss / MB)
                if proc.pid not in self.kinds:
                    self.kinds[proc.pid] = _kind(" ".join(proc.cmdline()))
        return total / MB

    def breakdown(self) -> str:
        """``parent 125 + context 112 + tracker 13 + worker 109`` (each process's own peak, MB;
        children in the order they were first seen)."""
        (_, root), *children = self.parts.items()
        if not children:
            return f"one process {root:.0f}"
        return f"parent {root:.0f} + " + " + ".join(
            f"{self.kinds.get(pid, 'worker')} {peak:.0f}" for pid, peak in children
        )

    def _run(self) -> None:
        while not self._stop.wait(RSS_SAMPLE_S):
            self.peak = max(self.peak, self._sample())

    def __enter__(self) -> TreeRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@dataclass
class Run:
    wall: float
    sent: int
    peak_rss: float = 0.0
    note: str = ""
    parts: str = ""

    @property
    def rate(self) -> float:
        return self.sent / self.wall if self.wall else 0.0


@dataclass
class Series:
    name: str
    runs: list[Run] = field(default_factory=list)

    def stat(self, get: Callable[[Run], float]) -> str:
        values = sorted(get(r) for r in self.runs)
        if not values:
            return "-"
        return f"{values[0]:.1f} / {statistics.median(values):.1f} / {values[-1]:.1f}"

    def median_rate(self) -> float:
        return statistics.median(r.rate for r in self.runs) if self.runs else 0.0


class Sink:
    """Postfix ``smtp-sink`` on a free loopback port, else the aiosmtpd sink process."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._fallback: ServerProcess | None = None

    def __enter__(self) -> Sink:
        if self.kind in ("auto", "smtp-sink") and Path(SMTP_SINK).exists():
            self.port = free_port()
            args = [SMTP_SINK]
            if os.geteuid() == 0:
                args += ["-u", SINK_USER]
            args += [f"127.0.0.1:{self.port}", str(SINK_BACKLOG)]
            self._proc = subprocess.Popen(args, stdout=subprocess.DEVNULL)
            wait_port(self.port)
            self.kind = "smtp-sink (Postfix, C)"
        elif self.kind == "smtp-sink":
            raise SystemExit(f"{SMTP_SINK} not found: apt-get install -y postfix")
        else:
            self._fallback = ServerProcess(None).__enter__()
            self.port = self._fallback.port
            self.kind = "aiosmtpd (tests/smtpserver.py, Python: competes for the CPUs)"
        return self

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait()
        if self._fallback is not None:
            self._fallback.__exit__(None, None, None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"the sink did not listen on port {port}")


def run_smtp_source(port: int, n: int, concurrency: int, size: int) -> Run:
    """smtp-source: ``n`` messages of ``size`` bytes over ``concurrency`` sessions."""
    args = [SMTP_SOURCE, "-d", "-s", str(concurrency), "-m", str(n), "-l", str(size)]
    args += ["-f", ENVELOPE, "-t", "reader@bench.example.org", f"127.0.0.1:{port}"]
    t0 = time.perf_counter()
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL)
    return Run(wall=time.perf_counter() - t0, sent=n)


def run_pool(port: int, n: int, concurrency: int, messages: Path) -> Run:
    """The minimal aiosmtplib pool, in its own process (this script with ``--pool``)."""
    args = [sys.executable, __file__, "--pool", str(messages), str(n), str(concurrency)]
    args.append(str(port))
    proc = subprocess.Popen(args, stdout=subprocess.PIPE)
    with TreeRss(proc.pid) as rss:
        out, _ = proc.communicate()
    result = json.loads(out)
    return Run(wall=result["wall"], sent=result["sent"], peak_rss=rss.peak)


async def _pool_main(messages_path: Path, n: int, concurrency: int, port: int) -> dict[str, Any]:
    import aiosmtplib

    messages: list[tuple[str, bytes]] = pickle.loads(messages_path.read_bytes())
    todo = iter(range(n))
    sent = 0

    async def worker() -> None:
        nonlocal sent
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, use_tls=False, start_tls=False)
        await client.connect()
        for i in todo:
            rcpt, data = messages[i % len(messages)]
            await client.sendmail(ENVELOPE, [rcpt], data)
            sent += 1
        await client.quit()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return {"wall": time.perf_counter() - t0, "sent": sent}


def run_digest(
    tmp: Path,
    port: int,
    concurrency: int,
    workers: int | None,
    day: date,
    i: int,
    seed: Path | None = None,
    python: str = sys.executable,
    home: str = "file",
) -> Run:
    """``digest send`` through the CLI, fresh state file (a copy of ``seed``, if given: the
    modelled subscribers' 👍/👎; ``home`` ``state``: the list imported into it first, not
    timed); whole-tree RSS sampled. ``python``: the interpreter whose ``digest`` runs (another
    checkout's venv for ``--before``)."""
    state = tmp / f"state-{i}.sqlite3"
    if seed is not None:
        shutil.copyfile(seed, state)
    if home == "state":
        with open_state(f"sqlite:///{state}") as store:
            listed = tmp / "subscribers.yaml"
            StateHome(store).import_list(listed.read_bytes(), listed)
    env = env_for(tmp, port, concurrency, state, workers, home)
    args = [python, "-m", "digest", "send", "--date", day.isoformat()]
    t0 = time.perf_counter()
    proc = subprocess.Popen(args, cwd=tmp, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    with TreeRss(proc.pid) as rss:
        out, errors = proc.communicate()
    wall = time.perf_counter() - t0
    with sqlite3.connect(state) as db:
        rows = dict(db.execute("SELECT status, COUNT(*) FROM deliveries GROUP BY status"))
    note = out.decode(errors="replace").strip().splitlines()[-1:] or [""]
    if proc.returncode:
        note = [f"exit {proc.returncode}: {errors.decode(errors='replace').strip()[-300:]}"]
    for path in tmp.glob(f"state-{i}.sqlite3*"):
        path.unlink()
    return Run(
        wall=wall,
        sent=int(rows.get("sent", 0)),
        peak_rss=rss.peak,
        note=note[0],
        parts=rss.breakdown(),
    )


_LOAD_SNIPPET = """
import json, resource, sys, time
import psutil
import digest.core
from pathlib import Path
from digest.subscribers import load_subscribers
proc = psutil.Process()
before = proc.memory_info().rss
t0 = time.perf_counter()
subs = load_subscribers(Path(sys.argv[1]))
wall = time.perf_counter() - t0
after = proc.memory_info().rss
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"n": len(subs), "wall": wall, "kept": (after - before) / 2**20,
                  "peak": (peak - before) / 2**20, "base": before / 2**20}))
"""


def measure_load(path: Path) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", _LOAD_SNIPPET, str(path)],
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout
    result: dict[str, float] = json.loads(out)
    return result


def prebuild(
    tmp: Path, port: int, edition: Edition, subs: Sequence[Subscriber]
) -> tuple[Path, int]:
    """Real digest messages for the first subscribers (pickled), and their mean size."""
    settings = settings_for(tmp, port, 1, "prebuild.sqlite3", 0)
    built: list[tuple[str, bytes]] = []
    with Digest(settings) as digest:
        papers = asyncio.run(digest.papers_for(edition)).papers
        for sub in subs:
            made = make_message(
                settings, lambda: digest.renderer, edition, papers, sub, digest.now()
            )
            if made is not None:
                built.append((sub.email, made[1]))
            if len(built) >= PREBUILT_MESSAGES:
                break
    path = tmp / "prebuilt.pickle"
    path.write_bytes(pickle.dumps(built))
    return path, sum(len(d) for _, d in built) // max(len(built), 1)


async def latency_run(
    settings: Settings, edition: Edition, subs: Sequence[Subscriber]
) -> tuple[float, float, int]:
    first = last = 0.0
    sent = 0

    def on_result(_email: str, outcome: str) -> None:
        nonlocal first, last, sent
        if outcome == "sent":
            sent += 1
            last = time.perf_counter()
            first = first or last

    with Digest(settings) as digest:
        t0 = time.perf_counter()
        await digest.send(edition, subs, on_result=on_result)
        wall = time.perf_counter() - t0
    steady = (sent - 1) / (last - first) if sent > 1 and last > first else 0.0
    return wall, steady, sent


async def counted_run(
    settings: Settings, edition: Edition, subs: Sequence[Subscriber], metrics: Recorder
) -> tuple[float, int]:
    """``Digest.send`` of ``subs`` with ``metrics``: (wall seconds, messages sent)."""
    with Digest(settings, metrics=metrics) as digest:
        t0 = time.perf_counter()
        summary = await digest.send(edition, subs)
        return time.perf_counter() - t0, summary.sent


COUNTING_CALLS = 200_000


def counting_cost_us() -> float:
    """Microseconds one delivered message's counting takes (a reply and a duration)."""
    metrics = Metrics()
    t0 = time.perf_counter()
    for _ in range(COUNTING_CALLS):
        metrics.smtp_reply(250, "reader000001@bench.example.org")
        metrics.send_seconds(0.004)
    return (time.perf_counter() - t0) / COUNTING_CALLS * 1e6


def metrics_cost(args: argparse.Namespace) -> None:
    """``--metrics-cost``: msg/s of ``Digest.send`` without and with a metrics registry."""
    n, edition = args.subscribers, Edition.daily(args.day)
    with tempfile.TemporaryDirectory(prefix="digest-bench-") as tmp_name:
        tmp = Path(tmp_name)
        write_subscribers(tmp / "subscribers.yaml", n, vocabulary(EXAMPLES), random.Random(SEED))
        subs = load_subscribers(tmp / "subscribers.yaml").subscribers
        rates: dict[str, list[float]] = {"without metrics": [], "with metrics": []}
        with Sink(args.sink) as sink:
            print(
                f"metrics cost: Digest.send of {n} subscribers, pool {args.concurrency}, "
                f"{args.runs} round(s) of each, alternating; sink {sink.kind}; "
                f"load average {psutil.getloadavg()[0]:.1f}"
            )
            for i in range(args.runs):
                for name, metrics in (("without metrics", NO_METRICS), ("with metrics", None)):
                    state = f"cost-{i}-{'on' if metrics is None else 'off'}.sqlite3"
                    settings = settings_for(
                        tmp, sink.port, args.concurrency, state, args.render_workers
                    )
                    wall, sent = asyncio.run(
                        counted_run(settings, edition, subs, metrics or Metrics())
                    )
                    rates[name].append(sent / wall)
                    rate = sent / wall
                    print(f"  round {i + 1} {name}: {sent} sent in {wall:.2f} s ({rate:.0f}/s)")
        off, on = (statistics.median(v) for v in rates.values())
        print(
            f"median msg/s: without {off:.0f}, with {on:.0f} ({(on - off) / off * 100:+.1f} %); "
            f"counting one message: {counting_cost_us():.2f} µs"
        )


# -- the report ------------------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "MET" if ok else "NOT MET"


def run(args: argparse.Namespace) -> None:
    n, concurrency, workers = args.subscribers, args.concurrency, args.render_workers
    edition = Edition.daily(args.day)
    say: Callable[..., None] = print
    load = psutil.getloadavg()
    with tempfile.TemporaryDirectory(prefix="digest-bench-") as tmp_name:
        tmp = Path(tmp_name)
        rng = random.Random(SEED)
        modelled = make_modelled(tmp, n, args.modelled, args.day, random.Random(SEED + 1))
        write_subscribers(tmp / "subscribers.yaml", n, vocabulary(EXAMPLES), rng, modelled.library)
        seed: Path | None = None
        if modelled.count:
            seed = tmp / "seed.sqlite3"
            seed_state(seed, modelled)
        say(
            f"digest send benchmark: {n} subscribers, day {edition.key}, pool {concurrency}, "
            f"render workers {workers if workers is not None else 'default'}, {args.runs} run(s)"
        )
        if modelled.count:
            say(
                f"  {modelled.count} with a reader model: {len(modelled.library)} with a "
                f"library file, {len(modelled.ratings)} with {RATINGS[0]}–{RATINGS[1]} 👍/👎 "
                f"({len(modelled.papers)} rated papers); empty vector and reader caches"
            )
        say(
            f"  {psutil.cpu_count()} CPUs, load average at start {load[0]:.1f} "
            "(a loaded machine gives lower, noisier figures)"
        )

        loaded = measure_load(tmp / "subscribers.yaml")
        subs = load_subscribers(tmp / "subscribers.yaml").subscribers[:PREBUILT_MESSAGES]

        with Sink(args.sink) as sink:
            say(f"  sink: {sink.kind}, 127.0.0.1:{sink.port}")
            messages, size = prebuild(tmp, sink.port, edition, subs)
            series = [
                Series("smtp-source (C limit)"),
                Series("aiosmtplib pool (Python limit)"),
                Series("digest send (CLI, end to end)"),
                Series("digest send, the list in the state"),
            ]
            before = Series(f"digest send of {args.before} (before)")
            python_before = str(args.before / ".venv" / "bin" / "python") if args.before else ""
            for i in range(args.runs):
                if args.limits and Path(SMTP_SOURCE).exists():
                    series[0].runs.append(run_smtp_source(sink.port, n, concurrency, size))
                if args.limits:
                    series[1].runs.append(run_pool(sink.port, n, concurrency, messages))
                runs = [(series[2], sys.executable, "digest", "file")]
                if args.before:  # interleaved, the order alternating round by round
                    runs.insert(i % 2, (before, python_before, "before", "file"))
                if args.home == "state":
                    runs.append((series[3], sys.executable, "the list in the state", "state"))
                for target, python, label, home in runs:
                    target.runs.append(
                        run_digest(
                            tmp, sink.port, concurrency, workers, args.day, i, seed, python, home
                        )
                    )
                    d = target.runs[-1]
                    say(
                        f"  run {i + 1}: {label} {d.sent} sent in {d.wall:.1f} s "
                        f"({d.rate:.0f}/s, tree peak {d.peak_rss:.0f} MB; each process's own "
                        f"peak: {d.parts} MB) | {d.note}"
                    )
            if before.runs:
                series.append(before)

        say("")
        say(f"{'min / median / max':>52}  {'wall s':>20}  {'msg/s':>24}  {'tree peak RSS MB':>20}")
        for s in series:
            if s.runs:
                say(
                    f"  {s.name:<50} {s.stat(lambda r: r.wall):>20}  "
                    f"{s.stat(lambda r: r.rate):>24}  {s.stat(lambda r: r.peak_rss):>20}"
                )
        c_rate, pool_rate, digest_rate = (s.median_rate() for s in series[:3])
        if series[3].runs:
            in_file = statistics.median(r.wall for r in series[2].runs)
            in_state = statistics.median(r.wall for r in series[3].runs)
            peak = max(r.peak_rss for r in series[3].runs)
            ratio = in_state / in_file
            say(
                f"  the list in the state: median wall {ratio:.2f} × the file's (target ≤ 1.10: "
                f"{verdict(ratio <= TARGET_STATE_VS_FILE)}); tree peak RSS max {peak:.0f} MB "
                f"(target ≤ {TARGET_RSS_MB:.0f} MB: {verdict(peak <= TARGET_RSS_MB)})"
            )
        if before.runs:
            wall_ratio = statistics.median(r.wall for r in series[2].runs) / statistics.median(
                r.wall for r in before.runs
            )
            rss_ratio = max(r.peak_rss for r in series[2].runs) / max(
                r.peak_rss for r in before.runs
            )
            say(
                f"  after / before: median wall {wall_ratio:.3f}, median msg/s "
                f"{digest_rate / before.median_rate():.3f}, max tree peak RSS {rss_ratio:.3f}"
            )
        say(f"  mean message size {size / 1024:.1f} KiB (smtp-source sends that many bytes)")
        say("")
        vs_pool = digest_rate / pool_rate if pool_rate else 0.0
        vs_c = digest_rate / c_rate if c_rate else 0.0
        if pool_rate:
            say(
                f"digest / aiosmtplib pool = {vs_pool:.2f} (target ≥ {TARGET_VS_POOL}: "
                f"{verdict(vs_pool >= TARGET_VS_POOL)}); digest / smtp-source = {vs_c:.3f}"
            )
        walls = [r.wall for r in series[2].runs]
        peaks = [r.peak_rss for r in series[2].runs]
        scaled = statistics.median(walls) * 100_000 / n
        say(
            f"digest median wall {statistics.median(walls):.1f} s for {n} "
            f"(≈ {scaled:.0f} s per 100,000 at this rate; target ≤ {TARGET_WALL_100K_S:.0f} s"
            + (
                f": {verdict(statistics.median(walls) <= TARGET_WALL_100K_S)})"
                if n >= 100_000
                else ")"
            )
        )
        say(
            f"digest tree peak RSS max {max(peaks):.0f} MB (target ≤ {TARGET_RSS_MB:.0f} MB at "
            f"100,000: {verdict(max(peaks) <= TARGET_RSS_MB)})"
        )
        say(
            f"subscriber load: {loaded['n']:.0f} in {loaded['wall']:.2f} s, "
            f"+{loaded['kept']:.0f} MB kept, +{loaded['peak']:.0f} MB peak above the interpreter "
            f"({loaded['base']:.0f} MB with digest imported; targets ≤ {TARGET_LOAD_S:.0f} s, "
            f"≤ {TARGET_LOAD_MB:.0f} MB)"
        )

        if args.latency:
            say("")
            say(
                f"Latency: aiosmtpd sink delaying each DATA reply by {LATENCY_DELAY_MS:.0f} ms "
                "(Digest.send in this process)"
            )
            all_subs = load_subscribers(tmp / "subscribers.yaml").subscribers
            with ServerProcess(None, data_delay_ms=LATENCY_DELAY_MS) as slow:
                for c in LATENCY_CONCURRENCIES:
                    ideal = c / (LATENCY_DELAY_MS / 1000)
                    count = min(len(all_subs), int(ideal * LATENCY_SECONDS))
                    settings = settings_for(tmp, slow.port, c, f"latency-{c}.sqlite3", workers)
                    wall, steady, sent = asyncio.run(
                        latency_run(settings, edition, all_subs[:count])
                    )
                    target = LATENCY_EFFICIENCY * ideal
                    say(
                        f"  concurrency {c}: {sent} sent in {wall:.2f} s, "
                        f"{steady:.1f} msg/s steady "
                        f"(ideal {ideal:.0f}, target ≥ {target:.0f}: {verdict(steady >= target)})"
                    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--pool"]:
        path, n, concurrency, port = argv[1:5]
        print(json.dumps(asyncio.run(_pool_main(Path(path), int(n), int(concurrency), int(port)))))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--subscribers",
        type=int,
        default=None,
        help=f"how many (default {DEFAULT_SUBSCRIBERS}; {QUICK_SUBSCRIBERS} with --quick)",
    )
    parser.add_argument("--runs", type=int, default=None, help=f"rounds (default {DEFAULT_RUNS})")
    parser.add_argument(
        "--concurrency",
        type=int,
        default=DEFAULT_CONCURRENCY,
        help="SMTP connections, the same for all three senders",
    )
    parser.add_argument(
        "--render-workers",
        type=int,
        default=None,
        help="DIGEST_RENDER_WORKERS for digest (default: its own default)",
    )
    parser.add_argument(
        "--modelled",
        type=float,
        default=0.0,
        metavar="SHARE",
        help="share of subscribers with a reader model (a library or 👍/👎), e.g. 0.1",
    )
    parser.add_argument("--sink", choices=("auto", "smtp-sink", "aiosmtpd"), default="auto")
    parser.add_argument(
        "--home",
        choices=("file", "state"),
        default="file",
        help="state: each run also sends from the list in the state (compared with the file)",
    )
    parser.add_argument(
        "--day",
        type=date.fromisoformat,
        default=DEFAULT_DAY,
        help="a day present in examples/hf-daily-papers/",
    )
    parser.add_argument(
        "--no-latency", dest="latency", action="store_false", help="skip the 100 ms latency runs"
    )
    parser.add_argument(
        "--quick", action="store_true", help="small run: 2,000 subscribers, 1 round"
    )
    parser.add_argument(
        "--before",
        type=Path,
        default=None,
        metavar="DIR",
        help="also send with DIR/.venv/bin/python's digest (another checkout), interleaved "
        "round by round, and print the after / before ratios",
    )
    parser.add_argument(
        "--no-limits",
        dest="limits",
        action="store_false",
        help="skip the smtp-source and aiosmtplib pool rounds (with --before: only the two "
        "digests)",
    )
    parser.add_argument(
        "--state",
        default=None,
        metavar="URL",
        help="with --processes: the state to share (postgresql://…; a fresh schema per run)",
    )
    parser.add_argument(
        "--processes",
        default=None,
        metavar="N[,N...]",
        help="instead: N concurrent `digest send` processes of one edition on one shared "
        "state against one sink, e.g. 1,2,4 (see benchmarks/bench_shared.py)",
    )
    parser.add_argument(
        "--metrics-cost",
        action="store_true",
        help="instead: msg/s of Digest.send without and with a metrics registry",
    )
    parser.add_argument(
        "--start-postgres",
        action="store_true",
        help="with --processes: start a throwaway local PostgreSQL (default durability) "
        "from /usr/lib/postgresql/*/bin and use it as --state",
    )
    args = parser.parse_args(argv)
    if args.subscribers is None:
        args.subscribers = QUICK_SUBSCRIBERS if args.quick else DEFAULT_SUBSCRIBERS
    if args.runs is None:
        args.runs = 1 if args.quick else DEFAULT_RUNS
    if args.metrics_cost:
        metrics_cost(args)
        return 0
    if args.processes or args.state or args.start_postgres:
        from bench_shared import run_processes

        args.processes = args.processes or "1,2,4"
        run_processes(args)
        return 0
    if not shutil.which(SMTP_SOURCE):
        print(f"note: {SMTP_SOURCE} not found (apt-get install -y postfix): no C-limit figure")
    run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
