#!/usr/bin/env python3
"""Search over N stored entries (default 100,000) in English, Russian and Chinese, both backends.

Entries are written through Store.record_fetches (so the index is built as the daemon builds
it), all selected, three reports a story. Then each query is asked `--runs` times through
`lookup.search_stories` (what `digest stories --search` and the search page call: ranked hits,
then the stories' reports) and through `Store.search` alone. Prints the writing time, the
median and 95th percentile per backend, and the machine's load average before and after.

    python bench/search_bench.py [--n 100000] [--runs 5] [--postgres postgresql+psycopg://postgres@127.0.0.1/test]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import sqlalchemy as sa

from digest.config import load_config
from digest.model.records import Entry, FeedState, FetchWrite, Verdict
from digest.service.lookup import search_stories
from digest.storage.store import Store

EN = [
    "SCO",
    "summit",
    "Tianjin",
    "leaders",
    "security",
    "energy",
    "pipeline",
    "trade",
    "bank",
    "development",
    "Putin",
    "Xi",
    "talks",
    "Modi",
    "Kashmir",
    "Iran",
    "observer",
    "forum",
    "grid",
    "water",
    "council",
    "cooperation",
    "visit",
    "parade",
    "Beijing",
    "Moscow",
    "sanctions",
    "gas",
    "oil",
    "yuan",
    "ruble",
    "border",
    "military",
    "drill",
    "statement",
    "agreement",
    "investment",
]
RU = [
    "ШОС",
    "саммит",
    "саммите",
    "саммита",
    "Тяньцзине",
    "Путин",
    "Путина",
    "Си",
    "Цзиньпин",
    "переговоры",
    "энергетика",
    "газопровод",
    "торговля",
    "банк",
    "развития",
    "безопасность",
    "Москва",
    "Пекин",
    "визит",
    "парад",
    "сотрудничество",
    "санкции",
    "нефть",
    "граница",
    "учения",
    "заявление",
    "соглашение",
    "инвестиции",
    "лидеры",
    "встреча",
    "президент",
    "России",
    "Китая",
]
ZH = [
    "上合组织",
    "峰会",
    "天津",
    "普京",
    "习近平",
    "会谈",
    "能源",
    "管道",
    "贸易",
    "银行",
    "发展",
    "安全",
    "北京",
    "莫斯科",
    "访问",
    "阅兵",
    "合作",
    "制裁",
    "石油",
    "天然气",
    "边境",
    "军事",
    "演习",
    "声明",
    "协议",
    "投资",
    "领导人",
    "会见",
    "总统",
    "俄罗斯",
    "中国",
    "双边",
    "关系",
]
QUERIES = [
    "SCO",
    "summit Tianjin",
    "Putin Xi",
    "Xi",
    "energy pipeline",
    "Kashmir",
    "ШОС",
    "саммите",
    "Путина Си",
    "банк развития",
    "普京",
    "上合组织",
    "习近平 会谈",
    "能源",
    "nothingmatches",
]
T0 = datetime(2025, 1, 1, tzinfo=UTC)


def make_entries(n: int, seed: int = 1) -> list[Entry]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        lang = ("en", "ru", "zh")[i % 3]
        words = {"en": EN, "ru": RU, "zh": ZH}[lang]
        # a few common words and a long tail, as in news (Zipf-like: low indexes are frequent)
        pick = [words[min(int(rng.paretovariate(1.2)) - 1, len(words) - 1)] for _ in range(8)]
        pick += rng.sample(words, 4)
        sep = "" if lang == "zh" else " "
        title = sep.join(pick[:6]) + f" {i}"
        summary = sep.join(pick[6:] + rng.sample(words, 10))
        published = T0 + timedelta(minutes=5 * i)
        out.append(
            Entry(
                feed=f"f{i % 20}",
                entry_id=f"e{i}",
                guid=None,
                link=f"https://feed{i % 20}.example.org/{i}",
                title=title,
                summary_html=summary,
                summary_text=summary,
                published=published,
                published_fallback=False,
                author=None,
                language=lang,
                content_hash=hashlib.sha256(f"{i}{title}".encode()).hexdigest(),
            )
        )
    return out


def fill(url: str, n: int) -> float:
    store = Store(url)
    store.sync_feeds([(f"f{k}", f"https://feed{k}.example.org/rss") for k in range(20)])
    entries = make_entries(n)
    start = time.perf_counter()
    now = datetime.now(UTC)
    for lo in range(0, n, 2000):
        chunk = entries[lo : lo + 2000]
        by_feed: dict[str, list[Entry]] = {}
        for e in chunk:
            by_feed.setdefault(e.feed, []).append(e)
        store.record_fetches([FetchWrite(FeedState(f, ""), es, now, 200) for f, es in by_feed.items()])
    wrote = time.perf_counter() - start
    ids = [s.id for s in store.iter_entries()]
    verdict = Verdict(True, ("sco",), ("summit",), [], frozenset(), frozenset(), "bench")
    for lo in range(0, len(ids), 5000):
        store.save_classifications({i: verdict for i in ids[lo : lo + 5000]}, now)
    store.assign_stories({i: k // 3 + 1 for k, i in enumerate(ids)}, now)
    store.tidy()
    store.close()
    return wrote


def measure(url: str, runs: int, tmp: Path) -> tuple[list[float], list[float], dict[str, int]]:
    cfg = tmp / "feeds.yaml"
    cfg.write_text(f"database: '{url}'\nfeeds: []\n", encoding="utf-8")
    loaded = load_config(cfg)
    whole, alone, found = [], [], {}
    with Store(url) as store:
        for q in QUERIES:  # warm: the first query of a process pays for the plans and the cache
            search_stories(loaded, store, q)
        for _ in range(runs):
            for q in QUERIES:
                t = time.perf_counter()
                stories = search_stories(loaded, store, q)
                whole.append(time.perf_counter() - t)
                t = time.perf_counter()
                store.search(q, limit=400)
                alone.append(time.perf_counter() - t)
                found[q] = len(stories)
    return whole, alone, found


def report(
    name: str, n: int, wrote: float, whole: list[float], alone: list[float], found: dict[str, int]
) -> None:
    def ms(xs: list[float], q: float) -> str:
        return f"{statistics.quantiles(xs, n=100)[q - 1] * 1000:6.1f} ms" if q < 100 else ""

    print(f"{name}: {n:,} entries written in {wrote:.1f} s ({n / wrote:,.0f}/s, index included)")
    print(f"  search_stories  median {statistics.median(whole) * 1000:6.1f} ms   p95 {ms(whole, 95)}")
    print(f"  Store.search    median {statistics.median(alone) * 1000:6.1f} ms   p95 {ms(alone, 95)}")
    print("  stories found (of 50 at most): " + ", ".join(f"{q!r} {k}" for q, k in found.items()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--postgres", help="a PostgreSQL URL: a schema of its own is made there, then dropped")
    a = ap.parse_args()
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}, {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/search.db"
        wrote = fill(url, a.n)
        report("SQLite", a.n, wrote, *measure(url, a.runs, Path(tmp)))
        if a.postgres:
            schema = f"bench_{uuid.uuid4().hex[:10]}"
            admin = sa.create_engine(a.postgres)
            with admin.begin() as conn:
                conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
            pg = sa.engine.make_url(a.postgres).update_query_dict({"options": f"-csearch_path={schema}"})
            pg_url = pg.render_as_string(hide_password=False)
            try:
                wrote = fill(pg_url, a.n)
                report("PostgreSQL", a.n, wrote, *measure(pg_url, a.runs, Path(tmp)))
            finally:
                with admin.begin() as conn:
                    conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
                admin.dispose()
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
