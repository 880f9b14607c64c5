"""Benchmark of the subscriber list's two homes (issue 22): saves against a real `digest serve`.

Prints figures; asserts nothing (CI does not run it). For each home of the list (the YAML
file; a table of the state on SQLite; on PostgreSQL with ``--postgres``) and each size
(``--sizes``, default 1,000 / 10,000 / 100,000 generated subscribers), each round:

1. writes the list (file), or imports it into a fresh state (timed: ``import``);
2. starts ``digest serve`` as its own process on 127.0.0.1 and waits for ``/healthz``;
3. **preferences saves**: ``--saves`` subscribers one after the other: GET the page (the CSRF
   field), then the POST, timed (new keywords each time, so every save changes the list);
4. **confirmed sign-ups**: as many sign-ups recorded in the state beforehand (as POST
   /subscribe records them); each confirm link's GET, then its POST, timed;
5. **/healthz during 32 concurrent saves**: 32 clients saving preferences in a loop for
   ``--burst`` seconds while another process (so that this one's busy event loop is not in
   the figure) GETs ``/healthz`` every 10 ms: its latency, and saves/s;
6. file home: how long after the last save the file holds it (the background write).

Figures are min / median / max over ``--rounds`` rounds (3). Targets (issue 22): at 100,000,
state home p50 ≤ 20 ms and p99 ≤ 100 ms; file home p50 ≤ 200 ms; /healthz p99 ≤ 50 ms.

Usage::

    .venv/bin/python benchmarks/bench_list.py [--sizes 1000 10000 100000] [--postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_unsubscribe import serve, write_subscribers  # noqa: E402

from digest.state import open_state  # noqa: E402
from digest.subscribers.home import StateHome  # noqa: E402
from digest.tokens import Purpose, TokenSigner  # noqa: E402

SECRET = "bench-secret-key-0123456789-abcdefghij"
START_TIMEOUT_S = 120.0
DEFAULT_SIZES = (1_000, 10_000, 100_000)
DEFAULT_SAVES = 40
DEFAULT_ROUNDS = 3
DEFAULT_BURST_S = 10.0
CONCURRENT_SAVES = 32
HEALTH_EVERY_S = 0.01
TARGET_STATE_P50_MS = 20.0
TARGET_STATE_P99_MS = 100.0
TARGET_FILE_P50_MS = 200.0
TARGET_HEALTH_P99_MS = 50.0


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] if ordered else 0.0


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def form(csrf: str, keywords: str) -> dict[str, str]:
    return {
        "csrf": csrf,
        "name": "Reader",
        "keywords": keywords,
        "exclude": "survey",
        "frequency": "daily",
        "weekday": "monday",
        "send_at": "07:00",
        "timezone": "UTC",
        "max_papers": "8",
    }


def csrf_of(text: str) -> str:
    marker = 'name="csrf" value="'
    start = text.index(marker) + len(marker)
    return text[start : text.index('"', start)]


@dataclass
class Round:
    """One round's figures (ms unless said)."""

    imported_s: float = 0.0
    saves: list[float] = field(default_factory=list)
    confirms: list[float] = field(default_factory=list)
    health: list[float] = field(default_factory=list)
    burst_saves_per_s: float = 0.0
    burst_errors: int = 0
    file_lag_s: float = 0.0
    server_rss_mb: float = 0.0


def one_round(home: str, n: int, state_url: str, workdir: Path, args: argparse.Namespace) -> Round:
    out = Round()
    subs_path = workdir / "subscribers.yaml"
    emails = write_subscribers(subs_path, n)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("DIGEST_")},
        "DIGEST_SUBSCRIBERS": "state" if home != "file" else str(subs_path),
        "DIGEST_STATE_URL": state_url,
        "DIGEST_SECRET_KEY": SECRET,
        "DIGEST_OUTBOX": str(workdir / "outbox"),
        "DIGEST_SIGNUP_PER_CLIENT_HOUR": "100000",
    }
    signer = TokenSigner(SECRET)
    step = max(1, n // (args.saves * 2 + CONCURRENT_SAVES + 1))
    targets = emails[::step][: args.saves]
    burst_targets = emails[1::step][:CONCURRENT_SAVES]
    expires = datetime.now(UTC) + timedelta(hours=24)
    with open_state(state_url) as store:
        if home != "file":
            t0 = time.perf_counter()
            StateHome(store).import_list(subs_path.read_bytes(), subs_path)
            out.imported_s = time.perf_counter() - t0
        signups = []
        for i in range(args.saves):
            address = f"new{i:04d}@signup.example.org"
            store.add_signup(
                f"s{i:06d}",
                address,
                name=None,
                keywords=["agents"],
                client="bench",
                expires_at=expires,
            )
            signups.append(signer.make(Purpose.CONFIRM, address, data=f"s{i:06d}", expires=expires))
    port = free_port()
    env["DIGEST_PUBLIC_URL"] = f"http://127.0.0.1:{port}"
    with serve(env, workdir, port) as base, httpx.Client(timeout=120) as client:
        for i, email in enumerate(targets):
            url = f"{base}/preferences/{signer.make(Purpose.PREFERENCES, email)}"
            page = client.get(url)
            t0 = time.perf_counter()
            r = client.post(url, data=form(csrf_of(page.text), f"bench {i}, agents"))
            out.saves.append((time.perf_counter() - t0) * 1000)
            assert r.status_code == 200 and "Saved." in r.text, r.text[-500:]
        for token in signups:
            url = f"{base}/confirm/{token}"
            page = client.get(url)
            t0 = time.perf_counter()
            r = client.post(url, data={"csrf": csrf_of(page.text)})
            out.confirms.append((time.perf_counter() - t0) * 1000)
            assert r.status_code == 200, r.text[-500:]
        saved, errors, health = asyncio.run(burst(base, burst_targets, signer, args.burst))
        out.burst_saves_per_s = saved / args.burst
        out.burst_errors = errors
        out.health = health
        if home == "file":
            t0 = time.perf_counter()
            last = targets[-1]
            while f"bench {len(targets) - 1}" not in _entry_text(subs_path, last):
                time.sleep(0.01)
                if time.perf_counter() - t0 > 300:
                    break
            out.file_lag_s = time.perf_counter() - t0
    out.server_rss_mb = float(env.get("_rss", 0.0))
    return out


def _entry_text(path: Path, email: str) -> str:
    text = path.read_text(encoding="utf-8")
    at = text.find(f"email: {email}")
    return text[at : at + 300] if at >= 0 else ""


_PROBE = """
import json, sys, time
import httpx
base, seconds, every = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
out = []
with httpx.Client(timeout=60) as client:
    client.get(base + "/healthz")
    print("ready", flush=True)
    sys.stdin.readline()
    stop = time.monotonic() + seconds
    while time.monotonic() < stop:
        t0 = time.perf_counter()
        client.get(base + "/healthz")
        out.append((time.perf_counter() - t0) * 1000)
        time.sleep(every)
print(json.dumps(out), flush=True)
"""


async def burst(
    base: str, targets: list[str], signer: TokenSigner, seconds: float
) -> tuple[int, int, list[float]]:
    """32 clients saving for ``seconds``; another process GETs /healthz every 10 ms."""
    saved = errors = 0
    limits = httpx.Limits(max_connections=CONCURRENT_SAVES + 1)
    probe = subprocess.Popen(
        [sys.executable, "-c", _PROBE, base, str(seconds), str(HEALTH_EVERY_S)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert probe.stdout is not None and probe.stdin is not None
    assert probe.stdout.readline().strip() == "ready"
    probe.stdin.write("go\n")
    probe.stdin.flush()
    stop = time.monotonic() + seconds

    async def saver(client: httpx.AsyncClient, email: str) -> None:
        nonlocal saved, errors
        url = f"{base}/preferences/{signer.make(Purpose.PREFERENCES, email)}"
        n = 0
        while time.monotonic() < stop:
            page = await client.get(url)
            r = await client.post(url, data=form(csrf_of(page.text), f"burst {n}, agents"))
            n += 1
            if r.status_code == 200:
                saved += 1
            else:
                errors += 1

    # Each saver keeps its own cookie jar (the CSRF cookie): one client each.
    clients = [httpx.AsyncClient(timeout=120, limits=limits) for _ in targets]
    try:
        await asyncio.gather(*(saver(c, e) for c, e in zip(clients, targets, strict=True)))
    finally:
        for c in clients:
            await c.aclose()
    out, _ = probe.communicate(timeout=120)
    health: list[float] = json.loads(out.strip().splitlines()[-1])
    return saved, errors, health


def stat(values: list[float], fmt: str = "{:.0f}") -> str:
    if not values:
        return "-"
    return " / ".join(fmt.format(v) for v in (min(values), statistics.median(values), max(values)))


def report(home: str, n: int, rounds: list[Round]) -> None:
    def each(get: Callable[[Round], float]) -> list[float]:
        return [get(r) for r in rounds]

    save50 = each(lambda r: pct(r.saves, 50))
    save99 = each(lambda r: pct(r.saves, 99))
    conf50 = each(lambda r: pct(r.confirms, 50))
    conf99 = each(lambda r: pct(r.confirms, 99))
    h50 = each(lambda r: pct(r.health, 50))
    h99 = each(lambda r: pct(r.health, 99))
    print(f"{home} home, {n:,} subscribers ({len(rounds)} rounds, min / median / max):", flush=True)
    if home != "file":
        print(f"  import: {stat(each(lambda r: r.imported_s), '{:.1f}')} s")
    print(f"  preferences save: p50 {stat(save50, '{:.1f}')} ms, p99 {stat(save99, '{:.1f}')} ms")
    print(f"  confirmed sign-up: p50 {stat(conf50, '{:.1f}')} ms, p99 {stat(conf99, '{:.1f}')} ms")
    print(
        f"  /healthz during {CONCURRENT_SAVES} concurrent saves: p50 {stat(h50, '{:.1f}')} ms, "
        f"p99 {stat(h99, '{:.1f}')} ms, max {stat(each(lambda r: max(r.health or [0])), '{:.0f}')} "
        f"ms; {stat(each(lambda r: r.burst_saves_per_s), '{:.0f}')} saves/s, "
        f"{sum(r.burst_errors for r in rounds)} not 200"
    )
    if home == "file":
        lag = stat(each(lambda r: r.file_lag_s), "{:.2f}")
        print(f"  the file held the last save {lag} s later")
    print(f"  server RSS at the end: {stat(each(lambda r: r.server_rss_mb))} MB")
    if n >= 100_000:
        if home == "file":
            ok = statistics.median(save50) <= TARGET_FILE_P50_MS
            print(f"  target file p50 ≤ {TARGET_FILE_P50_MS:.0f} ms: {'MET' if ok else 'NOT MET'}")
        else:
            ok = (
                statistics.median(save50) <= TARGET_STATE_P50_MS
                and statistics.median(save99) <= TARGET_STATE_P99_MS
            )
            print(
                f"  target state p50 ≤ {TARGET_STATE_P50_MS:.0f} ms, p99 ≤ "
                f"{TARGET_STATE_P99_MS:.0f} ms: {'MET' if ok else 'NOT MET'}"
            )
    ok = statistics.median(h99) <= TARGET_HEALTH_P99_MS
    print(f"  target /healthz p99 ≤ {TARGET_HEALTH_P99_MS:.0f} ms: {'MET' if ok else 'NOT MET'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(DEFAULT_SIZES))
    parser.add_argument("--homes", nargs="+", default=["file", "state"], choices=["file", "state"])
    parser.add_argument("--postgres", action="store_true", help="the state home on PostgreSQL too")
    parser.add_argument("--saves", type=int, default=DEFAULT_SAVES)
    parser.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS)
    parser.add_argument("--burst", type=float, default=DEFAULT_BURST_S, help="seconds")
    args = parser.parse_args()
    print(
        f"{psutil.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start "
        "(the machine is shared: figures are noisy)",
        flush=True,
    )
    with contextlib.ExitStack() as stack:
        fresh_pg: Callable[[], str] | None = None
        if args.postgres:
            from tests.pgserver import PostgresServer, find_bin_dir

            bin_dir = find_bin_dir()
            if bin_dir is None:
                raise SystemExit("--postgres: no PostgreSQL server installed")
            fresh_pg = stack.enter_context(PostgresServer(bin_dir, durable=True)).fresh_url
        configs = [(h, "sqlite") for h in args.homes]
        if fresh_pg is not None and "state" in args.homes:
            configs.append(("state", "postgres"))
        for n in args.sizes:
            for home, backend in configs:
                rounds = []
                for _ in range(args.rounds):
                    with tempfile.TemporaryDirectory(prefix="bench-list-") as tmp:
                        workdir = Path(tmp)
                        if backend == "sqlite":
                            url = f"sqlite:///{workdir / 'state.sqlite3'}"
                        else:
                            assert fresh_pg is not None
                            url = fresh_pg()
                        rounds.append(one_round(home, n, url, workdir, args))
                label = home if home == "file" else f"state ({backend})"
                report(label, n, rounds)


if __name__ == "__main__":
    main()
