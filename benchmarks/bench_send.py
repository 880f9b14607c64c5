"""Benchmark of `digest send`: personalized subscribers → ranked, rendered, built, sent over SMTP.

Prints figures; asserts nothing (CI does not run it). What it measures, in one run:

1. **End to end**: ``Digest.send`` (the real path: rank → render → inline → build → claim →
   SMTP → mark_sent, state file with ``synchronous=FULL``) for N generated subscribers over a
   real day of Daily Papers (``examples/hf-daily-papers/``, ``file:`` source), to an aiosmtpd
   sink in *another process* on loopback (``tests/smtpserver.py``, security ``none``, no spool:
   it only counts). Messages per second, and RSS at 1k / 2k / 5k / 10k subscribers.
2. **Stages**: the same subscribers through the library functions one by one (``rank``,
   ``Renderer.render`` without / with premailer inlining, ``Digest.build``), plus the state
   writes (``claim`` + ``mark_sent``) on a fresh file: time per message.
3. **Ceiling**: every message built first, then ``send_all`` through the same pool and a fresh
   state file, to the same sink: the most the sender can do, rendering excluded.
4. **Latency**: a sink delaying each DATA reply by 100 ms; ``Digest.send`` with a pool of 4 and
   8 connections (ideal: concurrency / 0.1 s messages per second).

Usage::

    .venv/bin/python benchmarks/bench_send.py [--subscribers 2000] [--concurrency 4] [--quick]

Targets (2-core machine): end to end ≥ 0.8 × ceiling; RSS < 250 MB and flat in N (10,000
subscribers); latency ≥ 0.9 × concurrency / 0.1 s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import random
import re
import resource
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import psutil
from ruamel.yaml import YAML

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from digest.core import Digest  # noqa: E402
from digest.delivery import OutgoingMessage  # noqa: E402
from digest.delivery.engine import send_all  # noqa: E402
from digest.models import Edition, Paper  # noqa: E402
from digest.pipeline.workers import RENDER_PROCESSES_MIN_BATCH, render_ranked  # noqa: E402
from digest.ranking import rank  # noqa: E402
from digest.settings import Settings  # noqa: E402
from digest.state import StateStore  # noqa: E402
from digest.subscribers import Subscriber, load_subscribers  # noqa: E402
from tests.smtpserver import ServerProcess  # noqa: E402

EXAMPLES = ROOT / "examples" / "hf-daily-papers"
DEFAULT_DAY = date(2026, 8, 18)
"""The busiest bundled day (29 papers)."""
DEFAULT_SUBSCRIBERS = 2000
QUICK_SUBSCRIBERS = 400
DEFAULT_CONCURRENCY = 4
LATENCY_DELAY_MS = 100.0
LATENCY_CONCURRENCIES = (4, 8)
LATENCY_SECONDS = 4.0
"""How long each latency run should last at the ideal rate (messages = rate × this)."""
QUICK_LATENCY_SECONDS = 1.5
RSS_CHECKPOINTS = (1000, 2000, 5000, 10_000, 20_000, 50_000)
RSS_SAMPLE_S = 0.02
STATE_SAMPLE = 300
"""Rows written to measure claim + mark_sent alone."""
SEED = 20260818
MB = 1024 * 1024

# Targets (printed next to the figures, never asserted).
E2E_VS_CEILING = 0.8
RSS_LIMIT_MB = 250.0
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


def write_subscribers(path: Path, n: int, vocab: Sequence[str], rng: random.Random) -> None:
    """A subscribers YAML of ``n`` personalized subscribers (1–5 keywords each)."""
    subs: list[dict[str, Any]] = []
    for i in range(n):
        entry: dict[str, Any] = {
            "email": f"reader{i:06d}@bench.example.org",
            "name": f"Reader {i}",
            "keywords": rng.sample(list(vocab), rng.randint(1, 5)),
            "max_papers": rng.choice((3, 5, 8, 10, 15)),
        }
        if rng.random() < 0.25:
            entry["only_matching"] = True
        subs.append(entry)
    doc = {"defaults": {"send_at": "07:30"}, "subscribers": subs}
    dumper = YAML(typ="safe", pure=True)
    dumper.default_flow_style = False
    with path.open("w", encoding="utf-8") as f:
        dumper.dump(doc, f)


def make_settings(
    tmp: Path, port: int, concurrency: int, state: str, render_workers: int | None = None
) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]  # never read a developer's .env
        sources=f"file:{EXAMPLES}",
        subscribers=tmp / "subscribers.yaml",
        state_path=tmp / state,
        sender="Daily Papers <papers@bench.example.org>",
        unsubscribe_url="https://papers.example.org/unsubscribe?token={token}",
        unsubscribe_mailto="unsubscribe@bench.example.org",
        secret_key="bench-secret-key-not-a-real-one-0123456789",  # type: ignore[arg-type]
        smtp_host="127.0.0.1",
        smtp_port=port,
        smtp_security="none",
        smtp_concurrency=concurrency,
        smtp_max_attempts=1,
        render_workers=render_workers,
    )


# -- memory --------------------------------------------------------------------------------------


def rss_mb() -> float:
    return float(psutil.Process().memory_info().rss) / MB


def maxrss_mb() -> float:
    """Peak RSS of this process so far (``ru_maxrss``: KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def render_workers_rss_mb(proc: psutil.Process) -> float:
    """Summed RSS of this process's render workers (``spawn`` children), MB."""
    total = 0.0
    for child in proc.children():
        try:
            if any("spawn_main" in part for part in child.cmdline()):
                total += child.memory_info().rss / MB
        except psutil.Error:  # exited meanwhile
            pass
    return total


class RssSampler:
    """Samples RSS every :data:`RSS_SAMPLE_S` seconds in a thread; keeps the maxima.

    ``peak``: this process; ``workers_peak``: its render worker processes, summed.
    """

    def __init__(self) -> None:
        self.peak = 0.0
        self.workers_peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        proc = psutil.Process()
        while not self._stop.wait(RSS_SAMPLE_S):
            self.peak = max(self.peak, proc.memory_info().rss / MB)
            self.workers_peak = max(self.workers_peak, render_workers_rss_mb(proc))

    def __enter__(self) -> RssSampler:
        self.peak = rss_mb()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# -- runs ----------------------------------------------------------------------------------------


@dataclass
class Timed:
    wall: float = 0.0
    cpu: float = 0.0
    sent: int = 0
    skipped: int = 0
    other: str = ""
    rss: list[tuple[int, float]] = field(default_factory=list)
    peak_rss: float = 0.0
    workers_peak_rss: float = 0.0
    workers_cpu: float = 0.0
    render: str = ""
    sink_cpu: float = 0.0
    first: float = 0.0
    last: float = 0.0

    @property
    def rate(self) -> float:
        return self.sent / self.wall if self.wall else 0.0

    @property
    def steady_rate(self) -> float:
        """Messages per second between the first and the last result (start-up excluded)."""
        span = self.last - self.first
        return (self.sent - 1) / span if self.sent > 1 and span > 0 else 0.0

    def sink_share(self) -> str:
        return f"{100 * self.sink_cpu / self.wall:.0f} %" if self.wall else "?"

    def workers_share(self) -> str:
        return f"{100 * self.workers_cpu / self.wall:.0f} %" if self.wall else "?"


class SinkCpu:
    """CPU seconds used by the sink process during a ``with`` block."""

    def __init__(self, sink: ServerProcess) -> None:
        assert sink.proc is not None
        self._proc = psutil.Process(sink.proc.pid)
        self.seconds = 0.0

    def _cpu(self) -> float:
        times = self._proc.cpu_times()
        return float(times.user + times.system)

    def __enter__(self) -> SinkCpu:
        self._start = self._cpu()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = self._cpu() - self._start


def children_cpu() -> float:
    """CPU seconds of this process's children that have exited and been waited for."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


async def end_to_end(
    settings: Settings,
    edition: Edition,
    subs: Sequence[Subscriber],
    *,
    min_batch: int = RENDER_PROCESSES_MIN_BATCH,
) -> Timed:
    """``Digest.send`` for every subscriber; RSS noted at each checkpoint.

    Every subscriber is owed (fresh state file), so the send renders in
    ``settings.effective_render_workers`` processes when ``len(subs) >= min_batch``.
    """
    out = Timed()
    workers = settings.effective_render_workers
    out.render = (
        f"render workers: {workers} processes"
        if workers and len(subs) >= min_batch
        else "rendered in this process"
    )
    seen = 0
    checkpoints = {c for c in RSS_CHECKPOINTS if c < len(subs)}

    def on_result(_email: str, outcome: str) -> None:
        nonlocal seen
        seen += 1
        if outcome == "sent":
            out.last = time.perf_counter()
            out.first = out.first or out.last
        if seen in checkpoints:
            out.rss.append((seen, rss_mb()))

    with Digest(settings) as digest, RssSampler() as sampler:
        digest.render_min_batch = min_batch
        cpu0, t0, kids0 = time.process_time(), time.perf_counter(), children_cpu()
        summary = await digest.send(edition, subs, on_result=on_result)
        out.wall = time.perf_counter() - t0
        out.cpu = time.process_time() - cpu0
        out.workers_cpu = children_cpu() - kids0  # the workers are joined when send returns
    out.rss.append((len(subs), rss_mb()))
    out.peak_rss = sampler.peak
    out.workers_peak_rss = sampler.workers_peak
    out.sent, out.skipped = summary.sent, summary.skipped
    if summary.failed or summary.deferred or summary.unknown:
        out.other = (
            f"failed {summary.failed}, deferred {summary.deferred}, unknown {summary.unknown}: "
            + "; ".join(summary.errors[:3])
        )
    return out


@dataclass
class Stages:
    n: int = 0
    skipped: int = 0
    rank: float = 0.0
    render: float = 0.0
    inline: float = 0.0
    build: float = 0.0
    state: float = 0.0
    size: int = 0
    cache: str = ""
    messages: list[OutgoingMessage] = field(default_factory=list)


def stages(
    settings: Settings,
    edition: Edition,
    papers: Sequence[Paper],
    subs: Sequence[Subscriber],
    *,
    keep: bool,
) -> Stages:
    """The library functions one by one, timed; keeps the built messages when ``keep``."""
    out = Stages()
    with Digest(settings) as digest:
        renderer = digest.renderer
        real_inline = renderer.inline

        def timed_inline(html: str) -> str:
            t = time.perf_counter()
            result = real_inline(html)
            out.inline += time.perf_counter() - t
            return result

        renderer.inline = timed_inline  # type: ignore[method-assign]
        clock = time.perf_counter
        for sub in subs:
            t0 = clock()
            ranked = rank(papers, sub)
            t1 = clock()
            if not ranked and not sub.send_empty:
                out.skipped += 1
                out.rank += t1 - t0
                continue
            rendered = render_ranked(settings, renderer, edition, ranked, len(papers), sub)
            t2 = clock()
            message_id, data = digest.build(rendered, sub, edition)
            t3 = clock()
            out.n += 1
            out.rank += t1 - t0
            out.render += t2 - t1
            out.build += t3 - t2
            out.size += len(data)
            if keep:
                out.messages.append(
                    OutgoingMessage(
                        subscriber=sub.email,
                        edition=edition.key,
                        message_id=message_id,
                        envelope_from=digest.envelope_sender,
                        recipients=(sub.email,),
                        data=data,
                    )
                )
        out.render -= out.inline
        hits, misses = getattr(renderer, "block_hits", 0), getattr(renderer, "block_misses", 0)
        out.cache = f"paper blocks from cache: {hits}, inlined anew: {misses}"
        # The state writes of one delivery, alone: claim (fsync) + mark_sent (fsync).
        sample = min(STATE_SAMPLE, len(subs))
        t0 = clock()
        for sub in subs[:sample]:
            digest.store.claim(sub.email, "bench-state", "<x@bench>")
            digest.store.mark_sent(sub.email, "bench-state", "250 OK", code=250)
        out.state = (clock() - t0) / max(sample, 1)
    return out


async def ceiling(settings: Settings, messages: Sequence[OutgoingMessage]) -> Timed:
    """Pre-built messages through ``send_all`` (same pool, a fresh state file)."""

    async def produce() -> AsyncIterator[OutgoingMessage]:
        for msg in messages:
            yield msg

    out = Timed()
    with StateStore(settings.state_path) as store:
        cpu0, t0 = time.process_time(), time.perf_counter()
        summary = await send_all(produce(), store=store, settings=settings)
        out.wall = time.perf_counter() - t0
        out.cpu = time.process_time() - cpu0
    out.sent, out.skipped = summary.sent, summary.skipped
    return out


# -- output --------------------------------------------------------------------------------------


def ms(seconds: float, n: int) -> str:
    return f"{1000 * seconds / max(n, 1):6.2f} ms"


def verdict(ok: bool) -> str:
    return "MET" if ok else "NOT MET"


def run(args: argparse.Namespace) -> None:
    n = args.subscribers
    concurrency = args.concurrency
    workers = args.render_workers
    min_batch = args.render_min_batch
    rng = random.Random(SEED)
    edition = Edition.daily(args.day)
    say: Callable[..., None] = print
    with tempfile.TemporaryDirectory(prefix="digest-bench-") as tmp_name:
        tmp = Path(tmp_name)
        vocab = vocabulary(EXAMPLES)
        write_subscribers(tmp / "subscribers.yaml", n, vocab, rng)
        subs = load_subscribers(tmp / "subscribers.yaml").subscribers
        say(f"digest send benchmark: {n} subscribers, day {edition.key}, pool {concurrency}")
        say(
            f"  {psutil.cpu_count()} CPUs; keyword vocabulary {len(vocab)} terms; sink: "
            "tests/smtpserver.py in another process, loopback, no TLS, no spool"
        )
        say(f"  RSS at start (subscribers loaded): {rss_mb():.1f} MB")

        with ServerProcess(None) as sink:
            settings = make_settings(tmp, sink.port, concurrency, "e2e.sqlite3", workers)
            with SinkCpu(sink) as sink_cpu:
                e2e = asyncio.run(end_to_end(settings, edition, subs, min_batch=min_batch))
            e2e.sink_cpu = sink_cpu.seconds
            peak_after_e2e = maxrss_mb()
            say("")
            say("End to end (Digest.send: rank, render, inline, build, claim, SMTP, mark_sent)")
            say(f"  {e2e.render} (minimum batch {min_batch})")
            say(
                f"  sent {e2e.sent}, skipped {e2e.skipped} (no matching paper) "
                f"in {e2e.wall:.2f} s: {e2e.rate:.1f} messages/s "
                f"(CPU: this process {100 * e2e.cpu / e2e.wall:.0f} %, "
                f"render workers {e2e.workers_share()}, sink {e2e.sink_share()})"
            )
            if e2e.other:
                say(f"  PROBLEM: {e2e.other}")
            say("  RSS after N subscribers: " + ", ".join(f"{k}: {v:.1f} MB" for k, v in e2e.rss))
            say(
                f"  peak RSS: sampled {e2e.peak_rss:.1f} MB, ru_maxrss {peak_after_e2e:.1f} MB "
                f"(target < {RSS_LIMIT_MB:.0f} MB: "
                f"{verdict(max(e2e.peak_rss, peak_after_e2e) < RSS_LIMIT_MB)})"
            )
            if e2e.workers_peak_rss:
                say(f"  render workers' peak RSS, summed: {e2e.workers_peak_rss:.1f} MB")

            papers = asyncio.run(_papers(make_settings(tmp, sink.port, 1, "p.sqlite3"), edition))
            st = stages(
                make_settings(tmp, sink.port, concurrency, "stages.sqlite3"),
                edition,
                papers,
                subs,
                keep=True,
            )
            with SinkCpu(sink) as sink_cpu:
                ceil = asyncio.run(
                    ceiling(
                        make_settings(tmp, sink.port, concurrency, "ceiling.sqlite3"), st.messages
                    )
                )
            ceil.sink_cpu = sink_cpu.seconds
            st.messages.clear()
        say("")
        say(
            f"Stages, per message ({st.n} messages, {len(papers)} papers, "
            f"mean size {st.size / max(st.n, 1) / 1024:.1f} KiB), called one by one:"
        )
        say(f"  rank          {ms(st.rank, st.n + st.skipped)}")
        say(f"  render        {ms(st.render, st.n)}  (Jinja2, both parts)")
        say(f"  inline        {ms(st.inline, st.n)}  (premailer; {st.cache})")
        say(f"  build         {ms(st.build, st.n)}  (MIME, QP, headers)")
        say(f"  state         {1000 * st.state:6.2f} ms  (claim + mark_sent, 2 fsync'd commits)")
        say(
            f"  send          {ms(ceil.wall, ceil.sent)}  wall at the ceiling "
            f"({ms(ceil.cpu, ceil.sent).strip()} CPU in this process, state writes included)"
        )
        cpu_total = st.rank + st.render + st.inline + st.build
        say(
            f"  rank+render+inline+build {ms(cpu_total, st.n)} → at most "
            f"{st.n / cpu_total:.0f} messages/s on one core"
        )
        say("")
        ratio = e2e.rate / ceil.rate if ceil.rate else 0.0
        say("Ceiling (pre-built messages, send_all, same pool, fresh state file)")
        say(
            f"  sent {ceil.sent} in {ceil.wall:.2f} s: {ceil.rate:.1f} messages/s "
            f"(CPU: this process {100 * ceil.cpu / ceil.wall:.0f} %, sink {ceil.sink_share()})"
        )
        say(
            f"  end to end / ceiling = {ratio:.2f} "
            f"(target ≥ {E2E_VS_CEILING}: {verdict(ratio >= E2E_VS_CEILING)})"
        )

        say("")
        say(f"Latency: sink delays each DATA reply by {LATENCY_DELAY_MS:.0f} ms (Digest.send)")
        seconds = QUICK_LATENCY_SECONDS if args.quick else LATENCY_SECONDS
        with ServerProcess(None, data_delay_ms=LATENCY_DELAY_MS) as slow:
            for c in LATENCY_CONCURRENCIES:
                ideal = c / (LATENCY_DELAY_MS / 1000)
                count = min(len(subs), int(ideal * seconds))
                lat = asyncio.run(
                    end_to_end(
                        make_settings(tmp, slow.port, c, f"latency-{c}.sqlite3", workers),
                        edition,
                        subs[:count],
                        min_batch=min_batch,
                    )
                )
                target = LATENCY_EFFICIENCY * ideal
                say(
                    f"  concurrency {c}: {lat.sent} sent in {lat.wall:.2f} s: "
                    f"{lat.rate:.1f} messages/s overall, {lat.steady_rate:.1f} messages/s "
                    f"steady (first to last reply) (ideal {ideal:.0f}, target ≥ {target:.0f}: "
                    f"{verdict(lat.steady_rate >= target)}; {lat.render})"
                )
        say("")
        say(
            f"Sink accepted {sink.accepted} + {slow.accepted} messages; "
            f"peak RSS of the whole run {maxrss_mb():.1f} MB (includes the pre-built messages)"
        )


async def _papers(settings: Settings, edition: Edition) -> list[Paper]:
    with Digest(settings) as digest:
        return (await digest.papers_for(edition)).papers


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--subscribers",
        type=int,
        default=None,
        help=f"how many (default {DEFAULT_SUBSCRIBERS}; {QUICK_SUBSCRIBERS} with --quick)",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=DEFAULT_CONCURRENCY,
        help="SMTP pool size for the end-to-end and ceiling runs",
    )
    parser.add_argument(
        "--day",
        type=date.fromisoformat,
        default=DEFAULT_DAY,
        help="a day present in examples/hf-daily-papers/",
    )
    parser.add_argument(
        "--render-workers",
        type=int,
        default=None,
        help="DIGEST_RENDER_WORKERS (0: render in the sending process; default min(2, CPUs - 1))",
    )
    parser.add_argument(
        "--render-min-batch",
        type=int,
        default=RENDER_PROCESSES_MIN_BATCH,
        help=f"fewest subscribers rendered in processes (default {RENDER_PROCESSES_MIN_BATCH})",
    )
    parser.add_argument("--quick", action="store_true", help="small run (about 30 s)")
    args = parser.parse_args(argv)
    if args.subscribers is None:
        args.subscribers = QUICK_SUBSCRIBERS if args.quick else DEFAULT_SUBSCRIBERS
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
