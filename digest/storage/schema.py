"""Table definitions (SQLAlchemy Core). Migrations in digest/migrations must match these."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """Stores naive UTC, returns aware UTC: SQLite has no time zones, PostgreSQL would convert."""

    impl = sa.DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r} given to the store; pass an aware UTC time")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC)


# The Alembic revision these tables match; tests check it is the head of digest/storage/migrations.
SCHEMA_REVISION = "0010"

metadata = sa.MetaData()

feeds = sa.Table(
    "feeds",
    metadata,
    sa.Column("name", sa.String(100), primary_key=True),
    sa.Column("url", sa.Text, nullable=False),
    sa.Column("fetch_url", sa.Text),
    sa.Column("title", sa.Text),
    sa.Column("etag", sa.Text),
    sa.Column("last_modified", sa.Text),
    sa.Column("body_hash", sa.String(64)),
    sa.Column("status", sa.String(20)),
    sa.Column("http_status", sa.Integer),
    sa.Column("last_error", sa.Text),
    sa.Column("error_count", sa.Integer, nullable=False, server_default="0"),
    sa.Column("last_fetched", UTCDateTime),
    sa.Column("last_ok", UTCDateTime),
    sa.Column("next_poll", UTCDateTime),
    # entry ids in the latest parsed body: retention never removes what the feed still serves
    sa.Column("current_entries", sa.JSON),
    # the poller that leased this feed and until when (a poller that dies loses it at the lease's
    # end): two daemons on one database fetch each feed once per interval, not once each
    sa.Column("claimed_by", sa.String(64)),
    sa.Column("claimed_until", UTCDateTime),
)

entries = sa.Table(
    "entries",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("feed", sa.String(100), sa.ForeignKey("feeds.name", ondelete="CASCADE"), nullable=False),
    sa.Column("entry_id", sa.String(512), nullable=False),
    sa.Column("guid", sa.Text),
    sa.Column("link", sa.Text),
    sa.Column("title", sa.Text, nullable=False),
    sa.Column("summary_html", sa.Text, nullable=False),
    sa.Column("summary_text", sa.Text, nullable=False),
    sa.Column("published", UTCDateTime, nullable=False),
    sa.Column("published_fallback", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("author", sa.Text),
    sa.Column("language", sa.String(16)),
    sa.Column("content_hash", sa.String(64), nullable=False),
    sa.Column("source_title", sa.Text),
    sa.Column("source_url", sa.Text),
    sa.Column("first_seen", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    # True once selection has judged the entry (a selected entry also has a classifications row)
    sa.Column("classified", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.UniqueConstraint("feed", "entry_id", name="uq_entries_feed_entry_id"),
    sa.Index("ix_entries_first_seen", "first_seen"),
    sa.Index("ix_entries_published", "published"),
    # a partial index: "what is left to judge" costs nothing when nothing is
    sa.Index(
        "ix_entries_unclassified",
        "id",
        sqlite_where=sa.text("classified = 0"),
        postgresql_where=sa.text("classified = false"),
    ),
)

stories = sa.Table(
    "stories",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("first_seen", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
)

classifications = sa.Table(
    "classifications",
    metadata,
    sa.Column("entry_id", sa.Integer, sa.ForeignKey("entries.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("relevant", sa.Boolean, nullable=False),
    sa.Column("topics", sa.JSON, nullable=False),
    sa.Column("tags", sa.JSON, nullable=False),
    sa.Column("why", sa.JSON, nullable=False),
    sa.Column("entities", sa.JSON, nullable=False),
    sa.Column("title_entities", sa.JSON, nullable=False),
    sa.Column("rules_hash", sa.String(16), nullable=False),
    sa.Column("story_id", sa.Integer, sa.ForeignKey("stories.id", ondelete="SET NULL")),
    sa.Column("classified_at", UTCDateTime, nullable=False),
    sa.Index("ix_classifications_story", "story_id"),
    sa.Index("ix_classifications_relevant", "relevant"),
)

# Facts about the whole store. rules_hash: the rules every classified entry was judged by (an
# entry no topic selected is marked entries.classified and has no classifications row).
meta = sa.Table(
    "meta",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)

# ids are never reused (SQLite AUTOINCREMENT; PostgreSQL sequences never go back), and `salt`,
# random per subscription, is in every signed link (tokens.py): a link mailed to a removed or
# re-subscribed address never acts on whoever holds the id or the address now. "" marks a
# subscriber from before migration 0007, whose links were signed without it.
subscribers = sa.Table(
    "subscribers",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("email", sa.String(320), nullable=False, unique=True),
    sa.Column("name", sa.Text),
    sa.Column("topics", sa.JSON, nullable=False),
    sa.Column("tags", sa.JSON, nullable=False),
    sa.Column("cadence", sa.String(10), nullable=False),
    sa.Column("weekday", sa.Integer),
    sa.Column("send_time", sa.String(5), nullable=False),
    sa.Column("timezone", sa.String(64), nullable=False),
    sa.Column("format", sa.String(10), nullable=False),
    sa.Column("max_stories", sa.Integer, nullable=False),
    sa.Column("show_why", sa.Boolean, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("bounces", sa.Integer, nullable=False, server_default="0"),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Column("salt", sa.String(32), nullable=False, server_default=""),
    sa.Column("quiet_hours", sa.String(11)),  # "22:00-07:00" local: instant mail waits (0009)
    sqlite_autoincrement=True,
)

deliveries = sa.Table(
    "deliveries",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column(
        "subscriber_id", sa.Integer, sa.ForeignKey("subscribers.id", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("period", sa.String(16), nullable=False),
    sa.Column("message_id", sa.String(255), nullable=False),
    sa.Column("state", sa.String(10), nullable=False),  # pending, sent, failed, empty
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("last_error", sa.Text),
    sa.Column("story_ids", sa.JSON, nullable=False),
    sa.Column("assembled_at", UTCDateTime, nullable=False),
    sa.Column("sent_at", UTCDateTime),
    # a sender's lease on a pending row: only the holder sends it until claimed_until; a crashed
    # sender's rows are taken over after that (store.claim_deliveries)
    sa.Column("claimed_by", sa.String(64)),
    sa.Column("claimed_until", UTCDateTime),
    sa.UniqueConstraint("subscriber_id", "period", name="uq_deliveries_subscriber_period"),
)

sent_stories = sa.Table(
    "sent_stories",
    metadata,
    sa.Column(
        "subscriber_id", sa.Integer, sa.ForeignKey("subscribers.id", ondelete="CASCADE"), primary_key=True
    ),
    sa.Column("story_id", sa.Integer, primary_key=True),
    sa.Column("delivery_id", sa.Integer, sa.ForeignKey("deliveries.id", ondelete="CASCADE"), nullable=False),
)

# The bounce mailbox's ledger (migration 0010): one row per message read, keyed by the sha256 of
# its bytes, written in the transaction that applies its effect. A message read again (a crash
# between that commit and moving it aside) finds its row and changes nothing.
bounce_reports = sa.Table(
    "bounce_reports",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("outcome", sa.String(10), nullable=False),  # hard, soft, complaint, ignored, unknown
    sa.Column("subscriber_id", sa.Integer, sa.ForeignKey("subscribers.id", ondelete="SET NULL")),
    sa.Column("message_id", sa.Text),
    sa.Column("note", sa.Text, nullable=False),
    sa.Column("processed_at", UTCDateTime, nullable=False),
    sa.Index("ix_bounce_reports_processed_at", "processed_at"),
)

# The search index (migration 0008): titles and summaries as search.index_text writes them, kept
# in step by storage/entries.py wherever entries are written or removed. Not a metadata table:
# each backend has its own kind. SQLite: an FTS5 table whose rowid is entries.id (bm25 ranks it; FTS5 has no
# foreign keys, so retention removes its rows too). PostgreSQL: a tsvector per entry (title
# weighted A, summary B), GIN-indexed, removed with its entry by the foreign key.
SEARCH_DDL = {
    "sqlite": [
        "CREATE VIRTUAL TABLE entry_search USING fts5("
        "title, summary, tokenize = 'unicode61 remove_diacritics 2')"
    ],
    "postgresql": [
        "CREATE TABLE entry_search (entry_id INTEGER NOT NULL PRIMARY KEY"
        " REFERENCES entries (id) ON DELETE CASCADE, document TSVECTOR NOT NULL)",
        "CREATE INDEX ix_entry_search_document ON entry_search USING gin (document)",
    ],
}
