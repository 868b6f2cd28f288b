"""Search over titles and summaries in English, Russian and Chinese, on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from digest.model.records import Entry, Verdict
from digest.model.search import Term, fts5_query, parse_query, tsquery
from digest.storage.store import Store
from tests.support.worlds import record

T0 = datetime(2025, 9, 1, 12, 0, tzinfo=UTC)


def entry(entry_id: str, title: str, summary: str = "", *, hours: int = 0) -> Entry:
    return Entry(
        feed="f",
        entry_id=entry_id,
        guid=entry_id,
        link=f"https://e/{entry_id}",
        title=title,
        summary_html=summary,
        summary_text=summary,
        published=T0 + timedelta(hours=hours),
        published_fallback=False,
        author=None,
        language=None,
        content_hash=hashlib.sha256(f"{entry_id}:{title}:{summary}".encode()).hexdigest(),
    )


def put(store: Store, entries: list[Entry], *, now: datetime = T0) -> dict[str, int]:
    """Store entries, select them all, each its own story -> entry_id: story id."""
    state = store.feed_states()["f"]
    record(store, state, entries, now)
    rows = {s.entry.entry_id: s.id for s in store.iter_entries()}
    wanted = {
        rows[e.entry_id]: Verdict(True, ("sco",), (), [], frozenset(), frozenset(), "h") for e in entries
    }
    store.save_classifications({i: v for i, v in wanted.items() if i not in _classified(store)}, now)
    start = store.next_story_id()
    assignment = {rows[e.entry_id]: start + n for n, e in enumerate(entries)}
    store.assign_stories(assignment, now)
    return {e.entry_id: assignment[rows[e.entry_id]] for e in entries}


def _classified(store: Store) -> set[int]:
    return {c.stored.id for c in store.classified_entries()}


def found(store: Store, words: str) -> list[str]:
    by_row = {s.id: s.entry.entry_id for s in store.iter_entries()}
    return [by_row[h.entry_id] for h in store.search(words)]


@pytest.fixture
def store(db_url):
    s = Store(db_url)
    s.sync_feeds([("f", "https://e/feed")])
    yield s
    s.close()


NEWS = [
    entry("en", "SCO summit opens in Tianjin", "Leaders of the Shanghai Cooperation Organisation meet."),
    entry("ru", "Путин прибыл на саммит ШОС в Тяньцзине", "Президент России встретится с Си Цзиньпином."),
    entry("zh", "上合组织峰会在天津开幕", "普京与习近平举行会谈，双方讨论了双边关系。"),
    entry("other", "Weather in Moscow", "Rain all week."),
]


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        ("summit", ["en"]),
        ("summits", ["en"]),  # the plural finds the singular
        ("Tianjin SCO", ["en"]),  # every word, in any order
        ("шос", ["ru"]),  # any case
        ("саммите", ["ru"]),  # another case of the word
        ("Путина", ["ru"]),
        ("普京", ["zh"]),  # a two-character word inside an unspaced sentence
        ("习近平 会谈", ["zh"]),
        ("峰会", ["zh"]),
        ("京普", []),  # the characters in a row, not merely present
        ("moscow", []),  # not in a story: nothing to show
        ("nothing-like-this", []),
    ],
)
def test_search_finds_words_in_each_language(store: Store, words: str, expected: list[str]):
    put(store, NEWS[:3])
    record(store, store.feed_states()["f"], [NEWS[3]], T0)  # stored, never selected
    assert found(store, words) == expected


def test_a_title_outranks_a_summary_and_the_newest_comes_first_among_equals(store: Store):
    put(
        store,
        [
            entry("summary-only", "Leaders meet", "The SCO summit went on.", hours=5),
            entry("older", "SCO summit ends", "", hours=1),
            entry("newer", "SCO summit ends", "", hours=3),
        ],
    )
    assert found(store, "summit") == ["newer", "older", "summary-only"]


def test_a_search_ranks_the_newest_reports_with_its_words(store: Store):
    """The documented window: a common word is ranked among the newest SEARCH_WINDOW reports
    that have it; an older report is found by words more specific to it."""
    from digest.storage.entries import SEARCH_WINDOW

    old = entry("old", "Summit summit summit in Bishkek")  # the best match for "summit", but oldest
    put(store, [old, *(entry(f"n{i}", f"Summit report {i}", hours=1) for i in range(SEARCH_WINDOW))])
    assert "old" not in found(store, "summit")
    assert found(store, "summit Bishkek") == ["old"]


def test_the_index_follows_updates_and_retention(store: Store):
    put(store, [entry("a", "SCO summit opens"), entry("b", "Putin visits Tianjin")])
    changed = entry("a", "SCO summit closes")
    record(store, store.feed_states()["f"], [changed], T0 + timedelta(hours=1))
    put(store, [changed], now=T0 + timedelta(hours=1))  # classified and folded again
    assert found(store, "opens") == [] and found(store, "closes") == ["a"]
    assert found(store, "Tianjin") == ["b"]
    # retention: b goes (a is kept: its feed still serves it, the last fetch had only a)
    assert store.prune_entries(T0 + timedelta(minutes=30)) == 1
    assert [s.entry.entry_id for s in store.iter_entries()] == ["a"]
    assert found(store, "Tianjin") == []
    with store.engine.connect() as conn:
        key = "rowid" if conn.dialect.name == "sqlite" else "entry_id"
        indexed = set(conn.execute(sa.text(f"SELECT {key} FROM entry_search")).scalars())
    assert indexed == {s.id for s in store.iter_entries()}  # no row for a removed entry


def test_upgrading_from_0007_indexes_the_entries_already_stored(db_url):
    from alembic import command

    from digest.storage.base import alembic_config, make_engine

    engine = make_engine(db_url)
    with engine.begin() as conn:
        command.upgrade(alembic_config(conn), "0007")
        conn.execute(sa.text("INSERT INTO feeds (name, url, error_count) VALUES ('f', 'https://e/feed', 0)"))
        cols = "feed, entry_id, title, summary_html, summary_text, published, content_hash, first_seen, "
        cols += "updated_at, classified"
        for i, title in enumerate(("上合组织峰会开幕", "Саммит ШОС открылся")):
            conn.execute(
                sa.text(f"INSERT INTO entries ({cols}) VALUES ('f', :e, :t, '', '', :p, :e, :p, :p, true)"),
                {"e": f"e{i}", "t": title, "p": T0.replace(tzinfo=None)},
            )
            row = conn.execute(sa.text("SELECT id FROM entries WHERE entry_id = :e"), {"e": f"e{i}"}).scalar()
            conn.execute(
                sa.text("INSERT INTO stories (id, first_seen, updated_at) VALUES (:i, :p, :p)"),
                {"i": i + 1, "p": T0.replace(tzinfo=None)},
            )
            conn.execute(
                sa.text(
                    "INSERT INTO classifications (entry_id, relevant, topics, tags, why, entities,"
                    " title_entities, rules_hash, story_id, classified_at)"
                    " VALUES (:i, true, '[\"sco\"]', '[]', '[]', '[]', '[]', 'h', :s, :t)"
                ),
                {"i": row, "s": i + 1, "t": T0.replace(tzinfo=None)},
            )
    engine.dispose()
    with Store(db_url) as store:  # opening migrates to head
        assert found(store, "峰会") == ["e0"] and found(store, "шос") == ["e1"]


def test_parsed_queries():
    assert parse_query("Putin's  SCO-summit!") == [
        Term(("putin",), True),
        Term(("s",), True),
        Term(("sco",), True),
        Term(("summit",), True),
    ]
    assert parse_query("SCO峰会") == [Term(("sco",), True), Term(("峰", "会"), False)]
    assert parse_query("\"' OR 1=1; -- NEAR(") == [
        Term(("or",), True),
        Term(("1",), True),
        Term(("near",), True),
    ]
    assert parse_query("  ¿?!  ") == []
    assert fts5_query(parse_query("SCO 普京")) == '"sco"* AND "普 京"'
    assert tsquery(parse_query("SCO 普京")) == "'sco':* & ('普' <-> '京')"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(words=st.text(max_size=60))
def test_any_words_are_a_valid_query_on_either_backend(store: Store, words: str):
    """Whatever is typed in the box: an answer (perhaps empty), never a syntax error."""
    assert isinstance(store.search(words), list)


def test_stories_search_on_the_command_line(offline):
    import json

    from click.testing import CliRunner

    from digest.apps.cli import main

    def digest(*args: str):
        return CliRunner().invoke(main, ["--config", str(offline), *args])

    assert digest("fetch").exit_code == 0
    r = digest("stories", "--search", "普京", "--format", "jsonl")
    assert r.exit_code == 0, r.output
    [story] = [json.loads(line) for line in r.output.splitlines()]
    assert story["rank"] == 1 and "Putin" in story["title"] and len(story["outlets"]) == 3
    table = digest("stories", "--search", "Tianjin summit")
    assert table.exit_code == 0 and "stories with 'Tianjin summit'" in table.output
    bad = digest("stories", "--search", "?!")
    assert bad.exit_code == 2  # a usage error
    assert [line for line in bad.output.splitlines() if line.strip()] == [
        "digest: error: --search '?!' has no words to look for; give one or more words"
    ]
