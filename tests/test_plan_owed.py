"""``plan_owed``: who is owed an edition, decided from data alone (no store, no I/O)."""

from __future__ import annotations

from digest.pipeline.send import plan_owed
from digest.subscribers import Subscriber


def subs(*emails: str, active: bool = True) -> list[Subscriber]:
    return [Subscriber(email=e, active=active) for e in emails]


def test_no_rows_everyone_active_is_owed_in_order() -> None:
    plan = plan_owed(subs("b@x.org", "a@x.org") + subs("off@x.org", active=False), {}, {})
    assert [s.email for s in plan.owed] == ["b@x.org", "a@x.org"]
    assert (plan.suppressed, plan.final, plan.reopen) == ([], [], [])


def test_suppression_wins_over_the_yaml_and_resend() -> None:
    plan = plan_owed(
        subs("a@x.org", "b@x.org"),
        {"b@x.org": "sent"},
        {"a@x.org": "bounced", "b@x.org": "unsubscribed"},
        resend=True,
    )
    assert plan.owed == []
    assert plan.suppressed == [("a@x.org", "bounced"), ("b@x.org", "unsubscribed")]
    # A final row keeps its status; an absent or claimable one is recorded skipped.
    assert plan.record_suppressed == [("a@x.org", "bounced")]


def test_final_rows_are_skipped_unless_reopened() -> None:
    statuses = {"s@x.org": "sent", "u@x.org": "unknown", "o@x.org": "owed", "f@x.org": "failed"}
    people = subs("s@x.org", "u@x.org", "o@x.org", "f@x.org")
    plain = plan_owed(people, statuses, {})
    assert [s.email for s in plain.owed] == ["o@x.org"]
    assert plain.final == ["s@x.org", "u@x.org", "f@x.org"] and plain.unknown == 1
    retry = plan_owed(people, statuses, {}, retry_unknown=True)
    assert [s.email for s in retry.owed] == ["u@x.org", "o@x.org"]
    assert retry.reopen == ["u@x.org"] and retry.keep_message_id == ["u@x.org"]
    everyone = plan_owed(people, statuses, {}, resend=True)
    assert len(everyone.owed) == 4 and everyone.reopen == ["s@x.org", "u@x.org", "f@x.org"]


def test_a_sending_row_is_never_reopened_on_a_shared_state_nor_in_a_dry_run() -> None:
    people, statuses = subs("a@x.org"), {"a@x.org": "sending"}
    assert plan_owed(people, statuses, {}, resend=True).reopen == ["a@x.org"]
    assert plan_owed(people, statuses, {}, resend=True, shared=True).final == ["a@x.org"]
    dry = plan_owed(people, statuses, {}, resend=True, dry_run=True)
    assert dry.final == ["a@x.org"] and dry.reopen == []


def test_a_dry_run_plans_no_write() -> None:
    plan = plan_owed(
        subs("a@x.org", "b@x.org"),
        {"b@x.org": "sent"},
        {"a@x.org": "manual"},
        resend=True,
        dry_run=True,
    )
    assert plan.record_suppressed == [] and plan.reopen == []
    assert [s.email for s in plan.owed] == ["b@x.org"]
