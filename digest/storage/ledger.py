"""The delivery ledger's two hot writes, a batch per statement: claiming rows before they are
sent and marking them after. A send run of 10,000 digests makes these calls a few thousand
times, so each is a fixed handful of statements whatever the batch's size (built once, with
bind parameters: SQLAlchemy compiles each construct once and reuses it from its cache), not a
handful per row."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from digest.storage.base import insert_ignore
from digest.storage.schema import deliveries, sent_stories

d, ss = deliveries, sent_stories

# A row is ours to claim when it is pending or failed, and unclaimed, already ours, or its
# holder's lease has run out (a crashed sender). A conditional UPDATE re-checks its WHERE on the
# newest row after any wait (PostgreSQL, READ COMMITTED); on SQLite the caller holds the write lock.
_CLAIM = (
    d.update()
    .where(
        d.c.subscriber_id == sa.bindparam("sid"),
        d.c.period == sa.bindparam("per"),
        d.c.state.in_(("pending", "failed")),
        sa.or_(
            d.c.claimed_by.is_(None),
            d.c.claimed_by == sa.bindparam("owner"),
            d.c.claimed_until < sa.bindparam("clock"),
        ),
    )
    .values(
        state="pending",
        attempts=d.c.attempts + 1,
        story_ids=sa.bindparam("stories"),
        assembled_at=sa.bindparam("at"),
        message_id=sa.bindparam("mid"),  # fixed per (subscriber, period): a re-send is the same message
        claimed_by=sa.bindparam("owner"),
        claimed_until=sa.bindparam("until"),
    )
)


def claim(
    conn: Connection,
    fresh: Sequence[dict[str, object]],
    owner: str,
    clock: datetime,
    lease: float,
) -> dict[tuple[object, object], bool]:
    """`fresh`: deliveries rows (already inserted if missing) in subscriber order -> for each
    (subscriber, period), whether it is now `owner`'s. One UPDATE per row: its rowcount says
    whether that row was claimable, which an executemany cannot tell row by row."""
    until = clock + timedelta(seconds=lease)
    claimed: dict[tuple[object, object], bool] = {}
    for row in fresh:
        params = {
            "sid": row["subscriber_id"],
            "per": row["period"],
            "owner": owner,
            "clock": clock,
            "stories": row["story_ids"],
            "at": row["assembled_at"],
            "mid": row["message_id"],
            "until": until,
        }
        claimed[(row["subscriber_id"], row["period"])] = conn.execute(_CLAIM, params).rowcount == 1
    return claimed


def finish(conn: Connection, batch: Sequence[tuple[int, str, str, str | None]], now: datetime) -> None:
    """(subscriber, period, state, error) for several deliveries: their states, and for those
    sent, their stories recorded as sent to the subscriber (never twice: the primary key)."""
    if not batch:
        return
    keys = sorted({(sid, period) for sid, period, _, _ in batch})
    found = {
        (sid, period): (rid, story_ids)
        for rid, sid, period, story_ids in conn.execute(
            sa.select(d.c.id, d.c.subscriber_id, d.c.period, d.c.story_ids).where(
                sa.tuple_(d.c.subscriber_id, d.c.period).in_(keys)
            )
        ).tuples()
    }
    conn.execute(
        d.update()
        .where(d.c.id == sa.bindparam("rid"))
        .values(
            state=sa.bindparam("st"),
            last_error=sa.bindparam("err"),
            sent_at=sa.bindparam("at"),
            claimed_by=None,
            claimed_until=None,
        ),
        [
            {
                "rid": found[(sid, period)][0],
                "st": state,
                "err": error,
                "at": now if state == "sent" else None,
            }
            for sid, period, state, error in batch
        ],
    )
    sent = {
        (sid, story): found[(sid, period)][0]
        for sid, period, state, _ in batch
        if state == "sent"
        for story in found[(sid, period)][1] or ()
    }
    if sent:
        insert = insert_ignore(conn, ss, ["subscriber_id", "story_id"])
        conn.execute(
            insert,
            [
                {"subscriber_id": sid, "story_id": story, "delivery_id": rid}
                for (sid, story), rid in sent.items()
            ],
        )
