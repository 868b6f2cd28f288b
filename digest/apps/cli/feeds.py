"""`digest fetch` and `digest feeds ...`: polling, and the feed list's health, import and export."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from digest.apps.cli.common import (
    State,
    err,
    fmt_time,
    handles_errors,
    main,
    out,
    pass_state,
)
from digest.config import load_config
from digest.errors import ConfigError
from digest.feeds.opml import add_feeds_to_config, read_opml, write_opml
from digest.model.records import FeedReport, FetchStatus, FetchSummary
from digest.service.api import Digest
from digest.service.fetching import FetchOptions
from digest.service.organising import OrganiseSummary

_STATUS_STYLE = {
    FetchStatus.OK: "green",
    FetchStatus.NOT_MODIFIED: "cyan",
    FetchStatus.FAILED: "red",
    FetchStatus.DEFERRED: "yellow",
}


def print_fetch_summary(summary: FetchSummary, console: Console) -> None:
    table = Table(title="fetch", show_lines=False)
    for col in ("feed", "status", "new", "updated", "note"):
        table.add_column(col, justify="right" if col in ("new", "updated") else "left")
    for r in summary.reports:
        note = r.error or r.warning or ""
        if r.status is FetchStatus.DEFERRED:
            note = f"backing off until {fmt_time(r.next_poll)}: {r.error or ''}"
        table.add_row(
            r.feed,
            f"[{_STATUS_STYLE[r.status]}]{r.status.value}[/]",
            str(r.new_entries),
            str(r.updated_entries),
            note,
        )
    console.print(table)
    n = {s: summary.count(s) for s in FetchStatus}
    console.print(
        f"{n[FetchStatus.OK]} ok, {n[FetchStatus.NOT_MODIFIED]} not modified, "
        f"{n[FetchStatus.FAILED]} failed, {n[FetchStatus.DEFERRED]} deferred; "
        f"{summary.new_entries} new entries"
    )


def organise_line(o: OrganiseSummary) -> str:
    redo = " (rules changed: every entry classified again)" if o.redone else ""
    return f"{o.selected} newly selected, {o.new_stories} new stories{redo}"


def run_fetch(d: Digest, options: FetchOptions, console: Console) -> FetchSummary:
    """A fetch, with a progress bar on a terminal."""
    if not console.is_terminal:
        return d.fetch(options)
    with Progress(
        TextColumn("fetching"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.description}"),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task("", total=None)

        def started(n: int) -> None:
            progress.update(task, total=n)

        def done(r: FeedReport) -> None:
            progress.update(task, advance=1, description=r.feed)

        return d.fetch(options, on_report=done, on_start=started)


@main.command()
@click.option("--feed", "only", metavar="NAME", help="fetch this feed only (even if disabled)")
@click.option("--force", is_flag=True, help="ignore back-off and Retry-After (be careful)")
@click.option("--due", "due_only", is_flag=True, help="only feeds whose polling interval has elapsed")
@click.option("--strict", is_flag=True, help="exit 1 if any feed failed")
@click.option("--quiet", "-q", is_flag=True, help="print only failures")
@pass_state
@handles_errors
def fetch(state: State, only: str | None, force: bool, due_only: bool, strict: bool, quiet: bool) -> None:
    """Poll the feeds and store new entries. One bad feed never stops the run."""
    loaded = state.loaded
    if only is not None:
        loaded.config.feed(only)  # a clear error for an unknown name
    options = FetchOptions(only=only, force=force, due_only=due_only)
    summary = run_fetch(state.digest, options, out)
    try:
        organised = state.digest.organise()
    except ConfigError:  # what was fetched is stored; say so, then the rules error
        if not quiet:
            print_fetch_summary(summary, out)
        raise
    if quiet:
        for r in summary.reports:
            if r.status is FetchStatus.FAILED:
                err.print(f"{r.feed}: {r.error}", markup=False)
    else:
        print_fetch_summary(summary, out)
        out.print(organise_line(organised))
    failed = summary.count(FetchStatus.FAILED)
    attempted = len(summary.reports) - summary.count(FetchStatus.DEFERRED)
    if failed and (strict or failed == attempted):
        sys.exit(1)


@main.group()
def feeds() -> None:
    """List, check, import and export feeds."""


@feeds.command("list")
@pass_state
@handles_errors
def feeds_list(state: State) -> None:
    """The configured feeds, with their stored entry counts."""
    table = Table()
    for col in ("name", "url", "enabled", "interval", "entries", "status"):
        table.add_column(col)
    for h in state.digest.feeds():
        table.add_row(
            h.settings.name,
            h.settings.url,
            "yes" if h.settings.enabled else "no",
            f"{h.interval / 60:g} min",
            str(h.entries),
            h.state.status or "never fetched",
        )
    out.print(table)


@feeds.command("check")
@pass_state
@handles_errors
def feeds_check(state: State) -> None:
    """Each feed's health: last result, error, next poll. Exit 1 if an enabled feed is failing."""
    table = Table()
    for col in ("feed", "status", "errors", "last ok", "next poll", "last error"):
        table.add_column(col)
    health = state.digest.feeds()
    for h in health:
        st = h.state
        moved = f" (moved to {st.fetch_url})" if st.fetch_url else ""
        table.add_row(
            h.settings.name,
            st.status or "never fetched",
            str(st.error_count),
            fmt_time(st.last_ok),
            fmt_time(st.next_poll),
            (st.last_error or "") + moved,
        )
    out.print(table)
    failing = sum(1 for h in health if h.settings.enabled and h.state.error_count)
    out.print(f"{failing} failing of {sum(h.settings.enabled for h in health)} enabled feeds")
    if failing:
        sys.exit(1)


@feeds.command("import")
@click.argument("opml_file", type=click.Path(dir_okay=False, path_type=Path))
@pass_state
@handles_errors
def feeds_import(state: State, opml_file: Path) -> None:
    """Add the feeds of an OPML file to feeds.yaml (comments kept; known URLs skipped)."""
    loaded = state.loaded
    if loaded.source.startswith("embedded"):
        raise ConfigError(
            "no feeds.yaml to import into; create one (copy the shipped feeds.yaml) or pass --config PATH"
        )

    added = add_feeds_to_config(Path(loaded.source), read_opml(opml_file))
    load_config(loaded.source)  # the result must still be a valid config
    out.print(f"added {len(added)} feeds to {loaded.source}" + (f": {', '.join(added)}" if added else ""))


@feeds.command("export")
@pass_state
@handles_errors
def feeds_export(state: State) -> None:
    """Print the feeds as OPML 2.0."""

    sys.stdout.write(write_opml(state.loaded.config.feeds))
