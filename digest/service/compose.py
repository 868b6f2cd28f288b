"""From a (subscriber, period) to the bytes of their message, and a sent digest again for the web.

    store: the stories that gained a report since the earliest last digest, the ledger's sent stories
    | model.assemble (one subscriber's digest)
    | mail.render (once per distinct content, with placeholders) | mail.render.make_template
    | mail.render.build_message (one subscriber's address, signed links and Message-ID)

Digests with the same content (period, stories, format, zone, schedule, topics) are rendered
once; each subscriber then costs a few string replacements and a base64 encoding.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from digest.config import LoadedConfig
from digest.mail.links import LinkSigner
from digest.mail.render import (
    PLACEHOLDER_EMAIL,
    PLACEHOLDER_LINKS,
    MessageTemplate,
    Rendered,
    Renderer,
    build_message,
    fill_placeholders,
    make_template,
    message_id,
)
from digest.mail.tokens import Signer, load_secret
from digest.model.assemble import Digest, DigestStory, assemble
from digest.model.bounces import verp_address
from digest.model.schedule import Period
from digest.model.stories import StoryView, build_stories, topic_title
from digest.model.subscribers import Subscriber
from digest.storage.store import Store


@dataclass(frozen=True, slots=True)
class Prepared:
    subscriber: Subscriber
    digest: Digest
    rendered: Rendered  # with placeholders, unless prepared readable (preview)
    data: bytes
    message_id: str
    # MAIL FROM (RFC 5321 §4.1.1.2, where bounces go): with delivery.bounce_address, the
    # subscriber's own VERP address bounces+TOKEN@domain, so a bounce that comes back later names
    # its subscriber however mangled its report (service/bounces.py); None: From's address
    return_path: str | None = None


def link_signer(loaded: LoadedConfig, store: Store, salts: dict[int, str] | None = None) -> LinkSigner:
    """Links signed with the subscription's salt; `salts` read ahead for a whole run, else the
    store is asked per subscriber."""
    known = salts if salts is not None else {}

    def salt_of(subscriber_id: int) -> str | None:
        if subscriber_id not in known:
            known.update(store.subscriber_salts([subscriber_id]))
        return known.get(subscriber_id)

    d = loaded.config.delivery
    return LinkSigner(d, Signer(load_secret(d.secret, loaded.base_dir), salt_of))


class StoryReader:
    """The stories a run's digests are assembled from, as the store holds them."""

    def __init__(self, loaded: LoadedConfig, store: Store) -> None:
        self.loaded, self.store = loaded, store
        rules = loaded.rules
        self.topic_titles = {t.name: topic_title(t.name) for t in rules.topics}
        self.feed_titles = {n: st.title for n, st in store.feed_states().items()}
        self.order = [t.name for t in (*rules.topics, *rules.tags)]

    def views(
        self, *, stories_since: datetime | None = None, story_ids: list[int] | None = None
    ) -> list[StoryView]:
        found = self.store.classified_entries(stories_since=stories_since, story_ids=story_ids)
        return build_stories(found, self.feed_titles, self.order, self.loaded.clustering.tag_share)


class DigestMaker:
    """One send run's digests: assembled from the stories read once for the run, rendered once
    per distinct content, personalised per subscriber."""

    def __init__(self, loaded: LoadedConfig, store: Store, subscriber_ids: list[int], now: datetime) -> None:
        """Reads what these subscribers were last sent and the stories their digests may hold:
        those that gained a report since the earliest of their last digests (or the lookback).
        Each run reads that window, never the whole store."""
        d = loaded.config.delivery
        self.settings, self.max_age = d, loaded.config.max_age
        self.stories = StoryReader(loaded, store)
        self.renderer = Renderer(
            loaded.base_dir / (d.templates or "templates"), list_name=d.list_name, locale=d.locale
        )
        self.links = link_signer(loaded, store, store.subscriber_salts(subscriber_ids))
        self.last_assembled = store.last_digests(subscriber_ids)
        earliest = min(
            (self._since(i, now) for i in subscriber_ids), default=now - timedelta(seconds=d.lookback)
        )
        self.views = self.stories.views(stories_since=earliest)
        self.sent = store.sent_stories(subscriber_ids, [v.id for v in self.views])
        self._templates: dict[tuple[object, ...], tuple[Rendered, MessageTemplate]] = {}
        self._items: dict[int, DigestStory] = {}  # a story's digest item, the same for every subscriber
        self._digests: dict[tuple[object, ...], Digest] = {}

    def _since(self, subscriber_id: int, now: datetime) -> datetime:
        """Stories with a report first seen after this may be in the subscriber's next mail: since
        their last digest (or the lookback, for a first one). Instant mail reaches back one window
        more: a report fetched just before the last mail but folded just after it would be missed,
        and the stories already sent are left out whatever the window."""
        last = self.last_assembled.get(subscriber_id)
        if last is None:
            return now - timedelta(seconds=self.settings.lookback)
        return last - timedelta(seconds=self.settings.instant_every)

    def message_id(self, sub: Subscriber, period: Period) -> str:
        return message_id(sub.id or 0, period.key, self.links.domain)

    def assemble(self, sub: Subscriber, period: Period, now: datetime) -> Digest:
        assert sub.id is not None
        since = self._since(sub.id, now)
        if sub.cadence != "instant":
            since = self.last_assembled.get(sub.id) or since
        already_sent = self.sent.get(sub.id, set())
        # everything assemble reads of the subscriber, and of their history: most subscribers of
        # a run share one of a few such keys, so most digests are assembled once per key
        key = (period, since, sub.topics, sub.tags, sub.max_stories, frozenset(already_sent))
        shared = self._digests.get(key)
        if shared is None:
            shared = self._digests[key] = assemble(
                sub,
                period,
                self.views,
                since=since,
                until=now,
                already_sent=already_sent,
                topic_titles=self.stories.topic_titles,
                feed_titles=self.stories.feed_titles,
                cache=self._items,
                max_age=self.max_age,  # old news is stored, never mailed (issue 11)
            )
        return replace(shared, subscriber=sub)

    def prepare(
        self,
        sub: Subscriber,
        period: Period,
        now: datetime,
        digest: Digest | None = None,
        *,
        readable: bool = False,
    ) -> Prepared:
        """`readable`: the rendering filled in with the subscriber's address and links (preview);
        sending needs only the bytes."""
        assert sub.id is not None
        digest = digest or self.assemble(sub, period, now)
        links = self.links.links(sub.id, period.key)
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
        rendered = fill_placeholders(shared, sub.email, links) if readable else shared
        mid = self.message_id(sub, period)
        data = build_message(template, recipient=sub.email, msg_id=mid, links=links, date=now)
        bounces = self.settings.bounce_address
        path = verp_address(bounces, self.links.signer.sign_bounce(sub.id)) if bounces else None
        return Prepared(sub, digest, rendered, data, mid, path)
