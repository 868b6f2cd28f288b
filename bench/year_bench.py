#!/usr/bin/env python3
"""A year of news: the labelled development parts repeated weekly for 52 weeks, fetched cold.

Each week's copy of every item gets its own link and GUID (a `/wNN` path segment) and is dated
NN weeks after the original, so every week holds the same stories, a week apart from the last.
The copies are rendered into real feed files by the corpus's make_feeds.py (8 feeds a week, 416
in all), and the script measures:

  1. cold `digest fetch` of the 416 files (fetch, parse, classify, fold, store; wall and CPU),
     against feedparser's single-core CPU time for the same files (the issue's yardstick);
  2. the stories it made: how many, how many span more than one week (each week's must stay
     apart), and how many are right (the labelled stories of a week, times 52);
  3. one more day of news added to that store: pipeline.organise (classify and fold) timed alone.

    python bench/year_bench.py --part ITEMS.jsonl --labels LABELS.jsonl \\
                               --part ITEMS2.jsonl --labels LABELS2.jsonl [--make-feeds make_feeds.py]

make_feeds.py is looked for beside the first part and one folder up when not given.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import yaml
from common import digest_venv, in_project_env, measure, median

in_project_env()

ROOT = Path(__file__).resolve().parent.parent
WEEKS = 52


def load_jsonl(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def parse_date(s: str) -> datetime:
    try:
        return datetime.fromisoformat(s.replace("Z", "+00:00"))
    except ValueError:
        return parsedate_to_datetime(s)


def in_week(url: str | None, week: int) -> str | None:
    """The URL with a /wNN segment first in its path (query and redirect forms kept)."""
    if not url:
        return url
    if not re.match(r"^[a-z]+://", url):
        return f"{url}-w{week:02d}"
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/w{week:02d}{parts.path}"))


def week_copy(items: list[dict], week: int) -> list[dict]:
    out = []
    for it in items:
        c = dict(
            it,
            id=f"{it['id']}-w{week:02d}",
            link=in_week(it["link"], week),
            guid=in_week(it.get("guid"), week),
        )
        if it.get("published"):
            c["published"] = (parse_date(it["published"]) + timedelta(weeks=week)).isoformat()
        out.append(c)
    return out


def render(items: list[dict], out_dir: Path, make_feeds: Path) -> dict[str, Path]:
    """feed name -> rendered file."""
    out_dir.mkdir(parents=True)
    src = out_dir / "items.jsonl"
    src.write_text("".join(json.dumps(i, ensure_ascii=False) + "\n" for i in items), encoding="utf-8")
    subprocess.run(
        [sys.executable, str(make_feeds), str(out_dir), str(src)], check=True, stdout=subprocess.DEVNULL
    )
    manifest = json.loads((out_dir / "manifest.json").read_text(encoding="utf-8"))
    files = manifest.get("feeds", manifest)
    return {
        name: out_dir / (info["file"] if isinstance(info, dict) else info) for name, info in files.items()
    }


def feedparser_cpu(files: list[Path], runs: int) -> float:
    """Single-core CPU seconds feedparser alone needs to parse every file (median of `runs`)."""
    import feedparser

    bodies = [f.read_bytes() for f in files]
    times = []
    for _ in range(runs):
        t = time.process_time()
        for b in bodies:
            feedparser.parse(io.BytesIO(b))
        times.append(time.process_time() - t)
    return median(times)


def _pairs(groups: dict[object, Counter[str]]) -> tuple[int, int]:
    """(pairs within one language, pairs across languages) of these groups (language counts)."""
    within = cross = 0
    for langs in groups.values():
        n = sum(langs.values())
        same = sum(k * (k - 1) // 2 for k in langs.values())
        within, cross = within + same, cross + n * (n - 1) // 2 - same
    return within, cross


def print_pair_scores(records: list[dict], items: list[dict], labels: dict[str, dict], weeks: int) -> None:
    """Story pair precision and recall over the year, as score.py counts them (over the items
    relevant or selected), a gold pair being one labelled story in one week's copy. Then the same
    for dated entries only: an undated entry's copies are alike in every week (same headline, no
    date, first seen together), so they fold across weeks."""
    gold_of = {}  # (feed-wNN, link) -> (story of that week, language, dated)
    for w in range(weeks):
        for it in week_copy(items, w):
            lab = labels.get(it["id"].rsplit("-w", 1)[0])
            if lab and lab["relevant"]:
                key = (f"{it['feed']}-w{w:02d}", it["link"])
                gold_of[key] = (f"{lab['cluster']}@{w}", it["lang"], bool(it.get("published")))
    for dated_only in (False, True):
        predicted: dict[object, Counter[str]] = defaultdict(Counter)
        both: dict[object, Counter[str]] = defaultdict(Counter)
        gold: dict[object, Counter[str]] = defaultdict(Counter)
        for g, lang, dated in gold_of.values():
            if dated or not dated_only:
                gold[g][lang] += 1
        for rec in records:
            if dated_only and rec["published_is_fetch_time"]:
                continue
            lang = rec.get("language") or "en"
            predicted[rec["story"]][lang] += 1
            found = gold_of.get((rec["feed"], rec["link"]))
            if found:
                both[(rec["story"], found[0])][lang] += 1
        print("  dated entries only:" if dated_only else "  every entry:")
        for i, kind in enumerate(("same language", "across languages")):
            tp, pred, true = _pairs(both)[i], _pairs(predicted)[i], _pairs(gold)[i]
            p, r = (tp / pred if pred else 0.0), (tp / true if true else 0.0)
            counts = f"(tp {tp}, fp {pred - tp}, fn {true - tp})"
            print(f"    story pairs {kind:<16} precision {p:.3f}  recall {r:.3f}  {counts}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", type=Path, action="append", required=True, help="a labelled part's items.jsonl")
    ap.add_argument("--labels", type=Path, action="append", default=[], help="its labels.jsonl (same order)")
    ap.add_argument("--make-feeds", type=Path)
    ap.add_argument("--weeks", type=int, default=WEEKS)
    ap.add_argument("--runs", type=int, default=3, help="cold fetches to take the median of")
    ap.add_argument("--keep", type=Path, help="work in this folder and keep it")
    a = ap.parse_args()
    first = a.part[0]
    make_feeds = a.make_feeds or next(
        (p for p in (first.parent / "make_feeds.py", first.parent.parent / "make_feeds.py") if p.exists()),
        None,
    )
    if make_feeds is None:
        sys.exit("year_bench: make_feeds.py not found beside the first part; pass --make-feeds")
    items = [it for part in a.part for it in load_jsonl(part)]
    labels = {lab["id"]: lab for path in a.labels for lab in load_jsonl(path)}
    work = a.keep or Path(tempfile.mkdtemp(prefix="digest-year-"))
    work.mkdir(parents=True, exist_ok=True)

    feeds: list[dict[str, str]] = []
    files: list[Path] = []
    for w in range(a.weeks):
        for name, path in render(week_copy(items, w), work / f"w{w:02d}", make_feeds).items():
            feeds.append({"name": f"{name}-w{w:02d}", "url": path.resolve().as_uri()})
            files.append(path)
    print(f"{len(items)} items x {a.weeks} weeks = {len(items) * a.weeks} entries in {len(files)} feed files")

    cfg = yaml.safe_load((ROOT / "feeds.yaml").read_text(encoding="utf-8"))
    cfg["feeds"] = feeds
    # this checkout's `digest`: beside the Python running this, or the bench's own venv
    digest = shutil.which("digest", path=str(Path(sys.executable).parent)) or str(digest_venv())
    runs = []
    for r in range(a.runs):
        db = work / "year.db"
        db.unlink(missing_ok=True)
        cfg["database"] = f"sqlite:///{db}"
        (work / "feeds.yaml").write_text(json.dumps(cfg, ensure_ascii=False), encoding="utf-8")
        env = dict(os.environ, DIGEST_CONFIG=str(work / "feeds.yaml"))
        run = measure([digest, "fetch", "-q"], env=env, cwd=work)
        if run.returncode != 0:
            sys.exit(f"digest fetch failed:\n{run.stderr[-2000:]}")
        print(
            f"cold digest fetch {r + 1}: wall {run.wall:.2f} s, cpu {run.cpu:.2f} s,"
            f" peak RSS {run.peak_rss_mb:.0f} MB"
        )
        runs.append(run)
    fp = feedparser_cpu(files, a.runs)
    wall = median([r.wall for r in runs])
    print(f"feedparser alone, single core: {fp:.2f} s CPU;  cold fetch wall / feedparser = {wall / fp:.2f}")

    # the stories
    out = subprocess.run(
        [digest, "stories", "--format", "jsonl"], env=env, cwd=work, capture_output=True, text=True
    )
    records = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    weeks_of: dict[str, set[str]] = defaultdict(set)
    for rec in records:
        weeks_of[rec["story"]].add(rec["feed"].rsplit("-w", 1)[1])
    spanning = sum(len(w) > 1 for w in weeks_of.values())
    line = f"{len(records)} selected entries in {len(weeks_of)} stories; {spanning} span more than one week"
    if labels:
        right = len({lab["cluster"] for lab in labels.values() if lab["relevant"]}) * a.weeks
        line += f"; right: {right} ({right // a.weeks} a week)"
    print(line)
    if labels:
        print_pair_scores(records, items, labels, a.weeks)

    # one more day: a 53rd week's copy of a seventh of the items, stored, then organise() alone
    from digest.config import load_config
    from digest.feeds.parse import parse_feed
    from digest.model.records import FetchWrite
    from digest.service.organising import organise
    from digest.storage.store import Store

    day_items = week_copy(items[::7], a.weeks)
    day_files = render(day_items, work / "day", make_feeds)
    loaded = load_config(work / "feeds.yaml")
    store = Store(loaded.database_url)
    names = {name: f"{name}-day" for name in day_files}
    store.sync_feeds((names[n], p.resolve().as_uri()) for n, p in day_files.items())
    states = store.feed_states()
    now = datetime.now(UTC)
    writes = []
    for name, path in day_files.items():
        parsed = parse_feed(names[name], path.read_bytes(), fetched_at=now)
        writes.append(FetchWrite(states[names[name]], list(parsed.entries), now))
    store.record_fetches(writes)
    wall_t, cpu_t = time.perf_counter(), time.process_time()
    summary = organise(loaded, store)
    print(
        f"one more day ({len(day_items)} entries) into that store: organise (classify + fold) "
        f"wall {time.perf_counter() - wall_t:.2f} s, cpu {time.process_time() - cpu_t:.2f} s; {summary}"
    )
    store.close()
    if not a.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
