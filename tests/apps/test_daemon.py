"""Running unattended: the lock, catch-up after downtime, signals, and the real daemon end to end."""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from click.testing import CliRunner

from digest.apps.cli import main
from digest.config import load_config
from digest.model.records import Entry
from digest.service.organising import organise
from digest.service.sending import send_due
from digest.storage.lock import SchedulerLock
from digest.storage.store import Store
from tests.support.worlds import record

ROOT = Path(__file__).resolve().parents[2]
DIGEST = shutil.which("digest") or f"{sys.executable} -m digest"


def test_with_wait_a_second_scheduler_is_refused_with_exit_code_4(offline: Path):
    loaded = load_config(offline)
    with SchedulerLock(loaded.database_url):
        r = CliRunner().invoke(main, ["--config", str(offline), "run", "--once", "--wait", "0"])
    assert r.exit_code == 4 and "another digest scheduler" in r.output and "--wait" in r.output
    released = CliRunner().invoke(main, ["--config", str(offline), "run", "--once", "--wait", "0"])
    assert released.exit_code == 0


def test_without_wait_a_run_works_beside_a_lock_holder_and_sends_each_digest_once(offline: Path):
    """Schedulers share the database through claims; the lock binds only those that ask for it."""
    loaded = load_config(offline)
    with SchedulerLock(loaded.database_url):
        first = CliRunner().invoke(main, ["--config", str(offline), "run", "--once"])
        second = CliRunner().invoke(main, ["--config", str(offline), "run", "--once"])
    assert first.exit_code == 0 and second.exit_code == 0, first.output + second.output
    outbox = offline.parent / "outbox" / "new"
    with Store(loaded.database_url) as store:
        sent = [r for r in store.deliveries_report() if r["state"] == "sent"]
    assert sent and len(list(outbox.iterdir())) == len(sent)
    assert "0 sent" in second.output  # the second run found every digest done


def _entry(n: int, day: datetime) -> Entry:
    title = f"SCO defence ministers meet in Qingdao, round {n}"
    return Entry(
        feed="example-wire",
        entry_id=f"x{n}",
        guid=f"x{n}",
        link=f"https://e.org/{n}",
        title=title,
        summary_html="",
        summary_text="SCO member states' defence ministers met.",
        published=day,
        published_fallback=False,
        author=None,
        language="en",
        content_hash=str(n),
    )


def test_digests_missed_during_downtime_fold_into_one_and_nothing_is_lost(offline: Path):
    loaded = load_config(offline)
    store = Store(loaded.database_url)
    store.sync_feeds(
        [("example-wire", "file:///x"), ("vestnik-ru", "file:///y"), ("shiping-zh", "file:///z")]
    )
    state = store.feed_states()["example-wire"]
    day = datetime(2026, 3, 2, 5, 0, tzinfo=UTC)  # 06:00 in Berlin: before the 07:00 send
    sent_stories: list[set[int]] = []
    for d in range(4):
        now = day + timedelta(days=d)
        record(store, state, [_entry(d, now)], now)
        organise(loaded, store, clock=lambda now=now: now)
        if d in (0, 3):  # the daemon runs on day 0, is down on days 1 and 2, and back on day 3
            reports = asyncio.run(
                send_due(loaded, store, now=now + timedelta(hours=2), only="reader@example.org")
            )
            assert [r.state for r in reports] == ["sent"]
            sub_id = store.list_subscribers(email="reader@example.org")[0].id
            row = store.delivery(sub_id, reports[0].period)
            sent_stories.append(set(row["story_ids"]))
    assert len(sent_stories[0]) == 1 and len(sent_stories[1]) == 3  # days 1, 2 and 3 in one digest
    assert not sent_stories[0] & sent_stories[1]  # and nothing twice
    sub = store.list_subscribers(email="reader@example.org")[0]
    assert [r["period"] for r in store.deliveries_report() if r["subscriber_id"] == sub.id] == [
        "2026-03-05",
        "2026-03-02",
    ]


class SlowSink:
    def __init__(self) -> None:
        self.to: list[str] = []

    async def handle_DATA(self, server, session, envelope):
        await asyncio.sleep(0.3)  # slow enough that SIGTERM lands mid-send
        self.to.extend(envelope.rcpt_tos)
        return "250 OK"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _daemon_config(offline: Path, smtp_port: int, n: int) -> Path:
    subs = "".join(f"  - {{email: r{i}@example.org, send_time: '00:00'}}\n" for i in range(n))
    text = offline.read_text().split("\ndelivery:")[0]
    offline.write_text(
        text + "\ndaemon:\n  tick: 1s\n"
        f"delivery:\n  transport: smtp\n  secret: s\n  smtp: {{host: 127.0.0.1, port: {smtp_port}, "
        "security: none, connections: 3}\nsubscribers:\n" + subs
    )
    return offline


def _start(cfg: Path, log: Path) -> subprocess.Popen[bytes]:
    cmd = [*DIGEST.split(), "--config", str(cfg), "daemon", "--log-format", "json"]
    return subprocess.Popen(cmd, stdout=log.open("ab"), stderr=subprocess.STDOUT, env={**os.environ})


def _wait(cond, seconds: float) -> bool:  # type: ignore[no-untyped-def]
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


def test_the_daemon_stopped_mid_send_and_restarted_sends_every_digest_once(offline: Path, tmp_path: Path):
    sink = SlowSink()
    controller = Controller(sink, hostname="127.0.0.1", port=_port())
    controller.start()
    try:
        cfg = _daemon_config(offline, controller.port, 30)
        log = tmp_path / "daemon.log"
        first = _start(cfg, log)
        with _stopped_at_exit(first):
            assert _wait(lambda: len(sink.to) >= 3, 60), log.read_text()
            first.send_signal(signal.SIGTERM)
            assert first.wait(60) == 0, log.read_text()
        stopped_at = len(sink.to)
        assert 3 <= stopped_at < 30  # it stopped in the middle
        second = _start(cfg, log)
        with _stopped_at_exit(second):
            assert _wait(lambda: len(sink.to) >= 30, 60), log.read_text()
            time.sleep(2.5)  # two more ticks: nothing more may arrive
            second.send_signal(signal.SIGTERM)
            assert second.wait(60) == 0
    finally:
        controller.stop()
    assert sorted(sink.to) == sorted(f"r{i}@example.org" for i in range(30))  # every digest, once
    assert '"event": "stop"' in log.read_text()


@contextlib.contextmanager
def _stopped_at_exit(proc: subprocess.Popen[bytes]) -> Iterator[None]:
    """A daemon left running by a failed assertion would hold the database's lock for the rest
    of the run (on PostgreSQL the advisory lock is server-wide): kill it."""
    try:
        yield
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_a_digest_due_at_start_up_waits_for_the_first_poll(offline: Path, tmp_path: Path, feed_server):
    """Polls and sends take turns: the send due at start-up sees what the first poll brought,
    even when one slow feed holds that poll up past the first send tick."""
    from tests.support.feedserver import Reply

    wire = (offline.parent / "wire.xml").read_bytes()
    url = feed_server.route("/wire.xml", Reply(body=wire, delay=2.5, headers={"Content-Type": "text/xml"}))
    text = offline.read_text().replace("url: wire.xml", f"url: {url}").split("\nsubscribers:")[0]
    offline.write_text(
        text.replace("delivery:", "daemon:\n  tick: 1s\ndelivery:", 1)
        + "\nsubscribers:\n  - {email: early@example.org, send_time: '00:00', timezone: UTC}\n"
    )
    log = tmp_path / "daemon.log"
    proc = _start(offline, log)
    with _stopped_at_exit(proc):
        assert _wait(lambda: '"event": "send"' in log.read_text(), 60), log.read_text()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    assert '"sent": 1' in log.read_text(), log.read_text()
    (mail,) = (offline.parent / "outbox" / "new").glob("*.eml")
    message = email.message_from_bytes(mail.read_bytes(), policy=email.policy.default)
    text = message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "SCO leaders gather in Tianjin" in text  # the slow feed's story


def test_sighup_with_a_broken_config_keeps_the_running_one(offline: Path, tmp_path: Path):
    text = offline.read_text()
    offline.write_text(text.replace("delivery:", "daemon:\n  tick: 1s\ndelivery:", 1))
    log = tmp_path / "daemon.log"
    proc = _start(offline, log)
    try:
        assert _wait(lambda: "daemon started" in log.read_text(), 30)
        offline.write_text("feeds: [\n")
        proc.send_signal(signal.SIGHUP)
        assert _wait(lambda: "keeping the running configuration" in log.read_text(), 30), log.read_text()
        assert proc.poll() is None  # still running
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_the_systemd_units_verify(tmp_path: Path):
    exe = shutil.which("digest")
    assert exe is not None
    units = []
    for name in ("digest.service", "digest-once.service", "digest-once.timer"):
        unit = tmp_path / name
        unit.write_text((ROOT / "contrib" / name).read_text().replace("/usr/local/bin/digest", exe))
        units.append(str(unit))
    p = subprocess.run(["systemd-analyze", "verify", *units], capture_output=True, text=True, timeout=60)
    problems = [line for line in (p.stdout + p.stderr).splitlines() if line.strip()]
    assert p.returncode == 0 and problems == [], problems
