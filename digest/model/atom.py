"""Stories as an Atom feed (RFC 4287): story records in, the document's bytes out. Pure.

Each entry is a story: its representative's headline and link, a summary saying who else
reported it, its tags as categories, published (its first report) and updated (the story's last
change). Ids are urn:uuid URIs (RFC 4122 name-based, version 5) of the site and the story's row
and first sighting: the same on every run, and new if the rules change and the stories are
folded again. Text that XML 1.0 cannot carry (control characters, lone surrogates; §2.2 of the
XML spec) and the C1 controls are dropped: a feed reader rejects the whole document for one such character.
"""

from __future__ import annotations

import re
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from digest.model.links import safe_href
from digest.model.stories import StoryView, outlet_of

ATOM = "http://www.w3.org/2005/Atom"
XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"
# XML 1.0 Char, less the C1 controls (§2.2 "discouraged"; feed readers take them for cp1252)
_NOT_XML = re.compile("[^\t\n\r\u0020-\u007e\u00a0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
SUMMARY_CHARS = 600
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class FeedInfo:
    site: str  # base_url: ids are made of it
    self_url: str  # where this feed is served (rel="self")
    key: str  # which feed: "topic/sco", "subscriber/12"
    title: str
    author: str  # the list's name: feed-level author, so every entry has one (§4.1.1)
    alternate: str  # a page for people (rel="alternate")


@dataclass(frozen=True, slots=True)
class FeedStory:
    view: StoryView
    first_seen: datetime
    updated: datetime


def xml_text(text: str) -> str:
    # a parser reads a raw CR as LF (XML 1.0 §2.11): say LF, so that what is read is what was written
    return _NOT_XML.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))


def story_id(site: str, story: int, first_seen: datetime) -> str:
    name = f"{site.rstrip('/')}/stories/{story}/{first_seen.astimezone(UTC).isoformat()}"
    return f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, name)}"


def _time(value: datetime) -> str:
    return value.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def feed_updated(stories: Sequence[FeedStory]) -> datetime:
    """The newest story's change (the epoch for an empty feed, so that it stays the same)."""
    return max((s.updated for s in stories), default=EPOCH).replace(microsecond=0)


def atom_feed(info: FeedInfo, stories: Sequence[FeedStory], feed_titles: Mapping[str, str | None]) -> bytes:
    ET.register_namespace("", ATOM)

    def sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
        el = ET.SubElement(parent, f"{{{ATOM}}}{tag}", {k: xml_text(v) for k, v in attrs.items()})
        if text is not None:
            el.text = xml_text(text)
        return el

    feed = ET.Element(f"{{{ATOM}}}feed")
    feed_name = f"{info.site.rstrip('/')}/feeds/{info.key}"
    sub(feed, "id", f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, feed_name)}")
    sub(feed, "title", info.title)
    sub(feed, "updated", _time(feed_updated(stories)))
    author = sub(feed, "author")
    sub(author, "name", info.author)
    sub(feed, "link", rel="self", type="application/atom+xml", href=info.self_url)
    sub(feed, "link", rel="alternate", type="text/html", href=info.alternate)
    sub(feed, "generator", "digest")
    for s in stories:
        view = s.view
        rep = view.representative.stored.entry
        entry = sub(feed, "entry")
        if rep.language:
            entry.set(XML_LANG, xml_text(rep.language))  # §2: xml:lang on any element
        sub(entry, "id", story_id(info.site, view.id, s.first_seen))
        sub(entry, "title", rep.title, type="text")
        published = min(m.stored.entry.published for m in view.entries)
        sub(entry, "published", _time(published))
        sub(entry, "updated", _time(max(s.updated, published)))
        link = safe_href(rep.link)
        if link:
            sub(entry, "link", rel="alternate", type="text/html", href=link)
        seen = {link}
        for m in view.entries:  # the other outlets' reports
            href = safe_href(m.stored.entry.link)
            if href and href not in seen:
                seen.add(href)
                sub(entry, "link", rel="related", href=href, title=outlet_of(m, feed_titles))
        writer = sub(entry, "author")
        sub(writer, "name", view.outlets[0] if view.outlets else info.author)
        for tag in view.tags:
            sub(entry, "category", term=tag, label=tag)
        text = rep.summary_text.strip()
        if len(text) > SUMMARY_CHARS:
            text = text[:SUMMARY_CHARS].rsplit(" ", 1)[0] + " …"
        others = view.outlets[1:]
        if others:
            text = (text + "\n\n" if text else "") + "Also reported by " + ", ".join(others) + "."
        if text:
            sub(entry, "summary", text, type="text")
    body: bytes = ET.tostring(feed, encoding="utf-8", xml_declaration=True)
    return body
