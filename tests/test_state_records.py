"""Events and pending sign-ups in the state file."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.conftest import MakeStore

NOW = datetime(2026, 8, 20, 12, 0, tzinfo=UTC)


def test_events_and_signups_round_trip(make_store: MakeStore) -> None:
    with make_store(now=lambda: NOW) as store:
        store.record_event(
            "Ada@Example.org", "unsubscribe", actor="web", request="req=1", detail={"via": "x"}
        )
        [event] = store.events("ada@example.org")
        assert (event.subscriber, event.action, event.actor, event.at) == (
            "ada@example.org",
            "unsubscribe",
            "web",
            NOW,
        )
        assert event.detail == {"via": "x"} and event.request == "req=1"
        store.add_signup(
            "ab12",
            "New@Example.org",
            name="Nu",
            keywords=["llm"],
            client="127.0.0.1",
            expires_at=NOW + timedelta(hours=48),
        )
        signup = store.signup("ab12")
        assert signup is not None and signup.address == "new@example.org"
        assert signup.keywords == ("llm",) and signup.confirmed_at is None
        assert store.count_signups(since=NOW - timedelta(hours=1), address="new@example.org") == 1
        assert store.count_signups(since=NOW - timedelta(hours=1), client="127.0.0.1") == 1
        assert store.count_signups(since=NOW + timedelta(seconds=1), client="127.0.0.1") == 0
        assert store.confirm_signup("ab12") and not store.confirm_signup("ab12")
        assert store.signup("nope") is None
        assert list(store.signup_addresses()) == ["new@example.org"]
