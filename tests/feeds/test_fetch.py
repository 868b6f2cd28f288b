"""Fetching against a real loopback HTTP server that misbehaves on purpose."""

from __future__ import annotations

import asyncio
import gzip
from datetime import UTC, datetime, timedelta

import pytest

from digest.model.records import FetchStatus, FetchSummary
from digest.service.fetching import FetchOptions, fetch_feeds, open_store
from digest.storage.store import Store
from tests.support.feedserver import FeedServer, Reply, atom, etag_of, gzip_bomb, rss
from tests.support.worlds import stored_count

ITEMS = [
    {
        "title": "SCO summit opens in Tianjin",
        "link": "https://example.org/a",
        "guid": "a",
        "description": "Leaders arrive.",
        "pubDate": "Sun, 31 Aug 2025 10:00:00 +0000",
    },
    {
        "title": "Putin and Xi hold talks",
        "link": "https://example.org/b",
        "guid": "b",
        "description": "Talks in Beijing.",
        "pubDate": "Mon, 01 Sep 2025 09:00:00 +0000",
    },
]


def feeds_yaml(**urls: str) -> str:
    return "feeds:\n" + "".join(f"  - name: {n}\n    url: '{u}'\n" for n, u in urls.items())


def run(loaded, options: FetchOptions | None = None) -> tuple[FetchSummary, Store]:
    store = Store(loaded.database_url)
    summary = asyncio.run(fetch_feeds(loaded, store, options or FetchOptions()))
    return summary, store


def report(summary: FetchSummary, feed: str):
    return next(r for r in summary.reports if r.feed == feed)


def test_conditional_get_round_trip_stores_once_and_sends_validators(feed_server: FeedServer, write_config):
    body = rss(ITEMS)
    url = feed_server.route("/feed.xml", Reply(body=body, etag=etag_of(body), last_modified=1_700_000_000))
    loaded = write_config(feeds_yaml(main=url))

    first, store = run(loaded)
    assert report(first, "main").status is FetchStatus.OK
    assert report(first, "main").new_entries == 2
    second, _ = run(loaded)
    assert report(second, "main").status is FetchStatus.NOT_MODIFIED
    assert report(second, "main").new_entries == 0
    sent = feed_server.requests_for("/feed.xml")[-1].headers
    assert sent["if-none-match"] == etag_of(body)
    assert sent["if-modified-since"].endswith("GMT")
    assert "digest/" in sent["user-agent"]
    assert stored_count(store) == 2
    assert store.feed_states()["main"].etag == etag_of(body)


def test_unchanged_body_without_validators_is_not_parsed_again(feed_server: FeedServer, write_config):
    url = feed_server.route("/plain.xml", Reply(body=rss(ITEMS)))
    loaded = write_config(feeds_yaml(plain=url))
    run(loaded)
    second, store = run(loaded)
    r = report(second, "plain")
    assert r.status is FetchStatus.NOT_MODIFIED
    assert (r.new_entries, r.updated_entries) == (0, 0)
    assert stored_count(store) == 2


def test_permanent_redirect_chain_is_followed_and_recorded(feed_server: FeedServer, write_config):
    final = feed_server.route("/new.xml", Reply(body=rss(ITEMS)))
    feed_server.route("/mid", Reply(308, headers={"Location": "/new.xml"}))
    old = feed_server.route("/old", Reply(301, headers={"Location": "/mid"}))
    loaded = write_config(feeds_yaml(moved=old))
    summary, store = run(loaded)
    assert report(summary, "moved").new_entries == 2
    assert store.feed_states()["moved"].fetch_url == final
    run(loaded)
    assert feed_server.requests_for("/new.xml")[-1] is feed_server.log[-1]  # went straight there


def test_temporary_redirect_is_followed_but_not_recorded(feed_server: FeedServer, write_config):
    feed_server.route("/real.xml", Reply(body=rss(ITEMS)))
    start = feed_server.route("/temp", Reply(302, headers={"Location": "/real.xml"}))
    summary, store = run(write_config(feeds_yaml(temp=start)))
    assert report(summary, "temp").status is FetchStatus.OK
    assert store.feed_states()["temp"].fetch_url is None


def test_redirect_loop_fails_with_a_clear_reason(feed_server: FeedServer, write_config):
    feed_server.route("/loop-a", Reply(302, headers={"Location": "/loop-b"}))
    start = feed_server.route("/loop-b", Reply(302, headers={"Location": "/loop-a"}))
    summary, _ = run(write_config(feeds_yaml(loop=start)))
    r = report(summary, "loop")
    assert r.status is FetchStatus.FAILED
    assert "redirect" in (r.error or "")
    assert len(feed_server.log) <= 6  # the loop is cut after max_redirects


def test_429_retry_after_is_honoured_and_the_feed_waits(feed_server: FeedServer, write_config):
    url = feed_server.route("/busy", Reply(429, headers={"Retry-After": "7200"}))
    loaded = write_config(feeds_yaml(busy=url))
    before = datetime.now(UTC)
    summary, store = run(loaded)
    r = report(summary, "busy")
    assert r.status is FetchStatus.FAILED
    assert "7200" in (r.error or "")
    assert store.feed_states()["busy"].next_poll >= before + timedelta(seconds=7200)
    again, _ = run(loaded)
    assert report(again, "busy").status is FetchStatus.DEFERRED
    assert len(feed_server.requests_for("/busy")) == 1  # nothing sent while waiting
    run(loaded, FetchOptions(force=True))
    assert len(feed_server.requests_for("/busy")) == 2


def test_server_error_backs_off_and_keeps_earlier_good_data(feed_server: FeedServer, write_config):
    body = rss(ITEMS)
    feed_server.route("/flaky", Reply(body=body, etag=etag_of(body)))
    loaded = write_config(feeds_yaml(flaky=feed_server.url("/flaky")))
    run(loaded)
    feed_server.route("/flaky", Reply(500, b"oops"))
    summary, store = run(loaded)
    r = report(summary, "flaky")
    assert r.status is FetchStatus.FAILED and "500" in (r.error or "")
    state = store.feed_states()["flaky"]
    assert state.error_count == 1
    assert state.etag == etag_of(body)  # the last good validators survive
    assert stored_count(store, "flaky") == 2
    assert state.next_poll > datetime.now(UTC) + timedelta(minutes=25)  # default interval 30 min


@pytest.mark.parametrize(
    "reply", [Reply(hang=True), Reply(body=b"<rss>" + b" " * 200, drip=0.2)], ids=["hang", "slow-drip"]
)
def test_a_server_that_hangs_or_drips_hits_the_deadline(feed_server: FeedServer, write_config, reply):
    url = feed_server.route("/slow", reply)
    good = feed_server.route("/good.xml", Reply(body=rss(ITEMS)))
    loaded = write_config(feeds_yaml(slow=url, good=good), http={"deadline": "1.5s", "read_timeout": "1s"})
    started = datetime.now(UTC)
    summary, store = run(loaded)
    assert (datetime.now(UTC) - started).total_seconds() < 5
    r = report(summary, "slow")
    assert r.status is FetchStatus.FAILED
    assert "deadline" in (r.error or "") or "read_timeout" in (r.error or "")
    assert stored_count(store, "good") == 2  # one bad feed never stops the run


def test_gzip_bomb_is_rejected_without_inflating_it(feed_server: FeedServer, write_config):
    url = feed_server.route("/bomb", Reply(body=gzip_bomb(), headers={"Content-Encoding": "gzip"}))
    summary, store = run(write_config(feeds_yaml(bomb=url), http={"max_decoded": "4 MiB"}))
    r = report(summary, "bomb")
    assert r.status is FetchStatus.FAILED
    assert "inflates" in (r.error or "")
    assert stored_count(store) == 0


def test_gzip_encoded_feed_is_read(feed_server: FeedServer, write_config):
    url = feed_server.route(
        "/gz", Reply(body=gzip.compress(rss(ITEMS)), headers={"Content-Encoding": "gzip"})
    )
    summary, _ = run(write_config(feeds_yaml(gz=url)))
    assert report(summary, "gz").new_entries == 2


@pytest.mark.parametrize("headers", [{}, {"X-No-Length": "1"}], ids=["content-length", "no-length"])
def test_oversize_body_is_rejected(feed_server: FeedServer, write_config, headers):
    big = rss([{**ITEMS[0], "guid": str(i), "description": "x" * 2000} for i in range(100)])
    url = feed_server.route("/big", Reply(body=big, headers=headers))
    summary, store = run(write_config(feeds_yaml(big=url), http={"max_body": "64 KiB"}))
    r = report(summary, "big")
    assert r.status is FetchStatus.FAILED
    assert "max_body" in (r.error or "")
    assert stored_count(store) == 0


def test_broken_xml_keeps_usable_entries_with_a_warning(feed_server: FeedServer, write_config):
    broken = rss(ITEMS).replace(b"Leaders arrive.", b"Leaders & aides arrive <b>unclosed")
    url = feed_server.route("/broken", Reply(body=broken, headers={"Content-Type": "application/rss+xml"}))
    summary, store = run(write_config(feeds_yaml(broken=url)))
    r = report(summary, "broken")
    assert r.status is FetchStatus.OK and r.new_entries == 2
    assert "not well-formed" in (r.warning or "")
    titles = {s.entry.title for s in store.iter_entries()}
    assert "SCO summit opens in Tianjin" in titles


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"<!DOCTYPE html><html><body><h1>News</h1></body></html>", "HTML page"),
        (b"", "empty body"),
        (b"\x00\x01 this is not xml at all {", "not a readable feed"),
    ],
    ids=["html", "empty", "garbage"],
)
def test_non_feeds_fail_with_a_reason_and_store_nothing(
    feed_server: FeedServer, write_config, body, expected
):
    url = feed_server.route("/nonfeed", Reply(body=body, headers={"Content-Type": "text/html"}))
    summary, store = run(write_config(feeds_yaml(nonfeed=url)))
    r = report(summary, "nonfeed")
    assert r.status is FetchStatus.FAILED
    assert expected in (r.error or "")
    assert store.feed_states()["nonfeed"].body_hash is None  # retried in full next time
    assert stored_count(store) == 0


def test_windows_1251_rss_and_gb18030_atom_are_decoded(feed_server: FeedServer, write_config):
    ru = rss(
        [
            {
                "title": "Путин и Си Цзиньпин провели переговоры",
                "link": "https://ru.example/1",
                "guid": "1",
                "description": "Встреча в Кремле",
                "pubDate": "Tue, 21 Mar 2023 12:00:00 +0300",
            }
        ],
        encoding="windows-1251",
        language="ru",
    )
    zh = atom(
        [
            {
                "title": "习近平同普京举行会谈",
                "id": "urn:zh:1",
                "link": "https://zh.example/1",
                "summary": "上海合作组织峰会期间，两国元首会谈。朱镕基",
            }
        ],
        encoding="GB18030",
        language="zh-CN",
    )
    ru_url = feed_server.route("/ru.xml", Reply(body=ru, headers={"Content-Type": "application/rss+xml"}))
    zh_url = feed_server.route("/zh.xml", Reply(body=zh, headers={"Content-Type": "application/atom+xml"}))
    _, store = run(write_config(feeds_yaml(ru=ru_url, zh=zh_url)))
    got = {s.entry.feed: s.entry for s in store.iter_entries()}
    assert got["ru"].title == "Путин и Си Цзиньпин провели переговоры"
    assert got["ru"].language == "ru"
    assert got["ru"].published == datetime(2023, 3, 21, 9, 0, tzinfo=UTC)
    assert got["zh"].title == "习近平同普京举行会谈"
    assert got["zh"].summary_text.endswith("朱镕基")  # a GBK-only character survives
    assert got["zh"].language == "zh"


def test_per_host_limit_is_respected(write_config):
    with FeedServer(latency=0.2) as srv:
        body = rss(ITEMS)
        urls = {f"f{i}": srv.route(f"/f{i}.xml", Reply(body=body)) for i in range(12)}
        summary, _ = run(write_config(feeds_yaml(**urls), http={"per_host": 2}))
        assert summary.count(FetchStatus.OK) == 12
        assert srv.max_in_flight["127.0.0.1"] == 2


def test_file_urls_and_plain_paths_are_read(write_config, tmp_path):
    (tmp_path / "local.xml").write_bytes(rss(ITEMS))
    loaded = write_config(
        feeds_yaml(path="local.xml", uri=(tmp_path / "local.xml").as_uri(), missing="nope.xml")
    )
    summary, _ = run(loaded)
    assert report(summary, "path").new_entries == 2
    assert report(summary, "uri").new_entries == 2
    assert "does not exist" in (report(summary, "missing").error or "")


def test_unreachable_host_is_a_failure_not_a_crash(write_config):
    summary, _ = run(write_config(feeds_yaml(dead="http://127.0.0.1:9/feed.xml")))
    r = report(summary, "dead")
    assert r.status is FetchStatus.FAILED and "cannot connect" in (r.error or "")


def test_worker_processes_share_the_work_and_keep_per_host_limits(write_config):
    hosts = tuple(f"127.0.0.{i}" for i in range(1, 6))
    with FeedServer(hosts=hosts, latency=0.1) as srv:
        urls = {}
        for i in range(40):
            body = rss([{**ITEMS[0], "guid": f"{i}-a"}, {**ITEMS[1], "guid": f"{i}-b"}], title=f"feed {i}")
            srv.route(f"/w{i}.xml", Reply(body=body, etag=etag_of(body)))
            urls[f"w{i}"] = srv.url(f"/w{i}.xml", host=hosts[i % len(hosts)])
        loaded = write_config(feeds_yaml(**urls), http={"workers": 2, "per_host": 3})
        summary, store = run(loaded)
        assert summary.count(FetchStatus.OK) == 40
        assert stored_count(store) == 80
        assert all(n <= 3 for n in srv.max_in_flight.values())
        again, _ = run(loaded)
        assert again.count(FetchStatus.NOT_MODIFIED) == 40


def test_shards_never_split_a_host():
    from digest.feeds.workers import FeedJob, host_of, shard_by_host
    from digest.model.records import FeedState

    jobs = [
        FeedJob(f"f{i}", f"https://h{i % 7}.example/f{i}.xml", None, None, 60, FeedState(f"f{i}", "u"))
        for i in range(50)
    ]
    shards = shard_by_host(jobs, 3)
    assert sorted(j.name for s in shards for j in s) == sorted(j.name for j in jobs)
    hosts = [{host_of(j.url) for j in s} for s in shards]
    assert all(not (a & b) for i, a in enumerate(hosts) for b in hosts[i + 1 :])
    assert max(map(len, shards)) - min(map(len, shards)) <= 8  # roughly even


def _many_feeds(srv: FeedServer, n: int) -> dict[str, str]:
    urls = {}
    for i in range(n):
        body = rss([{**ITEMS[0], "guid": f"{i}-a"}, {**ITEMS[1], "guid": f"{i}-b"}], title=f"feed {i}")
        srv.route(f"/w{i}.xml", Reply(body=body, etag=etag_of(body)))
        urls[f"w{i}"] = srv.url(f"/w{i}.xml")
    return urls


def test_many_feeds_are_fetched_by_worker_processes_that_end_with_the_run(write_config):
    import multiprocessing

    with FeedServer() as srv:
        loaded = write_config(feeds_yaml(**_many_feeds(srv, 20)), http={"workers": 2})
        with open_store(loaded) as store:
            summary = asyncio.run(fetch_feeds(loaded, store))
            assert summary.count(FetchStatus.OK) == 20 and stored_count(store) == 40
            assert multiprocessing.active_children() == []
            idle = asyncio.run(fetch_feeds(loaded, store, FetchOptions(due_only=True)))
            assert idle.reports == ()  # nothing is due yet


def test_rules_that_do_not_compile_leave_entries_unclassified_until_fixed(write_config, tmp_path):
    from digest.config import load_config
    from digest.errors import ConfigError
    from digest.service.fetching import open_store
    from digest.service.organising import organise

    with FeedServer() as srv:
        feeds = feeds_yaml(**_many_feeds(srv, 20))
        loaded = write_config(feeds + "terms:\n  broken: ['re:(']\n", http={"workers": 2})
        with open_store(loaded) as store:
            summary = asyncio.run(fetch_feeds(loaded, store))
            assert summary.count(FetchStatus.OK) == 20  # the fetch itself does not need the rules
            assert len(store.unclassified(loaded.rules_hash)) == 40
            with pytest.raises(ConfigError, match="not a valid regex"):
                organise(loaded, store)
        path = tmp_path / "feeds.yaml"
        path.write_text(path.read_text().replace("terms:\n  broken: ['re:(']\n", ""))  # the shipped rules
        fixed = load_config(path)
        with open_store(fixed) as store:
            assert organise(fixed, store).classified == 40
            assert store.unclassified(fixed.rules_hash) == []


def test_a_worker_that_dies_fails_only_its_own_feeds(write_config, monkeypatch):
    import os

    import digest.feeds.workers

    real = digest.feeds.workers.parse_feed

    def parse_or_die(feed, *args, **kwargs):  # runs in the forked worker
        if feed == "w3":
            os._exit(3)
        return real(feed, *args, **kwargs)

    monkeypatch.setattr(digest.feeds.workers, "parse_feed", parse_or_die)
    with FeedServer() as srv:
        loaded = write_config(feeds_yaml(**_many_feeds(srv, 20)), http={"workers": 2})
        summary, store = run(loaded)
    dead = [r for r in summary.reports if r.status is FetchStatus.FAILED]
    assert dead and all("worker process died (exit code 3)" in (r.error or "") for r in dead)
    assert report(summary, "w3") in dead
    assert len(dead) < 20 and summary.count(FetchStatus.OK) == 20 - len(dead)  # those done before it died
    states = store.feed_states()
    assert all(states[r.feed].etag is None for r in dead)  # polled again next time, from scratch


def test_changing_the_rules_classifies_everything_again_and_nothing_else_does(offline):
    from digest.config import load_config
    from digest.service.fetching import open_store
    from digest.service.organising import organise

    loaded = load_config(offline)
    with open_store(loaded) as store:
        asyncio.run(fetch_feeds(loaded, store))
        assert not organise(loaded, store).redone
        same = organise(load_config(offline), store)  # the same rules, read again: nothing to redo
        assert not same.redone and same.classified == 0
        offline.write_text(offline.read_text() + "clustering:\n  window: 2d\n")
        changed = organise(load_config(offline), store)
        assert changed.redone and changed.classified == 9


def test_a_stuck_worker_is_stopped_and_its_feeds_reported(write_config, monkeypatch):
    import time as _time

    import digest.feeds.workers

    real = digest.feeds.workers.parse_feed

    def parse_or_hang(feed, *args, **kwargs):  # runs in the forked worker: a parser spinning forever
        if feed == "w3":
            _time.sleep(3600)
        return real(feed, *args, **kwargs)

    monkeypatch.setattr(digest.feeds.workers, "parse_feed", parse_or_hang)
    with FeedServer() as srv:
        loaded = write_config(feeds_yaml(**_many_feeds(srv, 20)), http={"workers": 2, "deadline": "1s"})
        started = _time.monotonic()
        summary, _ = run(loaded)
    assert _time.monotonic() - started < 30  # stopped after 2 x deadline + 5 s of silence, not an hour
    stuck = report(summary, "w3")
    assert stuck.status is FetchStatus.FAILED and "no feed finished for 7s" in (stuck.error or "")
    assert summary.count(FetchStatus.OK) + summary.count(FetchStatus.FAILED) == 20


def test_an_isolated_poll_of_one_feed_survives_a_stuck_parser(write_config, monkeypatch):
    """The daemon polls a few feeds at a time, isolated in a worker: a parser stuck on one body
    costs that poll 2 x deadline + 5 s, not the daemon."""
    import time as _time

    import digest.feeds.workers

    monkeypatch.setattr(digest.feeds.workers, "parse_feed", lambda *a, **k: _time.sleep(3600))
    with FeedServer() as srv:
        loaded = write_config(feeds_yaml(**_many_feeds(srv, 1)), http={"deadline": "1s"})
        summary, _ = run(loaded, FetchOptions(isolate=True))
    assert "no feed finished" in (report(summary, "w0").error or "")


def test_outcomes_arriving_close_together_share_a_transaction(db_url):
    """Outcomes that are ready together are written in one transaction (a transaction has a fixed
    cost), and every outcome is written and answered."""
    from digest.model.records import FeedState, FetchWrite
    from digest.service.fetching import GroupCommit

    class CountingStore(Store):
        def __init__(self, url: str) -> None:
            super().__init__(url)
            self.batches: list[int] = []

        def record_fetches(self, batch):
            self.batches.append(len(batch))
            return super().record_fetches(batch)

    store = CountingStore(db_url)
    names = [f"f{i}" for i in range(12)]
    store.sync_feeds((n, f"https://e.example/{n}") for n in names)
    now = datetime.now(UTC)

    async def run() -> list[tuple[int, int]]:
        writer = GroupCommit(store, expected=len(names))
        task = asyncio.create_task(writer.run())

        async def one(name: str) -> tuple[int, int]:
            return await writer.write(FetchWrite(FeedState(name, f"https://e.example/{name}"), (), now))

        results = await asyncio.gather(*(one(n) for n in names))
        await writer.queue.put(None)
        await task
        return results

    assert asyncio.run(run()) == [(0, 0)] * 12
    assert store.batches == [12]
    store.close()


# -- feed discovery (issue 13): a site's page names its feed, as rss2email and Miniflux follow --


def page(*links: str) -> bytes:
    return (
        "<!DOCTYPE html><html><head><title>News</title>" + "".join(links) + "</head><body>Hi</body></html>"
    ).encode()


@pytest.mark.parametrize(
    ("kind", "body"),
    [
        ("application/rss+xml", rss(ITEMS)),
        ("application/atom+xml", atom([{**i, "id": i["guid"]} for i in ITEMS])),
        (
            "application/feed+json",
            b'{"version": "https://jsonfeed.org/version/1.1", "title": "J", "items": ['
            b'{"id": "a", "url": "https://example.org/a", "title": "SCO summit opens in Tianjin"},'
            b'{"id": "b", "url": "https://example.org/b", "title": "Putin and Xi hold talks"}]}',
        ),
    ],
)
def test_a_site_page_is_followed_to_the_feed_it_names(feed_server: FeedServer, write_config, kind, body):
    feed_server.route("/feeds/main", Reply(body=body, headers={"Content-Type": kind}))
    site = feed_server.route(
        "/",
        Reply(
            body=page(
                '<link rel="stylesheet" href="/s.css">',
                '<link rel="icon" type="image/png" href="/i.png">',
                f'<link rel="alternate" type="{kind}" title="Main" href="feeds/main">',
                '<link rel="alternate" type="application/rss+xml" href="/feeds/other">',
            ),
            headers={"Content-Type": "text/html; charset=utf-8"},
        ),
    )
    loaded = write_config(feeds_yaml(site=site))
    summary, store = run(loaded)
    r = report(summary, "site")
    assert r.status is FetchStatus.OK and r.new_entries == 2, r.error
    assert store.feed_states()["site"].fetch_url == feed_server.url("/feeds/main")
    assert {s.entry.title for s in store.iter_entries()} == {
        "SCO summit opens in Tianjin",
        "Putin and Xi hold talks",
    }
    assert not feed_server.requests_for("/feeds/other")
    run(loaded)  # the next poll asks the feed itself, not the page
    assert feed_server.log[-1].path == "/feeds/main" and len(feed_server.requests_for("/")) == 1


def test_a_page_naming_a_file_url_is_not_followed(feed_server: FeedServer, write_config, tmp_path):
    secret = tmp_path / "local.xml"
    secret.write_bytes(rss(ITEMS))
    site = feed_server.route(
        "/",
        Reply(
            body=page(f'<link rel="alternate" type="application/rss+xml" href="{secret.as_uri()}">'),
            headers={"Content-Type": "text/html"},
        ),
    )
    summary, store = run(write_config(feeds_yaml(site=site)))
    r = report(summary, "site")
    assert r.status is FetchStatus.FAILED and "names no feed" in (r.error or "")
    assert stored_count(store) == 0


def test_a_page_whose_feed_fails_says_which_feed(feed_server: FeedServer, write_config):
    site = feed_server.route(
        "/",
        Reply(
            body=page('<link rel="alternate" type="application/atom+xml" href="/gone.xml">'),
            headers={"Content-Type": "text/html"},
        ),
    )
    summary, store = run(write_config(feeds_yaml(site=site)))
    r = report(summary, "site")
    assert r.status is FetchStatus.FAILED
    assert feed_server.url("/gone.xml") in (r.error or "") and "404" in (r.error or "")
    assert store.feed_states()["site"].fetch_url is None  # nothing learnt from a failure
