"""`Digest`: digest as a library. The CLI, the daemon and the web app are doors over this.

    with Digest("feeds.yaml") as d:
        d.fetch()                   # poll the feeds, store and judge what they bring
        d.organise()                # judge what is left, fold into stories
        for s in d.stories(): ...   # the selected entries and their stories
        d.send_due()                # every digest due now, each exactly once

One store (one database engine) for the object's lifetime, opened and migrated on first use.
Errors are `digest.DigestError`s whose message is one line naming the thing and the fix.
"""

from __future__ import annotations

import asyncio
import email.utils
import os
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Self

from digest.config import LoadedConfig, load_config
from digest.errors import DigestError, SubscriberError
from digest.feeds.workers import utcnow
from digest.mail.render import domain_of, plain_message
from digest.mail.transports import make_transport
from digest.model.records import FeedReport, FetchSummary, StoredEntry
from digest.model.schedule import current_period
from digest.model.stories import StoryView
from digest.model.subscribers import (
    CONFIRM_MAX_AGE,
    PREFERENCE_FIELDS,
    Subscriber,
    address_key,
    make_subscriber,
    normalise_email,
    read_csv,
)
from digest.service import subscriptions, views
from digest.service.bounces import BounceSummary, process_bounces
from digest.service.compose import DigestMaker, Prepared
from digest.service.fetching import FetchOptions, fetch_feeds
from digest.service.lookup import search_stories
from digest.service.organising import OrganiseSummary, organise
from digest.service.sending import SendReport, send_due
from digest.storage.store import Store

Clock = Callable[[], datetime]


class Digest:
    """One configuration and its database. Not thread-safe for `fetch` (it runs an event loop)."""

    def __init__(
        self, config: LoadedConfig | str | os.PathLike[str] | None = None, *, clock: Clock = utcnow
    ) -> None:
        """`config`: a loaded config, or the path of a feeds.yaml (None: $DIGEST_CONFIG,
        ./feeds.yaml, then the built-in one)."""
        self.config = config if isinstance(config, LoadedConfig) else load_config(config)
        self.clock = clock
        self._store: Store | None = None

    @property
    def store(self) -> Store:
        """The store, opened (and migrated) on first use."""
        if self._store is None:
            self._store = Store(self.config.database_url)
        return self._store

    def reconfigure(self, config: LoadedConfig) -> None:
        """Use a new configuration of the same database (the daemon's reload)."""
        if config.database_url != self.config.database_url:
            raise DigestError("the database cannot change while running; restart for that")
        self.config = config

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- feeds and stories -----------------------------------------------------------------------

    def fetch(
        self,
        options: FetchOptions | None = None,
        *,
        on_report: Callable[[FeedReport], None] | None = None,
        on_start: Callable[[int], None] | None = None,
    ) -> FetchSummary:
        """Poll the feeds (`options`: one feed, only those due, ...) and store what they bring.
        One bad feed never stops the run: its report says what went wrong."""
        return asyncio.run(
            fetch_feeds(
                self.config, self.store, options, clock=self.clock, on_report=on_report, on_start=on_start
            )
        )

    def feeds(self) -> list[views.FeedHealth]:
        """Every configured feed with its poll state (last result, errors, next poll) and entries."""
        return views.feed_health(self.config, self.store)

    def organise(self) -> OrganiseSummary:
        """Judge what is new (everything, if the rules changed) and fold it into stories."""
        return organise(self.config, self.store, clock=self.clock)

    def entries(
        self, *, feed: str | None = None, since: datetime | None = None, limit: int | None = None
    ) -> list[StoredEntry]:
        """Stored entries, oldest first (newest first when `limit` is given)."""
        store = self.store
        # a feed removed from the config keeps its entries: only a name unknown to both is an error
        configured = {f.name for f in self.config.config.feeds}
        if feed is not None and feed not in configured and not store.entry_counts().get(feed):
            self.config.config.feed(feed)  # raises, naming the feed and where to look
        return list(store.iter_entries(feed=feed, since=since, limit=limit, newest_first=limit is not None))

    def stories(self, *, include_all: bool = False) -> list[dict[str, Any]]:
        """The selected entries with their stories (organised first), one record each; with
        `include_all`, every judged entry, `relevant: false` on the rest."""
        self.organise()
        return views.story_records(self.config, self.store, include_all=include_all)

    def search(self, words: str, *, limit: int = 50) -> list[StoryView]:
        """The stories whose reports have all the words, best first (organised first)."""
        self.organise()
        return search_stories(self.config, self.store, words, limit=limit)

    def explain(self, ref: str) -> views.Explanation:
        """Why the entry `ref` (id, link or GUID) was selected or not, and its story."""
        self.organise()
        return views.explain(self.config, self.store, ref)

    def try_rules(
        self, entries: Sequence[Any] | None = None, *, since: datetime | None = None
    ) -> list[views.RuleTrial]:
        """What the current rules make of `entries` (e.g. a feed's), or of the stored entries first
        seen since `since`. Nothing is stored."""
        if entries is not None:
            return views.try_rules_on(self.config, entries)
        return views.try_rules_on_store(self.config, self.store, since)

    # -- subscribers -----------------------------------------------------------------------------

    def subscribers(self) -> list[Subscriber]:
        return self.store.list_subscribers()

    def subscribe(self, email: str, **preferences: Any) -> tuple[Subscriber, bool]:
        """Add a subscriber, or change the given preferences of an existing one (the rest stay).
        -> (the subscriber as stored, whether it is new)."""
        given = {k: v for k, v in preferences.items() if v is not None}
        unknown = sorted(set(given) - set(PREFERENCE_FIELDS))
        if unknown:
            raise SubscriberError(f"subscriber {email}: unknown preference(s) {', '.join(unknown)}")
        address = normalise_email(email, where="subscriber")
        found = self.store.list_subscribers(email=address)
        base: dict[str, Any] = {}
        if found:
            old = found[0]
            base = {k: getattr(old, k) for k in ("name", "status", *PREFERENCE_FIELDS)}
            address = old.email  # the address as first stored
        data = {**base, **given, "email": address}
        if given.get("weekday") is not None and data.get("cadence") != "weekly":
            raise SubscriberError(
                f"--weekday {given['weekday']}: a weekday is for weekly digests; add --cadence weekly"
            )
        if data.get("cadence") != "weekly":
            data["weekday"] = None
        sub = make_subscriber(data, where="subscriber")
        self.check_topics_and_tags([sub], "subscriber")
        _, created = self.store.add_subscriber(sub, self.clock())
        return sub, created

    def import_subscribers(self, path: Path) -> tuple[int, int]:
        """Add or update subscribers from a CSV file; nothing is stored if any row is bad.
        -> (added, updated)."""
        try:
            text = path.read_text(encoding="utf-8-sig")
        except OSError as exc:
            raise DigestError(f"{path}: cannot read it ({exc.strerror})") from None
        except UnicodeDecodeError as exc:
            raise SubscriberError(
                f"{path}: not UTF-8 (byte {exc.object[exc.start]:#04x} at offset {exc.start}); "
                "save it as UTF-8 (in a spreadsheet: CSV UTF-8) and import again"
            ) from None
        subs = read_csv(text, str(path))
        self.check_topics_and_tags(subs, str(path) + ":")
        created = self.store.add_subscribers(subs, self.clock())
        return created, len(subs) - created

    def unsubscribe(self, email: str) -> None:
        """End a subscription as its unsubscribe link does: the row stays (a complaint on record
        stays too), and nothing more is mailed until they subscribe again."""
        address = normalise_email(email)
        found = self.store.list_subscribers(email=address)
        if not found or found[0].id is None:
            raise DigestError(f"no subscriber {address}; `digest subscribers list` shows them")
        subscriptions.unsubscribe(self.store, found[0].id, self.clock())

    def remove_subscriber(self, email: str) -> None:
        """Remove a subscriber and their delivery history (and so any complaint on record: added
        again, they are mailed again)."""
        address = normalise_email(email)
        if not self.store.remove_subscriber(address):
            raise DigestError(f"no subscriber {address}; `digest subscribers list` shows them")

    def check_topics_and_tags(self, subs: Sequence[Subscriber], where: str) -> None:
        """Topics and tags named by a subscriber must exist: a tag that matches nothing would leave
        them an empty digest for ever."""
        known_topics = [t.name for t in self.config.rules.topics]
        known_tags = [t.name for t in self.config.rules.tags]
        for sub in subs:
            bad = sorted(set(sub.topics) - set(known_topics))
            if bad:
                known = ", ".join(known_topics)
                unknown = ", ".join(bad)
                raise SubscriberError(f"{where} {sub.email}: unknown topic(s) {unknown}; known: {known}")
            bad = sorted(set(sub.tags) - set(known_tags))
            if bad:
                raise SubscriberError(
                    f"{where} {sub.email}: unknown tag(s) {', '.join(bad)}; known: {', '.join(known_tags)}"
                )

    # -- mail ------------------------------------------------------------------------------------

    def send_due(
        self,
        *,
        dry_run: bool = False,
        only: str | None = None,
        now: datetime | None = None,
        stopping: Callable[[], bool] | None = None,
    ) -> list[SendReport]:
        """Send every digest due now, each (subscriber, period) at most once, whoever else sends
        beside this (claims). Organises first; a dry run writes nothing (not even that)."""
        if not dry_run:
            self.organise()
        kwargs: dict[str, Any] = {"now": now or self.clock(), "dry_run": dry_run}
        if only is not None:
            kwargs["only"] = normalise_email(only)
        if stopping is not None:
            kwargs["stopping"] = stopping
        return asyncio.run(send_due(self.config, self.store, **kwargs))

    def read_bounces(
        self, *, now: datetime | None = None, stopping: Callable[[], bool] | None = None
    ) -> BounceSummary:
        """Read the bounce mailbox (`bounces:`) once: DSNs and complaints mark subscribers
        bouncing or complained, and each message is moved aside (service/bounces.py)."""
        return process_bounces(
            self.config, self.store, now=now or self.clock(), stopping=stopping or (lambda: False)
        )

    def unstored_config_subscribers(self) -> list[str]:
        """Subscribers listed in feeds.yaml but not yet stored (stored at the first real send)."""
        return [
            str(d["email"])
            for d in self.config.config.subscribers
            if not self.store.list_subscribers(email=normalise_email(str(d.get("email", ""))))
        ]

    def preview(self, email: str | None = None, *, part: str | None = None) -> tuple[Subscriber, Prepared]:
        """The digest `email` (default: the first subscriber) would get now, rendered, without
        sending or recording anything. `part`: "html" or "text", whatever they read."""
        now = self.clock()
        loaded = self.config
        address = normalise_email(email) if email else None
        # subscribers from feeds.yaml not yet stored are previewed as they will be, and not stored
        configured = [
            make_subscriber(d, where=f"{loaded.source}: subscribers[{i}]")
            for i, d in enumerate(loaded.config.subscribers)
        ]
        subs = self.store.list_subscribers(email=address)
        if not subs:
            subs = [
                replace(c, id=0)
                for c in configured
                if not address or address_key(c.email) == address_key(address)
            ]
        if address and not subs:
            raise DigestError(f"no subscriber {email}; `digest subscribers list` shows them")
        sub = subs[0] if subs else Subscriber("preview@example.org", id=0)
        if part in ("html", "text"):
            sub = replace(sub, format=part)
        maker = DigestMaker(loaded, self.store, [sub.id] if sub.id else [], now)
        return sub, maker.prepare(sub, current_period(sub, now), now, readable=True)

    def mail_operator(self, address: str) -> None:
        """Mail `address` the operator's report: feeds failing for a day or more, the last day's sends."""
        now = self.clock()
        subject, text = views.operator_report(self.store, now)
        d = self.config.config.delivery
        msg_id = f"<operator.{now:%Y%m%d%H%M}@{domain_of(d.sender)}>"
        data = plain_message(
            sender=d.sender, recipient=address, subject=subject, text=text, msg_id=msg_id, date=now
        )
        transport = make_transport(d, self.config.base_dir)

        async def go() -> None:
            await transport.open()
            try:
                await transport.send(email.utils.parseaddr(d.sender)[1], address, data, msg_id)
            finally:
                await transport.close()

        asyncio.run(go())

    # -- the state of things ---------------------------------------------------------------------

    def status(self) -> views.Status:
        """Feeds (failing ones), subscribers (due now, next send), the last sends."""
        return views.status(self.config, self.store, self.clock())

    def housekeeping(self, retention: timedelta) -> tuple[int, int]:
        """Remove entries first seen longer ago than `retention` and sign-ups whose confirmation
        link has expired; tidy the database. -> (entries removed, sign-ups removed)."""
        now = self.clock()
        store = self.store
        pruned = store.prune_entries(now - retention)
        expired = store.remove_expired_pending(now - timedelta(seconds=CONFIRM_MAX_AGE))
        store.tidy()
        return pruned, expired

    def upgrade_database(self) -> tuple[str | None, str | None]:
        """Apply pending schema migrations. -> (revision before, revision after)."""
        store = Store(self.config.database_url, migrate=False)
        try:
            before = store.current_revision()
            store.upgrade()
            return before, store.current_revision()
        finally:
            store.close()
