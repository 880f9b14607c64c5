"""The daemon: ticks driven by an injected clock, reloads, empty days, and a real SIGTERM.

In-process tests call :meth:`Daemon.tick` directly with a controllable clock (no sleeping
through real hours) and deliver to a Maildir outbox. The end-to-end test runs ``python -m
digest run`` against a real aiosmtpd server at the real current time.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from digest.core import Digest
from digest.daemon import Daemon, TickReport
from digest.models import Edition
from digest.schedule import scheduled_instant
from digest.state import StateBackend, open_state
from digest.state.store import Store
from digest.subscribers import Subscriber
from digest.subscribers.changes import SetFields
from digest.subscribers.home import add_subscriber
from tests.conftest import crash_claimers
from tests.factories import (
    Env,
    FakeClock,
    days_between,
    subscriber_yaml,
    utc,
    write_papers,
)
from tests.smtpserver import SMTPTestServer

PROJECT = Path(__file__).parent.parent
HOUR = timedelta(hours=1)


# -- helpers ------------------------------------------------------------------------------


@pytest.fixture
def env(tmp_path: Path, state_url: str) -> Env:
    """A daemon's files; its state is each backend's (``state_url``)."""
    return Env.under(tmp_path, state_url)


@asynccontextmanager
async def daemon_for(env: Env, clock: FakeClock, **overrides: Any) -> AsyncIterator[Daemon]:
    settings = env.settings(**overrides)
    with Digest(settings, now=clock) as digest, digest.store.sender_lock(purpose="run"):
        yield Daemon(digest, settings, now=clock)


async def tick_until(
    daemon: Daemon, clock: FakeClock, end: datetime, step: timedelta
) -> list[TickReport]:
    reports = []
    while clock.at <= end:
        reports.append(await daemon.tick())
        clock.at += step
    return reports


def sent_rows(daemon: Daemon) -> list[tuple[str, str, datetime | None]]:
    rows = daemon.digest.store.list(statuses=["sent"])
    return sorted(((r.subscriber, r.edition, r.sent_at) for r in rows), key=lambda r: str(r[2]))


def statuses(daemon: Daemon) -> dict[tuple[str, str], tuple[str, str | None]]:
    return {
        (r.subscriber, r.edition): (str(r.status), r.detail) for r in daemon.digest.store.list()
    }


def outbox_count(env: Env) -> int:
    new = env.outbox / "new"
    return len(list(new.iterdir())) if new.exists() else 0


def mark_sent(store: StateBackend, email: str, edition: str) -> None:
    assert store.claim(email, edition, f"<{edition}.{email}@test>")
    store.mark_sent(email, edition, "250 OK")


# -- local hours, catch-up, lateness ------------------------------------------------------


async def test_tokyo_and_new_york_get_their_edition_at_their_local_hour(env: Env) -> None:
    write_papers(env.papers, days_between(date(2026, 8, 17), date(2026, 8, 21)))
    env.write_subscribers(
        [
            {"email": "tokyo@example.org", "timezone": "Asia/Tokyo"},
            {"email": "ny@example.org", "timezone": "America/New_York"},
        ],
        defaults={"send_at": "07:00"},
    )
    clock = FakeClock(utc(2026, 8, 20, 12))
    async with daemon_for(env, clock) as daemon:
        # Both were already served their previous edition.
        mark_sent(daemon.digest.store, "tokyo@example.org", "2026-08-18")  # 08-19 22:00Z
        mark_sent(daemon.digest.store, "ny@example.org", "2026-08-19")  # 08-20 11:00Z
        await tick_until(daemon, clock, utc(2026, 8, 21, 12), timedelta(minutes=15))
        new = [r for r in sent_rows(daemon) if r[2] and r[2] > utc(2026, 8, 20, 12)]
    # 07:00 in Tokyo on 08-21 is 08-20 22:00Z and carries 08-19 (08-20 has not ended);
    # 07:00 in New York on 08-21 is 11:00Z and carries 08-20.
    assert new == [
        ("tokyo@example.org", "2026-08-19", utc(2026, 8, 20, 22)),
        ("ny@example.org", "2026-08-20", utc(2026, 8, 21, 11)),
    ]
    assert outbox_count(env) == 2


async def test_started_three_hours_late_catches_up_once(env: Env) -> None:
    write_papers(env.papers, [date(2026, 8, 20)])
    env.write_subscribers([{"email": "a@example.org", "send_at": "07:00", "timezone": "UTC"}])
    clock = FakeClock(utc(2026, 8, 21, 10))
    async with daemon_for(env, clock) as daemon:
        first = await daemon.tick()
        await tick_until(daemon, clock, utc(2026, 8, 21, 18), HOUR)
        assert first.total("sent") == 1
        assert [(r[0], r[1]) for r in sent_rows(daemon)] == [("a@example.org", "2026-08-20")]
    assert outbox_count(env) == 1
    assert env.health.exists()


async def test_started_thirteen_hours_late_records_skipped_late(env: Env) -> None:
    write_papers(env.papers, days_between(date(2026, 8, 18), date(2026, 8, 21)))
    env.write_subscribers(
        [
            {"email": "known@example.org", "send_at": "07:00", "timezone": "UTC"},
            {"email": "new@example.org", "send_at": "07:00", "timezone": "UTC"},
        ]
    )
    clock = FakeClock(utc(2026, 8, 21, 20))  # 13 h after 07:00
    async with daemon_for(env, clock) as daemon:
        mark_sent(daemon.digest.store, "known@example.org", "2026-08-19")
        report = await daemon.tick()
        rows = statuses(daemon)
        assert rows[("known@example.org", "2026-08-20")] == ("skipped", "late")
        # A subscriber never seen before gets neither a late row nor an old edition...
        assert not any(email == "new@example.org" for email, _ in rows)
        assert report.total("late") == 1
        assert report.total("sent") == 0
        # ...and both get the next edition at the next 07:00.
        await tick_until(daemon, clock, utc(2026, 8, 22, 8), HOUR)
        assert [(r[0], r[1]) for r in sent_rows(daemon)] == [
            ("known@example.org", "2026-08-19"),
            ("known@example.org", "2026-08-21"),
            ("new@example.org", "2026-08-21"),
        ]
    assert outbox_count(env) == 2


async def test_weekly_subscriber_gets_one_mail_per_week(env: Env) -> None:
    write_papers(env.papers, days_between(date(2026, 7, 27), date(2026, 8, 23)))
    env.write_subscribers(
        [
            {
                "email": "weekly@example.org",
                "frequency": "weekly",
                "weekday": "monday",
                "send_at": "08:00",
                "timezone": "Europe/Berlin",
            },
            {"email": "daily@example.org", "send_at": "08:00", "timezone": "Europe/Berlin"},
        ]
    )
    clock = FakeClock(utc(2026, 8, 10, 3))  # Monday 05:00 in Berlin
    async with daemon_for(env, clock) as daemon:
        await tick_until(daemon, clock, utc(2026, 8, 24, 3), HOUR)
        rows = statuses(daemon)
        weekly = sorted(r[1] for r in sent_rows(daemon) if r[0] == "weekly@example.org")
        assert weekly == ["2026-W32", "2026-W33"]
        daily = {e: s for (who, e), s in rows.items() if who == "daily@example.org"}
    # 14 local dates 08-10..08-23 carry UTC days 08-09..08-22: weekdays sent, weekends
    # recorded "no papers" at once (no retry: Daily Papers lists nothing on weekends).
    expected = days_between(date(2026, 8, 9), date(2026, 8, 22))
    assert sorted(daily) == [d.isoformat() for d in expected]
    for day in expected:
        status = ("skipped", "no papers") if day.weekday() >= 5 else ("sent", None)
        assert daily[day.isoformat()][0] == status[0], day
        if status[0] == "skipped":
            assert daily[day.isoformat()][1] == "no papers"
    assert outbox_count(env) == 2 + 10


@pytest.mark.parametrize(
    ("timezone", "first_day"),
    [
        ("America/New_York", date(2026, 3, 5)),  # spring forward Sunday 03-08
        ("America/New_York", date(2026, 10, 29)),  # fall back Sunday 11-01
        ("Europe/Berlin", date(2026, 3, 26)),  # spring forward Sunday 03-29
        ("Europe/Berlin", date(2026, 10, 22)),  # fall back Sunday 10-25
    ],
)
async def test_dst_week_neither_skips_nor_doubles(env: Env, timezone: str, first_day: date) -> None:
    write_papers(
        env.papers,
        days_between(first_day - timedelta(days=3), first_day + timedelta(days=8)),
        weekends=True,
    )
    env.write_subscribers(
        [
            {"email": "early@example.org", "send_at": "02:30", "timezone": timezone},
            {"email": "late@example.org", "send_at": "07:00", "timezone": timezone},
        ]
    )
    zone = ZoneInfo(timezone)
    start = datetime.combine(first_day, dtime(0, 0), tzinfo=zone).astimezone(UTC)
    end = datetime.combine(first_day + timedelta(days=7), dtime(0, 0), tzinfo=zone)
    clock = FakeClock(start)
    async with daemon_for(env, clock) as daemon:
        await tick_until(daemon, clock, end.astimezone(UTC), timedelta(minutes=30))
        rows = sent_rows(daemon)
    for email in ("early@example.org", "late@example.org"):
        mine = [(edition, at) for who, edition, at in rows if who == email]
        local_dates = [at.astimezone(zone).date() for _, at in mine if at]
        assert local_dates == days_between(first_day, first_day + timedelta(days=6)), email
        editions = [date.fromisoformat(e) for e, _ in mine]
        assert editions == days_between(editions[0], editions[0] + timedelta(days=6)), email


# -- empty days and fetch failures --------------------------------------------------------


async def test_empty_weekday_is_retried_then_skipped_when_the_window_closes(env: Env) -> None:
    env.write_subscribers([{"email": "a@example.org", "send_at": "07:00", "timezone": "UTC"}])
    clock = FakeClock(utc(2026, 8, 21, 7))  # Friday; edition 2026-08-20 (Thursday)
    async with daemon_for(env, clock) as daemon:
        report = await daemon.tick()
        assert report.editions[0].waiting == 1
        assert statuses(daemon) == {}  # nothing recorded, nothing sent
        clock.at = utc(2026, 8, 21, 9)
        write_papers(env.papers, [date(2026, 8, 20)])  # the list shows up late
        report = await daemon.tick()
        assert report.total("sent") == 1
        # Next day the list never shows up: retried until 12 h, then "no papers".
        await tick_until(daemon, clock, utc(2026, 8, 22, 20), HOUR)
        assert statuses(daemon)[("a@example.org", "2026-08-21")] == ("skipped", "no papers")
    assert outbox_count(env) == 1


async def test_failing_source_sends_nothing_and_records_late(env: Env) -> None:
    write_papers(env.papers, [date(2026, 8, 19)])
    env.write_subscribers([{"email": "a@example.org", "send_at": "07:00", "timezone": "UTC"}])
    clock = FakeClock(utc(2026, 8, 20, 7))
    missing = env.root / "no-such-dir"
    async with daemon_for(env, clock) as daemon:
        await daemon.tick()
        assert len(sent_rows(daemon)) == 1
    clock.at = utc(2026, 8, 21, 7)
    async with daemon_for(env, clock, sources=f"file:{missing}") as daemon:
        report = await daemon.tick()
        assert report.errors and "no such file" in report.errors[0]
        await tick_until(daemon, clock, utc(2026, 8, 21, 20), HOUR)
        assert statuses(daemon)[("a@example.org", "2026-08-20")] == ("skipped", "late")
    assert outbox_count(env) == 1


async def test_weekend_sends_the_note_to_send_empty_subscribers_only(env: Env) -> None:
    env.write_subscribers(
        [
            {"email": "note@example.org", "send_empty": True},
            {"email": "quiet@example.org"},
        ],
        defaults={"send_at": "07:00", "timezone": "UTC"},
    )
    clock = FakeClock(utc(2026, 8, 23, 7))  # Sunday; edition Saturday 2026-08-22
    async with daemon_for(env, clock) as daemon:
        report = await daemon.tick()
        rows = statuses(daemon)
    assert rows[("note@example.org", "2026-08-22")][0] == "sent"
    assert rows[("quiet@example.org", "2026-08-22")] == ("skipped", "no papers")
    assert report.total("sent") == 1
    assert report.total("skipped") == 1
    assert outbox_count(env) == 1


async def test_partial_sources_wait_then_send_what_there_is(env: Env) -> None:
    write_papers(env.papers, [date(2026, 8, 20)])
    env.write_subscribers([{"email": "a@example.org", "send_at": "07:00", "timezone": "UTC"}])
    missing = env.root / "feed-down"
    clock = FakeClock(utc(2026, 8, 21, 7))
    sources = f"file:{env.papers},file:{missing}"
    async with daemon_for(env, clock, sources=sources) as daemon:
        report = await daemon.tick()
        assert report.editions[0].waiting == 1  # one source down: wait for it first
        clock.at = utc(2026, 8, 21, 7, 30)
        assert (await daemon.tick()).total("sent") == 0
        clock.at = utc(2026, 8, 21, 8, 1)  # an hour later: send with the source that answered
        assert (await daemon.tick()).total("sent") == 1
    assert outbox_count(env) == 1


async def test_relay_refusing_auth_stops_the_tick_and_sends_later(env: Env) -> None:
    write_papers(env.papers, [date(2026, 8, 20)])
    env.write_subscribers(
        [{"email": "a@example.org"}, {"email": "b@example.org"}],
        defaults={"send_at": "07:00", "timezone": "UTC"},
    )
    clock = FakeClock(utc(2026, 8, 21, 7))
    with SMTPTestServer(user="digest", password="right") as server:
        smtp: dict[str, Any] = {
            "smtp_host": "127.0.0.1",
            "smtp_port": server.port,
            "smtp_security": "none",
            "smtp_username": "digest",
        }
        async with daemon_for(env, clock, smtp_password="wrong", **smtp) as daemon:
            report = await daemon.tick()
            assert report.errors
            assert not env.health.exists()  # the daemon cannot deliver: not healthy
            assert not [r for r in daemon.digest.store.list() if r.status == "sent"]
        clock.at = utc(2026, 8, 21, 8)
        async with daemon_for(env, clock, smtp_password="right", **smtp) as daemon:
            report = await daemon.tick()
            assert report.total("sent") == 2
        assert sorted(r for m in server.messages for r in m.rcpt_tos) == [
            "a@example.org",
            "b@example.org",
        ]


# -- reloading the subscribers file -------------------------------------------------------


async def test_subscribers_file_is_reread_and_an_invalid_edit_keeps_the_last_list(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    write_papers(env.papers, days_between(date(2026, 8, 17), date(2026, 8, 21)))
    defaults = {"send_at": "07:00", "timezone": "UTC"}
    env.write_subscribers([{"email": "a@example.org", "keywords": ["diffusion"]}], defaults)
    clock = FakeClock(utc(2026, 8, 19, 7))
    async with daemon_for(env, clock) as daemon:
        report = await daemon.tick()
        assert report.subscribers == 1
        # Add someone and change keywords, no restart.
        env.write_subscribers(
            [
                {"email": "a@example.org", "keywords": ["agent"]},
                {"email": "b@example.org"},
            ],
            defaults,
        )
        clock.at = utc(2026, 8, 19, 8)
        report = await daemon.tick()
        assert report.subscribers == 2
        assert ("b@example.org", "2026-08-18") in statuses(daemon)
        subs: list[Subscriber] = daemon._subscribers or []
        assert subs[0].keywords == ("agent",)
        # An invalid edit: logged with its line number, the last valid list stays.
        text = subscriber_yaml(
            [{"email": "a@example.org"}, {"email": "c@example.org", "send_at": "25:99"}],
            defaults,
        )
        env.subscribers.write_text(text, encoding="utf-8")
        bad_line = next(i for i, line in enumerate(text.splitlines(), 1) if "25:99" in line)
        caplog.set_level(logging.INFO, logger="digest")
        clock.at = utc(2026, 8, 20, 7)
        report = await daemon.tick()
        assert report.config_problems
        assert report.subscribers == 2
        assert f"{env.subscribers}:{bad_line}:" in caplog.text
        assert sorted(r[0] for r in sent_rows(daemon) if r[1] == "2026-08-19") == [
            "a@example.org",
            "b@example.org",
        ]
        # The same error is logged once, not at every tick.
        caplog.clear()
        clock.at = utc(2026, 8, 20, 7, 1)
        await daemon.tick()
        assert "invalid" not in caplog.text


async def test_a_list_in_the_state_is_followed_from_tick_to_tick(env: Env) -> None:
    """DIGEST_SUBSCRIBERS=state (issue 22): a subscriber added and one changed between ticks
    are in force at the next tick; an unchanged list is not read again."""
    write_papers(env.papers, days_between(date(2026, 8, 17), date(2026, 8, 21)))
    defaults = {"send_at": "07:00", "timezone": "UTC"}
    env.write_subscribers([{"email": "a@example.org", "keywords": ["diffusion"]}], defaults)
    clock = FakeClock(utc(2026, 8, 19, 7))
    async with daemon_for(env, clock, subscribers="state") as daemon:
        home = daemon.digest.home
        home.import_list(env.subscribers.read_bytes(), env.subscribers)
        env.subscribers.unlink()  # the list is the state's now
        report = await daemon.tick()
        assert report.subscribers == 1
        add_subscriber(home, "b@example.org", keywords=["agents"])
        assert home.apply(SetFields("a@example.org", {"keywords": ["agent"]}))
        clock.at = utc(2026, 8, 19, 8)
        report = await daemon.tick()
        assert report.subscribers == 2
        assert ("b@example.org", "2026-08-18") in statuses(daemon)
        subs: list[Subscriber] = daemon._subscribers or []
        assert [(s.email, s.keywords) for s in subs] == [
            ("a@example.org", ("agent",)),
            ("b@example.org", ("agents",)),
        ]
        listed = home.load()
        clock.at = utc(2026, 8, 19, 9)
        await daemon.tick()
        assert home.load() is listed  # unchanged: one one-row query, nothing read


# -- stopping ----------------------------------------------------------------------------


async def test_tick_starts_nothing_once_stop_is_set(env: Env) -> None:
    write_papers(env.papers, [date(2026, 8, 20)])
    env.write_subscribers([{"email": "a@example.org", "send_at": "07:00", "timezone": "UTC"}])
    clock = FakeClock(utc(2026, 8, 21, 7))
    async with daemon_for(env, clock) as daemon:
        daemon.stop_event.set()
        report = await daemon.tick()
        assert report.stopped
        assert statuses(daemon) == {}
    assert not env.health.exists()


async def test_run_forever_ticks_at_start_and_stops_cleanly(env: Env) -> None:
    write_papers(env.papers, [date(2026, 8, 20)])
    env.write_subscribers([{"email": "a@example.org", "send_at": "07:00", "timezone": "UTC"}])
    clock = FakeClock(utc(2026, 8, 21, 8))
    async with daemon_for(env, clock, tick_seconds=0.05) as daemon:
        stop = asyncio.Event()
        runner = asyncio.create_task(daemon.run_forever(stop))
        for _ in range(200):
            if outbox_count(env):
                break
            await asyncio.sleep(0.02)
        stop.set()
        await asyncio.wait_for(runner, timeout=10)
        assert [(r[0], r[1]) for r in sent_rows(daemon)] == [("a@example.org", "2026-08-20")]
    assert outbox_count(env) == 1


async def test_stop_abandons_a_stalled_message_after_the_drain_timeout(env: Env) -> None:
    write_papers(env.papers, [date(2026, 8, 20)])
    env.write_subscribers([{"email": "a@example.org", "send_at": "07:00", "timezone": "UTC"}])
    clock = FakeClock(utc(2026, 8, 21, 8))
    with SMTPTestServer(data_stall_s=30) as server:
        settings = env.settings(
            smtp_host="127.0.0.1", smtp_port=server.port, smtp_security="none", tick_seconds=60
        )
        with Digest(settings, now=clock) as digest:
            daemon = Daemon(digest, settings, now=clock, drain_timeout=0.5)
            stop = asyncio.Event()
            runner = asyncio.create_task(daemon.run_forever(stop))
            for _ in range(250):
                if server.stalled or any(r.status == "sending" for r in digest.store.list()):
                    break
                await asyncio.sleep(0.02)
            started = time.monotonic()
            stop.set()
            await asyncio.wait_for(runner, timeout=10)
            assert time.monotonic() - started < 5
        # Abandoned in flight: the next start reports it unknown, never resends blindly.
        with Digest(settings, now=clock) as digest:
            crash_claimers(digest.store)  # PostgreSQL: once the dead claimer's lease ran out
            digest.recover()
            row = digest.store.get("a@example.org", "2026-08-20")
            assert row is not None
            assert row.status == "unknown"
        assert server.messages == []


# -- a real process, a real SMTP server, SIGTERM mid-batch ---------------------------------


def _wait_for(predicate: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


@pytest.mark.slow
def test_sigterm_mid_batch_then_restart_sends_each_subscriber_once(env: Env) -> None:
    count = 8
    now = datetime.now(UTC)
    send_at = (now - timedelta(minutes=2)).replace(second=0, microsecond=0)
    # The edition the daemon will pick, computed the same way (one day back from the instant).
    instant = scheduled_instant(send_at.date(), send_at.time(), ZoneInfo("UTC"))
    edition = Edition.daily((instant - timedelta(days=1)).date())
    write_papers(env.papers, edition.days, weekends=True)
    emails = [f"user{i}@example.org" for i in range(count)]
    env.write_subscribers(
        [{"email": e} for e in emails],
        defaults={"send_at": send_at.strftime("%H:%M"), "timezone": "UTC"},
    )
    with SMTPTestServer(data_delay_ms=400) as server:
        port = server.port

        def received() -> list[str]:
            return [rcpt for m in server.messages for rcpt in m.rcpt_tos]

        environ = {k: v for k, v in os.environ.items() if not k.startswith("DIGEST_")}
        environ.update(
            PYTHONPATH=str(PROJECT),
            DIGEST_SOURCES=f"file:{env.papers}",
            DIGEST_SUBSCRIBERS=str(env.subscribers),
            DIGEST_STATE_URL=env.state_url,
            DIGEST_SMTP_HOST="127.0.0.1",
            DIGEST_SMTP_PORT=str(port),
            DIGEST_SMTP_SECURITY="none",
            DIGEST_SMTP_CONCURRENCY="1",
            DIGEST_FROM="Daily Papers <papers@example.org>",
            DIGEST_TICK_SECONDS="1",
        )

        def start() -> subprocess.Popen[bytes]:
            return subprocess.Popen(
                [sys.executable, "-m", "digest", "run"],
                cwd=env.root,
                env=environ,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )

        proc = start()
        try:
            _wait_for(lambda: len(received()) >= 2, 30, "the first messages")
            proc.send_signal(signal.SIGTERM)
            started = time.monotonic()
            out, _ = proc.communicate(timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        log_text = out.decode(errors="replace")
        assert proc.returncode == 0, log_text
        assert time.monotonic() - started < 15, log_text
        first_batch = len(received())
        assert first_batch < count, "the batch was not interrupted; slow the relay down"
        with open_state(env.state_url) as store:
            rows = store.list(edition=edition.key)
        assert not [r for r in rows if r.status == "sending"], rows
        assert sorted(r.subscriber for r in rows if r.status == "sent") == sorted(received())

        proc = start()
        try:
            _wait_for(lambda: len(received()) >= count, 30, "the rest of the batch")
            time.sleep(1.5)  # a tick or two more: nothing may be sent twice
            proc.send_signal(signal.SIGTERM)
            out, _ = proc.communicate(timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == 0, out.decode(errors="replace")
        assert sorted(received()) == sorted(emails)
        with open_state(env.state_url) as store:
            rows = store.list(edition=edition.key)
        assert sorted(r.subscriber for r in rows if r.status == "sent") == sorted(emails)


# -- the state backend is injected; one bulk status query per tick ----------------------------


class NoPerRowReads(Store):
    """A store that refuses per-row reads and counts the bulk ones (over a real connector)."""

    bulk_reads = 0

    def get(self, subscriber: str, edition: str) -> Any:
        raise AssertionError(f"per-row read of ({subscriber}, {edition}) during a tick")

    def statuses(self, editions: Iterable[str], subscribers: Iterable[str] | None = None) -> Any:
        self.bulk_reads += 1
        return super().statuses(editions, subscribers)


async def test_tick_reads_statuses_in_bulk_from_the_injected_backend(env: Env) -> None:
    write_papers(env.papers, days_between(date(2026, 8, 10), date(2026, 8, 21)))
    env.write_subscribers(
        [{"email": f"r{i}@example.org", "send_at": "07:00", "timezone": "UTC"} for i in range(40)]
    )
    clock = FakeClock(utc(2026, 8, 21, 8))
    settings = env.settings()
    opened = open_state(env.state_url, now=clock)
    with NoPerRowReads(opened._db, now=clock) as store, store.sender_lock(purpose="run"):  # type: ignore[attr-defined]
        for i in range(0, 40, 2):  # half of them know the previous edition
            mark_sent(store, f"r{i}@example.org", "2026-08-19")
        with Digest(settings, store=store, now=clock) as digest:
            daemon = Daemon(digest, settings, now=clock)
            report = await daemon.tick()
            quiet = await daemon.tick()
        # Still open: the Digest closes only a store it opened itself.
        rows = store.list(edition="2026-08-20", statuses=["sent"])
    assert report.total("sent") == 40 and len(rows) == 40
    assert quiet.due == 0
    # One read for the tick's schedule and one for send's candidates, per tick: not 40 × 8.
    assert store.bulk_reads <= 4
