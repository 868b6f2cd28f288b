"""Stories as Atom (RFC 4287): the pure document builder."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from typing import Any

import feedparser
from hypothesis import given, settings
from hypothesis import strategies as st

from digest.model.atom import ATOM, FeedInfo, FeedStory, atom_feed, story_id, xml_text
from digest.model.records import ClassifiedEntry, Entry, StoredEntry
from digest.model.stories import build_stories

T0 = datetime(2025, 9, 1, 12, 0, tzinfo=UTC)
INFO = FeedInfo(
    site="https://digest.example.org",
    self_url="https://digest.example.org/feeds/sco.atom",
    key="topic/sco",
    title="Digest: SCO",
    author="Digest",
    alternate="https://digest.example.org/subscribe",
)
A = f"{{{ATOM}}}"


def xml(body: bytes) -> ET.Element:
    return ET.fromstring(body)  # noqa: S314 (our own output, parsed to check it is well-formed)


def report(
    row: int, feed: str, title: str, summary: str = "", *, story: int = 1, **kw: Any
) -> ClassifiedEntry:
    e = Entry(
        **{
            "feed": feed,
            "entry_id": f"{feed}-{row}",
            "guid": None,
            "link": f"https://{feed}.example/{row}",
            "title": title,
            "summary_html": summary,
            "summary_text": summary,
            "published": T0 + timedelta(minutes=row),
            "published_fallback": False,
            "author": None,
            "language": "en",
            "content_hash": "h",
            **kw,
        }
    )
    return ClassifiedEntry(
        StoredEntry(row, T0 + timedelta(minutes=row), e), True, ("sco",), ("summit",), [], story
    )


def stories(*reports: ClassifiedEntry) -> list[FeedStory]:
    views = build_stories(reports, {"wire": "Example Wire", "vestnik": "Вестник"})
    return [FeedStory(v, T0, T0 + timedelta(hours=v.id)) for v in sorted(views, key=lambda v: v.id)]


def test_an_entry_is_a_story_with_its_outlets_tags_and_times():
    body = atom_feed(
        INFO,
        stories(
            report(1, "wire", "SCO summit opens", "Leaders gather in Tianjin."),
            report(2, "vestnik", "Открылся саммит ШОС", language="ru"),
        ),
        {"wire": "Example Wire", "vestnik": "Вестник"},
    )
    root = xml(body)
    assert root.tag == f"{A}feed"
    for required in ("id", "title", "updated", "author"):
        assert root.find(f"{A}{required}") is not None
    assert root.find(f"{A}link[@rel='self']").get("href") == INFO.self_url  # type: ignore[union-attr]
    [entry] = root.findall(f"{A}entry")
    assert entry.findtext(f"{A}title") == "SCO summit opens"
    assert entry.get("{http://www.w3.org/XML/1998/namespace}lang") == "en"
    assert entry.find(f"{A}link[@rel='alternate']").get("href") == "https://wire.example/1"  # type: ignore[union-attr]
    assert [c.get("term") for c in entry.findall(f"{A}category")] == ["summit"]
    assert "Also reported by Вестник." in (entry.findtext(f"{A}summary") or "")
    assert entry.find(f"{A}link[@rel='related']").get("href") == "https://vestnik.example/2"  # type: ignore[union-attr]
    assert entry.findtext(f"{A}published") == "2025-09-01T12:01:00Z"
    assert entry.findtext(f"{A}updated") == "2025-09-01T13:00:00Z"
    assert root.findtext(f"{A}updated") == "2025-09-01T13:00:00Z"
    parsed = feedparser.parse(body)
    assert parsed.bozo == 0 and parsed.entries[0].title == "SCO summit opens"
    assert [t.term for t in parsed.entries[0].tags] == ["summit"]


def test_ids_are_uris_stable_across_runs_and_distinct_per_story():
    first = story_id(INFO.site, 7, T0)
    assert first == story_id(INFO.site, 7, T0) and first.startswith("urn:uuid:")
    assert len({first, story_id(INFO.site, 8, T0), story_id(INFO.site, 7, T0 + timedelta(days=1))}) == 3
    one = stories(report(1, "wire", "a", story=1), report(2, "wire", "b", story=2))
    assert atom_feed(INFO, one, {}) == atom_feed(INFO, one, {})  # the same bytes: the same ETag


def test_an_empty_feed_is_still_valid():
    parsed = feedparser.parse(atom_feed(INFO, [], {}))
    assert parsed.bozo == 0 and parsed.entries == [] and parsed.feed.updated == "1970-01-01T00:00:00Z"


def test_only_web_links_are_given():
    body = atom_feed(INFO, stories(report(1, "wire", "x", link="javascript:alert(1)")), {})
    assert b"javascript" not in body


@settings(max_examples=200, deadline=None)
@given(
    title=st.text(min_size=1),
    summary=st.text(),
    outlet=st.text(min_size=1, max_size=40),
    tag=st.text(max_size=20),
)
def test_any_text_gives_well_formed_xml_that_feedparser_reads_back(title, summary, outlet, tag):
    r = report(1, "wire", title, summary, source_title=outlet)
    r = ClassifiedEntry(r.stored, True, ("sco",), (tag,) if tag else (), [], 1)
    body = atom_feed(INFO, stories(r), {})
    root = xml(body)  # well-formed, and the text is carried exactly (less what XML cannot carry)
    assert root.findtext(f"{A}entry/{A}title") == xml_text(title)
    summary_in, summary = summary, root.findtext(f"{A}entry/{A}summary") or ""
    assert summary.startswith(xml_text(summary_in.strip())[:100])
    parsed = feedparser.parse(body)
    # read with no complaint (feedparser's own guess at mojibake may alter Latin-1-looking titles:
    # mixin.py re-decodes text that encodes as ISO-8859-1 and decodes as UTF-8)
    assert parsed.bozo == 0, parsed.get("bozo_exception")
    assert len(parsed.entries) == 1
