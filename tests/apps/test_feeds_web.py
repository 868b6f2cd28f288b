"""`digest serve`: the stories as Atom feeds (conditional GET) and the search page."""

from __future__ import annotations

import asyncio
import re
import shutil
from datetime import timedelta
from pathlib import Path

import feedparser
import pytest
from starlette.testclient import TestClient

from digest.apps.web import create_app
from digest.config import load_config
from digest.model.subscribers import Subscriber
from digest.service.fetching import FetchOptions, fetch_feeds, utcnow
from digest.service.lookup import feed_stories
from digest.service.organising import organise
from digest.storage.store import Store

ROOT = Path(__file__).resolve().parents[2]


def make_site(tmp_path: Path, db_url: str, archive: str, started):
    src = tmp_path / f"site-{archive}"
    shutil.copytree(ROOT / "examples" / "offline", src)
    cfg = src / "feeds.yaml"
    text = cfg.read_text().replace("sqlite:///digest.db", f"'{db_url}'").split("\nsubscribers:")[0]
    cfg.write_text(
        text.replace(
            "  secret: offline-example-secret",
            f"  secret: web-secret\n  base_url: https://digest.example.org\n  archive: {archive}",
        )
    )
    loaded = load_config(cfg)
    store = Store(loaded.database_url)
    asyncio.run(fetch_feeds(loaded, store, FetchOptions()))
    organise(loaded, store)
    client = started(create_app(loaded), base_url="https://digest.example.org")
    return client, loaded, store


def archive_of(client: TestClient, loaded, store: Store, sid: int) -> str:
    """A subscriber's archive page, reached as they reach it: their digest's preferences link,
    then "Past digests" (the links are signed however tokens.py signs them)."""
    from digest.service.compose import link_signer

    sub = store.subscriber(sid)
    assert sub is not None
    prefs = link_signer(loaded, store).links(sub.id).preferences.removeprefix("https://digest.example.org")
    return re.search(r'href="(/archive/[^"]+)"', client.get(prefs).text).group(1)  # type: ignore[union-attr]


def feed_of_page(client: TestClient, archive: str) -> str:
    return re.search(r'href="(/feeds/subscriber/[^"]+)"', client.get(archive).text).group(1)  # type: ignore[union-attr]


@pytest.fixture
def public(tmp_path, db_url, started):
    client, loaded, store = make_site(tmp_path, db_url, "public", started)
    yield client, loaded, store
    store.close()


@pytest.fixture
def private(tmp_path, db_url, started):
    client, loaded, store = make_site(tmp_path, db_url, "private", started)
    yield client, loaded, store
    store.close()


def test_topic_feeds_are_valid_atom_with_the_stories(public):
    client, _, _ = public
    r = client.get("/feeds/sco.atom")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/atom+xml")
    parsed = feedparser.parse(r.content)
    assert parsed.bozo == 0 and parsed.version == "atom10"
    titles = [e.title for e in parsed.entries]
    assert "SCO leaders gather in Tianjin" in " | ".join(titles)
    assert len({e.id for e in parsed.entries}) == len(parsed.entries)  # unique ids
    assert all(e.id.startswith("urn:uuid:") for e in parsed.entries)
    assert parsed.feed.links[0].href == "https://digest.example.org/feeds/sco.atom"
    # the same ids on the next request: a reader sees nothing new
    assert [e.id for e in feedparser.parse(client.get("/feeds/sco.atom").content).entries] == [
        e.id for e in parsed.entries
    ]
    assert client.get("/feeds/nosuchtopic.atom").status_code == 404
    assert "default-src 'none'" in r.headers["Content-Security-Policy"]


def test_a_repeat_gets_304_until_a_story_changes(public):
    client, loaded, store = public
    first = client.get("/feeds/putin-xi.atom")
    etag, modified = first.headers["ETag"], first.headers["Last-Modified"]
    again = client.get("/feeds/putin-xi.atom", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b"" and again.headers["ETag"] == etag
    assert client.get("/feeds/putin-xi.atom", headers={"If-Modified-Since": modified}).status_code == 304
    assert client.get("/feeds/putin-xi.atom", headers={"If-None-Match": '"other"'}).status_code == 200
    # a story of the feed changes: the old validators no longer match
    story = feed_stories(loaded, store, topics=["putin-xi"])[-1].view.id
    entry_id = next(c.stored.id for c in store.classified_entries() if c.story_id == story)
    store.assign_stories({entry_id: story}, utcnow() + timedelta(seconds=2))  # HTTP dates: whole seconds
    changed = client.get("/feeds/putin-xi.atom", headers={"If-None-Match": etag})
    assert changed.status_code == 200 and changed.headers["ETag"] != etag
    assert client.get("/feeds/putin-xi.atom", headers={"If-Modified-Since": modified}).status_code == 200


def test_topic_feeds_are_private_when_the_archive_is(private):
    client, _, _ = private
    assert client.get("/feeds/sco.atom").status_code == 404


def test_a_subscriber_feed_needs_its_signed_link_and_has_their_topics_and_tags_only(private):
    client, loaded, store = private
    made = iter(range(100))

    def feed_of(**prefs: object) -> tuple[list[str], str, str]:
        address = f"reader{next(made)}@example.org"
        sid, _ = store.add_subscriber(Subscriber(address, **prefs), utcnow())  # type: ignore[arg-type]
        archive = archive_of(client, loaded, store, sid)
        url = feed_of_page(client, archive)
        r = client.get(url)
        parsed = feedparser.parse(r.content)
        assert r.status_code == 200 and parsed.bozo == 0
        return [e.title for e in parsed.entries], url, archive

    everything, url, archive = feed_of()
    assert len(everything) == 2  # the example's two stories
    [putin_xi] = feed_of(topics=("putin-xi",))[0]
    assert "Putin and Xi" in putin_xi
    other_tag = next(t.name for t in loaded.rules.tags if t.name != "summit")
    assert feed_of(tags=(other_tag,))[0] == [] and len(feed_of(tags=("summit",))[0]) == 2
    token = url.removeprefix("/feeds/subscriber/").removesuffix(".atom")
    archive_token = archive.removeprefix("/archive/")
    # change the signature's first character (the last one's low bits are base64 padding: a
    # changed last character can decode to the same signature)
    payload, signature = token.rsplit(".", 1)
    tampered = f"{payload}.{'B' if signature[0] == 'A' else 'A'}{signature[1:]}"
    for forged in (archive_token, tampered, "x.y"):  # another purpose's token is no feed token
        assert client.get(f"/feeds/subscriber/{forged}.atom").status_code == 404


def test_the_archive_page_links_the_feeds_and_a_search_box(private):
    client, loaded, store = private
    sid, _ = store.add_subscriber(Subscriber("arch@example.org"), utcnow())
    archive = archive_of(client, loaded, store, sid)
    token = archive.removeprefix("/archive/")
    page = client.get(archive).text
    feeds = re.findall(
        r'<link rel="alternate" type="application/atom\+xml" title="[^"]*" href="([^"]+)"', page
    )
    assert feeds and all(f.startswith("/feeds/subscriber/") for f in feeds)  # private: no topic feeds
    assert client.get(feeds[0]).status_code == 200
    assert f'<form method="get" action="/search/{token}"' in page
    # and the preferences page, where every digest's footer leads, names the same feed
    from digest.service.compose import link_signer

    sub = store.subscriber(sid)
    assert sub is not None
    prefs = link_signer(loaded, store).links(sub.id).preferences.removeprefix("https://digest.example.org")
    assert f'href="{feeds[0]}"' in client.get(prefs).text


@pytest.mark.parametrize("words", ["Tianjin", "普京", "ШОС"])
def test_the_search_page_finds_stories_in_each_language(public, words):
    client, _, _ = public
    r = client.get("/search", params={"q": words})
    assert r.status_code == 200 and "No story has" not in r.text
    assert r.text.count("<li>") >= 1 and 'rel="alternate"' in r.text
    assert client.get("/search", params={"q": "zzzzqqq"}).text.count("No story has all of these words") == 1


def test_search_is_behind_the_archive_token_when_the_archive_is_private(private):
    client, loaded, store = private
    assert client.get("/search", params={"q": "Tianjin"}).status_code == 404
    sid, _ = store.add_subscriber(Subscriber("s@example.org"), utcnow())
    token = archive_of(client, loaded, store, sid).removeprefix("/archive/")
    assert "Tianjin" in client.get(f"/search/{token}", params={"q": "Tianjin"}).text
    assert client.get("/search/forged", params={"q": "Tianjin"}).status_code == 400


def test_what_is_typed_is_shown_escaped(public):
    client, _, _ = public
    r = client.get("/search", params={"q": '"><script>alert(1)</script>'})
    assert r.status_code == 200 and "<script>alert" not in r.text and "&lt;script&gt;" in r.text
    assert "script-src 'self'" in r.headers["Content-Security-Policy"]
