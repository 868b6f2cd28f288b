"""The service layer: runs the stages in order. The CLI, the daemon and the web app call this.

    store.feed_states                          # what we knew
    | select_feeds                             # pure: due, not held back
    | shard_by_host                            # pure: one host's feeds stay in one shard
    | run_shard, one per core:                 # worker processes, each with its own event loop
    |     fetch.Fetcher.fetch  (concurrent)    #   network edge: per-host pools, deadline, caps
    |     parse.parse_feed                     #   pure, CPU-bound
    |     select.classify (judge)              #   pure: topics, tags, why, entities
    |     poll.next_state                      #   pure
    | store.record_fetches                     # main process, group commit: entries + verdicts
    | organise                                 # clustering (and any classification left to do)

Both cores fetch and parse; the main process only writes. Runs with few feeds (the daemon's
usual poll) stay in one process.
"""

from __future__ import annotations

import asyncio
import hashlib
import multiprocessing
import os
import random
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
from typing import Any
from urllib.parse import urlsplit

from .config import FeedSettings, HttpSettings, LoadedConfig
from .fetch import Fetcher
from .parse import parse_feed
from .poll import held_back, is_due, next_state
from .records import Entry, FeedReport, FeedState, FetchRequest, FetchStatus, FetchSummary
from .store import FetchWrite, Store, Verdict

Clock = Callable[[], datetime]
# Below this many feeds, worker processes cost more than they save.
MIN_FEEDS_PER_WORKER = 8


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class FetchOptions:
    only: str | None = None  # one feed by name
    force: bool = False  # ignore back-off and Retry-After
    due_only: bool = False  # skip feeds whose interval has not elapsed (daemon, cron)


@dataclass(frozen=True, slots=True)
class FeedJob:
    """Everything a worker needs to poll one feed; picklable."""

    name: str
    url: str
    language: str | None
    timezone: str | None
    interval: float
    state: FeedState


@dataclass(frozen=True, slots=True)
class FeedOutcome:
    """What polling one feed produced: its next state and entries, and a line for the summary."""

    state: FeedState
    entries: tuple[Entry, ...]
    http_status: int | None
    report: FeedReport
    verdicts: dict[str, Verdict] | None = None  # selection's decisions, made beside the parse


def judge(entries: Sequence[Entry], rules: Any, rules_hash: str) -> dict[str, Verdict]:
    """Classify freshly parsed entries (pure; runs in the worker that parsed them)."""
    from .select import classify

    out = {}
    for e in entries:
        c = classify(e.title, e.summary_text, rules)
        out[e.entry_id] = Verdict(
            c.relevant,
            c.topics,
            c.tags,
            [r.as_dict() for r in c.why],
            c.entities,
            c.title_entities,
            rules_hash,
        )
    return out


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


def host_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{(parts.hostname or '').lower()}:{parts.port or ''}"


def shard_by_host(jobs: Sequence[FeedJob], shards: int) -> list[list[FeedJob]]:
    """Split jobs into at most `shards` even groups, never splitting one host (its limit stays exact)."""
    by_host: dict[str, list[FeedJob]] = {}
    for job in jobs:
        by_host.setdefault(host_of(job.url), []).append(job)
    out: list[list[FeedJob]] = [[] for _ in range(max(1, shards))]
    for group in sorted(by_host.values(), key=len, reverse=True):
        min(out, key=len).extend(group)
    return [s for s in out if s]


async def run_shard(
    jobs: Sequence[FeedJob],
    http: HttpSettings,
    emit: Callable[[FeedOutcome], object],
    *,
    clock: Clock = utcnow,
    max_backoff: float,
    rules: Any = None,
    rules_hash: str = "",
) -> None:
    """Fetch, parse, classify and decide for each job concurrently; emit each outcome as it is ready."""

    async def one(fetcher: Fetcher, job: FeedJob) -> None:
        state = job.state
        result = await fetcher.fetch(
            FetchRequest(job.name, state.effective_url, state.etag, state.last_modified)
        )
        parsed = None
        body_hash = None
        if result.status is FetchStatus.OK and result.body is not None:
            body_hash = hashlib.sha256(result.body).hexdigest()
            if body_hash != state.body_hash:  # an unchanged 200 skips parsing
                parsed = parse_feed(
                    job.name,
                    result.body,
                    content_type=result.content_type,
                    content_language=result.content_language,
                    url=result.final_url,
                    fetched_at=clock(),
                    language=job.language,
                    timezone=job.timezone,
                )
        now = clock()
        new_state = next_state(
            state,
            result,
            parsed,
            now,
            interval=job.interval,
            max_backoff=max_backoff,
            body_hash=body_hash,
            jitter=random.random(),
        )
        entries = parsed.entries if parsed is not None and parsed.error is None else ()
        status = FetchStatus(new_state.status) if new_state.status else result.status
        report = FeedReport(
            feed=job.name,
            status=status,
            error=new_state.last_error,
            warning=parsed.warning if parsed else None,
            next_poll=new_state.next_poll,
            http_status=result.http_status,
        )
        verdicts = judge(entries, rules, rules_hash) if rules is not None and entries else None
        await _maybe_await(emit(FeedOutcome(new_state, entries, result.http_status, report, verdicts)))

    async with Fetcher(http) as fetcher:
        await asyncio.gather(*(one(fetcher, job) for job in jobs))


async def _maybe_await(value: object) -> None:
    if asyncio.iscoroutine(value):
        await value


def _worker_main(
    jobs: list[FeedJob], http: HttpSettings, max_backoff: float, conn: Connection, rules: Any, rules_hash: str
) -> None:
    """Entry point of a worker process: run one shard, send each outcome up the pipe.
    (fork: the compiled rules arrive as they are, not pickled)"""
    try:
        asyncio.run(
            run_shard(jobs, http, conn.send, max_backoff=max_backoff, rules=rules, rules_hash=rules_hash)
        )
    finally:
        conn.send(None)  # end of shard
        conn.close()


class _Writer:
    """Group commit: one task writes every outcome that is ready in one transaction.

    Under load dozens of feeds share a commit; when idle each is written at once. If a batch
    fails, its feeds are retried one by one so that one bad feed fails alone.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self.queue: asyncio.Queue[tuple[FetchWrite, asyncio.Future[tuple[int, int]]] | None] = asyncio.Queue()

    async def write(self, item: FetchWrite) -> tuple[int, int]:
        fut: asyncio.Future[tuple[int, int]] = asyncio.get_running_loop().create_future()
        await self.queue.put((item, fut))
        return await fut

    async def run(self) -> None:
        stop = False
        while not stop:
            first = await self.queue.get()
            if first is None:
                return
            batch = [first]
            while not self.queue.empty():
                nxt = self.queue.get_nowait()
                if nxt is None:
                    stop = True
                    break
                batch.append(nxt)
            await self._flush(batch)

    async def _flush(self, batch: list[tuple[FetchWrite, asyncio.Future[tuple[int, int]]]]) -> None:
        try:
            counts = await asyncio.to_thread(self.store.record_fetches, [w for w, _ in batch])
        except Exception:
            if len(batch) == 1:
                batch[0][1].set_exception(sys.exc_info()[1] or RuntimeError("write failed"))
                return
            for item in batch:
                await self._flush([item])
            return
        for (_, fut), n in zip(batch, counts, strict=True):
            fut.set_result(n)


async def _run_in_workers(
    shards: list[list[FeedJob]],
    http: HttpSettings,
    max_backoff: float,
    on_outcome: Callable[[FeedOutcome], object],
    rules: Any = None,
    rules_hash: str = "",
) -> None:
    """One process per shard; outcomes stream back over pipes, read by the event loop."""
    # fork: the workers inherit the imported modules, so they start in milliseconds.
    ctx = multiprocessing.get_context("fork")
    loop = asyncio.get_running_loop()
    pending: dict[int, tuple[Connection, multiprocessing.process.BaseProcess, set[str]]] = {}
    done = loop.create_future()
    outcomes: asyncio.Queue[FeedOutcome] = asyncio.Queue()

    def readable(fd: int) -> None:
        conn, proc, left = pending[fd]
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            msg = None
        if msg is None:
            loop.remove_reader(fd)
            conn.close()
            del pending[fd]
            for name in left:  # a worker that died leaves its feeds unreported: report them
                outcomes.put_nowait(_crashed(name, proc.exitcode))
            if not pending and not done.done():
                done.set_result(None)
            return
        left.discard(msg.state.name)
        outcomes.put_nowait(msg)

    procs = []
    for shard in shards:
        parent, child = ctx.Pipe(duplex=False)
        proc = ctx.Process(
            target=_worker_main, args=(shard, http, max_backoff, child, rules, rules_hash), daemon=True
        )
        proc.start()
        child.close()
        pending[parent.fileno()] = (parent, proc, {j.name for j in shard})
        loop.add_reader(parent.fileno(), readable, parent.fileno())
        procs.append(proc)
    # Outcomes are handed on without waiting for each one's write, so that the writer can
    # commit every outcome that arrived meanwhile in one transaction (one commit per feed cost
    # the warm run ~100 ms of the main process's CPU).
    handling: set[asyncio.Task[None]] = set()
    try:
        while not (done.done() and outcomes.empty()):
            getter = asyncio.ensure_future(outcomes.get())
            await asyncio.wait({getter, done}, return_when=asyncio.FIRST_COMPLETED)
            if getter.done():
                task = asyncio.ensure_future(_maybe_await(on_outcome(getter.result())))
                handling.add(task)
                task.add_done_callback(handling.discard)
            else:
                getter.cancel()
        if handling:
            await asyncio.gather(*handling)
    finally:
        for task in handling:
            task.cancel()
        for fd, (conn, _, _) in list(pending.items()):
            loop.remove_reader(fd)
            conn.close()
        for proc in procs:
            if proc.is_alive():
                proc.terminate()
            proc.join(5)


def _crashed(name: str, exitcode: int | None) -> FeedOutcome:
    # The state is unchanged: the feed is simply polled again next time.
    report = FeedReport(name, FetchStatus.FAILED, error=f"worker process died (exit code {exitcode})")
    return FeedOutcome(FeedState(name, ""), (), None, report)


async def fetch_feeds(
    loaded: LoadedConfig,
    store: Store,
    options: FetchOptions | None = None,
    *,
    clock: Clock = utcnow,
    on_report: Callable[[FeedReport], None] | None = None,
    on_start: Callable[[int], None] | None = None,
) -> FetchSummary:
    options = options or FetchOptions()
    config = loaded.config
    store.sync_feeds((f.name, loaded.feed_url(f.url)) for f in config.feeds)
    states = store.feed_states()
    feeds, deferred = select_feeds(loaded, states, clock(), options)
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
    writer = _Writer(store)
    # classify beside the parse, in the workers; organise() then only clusters (and catches up)
    rules, rules_hash = loaded.rules, loaded.rules_hash
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

    workers = min(config.http.workers or os.cpu_count() or 1, max(1, len(jobs) // MIN_FEEDS_PER_WORKER))
    try:
        if workers > 1:
            # the global cap is shared out: each worker gets its part (per-host caps hold by sharding)
            share = config.http.model_copy(update={"concurrency": max(1, config.http.concurrency // workers)})
            await _run_in_workers(
                shard_by_host(jobs, workers), share, config.http.max_backoff, on_outcome, rules, rules_hash
            )
        else:
            await run_shard(
                jobs,
                config.http,
                on_outcome,
                clock=clock,
                max_backoff=config.http.max_backoff,
                rules=rules,
                rules_hash=rules_hash,
            )
    finally:
        await writer.queue.put(None)
        await writing
    order = {f.name: i for i, f in enumerate(config.feeds)}
    return FetchSummary(tuple(sorted(reports, key=lambda r: order.get(r.feed, 0))))


def open_store(loaded: LoadedConfig) -> Store:
    return Store(loaded.database_url)


@dataclass(frozen=True, slots=True)
class OrganiseSummary:
    classified: int = 0
    selected: int = 0
    clustered: int = 0
    new_stories: int = 0
    redone: bool = False  # the rules changed, so every entry was classified again


def _features(id: int, e: Entry, entities: Iterable[str], title_entities: Iterable[str]) -> Any:
    from .cluster import story_entry

    return story_entry(
        id,
        title=e.title,
        summary=e.summary_text,
        link=e.link,
        guid=e.guid,
        published=e.published,
        published_fallback=e.published_fallback,
        language=e.language,
        source_title=e.source_title,
        entities=entities,
        title_entities=title_entities,
    )


def _classify(batch: Sequence[Any], rules: Any, rules_hash: str) -> list[tuple[Any, Any]]:
    """Stored entries -> (Classified, cluster features or None): selection, tags, features. Pure."""
    from .select import classify
    from .store import Classified

    out = []
    for s in batch:
        e = s.entry
        c = classify(e.title, e.summary_text, rules)
        why = [r.as_dict() for r in c.why]
        row = Classified(s.id, c.relevant, c.topics, c.tags, why, c.entities, c.title_entities, rules_hash)
        out.append((row, _features(s.id, e, c.entities, c.title_entities) if c.relevant else None))
    return out


def organise(loaded: LoadedConfig, store: Store, *, clock: Clock = utcnow) -> OrganiseSummary:
    """Select, tag and cluster what is new (everything, if the rules changed).

    store.unclassified | select.classify (all cores) | store.save_classifications
    | store.unclustered + store.story_members (the window) | cluster.Clusterer | store.assign_stories
    """
    from .cluster import Clusterer, Story, processing_order

    rules_hash = loaded.rules_hash
    now = clock()
    redone = store.stale_rules(rules_hash)
    if redone:
        store.forget_classifications()
    # One process: a pool was measured no faster (unpickling the results costs what it saves).
    # The rules are compiled only when something needs them (a warm run has nothing to do).
    todo = store.unclassified(rules_hash)
    done = _classify(todo, loaded.rules, rules_hash) if todo else []
    rows = [row for row, _ in done]
    known = {row.entry_id: f for row, f in done if f is not None}  # features already computed
    store.save_classifications(rows, now)

    new = store.unclustered()
    created = 0
    if new:
        settings = loaded.clustering
        dated = [m.stored.entry.published for m in new if not m.stored.entry.published_fallback]
        since = (min(dated) if dated else now) - timedelta(seconds=settings.window)
        stories: dict[int, Story] = {}
        for m in store.story_members(since):
            assert m.story_id is not None
            f = _features(m.stored.id, m.stored.entry, m.entities, m.title_entities)
            stories.setdefault(m.story_id, Story(m.story_id)).add(f)
        clusterer = Clusterer(settings, stories.values(), next_id=store.next_story_id())
        incoming = sorted(
            (
                known.get(m.stored.id) or _features(m.stored.id, m.stored.entry, m.entities, m.title_entities)
                for m in new
            ),
            key=processing_order,
        )
        assigned = {e.id: clusterer.assign(e) for e in incoming}
        assignment = {eid: clusterer.story_of(sid) for eid, sid in assigned.items()}
        merged = {old: clusterer.story_of(old) for old in clusterer.merged if old in stories}
        created = store.assign_stories(assignment, now, merged=merged)
    # every newly selected entry is clustered exactly once, whoever classified it (a fetch worker
    # or this function): the entries clustered now are the entries newly selected
    return OrganiseSummary(len(rows), len(new), len(new), created, redone)
