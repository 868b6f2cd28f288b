"""When each subscriber's digest is due: pure functions of the subscriber and the clock.

Send instants are computed in UTC from the subscriber's cadence, local time and IANA zone.
A local time that does not exist (spring forward) sends at the next valid minute; an ambiguous
one (fall back) sends once, at its first occurrence.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from digest.model.subscribers import Subscriber


@dataclass(frozen=True, slots=True)
class Period:
    key: str  # "2025-09-01" (daily) or "2025-W36" (weekly): one digest per subscriber and key
    due: datetime  # UTC instant it became due


def local_instant(day: date, at: time, zone: ZoneInfo) -> datetime:
    """`day` `at` local time in `zone`, as UTC; gaps move forward, folds take the first."""
    naive = datetime.combine(day, at)
    candidate = naive.replace(tzinfo=zone, fold=0)
    # a non-existent time does not survive the round trip through UTC
    back = candidate.astimezone(ZoneInfo("UTC")).astimezone(zone).replace(tzinfo=None)
    if back != naive:
        step = naive
        while True:  # the next valid minute
            step += timedelta(minutes=1)
            c = step.replace(tzinfo=zone, fold=0)
            if c.astimezone(ZoneInfo("UTC")).astimezone(zone).replace(tzinfo=None) == step:
                return c.astimezone(ZoneInfo("UTC"))
    return candidate.astimezone(ZoneInfo("UTC"))


def current_period(s: Subscriber, now: datetime) -> Period:
    """The latest period whose send instant is at or before `now`."""
    zone = ZoneInfo(s.timezone)
    hh, mm = (int(x) for x in s.send_time.split(":"))
    at = time(hh, mm)
    today = now.astimezone(zone).date()
    if s.cadence == "weekly":
        weekday = s.weekday or 0
        day = today - timedelta(days=(today.weekday() - weekday) % 7)
        due = local_instant(day, at, zone)
        if due > now:
            day -= timedelta(days=7)
            due = local_instant(day, at, zone)
        iso = day.isocalendar()
        return Period(f"{iso.year}-W{iso.week:02d}", due)
    due = local_instant(today, at, zone)
    if due > now:
        today -= timedelta(days=1)
        due = local_instant(today, at, zone)
    return Period(today.isoformat(), due)


def next_due(s: Subscriber, now: datetime) -> datetime:
    """The first send instant after `now`."""
    zone = ZoneInfo(s.timezone)
    hh, mm = (int(x) for x in s.send_time.split(":"))
    current = current_period(s, now)
    step = timedelta(days=7 if s.cadence == "weekly" else 1)
    day = current.due.astimezone(zone).date() + step
    return local_instant(day, time(hh, mm), zone)


def current_periods(schedules: Iterable[Subscriber], now: datetime) -> dict[int, Period]:
    """Each subscriber's current period, by id; computed once per distinct schedule (many
    subscribers share a few schedules, and the daemon asks every tick)."""
    memo: dict[tuple[str, int | None, str, str], Period] = {}
    periods: dict[int, Period] = {}
    for s in schedules:
        key = (s.cadence, s.weekday, s.send_time, s.timezone)
        if key not in memo:
            memo[key] = current_period(s, now)
        periods[s.id or 0] = memo[key]
    return periods


DONE = ("sent", "empty")  # ledger states that settle a (subscriber, period)


def who_is_due(
    schedules: Iterable[Subscriber],
    periods: Mapping[int, Period],
    states: Mapping[tuple[int, str], str],
) -> list[int]:
    """The ids, in the order given, whose current period the ledger has not settled (no row, or
    pending or failed: a crashed or refused send is tried again)."""
    return [s.id or 0 for s in schedules if states.get((s.id or 0, periods[s.id or 0].key)) not in DONE]
