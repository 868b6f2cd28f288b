"""Organising: what is new is judged (if the fetch did not already) and folded into stories.

store.unclassified | judge.classify | store.save_classifications
| store.unclustered + store.story_members (the window) | fold.Clusterer | store.assign_stories
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from digest.config import LoadedConfig
from digest.feeds.workers import (
    Clock,
    utcnow,
)
from digest.model.fold import Clusterer, ClusteringSettings, Story, StoryEntry, processing_order, story_entry
from digest.model.judge import classify
from digest.model.records import Entry, StoredEntry, Verdict
from digest.model.rules import CompiledRules
from digest.storage.store import Store


@dataclass(frozen=True, slots=True)
class OrganiseSummary:
    classified: int = 0  # entries judged here (what the fetch workers had not judged)
    selected: int = 0  # entries newly selected, each folded into a story once
    new_stories: int = 0
    redone: bool = False  # the rules changed, so every entry was classified again


def _features(
    id: int, e: Entry, entities: Iterable[str], title_entities: Iterable[str], settings: ClusteringSettings
) -> StoryEntry:

    return story_entry(
        id,
        title=e.title,
        summary=e.summary_text,
        link=e.link,
        guid=e.guid,
        published=e.published,
        published_fallback=e.published_fallback,
        language=e.language,
        source_title=e.source_title,
        entities=entities,
        title_entities=title_entities,
        feed=e.feed,
        settings=settings,
    )


def _classify(
    batch: Sequence[StoredEntry], rules: CompiledRules, rules_hash: str, settings: ClusteringSettings
) -> list[tuple[int, Verdict, StoryEntry | None]]:
    """Stored entries -> (row id, verdict, cluster features or None): selection, tags, features. Pure."""

    out = []
    for s in batch:
        e = s.entry
        v = Verdict.of(classify(e.title, e.summary_text, rules), rules_hash)
        out.append(
            (s.id, v, _features(s.id, e, v.entities, v.title_entities, settings) if v.relevant else None)
        )
    return out


def _spans(times: Iterable[datetime], reach: timedelta, most: int = 64) -> list[tuple[datetime, datetime]]:
    """The times, each widened by `reach` either side, overlapping ones joined: what a store read
    for stories to join must cover. At most `most` spans (the closest are joined first)."""
    spans: list[list[datetime]] = []
    for t in sorted(times):
        if spans and t - reach <= spans[-1][1]:
            spans[-1][1] = t + reach
        else:
            spans.append([t - reach, t + reach])
    while len(spans) > most:  # a query with hundreds of ranges costs more than it saves
        _, i = min((spans[i + 1][0] - spans[i][1], i) for i in range(len(spans) - 1))
        spans[i : i + 2] = [[spans[i][0], spans[i + 1][1]]]
    return [(a, b) for a, b in spans]


def organise(loaded: LoadedConfig, store: Store, *, clock: Clock = utcnow) -> OrganiseSummary:
    """Select, tag and cluster what is new (everything, if the rules changed).

    store.unclassified | select.classify (all cores) | store.save_classifications
    | store.unclustered + store.story_members (the window) | fold.Clusterer | store.assign_stories
    """

    rules_hash = loaded.rules_hash
    now = clock()
    redone = store.stale_rules(rules_hash)
    if redone:
        store.forget_classifications(rules_hash)
    # One process: a pool was measured no faster (unpickling the results costs what it saves).
    # The rules are compiled only when something needs them (a warm run has nothing to do).
    todo = store.unclassified(rules_hash)
    done = _classify(todo, loaded.rules, rules_hash, loaded.clustering) if todo else []
    known = {i: f for i, _, f in done if f is not None}  # features already computed
    store.save_classifications({i: v for i, v, _ in done}, now)

    new = store.unclustered()
    created = 0
    if new:
        settings = loaded.clustering
        dated = [m.stored.entry.published for m in new if not m.stored.entry.published_fallback]
        stories: dict[int, Story] = {}
        for m in store.story_members(_spans(dated or [now], timedelta(seconds=settings.window))):
            assert m.story_id is not None
            f = _features(m.stored.id, m.stored.entry, m.entities, m.title_entities, settings)
            stories.setdefault(m.story_id, Story(m.story_id)).add(f)
        clusterer = Clusterer(settings, stories.values(), next_id=store.next_story_id())
        incoming = sorted(
            (
                known.get(m.stored.id)
                or _features(m.stored.id, m.stored.entry, m.entities, m.title_entities, settings)
                for m in new
            ),
            key=processing_order,
        )
        assigned = {e.id: clusterer.assign(e) for e in incoming}
        assignment = {eid: clusterer.story_of(sid) for eid, sid in assigned.items()}
        merged = {old: clusterer.story_of(old) for old in clusterer.merged if old in stories}
        created = store.assign_stories(assignment, now, merged=merged)
    # every newly selected entry is folded exactly once, whoever judged it (a fetch worker or this
    # function): the entries folded now are the entries newly selected
    return OrganiseSummary(len(done), len(new), created, redone)
