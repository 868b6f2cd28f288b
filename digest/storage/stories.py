"""Stories: which entries are folded together, and the selected entries as readers see them."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

import sqlalchemy as sa

from digest.model.records import (
    ClassifiedEntry,
    ClusterMember,
    StoryTimes,
)
from digest.storage.base import (
    StorageBase,
    chunks,
    stored_entry,
)
from digest.storage.schema import (
    classifications,
    entries,
    stories,
)


class StoriesMixin(StorageBase):
    def story_members(self, spans: Sequence[tuple[datetime, datetime]]) -> list[ClusterMember]:
        """Clustered entries published within any of these (start, end) spans, and undated ones:
        the stories new entries may join. One span per run of new entries, so a day of news
        that carries one old report reads that report's days, not every day since."""
        c = classifications
        within = [entries.c.published.between(start, end) for start, end in spans]
        q = (
            sa.select(entries, c.c.story_id, c.c.entities, c.c.title_entities)
            .join(c, c.c.entry_id == entries.c.id)
            .where(c.c.story_id.is_not(None), sa.or_(entries.c.published_fallback, *within))
        )
        with self._safe(), self.engine.connect() as conn:
            return [
                ClusterMember(
                    stored_entry(r), r["story_id"], tuple(r["entities"]), tuple(r["title_entities"])
                )
                for r in conn.execute(q).mappings()
            ]

    def unclustered(self) -> list[ClusterMember]:
        c = classifications
        q = (
            sa.select(entries, c.c.entities, c.c.title_entities)
            .join(c, c.c.entry_id == entries.c.id)
            .where(c.c.relevant, c.c.story_id.is_(None))
            .order_by(entries.c.published, entries.c.id)
        )
        with self._safe(), self.engine.connect() as conn:
            return [
                ClusterMember(stored_entry(r), None, tuple(r["entities"]), tuple(r["title_entities"]))
                for r in conn.execute(q).mappings()
            ]

    def assign_stories(
        self, assignment: dict[int, int], now: datetime, *, merged: dict[int, int] | None = None
    ) -> int:
        """entry id -> story id; story ids not yet in the store are created; `merged` (old story ->
        the story it joined) moves stored entries along. One transaction. -> stories created."""
        if not assignment:
            return 0
        wanted = set(assignment.values()) | set((merged or {}).values())
        with self._safe(), self.engine.begin() as conn:
            known: set[int] = set()
            for chunk in chunks(sorted(wanted), 500):
                known.update(conn.execute(sa.select(stories.c.id).where(stories.c.id.in_(chunk))).scalars())
            new = sorted(wanted - known)
            if new:
                conn.execute(stories.insert(), [{"id": i, "first_seen": now, "updated_at": now} for i in new])
            conn.execute(
                classifications.update()
                .where(classifications.c.entry_id == sa.bindparam("eid"))
                .values(story_id=sa.bindparam("sid")),
                [{"eid": e, "sid": sid} for e, sid in assignment.items()],
            )
            for old, target in (merged or {}).items():
                conn.execute(
                    classifications.update().where(classifications.c.story_id == old).values(story_id=target)
                )
                conn.execute(stories.delete().where(stories.c.id == old))
            touched = sorted(wanted & known)
            for chunk in chunks(touched, 500):
                conn.execute(stories.update().where(stories.c.id.in_(chunk)).values(updated_at=now))
            if conn.dialect.name == "postgresql" and new:
                # ids were given explicitly: move the sequence past them
                conn.execute(
                    sa.text(
                        "SELECT setval(pg_get_serial_sequence('stories', 'id'), "
                        "(SELECT MAX(id) FROM stories))"
                    )
                )
        return len(new)

    def next_story_id(self) -> int:
        with self._safe(), self.engine.connect() as conn:
            return (
                int(conn.execute(sa.select(sa.func.coalesce(sa.func.max(stories.c.id), 0))).scalar_one()) + 1
            )

    def classified_entries(
        self,
        *,
        relevant_only: bool = True,
        since: datetime | None = None,
        entry_ids: Sequence[int] | None = None,
        stories_since: datetime | None = None,
        story_ids: Iterable[int] | None = None,
    ) -> list[ClassifiedEntry]:
        """Classified entries, filtered: `since` (first seen), `entry_ids`; `stories_since`: every
        entry of each story that gained an entry since then (what a digest may hold); `story_ids`:
        every entry of those stories."""
        c = classifications
        q = sa.select(entries, c.c.relevant, c.c.topics, c.c.tags, c.c.why, c.c.story_id)
        if relevant_only:
            q = q.join(c, c.c.entry_id == entries.c.id).where(c.c.relevant)
        else:  # an entry judged not relevant has no row
            q = q.outerjoin(c, c.c.entry_id == entries.c.id).where(entries.c.classified == sa.true())
        if since is not None:
            q = q.where(entries.c.first_seen >= since)
        if entry_ids is not None:
            q = q.where(entries.c.id.in_(list(entry_ids)))
        if stories_since is not None:
            c2, e2 = classifications.alias(), entries.alias()
            touched = (
                sa.select(c2.c.story_id)
                .join(e2, e2.c.id == c2.c.entry_id)
                .where(e2.c.first_seen >= stories_since, c2.c.story_id.is_not(None))
            )
            q = q.where(sa.or_(c.c.story_id.in_(touched), entries.c.first_seen >= stories_since))
        if story_ids is not None:
            q = q.where(c.c.story_id.in_(sa.bindparam("story_ids", sorted(set(story_ids)), expanding=True)))
        q = q.order_by(entries.c.id)
        with self._safe(), self.engine.connect() as conn:
            return [
                ClassifiedEntry(
                    stored_entry(r),
                    bool(r["relevant"]),
                    tuple(r["topics"] or ()),
                    tuple(r["tags"] or ()),
                    r["why"] or [],
                    r["story_id"],
                )
                for r in conn.execute(q).mappings()
            ]

    def recent_stories(self, *, limit: int, story_ids: Iterable[int] | None = None) -> list[StoryTimes]:
        """Stories, the most recently updated first (a feed's entries), with when each was first
        seen and last changed (its Atom id and times); `story_ids`: only those."""
        q = sa.select(stories.c.id, stories.c.first_seen, stories.c.updated_at)
        if story_ids is not None:
            q = q.where(stories.c.id.in_(sa.bindparam("ids", sorted(set(story_ids)), expanding=True)))
        q = q.order_by(stories.c.updated_at.desc(), stories.c.id.desc()).limit(limit)
        with self._safe(), self.engine.connect() as conn:
            return [StoryTimes(i, first, updated) for i, first, updated in conn.execute(q).tuples()]
