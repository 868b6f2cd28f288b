"""subscribers.quiet_hours: when an instant subscriber's mail waits (cadence instant, issue 15)

"22:00-07:00" in the subscriber's own zone, or NULL. Instant periods ("2026-03-02T0615") fit
deliveries.period's 16 characters, so the ledger needs no change.

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("subscribers") as batch:
        batch.add_column(sa.Column("quiet_hours", sa.String(11)))


def downgrade() -> None:
    op.execute("UPDATE subscribers SET cadence = 'daily' WHERE cadence = 'instant'")
    with op.batch_alter_table("subscribers") as batch:
        batch.drop_column("quiet_hours")
