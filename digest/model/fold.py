"""Fold the same story from many outlets into one. Pure: entries and features in, story ids out.

A story is one event told from one angle (issue 11). Layers, cheapest and surest first:
  1. the same article: canonical URL (tracking parameters, scheme, `www.`/`m.`, AMP forms,
     trailing slash and fragment normalised; old-style Google News ids decoded), or the same GUID;
  2. the same headline once an aggregator's " - Outlet" suffix is dropped;
  3. guards that keep apart a follow-up on a later day, one feed's distinct headlines, a preview
     and its event, reports about other leaders or in other cities;
  4. in any language: the same participants (leaders, people, organisation, cities, events, the
     countries a headline names) in the same setting, unless the headlines name different kinds
     of event (talks, a call, a parade, a gas deal ...);
  5. within one language: near-duplicate wording of headline and summary.

New entries join existing stories incrementally; no pass ever compares all pairs: candidates
come from an index of entities and headlines over the stories of the days in reach, and a key
shared by too many of them is skipped like a stop word.
"""

from __future__ import annotations

import base64
import binascii
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import lru_cache
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from digest.model.settings import Duration
from digest.model.terms import sentences

# -- canonical URLs -----------------------------------------------------------------------------

_TRACKING = re.compile(
    r"^(utm_\w+|fbclid|gclid|dclid|yclid|msclkid|mc_cid|mc_eid|_ga|_gl|igshid|spm|ref|ref_src|ref_url|"
    r"referrer|source|oc|ocid|cmpid|icid|at_\w+|s_cid|smid|rss|feed|from|share|amp|outputtype|output)$",
    re.I,
)
_GOOGLE_NEWS = re.compile(r"^https?://news\.google\.com/(?:rss/)?articles/([A-Za-z0-9_-]+)")


def decode_google_news(url: str) -> str | None:
    """The publisher URL inside an old-style Google News article id, if it carries one.

    Ids before mid-2024 are base64 of a small protobuf holding the URL; newer ones are opaque
    and need Google's RPC, which we do not call (SSujitX/google-news-url-decoder#2): those
    stay None.
    """
    m = _GOOGLE_NEWS.match(url)
    if not m:
        return None
    token = m.group(1)
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        return None
    found = re.search(rb"https?://[\x21-\x7e]+?(?=[\x00-\x20\x7f-\xff]|$)", raw)
    return found.group(0).decode("ascii") if found else None


def without_tracking(url: str | None) -> str | None:
    """The link as the feed gave it, minus tracking parameters (utm_*, fbclid, ...): for showing."""
    if not url or "?" not in url:
        return url
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    kept = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if not _TRACKING.match(k)]
    return urlunsplit(parts._replace(query=urlencode(kept)))


def canonical_url(url: str | None) -> str | None:
    """A key equal for every form of one article's URL; None when the URL says nothing (aggregators)."""
    if not url:
        return None
    url = url.strip()
    if _GOOGLE_NEWS.match(url):
        decoded = decode_google_news(url)
        if decoded is None:
            return None
        url = decoded
    amp_cache = re.match(r"^https?://[^/]*cdn\.ampproject\.org/[a-z]/(?:s/)?(.+)$", url)
    if amp_cache:
        url = "https://" + amp_cache.group(1)
    try:
        if "?" in url or "%" in url or not url.isascii():
            # query order, percent-escapes and non-ASCII paths are what w3lib normalises
            from w3lib.url import canonicalize_url

            url = canonicalize_url(url, keep_fragments=False)
        parts = urlsplit(url)
    except ValueError:
        return None
    host = (parts.hostname or "").lower()
    for prefix in ("www.", "m.", "amp.", "mobile."):
        if host.startswith(prefix) and host.count(".") >= 2:
            host = host[len(prefix) :]
    path = re.sub(r"/amp/?$|\.amp$|/amp(?=/)", "", parts.path) or "/"
    path = path.rstrip("/") or "/"
    query = urlencode(
        [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if not _TRACKING.match(k)]
    )
    return urlunsplit(("https", host, path, query, ""))


# -- features -----------------------------------------------------------------------------------

_STOP = frozenset(
    [
        "a",
        "an",
        "the",
        "and",
        "or",
        "of",
        "to",
        "in",
        "on",
        "at",
        "for",
        "with",
        "by",
        "from",
        "as",
        "is",
        "are",
        "was",
        "were",
        "be",
        "been",
        "its",
        "it",
        "this",
        "that",
        "after",
        "before",
        "over",
        "into",
        "amid",
        "says",
        "said",
        "say",
        "will",
        "would",
        "could",
        "new",
        "first",
        "two",
        "his",
        "her",
        "their",
        "they",
        "он",
        "она",
        "они",
        "и",
        "в",
        "на",
        "с",
        "по",
        "для",
        "из",
        "к",
        "о",
        "что",
        "как",
        "это",
        "за",
        "от",
        "до",
        "при",
        "также",
    ]
)
_WORD = re.compile(r"[^\W\d_]+|\d+", re.UNICODE)
_PREVIEW = re.compile(
    r"\b(?:to (?:meet|visit|hold|attend|travel|spend|host|fly)|will (?:meet|visit|hold|attend|travel)|"
    r"plans? to|set to|expected to|ahead of (?:talks|meeting|visit)|this week|next week|"
    r"встретятся|посетит|проведут|примет участие)\b|将于|将出席|将访问|将举行",
    re.I,
)
# Term lists whose names start so are entities: language-independent ids of who, where and what.
_PEOPLE = ("leader_", "person_")
ENTITY_KINDS = ("leader_", "person_", "place_", "country_", "region_", "org_", "event_")
_OUTLET_SUFFIX = re.compile(r"\s+[-–—|]\s+[^-–—|]{2,60}$")


_COMBINING = re.compile("[\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f]")


def _fold(text: str) -> str:
    """Case and accents folded: "Erdoğan" and "Erdogan" are one word."""
    return _COMBINING.sub("", unicodedata.normalize("NFKD", text.casefold()))


def title_key(title: str, source_title: str | None, aggregated: bool) -> str:
    """The headline without an aggregator's " - Outlet" suffix, folded for comparison."""
    t = title.strip()
    if source_title and t.endswith(source_title):
        t = t[: -len(source_title)].rstrip(" -–—|")
    elif aggregated:
        t = _OUTLET_SUFFIX.sub("", t)
    return " ".join(_WORD.findall(_fold(t)))


_HAN = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]+")


def tokens(text: str) -> frozenset[str]:
    """Words (stems of five letters) for alphabetic text; character bigrams for Han text."""
    folded = _fold(text)
    out = {w[:5] for w in _WORD.findall(_HAN.sub(" ", folded)) if len(w) > 1 and w not in _STOP}
    for run in _HAN.findall(folded):
        out.update(run[i : i + 2] for i in range(max(1, len(run) - 1)))
    return frozenset(out)


@dataclass(frozen=True, slots=True)
class StoryEntry:
    """What clustering needs to know about one selected entry."""

    id: int
    time: datetime | None  # None when the feed gave no usable date
    language: str
    url_key: str | None
    guid: str | None
    title_key: str
    words: frozenset[str]
    title_words: frozenset[str]
    entities: frozenset[str]
    title_heads: frozenset[str]  # leaders named in the headline
    preview: bool
    heads: frozenset[str] = frozenset()  # leaders named anywhere
    places: frozenset[str] = frozenset()  # cities and venues named (not countries)
    feed: str = ""  # the feed it came from: one feed's distinct headlines are distinct stories
    kinds: frozenset[str] = frozenset()  # what happened, from the headline (EVENT_KINDS)
    participants: frozenset[str] = frozenset()  # who and where, as far as they tell events apart
    title_places: frozenset[str] = frozenset()  # places the headline names, capitals included
    # what happened, from the headline, or from the lead (the summary's first sentence) when the
    # headline names no kind of event ("lift ties to a new era" told as "held talks" in the lead)
    setting_kinds: frozenset[str] = frozenset()


def story_entry(
    id: int,
    *,
    title: str,
    summary: str,
    link: str | None,
    guid: str | None,
    published: datetime,
    published_fallback: bool,
    language: str | None,
    source_title: str | None,
    entities: Iterable[str],
    title_entities: Iterable[str] = (),
    feed: str = "",
    settings: ClusteringSettings | None = None,
) -> StoryEntry:
    url_key = canonical_url(link)
    aggregated = bool(link and _GOOGLE_NEWS.match(link)) or bool(source_title)
    summary_for_words = "" if aggregated and title_key(summary, source_title, True) == title_key(
        title, source_title, True
    ) else summary  # aggregators repeat the headline as the summary  # fmt: skip
    key = title_key(title, source_title, aggregated)
    title_words = tokens(key)
    s = settings or DEFAULT_SETTINGS
    kinds = event_kinds(key, s)
    # "SCO" and "Shanghai Cooperation Organisation" are one entity
    ents = frozenset(e.removesuffix("_acronym") for e in entities if e.startswith(ENTITY_KINDS))
    # cities the selection rules have no list for: a meeting in Islamabad is not one in Tianjin
    ents |= places_named(f"{key} {_fold(summary_for_words)}", s)
    return StoryEntry(
        id=id,
        time=None if published_fallback else published,
        language=(language or "en")[:2],
        url_key=url_key,
        guid=guid if guid and not guid.isdigit() else None,
        title_key=key,
        words=title_words | tokens(summary_for_words),
        title_words=title_words,
        entities=ents,
        title_heads=frozenset(e for e in title_entities if e.startswith("leader_")),
        title_places=frozenset(e for e in title_entities if e.startswith("place_")) | places_named(key, s),
        preview=bool(_PREVIEW.search(title)),
        heads=frozenset(e for e in ents if e.startswith("leader_")),
        places=frozenset(e for e in ents if e.startswith("place_")),
        feed=feed,
        kinds=kinds,
        setting_kinds=kinds or event_kinds(_fold(next(iter(sentences(summary_for_words)), "")), s),
        participants=specific(ents, s)
        | frozenset(
            c
            for e in title_entities
            for c in (e, s.nationalities.get(e, ""))
            if c.startswith("country_") and c not in s.protagonists
        ),
    )


# -- the pair decision ----------------------------------------------------------------------------


# Cities where SCO and Putin–Xi news happens that the selection rules' place_ lists may lack:
# capitals and summit cities of members, observers and partners, and other meeting places.
# English, Russian (a stem with `*` takes any case ending) and Chinese. Shanghai is left out:
# it names the organisation far more often than the city.
PLACES: dict[str, tuple[str, ...]] = {
    "place_islamabad": ("Islamabad", "Исламабад*", "伊斯兰堡"),
    "place_kabul": ("Kabul", "Кабул*", "喀布尔"),
    "place_ulaanbaatar": ("Ulaanbaatar", "Ulan Bator", "Улан-Батор*", "乌兰巴托"),
    "place_ashgabat": ("Ashgabat", "Ашхабад*", "阿什哈巴德"),
    "place_almaty": ("Almaty", "Алмат*", "阿拉木图"),
    "place_cholpon_ata": ("Cholpon-Ata", "Чолпон-Ат*", "乔蓬阿塔"),
    "place_baku": ("Baku", "Баку", "巴库"),
    "place_yerevan": ("Yerevan", "Ереван*", "埃里温"),
    "place_ankara": ("Ankara", "Анкар*", "安卡拉"),
    "place_istanbul": ("Istanbul", "Стамбул*", "伊斯坦布尔"),
    "place_riyadh": ("Riyadh", "Эр-Рияд*", "利雅得"),
    "place_doha": ("Doha", "Доха", "Дохе", "多哈"),
    "place_cairo": ("Cairo", "Каир*", "开罗"),
    "place_kathmandu": ("Kathmandu", "Катманду", "加德满都"),
    "place_colombo": ("Colombo", "Коломбо", "科伦坡"),
    "place_phnom_penh": ("Phnom Penh", "Пномпен*", "金边"),
    "place_minsk": ("Minsk", "Минск*", "明斯克"),
    "place_ufa": ("Ufa", "Уфа", "Уфе", "Уфу", "Уфы", "乌法"),
    "place_st_petersburg": ("St Petersburg", "Saint Petersburg", "Петербург*", "圣彼得堡"),
    "place_vladivostok": ("Vladivostok", "Владивосток*", "符拉迪沃斯托克"),
    "place_sochi": ("Sochi", "Сочи", "索契"),
    "place_yekaterinburg": ("Yekaterinburg", "Екатеринбург*", "叶卡捷琳堡"),
    "place_xiamen": ("Xiamen", "Сямэн*", "厦门"),
    "place_hangzhou": ("Hangzhou", "Ханчжоу", "杭州"),
    "place_kunming": ("Kunming", "Куньмин*", "昆明"),
    "place_rio": ("Rio de Janeiro", "Рио-де-Жанейро", "里约热内卢"),
    "place_johannesburg": ("Johannesburg", "Йоханнесбург*", "约翰内斯堡"),
    "place_pyongyang": ("Pyongyang", "Пхеньян*", "平壤"),
    "place_washington": ("Washington", "Вашингтон*", "华盛顿"),
    "place_anchorage": ("Anchorage", "Анкоридж*", "安克雷奇"),
    "place_geneva": ("Geneva", "Женев*", "日内瓦"),
    "place_zhurihe": ("Zhurihe", "Чжурихэ", "朱日和"),
}

# Whose country a person in a headline speaks for: "Rajnath Singh refuses to sign" and "India
# objects" tell one story. China and Russia are left out (see `protagonists`).
NATIONALITIES: dict[str, str] = {
    "leader_modi": "country_india",
    "person_jaishankar": "country_india",
    "person_rajnath": "country_india",
    "leader_sharif": "country_pakistan",
    "leader_khan": "country_pakistan",
    "leader_iran": "country_iran",
    "leader_tokayev": "country_kazakhstan",
    "leader_mirziyoyev": "country_uzbekistan",
    "leader_japarov": "country_kyrgyzstan",
    "leader_rahmon": "country_tajikistan",
    "leader_lukashenko": "country_belarus",
    "leader_erdogan": "country_turkey",
    "leader_zelensky": "country_ukraine",
}

# What happened, told from the headline: two reports of one day whose headlines name different
# kinds of event (talks and a gas deal, a parade and a call) are different angles, whatever else
# they share. Folded text (casefold, no accents), so the patterns are lower case; Latin and
# Cyrillic patterns start at a word, Han ones match anywhere (Han script has no word boundaries).
EVENT_KINDS: dict[str, tuple[str, ...]] = {
    "talks": (
        r"\btalks?\b",
        r"\bmeet(?:s|ing)?\b",
        r"\bmet\b",
        r"\bпереговор",
        r"\bвстре[тч]",
        "会谈",
        "会见",
        "会晤",
    ),
    "call": (
        r"\b(?:phone|telephone|video)[ -]?(?:call|link|conference)",
        r"\b(?:hold|holds|held|have|had) (?:a )?call",
        r"\bcall with\b",
        r"\bby (?:video|phone|telephone)\b",
        r"\bspoke by\b",
        r"\bтелефон",
        r"\bвидео",
        r"\bсозвон",
        "通电话",
        "通话",
        "视频",
    ),
    "parade": (r"\bparade", r"\bпарад", "阅兵"),
    "energy": (
        r"\bgas\b",
        r"\bpipeline",
        r"\boil\b",
        r"\bgazprom",
        r"\brosneft",
        r"\bpower of siberia",
        r"\bгаз",
        r"\bнефт",
        r"\bсил[аыу] сибири",
        "天然气",
        "管道",
        "石油",
        "能源",
    ),
    "statement": (r"\bdeclar", r"\bstatement", r"\bcommuniqu", r"\bзаявлени", r"\bдекларац", "宣言", "声明"),
    "membership": (
        r"\bmember",
        r"\bjoin(?:s|ed)?\b",
        r"\badmi(?:ts?|tted|tting|ssion)\b",
        r"\baccession",
        r"\bчлен",
        r"\bвступ",
        r"\bприня[тл]",
        "成员",
        "加入",
    ),
    "exercise": (r"\bexercises?\b", r"\bdrills?\b", r"\bwar ?games", r"\bучени", "演习", "演练"),
    "award": (r"\bmedal", r"\baward", r"\border of\b", r"\bорден", r"\bмедал", "勋章"),
    # messages between them: congratulations, letters, telegrams (not a call, not a meeting)
    "message": (
        r"\bcongratulat",
        r"\bmessages?\b",
        r"\bletters?\b",
        r"\btelegram",
        r"\bgreetings\b",
        r"\bпоздрав",
        r"\bпослани",
        r"\bтелеграмм",
        r"\bписьм",
        "贺电",
        "贺信",
        "致信",
        "祝贺",
        "互致",
    ),
    "opening": (r"\bopens?\b", r"\bopening\b", r"\bоткры", "开幕"),
    "arrival": (r"\barriv", r"\blands?\b", r"\blanded\b", r"\bприбыл", r"\bприл[её]т", "抵达", "到达"),
}


class ClusteringSettings(BaseModel):
    """`clustering:` in feeds.yaml. Every threshold is here, each with the reason it exists."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    window: Duration = Field(72 * 3600.0, description="entries further apart never share a story")
    same_event: Duration = Field(
        20 * 3600.0, description="reports of one event come out within this; later is a follow-up"
    )
    likeness: float = Field(0.42, ge=0, description="score (see likeness()) that makes two reports one story")
    undated_likeness: float = Field(0.8, ge=0, description="the same for an entry without a date")
    headline_weight: float = Field(0.4, ge=0, description="weight of headline overlap in the likeness")
    entity_weight: float = Field(0.4, ge=0, description="weight of entity agreement in the likeness")
    entity_agreement: float = Field(
        0.6,
        ge=0,
        le=1,
        description="across languages: share of the fewer specific entities the other names too",
    )
    cross_language_entities: int = Field(
        2, ge=1, description="specific entities shared to join across languages"
    )
    tag_share: float = Field(
        0.5, ge=0, lt=1, description="a story carries a tag when more than this share of its reports do"
    )
    capitals: tuple[str, ...] = Field(
        ("place_beijing", "place_moscow", "place_washington"),
        description="capitals that stand for governments ('Beijing's concerns'): they tell no events apart",
    )
    other_kind_penalty: float = Field(
        0.25,
        ge=0,
        description="likeness added to the threshold when the headlines name different kinds of event",
    )
    nationalities: dict[str, str] = Field(
        default_factory=lambda: dict(NATIONALITIES),
        description="person or leader id -> the country id a headline naming them speaks for",
    )
    protagonists: tuple[str, ...] = Field(
        ("country_china", "country_russia"),
        description="countries nearly every story is about: named in a headline they tell no events apart"
        " (other countries named in a headline are who the story is about: 'Iran joins the SCO')",
    )
    third_leader_penalty: float = Field(
        0.3,
        ge=0,
        description="likeness added to the threshold when a headline names a leader the other report lacks",
    )
    exclusive_kinds: tuple[tuple[str, str], ...] = Field(
        (("call", "talks"),),
        description="(A, B): a headline naming A and one naming B but not A are two events (a call is"
        " never a meeting in person)",
    )
    places: dict[str, tuple[str, ...]] = Field(
        default_factory=lambda: dict(PLACES),
        description="cities named in a report, beyond the rules' place_ lists: id -> spellings",
    )
    event_kinds: dict[str, tuple[str, ...]] = Field(
        default_factory=lambda: dict(EVENT_KINDS),
        description="kinds of event, each a list of regular expressions over the folded headline",
    )
    crowded_key: int = Field(
        200,
        ge=1,
        description="an entity or word shared by more stories than this in the window finds no candidates:"
        " like a stop word it tells nothing apart, and scanning it would compare nearly all pairs",
    )

    @field_validator("event_kinds")
    @classmethod
    def _patterns_compile(cls, kinds: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
        for name, patterns in kinds.items():
            for pattern in patterns:
                try:
                    re.compile(pattern)
                except re.error as err:
                    raise ValueError(
                        f"event kind {name!r}: {pattern!r} is not a regular expression ({err})"
                    ) from None
        return kinds

    def kind_pattern(self) -> tuple[re.Pattern[str], tuple[str, ...]]:
        return _compiled_kinds(tuple(self.event_kinds.items()))


@dataclass(frozen=True, slots=True)
class _Gazetteer:
    """Place names looked up word by word (a regex alternation of them all took 0.4 ms a report)."""

    by_first: dict[str, tuple[tuple[tuple[str, ...], bool, str], ...]]  # first word -> (words, stem?, id)
    stem_sizes: tuple[int, ...]  # lengths of one-word stems, looked up by prefix
    han: tuple[tuple[str, str], ...]  # (name, id): Han text matches anywhere

    def find(self, folded_text: str) -> frozenset[str]:
        found = {pid for name, pid in self.han if name in folded_text}
        words = _WORD.findall(folded_text)
        for i, w in enumerate(words):
            keys = [w, *(w[:n] + "*" for n in self.stem_sizes if len(w) >= n)]
            for key in keys:
                for names, stem, pid in self.by_first.get(key, ()):
                    rest = words[i + 1 : i + len(names)]
                    if len(rest) == len(names) - 1 and all(
                        a == b or (stem and k == len(rest) - 1 and b.endswith("*") and a.startswith(b[:-1]))
                        for k, (a, b) in enumerate(zip(rest, names[1:], strict=True))
                    ):
                        found.add(pid)
        return frozenset(found)


@lru_cache(maxsize=8)
def _gazetteer(places: tuple[tuple[str, tuple[str, ...]], ...]) -> _Gazetteer:
    """Spellings: Han text matches anywhere; other scripts word by word, the last word to its end
    unless it ends in `*` (a Russian stem: Исламабад* for any case ending)."""
    by_first: dict[str, list[tuple[tuple[str, ...], bool, str]]] = {}
    sizes, han = set(), []
    for pid, spellings in places:
        for spelling in spellings:
            folded = _fold(spelling)
            if _HAN.fullmatch(folded):
                han.append((folded, pid))
                continue
            stem = folded.endswith("*")
            words = tuple(_WORD.findall(folded))
            if not words:
                continue
            if stem:
                words = (*words[:-1], words[-1] + "*")
            first = words[0]
            if stem and len(words) == 1:
                sizes.add(len(first) - 1)
            by_first.setdefault(first, []).append((words, stem, pid))
    return _Gazetteer({k: tuple(v) for k, v in by_first.items()}, tuple(sorted(sizes)), tuple(han))


def places_named(folded_text: str, settings: ClusteringSettings) -> frozenset[str]:
    """The places of `clustering.places` named in a folded text."""
    return _gazetteer(tuple(settings.places.items())).find(folded_text)


@lru_cache(maxsize=8)
def _compiled_kinds(
    kinds: tuple[tuple[str, tuple[str, ...]], ...],
) -> tuple[re.Pattern[str], tuple[str, ...]]:
    """One alternation of every kind, group kN for the N-th kind: one scan of a headline finds all
    (eleven separate searches were a third of the time spent on an entry's features)."""
    names = tuple(name for name, _ in kinds)
    joined = "|".join(f"(?P<k{i}>{'|'.join(patterns)})" for i, (_, patterns) in enumerate(kinds))
    return re.compile(joined or "(?!)"), names


DEFAULT_SETTINGS = ClusteringSettings()


def event_kinds(folded_headline: str, settings: ClusteringSettings) -> frozenset[str]:
    """The kinds of event a (title_key-folded) headline names."""
    pattern, names = settings.kind_pattern()
    return frozenset(names[int(m.lastgroup[1:])] for m in pattern.finditer(folded_headline) if m.lastgroup)


def _jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    if not a or not b:
        return 0.0
    return len(a & b) / len(a | b)


def _overlap(a: frozenset[str], b: frozenset[str]) -> float:
    """Share of the smaller set found in the larger: a short headline inside a long one."""
    if not a or not b:
        return 0.0
    return len(a & b) / min(len(a), len(b))


def same_article(a: StoryEntry, b: StoryEntry) -> bool:
    return bool((a.url_key and a.url_key == b.url_key) or (a.guid and a.guid == b.guid))


def conflict(a: StoryEntry, b: StoryEntry, s: ClusteringSettings) -> str | None:
    """A reason two entries cannot be one story, whatever their wording; None if there is none."""
    if a.time is not None and b.time is not None:
        gap = abs((a.time - b.time).total_seconds())
        if gap > s.window:
            return "outside the window"
        if gap > s.same_event:
            return "a later day: a follow-up"
    if a.feed and a.feed == b.feed and a.title_key != b.title_key:
        # an outlet gives each of its stories its own headline (issue 11: twenty distinct SCO
        # headlines of one outlet in seven hours were folded into one story)
        return "another headline of the same feed"
    if a.preview != b.preview:
        return "a preview and the event itself"
    if exclusive_differ(a, b, s):
        return "a call and a meeting in person"
    if a.title_heads - b.heads and b.title_heads - a.heads:
        # "Putin meets Modi" and "Putin meets Xi": each headline names a leader the other report
        # does not. (One headline naming a third leader the other leaves out is one meeting told
        # more fully: "Putin sees Xi, then Erdogan".)
        return "each headline names a leader the other report does not"
    # cities and venues only: a country contains its cities, and regions contain countries
    pa, pb = a.places.difference(s.capitals), b.places.difference(s.capitals)
    if pa and pb and pa.isdisjoint(pb):
        return "different places"
    # two headlines that each say where, capitals included: "talks in Beijing", "meet in Astana"
    if a.title_places and b.title_places and a.title_places.isdisjoint(b.title_places):
        return "the headlines name different places"
    return None


def specific(entities: frozenset[str], s: ClusteringSettings) -> frozenset[str]:
    """The people, cities, organisations and events named: countries are too broad to agree on."""
    return frozenset(e for e in entities if not e.startswith(("country_", "region_")) and e not in s.capitals)


def likeness(a: StoryEntry, b: StoryEntry, s: ClusteringSettings, names: bool = True) -> float:
    """Words in common, plus the share of a short headline found in the other, plus (with `names`)
    agreement on the specific people, places and events named (outlets word one event very
    differently)."""
    ea, eb = a.participants, b.participants
    if not (ea & eb):
        return 0.0
    return (
        _jaccard(a.words, b.words)
        + s.headline_weight * _overlap(a.title_words, b.title_words)
        + (s.entity_weight * _jaccard(ea, eb) if names and in_one_setting(a, b) else 0.0)
    )


def in_one_setting(a: StoryEntry, b: StoryEntry) -> bool:
    """They share a place, organisation or event, or their headlines the kind of event: the same two
    leaders meet, call and appear together several times on one visit, so people alone are not enough.
    Not when they name different places, capitals included ("talks in Beijing" and "talks in Astana";
    a capital alone is too often a government to rule a story out, see conflict())."""
    if a.places and b.places and a.places.isdisjoint(b.places):
        return False
    shared = a.participants & b.participants
    return (
        any(not e.startswith(_PEOPLE) for e in shared)
        or bool(a.setting_kinds & b.setting_kinds)
        or len(a.heads & b.heads) >= 3  # two leaders meet often; three together is one occasion
    )


def other_kind(a: StoryEntry, b: StoryEntry, s: ClusteringSettings) -> bool:
    """The headlines name different kinds of event (talks and a gas deal, a parade and a call)."""
    if not (a.kinds and b.kinds):
        return False
    return a.kinds.isdisjoint(b.kinds)


def exclusive_differ(a: StoryEntry, b: StoryEntry, s: ClusteringSettings) -> bool:
    """One headline names a kind of event that rules out the kind the other names: a call, and
    talks that are not a call (a video meeting names both; a summit joined "by video" no talks)."""
    for one, other in s.exclusive_kinds:
        if one in a.kinds and other in b.kinds and one not in b.kinds:
            return True
        if one in b.kinds and other in a.kinds and one not in a.kinds:
            return True
    return False


def similar(a: StoryEntry, b: StoryEntry, s: ClusteringSettings, threshold: float | None = None) -> bool:
    if a.title_key and a.title_key == b.title_key and len(a.title_key) >= 20:
        return True
    # a leader in one headline whom the other report leaves out is either the same meeting told
    # more fully ("Putin sees Xi, then Erdogan, in Astana" and "Putin and Xi meet in Astana") or
    # another angle (a third leader's reaction, another bilateral at the summit): names alone are
    # not enough, unless one headline names every leader the other does and they share a city,
    # or both are a call: a call joins two people, so a third leader in one headline is context
    # ("Putin and Xi hold video call hours after Trump's inauguration")
    fuller = (a.title_heads <= b.title_heads or b.title_heads <= a.title_heads) and (
        any(e.startswith("place_") and e not in s.capitals for e in a.participants & b.participants)
        or "call" in a.kinds & b.kinds
    )
    third_leader = bool(a.title_heads - b.heads or b.title_heads - a.heads) and not fuller
    if threshold is None and not other_kind(a, b, s) and not third_leader:
        # Outlets word one event very differently, and across languages there are no words in
        # common at all: the same people, organisation and places on the same day will do
        # (conflict() has checked the date, the headline's leaders and the places). Without a
        # date, or with headlines about different kinds of event, shared names are not enough:
        # a summit day has several stories about the same people.
        ea, eb = a.participants, b.participants
        if (
            in_one_setting(a, b)
            and len(ea & eb) >= s.cross_language_entities
            and _overlap(ea, eb) >= s.entity_agreement
        ):
            return True
    if a.language != b.language:
        return False
    needed = s.likeness if threshold is None else threshold
    # one headline's talks may be the other's statement: not impossible, but the words must agree more
    needed += s.other_kind_penalty if other_kind(a, b, s) else 0.0
    needed += s.third_leader_penalty if third_leader else 0.0
    return likeness(a, b, s, names=not third_leader) >= needed


def same_story(a: StoryEntry, b: StoryEntry, s: ClusteringSettings) -> bool:
    if same_article(a, b):
        return True
    if conflict(a, b, s) is not None:
        return False
    if a.time is None or b.time is None:
        # no date, so no time guard: only a much stronger likeness will do
        return similar(a, b, s, s.undated_likeness)
    return similar(a, b, s)


# -- incremental assignment ---------------------------------------------------------------------


@dataclass
class Story:
    id: int
    members: list[StoryEntry] = field(default_factory=list)
    latest: datetime | None = None  # the newest dated member
    keys: set[str] = field(default_factory=set)  # what the clusterer indexes it under
    indexed_day: int | None = None

    def add(self, e: StoryEntry) -> None:
        self.members.append(e)
        if e.time is not None and (self.latest is None or e.time > self.latest):
            self.latest = e.time


def _day(t: datetime) -> int:
    return int(t.timestamp() // 86400)


class Clusterer:
    """Assigns entries to stories one at a time, against the stories it has been given.

    Stories are indexed by (entity or headline, day of their newest report), so finding
    candidates touches only the days inside the window: never all pairs, never all stories.
    A key that more than `crowded_key` stories of those days share is skipped, as a search
    engine skips stop words: it tells nothing apart, and scanning it would bring back the
    all-pairs cost (issue 11: 10,000 distinct SCO items, all sharing "SCO", took 176 s).
    """

    def __init__(self, settings: ClusteringSettings, stories: Iterable[Story] = (), next_id: int = 1) -> None:
        self.settings = settings
        self.stories: dict[int, Story] = {}
        self._by_url: dict[str, int] = {}
        self._by_key: dict[str, dict[int | None, set[int]]] = {}
        self._reach = timedelta(seconds=min(settings.same_event, settings.window))
        self.merged: dict[int, int] = {}  # story id -> the story it was merged into
        self.next_id = next_id
        self.compared = 0  # reports an entry was checked against: the work done, for benchmarks
        for story in stories:
            members, story.members, story.latest, story.keys = story.members, [], None, set()
            self.stories[story.id] = story
            self.next_id = max(self.next_id, story.id + 1)
            for m in members:
                self._join(story.id, m)

    def _index(self, story: Story, e: StoryEntry) -> None:
        for key in (e.url_key, e.guid and "guid:" + e.guid):
            if key:
                self._by_url.setdefault(key, story.id)
        day = _day(story.latest) if story.latest is not None else None
        new_keys = set(self._keys(e)) - story.keys
        story.keys |= new_keys
        # a story moves to the day of its newest report; the old day's entries only cost a check
        for k in story.keys if day != story.indexed_day else new_keys:
            self._by_key.setdefault(k, {}).setdefault(day, set()).add(story.id)
        story.indexed_day = day

    @staticmethod
    def _keys(e: StoryEntry) -> Iterable[str]:
        # Every way two reports can be one story needs one of these in common: the same article
        # (found through _by_url), the same headline, or a shared entity (likeness() is 0 without
        # a shared specific entity; across languages several entities must be shared).
        yield from e.entities
        if e.title_key:
            yield "t:" + e.title_key

    def candidates(self, e: StoryEntry) -> list[Story]:
        ids: set[int] = set()
        # every member of a story it joins is within `same_event` of it (the guards hold for
        # all members), so the story's newest report is too: only those days need looking at
        days: Iterable[int | None] = (
            [*range(_day(e.time - self._reach), _day(e.time + self._reach) + 1), None]
            if e.time is not None
            else ()  # undated (rare): every day is possible
        )
        for k in self._keys(e):
            by_day = self._by_key.get(k)
            if not by_day:
                continue
            # (None: stories with no dated report yet)
            found = [on_day for d in (days or by_day) if (on_day := by_day.get(d))]
            if sum(map(len, found)) > self.settings.crowded_key:
                continue
            for on_day in found:
                ids |= on_day
        return [self.stories[sid] for sid in sorted({self.story_of(i) for i in ids})]

    def assign(self, e: StoryEntry) -> int:
        for key in (e.url_key, e.guid and "guid:" + e.guid):
            if key and key in self._by_url:
                return self._join(self.story_of(self._by_url[key]), e)
        matches: list[tuple[float, int]] = []
        for story in self.candidates(e):
            self.compared += len(story.members)
            if any(conflict(e, m, self.settings) and not same_article(e, m) for m in story.members):
                continue
            if any(same_story(e, m, self.settings) for m in story.members):
                score = max(
                    _jaccard(e.words, m.words) + _jaccard(e.entities, m.entities) for m in story.members
                )
                matches.append((score, story.id))
        if not matches:
            sid = self.next_id
            self.next_id += 1
            self.stories[sid] = Story(sid)
            return self._join(sid, e)
        matches.sort(key=lambda m: (-m[0], m[1]))
        target = matches[0][1]
        for _, other in matches[1:]:
            # the entry bridges two stories: one story, unless their reports conflict
            self._merge(other, target)
        return self._join(target, e)

    def _merge(self, source_id: int, target_id: int) -> None:
        source, target = self.stories[source_id], self.stories[target_id]
        for a in source.members:
            for b in target.members:
                if conflict(a, b, self.settings) and not same_article(a, b):
                    return
        del self.stories[source_id]
        self.merged[source_id] = target_id  # index entries for the old id now lead to the target
        for m in source.members:
            self._join(target_id, m)

    def story_of(self, story_id: int) -> int:
        """Where a story went if it was merged (maybe more than once)."""
        while story_id in self.merged:
            story_id = self.merged[story_id]
        return story_id

    def _join(self, story_id: int, e: StoryEntry) -> int:
        story = self.stories[story_id]
        story.add(e)
        self._index(story, e)
        return story_id


def processing_order(e: StoryEntry) -> tuple[bool, float, str, int]:
    """Oldest first, undated last; ties by headline, never by arrival order (results must not
    depend on which feed happened to answer first)."""
    return (e.time is None, e.time.timestamp() if e.time else 0.0, e.title_key, e.id)


def cluster(entries: Sequence[StoryEntry], settings: ClusteringSettings) -> dict[int, int]:
    """Entry id -> story id for a batch."""
    c = Clusterer(settings)
    assigned = {e.id: c.assign(e) for e in sorted(entries, key=processing_order)}
    return {eid: c.story_of(sid) for eid, sid in assigned.items()}
