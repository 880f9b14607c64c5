"""Which (subscriber, edition) pairs are due at a given instant: pure functions, no I/O.

The daemon calls :func:`due` at every tick with the subscribers, a lookup into the state
file and the current UTC time; the state file, not the scheduler, remembers what was sent.

Time zones:
    * ``send_at`` and ``weekday`` of a subscriber are **local** to ``subscriber.tz``.
    * Every datetime taken or returned here is aware and in **UTC** (except where a name says
      ``local``); dates of editions are **UTC** days (the Daily Papers date).

Rules:
    * One scheduled instant per local date (daily) or per local week (weekly, on
      ``weekday``): ``send_at`` on that local date, converted to UTC with PEP 495 ``fold=0``.
      A local time that does not exist (spring forward) is shifted forward by the gap
      (02:30 on the New York spring-forward day is sent at 03:30 EDT); an ambiguous one (fall
      back) is the first occurrence (01:30 EDT, not 01:30 EST). So daylight-saving changes
      neither skip nor double a send.
    * A daily edition carries the most recent UTC day that had ended at the scheduled
      instant (:func:`edition_for`; for ``send_at`` within an hour of UTC midnight, the lag is
      fixed per year, :func:`daily_lag`); a weekly one carries the ISO week before the local
      send date.
    * Look-back: only instants in the last :data:`LOOKBACK_DAILY` (daily) or
      :data:`LOOKBACK_WEEKLY` (weekly) are considered. Of those, a pair whose state row is
      absent or ``owed`` is due; ``sent``, ``sending``, ``failed``, ``unknown`` and
      ``skipped`` rows are final. A due pair scheduled more than ``catchup`` ago is *late*:
      the daemon records it ``skipped (late)`` instead of sending it at an odd hour.
    * First sight: a subscriber with no row for any edition in the look-back is new (just
      added, re-activated after a long pause, or the daemon was down longer than the
      look-back). For them only the most recent instant counts, and only if it is within
      ``catchup``; nothing is recorded otherwise, so a new subscriber gets neither a flood of
      ``late`` rows nor an old edition. For a known subscriber, instants older than their
      oldest row in the look-back are ignored for the same reason.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Generic, Protocol, TypeVar
from zoneinfo import ZoneInfo

from digest.models import Edition

LOOKBACK_DAILY = timedelta(days=7)
"""How far back (from now) scheduled instants of a daily subscriber are considered."""
LOOKBACK_WEEKLY = timedelta(days=14)
"""How far back (from now) scheduled instants of a weekly subscriber are considered."""
DEFAULT_WEEKDAY = "monday"
"""Send day of a weekly subscriber whose ``weekday`` is unset."""
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
"""Weekday names, index = ``date.weekday()`` (Monday = 0)."""
PENDING_STATUSES = frozenset({"owed"})
"""State statuses that still owe the edition (besides no row at all)."""
WEEKEND = frozenset({5, 6})
"""``date.weekday()`` of Saturday and Sunday: Daily Papers lists no papers on these UTC days."""

_ONE_DAY = timedelta(days=1)


class Schedulable(Protocol):
    """What the schedule needs of a subscriber (:class:`digest.subscribers.Subscriber`)."""

    @property
    def email(self) -> str: ...  # lower-cased; identity in the state file
    @property
    def active(self) -> bool: ...
    @property
    def frequency(self) -> str: ...  # "daily" | "weekly"
    @property
    def weekday(self) -> str | None: ...  # local weekday name for weekly, e.g. "monday"
    @property
    def send_at(self) -> time: ...  # local wall-clock time, naive
    @property
    def tz(self) -> ZoneInfo: ...  # the subscriber's IANA time zone


S = TypeVar("S", bound=Schedulable)

StatusLookup = Callable[[str, str], str | None]
"""``lookup(email, edition_key)``: the state row's status (``sent``, ``owed``...) or ``None``."""


@dataclass(frozen=True, slots=True)
class DuePair(Generic[S]):
    """One edition owed to one subscriber.

    Attributes:
        subscriber: who.
        edition: which edition.
        scheduled_at: when it was scheduled (aware, UTC).
        late: True when more than the catch-up window has passed since ``scheduled_at``:
            record it ``skipped (late)`` instead of sending.
    """

    subscriber: S
    edition: Edition
    scheduled_at: datetime
    late: bool


def scheduled_instant(local_day: date, send_at: time, tz: ZoneInfo) -> datetime:
    """The UTC instant of ``send_at`` on ``local_day`` in ``tz``.

    Uses PEP 495 ``fold=0``: a nonexistent local time (spring forward) comes out shifted
    forward by the gap, an ambiguous one (fall back) is its first occurrence.

    Args:
        local_day: the date in ``tz``.
        send_at: the local wall-clock time (naive; any ``tzinfo`` or ``fold`` is ignored).
        tz: the subscriber's time zone.

    Returns:
        An aware UTC datetime.
    """
    wall = send_at.replace(tzinfo=None, fold=0)
    return datetime.combine(local_day, wall, tzinfo=tz).astimezone(UTC)


def weekday_index(name: str | None) -> int:
    """``date.weekday()`` of a weekday name (``"monday"`` → 0); ``None`` → :data:`DEFAULT_WEEKDAY`.

    Raises:
        ValueError: not a weekday name.
    """
    key = (name or DEFAULT_WEEKDAY).strip().lower()
    for i, full in enumerate(WEEKDAYS):
        if key in (full, full[:3]):
            return i
    raise ValueError(f"unknown weekday {name!r}: use one of {', '.join(WEEKDAYS)}")


def scheduled_instants(
    subscriber: Schedulable, start_utc: datetime, end_utc: datetime
) -> list[datetime]:
    """The subscriber's scheduled instants ``t`` with ``start_utc < t <= end_utc``, oldest first.

    One per local date (daily) or per local week on ``subscriber.weekday`` (weekly).
    Inactive subscribers are not filtered here.

    Args:
        subscriber: whose schedule (``send_at`` local to ``subscriber.tz``).
        start_utc: exclusive lower bound (aware; any zone, compared as instants).
        end_utc: inclusive upper bound (aware).

    Returns:
        Aware UTC datetimes, strictly increasing.
    """
    tz = subscriber.tz
    weekly = subscriber.frequency == "weekly"
    on_weekday = weekday_index(subscriber.weekday) if weekly else None
    # One local day of slack either side: the local date of an instant can differ from the
    # local date of the bounds by at most one day.
    day = start_utc.astimezone(tz).date() - _ONE_DAY
    last = end_utc.astimezone(tz).date() + _ONE_DAY
    out: list[datetime] = []
    while day <= last:
        if on_weekday is None or day.weekday() == on_weekday:
            instant = scheduled_instant(day, subscriber.send_at, tz)
            if start_utc < instant <= end_utc:
                out.append(instant)
        day += _ONE_DAY
    return out


def edition_for(subscriber: Schedulable, scheduled_utc: datetime) -> Edition:
    """The edition a subscriber gets at a scheduled instant.

    Daily: the most recent UTC day that had ended at ``scheduled_utc`` (a day's list is
    incomplete until it ends), i.e. the UTC date of ``scheduled_utc`` minus one day, with a
    fixed lag per year so that DST never repeats or skips a day (see :func:`daily_lag`). 07:00
    Asia/Tokyo on 2026-08-21 (= 2026-08-20T22:00Z) → ``2026-08-19``; 07:00 America/New_York
    on 2026-08-21 (= 11:00Z) → ``2026-08-20``.

    Weekly: the ISO week before the *local* send date, ranked over the whole week, key
    ``YYYY-Www``. Monday 2026-08-24 → ``2026-W34`` (2026-08-17..23).

    Args:
        subscriber: whose edition (frequency and time zone matter).
        scheduled_utc: the scheduled instant (aware; any zone).

    Returns:
        The edition.
    """
    tz = subscriber.tz
    local_day = scheduled_utc.astimezone(tz).date()
    if subscriber.frequency == "weekly":
        iso = (local_day - timedelta(days=7)).isocalendar()
        return Edition.weekly(iso.year, iso.week)
    return Edition.daily(local_day - timedelta(days=daily_lag(local_day, subscriber.send_at, tz)))


def daily_lag(local_day: date, send_at: time, tz: ZoneInfo) -> int:
    """Days between a local send date and the Daily Papers (UTC) date its edition carries.

    The most recent UTC day that has ended at ``send_at`` local time is the UTC date of that
    instant minus one. When ``send_at`` is within a daylight-saving offset of UTC midnight,
    that lag differs between summer and winter, and the change day would then either send
    the same edition twice (the second send a no-op: one local date without mail) or skip a
    UTC day. To give exactly one new edition per local date all year, the lag is fixed per
    year: the larger of its values on 1 January and 1 July of ``local_day``'s year (standard
    and daylight time in either hemisphere). For every other ``send_at`` both values agree
    and this is exactly "the most recent ended UTC day"; near UTC midnight the edition is, for
    half the year, one day older than it could be (still a day that has ended).

    Args:
        local_day: the send date, local to ``tz``.
        send_at: the local send time.
        tz: the subscriber's time zone.

    Returns:
        The lag in days (1 or 2 for real time zones).
    """
    lags = []
    for probe in (date(local_day.year, 1, 1), date(local_day.year, 7, 1)):
        utc_day = scheduled_instant(probe, send_at, tz).date()
        lags.append((probe - (utc_day - _ONE_DAY)).days)
    return max(lags)


def lookback_for(subscriber: Schedulable) -> timedelta:
    """:data:`LOOKBACK_WEEKLY` for weekly subscribers, else :data:`LOOKBACK_DAILY`."""
    return LOOKBACK_WEEKLY if subscriber.frequency == "weekly" else LOOKBACK_DAILY


_EDITION_SLACK = timedelta(days=10)
"""Margin around the look-back for :func:`lookback_edition_keys`: a local date differs from
the UTC date by at most a day, a daily edition lags its send date by at most two days, and a
weekly one carries the week before the send date (seven days)."""


def lookback_edition_keys(now_utc: datetime) -> list[str]:
    """Every edition key :func:`due` can ask about at ``now_utc``, whoever the subscriber.

    The daemon reads the status of all these editions in one query and hands :func:`due` a
    lookup into the result, instead of one query per subscriber and edition. A superset:
    daily keys of every UTC day, and weekly keys of every ISO week, from
    :data:`LOOKBACK_WEEKLY` plus a margin before ``now_utc`` to a day after it.

    Args:
        now_utc: the current instant (aware).

    Returns:
        ``YYYY-MM-DD`` and ``YYYY-Www`` keys, oldest first within each kind.
    """
    today = now_utc.astimezone(UTC).date()
    day = today - max(LOOKBACK_DAILY, LOOKBACK_WEEKLY) - _EDITION_SLACK
    daily: list[str] = []
    weekly: list[str] = []
    while day <= today + _ONE_DAY:
        daily.append(day.isoformat())
        iso = day.isocalendar()
        week = Edition.weekly(iso.year, iso.week).key
        if week not in weekly:
            weekly.append(week)
        day += _ONE_DAY
    return daily + weekly


def due(
    subscribers: Iterable[S],
    lookup: StatusLookup,
    now_utc: datetime,
    catchup: timedelta,
) -> list[DuePair[S]]:
    """The (subscriber, edition) pairs owed at ``now_utc``, oldest scheduled first.

    See the module docstring for the rules (look-back, first sight, lateness). Inactive
    subscribers are never due.

    Args:
        subscribers: the current subscribers.
        lookup: ``lookup(email, edition_key)`` → the state row's status or ``None``.
        now_utc: the current instant (aware).
        catchup: how late an edition may still be sent; later ones come back ``late=True``.

    Returns:
        Due pairs; ``late`` ones are to be recorded ``skipped (late)``, the others sent.
    """
    out: list[DuePair[S]] = []
    for sub in subscribers:
        if sub.active:
            out.extend(_due_one(sub, lookup, now_utc, catchup))
    out.sort(key=lambda p: (p.scheduled_at, p.edition.key, p.subscriber.email))
    return out


def _due_one(
    sub: S, lookup: StatusLookup, now_utc: datetime, catchup: timedelta
) -> list[DuePair[S]]:
    instants = scheduled_instants(sub, now_utc - lookback_for(sub), now_utc)
    # Two instants can map to the same daily edition (send_at near UTC midnight on a DST
    # change day): keep the later one, the state row makes it one send anyway.
    latest: dict[str, tuple[Edition, datetime]] = {}
    for instant in instants:
        edition = edition_for(sub, instant)
        latest[edition.key] = (edition, instant)
    ordered = sorted(latest.values(), key=lambda pair: pair[1])
    statuses = [lookup(sub.email, edition.key) for edition, _ in ordered]
    known = [i for i, status in enumerate(statuses) if status is not None]
    if not known:
        if not ordered:
            return []
        edition, instant = ordered[-1]
        if now_utc - instant > catchup:
            return []
        return [DuePair(sub, edition, instant, late=False)]
    out: list[DuePair[S]] = []
    for (edition, instant), status in zip(ordered[known[0] :], statuses[known[0] :], strict=True):
        if status is None or status in PENDING_STATUSES:
            out.append(DuePair(sub, edition, instant, late=now_utc - instant > catchup))
    return out


def may_be_empty(edition: Edition) -> bool:
    """True when an empty paper list is plausible: every day of the edition is a weekend.

    Daily Papers lists nothing on Saturdays and Sundays (UTC). An empty list for any other
    edition is suspicious (an outage or a fetch too early), so the daemon retries instead of
    recording ``no papers`` at once.
    """
    return all(day.weekday() in WEEKEND for day in edition.days)


def group_by_edition(pairs: Sequence[DuePair[S]]) -> list[tuple[Edition, list[DuePair[S]]]]:
    """Group pairs by edition key, editions in order of their earliest scheduled instant."""
    groups: dict[str, tuple[Edition, list[DuePair[S]]]] = {}
    for pair in sorted(pairs, key=lambda p: p.scheduled_at):
        groups.setdefault(pair.edition.key, (pair.edition, []))[1].append(pair)
    return list(groups.values())
