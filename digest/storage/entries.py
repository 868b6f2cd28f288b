"""Entries: what feeds brought, their verdicts, search, and pruning."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from digest.errors import StorageError
from digest.model.records import (
    Entry,
    SearchHit,
    StoredEntry,
    Verdict,
)
from digest.model.search import fts5_query, index_text, parse_query, tsquery
from digest.storage.base import (
    ENTRY_FIELDS,
    StorageBase,
    chunks,
    claim_rules,
    insert_ignore,
    stored_entry,
)
from digest.storage.schema import (
    classifications,
    entries,
    feeds,
    meta,
    stories,
)

SEARCH_WINDOW = 2000  # a search ranks the newest this many entries with all its words (Store.search)


class EntriesMixin(StorageBase):
    @staticmethod
    def _write_verdicts(
        conn: Connection, feed: str, verdicts: Mapping[str, Verdict], now: datetime, marked: set[str]
    ) -> None:
        """Rows for the selected among the entries just written (`marked`: already marked
        classified), and for entries stored unclassified by an earlier run (marked now)."""
        wanted: dict[int, Verdict] = {}
        fresh_selected = [i for i in marked if verdicts[i].relevant]
        for chunk in chunks(fresh_selected, 500):
            q = sa.select(entries.c.id, entries.c.entry_id).where(
                entries.c.feed == feed, entries.c.entry_id.in_(chunk)
            )
            wanted.update((row_id, verdicts[entry_id]) for row_id, entry_id in conn.execute(q).tuples())
        unmarked: list[int] = []
        for chunk in chunks([i for i in verdicts if i not in marked], 500):
            q = sa.select(entries.c.id, entries.c.entry_id).where(
                entries.c.feed == feed, entries.c.entry_id.in_(chunk), entries.c.classified == sa.false()
            )
            for row_id, entry_id in conn.execute(q).tuples():
                unmarked.append(row_id)
                if verdicts[entry_id].relevant:
                    wanted[row_id] = verdicts[entry_id]
        if wanted:
            conn.execute(
                insert_ignore(conn, classifications, ["entry_id"]), _classification_rows(wanted, now)
            )
        _mark_classified(conn, unmarked)

    def _upsert_entries(
        self,
        conn: Connection,
        feed: str,
        batch: Sequence[Entry],
        now: datetime,
        verdicts: Mapping[str, Verdict],
    ) -> tuple[int, int, set[str]]:
        """Insert new entries, update changed ones -> (new, updated, entry ids written marked
        classified). An entry with a verdict is written already marked (its classification row
        follows in this transaction): marking it afterwards rewrote every new row a second time."""
        if not batch:
            return 0, 0, set()
        by_id = {e.entry_id: e for e in batch}  # a feed repeating an id: the last copy wins
        existing: dict[str, str] = {}
        ids = list(by_id)
        for chunk in chunks(ids, 500):
            existing.update(
                conn.execute(
                    sa.select(entries.c.entry_id, entries.c.content_hash).where(
                        entries.c.feed == feed, entries.c.entry_id.in_(chunk)
                    )
                )
                .tuples()
                .all()
            )
        fresh_ids = [i for i in by_id if i not in existing]
        fresh = [_entry_row(by_id[i], now) | {"classified": i in verdicts} for i in fresh_ids]
        changed = [e for i, e in by_id.items() if i in existing and existing[i] != e.content_hash]
        inserted = 0
        if fresh:
            # rowcount skips rows another writer inserted first; some drivers report -1
            count = conn.execute(insert_ignore(conn, entries, ["feed", "entry_id"]), fresh).rowcount
            inserted = count if count >= 0 else len(fresh)
        if changed:
            changed_ids = (
                conn.execute(
                    sa.select(entries.c.id).where(
                        entries.c.feed == feed, entries.c.entry_id.in_([e.entry_id for e in changed])
                    )
                )
                .scalars()
                .all()
            )
            # new content is classified and clustered again
            conn.execute(classifications.delete().where(classifications.c.entry_id.in_(changed_ids)))
        for e in changed:
            row = _entry_row(e, now)
            for key in ("feed", "entry_id", "first_seen"):
                row.pop(key)
            row["classified"] = e.entry_id in verdicts
            conn.execute(
                entries.update().where(entries.c.feed == feed, entries.c.entry_id == e.entry_id).values(**row)
            )
        written = [*fresh_ids, *(e.entry_id for e in changed)]
        for chunk in chunks(written, 500):
            rows = conn.execute(
                sa.select(entries.c.id, entries.c.entry_id).where(
                    entries.c.feed == feed, entries.c.entry_id.in_(chunk)
                )
            ).tuples()
            docs = [(i, by_id[entry_id].title, by_id[entry_id].summary_text) for i, entry_id in rows]
            _index_entries(conn, docs, fresh=not changed)
        marked = {i for i in written if i in verdicts}
        return inserted, len(changed), marked

    def iter_entries(
        self,
        *,
        feed: str | None = None,
        since: datetime | None = None,
        ids: Sequence[int] | None = None,
        limit: int | None = None,
        newest_first: bool = False,
    ) -> Iterator[StoredEntry]:
        q = sa.select(entries)
        if feed:
            q = q.where(entries.c.feed == feed)
        if since:
            q = q.where(entries.c.first_seen >= since)
        if ids is not None:
            q = q.where(entries.c.id.in_(list(ids)))
        q = q.order_by(entries.c.id.desc() if newest_first else entries.c.id)
        if limit:
            q = q.limit(limit)
        with self._safe(), self.engine.connect() as conn:
            for row in conn.execute(q).mappings():
                yield stored_entry(row)

    def find_entry(self, ref: str) -> StoredEntry | None:
        """An entry by row id, else by entry id, GUID or link (the first stored, if several)."""
        queries = []
        if ref.isdigit() and int(ref) < 2**63:
            queries.append(sa.select(entries).where(entries.c.id == int(ref)))
        match = sa.or_(entries.c.entry_id == ref, entries.c.guid == ref, entries.c.link == ref)
        queries.append(sa.select(entries).where(match).order_by(entries.c.id).limit(1))
        with self._safe(), self.engine.connect() as conn:
            for q in queries:
                row = conn.execute(q).mappings().first()
                if row is not None:
                    return stored_entry(row)
        return None

    def entry_counts(self) -> dict[str, int]:
        q = sa.select(entries.c.feed, sa.func.count()).group_by(entries.c.feed)
        with self._safe(), self.engine.connect() as conn:
            return {f: int(n) for f, n in conn.execute(q).tuples()}

    def unclassified(self, rules_hash: str, *, limit: int | None = None) -> list[StoredEntry]:
        """Entries with no classification yet (a rules change removes them all first:
        forget_classifications). Read through the partial index: no scan of the table."""
        q = sa.select(entries).where(entries.c.classified == sa.false()).order_by(entries.c.id)
        if limit:
            q = q.limit(limit)
        with self._safe(), self.engine.connect() as conn:
            return [stored_entry(r) for r in conn.execute(q).mappings()]

    def stale_rules(self, rules_hash: str) -> bool:
        """Was anything judged by other rules than these?"""
        with self._safe(), self.engine.connect() as conn:
            judged_by = conn.execute(sa.select(meta.c.value).where(meta.c.key == "rules_hash")).scalar()
        return judged_by is not None and judged_by != rules_hash

    def forget_classifications(self, rules_hash: str | None = None) -> None:
        """The rules changed: every entry is classified and clustered again (by `rules_hash`)."""
        with self._safe(), self.engine.begin() as conn:
            conn.execute(classifications.delete())
            conn.execute(entries.update().where(entries.c.classified == sa.true()).values(classified=False))
            conn.execute(stories.delete())
            conn.execute(meta.delete().where(meta.c.key == "rules_hash"))
            if rules_hash is not None:
                claim_rules(conn, rules_hash)

    def save_classifications(self, verdicts: Mapping[int, Verdict], now: datetime) -> None:
        """Selection's verdicts, by entry row id: all marked classified, rows for the selected."""
        if not verdicts:
            return
        with self._safe(), self.engine.begin() as conn:
            for h in {v.rules_hash for v in verdicts.values()}:
                if not claim_rules(conn, h):
                    raise StorageError(
                        f"entries judged by rules {h} while the store holds verdicts of other rules; "
                        "run `digest stories` (organise) to judge everything again"
                    )
            selected = {i: v for i, v in verdicts.items() if v.relevant}
            if selected:
                conn.execute(classifications.insert(), _classification_rows(selected, now))
            _mark_classified(conn, list(verdicts))

    def search(self, words: str, *, limit: int = 200) -> list[SearchHit]:
        """Entries folded into stories whose title or summary has all the words (search.py),
        best first (SQLite: bm25, the title weighing three times the summary; PostgreSQL:
        ts_rank, title weight A), the newest first among equals.

        Ranked among the newest SEARCH_WINDOW entries with all the words: scoring every match
        of a word most reports carry ("SCO": a third of 100,000 entries) took 55-215 ms; the
        window keeps an answer under 50 ms (bench/search_bench.py), and news is read newest first."""
        terms = parse_query(words)
        if not terms:
            return []
        with self._safe(), self.engine.connect() as conn:
            if conn.dialect.name == "sqlite":
                # ORDER BY rowid DESC LIMIT: FTS5 walks its matches newest first and stops, so
                # bm25 is computed for the window only
                sql = (
                    "SELECT h.id, c.story_id, -h.r AS score FROM ("
                    "  SELECT rowid AS id, bm25(entry_search, 3.0, 1.0) AS r FROM entry_search"
                    "  WHERE entry_search MATCH :q ORDER BY rowid DESC LIMIT :window) h"
                    " JOIN classifications c ON c.entry_id = h.id JOIN entries e ON e.id = h.id"
                    " WHERE c.story_id IS NOT NULL"
                    " ORDER BY score DESC, e.published DESC, h.id DESC LIMIT :n"
                )
                query = fts5_query(terms)
            else:
                # each hit's story and date looked up by key (subplans): a join hashed all
                # 100,000 classifications rows for 2,000 hits (39 ms -> 14 ms for "sco")
                sql = (
                    "SELECT entry_id, story_id, score FROM ("
                    "  SELECT h.entry_id, ts_rank(h.document, to_tsquery('simple', :q)) AS score,"
                    "   (SELECT c.story_id FROM classifications c WHERE c.entry_id = h.entry_id) AS story_id,"
                    "   (SELECT e.published FROM entries e WHERE e.id = h.entry_id) AS published"
                    "  FROM (SELECT entry_id, document FROM entry_search"
                    "   WHERE document @@ to_tsquery('simple', :q) ORDER BY entry_id DESC LIMIT :window) h"
                    " ) r WHERE story_id IS NOT NULL"
                    " ORDER BY score DESC, published DESC, entry_id DESC LIMIT :n"
                )
                query = tsquery(terms)
            rows = conn.execute(sa.text(sql), {"q": query, "n": limit, "window": SEARCH_WINDOW}).tuples()
            return [SearchHit(int(i), int(story), float(score)) for i, story, score in rows]

    def prune_entries(self, first_seen_before: datetime) -> int:
        """Remove entries first seen before the cutoff (their classifications go with them),
        except those their feed still serves: removed, they would come back as new."""
        with self._safe(), self.engine.begin() as conn:
            served = {
                (name, entry_id)
                for name, ids in conn.execute(sa.select(feeds.c.name, feeds.c.current_entries)).tuples()
                for entry_id in ids or ()
            }
            old = conn.execute(
                sa.select(entries.c.id, entries.c.feed, entries.c.entry_id).where(
                    entries.c.first_seen < first_seen_before
                )
            ).tuples()
            doomed = [i for i, feed, entry_id in old if (feed, entry_id) not in served]
            for chunk in chunks(doomed, 500):
                conn.execute(classifications.delete().where(classifications.c.entry_id.in_(chunk)))
                _unindex_entries(conn, chunk)
                conn.execute(entries.delete().where(entries.c.id.in_(chunk)))
            n = len(doomed)
            conn.execute(
                stories.delete().where(
                    ~stories.c.id.in_(
                        sa.select(classifications.c.story_id).where(classifications.c.story_id.is_not(None))
                    )
                )
            )
        return int(n or 0)


def _classification_rows(verdicts: Mapping[int, Verdict], now: datetime) -> list[dict[str, Any]]:
    return [
        {
            "entry_id": i,
            "relevant": v.relevant,
            "topics": list(v.topics),
            "tags": list(v.tags),
            "why": v.why,
            "entities": sorted(v.entities),
            "title_entities": sorted(v.title_entities),
            "rules_hash": v.rules_hash,
            "story_id": None,
            "classified_at": now,
        }
        for i, v in verdicts.items()
    ]


def _index_entries(conn: Connection, docs: Sequence[tuple[int, str, str]], *, fresh: bool = False) -> None:
    """(Re)index entries' (row id, title, summary) in entry_search, in the caller's transaction.
    `fresh`: rows just inserted, with nothing indexed under their ids yet."""
    if not docs:
        return
    rows = [{"id": i, "t": index_text(t), "s": index_text(s)} for i, t, s in docs]
    if conn.dialect.name == "sqlite":
        if not fresh:
            _unindex_entries(conn, [i for i, _, _ in docs])
        conn.execute(sa.text("INSERT INTO entry_search (rowid, title, summary) VALUES (:id, :t, :s)"), rows)
    else:
        conn.execute(
            sa.text(
                "INSERT INTO entry_search (entry_id, document) VALUES (:id, "
                "setweight(to_tsvector('simple', :t), 'A') || setweight(to_tsvector('simple', :s), 'B')) "
                "ON CONFLICT (entry_id) DO UPDATE SET document = excluded.document"
            ),
            rows,
        )


def _unindex_entries(conn: Connection, ids: Sequence[int]) -> None:
    key = "rowid" if conn.dialect.name == "sqlite" else "entry_id"
    conn.execute(
        sa.text(f"DELETE FROM entry_search WHERE {key} IN :ids").bindparams(
            sa.bindparam("ids", list(ids), expanding=True)
        )
    )


def _mark_classified(conn: Connection, ids: Sequence[int]) -> None:
    for chunk in chunks(list(ids), 500):
        # only rows not marked yet: an UPDATE rewrites the whole row, summaries and all
        unmarked = entries.c.classified == sa.false()
        conn.execute(entries.update().where(entries.c.id.in_(chunk), unmarked).values(classified=True))


def _entry_row(e: Entry, now: datetime) -> dict[str, Any]:
    row = {k: getattr(e, k) for k in ENTRY_FIELDS}
    row["first_seen"] = now
    row["updated_at"] = now
    return row
