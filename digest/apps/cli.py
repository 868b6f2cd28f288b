"""Command line: a thin caller of the service layer (pipeline.py). Errors become one line.

\b
Exit codes:
  0  done
  1  done, but the work failed (every feed failed; with --strict, any feed; a check found problems)
  2  usage or configuration error (bad option, invalid feeds.yaml, template or address)
  3  database error (cannot open, migrate or write)
  4  another scheduler holds this database's lock (--wait)
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
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from digest import __version__
from digest.config import LoadedConfig, _duration, load_config
from digest.errors import AddressError, ConfigError, DigestError
from digest.model.records import FeedReport, FetchStatus, FetchSummary
from digest.service.pipeline import (
    FetchOptions,
    OrganiseSummary,
    fetch_feeds,
    open_store,
    organise,
    utcnow,
)
from digest.storage.store import StoredEntry

F = TypeVar("F", bound=Callable[..., Any])

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def _fail(message: str, code: int) -> None:
    for line in message.splitlines() or [message]:
        err.print(f"digest: error: {line}", markup=False)
    sys.exit(code)


def warn_base_url(loaded: LoadedConfig) -> None:
    """At the start of the commands whose mail or pages carry links (send, run, daemon, serve)."""
    warning = loaded.config.delivery.base_url_warning()
    if warning:
        err.print(f"digest: warning: {warning}", markup=False)


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


HELP = """Poll news feeds, pick the SCO and Putin–Xi stories, fold them into stories, and mail
digests to subscribers. Start with `digest run --once` (fetch, then send what is due).

\b
Exit codes:
  0  done
  1  done, but the work failed (every feed failed; with --strict, any feed; a check found problems)
  2  usage or configuration error (bad option, invalid feeds.yaml, template or address)
  3  database error (cannot open, migrate or write)
  4  another scheduler holds this database's lock
"""


@click.group(help=HELP, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
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


def _fmt_age(age: timedelta) -> str:
    """3d, 5h, 40m: the largest unit that fits."""
    seconds = age.total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:,.0f}{unit}"
    return f"{seconds:.0f}s"


def print_fetch_summary(summary: FetchSummary, console: Console) -> None:
    table = Table(title="fetch", show_lines=False)
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


def organise_line(o: OrganiseSummary) -> str:
    redo = " (rules changed: every entry classified again)" if o.redone else ""
    return f"{o.selected} newly selected, {o.new_stories} new stories{redo}"


def run_fetch(loaded: LoadedConfig, options: FetchOptions, console: Console) -> FetchSummary:
    with open_store(loaded) as store:
        if not console.is_terminal:
            return asyncio.run(fetch_feeds(loaded, store, options))
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


# daemon and run --once: the claims keep several schedulers correct; the lock is only asked for
wait_option = click.option(
    "--wait",
    type=float,
    default=None,
    metavar="SECONDS",
    help="be the only scheduler: hold the database's scheduler lock, waiting this long for it",
)


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
    summary = run_fetch(loaded, options, out)
    with open_store(loaded) as store:
        try:
            organised = organise(loaded, store)
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
    table = Table()
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
    table = Table()
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
    from digest.feeds.opml import add_feeds_to_config, read_opml

    added = add_feeds_to_config(Path(loaded.source), read_opml(opml_file))
    load_config(loaded.source)  # the result must still be a valid config
    out.print(f"added {len(added)} feeds to {loaded.source}" + (f": {', '.join(added)}" if added else ""))


@feeds.command("export")
@pass_state
@handles_errors
def feeds_export(state: State) -> None:
    """Print the feeds as OPML 2.0."""
    from digest.feeds.opml import write_opml

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
        configured = {f.name for f in state.loaded.config.feeds}
        # a feed removed from the config keeps its entries: only a name unknown to both is an error
        if feed is not None and feed not in configured and not store.entry_counts().get(feed):
            state.loaded.config.feed(feed)  # exit 2, naming the feed and where to look
        rows = store.iter_entries(feed=feed, since=since_t, limit=limit, newest_first=limit is not None)
        if fmt == "jsonl":
            for s in rows:
                sys.stdout.write(json.dumps(entry_json(s), ensure_ascii=False) + "\n")
            return
        table = Table()
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
    from digest.storage.store import Store

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


# -- stories, explain, rules ---------------------------------------------------------------------


def story_records(store: Any, loaded: LoadedConfig, *, include_all: bool) -> list[dict[str, Any]]:
    """One JSON object per stored entry that was selected (with include_all: every entry)."""
    from digest.model.fold import canonical_url
    from digest.model.stories import build_stories

    titles = {name: st.title for name, st in store.feed_states().items()}
    order = [t.name for t in (*loaded.rules.topics, *loaded.rules.tags)]
    classified = store.classified_entries(relevant_only=not include_all)
    views = {v.id: v for v in build_stories(classified, titles, order, loaded.clustering.tag_share)}
    records = []
    for c in classified:
        e = c.stored.entry
        view = views.get(c.story_id) if c.story_id is not None else None
        outlet = e.source_title or titles.get(e.feed) or e.feed
        rec: dict[str, Any] = {
            "feed": e.feed,
            "entry_id": e.entry_id,
            "guid": e.guid,
            "link": e.link,
            "canonical_url": canonical_url(e.link),
            "title": e.title,
            "published": e.published.isoformat(),
            "published_is_fetch_time": e.published_fallback,
            "language": e.language,
            "relevant": c.relevant,
            # topics decide who gets an entry: its own; tags say what the news is: its story's,
            # voted by the reports (what a digest shows). The other of each beside them.
            "topics": list(c.topics),
            "tags": list(view.tags if view else c.tags),
            "story_topics": list(view.topics if view else c.topics),
            "entry_tags": list(c.tags),
            "story": f"s{c.story_id}" if c.story_id is not None else None,
            "outlet": outlet,
            "also_reported_by": [o for o in view.outlets if o != outlet] if view else [],
            "why": c.why,
            "id": c.stored.id,
        }
        records.append(rec)
    return records


@main.command()
@click.option("--format", "fmt", type=click.Choice(["table", "jsonl"]), default="table", show_default=True)
@click.option(
    "--all", "include_all", is_flag=True, help="every stored entry, with relevant: false on the rest"
)
@click.option(
    "--search",
    "words",
    metavar="WORDS",
    help="only the stories whose titles or summaries have all these words (any of English, "
    "Russian, Chinese), best match first",
)
@pass_state
@handles_errors
def stories(state: State, fmt: str, include_all: bool, words: str | None) -> None:
    """Selected entries and the stories they were folded into."""
    loaded = state.loaded
    with open_store(loaded) as store:
        organise(loaded, store)
        if words is not None:
            return _found_stories(loaded, store, words, fmt)
        records = story_records(store, loaded, include_all=include_all)
    if fmt == "jsonl":
        for rec in records:
            sys.stdout.write(json.dumps(rec, ensure_ascii=False) + "\n")
        return
    table = Table()
    columns = ("story", "published", "topics", "tags", "outlet", "title")
    for col in ("selected", *columns) if include_all else columns:
        table.add_column(col, overflow="fold")
    # the same rows as --format jsonl: with --all, the entries not selected too
    for rec in sorted(
        (r for r in records if include_all or r["relevant"]),
        key=lambda r: (not r["relevant"], r["story"] or "", r["published"]),
    ):
        table.add_row(
            *(["yes" if rec["relevant"] else "no"] if include_all else []),
            rec["story"] or "",
            rec["published"][:16].replace("T", " "),
            ",".join(rec["topics"]),
            ",".join(rec["tags"]),
            rec["outlet"],
            rec["title"],
        )
    out.print(table)
    n_stories = len({r["story"] for r in records if r["relevant"]})
    out.print(f"{sum(r['relevant'] for r in records)} selected entries in {n_stories} stories")


def _found_stories(loaded: LoadedConfig, store: Any, words: str, fmt: str) -> None:
    from digest.model.search import parse_query
    from digest.service.lookup import search_stories

    if not parse_query(words):
        _fail(f"--search {words!r} has no words to look for; give one or more words", 2)  # usage
    views = search_stories(loaded, store, words)
    if fmt == "jsonl":
        for rank, v in enumerate(views, 1):
            rep = v.representative.stored.entry
            rec = {
                "rank": rank,
                "story": f"s{v.id}",
                "title": rep.title,
                "link": rep.link,
                "language": rep.language,
                "published": max(m.stored.entry.published for m in v.entries).isoformat(),
                "outlets": list(v.outlets),
                "topics": list(v.topics),
                "tags": list(v.tags),
            }
            sys.stdout.write(json.dumps(rec, ensure_ascii=False) + "\n")
        return
    table = Table()
    for col in ("story", "published", "tags", "outlets", "title"):
        table.add_column(col, overflow="fold")
    for v in views:
        rep = v.representative.stored.entry
        newest = max(m.stored.entry.published for m in v.entries)
        when = newest.isoformat()[:16].replace("T", " ")
        table.add_row(f"s{v.id}", when, ",".join(v.tags), ", ".join(v.outlets), rep.title)
    out.print(table)
    out.print(f"{len(views)} stories with {words!r}")


def find_entry(store: Any, ref: str) -> Any:
    """An entry by row id, entry id, GUID or link."""
    from digest.storage.store import StoredEntry

    if ref.isdigit():
        found = list(store.iter_entries(ids=[int(ref)]))
        if found:
            return found[0]
    for s in store.iter_entries():
        assert isinstance(s, StoredEntry)
        if ref in (s.entry.entry_id, s.entry.guid, s.entry.link):
            return s
    raise DigestError(
        f"no stored entry {ref!r}; give the id from `digest entries` or `digest stories`, "
        "or the entry's link or GUID"
    )


@main.command()
@click.argument("entry")
@pass_state
@handles_errors
def explain(state: State, entry: str) -> None:
    """Why ENTRY (an id, link or GUID) was selected or not, and which story it is in."""
    from digest.model.judge import classify_hits
    from digest.model.rules import explain_rules
    from digest.model.stories import age_at_first_sight, old_news

    loaded = state.loaded
    rules = loaded.rules
    with open_store(loaded) as store:
        organise(loaded, store)
        s = find_entry(store, entry)
        e = s.entry
        hits = rules.scan(e.title, e.summary_text)
        c = classify_hits(hits, rules)
        mates = []
        stored = store.classified_entries(relevant_only=False, entry_ids=[s.id])
        story_id = stored[0].story_id if stored else None
        if story_id is not None:
            titles = {n: st.title for n, st in store.feed_states().items()}
            mates = [m for m in store.classified_entries() if m.story_id == story_id and m.stored.id != s.id]
    out.print(f"[bold]{e.title}[/]", markup=True)
    when = _fmt_time(e.published) + (" (no date in the feed: first seen)" if e.published_fallback else "")
    out.print(f"entry {s.id} · {e.feed} · {when} · {e.language or '?'}\n{e.link or ''}", markup=False)
    if not c.relevant:
        out.print("\n[yellow]not selected[/]: no topic reached its score or matched a rule.", markup=True)
    else:
        out.print(
            f"\n[green]selected[/]: topics {', '.join(c.topics)}; tags {', '.join(c.tags) or '—'}",
            markup=True,
        )
    # every topic, selected or not: its score and each piece of evidence, or its rules' conditions
    scores = {sc.topic: sc for sc in c.scores}
    for topic in rules.topics:
        sc = scores.get(topic.name)
        if sc is not None:
            verdict = "selects" if sc.selects else "does not select"
            out.print(f"  topic {topic.name}: {sc.line()}, {verdict}", markup=False)
            for f in sc.features:
                out.print(f"    {f.weight:+5g}  {f.name}: {f.field} “{f.shown}”", markup=False)
            if not sc.features:
                out.print("    (no evidence found)", markup=False)
        fired = [
            r
            for r in c.why
            if (r.kind, r.name) == ("topic", topic.name) and r.fired.rule != (sc and sc.line())
        ]
        for r in fired:  # a rule that selected it
            ev = "; ".join(f"{fld}: “{matched}” ({cond})" for cond, fld, _term, matched in r.fired.evidence)
            out.print(f"  topic {topic.name} ← {r.fired.rule}: {ev}", markup=False)
        if topic.rules and not fired and topic.name not in c.topics:  # the closest rules, for a fix
            for rule_name, conds in explain_rules(topic, hits):
                parts = [
                    f"{'✓' if (not held if g == 'none' else held) else '✗'} {g} {cond}"
                    for g, cond, held in conds
                ]
                out.print(f"  topic {topic.name} / {rule_name}: " + "; ".join(parts), markup=False)
    for r in c.why:
        if r.kind != "tag":
            continue
        ev = "; ".join(f"{field}: “{matched}” ({cond})" for cond, field, _term, matched in r.fired.evidence)
        out.print(f"  tag {r.name} ← {r.fired.rule}: {ev}", markup=False)
    if old_news(s, loaded.config.max_age):
        age = age_at_first_sight(s)
        out.print(
            f"\n[yellow]not mailed[/]: old news, published {_fmt_age(age)} before it was first seen"
            f" ({_fmt_time(s.first_seen)}); max_age in the config is"
            f" {_fmt_age(timedelta(seconds=loaded.config.max_age))}",
            markup=True,
        )
    if story_id is not None:
        others = f"{len(mates)} other reports" if mates else "no other reports yet"
        out.print(f"\nstory s{story_id}: {others}", markup=False)
        for m in mates[:10]:
            me = m.stored.entry
            out.print(
                f"  {m.stored.id} · {me.source_title or titles.get(me.feed) or me.feed} · {me.title}",
                markup=False,
            )


@main.group()
def rules() -> None:
    """Try the topic and tag rules."""


@rules.command("test")
@click.argument("source", required=False)
@click.option(
    "--since",
    metavar="AGE|DATE",
    default="7d",
    show_default=True,
    help="stored entries first seen within AGE (when no SOURCE is given)",
)
@click.option("--selected-only", is_flag=True, help="list only what the rules select")
@pass_state
@handles_errors
def rules_test(state: State, source: str | None, since: str, selected_only: bool) -> None:
    """What the current rules select and drop, in stored entries or in a feed (file or URL).

    Nothing is stored or changed. For stored entries, the last column says where the
    current rules disagree with what is stored (after you edit feeds.yaml).
    """
    from digest.model.judge import classify

    loaded = state.loaded
    rules_ = loaded.rules
    rows: list[tuple[str, Any, str]] = []  # (title, classification, note)
    if source:
        for e in _read_feed_for_test(loaded, source):
            c = classify(e.title, e.summary_text, rules_)
            rows.append((e.title, c, _closest_score(c)))
    else:
        with open_store(loaded) as store:
            stored = {c.stored.id: c for c in store.classified_entries(relevant_only=False)}
            for s in store.iter_entries(since=parse_since(since, utcnow())):
                c = classify(s.entry.title, s.entry.summary_text, rules_)
                before = stored.get(s.id)
                note = ""
                if before is not None and before.relevant != c.relevant:
                    note = "newly selected" if c.relevant else "newly dropped"
                rows.append((s.entry.title, c, note))
    table = Table()
    for col in ("", "topics", "tags", "rule", "title", "note"):
        table.add_column(col, overflow="fold")
    for title, c, note in rows:
        if selected_only and not c.relevant:
            continue
        first = next((r.fired.rule for r in c.why if r.kind == "topic"), "")
        table.add_row(
            "[green]✓[/]" if c.relevant else "[dim]✗[/]",
            ",".join(c.topics),
            ",".join(c.tags),
            first,
            title,
            note,
        )
    out.print(table)
    out.print(f"{sum(c.relevant for _, c, _ in rows)} of {len(rows)} entries selected")


def _closest_score(c: Any) -> str:
    """For an entry of a feed tried with `rules test FILE`: the topic score nearest its threshold,
    so a dropped entry says how far it fell short and a selected one by how much it passed."""
    if not c.scores:
        return "no topic's trigger terms found"
    best = max(c.scores, key=lambda sc: sc.total - sc.threshold)
    return f"{best.topic}: {best.line()}"


def _read_feed_for_test(loaded: LoadedConfig, source: str) -> list[Any]:
    from digest.feeds.fetch import Fetcher
    from digest.feeds.parse import parse_feed
    from digest.model.records import FetchRequest

    async def get() -> Any:
        async with Fetcher(loaded.config.http) as f:
            return await f.fetch(FetchRequest("test", loaded.feed_url(source)))

    result = asyncio.run(get())
    if result.body is None:
        raise DigestError(f"{source}: {result.error}")
    parsed = parse_feed(
        "test", result.body, content_type=result.content_type, url=result.final_url, fetched_at=utcnow()
    )
    if parsed.error:
        raise DigestError(f"{source}: {parsed.error}")
    return list(parsed.entries)


# -- subscribers, send, preview, run ----------------------------------------------------------------


@main.group()
def subscribers() -> None:
    """Add, list, remove, import and export subscribers."""


@subscribers.command("add")
@click.argument("email")
@click.option("--topics", default=None, help="comma-separated topics  [new subscriber: all]")
@click.option("--tags", default=None, help="only stories with one of these tags  [new subscriber: any]")
@click.option(
    "--cadence", type=click.Choice(["daily", "weekly"]), default=None, help="[new subscriber: daily]"
)
@click.option("--weekday", default=None, help="with --cadence weekly: monday ... sunday  [monday]")
@click.option("--time", "send_time", default=None, help="local send time  [new subscriber: 07:00]")
@click.option("--timezone", default=None, help="IANA zone, e.g. Europe/Berlin  [new subscriber: UTC]")
@click.option(
    "--format", "fmt", type=click.Choice(["html", "text"]), default=None, help="[new subscriber: html]"
)
@click.option("--max-stories", type=int, default=None, help="1..200  [new subscriber: 20]")
@click.option("--why/--no-why", "show_why", default=None, help="show why each story was picked")
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
) -> None:
    """Add a subscriber, or change what is given of an existing one's preferences (the rest stay)."""
    from digest.model.subscribers import PREFERENCE_FIELDS, make_subscriber, normalise_email

    given = {
        "topics": topics,
        "tags": tags,
        "cadence": cadence,
        "weekday": weekday,
        "send_time": send_time,
        "timezone": timezone,
        "format": fmt,
        "max_stories": max_stories,
        "show_why": show_why,
    }
    given = {k: v for k, v in given.items() if v is not None}
    address = normalise_email(email, where="subscriber")
    loaded = state.loaded
    with open_store(loaded) as store:
        found = store.list_subscribers(email=address)
        base: dict[str, Any] = {}
        if found:
            old = found[0]
            base = {k: getattr(old, k) for k in ("name", "status", *PREFERENCE_FIELDS)}
            address = old.email  # the address as first stored
        data = {**base, **given, "email": address}
        if weekday is not None and data.get("cadence") != "weekly":
            raise AddressError(f"--weekday {weekday}: a weekday is for weekly digests; add --cadence weekly")
        if data.get("cadence") != "weekly":
            data["weekday"] = None
        sub = make_subscriber(data, where="subscriber")
        check_topics_and_tags(loaded, [sub], "subscriber")
        _, created = store.add_subscriber(sub, utcnow())
    out.print(f"{'added' if created else 'updated'} {sub.email}", markup=False)


def check_topics_and_tags(loaded: LoadedConfig, subs: list[Any], where: str) -> None:
    """Topics and tags named by a subscriber must exist: a tag that matches nothing would leave
    them an empty digest for ever. Exit 2, naming the valid ones."""
    known_topics = [t.name for t in loaded.rules.topics]
    known_tags = [t.name for t in loaded.rules.tags]
    for sub in subs:
        bad = sorted(set(sub.topics) - set(known_topics))
        if bad:
            raise AddressError(
                f"{where} {sub.email}: unknown topic(s) {', '.join(bad)}; known: {', '.join(known_topics)}"
            )
        bad = sorted(set(sub.tags) - set(known_tags))
        if bad:
            raise AddressError(
                f"{where} {sub.email}: unknown tag(s) {', '.join(bad)}; known: {', '.join(known_tags)}"
            )


@subscribers.command("list")
@pass_state
@handles_errors
def subscribers_list(state: State) -> None:
    """Every subscriber with their preferences and status."""
    with open_store(state.loaded) as store:
        subs = store.list_subscribers()
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
    from digest.model.subscribers import normalise_email

    address = normalise_email(email)
    with open_store(state.loaded) as store:
        if not store.remove_subscriber(address):
            raise DigestError(f"no subscriber {address}; `digest subscribers list` shows them")
    out.print(f"removed {address}", markup=False)


@subscribers.command("import")
@click.argument("csv_file", type=click.Path(dir_okay=False, path_type=Path))
@pass_state
@handles_errors
def subscribers_import(state: State, csv_file: Path) -> None:
    """Add or update subscribers from CSV (header: email, topics, tags, cadence, send_time, timezone, ...).
    Nothing is stored if any row is bad; every bad row is named."""
    from digest.model.subscribers import read_csv

    try:
        text = csv_file.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise DigestError(f"{csv_file}: cannot read it ({exc.strerror})") from None
    except UnicodeDecodeError as exc:
        raise AddressError(
            f"{csv_file}: not UTF-8 (byte {exc.object[exc.start]:#04x} at offset {exc.start}); "
            "save it as UTF-8 (in a spreadsheet: CSV UTF-8) and import again"
        ) from None
    subs = read_csv(text, str(csv_file))
    check_topics_and_tags(state.loaded, subs, str(csv_file) + ":")
    with open_store(state.loaded) as store:
        created = store.add_subscribers(subs, utcnow())
    out.print(f"{created} added, {len(subs) - created} updated from {csv_file}", markup=False)


@subscribers.command("export")
@pass_state
@handles_errors
def subscribers_export(state: State) -> None:
    """Print every subscriber as CSV (the import format)."""
    from digest.model.subscribers import write_csv

    with open_store(state.loaded) as store:
        sys.stdout.write(write_csv(store.list_subscribers()))


def print_send(reports: list[Any]) -> int:
    table = Table(title="send")
    for col in ("subscriber", "period", "result", "stories", "note"):
        table.add_column(col)
    for r in sorted(reports, key=lambda r: r.email):
        style = {
            "sent": "green",
            "failed": "red",
            "bounced": "red",
            "empty": "dim",
            "done": "dim",
            "claimed": "dim",
        }.get(r.state, "")
        table.add_row(
            r.email, r.period, f"[{style}]{r.state}[/]" if style else r.state, str(r.stories), r.error or ""
        )
    out.print(table)
    counts = {
        k: sum(r.state == k for r in reports)
        for k in ("sent", "empty", "failed", "bounced", "done", "claimed")
    }
    out.print(", ".join(f"{v} {k}" for k, v in counts.items()))
    return counts["failed"] + counts["bounced"]


@main.command()
@click.option(
    "--dry-run",
    is_flag=True,
    help="assemble and render for stored subscribers; send nothing, write nothing to the database",
)
@click.option("--to", "only", metavar="EMAIL", help="only this subscriber")
@pass_state
@handles_errors
def send(state: State, dry_run: bool, only: str | None) -> None:
    """Send every digest that is due now (each subscriber and period at most once)."""
    from digest.model.subscribers import normalise_email
    from digest.service.sending import send_due

    loaded = state.loaded
    warn_base_url(loaded)
    with open_store(loaded) as store:
        if not dry_run:  # a dry run writes nothing: it sends from the stories as last organised
            organise(loaded, store)
        reports = asyncio.run(
            send_due(
                loaded, store, now=utcnow(), dry_run=dry_run, only=normalise_email(only) if only else None
            )
        )
        unstored = [
            d["email"]
            for d in (loaded.config.subscribers if dry_run else ())
            if not store.list_subscribers(email=normalise_email(str(d.get("email", ""))))
        ]
    if print_send(reports):
        sys.exit(1)
    if unstored:  # said, so that an empty dry run is not mistaken for "nobody is due"
        out.print(
            f"not in this dry run: {', '.join(unstored)} (in feeds.yaml, stored at the first real send)",
            markup=False,
        )


@main.command()
@pass_state
@handles_errors
def bounces(state: State) -> None:
    """Read the bounce mailbox once (bounces: in feeds.yaml): DSNs and complaints mark subscribers
    bouncing or complained; each message is moved aside, so none is read twice."""
    from digest.service.bounces import process_bounces, summary_line

    with open_store(state.loaded) as store:
        summary = process_bounces(state.loaded, store, now=utcnow())
    out.print(summary_line(summary), markup=False)


PREVIEW_KINDS = {".html": "html", ".htm": "html", ".txt": "text", ".eml": "message"}


@main.command()
@click.option(
    "--subscriber", "email", metavar="EMAIL", help="render for this subscriber (default: the first)"
)
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="write FILE.html (the HTML part), FILE.txt (the text part) or FILE.eml (the message as sent)",
)
@pass_state
@handles_errors
def preview(state: State, email: str | None, output: Path | None) -> None:
    """Render a digest as it would be sent now, without sending or recording anything."""
    from dataclasses import replace

    from digest.model.schedule import current_period
    from digest.model.subscribers import Subscriber, address_key, make_subscriber, normalise_email
    from digest.service.sending import Mailer

    kind = None
    if output is not None:
        kind = PREVIEW_KINDS.get(output.suffix.lower())
        if kind is None:
            raise ConfigError(f"--output {output}: end the name in .html, .txt or .eml (what to write)")
        if not output.parent.is_dir():
            raise ConfigError(f"--output {output}: no folder {output.parent}; create it or write elsewhere")
    loaded = state.loaded
    now = utcnow()
    address = normalise_email(email) if email else None
    # subscribers from feeds.yaml not yet stored are previewed as they will be, and not stored
    configured = [
        make_subscriber(d, where=f"{loaded.source}: subscribers[{i}]")
        for i, d in enumerate(loaded.config.subscribers)
    ]
    with open_store(loaded) as store:
        subs = store.list_subscribers(email=address)
        if not subs:
            subs = [
                replace(c, id=0)
                for c in configured
                if not address or address_key(c.email) == address_key(address)
            ]
        if address and not subs:
            raise DigestError(f"no subscriber {email}; `digest subscribers list` shows them")
        sub = subs[0] if subs else Subscriber("preview@example.org", id=0)
        if kind in ("html", "text"):  # the part asked for, whatever the subscriber reads
            sub = replace(sub, format=kind)
        mailer = Mailer(loaded, store)
        period = current_period(sub, now)
        mailer.load_history([sub.id] if sub.id else [], now)
        prepared = mailer.prepare(sub, period, now, readable=True)
    rendered = prepared.rendered
    try:
        if output is None:
            sys.stdout.write(f"Subject: {rendered.subject}\n\n{rendered.text}")
        elif kind == "message":
            output.write_bytes(prepared.data)
        elif kind == "html":
            output.write_text(rendered.html or "", encoding="utf-8")
        else:
            output.write_text(rendered.text, encoding="utf-8")
    except OSError as exc:
        raise DigestError(f"--output {output}: cannot write it ({exc.strerror or exc})") from None
    if output is not None:
        out.print(f"wrote {output} ({prepared.digest.count} stories for {sub.email})", markup=False)


@main.command()
@click.option("--once", is_flag=True, required=True, help="one run: fetch due feeds, then send due digests")
@click.option("--dry-run", is_flag=True, help="fetch, but send nothing and record no delivery")
@wait_option
@pass_state
@handles_errors
def run(state: State, once: bool, dry_run: bool, wait: float | None) -> None:
    """Fetch the feeds that are due, then send the digests that are due (for cron).

    Safe beside a daemon, `digest send` or another run: feeds and digests are claimed. With
    --wait it holds the scheduler lock instead, and exits 4 if a --wait daemon keeps it that long."""
    from digest.storage.lock import SchedulerLock

    loaded = state.loaded
    warn_base_url(loaded)
    _ = loaded.rules
    if wait is None:
        _run_once(loaded, dry_run)
        return
    with SchedulerLock(loaded.database_url, wait=wait):
        _run_once(loaded, dry_run)


def _run_once(loaded: LoadedConfig, dry_run: bool) -> None:
    from digest.service.sending import send_due

    options = FetchOptions(due_only=True)
    summary = run_fetch(loaded, options, out)
    with open_store(loaded) as store:
        organised = organise(loaded, store)
        reports = asyncio.run(send_due(loaded, store, now=utcnow(), dry_run=dry_run))
    print_fetch_summary(summary, out)
    out.print(organise_line(organised))
    failed = print_send(reports)
    feeds_failed = summary.count(FetchStatus.FAILED)
    attempted = len(summary.reports) - summary.count(FetchStatus.DEFERRED)
    if feeds_failed and feeds_failed == attempted:  # as `fetch`: nothing new could come in
        err.print(f"digest: every feed failed ({feeds_failed}); `digest feeds check` shows why", markup=False)
    if failed or (feeds_failed and feeds_failed == attempted):
        sys.exit(1)


@main.command()
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option(
    "--metrics-port",
    type=click.IntRange(1, 65535),
    default=None,
    help="serve Prometheus metrics on 127.0.0.1:PORT",
)
@wait_option
@click.option("--verbose", "-v", is_flag=True, help="debug logging")
@pass_state
@handles_errors
def daemon(
    state: State, log_format: str, metrics_port: int | None, wait: float | None, verbose: bool
) -> None:
    """Run unattended: poll feeds and send digests when due, until SIGTERM or SIGINT.

    Several daemons may share a database: each feed's poll and each digest is claimed by one.
    SIGHUP reloads feeds.yaml (an invalid file is reported and the old one kept). With --wait
    it holds the scheduler lock, and exits 4 if another holder keeps it that long."""
    import logging

    from digest.apps.daemon import Daemon, setup_logging

    warn_base_url(state.loaded)
    setup_logging(log_format, logging.DEBUG if verbose else logging.INFO)
    sys.exit(Daemon(state.config_path, metrics_port=metrics_port, wait=wait).run())


@main.command()
@pass_state
@handles_errors
def status(state: State) -> None:
    """The state of things: feeds (failing ones named), subscribers due, last and next sends."""
    from digest.model.schedule import next_due
    from digest.service.sending import who_is_due
    from digest.storage.bounces import last_report_at, report_counts

    loaded = state.loaded
    now = utcnow()
    with open_store(loaded) as store:
        states = store.feed_states()
        subs = store.list_subscribers()
        recent = store.deliveries_report(limit=10)
        _, _, due = who_is_due(store, now)
        counts = store.entry_counts()
        bounced, bounced_last = report_counts(store), last_report_at(store)
    enabled = [f for f in loaded.config.feeds if f.enabled]
    last_poll = max((st.last_fetched for st in states.values() if st.last_fetched), default=None)
    failing = [states[f.name] for f in enabled if f.name in states and states[f.name].error_count]
    out.print(
        f"feeds: {len(enabled)} enabled, {len(failing)} failing; last poll {_fmt_time(last_poll)}; "
        f"{sum(counts.values())} entries stored",
        markup=False,
    )
    if failing:
        table = Table(title="failing feeds")
        for col in ("feed", "errors", "last ok", "next try", "last error"):
            table.add_column(col, overflow="fold")
        for st in failing:
            table.add_row(
                st.name,
                str(st.error_count),
                _fmt_time(st.last_ok),
                _fmt_time(st.next_poll),
                st.last_error or "",
            )
        out.print(table)
    active = [s for s in subs if s.status == "active"]
    nxt = min((next_due(s, now) for s in active), default=None)
    out.print(
        f"subscribers: {len(subs)} ({len(active)} active, "
        f"{sum(s.status == 'bouncing' for s in subs)} bouncing, "
        f"{sum(s.status == 'complained' for s in subs)} complained); "
        f"{len(due)} due now; next send {_fmt_time(nxt)}",
        markup=False,
    )
    if bounced:
        out.print(
            f"bounce mailbox: {sum(bounced.values())} messages read, last {_fmt_time(bounced_last)} "
            f"({bounced.get('hard', 0)} hard, {bounced.get('soft', 0)} soft, "
            f"{bounced.get('complaint', 0)} complaints, {bounced.get('ignored', 0)} ignored, "
            f"{bounced.get('unknown', 0)} unknown)",
            markup=False,
        )
    if recent:
        table = Table(title="last sends")
        for col in ("subscriber", "period", "state", "attempts", "sent"):
            table.add_column(col, no_wrap=True)  # an address folded in two is no use to anyone
        table.add_column("error", overflow="fold")
        for r in recent:
            table.add_row(
                r["email"],
                r["period"],
                r["state"],
                str(r["attempts"]),
                _fmt_time(r["sent_at"]),
                (r["last_error"] or "")[:80],
            )
        out.print(table)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(1, 65535), default=8080, show_default=True)
@pass_state
@handles_errors
def serve(state: State, host: str, port: int) -> None:
    """The subscriber pages: subscribe (double opt-in), unsubscribe (one click), preferences, archive.

    Every link in every digest points at delivery.base_url: put this behind it (HTTPS)."""
    import uvicorn

    from digest.apps.web import create_app

    loaded = state.loaded
    warn_base_url(loaded)
    with open_store(loaded):
        pass  # migrate before serving
    # The socket is bound here so that a port in use is one line (uvicorn logs it and exits 1
    # after start-up); uvicorn serves on the socket it is given.
    sock = _listen(host, port)
    # X-Forwarded-For is read by the app, from web.trusted_proxies only: uvicorn's own reading
    # trusts anyone on 127.0.0.1 by default (forwarded_allow_ips), a client could name any address
    config = uvicorn.Config(create_app(loaded), host=host, port=port, log_level="info", proxy_headers=False)
    uvicorn.Server(config).run(sockets=[sock])


def _listen(host: str, port: int) -> Any:
    import errno
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigError(f"--host {host}: not an address of this machine ({exc.strerror})") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRNOTAVAIL:
            raise ConfigError(f"--host {host}: not an address of this machine ({exc.strerror})") from None
        raise ConfigError(
            f"--port {port}: cannot listen on {host}:{port} ({exc.strerror or exc}); "
            "stop what holds it, or choose another --port"
        ) from None
    sock.set_inheritable(True)
    return sock


def _late_config(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    state = ctx.find_object(State)
    if value is not None and state is not None:  # parsed before the command runs
        state.config_path, state._loaded = value, None


def _accept_config_everywhere(group: click.Group) -> None:
    """`digest status --config x` as well as `digest --config x status`: people type it after."""
    for cmd in group.commands.values():
        if isinstance(cmd, click.Group):
            _accept_config_everywhere(cmd)
        elif not any(p.name == "late_config" for p in cmd.params):
            cmd.params.append(
                click.Option(
                    ["--config", "late_config"],
                    type=click.Path(dir_okay=False),
                    expose_value=False,
                    is_eager=True,
                    callback=_late_config,
                    help="feeds.yaml to use (also accepted before the command)",
                )
            )


_accept_config_everywhere(main)
