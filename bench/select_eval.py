#!/usr/bin/env python3
"""Selection and tags on a labelled corpus, in-process (no feeds, no database): the fast loop
for working on the rules, and per-tag precision and recall.

    python bench/select_eval.py ITEMS.jsonl LABELS.jsonl [--errors] [--config feeds.yaml]
    python bench/select_eval.py ITEMS.jsonl LABELS.jsonl --stories STORIES.jsonl

With --stories, the figures are those of the product's own output instead (`digest stories
--format jsonl --all`, e.g. run with DIGEST_CONFIG pointing at the feeds.yaml that the corpus
scorer's --keep folder holds): entries matched to items as the scorer matches them, and each
entry's story topics and tags, as the scorer counts them.

ITEMS and LABELS are the corpus's files (one JSON object a line: `id`, `title`, `summary`;
`id`, `relevant`, `topics`, `tags`). Summaries are made plain text as `digest fetch` makes
them (parse.html_to_text). The corpus's own scorer runs the whole product and gives the same
relevance, topic and tag figures; this one also prints each error with its reason with
`--errors`. Per-tag figures are over correctly selected items, as the scorer's micro figures.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from digest.feeds.parse import html_to_text
from digest.model.judge import classify
from digest.model.rules import compile_rules


def load(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def prf(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


@dataclass(frozen=True)
class Printed:
    topics: tuple[str, ...]
    tags: tuple[str, ...]

    @property
    def relevant(self) -> bool:
        return bool(self.topics)


def printed(path: Path, items: list[dict]) -> dict[str, Any]:
    """Entries the product printed, by item id: matched on (feed, link), (feed, guid), then
    (feed, headline), as the corpus's scorer matches them. Unmatched items are not selected."""
    by: dict[tuple[str, str | None], str] = {}
    for it in items:
        for key in (
            (it["feed"], it["link"]),
            (it["feed"], it.get("guid")),
            (it["feed"], it["title"].strip()),
        ):
            by.setdefault(key, it["id"])
    out: dict[str, Any] = {it["id"]: Printed((), ()) for it in items}
    for e in load(path):
        if e.get("relevant") is False:
            continue
        keys = (
            (e["feed"], e.get("link")),
            (e["feed"], e.get("guid")),
            (e["feed"], (e.get("title") or "").strip()),
        )
        found = next((by[k] for k in keys if k in by), None)
        if found is not None:
            out[found] = Printed(tuple(e.get("topics") or ()), tuple(e.get("tags") or ()))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("items", type=Path)
    ap.add_argument("labels", type=Path)
    ap.add_argument("--config", type=Path, default=Path("feeds.yaml"), help="rules from this file")
    ap.add_argument("--errors", action="store_true", help="print every error with its label's reason")
    ap.add_argument("--json", action="store_true", help="the figures as one JSON object")
    ap.add_argument("--stories", type=Path, help="score this `digest stories --format jsonl` output instead")
    a = ap.parse_args()
    data = yaml.safe_load(a.config.read_text(encoding="utf-8"))
    rules = compile_rules({k: data.get(k) or {} for k in ("terms", "topics", "tags")}, str(a.config))
    items = load(a.items)
    labels = {x["id"]: x for x in load(a.labels)}
    texts = [(it, html_to_text(it["title"] or ""), html_to_text(it.get("summary") or "")) for it in items]
    start = time.perf_counter()
    got = {it["id"]: classify(t, s, rules) for it, t, s in texts}
    per_entry = (time.perf_counter() - start) / max(1, len(items)) * 1e6
    if a.stories:
        got = printed(a.stories, items)
    tp = fp = fn = 0
    topic_ok = topic_n = 0
    tags: Counter[tuple[str, str]] = Counter()
    errors = []
    for it, _t, _s in texts:
        g, c = labels[it["id"]], got[it["id"]]
        if g["relevant"] and c.relevant:
            tp += 1
            topic_n += 1
            topic_ok += set(c.topics) == set(g["topics"])
            if set(c.topics) != set(g["topics"]):
                errors.append(("topics", it, g, c))
            for tag in set(c.tags) | set(g["tags"]):
                kind = "tp" if tag in c.tags and tag in g["tags"] else "fp" if tag in c.tags else "fn"
                tags[(tag, kind)] += 1
                if kind != "tp":
                    errors.append((f"tag {kind} {tag}", it, g, c))
        elif g["relevant"]:
            fn += 1
            errors.append(("missed", it, g, c))
        elif c.relevant:
            fp += 1
            errors.append(("wrongly selected", it, g, c))
    rel = prf(tp, fp, fn)
    all_tags = sorted({t for t, _ in tags})

    def per_tag(t: str) -> tuple[float, float, float]:
        return prf(*(tags[(t, k)] for k in ("tp", "fp", "fn")))

    micro = prf(*(sum(tags[(t, k)] for t in all_tags) for k in ("tp", "fp", "fn")))
    res: dict[str, Any] = {
        "relevance": {"precision": round(rel[0], 3), "recall": round(rel[1], 3), "fp": fp, "fn": fn},
        "topic_accuracy": round(topic_ok / topic_n, 3) if topic_n else 0.0,
        "tags": {"precision": round(micro[0], 3), "recall": round(micro[1], 3), "f1": round(micro[2], 3)},
        "per_tag": {
            t: dict(zip(("precision", "recall", "f1"), (round(x, 3) for x in per_tag(t)), strict=True))
            | {k: tags[(t, k)] for k in ("tp", "fp", "fn")}
            for t in all_tags
        },
        "classify_us_per_entry": round(per_entry, 1),
    }
    if a.json:
        print(json.dumps(res))
        return
    if a.errors:
        for kind, it, g, c in sorted(errors, key=lambda e: e[0]):
            print(f"[{kind}] {it['id']} {it['lang']} {it['title'][:110]}")
            got_ = f"got {list(c.topics)} {list(c.tags)}"
            print(f"    gold {g['topics']} {g['tags']}  {got_}  {g.get('why', '')[:150]}")
    r = res["relevance"]
    print(
        f"relevance P {r['precision']:.3f} R {r['recall']:.3f} (fp {fp}, fn {fn}); "
        f"topics {res['topic_accuracy']:.3f}; tags P {micro[0]:.3f} R {micro[1]:.3f} F1 {micro[2]:.3f}; "
        f"classify {per_entry:.0f} µs/entry"
    )
    for t, v in res["per_tag"].items():
        counts = f"(tp {v['tp']}, fp {v['fp']}, fn {v['fn']})"
        print(f"  {t:<15} P {v['precision']:.3f} R {v['recall']:.3f} F1 {v['f1']:.3f}  {counts}")


if __name__ == "__main__":
    main()
