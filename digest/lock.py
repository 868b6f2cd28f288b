"""One scheduler per database: a file lock beside a SQLite file, an advisory lock on PostgreSQL.

A daemon holds it for its whole life; `digest run --once` holds it for one run. A second holder
is refused at once (LockHeldError, exit code 4) or waits (`--wait`). PostgreSQL releases an
advisory lock when its session ends, so a crashed holder never blocks the next one (notes §1.2).
"""

from __future__ import annotations

import time
from pathlib import Path
from types import TracebackType
from typing import Any

import sqlalchemy as sa

from .errors import LockHeldError

ADVISORY_KEY = 0x5C0D16E5  # "SCO digest": one lock id for every digest scheduler on a database


class SchedulerLock:
    def __init__(self, database_url: str, *, wait: float = 0.0) -> None:
        self.url = database_url
        self.wait = wait
        self._file_lock: Any = None
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
            from filelock import FileLock, Timeout

            self._file_lock = FileLock(str(self._lock_path()))
            try:
                self._file_lock.acquire(timeout=self.wait)
            except Timeout:
                raise LockHeldError(self._held()) from None
            return
        self._engine = sa.create_engine(self.url, poolclass=sa.pool.NullPool)
        self._conn = self._engine.connect()
        deadline = time.monotonic() + self.wait
        while True:
            got = self._conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": ADVISORY_KEY}).scalar()
            self._conn.commit()
            if got:
                return
            if time.monotonic() >= deadline:
                self.release()
                raise LockHeldError(self._held())
            time.sleep(0.5)

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
            finally:
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
