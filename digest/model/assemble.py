"""Assemble one subscriber's digest for one period. Pure: stories and preferences in, a Digest out.

stories with a report first seen in (since, until] that was news then (max_age)
| the subscriber's topics and tags
| minus stories already sent to them | most outlets first, then newest
| capped at max_stories, with "and N more" | grouped by topic, each story under the narrowest of its topics
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from digest.model.fold import without_tracking
from digest.model.schedule import Period
from digest.model.stories import StoryView, old_news, outlet_of
from digest.model.subscribers import Subscriber


@dataclass(frozen=True, slots=True)
class DigestStory:
    story_id: int
    title: str
    link: str | None
    outlet: str
    published: datetime
    summary: str
    topics: tuple[str, ...]
    tags: tuple[str, ...]
    also: tuple[tuple[str, str | None], ...]  # (outlet, link) of the other reports
    why: tuple[str, ...]  # one line per rule that fired


@dataclass(frozen=True, slots=True)
class Section:
    topic: str
    title: str
    stories: tuple[DigestStory, ...]


@dataclass(frozen=True, slots=True)
class Digest:
    subscriber: Subscriber
    period: Period
    sections: tuple[Section, ...]
    more: int  # stories left out by max_stories
    story_ids: tuple[int, ...]  # every story included

    @property
    def count(self) -> int:
        return sum(len(s.stories) for s in self.sections)


SUMMARY_CHARS = 400


def _why_lines(view: StoryView) -> tuple[str, ...]:
    lines = []
    for r in view.representative.why:
        ev = ", ".join(dict.fromkeys(f"{e['field']} “{e['matched']}”" for e in r.get("evidence", [])))
        lines.append(f"{r['kind']} {r['name']}: {r['rule']}" + (f" ({ev})" if ev else ""))
    return tuple(lines)


def _story(view: StoryView, feed_titles: Mapping[str, str | None]) -> DigestStory:
    rep = view.representative
    e = rep.stored.entry
    summary = e.summary_text
    if len(summary) > SUMMARY_CHARS:
        summary = summary[:SUMMARY_CHARS].rsplit(" ", 1)[0] + "…"
    also = []
    seen = {outlet_of(rep, feed_titles)}
    for m in view.entries:
        name = outlet_of(m, feed_titles)
        if name not in seen:
            seen.add(name)
            also.append((name, without_tracking(m.stored.entry.link)))
    return DigestStory(
        view.id,
        e.title,
        without_tracking(e.link),  # the reader follows it: no utm_* and the like
        outlet_of(rep, feed_titles),
        e.published,
        summary,
        view.topics,
        view.tags,
        tuple(also),
        _why_lines(view),
    )


def assemble(
    subscriber: Subscriber,
    period: Period,
    stories: Iterable[StoryView],
    *,
    since: datetime,
    until: datetime,
    already_sent: set[int],
    topic_titles: Mapping[str, str],
    feed_titles: Mapping[str, str | None],
    cache: dict[int, DigestStory] | None = None,
    max_age: float | None = None,
) -> Digest:
    memo = cache if cache is not None else {}  # a story's item is the same in every digest

    def story(v: StoryView) -> DigestStory:
        if v.id not in memo:
            memo[v.id] = _story(v, feed_titles)
        return memo[v.id]

    wanted = []
    for v in stories:
        if v.id in already_sent:
            continue
        # new in this period, and news when it was first seen (max_age: old news is never mailed)
        if not any(
            since < m.stored.first_seen <= until and (max_age is None or not old_news(m.stored, max_age))
            for m in v.entries
        ):
            continue
        if subscriber.topics and not set(v.topics) & set(subscriber.topics):
            continue
        if subscriber.tags and not set(v.tags) & set(subscriber.tags):
            continue
        wanted.append(v)
    # most outlets first (what everyone reported), then the newest
    wanted.sort(
        key=lambda v: (-len(v.outlets), -max(m.stored.entry.published.timestamp() for m in v.entries))
    )
    kept, more = wanted[: subscriber.max_stories], max(0, len(wanted) - subscriber.max_stories)
    order = list(subscriber.topics) or list(topic_titles)
    # A story of several topics goes under the narrowest: the one fewest of this digest's stories
    # carry (a Putin–Xi meeting at an SCO summit is filed under Putin and Xi, not lost among the
    # summit's other stories); ties go to the subscriber's order.
    carried = Counter(t for v in kept for t in v.topics)
    home: dict[int, str] = {}
    for v in kept:
        mine = [t for t in order if t in v.topics]
        if mine:
            home[v.id] = min(mine, key=lambda t: (carried[t], order.index(t)))
    sections = []
    for topic in order:
        in_topic = [v for v in kept if home.get(v.id) == topic]
        if in_topic:
            sections.append(Section(topic, topic_titles.get(topic, topic), tuple(story(v) for v in in_topic)))
    rest = [v for v in kept if v.id not in home]
    if rest:
        sections.append(Section("other", "Other", tuple(story(v) for v in rest)))
    return Digest(subscriber, period, tuple(sections), more, tuple(v.id for v in kept))
