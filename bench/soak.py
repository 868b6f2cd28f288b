#!/usr/bin/env python3
"""A long run of the real daemon against loopback feeds that keep changing; RSS over time.

200 feeds on 20 loopback addresses, each gaining a new item every minute (so every poll
parses, stores, classifies and clusters something), polled every minute (interval 60 s, tick
2 s), 500 subscribers on an outbox. Samples the daemon's RSS every 10 s and prints a summary:
first, median and last samples and the slope over the second half.

    python bench/soak.py --minutes 40
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.feedserver import FeedServer, Reply, make_items, rss  # noqa: E402

T0 = time.time()


def feed(i: int):  # type: ignore[no-untyped-def]
    def reply(_request):  # type: ignore[no-untyped-def]
        minute = int((time.time() - T0) // 60)
        items = make_items(i, 10 + minute)[-20:]  # one more item every minute, the last 20 served
        body = rss(items, title=f"Soak feed {i}")
        return Reply(body=body, etag=f'"{i}-{minute}"')

    return reply


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=40)
    a = ap.parse_args()
    hosts = tuple(f"127.0.0.{i + 1}" for i in range(20))
    work = Path(tempfile.mkdtemp(prefix="digest-soak-"))
    with FeedServer(hosts=hosts) as srv:
        lines = []
        for i in range(200):
            srv.route(f"/s{i}.xml", feed(i))
            lines.append(
                f"  - {{name: s{i}, url: '{srv.url(f'/s{i}.xml', host=hosts[i % 20])}', interval: 60s}}\n"
            )
        subs = "".join(f"  - {{email: r{i}@example.org, send_time: '00:00'}}\n" for i in range(500))
        cfg = work / "feeds.yaml"
        cfg.write_text(
            f"database: sqlite:///{work / 's.db'}\ndaemon:\n  tick: 2s\n"
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
        finally:
            proc.send_signal(signal.SIGTERM)
            rc = proc.wait(120)
    polls = (work / "daemon.log").read_text().count('"event": "poll"')
    values = sorted(v for _, v in samples)
    half = samples[len(samples) // 2 :]
    slope = (half[-1][1] - half[0][1]) / max(1.0, (half[-1][0] - half[0][0]) / 3600)
    print(
        f"{a.minutes:g} min, {polls} poll cycles with new entries, exit code {rc}; "
        f"RSS first {samples[0][1]:.0f} MB, "
        f"median {values[len(values) // 2]:.0f} MB, max {values[-1]:.0f} MB, last {samples[-1][1]:.0f} MB; "
        f"second-half slope {slope:+.1f} MB/hour  ({out})"
    )
    print(os.path.basename(str(work)))


if __name__ == "__main__":
    main()
