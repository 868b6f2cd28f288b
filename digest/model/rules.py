"""Topic and tag rules: compiled from `feeds.yaml` (terms.py finds the terms), applied to hits.
Pure; no I/O.

A condition is `[title:|summary:]TERM` or `[field:]$list` (field defaults to title and summary).
A rule matches when one of its `any` conditions holds (or it has none), all of its `all`
conditions hold, and none of its `none` conditions. A topic or tag matches when any rule does;
a topic may instead be decided by an evidence score (evidence.py) reaching its threshold.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from pydantic import ValidationError

from digest.errors import ConfigError
from digest.model.evidence import SCORERS
from digest.model.records import RulesSource
from digest.model.rulespec import RuleSetSpec, RulesSpec
from digest.model.settings import format_validation_error
from digest.model.terms import (
    _CYRILLIC,
    FIELDS,
    Condition,
    Field_,
    Hits,
    Term,
    TermIndex,
    normalise,
    parse_term,
    scan_entry,
)


def _trigger_form(term: Term) -> Term:
    """What the trigger scan looks for in place of `term`. A Russian term is written as lemmas
    and the scan sees inflected words, so it looks for the stem of the term's longest word: the
    word less its final vowels, й or ь ("шанхайский" -> "шанхайск*", which "Шанхайской" has).
    A trigger only needs to be found wherever the term could be; finding more costs a full scan."""
    if term.regex is not None or term.exact_case or not _CYRILLIC.search(term.words):
        return term
    word = max(term.words.split(" "), key=len)
    stem = word.rstrip("аеёиоуыэюяйь")[: len(word)]
    if len(word) - len(stem) > 2:
        stem = word[:-2]
    if len(stem) < 3:
        return term
    return Term(term.text, stem, False, True, False)


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    any: tuple[Condition, ...] = ()
    all: tuple[Condition, ...] = ()
    none: tuple[Condition, ...] = ()
    # the same as (list, field) keys, so that a rule is three set operations
    any_keys: frozenset[tuple[str, str]] = frozenset()
    all_keys: frozenset[tuple[str, str]] = frozenset()
    none_keys: frozenset[tuple[str, str]] = frozenset()
    unless: frozenset[str] = frozenset()  # tags: the rule does not count when one of these is given

    @classmethod
    def of(
        cls,
        name: str,
        any: Sequence[Condition],
        all: Sequence[Condition],
        none: Sequence[Condition],
        unless: Iterable[str] = (),
    ) -> Rule:
        def keys(cs: Sequence[Condition]) -> frozenset[tuple[str, str]]:
            return frozenset((c.list_name, c.field) for c in cs)

        return cls(
            name, tuple(any), tuple(all), tuple(none), keys(any), keys(all), keys(none), frozenset(unless)
        )

    def matches(self, present: frozenset[tuple[str, str]]) -> bool:
        return (
            (not self.any_keys or not self.any_keys.isdisjoint(present))
            and self.all_keys <= present
            and self.none_keys.isdisjoint(present)
        )


@dataclass(frozen=True, slots=True)
class RuleSet:
    """A topic or a tag: a name, a description, and rules of which any may match; a topic may
    also be decided by an evidence score (select.SCORERS) reaching `threshold`."""

    name: str
    description: str
    rules: tuple[Rule, ...]
    evidence: str | None = None
    threshold: float = 0.0
    # an evidence score stays below `threshold` unless, for one group, each of its parts (lists,
    # any of which will do) is found somewhere in the entry
    trigger_groups: tuple[tuple[tuple[str, ...], ...], ...] = ()
    unless: frozenset[str] = frozenset()  # a tag: not given when one of these tags is


@dataclass(frozen=True, slots=True)
class Fired:
    """Why a rule matched: for each condition that held, the term and text that made it hold."""

    rule: str
    evidence: tuple[tuple[str, str, str, str], ...]  # (condition, field, term, matched text)


def evaluate(ruleset: RuleSet, hits: Hits, given: frozenset[str] = frozenset()) -> list[Fired]:
    """The rules of `ruleset` that match, with their evidence; `given`: the tags whose rules
    match, against which each rule's `unless` is read."""
    fired = []
    for rule in ruleset.rules:
        if not rule.matches(hits.present) or not rule.unless.isdisjoint(given):
            continue
        # it matched: now collect the evidence
        first = [next(c for c in rule.any if hits.holds(c))] if rule.any else []
        evidence = []
        for c in (*first, *rule.all):
            h = hits.find(c)
            assert h is not None
            evidence.append((c.source, h.field, h.term, h.matched))
        fired.append(Fired(rule.name, tuple(evidence)))
    return fired


def gave_way(ruleset: RuleSet, hits: Hits, given: frozenset[str]) -> list[tuple[Fired, frozenset[str]]]:
    """The rules of `ruleset` that match but do not count because of `unless` (the tag's own or
    the rule's), each with its evidence and the given tags it gave way to: so that an explanation
    shows a tag left out on purpose, not as if nothing had matched."""
    out: list[tuple[Fired, frozenset[str]]] = []
    for rule in ruleset.rules:
        if not rule.matches(hits.present):
            continue
        to = (ruleset.unless | rule.unless) & given
        if to:
            alone = replace(ruleset, rules=(replace(rule, unless=frozenset()),))
            out.extend((f, to) for f in evaluate(alone, hits))
    return out


@dataclass(frozen=True)
class Triggers:
    """What an entry must contain for any topic to match: for each topic rule, its `any`
    conditions, or else the one of its `all` conditions with the fewest terms. Most entries
    of a general feed contain none, and are settled by one scan for these few terms instead of
    the full scan of every list (judged in 1/4 of the time; the verdict is the same)."""

    index: TermIndex  # the rules' conditions and the first part of each group
    keys: frozenset[tuple[str, str]]  # (list, field): the rules' conditions
    groups: tuple[tuple[frozenset[str], ...], ...] = ()  # the evidence scores' (see RuleSet)
    rest: TermIndex | None = None  # the other parts of the groups: scanned when a first part is found

    @classmethod
    def of(cls, topics: Sequence[RuleSet], lists: Mapping[str, Sequence[Term]]) -> Triggers:
        chosen: list[Condition] = []
        groups = tuple(tuple(frozenset(part) for part in g) for t in topics for g in t.trigger_groups)
        for topic in topics:
            for rule in topic.rules:
                if rule.any:
                    chosen.extend(rule.any)
                else:  # every `all` condition must hold: any one of them will do as the trigger
                    chosen.append(min(rule.all, key=lambda c: len(lists[c.list_name])))
        first = {c.list_name for c in chosen} | {n for g in groups for n in g[0]}
        rest = {n for g in groups for part in g[1:] for n in part} - first

        def index(names: set[str]) -> TermIndex:
            return TermIndex({n: [_trigger_form(t) for t in lists[n]] for n in names})

        keys = frozenset((c.list_name, c.field) for c in chosen)
        return cls(index(first), keys, groups, index(rest) if rest else None)

    def may_fire(self, title: str, summary: str) -> bool:
        """False when no topic rule can match normalised `title` and `summary`."""
        hits = self.index.scan_fields(title, summary)
        if self.keys and any(
            (h.list_name, h.field) in self.keys or (h.list_name, "text") in self.keys for h in hits
        ):
            return True
        found = {h.list_name for h in hits}
        started = [g for g in self.groups if not g[0].isdisjoint(found)]
        if not started:  # most entries of a general feed: one scan for a few names
            return False
        if self.rest is not None and any(len(g) > 1 for g in started):
            found |= {h.list_name for h in self.rest.scan_fields(title, summary)}
        return any(all(not part.isdisjoint(found) for part in g) for g in started)


@dataclass(frozen=True)
class CompiledRules:
    topics: tuple[RuleSet, ...]
    tags: tuple[RuleSet, ...]
    index: TermIndex
    triggers: Triggers | None = None

    def scan(self, title: str, summary: str) -> Hits:
        return scan_entry(self.index, normalise(title), normalise(summary))


def _condition(
    raw: str, where: str, lists: dict[str, list[Term]], inline: dict[str, list[Term]]
) -> Condition:
    text = raw.strip()
    fld: Field_ = "text"
    for f in FIELDS:
        if text.startswith(f + ":"):
            fld, text = f, text[len(f) + 1 :]
            break
    if text.startswith("$"):
        name = text[1:]
        if name not in lists:
            known = ", ".join(sorted(lists)) or "none"
            raise ConfigError(f"{where}: {raw!r} names an unknown term list ${name}; known: {known}")
        return Condition(raw, fld, name)
    try:
        term = parse_term(text)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    key = f"_inline:{text}"
    inline.setdefault(key, [term])
    return Condition(raw, fld, key)


def compile_rules(data: Mapping[str, Any], source: str = "feeds.yaml") -> CompiledRules:
    """`terms:`, `topics:` and `tags:` sections -> compiled rules. Errors name the key path."""
    try:
        spec = RulesSpec.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, source)) from None

    def expand(name: str, seen: tuple[str, ...]) -> list[Term]:
        if name in seen:
            raise ConfigError(f"{source}: terms.{name}: includes itself through {' -> '.join(seen)}")
        value = spec.terms[name]
        langs = value if isinstance(value, dict) else {"any": value}
        out: list[Term] = []
        for lang, terms in langs.items():
            for t in terms:
                if t.startswith("$"):
                    out.extend(expand(t[1:], (*seen, name)))
                else:
                    try:
                        out.append(parse_term(t))
                    except ValueError as exc:
                        raise ConfigError(f"{source}: terms.{name}.{lang}: {exc}") from None
        return out

    lists = {name: expand(name, ()) for name in spec.terms}
    inline: dict[str, list[Term]] = {}

    def build(kind: str, sets: Mapping[str, RuleSetSpec]) -> tuple[RuleSet, ...]:
        out = []
        for set_name, s in sets.items():
            scorer = None
            if s.evidence is not None:
                scorer = SCORERS.get(s.evidence)
                if kind != "topics" or scorer is None:
                    known = ", ".join(SCORERS) if kind == "topics" else "none for tags"
                    raise ConfigError(
                        f"{source}: {kind}.{set_name}.evidence: unknown score {s.evidence!r}; known: {known}"
                    )
                missing = [n for n in scorer.lists if n not in lists]
                if missing:
                    raise ConfigError(
                        f"{source}: {kind}.{set_name}.evidence: the {s.evidence} score needs the term "
                        f"lists {', '.join(missing)}; add them under terms: (see the shipped feeds.yaml)"
                    )
            elif not s.rules:
                raise ConfigError(f"{source}: {kind}.{set_name}.rules: empty; give at least one rule")
            rules = []
            for key, unless in [(f"{kind}.{set_name}", s.unless)] + [
                (f"{kind}.{set_name}.rules[{i}]", r.unless) for i, r in enumerate(s.rules)
            ]:
                unknown = [t for t in unless if kind != "tags" or t not in spec.tags or t == set_name]
                if unknown:
                    known = ", ".join(t for t in spec.tags if t != set_name) if kind == "tags" else "none"
                    raise ConfigError(
                        f"{source}: {key}.unless: {', '.join(unknown)} is not another tag; known: {known}"
                    )
            for i, r in enumerate(s.rules):
                where = f"{source}: {kind}.{set_name}.rules[{i}]"
                if not (r.any or r.all):
                    raise ConfigError(f"{where}: a rule needs `any:` or `all:` conditions")
                any_, all_, none_ = (
                    tuple(_condition(c, where, lists, inline) for c in group)
                    for group in (r.any, r.all, r.none)
                )
                rules.append(Rule.of(r.name or f"rule {i + 1}", any_, all_, none_, r.unless))
            if scorer is None:
                out.append(RuleSet(set_name, s.description, tuple(rules), unless=frozenset(s.unless)))
            else:
                threshold = scorer.threshold if s.threshold is None else float(s.threshold)
                out.append(
                    RuleSet(
                        set_name,
                        s.description,
                        tuple(rules),
                        s.evidence,
                        threshold,
                        scorer.triggers_at(threshold),
                    )
                )
        return tuple(out)

    topics = build("topics", spec.topics)
    tags = build("tags", spec.tags)
    every = {**lists, **inline}
    return CompiledRules(topics, tags, TermIndex(every), Triggers.of(topics, every))


def explain_rules(ruleset: RuleSet, hits: Hits) -> list[tuple[str, list[tuple[str, str, bool]]]]:
    """For each rule: each condition as (group, condition, held). Shows why nothing matched."""
    out = []
    for rule in ruleset.rules:
        groups = (("any", rule.any), ("all", rule.all), ("none", rule.none))
        conds = [(group, c.source, hits.holds(c)) for group, cs in groups for c in cs]
        out.append((rule.name, conds))
    return out


def compile_source(rules: RulesSource) -> CompiledRules:
    """Rules as written in a config; a section left out comes from the shipped feeds.yaml
    (`topics: {}` is none)."""
    data = dict(rules.own)
    if any(v is None for v in data.values()):
        import yaml

        from digest.defaults import embedded_text

        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        defaults = yaml.load(embedded_text("feeds.yaml"), Loader=loader)  # noqa: S506
        data = {k: (defaults.get(k) or {}) if v is None else v for k, v in data.items()}
    return compile_rules(data, rules.source)
