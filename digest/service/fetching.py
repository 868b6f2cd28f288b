"""Polling: which feeds are due, fetched and parsed (in worker processes when worth it), stored.

    store.feed_states                          # what we knew
    | select_feeds                             # which are due and not held back
    | store.claim_feeds                        # leased to this poller (--due: daemon, cron)
    | workers.shard_by_host                    # pure: one host's feeds stay in one shard
    | workers.run_shard, one per core:         # worker processes, each with its own event loop
    |     fetch.Fetcher.fetch  (concurrent)    #   network edge: per-host pools, deadline, caps
    |     parse.parse_feed                     #   pure, CPU-bound
    |     judge.classify                       #   pure: topics, tags, why, entities
    |     poll.next_state                      #   pure
    | store.record_fetches                     # this process, group commit: entries + verdicts

Both cores fetch and parse; this process only writes. Runs with few feeds (the daemon's usual
poll) stay in one process unless isolation is asked for.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime

from digest.config import FeedSettings, LoadedConfig
from digest.feeds.workers import (
    Clock,
    FeedJob,
    FeedOutcome,
    FetchWorkers,
    rules_of,
    run_shard,
    shard_by_host,
    utcnow,
    worker_count,
)
from digest.model.poll import held_back, is_due
from digest.model.records import FeedReport, FeedState, FetchStatus, FetchSummary, FetchWrite
from digest.storage.lease import holder_id, wall_clock
from digest.storage.store import Store


@dataclass(frozen=True)
class FetchOptions:
    only: str | None = None  # one feed by name
    force: bool = False  # ignore back-off and Retry-After
    due_only: bool = False  # skip feeds whose interval has not elapsed (daemon, cron)
    # fetch and parse in a worker process even for a few feeds: a parser stuck on one body is
    # then stopped (workers.FetchWorkers) instead of hanging the caller (the daemon)
    isolate: bool = False


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


class GroupCommit:
    """Group commit: one task writes every outcome that is ready in one transaction.

    A transaction has a fixed cost, and the outcomes of a big run arrive a few milliseconds
    apart, so the writer lingers a moment for company. It knows how many outcomes a run expects
    and does not linger after the last. If a batch fails, its feeds are retried one by one so
    that one bad feed fails alone.
    """

    LINGER = 0.03  # seconds a batch waits for more outcomes
    MOST = 64  # outcomes in one transaction

    def __init__(self, store: Store, expected: int | None = None) -> None:
        self.store = store
        self.queue: asyncio.Queue[tuple[FetchWrite, asyncio.Future[tuple[int, int]]] | None] = asyncio.Queue()
        self.expected = expected  # None: unknown, always linger
        self.received = 0

    async def write(self, item: FetchWrite) -> tuple[int, int]:
        fut: asyncio.Future[tuple[int, int]] = asyncio.get_running_loop().create_future()
        await self.queue.put((item, fut))
        return await fut

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        stop = False
        while not stop:
            first = await self.queue.get()
            if first is None:
                return
            batch = [first]
            self.received += 1
            until = loop.time() + self.LINGER
            while len(batch) < self.MOST:
                if self.queue.empty():
                    if self.expected is not None and self.received >= self.expected:
                        break  # nothing more is coming
                    try:
                        nxt = await asyncio.wait_for(self.queue.get(), until - loop.time())
                    except TimeoutError:
                        break
                else:
                    nxt = self.queue.get_nowait()
                if nxt is None:
                    stop = True
                    break
                batch.append(nxt)
                self.received += 1
            await self._flush(batch)

    async def _flush(self, batch: list[tuple[FetchWrite, asyncio.Future[tuple[int, int]]]]) -> None:
        try:
            counts = await asyncio.to_thread(self.store.record_fetches, [w for w, _ in batch])
        except Exception:
            if len(batch) == 1:
                if not batch[0][1].done():  # its caller may have been cancelled meanwhile
                    batch[0][1].set_exception(sys.exc_info()[1] or RuntimeError("write failed"))
                return
            for item in batch:
                await self._flush([item])
            return
        for (_, fut), n in zip(batch, counts, strict=True):
            if not fut.done():
                fut.set_result(n)


async def fetch_feeds(
    loaded: LoadedConfig,
    store: Store,
    options: FetchOptions | None = None,
    *,
    clock: Clock = utcnow,
    on_report: Callable[[FeedReport], None] | None = None,
    on_start: Callable[[int], None] | None = None,
) -> FetchSummary:
    """Poll the selected feeds and store what they bring, in worker processes when the number
    of feeds is worth it (workers.worker_count)."""
    options = options or FetchOptions()
    store.sync_feeds((f.name, loaded.feed_url(f.url)) for f in loaded.config.feeds)
    return await _fetch(loaded, store, store.feed_states(), options, clock, on_report, on_start)


async def _fetch(
    loaded: LoadedConfig,
    store: Store,
    states: dict[str, FeedState],
    options: FetchOptions,
    clock: Clock,
    on_report: Callable[[FeedReport], None] | None,
    on_start: Callable[[int], None] | None,
) -> FetchSummary:
    config = loaded.config
    feeds, deferred = select_feeds(loaded, states, clock(), options)
    if options.due_only and feeds:
        feeds = await _claim(loaded, store, feeds, states)
    jobs = [
        FeedJob(
            f.name, states[f.name].effective_url, f.language, f.timezone, config.interval(f), states[f.name]
        )
        for f in feeds
    ]
    if on_start:
        on_start(len(jobs) + len(deferred))
    reports: list[FeedReport] = []
    for r in deferred:
        reports.append(r)
        if on_report:
            on_report(r)
    writer = GroupCommit(store, expected=len(jobs))
    writing = asyncio.create_task(writer.run())

    async def on_outcome(outcome: FeedOutcome) -> None:
        report = outcome.report
        if outcome.state.url:  # a crashed worker's placeholder has no state to write
            new, updated = await writer.write(
                FetchWrite(outcome.state, outcome.entries, clock(), outcome.http_status, outcome.verdicts)
            )
            report = replace(report, new_entries=new, updated_entries=updated)
        reports.append(report)
        if on_report:
            on_report(report)

    count = worker_count(loaded, len(jobs))
    least = 1 if options.isolate else 2
    workers = FetchWorkers(count, loaded.compiled_rules()) if jobs and count >= least else None
    try:
        if workers is not None:
            # the global cap is shared out: each worker gets its part (per-host caps hold by sharding)
            share = config.http.model_copy(
                update={"concurrency": max(1, config.http.concurrency // workers.count)}
            )
            shards = shard_by_host(jobs, workers.count)
            await workers.run(shards, share, config.http.max_backoff, loaded.rules_source(), on_outcome)
        else:
            # classified beside the parse; organise() then only clusters (and catches up)
            await run_shard(
                jobs,
                config.http,
                on_outcome,
                clock=clock,
                max_backoff=config.http.max_backoff,
                rules=rules_of(loaded),
            )
    finally:
        if workers is not None:
            workers.close()
        await writer.queue.put(None)
        await writing
    order = {f.name: i for i, f in enumerate(config.feeds)}
    return FetchSummary(tuple(sorted(reports, key=lambda r: order.get(r.feed, 0))))


async def _claim(
    loaded: LoadedConfig,
    store: Store,
    feeds: list[FeedSettings],
    states: dict[str, FeedState],
) -> list[FeedSettings]:
    """The due feeds leased to this poller (store.claim_feeds): another daemon's, or one just
    polled by another, are left to it. A poll by hand (`digest fetch` without --due) claims
    nothing: it fetches what it is asked to."""

    seen = {f.name: states[f.name].last_fetched for f in feeds}
    lease = loaded.config.delivery.lease
    ours = await asyncio.to_thread(store.claim_feeds, seen, holder_id(), wall_clock(), lease)
    return [f for f in feeds if f.name in ours]


def open_store(loaded: LoadedConfig) -> Store:

    return Store(loaded.database_url)
