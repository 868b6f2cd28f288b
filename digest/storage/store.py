"""The one module that speaks SQL. SQLite by default (WAL, busy timeout); PostgreSQL supported.

Every write that belongs together happens in one transaction, so a crash leaves either the old
state or the new one. Migrations (Alembic, digest/migrations) run when a Store is opened.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError, SQLAlchemyError

from digest.errors import StorageError
from digest.model.records import FORGOTTEN_ON_NEW_URL, Entry, FeedState, FetchWrite, Verdict
from digest.model.search import fts5_query, index_text, parse_query, tsquery
from digest.model.subscribers import FIELDS as SUBSCRIBER_FIELDS
from digest.model.subscribers import Subscriber, address_key
from digest.storage.schema import (
    SCHEMA_REVISION,
    SEARCH_DDL,
    UTCDateTime,
    classifications,
    deliveries,
    entries,
    feeds,
    meta,
    metadata,
    sent_stories,
    stories,
    subscribers,
)

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
SEARCH_WINDOW = 2000  # a search ranks the newest this many entries with all its words (Store.search)


@dataclass(frozen=True, slots=True)
class StoredEntry:
    """An entry as stored: the row id and when it was first seen, plus the entry itself."""

    id: int
    first_seen: datetime
    entry: Entry


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cur = dbapi_connection.cursor()
    # WAL lets readers (digest status, the web app) run while the daemon writes.
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def _alembic_config(connection: Connection | None) -> Any:
    # imported here: Alembic costs 60 ms of start-up, and is needed only to migrate
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


def make_engine(url: str) -> Engine:
    try:
        # a ping before each use finds a PostgreSQL connection the server dropped; a SQLite
        # file has no server (and the ping was a statement per transaction)
        ping = not url.startswith("sqlite")
        engine = sa.create_engine(url, future=True, pool_pre_ping=ping)
    except (ArgumentError, NoSuchModuleError) as exc:
        raise StorageError(
            f"database URL {url!r} is not usable ({exc}); write e.g. "
            "'sqlite:///digest.db' or 'postgresql+psycopg://user@host/db'"
        ) from None
    except ModuleNotFoundError as exc:
        from digest.config import SUPPORTED_DATABASES

        hint = (
            "install it (pip install 'digest[postgres]')"
            if url.startswith("postgres")
            else f"digest stores its data in {SUPPORTED_DATABASES}"
        )
        raise StorageError(f"database URL {url!r} needs the driver {exc.name!r}; {hint}") from None
    if engine.dialect.name == "sqlite":
        sa.event.listen(engine, "connect", _sqlite_pragmas)
        db = engine.url.database
        if db and db != ":memory:" and not db.startswith("file:"):
            try:
                Path(db).parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StorageError(
                    f"database {url}: cannot create folder {Path(db).parent} "
                    f"({exc.strerror}); fix the path in `database:`"
                ) from None
    return engine


class Store:
    """Owns every SQL statement. Thread-safe as SQLAlchemy engines are; no ORM sessions."""

    def __init__(self, url: str, *, migrate: bool = True) -> None:
        self.url = url
        self.engine = make_engine(url)
        if migrate:
            self.upgrade()

    # -- lifecycle ---------------------------------------------------------------------------

    def _safe(self) -> Any:
        return _StorageGuard(self.url)

    def current_revision(self) -> str | None:
        with self._safe(), self.engine.connect() as conn:
            if not sa.inspect(conn).has_table("alembic_version"):
                return None
            return conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()

    @staticmethod
    def head_revision() -> str | None:
        from alembic.script import ScriptDirectory

        return ScriptDirectory.from_config(_alembic_config(None)).get_current_head()

    def upgrade(self) -> bool:
        """Apply pending migrations; True when something was applied. An empty database gets
        the current schema in one step, stamped with the head revision (Alembic's advice for
        new databases; six migrations in turn took 0.18 s of a first run, this takes 0.02 s)."""
        if self.current_revision() == SCHEMA_REVISION:
            return False
        with self._safe(), self.engine.begin() as conn:
            if _is_empty(conn):
                _create_schema(conn)
                return True
            from alembic import command

            command.upgrade(_alembic_config(conn), "head")
        return True

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- feeds -------------------------------------------------------------------------------

    def sync_feeds(self, configured: Iterable[tuple[str, str]]) -> None:
        """Add configured feeds the store lacks; when a feed's URL changed, forget its HTTP state."""
        with self._safe(), self.engine.begin() as conn:
            known = {r.name: r.url for r in conn.execute(sa.select(feeds.c.name, feeds.c.url))}
            for name, url in configured:
                if name not in known:
                    conn.execute(feeds.insert().values(name=name, url=url, error_count=0))
                elif known[name] != url:
                    conn.execute(
                        feeds.update().where(feeds.c.name == name).values(url=url, **FORGOTTEN_ON_NEW_URL)
                    )

    def feed_states(self) -> dict[str, FeedState]:
        cols = [f.name for f in fields(FeedState)]
        with self._safe(), self.engine.connect() as conn:
            rows = conn.execute(sa.select(*[feeds.c[c] for c in cols])).mappings()
            return {r["name"]: FeedState(**r) for r in rows}

    def save_feed_state(self, state: FeedState, *, http_status: int | None = None) -> None:
        with self._safe(), self.engine.begin() as conn:
            self._write_state(conn, state, http_status)

    @staticmethod
    def _write_state(conn: Connection, state: FeedState, http_status: int | None) -> None:
        Store._write_states(conn, [(state, http_status)])

    @staticmethod
    def _write_states(conn: Connection, states: Sequence[tuple[FeedState, int | None]]) -> None:
        if not states:
            return
        # the poll is written: its lease (claim_feeds) ends here
        rows = [
            asdict(state) | {"http_status": http_status, "claimed_by": None, "claimed_until": None}
            for state, http_status in states
        ]
        for row in rows:
            row["feed_name"] = row.pop("name")  # bind names must not be column names in an UPDATE
        columns = [c for c in rows[0] if c != "feed_name"]
        stmt = (
            feeds.update()
            .where(feeds.c.name == sa.bindparam("feed_name"))
            .values({c: sa.bindparam(c) for c in columns})
        )
        conn.execute(stmt, rows)

    def claim_feeds(
        self, seen: Mapping[str, datetime | None], owner: str, clock: datetime, lease: float
    ) -> set[str]:
        """Lease feeds to `owner` for one poll, until clock + lease or until the poll is written
        -> the names now ours. `seen`: each feed's last_fetched as the caller read it; a feed
        polled since (by another daemon) or leased to another poller stays theirs, so each feed
        is fetched once per interval however many daemons share the database."""
        f = feeds.c
        until = clock + timedelta(seconds=lease)
        ours: set[str] = set()
        with self._writing() as conn:
            for name, last in sorted(seen.items()):
                result = conn.execute(
                    feeds.update()
                    .where(
                        f.name == name,
                        f.last_fetched.is_not_distinct_from(last),
                        sa.or_(f.claimed_by.is_(None), f.claimed_by == owner, f.claimed_until < clock),
                    )
                    .values(claimed_by=owner, claimed_until=until)
                )
                if result.rowcount == 1:
                    ours.add(name)
        return ours

    # -- entries -----------------------------------------------------------------------------

    def record_fetch(
        self, state: FeedState, new: Sequence[Entry], now: datetime, *, http_status: int | None = None
    ) -> tuple[int, int]:
        """Store a feed's new state and its entries in one transaction -> (new, updated)."""
        return self.record_fetches([FetchWrite(state, new, now, http_status)])[0]

    def record_fetches(self, batch: Sequence[FetchWrite]) -> list[tuple[int, int]]:
        """Several feeds' results in one transaction (group commit) -> [(new, updated)]."""
        with self._safe(), self.engine.begin() as conn:
            out = []
            judged_by = {v.rules_hash for w in batch for v in (w.verdicts or {}).values()}
            # verdicts made by rules other than the store's are dropped: organise judges again
            current = all(_claim_rules(conn, h) for h in judged_by)
            for w in batch:
                verdicts = (w.verdicts or {}) if current else {}
                new, updated, marked = self._upsert_entries(conn, w.state.name, w.entries, w.now, verdicts)
                out.append((new, updated))
                if verdicts:
                    self._write_verdicts(conn, w.state.name, verdicts, w.now, marked)
            # the feeds' states in one executemany (per-statement overhead dominated warm runs)
            self._write_states(conn, [(w.state, w.http_status) for w in batch])
            served = [
                {"feed_name": w.state.name, "ids": [e.entry_id for e in w.entries]}
                for w in batch
                if w.entries
            ]
            if served:
                conn.execute(
                    feeds.update()
                    .where(feeds.c.name == sa.bindparam("feed_name"))
                    .values(current_entries=sa.bindparam("ids", type_=sa.JSON)),
                    served,
                )
            return out

    @staticmethod
    def _write_verdicts(
        conn: Connection, feed: str, verdicts: Mapping[str, Verdict], now: datetime, marked: set[str]
    ) -> None:
        """Rows for the selected among the entries just written (`marked`: already marked
        classified), and for entries stored unclassified by an earlier run (marked now)."""
        wanted: dict[int, Verdict] = {}
        fresh_selected = [i for i in marked if verdicts[i].relevant]
        for chunk in _chunks(fresh_selected, 500):
            q = sa.select(entries.c.id, entries.c.entry_id).where(
                entries.c.feed == feed, entries.c.entry_id.in_(chunk)
            )
            wanted.update((row_id, verdicts[entry_id]) for row_id, entry_id in conn.execute(q).tuples())
        unmarked: list[int] = []
        for chunk in _chunks([i for i in verdicts if i not in marked], 500):
            q = sa.select(entries.c.id, entries.c.entry_id).where(
                entries.c.feed == feed, entries.c.entry_id.in_(chunk), entries.c.classified == sa.false()
            )
            for row_id, entry_id in conn.execute(q).tuples():
                unmarked.append(row_id)
                if verdicts[entry_id].relevant:
                    wanted[row_id] = verdicts[entry_id]
        if wanted:
            conn.execute(
                _insert_ignore(conn, classifications, ["entry_id"]), _classification_rows(wanted, now)
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
        for chunk in _chunks(ids, 500):
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
            count = _insert_many(conn, entries, ["feed", "entry_id"], fresh)
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
        for chunk in _chunks(written, 500):
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
                yield _stored(row)

    def count_entries(self, feed: str | None = None) -> int:
        q = sa.select(sa.func.count()).select_from(entries)
        if feed:
            q = q.where(entries.c.feed == feed)
        with self._safe(), self.engine.connect() as conn:
            return int(conn.execute(q).scalar_one())

    def entry_counts(self) -> dict[str, int]:
        q = sa.select(entries.c.feed, sa.func.count()).group_by(entries.c.feed)
        with self._safe(), self.engine.connect() as conn:
            return {f: int(n) for f, n in conn.execute(q).tuples()}

    # -- classifications and stories -----------------------------------------------------------

    def unclassified(self, rules_hash: str, *, limit: int | None = None) -> list[StoredEntry]:
        """Entries with no classification yet (a rules change removes them all first:
        forget_classifications). Read through the partial index: no scan of the table."""
        q = sa.select(entries).where(entries.c.classified == sa.false()).order_by(entries.c.id)
        if limit:
            q = q.limit(limit)
        with self._safe(), self.engine.connect() as conn:
            return [_stored(r) for r in conn.execute(q).mappings()]

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
                _claim_rules(conn, rules_hash)

    def save_classifications(self, verdicts: Mapping[int, Verdict], now: datetime) -> None:
        """Selection's verdicts, by entry row id: all marked classified, rows for the selected."""
        if not verdicts:
            return
        with self._safe(), self.engine.begin() as conn:
            for h in {v.rules_hash for v in verdicts.values()}:
                if not _claim_rules(conn, h):
                    raise StorageError(
                        f"entries judged by rules {h} while the store holds verdicts of other rules; "
                        "run `digest stories` (organise) to judge everything again"
                    )
            selected = {i: v for i, v in verdicts.items() if v.relevant}
            if selected:
                conn.execute(classifications.insert(), _classification_rows(selected, now))
            _mark_classified(conn, list(verdicts))

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
                ClusterMember(_stored(r), r["story_id"], tuple(r["entities"]), tuple(r["title_entities"]))
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
                ClusterMember(_stored(r), None, tuple(r["entities"]), tuple(r["title_entities"]))
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
            for chunk in _chunks(sorted(wanted), 500):
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
            for chunk in _chunks(touched, 500):
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
                    _stored(r),
                    bool(r["relevant"]),
                    tuple(r["topics"] or ()),
                    tuple(r["tags"] or ()),
                    r["why"] or [],
                    r["story_id"],
                )
                for r in conn.execute(q).mappings()
            ]

    # -- subscribers -----------------------------------------------------------------------------

    @staticmethod
    def _subscriber_id(conn: Connection, email: str) -> int | None:
        """The subscriber with this address, its local part's case aside (`Reader@example.com`
        is reader@example.com): the exact form first (the unique index), then the same key.

        Until the table has a normalised key column, the second look-up compares in Python: SQL
        lower() folds only ASCII on SQLite and follows the collation on PostgreSQL, so it would
        not agree with address_key on both. Candidates are the rows of the same length whose
        ASCII-lowered form matches (both engines lower ASCII alike)."""
        c = subscribers.c
        found = conn.execute(sa.select(c.id).where(c.email == email)).scalar()
        if found is not None:
            return int(found)
        key = address_key(email)
        ascii_lower = "".join(ch.lower() if ch.isascii() else ch for ch in email)
        q = sa.select(c.id, c.email).where(sa.func.length(c.email) == len(email))
        if email.isascii():
            q = q.where(sa.func.lower(c.email) == ascii_lower)
        else:
            q = q.where(c.email.endswith("@" + email.rpartition("@")[2], autoescape=True))
        for i, e in conn.execute(q.order_by(c.id)).tuples():
            if address_key(e) == key:
                return int(i)
        return None

    def add_subscriber(self, sub: Subscriber, now: datetime, *, update: bool = True) -> tuple[int, bool]:
        """Insert, or (with update) replace the preferences of, the subscriber with that address.
        -> (id, created)."""
        with self._safe(), self.engine.begin() as conn:
            return self._upsert(conn, sub, now, self._subscriber_id(conn, sub.email), update=update)

    @staticmethod
    def _upsert(
        conn: Connection, sub: Subscriber, now: datetime, known: int | None, *, update: bool
    ) -> tuple[int, bool]:
        """Insert `sub`, or (with update) write its preferences over subscriber `known`."""
        values = _subscriber_row(sub)
        c = subscribers.c
        if known is None:
            q = subscribers.insert().values(**values, created_at=now, updated_at=now, salt=new_salt())
            key = conn.execute(q).inserted_primary_key
            assert key is not None
            return int(key[0]), True
        if update:
            values.pop("email")  # the address as first stored
            # subscribing again after leaving is a new subscription: the old one's links die
            renewed = sa.case((c.status == "unsubscribed", new_salt()), else_=c.salt)
            # a complaint (ARF) is for good: an import or `subscribers add` never mails them again
            values["status"] = sa.case((c.status == "complained", "complained"), else_=values["status"])
            conn.execute(
                subscribers.update().where(c.id == known).values(**values, salt=renewed, updated_at=now)
            )
        return known, False

    def subscriber_salts(self, ids: Sequence[int]) -> dict[int, str]:
        """The salt of each of these subscriptions (signed into their links: tokens.py)."""
        c = subscribers.c
        found: dict[int, str] = {}
        with self._safe(), self.engine.connect() as conn:
            for chunk in _chunks(sorted(set(ids)), 500):
                found.update(conn.execute(sa.select(c.id, c.salt).where(c.id.in_(chunk))).tuples().all())
        return found

    def add_subscribers(self, subs: Sequence[Subscriber], now: datetime) -> int:
        """Insert or update many (a CSV import) in one transaction. -> how many were new.
        The addresses' keys are read once: a look-up per row would scan the table per row."""
        with self._safe(), self.engine.begin() as conn:
            known = {
                address_key(e): int(i)
                for i, e in conn.execute(sa.select(subscribers.c.id, subscribers.c.email)).tuples()
            }
            created = 0
            for sub in subs:
                key = address_key(sub.email)
                known[key], new = self._upsert(conn, sub, now, known.get(key), update=True)
                created += new
            return created

    def list_subscribers(self, *, status: str | None = None, email: str | None = None) -> list[Subscriber]:
        q = sa.select(subscribers).order_by(subscribers.c.id)
        if status:
            q = q.where(subscribers.c.status == status)
        with self._safe(), self.engine.connect() as conn:
            if email:
                q = q.where(subscribers.c.id == self._subscriber_id(conn, email))
            return [_subscriber(r) for r in conn.execute(q).mappings()]

    def schedules(self, *, status: str = "active", email: str | None = None) -> list[Subscriber]:
        """Subscribers with only what deciding who is due needs (id, address, cadence, time, zone)."""
        c = subscribers.c
        q = sa.select(c.id, c.email, c.cadence, c.weekday, c.send_time, c.timezone).where(c.status == status)
        with self._safe(), self.engine.connect() as conn:
            if email:
                q = q.where(c.id == self._subscriber_id(conn, email))
            return [
                Subscriber(email=e, cadence=cad, weekday=wd, send_time=t, timezone=tz, id=i)
                for i, e, cad, wd, t, tz in conn.execute(q.order_by(c.id)).tuples()
            ]

    def subscriber(self, subscriber_id: int) -> Subscriber | None:
        found = self.subscribers_by_id([subscriber_id])
        return found[0] if found else None

    def save_preferences(self, subscriber_id: int, sub: Subscriber, now: datetime) -> None:
        """New preferences (the address and status stay)."""
        values = {k: v for k, v in _subscriber_row(sub).items() if k not in ("email", "status")}
        with self._safe(), self.engine.begin() as conn:
            conn.execute(
                subscribers.update().where(subscribers.c.id == subscriber_id).values(**values, updated_at=now)
            )

    def subscribers_by_id(self, ids: Sequence[int]) -> list[Subscriber]:
        out: list[Subscriber] = []
        with self._safe(), self.engine.connect() as conn:
            for chunk in _chunks(sorted(set(ids)), 500):
                q = sa.select(subscribers).where(subscribers.c.id.in_(chunk)).order_by(subscribers.c.id)
                out.extend(_subscriber(r) for r in conn.execute(q).mappings())
        return out

    def remove_subscriber(self, email: str) -> bool:
        with self._safe(), self.engine.begin() as conn:
            found = self._subscriber_id(conn, email)
            return bool(conn.execute(subscribers.delete().where(subscribers.c.id == found)).rowcount)

    def set_status(self, subscriber_id: int, status: str, now: datetime) -> None:
        with self._safe(), self.engine.begin() as conn:
            conn.execute(
                subscribers.update()
                .where(subscribers.c.id == subscriber_id)
                .values(status=status, updated_at=now)
            )

    # -- sign-ups (web.py): a confirmation link carries the row's updated_at and works once ------

    def subscriber_stamp(self, subscriber_id: int) -> datetime | None:
        """When the subscriber's row last changed (None: no such row)."""
        q = sa.select(subscribers.c.updated_at).where(subscribers.c.id == subscriber_id)
        with self._safe(), self.engine.connect() as conn:
            return conn.execute(q).scalar()

    def confirm_subscriber(self, subscriber_id: int, stamp: datetime, sub: Subscriber, now: datetime) -> bool:
        """Activate with `sub`'s preferences, only if the row is as it was at `stamp` (it has not
        changed since the link was made: a link used once, or overtaken, does nothing). -> done."""
        c = subscribers.c
        values: dict[str, Any] = {k: v for k, v in _subscriber_row(sub).items() if k != "email"}
        # a subscription that had ended starts anew: links signed for the old one die with it
        renewed = sa.case((c.status == "unsubscribed", new_salt()), else_=c.salt)
        values.update(status="active", bounces=0, updated_at=now, salt=renewed)
        with self._safe(), self.engine.begin() as conn:
            # a confirmation link made before a complaint came back does nothing
            q = (
                subscribers.update()
                .where(c.id == subscriber_id, c.updated_at == stamp, c.status != "complained")
                .values(**values)
            )
            return bool(conn.execute(q).rowcount)

    def remove_expired_pending(self, changed_before: datetime) -> int:
        """Delete sign-ups never confirmed whose link has expired. -> how many."""
        c = subscribers.c
        q = subscribers.delete().where(c.status == "pending", c.updated_at < changed_before)
        with self._safe(), self.engine.begin() as conn:
            return int(conn.execute(q).rowcount)

    def record_bounce(self, subscriber_id: int, limit: int, now: datetime) -> str:
        """One more permanent failure; the subscriber is marked bouncing at `limit`. -> status."""
        with self._safe(), self.engine.begin() as conn:
            row = conn.execute(
                sa.select(subscribers.c.bounces, subscribers.c.status).where(
                    subscribers.c.id == subscriber_id
                )
            ).one()
            bounces = row.bounces + 1
            status = "bouncing" if bounces >= limit else row.status
            conn.execute(
                subscribers.update()
                .where(subscribers.c.id == subscriber_id)
                .values(bounces=bounces, status=status, updated_at=now)
            )
            return str(status)

    # -- the delivery ledger ---------------------------------------------------------------------

    def delivery(self, subscriber_id: int, period: str) -> dict[str, Any] | None:
        q = sa.select(deliveries).where(
            deliveries.c.subscriber_id == subscriber_id, deliveries.c.period == period
        )
        with self._safe(), self.engine.connect() as conn:
            row = conn.execute(q).mappings().first()
            return dict(row) if row else None

    def ledger_states(self, periods: Sequence[str]) -> dict[tuple[int, str], str]:
        """The ledger state of these periods, by (subscriber, period): who is already done."""
        d = deliveries
        states: dict[tuple[int, str], str] = {}
        with self._safe(), self.engine.connect() as conn:
            for chunk in _chunks(sorted(set(periods)), 500):
                q = sa.select(d.c.subscriber_id, d.c.period, d.c.state).where(d.c.period.in_(chunk))
                for sid, period, state in conn.execute(q).tuples():
                    states[(sid, period)] = state
        return states

    def last_digests(self, ids: Sequence[int]) -> dict[int, datetime]:
        """For these subscribers: when their last digest (sent or empty) was assembled."""
        d = deliveries
        last: dict[int, datetime] = {}
        with self._safe(), self.engine.connect() as conn:
            for chunk in _chunks(sorted(set(ids)), 500):
                query = (
                    sa.select(d.c.subscriber_id, sa.func.max(d.c.assembled_at))
                    .where(d.c.state.in_(("sent", "empty")), d.c.subscriber_id.in_(chunk))
                    .group_by(d.c.subscriber_id)
                )
                for sid, t in conn.execute(query).tuples():
                    value = UTC_TYPE.process_result_value(t, conn.dialect)
                    if value is not None:
                        last[sid] = value
        return last

    def sent_stories(self, ids: Sequence[int], story_ids: Iterable[int]) -> dict[int, set[int]]:
        """For these subscribers: which of `story_ids` they were already sent (the ledger grows;
        a send run's window of stories does not)."""
        ss = sent_stories
        among = sorted(set(story_ids))
        sent: dict[int, set[int]] = {}
        if not among:
            return sent
        with self._safe(), self.engine.connect() as conn:
            for chunk in _chunks(sorted(set(ids)), 500):
                q = sa.select(ss.c.subscriber_id, ss.c.story_id).where(
                    ss.c.subscriber_id.in_(chunk),
                    ss.c.story_id.in_(sa.bindparam("among", among, expanding=True)),
                )
                for sid, story in conn.execute(q).tuples():
                    sent.setdefault(sid, set()).add(story)
        return sent

    @contextmanager
    def _writing(self) -> Iterator[Connection]:
        """A transaction that holds the write lock from its first statement: on SQLite
        BEGIN IMMEDIATE, so a read-then-write never meets a newer writer's commit in between
        (https://www.sqlite.org/lang_transaction.html); on PostgreSQL an ordinary transaction, whose
        conditional UPDATEs re-check their WHERE on the newest row after any wait (READ COMMITTED)."""
        with self._safe(), self.engine.connect() as conn:
            if conn.dialect.name == "sqlite":
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.rollback()
                raise
            conn.commit()

    def claim_deliveries(
        self,
        batch: Sequence[tuple[int, str, str, Sequence[int], datetime]],
        owner: str,
        clock: datetime,
        lease: float,
    ) -> list[bool]:
        """Claim (subscriber, period, message id, stories, assembled at) for `owner` until
        clock + lease, in one transaction, before any of them is sent -> for each, True when it is
        now ours to send: its row is pending or failed, and unclaimed, ours, or its lease has run
        out (a crashed sender). Another sender's live claim, or a period already sent or empty,
        gives False. Rows are taken in subscriber order, so two senders never wait on each other
        in a circle (PostgreSQL)."""
        d = deliveries
        until = clock + timedelta(seconds=lease)
        claimable = sa.and_(
            d.c.state.in_(("pending", "failed")),
            sa.or_(d.c.claimed_by.is_(None), d.c.claimed_by == owner, d.c.claimed_until < clock),
        )
        with self._writing() as conn:
            fresh = [
                {
                    "subscriber_id": sid,
                    "period": period,
                    "message_id": mid,
                    "state": "pending",
                    "attempts": 0,
                    "story_ids": list(story_ids),
                    "assembled_at": at,
                }
                for sid, period, mid, story_ids, at in sorted(batch, key=lambda b: (b[0], b[1]))
            ]
            if fresh:
                conn.execute(_insert_ignore(conn, d, ["subscriber_id", "period"]), fresh)
            claimed: dict[tuple[object, object], bool] = {}
            for row in fresh:
                result = conn.execute(
                    d.update()
                    .where(d.c.subscriber_id == row["subscriber_id"], d.c.period == row["period"], claimable)
                    .values(
                        state="pending",
                        attempts=d.c.attempts + 1,
                        story_ids=row["story_ids"],
                        assembled_at=row["assembled_at"],
                        message_id=row["message_id"],  # fixed per (subscriber, period): the same
                        claimed_by=owner,
                        claimed_until=until,
                    )
                )
                claimed[(row["subscriber_id"], row["period"])] = result.rowcount == 1
        return [claimed[(sid, period)] for sid, period, *_ in batch]

    def renew_claims(
        self, keys: Sequence[tuple[int, str]], owner: str, clock: datetime, lease: float
    ) -> set[tuple[int, str]]:
        """Extend `owner`'s claims on these pending rows to clock + lease -> the ones still ours
        (a claim whose lease ran out may have been taken over: it is no longer ours to send)."""
        d = deliveries
        kept: set[tuple[int, str]] = set()
        with self._writing() as conn:
            for sid, period in sorted(keys):
                result = conn.execute(
                    d.update()
                    .where(
                        d.c.subscriber_id == sid,
                        d.c.period == period,
                        d.c.state == "pending",
                        d.c.claimed_by == owner,
                    )
                    .values(claimed_until=clock + timedelta(seconds=lease))
                )
                if result.rowcount == 1:
                    kept.add((sid, period))
        return kept

    def release_claims(self, owner: str) -> int:
        """Let go of `owner`'s claims on rows it did not send (a run stopping early): the next
        sender need not wait for their lease to run out."""
        d = deliveries
        with self._safe(), self.engine.begin() as conn:
            result = conn.execute(
                d.update().where(d.c.claimed_by == owner).values(claimed_by=None, claimed_until=None)
            )
            return int(result.rowcount or 0)

    def finish_delivery(
        self, subscriber_id: int, period: str, state: str, now: datetime, error: str | None = None
    ) -> None:
        """Mark the period sent (recording its stories as sent to the subscriber), failed or empty."""
        self.finish_deliveries([(subscriber_id, period, state, error)], now)

    def finish_deliveries(self, batch: Sequence[tuple[int, str, str, str | None]], now: datetime) -> None:
        """(subscriber, period, state, error) for several deliveries, in one transaction."""
        d, ss = deliveries, sent_stories
        with self._safe(), self.engine.begin() as conn:
            for subscriber_id, period, state, error in batch:
                row = conn.execute(
                    sa.select(d.c.id, d.c.story_ids).where(
                        d.c.subscriber_id == subscriber_id, d.c.period == period
                    )
                ).one()
                conn.execute(
                    d.update()
                    .where(d.c.id == row.id)
                    .values(
                        state=state,
                        last_error=error,
                        sent_at=now if state == "sent" else None,
                        claimed_by=None,
                        claimed_until=None,
                    )
                )
                if state == "sent" and row.story_ids:
                    known = set(
                        conn.execute(
                            sa.select(ss.c.story_id).where(ss.c.subscriber_id == subscriber_id)
                        ).scalars()
                    )
                    fresh = [
                        {"subscriber_id": subscriber_id, "story_id": sid, "delivery_id": row.id}
                        for sid in row.story_ids
                        if sid not in known
                    ]
                    if fresh:
                        conn.execute(ss.insert(), fresh)

    def record_empty(self, subscriber_id: int, period: str, message_id: str, now: datetime) -> None:
        with self._safe(), self.engine.begin() as conn:
            conn.execute(
                _insert_ignore(conn, deliveries, ["subscriber_id", "period"]).values(
                    subscriber_id=subscriber_id,
                    period=period,
                    message_id=message_id,
                    state="empty",
                    attempts=0,
                    story_ids=[],
                    assembled_at=now,
                )
            )

    def sent_digests(self, subscriber_id: int, *, limit: int, offset: int = 0) -> list[dict[str, Any]]:
        """One subscriber's sent digests, newest first, a page at a time (the web archive)."""
        d = deliveries.c
        q = (
            sa.select(d.period, d.story_ids, d.sent_at)
            .where(d.subscriber_id == subscriber_id, d.state == "sent")
            .order_by(d.period.desc())
            .limit(limit)
            .offset(offset)
        )
        with self._safe(), self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(q).mappings()]

    def deliveries_report(self, limit: int = 50) -> list[dict[str, Any]]:
        q = (
            sa.select(deliveries, subscribers.c.email)
            .join(subscribers, subscribers.c.id == deliveries.c.subscriber_id)
            .order_by(deliveries.c.id.desc())
            .limit(limit)
        )
        with self._safe(), self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(q).mappings()]

    # -- search and the stories as feeds ---------------------------------------------------------

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

    def recent_stories(self, *, limit: int, story_ids: Iterable[int] | None = None) -> list[StoryTimes]:
        """Stories, the most recently updated first (a feed's entries), with when each was first
        seen and last changed (its Atom id and times); `story_ids`: only those."""
        q = sa.select(stories.c.id, stories.c.first_seen, stories.c.updated_at)
        if story_ids is not None:
            q = q.where(stories.c.id.in_(sa.bindparam("ids", sorted(set(story_ids)), expanding=True)))
        q = q.order_by(stories.c.updated_at.desc(), stories.c.id.desc()).limit(limit)
        with self._safe(), self.engine.connect() as conn:
            return [StoryTimes(i, first, updated) for i, first, updated in conn.execute(q).tuples()]

    # -- housekeeping ----------------------------------------------------------------------------

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
            for chunk in _chunks(doomed, 500):
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

    def tidy(self) -> None:
        """ANALYZE (and on SQLite an incremental VACUUM's worth: a checkpoint of the WAL)."""
        with self._safe(), self.engine.connect() as conn:
            if conn.dialect.name == "sqlite":
                conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
                conn.exec_driver_sql("ANALYZE")
            else:
                conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("ANALYZE")


@dataclass(frozen=True, slots=True)
class SearchHit:
    entry_id: int
    story_id: int
    score: float  # higher is better; comparable within one search only


@dataclass(frozen=True, slots=True)
class StoryTimes:
    id: int
    first_seen: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class ClusterMember:
    stored: StoredEntry
    story_id: int | None
    entities: tuple[str, ...]
    title_entities: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ClassifiedEntry:
    stored: StoredEntry
    relevant: bool
    topics: tuple[str, ...]
    tags: tuple[str, ...]
    why: list[dict[str, Any]]
    story_id: int | None


_ENTRY_FIELDS = [f.name for f in fields(Entry)]


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


def _is_empty(conn: Connection) -> bool:
    """No table of ours and no migration history: a database never used by digest."""
    present = set(sa.inspect(conn).get_table_names())
    return not present & {*metadata.tables, "alembic_version"}


def _create_schema(conn: Connection) -> None:
    """The current schema, as the migrations build it (tests compare the two), at the head revision."""
    metadata.create_all(conn)
    # the partial index of migration 0004 (not in schema.py: see the note on entries.classified)
    false = "0" if conn.dialect.name == "sqlite" else "false"
    conn.exec_driver_sql(f"CREATE INDEX ix_entries_unclassified ON entries (id) WHERE classified = {false}")
    for ddl in SEARCH_DDL[conn.dialect.name]:  # the search index (not a metadata table)
        conn.exec_driver_sql(ddl)
    version = sa.Table(
        "alembic_version",
        sa.MetaData(),
        sa.Column("version_num", sa.String(32), nullable=False),
        sa.PrimaryKeyConstraint("version_num", name="alembic_version_pkc"),
    )
    version.create(conn)
    conn.execute(version.insert().values(version_num=SCHEMA_REVISION))


def _claim_rules(conn: Connection, rules_hash: str) -> bool:
    """Record `rules_hash` as the rules the store's verdicts come from, if none is recorded;
    True when it is (now) the recorded one."""
    q = sa.select(meta.c.value).where(meta.c.key == "rules_hash")
    recorded = conn.execute(q).scalar()
    if recorded is None:
        conn.execute(_insert_ignore(conn, meta, ["key"]), [{"key": "rules_hash", "value": rules_hash}])
        recorded = conn.execute(q).scalar()  # another writer may have been first
    return bool(recorded == rules_hash)


def _mark_classified(conn: Connection, ids: Sequence[int]) -> None:
    for chunk in _chunks(list(ids), 500):
        # only rows not marked yet: an UPDATE rewrites the whole row, summaries and all
        unmarked = entries.c.classified == sa.false()
        conn.execute(entries.update().where(entries.c.id.in_(chunk), unmarked).values(classified=True))


def _entry_row(e: Entry, now: datetime) -> dict[str, Any]:
    row = {k: getattr(e, k) for k in _ENTRY_FIELDS}
    row["first_seen"] = now
    row["updated_at"] = now
    return row


def _stored(row: Any) -> StoredEntry:
    return StoredEntry(
        id=row["id"], first_seen=row["first_seen"], entry=Entry(**{k: row[k] for k in _ENTRY_FIELDS})
    )


_INSERTS: dict[tuple[str, str, tuple[str, ...]], tuple[str, list[tuple[str, Any]], bool]] = {}


def _insert_many(conn: Connection, table: sa.Table, keys: list[str], rows: Sequence[dict[str, Any]]) -> int:
    """_insert_ignore of many rows (all with the same keys) through the driver's executemany, each
    value passed through its column type's own bind processing -> the driver's rowcount.

    Connection.execute builds every row's parameters through the compiled statement's
    machinery: for a cold fetch's 10,000 entries that was most of the main process's writing
    time. The statement and the processors are the ones SQLAlchemy itself would use."""
    cols = tuple(rows[0])
    key = (conn.dialect.name, table.name, cols)
    if key not in _INSERTS:
        compiled = _insert_ignore(conn, table, keys).compile(dialect=conn.dialect, column_keys=list(cols))
        names = list(compiled.positiontup or ()) if compiled.positional else list(cols)
        processors = [
            (n, table.c[n].type.dialect_impl(conn.dialect).bind_processor(conn.dialect)) for n in names
        ]
        _INSERTS[key] = (str(compiled), processors, compiled.positional)
    sql, processors, positional = _INSERTS[key]
    try:
        if positional:
            params: list[Any] = [tuple(p(r[n]) if p else r[n] for n, p in processors) for r in rows]
        else:
            params = [{n: p(r[n]) if p else r[n] for n, p in processors} for r in rows]
    except (TypeError, ValueError) as exc:  # as Connection.execute reports a value it cannot bind
        raise sa.exc.StatementError(f"({exc.__class__.__name__}) {exc}", sql, None, exc) from exc
    return int(conn.exec_driver_sql(sql, params).rowcount)


def _insert_ignore(conn: Connection, table: sa.Table, keys: list[str]) -> Any:
    """INSERT that skips rows another writer inserted first (several machines on PostgreSQL)."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(table).on_conflict_do_nothing(index_elements=keys)
    if conn.dialect.name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(table).on_conflict_do_nothing(index_elements=keys)
    return table.insert()


def _chunks(seq: Sequence[Any], n: int) -> Iterator[Sequence[Any]]:
    for i in range(0, len(seq), n):
        yield seq[i : i + n]


class _StorageGuard:
    """Turns driver errors into one StorageError line that names the database."""

    def __init__(self, url: str) -> None:
        self.url = sa.engine.make_url(url).render_as_string(hide_password=True)

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if isinstance(exc, OperationalError):
            reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
            raise StorageError(
                f"database {self.url}: {reason}; check that it is reachable, "
                "writable and not locked by another program"
            ) from exc
        if isinstance(exc, SQLAlchemyError) and not isinstance(exc, StorageError):
            raise StorageError(
                f"database {self.url}: {exc.__class__.__name__}: {str(exc).splitlines()[0]}"
            ) from exc


UTC_TYPE = UTCDateTime()


def new_salt() -> str:
    """A subscription's salt: 16 random bytes, as 32 hex digits."""
    return secrets.token_hex(16)


_SUB_FIELDS = SUBSCRIBER_FIELDS


def _subscriber_row(sub: Subscriber) -> dict[str, Any]:
    row = {k: getattr(sub, k) for k in _SUB_FIELDS}
    row["topics"], row["tags"] = list(sub.topics), list(sub.tags)
    return row


def _subscriber(r: Any) -> Subscriber:
    return Subscriber(
        **{k: r[k] for k in _SUB_FIELDS if k not in ("topics", "tags")},
        topics=tuple(r["topics"]),
        tags=tuple(r["tags"]),
        id=r["id"],
        bounces=r["bounces"],
    )
