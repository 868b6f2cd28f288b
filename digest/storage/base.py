"""The store's foundation: the engine, migrations, transactions and the errors they raise."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, Engine, RowMapping
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError, SQLAlchemyError

if TYPE_CHECKING:
    from alembic.config import Config as AlembicConfig

from digest.config import SUPPORTED_DATABASES
from digest.errors import StorageError
from digest.model.records import (
    Entry,
    StoredEntry,
)
from digest.model.subscribers import FIELDS as SUBSCRIBER_FIELDS
from digest.storage.schema import (
    SCHEMA_REVISION,
    SEARCH_DDL,
    meta,
    metadata,
)

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


class StorageBase:
    """Owns the engine. Every SQL statement is in a mixin of storage.store.Store."""

    def __init__(self, url: str, *, migrate: bool = True) -> None:
        self.url = url
        self.engine = make_engine(url)
        if migrate:
            self.upgrade()

    def _safe(self) -> StorageGuard:
        return StorageGuard(self.url)

    def current_revision(self) -> str | None:
        with self._safe(), self.engine.connect() as conn:
            if not sa.inspect(conn).has_table("alembic_version"):
                return None
            return conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()

    @staticmethod
    def head_revision() -> str | None:

        from alembic.script import ScriptDirectory  # Alembic: only to migrate (alembic_config)

        return ScriptDirectory.from_config(alembic_config(None)).get_current_head()

    def upgrade(self) -> bool:
        """Apply pending migrations; True when something was applied. An empty database gets
        the current schema in one step, stamped with the head revision (Alembic's advice for
        new databases; six migrations in turn took 0.18 s of a first run, this takes 0.02 s)."""
        if self.current_revision() == SCHEMA_REVISION:
            return False
        with self._safe(), self.engine.begin() as conn:
            if is_empty(conn):
                create_schema(conn)
                return True

            from alembic import command  # Alembic: only to migrate (alembic_config)

            command.upgrade(alembic_config(conn), "head")
        return True

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _writing(self) -> Iterator[Connection]:
        """A transaction that holds the write lock from its first statement: on SQLite
        BEGIN IMMEDIATE, so a read-then-write never meets a newer writer's commit in between
        (https://www.sqlite.org/lang_transaction.html); on PostgreSQL an ordinary transaction, whose
        conditional UPDATEs re-check their WHERE on the newest row after any wait (READ COMMITTED)."""
        with self._safe(), self.engine.connect() as conn:
            if conn.dialect.name == "sqlite":
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.rollback()
                raise
            conn.commit()

    def tidy(self) -> None:
        """ANALYZE (and on SQLite an incremental VACUUM's worth: a checkpoint of the WAL)."""
        with self._safe(), self.engine.connect() as conn:
            if conn.dialect.name == "sqlite":
                conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
                conn.exec_driver_sql("ANALYZE")
            else:
                conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("ANALYZE")


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cur = dbapi_connection.cursor()
    # WAL lets readers (digest status, the web app) run while the daemon writes.
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def alembic_config(connection: Connection | None) -> AlembicConfig:
    """Alembic's configuration for the migrations here. Alembic is imported where a migration
    runs, not with the store: a store already at SCHEMA_REVISION (every run but the first after
    an upgrade) never needs it, and it is a tenth of a short run's imports."""
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


def make_engine(url: str) -> Engine:
    try:
        # a ping before each use finds a PostgreSQL connection the server dropped; a SQLite
        # file has no server (and the ping was a statement per transaction)
        ping = not url.startswith("sqlite")
        engine = sa.create_engine(url, future=True, pool_pre_ping=ping)
    except (ArgumentError, NoSuchModuleError) as exc:
        raise StorageError(
            f"database URL {url!r} is not usable ({exc}); write e.g. "
            "'sqlite:///digest.db' or 'postgresql+psycopg://user@host/db'"
        ) from None
    except ModuleNotFoundError as exc:
        hint = (
            "install it (pip install 'digest[postgres]')"
            if url.startswith("postgres")
            else f"digest stores its data in {SUPPORTED_DATABASES}"
        )
        raise StorageError(f"database URL {url!r} needs the driver {exc.name!r}; {hint}") from None
    if engine.dialect.name == "sqlite":
        sa.event.listen(engine, "connect", _sqlite_pragmas)
        db = engine.url.database
        if db and db != ":memory:" and not db.startswith("file:"):
            try:
                Path(db).parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StorageError(
                    f"database {url}: cannot create folder {Path(db).parent} "
                    f"({exc.strerror}); fix the path in `database:`"
                ) from None
    return engine


ENTRY_FIELDS = [f.name for f in fields(Entry)]


def is_empty(conn: Connection) -> bool:
    """No table of ours and no migration history: a database never used by digest."""
    present = set(sa.inspect(conn).get_table_names())
    return not present & {*metadata.tables, "alembic_version"}


def create_schema(conn: Connection) -> None:
    """The current schema, as the migrations build it (tests compare the two), at the head revision."""
    metadata.create_all(conn)
    for ddl in SEARCH_DDL[conn.dialect.name]:  # the search index (not a metadata table)
        conn.exec_driver_sql(ddl)
    version = sa.Table(
        "alembic_version",
        sa.MetaData(),
        sa.Column("version_num", sa.String(32), nullable=False),
        sa.PrimaryKeyConstraint("version_num", name="alembic_version_pkc"),
    )
    version.create(conn)
    conn.execute(version.insert().values(version_num=SCHEMA_REVISION))


def claim_rules(conn: Connection, rules_hash: str) -> bool:
    """Record `rules_hash` as the rules the store's verdicts come from, if none is recorded;
    True when it is (now) the recorded one."""
    q = sa.select(meta.c.value).where(meta.c.key == "rules_hash")
    recorded = conn.execute(q).scalar()
    if recorded is None:
        conn.execute(insert_ignore(conn, meta, ["key"]), [{"key": "rules_hash", "value": rules_hash}])
        recorded = conn.execute(q).scalar()  # another writer may have been first
    return bool(recorded == rules_hash)


def stored_entry(row: RowMapping) -> StoredEntry:
    return StoredEntry(
        id=row["id"], first_seen=row["first_seen"], entry=Entry(**{k: row[k] for k in ENTRY_FIELDS})
    )


def insert_ignore(conn: Connection, table: sa.Table, keys: list[str]) -> sa.Insert:
    """INSERT that skips rows another writer inserted first (several machines on PostgreSQL)."""
    if conn.dialect.name == "postgresql":
        return pg_insert(table).on_conflict_do_nothing(index_elements=keys)
    if conn.dialect.name == "sqlite":
        return sqlite_insert(table).on_conflict_do_nothing(index_elements=keys)
    return table.insert()


def chunks(seq: Sequence[Any], n: int) -> Iterator[Sequence[Any]]:
    for i in range(0, len(seq), n):
        yield seq[i : i + n]


class StorageGuard:
    """Turns driver errors into one StorageError line that names the database."""

    def __init__(self, url: str) -> None:
        self.url = sa.engine.make_url(url).render_as_string(hide_password=True)

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if isinstance(exc, OperationalError):
            reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
            raise StorageError(
                f"database {self.url}: {reason}; check that it is reachable, "
                "writable and not locked by another program"
            ) from exc
        if isinstance(exc, SQLAlchemyError) and not isinstance(exc, StorageError):
            raise StorageError(
                f"database {self.url}: {exc.__class__.__name__}: {str(exc).splitlines()[0]}"
            ) from exc


SUB_FIELDS = SUBSCRIBER_FIELDS
