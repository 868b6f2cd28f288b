"""`digest daemon`: APScheduler runs the jobs; the database decides what is due.

    every tick:         fetch feeds that are due (their interval, back-off, Retry-After) | organise
    every tick:         send the digests that are due (schedule.current_period per subscriber)
    every housekeeping: prune old entries, tidy the database, mail the operator report
    every bounces.every: read the bounce mailbox (service/bounces.py), when one is configured

Why this shape (the APScheduler 3.x user guide): BlockingScheduler with a thread pool, each job
calling asyncio.run, so every run gets a fresh event loop and clients and shutdown(wait=True)
finishes what is in flight; an in-memory job store, because send times live in the database (a job
store re-added at start would silently drop a run missed during downtime, and a shared one
double-fires). Several daemons may share a database (on one machine or several on PostgreSQL):
each feed's poll and each digest is claimed by one of them under a lease (store.claim_feeds,
store.claim_deliveries), so they split the work, and when one dies the others take its share once
its leases run out. With `--wait` a daemon is instead the only scheduler, holding digest.storage.lock (a
standby waits for it).

Faults (issue 12): with `--wait`, every tick first asks whether the lock is still held (a
PostgreSQL restart ends the session that held it). If not, nothing is scheduled until it is taken
again; if another scheduler took it meanwhile, the daemon exits 4. A job that fails with a
DigestError (the database down, say) is logged once when things go wrong and once when they come
right, not every tick. SIGTERM always ends in exit code 0 and no traceback.
"""

from __future__ import annotations

import ctypes
import json
import logging
import signal
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.blocking import BlockingScheduler

from digest.apps import metrics
from digest.apps.metrics import serve
from digest.config import LoadedConfig, load_config
from digest.errors import DigestError, LockHeldError, TransportSetupError
from digest.model.records import FetchStatus
from digest.model.schedule import next_due
from digest.model.subscribers import STATUSES
from digest.service.api import Digest
from digest.service.fetching import FetchOptions, utcnow
from digest.storage.lock import SchedulerLock

log = logging.getLogger("digest")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "message": record.getMessage(),
            **getattr(record, "fields", {}),
        }
        if record.exc_info:
            data["error"] = self.formatException(record.exc_info)
        return json.dumps(data, ensure_ascii=False, default=str)


def setup_logging(fmt: str = "text", level: int = logging.INFO) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(
        JsonFormatter() if fmt == "json" else logging.Formatter("%(asctime)s %(levelname)s %(message)s")
    )
    root = logging.getLogger("digest")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
    logging.getLogger("apscheduler").setLevel(logging.WARNING)


def _event(message: str, **fields: Any) -> None:
    log.info(message, extra={"fields": fields})


def limit_malloc_arenas(arenas: int = 2) -> bool:
    """glibc gives threads their own malloc arenas (up to eight per core) and each keeps the
    memory freed into it; the daemon's job threads and asyncio.to_thread helpers come and go.
    Side by side for 12 minutes of the soak (bench/RESULTS.md): 123 MB with two arenas against
    129 MB, growing half as fast. Set before the first thread starts; a no-op off glibc."""

    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_arena_max = -8  # malloc.h
    return bool(libc.mallopt(m_arena_max, arenas))


class Daemon:
    def __init__(
        self, config_path: str | None, *, metrics_port: int | None = None, wait: float | None = None
    ) -> None:
        self.config_path = config_path
        self.loaded: LoadedConfig = load_config(config_path)
        _ = self.loaded.rules, self.loaded.clustering  # rule errors stop us before we start
        self.digest = Digest(self.loaded)  # one store (one engine) for the daemon's life
        self.metrics_port = metrics_port
        self.wait = wait
        self.stopping = threading.Event()
        # Polls and sends take turns: a send that overlapped a poll read the store before the
        # poll's entries were committed, so a digest due at start-up went out empty, and entries
        # first seen just before a send but committed after it fell outside every later window.
        self._turn = threading.Lock()
        self.scheduler: BlockingScheduler | None = None
        self._shutdown: threading.Thread | None = None
        self.lock: SchedulerLock | None = None
        self.exit_code = 0
        self._lock_lost = False
        self._failing: str | None = None  # the line logged when jobs began to fail, until they recover

    # -- jobs --------------------------------------------------------------------------------------

    def poll(self) -> None:
        with self._turn:
            if not self.stopping.is_set() and self._lock_held():
                self._guarded(self._poll)

    def send(self) -> None:
        with self._turn:
            if not self.stopping.is_set() and self._lock_held():
                self._guarded(self._send)

    def _guarded(self, job: Callable[[], None]) -> None:
        """Run a job; a DigestError is a state (logged when it starts and when it ends), not a crash."""
        try:
            job()
        except DigestError as exc:
            self._trouble(str(exc).splitlines()[0])
        else:
            self._trouble(None)

    def _trouble(self, line: str | None) -> None:
        if line is not None and self._failing is None:
            log.error("%s; jobs are skipped until it is fixed (logged once)", line)
        elif line is None and self._failing is not None:
            _event("recovered: jobs run again", event="recovered")
        self._failing = line

    def _lock_held(self) -> bool:
        """Whether scheduling may go on: the lock is held, or taken again now. Exits 4 if another
        scheduler took it while ours was lost."""
        lock = self.lock
        if lock is None or lock.held():
            return True
        if not self._lock_lost:
            self._lock_lost = True
            log.error(
                "lost the scheduler lock (its database session ended): nothing is scheduled until it is back"
            )
        try:
            lock.regain()
        except LockHeldError:
            log.error("another scheduler took the lock while ours was lost: exiting (exit code 4)")
            self.exit_code = 4
            self._begin_shutdown()
            return False
        except DigestError as exc:
            self._trouble(str(exc).splitlines()[0])
            return False
        self._lock_lost = False
        _event(f"took the scheduler lock again ({lock.where()}): scheduling resumes", event="lock")
        return True

    def _poll(self) -> None:

        started = time.monotonic()
        summary = self.digest.fetch(FetchOptions(due_only=True, isolate=True))
        organised = self.digest.organise()
        failing = len(self.digest.status().failing)
        seconds = time.monotonic() - started
        counts = {s.value: summary.count(s) for s in FetchStatus}
        for result, n in counts.items():
            metrics.FEEDS.labels(result).inc(n)
        metrics.ENTRIES_NEW.inc(summary.new_entries)
        metrics.ENTRIES_SELECTED.inc(organised.selected)
        metrics.STORIES_NEW.inc(organised.new_stories)
        metrics.POLL_SECONDS.observe(seconds)
        metrics.FAILING_FEEDS.set(failing)
        if not summary.reports and not organised.classified:
            return  # nothing was due: no line
        _event(
            f"poll: {len(summary.reports)} feeds ({counts['ok']} ok, {counts['not_modified']} not modified, "
            f"{counts['failed']} failed, {counts['deferred']} deferred), {summary.new_entries} new entries, "
            f"{organised.selected} selected, {organised.new_stories} new stories in {seconds:.1f}s",
            event="poll",
            seconds=round(seconds, 3),
            new_entries=summary.new_entries,
            selected=organised.selected,
            new_stories=organised.new_stories,
            **counts,
        )

    def _send(self) -> None:

        started, now = time.monotonic(), utcnow()
        try:
            reports = self.digest.send_due(now=now, stopping=self.stopping.is_set)
        except TransportSetupError as exc:  # login refused, the SMTP circuit breaker: next tick
            log.error("send: %s", str(exc).splitlines()[0])
            return
        active = self.digest.store.schedules()
        seconds = time.monotonic() - started
        counts = {
            k: sum(r.state == k for r in reports) for k in ("sent", "empty", "failed", "bounced", "done")
        }
        for result in ("sent", "empty", "failed", "bounced"):
            metrics.DIGESTS.labels(result).inc(counts[result])
        metrics.SEND_SECONDS.observe(seconds)
        distinct = {(s.cadence, s.weekday, s.send_time, s.timezone): s for s in active}.values()
        if distinct:
            metrics.NEXT_SEND.set(min(next_due(s, now) for s in distinct).timestamp())
        if counts["sent"] or counts["failed"] or counts["bounced"] or counts["empty"]:
            _event(
                f"send: {counts['sent']} sent, {counts['empty']} empty, {counts['failed']} failed, "
                f"{counts['bounced']} bounced in {seconds:.1f}s",
                event="send",
                seconds=round(seconds, 3),
                **counts,
            )
        for r in reports:
            if r.state in ("failed", "bounced"):
                log.warning("send: %s %s: %s", r.email, r.state, r.error)

    def bounces(self) -> None:
        # not in turn with polls and sends: it touches only statuses and its own ledger, and an
        # IMAP server that is slow to answer must not hold up a digest
        if not self.loaded.config.bounces.configured:
            return  # none configured (or removed by a reload): nothing ran, so nothing recovered
        if not self.stopping.is_set() and self._lock_held():
            self._guarded(self._bounces)

    def _bounces(self) -> None:
        from digest.service.bounces import summary_line

        started = time.monotonic()
        summary = self.digest.read_bounces(stopping=self.stopping.is_set)
        statuses = self.digest.store.status_counts()
        for outcome, n in summary.outcomes.items():
            metrics.BOUNCE_REPORTS.labels(outcome).inc(n)
        for status in STATUSES:
            metrics.SUBSCRIBERS.labels(status).set(statuses.get(status, 0))
        if summary.read:
            seconds = time.monotonic() - started
            _event(
                f"{summary_line(summary)} in {seconds:.1f}s",
                event="bounces",
                seconds=round(seconds, 3),
                read=summary.read,
                **dict(summary.outcomes),
            )
        for sid, status in sorted(summary.changed.items()):
            log.warning("bounces: subscriber %s is now %s", sid, status)

    def housekeeping(self) -> None:
        with self._turn:
            if not self.stopping.is_set() and self._lock_held():
                self._guarded(self._housekeeping)

    def _housekeeping(self) -> None:
        d = self.loaded.config.daemon
        pruned, expired = self.digest.housekeeping(timedelta(seconds=d.retention))
        if d.operator:
            self.digest.mail_operator(d.operator)
        _event(
            f"housekeeping: {pruned} old entries removed, {expired} expired sign-ups",
            event="housekeeping",
            pruned=pruned,
            expired_sign_ups=expired,
        )

    # -- control -----------------------------------------------------------------------------------

    def reload(self, *_: object) -> None:
        try:
            new = load_config(self.config_path)
            _ = new.rules, new.clustering
        except DigestError as exc:
            log.error("reload: %s; keeping the running configuration", str(exc).splitlines()[0])
            return
        if new.database_url != self.loaded.database_url:
            log.error("reload: the database cannot change while running; restart the daemon for that")
            return
        self.loaded = new
        self.digest.reconfigure(new)
        _event(f"reload: {len(new.config.feeds)} feeds, {len(new.rules.topics)} topics", event="reload")

    def stop(self, signum: int, _frame: object) -> None:
        if self.stopping.is_set():
            return
        _event(f"stopping on {signal.Signals(signum).name}: finishing the message in flight", event="stop")
        self._begin_shutdown()

    def _begin_shutdown(self) -> None:
        self.stopping.set()
        if self.scheduler is not None and self._shutdown is None:
            # from another thread: shutdown(wait=True) waits for running jobs, which now stop early
            self._shutdown = threading.Thread(
                target=self.scheduler.shutdown, kwargs={"wait": True}, daemon=True
            )
            self._shutdown.start()

    def run(self) -> int:

        limit_malloc_arenas()
        # the claims keep the work correct beside other schedulers; the lock only makes this one
        # the sole scheduler when asked (--wait: a standby that takes over when the holder stops)
        lock = self.lock = (
            SchedulerLock(self.loaded.database_url, wait=self.wait) if self.wait is not None else None
        )
        if lock is not None:
            lock.acquire()
        try:
            if self.metrics_port:
                serve(self.metrics_port)
            d = self.loaded.config.daemon
            # a late tick still runs (APScheduler's misfire_grace_time: its 1 s default drops it)
            grace = int(max(60, d.tick * 5))
            self.scheduler = BlockingScheduler(
                timezone=UTC,
                executors={"default": ThreadPoolExecutor(3)},
                job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": grace},
            )
            now = datetime.now(UTC)
            self.scheduler.add_job(self.poll, "interval", seconds=d.tick, id="poll", next_run_time=now)
            self.scheduler.add_job(
                self.send,
                "interval",
                seconds=d.tick,
                id="send",
                next_run_time=now + timedelta(seconds=min(1.0, d.tick / 2)),
            )
            self.scheduler.add_job(
                self.housekeeping,
                "interval",
                seconds=d.housekeeping,
                id="housekeeping",
                next_run_time=now + timedelta(seconds=min(30.0, d.housekeeping)),
            )
            # always scheduled: a mailbox added by a SIGHUP reload is read from the next tick
            # (the job does nothing while none is configured); `every` is read at start
            every = self.loaded.config.bounces.every
            self.scheduler.add_job(
                self.bounces,
                "interval",
                seconds=every,
                id="bounces",
                next_run_time=now + timedelta(seconds=min(5.0, every)),
            )
            signal.signal(signal.SIGTERM, self.stop)
            signal.signal(signal.SIGINT, self.stop)
            signal.signal(signal.SIGHUP, self.reload)
            feeds = len(self.loaded.config.feeds)
            shared = (
                f"lock {lock.where()}" if lock is not None else "sharing the work with any other scheduler"
            )
            _event(f"daemon started: {feeds} feeds, tick {d.tick:g}s, {shared}", event="start")
            self.scheduler.start()  # blocks until shutdown
            if self._shutdown is not None:
                self._shutdown.join()  # the job in flight has finished: only now let go of the lock
            _event("daemon stopped", event="stopped")
        finally:
            if lock is not None:
                lock.release()  # quietly, if the lock's session is gone already
            self.digest.close()
        return self.exit_code
