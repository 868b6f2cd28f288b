"""Select and tag: which topics an entry belongs to, which tags it carries, and why. Pure.

A topic is decided by its evidence score (evidence.py) when feeds.yaml gives it one, or by its
rules; either may select. Tags are rules, applied to selected entries only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from digest.model.evidence import SCORERS, Score
from digest.model.rules import CompiledRules, Fired, evaluate, gave_way
from digest.model.terms import Hits, normalise, scan_entry


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
    # language-independent ids of what was found (term lists: leader_putin, place_tianjin,
    # org_sco...), for clustering; Russian text is read as written and as lemmas
    entities: frozenset[str]
    title_entities: frozenset[str] = frozenset()  # those found in the headline
    scores: tuple[Score, ...] = ()  # each evidence-scored topic's score, selected or not
    # tag rules that matched but gave way to other tags (`unless`): (tag, why, the tags given)
    gave_way: tuple[tuple[Reason, frozenset[str]], ...] = ()

    @property
    def relevant(self) -> bool:
        return bool(self.topics)


def _entities(names: set[str]) -> frozenset[str]:
    return frozenset(n for n in names if not n.startswith("_inline:"))


def _score_reason(score: Score) -> Fired:
    return Fired(
        score.line(),
        tuple((f"{f.name} {f.weight:+g}", f.field, "", f.shown) for f in score.features),
    )


def classify_hits(hits: Hits, rules: CompiledRules) -> Classification:
    why: list[Reason] = []
    topics = []
    scores = []
    for topic in rules.topics:
        fired = evaluate(topic, hits)
        score = None
        if topic.evidence is not None:
            score = SCORERS[topic.evidence].score(topic.name, hits, topic.threshold)
            scores.append(score)
        if fired or (score is not None and score.selects):
            topics.append(topic.name)
            if score is not None and score.selects:
                why.append(Reason("topic", topic.name, _score_reason(score)))
            # one reason per rule: a rule that matched is listed once (issue 11)
            why.extend(Reason("topic", topic.name, f) for f in fired[:1])
    tags = []
    gave: list[tuple[Reason, frozenset[str]]] = []
    if topics:  # tags apply to selected entries only
        # `unless` reads the tags whose rules match, before any `unless` is applied (one pass,
        # so the order of the tags never matters)
        present = hits.present
        matching = [t for t in rules.tags if any(r.matches(present) for r in t.rules)]
        given = frozenset(t.name for t in matching)
        for tag in matching:
            if tag.unless or any(r.unless for r in tag.rules):
                gave.extend((Reason("tag", tag.name, f), to) for f, to in gave_way(tag, hits, given))
            if not tag.unless.isdisjoint(given):
                continue
            fired = evaluate(tag, hits, given)
            if fired:
                tags.append(tag.name)
                why.append(Reason("tag", tag.name, fired[0]))
    return Classification(
        tuple(topics),
        tuple(tags),
        tuple(why),
        _entities(hits.lists()),
        _entities(hits.lists(("title",))),
        tuple(scores),
        tuple(gave),
    )


NOTHING = Classification((), (), (), frozenset())


def classify(title: str, summary: str, rules: CompiledRules) -> Classification:
    """Topics, tags and why for one entry. An entry no topic can select is settled by a scan for
    the topics' trigger terms alone (rules.Triggers); its entities are then not recorded (only
    selected entries are clustered)."""
    title, summary = normalise(title), normalise(summary)
    if rules.triggers is not None and not rules.triggers.may_fire(title, summary):
        return NOTHING
    return classify_hits(scan_entry(rules.index, title, summary), rules)
