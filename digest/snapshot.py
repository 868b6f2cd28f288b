"""The feeds' states read straight from a SQLite file, before SQLAlchemy is imported.

`digest fetch` needs them to send its workers their feeds; SQLAlchemy's import and opening the
store were 0.15 s of every run's critical path. With this read (the standard library's sqlite3,
a few milliseconds) the workers start while the main process opens the store beside them.

The one read outside store.py: it mirrors Store.sync_feeds followed by Store.feed_states, for a
SQLite database at the current schema revision only, and the tests hold the two to the same
answers. Anything else (PostgreSQL, an older schema, a URL with options, a read error) gives
None, and the caller opens the store first as before. Read-only: nothing is written here.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from contextlib import closing
from dataclasses import fields, replace
from datetime import UTC, datetime
from pathlib import Path

from .records import FORGOTTEN_ON_NEW_URL, FeedState

_COLUMNS = [f.name for f in fields(FeedState)]
_TIMES = {"last_fetched", "last_ok", "next_poll"}


def _sqlite_path(url: str) -> Path | None:
    prefix = "sqlite:///"
    if not url.startswith(prefix) or "?" in url or url == prefix + ":memory:":
        return None
    return Path(url[len(prefix) :])


def _time(value: str | None) -> datetime | None:
    # SQLAlchemy's SQLite DATETIME text, naive UTC (schema.UTCDateTime)
    return None if value is None else datetime.fromisoformat(value).replace(tzinfo=UTC)


def feed_states(
    url: str, configured: Iterable[tuple[str, str]], revision: str
) -> dict[str, FeedState] | None:
    """The states Store.feed_states would give after Store.sync_feeds(configured), or None."""
    path = _sqlite_path(url)
    if path is None:
        return None
    configured = list(configured)
    if not path.exists():  # a new database: every feed starts afresh
        return {name: FeedState(name, feed_url) for name, feed_url in configured}
    states = {}
    try:
        with closing(sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True, timeout=5)) as conn:
            if conn.execute("SELECT version_num FROM alembic_version").fetchone() != (revision,):
                return None  # the store migrates it first
            for row in conn.execute(f"SELECT {', '.join(_COLUMNS)} FROM feeds"):
                data = dict(zip(_COLUMNS, row, strict=True))
                for key in _TIMES:
                    data[key] = _time(data[key])
                states[data["name"]] = FeedState(**data)
    except (sqlite3.Error, ValueError, TypeError):
        return None
    for name, feed_url in configured:  # what sync_feeds does
        known = states.get(name)
        if known is None:
            states[name] = FeedState(name, feed_url)
        elif known.url != feed_url:
            states[name] = replace(known, url=feed_url, **FORGOTTEN_ON_NEW_URL)
    return states
