"""The fault suite: exactly-once sending against real loopback SMTP servers that misbehave, real
`digest` processes run side by side or killed with SIGKILL, on SQLite and PostgreSQL.

Each test counts what the server stored: digests lost (a due subscriber with no copy),
duplicated (extra copies), and whether every duplicate has the first copy's Message-ID.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import pytest

from digest.config import load_config
from digest.service.sending import send_due
from digest.storage.lease import wall_clock
from digest.storage.store import Store
from tests.support.feedserver import FeedServer, Reply
from tests.support.mailfaults import (
    Faults,
    MailServer,
    Recorder,
    SilentServer,
    build_world,
    digest,
    free_port,
    wait_for,
)

ROOT = Path(__file__).resolve().parents[2]


def _finish(proc, timeout: float = 120) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def _states(cfg: Path) -> dict[str, int]:
    with Store(load_config(cfg).database_url) as store:
        rows = store.deliveries_report(limit=100_000)
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["state"]] = counts.get(r["state"], 0) + 1
    return counts


@pytest.mark.parametrize("other", [["send"], ["run", "--once"]], ids=["two-sends", "send-beside-run-once"])
def test_two_senders_at_once_send_each_digest_exactly_once(tmp_path, db_url, other):
    with MailServer(Faults(delay=0.01)) as srv:  # slow enough that the two runs overlap
        cfg, due = build_world(tmp_path, db_url, 60, srv.port)
        first, second = digest(cfg, "send"), digest(cfg, *other)
        (rc1, _, err1), (rc2, _, err2) = _finish(first), _finish(second)
        tally = srv.recorder.tally(due)
    assert (rc1, rc2) == (0, 0), err1 + err2
    assert "Traceback" not in err1 + err2
    assert tally.lost == 0 and tally.duplicated == 0, tally
    assert _states(cfg) == {"sent": 60}


def test_kill_9_during_send_loses_nothing_and_repeats_at_most_one_message_per_connection(tmp_path, db_url):
    with MailServer(Faults(delay=0.02)) as srv:
        cfg, due = build_world(tmp_path, db_url, 80, srv.port, lease="8s", connections=4)
        killed = digest(cfg, "send")
        assert wait_for(lambda: srv.recorder.count() >= 20, 60), killed.communicate()
        os.kill(killed.pid, signal.SIGKILL)
        killed.wait()
        at_kill = srv.recorder.tally(due)
        # at once: the rest is sent, but not what the killed run held (its lease has not run out),
        # so not the message it may have had accepted and not yet marked: nothing comes twice
        rc, _, err = _finish(digest(cfg, "send"))
        assert rc == 0, err
        assert srv.recorder.tally(due).duplicated == 0
        time.sleep(8.5)  # the lease runs out: the killed run's digests are taken over
        rc, _, err = _finish(digest(cfg, "send"))
        tally = srv.recorder.tally(due)
    assert rc == 0, err
    assert tally.lost == 0, tally
    assert tally.duplicated <= at_kill.connections <= 4, tally
    assert tally.same_id == tally.duplicated
    assert _states(cfg) == {"sent": 80}


def test_tempfails_drops_and_lost_replies_lose_nothing_and_duplicate_only_lost_replies(tmp_path, db_url):
    faults = Faults(tempfail=2, drop_before=2, drop_after=2)
    with MailServer(faults) as srv:
        cfg, due = build_world(tmp_path, db_url, 12, srv.port)
        loaded = load_config(cfg)
        with Store(loaded.database_url) as store:
            reports = asyncio.run(send_due(loaded, store, now=wall_clock()))
        tally = srv.recorder.tally(due)
    assert sorted({r.state for r in reports}) == ["sent"]
    assert tally.lost == 0
    # a reply lost after the server stored the message: that one message again, on a new
    # connection, with the same Message-ID (the receiver can drop it); nothing else twice
    assert tally.duplicated == 2 and tally.same_id == 2, tally


class LedgerWatcher(Recorder):
    """Checks, as each message arrives, that the ones before it on the same connection are
    already marked sent in the ledger."""

    def __init__(self, url: str) -> None:
        super().__init__()
        self.url = url
        self.ids: dict[str, int] = {}
        self.unmarked: list[str] = []

    async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]
        earlier = [s.recipient for s in self.stored if s.connection == tuple(session.peer)]
        if earlier:
            with Store(self.url, migrate=False) as store:
                for r in earlier:
                    d = store.delivery(self.ids[r], wall_clock().strftime("%Y-%m-%d"))
                    if d is None or d["state"] != "sent":
                        self.unmarked.append(r)
        return await super().handle_DATA(server, session, envelope)


def test_a_message_is_marked_sent_before_its_connection_takes_the_next(tmp_path, db_url, monkeypatch):
    port = free_port()
    cfg, due = build_world(tmp_path, db_url, 40, port, connections=2)
    loaded = load_config(cfg)
    watcher = LedgerWatcher(loaded.database_url)
    with Store(loaded.database_url) as store:
        watcher.ids = {s.email: s.id for s in store.list_subscribers()}
    srv = MailServer(port=port)
    srv.recorder = srv.controller.handler = watcher
    with srv, Store(loaded.database_url) as store:
        mark = store.finish_deliveries

        def slow_mark(*args, **kw):  # a busy database: the mark takes longer than the next send
            time.sleep(0.05)
            return mark(*args, **kw)

        monkeypatch.setattr(store, "finish_deliveries", slow_mark)
        reports = asyncio.run(send_due(loaded, store, now=wall_clock()))
    tally = watcher.tally(due)
    assert [r.state for r in reports].count("sent") == 40 and tally.lost == 0
    assert tally.connections < 40  # connections carried several messages each: the check had work
    assert watcher.unmarked == []


@pytest.mark.parametrize("down", ["refused", "never-greets"])
def test_smtp_down_ends_the_run_in_one_line_and_leaves_every_digest_for_the_next(tmp_path, db_url, down):
    if down == "refused":
        server, port = None, free_port()  # nothing listens
    else:
        server = SilentServer().__enter__()
        port = server.port
    try:
        cfg, due = build_world(tmp_path, db_url, 300, port)
        rc, _, err = _finish(digest(cfg, "send"), timeout=60)
    finally:
        if server is not None:
            server.__exit__(None, None, None)
    lines = err.strip().splitlines()
    assert rc == 1 and len(lines) == 1, err
    assert lines[0].startswith("digest: error: smtp 127.0.0.1:") and "in a row failed" in lines[0]
    assert "sent" not in _states(cfg) and "failed" not in _states(cfg)
    # the server is back: every digest goes out once (nothing was claimed for longer than the run)
    with MailServer(port=port) as srv:
        rc, _, err = _finish(digest(cfg, "send"))
        tally = srv.recorder.tally(due)
    assert rc == 0 and tally.lost == 0 and tally.duplicated == 0, (err, tally)


def test_two_daemons_share_the_feeds_and_the_sends(tmp_path, db_url):
    """Two daemons on one database: each due feed fetched once (not once per daemon), each
    digest sent once, and SIGTERM ends both with 0."""
    offline = ROOT / "examples" / "offline"
    with FeedServer() as feeds, MailServer(Faults(delay=0.005)) as srv:
        served = []
        for name in ("wire.xml", "vestnik-ru.xml", "shiping-zh.xml"):
            feeds.route(f"/{name}", Reply(body=(offline / name).read_bytes()))
            served.append((f"live-{name.split('.')[0]}", feeds.url(f"/{name}")))
        cfg, due = build_world(tmp_path, db_url, 40, srv.port, daemon="daemon: {tick: 1s}\n")
        text = cfg.read_text()  # the live feeds are added after the world's own fetch: due at once
        head, rest = text.split("delivery:", 1)
        lines = "".join(f"  - {{name: {n}, url: '{u}', interval: 1h}}\n" for n, u in served)
        cfg.write_text(head + lines + "delivery:" + rest)
        daemons = [digest(cfg, "daemon"), digest(cfg, "daemon")]
        try:
            assert wait_for(lambda: srv.recorder.count() >= 40, 90, step=0.2)
            time.sleep(3)  # a few more ticks: nothing more may come
        finally:
            for d in daemons:
                d.send_signal(signal.SIGTERM)
        ends = [_finish(d, timeout=60) for d in daemons]
        tally = srv.recorder.tally(due)
        fetched = {
            n: len(feeds.requests_for("/" + n)) for n in ("wire.xml", "vestnik-ru.xml", "shiping-zh.xml")
        }
    assert [rc for rc, _, _ in ends] == [0, 0], [e for _, _, e in ends]
    assert tally.lost == 0 and tally.duplicated == 0, tally
    assert fetched == {"wire.xml": 1, "vestnik-ru.xml": 1, "shiping-zh.xml": 1}
