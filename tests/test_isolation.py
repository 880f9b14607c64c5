"""No per-subscriber error stops an edition (issue 8, item 4).

The failure is real, not mocked: a template (``DIGEST_TEMPLATES_DIR``) that raises
``ZeroDivisionError`` (not a Jinja error, so not turned into a ``ConfigError``) for one subscriber
in the middle of 300. The messages go to a real aiosmtpd relay on loopback.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from digest.core import Digest
from digest.daemon import Daemon
from digest.models import Edition
from digest.render import PACKAGED_TEMPLATES_DIR
from digest.subscribers import Subscriber
from tests.conftest import FIXTURES
from tests.factories import FakeClock, send_settings
from tests.smtpserver import SMTPTestServer

DAY = date(2026, 8, 20)
NOW = datetime(2026, 8, 22, 12, 0, tzinfo=UTC)
COUNT = 300
BAD = "user150@example.org"
TRIGGER = '{% if email == "' + BAD + '" %}{{ 1 // 0 }}{% endif %}'


@pytest.fixture
def relay() -> Iterator[SMTPTestServer]:
    with SMTPTestServer(keep_messages=True) as server:
        yield server


def setup(tmp_path: Path) -> tuple[Path, Path]:
    papers = tmp_path / "papers"
    papers.mkdir()
    shutil.copy(FIXTURES / "hf-daily-papers" / "2026-08-20.json", papers / "2026-08-20.json")
    templates = tmp_path / "templates"
    templates.mkdir()
    text = (PACKAGED_TEMPLATES_DIR / "digest.txt.j2").read_text(encoding="utf-8")
    (templates / "digest.txt.j2").write_text(TRIGGER + text, encoding="utf-8")
    return papers, templates


@pytest.mark.parametrize("in_processes", [False, True], ids=["thread", "processes"])
async def test_one_failing_subscriber_of_300_the_other_299_are_sent(
    tmp_path: Path, relay: SMTPTestServer, in_processes: bool
) -> None:
    papers, templates = setup(tmp_path)
    settings = send_settings(
        tmp_path,
        relay,
        sources=f"file:{papers}",
        templates_dir=templates,
        render_workers=1 if in_processes else 0,
        smtp_concurrency=4,
    )
    subscribers = [Subscriber(email=f"user{i:03d}@example.org") for i in range(COUNT)]
    with Digest(settings, now=lambda: NOW) as digest:
        summary = await digest.send(Edition.daily(DAY), subscribers)
        row = digest.store.get(BAD, DAY.isoformat())
        rows = digest.store.list(edition=DAY.isoformat())
    received = sorted(m.rcpt_tos[0] for m in relay.messages)
    assert (summary.sent, summary.failed) == (COUNT - 1, 1), summary.errors
    assert len(received) == COUNT - 1 and BAD not in received
    assert len(set(received)) == COUNT - 1  # once each
    assert row is not None and row.status == "failed"
    assert "ZeroDivisionError" in (row.last_error or ""), row.last_error
    assert sum(r.status == "sent" for r in rows) == COUNT - 1


async def test_the_daemon_keeps_ticking_and_its_health_file_fresh(
    tmp_path: Path, relay: SMTPTestServer
) -> None:
    papers, templates = setup(tmp_path)
    health = tmp_path / "health"
    subscribers_file = tmp_path / "subscribers.yaml"
    emails = ["user000@example.org", BAD, "user299@example.org"]
    subscribers_file.write_text(
        "subscribers:\n"
        + "".join(f"  - {{email: {e}, send_at: '07:00', timezone: UTC}}\n" for e in emails),
        encoding="utf-8",
    )
    settings = send_settings(
        tmp_path,
        relay,
        sources=f"file:{papers}",
        templates_dir=templates,
        render_workers=0,
        subscribers=subscribers_file,
        health_file=health,
    )
    clock = FakeClock(datetime(2026, 8, 21, 8, 0, tzinfo=UTC))
    with Digest(settings, now=clock) as digest:
        daemon = Daemon(digest, settings, now=clock)
        first = await daemon.tick()
        assert health.exists(), "the first tick touched the health file"
        touched = health.stat().st_mtime_ns
        clock.at += timedelta(minutes=1)
        second = await daemon.tick()
        assert health.stat().st_mtime_ns >= touched
        row = digest.store.get(BAD, DAY.isoformat())
    assert first.total("sent") == 2 and first.total("failed") == 1
    assert second.total("sent") == 0  # nothing owed any more: the failure is recorded
    assert row is not None and row.status == "failed"
    assert sorted(m.rcpt_tos[0] for m in relay.messages) == sorted(set(emails) - {BAD})
