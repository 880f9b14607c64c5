"""The bounce policy (Mailman 3 / listmonk defaults): hard ×1, soft 5 once a day, 7-day reset."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from digest.bounces.policy import BouncePolicy, next_score
from digest.state import BounceKind, BounceScore

T0 = datetime(2026, 8, 21, 9, 0, tzinfo=UTC)
ADA = "ada@example.org"
DEFAULT = BouncePolicy()


def soft_days(days: list[float], policy: BouncePolicy = DEFAULT) -> list[tuple[float, bool]]:
    """Apply one soft bounce at T0 + each day offset; return (score, suppressed) after each."""
    score: BounceScore | None = None
    out = []
    for d in days:
        score, _scored, reason = next_score(
            score, ADA, BounceKind.SOFT, T0 + timedelta(days=d), policy
        )
        out.append((score.soft, reason is not None))
    return out


def test_one_hard_bounce_suppresses() -> None:
    score, scored, reason = next_score(None, ADA, BounceKind.HARD, T0, DEFAULT)
    assert (score.hard, scored, reason) == (1, True, "bounced")


def test_hard_limit_two_needs_two_and_zero_never_suppresses() -> None:
    two = BouncePolicy(hard_limit=2)
    s1, _, r1 = next_score(None, ADA, BounceKind.HARD, T0, two)
    s2, _, r2 = next_score(s1, ADA, BounceKind.HARD, T0 + timedelta(hours=1), two)
    assert (r1, r2, s2.hard) == (None, "bounced", 2)
    assert next_score(None, ADA, BounceKind.HARD, T0, BouncePolicy(hard_limit=0))[2] is None


def test_soft_bounces_count_once_a_day_and_suppress_at_five() -> None:
    # Three bounces on day 0 count once; one a day after that reaches 5 on day 4.
    result = soft_days([0, 0.1, 0.2, 1, 2, 3, 4])
    assert result == [
        (1, False),
        (1, False),
        (1, False),
        (2, False),
        (3, False),
        (4, False),
        (5, True),
    ]


def test_soft_score_resets_after_seven_quiet_days() -> None:
    result = soft_days([0, 1, 2, 3, 11, 12])  # 8 quiet days between day 3 and day 11
    assert [score for score, _ in result] == [1, 2, 3, 4, 1, 2]
    assert not any(suppressed for _, suppressed in result)
    # exactly seven days later is not yet "more than seven quiet days"
    assert [score for score, _ in soft_days([0, 7])] == [1, 2]


def test_complaint_suppresses_unless_turned_off() -> None:
    assert next_score(None, ADA, BounceKind.COMPLAINT, T0, DEFAULT)[2] == "complained"
    off = BouncePolicy(suppress_complaints=False)
    assert next_score(None, ADA, BounceKind.COMPLAINT, T0, off)[2] is None
