"""Small worlds for tests: the offline example's feed files behind a feeds.yaml of the test's own."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from digest.model.records import Entry, FeedState, FetchWrite
from digest.storage.store import Store

ROOT = Path(__file__).resolve().parents[2]
FEEDS = (
    ("example-wire", "wire.xml", "en"),
    ("vestnik-ru", "vestnik-ru.xml", "ru"),
    ("shiping-zh", "shiping-zh.xml", "zh"),
)


def daily_now(addresses: Sequence[str]) -> str:
    """feeds.yaml `subscribers:` lines, each with a daily digest at 00:00 UTC: due now, whenever now is."""
    return "".join(f"  - {{email: {a}, send_time: '00:00', timezone: UTC}}\n" for a in addresses)


def offline_config(
    where: Path,
    db_url: str,
    *,
    feeds: Sequence[str] = ("example-wire",),
    delivery: str = "  transport: outbox\n",
    subscribers: str = "",
    extra: str = "",
) -> Path:
    """`where`/feeds.yaml over a copy of examples/offline's feed files (in `where`/feeds): the
    named feeds, `delivery` (indented lines under `delivery:`, beside a secret and a sender),
    `subscribers` (indented lines) and `extra` (top-level YAML)."""
    src = where / "feeds"
    if not src.exists():
        shutil.copytree(ROOT / "examples" / "offline", src, ignore=shutil.ignore_patterns("feeds.yaml"))
    lines = "".join(
        f"  - {{name: {name}, url: '{src / file}', language: {lang}}}\n"
        for name, file, lang in FEEDS
        if name in feeds
    )
    cfg = where / "feeds.yaml"
    cfg.write_text(
        f"database: '{db_url}'\n"
        "max_age: 3650d\n"  # the example's news is of 2025: not old news here
        f"feeds:\n{lines}"
        "delivery:\n"
        + delivery
        + "  secret: test-secret\n  sender: 'Digest <digest@example.org>'\n"
        + ("subscribers:\n" + subscribers if subscribers else "")
        + extra,
        encoding="utf-8",
    )
    return cfg


def record(store: Store, state: FeedState, entries: Sequence[Entry], now: datetime) -> tuple[int, int]:
    """One poll's write: the feed's state and its entries -> (new, updated)."""
    return store.record_fetches([FetchWrite(state, entries, now)])[0]


def stored_count(store: Store, feed: str | None = None) -> int:
    counts = store.entry_counts()
    return counts.get(feed, 0) if feed else sum(counts.values())
