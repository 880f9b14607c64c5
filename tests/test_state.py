"""The state file: delivery statuses, papers, feed cache, schema versions, corruption, the lock."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from digest.errors import ConfigError, StateError, StateLockedError
from digest.models import Paper
from digest.state import (
    SCHEMA_VERSION,
    SKIP_LATE,
    SKIP_NO_PAPERS,
    TRANSITIONS,
    DeliveryStatus,
    StateBackend,
    StateStore,
    Transition,
    lock_paths,
    may_move,
    open_state,
    state_lock,
)
from tests.conftest import MakeStore, crash_claimers
from tests.factories import FakeClock

PROJECT = Path(__file__).parent.parent
T0 = datetime(2025, 8, 20, 7, 0, tzinfo=UTC)
EDITION = "2025-08-20"


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "digest.sqlite3"


@pytest.fixture
def store(make_store: MakeStore) -> StateBackend:
    """A fresh state of each backend (SQLite, PostgreSQL): the contract tests run on both."""
    return make_store(now=FakeClock(T0, step=timedelta(seconds=1)))


@pytest.fixture
def sqlite_store(path: Path) -> Iterator[StateStore]:
    """A fresh state file, for what only SQLite has (pragmas, raw SQL)."""
    with StateStore(path, now=FakeClock(T0, step=timedelta(seconds=1))) as s:
        yield s


# -- file, pragmas, schema --------------------------------------------------------------------


def test_new_file_is_wal_full_sync_private_and_versioned(
    path: Path, sqlite_store: StateStore
) -> None:
    store = sqlite_store
    assert path.exists()
    assert path.stat().st_mode & 0o777 == 0o600
    assert store.schema_version == SCHEMA_VERSION
    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    finally:
        db.close()
    assert {"deliveries", "papers", "feed_cache", "meta"} <= tables
    assert store._db.fetch("PRAGMA synchronous")[0][0] == 2  # FULL


def test_reopening_keeps_rows(path: Path) -> None:
    with StateStore(path) as s:
        s.mark_skipped("a@example.org", EDITION, SKIP_LATE)
    with StateStore(path) as s:
        row = s.get("a@example.org", EDITION)
        assert row is not None and row.status == "skipped" and row.detail == SKIP_LATE


def test_newer_schema_is_refused(path: Path) -> None:
    StateStore(path).close()
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.commit()
    db.close()
    with pytest.raises(StateError, match=r"created by a newer digest.*upgrade") as info:
        StateStore(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    "content",
    [b"this is not a database, just text\n" * 10, b"SQLite format 3\x00" + b"\xff" * 4000],
    ids=["text", "garbage-after-header"],
)
def test_corrupt_file_is_a_state_error_naming_the_file(path: Path, content: bytes) -> None:
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    with pytest.raises(StateError, match="not a digest state file or is corrupt") as info:
        StateStore(path)
    assert str(path) in str(info.value)
    assert "move it aside" in str(info.value)
    assert path.read_bytes() == content  # left untouched for inspection


def test_closed_store_raises_state_error(path: Path) -> None:
    s = StateStore(path)
    s.close()
    with pytest.raises(StateError, match="closed"):
        s.get("a@example.org", EDITION)


def test_failed_write_is_rolled_back(sqlite_store: StateStore) -> None:
    store = sqlite_store
    store.mark_skipped("a@example.org", EDITION, SKIP_LATE)
    with pytest.raises(RuntimeError), store._db.unit():
        store._db.execute("UPDATE deliveries SET status = 'owed'")
        raise RuntimeError("boom mid-transaction")
    row = store.get("a@example.org", EDITION)
    assert row is not None and row.status == "skipped"


# -- deliveries -------------------------------------------------------------------------------


def test_claim_is_idempotent_and_normalises_the_address(store: StateBackend) -> None:
    assert store.claim("Ann@Example.org ", EDITION, "<m1@x>") is True
    assert store.claim("ann@example.org", EDITION, "<m1@x>") is False
    row = store.get("ANN@example.org", EDITION)
    assert row is not None
    assert (row.subscriber, row.status, row.message_id) == ("ann@example.org", "sending", "<m1@x>")
    assert row.attempts == 0 and row.created_at.tzinfo is not None


@pytest.mark.parametrize("final", ["sent", "failed", "skipped", "unknown", "sending"])
def test_claim_refuses_every_status_but_owed(store: StateBackend, final: str) -> None:
    who = "a@example.org"
    assert store.claim(who, EDITION, "<m@x>")
    if final == "sent":
        store.mark_sent(who, EDITION, "ok", code=250)
    elif final == "failed":
        store.mark_failed(who, EDITION, "550 no such user", 550)
    elif final == "skipped":
        store.mark_skipped(who, EDITION, SKIP_NO_PAPERS)
    elif final == "unknown":
        crash_claimers(store)
        store.recover_unknown()
    assert store.get(who, EDITION).status == final  # type: ignore[union-attr]
    assert store.claim(who, EDITION, "<m2@x>") is False
    store.reopen(who, EDITION)
    assert store.claim(who, EDITION, "<m2@x>") is True


def test_status_transitions_and_history(store: StateBackend) -> None:
    who = "a@example.org"
    assert store.claim(who, EDITION, "<m@x>")
    store.mark_deferred(who, EDITION, "451 4.2.1 try later", 451, attempts=3)
    row = store.get(who, EDITION)
    assert row is not None
    assert (row.status, row.attempts, row.last_code) == (DeliveryStatus.OWED, 3, 451)
    assert row.last_error == "451 4.2.1 try later" and row.sent_at is None

    assert store.claim(who, EDITION, "<m@x>")
    store.mark_sent(who, EDITION, "2.0.0 OK queued as 7", code=250, attempts=1)
    row = store.get(who, EDITION)
    assert row is not None
    assert (row.status, row.attempts, row.last_code, row.detail) == (
        "sent",
        4,
        250,
        "2.0.0 OK queued as 7",
    )
    assert row.sent_at is not None and row.sent_at >= row.created_at
    assert row.last_error == "451 4.2.1 try later"  # history kept


def test_sent_is_never_overwritten_by_failure_skip_or_deferral(store: StateBackend) -> None:
    who = "a@example.org"
    assert store.claim(who, EDITION, "<m@x>")
    store.mark_sent(who, EDITION, "ok", code=250)
    store.mark_failed(who, EDITION, "550 late bounce", 550)
    store.mark_deferred(who, EDITION, "451", 451)
    store.mark_skipped(who, EDITION, SKIP_LATE)
    store.mark_unknown(who, EDITION, "boom")
    row = store.get(who, EDITION)
    assert row is not None and row.status == "sent"


def test_marks_create_missing_rows(store: StateBackend) -> None:
    store.mark_failed("f@example.org", EDITION, "bad template", None)
    store.mark_skipped("s@example.org", EDITION, SKIP_NO_PAPERS)
    rows = {r.subscriber: r for r in store.list(edition=EDITION)}
    assert rows["f@example.org"].status == "failed"
    assert rows["f@example.org"].last_code is None
    assert rows["s@example.org"].detail == SKIP_NO_PAPERS


def test_recover_unknown_only_touches_sending(store: StateBackend) -> None:
    store.claim("a@example.org", EDITION, "<a@x>")
    store.claim("b@example.org", EDITION, "<b@x>")
    store.mark_sent("b@example.org", EDITION, "ok")
    store.claim("c@example.org", "2025-08-21", "<c@x>")
    crash_claimers(store)
    recovered = store.recover_unknown()
    assert [(r.subscriber, r.edition, r.status, r.message_id) for r in recovered] == [
        ("a@example.org", EDITION, "unknown", "<a@x>"),
        ("c@example.org", "2025-08-21", "unknown", "<c@x>"),
    ]
    assert "may or may not" in (recovered[0].last_error or "")
    assert store.recover_unknown() == []
    assert store.get("b@example.org", EDITION).status == "sent"  # type: ignore[union-attr]


def test_reopen_any_status_and_absent(store: StateBackend) -> None:
    store.claim("a@example.org", EDITION, "<a@x>")
    store.mark_sent("a@example.org", EDITION, "ok")
    store.reopen("a@example.org", EDITION)
    store.reopen("new@example.org", EDITION)
    rows = store.list(edition=EDITION, statuses=["owed"])
    assert [r.subscriber for r in rows] == ["a@example.org", "new@example.org"]
    assert rows[0].sent_at is not None  # history kept


def test_list_filters(store: StateBackend) -> None:
    store.mark_skipped("a@example.org", "2025-08-20", SKIP_LATE)
    store.mark_skipped("b@example.org", "2025-08-20", SKIP_LATE)
    store.claim("a@example.org", "2025-W34", "<w@x>")
    assert len(store.list()) == 3
    assert [r.edition for r in store.list(subscriber="A@example.org")] == [
        "2025-08-20",
        "2025-W34",
    ]
    assert [r.subscriber for r in store.list(statuses=[DeliveryStatus.SENDING])] == [
        "a@example.org"
    ]
    assert store.list(statuses=[]) == []
    assert store.list(edition="2025-08-20", subscriber="b@example.org")[0].status == "skipped"


# -- papers and feed cache --------------------------------------------------------------------


def test_papers_round_trip(store: StateBackend) -> None:
    day = date(2025, 8, 20)
    papers = [
        Paper(
            arxiv_id="2508.01234",
            title="Attention — again",
            abstract="Ünïcode abstract",
            authors=("A. One", "B. Two"),
            daily_date=day,
            published_at=datetime(2025, 8, 19, 17, 30, tzinfo=UTC),
            upvotes=42,
            ai_keywords=("llm", "agents"),
            source="hf",
        ),
        Paper(arxiv_id="2508.00001", title="Minimal"),
    ]
    assert store.load_papers(day, "hf") is None
    store.save_papers(day, "hf", papers)
    assert store.load_papers(day, "hf") == papers
    store.save_papers(day, "hf", [])
    assert store.load_papers(day, "hf") == []  # stored empty is not "never stored"
    assert store.load_papers(day, "feed:x") is None


def test_unreadable_papers_payload(sqlite_store: StateStore) -> None:
    store = sqlite_store
    day = date(2025, 8, 20)
    store.save_papers(day, "hf", [])
    store._db.execute("UPDATE papers SET payload = 'not json'")
    with pytest.raises(StateError, match="unreadable"):
        store.load_papers(day, "hf")


def test_feed_cache(store: StateBackend) -> None:
    cache = store.feed_cache
    url = "https://export.arxiv.org/rss/cs.AI"
    assert cache.get(url) is None
    cache.put(url, '"abc"', "Wed, 20 Aug 2025 04:00:00 GMT", b"<rss/>")
    assert cache.get(url) == ('"abc"', "Wed, 20 Aug 2025 04:00:00 GMT", b"<rss/>")
    cache.put(url, None, None, b"<rss>2</rss>")
    assert cache.get(url) == (None, None, b"<rss>2</rss>")


def test_no_secret_columns(sqlite_store: StateStore) -> None:
    store = sqlite_store
    columns = {
        r[1]
        for table in ("deliveries", "papers", "feed_cache", "meta")
        for r in store._db.fetch(f"PRAGMA table_info({table})")
    }
    assert not any("pass" in c or "secret" in c or "token" in c for c in columns)


# -- the lock ---------------------------------------------------------------------------------

HOLDER = textwrap.dedent(
    """
    import sys, time
    from digest.state import state_lock
    with state_lock(sys.argv[1], purpose="send"):
        print("LOCKED", flush=True)
        sys.stdin.readline()
    """
)


def _hold_lock(path: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(PROJECT)}
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "LOCKED"
    return proc


def _close(proc: subprocess.Popen[str]) -> None:
    for stream in (proc.stdin, proc.stdout):
        if stream is not None:
            stream.close()


def test_lock_contention_names_the_holder(path: Path) -> None:
    path.parent.mkdir(parents=True)
    proc = _hold_lock(path)
    try:
        with pytest.raises(StateLockedError) as info, state_lock(path, purpose="run"):
            pytest.fail("lock should be held by the child")
        message = str(info.value)
        assert f"another digest send (pid {proc.pid} on " in message
        assert f"holds {path}; wait for it or stop it" in message
        assert info.value.holder is not None and str(proc.pid) in info.value.holder
    finally:
        assert proc.stdin is not None
        proc.stdin.write("\n")
        proc.stdin.flush()
        proc.wait(10)
        _close(proc)
    # released cleanly: the sidecar is gone and we can take the lock
    assert not lock_paths(path)[1].exists()
    with state_lock(path, purpose="send") as info_written:
        assert info_written["pid"] == os.getpid()


def test_lock_released_when_holder_is_sigkilled(path: Path) -> None:
    path.parent.mkdir(parents=True)
    proc = _hold_lock(path)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    _close(proc)
    _, sidecar = lock_paths(path)
    assert json.loads(sidecar.read_text())["pid"] == proc.pid  # stale information left behind
    with state_lock(path, purpose="run"):
        holder = json.loads(sidecar.read_text())
        assert holder["pid"] == os.getpid() and holder["purpose"] == "run"
        assert holder["since"].endswith("+00:00")
    assert not sidecar.exists()


def test_lock_without_sidecar_information(path: Path) -> None:
    path.parent.mkdir(parents=True)
    proc = _hold_lock(path)
    try:
        lock_paths(path)[1].unlink()
        with (
            pytest.raises(StateLockedError, match="another digest process holds"),
            state_lock(path, purpose="run"),
        ):
            pass
    finally:
        proc.kill()
        proc.wait(10)
        _close(proc)


# -- the backend protocol, the transition rules, the factory -----------------------------------


def _put(store: StateBackend, who: str, status: str | None) -> None:
    """Give (``who``, EDITION) the status ``status`` through the public methods."""
    if status is None:
        return
    if status == "failed":
        store.mark_failed(who, EDITION, "550 no")
    elif status == "unknown":
        store.mark_unknown(who, EDITION, "boom")
    elif status == "skipped":
        store.mark_skipped(who, EDITION, SKIP_LATE)
    else:
        store.reopen(who, EDITION)
        if status in ("sending", "sent"):
            assert store.claim(who, EDITION, "<m@x>")
        if status == "sent":
            store.mark_sent(who, EDITION, "ok")


_APPLY = {
    Transition.CLAIM: lambda s, who: s.claim(who, EDITION, "<m2@x>"),
    Transition.SENT: lambda s, who: s.mark_sent(who, EDITION, "ok"),
    Transition.FAILED: lambda s, who: s.mark_failed(who, EDITION, "550 no"),
    Transition.DEFERRED: lambda s, who: s.mark_deferred(who, EDITION, "451 later"),
    Transition.UNKNOWN: lambda s, who: s.mark_unknown(who, EDITION, "boom"),
    Transition.SKIPPED: lambda s, who: s.mark_skipped(who, EDITION, SKIP_NO_PAPERS),
    Transition.EXPIRE: lambda s, who: (crash_claimers(s), s.recover_unknown()),
    Transition.REOPEN: lambda s, who: s.reopen(who, EDITION),
}


@pytest.mark.parametrize("start", [None, *DeliveryStatus], ids=lambda s: str(s or "absent"))
@pytest.mark.parametrize("transition", list(Transition), ids=str)
def test_backend_follows_the_transition_rules(
    store: StateBackend, transition: Transition, start: DeliveryStatus | None
) -> None:
    who = "a@example.org"
    _put(store, who, start)
    _APPLY[transition](store, who)
    row = store.get(who, EDITION)
    if may_move(transition, start):
        assert row is not None and row.status == TRANSITIONS[transition].target
    else:
        assert (row.status if row else None) == start


def test_sqlite_store_is_a_state_backend(sqlite_store: StateStore) -> None:
    store = sqlite_store
    assert isinstance(store, StateBackend)
    assert store.shared is False
    assert store.url == f"sqlite:///{store.path}"


def test_open_state_by_url(tmp_path: Path) -> None:
    with open_state(f"sqlite:///{tmp_path / 'a.sqlite3'}") as s:
        assert isinstance(s, StateStore) and s.path == tmp_path / "a.sqlite3"
    with pytest.raises(ConfigError, match=r"must start with sqlite:/// .* or postgresql://"):
        open_state("mysql://root:hunter2@db/x")
    with pytest.raises(ConfigError) as info:
        open_state("mysql://root:hunter2@db/x")
    assert "hunter2" not in str(info.value)


def test_default_state_url_is_the_state_path(tmp_path: Path) -> None:
    from digest.settings import load_settings

    assert load_settings(env_file=None).effective_state_url == "sqlite:///digest-state.sqlite3"
    settings = load_settings(env_file=None, state_path=tmp_path / "s.db")
    assert settings.effective_state_url == f"sqlite:///{tmp_path / 's.db'}"
    assert "sqlite:////" in settings.effective_state_url  # absolute: four slashes
    with pytest.raises(ConfigError, match="DIGEST_STATE_URL"):
        load_settings(env_file=None, state_url="redis://x")


def test_statuses_in_bulk(store: StateBackend) -> None:
    store.mark_skipped("a@example.org", "2025-08-19", SKIP_LATE)
    store.claim("a@example.org", EDITION, "<a@x>")
    store.claim("B@example.org", EDITION, "<b@x>")
    store.mark_sent("b@example.org", EDITION, "ok")
    store.claim("c@example.org", "2025-08-21", "<c@x>")
    assert store.statuses([EDITION, "2025-08-19"]) == {
        ("a@example.org", "2025-08-19"): "skipped",
        ("a@example.org", EDITION): "sending",
        ("b@example.org", EDITION): "sent",
    }
    assert store.statuses([EDITION], ["B@Example.org", "z@example.org"]) == {
        ("b@example.org", EDITION): "sent"
    }
    assert store.statuses([]) == {}


def test_feedback_of_a_send_s_subscribers_is_theirs_only_oldest_first(
    store: StateBackend,
) -> None:
    """A send reads the 👍/👎 of its owed subscribers only, FEEDBACK_CHUNK addresses per
    statement (a reader in the last chunk too), oldest first; each paper id one string."""
    from digest.models import Feedback
    from digest.state.store import FEEDBACK_CHUNK

    owed = [f"r{i}@example.org" for i in range(FEEDBACK_CHUNK + 3)]
    with store.transaction():
        for email in [*owed, "other@example.org"]:
            store.record_feedback(email, "2508.00002", "dislike")
            store.record_feedback(email, "2508.00001", "like")
    assert store.record_feedback("r0@example.org", "2508.00002", "like")  # changed their mind
    got = store.feedback(["R0@Example.org", *owed[1:], "never@example.org"])
    assert sorted(got) == sorted(owed)
    assert got["r0@example.org"] == Feedback(("2508.00001", "2508.00002"), ())
    assert got[owed[-1]] == Feedback(("2508.00001",), ("2508.00002",))
    assert got[owed[1]].likes[0] is got[owed[-1]].likes[0]
    assert store.feedback("r0@example.org") == {"r0@example.org": got["r0@example.org"]}
    assert store.feedback() == {**got, "other@example.org": got[owed[-1]]}
    assert store.feedback([]) == {}


def test_send_history_feedback_and_single_papers(store: StateBackend) -> None:
    from digest.models import Feedback

    assert store.claim("a@example.org", EDITION, "<a@x>", ["2508.00001", "2508.00002"])
    store.mark_sent("a@example.org", EDITION, "ok")
    assert store.claim("b@example.org", EDITION, "<b@x>", ["2508.00001"])  # still sending
    assert store.delivery_papers("A@example.org", EDITION) == ["2508.00001", "2508.00002"]
    assert store.sent_papers(["2508.00001", "2508.00003"]) == {
        "a@example.org": frozenset({"2508.00001"})
    }
    assert store.sent_papers(["2508.00001"], except_edition=EDITION) == {}
    assert store.record_feedback("a@example.org", "2508.00001", "like")
    assert not store.record_feedback("a@example.org", "2508.00001", "like")
    assert store.record_feedback("a@example.org", "2508.00002", "dislike")
    assert store.feedback() == {"a@example.org": Feedback(("2508.00001",), ("2508.00002",))}
    with pytest.raises(ValueError):
        store.record_feedback("a@example.org", "2508.00001", "meh")
    day = date(2025, 8, 20)
    store.save_papers(day, "hf", [Paper(arxiv_id="2508.00001", title="Listed")])
    store.save_paper(Paper(arxiv_id="2508.00009", title="Fetched alone"))
    found = store.find_papers(["2508.00001", "2508.00009", "2508.99999"])
    assert {k: p.title for k, p in found.items()} == {
        "2508.00001": "Listed",
        "2508.00009": "Fetched alone",
    }
