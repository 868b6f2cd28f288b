#!/usr/bin/env python3
"""Tagging and clustering speed: 100,000 entries, then 1,000 more added to that store.

The entries are the labelled corpus's items (../shared/eval/items.jsonl, or a few built-in ones)
repeated with their dates shifted day by day, so the mix of relevant items, distractors and
duplicate reports is the corpus's. Prints wall time, CPU time and peak RSS of each step:

  1. pure: select.classify + cluster.cluster over 100,000 entries, in memory;
  2. stored: pipeline.organise over a SQLite store holding the 100,000 entries (classify, save,
     cluster, save);
  3. incremental: 1,000 new entries stored, then pipeline.organise again.

    python bench/organise_bench.py [--entries 100000] [--new 1000]
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from common import in_project_env  # noqa: E402

in_project_env()

from digest.config import load_config  # noqa: E402
from digest.feeds.parse import html_to_text  # noqa: E402
from digest.model.fold import cluster, story_entry  # noqa: E402
from digest.model.judge import classify  # noqa: E402
from digest.model.records import Entry, FetchWrite  # noqa: E402
from digest.service.fetching import organise  # noqa: E402
from digest.storage.store import Store  # noqa: E402

EVAL = ROOT.parent / "shared" / "eval" / "items.jsonl"


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def base_items() -> list[dict]:
    if EVAL.exists():
        return [json.loads(line) for line in EVAL.open(encoding="utf-8")]
    return [{"feed": "wire", "title": "Putin and Xi hold talks in Samarkand", "summary": "SCO summit talks.",
             "link": "https://e.org/a", "guid": "a", "lang": "en"},
            {"feed": "wire", "title": "Oil prices fall", "summary": "Brent slid.", "link": "https://e.org/b",
             "guid": "b", "lang": "en"}]  # fmt: skip


def make_entries(n: int, offset_days: int = 0) -> list[Entry]:
    items = base_items()
    start = datetime(2020, 1, 1, tzinfo=UTC)
    out = []
    for i in range(n):
        it = items[i % len(items)]
        day = offset_days + i // len(items)
        link = f"{it['link'].split('?')[0]}-{day}"
        summary = html_to_text(it.get("summary") or "")
        out.append(Entry(
            feed=it["feed"], entry_id=f"{link}#{i}", guid=f"{it.get('guid') or link}-{day}", link=link,
            title=html_to_text(it["title"]), summary_html=summary, summary_text=summary,
            published=start + timedelta(days=day, minutes=(i * 7) % 600), published_fallback=False,
            author=None, language=it["lang"], content_hash=str(i), source_title=None, source_url=None,
        ))  # fmt: skip
    return out


def timed(label: str, fn):  # type: ignore[no-untyped-def]
    w, c = time.perf_counter(), time.process_time()
    result = fn()
    print(f"{label:<52} wall {time.perf_counter() - w:6.2f} s   cpu {time.process_time() - c:6.2f} s   "
          f"peak RSS {peak_mb():6.0f} MB")  # fmt: skip
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--entries", type=int, default=100_000)
    ap.add_argument("--new", type=int, default=1000)
    a = ap.parse_args()
    loaded = load_config(ROOT / "feeds.yaml")
    rules, settings = loaded.rules, loaded.clustering
    entries = make_entries(a.entries)
    print(
        f"{a.entries} entries from {len(base_items())} corpus items "
        f"over {a.entries // len(base_items())} days"
    )

    def pure() -> tuple[int, int]:
        selected = []
        for i, e in enumerate(entries):
            c = classify(e.title, e.summary_text, rules)
            if c.relevant:
                selected.append(story_entry(
                    i, title=e.title, summary=e.summary_text, link=e.link, guid=e.guid, published=e.published,
                    published_fallback=False, language=e.language, source_title=None, entities=c.entities,
                    title_entities=c.title_entities,
                ))  # fmt: skip
        stories = cluster(selected, settings)
        return len(selected), len(set(stories.values()))

    n_sel, n_stories = timed("1. pure: classify + cluster", pure)
    print(f"   {n_sel} selected, {n_stories} stories")

    work = Path(tempfile.mkdtemp(prefix="digest-organise-"))
    cfg = work / "feeds.yaml"
    feeds = sorted({e.feed for e in entries})
    feed_lines = "".join(f"  - {{name: {f}, url: 'https://{f}.example/feed'}}\n" for f in feeds)
    cfg.write_text(f"database: sqlite:///{work / 'o.db'}\nfeeds:\n{feed_lines}")
    loaded = load_config(cfg)
    store = Store(loaded.database_url)
    store.sync_feeds((f, f"https://{f}.example/feed") for f in feeds)
    states = store.feed_states()
    now = datetime.now(UTC)
    by_feed: dict[str, list[Entry]] = {}
    for e in entries:
        by_feed.setdefault(e.feed, []).append(e)
    store.record_fetches([FetchWrite(states[f], es, now) for f, es in by_feed.items()])
    summary = timed("2. stored: organise 100,000 entries (SQLite)", lambda: organise(loaded, store))
    print(f"   {summary}")
    new = make_entries(a.new, offset_days=a.entries // len(base_items()) - 3)
    new = [replace(e, entry_id="new-" + e.entry_id) for e in new]
    store.record_fetches([FetchWrite(states[f], [e for e in new if e.feed == f], now) for f in feeds])
    summary = timed(f"3. incremental: organise {a.new} new entries", lambda: organise(loaded, store))
    print(f"   {summary}")


if __name__ == "__main__":
    main()
