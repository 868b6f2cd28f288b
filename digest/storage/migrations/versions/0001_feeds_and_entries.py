"""feeds and entries

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "feeds",
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
        sa.Column("last_fetched", sa.DateTime),
        sa.Column("last_ok", sa.DateTime),
        sa.Column("next_poll", sa.DateTime),
    )
    op.create_table(
        "entries",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("feed", sa.String(100), sa.ForeignKey("feeds.name", ondelete="CASCADE"), nullable=False),
        sa.Column("entry_id", sa.String(512), nullable=False),
        sa.Column("guid", sa.Text),
        sa.Column("link", sa.Text),
        sa.Column("title", sa.Text, nullable=False),
        sa.Column("summary_html", sa.Text, nullable=False),
        sa.Column("summary_text", sa.Text, nullable=False),
        sa.Column("published", sa.DateTime, nullable=False),
        sa.Column("published_fallback", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("author", sa.Text),
        sa.Column("language", sa.String(16)),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("source_title", sa.Text),
        sa.Column("source_url", sa.Text),
        sa.Column("first_seen", sa.DateTime, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
        sa.UniqueConstraint("feed", "entry_id", name="uq_entries_feed_entry_id"),
    )
    op.create_index("ix_entries_first_seen", "entries", ["first_seen"])
    op.create_index("ix_entries_published", "entries", ["published"])


def downgrade() -> None:
    op.drop_table("entries")
    op.drop_table("feeds")
