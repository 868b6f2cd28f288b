"""When each subscriber's digest is due: pure functions of the subscriber and the clock.

Send instants are computed in UTC from the subscriber's cadence, local time and IANA zone.
A local time that does not exist (spring forward) sends at the next valid minute; an ambiguous
one (fall back) sends once, at its first occurrence.

Cadence `instant` has a period per window of `instant_every` seconds (counted in UTC from the
Unix epoch): at most one mail per window, so a burst of reports is one mail, and a story new
in a window whose mail has gone out waits for the next window. Quiet hours (local time) hold
an instant subscriber's mail until they end.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from digest.model.subscribers import Subscriber

INSTANT_EVERY = 900.0  # delivery.instant_every's default: 15 minutes


@dataclass(frozen=True, slots=True)
class Period:
    key: str  # "2025-09-01" (daily), "2025-W36" (weekly), "2025-09-01T0615" (instant, UTC): one mail each
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


def instant_period(now: datetime, every: float = INSTANT_EVERY) -> Period:
    """The window of `every` seconds that holds `now` (every >= 60: keys name the minute)."""
    start = datetime.fromtimestamp(math.floor(now.timestamp() / every) * every, UTC)
    return Period(start.strftime("%Y-%m-%dT%H%M"), start)


def in_quiet_hours(s: Subscriber, now: datetime) -> bool:
    """Whether `now` falls in the subscriber's quiet hours ("22:00-07:00", their local time;
    a span that crosses midnight holds from its start to its end the next morning)."""
    if not s.quiet_hours:
        return False
    start, end = (time.fromisoformat(t) for t in s.quiet_hours.split("-"))
    local = now.astimezone(ZoneInfo(s.timezone)).time()
    return start <= local < end if start < end else (local >= start or local < end)


def quiet_until(s: Subscriber, now: datetime) -> datetime:
    """When the quiet hours holding `now` end (UTC); `now` itself when it is not in them."""
    if not in_quiet_hours(s, now):
        return now
    zone = ZoneInfo(s.timezone)
    end = time.fromisoformat((s.quiet_hours or "").split("-")[1])
    day = now.astimezone(zone).date()
    until = local_instant(day, end, zone)
    return until if until > now else local_instant(day + timedelta(days=1), end, zone)


def current_period(s: Subscriber, now: datetime, *, instant_every: float = INSTANT_EVERY) -> Period:
    """The latest period whose send instant is at or before `now`."""
    if s.cadence == "instant":
        return instant_period(now, instant_every)
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


def next_due(s: Subscriber, now: datetime, *, instant_every: float = INSTANT_EVERY) -> datetime:
    """The first send instant after `now` (instant: the next window, or the end of quiet hours)."""
    if s.cadence == "instant":
        window = instant_period(now, instant_every).due + timedelta(seconds=instant_every)
        return max(window, quiet_until(s, window))
    zone = ZoneInfo(s.timezone)
    hh, mm = (int(x) for x in s.send_time.split(":"))
    current = current_period(s, now)
    step = timedelta(days=7 if s.cadence == "weekly" else 1)
    day = current.due.astimezone(zone).date() + step
    return local_instant(day, time(hh, mm), zone)


def current_periods(
    schedules: Iterable[Subscriber], now: datetime, *, instant_every: float = INSTANT_EVERY
) -> dict[int, Period]:
    """Each subscriber's current period, by id; computed once per distinct schedule (many
    subscribers share a few schedules, and the daemon asks every tick)."""
    memo: dict[tuple[str, int | None, str, str], Period] = {}
    periods: dict[int, Period] = {}
    for s in schedules:
        key = (s.cadence, s.weekday, s.send_time, s.timezone)
        if key not in memo:
            memo[key] = current_period(s, now, instant_every=instant_every)
        periods[s.id or 0] = memo[key]
    return periods


DONE = ("sent", "empty")  # ledger states that settle a (subscriber, period)


def who_is_due(
    schedules: Iterable[Subscriber],
    periods: Mapping[int, Period],
    states: Mapping[tuple[int, str], str],
    now: datetime,
) -> list[int]:
    """The ids, in the order given, whose current period the ledger has not settled (no row, or
    pending or failed: a crashed or refused send is tried again); an instant subscriber in
    their quiet hours is not due until they end."""
    return [
        s.id or 0
        for s in schedules
        if states.get((s.id or 0, periods[s.id or 0].key)) not in DONE
        and not (s.cadence == "instant" and in_quiet_hours(s, now))
    ]
