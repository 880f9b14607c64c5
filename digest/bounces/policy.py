"""The bounce policy: when bounces and complaints put an address on the suppression list.

Defaults follow Mailman 3 (``bounce_score_threshold: 5``, ``bounce_info_stale_after: 7d``,
one soft-bounce point a day at most) and listmonk (a hard bounce or a complaint blocks the
address at once):

* a hard bounce (SMTP 5xx for the recipient, a DSN with ``Status: 5.x.x``) counts 1; at
  :attr:`BouncePolicy.hard_limit` (default 1) the address is suppressed (``bounced``);
* a soft bounce (a DSN ``Action: failed`` with ``4.x.x``) adds 1 to the score, at most once per
  UTC day; at :attr:`BouncePolicy.soft_limit` (default 5) the address is suppressed;
* after :attr:`BouncePolicy.reset_after` (default 7 days) without any bounce, the score starts
  again from zero;
* a complaint (ARF) suppresses at once (``complained``) unless ``suppress_complaints`` is off.

Everything here is pure: :func:`next_score` computes, the caller stores
(:meth:`digest.state.StateBackend.record_bounces`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from digest.state import (
    BounceEvent,
    BounceKind,
    BounceScore,
    StateBackend,
    Suppression,
    SuppressionReason,
    address_key,
)

DEFAULT_HARD_LIMIT = 1
"""Hard bounces that suppress an address (listmonk: 1)."""
DEFAULT_SOFT_LIMIT = 5.0
"""Soft-bounce score that suppresses an address (Mailman 3 ``bounce_score_threshold``)."""
DEFAULT_RESET_DAYS = 7
"""Quiet days after which the score starts again (Mailman 3 ``bounce_info_stale_after``)."""


@dataclass(frozen=True, slots=True)
class BouncePolicy:
    """When bounces suppress an address.

    Attributes:
        hard_limit: hard bounces (within the reset window) that suppress; 0 = never.
        soft_limit: soft-bounce score that suppresses; 0 = never.
        reset_after: quiet time after which the score resets.
        suppress_complaints: whether one complaint suppresses.
    """

    hard_limit: int = DEFAULT_HARD_LIMIT
    soft_limit: float = DEFAULT_SOFT_LIMIT
    reset_after: timedelta = timedelta(days=DEFAULT_RESET_DAYS)
    suppress_complaints: bool = True

    @classmethod
    def from_settings(cls, settings: object) -> BouncePolicy:
        """The policy of DIGEST_BOUNCE_HARD_LIMIT, _SOFT_LIMIT, _RESET_DAYS, _COMPLAINTS."""
        return cls(
            hard_limit=int(getattr(settings, "bounce_hard_limit", DEFAULT_HARD_LIMIT)),
            soft_limit=float(getattr(settings, "bounce_soft_limit", DEFAULT_SOFT_LIMIT)),
            reset_after=timedelta(
                days=float(getattr(settings, "bounce_reset_days", DEFAULT_RESET_DAYS))
            ),
            suppress_complaints=bool(getattr(settings, "bounce_suppress_complaints", True)),
        )


def current_score(
    score: BounceScore | None, address: str, now: datetime, policy: BouncePolicy
) -> BounceScore:
    """``score`` as it stands at ``now``: zero after ``reset_after`` without a bounce."""
    if score is None:
        return BounceScore(address=address_key(address))
    if score.last_bounce_at is not None and now - score.last_bounce_at > policy.reset_after:
        return BounceScore(address=score.address)
    return score


def next_score(
    score: BounceScore | None,
    address: str,
    kind: BounceKind,
    now: datetime,
    policy: BouncePolicy,
) -> tuple[BounceScore, bool, SuppressionReason | None]:
    """Apply one bounce or complaint at ``now`` (aware) to the stored ``score``.

    Returns:
        ``(new score, whether this event counted, suppression reason or None)``.
    """
    base = current_score(score, address, now, policy)
    today = now.astimezone(UTC).date()
    if kind is BounceKind.COMPLAINT:
        reason = SuppressionReason.COMPLAINED if policy.suppress_complaints else None
        return base, True, reason
    if kind is BounceKind.HARD:
        new = replace(base, hard=base.hard + 1, last_bounce_at=now)
        hit = policy.hard_limit > 0 and new.hard >= policy.hard_limit
        return new, True, SuppressionReason.BOUNCED if hit else None
    if base.last_scored_day == today:  # soft: at most one point per UTC day
        return replace(base, last_bounce_at=now), False, None
    new = replace(base, soft=base.soft + 1, last_scored_day=today, last_bounce_at=now)
    hit = policy.soft_limit > 0 and new.soft >= policy.soft_limit
    return new, True, SuppressionReason.BOUNCED if hit else None


@dataclass(frozen=True, slots=True)
class BounceInput:
    """One bounce to record (see :func:`plan`).

    Attributes:
        address: the address it is about.
        kind: hard, soft or complaint.
        edition: the edition of the matched delivery, if any.
        message_id: our message's ``Message-ID``, if known.
        evidence: one line (SMTP reply, DSN ``Status``/``Diagnostic-Code``, ARF type).
    """

    address: str
    kind: BounceKind
    edition: str | None
    message_id: str | None
    evidence: str


def plan(
    store: StateBackend,
    inputs: list[BounceInput],
    *,
    policy: BouncePolicy,
    source: str,
    now: datetime,
) -> list[tuple[BounceEvent, BounceScore, Suppression | None]]:
    """The rows :meth:`StateBackend.record_bounces` writes for ``inputs`` (in order).

    Several inputs for one address are applied one after the other.

    Args:
        store: where the current scores come from.
        inputs: the bounces.
        policy: the policy.
        source: ``smtp`` or ``bounces`` (also the suppression's actor).
        now: the time to record (aware).
    """
    scores: dict[str, BounceScore | None] = {}
    out: list[tuple[BounceEvent, BounceScore, Suppression | None]] = []
    for item in inputs:
        address = address_key(item.address)
        if address not in scores:
            scores[address] = store.bounce_score(address)
        score, scored, reason = next_score(scores[address], address, item.kind, now, policy)
        scores[address] = score
        event = BounceEvent(
            address=address,
            kind=item.kind,
            at=now,
            edition=item.edition,
            message_id=item.message_id,
            evidence=item.evidence,
            source=source,
            scored=scored,
        )
        suppression = (
            Suppression(address, reason, now, item.evidence, source) if reason is not None else None
        )
        out.append((event, score, suppression))
    return out


def record_smtp_bounce(
    store: StateBackend,
    address: str,
    edition: str,
    message_id: str | None,
    reply: str,
    *,
    policy: BouncePolicy,
    now: datetime,
) -> bool:
    """Record a 5xx refusal at SMTP time as a hard bounce; True if the address is suppressed.

    Args:
        store: the state store.
        address: the refused recipient.
        edition: the edition being sent.
        message_id: our message's ``Message-ID``.
        reply: the server's reply (``550 5.1.1 ...``), kept as evidence.
        policy: the policy.
        now: the time to record (aware).
    """
    rows = plan(
        store,
        [BounceInput(address, BounceKind.HARD, edition, message_id, reply)],
        policy=policy,
        source="smtp",
        now=now,
    )
    store.record_bounces(rows)
    return store.suppression(address) is not None
