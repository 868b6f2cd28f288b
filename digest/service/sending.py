"""The send loop: who is due, what their digest holds, and the ledger that makes it exactly once.

    store.list_subscribers(active) | schedule.current_period    # pure: due or not
    | compose.assemble (stories since their last digest, minus those already sent)
    | render.Renderer (templates, CSS inlined) | render.build_message
    | store.claim_deliveries (a few rows per connection at a time, held by this sender until
    |                         sent or its lease runs out; Message-ID fixed per subscriber and period)
    | transport.send, and while its connection is still held:
    | store.finish_delivery (sent + the stories, one transaction)

Any number of senders (send, run --once, daemons on several machines) may run at once: each
sends only the rows it claimed, and a claim is taken over only when its lease has run out (a
crashed sender). A crash between the server accepting a message and `finish_delivery` leaves
that row pending: it is sent again, with the same Message-ID, once its lease runs out; each SMTP
connection has at most that one message in flight, so that is the most a crash can repeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from digest.config import LoadedConfig
from digest.errors import DeliveryError, TransportSetupError
from digest.mail.links import digest_links
from digest.mail.render import (
    PLACEHOLDER_EMAIL,
    PLACEHOLDER_LINKS,
    Links,
    MessageTemplate,
    Rendered,
    Renderer,
    build_message,
    domain_of,
    make_template,
    message_id,
    personalise,
    personalised,
)
from digest.mail.tokens import Signer, load_secret
from digest.mail.transports import Transport, make_transport
from digest.model.assemble import Digest, DigestStory, assemble
from digest.model.bounces import verp_address
from digest.model.schedule import Period, current_period
from digest.model.stories import StoryView, build_stories, topic_title
from digest.model.subscribers import Subscriber, make_subscriber
from digest.storage.lease import holder_id, wall_clock
from digest.storage.store import Store


@dataclass(frozen=True, slots=True)
class SendReport:
    email: str
    period: str
    state: str  # sent, empty, failed, bounced, done (already), claimed (by another sender), dry-run
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
    """Everything one run needs to turn a (subscriber, period) into a message.

    Digests with the same content (period, stories, format, zone, schedule, topics) are rendered
    once and personalised per subscriber (render.personalise); ledger facts are read once per run.
    """

    def __init__(self, loaded: LoadedConfig, store: Store) -> None:
        self.loaded, self.store = loaded, store
        d = loaded.config.delivery
        self.settings = d
        template_dir = loaded.base_dir / (d.templates or "templates")
        self.renderer = Renderer(template_dir, list_name=d.list_name, locale=d.locale)
        self.salts: dict[int, str] = {}  # the subscriptions' salts, signed into their links
        self.signer = Signer(load_secret(d.secret, loaded.base_dir), self._salt_of)
        self.domain = domain_of(d.sender)
        rules = loaded.rules
        self.topic_titles = {t.name: topic_title(t.name) for t in rules.topics}
        self.feed_titles = {n: st.title for n, st in store.feed_states().items()}
        self.order = [t.name for t in (*rules.topics, *rules.tags)]
        self.views: list[StoryView] = []  # the stories these subscribers' digests may hold (load_history)
        self._templates: dict[tuple[object, ...], tuple[Rendered, MessageTemplate]] = {}
        self._stories: dict[int, DigestStory] = {}  # digest items, the same for every subscriber
        self.last_assembled: dict[int, datetime] = {}
        self.sent: dict[int, set[int]] = {}

    def _salt_of(self, subscriber_id: int) -> str | None:
        if subscriber_id not in self.salts:
            self.salts.update(self.store.subscriber_salts([subscriber_id]))
        return self.salts.get(subscriber_id)

    def _views(self, **window: Any) -> list[StoryView]:
        found = self.store.classified_entries(**window)
        return build_stories(found, self.feed_titles, self.order, self.loaded.clustering.tag_share)

    def load_history(self, subscriber_ids: list[int], now: datetime) -> None:
        """What these subscribers were last sent, and the stories their digests may hold: those
        that gained an entry since the earliest of their last digests (or the lookback). Each
        tick reads that window, never the whole store."""
        self.last_assembled = self.store.last_digests(subscriber_ids)
        self.salts.update(self.store.subscriber_salts(subscriber_ids))
        fallback = now - timedelta(seconds=self.settings.lookback)
        since = min((self.last_assembled.get(i) or fallback for i in subscriber_ids), default=fallback)
        self.views = self._views(stories_since=since)
        self.sent = self.store.sent_stories(subscriber_ids, [v.id for v in self.views])

    def return_path(self, sub: Subscriber) -> str:
        """MAIL FROM (RFC 5321 §4.1.1.2, where bounces go): with delivery.bounce_address, the
        subscriber's own VERP address bounces+TOKEN@domain, so a bounce that comes back later
        names its subscriber however mangled its report (service/bounces.py); else From's address."""
        bounce_address = self.settings.bounce_address
        if bounce_address is None or sub.id is None:
            return _envelope(self.settings.sender)
        return verp_address(bounce_address, self.signer.sign_bounce(sub.id, self._salt_of(sub.id) or ""))

    def links(self, sub: Subscriber, period: str | None = None) -> Links:
        assert sub.id is not None
        return digest_links(self.settings, self.signer, sub.id, period)

    def assemble(self, sub: Subscriber, period: Period, now: datetime) -> Digest:
        assert sub.id is not None
        since = self.last_assembled.get(sub.id) or now - timedelta(seconds=self.settings.lookback)
        return assemble(
            sub,
            period,
            self.views,
            since=since,
            until=now,
            already_sent=self.sent.get(sub.id, set()),
            topic_titles=self.topic_titles,
            feed_titles=self.feed_titles,
            cache=self._stories,
            max_age=self.loaded.config.max_age,  # old news is stored, never mailed (issue 11)
        )

    def prepare(
        self,
        sub: Subscriber,
        period: Period,
        now: datetime,
        digest: Digest | None = None,
        *,
        readable: bool = False,
    ) -> Prepared:
        assert sub.id is not None
        digest = digest or self.assemble(sub, period, now)
        links = self.links(sub, period.key)
        mid = message_id(sub.id, period.key, self.domain)
        key = (
            period.key,
            sub.format,
            sub.show_why,
            sub.timezone,
            sub.cadence,
            sub.send_time,
            sub.weekday,
            sub.topics,
            digest.story_ids,
            digest.more,
        )
        cached = self._templates.get(key)
        if cached is None:
            generic = replace(digest, subscriber=replace(sub, email=PLACEHOLDER_EMAIL))
            rendered = self.renderer.render(generic, PLACEHOLDER_LINKS)
            template = make_template(rendered, sender=self.settings.sender, list_id=self.settings.list_id)
            cached = self._templates[key] = (rendered, template)
        shared, template = cached
        # the readable copy is for preview; sending needs only the bytes below
        rendered = personalised(shared, sub.email, links) if readable else shared
        data = personalise(template, recipient=sub.email, msg_id=mid, links=links, date=now)
        if data is None:  # an address the fast path does not handle: the email package does it
            rendered = self.renderer.render(digest, links)
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


def seed_subscribers(loaded: LoadedConfig, store: Store, now: datetime) -> int:
    """`subscribers:` from feeds.yaml: added if missing, never changed (the web may have changed them)."""
    added = 0
    for i, data in enumerate(loaded.config.subscribers):
        sub = make_subscriber(data, where=f"{loaded.source}: subscribers[{i}]")
        _, created = store.add_subscriber(sub, now, update=False)
        added += created
    return added


BATCH = 200  # digests assembled and rendered at a time
CLAIM_PER_CONNECTION = 4  # rows claimed at a time, per SMTP connection; each "sent" is committed on its own


class Claims:
    """This sender's claims on one batch: renewed before their lease runs out, so that a long
    batch (a slow server, a rate limit) never sends a row whose lease another sender may have
    taken over; a row whose renewal fails is no longer ours and is not sent."""

    def __init__(self, store: Store, owner: str, lease: float, keys: set[tuple[int, str]]) -> None:
        self.store, self.owner, self.lease = store, owner, lease
        self.unsent = keys
        self.renew_at = time.monotonic() + lease / 2
        self._lock = asyncio.Lock()

    async def still_ours(self, key: tuple[int, str]) -> bool:
        async with self._lock:
            if time.monotonic() >= self.renew_at and self.unsent:
                started = time.monotonic()
                kept = await asyncio.to_thread(
                    self.store.renew_claims, sorted(self.unsent), self.owner, wall_clock(), self.lease
                )
                self.unsent &= kept
                self.renew_at = started + self.lease / 2
            return key in self.unsent

    def sent(self, key: tuple[int, str]) -> None:
        self.unsent.discard(key)


def who_is_due(
    store: Store, now: datetime, *, only: str | None = None
) -> tuple[list[Subscriber], dict[int, Period], list[int]]:
    """-> (active subscribers' schedules, each one's current period, the ids not yet done for it).

    From schedules and the ledger rows of the current periods alone: the daemon asks every
    tick, so it never reads preferences or history for subscribers who are not due."""
    schedules = store.schedules(email=only)
    memo: dict[tuple[str, int | None, str, str], Period] = {}
    periods: dict[int, Period] = {}
    for s in schedules:
        key = (s.cadence, s.weekday, s.send_time, s.timezone)  # few distinct schedules, many subscribers
        if key not in memo:
            memo[key] = current_period(s, now)
        periods[s.id or 0] = memo[key]
    states = store.ledger_states([p.key for p in memo.values()])
    due = [
        s.id or 0
        for s in schedules
        if states.get((s.id or 0, periods[s.id or 0].key)) not in ("sent", "empty")
    ]
    return schedules, periods, due


async def send_due(
    loaded: LoadedConfig,
    store: Store,
    *,
    now: datetime,
    dry_run: bool = False,
    only: str | None = None,
    transport: Transport | None = None,
    on_report: Callable[[SendReport], None] | None = None,
    stopping: Callable[[], bool] = lambda: False,
) -> list[SendReport]:
    """Send what is due. `stopping()` turning true (SIGTERM) starts no new send: messages in flight
    finish and are recorded; rows claimed but not sent are let go for the next run. A transport
    that cannot be used at all (login refused, the SMTP circuit breaker) stops the run the same
    way and is raised once the messages in flight are recorded."""
    if not dry_run:  # a dry run changes nothing, not even the subscriber table (issue 13)
        seed_subscribers(loaded, store, now)
    d = loaded.config.delivery
    schedules, periods, due_ids = who_is_due(store, now, only=only)
    due = set(due_ids)
    reports = [
        SendReport(s.email, periods[s.id or 0].key, "done") for s in schedules if (s.id or 0) not in due
    ]
    if not due_ids:
        return reports
    subs = store.subscribers_by_id(due_ids)
    mailer = Mailer(loaded, store)
    mailer.load_history(due_ids, now)
    transport = transport or make_transport(d, loaded.base_dir)
    owner = holder_id()
    # one ledger write at a time on SQLite (one writer anyway); PostgreSQL takes them side by
    # side, so each connection's mark comes sooner and a crash finds fewer messages unmarked
    db: Any = asyncio.Lock() if store.engine.dialect.name == "sqlite" else contextlib.nullcontext()
    sending = asyncio.Semaphore(max(8, d.smtp.connections * 2))
    done: list[tuple[int, str, str, str | None]] = []  # sent through an idempotent transport
    broken: list[TransportSetupError] = []  # the transport cannot be used: stop

    def report(r: SendReport) -> None:
        reports.append(r)
        if on_report:
            on_report(r)

    async def deliver(p: Prepared, period: Period, claims: Claims) -> None:
        sub = p.subscriber
        assert sub.id is not None
        sid, n, key = sub.id, p.digest.count, (sub.id, period.key)
        async with sending:
            if stopping() or broken:
                return  # left pending (its claim let go at the end): the next run sends it
            if not await claims.still_ours(key):
                report(SendReport(sub.email, period.key, "claimed", n, message_id=p.message_id))
                return

            async def accepted() -> None:  # the transport still holds the connection that took it
                async with db:
                    await asyncio.to_thread(store.finish_delivery, sid, period.key, "sent", now)
                claims.sent(key)

            try:
                await transport.send(
                    mailer.return_path(sub),
                    sub.email,
                    p.data,
                    p.message_id,
                    accepted=None if transport.idempotent else accepted,
                )
            except TransportSetupError as exc:
                broken.append(exc)
                return
            except DeliveryError as exc:
                async with db:
                    await asyncio.to_thread(store.finish_delivery, sid, period.key, "failed", now, str(exc))
                    state = "failed"
                    if exc.permanent:
                        status = await asyncio.to_thread(store.record_bounce, sid, d.bounce_limit, now)
                        state = "bounced" if status == "bouncing" else "failed"
                claims.sent(key)
                report(SendReport(sub.email, period.key, state, n, str(exc), p.message_id))
                return
        if transport.idempotent:
            done.append((sid, period.key, "sent", None))  # committed with its batch
        report(SendReport(sub.email, period.key, "sent", n, message_id=p.message_id))

    async def send_claimed(part: list[tuple[Prepared, Period]]) -> None:
        items = [(p.subscriber.id, per.key, p.message_id, p.digest.story_ids, now) for p, per in part]
        async with db:
            claimed = await asyncio.to_thread(
                store.claim_deliveries,
                items,  # type: ignore[arg-type]
                owner,
                wall_clock(),
                d.lease,
            )
        ours = [(p, per) for (p, per), ok in zip(part, claimed, strict=True) if ok]
        for (p, per), ok in zip(part, claimed, strict=True):
            if not ok:  # another sender has it, or has sent it since we looked
                report(SendReport(p.subscriber.email, per.key, "claimed", p.digest.count))
        claims = Claims(store, owner, d.lease, {(p.subscriber.id or 0, per.key) for p, per in ours})
        done.clear()
        # every send in flight finishes and is recorded before a failure that stops the run
        # (login refused, the outbox full) is raised: none is left for asyncio.run to cancel
        outcomes = await asyncio.gather(*(deliver(p, per, claims) for p, per in ours), return_exceptions=True)
        failure = next((o for o in outcomes if isinstance(o, BaseException)), None)
        if done:
            async with db:
                await asyncio.to_thread(store.finish_deliveries, list(done), now)
        if failure is not None:
            raise failure

    # Claimed a few at a time, just before they are sent: senders running at once share the
    # work (each takes the next rows nobody holds), and a sender that dies holds few rows
    # for a lease; enough to keep every connection busy between claims.
    claim_size = CLAIM_PER_CONNECTION * d.smtp.connections
    await transport.open()
    try:
        for i in range(0, len(subs), BATCH):
            if stopping() or broken:
                break
            batch: list[tuple[Prepared, Period]] = []
            for sub in subs[i : i + BATCH]:
                assert sub.id is not None
                period = periods[sub.id]
                digest = mailer.assemble(sub, period, now)
                if digest.count == 0 and not d.send_empty:
                    if not dry_run:
                        mid = message_id(sub.id, period.key, mailer.domain)
                        async with db:
                            await asyncio.to_thread(store.record_empty, sub.id, period.key, mid, now)
                    report(SendReport(sub.email, period.key, "empty"))
                    continue
                prepared = mailer.prepare(sub, period, now, digest)
                if dry_run:
                    report(
                        SendReport(
                            sub.email, period.key, "dry-run", digest.count, message_id=prepared.message_id
                        )
                    )
                    continue
                batch.append((prepared, period))
            if not batch:
                continue
            for j in range(0, len(batch), claim_size):
                if stopping() or broken:
                    break
                await send_claimed(batch[j : j + claim_size])
    finally:
        await transport.close()
        with contextlib.suppress(Exception):  # a failed release only makes the next run wait a lease
            await asyncio.to_thread(store.release_claims, owner)
    if broken:
        raise broken[0]
    return reports


def _envelope(sender: str) -> str:
    """The bare address of a From header, for MAIL FROM."""
    import email.utils

    return email.utils.parseaddr(sender)[1] or sender
