"""The welcome email (issue 24): once per confirmation, exactly once across crashes."""

from __future__ import annotations

import email
import email.policy
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path

import pytest

from digest.core import Digest
from digest.errors import ConfigError
from digest.models import Edition
from digest.pipeline.welcome import (
    QUEUED,
    next_send_label,
    owed_welcomes,
    queue_welcome,
    send_welcomes,
    warm_up,
    welcome_key,
)
from digest.subscribers import Subscriber
from tests.factories import (
    MESSAGE_SETTINGS,
    FakeClock,
    make_settings,
    running_daemon,
    smtp_values,
)
from tests.smtpserver import SMTPTestServer

NOW = datetime(2026, 8, 21, 5, 0, tzinfo=UTC)
ADA = Subscriber(email="ada@example.org", name="Ada", send_at="07:30", timezone="Europe/London")


def parsed(data: bytes) -> EmailMessage:
    msg = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


@pytest.fixture
def relay() -> Iterator[SMTPTestServer]:
    with SMTPTestServer() as server:
        yield server


def digest_for(
    tmp_path: Path,
    state_url: str,
    relay: SMTPTestServer,
    now: Callable[[], datetime] = lambda: NOW,
    **extra: object,
) -> Digest:
    settings = make_settings(
        **{
            **MESSAGE_SETTINGS,
            **smtp_values(relay),
            "unsubscribe_url": None,
            "public_url": "https://papers.example.org",
            "state_url": state_url,
            "outbox": tmp_path / "outbox",
            **extra,
        }
    )
    return Digest(settings, now=now)


async def test_a_queued_welcome_is_sent_once_and_says_what_it_should(
    tmp_path: Path, state_url: str, relay: SMTPTestServer
) -> None:
    with digest_for(tmp_path, state_url, relay) as digest:
        digest.store.claim("bob@example.org", "2026-08-20", "<x@example.org>")
        digest.store.mark_sent("bob@example.org", "2026-08-20", "250 ok")
        key = queue_welcome(digest.store, ADA.email, "0123abcd")
        assert key == welcome_key("0123abcd") == "welcome:0123abcd"
        assert [(r.subscriber, r.edition) for r in owed_welcomes(digest.store)] == [
            (ADA.email, key)
        ]
        first = await send_welcomes(digest.deps, [(ADA, key)])
        again = await send_welcomes(digest.deps, [(ADA, key)])  # a second try: claim refused
        queue_welcome(digest.store, ADA.email, "0123abcd")  # queued again: stays sent
        row = digest.store.get(ADA.email, key)
        archive = digest.store.sent_editions()
        owed = owed_welcomes(digest.store)
    assert (first.sent, again.sent, again.skipped) == (1, 0, 1)
    assert row is not None and str(row.status) == "sent"
    assert owed == []
    assert [k for k, _ in archive] == ["2026-08-20"]  # never in the archive
    [received] = relay.messages
    msg = parsed(received.data)
    assert msg["Subject"] == "Welcome to Daily Papers"
    assert msg["To"] == "Ada <ada@example.org>"
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    text = msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    # 07:30 in London (BST) on Friday is 06:30 UTC, after NOW (05:00 UTC).
    assert "Your first edition comes on Friday, Aug 21 at 07:30 (Europe/London)." in text
    assert "https://papers.example.org/preferences/" in text
    assert "https://papers.example.org/archive/2026-08-20" in text
    assert "https://papers.example.org/u/" in text  # its own unsubscribe link


async def test_a_welcome_left_owed_by_a_crash_is_sent_at_the_next_try(
    tmp_path: Path, state_url: str, relay: SMTPTestServer
) -> None:
    with digest_for(tmp_path, state_url, relay) as digest:
        queue_welcome(digest.store, ADA.email, "0123abcd")  # the process dies here
        digest.store.mark_deferred(ADA.email, "2026-08-21", "paused: gmail", attempts=0)
    with digest_for(tmp_path, state_url, relay) as digest:  # a restart
        owed = [(r.subscriber, r.edition) for r in owed_welcomes(digest.store)]
        summary = await digest.send_welcomes({ADA.email: ADA}.get)
        again = await digest.send_welcomes({ADA.email: ADA}.get)
    assert owed == [(ADA.email, "welcome:0123abcd")]
    assert (summary.sent, again.sent, again.skipped) == (1, 0, 0)  # nothing owed the 2nd time
    assert len(relay.messages) == 1


async def test_an_owed_welcome_is_skipped_for_who_left_and_waits_for_who_is_not_listed_yet(
    tmp_path: Path, state_url: str, relay: SMTPTestServer
) -> None:
    """Between the confirmation and the send: unsubscribed again, set inactive, or not in
    the list this process reads (a file not written yet; after two days: given up)."""
    gone = Subscriber(email="gone@example.org", active=False)
    listed = {s.email: s for s in (ADA, gone, Subscriber(email="sup@example.org"))}
    clock = FakeClock(NOW - timedelta(days=3))
    with digest_for(tmp_path, state_url, relay, now=clock) as digest:
        queue_welcome(digest.store, "old@example.org", "a1")  # three days ago
        clock.at = NOW
        for address in (ADA.email, gone.email, "sup@example.org", "new@example.org"):
            queue_welcome(digest.store, address, "b2")
        digest.store.suppress("sup@example.org", "unsubscribed", evidence="t", actor="test")
        summary = await digest.send_welcomes(listed.get)
        rows = {r.subscriber: r for r in digest.store.list()}
    assert (summary.sent, summary.skipped) == (1, 3)
    assert [m.rcpt_tos for m in relay.messages] == [[ADA.email]]
    assert {a: (str(r.status), r.detail) for a, r in rows.items() if a != ADA.email} == {
        "gone@example.org": ("skipped", "inactive"),
        "sup@example.org": ("skipped", "suppressed"),
        "old@example.org": ("skipped", "not on the list"),
        "new@example.org": ("owed", None),  # its file entry may not be written yet
    }


async def test_the_daemon_sends_the_welcomes_a_web_app_left_owed(
    tmp_path: Path, state_url: str, relay: SMTPTestServer
) -> None:
    listed = tmp_path / "subscribers.yaml"
    listed.write_text(
        "subscribers:\n  - email: ada@example.org\n    send_at: '23:00'\n"
        "    timezone: Europe/London\n",
        encoding="utf-8",
    )
    clock = FakeClock(NOW)
    with digest_for(tmp_path, state_url, relay) as digest:
        queue_welcome(digest.store, ADA.email, "0123abcd")  # a web app confirmed, then died
    settings = digest.settings.model_copy(update={"subscribers": str(listed)})
    with running_daemon(settings, clock) as daemon:
        report = await daemon.tick()
        second = await daemon.tick()
    assert (report.welcomes.sent, second.welcomes.sent) == (1, 0)
    [received] = relay.messages
    assert parsed(received.data)["Subject"] == "Welcome to Daily Papers"


async def test_no_welcome_when_turned_off(
    tmp_path: Path, state_url: str, relay: SMTPTestServer
) -> None:
    with digest_for(tmp_path, state_url, relay, welcome=False) as digest:
        key = queue_welcome(digest.store, ADA.email, "0123abcd")
        summary = await send_welcomes(digest.deps, [(ADA, key)])
        row = digest.store.get(ADA.email, key)
    assert summary.sent == 0 and relay.messages == []
    assert row is not None and row.last_error == QUEUED


def test_the_first_edition_is_said_in_the_subscribers_own_zone_and_day() -> None:
    weekly = Subscriber(
        email="w@example.org", frequency="weekly", weekday="monday", timezone="Asia/Tokyo"
    )
    assert next_send_label(weekly, NOW) == "on Monday, Aug 24 at 07:00 (Asia/Tokyo)"
    assert Edition.parse("welcome:0123abcd") is None


async def test_warming_up_builds_a_welcome_and_sends_and_records_nothing(
    tmp_path: Path, state_url: str, relay: SMTPTestServer
) -> None:
    broken = tmp_path / "templates"
    broken.mkdir()
    (broken / "welcome.txt.j2").write_text("{{ oops(\n", encoding="utf-8")
    with digest_for(tmp_path, state_url, relay) as digest:
        warm_up(digest.deps)
        assert digest.store.list() == [] and relay.messages == []
    with (
        digest_for(tmp_path, state_url, relay, templates_dir=broken) as digest,
        pytest.raises(ConfigError, match=r"welcome\.txt\.j2:1"),
    ):
        warm_up(digest.deps)  # it builds one: a broken template is said at the start
