"""Send periods across time zones and daylight-saving changes (pure functions, a fake clock)."""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from zoneinfo import ZoneInfo

import pytest

from digest.model.schedule import current_period, local_instant
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
