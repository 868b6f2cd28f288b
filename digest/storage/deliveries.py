"""Deliveries: the ledger that makes each digest go out once (claims, leases, marks)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from digest.storage import ledger
from digest.storage.base import (
    StorageBase,
    chunks,
    insert_ignore,
)
from digest.storage.schema import (
    UTCDateTime,
    deliveries,
    sent_stories,
    subscribers,
)


class DeliveriesMixin(StorageBase):
    def delivery(self, subscriber_id: int, period: str) -> dict[str, Any] | None:
        q = sa.select(deliveries).where(
            deliveries.c.subscriber_id == subscriber_id, deliveries.c.period == period
        )
        with self._safe(), self.engine.connect() as conn:
            row = conn.execute(q).mappings().first()
            return dict(row) if row else None

    def ledger_states(self, periods: Sequence[str]) -> dict[tuple[int, str], str]:
        """The ledger state of these periods, by (subscriber, period): who is already done."""
        d = deliveries
        states: dict[tuple[int, str], str] = {}
        with self._safe(), self.engine.connect() as conn:
            for chunk in chunks(sorted(set(periods)), 500):
                q = sa.select(d.c.subscriber_id, d.c.period, d.c.state).where(d.c.period.in_(chunk))
                for sid, period, state in conn.execute(q).tuples():
                    states[(sid, period)] = state
        return states

    def last_digests(self, ids: Sequence[int]) -> dict[int, datetime]:
        """For these subscribers: when their last digest (sent or empty) was assembled."""
        d = deliveries
        last: dict[int, datetime] = {}
        with self._safe(), self.engine.connect() as conn:
            for chunk in chunks(sorted(set(ids)), 500):
                query = (
                    sa.select(d.c.subscriber_id, sa.func.max(d.c.assembled_at))
                    .where(d.c.state.in_(("sent", "empty")), d.c.subscriber_id.in_(chunk))
                    .group_by(d.c.subscriber_id)
                )
                for sid, t in conn.execute(query).tuples():
                    value = UTC_TYPE.process_result_value(t, conn.dialect)
                    if value is not None:
                        last[sid] = value
        return last

    def sent_stories(self, ids: Sequence[int], story_ids: Iterable[int]) -> dict[int, set[int]]:
        """For these subscribers: which of `story_ids` they were already sent (the ledger grows;
        a send run's window of stories does not)."""
        ss = sent_stories
        among = sorted(set(story_ids))
        sent: dict[int, set[int]] = {}
        if not among:
            return sent
        with self._safe(), self.engine.connect() as conn:
            for chunk in chunks(sorted(set(ids)), 500):
                q = sa.select(ss.c.subscriber_id, ss.c.story_id).where(
                    ss.c.subscriber_id.in_(chunk),
                    ss.c.story_id.in_(sa.bindparam("among", among, expanding=True)),
                )
                for sid, story in conn.execute(q).tuples():
                    sent.setdefault(sid, set()).add(story)
        return sent

    def claim_deliveries(
        self,
        batch: Sequence[tuple[int, str, str, Sequence[int], datetime]],
        owner: str,
        clock: datetime,
        lease: float,
    ) -> list[bool]:
        """Claim (subscriber, period, message id, stories, assembled at) for `owner` until
        clock + lease, in one transaction, before any of them is sent -> for each, True when it is
        now ours to send: its row is pending or failed, and unclaimed, ours, or its lease has run
        out (a crashed sender). Another sender's live claim, or a period already sent or empty,
        gives False. Rows are taken in subscriber order, so two senders never wait on each other
        in a circle (PostgreSQL)."""
        d = deliveries
        with self._writing() as conn:
            fresh = [
                {
                    "subscriber_id": sid,
                    "period": period,
                    "message_id": mid,
                    "state": "pending",
                    "attempts": 0,
                    "story_ids": list(story_ids),
                    "assembled_at": at,
                }
                for sid, period, mid, story_ids, at in sorted(batch, key=lambda b: (b[0], b[1]))
            ]
            if fresh:
                conn.execute(insert_ignore(conn, d, ["subscriber_id", "period"]), fresh)
            claimed = ledger.claim(conn, fresh, owner, clock, lease)
        return [claimed[(sid, period)] for sid, period, *_ in batch]

    def renew_claims(
        self, keys: Sequence[tuple[int, str]], owner: str, clock: datetime, lease: float
    ) -> set[tuple[int, str]]:
        """Extend `owner`'s claims on these pending rows to clock + lease -> the ones still ours
        (a claim whose lease ran out may have been taken over: it is no longer ours to send)."""
        d = deliveries
        kept: set[tuple[int, str]] = set()
        with self._writing() as conn:
            for sid, period in sorted(keys):
                result = conn.execute(
                    d.update()
                    .where(
                        d.c.subscriber_id == sid,
                        d.c.period == period,
                        d.c.state == "pending",
                        d.c.claimed_by == owner,
                    )
                    .values(claimed_until=clock + timedelta(seconds=lease))
                )
                if result.rowcount == 1:
                    kept.add((sid, period))
        return kept

    def release_claims(self, owner: str) -> int:
        """Let go of `owner`'s claims on rows it did not send (a run stopping early): the next
        sender need not wait for their lease to run out."""
        d = deliveries
        with self._safe(), self.engine.begin() as conn:
            result = conn.execute(
                d.update().where(d.c.claimed_by == owner).values(claimed_by=None, claimed_until=None)
            )
            return int(result.rowcount or 0)

    def finish_deliveries(self, batch: Sequence[tuple[int, str, str, str | None]], now: datetime) -> None:
        """(subscriber, period, state, error) for several deliveries, in one transaction."""
        with self._safe(), self.engine.begin() as conn:
            ledger.finish(conn, batch, now)

    def record_empty(self, subscriber_id: int, period: str, message_id: str, now: datetime) -> None:
        with self._safe(), self.engine.begin() as conn:
            conn.execute(
                insert_ignore(conn, deliveries, ["subscriber_id", "period"]).values(
                    subscriber_id=subscriber_id,
                    period=period,
                    message_id=message_id,
                    state="empty",
                    attempts=0,
                    story_ids=[],
                    assembled_at=now,
                )
            )

    def sent_digests(self, subscriber_id: int, *, limit: int, offset: int = 0) -> list[dict[str, Any]]:
        """One subscriber's sent digests, newest first, a page at a time (the web archive)."""
        d = deliveries.c
        q = (
            sa.select(d.period, d.story_ids, d.sent_at)
            .where(d.subscriber_id == subscriber_id, d.state == "sent")
            .order_by(d.period.desc())
            .limit(limit)
            .offset(offset)
        )
        with self._safe(), self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(q).mappings()]

    def deliveries_report(self, limit: int = 50) -> list[dict[str, Any]]:
        q = (
            sa.select(deliveries, subscribers.c.email)
            .join(subscribers, subscribers.c.id == deliveries.c.subscriber_id)
            .order_by(deliveries.c.id.desc())
            .limit(limit)
        )
        with self._safe(), self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(q).mappings()]


UTC_TYPE = UTCDateTime()
