"""Fetch workers: fetch, parse and classify feeds, one event loop per core.

    shard_by_host                      # pure: one host's feeds stay in one shard
    | FetchWorkers (a process each)    # forked by the fetch (service/fetching.py)
    | run_shard                        # per feed: fetch.Fetcher.fetch | parse.parse_feed
    |                                  #   | judge.classify | poll.next_state
    | outcomes over a pipe             # the main process writes them (fetching.GroupCommit)

The workers hold no database connection: the main process alone writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import hashlib
import multiprocessing
import os
import pickle
import random
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from urllib.parse import urlsplit

from digest.config import HttpSettings, LoadedConfig
from digest.errors import DigestError
from digest.feeds import fetch
from digest.feeds.fetch import Fetcher
from digest.feeds.parse import parse_feed
from digest.model.judge import NOTHING, classify
from digest.model.poll import next_state
from digest.model.records import (
    Entry,
    FeedReport,
    FeedState,
    FetchRequest,
    FetchStatus,
    RulesSource,
    Verdict,
)
from digest.model.rules import CompiledRules, compile_source

Clock = Callable[[], datetime]
# Below this many feeds, worker processes cost more than they save.
MIN_FEEDS_PER_WORKER = 8


def utcnow() -> datetime:
    return datetime.now(UTC)


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


def judge(entries: Sequence[Entry], rules: CompiledRules, rules_hash: str) -> dict[str, Verdict]:
    """Classify freshly parsed entries (pure; runs in the worker that parsed them)."""

    # one object for every entry no topic selects: pickled once per outcome, not once per entry
    nothing = Verdict.of(NOTHING, rules_hash)
    out = {}
    for e in entries:
        c = classify(e.title, e.summary_text, rules)
        out[e.entry_id] = nothing if c is NOTHING else Verdict.of(c, rules_hash)
    return out


RulesGetter = Callable[[], tuple[CompiledRules, str] | None]


def lazy_rules(compile_them: Callable[[], tuple[CompiledRules, str]]) -> RulesGetter:
    """The compiled rules and their hash, compiled when first asked for (a warm run never asks).

    If they do not compile, entries are stored unclassified and organise() reports the error
    (one clear line); nothing fetched is lost, and fixing the rules classifies them.
    """
    cache: list[tuple[CompiledRules, str] | None] = []

    def get() -> tuple[CompiledRules, str] | None:
        if not cache:
            try:
                cache.append(compile_them())
            except DigestError:
                cache.append(None)
        return cache[0]

    return get


def rules_of(loaded: LoadedConfig) -> RulesGetter:
    """The loaded config's rules, compiled on first use (and kept on it, for organise)."""
    return lazy_rules(lambda: (loaded.rules, loaded.rules_hash))


def _compiled(source: RulesSource) -> tuple[CompiledRules, str]:

    try:  # what is wrong, organise reports in the main process too
        return compile_source(source), source.rules_hash
    except Exception as exc:
        raise DigestError(f"rules do not compile: {exc}") from exc


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


def worker_count(loaded: LoadedConfig, feeds: int) -> int:
    """How many worker processes `feeds` feeds are worth (1: fetch in this process)."""
    wanted = loaded.config.http.workers or os.cpu_count() or 1
    return max(1, min(wanted, feeds // MIN_FEEDS_PER_WORKER))


async def run_shard(
    jobs: Sequence[FeedJob],
    http: HttpSettings,
    emit: Callable[[FeedOutcome], object],
    *,
    clock: Clock = utcnow,
    max_backoff: float,
    rules: RulesGetter | None = None,
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
        compiled = rules() if rules is not None and entries else None
        verdicts = judge(entries, *compiled) if compiled is not None else None
        await maybe_await(emit(FeedOutcome(new_state, entries, result.http_status, report, verdicts)))

    async with Fetcher(http) as fetcher:
        tasks = [asyncio.ensure_future(one(fetcher, job)) for job in jobs]
        try:
            await asyncio.gather(*tasks)
        except BaseException:  # a write failed (the store): the rest stop, quietly
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise


async def maybe_await(value: object) -> None:
    if asyncio.iscoroutine(value):
        await value


async def _handle(on_outcome: Callable[[FeedOutcome], object], outcome: FeedOutcome) -> None:
    # called inside the task: a task cancelled before it starts leaves no coroutine unawaited
    await maybe_await(on_outcome(outcome))


PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
# How often a worker checks that the process that forked it is still there.
PARENT_CHECK_SECONDS = 0.5


def _die_with_parent(parent_pid: int) -> None:
    """Make this worker exit when the process that forked it dies, however it dies (kill -9 too).

    On Linux, prctl(PR_SET_PDEATHSIG) has the kernel send SIGKILL when the forking thread ends
    (prctl(2)); SIGKILL, because a worker may have inherited a Python SIGTERM handler. A parent
    that died before the call is caught by the getppid() check after it (the race prctl(2)
    describes). Elsewhere, and as a second guard, a thread checks getppid() twice a second:
    an orphan is re-parented, so its parent pid changes.
    """

    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):  # no prctl: the thread below still works
            pass
    if os.getppid() != parent_pid:
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(PARENT_CHECK_SECONDS)
            if os.getppid() != parent_pid:
                os._exit(1)  # no clean-up: nobody is left to report to

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _worker_main(
    conn: Connection,
    inherited: tuple[CompiledRules, str] | None = None,
    parent_pid: int | None = None,
    foreign_ends: Sequence[Connection] = (),
) -> None:
    """A worker process: warm up, then run the shard it is sent.

    Down the pipe: (jobs, HttpSettings, max back-off, RulesSource), or None for "nothing to do".
    Up the pipe: FeedOutcome ..., then None. `inherited`: rules
    the main process had compiled when it forked this worker (the daemon's polls), with their hash.
    `foreign_ends`: the main process's ends of this worker's pipe and its elder siblings' pipes,
    inherited by the fork; closed at once, so that when the main process dies nobody holds a
    read end open and a write fails (EPIPE) instead of blocking for ever.
    """

    for end in foreign_ends:
        with contextlib.suppress(OSError):
            end.close()
    if parent_pid is not None:
        _die_with_parent(parent_pid)
    fetch.prepare()  # while the main process reads its config and the feeds' states
    try:
        order = conn.recv()
    except (EOFError, OSError):  # the main process went away before sending work
        return
    if order is None:
        conn.close()
        return
    jobs, http, max_backoff, rules = order
    try:
        if inherited is not None and inherited[1] == rules.rules_hash:
            getter = lazy_rules(lambda: inherited)
        else:
            getter = lazy_rules(lambda: _compiled(rules))
        asyncio.run(run_shard(jobs, http, conn.send, max_backoff=max_backoff, rules=getter))
    finally:
        with contextlib.suppress(OSError):  # the main process is gone: nobody to tell
            conn.send(None)  # end of shard
        conn.close()


class FetchWorkers:
    """Worker processes, forked by a fetch and fed their shards over a pipe each.

    fork, not spawn: they inherit the imported modules and the compiled rules. They never use
    the store's connection they inherit (the main process alone writes).
    """

    def __init__(self, count: int, rules: tuple[CompiledRules, str] | None = None) -> None:
        """`rules`: compiled rules and their hash, if this process has them (inherited, not sent)."""
        self.procs: list[tuple[Connection, multiprocessing.process.BaseProcess]] = []
        self.rules = rules
        self.grow(count)

    def grow(self, count: int) -> None:
        """Fork `count` more."""
        ctx = multiprocessing.get_context("fork")
        for _ in range(count):
            parent, child = ctx.Pipe(duplex=True)
            # fork, so these are not pickled: the child closes its copies of the main process's ends
            foreign = [parent, *(conn for conn, _ in self.procs)]
            proc = ctx.Process(
                target=_worker_main, args=(child, self.rules, os.getpid(), foreign), daemon=True
            )
            proc.start()
            child.close()
            self.procs.append((parent, proc))

    def shrink(self, count: int) -> None:
        """Dismiss all but `count` of them."""
        keep, extra = self.procs[:count], self.procs[count:]
        for conn, proc in extra:
            with contextlib.suppress(OSError, ValueError):
                conn.send(None)
            conn.close()
            proc.join(1)
            if proc.is_alive():
                proc.terminate()
        self.procs = keep

    @property
    def count(self) -> int:
        return len(self.procs)

    async def run(
        self,
        shards: list[list[FeedJob]],
        http: HttpSettings,
        max_backoff: float,
        rules: RulesSource,
        on_outcome: Callable[[FeedOutcome], object],
    ) -> None:
        """Send one shard to each worker; outcomes stream back over the pipes, read by the event loop.

        Outcomes are handed on without waiting for each one's write, so that the writer can
        commit every outcome that arrived meanwhile in one transaction.
        """
        loop = asyncio.get_running_loop()
        # Every feed has its deadline, so a worker reports something at least that often; one
        # silent for twice as long is stuck (a parser spinning on a pathological body, say).
        stall = 2 * http.deadline + 5
        stuck = False
        pending: dict[int, tuple[Connection, multiprocessing.process.BaseProcess, set[str]]] = {}
        done = loop.create_future()
        outcomes: asyncio.Queue[FeedOutcome] = asyncio.Queue()

        def readable(fd: int) -> None:
            conn, proc, left = pending[fd]
            try:
                msg = conn.recv()
            except (EOFError, OSError, pickle.UnpicklingError):  # it died, perhaps mid-message
                msg = None
            if msg is None:
                loop.remove_reader(fd)
                del pending[fd]
                if left:  # a worker that died leaves its feeds unreported: report them
                    proc.join(5)  # it is exiting: reaped, its exit code is known
                for name in left:
                    outcomes.put_nowait(_crashed(name, proc.exitcode, stall if stuck else None))
                if not pending and not done.done():
                    done.set_result(None)
                return
            left.discard(msg.state.name)
            outcomes.put_nowait(msg)

        for i, (conn, proc) in enumerate(self.procs):
            if i >= len(shards):
                with contextlib.suppress(OSError):
                    conn.send(None)  # more workers than shards: this one has nothing to do
                continue
            shard = shards[i]
            with contextlib.suppress(OSError):  # it died warming up: the reader reports its feeds
                conn.send((shard, http, max_backoff, rules))
            pending[conn.fileno()] = (conn, proc, {j.name for j in shard})
            loop.add_reader(conn.fileno(), readable, conn.fileno())
        if not pending:
            done.set_result(None)
        handling: set[asyncio.Task[None]] = set()
        failed: list[BaseException] = []  # a write that failed (the store): the run stops

        def handled(task: asyncio.Task[None]) -> None:
            handling.discard(task)
            if not task.cancelled() and task.exception() is not None:
                failed.append(task.exception())  # type: ignore[arg-type]

        try:
            while not (done.done() and outcomes.empty()):
                if failed:
                    raise failed[0]
                getter = asyncio.ensure_future(outcomes.get())
                ready, _ = await asyncio.wait(
                    {getter, done}, timeout=stall, return_when=asyncio.FIRST_COMPLETED
                )
                if not ready:  # nothing from any worker for `stall` seconds: stop them
                    stuck = True
                    for _, proc, _ in pending.values():
                        proc.terminate()  # their pipes close: readable() reports their feeds
                if getter.done():
                    task = asyncio.ensure_future(_handle(on_outcome, getter.result()))
                    handling.add(task)
                    task.add_done_callback(handled)
                else:
                    getter.cancel()
            if handling:
                await asyncio.wait(handling)
            if failed:
                raise failed[0]
        finally:
            for task in handling:
                task.cancel()
            for fd in list(pending):
                loop.remove_reader(fd)
            self.close()

    def close(self) -> None:
        """Dismiss the workers (idempotent): idle ones are told to go, the rest are stopped."""
        for conn, proc in self.procs:
            try:
                if proc.is_alive() and not conn.closed:
                    conn.send(None)
            except (OSError, ValueError):
                pass
        for conn, proc in self.procs:
            proc.join(1)  # an idle worker leaves at once; one still busy (an error upstream) is stopped
            if proc.is_alive():
                proc.terminate()
                proc.join(5)
            conn.close()
        self.procs = []


def _crashed(name: str, exitcode: int | None, stalled: float | None = None) -> FeedOutcome:
    # The state is unchanged: the feed is simply polled again next time.
    if stalled is not None:
        error = f"worker process stopped: no feed finished for {stalled:g}s (http.deadline x 2 + 5)"
    else:
        error = f"worker process died (exit code {exitcode})"
    report = FeedReport(name, FetchStatus.FAILED, error=error)
    return FeedOutcome(FeedState(name, ""), (), None, report)
