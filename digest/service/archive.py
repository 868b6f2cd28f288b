"""A subscriber's sent digests, read back for the web: the list, and one digest as a page.

    list:    store.sent_digests (one page of the ledger, newest first)
    digest:  store.delivery (sent?) | store.classified_entries (the stories the ledger recorded)
             | build_stories | assemble | Renderer (web=True: stylesheets linked, never shortened)

Each call takes the caller's Store and Renderer: the web app opens both once, for its lifetime.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, replace
from datetime import datetime

from digest.config import LoadedConfig
from digest.mail.links import LinkSigner
from digest.mail.render import Renderer
from digest.mail.tokens import Signer
from digest.model.assemble import assemble
from digest.model.schedule import Period
from digest.model.stories import build_stories, topic_title
from digest.storage.store import Store


@dataclass(frozen=True, slots=True)
class SentDigest:
    period: str
    stories: int


def web_renderer(loaded: LoadedConfig) -> Renderer:
    """The digest templates as `digest send` uses them (delivery.templates, then the defaults)."""
    d = loaded.config.delivery
    return Renderer(loaded.base_dir / (d.templates or "templates"), list_name=d.list_name, locale=d.locale)


def sent_digests(
    store: Store, subscriber_id: int, *, page: int, per_page: int
) -> tuple[list[SentDigest], bool]:
    """One page (from 1) of a subscriber's sent digests, newest first -> (digests, is there an older page)."""
    # one row more than a page: whether an older page exists, without counting them all
    rows = store.sent_digests(subscriber_id, limit=per_page + 1, offset=(page - 1) * per_page)
    return [SentDigest(r["period"], len(r["story_ids"])) for r in rows[:per_page]], len(rows) > per_page


def archived_digest(
    loaded: LoadedConfig, store: Store, renderer: Renderer, signer: Signer, subscriber_id: int, period: str
) -> str | None:
    """A sent digest again, as HTML: the stories the ledger recorded for it, in the subscriber's
    current format and zone. None: no such subscriber, or no digest sent for that period."""
    sub = store.subscriber(subscriber_id)
    row = store.delivery(subscriber_id, period)
    if sub is None or row is None or row["state"] != "sent":
        return None
    rules = loaded.rules
    order = [t.name for t in (*rules.topics, *rules.tags)]
    feed_titles = {name: st.title for name, st in store.feed_states().items()}
    found = store.classified_entries(story_ids=row["story_ids"])
    views = build_stories(found, feed_titles, order, loaded.clustering.tag_share)
    assembled_at: datetime = row["assembled_at"]
    digest = assemble(
        replace(sub, max_stories=max(1, len(views))),
        Period(period, assembled_at),
        views,
        since=datetime.min.replace(tzinfo=assembled_at.tzinfo),
        until=datetime.max.replace(tzinfo=assembled_at.tzinfo),
        already_sent=set(),
        topic_titles={t.name: topic_title(t.name) for t in rules.topics},
        feed_titles=feed_titles,
    )
    salt = store.subscriber_salts([subscriber_id]).get(subscriber_id)  # once, for both signed links
    links = LinkSigner(loaded.config.delivery, signer).links(subscriber_id, salt=salt)
    rendered = renderer.render(digest, links, web=True)
    if rendered.html is not None:
        return rendered.html
    return f"<!DOCTYPE html><meta charset='utf-8'><pre>{html.escape(rendered.text)}</pre>"
