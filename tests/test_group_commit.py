"""Group commit of state writes (:mod:`digest.state.group`) on both backends.

The backends' ``transaction()`` blocks, the group committer's batches (forced by holding the
state thread on a first write until the others are queued), its fallback when a write of a
batch fails, exactly-once with two concurrent senders on one PostgreSQL state, and how many
transactions a send through a pool of 8 costs (counted by the connector's commit hook).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from digest.delivery.engine import send_all
from digest.errors import StateError
from digest.state import DeliveryStatus, ProcessedMessage, StateBackend, open_state
from digest.state.group import GroupCommitter
from tests.conftest import MakeStore
from tests.factories import (
    EDITION,
    FakeClock,
    build,
    by_recipient,
    emails,
    smtp_settings,
    stream,
)
from tests.smtpserver import SMTPTestServer

WAIT_S = 30.0
"""Bound of every wait for a sub-second event (the machine may be loaded)."""

T0 = datetime(2026, 8, 20, 6, 0, tzinfo=UTC)


def _rows(store: StateBackend) -> list[tuple[Any, ...]]:
    """Every delivery row and the papers each carries, comparable across stores."""
    return [
        (
            r.subscriber,
            r.edition,
            str(r.status),
            r.detail,
            r.message_id,
            r.attempts,
            r.created_at,
            r.updated_at,
            r.sent_at,
            r.last_code,
            r.last_error,
            tuple(store.delivery_papers(r.subscriber, r.edition)),
        )
        for r in store.list()
    ]


def _script(
    store: StateBackend,
) -> list[tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]]:
    """A run's writes in order: claims, every kind of mark, refused claims, a re-claim."""
    return [
        (store.claim, ("a@example.org", EDITION, "<a1@x>", ("2508.00001", "2508.00002")), {}),
        (store.claim, ("B@Example.org", EDITION, "<b1@x>", ("2508.00003",)), {}),
        (store.claim, ("c@example.org", EDITION, "<c1@x>"), {}),
        (store.claim, ("d@example.org", EDITION, "<d1@x>"), {}),
        (store.claim, ("a@example.org", EDITION, "<a2@x>"), {}),  # refused: sending
        (store.mark_sent, ("a@example.org", EDITION, "2.0.0 Ok: queued as 1"), {"code": 250}),
        (store.mark_failed, ("b@example.org", EDITION, "5.1.1 no such user", 550), {}),
        (store.mark_deferred, ("c@example.org", EDITION, "4.2.0 try later", 451), {}),
        (store.mark_unknown, ("d@example.org", EDITION, "reply lost"), {"attempts": 2}),
        (store.claim, ("a@example.org", EDITION, "<a3@x>"), {}),  # refused: sent
        (store.claim, ("c@example.org", EDITION, "<c2@x>", ("2508.00004",)), {}),  # owed again
        (store.mark_skipped, ("e@example.org", EDITION, "no papers"), {}),
    ]


class Held:
    """A first write that holds the state thread until released (the others queue meanwhile)."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()

    def __call__(self) -> str:
        self.started.set()
        assert self.release.wait(WAIT_S), "never released"
        return "held"


def _grouped(
    committer: GroupCommitter,
    writes: list[tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]],
) -> list[concurrent.futures.Future[Any]]:
    """Submit ``writes`` while the state thread is held, so they form one batch."""
    held = Held()
    first = committer.submit(held)
    assert held.started.wait(WAIT_S)
    futures = [committer.submit(fn, *args, **kwargs) for fn, args, kwargs in writes]
    held.release.set()
    assert first.result(WAIT_S) == "held"
    concurrent.futures.wait(futures, WAIT_S)
    return futures


# -- the backends' transaction() ------------------------------------------------------------


def test_transaction_commits_its_writes_together_and_hides_them_until_then(
    make_store: MakeStore,
) -> None:
    store, other = make_store(), make_store()  # two processes' connections
    seen: list[list[str]] = []
    with store.transaction():
        assert store.claim("a@example.org", EDITION, "<a@x>")
        store.mark_sent("b@example.org", EDITION, "ok")
        # This thread reads its own uncommitted writes; another connection does not see them.
        assert {r.subscriber for r in store.list()} == {"a@example.org", "b@example.org"}
        reader = threading.Thread(
            target=lambda: seen.append([r.subscriber for r in other.list()]), daemon=True
        )
        reader.start()
        reader.join(WAIT_S)
        assert seen == [[]]
    assert {r.subscriber: str(r.status) for r in other.list()} == {
        "a@example.org": "sending",
        "b@example.org": "sent",
    }


def test_an_exception_leaving_the_block_rolls_every_write_back(make_store: MakeStore) -> None:
    store = make_store()
    with pytest.raises(RuntimeError, match="boom"), store.transaction():
        assert store.claim("a@example.org", EDITION, "<a@x>", ("2508.00001",))
        store.mark_sent("b@example.org", EDITION, "ok")
        raise RuntimeError("boom")
    assert store.list() == []
    assert store.delivery_papers("a@example.org", EDITION) == []
    assert store.claim("a@example.org", EDITION, "<a@x>")  # the store is usable afterwards


def test_a_write_that_fails_inside_the_block_is_rolled_back_alone(make_store: MakeStore) -> None:
    store = make_store()
    processed = ProcessedMessage("sha256:" + "0" * 64, None, T0, "ignored")
    assert store.mark_processed(processed)
    with store.transaction():
        assert store.claim("a@example.org", EDITION, "<a@x>")
        with pytest.raises(StateError, match="already processed"):
            store.record_bounces([], processed=processed)  # a database-level refusal
        store.mark_sent("a@example.org", EDITION, "ok")
        with store.transaction():  # nested: a savepoint
            store.mark_skipped("c@example.org", EDITION, "late")
    assert {r.subscriber: str(r.status) for r in store.list()} == {
        "a@example.org": "sent",
        "c@example.org": "skipped",
    }


# -- the group committer ------------------------------------------------------------------


@pytest.fixture
def two_states(
    state_url: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[tuple[StateBackend, StateBackend]]:
    """Two separate fresh states of the same backend, each with its own fixed clock."""
    if state_url.startswith("sqlite"):
        other = f"sqlite:///{tmp_path / 'other' / 'state.sqlite3'}"
    else:
        other = request.getfixturevalue("pg_server").fresh_url()
    first = open_state(state_url, now=FakeClock(T0))
    second = open_state(other, now=FakeClock(T0))
    try:
        yield first, second
    finally:
        first.close()
        second.close()


def test_batched_writes_give_the_same_rows_and_results_as_one_by_one(
    two_states: tuple[StateBackend, StateBackend],
) -> None:
    alone, grouped = two_states
    expected = [fn(*args, **kwargs) for fn, args, kwargs in _script(alone)]
    assert expected == [True, True, True, True, False, None, None, None, None, False, True, None]

    committer = GroupCommitter(grouped)
    try:
        futures = _grouped(committer, _script(grouped))
    finally:
        committer.shutdown()
    assert [f.result() for f in futures] == expected
    assert _rows(grouped) == _rows(alone)
    assert committer.stats.groups == 1 and committer.stats.largest == len(expected)
    assert committer.stats.fallbacks == 0


def test_one_failing_write_gives_the_others_of_its_batch_their_own_results(
    make_store: MakeStore,
) -> None:
    store = make_store()
    processed = ProcessedMessage("sha256:" + "1" * 64, None, T0, "ignored")
    assert store.mark_processed(processed)
    assert store.claim("taken@example.org", EDITION, "<t@x>")

    def buggy() -> None:
        raise ZeroDivisionError("a bug in one caller")

    writes: list[tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]] = [
        (store.claim, ("a@example.org", EDITION, "<a@x>"), {}),
        (store.record_bounces, ([],), {"processed": processed}),  # refused by the database
        (store.claim, ("taken@example.org", EDITION, "<t2@x>"), {}),  # refused claim: False
        (buggy, (), {}),
        (store.mark_sent, ("b@example.org", EDITION, "ok"), {}),
    ]
    committer = GroupCommitter(store)
    try:
        futures = _grouped(committer, writes)
    finally:
        committer.shutdown()
    assert futures[0].result() is True
    assert isinstance(futures[1].exception(), StateError)
    assert "already processed" in str(futures[1].exception())
    assert futures[2].result() is False
    assert isinstance(futures[3].exception(), ZeroDivisionError)
    assert futures[4].result() is None
    assert committer.stats.fallbacks == 1
    assert {r.subscriber: str(r.status) for r in store.list()} == {
        "a@example.org": "sending",
        "b@example.org": "sent",
        "taken@example.org": "sending",
    }
    assert store.get("taken@example.org", EDITION).message_id == "<t@x>"  # type: ignore[union-attr]


def test_keyed_writes_of_a_batch_are_applied_in_key_order(make_store: MakeStore) -> None:
    store = make_store()
    committer = GroupCommitter(store)
    order: list[str] = []

    def claim(email: str) -> bool:
        order.append(email)
        return store.claim(email, EDITION, f"<{email}>")

    held = Held()
    first = committer.submit(held)
    assert held.started.wait(WAIT_S)
    names = ["m@example.org", "c@example.org", "x@example.org", "a@example.org"]
    futures = [committer.submit_keyed((n, EDITION), claim, n) for n in names]
    held.release.set()
    try:
        assert first.result(WAIT_S) == "held"
        assert all(f.result(WAIT_S) for f in futures)
    finally:
        committer.shutdown()
    assert order == sorted(names)


def test_a_cancelled_write_is_not_applied_and_shutdown_refuses_new_ones(
    make_store: MakeStore,
) -> None:
    store = make_store()
    committer = GroupCommitter(store)
    held = Held()
    first = committer.submit(held)
    assert held.started.wait(WAIT_S)
    dropped = committer.submit(store.claim, "a@example.org", EDITION, "<a@x>")
    assert dropped.cancel()
    kept = committer.submit(store.claim, "b@example.org", EDITION, "<b@x>")
    held.release.set()
    committer.shutdown()
    assert first.result() == "held" and kept.result() is True
    assert [r.subscriber for r in store.list()] == ["b@example.org"]
    with pytest.raises(RuntimeError, match="after shutdown"):
        committer.submit(store.claim, "c@example.org", EDITION, "<c@x>")


# -- through the send engine ------------------------------------------------------------------

MESSAGES = 64
POOL = 8
SLOW_COMMIT_S = 0.01
"""A disk whose fsync takes 10 ms (a busy shared disk): commits cost what they cost in
production, whatever the test machine's disk."""


async def test_a_pool_of_8_commits_fewer_transactions_than_writes(make_store: MakeStore) -> None:
    """Regression: each claim and each mark used to be its own transaction (2 per message)."""
    store = make_store()
    commits: list[float] = []

    def slow_commit() -> None:  # runs on the committing thread, before the commit
        commits.append(time.monotonic())
        time.sleep(SLOW_COMMIT_S)

    store._db.on_commit = slow_commit  # type: ignore[attr-defined]
    batch = [build(e) for e in emails(MESSAGES)]
    with SMTPTestServer() as server:
        settings = smtp_settings(server, smtp_concurrency=POOL)
        summary = await send_all(stream(batch), store=store, settings=settings)
        received = by_recipient(server.messages)
    store._db.on_commit = None  # type: ignore[attr-defined]
    assert summary.sent == MESSAGES
    assert sorted(received) == sorted(emails(MESSAGES))
    assert all(len(copies) == 1 for copies in received.values())
    assert {str(r.status) for r in store.list()} == {"sent"}
    # One claim and one mark per message; unbatched, that is 2 × 64 = 128 commits.
    assert 1 <= len(commits) <= MESSAGES, f"{len(commits)} commits for {2 * MESSAGES} writes"


async def test_a_send_cancelled_while_its_claims_commit_hands_every_claimed_row_back(
    make_store: MakeStore,
) -> None:
    """A cancelled waiter still learns its claim's result: claimed rows go back to owed."""
    store = make_store()
    committing, release = threading.Event(), threading.Event()

    def hold() -> None:  # the state thread: hold the first commit until released
        if not release.is_set():
            committing.set()
            release.wait(WAIT_S)

    store._db.on_commit = hold  # type: ignore[attr-defined]
    batch = [build(e) for e in emails(16)]
    with SMTPTestServer() as server:
        settings = smtp_settings(server, smtp_concurrency=POOL)
        task = asyncio.create_task(send_all(stream(batch), store=store, settings=settings))
        assert await asyncio.to_thread(committing.wait, WAIT_S), "no claim was committed"
        task.cancel()
        await asyncio.sleep(0.05)  # the loop delivers the cancellation to every worker
        release.set()
        done, _ = await asyncio.wait({task}, timeout=WAIT_S)
        assert done == {task} and task.cancelled()
        received = server.messages
    store._db.on_commit = None  # type: ignore[attr-defined]
    rows = store.list()
    assert received == []
    assert rows, "the held commit claimed at least one row"
    assert {(str(r.status), r.last_error, r.attempts) for r in rows} == {
        ("owed", "stopped before sending", 0)
    }


async def test_two_senders_on_one_postgresql_state_deliver_each_message_once(
    pg_url: str,
) -> None:
    stores = [open_state(pg_url) for _ in range(2)]
    batch = [build(e) for e in emails(120)]
    try:
        with SMTPTestServer(data_delay_ms=2) as server:
            settings = smtp_settings(server, smtp_concurrency=POOL)
            summaries = await asyncio.wait_for(
                asyncio.gather(
                    *(send_all(stream(batch), store=s, settings=settings) for s in stores)
                ),
                WAIT_S * 4,
            )
            received = by_recipient(server.messages)
        assert sum(s.sent for s in summaries) == len(batch)
        assert sum(s.skipped for s in summaries) == len(batch)
        assert sorted(received) == sorted(emails(120))
        assert all(len(copies) == 1 for copies in received.values())
        rows = stores[0].list(edition=EDITION)
        assert len(rows) == len(batch)
        assert {r.status for r in rows} == {DeliveryStatus.SENT}
    finally:
        for s in stores:
            s.close()


async def test_one_connection_commits_each_mark_with_the_next_claim(
    make_store: MakeStore,
) -> None:
    """Regression: with one connection nothing can share a commit but a message's mark and
    the next message's claim; they used to be two transactions (2 per message)."""
    messages = 20
    store = make_store()
    commits: list[None] = []
    store._db.on_commit = lambda: commits.append(None)  # type: ignore[attr-defined]
    batch = [build(e) for e in emails(messages)]
    # The relay takes 5 ms per message, as any real one does: the producer has queued the next
    # message by the time a mark is written, however busy the machine (with an instant relay
    # and a loaded machine, a mark could find the queue still empty and commit alone).
    with SMTPTestServer(data_delay_ms=5) as server:
        settings = smtp_settings(server, smtp_concurrency=1)
        summary = await send_all(stream(batch), store=store, settings=settings)
        received = by_recipient(server.messages)
    store._db.on_commit = None  # type: ignore[attr-defined]
    assert summary.sent == messages
    assert all(len(received[m.subscriber]) == 1 for m in batch)
    assert {str(r.status) for r in store.list()} == {"sent"}
    # The first claim alone, then each mark with the next claim, then the last mark.
    assert len(commits) <= messages + 1, f"{len(commits)} commits for {messages} messages"
