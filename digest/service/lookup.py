"""Stories read back for people outside a digest: found by search, or the newest for a feed.

The web app (search page, Atom feeds) and the CLI (`digest stories --search`) both call these,
so that they show the same stories in the same order.

    search:  store.search (ranked hits) | best hit per story | store.classified_entries | build_stories
    feed:    store.recent_stories | store.classified_entries | build_stories | topics, tags, no old news
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from digest.config import LoadedConfig
from digest.model.atom import FeedStory
from digest.model.records import SearchHit
from digest.model.stories import StoryView, build_stories, old_news
from digest.storage.store import Store

FEED_STORIES = 50  # what a feed reader is offered; it keeps what it has seen
FEED_CANDIDATES = 500  # the newest stories read to find a feed's 50 (a rare topic or tag)


def ranked_stories(hits: Iterable[SearchHit]) -> list[int]:
    """Story ids in the order of each story's best hit (hits come best first). Pure."""
    order: list[int] = []
    for hit in hits:
        if hit.story_id not in order:
            order.append(hit.story_id)
    return order


def _views(loaded: LoadedConfig, store: Store, story_ids: Sequence[int]) -> dict[int, StoryView]:
    if not story_ids:
        return {}
    titles = {name: st.title for name, st in store.feed_states().items()}
    order = [t.name for t in (*loaded.rules.topics, *loaded.rules.tags)]
    found = store.classified_entries(story_ids=story_ids)
    return {v.id: v for v in build_stories(found, titles, order, loaded.clustering.tag_share)}


def search_stories(loaded: LoadedConfig, store: Store, words: str, *, limit: int = 50) -> list[StoryView]:
    """The stories whose reports have all the words, best first, the newest first among equals."""
    wanted = ranked_stories(store.search(words, limit=limit * 8))[:limit]
    views = _views(loaded, store, wanted)
    return [views[i] for i in wanted if i in views]


def feed_stories(
    loaded: LoadedConfig,
    store: Store,
    *,
    topics: Sequence[str] = (),
    tags: Sequence[str] = (),
    limit: int = FEED_STORIES,
) -> list[FeedStory]:
    """The most recently updated stories of these topics and tags (none given: any), as a
    digest would choose them: a story of old news only (max_age) is never offered."""
    times = store.recent_stories(limit=FEED_CANDIDATES)
    views = _views(loaded, store, [t.id for t in times])
    out: list[FeedStory] = []
    for t in times:
        v = views.get(t.id)
        if v is None or all(old_news(m.stored, loaded.config.max_age) for m in v.entries):
            continue
        if topics and not set(v.topics) & set(topics):
            continue
        if tags and not set(v.tags) & set(tags):
            continue
        out.append(FeedStory(v, t.first_seen, t.updated_at))
        if len(out) == limit:
            break
    return out


def feed_titles(store: Store) -> dict[str, str | None]:
    return {name: st.title for name, st in store.feed_states().items()}
