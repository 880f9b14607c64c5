"""A relay that answers 421 at connect: the whole pool backs off (issue 8, item 8).

The relay is :class:`tests.faultrelay.FaultRelay` with ``connect_reply``: every connection gets
one ``421`` line and is closed, as a relay shedding load does.
"""

from __future__ import annotations

import logging

import pytest

from digest.delivery.engine import send_all
from digest.state import StateBackend
from tests.conftest import MakeStore
from tests.factories import Sleeps, build, smtp_settings, statuses, stream
from tests.faultrelay import BUSY, FaultRelay

MESSAGES = 40
CONCURRENCY = 4
MAX_ATTEMPTS = 5
PER_MINUTE = 6


@pytest.fixture
def store(make_store: MakeStore) -> StateBackend:
    """A fresh state of each backend (SQLite, PostgreSQL)."""
    return make_store()


async def test_421_at_connect_backs_off_the_whole_pool(
    store: StateBackend, caplog: pytest.LogCaptureFixture
) -> None:
    batch = [build(f"user{i:02d}@example.org") for i in range(MESSAGES)]
    sleeps = Sleeps()
    with FaultRelay(connect_reply=BUSY) as relay:
        settings = smtp_settings(
            relay,
            smtp_concurrency=CONCURRENCY,
            smtp_max_attempts=MAX_ATTEMPTS,
            smtp_connect_attempts_per_minute=PER_MINUTE,
        )
        with caplog.at_level(logging.WARNING, logger="digest"):
            summary = await send_all(stream(batch), store=store, settings=settings, sleep=sleeps)
        connections = relay.connections
    # Bounded per run: the first connections of the pool, then spaced single attempts until
    # smtp_max_attempts have failed in a row; not smtp_max_attempts per message (201).
    assert connections <= CONCURRENCY + MAX_ATTEMPTS, connections
    # Bounded per minute: while backing off, attempts are at least 60/PER_MINUTE s apart.
    spaced = [d for d in sleeps.delays if d >= 60 / PER_MINUTE]
    assert len(spaced) >= connections - CONCURRENCY, sleeps.delays
    # Nothing was sent or lost: what was claimed is owed again, the rest was never claimed.
    assert summary.sent == 0 and summary.failed == 0
    assert set(statuses(store).values()) <= {"owed"}
    # Reported once, not once per subscriber.
    assert sum("421" in line for line in summary.errors) == 1, summary.errors
    backoff_lines = [r for r in caplog.records if "backing off" in r.getMessage()]
    assert len(backoff_lines) == 1, [r.getMessage() for r in caplog.records]


async def test_the_pool_resumes_once_the_relay_accepts_again(store: StateBackend) -> None:
    batch = [build(f"user{i:02d}@example.org") for i in range(10)]
    sleeps = Sleeps()
    with FaultRelay() as relay:
        # Busy for the first 3 connections, then accepting.
        relay.connect_reply_for = lambda n: BUSY if n <= 3 else None
        settings = smtp_settings(
            relay,
            smtp_concurrency=2,
            smtp_max_attempts=MAX_ATTEMPTS,
            smtp_connect_attempts_per_minute=PER_MINUTE,
        )
        summary = await send_all(stream(batch), store=store, settings=settings, sleep=sleeps)
        copies = {m.rcpt_tos[0] for m in relay.received}
    assert summary.sent == 10 and summary.deferred == 0, summary.errors
    assert len(copies) == 10
    assert set(statuses(store).values()) == {"sent"}
