#!/usr/bin/env python3
"""Folding alone: the product's folding code over the labelled relevant items only.

Story scores from a full run are over items relevant *or selected*, so selection errors show up
in them too. This folds exactly the items labelled relevant (whatever the selection decides),
with the product's own parse (the items rendered into real feed files by the corpus's
make_feeds.py), entities (select.classify) and folding (cluster.cluster), and prints pairwise
precision, recall and F1 within one language and across languages, and the pairs it got wrong.

    python bench/fold_bench.py --items ITEMS.jsonl --labels LABELS.jsonl [--make-feeds make_feeds.py] [-v]

make_feeds.py is looked for beside the items file and one folder up when not given.
"""

from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from digest.config import load_config
from digest.feeds.parse import parse_feed
from digest.model.fold import cluster, conflict
from digest.model.judge import classify
from digest.service.organising import _features

ROOT = Path(__file__).resolve().parent.parent


def load_jsonl(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def prf(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def parsed_entries(items_path: Path, make_feeds: Path) -> list:
    """Every entry of the rendered feeds, as the product's parser cleans it."""
    out_dir = Path(tempfile.mkdtemp(prefix="fold-bench-"))
    subprocess.run(
        [sys.executable, str(make_feeds), str(out_dir), str(items_path)],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    manifest = json.loads((out_dir / "manifest.json").read_text(encoding="utf-8"))
    entries = []
    now = datetime.now(UTC)
    for name, info in manifest.get("feeds", manifest).items():
        fname = info["file"] if isinstance(info, dict) else info
        parsed = parse_feed(name, (out_dir / fname).read_bytes(), fetched_at=now)
        entries.extend(parsed.entries)
    return entries


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=Path, required=True)
    ap.add_argument("--labels", type=Path, required=True)
    ap.add_argument("--make-feeds", type=Path, help="the corpus's make_feeds.py")
    ap.add_argument("--config", type=Path, default=ROOT / "feeds.yaml", help="rules and clustering settings")
    ap.add_argument("-v", "--verbose", action="store_true", help="list the wrong pairs")
    a = ap.parse_args()
    make_feeds = a.make_feeds or next(
        (
            p
            for p in (a.items.parent / "make_feeds.py", a.items.parent.parent / "make_feeds.py")
            if p.exists()
        ),
        None,
    )
    if make_feeds is None:
        sys.exit("fold_bench: make_feeds.py not found beside the items; pass --make-feeds")
    items = load_jsonl(a.items)
    labels = {lab["id"]: lab for lab in load_jsonl(a.labels)}
    loaded = load_config(a.config)
    rules, settings = loaded.rules, loaded.clustering

    by_link = {(i["feed"], i["link"]): i for i in items}
    by_guid = {(i["feed"], i["guid"]): i for i in items if i.get("guid")}
    by_title = {(i["feed"], i["title"].strip()): i for i in items}
    features, item_of, text_of, feature_of = [], {}, {}, {}
    for n, e in enumerate(parsed_entries(a.items, make_feeds)):
        it = (
            by_link.get((e.feed, e.link))
            or by_guid.get((e.feed, e.guid))
            or by_title.get((e.feed, e.title.strip()))
        )
        if it is None or not labels[it["id"]]["relevant"]:
            continue
        c = classify(e.title, e.summary_text, rules)
        features.append(_features(n, e, c.entities, c.title_entities, settings))
        item_of[n] = it
        feature_of[n] = features[-1]
        text_of[n] = f"[{it['lang']} {e.feed} {e.published:%m-%d %H:%M}] {e.title}"
    story = cluster(features, settings)

    counts = {"same_language": [0, 0, 0], "cross_language": [0, 0, 0]}
    wrong = []
    for x, y in itertools.combinations(sorted(item_of), 2):
        ix, iy = item_of[x], item_of[y]
        kind = "same_language" if ix["lang"] == iy["lang"] else "cross_language"
        gold = labels[ix["id"]]["cluster"] == labels[iy["id"]]["cluster"]
        pred = story[x] == story[y]
        slot = 0 if gold and pred else 1 if pred else 2 if gold else None
        if slot is not None:
            counts[kind][slot] += 1
        if slot in (1, 2):
            wrong.append(("FP" if slot == 1 else "FN", kind, ix, iy, x, y))
    print(f"{a.items}: {len(item_of)} relevant items, {len(set(story.values()))} stories folded, "
          f"{len({labels[i['id']]['cluster'] for i in item_of.values()})} labelled")  # fmt: skip
    for kind, (tp, fp, fn) in counts.items():
        p, r, f = prf(tp, fp, fn)
        print(f"  {kind:<15} precision {p:.3f}  recall {r:.3f}  f1 {f:.3f}  (tp {tp}, fp {fp}, fn {fn})")
    if a.verbose:
        for what, kind, ix, iy, x, y in sorted(wrong, key=lambda w: (w[0], w[1])):
            print(f"{what} {kind}: {labels[ix['id']]['cluster']} / {labels[iy['id']]['cluster']}")
            print(f"     {text_of[x]}\n     {text_of[y]}")
            fx, fy = feature_of[x], feature_of[y]
            print(
                f"     conflict: {conflict(fx, fy, settings)}; kinds {sorted(fx.kinds)} / {sorted(fy.kinds)}"
            )
            print(f"     participants {sorted(fx.participants)} / {sorted(fy.participants)}")


if __name__ == "__main__":
    main()
