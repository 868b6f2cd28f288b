"""What the doors show, read from the store: stories as records, why an entry was chosen, what
the rules would do, and the state of things. The CLI prints these; the web app and embedders may
use them as they are. Read-only: nothing here writes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from digest.config import FeedSettings, LoadedConfig
from digest.errors import DigestError
from digest.model.fold import canonical_url
from digest.model.judge import Classification, classify, classify_hits
from digest.model.records import ClassifiedEntry, Entry, FeedState, StoredEntry
from digest.model.rules import explain_rules
from digest.model.schedule import next_due
from digest.model.stories import age_at_first_sight, build_stories, old_news
from digest.model.subscribers import Subscriber
from digest.model.terms import Hits
from digest.service.sending import due_now
from digest.storage.store import Store


def story_records(loaded: LoadedConfig, store: Store, *, include_all: bool) -> list[dict[str, Any]]:
    """One JSON-ready record per stored entry that was selected (with include_all: every entry
    classified), with its story, the story's tags and outlets, and why it was selected."""
    titles = {name: st.title for name, st in store.feed_states().items()}
    order = [t.name for t in (*loaded.rules.topics, *loaded.rules.tags)]
    classified = store.classified_entries(relevant_only=not include_all)
    views = {v.id: v for v in build_stories(classified, titles, order, loaded.clustering.tag_share)}
    records = []
    for c in classified:
        e = c.stored.entry
        view = views.get(c.story_id) if c.story_id is not None else None
        outlet = e.source_title or titles.get(e.feed) or e.feed
        records.append(
            {
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
        )
    return records


def find_entry(store: Store, ref: str) -> StoredEntry:
    """An entry by row id, entry id, GUID or link; a DigestError saying where to find one."""
    found = store.find_entry(ref)
    if found is None:
        raise DigestError(
            f"no stored entry {ref!r}; give the id from `digest entries` or `digest stories`, "
            "or the entry's link or GUID"
        )
    return found


@dataclass(frozen=True)
class Explanation:
    """Why an entry was selected or not, judged by the rules as they are now."""

    stored: StoredEntry
    judged: Classification
    # per topic not selected by a rule: each rule's conditions, (group, condition, held)
    near_misses: dict[str, list[tuple[str, list[tuple[str, str, bool]]]]]
    old_news_age: timedelta | None  # set when the entry is old news, never mailed (max_age)
    story_id: int | None
    mates: list[tuple[int, str, str]]  # the story's other reports: (entry id, outlet, title)


def explain(loaded: LoadedConfig, store: Store, ref: str) -> Explanation:
    rules = loaded.rules
    stored = find_entry(store, ref)
    e = stored.entry
    hits: Hits = rules.scan(e.title, e.summary_text)
    judged = classify_hits(hits, rules)
    near: dict[str, list[tuple[str, list[tuple[str, str, bool]]]]] = {}
    for topic in rules.topics:
        fired = any(r.kind == "topic" and r.name == topic.name for r in judged.why)
        if topic.rules and not fired and topic.name not in judged.topics:
            near[topic.name] = explain_rules(topic, hits)
    row = store.classified_entries(relevant_only=False, entry_ids=[stored.id])
    story_id = row[0].story_id if row else None
    mates: list[tuple[int, str, str]] = []
    if story_id is not None:
        titles = {n: st.title for n, st in store.feed_states().items()}
        for m in store.classified_entries(story_ids=[story_id]):
            if m.stored.id != stored.id:
                me = m.stored.entry
                mates.append((m.stored.id, me.source_title or titles.get(me.feed) or me.feed, me.title))
    age = age_at_first_sight(stored) if old_news(stored, loaded.config.max_age) else None
    return Explanation(stored, judged, near, age, story_id, mates)


@dataclass(frozen=True)
class RuleTrial:
    """One entry tried against the current rules (`digest rules test`)."""

    title: str
    judged: Classification
    note: str  # how far from selection, or how it differs from what is stored


def closest_score(c: Classification) -> str:
    """The topic score nearest its threshold: how far a dropped entry fell short, or by how much a
    selected one passed."""
    if not c.scores:
        return "no topic's trigger terms found"
    best = max(c.scores, key=lambda sc: sc.total - sc.threshold)
    return f"{best.topic}: {best.line()}"


def try_rules_on(loaded: LoadedConfig, entries: Sequence[Entry]) -> list[RuleTrial]:
    rules = loaded.rules
    out = []
    for e in entries:
        c = classify(e.title, e.summary_text, rules)
        out.append(RuleTrial(e.title, c, closest_score(c)))
    return out


def try_rules_on_store(loaded: LoadedConfig, store: Store, since: datetime | None) -> list[RuleTrial]:
    """Stored entries judged by the current rules; the note says where that differs from what is
    stored (after feeds.yaml was edited)."""
    rules = loaded.rules
    stored: dict[int, ClassifiedEntry] = {
        c.stored.id: c for c in store.classified_entries(relevant_only=False, since=since)
    }
    out = []
    for s in store.iter_entries(since=since):
        c = classify(s.entry.title, s.entry.summary_text, rules)
        before = stored.get(s.id)
        note = ""
        if before is not None and before.relevant != c.relevant:
            note = "newly selected" if c.relevant else "newly dropped"
        out.append(RuleTrial(s.entry.title, c, note))
    return out


@dataclass(frozen=True)
class FeedHealth:
    """A configured feed, what is known of its polls, and how many entries it has stored."""

    settings: FeedSettings
    interval: float  # seconds between polls
    state: FeedState
    entries: int


def feed_health(loaded: LoadedConfig, store: Store) -> list[FeedHealth]:
    """Every configured feed, in the config's order (a feed never polled has a fresh state)."""
    store.sync_feeds((f.name, loaded.feed_url(f.url)) for f in loaded.config.feeds)
    states, counts = store.feed_states(), store.entry_counts()
    return [
        FeedHealth(f, loaded.config.interval(f), states[f.name], counts.get(f.name, 0))
        for f in loaded.config.feeds
    ]


@dataclass(frozen=True)
class Status:
    enabled_feeds: int
    failing: list[FeedState]  # enabled feeds with errors
    last_poll: datetime | None
    entries: int
    subscribers: list[Subscriber]
    due_now: int
    next_send: datetime | None
    recent: list[dict[str, Any]]  # the last sends, newest first
    bounce_reports: dict[str, int]  # messages read from the bounce mailbox, by outcome
    last_bounce_report: datetime | None

    def count(self, status: str) -> int:
        return sum(s.status == status for s in self.subscribers)


def status(loaded: LoadedConfig, store: Store, now: datetime) -> Status:
    states = store.feed_states()
    subs = store.list_subscribers()
    _, _, due = due_now(store, now, instant_every=loaded.config.delivery.instant_every)
    enabled = [f for f in loaded.config.feeds if f.enabled]
    active = [s for s in subs if s.status == "active"]
    return Status(
        enabled_feeds=len(enabled),
        failing=[states[f.name] for f in enabled if f.name in states and states[f.name].error_count],
        last_poll=max((st.last_fetched for st in states.values() if st.last_fetched), default=None),
        entries=sum(store.entry_counts().values()),
        subscribers=subs,
        due_now=len(due),
        next_send=min((next_due(s, now) for s in active), default=None),
        recent=store.deliveries_report(limit=10),
        bounce_reports=store.bounce_report_counts(),
        last_bounce_report=store.last_bounce_report(),
    )


def operator_report(store: Store, now: datetime) -> tuple[str, str]:
    """(subject, text) of the operator's daily mail: feeds failing for a day or more, and the
    last day's sends."""
    failing = [
        st
        for st in store.feed_states().values()
        if st.error_count and (st.last_ok is None or now - st.last_ok > timedelta(days=1))
    ]
    recent = [
        r
        for r in store.deliveries_report(limit=10_000)
        if r.get("sent_at") and now - r["sent_at"] < timedelta(days=1)
    ]
    lines = [
        f"digest operator report, {now:%Y-%m-%d %H:%M} UTC",
        "",
        f"{len(failing)} feeds failing for a day or more:",
    ]
    lines += [
        f"  {st.name}: {st.last_error} (since {st.last_ok or 'never ok'}, {st.error_count} errors)"
        for st in failing
    ]
    lines += ["", f"{len(recent)} digests sent in the last day."]
    bounced = store.bounce_report_counts(since=now - timedelta(days=1))
    if bounced:
        lines.append(
            f"{bounced.get('hard', 0)} hard and {bounced.get('soft', 0)} soft bounces, "
            f"{bounced.get('complaint', 0)} complaints, {bounced.get('unknown', 0)} unknown messages "
            "in the bounce mailbox in the last day."
        )
    return f"digest: {len(failing)} failing feeds", "\n".join(lines)
