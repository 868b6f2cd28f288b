"""bounce_reports: the ledger of the bounce mailbox (issue 15)

One row per message read from the bounce mailbox (a DSN, an ARF complaint, or a message that is
neither), keyed by the sha256 of its bytes and written with its effect on the subscriber, so
reading a message twice never counts it twice. subscribers.status gains the value "complained"
(a String column: no change needed).

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "bounce_reports",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("outcome", sa.String(10), nullable=False),
        sa.Column("subscriber_id", sa.Integer, sa.ForeignKey("subscribers.id", ondelete="SET NULL")),
        sa.Column("message_id", sa.Text),
        sa.Column("note", sa.Text, nullable=False),
        sa.Column("processed_at", sa.DateTime, nullable=False),
    )
    op.create_index("ix_bounce_reports_processed_at", "bounce_reports", ["processed_at"])


def downgrade() -> None:
    op.drop_index("ix_bounce_reports_processed_at", "bounce_reports")
    op.drop_table("bounce_reports")
