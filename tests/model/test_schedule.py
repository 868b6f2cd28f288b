"""Send periods across time zones and daylight-saving changes (pure functions, a fake clock)."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from digest.model.schedule import (
    current_period,
    current_periods,
    in_quiet_hours,
    instant_period,
    local_instant,
    next_due,
    who_is_due,
)
from digest.model.subscribers import Subscriber


@pytest.mark.parametrize(
    ("zone", "day", "at", "expected_utc"),
    [
        (
            "Europe/Berlin",
            date(2025, 3, 30),
            time(2, 30),
            datetime(2025, 3, 30, 1, 0, tzinfo=UTC),
        ),  # gap: 03:00
        (
            "Europe/Berlin",
            date(2025, 10, 26),
            time(2, 30),
            datetime(2025, 10, 26, 0, 30, tzinfo=UTC),
        ),  # fold: first
        (
            "America/New_York",
            date(2025, 3, 9),
            time(2, 15),
            datetime(2025, 3, 9, 7, 0, tzinfo=UTC),
        ),  # gap: 03:00
        (
            "Australia/Lord_Howe",
            date(2025, 10, 5),
            time(2, 10),
            datetime(2025, 10, 4, 15, 30, tzinfo=UTC),
        ),  # 30 min
        ("Asia/Kolkata", date(2025, 6, 1), time(7, 0), datetime(2025, 6, 1, 1, 30, tzinfo=UTC)),
    ],
)
def test_local_send_times_resolve_across_dst(zone, day, at, expected_utc):
    assert local_instant(day, at, ZoneInfo(zone)) == expected_utc


def test_a_daily_period_is_the_latest_local_day_whose_send_time_has_passed():
    sub = Subscriber("a@example.org", send_time="07:00", timezone="Europe/Berlin", id=1)
    assert current_period(sub, datetime(2025, 9, 1, 4, 59, tzinfo=UTC)).key == "2025-08-31"
    p = current_period(sub, datetime(2025, 9, 1, 5, 0, tzinfo=UTC))
    assert (p.key, p.due) == ("2025-09-01", datetime(2025, 9, 1, 5, 0, tzinfo=UTC))


def test_the_autumn_night_has_one_period_not_two():
    sub = Subscriber("a@example.org", send_time="02:30", timezone="Europe/Berlin", id=1)
    keys = {
        current_period(sub, datetime(2025, 10, 26, h, m, tzinfo=UTC)).key
        for h in (0, 1, 2)
        for m in (0, 31, 59)
    }
    assert keys == {"2025-10-25", "2025-10-26"}
    assert (
        current_period(sub, datetime(2025, 10, 26, 1, 31, tzinfo=UTC)).key == "2025-10-26"
    )  # 02:31 second pass


def test_a_weekly_period_is_an_iso_week_on_the_chosen_day():
    sub = Subscriber(
        "a@example.org", cadence="weekly", weekday=4, send_time="18:00", timezone="America/New_York", id=1
    )
    assert (
        current_period(sub, datetime(2025, 9, 5, 21, 59, tzinfo=UTC)).key == "2025-W35"
    )  # Fri 17:59 EDT: last week
    assert current_period(sub, datetime(2025, 9, 5, 22, 0, tzinfo=UTC)).key == "2025-W36"


# -- who is due: schedules, the ledger's states and the clock; no database --------------------------

ZONES = ("UTC", "Europe/Berlin", "America/New_York", "Asia/Shanghai", "Australia/Lord_Howe")
STATES = ("sent", "empty", "pending", "failed")


@st.composite
def schedules(draw: st.DrawFn) -> list[Subscriber]:
    n = draw(st.integers(0, 12))
    subs = []
    for i in range(1, n + 1):
        cadence = draw(st.sampled_from(("daily", "weekly")))
        subs.append(
            Subscriber(
                f"r{i}@example.org",
                cadence=cadence,
                weekday=draw(st.integers(0, 6)) if cadence == "weekly" else None,
                send_time=f"{draw(st.integers(0, 23)):02d}:{draw(st.sampled_from((0, 30, 59))):02d}",
                timezone=draw(st.sampled_from(ZONES)),
                id=i,
            )
        )
    return subs


CLOCKS = st.datetimes(datetime(2024, 1, 1), datetime(2027, 12, 31), timezones=st.just(UTC))


@given(schedules(), CLOCKS, st.data())
def test_due_means_the_ledger_has_not_settled_the_current_period(subs, now, data):
    periods = current_periods(subs, now)
    states = {
        (s.id, periods[s.id].key): state
        for s in subs
        if (state := data.draw(st.sampled_from((None, *STATES)))) is not None
    }
    due = who_is_due(subs, periods, states, now)
    assert due == [s.id for s in subs if states.get((s.id, periods[s.id].key)) not in ("sent", "empty")]
    for s in subs:  # each one's period is the latest whose send instant has passed
        p = periods[s.id]
        assert p == current_period(s, now) and p.due <= now < next_due(s, now)


@given(schedules(), CLOCKS)
def test_a_period_settled_earlier_does_not_settle_the_next(subs, now):
    periods = current_periods(subs, now)
    later = {s.id: next_due(s, now) for s in subs}
    settled = {(s.id, periods[s.id].key): "sent" for s in subs}
    assert who_is_due(subs, periods, settled, now) == []
    for s in subs:  # at its next send instant, yesterday's "sent" no longer counts
        at = later[s.id]
        assert who_is_due([s], current_periods([s], at), settled, at) == [s.id]


def test_nobody_is_due_twice_for_a_day_whose_digest_was_empty():
    ann = Subscriber("ann@example.org", send_time="07:00", timezone="Europe/Berlin", id=1)
    now = datetime(2026, 3, 2, 6, 30, tzinfo=UTC)
    periods = current_periods([ann], now)
    assert who_is_due([ann], periods, {}, now) == [1]
    assert who_is_due([ann], periods, {(1, "2026-03-02"): "empty"}, now) == []
    assert who_is_due([ann], periods, {(1, "2026-03-02"): "failed"}, now) == [1]  # tried again


# -- cadence instant -------------------------------------------------------------------------------


@given(CLOCKS, st.sampled_from((60.0, 300.0, 900.0, 3600.0)))
def test_an_instant_window_holds_its_clock_and_the_next_starts_where_it_ends(now, every):
    p = instant_period(now, every)
    assert p.due <= now < p.due + timedelta(seconds=every)
    assert instant_period(p.due + timedelta(seconds=every), every).key != p.key
    assert instant_period(p.due + timedelta(seconds=every - 1), every).key == p.key
    assert len(p.key) <= 16  # deliveries.period


@pytest.mark.parametrize(
    ("quiet", "local", "held"),
    [
        ("22:00-07:00", "23:30", True),
        ("22:00-07:00", "06:59", True),
        ("22:00-07:00", "07:00", False),
        ("22:00-07:00", "21:59", False),
        ("12:00-14:00", "13:00", True),
        ("12:00-14:00", "14:00", False),
    ],
)
def test_quiet_hours_are_read_in_the_subscribers_zone_and_may_cross_midnight(quiet, local, held):
    zone = ZoneInfo("Asia/Shanghai")
    hh, mm = (int(x) for x in local.split(":"))
    now = datetime(2026, 3, 2, hh, mm, tzinfo=zone).astimezone(UTC)
    sub = Subscriber("ina@example.org", cadence="instant", timezone="Asia/Shanghai", quiet_hours=quiet, id=1)
    assert in_quiet_hours(sub, now) is held
    periods = current_periods([sub], now)
    assert who_is_due([sub], periods, {}, now) == ([] if held else [1])
    if held:  # the next send is when they end, in the subscriber's own time
        end = next_due(sub, now).astimezone(zone)
        assert f"{end:%H:%M}" == quiet.split("-")[1]
