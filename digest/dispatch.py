"""The send loop: who is due, what their digest holds, and the ledger that makes it exactly once.

    store.list_subscribers(active) | schedule.current_period    # pure: due or not
    | compose.assemble (stories since their last digest, minus those already sent)
    | render.Renderer (templates, CSS inlined) | render.build_message
    | store.begin_delivery (pending, Message-ID fixed per subscriber and period)
    | transport.send
    | store.finish_delivery (sent + the stories, one transaction)

A crash between the server accepting a message and `finish_delivery` leaves the row pending; the
next run sends that one message again with the same Message-ID (the only duplicate possible).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import quote

from .compose import Digest, assemble
from .config import LoadedConfig
from .deliver import Transport, make_transport
from .errors import DeliveryError
from .render import Links, Rendered, Renderer, build_message, domain_of, message_id
from .schedule import Period, current_period
from .store import Store
from .stories import StoryView, build_stories
from .subscribers import Subscriber, make_subscriber
from .tokens import Signer, load_secret


@dataclass(frozen=True, slots=True)
class SendReport:
    email: str
    period: str
    state: str  # sent, empty, failed, bounced, done (already), dry-run
    stories: int = 0
    error: str | None = None
    message_id: str | None = None


@dataclass(frozen=True, slots=True)
class Prepared:
    subscriber: Subscriber
    digest: Digest
    rendered: Rendered
    data: bytes
    message_id: str


class Mailer:
    """Everything one run needs to turn a (subscriber, period) into a message."""

    def __init__(self, loaded: LoadedConfig, store: Store) -> None:
        self.loaded, self.store = loaded, store
        d = loaded.config.delivery
        self.settings = d
        template_dir = loaded.base_dir / (d.templates or "templates")
        self.renderer = Renderer(template_dir, list_name=d.list_name)
        self.signer = Signer(load_secret(d.secret, loaded.base_dir))
        self.domain = domain_of(d.sender)
        rules = loaded.rules
        self.topic_titles = {t.name: _title(t.name) for t in rules.topics}
        self.feed_titles = {n: st.title for n, st in store.feed_states().items()}
        order = [t.name for t in (*rules.topics, *rules.tags)]
        self.views: list[StoryView] = build_stories(
            store.classified_entries(), self.feed_titles, order, loaded.clustering.tag_share
        )

    def links(self, sub: Subscriber) -> Links:
        assert sub.id is not None
        base = self.settings.base_url.rstrip("/")
        unsub = self.signer.sign(sub.id, "unsubscribe")
        return Links(
            unsubscribe=f"{base}/unsubscribe/{unsub}",
            one_click=f"{base}/unsubscribe/{unsub}",
            mailto=f"mailto:unsubscribe@{self.domain}?subject={quote('unsubscribe ' + unsub)}",
            preferences=f"{base}/preferences/{self.signer.sign(sub.id, 'preferences')}",
        )

    def prepare(self, sub: Subscriber, period: Period, now: datetime) -> Prepared:
        assert sub.id is not None
        since = self.store.last_assembled(sub.id) or now - timedelta(seconds=self.settings.lookback)
        digest = assemble(
            sub,
            period,
            self.views,
            since=since,
            until=now,
            already_sent=self.store.sent_story_ids(sub.id),
            topic_titles=self.topic_titles,
            feed_titles=self.feed_titles,
        )
        links = self.links(sub)
        rendered = self.renderer.render(digest, links)
        mid = message_id(sub.id, period.key, self.domain)
        data = build_message(
            rendered,
            sender=self.settings.sender,
            recipient=sub.email,
            msg_id=mid,
            list_id=self.settings.list_id,
            links=links,
            date=now,
        )
        return Prepared(sub, digest, rendered, data, mid)


def _title(topic: str) -> str:
    return {"sco": "Shanghai Cooperation Organisation", "putin-xi": "Putin and Xi"}.get(topic, topic.title())


def seed_subscribers(loaded: LoadedConfig, store: Store, now: datetime) -> int:
    """`subscribers:` from feeds.yaml: added if missing, never changed (the web may have changed them)."""
    added = 0
    for i, data in enumerate(loaded.config.subscribers):
        sub = make_subscriber(data, where=f"{loaded.source}: subscribers[{i}]")
        _, created = store.add_subscriber(sub, now, update=False)
        added += created
    return added


async def send_due(
    loaded: LoadedConfig,
    store: Store,
    *,
    now: datetime,
    dry_run: bool = False,
    only: str | None = None,
    transport: Transport | None = None,
    on_report: Callable[[SendReport], None] | None = None,
) -> list[SendReport]:
    seed_subscribers(loaded, store, now)
    mailer = Mailer(loaded, store)
    d = loaded.config.delivery
    subs = store.list_subscribers(status="active", email=only)
    transport = transport or make_transport(d, loaded.base_dir)
    reports: list[SendReport] = []
    db = asyncio.Lock()  # one ledger write at a time (SQLite); sends overlap

    def report(r: SendReport) -> None:
        reports.append(r)
        if on_report:
            on_report(r)

    async def one(sub: Subscriber) -> None:
        assert sub.id is not None
        period = current_period(sub, now)
        row = store.delivery(sub.id, period.key)
        if row is not None and row["state"] in ("sent", "empty"):
            report(
                SendReport(sub.email, period.key, "done", len(row["story_ids"]), message_id=row["message_id"])
            )
            return
        prepared = mailer.prepare(sub, period, now)
        n = prepared.digest.count
        if dry_run:
            report(SendReport(sub.email, period.key, "dry-run", n, message_id=prepared.message_id))
            return
        if n == 0 and not d.send_empty:
            async with db:
                await asyncio.to_thread(store.record_empty, sub.id, period.key, prepared.message_id, now)
            report(SendReport(sub.email, period.key, "empty"))
            return
        async with db:
            ok = await asyncio.to_thread(
                store.begin_delivery, sub.id, period.key, prepared.message_id, prepared.digest.story_ids, now
            )
        if not ok:
            return
        try:
            await transport.send(_envelope(d.sender), sub.email, prepared.data, prepared.message_id)
        except DeliveryError as exc:
            async with db:
                await asyncio.to_thread(store.finish_delivery, sub.id, period.key, "failed", now, str(exc))
                state = "failed"
                if exc.permanent:
                    status = await asyncio.to_thread(store.record_bounce, sub.id, d.bounce_limit, now)
                    state = "bounced" if status == "bouncing" else "failed"
            report(SendReport(sub.email, period.key, state, n, str(exc), prepared.message_id))
            return
        async with db:
            await asyncio.to_thread(store.finish_delivery, sub.id, period.key, "sent", now)
        report(SendReport(sub.email, period.key, "sent", n, message_id=prepared.message_id))

    await transport.open()
    try:
        await asyncio.gather(*(one(s) for s in subs))
    finally:
        await transport.close()
    return reports


def _envelope(sender: str) -> str:
    """The bare address of a From header, for MAIL FROM."""
    import email.utils

    return email.utils.parseaddr(sender)[1] or sender
