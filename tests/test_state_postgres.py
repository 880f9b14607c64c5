"""What only the shared (PostgreSQL) backend has: racing claimers, leases, the papers lock, schema.

Each "process" here is its own :class:`PostgresStore` (own connections, own claimer id, own
lease renewer) on one real PostgreSQL server; a store closed without marking its rows is a
sender that died mid-send.
"""

from __future__ import annotations

import threading
import time
from datetime import date
from pathlib import Path

import psycopg
import pytest

from digest.errors import StateError
from digest.state import SCHEMA_VERSION, open_state
from digest.state.postgres import MIGRATION_LOCK_KEY, PostgresStore, probe
from tests.factories import run_cli

EDITION = "2026-08-20"
LEASE_S = 1.0
WAIT_S = 15.0
"""Bound of every wait for a sub-second event (the machine may be loaded)."""


def _open(url: str, lease: float = LEASE_S) -> PostgresStore:
    store = open_state(url, lease_seconds=lease)
    assert isinstance(store, PostgresStore)
    return store


def test_racing_claimers_take_each_row_exactly_once(pg_url: str) -> None:
    stores = [_open(pg_url, lease=60) for _ in range(4)]
    emails = [f"r{i}@example.org" for i in range(300)]
    won: list[list[str]] = [[] for _ in stores]
    start = threading.Barrier(len(stores))

    def claim_all(i: int) -> None:
        start.wait()
        for email in emails:
            if stores[i].claim(email, EDITION, f"<{i}.{email}>"):
                won[i].append(email)

    threads = [threading.Thread(target=claim_all, args=(i,)) for i in range(len(stores))]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(WAIT_S * 4)
        taken = [e for w in won for e in w]
        assert sorted(taken) == sorted(emails)  # every row once, none twice
        assert sum(1 for w in won if w) >= 2, "the claimers did not race"
        rows = {r.subscriber: r for r in stores[0].list(edition=EDITION)}
        for i, w in enumerate(won):
            for email in w:
                assert rows[email].message_id == f"<{i}.{email}>"
    finally:
        for s in stores:
            s.close()


def test_a_dead_claimers_rows_become_unknown_once_its_lease_runs_out(pg_url: str) -> None:
    with _open(pg_url) as survivor:
        dead = _open(pg_url)
        assert dead.claim("a@example.org", EDITION, "<a@x>")
        assert dead.claimer != survivor.claimer
        dead.close()  # no renewal any more, the row stays 'sending': a crashed sender
        assert survivor.recover_unknown() == []  # the lease still runs
        assert not survivor.claim("a@example.org", EDITION, "<b@x>")
        deadline = time.monotonic() + WAIT_S
        recovered = survivor.recover_unknown()
        while not recovered and time.monotonic() < deadline:
            time.sleep(0.1)
            recovered = survivor.recover_unknown()
        assert [(r.subscriber, r.status, r.message_id) for r in recovered] == [
            ("a@example.org", "unknown", "<a@x>")
        ]
        assert not survivor.claim("a@example.org", EDITION, "<b@x>")  # never resent blindly
        survivor.reopen("a@example.org", EDITION)  # --retry-unknown
        assert survivor.claim("a@example.org", EDITION, "<b@x>")


def test_a_live_claimer_renews_its_lease(pg_url: str) -> None:
    with _open(pg_url) as live, _open(pg_url) as other:
        assert live.claim("a@example.org", EDITION, "<a@x>")
        time.sleep(LEASE_S * 3)  # three leases: only renewals keep it
        assert other.recover_unknown() == []
        live.mark_sent("a@example.org", EDITION, "250 OK")
        assert live.renew_leases() == 0  # nothing in flight any more
        row = other.get("a@example.org", EDITION)
        assert row is not None and row.status == "sent"


def test_sent_wins_over_an_expired_lease(pg_url: str) -> None:
    """A claimer that lost its lease (counted dead) but did deliver records ``sent``."""
    with _open(pg_url) as slow, _open(pg_url) as other:
        assert slow.claim("a@example.org", EDITION, "<a@x>")
        slow._db.execute("UPDATE deliveries SET lease_until = clock_timestamp() - interval '1 s'")
        assert [r.subscriber for r in other.recover_unknown()] == ["a@example.org"]
        assert slow.renew_leases() == 0  # an expired lease is not renewed
        slow.mark_sent("a@example.org", EDITION, "250 OK")
        row = other.get("a@example.org", EDITION)
        assert row is not None and row.status == "sent"


def test_papers_lock_is_held_by_one_process_until_unlocked_or_dead(pg_url: str) -> None:
    day = date(2026, 8, 20)
    with _open(pg_url) as first, _open(pg_url) as second:
        assert first.try_lock_papers(day, "hf")
        assert not second.try_lock_papers(day, "hf")
        assert second.try_lock_papers(day, "feed:x")  # another source: another lock
        first.unlock_papers(day, "hf")
        assert second.try_lock_papers(day, "hf")
        second.close()  # dies holding it: the server releases it (when its backend exits)
        deadline = time.monotonic() + WAIT_S
        while not first.try_lock_papers(day, "hf"):
            assert time.monotonic() < deadline, "the dead holder's lock was never released"
            time.sleep(0.05)


def test_schema_is_versioned_and_a_newer_one_refused(pg_url: str) -> None:
    assert probe(pg_url) == 0
    with _open(pg_url) as store:
        assert store.schema_version == SCHEMA_VERSION
    assert probe(pg_url) == SCHEMA_VERSION
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE meta SET value = %s WHERE key = 'schema_version'", (str(SCHEMA_VERSION + 1),)
        )
    with pytest.raises(StateError, match=r"created by a newer digest.*upgrade"):
        _open(pg_url)


def test_processes_opening_a_new_database_at_once_migrate_it_once(pg_url: str) -> None:
    # Two senders started together on an empty database both find no schema, then queue
    # for the migration lock; the second must see the first's tables, not create them again
    # (it did fail with "relation meta already exists": a daemon of a failover pair died).
    opened: list[PostgresStore] = []
    errors: list[BaseException] = []

    def open_one() -> None:
        try:
            opened.append(_open(pg_url))
        except BaseException as e:  # reported below
            errors.append(e)

    with psycopg.connect(pg_url, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
        threads = [threading.Thread(target=open_one) for _ in range(2)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + WAIT_S
        while True:  # both have looked (no schema yet) and wait for the lock
            row = holder.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            ).fetchone()
            if row is not None and row[0] >= 2:
                break
            assert time.monotonic() < deadline, "the openers never queued for the lock"
            time.sleep(0.05)
        holder.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_KEY,))
    for thread in threads:
        thread.join(WAIT_S)
    try:
        assert not errors, errors
        assert len(opened) == 2
        assert probe(pg_url) == SCHEMA_VERSION
    finally:
        for store in opened:
            store.close()


def test_unreachable_database_is_one_clear_error_without_the_password(tmp_path: object) -> None:
    url = "postgresql://digest:hunter2@/digest?host=/nonexistent-socket-dir&connect_timeout=2"
    with pytest.raises(StateError) as info:
        open_state(url)
    message = str(info.value)
    assert "cannot reach the state database" in message
    assert "hunter2" not in message and "***" in message


def test_validate_says_whether_the_database_answers_and_its_schema(
    pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "subscribers.yaml").write_text("subscribers:\n  - email: ada@example.org\n")
    monkeypatch.setenv("DIGEST_SUBSCRIBERS", str(tmp_path / "subscribers.yaml"))

    def validate(url: str) -> tuple[int, str]:
        monkeypatch.setenv("DIGEST_STATE_URL", url)
        return run_cli("validate", "--offline")

    code, output = validate(pg_url)
    assert code == 0 and "reachable, empty" in output, output
    _open(pg_url).close()
    code, output = validate(pg_url)
    assert code == 0 and f"schema version {SCHEMA_VERSION} (current)" in output, output
    code, output = validate(
        "postgresql://digest:hunter2@/digest?host=/nonexistent&connect_timeout=2"
    )
    assert code == 1 and "cannot reach the state database" in output, output
    assert "hunter2" not in output and "Traceback" not in output
