"""The service layer: runs the stages in order. The CLI, the daemon and the web app call this.

store.feed_states                       # what we knew
| poll: pick feeds (due, not held back)  # pure
| fetch.Fetcher.fetch   (concurrent)     # network edge
| parse.parse_feed      (process pool)   # pure, CPU-bound: both cores
| poll.next_state                        # pure
| store.record_fetch                     # one transaction per feed
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
from collections.abc import Callable
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial

from .config import FeedSettings, LoadedConfig
from .fetch import Fetcher
from .parse import parse_feed
from .poll import held_back, is_due, next_state
from .records import FeedReport, FeedState, FetchRequest, FetchResult, FetchStatus, FetchSummary, ParsedFeed
from .store import Store

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class FetchOptions:
    only: str | None = None  # one feed by name
    force: bool = False  # ignore back-off and Retry-After
    due_only: bool = False  # skip feeds whose interval has not elapsed (daemon, cron)


def select_feeds(
    loaded: LoadedConfig, states: dict[str, FeedState], now: datetime, options: FetchOptions
) -> tuple[list[FeedSettings], list[FeedReport]]:
    """-> (feeds to fetch, reports for feeds deferred by back-off)."""
    chosen, deferred = [], []
    for feed in loaded.config.feeds:
        if options.only is not None and feed.name != options.only:
            continue
        if not feed.enabled and options.only is None:
            continue
        state = states[feed.name]
        if not options.force and held_back(state, now):
            deferred.append(
                FeedReport(feed.name, FetchStatus.DEFERRED, error=state.last_error, next_poll=state.next_poll)
            )
            continue
        if options.due_only and not is_due(state, now):
            continue
        chosen.append(feed)
    return chosen, deferred


class _Parser:
    """Parses in a process pool when there is more than one core and more than one feed."""

    def __init__(self, workers: int, expected: int) -> None:
        self.workers = workers or os.cpu_count() or 1
        self.use_processes = self.workers > 1 and expected > 2
        self._pool: Executor | None = None

    def executor(self) -> Executor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(self.workers) if self.use_processes else ThreadPoolExecutor(1)
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)


async def fetch_feeds(
    loaded: LoadedConfig,
    store: Store,
    options: FetchOptions = FetchOptions(),
    *,
    clock: Clock = utcnow,
    on_report: Callable[[FeedReport], None] | None = None,
    on_start: Callable[[int], None] | None = None,
) -> FetchSummary:
    config = loaded.config
    store.sync_feeds((f.name, loaded.feed_url(f.url)) for f in config.feeds)
    states = store.feed_states()
    feeds, deferred = select_feeds(loaded, states, clock(), options)
    if on_start:
        on_start(len(feeds) + len(deferred))
    reports: list[FeedReport] = []
    for r in deferred:
        reports.append(r)
        if on_report:
            on_report(r)
    parser = _Parser(config.http.parse_workers, len(feeds))
    write_lock = asyncio.Lock()
    loop = asyncio.get_running_loop()

    async def one(fetcher: Fetcher, feed: FeedSettings) -> FeedReport:
        state = states[feed.name]
        request = FetchRequest(feed.name, state.effective_url, state.etag, state.last_modified)
        result = await fetcher.fetch(request)
        parsed: ParsedFeed | None = None
        body_hash = None
        if result.status is FetchStatus.OK and result.body is not None:
            body_hash = hashlib.sha256(result.body).hexdigest()
            if body_hash != state.body_hash:  # an unchanged 200 skips parsing
                parsed = await loop.run_in_executor(
                    parser.executor(),
                    partial(
                        parse_feed,
                        feed.name,
                        result.body,
                        content_type=result.content_type,
                        content_language=result.content_language,
                        url=result.final_url,
                        fetched_at=clock(),
                        language=feed.language,
                        timezone=feed.timezone,
                    ),
                )
        now = clock()
        new_state = next_state(
            state,
            result,
            parsed,
            now,
            interval=config.interval(feed),
            max_backoff=config.http.max_backoff,
            body_hash=body_hash,
            jitter=random.random(),
        )
        entries = parsed.entries if parsed is not None and parsed.error is None else ()
        async with write_lock:  # one writer at a time; the loop keeps serving sockets meanwhile
            new, updated = await asyncio.to_thread(
                store.record_fetch, new_state, entries, now, http_status=result.http_status
            )
        return _report(result, parsed, new_state, new, updated)

    try:
        async with Fetcher(config.http) as fetcher:
            for coro in asyncio.as_completed([one(fetcher, f) for f in feeds]):
                report = await coro
                reports.append(report)
                if on_report:
                    on_report(report)
    finally:
        parser.close()
    order = {f.name: i for i, f in enumerate(config.feeds)}
    return FetchSummary(tuple(sorted(reports, key=lambda r: order.get(r.feed, 0))))


def _report(
    result: FetchResult, parsed: ParsedFeed | None, state: FeedState, new: int, updated: int
) -> FeedReport:
    status = FetchStatus(state.status) if state.status else result.status
    return FeedReport(
        feed=result.feed,
        status=status,
        new_entries=new,
        updated_entries=updated,
        error=state.last_error,
        warning=parsed.warning if parsed else None,
        next_poll=state.next_poll,
        http_status=result.http_status,
    )


def open_store(loaded: LoadedConfig) -> Store:
    return Store(loaded.database_url)
