"""Subscribers and their preferences: validation and CSV, no I/O beyond the text given."""

from __future__ import annotations

import csv
import io
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from digest.errors import AddressError, SubscriberError

CADENCES = ("daily", "weekly", "instant")  # instant: each new story soon after it is folded
FORMATS = ("html", "text")
# complained: a feedback-loop complaint (ARF) came back; never mailed again (storage/bounces.py)
STATUSES = ("active", "pending", "unsubscribed", "bouncing", "complained")
# A confirmation link works for two days; a sign-up not confirmed by then is deleted (housekeeping).
CONFIRM_MAX_AGE = 2 * 86400
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


@dataclass(frozen=True, slots=True)
class Subscriber:
    email: str
    topics: tuple[str, ...] = ()  # empty: every topic
    tags: tuple[str, ...] = ()  # empty: no tag filter
    cadence: str = "daily"
    weekday: int | None = None  # 0 = Monday, for weekly
    send_time: str = "07:00"  # local time
    timezone: str = "UTC"
    format: str = "html"  # html (with a text part) or text
    max_stories: int = 20
    show_why: bool = False
    quiet_hours: str | None = None  # "22:00-07:00", local time: instant mail waits until they end
    status: str = "active"
    name: str | None = None
    id: int | None = field(default=None, compare=False)
    bounces: int = field(default=0, compare=False)


def normalise_email(address: str, *, where: str = "address") -> str:
    """A deliverable-looking address, normalised; no DNS look-up.

    The domain is lower-cased (and NFC, as UTS #46 maps it); the local part is kept as written,
    since RFC 5321 §2.4 lets its owner's server tell `Reader` from `reader`. Two addresses that
    differ only in the local part's case are still one subscriber: see address_key.
    """
    from email_validator import EmailNotValidError, validate_email

    raw = unicodedata.normalize("NFC", (address or "").strip())
    try:
        info = validate_email(raw, check_deliverability=False, test_environment=True)
    except EmailNotValidError as exc:
        raise AddressError(
            f"{where}: {raw!r} is not a valid e-mail address ({exc}); fix or remove it"
        ) from None
    written = raw.rpartition("@")[0]
    # email-validator lower-cases some local parts (one with an internationalised domain): keep
    # the case the person wrote, which is what their server may expect
    local = written if written.casefold() == info.local_part.casefold() else info.local_part
    return f"{local}@{info.domain}"


def address_key(address: str) -> str:
    """One subscriber per key: the normalised address with its local part case-folded."""
    local, _, domain = address.rpartition("@")
    return f"{local.casefold()}@{domain.lower()}"


def mail_address(address: str) -> str:
    """The address as it goes on the wire. An internationalised domain becomes IDNA A-labels
    (RFC 5890), so every server takes an ASCII local part at it; a non-ASCII local part keeps
    the UTF-8 form, which only a server offering SMTPUTF8 (RFC 6531) may be given."""
    if address.isascii():
        return address
    import idna

    local, _, domain = address.rpartition("@")
    if not local.isascii():
        return address
    try:
        return f"{local}@{idna.encode(domain, uts46=True).decode('ascii')}"
    except idna.IDNAError:  # normalise_email let it through, so this is a stored oddity: send as is
        return address


def _weekday(value: Any, where: str) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, int) and 0 <= value <= 6:
        return value
    text = str(value).strip().lower()
    for i, name in enumerate(WEEKDAYS):
        if name.startswith(text[:3]) and len(text) >= 3:
            return i
    raise SubscriberError(f"{where}: weekday {value!r} is not a day; write e.g. monday")


def make_subscriber(data: Mapping[str, Any], *, where: str = "subscriber") -> Subscriber:
    """A Subscriber from loose input (config, CSV, form), with one clear error per bad field."""
    known = {f for f in Subscriber.__dataclass_fields__ if f not in ("id", "bounces")} | {"time"}
    unknown = set(data) - known
    if unknown:
        raise SubscriberError(
            f"{where}: unknown field(s) {', '.join(sorted(unknown))}; allowed: {', '.join(sorted(known))}"
        )
    email = normalise_email(str(data.get("email", "")), where=f"{where}.email")

    def listed(key: str) -> tuple[str, ...]:
        v = data.get(key) or ()
        items = re.split(r"[,\s]+", v) if isinstance(v, str) else list(v)
        return tuple(sorted({str(i).strip() for i in items if str(i).strip()}))

    cadence = str(data.get("cadence") or "daily").lower()
    if cadence not in CADENCES:
        raise SubscriberError(f"{where}.cadence: {cadence!r}; use daily, weekly or instant")
    fmt = str(data.get("format") or "html").lower()
    if fmt not in FORMATS:
        raise SubscriberError(f"{where}.format: {fmt!r}; use html or text")
    send_time = str(data.get("send_time") or data.get("time") or "07:00").strip()
    m = re.fullmatch(r"(\d{1,2}):(\d{2})", send_time)
    if not m or int(m.group(1)) > 23 or int(m.group(2)) > 59:
        raise SubscriberError(f"{where}.send_time: {send_time!r} is not a time of day; write e.g. 07:00")
    tz = str(data.get("timezone") or "UTC")
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise SubscriberError(
            f"{where}.timezone: {tz!r} is not an IANA zone; write e.g. Europe/Berlin"
        ) from None
    weekday = _weekday(data.get("weekday"), f"{where}.weekday")
    if cadence == "weekly" and weekday is None:
        weekday = 0
    status = str(data.get("status") or "active").lower()
    if status not in STATUSES:
        raise SubscriberError(f"{where}.status: {status!r}; use one of {', '.join(STATUSES)}")
    raw_max = data.get("max_stories")
    try:
        # 0 is a value, not "unset": refused below rather than silently made 20
        max_stories = 20 if raw_max is None or raw_max == "" else int(raw_max)
    except (TypeError, ValueError):
        raise SubscriberError(f"{where}.max_stories: {data.get('max_stories')!r} is not a number") from None
    if not 1 <= max_stories <= 200:
        raise SubscriberError(f"{where}.max_stories: {max_stories} is outside 1..200")
    quiet = str(data.get("quiet_hours") or "").strip() or None
    if quiet is not None:
        q = re.fullmatch(r"(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})", quiet)
        h1, m1, h2, m2 = (int(x) for x in q.groups()) if q else (99, 0, 0, 0)
        if h1 > 23 or h2 > 23 or m1 > 59 or m2 > 59 or (h1, m1) == (h2, m2):
            raise SubscriberError(
                f"{where}.quiet_hours: {quiet!r} is not a span of the day; write e.g. 22:00-07:00"
            )
        quiet = f"{h1:02d}:{m1:02d}-{h2:02d}:{m2:02d}"
    show_why = data.get("show_why", False)
    if isinstance(show_why, str):
        show_why = show_why.strip().lower() in ("1", "true", "yes", "y")
    return Subscriber(
        email=email,
        topics=listed("topics"),
        tags=listed("tags"),
        cadence=cadence,
        weekday=weekday,
        send_time=f"{int(m.group(1)):02d}:{m.group(2)}",
        timezone=tz,
        format=fmt,
        max_stories=max_stories,
        show_why=bool(show_why),
        quiet_hours=quiet,
        status=status,
        name=str(data.get("name") or "").strip() or None,
    )


# What a subscriber chooses; with the address, name and status, every stored field.
PREFERENCE_FIELDS = ("topics", "tags", "cadence", "weekday", "send_time", "timezone", "format", "max_stories",
                     "show_why", "quiet_hours")  # fmt: skip
FIELDS = ("email", "name", *PREFERENCE_FIELDS, "status")
CSV_FIELDS = (*(f for f in FIELDS if f != "quiet_hours"), "quiet_hours")  # a new column goes last


def subscriber_from_form(form: Mapping[str, Any], email: str, topics: Sequence[str]) -> Subscriber:
    """The preferences a web form sent, for `email`. `topics`: the topics the rules know; a form
    that ticks them all means every topic, those added later too (stored as no topic filter)."""
    fields = {k: v for k, v in form.items() if k in PREFERENCE_FIELDS}
    sub = make_subscriber({**fields, "email": email}, where="form")
    unknown = set(sub.topics) - set(topics)
    if unknown:
        raise SubscriberError(f"form.topics: unknown topic {', '.join(sorted(unknown))}")
    if set(sub.topics) == set(topics):
        sub = replace(sub, topics=())
    return sub


def status_after_preferences(current: str, paused: bool) -> str:
    """A subscriber's status once they saved their preferences: pausing unsubscribes, saving
    without the pause resumes; a pending sign-up stays pending until its link is confirmed; a
    complaint (ARF) is for good."""
    if current == "complained":
        return current
    if paused:
        return "unsubscribed"
    return "pending" if current == "pending" else "active"


def read_csv(text: str, source: str) -> list[Subscriber]:
    """Subscribers from CSV with a header row (email required); every bad row named, none stored."""
    reader = csv.DictReader(io.StringIO(text))
    out, errors = [], []
    try:
        if not reader.fieldnames or "email" not in [f.strip().lower() for f in reader.fieldnames]:
            raise SubscriberError(f"{source}: needs a header row with an `email` column")
        for row in reader:
            n = reader.line_num
            clean = {k.strip().lower(): v for k, v in row.items() if k and v not in (None, "")}
            try:
                out.append(make_subscriber(clean, where=f"{source}: line {n}"))
            except SubscriberError as exc:
                errors.append(str(exc))
    except csv.Error as exc:  # a field over csv.field_size_limit() (128 KiB), a NUL byte ...
        # (DictReader.line_num is updated only after a row is read: ask the reader underneath)
        errors.append(f"{source}: line {reader.reader.line_num}: {exc}; this is not a subscriber list")
    if errors:
        raise SubscriberError("\n".join(errors))
    return out


def write_csv(subscribers: Iterable[Subscriber]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
    w.writeheader()
    for s in subscribers:
        row = {k: v for k, v in asdict(s).items() if k in CSV_FIELDS}
        row["topics"], row["tags"] = " ".join(s.topics), " ".join(s.tags)
        row["weekday"] = WEEKDAYS[s.weekday] if s.weekday is not None else ""
        w.writerow(row)
    return buf.getvalue()
