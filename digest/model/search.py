"""Search over titles and summaries in English, Russian and Chinese: what is indexed, what is asked. Pure.

Both backends index words with a plain Unicode word splitter (SQLite FTS5's `unicode61`
tokenizer, PostgreSQL's `simple` text search configuration), which lower-cases but neither
stems nor segments. Two things are done here so that it serves all three languages:

- Chinese is written without spaces, so a splitter sees a whole clause as one "word". Each Han
  (and kana, hangul) character is indexed as a word of its own, and a Chinese query word is
  asked as a phrase of its characters: 普京 matches 普京 anywhere, as a substring search would
  (the unigram indexing Lucene's StandardAnalyzer uses for CJK). Unlike FTS5's `trigram`
  tokenizer it finds two-character words (普京, 上合, and Latin "Xi"), the commonest in this news.
- Russian and English words are inflected: every other query word is asked as a prefix, after a
  light ending strip (Путина -> путин*, summits -> summit*), so one form finds the others.

Words are only letters and digits: no query reaches either engine's query syntax unescaped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Han (CJK unified ideographs and extension A, compatibility), kana, hangul syllables
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
_CJK_CHAR = re.compile(f"([{_CJK}])")
_CJK_RUN = re.compile(f"[{_CJK}]+|[^{_CJK}]+")
_WORD = re.compile(r"[^\W_]+")
MAX_TERMS = 12  # a pasted paragraph is not a query; the first words are
# Russian case and number endings, longest first; a stem keeps at least four letters
_RU_ENDINGS = (
    *("ами", "ями", "ого", "его", "ому", "ему", "ыми", "ими"),
    *("ой", "ей", "ом", "ем", "ым", "им", "ая", "яя", "ое", "ее", "ые", "ие", "ых", "их"),
    *("ов", "ев", "ам", "ям", "ах", "ях"),
    *("а", "я", "у", "ю", "е", "ы", "и", "о", "й", "ь"),
)
_CYRILLIC = re.compile("[\u0400-\u04ff]")


@dataclass(frozen=True, slots=True)
class Term:
    """One query word: `words` in a row (a Chinese word: its characters), or a prefix."""

    words: tuple[str, ...]
    prefix: bool


def index_text(text: str) -> str:
    """The text as it is indexed: each CJK character a word of its own."""
    return _CJK_CHAR.sub(r" \1 ", text)


def _stem(word: str) -> str:
    if _CYRILLIC.search(word):
        for end in _RU_ENDINGS:
            if word.endswith(end) and len(word) - len(end) >= 4:
                return word[: -len(end)]
        return word
    if len(word) >= 5 and word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


def parse_query(words: str) -> list[Term]:
    """The words asked -> terms, all of which a match must contain (at most MAX_TERMS)."""
    terms: list[Term] = []
    for token in _WORD.findall(words.lower()):
        for run in _CJK_RUN.findall(token):
            if _CJK_CHAR.match(run):
                term = Term(tuple(run), prefix=False)
            else:
                term = Term((_stem(run),), prefix=True)
            if term not in terms:
                terms.append(term)
    return terms[:MAX_TERMS]


def fts5_query(terms: list[Term]) -> str:
    """SQLite FTS5 MATCH expression: "word"* for a prefix, "普 京" for a phrase, all ANDed."""
    return " AND ".join(f'"{t.words[0]}"*' if t.prefix else '"' + " ".join(t.words) + '"' for t in terms)


def tsquery(terms: list[Term]) -> str:
    """PostgreSQL to_tsquery('simple', ...) text: 'word':* for a prefix, '普' <-> '京' for a phrase."""

    def one(t: Term) -> str:
        if t.prefix:
            return f"'{t.words[0]}':*"
        return "(" + " <-> ".join(f"'{w}'" for w in t.words) + ")"

    return " & ".join(one(t) for t in terms)
