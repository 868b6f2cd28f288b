"""Terms and where they occur: text normalised, terms parsed and found in one Aho-Corasick
scan (headline, lead, rest; sentences; Russian lemmas). Pure; no I/O.

Terms (in `terms:` lists or inline in a rule):
  Putin                case-insensitive, whole words (Latin, Cyrillic)
  SCO, ШОС             written in capitals: case-sensitive (an acronym is not a word: "шоссе")
  =Xi                  `=` forces exact case
  Путин*, meet*        a stem: the word may continue (Путина, Путину; meets, meeting)
  上海合作组织           Han text: matched anywhere (Chinese has no word boundaries)
  Shanghai bloc        several words: any run of spaces between them
  re:<regex>           a Python regex, for what the above cannot say (Xi but not Xi'an)

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

Field_ = Literal["title", "summary", "text"]


FIELDS: tuple[Field_, ...] = ("title", "summary", "text")


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
    if "*" in body:  # the automaton finds literals: a stem can only end the term
        raise ValueError(
            f"{raw!r}: '*' marks a stem only at the end of a term; write a Russian phrase as lemmas "
            f"(text is also read as its lemmas) or use re:"
        )
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


@dataclass(frozen=True, slots=True)
class Condition:
    """One or more terms (a list or an inline term) looked for in one field."""

    source: str  # as written: "title:$putin"
    field: Field_
    list_name: str  # a named list, or the synthetic list of an inline term


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
