"""Command line: a thin caller of the service layer (pipeline.py). Errors become one line.

\b
Exit codes:
  0  done
  1  done, but the work failed (every feed failed; with --strict, any feed; a check found problems)
  2  usage or configuration error (bad option, invalid feeds.yaml, template or address)
  3  database error (cannot open, migrate or write)
  4  another scheduler holds this database's lock
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from . import __version__
from .config import LoadedConfig, _duration, load_config
from .errors import ConfigError, DigestError
from .opml import add_feeds_to_config, read_opml, write_opml
from .pipeline import FetchOptions, fetch_feeds, open_store, utcnow
from .records import FeedReport, FetchStatus, FetchSummary
from .store import StoredEntry

F = TypeVar("F", bound=Callable[..., Any])
if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table


class _LazyConsole:
    """rich is imported on first output: a quiet cron run never pays for it."""

    def __init__(self, **options: Any) -> None:
        self._options = options
        self._console: Console | None = None

    def __getattr__(self, name: str) -> Any:
        if self._console is None:
            from rich.console import Console

            self._console = Console(**self._options)
        return getattr(self._console, name)


def new_table(**options: Any) -> Table:
    from rich.table import Table

    return Table(**options)


out: Console = _LazyConsole(highlight=False, soft_wrap=True)  # type: ignore[assignment]
err: Console = _LazyConsole(stderr=True, highlight=False, soft_wrap=True)  # type: ignore[assignment]


def _fail(message: str, code: int) -> None:
    for line in message.splitlines() or [message]:
        err.print(f"digest: error: {line}", markup=False)
    sys.exit(code)


def handles_errors(fn: F) -> F:
    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except DigestError as exc:
            _fail(str(exc), exc.exit_code)
        except KeyboardInterrupt:
            err.print("digest: interrupted")
            sys.exit(130)

    return wrapper  # type: ignore[return-value]


class State:
    def __init__(self, config_path: str | None) -> None:
        self.config_path = config_path
        self._loaded: LoadedConfig | None = None

    @property
    def loaded(self) -> LoadedConfig:
        if self._loaded is None:
            self._loaded = load_config(self.config_path)
        return self._loaded


pass_state = click.make_pass_decorator(State)


@click.group(help=__doc__, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    envvar="DIGEST_CONFIG",
    help="feeds.yaml to use (default: $DIGEST_CONFIG, ./feeds.yaml, then the built-in one)",
)
@click.version_option(__version__, prog_name="digest")
@click.pass_context
def main(ctx: click.Context, config_path: str | None) -> None:
    ctx.obj = State(config_path)


# -- fetch -------------------------------------------------------------------------------------

_STATUS_STYLE = {
    FetchStatus.OK: "green",
    FetchStatus.NOT_MODIFIED: "cyan",
    FetchStatus.FAILED: "red",
    FetchStatus.DEFERRED: "yellow",
}


def _fmt_time(t: datetime | None) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if t else "—"


def print_fetch_summary(summary: FetchSummary, console: Console) -> None:
    table = new_table(title="fetch", show_lines=False)
    for col in ("feed", "status", "new", "updated", "note"):
        table.add_column(col, justify="right" if col in ("new", "updated") else "left")
    for r in summary.reports:
        note = r.error or r.warning or ""
        if r.status is FetchStatus.DEFERRED:
            note = f"backing off until {_fmt_time(r.next_poll)}: {r.error or ''}"
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


def run_fetch(loaded: LoadedConfig, options: FetchOptions, console: Console) -> FetchSummary:
    store = open_store(loaded)
    try:
        if not console.is_terminal:
            return asyncio.run(fetch_feeds(loaded, store, options))
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

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

            return asyncio.run(fetch_feeds(loaded, store, options, on_report=done, on_start=started))
    finally:
        store.close()


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
    summary = run_fetch(loaded, FetchOptions(only=only, force=force, due_only=due_only), out)
    if quiet:
        for r in summary.reports:
            if r.status is FetchStatus.FAILED:
                err.print(f"{r.feed}: {r.error}", markup=False)
    else:
        print_fetch_summary(summary, out)
    failed = summary.count(FetchStatus.FAILED)
    attempted = len(summary.reports) - summary.count(FetchStatus.DEFERRED)
    if failed and (strict or failed == attempted):
        sys.exit(1)


# -- feeds -------------------------------------------------------------------------------------


@main.group()
def feeds() -> None:
    """List, check, import and export feeds."""


@feeds.command("list")
@pass_state
@handles_errors
def feeds_list(state: State) -> None:
    """The configured feeds, with their stored entry counts."""
    loaded = state.loaded
    with open_store(loaded) as store:
        counts = store.entry_counts()
        states = store.feed_states()
    table = new_table()
    for col in ("name", "url", "enabled", "interval", "entries", "status"):
        table.add_column(col)
    for f in loaded.config.feeds:
        st = states.get(f.name)
        table.add_row(
            f.name,
            f.url,
            "yes" if f.enabled else "no",
            f"{loaded.config.interval(f) / 60:g} min",
            str(counts.get(f.name, 0)),
            (st.status if st and st.status else "never fetched"),
        )
    out.print(table)


@feeds.command("check")
@pass_state
@handles_errors
def feeds_check(state: State) -> None:
    """Each feed's health: last result, error, next poll. Exit 1 if an enabled feed is failing."""
    loaded = state.loaded
    with open_store(loaded) as store:
        store.sync_feeds((f.name, loaded.feed_url(f.url)) for f in loaded.config.feeds)
        states = store.feed_states()
    table = new_table()
    for col in ("feed", "status", "errors", "last ok", "next poll", "last error"):
        table.add_column(col)
    failing = 0
    for f in loaded.config.feeds:
        st = states[f.name]
        if f.enabled and st.error_count:
            failing += 1
        moved = f" (moved to {st.fetch_url})" if st.fetch_url else ""
        table.add_row(
            f.name,
            st.status or "never fetched",
            str(st.error_count),
            _fmt_time(st.last_ok),
            _fmt_time(st.next_poll),
            (st.last_error or "") + moved,
        )
    out.print(table)
    out.print(f"{failing} failing of {sum(f.enabled for f in loaded.config.feeds)} enabled feeds")
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


# -- entries -----------------------------------------------------------------------------------


def parse_since(value: str | None, now: datetime) -> datetime | None:
    if not value:
        return None
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}(?:[T ].*)?", value):
        try:
            t = datetime.fromisoformat(value)
        except ValueError:
            raise click.BadParameter(f"{value!r} is not an ISO date; write e.g. 2025-09-01") from None
        return t if t.tzinfo else t.replace(tzinfo=UTC)
    try:
        return now - timedelta(seconds=_duration(value))
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def entry_json(s: StoredEntry) -> dict[str, Any]:
    e = s.entry
    return {
        "id": s.id,
        "feed": e.feed,
        "entry_id": e.entry_id,
        "guid": e.guid,
        "link": e.link,
        "title": e.title,
        "summary": e.summary_text,
        "published": e.published.isoformat(),
        "published_fallback": e.published_fallback,
        "first_seen": s.first_seen.isoformat(),
        "author": e.author,
        "language": e.language,
        "source": e.source_title,
    }


@main.command()
@click.option("--feed", metavar="NAME", help="entries of this feed only")
@click.option("--since", metavar="AGE|DATE", help="first seen within AGE (e.g. 2d, 12h) or since DATE")
@click.option("--format", "fmt", type=click.Choice(["table", "jsonl"]), default="table", show_default=True)
@click.option("--limit", type=int, default=None, help="at most this many (newest first)")
@pass_state
@handles_errors
def entries(state: State, feed: str | None, since: str | None, fmt: str, limit: int | None) -> None:
    """Stored entries."""
    since_t = parse_since(since, utcnow())
    with open_store(state.loaded) as store:
        rows = store.iter_entries(feed=feed, since=since_t, limit=limit, newest_first=limit is not None)
        if fmt == "jsonl":
            for s in rows:
                sys.stdout.write(json.dumps(entry_json(s), ensure_ascii=False) + "\n")
            return
        table = new_table()
        for col in ("id", "feed", "published", "lang", "title"):
            table.add_column(col, overflow="fold")
        for s in rows:
            e = s.entry
            table.add_row(
                str(s.id),
                e.feed,
                _fmt_time(e.published) + ("*" if e.published_fallback else ""),
                e.language or "",
                e.title,
            )
        out.print(table)


# -- db ----------------------------------------------------------------------------------------


@main.group()
def db() -> None:
    """Database maintenance."""


@db.command("upgrade")
@pass_state
@handles_errors
def db_upgrade(state: State) -> None:
    """Apply schema migrations (also done on every start)."""
    from .store import Store

    store = Store(state.loaded.database_url, migrate=False)
    try:
        before = store.current_revision()
        applied = store.upgrade()
        out.print(
            f"database at revision {store.current_revision()}"
            + (f" (was {before or 'empty'})" if applied else " (already current)")
        )
    finally:
        store.close()
