"""Rates that protect the sender (issue 24, point 3): domain groups, complaint and hard-bounce
rates from the state (both databases), the thresholds, the pause decision."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from digest.doctor import state_rate_findings
from digest.providers import DomainGroup, domain_group, parse_group
from digest.reputation import GroupRate, check_rates, group_rates, percent
from digest.state import BounceEvent, BounceKind, BounceScore, Pause, StateBackend, open_state
from tests.conftest import MakeStore
from tests.factories import make_settings, run_cli

T0 = datetime(2026, 8, 21, 9, 0, tzinfo=UTC)
DAY = "2026-08-20"


@pytest.mark.parametrize(
    ("address", "group"),
    [
        ("ada@gmail.com", "gmail"),
        ("ada@GoogleMail.com", "gmail"),
        ("ada@gmail.com.", "gmail"),
        ("ada@outlook.com", "outlook"),
        ("ada@hotmail.co.uk", "outlook"),
        ("ada@live.com.au", "outlook"),
        ("ada@msn.com", "outlook"),
        ("ada@yahoo.co.jp", "yahoo"),
        ("ada@ymail.com", "yahoo"),
        ("ada@aol.com", "yahoo"),
        ("ada@example.org", "other"),
        ("ada@mail.gmail.com", "other"),  # a subdomain is someone else's
        ("ada@yahoo.example.co.uk", "other"),  # three labels after the brand: not a country
        ("ada@notgmail.com", "other"),
        ('"x@gmail.com"@example.org', "other"),  # the domain follows the last "@"
        ("no-at-sign", "other"),
        ("", "other"),
    ],
)
def test_domain_groups(address: str, group: str) -> None:
    assert domain_group(address) == group


@pytest.mark.parametrize("text", ["", " ", "hotmail", "gmail.com", "gmail\n--all", "x" * 10_000])
def test_an_unknown_group_name_is_refused_with_the_names_and_a_short_quote(text: str) -> None:
    with pytest.raises(ValueError, match="use one of gmail, outlook, yahoo, other") as caught:
        parse_group(text)
    assert len(str(caught.value)) < 200
    assert "\n" not in str(caught.value)


def test_group_names_are_read_case_and_blank_insensitively() -> None:
    assert parse_group(" GMAIL ") is DomainGroup.GMAIL


def rate(edition: str, group: str, delivered: int, complaints: int, **more: object) -> GroupRate:
    return GroupRate(edition, DomainGroup(group), delivered, complaints=complaints, **more)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("complaints", "delivered", "warned", "paused"),
    [
        (1, 1000, False, False),  # 0.1 %: at the warning threshold, not above it
        (2, 1000, True, False),
        (3, 1000, True, False),  # 0.3 % exactly (as floats, 3 / 1000 * 100 is 0.30000000000000004)
        (4, 1000, True, True),
        (1, 334, True, False),  # 0.2994 %
        (1, 333, True, True),  # 0.3003 %
        (0, 0, False, False),
    ],
)
def test_thresholds_compare_exactly(
    complaints: int, delivered: int, warned: bool, paused: bool
) -> None:
    found = check_rates(
        [rate(DAY, "gmail", delivered, complaints, last_complaint=T0)],
        {},
        warn_percent=0.1,
        pause_percent=0.3,
    )
    assert bool(found.warnings) is warned
    assert (DomainGroup.GMAIL in found.to_pause) is paused


def test_only_the_group_above_pauses_and_zero_turns_the_pause_off() -> None:
    rates = [
        rate(DAY, "gmail", 1000, 4, last_complaint=T0),
        rate(DAY, "yahoo", 1000, 1, last_complaint=T0),
        rate(DAY, "other", 50, 0),
    ]
    found = check_rates(rates, {}, warn_percent=0.1, pause_percent=0.3)
    assert list(found.to_pause) == [DomainGroup.GMAIL]
    assert found.worst[DomainGroup.YAHOO].complaints == 1
    assert check_rates(rates, {}, warn_percent=0, pause_percent=0).to_pause == {}


def test_a_resumed_group_pauses_again_only_for_a_complaint_after_the_resume() -> None:
    resumed = {"gmail": Pause("gmail", T0, "x", "daemon", T0 + timedelta(hours=1), "cli:op")}
    before = [rate(DAY, "gmail", 1000, 5, last_complaint=T0 + timedelta(minutes=30))]
    after = [rate(DAY, "gmail", 1000, 6, last_complaint=T0 + timedelta(hours=2))]
    assert check_rates(before, resumed, warn_percent=0.1, pause_percent=0.3).to_pause == {}
    assert DomainGroup.GMAIL in check_rates(
        after, resumed, warn_percent=0.1, pause_percent=0.3
    ).to_pause
    active = {"gmail": Pause("gmail", T0, "x", "daemon")}
    assert check_rates(after, active, warn_percent=0.1, pause_percent=0.3).to_pause == {}


def sent(store: StateBackend, address: str, edition: str = DAY) -> None:
    assert store.claim(address, edition, f"<{edition}.{address}@test>")
    store.mark_sent(address, edition, "250 OK")


def record(store: StateBackend, address: str, kind: BounceKind, at: datetime) -> None:
    event = BounceEvent(address, kind, at, DAY, None, "evidence", "bounces")
    store.record_bounces([(event, BounceScore(address), None)])


def test_rates_from_the_state_per_edition_and_group(make_store: MakeStore) -> None:
    store = make_store(now=lambda: T0)
    with store.transaction():
        for n in range(1000):
            sent(store, f"r{n:04d}@{'gmail.com' if n % 2 else 'googlemail.com'}")
        for n in range(200):
            sent(store, f"y{n:03d}@yahoo.co.uk")
        sent(store, "solo@example.org", "test:2026-08-20")  # a test send: never counted
    store.mark_failed("gone@gmail.com", DAY, "550 5.1.1 no such user", 550)
    record(store, "gone@gmail.com", BounceKind.HARD, T0)
    for n in range(4):
        record(store, f"r{n:04d}@gmail.com", BounceKind.COMPLAINT, T0 + timedelta(minutes=n))
    record(store, "y000@yahoo.co.uk", BounceKind.SOFT, T0)
    rates = group_rates(store, [DAY, "2026-08-19", "test:2026-08-20"])
    assert [(r.edition, r.group) for r in rates] == [(DAY, "gmail"), (DAY, "yahoo")]
    gmail, yahoo = rates
    assert (gmail.delivered, gmail.failed, gmail.hard, gmail.complaints) == (1000, 1, 1, 4)
    assert gmail.last_complaint == T0 + timedelta(minutes=3)
    assert percent(gmail.complaint_rate) == "0.40 %"
    assert percent(gmail.hard_bounce_rate) == "0.10 %"
    assert gmail.describe() == "2026-08-20 gmail: 4 complaints of 1,000 delivered (0.40 %)"
    assert (yahoo.delivered, yahoo.soft, yahoo.complaints) == (200, 1, 0)
    assert list(check_rates(rates, {}, warn_percent=0.1, pause_percent=0.3).to_pause) == [
        DomainGroup.GMAIL
    ]


def test_doctor_shows_the_rates_of_the_recent_editions_per_group(
    state_url: str, tmp_path: Path
) -> None:
    settings = make_settings(state_url=state_url)
    now = datetime.now(UTC)
    edition = (now - timedelta(days=1)).date().isoformat()
    with open_state(state_url, now=lambda: now) as store, store.transaction():
        for n in range(100):
            sent(store, f"r{n:03d}@gmail.com", edition)
            sent(store, f"r{n:03d}@example.org", edition)
        store.mark_failed("gone@example.org", edition, "550 5.1.1 no such user", 550)
        store.mark_failed("gone2@example.org", edition, "550 5.1.1 no such user", 550)
        store.mark_failed("gone3@example.org", edition, "550 5.1.1 no such user", 550)
        for address in ("gone@example.org", "gone2@example.org", "gone3@example.org"):
            event = BounceEvent(address, BounceKind.HARD, now, edition, None, "550", "smtp")
            store.record_bounces([(event, BounceScore(address), None)])
        event = BounceEvent("r000@gmail.com", BounceKind.COMPLAINT, now, edition, None, "", "x")
        store.record_bounces([(event, BounceScore("r000@gmail.com"), None)])
        store.pause_group("gmail", evidence="1 of 100", actor="daemon")
    findings = {(f.check, f.subject): f for f in state_rate_findings(settings)}
    gmail = findings[("complaints", "gmail")]
    assert gmail.status == "fail" and "1 complaint of 100 delivered (1.00 %)" in gmail.detail
    assert "sending paused since" in gmail.detail
    assert "`digest resume gmail`" in (gmail.advice or "")
    assert findings[("complaints", "other")].status == "pass"
    hard = findings[("hard bounce", "other")]
    assert hard.status == "warn" and "3 of 103 attempted (2.91 %)" in hard.detail
    assert findings[("hard bounce", "gmail")].status == "pass"


def test_doctor_creates_no_state_file_and_a_broken_state_is_one_warning(tmp_path: Path) -> None:
    path = tmp_path / "nothing-yet.sqlite3"
    [finding] = state_rate_findings(make_settings(state_path=path))
    assert (finding.status, finding.detail) == ("pass", "nothing delivered recently yet")
    assert not path.exists()
    path.write_bytes(b"not a database at all, but long enough to look like a file")
    [finding] = state_rate_findings(make_settings(state_path=path))
    assert finding.status == "warn" and finding.detail.startswith("state not read: ")


def test_digest_subscribers_shows_the_rates_and_the_paused_groups(
    state_env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    subscribers = tmp_path / "subscribers.yaml"
    subscribers.write_text("subscribers:\n  - email: r000@gmail.com\n")
    monkeypatch.setenv("DIGEST_SUBSCRIBERS", str(subscribers))
    now = datetime.now(UTC)
    edition = (now - timedelta(days=1)).date().isoformat()
    with open_state(state_env, now=lambda: now) as store, store.transaction():
        for n in range(500):
            sent(store, f"r{n:03d}@gmail.com", edition)
        for n in range(2):
            address = f"r{n:03d}@gmail.com"
            event = BounceEvent(address, BounceKind.COMPLAINT, now, edition, None, "", "x")
            store.record_bounces([(event, BounceScore(address), None)])
        store.pause_group("gmail", evidence="2 of 500", actor="daemon")
    code, output = run_cli("subscribers")
    assert code == 0, output
    [row] = [line for line in output.splitlines() if line.startswith(f"│ {edition}")]
    assert "gmail" in row and "500" in row and "2 (0.40 %)" in row and "pauses the group" in row
    assert f"paused: gmail since {now:%Y-%m-%d %H:%M} UTC (2 of 500)" in output
    assert "`digest resume gmail`" in output
