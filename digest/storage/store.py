"""The one owner of SQL: `Store`, one mixin per domain (as lemon24/reader's storage is laid out).

SQLite by default (WAL, busy timeout); PostgreSQL supported. Every write that belongs together
happens in one transaction, so a crash leaves either the old state or the new one. Migrations
(Alembic, digest/storage/migrations) run when a Store is opened.
"""

from __future__ import annotations

from digest.storage.base import StorageBase
from digest.storage.bounces import BouncesMixin
from digest.storage.deliveries import DeliveriesMixin
from digest.storage.entries import EntriesMixin
from digest.storage.feeds import FeedsMixin
from digest.storage.stories import StoriesMixin
from digest.storage.subscribers import SubscribersMixin

__all__ = ["Store"]


class Store(
    FeedsMixin, EntriesMixin, StoriesMixin, SubscribersMixin, DeliveriesMixin, BouncesMixin, StorageBase
):
    """Owns every SQL statement. Thread-safe as SQLAlchemy engines are; no ORM sessions."""
