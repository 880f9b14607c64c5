"""A lost or stalled reply to the end of DATA: ``unknown``, never resent automatically.

The relay is :class:`tests.faultrelay.FaultRelay` (raw asyncio): aiosmtpd cannot drop the
connection after it has read a message, nor withhold the reply to the final ``.``.
"""

from __future__ import annotations

import email
import email.policy
import shutil
import time
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from digest.core import Digest
from digest.delivery.engine import send_all
from digest.models import Edition
from digest.state import StateBackend
from digest.subscribers import Subscriber
from tests.conftest import FIXTURES, MakeStore
from tests.factories import EDITION, build, send_settings, smtp_settings, statuses, stream
from tests.faultrelay import FaultRelay

DATA_TIMEOUT_S = 1.5
"""The end-of-data timeout in these tests, seconds (longer than the 0.3 s command timeout)."""


@pytest.fixture
def store(make_store: MakeStore) -> StateBackend:
    """A fresh state of each backend (SQLite, PostgreSQL)."""
    return make_store()


async def test_connection_dropped_after_data_is_unknown_and_never_resent(
    store: StateBackend,
) -> None:
    # The relay reads the whole message, then hangs up without a reply, once.
    with FaultRelay(after_data=lambda n: "drop" if n == 0 else "ok") as relay:
        settings = smtp_settings(relay, smtp_concurrency=1)
        msg = build("ada@example.org")
        first = await send_all(stream([msg]), store=store, settings=settings)
        second = await send_all(stream([msg]), store=store, settings=settings)
        copies = relay.copies("ada@example.org")
    assert copies == 1, f"the relay got {copies} copies"
    assert (first.unknown, first.sent, first.deferred) == (1, 0, 0)
    assert (second.sent, second.skipped) == (0, 1)
    row = store.get("ada@example.org", EDITION)
    assert row is not None and row.status == "unknown"
    assert row.message_id == msg.message_id
    assert "may have been delivered" in (row.last_error or "")


async def test_a_relay_that_always_loses_the_reply_gets_one_copy(store: StateBackend) -> None:
    addresses = [f"user{i}@example.org" for i in range(5)]
    with FaultRelay(after_data="drop") as relay:
        settings = smtp_settings(relay, smtp_concurrency=2)
        for _ in range(2):  # two runs, as the report did
            await send_all(stream([build(a) for a in addresses]), store=store, settings=settings)
        copies = {a: relay.copies(a) for a in addresses}
    assert copies == dict.fromkeys(addresses, 1)
    assert set(statuses(store).values()) == {"unknown"}


async def test_stalled_reply_waits_for_the_data_timeout_then_unknown(store: StateBackend) -> None:
    with FaultRelay(after_data="stall") as relay:
        settings = smtp_settings(
            relay, smtp_timeout=0.3, smtp_data_timeout=DATA_TIMEOUT_S, smtp_concurrency=1
        )
        started = time.monotonic()
        summary = await send_all(stream([build("ada@example.org")]), store=store, settings=settings)
        waited = time.monotonic() - started
        copies = relay.copies("ada@example.org")
    assert copies == 1
    assert summary.unknown == 1
    # Its own timeout: not the 0.3 s of every other command.
    assert waited >= DATA_TIMEOUT_S, waited
    row = store.get("ada@example.org", EDITION)
    assert row is not None and row.status == "unknown"
    assert f"DIGEST_SMTP_DATA_TIMEOUT={DATA_TIMEOUT_S:g} s" in (row.last_error or "")


async def test_a_drop_before_the_data_is_sent_stays_transient(store: StateBackend) -> None:
    # The relay hangs up at the DATA command (no 354): nothing was sent, retrying is safe.
    with FaultRelay(at_data=lambda n: "drop" if n == 0 else "ok") as relay:
        settings = smtp_settings(relay, smtp_concurrency=1)
        summary = await send_all(stream([build("ada@example.org")]), store=store, settings=settings)
        copies = relay.copies("ada@example.org")
        commands = relay.data_commands
    assert (summary.sent, summary.unknown, copies, commands) == (1, 0, 1, 2)
    row = store.get("ada@example.org", EDITION)
    assert row is not None and row.status == "sent" and row.attempts == 2


def test_data_timeout_default_is_rfc_5321_ten_minutes() -> None:
    from digest.settings import Settings

    assert Settings(_env_file=None).smtp_data_timeout == 600.0  # type: ignore[call-arg]


# -- --retry-unknown resends with the same Message-ID (issue 8, item 2) ----------------------

DAY = date(2026, 8, 20)
NOW = datetime(2026, 8, 22, 12, 0, tzinfo=UTC)


def message_ids(relay: FaultRelay, address: str) -> list[str]:
    out = []
    for arrived in relay.received:
        if address in arrived.rcpt_tos:
            msg = email.message_from_bytes(arrived.data, policy=email.policy.default)
            out.append(str(msg["Message-ID"]))
    return out


@pytest.mark.parametrize("in_processes", [False, True], ids=["thread", "processes"])
async def test_retry_unknown_resends_with_the_same_message_id(
    tmp_path: Path, in_processes: bool
) -> None:
    papers = tmp_path / "papers"
    papers.mkdir()
    shutil.copy(FIXTURES / "hf-daily-papers" / "2026-08-20.json", papers / "2026-08-20.json")
    subscribers = [Subscriber(email="ada@example.org"), Subscriber(email="bob@example.org")]
    edition = Edition.daily(DAY)
    # The relay loses the reply to ada's first message only.
    with FaultRelay(after_data=lambda n: "drop" if n == 0 else "ok") as relay:
        settings = send_settings(
            tmp_path,
            relay,
            sources=f"file:{papers}",
            smtp_concurrency=1,
            render_workers=1 if in_processes else 0,
        )
        with Digest(settings, now=lambda: NOW) as digest:
            digest.render_min_batch = 1
            first = await digest.send(edition, subscribers[:1])
            row = digest.store.get("ada@example.org", edition.key)
            assert row is not None and row.status == "unknown" and row.message_id
            original = row.message_id
            plain = await digest.send(edition, subscribers)  # not resent without the flag
            retried = await digest.send(edition, subscribers, retry_unknown=True)
            row = digest.store.get("ada@example.org", edition.key)
        ids = message_ids(relay, "ada@example.org")
    assert (first.unknown, plain.sent, retried.sent) == (1, 1, 1)
    assert ids == [original, original], "the resend carries the first copy's Message-ID"
    assert row is not None and row.status == "sent" and row.message_id == original
    assert len(message_ids(relay, "bob@example.org")) == 1


async def test_the_daemon_reports_a_lost_reply_as_unknown_and_never_resends_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    from digest.daemon import Daemon
    from tests.factories import FakeClock

    papers = tmp_path / "papers"
    papers.mkdir()
    shutil.copy(FIXTURES / "hf-daily-papers" / "2026-08-20.json", papers / "2026-08-20.json")
    subscribers_file = tmp_path / "subscribers.yaml"
    subscribers_file.write_text(
        "subscribers:\n  - {email: ada@example.org, send_at: '07:00', timezone: UTC}\n",
        encoding="utf-8",
    )
    clock = FakeClock(datetime(2026, 8, 21, 8, 0, tzinfo=UTC))
    with FaultRelay(after_data="drop") as relay:
        settings = send_settings(
            tmp_path,
            relay,
            sources=f"file:{papers}",
            render_workers=0,
            subscribers=subscribers_file,
            health_file=tmp_path / "health",
        )
        with Digest(settings, now=clock) as digest:
            daemon = Daemon(digest, settings, now=clock)
            with caplog.at_level(logging.INFO, logger="digest"):
                first = await daemon.tick()
                second = await daemon.tick()
        copies = relay.copies("ada@example.org")
    assert copies == 1
    assert first.total("unknown") == 1 and second.total("unknown") == 0
    assert any("unknown 1 (not resent" in r.getMessage() for r in caplog.records)
    assert (tmp_path / "health").exists()
