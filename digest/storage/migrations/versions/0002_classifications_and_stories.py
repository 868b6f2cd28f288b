"""classifications and stories

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "stories",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("first_seen", sa.DateTime, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
    )
    op.create_table(
        "classifications",
        sa.Column("entry_id", sa.Integer, sa.ForeignKey("entries.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("relevant", sa.Boolean, nullable=False),
        sa.Column("topics", sa.JSON, nullable=False),
        sa.Column("tags", sa.JSON, nullable=False),
        sa.Column("why", sa.JSON, nullable=False),
        sa.Column("entities", sa.JSON, nullable=False),
        sa.Column("title_entities", sa.JSON, nullable=False),
        sa.Column("rules_hash", sa.String(16), nullable=False),
        sa.Column("story_id", sa.Integer, sa.ForeignKey("stories.id", ondelete="SET NULL")),
        sa.Column("classified_at", sa.DateTime, nullable=False),
    )
    op.create_index("ix_classifications_story", "classifications", ["story_id"])
    op.create_index("ix_classifications_relevant", "classifications", ["relevant"])


def downgrade() -> None:
    op.drop_table("classifications")
    op.drop_table("stories")
