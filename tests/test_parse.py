"""Parsing: bytes in, clean entries out. The date, encoding and markup traps of notes §2."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from digest.parse import html_to_text, parse_feed
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
    from digest.parse import MAX_SUMMARY

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
    from digest.parse import _sanitised_to_text, sanitize_html

    clean = sanitize_html(markup, base="https://example.org/")
    assert _sanitised_to_text(clean) == html_to_text(clean)


def test_entries_survive_the_trip_between_processes():
    import pickle

    source = '<source url="https://agency.example/rss">Agency</source>'
    body = rss([item(author="A. Writer")]).replace(b"</item>", source.encode() + b"</item>")
    e = parse(body, url="https://news.example.org/rss").entries[0]
    assert e.source_title and e.author
    assert pickle.loads(pickle.dumps(e)) == e  # noqa: S301 (our own bytes)
