"""The bounce mailbox's ledger and its effects on subscribers (the SQL of service/bounces.py).

A message's ledger row and its effect are written in one transaction: a message read twice (the
reader killed between that commit and moving the message aside) finds its row and does nothing.

    hard      -> bounces + 1; an active subscriber becomes `bouncing`
    soft      -> bounces + 1; an active subscriber becomes `bouncing` at delivery.bounce_limit
    complaint -> `complained`, whatever the status was: never mailed again (who is due reads
                 active subscribers only; _upsert and confirm_subscriber keep it)

The counter is the one in-session 5xx replies count (record_bounce), with the same limit.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from digest.model.bounces import Effect, Report
from digest.storage.base import StorageBase, chunks, insert_ignore
from digest.storage.schema import bounce_reports, subscribers
from digest.storage.subscribers import SubscribersMixin


@dataclass(frozen=True, slots=True)
class Recorded:
    fresh: list[bool]  # per report: True when read for the first time (its effect applied now)
    changed: dict[int, str]  # subscriber id -> the status it now has, where it changed


class BouncesMixin(StorageBase):
    def record_reports(
        self, items: Sequence[tuple[Report, Sequence[Effect]]], now: datetime, bounce_limit: int
    ) -> Recorded:
        """Ledger rows for these reports and, for those not seen before, their effects: one
        transaction (SQLite: BEGIN IMMEDIATE), whose INSERT ... ON CONFLICT DO NOTHING RETURNING
        says which rows went in, so two readers of one mailbox never both apply a report."""
        if not items:
            return Recorded([], {})
        with self._writing() as conn:
            involved = sorted({e.subscriber_id for _, effs in items for e in effs})
            before = _statuses(conn, involved)
            rows: dict[str, dict[str, object]] = {}
            for report, effs in items:
                first = effs[0].subscriber_id if effs else None
                rows.setdefault(
                    report.key,
                    {
                        "key": report.key,
                        "outcome": report.outcome,
                        "subscriber_id": first if first in before else None,
                        "message_id": (report.message_id or "")[:998] or None,
                        "note": report.note,
                        "processed_at": now,
                    },
                )
            # RETURNING names the rows that went in (SQLite has it since 3.35): the rowcount will
            # not do, for PostgreSQL (psycopg 3) reported -1 for an INSERT ... ON CONFLICT DO NOTHING
            insert = insert_ignore(conn, bounce_reports, ["key"]).values(list(rows.values()))
            inserted = set(conn.execute(insert.returning(bounce_reports.c.key)).scalars())
            fresh: list[bool] = []
            tally: dict[int, Counter[str]] = {}
            for report, effs in items:
                new = report.key in inserted
                inserted.discard(report.key)  # the same message twice in one batch: the first counts
                fresh.append(new)
                for effect in effs if new else ():
                    if effect.subscriber_id in before:  # a subscriber removed since is nobody now
                        tally.setdefault(effect.subscriber_id, Counter())[effect.kind] += 1
            _apply(conn, tally, now, bounce_limit)
            after = _statuses(conn, involved)
        changed = {sid: status for sid, status in after.items() if before.get(sid) != status}
        return Recorded(fresh, changed)

    def subscriber_ids(self, addresses: Sequence[str]) -> dict[str, int]:
        """Subscriber ids by address (the local part's case aside, as subscribers are looked up):
        the exact forms in one query, then each one left over by its address key."""
        wanted = sorted(set(addresses))
        found: dict[str, int] = {}
        c = subscribers.c
        with self._safe(), self.engine.connect() as conn:
            for chunk in chunks(wanted, 500):
                q = sa.select(c.email, c.id).where(c.email.in_(chunk))
                found.update((str(e), int(i)) for e, i in conn.execute(q).tuples())
            for address in wanted:
                if address not in found:
                    sid = SubscribersMixin._subscriber_id(conn, address)
                    if sid is not None:
                        found[address] = sid
        return found

    def bounce_report_counts(self, since: datetime | None = None) -> dict[str, int]:
        """Messages read from the bounce mailbox, by outcome (since a time, or ever)."""
        r = bounce_reports.c
        q = sa.select(r.outcome, sa.func.count()).group_by(r.outcome)
        if since is not None:
            q = q.where(r.processed_at >= since)
        with self._safe(), self.engine.connect() as conn:
            return {str(o): int(n) for o, n in conn.execute(q).tuples()}

    def last_bounce_report(self) -> datetime | None:
        """When the bounce mailbox last had a message read."""
        with self._safe(), self.engine.connect() as conn:
            value = conn.execute(sa.select(sa.func.max(bounce_reports.c.processed_at))).scalar()
        return value if isinstance(value, datetime) else None  # max() keeps the column's type: aware UTC

    def status_counts(self) -> dict[str, int]:
        """Subscribers by status (the metrics' gauge)."""
        c = subscribers.c
        q = sa.select(c.status, sa.func.count()).group_by(c.status)
        with self._safe(), self.engine.connect() as conn:
            return {str(s): int(n) for s, n in conn.execute(q).tuples()}


def _apply(conn: Connection, tally: dict[int, Counter[str]], now: datetime, limit: int) -> None:
    """Each subscriber's reports of this batch in one UPDATE (an executemany over subscribers)."""
    if not tally:
        return
    c = subscribers.c
    added = sa.bindparam("added", type_=sa.Integer)
    # every SET expression reads the row as it was (SQL): `bounces + added` is the new count
    status = sa.case(
        (sa.bindparam("complained", type_=sa.Boolean), "complained"),
        (
            sa.and_(
                c.status == "active",
                sa.or_(sa.bindparam("hard", type_=sa.Boolean), c.bounces + added >= limit),
            ),
            "bouncing",
        ),
        else_=c.status,
    )
    conn.execute(
        subscribers.update()
        .where(c.id == sa.bindparam("sid"))
        .values(bounces=c.bounces + added, status=status, updated_at=now),
        [
            {
                "sid": sid,
                "added": kinds["hard"] + kinds["soft"],
                "hard": kinds["hard"] > 0,
                "complained": kinds["complaint"] > 0,
            }
            for sid, kinds in sorted(tally.items())
        ],
    )


def _statuses(conn: Connection, ids: Sequence[int]) -> dict[int, str]:
    out: dict[int, str] = {}
    for chunk in chunks(list(ids), 500):
        q = sa.select(subscribers.c.id, subscribers.c.status).where(subscribers.c.id.in_(chunk))
        out.update((int(i), str(s)) for i, s in conn.execute(q).tuples())
    return out
