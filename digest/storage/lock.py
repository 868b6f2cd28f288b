"""One scheduler per database: a file lock beside a SQLite file, an advisory lock on PostgreSQL.

Taken only when asked (`--wait`: `digest daemon` for its whole life, `digest run --once` for one
run): the claims on feeds and digests keep several schedulers correct without it. A second holder
waits up to `--wait` seconds, then is refused (LockHeldError, exit code 4). PostgreSQL releases an
advisory lock when its session ends, so a crashed holder never blocks the next one; by the same
rule a server restart, or a terminated backend, drops the lock of a holder still running
(https://www.postgresql.org/docs/current/explicit-locking.html#ADVISORY-LOCKS): the daemon asks
`held()` every tick, and takes it again with `regain()`.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from types import TracebackType

import sqlalchemy as sa
from filelock import FileLock, Timeout

from digest.errors import LockHeldError, StorageError

ADVISORY_KEY = 0x5C0D16E5  # "SCO digest": one lock id for every digest scheduler on a database


class SchedulerLock:
    def __init__(self, database_url: str, *, wait: float = 0.0) -> None:
        self.url = database_url
        self.wait = wait
        self._file_lock: FileLock | None = None
        self._conn: sa.engine.Connection | None = None
        self._engine: sa.engine.Engine | None = None

    def where(self) -> str:
        url = sa.engine.make_url(self.url)
        if url.get_backend_name() == "sqlite":
            return str(self._lock_path())
        return f"advisory lock {ADVISORY_KEY} on {url.render_as_string(hide_password=True)}"

    def _lock_path(self) -> Path:
        db = sa.engine.make_url(self.url).database or "digest-memory"
        return Path(db + ".lock") if db != ":memory:" else Path("digest-memory.lock")

    def acquire(self) -> None:
        url = sa.engine.make_url(self.url)
        if url.get_backend_name() == "sqlite":
            self._file_lock = FileLock(str(self._lock_path()))
            try:
                self._file_lock.acquire(timeout=self.wait)
            except Timeout:
                raise LockHeldError(self._held()) from None
            return
        self._engine = sa.create_engine(self.url, poolclass=sa.pool.NullPool)
        try:
            self._conn = self._engine.connect()
            deadline = time.monotonic() + self.wait
            while True:
                got = self._conn.execute(
                    sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": ADVISORY_KEY}
                ).scalar()
                self._conn.commit()
                if got:
                    return
                if time.monotonic() >= deadline:
                    self.release()
                    raise LockHeldError(self._held())
                time.sleep(0.5)
        except sa.exc.DBAPIError as exc:
            self.release()
            reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
            raise StorageError(
                f"database {url.render_as_string(hide_password=True)}: {reason}; cannot take the "
                "scheduler lock: check that the database is reachable"
            ) from None

    def held(self) -> bool:
        """Whether this process still holds the lock: on PostgreSQL, whether the lock's session is
        alive and owns it (a file lock is never lost)."""
        if self._conn is None:
            return self._file_lock is not None
        try:
            found = self._conn.execute(
                sa.text(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = 0 "
                    "AND objid::bigint = :k AND objsubid = 1 AND granted AND pid = pg_backend_pid()"
                ),
                {"k": ADVISORY_KEY},
            ).scalar()
            self._conn.commit()
        except sa.exc.SQLAlchemyError:  # the session is gone: so is the lock
            return False
        return bool(found)

    def regain(self) -> None:
        """Take the lock again after losing it: LockHeldError if another scheduler has it now,
        StorageError if the database cannot be reached (try again later)."""
        self.release()
        wait, self.wait = self.wait, 0.0
        try:
            self.acquire()
        finally:
            self.wait = wait

    def _held(self) -> str:
        return (f"another digest scheduler (a daemon or a run) holds {self.where()}; stop it, or pass "
                "--wait SECONDS to wait for it")  # fmt: skip

    def release(self) -> None:
        if self._file_lock is not None:
            self._file_lock.release()
            self._file_lock = None
        if self._conn is not None:
            try:
                self._conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": ADVISORY_KEY})
                self._conn.commit()
            except sa.exc.SQLAlchemyError:
                pass  # the session is gone (a restart, a terminated backend), and the lock with it
            finally:
                with contextlib.suppress(sa.exc.SQLAlchemyError):
                    self._conn.close()
                self._conn = None
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    def __enter__(self) -> SchedulerLock:
        self.acquire()
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()
