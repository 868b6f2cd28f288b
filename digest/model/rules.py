"""Topic and tag rules: compiled from `feeds.yaml`, applied to text. Pure; no I/O.

Terms (in `terms:` lists or inline in a rule):
  Putin                case-insensitive, whole words (Latin, Cyrillic)
  SCO, ШОС             written in capitals: case-sensitive (an acronym is not a word: "шоссе")
  =Xi                  `=` forces exact case
  Путин*, meet*        a stem: the word may continue (Путина, Путину; meets, meeting)
  上海合作组织           Han text: matched anywhere (Chinese has no word boundaries)
  Shanghai bloc        several words: any run of spaces between them
  re:<regex>           a Python regex, for what the above cannot say (Xi but not Xi'an)

A condition is `[title:|summary:]TERM` or `[field:]$list` (field defaults to title and summary).
A rule matches when one of its `any` conditions holds (or it has none), all of its `all`
conditions hold, and none of its `none` conditions. A topic or tag matches when any rule does.

Text is normalised first (Unicode UAX #15): NFKC (full-width letters, NBSP), format characters
dropped (soft hyphen, zero-width space), typographic quotes and dashes made plain.
"""

from __future__ import annotations

import bisect
import functools
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import ahocorasick

from digest.errors import ConfigError
from digest.model.records import RulesSource

Field_ = Literal["title", "summary", "text"]
FIELDS: tuple[Field_, ...] = ("title", "summary", "text")

# -- normalisation ------------------------------------------------------------------------------

_QUOTES = str.maketrans(
    {"\u2018": "'", "\u2019": "'", "\u02bc": "'", "\u201c": '"', "\u201d": '"', "\u00ab": '"',
     "\u00bb": '"', "\u2013": "-", "\u2014": "-", "\u2212": "-"}
)  # fmt: skip


# Unicode format characters (category Cf) that turn up in news text; NFKC keeps them (UAX #15).
_FORMAT = re.compile("[\u00ad\u061c\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff]")


def normalise(text: str) -> str:
    """NFKC, format characters (Cf) removed, quotes and dashes made plain, spaces collapsed."""
    if text.isascii():  # NFKC leaves ASCII as it is, and the rest concerns non-ASCII characters
        return " ".join(text.split())
    text = _FORMAT.sub("", unicodedata.normalize("NFKC", text))
    return " ".join(text.translate(_QUOTES).split())


def _is_han(c: str) -> bool:
    return "\u3400" <= c <= "\u9fff" or "\uf900" <= c <= "\ufaff"


def _is_word(c: str) -> bool:
    return c.isalnum() or c == "_"


# -- terms --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Term:
    text: str  # as written in the config
    words: str  # the literal to find (lower-cased unless exact)
    exact_case: bool
    stem: bool
    han: bool
    regex: re.Pattern[str] | None = None
    hint: tuple[str, ...] | None = None  # for a regex: lower-cased literals, one in every match


_LOOKAROUND = re.compile(r"\(\?<?[=!](?:[^()\\]|\\.|\([^()]*\))*\)")


def _runs(text: str) -> list[str]:
    """The runs of letters of a regex's text that are literal (not escapes, classes, flags)."""
    return re.findall(
        r"(?<!\\)(?<![\[\\])[^\W\d_]{2,}",
        re.sub(r"\[[^\]]*\]|\\[a-zA-Z]|\(\?[a-zA-Z]+\)|\{[^}]*\}", " ", text),
    )


def regex_hint(pattern: str) -> tuple[str, ...] | None:
    """Literals one of which every match of `pattern` must contain, found cheaply: the longest
    required literal, or else the words of a required group of alternatives ("(?:join|joins)");
    None if unsure. A regex then runs only on text holding one of them."""
    core = _LOOKAROUND.sub("", pattern)
    if "|" in re.sub(r"\(\?:[^()]*\)|\[[^\]]*\]", "", core):  # a top-level alternative: no single literal
        return None
    optional = re.compile(r"\((?:\?:)?[^()]*\)(?:[?*]|\{0)")  # a group that may match nothing
    alternatives = re.compile(r"\((?:\?:)?([^()]*\|[^()]*)\)")
    core = optional.sub(" ", core)
    runs = _runs(alternatives.sub(" ", core))
    if runs:
        return (max(runs, key=len).lower(),)
    for group in alternatives.finditer(core):  # every alternative must hold a literal
        words = [_runs(alt) for alt in group.group(1).split("|")]
        if all(words):
            return tuple(dict.fromkeys(max(w, key=len).lower() for w in words))
    return None


def parse_term(raw: str) -> Term:
    raw = raw.strip()
    if not raw:
        raise ValueError("an empty term; remove it")
    if raw.startswith("re:"):
        try:
            return Term(raw, "", True, False, False, re.compile(raw[3:]), regex_hint(raw[3:]))
        except re.error as exc:
            raise ValueError(f"{raw!r} is not a valid regex ({exc})") from None
    exact = raw.startswith("=")
    body = raw[1:] if exact else raw
    stem = body.endswith("*")
    body = normalise(body.rstrip("*"))
    if not body:
        raise ValueError(f"{raw!r} has no text")
    letters = [c for c in body if c.isalpha()]
    if len(letters) >= 2 and all(c.isupper() for c in letters):
        exact = True  # an acronym
    han = all(_is_han(c) or not c.isalpha() for c in body) and any(_is_han(c) for c in body)
    return Term(raw, body if exact else body.lower(), exact, stem, han)


class Hit(NamedTuple):
    """One occurrence of a term of a list in a field. (A named tuple: tens are made per entry,
    and a frozen dataclass costs several times as much to make.)"""

    list_name: str
    term: str
    field: str
    matched: str
    segment: int = 0  # 0 the headline, 1 the summary's first sentence (the lead), 2... the rest
    start: int = 0  # where in the segment's text
    end: int = 0
    lemma: bool = False  # found in the lemmas of the words (start, end and matched: the words as written)


class TermIndex:
    """Every term of every list in one Aho–Corasick automaton: one pass finds all, overlaps too."""

    def __init__(self, lists: Mapping[str, Sequence[Term]]) -> None:
        self._lists = lists
        self._cyrillic: TermIndex | None = None
        self._automaton = ahocorasick.Automaton()
        regex: dict[str, tuple[Term, list[str]]] = {}  # a regex in several lists runs once for all
        keys: dict[str, list[tuple[str, Term]]] = {}
        for name, terms in lists.items():
            for term in terms:
                if term.regex is not None:
                    found = regex.setdefault(term.text, (term, []))[1]
                    if name not in found:
                        found.append(name)
                else:
                    keys.setdefault(term.words.lower(), []).append((name, term))
        self._regex: list[tuple[Term, tuple[str, ...]]] = [(t, tuple(ns)) for t, ns in regex.values()]
        # a regex's hints are keys of the automaton too: the one pass also says which regexes
        # may match (their literal is in the text), so the others are not run
        hinted: dict[str, list[int]] = {}
        for i, (term, _names) in enumerate(self._regex):
            for h in term.hint or ():
                hinted.setdefault(h, []).append(i)
        for key in keys.keys() | hinted.keys():
            # boundary needs are the same for every term sharing a key: decided once, not per hit;
            # a term in several lists ("summit*" in four) is checked once for all of them
            entries = keys.get(key, [])
            han = all(t.han for _, t in entries)
            by_term: dict[Term, list[str]] = {}
            for name, term in entries:
                by_term.setdefault(term, []).append(name)
            groups = tuple((term, tuple(dict.fromkeys(names))) for term, names in by_term.items())
            self._automaton.add_word(
                key,
                (len(key), groups, _is_word(key[0]), _is_word(key[-1]), han, tuple(hinted.get(key, ()))),
            )
        if keys or hinted:
            self._automaton.make_automaton()
        self._empty = not (keys or hinted)

    @property
    def cyrillic(self) -> TermIndex:
        """The terms written in Cyrillic (Russian lemmas): what a text's lemmas are scanned for."""
        if self._cyrillic is None:
            self._cyrillic = TermIndex(
                {n: [t for t in ts if _CYRILLIC.search(t.text)] for n, ts in self._lists.items()}
            )
        return self._cyrillic

    def scan_fields(self, title: str, summary: str) -> list[Hit]:
        """All hits in a normalised headline and summary."""
        hits, maybe = self._scan(title, "title", 0, False)
        more, maybe2 = self._scan(summary, "summary", 0, False)
        hits += more
        if self._regex:
            both = f"{title}\n{summary}"  # one pass per regex; the offset tells the field
            cut = len(title)
            for i, (term, names) in enumerate(self._regex):
                assert term.regex is not None
                if term.hint is not None and i not in maybe and i not in maybe2:
                    continue  # its literals are absent: it cannot match
                for found in term.regex.finditer(both):
                    fld = "title" if found.start() < cut else "summary"
                    hits.extend(Hit(name, term.text, fld, found.group(0)) for name in names)
        return hits

    def scan(
        self, text: str, field: str, *, regex: bool = True, segment: int = 0, lemma: bool = False
    ) -> list[Hit]:
        """All hits in normalised `text` (the first of each list)."""
        hits, maybe = self._scan(text, field, segment, lemma)
        for i, (term, names) in enumerate(self._regex if regex else ()):
            assert term.regex is not None
            if term.hint is not None and i not in maybe:
                continue
            found = term.regex.search(text)
            if found:
                hits.extend(
                    Hit(name, term.text, field, found.group(0), segment, found.start(), found.end(), lemma)
                    for name in names
                )
        return hits

    def _scan(self, text: str, field: str, segment: int, lemma: bool) -> tuple[list[Hit], set[int]]:
        """The automaton's hits in `text`, and the regexes whose literal it holds."""
        hits: list[Hit] = []
        maybe: set[int] = set()
        lower = text.lower()
        if len(lower) != len(text):  # rare letters (İ) change length when lowered: keep offsets
            lower = "".join(c.lower() if len(c.lower()) == 1 else c for c in text)
        if not self._empty:
            n, seen = len(text), set()
            for end, (size, groups, left_word, right_word, han, regexes) in self._automaton.iter(lower):
                if regexes:
                    maybe.update(regexes)
                start, stop = end - size + 1, end + 1
                if (
                    not han
                    and left_word
                    and start > 0
                    and (text[start - 1].isalnum() or text[start - 1] == "_")
                ):
                    continue  # inside a word: "Xiaomi", "шоссе"
                open_right = not (right_word and stop < n and (text[stop].isalnum() or text[stop] == "_"))
                for term, names in groups:
                    if term.exact_case and text[start:stop] != term.words:
                        continue
                    if term.han or term.stem:
                        last = stop
                        while term.stem and last < n and _is_word(text[last]):
                            last += 1
                        matched = text[start:last]
                    elif open_right:
                        matched = text[start:stop]
                    else:
                        continue
                    for name in names:
                        if (name, start, stop) in seen:
                            continue  # one hit per list and words (a term may be in a list twice)
                        seen.add((name, start, stop))
                        hits.append(
                            Hit(name, term.text, field, matched, segment, start, start + len(matched), lemma)
                        )
        return hits, maybe


# -- sentences and Russian lemmas ---------------------------------------------------------------

# A summary is judged sentence by sentence: the lead (its first sentence) says what the news is,
# and two names count together only within one sentence. A sentence ends at . ! ? or ; and a
# space (not after a lone capital: "U.S.", "J. Smith"), or after a Chinese full stop.
_SENTENCE_END = re.compile(r"(?:(?<=[.!?;])(?<![\s.][A-Z].)\s+|(?<=[\u3002\uff01\uff1f\uff1b])\s*)")
_CYRILLIC = re.compile("[\u0400-\u04ff]")
_CYRILLIC_WORD = re.compile("[\u0400-\u04ff]+(?:-[\u0400-\u04ff]+)*")


def sentences(text: str) -> list[str]:
    return [s for s in _SENTENCE_END.split(text) if s]


@functools.cache
def _morph() -> Any:
    # pymorphy3 (OpenCorpora's dictionary, shipped in the pymorphy3-dicts-ru package): loaded only
    # when a Russian entry has passed the trigger scan, so unrelated entries never pay for it.
    import pymorphy3

    return pymorphy3.MorphAnalyzer()


@functools.lru_cache(maxsize=200_000)
def lemma(word: str) -> str:
    """A Russian word's dictionary form ("Путина" -> "путин", "встретились" -> "встретиться");
    an acronym (ШОС, КНР) as written. Russian terms in feeds.yaml are written as lemmas."""
    if len(word) > 1 and word.isupper():
        return word
    return str(_morph().parse(word)[0].normal_form).replace("ё", "е")


def lemmatise(text: str) -> str:
    """Every Cyrillic word of `text` replaced by its lemma; everything else kept."""
    return _CYRILLIC_WORD.sub(lambda m: lemma(m.group(0)), text)


def _lemma_hits(index: TermIndex, text: str, fld: str, segment: int) -> list[Hit]:
    """Hits in the lemmas of `text`, placed on the words as written ("Путиным", not "путин")."""
    parts: list[str] = []
    words: list[tuple[int, int, int, int]] = []  # (lemma start, lemma end, start, end) of each word
    pos = lpos = 0
    for m in _CYRILLIC_WORD.finditer(text):
        parts.append(text[pos : m.start()])
        lpos += m.start() - pos
        lem = lemma(m.group(0))
        words.append((lpos, lpos + len(lem), m.start(), m.end()))
        parts.append(lem)
        lpos += len(lem)
        pos = m.end()
    parts.append(text[pos:])
    starts = [w[0] for w in words]

    def place(p: int, end: bool) -> int:
        i = bisect.bisect_right(starts, p) - 1
        if i < 0:
            return p
        ls, le, ss, se = words[i]
        if p <= le:  # inside a word: its start, or its end
            return se if end and p > ls else ss
        return se + (p - le)

    out = []
    for h in index.cyrillic.scan("".join(parts), fld, segment=segment, lemma=True):
        start, end = place(h.start, False), place(h.end, True)
        out.append(Hit(h.list_name, h.term, fld, text[start:end], segment, start, end, True))
    return out


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


# -- rules --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Condition:
    """One or more terms (a list or an inline term) looked for in one field."""

    source: str  # as written: "title:$putin"
    field: Field_
    list_name: str  # a named list, or the synthetic list of an inline term


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

    @classmethod
    def of(
        cls, name: str, any: Sequence[Condition], all: Sequence[Condition], none: Sequence[Condition]
    ) -> Rule:
        def keys(cs: Sequence[Condition]) -> frozenset[tuple[str, str]]:
            return frozenset((c.list_name, c.field) for c in cs)

        return cls(name, tuple(any), tuple(all), tuple(none), keys(any), keys(all), keys(none))

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


@dataclass(frozen=True, slots=True)
class Fired:
    """Why a rule matched: for each condition that held, the term and text that made it hold."""

    rule: str
    evidence: tuple[tuple[str, str, str, str], ...]  # (condition, field, term, matched text)


class Hits:
    """The hits of one entry, indexed by (list, field) and by list and segment (0 the headline,
    1 the lead sentence, 2... the rest of the summary)."""

    def __init__(self, hits: Iterable[Hit], texts: Mapping[int, str] | None = None) -> None:
        self.by_key: dict[tuple[str, str], list[Hit]] = {}
        self.by_segment: dict[int, dict[str, list[Hit]]] = {}
        for h in hits:
            self.by_key.setdefault((h.list_name, h.field), []).append(h)
            self.by_segment.setdefault(h.segment, {}).setdefault(h.list_name, []).append(h)
        self.present = frozenset(self.by_key) | frozenset((name, "text") for name, _ in self.by_key)
        self.texts = dict(texts or {})  # segment -> its text

    def segments(self) -> list[int]:
        return sorted(self.by_segment)

    def in_segment(self, segment: int, *names: str) -> list[Hit]:
        """Hits of any of the lists `names` in one segment."""
        found = self.by_segment.get(segment, {})
        return [h for n in names for h in found.get(n, ())]

    def has(self, names: Iterable[str], fields: Iterable[str] = ("title", "summary")) -> bool:
        return any((n, f) in self.present for n in names for f in fields)

    def holds(self, cond: Condition) -> bool:
        return (cond.list_name, cond.field) in self.present

    def find(self, cond: Condition) -> Hit | None:
        fields = ("title", "summary") if cond.field == "text" else (cond.field,)
        for f in fields:
            found = self.by_key.get((cond.list_name, f))
            if found:
                return found[0]
        return None

    def lists(self, fields: Iterable[str] = ("title", "summary")) -> set[str]:
        return {name for (name, f) in self.by_key if f in fields}


def evaluate(ruleset: RuleSet, hits: Hits) -> list[Fired]:
    fired = []
    for rule in ruleset.rules:
        if not rule.matches(hits.present):
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


# -- configuration --------------------------------------------------------------------------------


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


def scan_entry(index: TermIndex, title: str, summary: str) -> Hits:
    """All hits in a normalised headline and summary, segment by segment; a segment with Russian
    words is scanned as written and as lemmas."""
    hits: list[Hit] = []
    texts: dict[int, str] = {}
    for i, (fld, text) in enumerate([("title", title), *(("summary", s) for s in sentences(summary))]):
        texts[i] = text
        found = index.scan(text, fld, segment=i)
        if _CYRILLIC.search(text):
            seen = {(h.list_name, h.start, h.end) for h in found}
            found += [
                h for h in _lemma_hits(index, text, fld, i) if (h.list_name, h.start, h.end) not in seen
            ]
        hits += found
    return Hits(hits, texts)


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


@dataclass(frozen=True, slots=True)
class _RuleSpec:
    name: str | None = None
    any: tuple[str, ...] = ()
    all: tuple[str, ...] = ()
    none: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class _RuleSetSpec:
    description: str
    rules: tuple[_RuleSpec, ...]
    evidence: str | None = None
    threshold: float | None = None


@dataclass(frozen=True, slots=True)
class _Spec:
    terms: Mapping[str, Any]
    topics: Mapping[str, _RuleSetSpec]
    tags: Mapping[str, _RuleSetSpec]


def _plain_spec(data: Mapping[str, Any]) -> _Spec:
    """Rules already validated elsewhere, read as they are (no pydantic: see compile_rules)."""

    def sets(section: Mapping[str, Any] | None) -> dict[str, _RuleSetSpec]:
        return {
            name: _RuleSetSpec(
                s.get("description", ""),
                tuple(
                    _RuleSpec(r.get("name"), *(tuple(r.get(k) or ()) for k in ("any", "all", "none")))
                    for r in s.get("rules") or ()
                ),
                s.get("evidence"),
                s.get("threshold"),
            )
            for name, s in (section or {}).items()
        }

    return _Spec(data.get("terms") or {}, sets(data.get("topics")), sets(data.get("tags")))


def compile_rules(
    data: Mapping[str, Any], source: str = "feeds.yaml", *, validate: bool = True
) -> CompiledRules:
    """`terms:`, `topics:` and `tags:` sections -> compiled rules. Errors name the key path.

    validate=False reads the sections as they are, without pydantic: a fetch worker compiles
    rules that the main process validates again (organise) and reports if they are wrong; any
    error here only leaves that worker's entries unclassified (workers.lazy_rules)."""
    spec: Any
    if validate:
        from pydantic import ValidationError

        from digest.model.rulespec import RulesSpec

        try:
            spec = RulesSpec.model_validate(data)
        except ValidationError as err:
            from digest.model.settings import format_validation_error

            raise ConfigError(format_validation_error(err, source)) from None
    else:
        spec = _plain_spec(data)

    def expand(name: str, seen: tuple[str, ...]) -> list[Term]:
        if name in seen:
            raise ConfigError(f"{source}: terms.{name}: includes itself through {' -> '.join(seen)}")
        value = spec.terms[name]
        langs = value if isinstance(value, dict) else {"any": value}
        out: list[Term] = []
        for terms in langs.values():
            for t in terms:
                if t.startswith("$"):
                    out.extend(expand(t[1:], (*seen, name)))
                else:
                    out.append(parse_term(t))
        return out

    lists = {name: expand(name, ()) for name in spec.terms}
    inline: dict[str, list[Term]] = {}

    def build(kind: str, sets: Mapping[str, Any]) -> tuple[RuleSet, ...]:
        out = []
        for set_name, s in sets.items():
            scorer = None
            if s.evidence is not None:
                from digest.model.evidence import SCORERS

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
            for i, r in enumerate(s.rules):
                where = f"{source}: {kind}.{set_name}.rules[{i}]"
                if not (r.any or r.all):
                    raise ConfigError(f"{where}: a rule needs `any:` or `all:` conditions")
                conds = [
                    tuple(_condition(c, where, lists, inline) for c in group)
                    for group in (r.any, r.all, r.none)
                ]
                rules.append(Rule.of(r.name or f"rule {i + 1}", *conds))
            if scorer is None:
                out.append(RuleSet(set_name, s.description, tuple(rules)))
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


def compile_source(rules: RulesSource, *, validate: bool = True) -> CompiledRules:
    """Rules as written in a config; a section left out comes from the shipped feeds.yaml
    (`topics: {}` is none)."""
    data = dict(rules.own)
    if any(v is None for v in data.values()):
        import yaml

        from digest.defaults import embedded_text

        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        defaults = yaml.load(embedded_text("feeds.yaml"), Loader=loader)  # noqa: S506
        data = {k: (defaults.get(k) or {}) if v is None else v for k, v in data.items()}
    return compile_rules(data, rules.source, validate=validate)
