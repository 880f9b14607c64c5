"""The pure schedule: scheduled instants (DST), editions, and which pairs are due."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from digest.models import Edition
from digest.schedule import (
    LOOKBACK_DAILY,
    DuePair,
    due,
    edition_for,
    group_by_edition,
    may_be_empty,
    scheduled_instant,
    scheduled_instants,
    weekday_index,
)
from tests.factories import utc

CATCHUP = timedelta(hours=12)
HOUR = timedelta(hours=1)


@dataclass(frozen=True)
class Sub:
    """Stand-in with the fields of :class:`digest.subscribers.Subscriber` the schedule reads."""

    email: str
    send_at: time = time(7, 0)
    timezone: str = "UTC"
    frequency: str = "daily"
    weekday: str | None = None
    active: bool = True

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


class FakeState:
    """A dict standing in for the state file: (email, edition key) → status."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], str] = {}
        self.sent: list[tuple[str, str, datetime]] = []

    def lookup(self, email: str, key: str) -> str | None:
        return self.rows.get((email, key))

    def apply(self, pairs: list[DuePair[Sub]], now: datetime) -> None:
        """What the daemon does: skip late pairs, send the others."""
        for p in pairs:
            if p.late:
                self.rows[(p.subscriber.email, p.edition.key)] = "skipped"
            else:
                self.rows[(p.subscriber.email, p.edition.key)] = "sent"
                self.sent.append((p.subscriber.email, p.edition.key, now))

    def run(self, subs: list[Sub], start: datetime, end: datetime, step: timedelta) -> None:
        now = start
        while now <= end:
            self.apply(due(subs, self.lookup, now, CATCHUP), now)
            now += step


# -- scheduled instants and DST -----------------------------------------------------------


@pytest.mark.parametrize(
    ("tz", "day", "send_at", "expected_utc"),
    [
        # New York spring forward 2026-03-08 02:00 EST → 03:00 EDT: 02:30 does not exist,
        # shifted forward to 03:30 EDT = 07:30Z.
        ("America/New_York", date(2026, 3, 8), time(2, 30), utc(2026, 3, 8, 7, 30)),
        ("America/New_York", date(2026, 3, 8), time(7, 0), utc(2026, 3, 8, 11, 0)),
        # New York fall back 2026-11-01 02:00 EDT → 01:00 EST: 01:30 happens twice; first
        # occurrence is 01:30 EDT = 05:30Z.
        ("America/New_York", date(2026, 11, 1), time(1, 30), utc(2026, 11, 1, 5, 30)),
        ("America/New_York", date(2026, 11, 1), time(7, 0), utc(2026, 11, 1, 12, 0)),
        # Berlin spring forward 2026-03-29 02:00 CET → 03:00 CEST: 02:30 → 03:30 CEST = 01:30Z.
        ("Europe/Berlin", date(2026, 3, 29), time(2, 30), utc(2026, 3, 29, 1, 30)),
        ("Europe/Berlin", date(2026, 3, 29), time(7, 0), utc(2026, 3, 29, 5, 0)),
        # Berlin fall back 2026-10-25 03:00 CEST → 02:00 CET: 02:30 first occurrence = CEST.
        ("Europe/Berlin", date(2026, 10, 25), time(2, 30), utc(2026, 10, 25, 0, 30)),
        ("Europe/Berlin", date(2026, 10, 25), time(7, 0), utc(2026, 10, 25, 6, 0)),
    ],
)
def test_scheduled_instant_dst(tz: str, day: date, send_at: time, expected_utc: datetime) -> None:
    assert scheduled_instant(day, send_at, ZoneInfo(tz)) == expected_utc


DST_WEEKS = [
    ("America/New_York", date(2026, 3, 5)),
    ("America/New_York", date(2026, 10, 29)),
    ("Europe/Berlin", date(2026, 3, 26)),
    ("Europe/Berlin", date(2026, 10, 22)),
]


@pytest.mark.parametrize(("tz", "first_day"), DST_WEEKS)
@pytest.mark.parametrize("send_at", [time(7, 0), time(2, 30), time(1, 30), time(0, 15)])
def test_one_instant_per_local_date_across_dst(tz: str, first_day: date, send_at: time) -> None:
    sub = Sub("a@example.org", send_at=send_at, timezone=tz)
    zone = ZoneInfo(tz)
    start = datetime.combine(first_day, time(0, 0), tzinfo=zone).astimezone(UTC)
    end = datetime.combine(first_day + timedelta(days=7), time(0, 0), tzinfo=zone)
    instants = scheduled_instants(sub, start, end)
    local_dates = [t.astimezone(zone).date() for t in instants]
    assert local_dates == [first_day + timedelta(days=i) for i in range(7)]
    for t in instants:
        local = t.astimezone(zone)
        # Wall time equals send_at except when send_at does not exist (then it is later).
        assert local.time() >= send_at
        assert (local.replace(tzinfo=None) - datetime.combine(local.date(), send_at)) <= HOUR


def test_scheduled_instants_bounds_are_half_open() -> None:
    sub = Sub("a@example.org", send_at=time(7, 0))
    at = utc(2026, 8, 21, 7, 0)
    assert scheduled_instants(sub, at - HOUR, at) == [at]
    assert scheduled_instants(sub, at, at + HOUR) == []


def test_weekly_instants_fall_on_the_local_weekday() -> None:
    # Monday 07:00 Tokyo is Sunday 22:00 UTC.
    sub = Sub("w@example.org", timezone="Asia/Tokyo", frequency="weekly", weekday="monday")
    instants = scheduled_instants(sub, utc(2026, 8, 1), utc(2026, 8, 31))
    assert instants == [utc(2026, 8, d, 22) for d in (2, 9, 16, 23, 30)]


def test_weekday_index() -> None:
    assert weekday_index("monday") == 0
    assert weekday_index("Sunday") == 6
    assert weekday_index(None) == 0
    with pytest.raises(ValueError, match="unknown weekday"):
        weekday_index("someday")


# -- editions -----------------------------------------------------------------------------


def test_edition_for_daily_is_the_last_ended_utc_day() -> None:
    tokyo = Sub("t@example.org", timezone="Asia/Tokyo")
    new_york = Sub("n@example.org", timezone="America/New_York")
    t_at = scheduled_instant(date(2026, 8, 21), time(7, 0), tokyo.tz)
    n_at = scheduled_instant(date(2026, 8, 21), time(7, 0), new_york.tz)
    assert t_at == utc(2026, 8, 20, 22)
    assert n_at == utc(2026, 8, 21, 11)
    assert edition_for(tokyo, t_at) == Edition.daily(date(2026, 8, 19))
    assert edition_for(new_york, n_at) == Edition.daily(date(2026, 8, 20))
    # At exactly midnight UTC the day before has just ended.
    midnight = Sub("m@example.org", send_at=time(0, 0))
    assert edition_for(midnight, utc(2026, 8, 21, 0, 0)).key == "2026-08-20"


def test_daily_lag_is_fixed_per_year_near_utc_midnight() -> None:
    # 01:30 Berlin is 00:30Z in winter (yesterday has ended) but 23:30Z in summer (only the
    # day before yesterday has): the lag is 2 all year, so DST days neither repeat nor skip.
    berlin = Sub("b@example.org", send_at=time(1, 30), timezone="Europe/Berlin")
    winter = scheduled_instant(date(2026, 1, 15), berlin.send_at, berlin.tz)
    summer = scheduled_instant(date(2026, 7, 15), berlin.send_at, berlin.tz)
    assert edition_for(berlin, winter).key == "2026-01-13"
    assert edition_for(berlin, summer).key == "2026-07-13"
    assert edition_for(berlin, summer).days[0] < summer.date()


def test_edition_for_weekly_is_the_previous_iso_week_of_the_local_date() -> None:
    tokyo = Sub("w@example.org", timezone="Asia/Tokyo", frequency="weekly")
    # Monday 2026-08-24 07:00 in Tokyo = Sunday 2026-08-23 22:00Z; local date's previous
    # week is 2026-W34 (Aug 17..23).
    edition = edition_for(tokyo, utc(2026, 8, 23, 22))
    assert edition.key == "2026-W34"
    assert edition.days[0] == date(2026, 8, 17)
    assert edition.days[-1] == date(2026, 8, 23)
    assert edition.frequency == "weekly"
    # Year boundary: Monday 2027-01-04 → ISO week 2026-W53.
    utc_sub = Sub("u@example.org", frequency="weekly")
    assert edition_for(utc_sub, utc(2027, 1, 4, 7)).key == "2026-W53"


def test_may_be_empty_only_for_weekends() -> None:
    assert may_be_empty(Edition.daily(date(2026, 8, 22)))  # Saturday
    assert may_be_empty(Edition.daily(date(2026, 8, 23)))  # Sunday
    assert not may_be_empty(Edition.daily(date(2026, 8, 21)))  # Friday
    assert not may_be_empty(Edition.weekly(2026, 34))


# -- due ----------------------------------------------------------------------------------


def test_each_subscriber_is_due_at_their_local_hour() -> None:
    tokyo = Sub("t@example.org", timezone="Asia/Tokyo")
    new_york = Sub("n@example.org", timezone="America/New_York")
    state = FakeState()
    state.rows[(tokyo.email, "2026-08-18")] = "sent"  # at 2026-08-19T22:00Z
    state.rows[(new_york.email, "2026-08-19")] = "sent"  # at 2026-08-20T11:00Z
    state.run([tokyo, new_york], utc(2026, 8, 20, 12), utc(2026, 8, 21, 12), timedelta(minutes=1))
    assert state.sent == [
        ("t@example.org", "2026-08-19", utc(2026, 8, 20, 22)),
        ("n@example.org", "2026-08-20", utc(2026, 8, 21, 11)),
    ]


def test_catch_up_after_downtime_within_the_window() -> None:
    sub = Sub("a@example.org", send_at=time(7, 0))
    pairs = due([sub], lambda _e, _k: None, utc(2026, 8, 21, 10), CATCHUP)
    assert pairs == [DuePair(sub, Edition.daily(date(2026, 8, 20)), utc(2026, 8, 21, 7), False)]


def test_new_subscriber_more_than_catchup_late_gets_nothing_now() -> None:
    sub = Sub("a@example.org", send_at=time(7, 0))
    assert due([sub], lambda _e, _k: None, utc(2026, 8, 21, 20), CATCHUP) == []


def test_known_subscriber_missed_editions_are_late() -> None:
    sub = Sub("a@example.org", send_at=time(7, 0))
    state = FakeState()
    state.rows[(sub.email, "2026-08-17")] = "sent"  # sent on 08-18, then the daemon stopped
    pairs = due([sub], state.lookup, utc(2026, 8, 21, 20), CATCHUP)
    assert [(p.edition.key, p.late) for p in pairs] == [
        ("2026-08-18", True),
        ("2026-08-19", True),
        ("2026-08-20", True),
    ]
    pairs = due([sub], state.lookup, utc(2026, 8, 21, 10), CATCHUP)
    assert [(p.edition.key, p.late) for p in pairs] == [
        ("2026-08-18", True),
        ("2026-08-19", True),
        ("2026-08-20", False),
    ]


def test_instants_before_the_first_row_and_beyond_lookback_are_ignored() -> None:
    sub = Sub("a@example.org", send_at=time(7, 0))
    state = FakeState()
    state.rows[(sub.email, "2026-08-19")] = "sent"  # first edition ever
    assert due([sub], state.lookup, utc(2026, 8, 21, 6), CATCHUP) == []
    state.rows[(sub.email, "2026-08-01")] = "sent"  # outside the 7-day look-back
    assert due([sub], state.lookup, utc(2026, 8, 21, 6), CATCHUP) == []
    assert timedelta(days=7) == LOOKBACK_DAILY


@pytest.mark.parametrize(
    ("status", "is_due"),
    [
        ("owed", True),
        ("sent", False),
        ("sending", False),
        ("failed", False),
        ("unknown", False),
        ("skipped", False),
    ],
)
def test_only_owed_or_missing_rows_are_due(status: str, is_due: bool) -> None:
    sub = Sub("a@example.org", send_at=time(7, 0))
    rows = {"2026-08-19": "sent", "2026-08-20": status}
    pairs = due([sub], lambda _e, key: rows.get(key), utc(2026, 8, 21, 8), CATCHUP)
    assert [p.edition.key for p in pairs] == (["2026-08-20"] if is_due else [])


def test_inactive_subscribers_are_never_due() -> None:
    sub = Sub("a@example.org", active=False)
    assert due([sub], lambda _e, _k: None, utc(2026, 8, 21, 8), CATCHUP) == []


def test_weekly_subscriber_gets_one_mail_per_week() -> None:
    sub = Sub("w@example.org", timezone="Europe/Berlin", frequency="weekly", weekday="tuesday")
    daily = Sub("d@example.org", timezone="Europe/Berlin")
    state = FakeState()
    state.run([sub, daily], utc(2026, 8, 10), utc(2026, 8, 24), HOUR)
    weekly_sent = [(key, at) for email, key, at in state.sent if email == sub.email]
    # Tuesday 07:00 CEST = 05:00Z; hourly ticks hit it exactly.
    assert weekly_sent == [("2026-W32", utc(2026, 8, 11, 5)), ("2026-W33", utc(2026, 8, 18, 5))]
    daily_keys = [key for email, key, _ in state.sent if email == daily.email]
    assert len(daily_keys) == len(set(daily_keys)) == 14


@pytest.mark.parametrize(("tz", "first_day"), DST_WEEKS)
@pytest.mark.parametrize("send_at", [time(7, 0), time(2, 30), time(1, 30)])
def test_dst_week_neither_skips_nor_doubles(tz: str, first_day: date, send_at: time) -> None:
    sub = Sub("a@example.org", send_at=send_at, timezone=tz)
    zone = ZoneInfo(tz)
    state = FakeState()
    start = datetime.combine(first_day, time(0, 0), tzinfo=zone).astimezone(UTC)
    state.run([sub], start, start + timedelta(days=7), timedelta(minutes=10))
    local_dates = [at.astimezone(zone).date() for _, _, at in state.sent]
    keys = [key for _, key, _ in state.sent]
    assert local_dates == [first_day + timedelta(days=i) for i in range(7)]
    assert len(keys) == len(set(keys)) == 7
    days = [date.fromisoformat(k) for k in keys]
    assert days == [days[0] + timedelta(days=i) for i in range(7)]  # no UTC day skipped
    assert all(status == "sent" for status in state.rows.values())


def test_group_by_edition_orders_by_first_instant() -> None:
    tokyo = Sub("t@example.org", timezone="Asia/Tokyo")
    berlin = Sub("b@example.org", timezone="Europe/Berlin")
    new_york = Sub("n@example.org", timezone="America/New_York")
    state = FakeState()
    for s in (tokyo, berlin, new_york):
        state.rows[(s.email, "2026-08-18")] = "sent"
    pairs = due([new_york, berlin, tokyo], state.lookup, utc(2026, 8, 21, 11, 30), CATCHUP)
    groups = group_by_edition(pairs)
    assert [(e.key, sorted(p.subscriber.email for p in ps)) for e, ps in groups] == [
        ("2026-08-19", ["b@example.org", "n@example.org", "t@example.org"]),
        ("2026-08-20", ["b@example.org", "n@example.org"]),
    ]


# -- the daemon's bulk status query -----------------------------------------------------------


@pytest.mark.parametrize(
    "now",
    [
        datetime(2026, 8, 20, 12, 0, tzinfo=UTC),
        datetime(2026, 1, 1, 0, 30, tzinfo=UTC),  # a year (and ISO-year) boundary
        datetime(2026, 3, 29, 1, 30, tzinfo=UTC),  # DST change in Europe
        datetime(2026, 11, 1, 23, 59, tzinfo=UTC),  # DST change in America
    ],
)
def test_lookback_edition_keys_cover_every_key_due_asks_about(now: datetime) -> None:
    from digest.schedule import lookback_edition_keys

    keys = set(lookback_edition_keys(now))
    asked: set[str] = set()

    def lookup(email: str, edition_key: str) -> str | None:
        asked.add(edition_key)
        return "sent"  # known everywhere: due() then walks every instant of the look-back

    subs = [
        Sub(
            f"s{i}@example.org",
            send_at=time(hour, minute),
            timezone=zone,
            frequency=freq,
            weekday=weekday,
        )
        for i, (hour, minute, zone, freq, weekday) in enumerate(
            (h, m, z, f, w)
            for h, m in ((0, 0), (0, 30), (7, 0), (23, 59), (12, 0))
            for z in (
                "UTC",
                "Pacific/Kiritimati",
                "Pacific/Pago_Pago",
                "Asia/Tokyo",
                "America/New_York",
                "Europe/Berlin",
                "Australia/Lord_Howe",
            )
            for f, w in (("daily", None), ("weekly", "monday"), ("weekly", "sunday"))
        )
    ]
    due(subs, lookup, now, CATCHUP)
    assert asked, "due() asked nothing: the test cannot fail"
    assert asked <= keys, sorted(asked - keys)
    assert len(keys) < 60  # one small IN (...) list, not a scan of the whole history
