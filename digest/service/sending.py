"""The send loop: who is due, what their digest holds, and the ledger that makes it exactly once.

    store.schedules + store.ledger_states | schedule.who_is_due           (pure: due or not)
    | compose.DigestMaker: assemble, render once per content, personalise (bytes per subscriber)
    | SendLoop: claim a few rows per connection at a time (held by this sender until sent or
    |           its lease runs out; Message-ID fixed per subscriber and period)
    |           | rate limit | transport.send (one attempt; temporary failures tried again here)
    |           | Marks: "sent" + the stories committed while the connection that took it is held

Any number of senders (send, run --once, daemons on several machines) may run at once: each
sends only the rows it claimed, and a claim is taken over only when its lease has run out (a
crashed sender). A crash between the server accepting a message and its mark's commit leaves
that row pending: it is sent again, with the same Message-ID, once its lease runs out; each SMTP
connection has at most that one message in flight, so that is the most a crash can repeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from digest.config import DeliverySettings, LoadedConfig
from digest.errors import DeliveryError, TemporaryDeliveryError, TransportSetupError
from digest.mail.transports import Transport, make_transport
from digest.model.schedule import INSTANT_EVERY, Period, current_periods, in_quiet_hours, who_is_due
from digest.model.subscribers import Subscriber, make_subscriber
from digest.service.compose import DigestMaker, Prepared
from digest.storage.lease import holder_id, wall_clock
from digest.storage.store import Store


@dataclass(frozen=True, slots=True)
class SendReport:
    email: str
    period: str
    # sent, empty, failed, bounced, done (already), claimed (by another sender), dry-run, quiet
    # (an instant subscriber's quiet hours)
    state: str
    stories: int = 0
    error: str | None = None
    message_id: str | None = None


def seed_subscribers(loaded: LoadedConfig, store: Store, now: datetime) -> int:
    """`subscribers:` from feeds.yaml: added if missing, never changed (the web may have changed them)."""
    added = 0
    for i, data in enumerate(loaded.config.subscribers):
        sub = make_subscriber(data, where=f"{loaded.source}: subscribers[{i}]")
        _, created = store.add_subscriber(sub, now, update=False)
        added += created
    return added


def due_now(
    store: Store, now: datetime, *, only: str | None = None, instant_every: float = INSTANT_EVERY
) -> tuple[list[Subscriber], dict[int, Period], list[int]]:
    """-> (active subscribers' schedules, each one's current period, the ids not yet done for it).

    From schedules and the ledger rows of the current periods alone: the daemon asks every
    tick, so it never reads preferences or history for subscribers who are not due."""
    schedules = store.schedules(email=only)
    periods = current_periods(schedules, now, instant_every=instant_every)
    states = store.ledger_states([p.key for p in set(periods.values())])
    return schedules, periods, who_is_due(schedules, periods, states, now)


CLAIM_PER_CONNECTION = 4  # rows claimed at a time, per SMTP connection


class Claims:
    """This sender's claims: renewed before their lease runs out, so that a long run (a slow
    server, a rate limit, retries) never sends a row whose lease another sender may have taken
    over; a row whose renewal fails is no longer ours and is not sent."""

    def __init__(self, store: Store, owner: str, lease: float) -> None:
        self.store, self.owner, self.lease = store, owner, lease
        self.unsent: set[tuple[int, str]] = set()
        self.renew_at = time.monotonic() + lease / 2
        self._lock = asyncio.Lock()

    def add(self, keys: Iterable[tuple[int, str]]) -> None:
        if not self.unsent:  # the first claims since nothing was held: a lease from now
            self.renew_at = time.monotonic() + self.lease / 2
        self.unsent.update(keys)

    async def still_ours(self, key: tuple[int, str]) -> bool:
        async with self._lock:
            if time.monotonic() >= self.renew_at and self.unsent:
                started, asked = time.monotonic(), set(self.unsent)
                kept = await asyncio.to_thread(
                    self.store.renew_claims, sorted(asked), self.owner, wall_clock(), self.lease
                )
                self.unsent -= asked - kept  # rows claimed meanwhile were not asked about: still ours
                self.renew_at = started + self.lease / 2
            return key in self.unsent

    def done(self, key: tuple[int, str]) -> None:
        self.unsent.discard(key)


Mark = tuple[int, str, str, str | None]  # (subscriber, period, state, error)


class Marks:
    """Ledger marks ("sent" with its stories, "failed") committed in groups: a mark waits for
    the commit that holds it, and the marks that arrive while one commit runs share the next.
    A connection that awaits its mark before taking another message (transports.Accepted) still
    has at most one unmarked message in flight; the ledger sees one transaction for many."""

    def __init__(self, store: Store, now: datetime, db: Any) -> None:
        self.store, self.now, self.db = store, now, db
        self._queue: list[tuple[Mark, asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def mark(self, row: Mark) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append((row, future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write())
        await future

    async def _write(self) -> None:
        while self._queue:
            batch, self._queue = self._queue, []
            try:
                async with self.db:
                    await asyncio.to_thread(self.store.finish_deliveries, [row for row, _ in batch], self.now)
            except BaseException as exc:  # every waiter hears of it; nothing was committed
                for _, f in batch:
                    if not f.done():
                        f.set_exception(exc)
            else:
                for _, f in batch:
                    if not f.done():
                        f.set_result(None)


class RateLimit:
    """At most `rate` sends a second over the whole run (0: no limit), spaced evenly."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self._next = 0.0
        self._lock = asyncio.Lock()

    async def wait(self) -> None:
        if not self.rate:
            return
        async with self._lock:
            now = time.monotonic()
            wait = self._next - now
            self._next = max(now, self._next) + 1.0 / self.rate
        if wait > 0:
            await asyncio.sleep(wait)


class SendLoop:
    """Claims, the rate limit, retries and the ledger marks of one run; nothing else sends.

    Prepared messages are claimed a few per connection at a time, just before they are sent:
    senders running at once share the work (each takes the next rows nobody holds), and a
    sender that dies holds few rows for a lease. A bounded queue hands claimed rows to as many
    workers as the transport has connections (twice over, so that a connection never waits for
    the next message), so claiming the next rows overlaps sending the last ones."""

    def __init__(
        self,
        store: Store,
        transport: Transport,
        settings: DeliverySettings,
        *,
        now: datetime,
        report: Callable[[SendReport], None],
        stopping: Callable[[], bool],
    ) -> None:
        self.store, self.transport, self.now, self.report, self.stopping = (
            store,
            transport,
            now,
            report,
            stopping,
        )
        self.settings = d = settings
        self.owner = holder_id()
        # one ledger write at a time on SQLite (one writer anyway); PostgreSQL takes them side by
        # side, so each connection's mark comes sooner and a crash finds fewer messages unmarked
        self.db: Any = asyncio.Lock() if store.engine.dialect.name == "sqlite" else contextlib.nullcontext()
        self.claims = Claims(store, self.owner, d.lease)
        self.marks = Marks(store, now, self.db)
        smtp = d.transport == "smtp"  # retries and the rate are SMTP settings; a local MTA queues
        self.rate = RateLimit(d.smtp.rate if smtp else 0.0)
        self.retries, self.retry_delay = (d.smtp.retries, d.smtp.retry_delay) if smtp else (0, 0.0)
        self.envelope = email.utils.parseaddr(d.sender)[1] or d.sender  # MAIL FROM: the bare address
        self.claim_size = CLAIM_PER_CONNECTION * d.smtp.connections
        self.workers = max(8, d.smtp.connections * 2)
        self.broken: list[TransportSetupError] = []  # the transport cannot be used: stop
        self.failures: list[BaseException] = []  # anything else unexpected: stop, then raise

    def stopped(self) -> bool:
        return bool(self.stopping() or self.broken or self.failures)

    async def run(self, messages: Iterable[tuple[Prepared, Period]]) -> None:
        """Send `messages`. `stopping()` turning true (SIGTERM) starts no new send: messages in
        flight finish and are recorded; rows claimed but not sent are let go for the next run.
        A transport that cannot be used at all (login refused, the SMTP circuit breaker) stops
        the run the same way and is raised once the messages in flight are recorded."""
        queue: asyncio.Queue[tuple[Prepared, Period] | None] = asyncio.Queue(self.claim_size)
        await self.transport.open()
        workers = [asyncio.create_task(self._worker(queue)) for _ in range(self.workers)]
        try:
            for chunk in _chunks(messages, self.claim_size, self.stopped):
                for item in await self._claim(chunk):
                    await queue.put(item)  # waits while the workers are busy: few rows held
                    if self.stopped():
                        break
        finally:
            for _ in workers:
                await queue.put(None)
            await asyncio.gather(*workers, return_exceptions=True)
            try:
                await self.transport.close()
            finally:
                with contextlib.suppress(Exception):  # a failed release only makes the next run wait a lease
                    await asyncio.to_thread(self.store.release_claims, self.owner)
        if self.broken:
            raise self.broken[0]
        if self.failures:
            raise self.failures[0]

    async def _claim(self, chunk: list[tuple[Prepared, Period]]) -> list[tuple[Prepared, Period]]:
        items = [
            (p.subscriber.id or 0, per.key, p.message_id, p.digest.story_ids, self.now) for p, per in chunk
        ]
        async with self.db:
            claimed = await asyncio.to_thread(
                self.store.claim_deliveries, items, self.owner, wall_clock(), self.settings.lease
            )
        ours = []
        for (p, per), ok in zip(chunk, claimed, strict=True):
            if ok:
                ours.append((p, per))
            else:  # another sender has it, or has sent it since we looked
                self.report(SendReport(p.subscriber.email, per.key, "claimed", p.digest.count))
        self.claims.add((p.subscriber.id or 0, per.key) for p, per in ours)
        return ours

    async def _worker(self, queue: asyncio.Queue[tuple[Prepared, Period] | None]) -> None:
        while (item := await queue.get()) is not None:
            if self.stopped():
                continue  # left pending (its claim let go at the end): the next run sends it
            try:
                await self._deliver(*item)
            except TransportSetupError as exc:
                self.broken.append(exc)
            except asyncio.CancelledError:
                raise
            except BaseException as exc:  # a database or disk failure, an interrupt: raised by run()
                self.failures.append(exc)  # once every send in flight has finished and the claims are let go

    async def _deliver(self, p: Prepared, period: Period) -> None:
        sub, n = p.subscriber, p.digest.count
        sid = sub.id or 0
        key = (sid, period.key)
        mark_now = not self.transport.idempotent

        async def accepted() -> None:  # the transport still holds the connection that took it
            await self.marks.mark((sid, period.key, "sent", None))

        for attempt in range(self.retries + 1):
            if attempt:
                await asyncio.sleep(self.retry_delay * 2 ** (attempt - 1))
                if self.stopped():
                    return
            if not await self.claims.still_ours(key):
                self.report(SendReport(sub.email, period.key, "claimed", n, message_id=p.message_id))
                return
            await self.rate.wait()
            try:
                await self.transport.send(
                    p.return_path or self.envelope,
                    sub.email,
                    p.data,
                    p.message_id,
                    accepted=accepted if mark_now else None,
                )
            except TemporaryDeliveryError as exc:
                if attempt < self.retries:
                    continue
                error = DeliveryError(
                    f"{exc}; not delivered after {self.retries + 1} tries, it will be tried again next run"
                )
                await self._failed(p, period, error)
                return
            except DeliveryError as exc:
                await self._failed(p, period, exc)
                return
            break
        if not mark_now:  # an idempotent transport: a re-send after a crash leaves one copy
            await self.marks.mark((sid, period.key, "sent", None))
        self.claims.done(key)
        self.report(SendReport(sub.email, period.key, "sent", n, message_id=p.message_id))

    async def _failed(self, p: Prepared, period: Period, exc: DeliveryError) -> None:
        sid = p.subscriber.id or 0
        await self.marks.mark((sid, period.key, "failed", str(exc)))
        state = "failed"
        if exc.permanent:
            async with self.db:
                status = await asyncio.to_thread(
                    self.store.record_bounce, sid, self.settings.bounce_limit, self.now
                )
            state = "bounced" if status == "bouncing" else "failed"
        self.claims.done((sid, period.key))
        self.report(SendReport(p.subscriber.email, period.key, state, p.digest.count, str(exc), p.message_id))


def _chunks(
    items: Iterable[tuple[Prepared, Period]], size: int, stopped: Callable[[], bool]
) -> Iterator[list[tuple[Prepared, Period]]]:
    chunk: list[tuple[Prepared, Period]] = []
    for item in items:
        if stopped():
            return
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk and not stopped():
        yield chunk


async def send_due(
    loaded: LoadedConfig,
    store: Store,
    *,
    now: datetime,
    dry_run: bool = False,
    only: str | None = None,
    transport: Transport | None = None,
    on_report: Callable[[SendReport], None] | None = None,
    stopping: Callable[[], bool] = lambda: False,
) -> list[SendReport]:
    """Send what is due now (SendLoop.run says how a stop and a broken transport end the run)."""
    if not dry_run:  # a dry run changes nothing, not even the subscriber table (issue 13)
        seed_subscribers(loaded, store, now)
    d = loaded.config.delivery
    schedules, periods, due_ids = due_now(store, now, only=only, instant_every=d.instant_every)
    due = set(due_ids)
    reports = [
        SendReport(s.email, periods[s.id or 0].key, "quiet" if in_quiet_hours(s, now) else "done")
        for s in schedules
        if (s.id or 0) not in due
    ]
    if not due_ids:
        return reports

    def report(r: SendReport) -> None:
        reports.append(r)
        if on_report:
            on_report(r)

    maker = DigestMaker(loaded, store, due_ids, now)
    empty: list[tuple[int, str, str]] = []

    def messages() -> Iterator[tuple[Prepared, Period]]:
        for sub in store.subscribers_by_id(due_ids):
            period = periods[sub.id or 0]
            digest = maker.assemble(sub, period, now)
            if digest.count == 0 and (not d.send_empty or sub.cadence == "instant"):
                # an instant window with nothing new is not recorded: a story folded later in
                # the same window still goes out in it
                if sub.cadence != "instant":
                    empty.append((sub.id or 0, period.key, maker.message_id(sub, period)))
                report(SendReport(sub.email, period.key, "empty"))
                continue
            prepared = maker.prepare(sub, period, now, digest)
            if dry_run:
                report(
                    SendReport(sub.email, period.key, "dry-run", digest.count, message_id=prepared.message_id)
                )
                continue
            yield prepared, period

    if dry_run:
        for _ in messages():
            pass
        return reports
    try:
        await SendLoop(
            store,
            transport or make_transport(d, loaded.base_dir),
            d,
            now=now,
            report=report,
            stopping=stopping,
        ).run(messages())
    finally:
        for sid, key, mid in empty:
            await asyncio.to_thread(store.record_empty, sid, key, mid, now)
    return reports
