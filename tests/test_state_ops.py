"""What operators watch, read from the state on both databases (issue 24): the figures of
the metrics, the counts behind the sender rates, the edition report's groups, the pauses."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from digest.providers import domain_group
from digest.state import (
    PAUSED_ERROR,
    BounceEvent,
    BounceKind,
    BounceScore,
    EditionCount,
    StateBackend,
)
from tests.conftest import MakeStore
from tests.factories import FakeClock

T0 = datetime(2026, 8, 21, 7, 0, tzinfo=UTC)
DAY = "2026-08-20"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
def store(make_store: MakeStore, clock: FakeClock) -> StateBackend:
    return make_store(now=clock)


def sent(store: StateBackend, address: str, edition: str = DAY) -> str:
    message_id = f"<{edition}.{address}@test>"
    assert store.claim(address, edition, message_id)
    store.mark_sent(address, edition, "250 2.0.0 OK", code=250)
    return message_id


def bounce(store: StateBackend, address: str, kind: BounceKind, at: datetime, edition: str) -> None:
    event = BounceEvent(address, kind, at, edition, None, "evidence", "bounces")
    store.record_bounces([(event, BounceScore(address), None)])


def test_state_figures_count_statuses_oldest_owed_suppressions_and_pauses(
    store: StateBackend, clock: FakeClock
) -> None:
    empty = store.state_figures([DAY])
    assert (empty.statuses, empty.oldest_owed, empty.suppressions) == ({}, None, {})
    store.mark_deferred("old@example.org", DAY, "451 4.7.1 try later", 451)
    clock.at += timedelta(hours=1)
    store.mark_deferred("new@example.org", DAY, "451 4.7.1 try later", 451)
    sent(store, "a@example.org")
    clock.at += timedelta(hours=1)
    sent(store, "b@example.org")
    store.mark_failed("c@example.org", DAY, "550 5.1.1 no such user", 550)
    store.mark_skipped("d@example.org", DAY, "late")
    store.suppress("c@example.org", "bounced", evidence="550", actor="smtp")
    store.suppress("e@example.org", "complained", evidence="abuse", actor="bounces")
    store.suppress("f@example.org", "complained", evidence="abuse", actor="bounces")
    store.suppress("g@example.org", "manual", evidence="note", actor="cli:test")
    store.unsuppress("g@example.org", actor="cli:test")  # lifted: not counted
    store.pause_group("gmail", evidence="4 of 1,000", actor="daemon")
    store.mark_deferred("older@example.org", "2026-07-01", "451 4.7.1 try later", 451)
    figures = store.state_figures([DAY, "2026-08-19"])  # not 2026-07-01
    assert figures.statuses == {"owed": 2, "sent": 2, "failed": 1, "skipped": 1}
    assert figures.oldest_owed == T0
    assert figures.suppressions == {"bounced": 1, "complained": 2}
    assert figures.paused == {"gmail": T0 + timedelta(hours=2)}


ADDRESSES = [
    "ada@gmail.com",
    "bob@googlemail.com",
    "cy@hotmail.co.uk",
    "dee@outlook.com",
    "eve@yahoo.co.jp",
    "fay@aol.com",
    "gus@example.org",
    '"x@yahoo.com"@example.org',  # a quoted local part holding an "@"
    "hal@mail.yahoo.example.co.uk",  # not Yahoo: a subdomain of someone else's
    "ivy@xn--bcher-kva.example",  # an IDNA domain, as the state stores it
]


def test_sender_counts_group_by_the_domain_after_the_last_at_sign_like_python(
    store: StateBackend,
) -> None:
    for address in ADDRESSES:
        sent(store, address)
    sent(store, "ada@gmail.com", "2026-08-19")  # another edition: asked for separately
    counts = store.sender_counts([DAY])
    by_domain = {c.domain: c.count for c in counts if c.what == "sent"}
    expected: dict[str, int] = {}
    for address in ADDRESSES:
        domain = address.rpartition("@")[2]
        expected[domain] = expected.get(domain, 0) + 1
    assert by_domain == expected
    assert {c.edition for c in counts} == {DAY}
    assert [domain_group(d) for d in sorted(by_domain)] == [
        domain_group(d) for d in sorted(expected)
    ]
    assert store.sender_counts([]) == []


def test_sender_counts_carry_failed_rows_bounces_complaints_and_the_latest_complaint(
    store: StateBackend,
) -> None:
    for n in range(3):
        sent(store, f"r{n}@gmail.com")
    store.mark_failed("gone@gmail.com", DAY, "550 5.1.1 no such user", 550)
    bounce(store, "gone@gmail.com", BounceKind.HARD, T0, DAY)
    bounce(store, "r0@gmail.com", BounceKind.COMPLAINT, T0 + timedelta(hours=1), DAY)
    bounce(store, "r1@gmail.com", BounceKind.COMPLAINT, T0 + timedelta(hours=3), DAY)
    bounce(store, "r2@gmail.com", BounceKind.COMPLAINT, T0, "2026-08-19")  # another edition
    rows = {(c.what, c.count, c.last_at) for c in store.sender_counts([DAY])}
    assert rows == {
        ("sent", 3, None),
        ("failed", 1, None),
        ("hard", 1, T0),
        ("complaint", 2, T0 + timedelta(hours=3)),
    }


def test_edition_counts_group_rows_and_mark_the_ones_a_pause_holds(store: StateBackend) -> None:
    sent(store, "a@example.org")
    sent(store, "b@example.org")
    store.mark_failed("c@example.org", DAY, "550 5.1.1 no such user", 550)
    store.mark_failed("d@example.org", DAY, "550 5.1.1 user unknown", 550)
    store.mark_deferred("e@example.org", DAY, "451 4.7.1 slow down", 451)
    store.mark_deferred("f@gmail.com", DAY, f"{PAUSED_ERROR}: gmail", attempts=0)
    store.mark_skipped("g@example.org", DAY, "bounced")
    store.mark_skipped("h@example.org", "2026-08-19", "late")
    counts = store.edition_counts(DAY)
    assert set(counts) == {
        EditionCount(DAY, "sent", "250 2.0.0 OK", 250, False, 2, None),
        EditionCount(DAY, "failed", None, 550, False, 2, "550 5.1.1 no such user"),
        EditionCount(DAY, "owed", None, 451, False, 1, "451 4.7.1 slow down"),
        EditionCount(DAY, "owed", None, None, True, 1, f"{PAUSED_ERROR}: gmail"),
        EditionCount(DAY, "skipped", "bounced", None, False, 1, None),
    }
    everything = store.edition_counts()
    assert [c.edition for c in everything] == sorted(c.edition for c in everything)
    assert {c.edition for c in everything} == {DAY, "2026-08-19"}
    assert store.edition_counts("2026-08-18") == []


def test_a_pause_is_kept_until_resumed_and_stays_in_the_history(
    store: StateBackend, clock: FakeClock
) -> None:
    assert store.pauses() == {}
    assert store.pause_group("gmail", evidence="4 of 1,000 (0.4 %)", actor="daemon")
    clock.at += timedelta(minutes=5)
    assert not store.pause_group("gmail", evidence="later", actor="daemon")  # keeps the first
    assert store.pause_group("yahoo", evidence="2 of 500", actor="daemon")
    pauses = store.pauses()
    assert (pauses["gmail"].since, pauses["gmail"].evidence) == (T0, "4 of 1,000 (0.4 %)")
    assert pauses["gmail"].active and pauses["yahoo"].active
    assert store.resume_groups(["gmail", "outlook"], actor="cli:test") == ["gmail"]
    assert store.resume_groups(["gmail"], actor="cli:test") == []  # not paused any more
    lifted = store.pauses()["gmail"]
    assert not lifted.active and lifted.lifted_by == "cli:test"
    assert lifted.lifted_at == T0 + timedelta(minutes=5)
    clock.at += timedelta(minutes=5)
    assert store.pause_group("gmail", evidence="again", actor="daemon")  # a new pause
    assert store.pauses()["gmail"].evidence == "again" and store.pauses()["gmail"].active
    assert store.resume_groups(None, actor="cli:test") == ["gmail", "yahoo"]
    assert not any(p.active for p in store.pauses().values())
    assert store.counts()["pauses"] == 3
