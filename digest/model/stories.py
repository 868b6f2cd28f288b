"""Stories as readers see them: one headline, every outlet that carried it, what it is about. Pure."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta

from digest.model.records import ClassifiedEntry, StoredEntry


@dataclass(frozen=True, slots=True)
class StoryView:
    id: int
    entries: tuple[ClassifiedEntry, ...]  # oldest first
    representative: ClassifiedEntry
    outlets: tuple[str, ...]  # the representative's first, then "also reported by"
    topics: tuple[str, ...]  # of all its entries: one report may name the SCO, another not
    tags: tuple[
        str, ...
    ]  # carried by more than `tag_share` of its entries: one outlet's stray word is not enough


def age_at_first_sight(stored: StoredEntry) -> timedelta:
    """How old the news was when it was first seen: its published time to its first sighting.

    An entry without a date in its feed was given its fetch time (published_fallback), so its age
    is nil: it is taken as news of the moment it appeared, and flagged as such where it is shown.
    """
    if stored.entry.published_fallback:
        return timedelta(0)
    return stored.first_seen - stored.entry.published


def old_news(stored: StoredEntry, max_age: float) -> bool:
    """Published more than `max_age` seconds before it was first seen (issue 11: an entry of 2015,
    first seen in a newly added feed, went out in that day's digest): stored, never mailed."""
    return age_at_first_sight(stored).total_seconds() > max_age


TOPIC_TITLES = {"sco": "Shanghai Cooperation Organisation", "putin-xi": "Putin and Xi"}


def topic_title(topic: str) -> str:
    """How a topic is named to readers (section headings, the web form)."""
    return TOPIC_TITLES.get(topic, topic.replace("-", " ").title())


def outlet_of(e: ClassifiedEntry, feed_titles: Mapping[str, str | None]) -> str:
    entry = e.stored.entry
    return entry.source_title or feed_titles.get(entry.feed) or entry.feed


def _representative(members: list[ClassifiedEntry]) -> ClassifiedEntry:
    """The first report with a summary of its own and a dated, direct link (not an aggregator's)."""

    def rank(e: ClassifiedEntry) -> tuple[bool, bool, bool, object, int]:
        entry = e.stored.entry
        aggregated = bool(entry.source_title) or "news.google.com" in (entry.link or "")
        return (
            aggregated,
            entry.published_fallback,
            len(entry.summary_text) < 40,
            entry.published,
            e.stored.id,
        )

    return min(members, key=rank)


def build_stories(
    entries: Iterable[ClassifiedEntry],
    feed_titles: Mapping[str, str | None],
    order: Iterable[str] = (),
    tag_share: float = 0.5,
) -> list[StoryView]:
    groups: dict[int, list[ClassifiedEntry]] = {}
    for e in entries:
        if e.relevant and e.story_id is not None:
            groups.setdefault(e.story_id, []).append(e)
    rank = {name: i for i, name in enumerate(order)}
    views = []
    for sid, members in groups.items():
        members.sort(key=lambda e: (e.stored.entry.published, e.stored.id))
        rep = _representative(members)
        outlets: list[str] = []
        for e in [rep, *members]:
            name = outlet_of(e, feed_titles)
            if name not in outlets:
                outlets.append(name)
        topics = sorted({t for e in members for t in e.topics}, key=lambda t: (rank.get(t, 99), t))
        counts = Counter(t for e in members for t in e.tags)
        voted = [t for t, n in counts.items() if n > tag_share * len(members)]
        tags = sorted(voted, key=lambda t: (rank.get(t, 99), t))
        views.append(StoryView(sid, tuple(members), rep, tuple(outlets), tuple(topics), tuple(tags)))
    return views
