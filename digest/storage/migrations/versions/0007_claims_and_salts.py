"""Claims (leases) on deliveries and feeds; subscriber ids never reused; a salt per subscription

- deliveries.claimed_by/claimed_until: a sender claims a pending (subscriber, period) before it
  sends it, so several senders (send, run --once, daemons on several machines) never send one
  digest twice; a crashed sender's claims are taken over when the lease runs out.
- feeds.claimed_by/claimed_until: the same for polls.
- subscribers.salt, in every signed link; "" for the subscribers already here, whose links were
  signed before it existed (they keep working until the address is removed or subscribes again).
- SQLite: subscribers is rebuilt with AUTOINCREMENT, so a removed subscriber's id is never given
  to the next one (https://www.sqlite.org/autoinc.html). PostgreSQL sequences never go back.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    conn = op.get_bind()
    for table in ("deliveries", "feeds"):
        op.add_column(table, sa.Column("claimed_by", sa.String(64)))
        op.add_column(table, sa.Column("claimed_until", sa.DateTime))
    if conn.dialect.name == "sqlite":
        # The rebuild drops the old table; with foreign keys on (as digest opens SQLite) that
        # drop deletes the rows that refer to it, cascading (https://www.sqlite.org/lang_droptable.html),
        # and the pragma that would stop it cannot change inside a transaction. So the ledger is
        # kept aside and put back.
        op.execute("CREATE TEMP TABLE keep_deliveries AS SELECT * FROM deliveries")
        op.execute("CREATE TEMP TABLE keep_sent_stories AS SELECT * FROM sent_stories")
        with op.batch_alter_table(
            "subscribers", recreate="always", table_kwargs={"sqlite_autoincrement": True}
        ) as batch:
            batch.add_column(sa.Column("salt", sa.String(32), nullable=False, server_default=""))
        op.execute("INSERT OR IGNORE INTO deliveries SELECT * FROM keep_deliveries")
        op.execute("INSERT OR IGNORE INTO sent_stories SELECT * FROM keep_sent_stories")
        op.execute("DROP TABLE keep_deliveries")
        op.execute("DROP TABLE keep_sent_stories")
    else:
        op.add_column("subscribers", sa.Column("salt", sa.String(32), nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("subscribers") as batch:
        batch.drop_column("salt")
    for table in ("feeds", "deliveries"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("claimed_until")
            batch.drop_column("claimed_by")
