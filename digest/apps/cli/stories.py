"""`digest entries`, `stories`, `explain`, `rules test`, `db upgrade`: what was stored and why."""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import timedelta
from typing import Any

import click
from rich.table import Table

from digest.apps.cli.common import (
    State,
    fail,
    fmt_age,
    fmt_time,
    handles_errors,
    main,
    out,
    parse_since,
    pass_state,
)
from digest.config import LoadedConfig
from digest.errors import DigestError
from digest.feeds.fetch import Fetcher
from digest.feeds.parse import parse_feed
from digest.model.records import FetchRequest, StoredEntry
from digest.model.search import parse_query
from digest.service.api import Digest
from digest.service.fetching import utcnow


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
    rows = state.digest.entries(feed=feed, since=parse_since(since, utcnow()), limit=limit)
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
            fmt_time(e.published) + ("*" if e.published_fallback else ""),
            e.language or "",
            e.title,
        )
    out.print(table)


@main.group()
def db() -> None:
    """Database maintenance."""


@db.command("upgrade")
@pass_state
@handles_errors
def db_upgrade(state: State) -> None:
    """Apply schema migrations (also done on every start)."""
    before, after = state.digest.upgrade_database()
    out.print(
        f"database at revision {after}"
        + (f" (was {before or 'empty'})" if before != after else " (already current)")
    )


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
    if words is not None:
        return _found_stories(state.digest, words, fmt)
    records = state.digest.stories(include_all=include_all)
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


def _found_stories(d: Digest, words: str, fmt: str) -> None:
    if not parse_query(words):
        fail(f"--search {words!r} has no words to look for; give one or more words", 2)  # usage
    views = d.search(words)
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


@main.command()
@click.argument("entry")
@pass_state
@handles_errors
def explain(state: State, entry: str) -> None:
    """Why ENTRY (an id, link or GUID) was selected or not, and which story it is in."""
    loaded = state.loaded
    x = state.digest.explain(entry)
    s, e, c = x.stored, x.stored.entry, x.judged
    out.print(f"[bold]{e.title}[/]", markup=True)
    when = fmt_time(e.published) + (" (no date in the feed: first seen)" if e.published_fallback else "")
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
    for topic in loaded.rules.topics:
        sc = scores.get(topic.name)
        if sc is not None:
            verdict = "selects" if sc.selects else "does not select"
            out.print(f"  topic {topic.name}: {sc.line()}, {verdict}", markup=False)
            for f in sc.features:
                out.print(f"    {f.weight:+5g}  {f.name}: {f.field} “{f.shown}”", markup=False)
            if not sc.features:
                out.print("    (no evidence found)", markup=False)
        for r in c.why:  # a rule that selected it
            if (r.kind, r.name) == ("topic", topic.name) and r.fired.rule != (sc and sc.line()):
                ev = "; ".join(
                    f"{fld}: “{matched}” ({cond})" for cond, fld, _term, matched in r.fired.evidence
                )
                out.print(f"  topic {topic.name} ← {r.fired.rule}: {ev}", markup=False)
        for rule_name, conds in x.near_misses.get(topic.name, []):  # the closest rules, for a fix
            parts = [
                f"{'✓' if (not held if g == 'none' else held) else '✗'} {g} {cond}" for g, cond, held in conds
            ]
            out.print(f"  topic {topic.name} / {rule_name}: " + "; ".join(parts), markup=False)
    for r in c.why:
        if r.kind != "tag":
            continue
        ev = "; ".join(f"{field}: “{matched}” ({cond})" for cond, field, _term, matched in r.fired.evidence)
        out.print(f"  tag {r.name} ← {r.fired.rule}: {ev}", markup=False)
    for r, to in c.gave_way:  # matched, but `unless` let another tag have it
        ev = "; ".join(f"{field}: “{matched}” ({cond})" for cond, field, _term, matched in r.fired.evidence)
        out.print(
            f"  tag {r.name} ✗ {r.fired.rule}: {ev}; matched but gives way to {', '.join(sorted(to))}",
            markup=False,
        )
    if x.old_news_age is not None:
        out.print(
            f"\n[yellow]not mailed[/]: old news, published {fmt_age(x.old_news_age)} before it was"
            f" first seen ({fmt_time(s.first_seen)}); max_age in the config is"
            f" {fmt_age(timedelta(seconds=loaded.config.max_age))}",
            markup=True,
        )
    if x.story_id is not None:
        others = f"{len(x.mates)} other reports" if x.mates else "no other reports yet"
        out.print(f"\nstory s{x.story_id}: {others}", markup=False)
        for mate_id, outlet, title in x.mates[:10]:
            out.print(f"  {mate_id} · {outlet} · {title}", markup=False)


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
    d = state.digest
    if source:
        trials = d.try_rules(_read_feed_for_test(state.loaded, source))
    else:
        trials = d.try_rules(since=parse_since(since, utcnow()))
    rows = [(r.title, r.judged, r.note) for r in trials]
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


def _read_feed_for_test(loaded: LoadedConfig, source: str) -> list[Any]:

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
