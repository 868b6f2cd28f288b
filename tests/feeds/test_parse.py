"""Parsing: bytes in, clean entries out. The date, encoding and markup traps of notes §2."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from digest.feeds.parse import html_to_text, parse_feed
from tests.support.feedserver import rss

FETCHED = datetime(2025, 9, 2, 12, 0, tzinfo=UTC)


def parse(body: bytes, **kw):
    return parse_feed("t", body, content_type="application/rss+xml", fetched_at=FETCHED, **kw)


def item(**kw: str) -> dict[str, str]:
    return {
        "title": "SCO summit",
        "link": "https://example.org/x",
        "guid": "g1",
        "description": "text",
        "pubDate": "Mon, 01 Sep 2025 09:00:00 +0000",
        **kw,
    }


@pytest.mark.parametrize(
    ("raw", "language", "zone", "expected"),
    [
        ("Mon, 01 Sep 2025 09:30:00 CST", "zh", None, datetime(2025, 9, 1, 1, 30, tzinfo=UTC)),  # China +8
        ("Mon, 01 Sep 2025 09:30:00 CST", "en", None, datetime(2025, 9, 1, 15, 30, tzinfo=UTC)),  # US Central
        ("Mon, 01 Sep 2025 09:30:00 MSK", "ru", None, datetime(2025, 9, 1, 6, 30, tzinfo=UTC)),  # not UTC
        ("1 сентября 2025, 12:40", "ru", None, datetime(2025, 9, 1, 9, 40, tzinfo=UTC)),
        ("10 мая 2024 г. 08:00", "ru", None, datetime(2024, 5, 10, 5, 0, tzinfo=UTC)),
        ("2025-06-10 09:30:00", "zh", None, datetime(2025, 6, 10, 1, 30, tzinfo=UTC)),
        ("2025-06-10 09:30:00", "en", "Asia/Kolkata", datetime(2025, 6, 10, 4, 0, tzinfo=UTC)),
    ],
)
def test_known_date_traps_are_fixed(raw, language, zone, expected):
    body = rss([item(pubDate=raw)], language=language)
    e = parse(body, timezone=zone).entries[0]
    assert (e.published, e.published_fallback) == (expected, False)


def test_missing_and_future_dates_fall_back_to_fetch_time_flagged():
    body = rss(
        [
            item(guid="a", pubDate="Wed, 01 Jan 2031 00:00:00 +0000"),
            {k: v for k, v in item(guid="b").items() if k != "pubDate"},
            item(guid="c"),
        ]
    )
    got = {e.entry_id: e for e in parse(body).entries}
    assert got["a"].published == FETCHED and got["a"].published_fallback
    assert got["b"].published == FETCHED and got["b"].published_fallback
    assert got["c"].published == datetime(2025, 9, 1, 9, 0, tzinfo=UTC) and not got["c"].published_fallback


def test_script_onclick_and_tracking_images_never_survive():
    html = (
        '<p onclick="steal()">Hello <script>alert(1)</script><b>world</b>'
        '<img src="http://tracker.example/p.gif"><a href="javascript:evil()">x</a>'
        '<a href="https://ok.example/">ok</a></p>'
    )
    e = parse(rss([item(description=html)])).entries[0]
    for bad in ("script", "alert", "onclick", "tracker.example", "javascript:"):
        assert bad not in e.summary_html
    assert '<a href="https://ok.example/"' in e.summary_html
    assert e.summary_text == "Hello world x ok"


def test_titles_become_plain_text_with_entities_decoded():
    e = parse(rss([item(title="A <b>bold</b> &amp; title\n")])).entries[0]
    assert e.title == "A bold & title"


def test_plain_text_summaries_are_escaped_not_interpreted():
    from tests.support.feedserver import atom

    body = atom([{"title": "t", "id": "i", "link": "https://e/1", "summary": "x"}]).replace(
        b'<summary type="html">x</summary>', b'<summary type="text">1 &lt; 2 &lt;script&gt;</summary>'
    )
    e = parse_feed("t", body, content_type="application/atom+xml", fetched_at=FETCHED).entries[0]
    assert "<script" not in e.summary_html
    assert e.summary_text == "1 < 2 <script>"


def test_entry_id_is_guid_then_link_then_content_hash():
    body = rss(
        [
            item(guid="g1"),
            {k: v for k, v in item(link="https://e/2").items() if k != "guid"},
            {"title": "only a title", "description": "d"},
        ]
    )
    ids = [e.entry_id for e in parse(body).entries]
    assert ids[0] == "g1" and ids[1] == "https://e/2" and ids[2].startswith("sha256:")


def test_a_guid_reused_for_different_items_is_not_trusted():
    body = rss(
        [
            item(guid="same", link="https://e/1", title="one"),
            item(guid="same", link="https://e/2", title="two"),
        ]
    )
    assert [e.entry_id for e in parse(body).entries] == ["https://e/1", "https://e/2"]


def test_aggregator_source_is_kept_as_outlet():
    body = rss([item()]).replace(
        b"</item>", b'<source url="https://outlet.example/rss">Outlet Daily</source></item>'
    )
    e = parse(body).entries[0]
    assert e.source_title == "Outlet Daily" and e.source_url == "https://outlet.example/rss"


def test_language_comes_from_config_then_feed_then_script():
    assert parse(rss([item()], language="ru"), language="zh").entries[0].language == "zh"
    assert parse(rss([item()], language="ru-RU")).entries[0].language == "ru"
    nolang = rss([item(title="上海合作组织峰会")]).replace(b"<language>en</language>", b"")
    assert parse(nolang).entries[0].language == "zh"


def test_html_to_text_keeps_words_apart_and_drops_script_bodies():
    assert html_to_text("<p>one</p><p>two</p><script>x()</script><br>three&nbsp;four") == "one two three four"


def test_relative_links_in_summaries_are_made_absolute_against_the_feed_url():
    html = '<p><a href="/world/sco">more</a> <a href="https://other.example/x">abs</a></p>'
    e = parse(rss([item(description=html)]), url="https://news.example.org/rss/world.xml").entries[0]
    assert 'href="https://news.example.org/world/sco"' in e.summary_html
    assert 'href="https://other.example/x"' in e.summary_html


def test_relative_entry_and_source_links_are_made_absolute_against_the_feed_url():
    source = '<source url="/agency/rss.xml">Agency</source>'
    body = rss([item(link="/world/sco-summit.html")]).replace(b"</item>", source.encode() + b"</item>")
    e = parse(body, url="https://news.example.org/rss/world.xml").entries[0]
    assert e.link == "https://news.example.org/world/sco-summit.html"
    assert e.source_url == "https://news.example.org/agency/rss.xml"
    assert parse(rss([item(link="https://other.example/a")]), url="https://x.example/").entries[0].link == (
        "https://other.example/a"
    )


def test_an_overlong_summary_is_cut_without_leaving_half_a_tag():
    from digest.feeds.parse import MAX_SUMMARY

    para = '<p>SCO talks <a href="https://example.org/a-long-link">link</a></p>'
    for shift in range(0, 100, 7):  # the cut falls at every point of the paragraph, tags included
        description = "x" * shift + para * (MAX_SUMMARY // len(para) + 5)
        e = parse(rss([item(description=description)])).entries[0]
        assert len(e.summary_html) <= MAX_SUMMARY + 20  # the closing tags nh3 adds
        assert e.summary_html.count("<a ") == e.summary_html.count("</a>")
        assert "<" not in e.summary_text and "href" not in e.summary_text


_markup = st.lists(
    st.sampled_from(
        ["<p>", "</p>", "<br>", "<b>", "</b>", '<a href="/x?a=1&b=2">', "</a>", "<li>", "<div>", "<span>",
         "<script>x()</script>", "&amp;", "&lt;", "&nbsp;", "&#8212;", " ", "\n", "\x07", "Путин", "习近平",
         "SCO", 'x"y', "a > b", "<!-- c -->", '<img src="t.gif">', "<table><td>1</td></table>"]
    ),
    max_size=25,
).map("".join)  # fmt: skip


@given(_markup)
@settings(max_examples=400, deadline=None, database=None)
def test_summary_text_is_what_html_to_text_gives_for_the_sanitised_summary(markup):
    from digest.feeds.parse import _sanitised_to_text, sanitize_html

    clean = sanitize_html(markup, base="https://example.org/")
    assert _sanitised_to_text(clean) == html_to_text(clean)


def test_entries_survive_the_trip_between_processes():
    import pickle

    source = '<source url="https://agency.example/rss">Agency</source>'
    body = rss([item(author="A. Writer")]).replace(b"</item>", source.encode() + b"</item>")
    e = parse(body, url="https://news.example.org/rss").entries[0]
    assert e.source_title and e.author
    assert pickle.loads(pickle.dumps(e)) == e  # noqa: S301 (our own bytes)


# -- the feeds people have (issue 13): feedparser's own corpus where it has one ----------------

CORPUS = Path(__file__).resolve().parents[1] / "data" / "feedparser"


def corpus(name: str, content_type: str | None = "application/atom+xml", **kw):
    body = (CORPUS / name).read_bytes()
    return parse_feed("t", body, content_type=content_type, fetched_at=FETCHED, **kw)


def test_an_atom_text_title_keeps_its_angle_brackets():
    e = corpus("entry_title_text_plain_brackets.xml").entries[0]
    assert e.title == "History of the <blink> tag"


@pytest.mark.parametrize("name", ["entry_summary_xml_base.xml", "entry_content_xml_base_inherit_2.xml"])
def test_relative_links_in_a_summary_resolve_against_its_xml_base(name):
    e = corpus(name, url="https://feeds.example.net/feed.xml").entries[0]
    assert 'href="http://example.com/test/test.html"' in e.summary_html


def test_a_relative_xml_base_is_itself_resolved_against_the_feed_url():
    body = b"""<feed xmlns="http://www.w3.org/2005/Atom" xml:base="/blog/">
      <entry xml:base="2025/"><id>a</id><title>T</title><link href="post.html"/>
      <summary type="html">&lt;a href="pic.html"&gt;see&lt;/a&gt;</summary></entry></feed>"""
    e = parse_feed(
        "t", body, content_type="application/atom+xml", url="https://site.example/feed", fetched_at=FETCHED
    )
    assert e.entries[0].link == "https://site.example/blog/2025/post.html"
    assert 'href="https://site.example/blog/2025/pic.html"' in e.entries[0].summary_html


@pytest.mark.parametrize(
    "name", ["utf-16le-bom.xml", "utf-16be-bom.xml", "utf-32le-bom.xml", "utf-32be-bom.xml", "utf-8-bom.xml"]
)
def test_feedparser_bom_corpus_served_as_text_xml_is_read(name):
    assert corpus(name, content_type="text/xml").error is None


@pytest.mark.parametrize("codec", ["utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be"])
@pytest.mark.parametrize("content_type", ["text/xml", "text/xml; charset=us-ascii", "application/rss+xml"])
def test_utf16_and_utf32_feeds_with_a_byte_order_mark_are_read_whatever_the_content_type(codec, content_type):
    xml = rss([item(title="Саммит ШОС — 上海合作组织峰会")]).decode("utf-8")
    xml = xml.replace('encoding="utf-8"', f'encoding="{codec[:6]}"')
    body = "\ufeff".encode(codec) + xml.encode(codec)
    got = parse_feed("t", body, content_type=content_type, fetched_at=FETCHED)
    assert got.error is None
    assert [e.title for e in got.entries] == ["Саммит ШОС — 上海合作组织峰会"]


def json_feed(version: str = "1.1", **extra) -> bytes:
    import json

    doc = {
        "version": f"https://jsonfeed.org/version/{version}",
        "title": "Example <b>news</b>",
        "home_page_url": "https://news.example/",
        "language": "ru",
        "items": [
            {
                "id": "https://news.example/1",
                "url": "/1",
                "title": "Путин и Си: <итоги> встречи",
                "content_html": '<p>Text <a href="/more">more</a></p><script>x()</script>',
                "date_published": "2025-09-01T12:00:00+03:00",
                "authors": [{"name": "Редакция"}],
            },
            {"id": 2, "content_text": "No title, plain <text>", "date_published": "2025-09-01T10:00:00Z"},
        ],
        **extra,
    }
    return json.dumps(doc, ensure_ascii=False).encode("utf-8")


@pytest.mark.parametrize("content_type", ["application/feed+json", "application/json", "text/plain"])
def test_a_json_feed_1_1_is_read(content_type):
    got = parse_feed(
        "t", json_feed(), content_type=content_type, url="https://news.example/feed.json", fetched_at=FETCHED
    )
    assert got.error is None and got.title == "Example <b>news</b>" and got.language == "ru"
    first, second = got.entries
    assert (first.entry_id, first.title, first.link) == (
        "https://news.example/1",
        "Путин и Си: <итоги> встречи",
        "https://news.example/1",
    )
    assert first.published == datetime(2025, 9, 1, 9, 0, tzinfo=UTC) and not first.published_fallback
    assert "<script" not in first.summary_html and 'href="https://news.example/more"' in first.summary_html
    assert first.author == "Редакция"
    assert second.entry_id == "2" and second.summary_html == "No title, plain &lt;text&gt;"


def test_a_json_feed_1_0_with_a_single_author_is_read():
    body = json_feed("1", author={"name": "x"})
    body = body.replace(
        b'"authors": [{"name": "\xd0\xa0\xd0\xb5\xd0\xb4\xd0\xb0\xd0\xba\xd1\x86\xd0\xb8\xd1\x8f"}]',
        b'"author": {"name": "Desk"}',
    )
    got = parse_feed("t", body, content_type="application/json", fetched_at=FETCHED)
    assert got.error is None and got.entries[0].author == "Desk"


@pytest.mark.parametrize(
    ("body", "reason"),
    [(b'{"version": "1", "items": []}', "not a JSON Feed"), (b'{"items": [', "not readable JSON")],
)
def test_json_that_is_not_a_json_feed_fails_with_a_reason(body, reason):
    got = parse_feed("t", body, content_type="application/json", fetched_at=FETCHED)
    assert got.error is not None and reason in got.error and not got.entries
