"""What readers removed from their ranking lives in the state store: every host honours it, and
the reader cache's file can be deleted without bringing it back."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from digest.ranking.readercache import KnownForgotten, ReaderCache
from tests.conftest import MakeStore

T = datetime(2026, 8, 21, 7, 0, tzinfo=UTC)


def test_removed_items_are_kept_by_the_state_and_seen_from_every_host(
    make_store: MakeStore, tmp_path: Path
) -> None:
    store = make_store()
    host_a = ReaderCache(tmp_path / "a.reader", state=store)
    host_b = ReaderCache(tmp_path / "b.reader", state=make_store())  # another host, same DB
    items = ["thumbs-up:2608.00100", "library:file:/x.bib#3"]
    assert host_a.forget("Ada@Example.org", items, actor="web", now=T) == 2
    assert host_a.forget("ada@example.org", items[:1], actor="web", now=T) == 0  # already
    assert host_b.forgotten(["ada@example.org", "bob@example.org"]) == {
        "ada@example.org": frozenset(items)
    }
    assert host_b.unforget("ada@example.org", [*items[:1], "never"]) == 1  # rated anew
    assert store.forgotten() == {"ada@example.org": frozenset(items[1:])}
    many = [f"r{i:04d}@example.org" for i in range(450)]  # more than one chunk of addresses
    for who in many[::50]:
        store.forget(who, ["thumbs-down:1"], actor="web")
    assert sorted(store.forgotten(many)) == many[::50]
    (tmp_path / "a.reader").unlink()  # the cache is derived data: nothing removed comes back
    assert ReaderCache(tmp_path / "a.reader", state=store).forgotten(["ada@example.org"]) == {
        "ada@example.org": frozenset(items[1:])
    }


def test_items_an_older_version_kept_in_the_cache_file_move_into_the_state(
    make_store: MakeStore, tmp_path: Path
) -> None:
    path = tmp_path / "state.reader"
    ReaderCache(path).close()  # the file as an older version made it, with one removed item
    with sqlite3.connect(path) as db:
        db.execute(
            "INSERT INTO forgotten VALUES ('ada@example.org', 'thumbs-up:1', ?, 'web')",
            (T.isoformat(),),
        )
    store = make_store()
    ReaderCache(path, state=store).close()
    ReaderCache(path, state=store).close()  # a second open moves nothing twice
    assert store.forgotten() == {"ada@example.org": frozenset({"thumbs-up:1"})}
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT count(*) FROM forgotten").fetchone() == (0,)


def test_the_context_child_reads_what_it_was_given_and_writes_nothing() -> None:
    known = KnownForgotten({"ada@example.org": frozenset({"thumbs-up:1"})})
    cache = ReaderCache(None, state=known)
    assert cache.forgotten(["ada@example.org", "bob@example.org"]) == {
        "ada@example.org": frozenset({"thumbs-up:1"})
    }
    with pytest.raises(RuntimeError, match="read-only"):
        cache.forget("ada@example.org", ["x"], actor="web", now=T)
