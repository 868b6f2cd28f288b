"""PostgreSQL goes away under the daemon and under `digest send` (issue 12, Deliver 5 and 8).

Each test starts a PostgreSQL cluster of its own on another port (tests/support/pgcluster.py),
so that it can stop, restart and terminate sessions without touching anyone else's database.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from aiosmtpd.controller import Controller

from digest.model.subscribers import Subscriber
from digest.service.fetching import utcnow
from digest.storage.lock import ADVISORY_KEY
from digest.storage.store import Store
from tests.support.pgcluster import PgCluster
from tests.support.worlds import daily_now, offline_config

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(PgCluster.skip_reason() is not None, reason=str(PgCluster.skip_reason()))


@pytest.fixture
def pg() -> Iterator[PgCluster]:
    with PgCluster() as cluster:
        yield cluster


def config(tmp_path: Path, url: str, subscribers: int = 1, delivery: str = "  transport: outbox\n") -> Path:
    return offline_config(
        tmp_path,
        url,
        delivery=delivery + f"  outbox: '{tmp_path / 'outbox'}'\n",
        subscribers=daily_now([f"s{i}@example.org" for i in range(subscribers)]),
        extra="daemon: {tick: 1s}\n",
    )


def recipients(tmp_path: Path) -> set[str]:
    box = tmp_path / "outbox" / "new"
    return {
        str(email.message_from_bytes(p.read_bytes(), policy=email.policy.default)["To"])
        for p in (box.glob("*.eml") if box.exists() else [])
    }


def wait_for(what: Callable[[], object], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not what():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


class DaemonProcess:
    def __init__(self, cfg: Path, log: Path, *args: str) -> None:
        self.log = log
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "digest", "--config", str(cfg), "daemon", *args],
            stdout=subprocess.DEVNULL,
            stderr=log.open("w"),
        )

    def text(self) -> str:
        return self.log.read_text()

    def lines(self, fragment: str) -> int:
        return sum(fragment in line for line in self.text().splitlines())

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(60)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Callable[..., DaemonProcess]]:
    started: list[DaemonProcess] = []

    def start(cfg: Path, *args: str) -> DaemonProcess:
        d = DaemonProcess(cfg, tmp_path / f"daemon{len(started)}.log", *args)
        started.append(d)
        wait_for(lambda: "daemon started" in d.text() or d.proc.poll() is not None)
        assert d.proc.poll() is None, d.text()
        return d

    yield start
    for d in started:
        d.kill()


def test_a_restart_of_postgresql_is_noticed_logged_once_and_survived(tmp_path, pg, daemon):
    cfg = config(tmp_path, pg.url)
    d = daemon(cfg, "--wait", "5")  # the sole scheduler: it holds the lock
    wait_for(lambda: "s0@example.org" in recipients(tmp_path))
    pg.stop("fast")  # every session ends, the lock's with them
    time.sleep(5)  # five ticks with no database
    pg.start()
    Store(pg.url).add_subscriber(Subscriber("late@example.org", send_time="00:00"), utcnow())
    wait_for(lambda: "late@example.org" in recipients(tmp_path))  # it works again
    assert d.lines("lost the scheduler lock") == 1
    assert d.lines("jobs are skipped until it is fixed") == 1  # the outage: once, not every tick
    assert d.lines("took the scheduler lock again") == 1
    assert d.lines("recovered: jobs run again") == 1
    assert d.stop() == 0
    assert "Traceback" not in d.text(), d.text()


def test_a_lock_taken_by_another_scheduler_while_ours_was_lost_exits_4(tmp_path, pg, daemon):
    d = daemon(config(tmp_path, pg.url), "--wait", "5")  # the sole scheduler: it holds the lock
    engine = sa.create_engine(pg.url, poolclass=sa.pool.NullPool)
    with engine.connect() as conn:
        # end the daemon's lock session, and take the lock the moment it is free
        conn.execute(
            sa.text(
                "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' "
                "AND objid::bigint = :k AND pid <> pg_backend_pid()"
            ),
            {"k": ADVISORY_KEY},
        )
        conn.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": ADVISORY_KEY})
        conn.commit()
        assert d.proc.wait(30) == 4
    engine.dispose()
    assert d.lines("another scheduler took the lock") == 1
    assert "Traceback" not in d.text(), d.text()


def test_sigterm_while_postgresql_is_down_exits_0_without_a_traceback(tmp_path, pg, daemon):
    d = daemon(config(tmp_path, pg.url))
    wait_for(lambda: "s0@example.org" in recipients(tmp_path))
    pg.stop("immediate")
    time.sleep(2)
    assert d.stop() == 0
    assert "Traceback" not in d.text(), d.text()


class SlowSink:
    """An SMTP server that takes 50 ms over each message, so that a send of 300 is still under way
    when the database goes (an outbox writes them faster than the test can stop PostgreSQL)."""

    def __init__(self) -> None:
        self.recipients: list[str] = []

    async def handle_DATA(self, server, session, envelope):
        await asyncio.sleep(0.05)
        self.recipients.extend(envelope.rcpt_tos)
        return "250 OK"


def test_postgresql_stopped_mid_send_is_one_line(tmp_path, pg):
    from tests.apps.test_one_line import assert_one_line, digest, free_port, smtp

    sink = SlowSink()
    server = Controller(sink, hostname="127.0.0.1", port=free_port())
    server.start()
    try:
        cfg = config(tmp_path, pg.url, subscribers=300, delivery=smtp(server.port, connections=1))
        assert digest(cfg, "fetch").returncode == 0
        send = subprocess.Popen(
            [sys.executable, "-m", "digest", "--config", str(cfg), "send"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "COLUMNS": "200"},
        )
        wait_for(lambda: len(sink.recipients) >= 20 or send.poll() is not None)
        pg.stop("immediate")
        out, err = send.communicate(timeout=120)
    finally:
        server.stop()
    assert len(set(sink.recipients)) < 300  # it was stopped mid-send
    assert_one_line(subprocess.CompletedProcess(send.args, send.returncode, out, err), 3, "database")
