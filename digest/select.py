"""Select and tag: which topics an entry belongs to, which tags it carries, and why. Pure."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .rules import CompiledRules, Fired, Hits, evaluate, normalise


@dataclass(frozen=True, slots=True)
class Reason:
    kind: str  # "topic" or "tag"
    name: str
    fired: Fired

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "rule": self.fired.rule,
            "evidence": [
                {"condition": c, "field": f, "term": t, "matched": m} for c, f, t, m in self.fired.evidence
            ],
        }


@dataclass(frozen=True, slots=True)
class Classification:
    topics: tuple[str, ...]
    tags: tuple[str, ...]
    why: tuple[Reason, ...]
    entities: frozenset[str]  # term lists found (language-independent ids, for clustering)
    title_entities: frozenset[str] = frozenset()  # those found in the headline

    @property
    def relevant(self) -> bool:
        return bool(self.topics)


def classify_hits(hits: Hits, rules: CompiledRules) -> Classification:
    why: list[Reason] = []
    topics = []
    for topic in rules.topics:
        fired = evaluate(topic, hits)
        if fired:
            topics.append(topic.name)
            why.extend(Reason("topic", topic.name, f) for f in fired)
    tags = []
    if topics:  # tags apply to selected entries only
        for tag in rules.tags:
            fired = evaluate(tag, hits)
            if fired:
                tags.append(tag.name)
                why.extend(Reason("tag", tag.name, f) for f in fired[:1])
    entities = frozenset(n for n in hits.lists() if not n.startswith("_inline:"))
    in_title = frozenset(n for n in hits.lists(("title",)) if not n.startswith("_inline:"))
    return Classification(tuple(topics), tuple(tags), tuple(why), entities, in_title)


NOTHING = Classification((), (), (), frozenset())


def classify(title: str, summary: str, rules: CompiledRules) -> Classification:
    """Topics, tags and why for one entry. An entry no topic can select is settled by a scan for
    the topics' trigger terms alone (rules.Triggers); its entities are then not recorded (only
    selected entries are clustered)."""
    title, summary = normalise(title), normalise(summary)
    if rules.triggers is not None and not rules.triggers.may_fire(title, summary):
        return NOTHING
    return classify_hits(Hits(rules.index.scan_fields(title, summary)), rules)
