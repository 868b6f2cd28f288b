#!/usr/bin/env python3
"""Cadence instant under a burst: N instant subscribers, one story reported by 50 outlets over
ten polls a minute apart, every poll followed by a send, then one more poll and send in the next
`instant_every` window. Counts the mails a loopback SMTP server (aiosmtpd, in this process) took,
and how long after the story was first folded each subscriber's mail went out (on the clock the
polls and sends are given).

    python bench/instant_bench.py [--subscribers 1000] [--reports 50]

Exits 1 with one line when the mails are not one per subscriber, or a mail came later than one
poll interval plus instant_every after the story was folded.
"""

from __future__ import annotations

import argparse
import asyncio
import email.utils
import socket
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from common import in_project_env  # noqa: E402

in_project_env()

from aiosmtpd.controller import Controller  # noqa: E402

from digest.config import load_config  # noqa: E402
from digest.model.subscribers import make_subscriber  # noqa: E402
from digest.service.fetching import FetchOptions, fetch_feeds  # noqa: E402
from digest.service.organising import organise  # noqa: E402
from digest.service.sending import send_due  # noqa: E402
from digest.storage.store import Store  # noqa: E402

POLL = timedelta(minutes=1)
EVERY = timedelta(minutes=15)


class Counter:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.mails: list[tuple[str, bytes]] = []

    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
        with self.lock:
            self.mails.append((envelope.rcpt_tos[0], envelope.content))  # type: ignore[attr-defined]
        return "250 OK"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def item(i: int, at: datetime) -> str:
    return (
        f"<item><title>Putin and Xi hold talks in Tianjin on energy and trade (outlet {i})</title>"
        f"<link>https://outlet{i}.example.org/talks</link><guid>outlet{i}-talks</guid>"
        "<description>Russian President Vladimir Putin and Chinese President Xi Jinping met in Tianjin "
        "at the Shanghai Cooperation Organisation summit.</description>"
        f"<pubDate>{email.utils.format_datetime(at)}</pubDate></item>"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--subscribers", type=int, default=1000)
    ap.add_argument("--reports", type=int, default=50)
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="digest-instant-"))
    counter = Counter()
    smtp = Controller(counter, hostname="127.0.0.1", port=free_port())
    smtp.start()
    feeds = [f"outlet{i}" for i in range(a.reports)]
    for f in feeds:
        (work / f"{f}.xml").write_text("<rss version='2.0'><channel><title>x</title></channel></rss>")
    cfg = work / "feeds.yaml"
    cfg.write_text(
        f"database: sqlite:///{work / 'bench.db'}\nfeeds:\n"
        + "".join(f"  - {{name: {f}, url: '{work / (f + '.xml')}', language: en}}\n" for f in feeds)
        + "delivery:\n  transport: smtp\n"
        f"  smtp: {{host: 127.0.0.1, port: {smtp.port}, security: none, connections: 8}}\n"
        "  secret: bench\n  instant_every: 15m\n"
    )
    loaded = load_config(cfg)
    store = Store(loaded.database_url)
    start = datetime.now(UTC).replace(second=30, microsecond=0)
    store.add_subscribers(
        [
            make_subscriber({"email": f"reader{i}@example.org", "cadence": "instant"})
            for i in range(a.subscribers)
        ],
        start,
    )
    folded_at: datetime | None = None
    sent_at: dict[str, datetime] = {}
    polls = [start + POLL * k for k in range(10)] + [start + EVERY + POLL]
    per_poll = -(-a.reports // 10)
    wall = time.perf_counter()
    for k, at in enumerate(polls):
        for i in range(k * per_poll, min(a.reports, (k + 1) * per_poll)):  # this poll's reports
            (work / f"outlet{i}.xml").write_text(
                f"<rss version='2.0'><channel><title>Outlet {i}</title>{item(i, at - timedelta(seconds=20))}"
                "</channel></rss>"
            )
        asyncio.run(fetch_feeds(loaded, store, FetchOptions(force=True), clock=lambda at=at: at))
        organise(loaded, store, clock=lambda at=at: at)
        folded_at = folded_at or at
        for r in asyncio.run(send_due(loaded, store, now=at)):
            if r.state == "sent":
                sent_at.setdefault(r.email, at)
    wall = time.perf_counter() - wall
    smtp.stop()
    stories = {c.story_id for c in store.classified_entries()}
    latest = (
        max((t - folded_at for t in sent_at.values()), default=timedelta(0)) if folded_at else timedelta(0)
    )
    mails = len(counter.mails)
    print(
        f"{a.subscribers} instant subscribers, {a.reports} reports of one story over 10 polls a minute "
        f"apart ({len(stories)} story folded): {mails} mails ({len({r for r, _ in counter.mails})} "
        f"subscribers), not {a.subscribers * a.reports}; latest mail {latest.total_seconds():.0f} s after "
        f"the story was folded (bound: poll {POLL.total_seconds():.0f} s + instant_every "
        f"{EVERY.total_seconds():.0f} s); {len(polls)} polls and sends in {wall:.1f} s",
        flush=True,
    )
    if mails != a.subscribers or len(sent_at) != a.subscribers or latest > POLL + EVERY:
        sys.exit(f"instant_bench: {mails} mails for {a.subscribers} subscribers, latest after {latest}")


if __name__ == "__main__":
    main()
