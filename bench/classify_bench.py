#!/usr/bin/env python3
"""Classification's cost per entry: `select.classify` over a corpus's items, warm (each item
classified once first, so a lemma cache and the lemmatiser's dictionary are loaded), split into
entries the trigger scan settles and entries it passes on to the full scan.

    python bench/classify_bench.py ITEMS.jsonl [ITEMS.jsonl ...] [--repeat 20] [--config feeds.yaml]

Runs the `digest` it imports: point PYTHONPATH at another checkout to compare two versions.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import yaml

from digest.feeds.parse import html_to_text
from digest.model.rules import compile_rules
from digest.model.terms import normalise


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("items", type=Path, nargs="+")
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--config", type=Path, default=Path("feeds.yaml"))
    a = ap.parse_args()
    from digest.model.judge import classify

    data = yaml.safe_load(a.config.read_text(encoding="utf-8"))
    rules = compile_rules({k: data.get(k) or {} for k in ("terms", "topics", "tags")}, str(a.config))
    texts = []
    for path in a.items:
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    it = json.loads(line)
                    texts.append((html_to_text(it["title"] or ""), html_to_text(it.get("summary") or "")))
    assert rules.triggers is not None
    passed = [t for t in texts if rules.triggers.may_fire(normalise(t[0]), normalise(t[1]))]
    settled = [t for t in texts if t not in passed]
    for t, s in texts:  # warm
        classify(t, s, rules)
    out = {}
    for name, group in (("all", texts), ("settled by the trigger scan", settled), ("full scan", passed)):
        start = time.process_time()
        for _ in range(a.repeat):
            for t, s in group:
                classify(t, s, rules)
        spent = time.process_time() - start
        out[name] = (len(group), spent / max(1, a.repeat * len(group)) * 1e6)
    for name, (n, us) in out.items():
        print(f"{name:<28} {n:>5} entries  {us:8.1f} µs/entry")


if __name__ == "__main__":
    main()
