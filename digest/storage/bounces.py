"""The bounce mailbox's ledger and its effects on subscribers (the SQL of service/bounces.py).

A message's ledger row and its effect are written in one transaction: a message read twice (the
reader killed between that commit and moving the message aside) finds its row and does nothing.

    hard      -> bounces + 1; an active subscriber becomes `bouncing`
    soft      -> bounces + 1; an active subscriber becomes `bouncing` at delivery.bounce_limit
    complaint -> `complained`, whatever the status was: never mailed again (who is due reads
                 active subscribers only; store._upsert and confirm_subscriber keep it)

The counter is the one in-session 5xx replies count (Store.record_bounce), with the same limit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from digest.model.bounces import Effect, Report
from digest.storage.schema import bounce_reports, subscribers
from digest.storage.store import Store, _chunks, _insert_ignore


@dataclass(frozen=True, slots=True)
class Recorded:
    fresh: list[bool]  # per report: True when read for the first time (its effect applied now)
    changed: dict[int, str]  # subscriber id -> the status it now has, where it changed


def record_reports(
    store: Store, items: Sequence[tuple[Report, Sequence[Effect]]], now: datetime, bounce_limit: int
) -> Recorded:
    """Ledger rows for these reports and, for those not seen before, their effects: one
    transaction (SQLite: BEGIN IMMEDIATE, so two readers of one mailbox never both apply one)."""
    fresh: list[bool] = []
    with store._writing() as conn:
        involved = sorted({e.subscriber_id for _, effs in items for e in effs})
        before = _statuses(conn, involved)
        for report, effs in items:
            first = effs[0].subscriber_id if effs else None
            row = {
                "key": report.key,
                "outcome": report.outcome,
                "subscriber_id": first if first in before else None,
                "message_id": (report.message_id or "")[:998] or None,
                "note": report.note,
                "processed_at": now,
            }
            # RETURNING says whether this row went in: on PostgreSQL (psycopg 3) the rowcount of
            # this INSERT ... ON CONFLICT DO NOTHING came back -1; SQLite has RETURNING since 3.35
            insert = _insert_ignore(conn, bounce_reports, ["key"]).values(**row)
            new = conn.execute(insert.returning(bounce_reports.c.key)).first() is not None
            fresh.append(new)
            if new:
                for effect in effs:
                    if effect.subscriber_id in before:  # a subscriber removed since is nobody now
                        _apply(conn, effect, now, bounce_limit)
        after = _statuses(conn, involved)
    changed = {sid: status for sid, status in after.items() if before.get(sid) != status}
    return Recorded(fresh, changed)


def _apply(conn: Connection, effect: Effect, now: datetime, limit: int) -> None:
    c = subscribers.c
    where = subscribers.update().where(c.id == effect.subscriber_id)
    if effect.kind == "complaint":
        conn.execute(where.values(status="complained", updated_at=now))
        return
    # every SET expression reads the row as it was (SQL): `bounces + 1` is the new count
    goes = c.status == "active"
    if effect.kind == "soft":
        goes = sa.and_(goes, c.bounces + 1 >= limit)
    status = sa.case((goes, "bouncing"), else_=c.status)
    conn.execute(where.values(bounces=c.bounces + 1, status=status, updated_at=now))


def _statuses(conn: Connection, ids: Sequence[int]) -> dict[int, str]:
    out: dict[int, str] = {}
    for chunk in _chunks(list(ids), 500):
        q = sa.select(subscribers.c.id, subscribers.c.status).where(subscribers.c.id.in_(chunk))
        out.update((int(i), str(s)) for i, s in conn.execute(q).tuples())
    return out


def subscriber_ids(store: Store, addresses: Sequence[str]) -> dict[str, int]:
    """Subscriber ids by address (the local part's case aside, as Store looks addresses up)."""
    found: dict[str, int] = {}
    with store._safe(), store.engine.connect() as conn:
        for address in sorted(set(addresses)):
            sid = store._subscriber_id(conn, address)
            if sid is not None:
                found[address] = sid
    return found


def report_counts(store: Store, since: datetime | None = None) -> dict[str, int]:
    """Messages read from the bounce mailbox, by outcome (since a time, or ever)."""
    r = bounce_reports.c
    q = sa.select(r.outcome, sa.func.count()).group_by(r.outcome)
    if since is not None:
        q = q.where(r.processed_at >= since)
    with store._safe(), store.engine.connect() as conn:
        return {str(o): int(n) for o, n in conn.execute(q).tuples()}


def last_report_at(store: Store) -> datetime | None:
    with store._safe(), store.engine.connect() as conn:
        value = conn.execute(sa.select(sa.func.max(bounce_reports.c.processed_at))).scalar()
    return value if isinstance(value, datetime) else None  # max() keeps the column's type: aware UTC


def status_counts(store: Store) -> dict[str, int]:
    """Subscribers by status (the metrics' gauge, `digest status`)."""
    c = subscribers.c
    with store._safe(), store.engine.connect() as conn:
        return {
            str(s): int(n)
            for s, n in conn.execute(sa.select(c.status, sa.func.count()).group_by(c.status)).tuples()
        }
