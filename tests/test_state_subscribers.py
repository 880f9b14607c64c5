"""The subscriber list's tables in the state (schema v6), on SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses
import threading

from digest.state import StoredList, StoredSubscriber
from digest.state.migrate import migrate_state
from tests.conftest import MakeStore


def row(email: str, position: int = 0, **fields: object) -> StoredSubscriber:
    entry = f"  - email: {email}\n" + "".join(f"    {k}: {v}\n" for k, v in fields.items())
    return StoredSubscriber(
        email,
        position,
        bool(fields.get("active", True)),
        "daily",
        {"email": email, **fields},
        entry,
    )


def test_each_change_takes_the_next_list_version_and_readers_follow_it(
    make_store: MakeStore,
) -> None:
    store = make_store()
    assert store.subscriber_list() == StoredList()  # never written: an empty list
    v1 = store.add_subscriber(row("ada@example.org"))
    v2 = store.add_subscriber(row("bob@example.org"))
    assert (v1, v2) == (1, 2)
    assert store.add_subscriber(row("ADA@example.org")) is None  # the key is normalized
    ada = store.stored_subscriber("Ada@Example.org")
    assert ada is not None and (ada.position, ada.version, ada.active) == (0, 1, True)
    assert store.stored_subscriber("bob@example.org").position == 1  # type: ignore[union-attr]
    # A change is written only over the version it was made from.
    assert store.change_subscriber(row("ada@example.org", name="Ada"), expect=1) == 3
    assert store.change_subscriber(row("ada@example.org", name="Stale"), expect=1) is None
    assert store.stored_subscriber("ada@example.org").fields["name"] == "Ada"  # type: ignore[union-attr]
    assert [r.email for r in store.subscribers_since(2)] == ["ada@example.org"]
    assert store.remove_subscriber("bob@example.org") == 4
    assert store.remove_subscriber("bob@example.org") is None
    listed = store.subscriber_list()
    assert (listed.version, listed.entries) == (4, 1)


def test_the_list_is_read_in_chunks_in_order_and_filtered(make_store: MakeStore) -> None:
    store = make_store()
    rows = [row(f"r{i:03}@example.org", position=i, active=i % 3 != 0) for i in range(250)]
    text = StoredList(
        head="# hi\nsubscribers:\n", tail="# bye\n", indent=2, defaults={"max_papers": 5}
    )
    version = store.save_subscribers([(r, -1) for r in reversed(rows)], added=250, text=text)
    chunks = list(store.stored_subscribers(chunk=100))
    assert [len(c) for c in chunks] == [100, 100, 50]
    assert [r.email for c in chunks for r in c] == [r.email for r in rows]
    assert {r.version for c in chunks for r in c} == {version}
    active = [r.email for c in store.stored_subscribers(active=True, chunk=7) for r in c]
    assert active == [r.email for r in rows if r.active]
    assert [c for c in store.stored_subscribers(frequency="weekly")] == []
    listed = store.subscriber_list()
    assert (listed.entries, listed.head, listed.tail, listed.defaults) == (
        250,
        "# hi\nsubscribers:\n",
        "# bye\n",
        {"max_papers": 5},
    )
    # A moved row keeps its version through the next import; a changed one gets the new one.
    kept = store.stored_subscriber("r001@example.org")
    assert kept is not None
    moved = dataclasses.replace(kept, position=500)
    changed = row("r002@example.org", position=2, name="Changed")
    saved = [(moved, kept.version), (changed, version)]
    assert store.save_subscribers(saved, added=0, text=text) == version + 1
    assert store.stored_subscriber("r001@example.org").version == version  # type: ignore[union-attr]
    assert store.stored_subscriber("r002@example.org").version == version + 1  # type: ignore[union-attr]
    # A row changed by another writer since it was read: nothing is written.
    stale = [(row("r003@example.org", position=3, name="Late"), version - 1), (moved, version)]
    assert store.save_subscribers(stale, added=0, text=text) is None
    assert store.stored_subscriber("r003@example.org").fields.get("name") is None  # type: ignore[union-attr]
    assert store.subscriber_list().version == version + 1


def test_concurrent_changes_of_one_row_lose_nothing(make_store: MakeStore) -> None:
    """Writers that read, change and write back with the version they read: each retries
    on a conflict, so every increment lands (the later commit wins, none is lost)."""
    store = make_store()
    store.add_subscriber(row("ada@example.org", max_papers=0))
    other = make_store()

    def bump(s: object, times: int) -> None:
        for _ in range(times):
            while True:
                current = s.stored_subscriber("ada@example.org")  # type: ignore[attr-defined]
                n = current.fields["max_papers"] + 1
                new = row("ada@example.org", max_papers=n)
                if s.change_subscriber(new, expect=current.version) is not None:  # type: ignore[attr-defined]
                    break

    threads = [threading.Thread(target=bump, args=(s, 20)) for s in (store, other, store)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    final = store.stored_subscriber("ada@example.org")
    assert final is not None and final.fields["max_papers"] == 60
    assert store.subscriber_list().version == 61


def test_outbox_and_unsubscribed_entries(make_store: MakeStore) -> None:
    store = make_store()
    store.add_subscriber(row("ada@example.org"))
    store.add_subscriber(row("bob@example.org", active=False))
    store.suppress("ada@example.org", "unsubscribed", evidence="one-click", actor="web")
    store.suppress("bob@example.org", "unsubscribed", evidence="one-click", actor="web")
    assert store.unsubscribed_in_list() == ["ada@example.org"]  # bob is paused already
    store.queue_list_change("Ada@example.org", '{"kind": "active"}')
    store.queue_list_change("bob@example.org", '{"kind": "fields"}')
    changes = store.list_changes()
    assert [(email, change) for _, email, change in changes] == [
        ("ada@example.org", '{"kind": "active"}'),
        ("bob@example.org", '{"kind": "fields"}'),
    ]
    store.forget_list_changes([changes[0][0]])
    assert [c[1] for c in store.list_changes()] == ["bob@example.org"]


def test_state_migrate_copies_the_list(make_store: MakeStore, tmp_path: object) -> None:
    from digest.state import open_state

    source = make_store()
    store_rows = [row(f"r{i}@example.org", position=i) for i in range(3)]
    text = StoredList(head="subscribers:\n", tail="", indent=2, defaults={})
    source.save_subscribers([(r, -1) for r in store_rows], added=3, text=text)
    source.queue_list_change("r1@example.org", "{}")
    with open_state(f"sqlite:///{tmp_path}/copy.sqlite3") as target:
        copied = migrate_state(source, target)
        assert copied["subscribers"] == 3 and copied["subscriber_list"] == 1
        assert [r.email for c in target.stored_subscribers() for r in c] == [
            r.email for r in store_rows
        ]
        assert target.subscriber_list() == source.subscriber_list()
        target.queue_list_change("r2@example.org", "{}")  # new ids follow the copied ones
        assert len({c[0] for c in target.list_changes()}) == 2
