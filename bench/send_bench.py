#!/usr/bin/env python3
"""Delivery speed: personalised digests per second to a loopback SMTP sink, and to the outbox.

N subscribers in three preference profiles (everything as HTML; SCO only as text; Putin–Xi
with a tag filter and reasons), about 40 stories from the corpus items, every digest due now.
The SMTP sink is aiosmtpd's own Sink handler in a separate process on 127.0.0.1.

    python bench/send_bench.py [--subscribers 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from common import in_project_env  # noqa: E402

in_project_env()

from organise_bench import make_entries  # noqa: E402

from digest.config import load_config  # noqa: E402
from digest.model.records import FetchWrite  # noqa: E402
from digest.model.subscribers import make_subscriber  # noqa: E402
from digest.service.fetching import organise  # noqa: E402
from digest.service.sending import send_due  # noqa: E402
from digest.storage.store import Store  # noqa: E402

PROFILES = [
    {"format": "html"},
    {"format": "text", "topics": "sco"},
    {"format": "html", "topics": "putin-xi", "tags": "summit diplomacy ukraine-war", "show_why": True},
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def build(work: Path, n_subs: int, transport: str, port: int) -> tuple[object, Store]:
    now = datetime.now(UTC)
    entries = make_entries(162)  # one day of the corpus: about 40 stories once folded
    feeds = sorted({e.feed for e in entries})
    smtp = f"  smtp: {{host: 127.0.0.1, port: {port}, security: none, connections: 8}}\n"
    lines = "".join(f"  - {{name: {f}, url: 'https://{f}.example/feed'}}\n" for f in feeds)
    cfg = work / f"{transport}.yaml"
    delivery = f"delivery:\n  transport: {transport}\n  secret: bench\n  outbox: outbox\n{smtp}"
    cfg.write_text(f"database: sqlite:///{work / (transport + '.db')}\nfeeds:\n{lines}{delivery}")
    loaded = load_config(cfg)
    store = Store(loaded.database_url)
    store.sync_feeds((f, f"https://{f}.example/feed") for f in feeds)
    st = store.feed_states()
    store.record_fetches([FetchWrite(st[f], [e for e in entries if e.feed == f], now) for f in feeds])
    organise(loaded, store)
    for i in range(n_subs):
        sub = make_subscriber({"email": f"reader{i}@example.org", "send_time": "00:00", **PROFILES[i % 3]})
        store.add_subscriber(sub, now)
    return loaded, store


def run(loaded: object, store: Store) -> tuple[int, float, float]:
    w = time.perf_counter()
    reports = asyncio.run(send_due(loaded, store, now=datetime.now(UTC)))  # type: ignore[arg-type]
    wall = time.perf_counter() - w
    sent = sum(r.state == "sent" for r in reports)
    stories = sum(r.stories for r in reports if r.state == "sent") / max(1, sent)
    return sent, wall, stories


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--subscribers", type=int, default=10_000)
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="digest-send-"))
    port = free_port()
    cmd = [sys.executable, "-m", "aiosmtpd", "-n", "-l", f"127.0.0.1:{port}", "-c", "aiosmtpd.handlers.Sink"]
    sink = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)
    try:
        for transport in ("smtp", "outbox"):
            loaded, store = build(work, a.subscribers, transport, port)
            sent, wall, stories = run(loaded, store)
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            print(f"{transport:<7} {sent} digests in {wall:6.2f} s = {sent / wall:7.0f} per second "
                  f"(mean {stories:.1f} stories each); peak RSS {rss:.0f} MB")  # fmt: skip
    finally:
        sink.terminate()


if __name__ == "__main__":
    main()
