"""feeds.current_entries: the entry ids in each feed's latest parsed body

Retention removes old entries; an entry the feed still serves must stay, or the next fetch
would store it again as new and it would be sent a second time.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("feeds", sa.Column("current_entries", sa.JSON))


def downgrade() -> None:
    with op.batch_alter_table("feeds") as batch:
        batch.drop_column("current_entries")
