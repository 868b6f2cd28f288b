#!/usr/bin/env python3
"""Hand weights against learned weights for the topics' evidence scores, across corpus parts.

    python bench/learned_compare.py ITEMS_1 LABELS_1 ITEMS_2 LABELS_2 [ITEMS_3 LABELS_3 ...]

For each topic with an evidence score, the same features (evidence.py) are weighed two ways:
the shipped weights and threshold, and a logistic regression (L2, plain gradient descent, no
dependency) trained on all parts but one and tested on the one left out, each part in turn
(leave one part out). Cross-part results are the proxy for parts nobody has seen. Prints
relevance precision/recall (an item is selected when any topic is) and topic-set accuracy on
correctly selected items.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from pathlib import Path

import yaml

from digest.feeds.parse import html_to_text
from digest.model.judge import classify
from digest.model.rules import compile_rules

Example = tuple[
    dict[str, set[str]], dict[str, float], set[str], bool
]  # features, hand score, topics, relevant


def load(items: Path, labels: Path, rules) -> list[Example]:
    gold = {}
    with open(labels, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                g = json.loads(line)
                gold[g["id"]] = g
    out: list[Example] = []
    with open(items, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            it = json.loads(line)
            c = classify(html_to_text(it["title"] or ""), html_to_text(it.get("summary") or ""), rules)
            feats = {t.name: set() for t in rules.topics}
            hand = {t.name: -1.0 for t in rules.topics}  # no score: below the threshold
            for s in c.scores:
                feats[s.topic] = {f.name for f in s.features if f.weight}
                hand[s.topic] = s.total - s.threshold
            g = gold[it["id"]]
            out.append((feats, hand, set(g["topics"]), g["relevant"]))
    return out


def train(rows: Sequence[tuple[set[str], bool]], names: list[str], l2: float = 0.01) -> dict[str, float]:
    w = dict.fromkeys(["<bias>", *names], 0.0)
    for _ in range(2000):
        grad = dict.fromkeys(w, 0.0)
        for x, y in rows:
            z = w["<bias>"] + sum(w[n] for n in x if n in w)
            p = 1 / (1 + math.exp(-max(-30.0, min(30.0, z))))
            d = p - (1.0 if y else 0.0)
            grad["<bias>"] += d
            for n in x:
                if n in grad:
                    grad[n] += d
        for n in w:
            reg = l2 * w[n] if n != "<bias>" else 0.0
            w[n] -= 0.5 * (grad[n] / len(rows) + reg)
    return w


def figures(pred: list[set[str]], data: list[Example]) -> tuple[float, float, float]:
    tp = sum(1 for p, d in zip(pred, data, strict=True) if p and d[3])
    fp = sum(1 for p, d in zip(pred, data, strict=True) if p and not d[3])
    fn = sum(1 for p, d in zip(pred, data, strict=True) if not p and d[3])
    both = [(p, d) for p, d in zip(pred, data, strict=True) if p and d[3]]
    acc = sum(p == d[2] for p, d in both) / len(both) if both else 0.0
    return tp / max(1, tp + fp), tp / max(1, tp + fn), acc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("parts", nargs="+", type=Path, help="ITEMS LABELS pairs, one per part (two or more)")
    ap.add_argument("--config", type=Path, default=Path("feeds.yaml"))
    a = ap.parse_args()
    if len(a.parts) < 4 or len(a.parts) % 2:
        ap.error("give ITEMS LABELS for two or more parts")
    data = yaml.safe_load(a.config.read_text(encoding="utf-8"))
    rules = compile_rules({k: data.get(k) or {} for k in ("terms", "topics", "tags")}, str(a.config))
    topics = [t.name for t in rules.topics if t.evidence]
    parts = {
        f"part {i // 2 + 1} ({a.parts[i].parent.name})": load(a.parts[i], a.parts[i + 1], rules)
        for i in range(0, len(a.parts), 2)
    }
    print(f"{'weights':<34} {'tested on':<22} relevance P / R   topics")
    for name, test in parts.items():
        hand = [{t for t in topics if ex[1][t] >= -1e-9} for ex in test]
        p, r, acc = figures(hand, test)
        print(f"{'hand (shipped)':<34} {name:<22} {p:.3f} / {r:.3f}     {acc:.3f}")
    # leave one part out: trained on every other part, tested on the one it never saw
    for test_on, test in parts.items():
        train_rows = [ex for name, part in parts.items() if name != test_on for ex in part]
        models = {}
        for t in topics:
            rows = [(ex[0][t], t in ex[2]) for ex in train_rows]
            names = sorted({n for x, _ in rows for n in x})
            models[t] = train(rows, names)
        pred = []
        for ex in test:
            chosen = set()
            for t in topics:
                w = models[t]
                z = w["<bias>"] + sum(w.get(n, 0.0) for n in ex[0][t])
                if z >= 0:
                    chosen.add(t)
            pred.append(chosen)
        p, r, acc = figures(pred, test)
        print(f"{'learned on the other parts':<34} {test_on:<22} {p:.3f} / {r:.3f}     {acc:.3f}")


if __name__ == "__main__":
    main()
