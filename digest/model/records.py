"""Small typed records that move between pipeline stages. No I/O here."""

from __future__ import annotations

import enum
import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any


class FetchStatus(enum.StrEnum):
    OK = "ok"  # a new body, parsed and stored
    NOT_MODIFIED = "not_modified"  # 304, or a 200 whose body hash is unchanged
    FAILED = "failed"
    DEFERRED = "deferred"  # held back by back-off or Retry-After; not requested


@dataclass(frozen=True, slots=True)
class FeedState:
    """What the store knows about one feed between polls."""

    name: str
    url: str  # the URL in the config
    fetch_url: str | None = None  # where a permanent redirect moved it, if anywhere
    title: str | None = None
    etag: str | None = None
    last_modified: str | None = None
    body_hash: str | None = None
    status: str | None = None
    last_error: str | None = None
    error_count: int = 0
    last_fetched: datetime | None = None
    last_ok: datetime | None = None
    next_poll: datetime | None = None

    @property
    def effective_url(self) -> str:
        return self.fetch_url or self.url


# What a feed's state forgets when its URL changes in the config: the old server's validators,
# redirect, errors and back-off (storage/feeds.py: FeedsMixin.sync_feeds).
FORGOTTEN_ON_NEW_URL: dict[str, Any] = {
    "fetch_url": None,
    "etag": None,
    "last_modified": None,
    "body_hash": None,
    "error_count": 0,
    "next_poll": None,
    "status": None,
    "last_error": None,
}


@dataclass(frozen=True, slots=True)
class FetchRequest:
    feed: str
    url: str
    etag: str | None = None
    last_modified: str | None = None


@dataclass(frozen=True, slots=True)
class FetchResult:
    """The outcome of one HTTP (or file) request, before parsing."""

    feed: str
    url: str  # the URL requested
    status: FetchStatus
    http_status: int | None = None
    final_url: str | None = None
    permanent_url: str | None = None  # set when every hop was 301/308
    body: bytes | None = None
    content_type: str | None = None
    content_language: str | None = None
    etag: str | None = None
    last_modified: str | None = None
    retry_after: float | None = None  # seconds
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Entry:
    """One feed entry, cleaned: the unit everything downstream works on."""

    feed: str
    entry_id: str
    guid: str | None
    link: str | None
    title: str
    summary_html: str
    summary_text: str
    published: datetime  # UTC
    published_fallback: bool  # True when `published` is the fetch time, not the feed's date
    author: str | None
    language: str | None
    content_hash: str
    source_title: str | None = None  # the outlet, when an aggregator names it
    source_url: str | None = None

    def __reduce__(self) -> tuple[type[Entry], tuple[Any, ...]]:
        # Entries cross from the fetch workers in thousands: rebuilt from a tuple, unpickling
        # takes half the time of the per-field setattr loop dataclasses give frozen slots classes
        return (Entry, _entry_fields(self))


_entry_fields = operator.attrgetter(*(f.name for f in fields(Entry)))


@dataclass(frozen=True, slots=True)
class ParsedFeed:
    feed: str
    title: str | None
    language: str | None
    entries: tuple[Entry, ...]
    warning: str | None = None  # a survivable problem (bozo with usable entries)
    error: str | None = None  # fatal: nothing usable


@dataclass(frozen=True, slots=True)
class FeedReport:
    """One line of the `digest fetch` summary."""

    feed: str
    status: FetchStatus
    new_entries: int = 0
    updated_entries: int = 0
    error: str | None = None
    warning: str | None = None
    next_poll: datetime | None = None
    http_status: int | None = None


@dataclass(frozen=True, slots=True)
class FetchSummary:
    reports: tuple[FeedReport, ...] = field(default_factory=tuple)

    def count(self, status: FetchStatus) -> int:
        return sum(1 for r in self.reports if r.status is status)

    @property
    def new_entries(self) -> int:
        return sum(r.new_entries for r in self.reports)


@dataclass(frozen=True, slots=True)
class Verdict:
    """Selection's decision about one entry, made where it was parsed (a worker), stored with it."""

    relevant: bool
    topics: tuple[str, ...]
    tags: tuple[str, ...]
    why: list[dict[str, Any]]
    entities: frozenset[str]
    title_entities: frozenset[str]
    rules_hash: str

    @classmethod
    def of(cls, c: Any, rules_hash: str) -> Verdict:
        """From select.classify's Classification."""
        return cls(
            c.relevant,
            c.topics,
            c.tags,
            [r.as_dict() for r in c.why],
            c.entities,
            c.title_entities,
            rules_hash,
        )


@dataclass(frozen=True, slots=True)
class FetchWrite:
    """What one fetch writes: the feed's new state, its entries, and what selection made of them."""

    state: FeedState
    entries: Sequence[Entry]
    now: datetime
    http_status: int | None = None
    verdicts: Mapping[str, Verdict] | None = None  # by the feed's entry id


@dataclass(frozen=True, slots=True)
class RulesSource:
    """The topic and tag rules as written (a section left out: the shipped one), where they
    come from, and their hash: what a fetch worker compiles when it first has entries to judge."""

    own: Mapping[str, Any]
    source: str
    rules_hash: str


# -- as stored: what the storage gives back ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class StoredEntry:
    """An entry as stored: the row id and when it was first seen, plus the entry itself."""

    id: int
    first_seen: datetime
    entry: Entry


@dataclass(frozen=True, slots=True)
class SearchHit:
    entry_id: int
    story_id: int
    score: float  # higher is better; comparable within one search only


@dataclass(frozen=True, slots=True)
class StoryTimes:
    id: int
    first_seen: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class ClusterMember:
    stored: StoredEntry
    story_id: int | None
    entities: tuple[str, ...]
    title_entities: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ClassifiedEntry:
    stored: StoredEntry
    relevant: bool
    topics: tuple[str, ...]
    tags: tuple[str, ...]
    why: list[dict[str, Any]]
    story_id: int | None
