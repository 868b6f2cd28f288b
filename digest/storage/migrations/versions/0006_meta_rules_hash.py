"""meta.rules_hash; classifications rows only for selected entries

An entry no topic selects has nothing to record but that it was judged (entries.classified) and
by which rules; the rules are the same for every entry, so they are recorded once, in meta.
Writing a row of empty lists for each of them was a third of a cold fetch's writing. The index
on classifications.rules_hash (0004), read only to learn which rules had judged, goes.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    meta = op.create_table(
        "meta",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )
    conn = op.get_bind()
    low, high = conn.execute(sa.text("SELECT min(rules_hash), max(rules_hash) FROM classifications")).one()
    if low is not None:
        # entries judged by several rule sets (an interrupted change): "mixed" matches no rules,
        # so the next organise judges everything again
        op.bulk_insert(meta, [{"key": "rules_hash", "value": low if low == high else "mixed"}])
    op.execute("DELETE FROM classifications WHERE NOT relevant")
    op.drop_index("ix_classifications_rules_hash", "classifications")


def downgrade() -> None:
    op.create_index("ix_classifications_rules_hash", "classifications", ["rules_hash"])
    # entries judged not relevant are judged again under 0005's bookkeeping
    op.execute(
        "UPDATE entries SET classified = false"
        " WHERE classified AND id NOT IN (SELECT entry_id FROM classifications)"
    )
    op.drop_table("meta")
