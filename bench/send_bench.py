#!/usr/bin/env python3
"""Delivery speed: personalised digests per second to a loopback SMTP sink, and to the outbox.

N subscribers in three preference profiles (everything as HTML; SCO only as text; Putin–Xi
with a tag filter and reasons), about 40 stories from the corpus items, every digest due now.
The SMTP sink is aiosmtpd's own Sink handler in a separate process on 127.0.0.1.

A run below the floor (issue 14: >= 500 digests/s over SMTP, >= 1,000/s to the outbox) ends
with one line on stderr and exit status 1, so a slip is noticed where the bench runs.

    python bench/send_bench.py [--subscribers 10000] [--floor-smtp 500] [--floor-outbox 1000]
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
from datetime import UTC, date, datetime
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
    # one day of the corpus (about 40 stories once folded), dated yesterday: a report published
    # long before it is first seen is old news (config max_age) and never mailed
    entries = make_entries(162, offset_days=(now.date() - date(2020, 1, 1)).days - 1)
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


def run(loaded: object, store: Store) -> tuple[int, float, float, float]:
    w, c = time.perf_counter(), time.process_time()
    reports = asyncio.run(send_due(loaded, store, now=datetime.now(UTC)))  # type: ignore[arg-type]
    wall, cpu = time.perf_counter() - w, time.process_time() - c
    sent = sum(r.state == "sent" for r in reports)
    stories = sum(r.stories for r in reports if r.state == "sent") / max(1, sent)
    return sent, wall, cpu, stories


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--subscribers", type=int, default=10_000)
    ap.add_argument("--floor-smtp", type=float, default=500.0, help="digests/s below which the run fails")
    ap.add_argument("--floor-outbox", type=float, default=1000.0, help="digests/s below which the run fails")
    ap.add_argument("--only", choices=("smtp", "outbox"), help="one transport only")
    a = ap.parse_args()
    floors = {"smtp": a.floor_smtp, "outbox": a.floor_outbox}
    below = []
    work = Path(tempfile.mkdtemp(prefix="digest-send-"))
    port = free_port()
    cmd = [sys.executable, "-m", "aiosmtpd", "-n", "-l", f"127.0.0.1:{port}", "-c", "aiosmtpd.handlers.Sink"]
    sink = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)
    try:
        for transport in (a.only,) if a.only else ("smtp", "outbox"):
            loaded, store = build(work, a.subscribers, transport, port)
            sent, wall, cpu, stories = run(loaded, store)
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            rate = sent / wall
            print(f"{transport:<7} {sent} digests in {wall:6.2f} s = {rate:7.0f} per second "
                  f"(mean {stories:.1f} stories each); sender CPU {1000 * cpu / max(1, sent):.2f} ms "
                  f"a digest; peak RSS {rss:.0f} MB", flush=True)  # fmt: skip
            if sent < a.subscribers or rate < floors[transport]:
                below.append(f"{transport} {sent} of {a.subscribers} digests at {rate:.0f}/s "
                             f"(floor {floors[transport]:g}/s)")  # fmt: skip
    finally:
        sink.terminate()
    if below:
        sys.exit(f"send_bench: below the floor: {'; '.join(below)}; profile a run (python -m cProfile)")


if __name__ == "__main__":
    main()
