"""The suppression list: the state API, and `send`/the daemon skipping suppressed addresses."""

from __future__ import annotations

import sqlite3
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from digest.core import Digest
from digest.daemon import Daemon
from digest.models import Edition
from digest.state import (
    SCHEMA_VERSION,
    StateBackend,
    StateStore,
    Suppression,
    SuppressionReason,
)
from tests.conftest import MakeStore
from tests.factories import Env, FakeClock, days_between, utc, write_papers

T0 = datetime(2026, 8, 21, 7, 0, tzinfo=UTC)


@pytest.fixture
def store(make_store: MakeStore) -> StateBackend:
    """A fresh state of each backend (SQLite, PostgreSQL)."""
    return make_store(now=lambda: T0)


def test_suppress_is_idempotent_and_keeps_the_first_evidence(store: StateBackend) -> None:
    assert store.suppression("ada@example.org") is None
    assert store.suppress(
        " Ada@Example.org ",
        SuppressionReason.BOUNCED,
        evidence="550 5.1.1 no such user",
        actor="smtp",
    )
    assert not store.suppress(
        "ada@example.org",
        "complained",
        evidence="ARF abuse",
        actor="bounces",
        now=T0 + timedelta(1),
    )
    got = store.suppression("ADA@example.org")
    assert got == Suppression(
        address="ada@example.org",
        reason=SuppressionReason.BOUNCED,
        since=T0,
        evidence="550 5.1.1 no such user",
        actor="smtp",
    )
    assert got.active and got.reason == "bounced"
    assert store.suppressions() == {"ada@example.org": got}


def test_unsuppress_lifts_and_keeps_who_and_when_in_the_history(store: StateBackend) -> None:
    store.suppress("ada@example.org", "unsubscribed", evidence="one-click POST", actor="web")
    later = T0 + timedelta(days=3)
    assert store.unsuppress("ada@example.org", actor="cli:root", now=later)
    assert not store.unsuppress("ada@example.org", actor="cli:root", now=later)
    assert store.suppression("ada@example.org") is None
    assert store.suppressions() == {}
    # Suppressed again later: a second entry; the history has both.
    assert store.suppress("ada@example.org", "manual", evidence="asked by phone", actor="cli:x")
    history = store.suppression_history("ada@example.org")
    assert [(h.reason, h.lifted_at, h.lifted_by) for h in history] == [
        ("unsubscribed", later, "cli:root"),
        ("manual", None, None),
    ]


def test_unknown_reason_is_refused(store: StateBackend) -> None:
    with pytest.raises(ValueError):
        store.suppress("a@example.org", "tired", evidence="", actor="cli:x")
    assert store.suppressions() == {}


def test_suppressions_survive_reopening_and_a_v1_file_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    db = sqlite3.connect(path)
    from digest.state.schema import statements

    for statement in statements(0, "sqlite"):
        db.execute(statement)
    db.execute("PRAGMA user_version = 1")
    db.commit()
    db.close()
    with StateStore(path) as s:
        assert s.schema_version == SCHEMA_VERSION
        s.suppress("a@example.org", "bounced", evidence="550", actor="smtp")
    with StateStore(path) as s:
        assert set(s.suppressions()) == {"a@example.org"}


# -- send and the daemon honour it ------------------------------------------------------------


async def test_send_skips_suppressed_addresses_even_when_active_true(
    tmp_path: Path, state_url: str
) -> None:
    env = Env.under(tmp_path, state_url)
    write_papers(env.papers, [date(2026, 8, 20)])
    env.write_subscribers(
        [
            {"email": "ada@example.org"},
            {"email": "Bob@Example.org", "active": True},
            {"email": "cy@example.org"},
            {"email": "dee@example.org"},
        ]
    )
    settings = env.settings()
    with Digest(settings, now=lambda: T0) as digest:
        digest.store.suppress("bob@example.org", "unsubscribed", evidence="POST", actor="web")
        digest.store.suppress("cy@example.org", "bounced", evidence="550", actor="smtp")
        digest.store.suppress("dee@example.org", "complained", evidence="ARF", actor="bounces")
        subs = digest.load_subscribers().subscribers
        edition = Edition.daily(date(2026, 8, 20))
        dry = await digest.send(edition, subs, dry_run=True)
        assert (dry.sent, dry.skipped) == (1, 3)
        assert digest.store.list() == []  # a dry run records nothing
        outcomes: dict[str, str] = {}
        summary = await digest.send(
            edition, subs, on_result=lambda e, o: outcomes.__setitem__(e, o)
        )
        assert (summary.sent, summary.skipped, summary.failed) == (1, 3, 0) and summary.ok
        rows = {r.subscriber: (r.status, r.detail) for r in digest.store.list()}
        assert rows["ada@example.org"][0] == "sent"
        assert rows["bob@example.org"] == ("skipped", "unsubscribed")
        assert rows["cy@example.org"] == ("skipped", "bounced")
        assert rows["dee@example.org"] == ("skipped", "complained")
        assert outcomes["bob@example.org"] == "skipped"
        # --resend does not override the suppression list.
        again = await digest.send(edition, subs, resend=True)
        assert (again.sent, again.skipped) == (1, 3)
        # Lifted: the next edition goes out again.
        digest.store.unsuppress("cy@example.org", actor="cli:test")
        nxt = await digest.send(edition, subs, resend=True)
        assert nxt.sent == 2
    outbox = list((env.outbox / "new").iterdir())
    assert len(outbox) == 4  # ada, ada again (--resend), then ada and cy


async def test_daemon_skips_a_suppressed_subscriber_and_records_why(
    tmp_path: Path, state_url: str
) -> None:
    env = Env.under(tmp_path, state_url)
    write_papers(env.papers, days_between(date(2026, 8, 18), date(2026, 8, 21)))
    env.write_subscribers(
        [{"email": "ada@example.org"}, {"email": "bob@example.org"}],
        defaults={"send_at": "07:00", "timezone": "UTC"},
    )
    clock = FakeClock(utc(2026, 8, 21, 7, 5))
    settings = env.settings()
    with Digest(settings, now=clock) as digest, digest.store.sender_lock(purpose="run"):
        digest.store.suppress("bob@example.org", "bounced", evidence="550 5.1.1", actor="smtp")
        daemon = Daemon(digest, settings, now=clock)
        await daemon.tick()
        await daemon.tick()
        rows = {(r.subscriber, r.edition): (r.status, r.detail) for r in digest.store.list()}
    assert rows[("ada@example.org", "2026-08-20")][0] == "sent"
    assert rows[("bob@example.org", "2026-08-20")] == ("skipped", "bounced")
    assert len(list((env.outbox / "new").iterdir())) == 1


async def test_daemon_reads_the_bounce_maildir_at_each_tick_before_sending(
    tmp_path: Path,
    state_url: str,
) -> None:
    env = Env.under(tmp_path, state_url)
    write_papers(env.papers, days_between(date(2026, 8, 18), date(2026, 8, 22)))
    env.write_subscribers(
        [{"email": "ada@example.org"}, {"email": "bob@example.org"}],
        defaults={"send_at": "07:00", "timezone": "UTC"},
    )
    box = tmp_path / "bounces"
    for sub in ("new", "cur", "tmp"):
        (box / sub).mkdir(parents=True)
    clock = FakeClock(utc(2026, 8, 21, 7, 5))
    settings = env.settings(bounce_maildir=box)
    with Digest(settings, now=clock) as digest, digest.store.sender_lock(purpose="run"):
        daemon = Daemon(digest, settings, now=clock)
        await daemon.tick()
        row = digest.store.get("bob@example.org", "2026-08-20")
        assert row is not None and row.status == "sent" and row.message_id
        dsn = (
            "From: MAILER-DAEMON@mx.example.net\r\nMIME-Version: 1.0\r\n"
            'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n\r\n'
            "--B\r\nContent-Type: message/delivery-status\r\n\r\n"
            "Reporting-MTA: dns; mx.example.net\r\n\r\n"
            "Final-Recipient: rfc822; bob@example.org\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n"
            "--B\r\nContent-Type: text/rfc822-headers\r\n\r\n"
            f"Message-ID: {row.message_id}\r\n\r\n--B--\r\n"
        )
        (box / "new" / "1.dsn").write_text(dsn)
        clock.at = utc(2026, 8, 22, 7, 5)
        report = await daemon.tick()
        assert report.bounces is not None and report.bounces.suppressed == ["bob@example.org"]
        rows = {(r.subscriber, r.edition): (r.status, r.detail) for r in digest.store.list()}
    assert rows[("ada@example.org", "2026-08-21")][0] == "sent"
    assert rows[("bob@example.org", "2026-08-21")] == ("skipped", "bounced")


async def test_a_late_edition_of_a_suppressed_subscriber_is_skipped_for_the_reason(
    tmp_path: Path,
    state_url: str,
) -> None:
    env = Env.under(tmp_path, state_url)
    write_papers(env.papers, days_between(date(2026, 8, 18), date(2026, 8, 21)))
    env.write_subscribers(
        [{"email": "ada@example.org"}, {"email": "bob@example.org"}],
        defaults={"send_at": "07:00", "timezone": "UTC"},
    )
    clock = FakeClock(utc(2026, 8, 21, 20, 5))  # 13 h after 07:00: past the catch-up window
    settings = env.settings()
    with Digest(settings, now=clock) as digest, digest.store.sender_lock(purpose="run"):
        for who in ("ada@example.org", "bob@example.org"):
            assert digest.store.claim(who, "2026-08-19", f"<{who}@t>")
            digest.store.mark_sent(who, "2026-08-19", "250 OK")
        digest.store.suppress("bob@example.org", "complained", evidence="ARF", actor="bounces")
        await Daemon(digest, settings, now=clock).tick()
        rows = {(r.subscriber, r.edition): (r.status, r.detail) for r in digest.store.list()}
    assert rows[("ada@example.org", "2026-08-20")] == ("skipped", "late")
    assert rows[("bob@example.org", "2026-08-20")] == ("skipped", "complained")
