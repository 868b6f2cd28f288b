"""Building stories and assembling a digest: pure functions over records, no database, no sockets."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from digest.model.assemble import assemble
from digest.model.records import ClassifiedEntry, Entry, StoredEntry
from digest.model.schedule import Period
from digest.model.stories import build_stories
from digest.model.subscribers import Subscriber

T0 = datetime(2025, 9, 1, 6, 0, tzinfo=UTC)
TOPICS = ("sco", "putin-xi")
TAGS = ("summit", "trade", "security")
TITLES = {"sco": "Shanghai Cooperation Organisation", "putin-xi": "Putin and Xi"}


def report(
    row: int,
    story: int,
    *,
    feed: str = "wire",
    seen: datetime = T0,
    published: datetime | None = None,
    topics: tuple[str, ...] = ("sco",),
    tags: tuple[str, ...] = (),
    relevant: bool = True,
) -> ClassifiedEntry:
    entry = Entry(
        feed=feed,
        entry_id=f"e{row}",
        guid=None,
        link=f"https://{feed}.example/{row}?utm_source=rss",
        title=f"Report {row} of story {story}",
        summary_html="",
        summary_text=f"Summary {row}",
        published=published or seen - timedelta(hours=1),
        published_fallback=False,
        author=None,
        language="en",
        content_hash=f"h{row}",
    )
    return ClassifiedEntry(StoredEntry(row, seen, entry), relevant, topics, tags, [], story)


def test_reports_of_one_story_are_one_view_with_every_outlet_once():
    views = build_stories(
        [
            report(1, 7, feed="wire"),
            report(2, 7, feed="asia-desk"),
            report(3, 7, feed="wire"),  # the same outlet again
            report(4, 8, feed="ru-service", topics=("putin-xi",)),
            report(5, 9, relevant=False),  # not selected: in no story a reader sees
        ],
        {"wire": "Wire", "asia-desk": "Asia Desk", "ru-service": None},
    )
    by_id = {v.id: v for v in views}
    assert set(by_id) == {7, 8}
    assert sorted(by_id[7].outlets) == ["Asia Desk", "Wire"]
    assert by_id[8].outlets == ("ru-service",)  # a feed without a title is named by its name


def test_a_tag_carried_by_one_report_of_many_is_not_the_story_s():
    """A story's tags are those more than `tag_share` of its reports carry."""
    views = build_stories(
        [
            report(1, 1, tags=("trade",)),
            report(2, 1, feed="b", tags=("summit",)),
            report(3, 1, feed="c", tags=("summit",)),
            report(4, 1, feed="d", tags=("summit",)),
        ],
        {},
        tag_share=0.5,
    )
    assert views[0].tags == ("summit",)


def test_a_digest_holds_what_is_new_for_the_subscriber_under_the_narrowest_topic():
    sub = Subscriber("reader@example.org", id=1, max_stories=10)
    views = build_stories(
        [
            report(1, 1, topics=("sco",)),
            report(2, 2, topics=("sco", "putin-xi")),  # a Putin–Xi meeting at the summit
            report(3, 3, topics=("sco",)),
            report(4, 4, topics=("sco",), seen=T0 - timedelta(days=2)),  # seen before this period
            report(5, 5, topics=("sco",)),  # already sent to them
        ],
        {},
    )
    digest = assemble(
        sub,
        Period("2025-09-01", T0),
        views,
        since=T0 - timedelta(days=1),
        until=T0,
        already_sent={5},
        topic_titles=TITLES,
        feed_titles={},
    )
    placed = {s.topic: [d.story_id for d in s.stories] for s in digest.sections}
    assert placed == {"sco": [1, 3], "putin-xi": [2]} or placed == {"sco": [3, 1], "putin-xi": [2]}
    assert all("utm_source" not in (d.link or "") for s in digest.sections for d in s.stories)


def test_old_news_first_seen_today_is_never_mailed():
    sub = Subscriber("reader@example.org", id=1)
    old = report(1, 1, published=T0 - timedelta(days=400))
    digest = assemble(
        sub,
        Period("2025-09-01", T0),
        build_stories([old], {}),
        since=T0 - timedelta(days=1),
        until=T0,
        already_sent=set(),
        topic_titles=TITLES,
        feed_titles={},
        max_age=3 * 86400,
    )
    assert digest.count == 0


stories_st = st.lists(
    st.tuples(
        st.integers(1, 30),  # story id
        st.sampled_from(("a", "b", "c", "d")),  # feed
        st.integers(-72, 2),  # hours from T0 it was first seen
        st.sets(st.sampled_from(TOPICS), min_size=1).map(lambda s: tuple(sorted(s))),
        st.sets(st.sampled_from(TAGS)).map(lambda s: tuple(sorted(s))),
    ),
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(
    rows=stories_st,
    topics=st.sets(st.sampled_from(TOPICS)).map(lambda s: tuple(sorted(s))),
    tags=st.sets(st.sampled_from(TAGS)).map(lambda s: tuple(sorted(s))),
    max_stories=st.integers(1, 12),
    sent=st.sets(st.integers(1, 30)),
)
def test_a_digest_never_repeats_never_overflows_and_honours_every_preference(
    rows, topics, tags, max_stories, sent
):
    entries = [
        report(i, sid, feed=feed, seen=T0 + timedelta(hours=h), topics=tps, tags=tgs)
        for i, (sid, feed, h, tps, tgs) in enumerate(rows)
    ]
    views = build_stories(entries, {}, tag_share=0.0)
    sub = Subscriber("r@example.org", id=1, topics=topics, tags=tags, max_stories=max_stories)
    since, until = T0 - timedelta(days=1), T0
    digest = assemble(
        sub,
        Period("2025-09-01", T0),
        views,
        since=since,
        until=until,
        already_sent=sent,
        topic_titles=TITLES,
        feed_titles={},
    )
    shown = [d for s in digest.sections for d in s.stories]
    ids = [d.story_id for d in shown]
    assert len(ids) == len(set(ids)) == digest.count <= max_stories  # each story once, within the cap
    assert set(ids) == set(digest.story_ids) and not set(ids) & sent
    by_id = {v.id: v for v in views}
    eligible = {
        v.id
        for v in views
        if v.id not in sent
        and any(since < m.stored.first_seen <= until for m in v.entries)
        and (not topics or set(v.topics) & set(topics))
        and (not tags or set(v.tags) & set(tags))
    }
    assert set(ids) <= eligible and digest.more == len(eligible) - len(ids)
    for section in digest.sections:  # each under one of its own topics
        for d in section.stories:
            assert section.topic in by_id[d.story_id].topics
