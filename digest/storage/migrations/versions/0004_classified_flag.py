"""entries.classified (with a partial index) and an index on classifications.rules_hash

Finding the entries still to classify and checking whether the rules changed were full scans
that every `digest fetch` and every daemon poll paid, growing with the database. With these,
both cost the same at 10,000 entries as at 1,000,000.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("entries", sa.Column("classified", sa.Boolean, nullable=False, server_default=sa.false()))
    entries = sa.table("entries", sa.column("id", sa.Integer), sa.column("classified", sa.Boolean))
    done = sa.select(sa.column("entry_id", sa.Integer)).select_from(sa.table("classifications"))
    op.execute(entries.update().where(entries.c.id.in_(done)).values(classified=True))
    op.create_index(
        "ix_entries_unclassified",
        "entries",
        ["id"],
        sqlite_where=sa.text("classified = 0"),
        postgresql_where=sa.text("classified = false"),
    )
    op.create_index("ix_classifications_rules_hash", "classifications", ["rules_hash"])


def downgrade() -> None:
    op.drop_index("ix_classifications_rules_hash", "classifications")
    op.drop_index("ix_entries_unclassified", "entries")
    with op.batch_alter_table("entries") as batch:
        batch.drop_column("classified")
