"""Alembic environment: always given a live connection by digest.storage.base (no alembic.ini)."""

from alembic import context

from digest.storage.schema import metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
