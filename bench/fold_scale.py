#!/usr/bin/env python3
"""Folding at scale: N distinct SCO reports from nine feeds in one day, folded in memory.

The shape issue 11 measured (10,000 distinct SCO items took 176 s, comparing all pairs): every
report names the SCO and one of a few cities, so an index by entity alone would hand every
report every story of the day. Prints the time, the reports each new one was checked against
(Clusterer.compared, against all pairs) and the largest story.

    python bench/fold_scale.py [--n 10000]
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

from digest.model.fold import DEFAULT_SETTINGS, Clusterer, processing_order, story_entry

TOPICS = ["summit", "bank", "energy", "Kashmir", "Iran", "roadmap", "observer", "forum", "grid", "water"]
CITIES = ["place_tianjin", "place_astana", "place_bishkek", "place_tashkent"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=10_000)
    a = ap.parse_args()
    t0 = datetime(2025, 9, 1, tzinfo=UTC)
    reports = [
        story_entry(
            i,
            title=f"SCO {TOPICS[i % 10]} {TOPICS[(i // 10) % 10]} report {i}",
            summary="The Shanghai Cooperation Organisation met.",
            link=f"https://feed{i % 9}.example.org/{i}",
            guid=None,
            published=t0 + timedelta(seconds=86400 * i / a.n),
            published_fallback=False,
            language="en",
            source_title=None,
            entities=("org_sco", CITIES[i % 4]),
            feed=f"feed{i % 9}",
        )
        for i in range(a.n)
    ]
    wall, cpu = time.perf_counter(), time.process_time()
    c = Clusterer(DEFAULT_SETTINGS)
    assigned = [c.assign(r) for r in sorted(reports, key=processing_order)]
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    sizes = Counter(c.story_of(s) for s in assigned)
    print(
        f"{a.n} reports: {wall:.2f} s wall, {cpu:.2f} s CPU; checked against {c.compared:,} reports"
        f" (all pairs: {a.n * (a.n - 1) // 2:,}); {len(sizes)} stories, the largest {max(sizes.values())}"
    )


if __name__ == "__main__":
    main()
