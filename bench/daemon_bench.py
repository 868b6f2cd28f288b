#!/usr/bin/env python3
"""An idle daemon: 1,000 feeds and 10,000 subscribers, nothing new and nobody due.

Prints how long one send tick takes to decide that nobody is due (median of 5), then runs the
real `digest daemon` (tick 60 s) and samples its CPU time and RSS over a window after its first
poll, when every feed was just fetched and every subscriber has had today's digest.

    python bench/daemon_bench.py [--feeds 1000] [--subscribers 10000] [--window 180]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from common import digest_venv, in_project_env  # noqa: E402

in_project_env()

from digest.config import load_config  # noqa: E402
from digest.model.subscribers import make_subscriber  # noqa: E402
from digest.service.sending import send_due  # noqa: E402
from digest.storage.store import Store  # noqa: E402
from tests.support.feedserver import make_items, rss  # noqa: E402


def proc_stats(pid: int) -> tuple[float, float]:
    """(CPU seconds, RSS MB) of a process from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    rss = int(fields[21]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    return cpu, rss


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--feeds", type=int, default=1000)
    ap.add_argument("--subscribers", type=int, default=10_000)
    ap.add_argument("--window", type=float, default=180.0, help="seconds of idle running to sample")
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="digest-daemon-"))
    (work / "feeds").mkdir()
    for i in range(a.feeds):
        (work / "feeds" / f"f{i}.xml").write_bytes(rss(make_items(i, 5)))
    lines = "".join(f"  - {{name: f{i}, url: feeds/f{i}.xml}}\n" for i in range(a.feeds))
    cfg = work / "feeds.yaml"
    cfg.write_text(
        f"database: sqlite:///{work / 'd.db'}\ndaemon:\n  tick: 60s\n"
        f"delivery:\n  transport: outbox\n  secret: bench\nfeeds:\n{lines}"
    )
    loaded = load_config(cfg)
    store = Store(loaded.database_url)
    now = datetime.now(UTC)
    for i in range(a.subscribers):
        store.add_subscriber(make_subscriber({"email": f"r{i}@example.org", "send_time": "00:00"}), now)
    asyncio.run(send_due(loaded, store, now=now))  # everyone's digest for today: empty, recorded
    times = []
    for _ in range(5):
        t = time.perf_counter()
        reports = asyncio.run(send_due(loaded, store, now=datetime.now(UTC)))
        times.append(time.perf_counter() - t)
    assert all(r.state == "done" for r in reports)
    print(
        f"send tick, {a.subscribers} subscribers, nobody due: median {statistics.median(times) * 1000:.0f} ms"
    )
    store.close()

    exe = shutil.which("digest", path=str(Path(sys.executable).parent)) or str(digest_venv())
    log = (work / "daemon.log").open("wb")
    proc = subprocess.Popen(
        [exe, "--config", str(cfg), "daemon", "--log-format", "json"], stdout=log, stderr=log
    )
    try:
        deadline = time.monotonic() + 300
        while b'"event": "poll"' not in (work / "daemon.log").read_bytes():
            if time.monotonic() > deadline or proc.poll() is not None:
                sys.exit(
                    "bench: the daemon's first poll did not finish\n" + (work / "daemon.log").read_text()
                )
            time.sleep(0.5)
        time.sleep(5)
        cpu0, _ = proc_stats(proc.pid)
        peak = 0.0
        t0 = time.monotonic()
        while time.monotonic() - t0 < a.window:
            peak = max(peak, proc_stats(proc.pid)[1])
            time.sleep(1)
        cpu1, rss_now = proc_stats(proc.pid)
        share = (cpu1 - cpu0) / (time.monotonic() - t0) * 100
        print(
            f"idle daemon, {a.feeds} feeds, {a.subscribers} subscribers, {a.window:.0f} s: "
            f"CPU {share:.2f}% of one core, RSS now {rss_now:.0f} MB, peak {peak:.0f} MB"
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(120)


if __name__ == "__main__":
    main()
