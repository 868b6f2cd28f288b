#!/usr/bin/env python3
"""A long run of the real daemon against loopback feeds that keep changing; RSS over time.

200 feeds on 20 loopback addresses, each gaining a new item every minute (half of them on the
SCO, so every poll parses, stores, classifies and clusters something), polled every minute
(interval 60 s, tick 2 s); 500 subscribers on an outbox whose send times are spread over the
run, so digests go out every minute. Retention is an hour (--retention) and housekeeping
runs six times per retention period, so after that the data stops growing and any further
growth of the daemon's memory is the daemon's own. Samples RSS every 10 s; prints the median of
each half hour and the least-squares slope once the data has stopped growing.

    python bench/soak.py --minutes 150
    python bench/soak.py --minutes 60 --retention 20
"""

from __future__ import annotations

import argparse
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from common import in_project_env  # noqa: E402

in_project_env()

from tests.support.feedserver import FeedServer, Reply, make_items, rss  # noqa: E402

T0 = time.time()


def feed(i: int):  # type: ignore[no-untyped-def]
    def reply(_request):  # type: ignore[no-untyped-def]
        minute = int((time.time() - T0) // 60)
        items = make_items(i, 10 + minute)[-20:]  # one more item every minute, the last 20 served
        for n, item in enumerate(items):
            if (n + minute) % 2 == 0:  # half the items on the topic, a few outlets per story
                item["title"] = f"SCO summit: leaders meet on trade corridor plan {(n + minute) // 2 % 7}"
        body = rss(items, title=f"Soak feed {i}")
        return Reply(body=body, etag=f'"{i}-{minute}"')

    return reply


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=40)
    ap.add_argument("--retention", type=float, default=60, help="minutes of entries kept (the steady state)")
    a = ap.parse_args()
    # stopped early (kill, Ctrl-C): the daemon is still stopped and the summary still printed
    signal.signal(signal.SIGTERM, _interrupt)
    hosts = tuple(f"127.0.0.{i + 1}" for i in range(20))
    work = Path(tempfile.mkdtemp(prefix="digest-soak-"))
    with FeedServer(hosts=hosts) as srv:
        lines = []
        for i in range(200):
            srv.route(f"/s{i}.xml", feed(i))
            lines.append(
                f"  - {{name: s{i}, url: '{srv.url(f'/s{i}.xml', host=hosts[i % 20])}', interval: 60s}}\n"
            )
        start = time.gmtime(time.time() + 180)
        first = start.tm_hour * 60 + start.tm_min  # the first digests three minutes in, then every minute
        span = max(1, int(a.minutes) - 5)
        at = [(first + i % span) % 1440 for i in range(500)]
        subs = "".join(
            f"  - {{email: r{i}@example.org, send_time: '{m // 60:02d}:{m % 60:02d}'}}\n"
            for i, m in enumerate(at)
        )
        cfg = work / "feeds.yaml"
        daemon = f"{{tick: 2s, retention: {a.retention:g}m, housekeeping: {max(1, a.retention / 6):g}m}}"
        cfg.write_text(
            f"database: sqlite:///{work / 's.db'}\ndaemon: {daemon}\n"
            f"delivery:\n  transport: outbox\n  secret: soak\nfeeds:\n{''.join(lines)}subscribers:\n{subs}"
        )
        log = (work / "daemon.log").open("wb")
        exe = str(Path(sys.executable).parent / "digest")
        proc = subprocess.Popen(
            [exe, "--config", str(cfg), "daemon", "--log-format", "json"], stdout=log, stderr=log
        )
        samples: list[tuple[float, float]] = []
        out = work / "rss.tsv"
        try:
            end = time.time() + a.minutes * 60
            while time.time() < end and proc.poll() is None:
                mb = rss_mb(proc.pid)
                if mb > 1:  # the first moments are the interpreter starting, not the daemon
                    samples.append((time.time() - T0, mb))
                    with out.open("a") as fh:
                        fh.write(f"{samples[-1][0]:.0f}\t{samples[-1][1]:.1f}\n")
                time.sleep(10)
        except KeyboardInterrupt:
            print("stopped early", file=sys.stderr)
        finally:
            proc.send_signal(signal.SIGTERM)
            rc = proc.wait(120)
    text = (work / "daemon.log").read_text()
    polls, sends = text.count('"event": "poll"'), text.count('"event": "send"')
    with sqlite3.connect(work / "s.db") as db:
        stored = db.execute("select count(*) from entries").fetchone()[0]
        sent = db.execute("select count(*) from deliveries where state = 'sent'").fetchone()[0]
    values = sorted(v for _, v in samples)
    t0 = samples[0][0]
    buckets: dict[int, list[float]] = {}
    for t, v in samples:
        buckets.setdefault(int((t - t0) // 1800), []).append(v)
    halves = ", ".join(
        f"{k * 30}-{k * 30 + 30} min {statistics.median(v):.0f}" for k, v in sorted(buckets.items())
    )
    settle = a.retention * 60 + 600  # one retention period, then a housekeeping round or so
    steady = [(t, v) for t, v in samples if t - t0 >= settle] or samples[len(samples) // 2 :]
    slope = statistics.linear_regression([t / 3600 for t, _ in steady], [v for _, v in steady]).slope
    print(
        f"{a.minutes:g} min, {polls} poll cycles with new entries, {sends} send batches, {sent} digests, "
        f"{stored} entries stored at the end, exit code {rc}\n"
        f"RSS MB median by half hour: {halves}; max {values[-1]:.0f}\n"
        f"slope once the data stopped growing (after {settle / 60:g} min, least squares): "
        f"{slope:+.2f} MB/hour  ({out})"
    )
    print(os.path.basename(str(work)))


if __name__ == "__main__":
    main()
