"""The circuit breaker: a relay that stops answering stops the run, the rest stay owed.

Issue 26: a relay that loses every reply to the end of data turned 200 of 200 subscribers
into ``unknown`` and the run exited 0; a stalled one would hold each message for
DIGEST_SMTP_DATA_TIMEOUT (10 minutes: about 8 hours for 200 messages with a pool of 4).
The relay is the raw :class:`tests.faultrelay.FaultRelay` on loopback.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from digest.delivery.engine import send_all
from digest.state import StateBackend, open_state
from tests.conftest import EXAMPLES, MakeStore
from tests.factories import build, smtp_settings, statuses, stream
from tests.faultrelay import FaultRelay

BREAKER = 5
POOL = 2


@pytest.fixture
def store(make_store: MakeStore) -> StateBackend:
    """A fresh state of each backend (SQLite, then PostgreSQL)."""
    return make_store()


async def test_lost_replies_stop_the_run_after_the_limit_and_leave_the_rest_owed(
    store: StateBackend,
) -> None:
    addresses = [f"user{i:03d}@example.org" for i in range(60)]
    with FaultRelay(after_data="drop") as relay:
        settings = smtp_settings(relay, smtp_concurrency=POOL, smtp_breaker_after=BREAKER)
        summary = await send_all(
            stream([build(a) for a in addresses]), store=store, settings=settings
        )
        arrived = len(relay.received)
    rows = statuses(store)
    unknown = [a for a, s in rows.items() if s == "unknown"]
    # At most the limit, plus what was in flight on the other connections when it tripped.
    assert BREAKER <= len(unknown) <= BREAKER + POOL - 1, rows
    assert arrived == len(unknown)  # each unknown one reached the relay once; nothing else did
    assert set(rows.values()) <= {"unknown", "owed"}  # nobody else was claimed and lost
    assert summary.unknown == len(unknown) and not summary.ok
    assert any("in a row got no reply from the relay" in e for e in summary.errors)


async def test_timeouts_before_the_data_stop_the_run_too(store: StateBackend) -> None:
    # The relay never answers DATA: every attempt times out (transient, nothing was sent).
    addresses = [f"user{i:03d}@example.org" for i in range(40)]
    with FaultRelay(at_data="stall") as relay:
        settings = smtp_settings(
            relay,
            smtp_concurrency=POOL,
            smtp_timeout=0.2,
            smtp_max_attempts=5,
            smtp_breaker_after=BREAKER,
        )
        summary = await send_all(
            stream([build(a) for a in addresses]), store=store, settings=settings
        )
        attempts = relay.data_commands
    # Without the breaker: 40 messages × 5 attempts = 200 timed-out DATA commands.
    assert attempts <= BREAKER + POOL - 1
    assert relay.received == []
    assert set(statuses(store).values()) <= {"owed"}
    assert summary.sent == 0 and summary.unknown == 0 and not summary.ok
    assert any("timed out" in e and "in a row" in e for e in summary.errors)


async def test_a_reply_in_between_resets_the_count(store: StateBackend) -> None:
    # Every other message loses its reply: never BREAKER in a row, so the run goes on.
    addresses = [f"user{i:03d}@example.org" for i in range(30)]
    with FaultRelay(after_data=lambda n: "drop" if n % 2 == 0 else "ok") as relay:
        settings = smtp_settings(relay, smtp_concurrency=1, smtp_breaker_after=2)
        summary = await send_all(
            stream([build(a) for a in addresses]), store=store, settings=settings
        )
    assert (summary.sent, summary.unknown) == (15, 15)
    assert not any("in a row" in e for e in summary.errors)


async def test_zero_turns_the_breaker_off(store: StateBackend) -> None:
    addresses = [f"user{i:03d}@example.org" for i in range(12)]
    with FaultRelay(after_data="drop") as relay:
        settings = smtp_settings(relay, smtp_concurrency=POOL, smtp_breaker_after=0)
        summary = await send_all(
            stream([build(a) for a in addresses]), store=store, settings=settings
        )
    assert summary.unknown == 12
    assert set(statuses(store).values()) == {"unknown"}


def test_digest_send_exits_non_zero_and_says_why(tmp_path: Path, state_url: str) -> None:
    """Through the CLI: 200 subscribers, a relay that loses every reply (the issue's report)."""
    shutil.copytree(EXAMPLES / "hf-daily-papers", tmp_path / "papers")
    emails = [f"reader{i:04d}@example.org" for i in range(200)]
    (tmp_path / "subscribers.yaml").write_text(
        "subscribers:\n" + "".join(f"  - email: {a}\n" for a in emails)
    )
    with FaultRelay(after_data="drop") as relay:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DIGEST_")}
        env.update(
            DIGEST_SOURCES=f"file:{tmp_path / 'papers'}",
            DIGEST_SUBSCRIBERS=str(tmp_path / "subscribers.yaml"),
            DIGEST_STATE_URL=state_url,
            DIGEST_FROM="Daily Papers <papers@example.org>",
            DIGEST_SMTP_HOST="127.0.0.1",
            DIGEST_SMTP_PORT=str(relay.port),
            DIGEST_SMTP_SECURITY="none",
            DIGEST_SMTP_CONCURRENCY=str(POOL),
            DIGEST_RENDER_WORKERS="0",
        )
        done = subprocess.run(
            [sys.executable, "-m", "digest", "send", "--date", "2026-08-20"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        copies = {a: relay.copies(a) for a in emails}
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert "in a row got no reply from the relay" in output
    assert "Traceback" not in output
    with open_state(state_url) as state:
        rows = {r.subscriber: r.status for r in state.list(edition="2026-08-20")}
    unknown = [a for a, s in rows.items() if s == "unknown"]
    assert len(unknown) <= BREAKER + POOL - 1
    assert f"unknown {len(unknown)}" in output
    assert all(copies[a] <= 1 for a in emails)
    assert sum(copies.values()) == len(unknown)  # the other 190-odd are owed, not lost


async def test_the_daemon_holds_deliveries_after_a_trip_then_tries_again(
    tmp_path: Path, state_url: str
) -> None:
    """A tick that trips the breaker holds the next ticks (10 min), then the rest are sent."""
    from datetime import UTC, datetime, timedelta

    from digest.core import Digest
    from digest.daemon import BREAKER_HOLD_MIN_S, Daemon
    from tests.factories import FakeClock, send_settings

    shutil.copytree(EXAMPLES / "hf-daily-papers", tmp_path / "papers")
    emails = [f"reader{i:03d}@example.org" for i in range(40)]
    subscribers_file = tmp_path / "subscribers.yaml"
    subscribers_file.write_text(
        "subscribers:\n"
        + "".join(f"  - {{email: {a}, send_at: '07:00', timezone: UTC}}\n" for a in emails)
    )
    clock = FakeClock(datetime(2026, 8, 21, 8, 0, tzinfo=UTC))
    answering = [False]
    with FaultRelay(after_data=lambda n: "ok" if answering[0] else "drop") as relay:
        settings = send_settings(
            tmp_path,
            relay,
            sources=f"file:{tmp_path / 'papers'}",
            render_workers=0,
            subscribers=subscribers_file,
            smtp_concurrency=POOL,
            smtp_breaker_after=BREAKER,
            state_url=state_url,
        )
        with Digest(settings, now=clock) as digest:
            daemon = Daemon(digest, settings, now=clock)
            first = await daemon.tick()
            tried = len(relay.received)
            answering[0] = True  # the relay is fixed, but the hold is not over yet
            clock.at += timedelta(minutes=1)
            second = await daemon.tick()
            held_copies = len(relay.received)
            clock.at += timedelta(seconds=BREAKER_HOLD_MIN_S)
            third = await daemon.tick()
        copies = {a: relay.copies(a) for a in emails}
    assert first.total("unknown") == tried <= BREAKER + POOL - 1
    assert second.total("held") == len(emails) - tried and held_copies == tried, second
    assert third.total("sent") == len(emails) - tried
    assert all(n == 1 for n in copies.values())  # nobody twice, nobody missing
