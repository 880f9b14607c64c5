"""Several ``digest send`` processes on one shared state, against one sink (``bench_send.py
--processes``).

N concurrent ``python -m digest send`` processes of one edition sharing one state (a fresh
PostgreSQL schema per run, or a SQLite file for N = 1), against one aiosmtpd sink in another
process: messages per second from the first to the last send (start-up excluded), for each N,
repeated ``--runs`` times (min/median/max); the state writes alone per message (a SQLite file vs
the database); the PostgreSQL server's CPU per message. ``--start-postgres`` starts a throwaway
local server with PostgreSQL's default durability (fsync, synchronous commit on).

Usage::

    .venv/bin/python benchmarks/bench_send.py --start-postgres --processes 1,2,4 --runs 3
    .venv/bin/python benchmarks/bench_send.py --state postgresql://digest@db/bench --processes 1,2,4
"""

from __future__ import annotations

import argparse
import random
import re
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_send import EXAMPLES, SEED, vocabulary, write_subscribers  # noqa: E402

from tests.smtpserver import ServerProcess  # noqa: E402

STATE_SAMPLE = 300
"""Rows written to measure claim + mark_sent alone."""


@dataclass
class ProcessRun:
    processes: int
    sent: int
    wall: float
    """Seconds from starting the processes to the last one's exit."""
    span: float
    """Seconds from the first to the last ``sent_at`` in the state (start-up excluded)."""
    db_cpu: float
    """CPU seconds the PostgreSQL server's processes used during the run (0 for SQLite)."""
    errors: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.sent / self.span if self.span else 0.0


def _fresh_state(url: str, label: str) -> str:
    """A fresh state for one run: a new schema of the database, or a new SQLite file."""
    if url.startswith("sqlite:///"):
        base = Path(url[len("sqlite:///") :])
        return f"sqlite:///{base.with_name(f'{base.stem}-{label}{base.suffix}')}"
    import psycopg

    schema = f"bench_{label}_{random.randrange(16**8):08x}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    return url + ("&" if "?" in url else "?") + f"options=-csearch_path%3D{schema}"


def _postgres_cpu() -> float:
    """CPU seconds of every process named ``postgres`` on this machine (the local server)."""
    total = 0.0
    for proc in psutil.process_iter(["name"]):
        try:
            if proc.info["name"] == "postgres":
                times = proc.cpu_times()
                total += times.user + times.system
        except psutil.Error:
            continue
    return total


def run_processes_once(
    tmp: Path, port: int, state_url: str, processes: int, day: date, concurrency: int
) -> ProcessRun:
    """``processes`` concurrent ``python -m digest send`` of one edition on one fresh state."""
    import os
    import subprocess

    from digest.state import open_state

    url = _fresh_state(state_url, f"p{processes}")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIGEST_")}
    env.update(
        PYTHONPATH=str(ROOT),
        DIGEST_SOURCES=f"file:{EXAMPLES}",
        DIGEST_SUBSCRIBERS=str(tmp / "subscribers.yaml"),
        DIGEST_STATE_URL=url,
        DIGEST_FROM="Daily Papers <papers@bench.example.org>",
        DIGEST_UNSUBSCRIBE_URL="https://papers.example.org/unsubscribe?token={token}",
        DIGEST_SECRET_KEY="bench-secret-key-not-a-real-one-0123456789",
        DIGEST_SMTP_HOST="127.0.0.1",
        DIGEST_SMTP_PORT=str(port),
        DIGEST_SMTP_SECURITY="none",
        DIGEST_SMTP_CONCURRENCY=str(concurrency),
        DIGEST_SMTP_MAX_ATTEMPTS="1",
    )
    with open_state(url):  # create the schema before the clock starts
        pass
    db0 = _postgres_cpu() if not url.startswith("sqlite") else 0.0
    t0 = time.perf_counter()
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "digest", "send", "--date", day.isoformat()],
            cwd=tmp,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(processes)
    ]
    errors = []
    for proc in procs:
        out, _ = proc.communicate()
        if proc.returncode != 0:
            errors.append(
                out.strip().splitlines()[-1] if out.strip() else f"exit {proc.returncode}"
            )
    wall = time.perf_counter() - t0
    db_cpu = _postgres_cpu() - db0 if not url.startswith("sqlite") else 0.0
    with open_state(url) as store:
        rows = store.list(edition=day.isoformat(), statuses=["sent"])
    stamps = sorted(r.sent_at for r in rows if r.sent_at is not None)
    span = (stamps[-1] - stamps[0]).total_seconds() if len(stamps) > 1 else wall
    return ProcessRun(processes, len(rows), wall, span, db_cpu, errors)


def state_cost(state_url: str, sample: int) -> float:
    """Seconds per message of the state writes alone (claim + mark_sent) on a fresh state."""
    from digest.state import open_state

    with open_state(_fresh_state(state_url, "cost")) as store:
        t0 = time.perf_counter()
        for i in range(sample):
            email = f"cost{i}@bench.example.org"
            store.claim(email, "bench-state", "<x@bench>")
            store.mark_sent(email, "bench-state", "250 OK", code=250)
        return (time.perf_counter() - t0) / sample


def run_processes(args: argparse.Namespace) -> None:
    """messages/s for 1, 2, 4... sender processes sharing ``--state``, against one sink."""
    if args.start_postgres:
        from tests.pgserver import PostgresServer, find_bin_dir

        bin_dir = find_bin_dir()
        if bin_dir is None:
            raise SystemExit("--start-postgres: no /usr/lib/postgresql/*/bin/initdb")
        with PostgresServer(bin_dir, durable=True) as server:
            args.start_postgres = False
            args.state = server.url()
            run_processes(args)
        return
    counts = [int(c) for c in args.processes.split(",")]
    state_url = args.state or "sqlite:///" + str(Path(tempfile.gettempdir()) / "bench.sqlite3")
    shared = not state_url.startswith("sqlite")
    if not shared and max(counts) > 1:
        print("SQLite allows one sender per file: --processes > 1 needs --state postgresql://…")
        counts = [1]
    say: Callable[..., None] = print
    rng = random.Random(SEED)
    with tempfile.TemporaryDirectory(prefix="digest-bench-") as tmp_name:
        tmp = Path(tmp_name)
        if not shared:
            state_url = f"sqlite:///{tmp / 'bench.sqlite3'}"
        write_subscribers(tmp / "subscribers.yaml", args.subscribers, vocabulary(EXAMPLES), rng)
        shown = re.sub(r"://([^:@/]*):[^@/]*@", r"://\1:***@", state_url)
        say(
            f"digest send with several processes: {args.subscribers} subscribers, day "
            f"{args.day}, pool {args.concurrency} per process, state {shown}, "
            f"{psutil.cpu_count()} CPUs, {args.runs} run(s) each"
        )
        for name, url in (("sqlite", f"sqlite:///{tmp / 'cost.sqlite3'}"), ("this", state_url)):
            if name == "this" and not shared:
                continue
            cost = state_cost(url, STATE_SAMPLE)
            say(f"  state writes alone ({name}): {1000 * cost:.2f} ms per message (claim + mark)")
        with ServerProcess(None) as sink:
            base: float | None = None
            for n in counts:
                runs = [
                    run_processes_once(tmp, sink.port, state_url, n, args.day, args.concurrency)
                    for _ in range(args.runs)
                ]
                rates = sorted(r.rate for r in runs)
                median = rates[len(rates) // 2]
                base = base or median
                last = runs[-1]
                speedup = median / base if base else 0.0
                say(
                    f"  {n} process(es): {last.sent} sent; messages/s min {rates[0]:.1f} / "
                    f"median {median:.1f} / max {rates[-1]:.1f} (first to last send; "
                    f"wall incl. start-up {last.wall:.1f} s); × {speedup:.2f} vs 1 process"
                    + (
                        f"; PostgreSQL CPU {1000 * last.db_cpu / max(last.sent, 1):.2f} ms/message"
                        if shared
                        else ""
                    )
                )
                for error in last.errors:
                    say(f"    PROBLEM: {error}")
        say(
            "  (one sink, one machine: every process shares the CPUs with the sink and the "
            "database; see README for what to expect on separate hosts)"
        )
