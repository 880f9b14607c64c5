"""Several senders on one PostgreSQL state: real processes, a real relay, SIGKILL, failover.

The relay is an aiosmtpd server in another process that spools every accepted message, so
what reached it is counted independently of the state. The senders are real ``python -m
digest send`` / ``digest run`` processes sharing one database (a fresh schema per test).
"""

from __future__ import annotations

import collections
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import psycopg
import pytest

from digest.models import Edition, Paper
from digest.schedule import scheduled_instant
from digest.state import COPY_TABLES, open_state
from digest.state.base import BounceEvent, BounceKind, BounceScore, ProcessedMessage
from digest.subscribers.home import StateHome
from tests.conftest import FIXTURES, PROJECT
from tests.httpserver import LocalHTTPServer
from tests.smtpserver import ServerProcess, read_spool

POOL = 4
LEASE_S = 2
DAY = "2026-08-20"
WAIT_LIMIT_S = 300.0
"""Bound of the waits for a whole send (3,000 messages on a loaded 2-core machine)."""
KEYWORDS = ["agent*", "robot*", "video", "reasoning", "diffusion"]


def _subscribers(path: Path, emails: list[str], **defaults: str) -> None:
    lines = []
    if defaults:
        lines.append("defaults:")
        lines += [f'  {k}: "{v}"' for k, v in defaults.items()]
    lines.append("subscribers:")
    for i, address in enumerate(emails):
        lines.append(f"  - email: {address}")
        lines.append(f"    keywords: [{KEYWORDS[i % len(KEYWORDS)]}]")
    path.write_text("\n".join(lines) + "\n")


def _env(workdir: Path, port: int, state_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIGEST_")}
    env.update(
        PYTHONPATH=str(PROJECT),
        DIGEST_SOURCES=f"file:{workdir / 'papers'}",
        DIGEST_SUBSCRIBERS=str(workdir / "subscribers.yaml"),
        DIGEST_STATE_URL=state_url,
        DIGEST_STATE_LEASE_SECONDS=str(LEASE_S),
        DIGEST_FROM="Daily Papers <papers@example.org>",
        DIGEST_SMTP_HOST="127.0.0.1",
        DIGEST_SMTP_PORT=str(port),
        DIGEST_SMTP_SECURITY="none",
        DIGEST_SMTP_CONCURRENCY=str(POOL),
        DIGEST_RENDER_WORKERS="0",
    )
    env.update(extra)
    return env


def _start(workdir: Path, env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "digest", *args],
        cwd=workdir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _wait_for(predicate: Callable[[], bool], what: str, limit: float = WAIT_LIMIT_S) -> None:
    deadline = time.monotonic() + limit
    while not predicate():
        assert time.monotonic() < deadline, f"timed out after {limit} s waiting for {what}"
        time.sleep(0.05)


def _claimers(url: str, edition: str, status: str) -> dict[str, str]:
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT subscriber, claimed_by FROM deliveries WHERE edition = %s AND status = %s",
            (edition, status),
        ).fetchall()
    return {r[0]: r[1] for r in rows}


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


@pytest.mark.slow
def test_three_senders_share_an_edition_and_one_is_sigkilled(tmp_path: Path, pg_url: str) -> None:
    subscribers = 3000
    emails = [f"reader{i:04d}@example.org" for i in range(subscribers)]
    _subscribers(tmp_path / "subscribers.yaml", emails)
    spool = tmp_path / "spool"
    with LocalHTTPServer() as api, ServerProcess(spool) as relay:
        # The papers come from a Hugging Face API stand-in that answers slowly, so all three
        # senders ask for the day at once: one fetches, the others reuse its stored list.
        api.add(
            f"/api/daily_papers?date={DAY}",
            file=FIXTURES / "hf-daily-papers" / f"{DAY}.json",
            delay_s=1.0,
        )
        env = _env(
            tmp_path,
            relay.port,
            pg_url,
            DIGEST_SOURCES="hf",
            DIGEST_HF_API_URL=api.url("/api/daily_papers"),
        )
        senders = [_start(tmp_path, env, "send", "--date", DAY) for _ in range(3)]
        try:
            victim = senders[0]
            _wait_for(lambda: len(list(spool.glob("*.eml"))) >= 400, "the first messages")
            assert victim.poll() is None, victim.communicate()[0]
            victim.send_signal(signal.SIGKILL)
            victim.communicate()
            outputs = []
            for proc in senders[1:]:
                out, _ = proc.communicate(timeout=WAIT_LIMIT_S)
                assert proc.returncode == 0, out
                outputs.append(out)
        finally:
            for proc in senders:
                _stop(proc)
        assert api.count(f"/api/daily_papers?date={DAY}") == 1, "each sender fetched the day"
        for out in outputs:  # both survivors did part of the work
            assert "sent 0," not in out, out

        counts = collections.Counter(m.rcpt_tos[0] for m in read_spool(spool))
        assert len(counts) < subscribers or all(counts[a] == 1 for a in emails)
        in_flight = _claimers(pg_url, DAY, "sending") | _claimers(pg_url, DAY, "unknown")
        assert len(in_flight) <= POOL, in_flight
        assert len(set(in_flight.values())) <= 1  # all of the killed sender
        with open_state(pg_url) as store:
            rows = {r.subscriber: r for r in store.list(edition=DAY)}
        assert set(rows) == set(emails)
        for address in emails:
            if address in in_flight:
                assert counts[address] <= 1, address
            else:
                assert rows[address].status == "sent", (address, rows[address].status)
                assert counts[address] == 1, (address, counts[address])

        # Once the killed sender's lease has run out, a new run reports its rows unknown
        # and does not resend them; --retry-unknown completes them.
        time.sleep(LEASE_S + 0.5)
        out, _ = _start(tmp_path, env, "send", "--date", DAY).communicate(timeout=WAIT_LIMIT_S)
        if in_flight:
            assert f"unknown {len(in_flight)}" in out, out
        assert set(_claimers(pg_url, DAY, "unknown")) == set(in_flight)
        retry = _start(tmp_path, env, "send", "--date", DAY, "--retry-unknown")
        out, _ = retry.communicate(timeout=WAIT_LIMIT_S)
        assert retry.returncode == 0, out
        counts = collections.Counter(m.rcpt_tos[0] for m in read_spool(spool))
        assert all(counts[a] >= 1 for a in emails)
        assert sum(counts.values()) <= subscribers + len(in_flight)
        with open_state(pg_url) as store:
            assert {r.status for r in store.list(edition=DAY)} == {"sent"}


@pytest.mark.slow
def test_daemon_failover_the_survivor_sends_the_whole_edition(tmp_path: Path, pg_url: str) -> None:
    count = 600
    now = datetime.now(UTC)
    send_at = (now - timedelta(minutes=2)).replace(second=0, microsecond=0)
    instant = scheduled_instant(send_at.date(), send_at.time(), ZoneInfo("UTC"))
    edition = Edition.daily((instant - timedelta(days=1)).date())
    papers = tmp_path / "papers"
    papers.mkdir()
    for day in edition.days:
        shutil.copy(FIXTURES / "hf-daily-papers" / f"{DAY}.json", papers / f"{day}.json")
    emails = [f"user{i:03d}@example.org" for i in range(count)]
    _subscribers(
        tmp_path / "subscribers.yaml", emails, send_at=send_at.strftime("%H:%M"), timezone="UTC"
    )
    spool = tmp_path / "spool"
    with ServerProcess(spool, data_delay_ms=20) as relay:
        env = _env(tmp_path, relay.port, pg_url, DIGEST_TICK_SECONDS="1")
        daemons = [_start(tmp_path, env, "run") for _ in range(2)]
        try:
            victim, survivor = daemons
            _wait_for(lambda: len(list(spool.glob("*.eml"))) >= 60, "the first messages")
            for proc in daemons:  # both are up, or this would test no failover at all
                assert proc.poll() is None, proc.communicate()[0]
            victim.send_signal(signal.SIGKILL)
            victim.communicate()

            seen: list[collections.Counter[str]] = []

            def done() -> bool:
                if survivor.poll() is not None:  # say so now, not after the 300 s wait
                    pytest.fail(f"the survivor exited:\n{survivor.communicate()[0][-5000:]}")
                with open_state(pg_url) as store:
                    rows = store.list(edition=edition.key)
                seen.append(collections.Counter(str(r.status) for r in rows))
                return len(rows) == count and all(r.status in ("sent", "unknown") for r in rows)

            # No restart: the survivor's ticks finish the edition and, once the victim's
            # lease has run out, report its rows in flight as unknown.
            try:
                _wait_for(done, "the survivor to finish the edition")
            except AssertionError:  # say where it stood, with the survivor's log
                survivor.kill()
                log_tail = survivor.communicate()[0][-5000:]
                raise AssertionError(f"rows {seen[-1]}; survivor's log:\n{log_tail}") from None
            time.sleep(2)  # two more ticks: nothing may be sent twice
            survivor.send_signal(signal.SIGTERM)
            log_text, _ = survivor.communicate(timeout=60)
            assert survivor.returncode == 0, log_text
        finally:
            for proc in daemons:
                _stop(proc)
    counts = collections.Counter(m.rcpt_tos[0] for m in read_spool(spool))
    unknown = _claimers(pg_url, edition.key, "unknown")
    assert len(unknown) <= POOL
    if unknown:
        assert "may or may not have been delivered" in log_text
    for address in emails:
        if address in unknown:
            assert counts[address] <= 1, address
        else:
            assert counts[address] == 1, (address, counts[address])


def test_migrate_sqlite_to_postgresql_keeps_the_history(tmp_path: Path, pg_url: str) -> None:
    shutil.copytree(FIXTURES / "hf-daily-papers", tmp_path / "papers")
    emails = [f"reader{i:02d}@example.org" for i in range(12)]
    _subscribers(tmp_path / "subscribers.yaml", emails)
    sqlite_url = f"sqlite:///{tmp_path / 'state.sqlite3'}"
    env = _env(tmp_path, 0, sqlite_url)
    del env["DIGEST_SMTP_HOST"], env["DIGEST_SMTP_PORT"], env["DIGEST_SMTP_SECURITY"]
    env["DIGEST_OUTBOX"] = str(tmp_path / "outbox")

    def digest(*args: str, **extra: str) -> str:
        proc = _start(tmp_path, {**env, **extra}, *args)
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, out
        return out

    digest("send", "--date", DAY)
    digest("send", "--date", "2026-07-27")
    with open_state(sqlite_url) as store:  # every kind of row and table
        store.mark_failed("failed@example.org", DAY, "550 5.1.1 no such user", 550)
        store.claim("crashed@example.org", DAY, "<crashed@x>")
        store.mark_skipped("late@example.org", DAY, "late")
        store.suppress("gone@example.org", "bounced", evidence="550 5.1.1", actor="smtp")
        store.suppress("back@example.org", "unsubscribed", evidence="one-click", actor="web")
        store.unsuppress("back@example.org", actor="cli:test")
        store.feed_cache.put("https://example.org/feed", '"v1"', None, b"<rss/>\x00\xff")
        store.record_event("ada@example.org", "unsubscribe", actor="web", detail={"via": "x"})
        store.record_feedback("reader00@example.org", "2508.01234", "like")
        store.save_paper(Paper(arxiv_id="2508.01234", title="A liked paper"))
        if not store.delivery_papers(emails[0], DAY):  # the send records them with the claim
            store.reopen("papers@example.org", DAY)
            store.claim("papers@example.org", DAY, "<p@x>", papers=["2508.01234"])
            store.mark_sent("papers@example.org", DAY, "250 OK")
        at = datetime(2026, 8, 21, 9, tzinfo=UTC)
        store.record_bounces(
            [
                (
                    BounceEvent(
                        "gone@example.org", BounceKind.HARD, at, DAY, None, "5.1.1", "bounces"
                    ),
                    BounceScore("gone@example.org", hard=1, last_bounce_at=at),
                    None,
                )
            ],
            processed=ProcessedMessage("sha256:00", "<dsn@x>", at, "bounce"),
        )
        store.add_signup(
            "ab12",
            "new@example.org",
            name="Nu",
            keywords=["llm"],
            client="127.0.0.1",
            expires_at=datetime(2026, 8, 22, tzinfo=UTC),
        )
        listed = tmp_path / "subscribers.yaml"  # the list's tables (issue 22)
        StateHome(store).import_list(listed.read_bytes(), listed)
        store.queue_list_change(emails[1], '{"kind": "active", "address": "x", "active": false}')
        store.pause_group("gmail", evidence="4 of 1,000", actor="daemon")  # lifted, then again
        store.resume_groups(["gmail"], actor="cli:test")
        store.pause_group("gmail", evidence="5 of 1,000", actor="daemon")
        store.forget(emails[0], ["thumbs-up:2608.00100"], actor="web")  # migration 8
    before = digest("history")

    out = digest("state", "migrate", "--to", pg_url)
    assert "counts verified" in out
    after = digest("history", DIGEST_STATE_URL=pg_url)
    assert after == before
    with open_state(sqlite_url) as old, open_state(pg_url) as new:
        for table in COPY_TABLES:
            (old_columns, old_rows), (new_columns, new_rows) = (
                old.export_rows(table),
                new.export_rows(table),
            )
            assert new_columns == old_columns, table
            assert sorted(new_rows, key=repr) == sorted(old_rows, key=repr), table
            assert new_rows, f"{table}: the test copies nothing"
        assert new.suppression_history() == old.suppression_history()
        assert new.feed_cache.get("https://example.org/feed") == (
            '"v1"',
            None,
            b"<rss/>\x00\xff",
        )
        # New rows in the target get ids after the copied ones.
        assert new.suppress("later@example.org", "manual", evidence="note", actor="cli:test")
        new.record_event("later@example.org", "suppress", actor="cli:test")
        assert new.pauses() == old.pauses() and new.pauses()["gmail"].active
        assert new.resume_groups(None, actor="cli:test") == ["gmail"]
        assert new.pause_group("yahoo", evidence="2 of 300", actor="daemon")
    # A second migration into the now-filled target is refused; nothing is overwritten.
    proc = _start(tmp_path, env, "state", "migrate", "--to", pg_url)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 1 and "already holds state" in out, out
