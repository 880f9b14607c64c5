"""Rates that protect the sender: complaints and hard bounces per edition and domain group.

Gmail asks bulk senders to keep the rate of mail users report as spam under 0.1 % and
starts refusing their mail at 0.3 %; Yahoo and Microsoft watch the same figure. ``digest``
computes, from the state store alone (so every process and host agrees)::

    complaint rate    = ARF complaints ÷ delivered          (per edition and domain group)
    hard-bounce rate  = hard bounces ÷ (delivered + failed)

A daily edition is one day's mailing; a complaint or bounce counts against the edition of
the message it is about (matched by our Message-ID or VERP address, :mod:`digest.bounces`),
so one that arrives days later still counts for the right day. Domain groups are those of
:mod:`digest.providers` (gmail, outlook, yahoo, other).

Each daemon tick (:meth:`SenderGuard.check`) reads the rates of the editions of the last
week (:data:`RATE_WINDOW_DAYS`; one query), logs a warning for a group above
``DIGEST_COMPLAINT_WARN_PERCENT`` (0.1 %), and *pauses* a group above
``DIGEST_COMPLAINT_PAUSE_PERCENT`` (0.3 %): the pause is a row of the state (it survives
restarts and holds for every sender of a shared state); its subscribers stay ``owed``
(``paused: …``) until ``digest resume GROUP``. After a resume only a complaint recorded
later can pause the group again. Thresholds compare exactly (``Fraction``): 3 of
1,000 is 0.3 %, not above it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from fractions import Fraction

from digest.clock import Clock, utc_now
from digest.metrics import NO_METRICS, Recorder
from digest.models import Edition, is_test_edition
from digest.providers import GROUPS, DomainGroup, domain_group
from digest.settings import Settings
from digest.state import Pause, StateBackend

log = logging.getLogger(__name__)

PAUSE_ACTOR = "daemon"
"""Who a pause is recorded as made by."""
RATE_WINDOW_DAYS = 7
"""The rates look at the editions sent in this many days (complaints come within days)."""
HARD_BOUNCE_WARN_PERCENT = 2.0
"""Hard-bounce rate above which ``digest doctor`` and ``digest subscribers`` flag a group,
percent (mailbox providers treat a list above about 2 % as unmaintained)."""


@dataclass(frozen=True, slots=True)
class GroupRate:
    """The deliveries, bounces and complaints of one edition to one domain group.

    Attributes:
        edition: the edition key.
        group: the recipient domain group.
        delivered: messages the transport accepted (``sent`` rows).
        failed: messages permanently refused (``failed`` rows).
        hard: hard bounces recorded against the edition (at SMTP time or later).
        soft: soft bounces.
        complaints: ARF complaints.
        last_complaint: when the latest complaint was recorded (aware, UTC), or ``None``.
    """

    edition: str
    group: DomainGroup
    delivered: int = 0
    failed: int = 0
    hard: int = 0
    soft: int = 0
    complaints: int = 0
    last_complaint: datetime | None = None

    @property
    def complaint_rate(self) -> Fraction:
        """Complaints ÷ delivered (0 when nothing was delivered)."""
        return Fraction(self.complaints, self.delivered) if self.delivered else Fraction(0)

    @property
    def hard_bounce_rate(self) -> Fraction:
        """Hard bounces ÷ attempted (delivered + failed; 0 when nothing was attempted)."""
        attempted = self.delivered + self.failed
        return Fraction(self.hard, attempted) if attempted else Fraction(0)

    def complaints_above(self, percent: float) -> bool:
        """Whether the complaint rate is strictly above ``percent`` (0 = never)."""
        return percent > 0 and self.complaint_rate * 100 > _exact(percent)

    def figures(self) -> str:
        """``4 complaints of 1,000 delivered (0.40 %)``."""
        return (
            f"{self.complaints:,} {'complaint' if self.complaints == 1 else 'complaints'} of "
            f"{self.delivered:,} delivered ({percent(self.complaint_rate)})"
        )

    def describe(self) -> str:
        """``2026-08-20 gmail: 4 complaints of 1,000 delivered (0.40 %)``."""
        return f"{self.edition} {self.group}: {self.figures()}"


def percent(rate: Fraction) -> str:
    """``0.40 %``: a rate with two decimals."""
    return f"{float(rate) * 100:.2f} %"


def _exact(value: float) -> Fraction:
    """A setting's decimal value as written (``0.3``, not the float nearest to it)."""
    return Fraction(repr(value))


def group_rates(store: StateBackend, editions: Iterable[str]) -> list[GroupRate]:
    """The :class:`GroupRate` of each (edition, group) with any delivery, bounce or
    complaint among ``editions`` (test sends excluded), by edition then group.

    One query (:meth:`~digest.state.StateBackend.sender_counts`); the domains it returns are
    grouped here (:func:`~digest.providers.domain_group`).
    """
    totals: dict[tuple[str, DomainGroup], dict[str, int]] = {}
    last: dict[tuple[str, DomainGroup], datetime] = {}
    for count in store.sender_counts(e for e in editions if not is_test_edition(e)):
        key = (count.edition, domain_group(count.domain))
        figures = totals.setdefault(key, {})
        figures[count.what] = figures.get(count.what, 0) + count.count
        if count.what == "complaint" and count.last_at is not None:
            last[key] = max(last.get(key, count.last_at), count.last_at)
    order = {g: i for i, g in enumerate(GROUPS)}
    return [
        GroupRate(
            edition,
            group,
            delivered=figures.get("sent", 0),
            failed=figures.get("failed", 0),
            hard=figures.get("hard", 0),
            soft=figures.get("soft", 0),
            complaints=figures.get("complaint", 0),
            last_complaint=last.get((edition, group)),
        )
        for (edition, group), figures in sorted(totals.items(), key=lambda i: _order(i[0], order))
    ]


def _order(key: tuple[str, DomainGroup], order: Mapping[DomainGroup, int]) -> tuple[str, int]:
    return key[0], order[key[1]]


def recent_editions(now: datetime) -> list[str]:
    """The keys of the editions sent in the last :data:`RATE_WINDOW_DAYS` days at ``now``:
    daily editions (a day's papers are sent the next day, or the one after east of UTC) and
    weekly ones (the ISO week before the send), oldest first."""
    today = now.astimezone(UTC).date()
    days = [today - timedelta(days=n) for n in range(RATE_WINDOW_DAYS + 2, -1, -1)]
    weeks = [d - timedelta(days=7) for d in days]
    weekly = {Edition.weekly(*w.isocalendar()[:2]).key for w in weeks}
    return [Edition.daily(d).key for d in days] + sorted(weekly)


def recent_rates(store: StateBackend, now: datetime) -> list[GroupRate]:
    """:func:`group_rates` of the editions sent in the last week (:func:`recent_editions`)."""
    return group_rates(store, recent_editions(now))


@dataclass(slots=True)
class RateCheck:
    """What :func:`check_rates` found.

    Attributes:
        warnings: rates above the warning threshold, by edition then group.
        to_pause: for each group to pause now (not paused, or only a complaint recorded
            after its last resume), the rate that trips it (the highest).
        worst: for each group, the rate of its edition with the highest complaint rate.
        worst_hard: for each group, the rate of its edition with the highest hard-bounce rate.
    """

    warnings: list[GroupRate] = field(default_factory=list)
    to_pause: dict[DomainGroup, GroupRate] = field(default_factory=dict)
    worst: dict[DomainGroup, GroupRate] = field(default_factory=dict)
    worst_hard: dict[DomainGroup, GroupRate] = field(default_factory=dict)


def check_rates(
    rates: Sequence[GroupRate],
    pauses: Mapping[str, Pause],
    *,
    warn_percent: float,
    pause_percent: float,
) -> RateCheck:
    """Which groups are above the thresholds, and which to pause: a pure decision.

    A group is paused when one of its editions' complaint rate is above ``pause_percent``,
    unless it is paused already, or it was resumed after that edition's latest complaint
    (the operator has seen it; a complaint recorded after the resume trips it again).

    Args:
        rates: the rates of the recent editions (:func:`recent_rates`).
        pauses: the latest pause of each group (``StateBackend.pauses()``).
        warn_percent: ``DIGEST_COMPLAINT_WARN_PERCENT`` (0 = no warnings).
        pause_percent: ``DIGEST_COMPLAINT_PAUSE_PERCENT`` (0 = never pause).
    """
    out = RateCheck()
    for rate in rates:
        worst = out.worst.get(rate.group)
        if worst is None or rate.complaint_rate > worst.complaint_rate:
            out.worst[rate.group] = rate
        hard = out.worst_hard.get(rate.group)
        if hard is None or rate.hard_bounce_rate > hard.hard_bounce_rate:
            out.worst_hard[rate.group] = rate
        if rate.complaints_above(warn_percent):
            out.warnings.append(rate)
        if not rate.complaints_above(pause_percent):
            continue
        if not _may_pause(rate, pauses.get(rate.group)):
            continue
        current = out.to_pause.get(rate.group)
        if current is None or rate.complaint_rate > current.complaint_rate:
            out.to_pause[rate.group] = rate
    return out


def _may_pause(rate: GroupRate, pause: Pause | None) -> bool:
    """Not paused now, and never resumed or resumed before ``rate``'s latest complaint."""
    if pause is None:
        return True
    if pause.lifted_at is None:
        return False  # paused already
    return rate.last_complaint is not None and rate.last_complaint > pause.lifted_at


class SenderGuard:
    """The daemon's check of the sender rates, once per tick (:meth:`check`).

    Args:
        settings: the thresholds (DIGEST_COMPLAINT_WARN_PERCENT, _PAUSE_PERCENT).
        store: the state store (rates, pauses).
        metrics: gets the highest rates per group.
        now: the clock (aware UTC).
    """

    def __init__(
        self,
        settings: Settings,
        store: StateBackend,
        *,
        metrics: Recorder = NO_METRICS,
        now: Clock = utc_now,
    ) -> None:
        self.settings = settings
        self.store = store
        self.metrics = metrics
        self.now = now
        self._warned: set[tuple[str, str, int, int]] = set()

    def check(self) -> RateCheck:
        """Read the recent rates, warn, pause the groups above the threshold, report.

        Each warning is logged once per figure (a new complaint or delivery logs it again).

        Raises:
            StateError: the state store failed.
        """
        settings = self.settings
        result = check_rates(
            recent_rates(self.store, self.now()),
            self.store.pauses(),
            warn_percent=settings.complaint_warn_percent,
            pause_percent=settings.complaint_pause_percent,
        )
        for group in GROUPS:
            worst, hard = result.worst.get(group), result.worst_hard.get(group)
            self.metrics.sender_rates(
                group,
                float(worst.complaint_rate) if worst else 0.0,
                float(hard.hard_bounce_rate) if hard else 0.0,
            )
        for rate in result.warnings:
            key = (rate.edition, rate.group, rate.complaints, rate.delivered)
            if key in self._warned:
                continue
            self._warned.add(key)
            log.warning(
                "complaint rate %s, above %g %% (DIGEST_COMPLAINT_WARN_PERCENT); Gmail wants it "
                "under 0.1 %% and refuses mail at 0.3 %%",
                rate.describe(),
                settings.complaint_warn_percent,
            )
        for group, rate in result.to_pause.items():
            evidence = (
                f"{rate.describe()}, above {settings.complaint_pause_percent:g} % "
                "(DIGEST_COMPLAINT_PAUSE_PERCENT)"
            )
            if self.store.pause_group(group, evidence=evidence, actor=PAUSE_ACTOR, now=self.now()):
                log.error(
                    "paused sending to %s: %s; its subscribers stay owed until `digest resume %s`",
                    group,
                    evidence,
                    group,
                )
        return result


def paused_groups(store: StateBackend) -> frozenset[str]:
    """The domain groups paused now."""
    return frozenset(g for g, p in store.pauses().items() if p.active)
