"""`digest subscribers ...`: add, list, remove, import and export subscribers."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.table import Table

from digest.apps.cli.common import (
    State,
    handles_errors,
    main,
    out,
    pass_state,
)
from digest.model.subscribers import normalise_email, write_csv


@main.group()
def subscribers() -> None:
    """Add, list, remove, import and export subscribers."""


@subscribers.command("add")
@click.argument("email")
@click.option("--topics", default=None, help="comma-separated topics  [new subscriber: all]")
@click.option("--tags", default=None, help="only stories with one of these tags  [new subscriber: any]")
@click.option(
    "--cadence",
    type=click.Choice(["daily", "weekly", "instant"]),
    default=None,
    help="instant: each new story soon after it is folded  [new subscriber: daily]",
)
@click.option("--weekday", default=None, help="with --cadence weekly: monday ... sunday  [monday]")
@click.option("--time", "send_time", default=None, help="local send time  [new subscriber: 07:00]")
@click.option("--timezone", default=None, help="IANA zone, e.g. Europe/Berlin  [new subscriber: UTC]")
@click.option(
    "--format", "fmt", type=click.Choice(["html", "text"]), default=None, help="[new subscriber: html]"
)
@click.option("--max-stories", type=int, default=None, help="1..200  [new subscriber: 20]")
@click.option("--why/--no-why", "show_why", default=None, help="show why each story was picked")
@click.option(
    "--quiet-hours", default=None, help="with --cadence instant: hold mail, e.g. 22:00-07:00 ('' clears)"
)
@pass_state
@handles_errors
def subscribers_add(
    state: State,
    email: str,
    topics: str | None,
    tags: str | None,
    cadence: str | None,
    weekday: str | None,
    send_time: str | None,
    timezone: str | None,
    fmt: str | None,
    max_stories: int | None,
    show_why: bool | None,
    quiet_hours: str | None,
) -> None:
    """Add a subscriber, or change what is given of an existing one's preferences (the rest stay)."""
    sub, created = state.digest.subscribe(
        email,
        topics=topics,
        tags=tags,
        cadence=cadence,
        weekday=weekday,
        send_time=send_time,
        timezone=timezone,
        format=fmt,
        max_stories=max_stories,
        show_why=show_why,
        quiet_hours=quiet_hours,
    )
    out.print(f"{'added' if created else 'updated'} {sub.email}", markup=False)


@subscribers.command("list")
@pass_state
@handles_errors
def subscribers_list(state: State) -> None:
    """Every subscriber with their preferences and status."""
    subs = state.digest.subscribers()
    table = Table()
    for col in ("email", "status", "cadence", "time", "zone", "topics", "tags", "format", "max"):
        table.add_column(col)
    for s in subs:
        when = s.send_time + (
            f" {('Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat', 'Sun')[s.weekday]}"
            if s.cadence == "weekly" and s.weekday is not None
            else ""
        )
        table.add_row(
            s.email,
            s.status,
            s.cadence,
            when,
            s.timezone,
            ",".join(s.topics) or "all",
            ",".join(s.tags) or "—",
            s.format,
            str(s.max_stories),
        )
    out.print(table)
    out.print(f"{len(subs)} subscribers, {sum(s.status == 'active' for s in subs)} active")


@subscribers.command("remove")
@click.argument("email")
@pass_state
@handles_errors
def subscribers_remove(state: State, email: str) -> None:
    """Remove a subscriber and their delivery history."""
    state.digest.remove_subscriber(email)
    out.print(f"removed {normalise_email(email)}", markup=False)


@subscribers.command("import")
@click.argument("csv_file", type=click.Path(dir_okay=False, path_type=Path))
@pass_state
@handles_errors
def subscribers_import(state: State, csv_file: Path) -> None:
    """Add or update subscribers from CSV (header: email, topics, tags, cadence, send_time, timezone, ...).
    Nothing is stored if any row is bad; every bad row is named."""
    added, updated = state.digest.import_subscribers(csv_file)
    out.print(f"{added} added, {updated} updated from {csv_file}", markup=False)


@subscribers.command("export")
@pass_state
@handles_errors
def subscribers_export(state: State) -> None:
    """Print every subscriber as CSV (the import format)."""
    sys.stdout.write(write_csv(state.digest.subscribers()))
