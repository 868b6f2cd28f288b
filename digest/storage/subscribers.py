"""Subscribers: who they are, what they asked for, their status and salts."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, RowMapping

from digest.model.subscribers import Subscriber, address_key
from digest.storage.base import (
    SUB_FIELDS,
    StorageBase,
    chunks,
)
from digest.storage.schema import (
    subscribers,
)


class SubscribersMixin(StorageBase):
    @staticmethod
    def _subscriber_id(conn: Connection, email: str) -> int | None:
        """The subscriber with this address, its local part's case aside (`Reader@example.com`
        is reader@example.com): the exact form first (the unique index), then the same key.

        Until the table has a normalised key column, the second look-up compares in Python: SQL
        lower() folds only ASCII on SQLite and follows the collation on PostgreSQL, so it would
        not agree with address_key on both. Candidates are the rows of the same length whose
        ASCII-lowered form matches (both engines lower ASCII alike)."""
        c = subscribers.c
        found = conn.execute(sa.select(c.id).where(c.email == email)).scalar()
        if found is not None:
            return int(found)
        key = address_key(email)
        ascii_lower = "".join(ch.lower() if ch.isascii() else ch for ch in email)
        q = sa.select(c.id, c.email).where(sa.func.length(c.email) == len(email))
        if email.isascii():
            q = q.where(sa.func.lower(c.email) == ascii_lower)
        else:
            q = q.where(c.email.endswith("@" + email.rpartition("@")[2], autoescape=True))
        for i, e in conn.execute(q.order_by(c.id)).tuples():
            if address_key(e) == key:
                return int(i)
        return None

    def add_subscriber(self, sub: Subscriber, now: datetime, *, update: bool = True) -> tuple[int, bool]:
        """Insert, or (with update) replace the preferences of, the subscriber with that address.
        -> (id, created)."""
        with self._safe(), self.engine.begin() as conn:
            return self._upsert(conn, sub, now, self._subscriber_id(conn, sub.email), update=update)

    @staticmethod
    def _upsert(
        conn: Connection, sub: Subscriber, now: datetime, known: int | None, *, update: bool
    ) -> tuple[int, bool]:
        """Insert `sub`, or (with update) write its preferences over subscriber `known`."""
        values = _subscriber_row(sub)
        c = subscribers.c
        if known is None:
            q = subscribers.insert().values(**values, created_at=now, updated_at=now, salt=new_salt())
            key = conn.execute(q).inserted_primary_key
            assert key is not None
            return int(key[0]), True
        if update:
            values.pop("email")  # the address as first stored
            # subscribing again after leaving is a new subscription: the old one's links die
            renewed = sa.case((c.status == "unsubscribed", new_salt()), else_=c.salt)
            # a complaint (ARF) is for good: an import or `subscribers add` never mails them again
            values["status"] = sa.case((c.status == "complained", "complained"), else_=values["status"])
            conn.execute(
                subscribers.update().where(c.id == known).values(**values, salt=renewed, updated_at=now)
            )
        return known, False

    def subscriber_salts(self, ids: Sequence[int]) -> dict[int, str]:
        """The salt of each of these subscriptions (signed into their links: tokens.py)."""
        c = subscribers.c
        found: dict[int, str] = {}
        with self._safe(), self.engine.connect() as conn:
            for chunk in chunks(sorted(set(ids)), 500):
                found.update(conn.execute(sa.select(c.id, c.salt).where(c.id.in_(chunk))).tuples().all())
        return found

    def add_subscribers(self, subs: Sequence[Subscriber], now: datetime) -> int:
        """Insert or update many (a CSV import) in one transaction. -> how many were new.
        The addresses' keys are read once: a look-up per row would scan the table per row."""
        with self._safe(), self.engine.begin() as conn:
            known = {
                address_key(e): int(i)
                for i, e in conn.execute(sa.select(subscribers.c.id, subscribers.c.email)).tuples()
            }
            created = 0
            for sub in subs:
                key = address_key(sub.email)
                known[key], new = self._upsert(conn, sub, now, known.get(key), update=True)
                created += new
            return created

    def list_subscribers(self, *, status: str | None = None, email: str | None = None) -> list[Subscriber]:
        q = sa.select(subscribers).order_by(subscribers.c.id)
        if status:
            q = q.where(subscribers.c.status == status)
        with self._safe(), self.engine.connect() as conn:
            if email:
                q = q.where(subscribers.c.id == self._subscriber_id(conn, email))
            return [_subscriber(r) for r in conn.execute(q).mappings()]

    def schedules(self, *, status: str = "active", email: str | None = None) -> list[Subscriber]:
        """Subscribers with only what deciding who is due needs (id, address, cadence, time, zone)."""
        c = subscribers.c
        q = sa.select(c.id, c.email, c.cadence, c.weekday, c.send_time, c.timezone, c.quiet_hours).where(
            c.status == status
        )
        with self._safe(), self.engine.connect() as conn:
            if email:
                q = q.where(c.id == self._subscriber_id(conn, email))
            return [
                Subscriber(email=e, cadence=cad, weekday=wd, send_time=t, timezone=tz, quiet_hours=qh, id=i)
                for i, e, cad, wd, t, tz, qh in conn.execute(q.order_by(c.id)).tuples()
            ]

    def subscriber(self, subscriber_id: int) -> Subscriber | None:
        found = self.subscribers_by_id([subscriber_id])
        return found[0] if found else None

    def save_preferences(self, subscriber_id: int, sub: Subscriber, now: datetime) -> None:
        """New preferences (the address and status stay)."""
        values = {k: v for k, v in _subscriber_row(sub).items() if k not in ("email", "status")}
        with self._safe(), self.engine.begin() as conn:
            conn.execute(
                subscribers.update().where(subscribers.c.id == subscriber_id).values(**values, updated_at=now)
            )

    def subscribers_by_id(self, ids: Sequence[int]) -> list[Subscriber]:
        out: list[Subscriber] = []
        with self._safe(), self.engine.connect() as conn:
            for chunk in chunks(sorted(set(ids)), 500):
                q = sa.select(subscribers).where(subscribers.c.id.in_(chunk)).order_by(subscribers.c.id)
                out.extend(_subscriber(r) for r in conn.execute(q).mappings())
        return out

    def remove_subscriber(self, email: str) -> bool:
        with self._safe(), self.engine.begin() as conn:
            found = self._subscriber_id(conn, email)
            return bool(conn.execute(subscribers.delete().where(subscribers.c.id == found)).rowcount)

    def set_status(self, subscriber_id: int, status: str, now: datetime) -> None:
        with self._safe(), self.engine.begin() as conn:
            conn.execute(
                subscribers.update()
                .where(subscribers.c.id == subscriber_id)
                .values(status=status, updated_at=now)
            )

    def subscriber_stamp(self, subscriber_id: int) -> datetime | None:
        """When the subscriber's row last changed (None: no such row)."""
        q = sa.select(subscribers.c.updated_at).where(subscribers.c.id == subscriber_id)
        with self._safe(), self.engine.connect() as conn:
            return conn.execute(q).scalar()

    def confirm_subscriber(self, subscriber_id: int, stamp: datetime, sub: Subscriber, now: datetime) -> bool:
        """Activate with `sub`'s preferences, only if the row is as it was at `stamp` (it has not
        changed since the link was made: a link used once, or overtaken, does nothing). -> done."""
        c = subscribers.c
        values: dict[str, Any] = {k: v for k, v in _subscriber_row(sub).items() if k != "email"}
        # a subscription that had ended starts anew: links signed for the old one die with it
        renewed = sa.case((c.status == "unsubscribed", new_salt()), else_=c.salt)
        values.update(status="active", bounces=0, updated_at=now, salt=renewed)
        with self._safe(), self.engine.begin() as conn:
            # a confirmation link made before a complaint came back does nothing
            q = (
                subscribers.update()
                .where(c.id == subscriber_id, c.updated_at == stamp, c.status != "complained")
                .values(**values)
            )
            return bool(conn.execute(q).rowcount)

    def remove_expired_pending(self, changed_before: datetime) -> int:
        """Delete sign-ups never confirmed whose link has expired. -> how many."""
        c = subscribers.c
        q = subscribers.delete().where(c.status == "pending", c.updated_at < changed_before)
        with self._safe(), self.engine.begin() as conn:
            return int(conn.execute(q).rowcount)

    def record_bounce(self, subscriber_id: int, limit: int, now: datetime) -> str:
        """One more permanent failure; the subscriber is marked bouncing at `limit`. -> status."""
        with self._writing() as conn:  # read then write: no other writer in between
            row = conn.execute(
                sa.select(subscribers.c.bounces, subscribers.c.status).where(
                    subscribers.c.id == subscriber_id
                )
            ).one()
            bounces = row.bounces + 1
            # only an active subscription turns bouncing: a complaint (or an unsubscription) stays
            status = "bouncing" if bounces >= limit and row.status == "active" else row.status
            conn.execute(
                subscribers.update()
                .where(subscribers.c.id == subscriber_id)
                .values(bounces=bounces, status=status, updated_at=now)
            )
            return str(status)


def new_salt() -> str:
    """A subscription's salt: 16 random bytes, as 32 hex digits."""
    return secrets.token_hex(16)


def _subscriber_row(sub: Subscriber) -> dict[str, Any]:
    row = {k: getattr(sub, k) for k in SUB_FIELDS}
    row["topics"], row["tags"] = list(sub.topics), list(sub.tags)
    return row


def _subscriber(r: RowMapping) -> Subscriber:
    return Subscriber(
        **{k: r[k] for k in SUB_FIELDS if k not in ("topics", "tags")},
        topics=tuple(r["topics"]),
        tags=tuple(r["tags"]),
        id=r["id"],
        bounces=r["bounces"],
    )
