"""Parse fetched bytes with feedparser into clean Entry records. Pure: bytes in, records out.

Runs in worker processes (feeds/workers.py), so everything here takes and returns picklables.
"""

from __future__ import annotations

import calendar
import email.utils
import hashlib
import html
import io
import json
import re
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urljoin
from zoneinfo import ZoneInfo

import feedparser  # here, not at the top: a run where nothing changed never pays for it
import nh3

from digest.model.records import Entry, ParsedFeed

# Markup kept in summaries. No <img>: feed images are tracking pixels as often as not,
# and feedparser's own sanitizer keeps them
# (https://feedparser.readthedocs.io/en/latest/html-sanitization.html).
_ALLOWED_TAGS = {
    "a",
    "b",
    "strong",
    "i",
    "em",
    "p",
    "br",
    "ul",
    "ol",
    "li",
    "blockquote",
    "q",
    "code",
    "pre",
    "sub",
    "sup",
    "small",
}
_ALLOWED_ATTRS = {"a": {"href", "title"}}
_BLOCK = re.compile(r"<(/?)(p|br|div|li|ul|ol|h[1-6]|tr|td|th|blockquote|font|a|span|table)\b", re.I)
_ABSOLUTE = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
MAX_ID = 512
MAX_TITLE = 1000
MAX_SUMMARY = 20000


def html_to_text(fragment: str) -> str:
    """Markup -> one line of plain text: tags (and <script>/<style> bodies) dropped, entities decoded."""
    if not fragment:
        return ""
    if "<" in fragment:
        spaced = _BLOCK.sub(r" <\1\2", fragment)
        fragment = nh3.clean(spaced, tags=set(), attributes={})
    return _one_line(html.unescape(fragment) if "&" in fragment else fragment)


def _one_line(text: str) -> str:
    # str.split() splits where the regex \s+ would; it is several times faster
    return " ".join(_CONTROL.sub(" ", text).split())


# A tag as nh3 serialises it (attribute values always double-quoted, so a '>' can only be inside
# quotes): its own output is stripped with this instead of a second nh3 pass.
_SANITISED_TAG = re.compile(r'<(/?)([a-z0-9]+)(?:[^>"]|"[^"]*")*>')
_BLOCK_TAGS = frozenset({"p", "br", "li", "ul", "ol", "blockquote", "a"})  # those of _BLOCK it allows


def _sanitised_to_text(markup: str) -> str:
    """sanitize_html's output -> plain text, as html_to_text would give (one pass, no parser)."""
    if "<" in markup:
        markup = _SANITISED_TAG.sub(lambda m: " " if m.group(2) in _BLOCK_TAGS else "", markup)
    return _one_line(html.unescape(markup) if "&" in markup else markup)


def sanitize_html(fragment: str, base: str | None = None) -> str:
    """Allow-listed markup only; relative links made absolute against `base` (the feed's URL)."""
    if not fragment:
        return ""

    def absolute(element: str, attribute: str, value: str) -> str | None:
        if attribute == "href" and base and not _ABSOLUTE.match(value):
            return urljoin(base, value)
        return value

    return nh3.clean(
        fragment,
        tags=_ALLOWED_TAGS,
        attributes=_ALLOWED_ATTRS,
        url_schemes={"http", "https", "mailto"},
        link_rel="noopener noreferrer nofollow",
        attribute_filter=absolute,
    )


# -- dates -----------------------------------------------------------------------------------

# fmt: off
_RU_MONTH_STEMS = ["январ", "феврал", "март", "апрел", "ма", "июн", "июл", "август", "сентябр", "октябр",
                   "ноябр", "декабр"]
# fmt: on
_RU_MONTHS = {m: i + 1 for i, m in enumerate(_RU_MONTH_STEMS)}
_RU_DATE = re.compile(
    r"(\d{1,2})\s+([а-яё]+)\s+(\d{4})(?:\s*г\.?)?"  # 1 сентября 2025 г.
    r"(?:[,\s]+(\d{1,2}):(\d{2})(?::(\d{2}))?)?",  # , 12:40
    re.I,
)
_NAIVE_ISO = re.compile(r"^\s*(\d{4}-\d{2}-\d{2})[ T](\d{2}:\d{2}(?::\d{2})?)(?:\.\d+)?\s*$")
_ABBR = re.compile(r"\b(CST|MSK|MSD)\b")
# Zones assumed for dates with no offset when the config names none, by feed language.
_LANGUAGE_ZONES = {"ru": "Europe/Moscow", "zh": "Asia/Shanghai"}


def _ru_month(word: str) -> int | None:
    w = word.lower()
    for stem, n in sorted(_RU_MONTHS.items(), key=lambda kv: -len(kv[0])):
        if w.startswith(stem) and (stem != "ма" or w in ("мая", "май")):
            return n
    return None


def _zone_for(language: str | None, timezone: str | None) -> ZoneInfo | None:
    name = timezone or _LANGUAGE_ZONES.get((language or "")[:2])
    return ZoneInfo(name) if name else None


def parse_published(
    raw: str | None, parsed: Any, *, language: str | None, timezone: str | None
) -> datetime | None:
    """The entry's date in UTC, fixing feedparser's known traps
    (https://feedparser.readthedocs.io/en/latest/date-parsing.html)."""
    zone = _zone_for(language, timezone)
    if raw:
        m = _ABBR.search(raw)
        if m:
            # feedparser reads CST as US Central (-6) and MSK as UTC; Chinese feeds mean +8.
            abbr = m.group(1)
            chinese = (language or "").startswith("zh") or (timezone or "").startswith("Asia/")
            offset = {"MSK": "+0300", "MSD": "+0400"}.get(abbr) or ("+0800" if chinese else "-0600")
            try:
                return email.utils.parsedate_to_datetime(_ABBR.sub(offset, raw)).astimezone(UTC)
            except (TypeError, ValueError):
                pass
        naive = _NAIVE_ISO.match(raw)
        if naive and zone is not None:
            local = datetime.fromisoformat(f"{naive.group(1)}T{naive.group(2)}")
            return local.replace(tzinfo=zone).astimezone(UTC)
        ru = _RU_DATE.search(raw)
        if ru and (month := _ru_month(ru.group(2))):
            day, year = int(ru.group(1)), int(ru.group(3))
            hh, mm, ss = (int(ru.group(i) or 0) for i in (4, 5, 6))
            try:
                local = datetime(year, month, day, hh, mm, ss)
            except ValueError:
                return None
            return local.replace(tzinfo=zone or ZoneInfo("Europe/Moscow")).astimezone(UTC)
    if parsed:
        # struct_time in UTC: timegm, never mktime (which assumes local time)
        return datetime.fromtimestamp(calendar.timegm(parsed), UTC)
    return None


# -- language ----------------------------------------------------------------------------------


def guess_language(text: str) -> str | None:
    han = sum(1 for c in text if "\u4e00" <= c <= "\u9fff")
    cyr = sum(1 for c in text if "\u0400" <= c <= "\u04ff")
    lat = sum(1 for c in text if c.isascii() and c.isalpha())
    best = max((han * 3, "zh"), (cyr, "ru"), (lat, "en"))
    return best[1] if best[0] else None


def normalise_language(tag: str | None) -> str | None:
    if not tag:
        return None
    return tag.strip().replace("_", "-").split("-")[0].lower() or None


# -- entries -----------------------------------------------------------------------------------


# feedparser's entries answer .get() through a table of old key names (FeedParserDict): ten
# lookups per entry that way were a quarter of the time spent here. The keys read below are
# stored under these very names, so the plain dict lookup finds the same values.
_get = dict.get


def _sha(*parts: str) -> str:
    return hashlib.sha256("\x00".join(parts).encode("utf-8", "surrogatepass")).hexdigest()


def _summary(e: Any) -> tuple[str, str | None]:
    """-> (the summary as markup, the xml:base in effect where it was written, if any)."""
    detail = _get(e, "summary_detail") or {}
    value = _get(e, "summary") or ""
    # an Atom entry with only <content> gets a copy as "summary" but no summary_detail: the
    # content's detail knows its type and xml:base
    if (not value or not detail) and _get(e, "content"):
        detail = e["content"][0]
        value = detail.get("value") or ""
    if detail.get("type") == "text/plain":
        # plain text is not sanitized by anyone (feedparser's HTML sanitization docs): escape it
        value = html.escape(value)
    return value, detail.get("base") or None


def _title(e: Any) -> str:
    """The title as one line of text. An Atom type="text" title is text already (RFC 4287 §3.1.1.1):
    "History of the <blink> tag" keeps its brackets (feedparser's corpus,
    atom10/entry_title_text_plain_brackets.xml); only markup titles lose their tags."""
    value = _get(e, "title", "") or ""
    if (_get(e, "title_detail") or {}).get("type") == "text/plain":
        return _one_line(value)
    return html_to_text(value)


def _entry_ids(raw_entries: list[Any]) -> list[str | None]:
    """GUIDs, except those a feed reuses for different items: those are broken (a
    guid is only meant to be unique within a feed: https://www.rssboard.org/rss-specification)."""
    guids = [_get(e, "id") or None for e in raw_entries]
    counts = Counter(g for g in guids if g)
    return [g if g and counts[g] == 1 else None for g in guids]


def _entry_id(guid: str | None, link: str | None, title: str, summary: str) -> str:
    key = guid or link
    if key and len(key) <= MAX_ID:
        return key
    if key:
        return "sha256:" + _sha(key)
    return "sha256:" + _sha(title, summary)


def _cut(markup: str, size: int) -> str:
    """Sanitised markup cut to about `size` characters: no half tag or entity; open tags closed."""
    cut = markup[:size]
    for opener, closer in (("<", ">"), ("&", ";")):
        at = cut.rfind(opener)
        if at > cut.rfind(closer):
            cut = cut[:at]
    return sanitize_html(cut)


def _absolute(link: str, base: str | None) -> str:
    """A relative link made absolute against the feed's URL."""
    if link and base and not _ABSOLUTE.match(link):
        return urljoin(base, link)
    return link


def _looks_like_html(body: bytes) -> bool:
    head = body[:512].lstrip().lower()
    return head.startswith((b"<!doctype html", b"<html"))


def parse_feed(
    feed: str,
    body: bytes,
    *,
    content_type: str | None = None,
    content_language: str | None = None,
    url: str | None = None,
    fetched_at: datetime,
    language: str | None = None,
    timezone: str | None = None,
) -> ParsedFeed:
    """Bytes of one feed -> its clean entries, or the reason there are none."""
    if not body.strip():
        return ParsedFeed(feed, None, None, (), error="the server sent an empty body; check the feed URL")
    if _looks_like_json(body):
        return _parse_json_feed(
            feed,
            body,
            url=url,
            fetched_at=fetched_at,
            language=language or content_language,
            timezone=timezone,
        )
    if body.startswith(_BOMS) and content_type:
        # RFC 7303 §3.2 (replacing RFC 3023): a byte-order mark outranks the charset of the
        # content type. feedparser follows RFC 3023, where text/xml without a charset is
        # us-ascii, and fails UTF-16/32 feeds the BOM makes unmistakable.
        content_type = "application/xml"
    headers = {}
    if content_type:
        # lower-case keys: feedparser ignores others (kurtmckee/feedparser#423)
        headers["content-type"] = content_type
    # No content-location: with a base URI feedparser joins URLs at every element (a third
    # of its time); the few relative links a feed has are made absolute below instead.
    # Except where xml:base is used: feedparser composes a relative xml:base correctly only
    # on top of the document's URI (RFC 3986 §5.1.2, the "base URI from the retrieval URI").
    if url and b"xml:base" in body:
        headers["content-location"] = url
    if content_language:
        headers["content-language"] = content_language

    # BytesIO, never bytes: feedparser opens a path or URL given as bytes (its parse() docstring:
    # "Do not pass untrusted strings").
    # Our own sanitizer (nh3) runs below, so feedparser's slower one is skipped, and so is its
    # relative-URI pass over every summary (15% of parse time): sanitize_html resolves the
    # links it keeps.
    parsed = feedparser.parse(
        io.BytesIO(body), response_headers=headers, sanitize_html=False, resolve_relative_uris=False
    )
    bozo = parsed.get("bozo_exception") if parsed.get("bozo") else None
    survivable = (feedparser.CharacterEncodingOverride, feedparser.NonXMLContentType)
    return _entries_of(
        feed,
        body,
        list(parsed.entries),
        parsed.get("feed", {}),
        version=parsed.get("version") or "",
        bozo=bozo,
        survivable=bozo is None or isinstance(bozo, survivable),
        content_language=content_language,
        url=url,
        fetched_at=fetched_at,
        language=language,
        timezone=timezone,
    )


def _entries_of(
    feed: str,
    body: bytes,
    raw_entries: list[Any],
    meta: Any,
    *,
    version: str,
    bozo: BaseException | None,
    survivable: bool,
    content_language: str | None,
    url: str | None,
    fetched_at: datetime,
    language: str | None,
    timezone: str | None,
) -> ParsedFeed:
    """Entries shaped as feedparser's (plain dicts do: see _get) -> clean Entry records."""
    if not raw_entries:
        if _looks_like_html(body):
            return ParsedFeed(
                feed,
                None,
                None,
                (),
                error="the URL serves an HTML page that names no feed (no <link rel=alternate>); "
                "use the site's RSS, Atom or JSON Feed URL instead",
            )
        if bozo is not None and not version:
            reason = str(bozo).splitlines()[0] if str(bozo) else bozo.__class__.__name__
            return ParsedFeed(
                feed,
                None,
                None,
                (),
                error=f"not a readable feed ({reason}); check the URL serves RSS or Atom",
            )
    feed_title = _title(meta) or None
    feed_lang = normalise_language(language or content_language or meta.get("language"))
    entries: list[Entry] = []
    for raw, guid in zip(raw_entries, _entry_ids(raw_entries), strict=True):
        title = _title(raw)[:MAX_TITLE]
        # feedparser has already joined the entry's link to any xml:base (RFC 3986 §5.1)
        link = _absolute((_get(raw, "link") or "").strip(), url) or None
        summary, xml_base = _summary(raw)
        # relative links in the summary: against its xml:base (made absolute against the
        # document's URL), else the document's URL, else the entry's link
        base = _absolute(xml_base, url) if xml_base else (url or link)
        summary_html = sanitize_html(summary, base=base)
        if len(summary_html) > MAX_SUMMARY:
            summary_html = _cut(summary_html, MAX_SUMMARY)
        summary_text = _sanitised_to_text(summary_html)
        if not title and not summary_text:
            continue
        lang = feed_lang or guess_language(f"{title} {summary_text}")
        published = parse_published(
            _get(raw, "published") or _get(raw, "updated"),
            _get(raw, "published_parsed") or _get(raw, "updated_parsed"),
            language=lang,
            timezone=timezone,
        )
        fallback = published is None or published > fetched_at + timedelta(hours=1)
        source = _get(raw, "source") or {}
        entries.append(
            Entry(
                feed=feed,
                entry_id=_entry_id(guid, link, title, summary_text),
                guid=_get(raw, "id") or None,
                link=link,
                title=title,
                summary_html=summary_html,
                summary_text=summary_text,
                # a missing or future date becomes the fetch time, flagged (as reader does)
                published=fetched_at if fallback or published is None else published,
                published_fallback=fallback,
                author=html_to_text(_get(raw, "author", "")) or None,
                language=lang,
                content_hash=_sha(title, summary_text, link or ""),
                source_title=html_to_text(source.get("title", "")) or None,
                source_url=_absolute(source.get("href") or "", url) or None,
            )
        )
    warning = None
    # Survivable per lemon24/reader: a wrong or missing content type, an encoding override.
    if bozo is not None and not survivable:
        reason = str(bozo).splitlines()[0] if str(bozo) else bozo.__class__.__name__
        warning = f"feed is not well-formed ({reason}); kept {len(entries)} entries"
    return ParsedFeed(feed, feed_title, feed_lang, tuple(entries), warning=warning)


# -- JSON Feed (https://www.jsonfeed.org/version/1.1/) ------------------------------------------
#
# feedparser 6 reads no JSON. A JSON Feed's items are mapped onto the keys feedparser gives an
# entry, so one code path (_entries_of) cleans both.

_BOMS = (b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff", b"\x00\x00\xfe\xff")
_JSON_FEED_VERSION = re.compile(r"^https?://jsonfeed\.org/version/1(\.\d+)?/?$")


def _looks_like_json(body: bytes) -> bool:
    # by the body, not the content type: servers label feeds at random (text/plain, application/json)
    return body.lstrip(b"\xef\xbb\xbf \t\r\n")[:1] == b"{"


def _iso_date(value: Any) -> tuple[str | None, Any]:
    """An RFC 3339 date -> (the text, a UTC struct_time), as feedparser gives published/_parsed."""
    if not isinstance(value, str) or not value.strip():
        return None, None
    try:
        when = datetime.fromisoformat(value.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return value, None
    if when.tzinfo is None:
        return value, None  # naive: parse_published applies the feed's zone
    return value, when.astimezone(UTC).utctimetuple()


def _json_item(item: dict[str, Any]) -> dict[str, Any]:
    published, published_parsed = _iso_date(item.get("date_published"))
    updated, updated_parsed = _iso_date(item.get("date_modified"))
    authors = item.get("authors") or ([item["author"]] if isinstance(item.get("author"), dict) else [])
    names = [str(a.get("name")) for a in authors if isinstance(a, dict) and a.get("name")]
    # summary is plain text by the spec; content_html markup; content_text plain text
    if isinstance(item.get("summary"), str) and item["summary"].strip():
        summary, kind = item["summary"], "text/plain"
    elif isinstance(item.get("content_html"), str):
        summary, kind = item["content_html"], "text/html"
    else:
        summary, kind = str(item.get("content_text") or ""), "text/plain"
    ident = item.get("id")
    return {
        "id": str(ident) if ident is not None and str(ident).strip() else None,  # 1.0 allowed numbers
        "link": str(item.get("url") or item.get("external_url") or ""),
        "title": str(item.get("title") or ""),
        "title_detail": {"type": "text/plain"},  # JSON Feed titles are text, never markup
        "summary": summary,
        "summary_detail": {"type": kind},
        "published": published,
        "published_parsed": published_parsed,
        "updated": updated,
        "updated_parsed": updated_parsed,
        "author": ", ".join(names),
    }


def _parse_json_feed(
    feed: str,
    body: bytes,
    *,
    url: str | None,
    fetched_at: datetime,
    language: str | None,
    timezone: str | None,
) -> ParsedFeed:

    try:
        data = json.loads(body.decode("utf-8-sig"))  # JSON Feed is UTF-8 (RFC 8259 §8.1)
    except (UnicodeDecodeError, ValueError) as exc:
        reason = str(exc).splitlines()[0]
        return ParsedFeed(feed, None, None, (), error=f"not readable JSON ({reason}); check the URL")
    version = str(data.get("version") or "") if isinstance(data, dict) else ""
    if not _JSON_FEED_VERSION.match(version):
        return ParsedFeed(
            feed,
            None,
            None,
            (),
            error="JSON but not a JSON Feed (no version https://jsonfeed.org/version/1.1); check the URL",
        )
    assert isinstance(data, dict)
    items = [_json_item(i) for i in data.get("items") or [] if isinstance(i, dict)]
    meta = {"title": str(data.get("title") or ""), "title_detail": {"type": "text/plain"}}
    if isinstance(data.get("language"), str):
        meta["language"] = data["language"]  # JSON Feed 1.1
    return _entries_of(
        feed,
        body,
        items,
        meta,
        version=version,
        bozo=None,
        survivable=True,
        content_language=None,
        url=url or (str(data.get("feed_url")) if data.get("feed_url") else None),
        fetched_at=fetched_at,
        language=language,
        timezone=timezone,
    )
