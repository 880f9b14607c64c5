"""Benchmark of the state writes of a send: claim + mark_sent per message, pool of N senders.

Prints figures; asserts nothing (CI does not run it). N asyncio senders (the engine's pool)
share one state-writer thread, as ``send_all`` does; each, per message, awaits its claim,
optionally waits ``--transport-ms`` (the SMTP exchange), then awaits its mark_sent. Two
writers, interleaved round by round on fresh state files with the real settings (SQLite WAL,
``synchronous=FULL``):

1. **one by one** (before): a one-thread executor, one transaction (one fsync) per write;
2. **group commit** (after): :class:`digest.state.group.GroupCommitter`, the writes queued
   while one transaction commits share the next one.

``--slow-commit-ms`` adds a delay to every commit (the connector's ``on_commit`` hook: a disk
whose fsync is slow, as a disk shared with busy processes: 12 ms per claim + mark_sent was
measured here).

Usage (min/median/max over ``--runs``)::

    .venv/bin/python benchmarks/bench_state.py                      # 2,000 messages, pool 8
    .venv/bin/python benchmarks/bench_state.py --messages 5000 --pool 8 --transport-ms 2
    .venv/bin/python benchmarks/bench_state.py --slow-commit-ms 6    # a busy disk's fsync
    .venv/bin/python benchmarks/bench_state.py --start-postgres     # also PostgreSQL (durable)
    .venv/bin/python benchmarks/bench_state.py --start-postgres --only-postgres
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from digest.state import StateBackend, open_state  # noqa: E402
from digest.state.group import GroupCommitter  # noqa: E402

EDITION = "2026-08-20"
DEFAULT_MESSAGES = 2000
DEFAULT_POOL = 8
DEFAULT_RUNS = 3
PAPERS = ("2508.00001", "2508.00002", "2508.00003", "2508.00004", "2508.00005")
"""Papers recorded with each claim, as a real digest's claim does."""

Submit = Callable[..., "concurrent.futures.Future[Any]"]


async def _send(store: StateBackend, submit: Submit, messages: int, pool: int, wait: float) -> None:
    """``pool`` senders claim and mark ``messages`` rows through ``submit``."""
    todo = iter(range(messages))

    async def sender() -> None:
        for i in todo:
            email = f"reader{i:06d}@example.org"
            key = (email, EDITION)
            claimed = await asyncio.wrap_future(
                submit(key, store.claim, email, EDITION, f"<{i}@bench>", PAPERS)
            )
            assert claimed
            if wait:
                await asyncio.sleep(wait)
            await asyncio.wrap_future(
                submit(key, store.mark_sent, email, EDITION, "2.0.0 Ok", code=250)
            )

    await asyncio.gather(*(sender() for _ in range(pool)))


def _one_by_one(store: StateBackend) -> tuple[Submit, Callable[[], str], Callable[[], None]]:
    executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="bench")

    def submit(key: tuple[str, str], fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        del key
        return executor.submit(fn, *args, **kw)

    return submit, lambda: "", lambda: executor.shutdown(wait=True)


def _grouped(store: StateBackend) -> tuple[Submit, Callable[[], str], Callable[[], None]]:
    committer = GroupCommitter(store)

    def info() -> str:
        s = committer.stats
        return f"{s.transactions} transactions, largest {s.largest}"

    return committer.submit_keyed, info, lambda: committer.shutdown(wait=True)


WRITERS = {"one by one (before)": _one_by_one, "group commit (after)": _grouped}


def _slow_commits(store: StateBackend, delay: float) -> None:
    """Every commit takes ``delay`` seconds more (a disk whose fsync is slow)."""
    if delay:
        store._db.on_commit = lambda: time.sleep(delay)  # type: ignore[attr-defined]


def _round(
    url: str, make: Callable[..., Any], messages: int, pool: int, wait: float, slow: float = 0.0
) -> tuple[float, str]:
    store = open_state(url)
    _slow_commits(store, slow)
    submit, info, stop = make(store)
    try:
        start = time.perf_counter()
        asyncio.run(_send(store, submit, messages, pool, wait))
        elapsed = time.perf_counter() - start
        stop()
        assert len(store.list(edition=EDITION, statuses=["sent"])) == messages
        return elapsed, info()
    finally:
        store.close()


@contextlib.contextmanager
def _urls(kind: str, root: Path, start_postgres: bool) -> Iterator[Callable[[], str]]:
    if kind == "sqlite":
        counter = iter(range(1_000_000))
        yield lambda: f"sqlite:///{root / f'state-{next(counter)}.sqlite3'}"
        return
    from tests.pgserver import PostgresServer, find_bin_dir

    bin_dir = find_bin_dir()
    if bin_dir is None or not start_postgres:
        raise SystemExit("--start-postgres: no /usr/lib/postgresql/*/bin/initdb")
    with PostgresServer(bin_dir, durable=True) as server:
        yield server.fresh_url


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--messages", type=int, default=DEFAULT_MESSAGES)
    parser.add_argument("--pool", type=int, default=DEFAULT_POOL, help="concurrent senders")
    parser.add_argument("--runs", type=int, default=DEFAULT_RUNS)
    parser.add_argument(
        "--transport-ms", type=float, default=0.0, help="wait between claim and mark, ms"
    )
    parser.add_argument(
        "--start-postgres",
        action="store_true",
        help="also measure a throwaway local PostgreSQL with default durability",
    )
    parser.add_argument(
        "--slow-commit-ms",
        type=float,
        default=0.0,
        help="add this much to every commit, ms (a busy disk's fsync)",
    )
    parser.add_argument(
        "--only-postgres", action="store_true", help="with --start-postgres: skip SQLite"
    )
    args = parser.parse_args(argv)
    kinds = ["sqlite", "postgres"] if args.start_postgres else ["sqlite"]
    if args.only_postgres:
        kinds = ["postgres"]
    print(
        f"state writes: {args.messages} messages × (claim + mark_sent), pool {args.pool}, "
        f"transport wait {args.transport_ms:g} ms, commits +{args.slow_commit_ms:g} ms, "
        f"{args.runs} run(s); "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    with tempfile.TemporaryDirectory(prefix="digest-bench-state-") as tmp:
        for kind in kinds:
            with _urls(kind, Path(tmp), args.start_postgres) as fresh:
                times: dict[str, list[float]] = {name: [] for name in WRITERS}
                notes: dict[str, str] = {}
                for run in range(args.runs):
                    for name, make in WRITERS.items():
                        elapsed, note = _round(
                            fresh(),
                            make,
                            args.messages,
                            args.pool,
                            args.transport_ms / 1000,
                            args.slow_commit_ms / 1000,
                        )
                        times[name].append(elapsed)
                        notes[name] = note
                        print(
                            f"  {kind} run {run + 1} {name}: {elapsed:.2f} s, "
                            f"{args.messages / elapsed:.0f} msg/s {note}",
                            flush=True,
                        )
                print(f"\n{kind} (synchronous=FULL)" if kind == "sqlite" else f"\n{kind}")
                print(f"  {'':24} {'s (min/median/max)':>24} {'msg/s':>24} {'ms/msg':>8}")
                for name, values in times.items():
                    lo, med, hi = min(values), statistics.median(values), max(values)
                    rates = f"{args.messages / hi:.0f} / {args.messages / med:.0f} / "
                    rates += f"{args.messages / lo:.0f}"
                    print(
                        f"  {name:24} {f'{lo:.2f} / {med:.2f} / {hi:.2f}':>24} {rates:>24} "
                        f"{1000 * med / args.messages:8.2f}"
                    )
                before, after = (statistics.median(v) for v in times.values())
                print(f"  group commit / one by one: {before / after:.1f}× the messages per second")
    print(f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
