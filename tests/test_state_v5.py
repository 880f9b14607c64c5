"""State written by an older digest opens unchanged: schema v5 files of both backends.

``tests/fixtures/state/v5.sqlite3`` and ``v5.pg.sql`` (a ``pg_dump``) were made by the code of
before issue #21 (``tests/fixtures/state/make_v5.py``), with rows in every table and a row of
every status. Opening them must keep every row and every value, migrate them on to the current
schema (v6: the subscriber list's tables, empty) and leave them writable.
"""

from __future__ import annotations

import shutil
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from digest.models import Feedback
from digest.state import COPY_TABLES, SCHEMA_VERSION, SKIP_LATE, StateBackend, open_state
from tests.conftest import FIXTURES

T0 = datetime(2026, 8, 20, 6, 0, tzinfo=UTC)
DAY = "2026-08-20"
V5 = FIXTURES / "state"
V5_COUNTS = {
    "deliveries": 6,
    "suppressions": 2,
    "bounces": 2,
    "bounce_scores": 2,
    "processed_messages": 2,
    "delivery_papers": 3,
    "feedback": 2,
    "events": 1,
    "signups": 1,
    "known_papers": 1,
    "papers": 1,
    "feed_cache": 1,
    "pauses": 0,  # tables of migrations 6 to 8: empty after the upgrade
    "forgotten": 0,
    "subscribers": 0,
    "subscriber_list": 0,
    "subscriber_outbox": 0,
}


@pytest.fixture(params=["sqlite", "postgres"])
def v5_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A copy of the v5 state of each backend (the file copied, the dump restored)."""
    if request.param == "sqlite":
        path = tmp_path / "v5.sqlite3"
        shutil.copy(V5 / "v5.sqlite3", path)
        return f"sqlite:///{path}"
    server = request.getfixturevalue("pg_server")
    url: str = server.restore((V5 / "v5.pg.sql").read_text(), "digest_v5")
    return url


def test_a_v5_state_opens_with_every_row_and_value(v5_url: str) -> None:
    with open_state(v5_url, now=lambda: T0) as store:
        assert store.schema_version == SCHEMA_VERSION  # migrated on open
        assert store.counts() == V5_COUNTS
        rows = {r.subscriber: r for r in store.list(edition=DAY)}
        assert {a: str(r.status) for a, r in rows.items()} == {
            "sent@example.org": "sent",
            "failed@example.org": "failed",
            "deferred@example.org": "owed",
            "unknown@example.org": "unknown",
            "late@example.org": "skipped",
            "crashed@example.org": "sending",
        }
        sent = rows["sent@example.org"]
        assert (sent.detail, sent.message_id, sent.attempts, sent.last_code) == (
            "2.0.0 Ok: queued as 1",
            "<sent@x>",
            1,
            250,
        )
        assert sent.created_at == sent.updated_at == sent.sent_at == T0
        deferred = rows["deferred@example.org"]
        assert (deferred.attempts, deferred.last_code, deferred.last_error) == (
            2,
            451,
            "451 4.2.0 try later",
        )
        assert rows["late@example.org"].detail == SKIP_LATE
        assert store.delivery_papers("sent@example.org", DAY) == ["2508.00001", "2508.00002"]
        assert store.sent_papers(["2508.00001", "2508.00003"]) == {
            "sent@example.org": frozenset({"2508.00001"})
        }
        assert store.sent_editions() == [(DAY, T0)]
        assert store.find_message("sent@x") == sent
        _check_lists(store)
        # The crashed sender's row is recovered (its lease, if any, ran out long ago).
        assert [d.subscriber for d in store.recover_unknown()] == ["crashed@example.org"]


def _check_lists(store: StateBackend) -> None:
    gone = store.suppression("gone@example.org")
    assert gone is not None and (gone.reason, gone.since, gone.actor) == ("bounced", T0, "smtp")
    assert store.suppression("back@example.org") is None
    [back] = store.suppression_history("back@example.org")
    assert (back.lifted_at, back.lifted_by) == (T0, "cli:test")
    assert set(store.suppressions()) == {"gone@example.org"}
    events = store.bounce_events()
    assert [(e.address, str(e.kind), e.at, e.edition) for e in events] == [
        ("gone@example.org", "hard", T0, DAY),
        ("soft@example.org", "soft", T0, None),
    ]
    soft = store.bounce_score("soft@example.org")
    assert soft is not None and (soft.soft, soft.last_scored_day) == (1.0, date(2026, 8, 20))
    assert store.bounce_scores()["gone@example.org"].last_bounce_at == T0
    processed = store.processed("sha256:" + "a" * 64)
    assert processed is not None and (processed.at, processed.detail) == (T0, "1 hard")
    assert store.feedback() == {"sent@example.org": Feedback(("2508.00001",), ("2508.00002",))}
    assert [p.title for p in store.load_papers(date(2026, 8, 20), "hf") or []] == ["Listed"]
    assert {k: p.title for k, p in store.find_papers(["2508.00001", "2508.01234"]).items()} == {
        "2508.00001": "Listed",
        "2508.01234": "A liked paper",
    }
    assert store.feed_cache.get("https://example.org/feed") == (
        '"v1"',
        "Thu, 20 Aug 2026",
        b"<rss/>\x00\xff",
    )
    [event] = store.events()
    assert (event.subscriber, event.at, event.detail) == ("back@example.org", T0, {"via": "x"})
    signup = store.signup("ab12")
    assert signup is not None and signup.confirmed_at == T0
    assert signup.keywords == ("llm", "agents")


def test_a_v5_state_takes_new_rows_after_the_old_ones(v5_url: str) -> None:
    with open_state(v5_url, now=lambda: T0) as store:
        assert store.suppress("later@example.org", "manual", evidence="note", actor="cli:test")
        store.record_event("later@example.org", "suppress", actor="cli:test")
        assert store.claim("new@example.org", DAY, "<new@x>", ["2508.00009"])
        store.mark_sent("new@example.org", DAY, "250 OK")
        counts = store.counts()
    assert counts["suppressions"] == 3 and counts["events"] == 2
    assert counts["deliveries"] == 7 and counts["delivery_papers"] == 4
    with open_state(v5_url) as store:  # and reopens
        ids = [row[0] for row in store.export_rows("suppressions")[1]]
        assert len(set(ids)) == 3
        assert set(COPY_TABLES) == set(store.counts())


_SCHEMA_OF = {
    "sqlite": "SELECT type, name, sql FROM sqlite_master WHERE sql IS NOT NULL",
    "postgres": (
        "SELECT table_name, column_name, data_type, is_nullable, column_default, is_identity "
        "FROM information_schema.columns WHERE table_schema = current_schema() "
        "UNION ALL SELECT tablename, indexname, indexdef, '', '', '' FROM pg_indexes "
        "WHERE schemaname = current_schema()"
    ),
}


def _schema(store: StateBackend) -> list[tuple[str, ...]]:
    """Every table, column and index of the open state, in a comparable form."""
    db = store._db  # type: ignore[attr-defined]
    rows = db.fetch(_SCHEMA_OF[db.dialect])
    schema = db.fetch("SELECT current_schema()")[0][0] if db.dialect == "postgres" else ""
    return sorted(tuple(_words(str(v).replace(f"{schema}.", "")) for v in row) for row in rows)


def _words(text: str) -> str:
    """``text`` with its whitespace normalized (the SQL texts differ in layout only)."""
    return " ".join(text.split()).replace("( ", "(").replace(" )", ")")


def test_a_new_state_has_exactly_the_tables_and_indexes_of_a_v5_one(
    v5_url: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if v5_url.startswith("sqlite"):
        fresh = f"sqlite:///{tmp_path / 'new.sqlite3'}"
    else:
        fresh = request.getfixturevalue("pg_server").fresh_url()
    with open_state(v5_url) as old, open_state(fresh) as new:
        assert _schema(new) == _schema(old)
