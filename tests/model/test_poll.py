"""Pure polling decisions: back-off, Retry-After, validators."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from digest.model.poll import backoff, held_back, next_state
from digest.model.records import FeedState, FetchResult, FetchStatus, ParsedFeed

NOW = datetime(2025, 9, 1, 12, 0, tzinfo=UTC)
OK = FetchResult(
    "f", "http://x", FetchStatus.OK, 200, etag='"2"', last_modified="Mon, 01 Sep 2025 00:00:00 GMT"
)
FAIL = FetchResult("f", "http://x", FetchStatus.FAILED, 500, error="HTTP 500")


def test_backoff_doubles_and_is_capped():
    assert [backoff(n, 600, 3600) for n in (1, 2, 3, 4, 5)] == [600, 1200, 2400, 3600, 3600]


def test_failures_count_up_and_success_resets():
    state = FeedState("f", "http://x", etag='"1"')
    for n in (1, 2, 3):
        state = next_state(state, FAIL, None, NOW, interval=600, max_backoff=86400)
        assert state.error_count == n
        assert state.next_poll == NOW + timedelta(seconds=600 * 2 ** (n - 1))
        assert state.etag == '"1"'
        assert held_back(state, NOW)
    ok = next_state(state, OK, ParsedFeed("f", "Title", "en", ()), NOW, interval=600, max_backoff=86400)
    assert ok.error_count == 0 and ok.last_error is None and ok.etag == '"2"' and ok.title == "Title"
    assert not held_back(ok, NOW)


def test_retry_after_wins_over_a_shorter_backoff():
    busy = FetchResult("f", "http://x", FetchStatus.FAILED, 429, error="HTTP 429", retry_after=5000)
    state = next_state(FeedState("f", "http://x"), busy, None, NOW, interval=600, max_backoff=86400)
    assert state.next_poll == NOW + timedelta(seconds=5000)


def test_a_parse_failure_keeps_the_old_validators_so_the_body_is_fetched_again():
    state = FeedState("f", "http://x", etag='"1"', body_hash="old")
    bad = ParsedFeed("f", None, None, (), error="not a feed")
    new = next_state(state, OK, bad, NOW, interval=600, max_backoff=86400, body_hash="new")
    assert new.status == "failed" and new.etag == '"1"' and new.body_hash == "old"


def test_only_all_permanent_hops_move_the_feed():
    moved = FetchResult("f", "http://x", FetchStatus.NOT_MODIFIED, 304, permanent_url="http://y")
    assert (
        next_state(FeedState("f", "http://x"), moved, None, NOW, interval=60, max_backoff=60).fetch_url
        == "http://y"
    )
