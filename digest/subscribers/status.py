"""One line per subscriber for operators (``digest subscribers``): status, schedule, bounces.

Combines the subscribers file (frequency, schedule, keywords, ``active``), the suppression
list (unsubscribed, bounced, complained, manual) and the state store (last edition sent,
bounce score).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from digest.bounces.policy import BouncePolicy, current_score
from digest.models import is_test_edition
from digest.schedule import scheduled_instants
from digest.state import StateBackend, SuppressionReason, address_key
from digest.subscribers.model import Subscriber

_NEXT_DUE_HORIZON = timedelta(days=8)
"""A weekly subscriber's next send is at most a week away."""


class SubscriberStatus(StrEnum):
    """What happens to a subscriber's next edition."""

    ACTIVE = "active"
    """Sent as scheduled."""
    PAUSED = "paused"
    """``active: false`` in the subscribers file."""
    UNSUBSCRIBED = "unsubscribed"
    """On the suppression list: unsubscribed."""
    BOUNCED = "bounced"
    """On the suppression list: hard bounce(s) or a soft-bounce score at the limit."""
    COMPLAINED = "complained"
    """On the suppression list: an abuse complaint."""
    SUPPRESSED = "suppressed"
    """On the suppression list by the operator (``digest suppress``)."""


_BY_REASON = {
    SuppressionReason.UNSUBSCRIBED: SubscriberStatus.UNSUBSCRIBED,
    SuppressionReason.BOUNCED: SubscriberStatus.BOUNCED,
    SuppressionReason.COMPLAINED: SubscriberStatus.COMPLAINED,
    SuppressionReason.MANUAL: SubscriberStatus.SUPPRESSED,
}


@dataclass(frozen=True, slots=True)
class SubscriberOverview:
    """One subscriber as ``digest subscribers`` shows it.

    Attributes:
        email: the normalized address.
        status: see :class:`SubscriberStatus`.
        why: for a suppressed address, the evidence and who/when (``550 5.1.1 … (smtp,
            2026-08-21)``); otherwise ``""``.
        frequency: ``daily`` or ``weekly``.
        next_due: the next scheduled send, in the subscriber's time zone (aware); ``None``
            when paused or suppressed.
        last_sent: the key of the last edition sent, or ``None``.
        last_sent_at: when it was sent (aware, UTC), or ``None``.
        bounce_score: the soft-bounce score as it stands now (resets after quiet days).
        hard_bounces: hard bounces counted since the last reset.
        keywords: the subscriber's keywords as written.
    """

    email: str
    status: SubscriberStatus
    why: str
    frequency: str
    next_due: datetime | None
    last_sent: str | None
    last_sent_at: datetime | None
    bounce_score: float
    hard_bounces: int
    keywords: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (datetimes as ISO 8601 strings)."""
        data = asdict(self)
        for key in ("next_due", "last_sent_at"):
            value = data[key]
            data[key] = value.isoformat() if value is not None else None
        data["status"] = str(self.status)
        data["keywords"] = list(self.keywords)
        return data


def overview(
    subscribers: Sequence[Subscriber],
    store: StateBackend,
    *,
    policy: BouncePolicy,
    now: datetime,
) -> list[SubscriberOverview]:
    """The :class:`SubscriberOverview` of each subscriber, in file order.

    Args:
        subscribers: from the subscribers file.
        store: the state store (suppressions, sent rows, bounce scores).
        policy: for the bounce score's reset.
        now: the current instant (aware).
    """
    suppressed = store.suppressions()
    scores = store.bounce_scores()
    last: dict[str, tuple[str, datetime | None]] = {}
    for row in store.list(statuses=["sent"]):
        if is_test_edition(row.edition):
            continue  # a test send (`send --to`) is nobody's edition
        at = row.sent_at or row.updated_at
        prev = last.get(row.subscriber)
        if prev is None or (prev[1] is not None and at is not None and at > prev[1]):
            last[row.subscriber] = (row.edition, at)
    out: list[SubscriberOverview] = []
    for sub in subscribers:
        key = address_key(sub.email)
        suppression = suppressed.get(key)
        why = ""
        if suppression is not None:
            status = _BY_REASON[suppression.reason]
            why = f"{suppression.evidence} ({suppression.actor}, {suppression.since:%Y-%m-%d})"
        elif not sub.active:
            status = SubscriberStatus.PAUSED
        else:
            status = SubscriberStatus.ACTIVE
        next_due = None
        if status is SubscriberStatus.ACTIVE:
            upcoming = scheduled_instants(sub, now, now + _NEXT_DUE_HORIZON)
            next_due = upcoming[0].astimezone(sub.tz) if upcoming else None
        score = current_score(scores.get(key), key, now, policy)
        sent = last.get(key)
        out.append(
            SubscriberOverview(
                email=key,
                status=status,
                why=why,
                frequency=str(sub.frequency),
                next_due=next_due,
                last_sent=sent[0] if sent else None,
                last_sent_at=sent[1] if sent else None,
                bounce_score=score.soft,
                hard_bounces=score.hard,
                keywords=tuple(str(k) for k in sub.keywords),
            )
        )
    return out


def filter_overview(
    rows: Iterable[SubscriberOverview],
    *,
    statuses: Iterable[str] = (),
    frequency: str | None = None,
) -> list[SubscriberOverview]:
    """Rows whose status is one of ``statuses`` (all if empty) and whose frequency matches."""
    wanted = set(statuses)
    return [
        r
        for r in rows
        if (not wanted or r.status in wanted) and (frequency is None or r.frequency == frequency)
    ]
