"""Feeds: their HTTP and polling state, who polls which (claims), and a poll's writes."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, fields
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from digest.model.records import (
    FORGOTTEN_ON_NEW_URL,
    FeedState,
    FetchWrite,
)
from digest.storage.base import (
    claim_rules,
)
from digest.storage.entries import EntriesMixin
from digest.storage.schema import (
    feeds,
)


class FeedsMixin(EntriesMixin):
    """A poll writes its feed's state and the entries it brought in one transaction: FeedsMixin
    builds on the entries' writes."""

    def sync_feeds(self, configured: Iterable[tuple[str, str]]) -> None:
        """Add configured feeds the store lacks; when a feed's URL changed, forget its HTTP state."""
        with self._safe(), self.engine.begin() as conn:
            known = {r.name: r.url for r in conn.execute(sa.select(feeds.c.name, feeds.c.url))}
            for name, url in configured:
                if name not in known:
                    conn.execute(feeds.insert().values(name=name, url=url, error_count=0))
                elif known[name] != url:
                    conn.execute(
                        feeds.update().where(feeds.c.name == name).values(url=url, **FORGOTTEN_ON_NEW_URL)
                    )

    def feed_states(self) -> dict[str, FeedState]:
        cols = [f.name for f in fields(FeedState)]
        with self._safe(), self.engine.connect() as conn:
            rows = conn.execute(sa.select(*[feeds.c[c] for c in cols])).mappings()
            return {r["name"]: FeedState(**r) for r in rows}

    @staticmethod
    def _write_states(conn: Connection, states: Sequence[tuple[FeedState, int | None]]) -> None:
        if not states:
            return
        # the poll is written: its lease (claim_feeds) ends here
        rows = [
            asdict(state) | {"http_status": http_status, "claimed_by": None, "claimed_until": None}
            for state, http_status in states
        ]
        for row in rows:
            row["feed_name"] = row.pop("name")  # bind names must not be column names in an UPDATE
        columns = [c for c in rows[0] if c != "feed_name"]
        stmt = (
            feeds.update()
            .where(feeds.c.name == sa.bindparam("feed_name"))
            .values({c: sa.bindparam(c) for c in columns})
        )
        conn.execute(stmt, rows)

    def claim_feeds(
        self, seen: Mapping[str, datetime | None], owner: str, clock: datetime, lease: float
    ) -> set[str]:
        """Lease feeds to `owner` for one poll, until clock + lease or until the poll is written
        -> the names now ours. `seen`: each feed's last_fetched as the caller read it; a feed
        polled since (by another daemon) or leased to another poller stays theirs, so each feed
        is fetched once per interval however many daemons share the database."""
        f = feeds.c
        until = clock + timedelta(seconds=lease)
        ours: set[str] = set()
        with self._writing() as conn:
            for name, last in sorted(seen.items()):
                result = conn.execute(
                    feeds.update()
                    .where(
                        f.name == name,
                        f.last_fetched.is_not_distinct_from(last),
                        sa.or_(f.claimed_by.is_(None), f.claimed_by == owner, f.claimed_until < clock),
                    )
                    .values(claimed_by=owner, claimed_until=until)
                )
                if result.rowcount == 1:
                    ours.add(name)
        return ours

    def record_fetches(self, batch: Sequence[FetchWrite]) -> list[tuple[int, int]]:
        """Several feeds' results in one transaction (group commit) -> [(new, updated)]."""
        with self._safe(), self.engine.begin() as conn:
            out = []
            judged_by = {v.rules_hash for w in batch for v in (w.verdicts or {}).values()}
            # verdicts made by rules other than the store's are dropped: organise judges again
            current = all(claim_rules(conn, h) for h in judged_by)
            for w in batch:
                verdicts = (w.verdicts or {}) if current else {}
                new, updated, marked = self._upsert_entries(conn, w.state.name, w.entries, w.now, verdicts)
                out.append((new, updated))
                if verdicts:
                    self._write_verdicts(conn, w.state.name, verdicts, w.now, marked)
            # the feeds' states in one executemany (per-statement overhead dominated warm runs)
            self._write_states(conn, [(w.state, w.http_status) for w in batch])
            served = [
                {"feed_name": w.state.name, "ids": [e.entry_id for e in w.entries]}
                for w in batch
                if w.entries
            ]
            if served:
                conn.execute(
                    feeds.update()
                    .where(feeds.c.name == sa.bindparam("feed_name"))
                    .values(current_entries=sa.bindparam("ids", type_=sa.JSON)),
                    served,
                )
            return out
