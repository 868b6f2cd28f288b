"""Storage on SQLite and PostgreSQL: upserts, migrations, and clear errors."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from digest.errors import StorageError
from digest.model.records import Entry, FeedState, Verdict
from digest.storage.store import Store
from tests.support.worlds import record, stored_count

T0 = datetime(2025, 9, 1, 12, 0, tzinfo=UTC)


def entry(entry_id: str, title: str = "SCO summit opens", **kw) -> Entry:
    base = dict(
        feed="f",
        entry_id=entry_id,
        guid=entry_id,
        link=f"https://e/{entry_id}",
        title=title,
        summary_html="<p>s</p>",
        summary_text="s",
        published=T0,
        published_fallback=False,
        author=None,
        language="en",
        content_hash=f"{entry_id}:{title}",
    )
    return Entry(**{**base, **kw})


def verdict(relevant: bool = True, topics: tuple[str, ...] = ()) -> Verdict:
    return Verdict(relevant, topics, (), [], frozenset(), frozenset(), "h")


@pytest.fixture
def store(db_url):
    s = Store(db_url)
    s.sync_feeds([("f", "https://e/feed")])
    yield s
    s.close()


def test_updated_content_replaces_the_entry_without_a_duplicate(store: Store):
    state = store.feed_states()["f"]
    assert record(store, state, [entry("1"), entry("2")], T0) == (2, 0)
    assert record(
        store, state, [entry("1", title="SCO summit opens (updated)"), entry("2")], T0 + timedelta(hours=1)
    ) == (0, 1)
    rows = {s.entry.entry_id: s for s in store.iter_entries()}
    assert len(rows) == 2
    assert rows["1"].entry.title == "SCO summit opens (updated)"
    assert rows["1"].first_seen == T0  # first seen is never moved by an update


def test_feed_state_round_trips_with_aware_utc_times(store: Store):
    state = replace(store.feed_states()["f"], etag='"x"', error_count=2, next_poll=T0, last_error="HTTP 500")
    record(store, state, [], T0)
    assert store.feed_states()["f"] == state
    assert store.feed_states()["f"].next_poll.tzinfo is not None


def test_changing_a_feed_url_forgets_its_http_state(store: Store):
    record(store, replace(store.feed_states()["f"], etag='"x"', body_hash="h"), [], T0)
    store.sync_feeds([("f", "https://e/other")])
    st = store.feed_states()["f"]
    assert (st.url, st.etag, st.body_hash) == ("https://e/other", None, None)


def test_opening_migrates_to_head_and_is_idempotent(db_url):
    with Store(db_url) as s:
        assert s.current_revision() == s.head_revision()
        assert s.upgrade() is False
        assert {"feeds", "entries"} <= set(sa.inspect(s.engine).get_table_names())


def test_naive_datetimes_are_refused(store: Store):
    with pytest.raises(StorageError):
        record(store, FeedState("f", "https://e/feed"), [entry("n", published=datetime(2025, 1, 1))], T0)
    assert stored_count(store) == 0  # the transaction left nothing behind


def test_unusable_database_url_is_one_clear_line():
    with pytest.raises(StorageError, match="not usable"):
        Store("nosuchdb://x")
    with pytest.raises(StorageError, match=r"database sqlite:////proc/.*cannot create folder"):
        Store("sqlite:////proc/no/such/dir/x.db")


def test_the_code_expects_the_newest_migration():
    from digest.storage.schema import SCHEMA_REVISION

    assert Store.head_revision() == SCHEMA_REVISION


def test_upgrading_from_0003_marks_what_was_already_classified(db_url):
    """0004 adds entries.classified: entries classified before the upgrade are not done twice."""
    from alembic import command

    from digest.storage.base import alembic_config, make_engine

    engine = make_engine(db_url)
    with engine.begin() as conn:
        command.upgrade(alembic_config(conn), "0003")
        conn.execute(sa.text("INSERT INTO feeds (name, url, error_count) VALUES ('f', 'https://e/feed', 0)"))
        cols = "feed, entry_id, title, summary_html, summary_text, published, content_hash, first_seen, "
        cols += "updated_at"
        for i in (1, 2):
            conn.execute(
                sa.text(f"INSERT INTO entries ({cols}) VALUES ('f', :e, 't', '', '', :t, :e, :t, :t)"),
                {"e": f"e{i}", "t": T0.replace(tzinfo=None)},
            )
        first = conn.execute(sa.text("SELECT id FROM entries WHERE entry_id = 'e1'")).scalar_one()
        conn.execute(
            sa.text(
                "INSERT INTO classifications (entry_id, relevant, topics, tags, why, entities,"
                " title_entities, rules_hash, classified_at)"
                " VALUES (:i, false, '[]', '[]', '[]', '[]', '[]', 'h', :t)"
            ),
            {"i": first, "t": T0.replace(tzinfo=None)},
        )
    engine.dispose()
    with Store(db_url) as store:  # opening migrates to head
        assert [s.entry.entry_id for s in store.unclassified("h")] == ["e2"]
        assert not store.stale_rules("h") and store.stale_rules("other")
        second = store.unclassified("h")[0].id
        store.save_classifications({second: verdict(relevant=False)}, T0)
        assert store.unclassified("h") == []


def test_classification_bookkeeping_follows_changes_and_rule_changes(store: Store):
    state = store.feed_states()["f"]
    record(store, state, [entry("1"), entry("2")], T0)
    todo = store.unclassified("h")
    assert [s.entry.entry_id for s in todo] == ["1", "2"]
    store.save_classifications({s.id: verdict() for s in todo}, T0)
    assert store.unclassified("h") == []
    # new content is classified again; the unchanged entry is not
    record(store, state, [entry("1", title="SCO summit opens (updated)"), entry("2")], T0)
    assert [s.entry.entry_id for s in store.unclassified("h")] == ["1"]
    # a rules change: everything again
    store.forget_classifications()
    assert [s.entry.entry_id for s in store.unclassified("h")] == ["1", "2"]
    assert not store.stale_rules("h")  # nothing classified at all: nothing stale


def test_a_send_runs_window_holds_whole_stories_that_changed_since_and_nothing_older(store: Store):
    state = store.feed_states()["f"]
    old, new = T0, T0 + timedelta(days=2)
    record(store, state, [entry("a1"), entry("b1")], old)
    record(store, state, [entry("a2")], new)  # story a gains an outlet later
    rows = {s.entry.entry_id: s.id for s in store.unclassified("h")}
    store.save_classifications({i: verdict(topics=("sco",)) for i in rows.values()}, new)
    store.assign_stories({rows["a1"]: 1, rows["a2"]: 1, rows["b1"]: 2}, new)
    window = store.classified_entries(stories_since=T0 + timedelta(days=1))
    assert sorted(c.stored.entry.entry_id for c in window) == ["a1", "a2"]  # all of story 1, no story 2
    assert sorted(c.stored.entry.entry_id for c in store.classified_entries(story_ids=[2])) == ["b1"]


def test_retention_removes_old_entries_but_never_what_the_feed_still_serves(store: Store):
    state = store.feed_states()["f"]
    record(store, state, [entry("a"), entry("b")], T0)
    record(store, state, [entry("b"), entry("c")], T0 + timedelta(days=1))  # a left the feed
    todo = store.unclassified("h")
    store.save_classifications({s.id: verdict() for s in todo}, T0)
    store.assign_stories({s.id: n for n, s in enumerate(todo, 1)}, T0)
    assert store.prune_entries(T0 + timedelta(days=30)) == 1
    assert sorted(s.entry.entry_id for s in store.iter_entries()) == ["b", "c"]
    assert len(store.classified_entries()) == 2  # a's classification and story went with it
    # the feed still serving b and c: nothing comes back as new, so nothing is sent twice
    assert record(store, state, [entry("b"), entry("c")], T0 + timedelta(days=31)) == (0, 0)


def test_verdicts_arriving_for_entries_stored_unclassified_mark_them(store: Store):
    """Entries stored while the rules did not compile are classified by the next fetch that
    brings verdicts for them, whether or not their content changed."""
    from digest.model.records import FetchWrite

    state = store.feed_states()["f"]
    record(store, state, [entry("a"), entry("b")], T0)  # no verdicts
    assert len(store.unclassified("h")) == 2
    later = [entry("a"), entry("b", title="SCO summit opens (updated)"), entry("c")]
    store.record_fetches([FetchWrite(state, later, T0, None, {e.entry_id: verdict() for e in later})])
    assert store.unclassified("h") == []
    assert sorted(c.stored.entry.entry_id for c in store.classified_entries()) == ["a", "b", "c"]


def _classification_rows(store: Store) -> int:
    with store.engine.connect() as conn:
        return conn.execute(sa.text("SELECT count(*) FROM classifications")).scalar_one()


def test_entries_judged_not_relevant_are_marked_without_a_row_and_still_listed(store: Store):
    from digest.model.records import FetchWrite

    state = store.feed_states()["f"]
    batch = [entry("in"), entry("out", title="Oil prices fall")]
    verdicts = {"in": verdict(topics=("sco",)), "out": verdict(relevant=False)}
    store.record_fetches([FetchWrite(state, batch, T0, 200, verdicts)])
    assert store.unclassified("h") == [] and _classification_rows(store) == 1
    listed = {c.stored.entry.entry_id: c.relevant for c in store.classified_entries(relevant_only=False)}
    assert listed == {"in": True, "out": False}
    assert [c.stored.entry.entry_id for c in store.classified_entries()] == ["in"]


def test_verdicts_of_other_rules_than_the_stores_are_not_kept(store: Store):
    from digest.model.records import FetchWrite

    state = store.feed_states()["f"]
    store.record_fetches([FetchWrite(state, [entry("a")], T0, 200, {"a": verdict()})])  # rules "h"
    stale = Verdict(True, ("sco",), (), [], frozenset(), frozenset(), "old-rules")
    store.record_fetches([FetchWrite(state, [entry("b")], T0, 200, {"b": stale})])
    assert [s.entry.entry_id for s in store.unclassified("h")] == ["b"]  # organise judges it again
    assert store.stale_rules("old-rules") and not store.stale_rules("h")
    store.forget_classifications("new")
    assert not store.stale_rules("new") and len(store.unclassified("new")) == 2


@pytest.mark.parametrize(("hashes", "stale_for_h"), [(("h", "h"), False), (("h", "g"), True)])
def test_upgrading_from_0005_records_the_rules_and_drops_rows_of_unselected_entries(
    db_url, hashes, stale_for_h
):
    from alembic import command

    from digest.storage.base import alembic_config, make_engine

    engine = make_engine(db_url)
    with engine.begin() as conn:
        command.upgrade(alembic_config(conn), "0005")
        conn.execute(sa.text("INSERT INTO feeds (name, url, error_count) VALUES ('f', 'https://e/feed', 0)"))
        cols = "feed, entry_id, title, summary_html, summary_text, published, content_hash, first_seen, "
        cols += "updated_at, classified"
        for i, (relevant, rules) in enumerate(zip((True, False), hashes, strict=True)):
            conn.execute(
                sa.text(f"INSERT INTO entries ({cols}) VALUES ('f', :e, 't', '', '', :t, :e, :t, :t, true)"),
                {"e": f"e{i}", "t": T0.replace(tzinfo=None)},
            )
            row = conn.execute(sa.text("SELECT id FROM entries WHERE entry_id = :e"), {"e": f"e{i}"}).scalar()
            conn.execute(
                sa.text(
                    "INSERT INTO classifications (entry_id, relevant, topics, tags, why, entities,"
                    " title_entities, rules_hash, classified_at)"
                    " VALUES (:i, :r, '[\"sco\"]', '[]', '[]', '[]', '[]', :h, :t)"
                ),
                {"i": row, "r": relevant, "h": rules, "t": T0.replace(tzinfo=None)},
            )
    engine.dispose()
    with Store(db_url) as store:  # opening migrates to head
        assert _classification_rows(store) == 1
        assert store.stale_rules("h") is stale_for_h and store.stale_rules("x")
        assert store.unclassified("h") == []
        listed = {c.stored.entry.entry_id: c.relevant for c in store.classified_entries(relevant_only=False)}
        assert listed == {"e0": True, "e1": False}


def _schema(url: str) -> dict[str, object]:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        insp = sa.inspect(conn)
        out: dict[str, object] = {}
        for table in sorted(insp.get_table_names()):
            out[table] = (
                [
                    (c["name"], str(c["type"]), c["nullable"], c.get("default"))
                    for c in insp.get_columns(table)
                ],
                sorted(
                    str(i["name"]) + str(i["column_names"]) + str(i["unique"])
                    for i in insp.get_indexes(table)
                ),
                sorted(str(u["column_names"]) for u in insp.get_unique_constraints(table)),
                sorted(str(f["referred_table"]) + str(f["options"]) for f in insp.get_foreign_keys(table)),
                insp.get_pk_constraint(table)["constrained_columns"],
            )
        if conn.dialect.name == "sqlite":  # the partial index's condition too
            sql = "SELECT sql FROM sqlite_master WHERE name = 'ix_entries_unclassified'"
        else:
            sql = (
                "SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_entries_unclassified'"
                " AND schemaname = current_schema()"  # not another test's (or bench's) schema
            )
        out["partial index"] = [r[0].split(" WHERE ")[-1] for r in conn.exec_driver_sql(sql)]
    engine.dispose()
    return out


def test_a_new_database_gets_the_schema_the_migrations_build(db_url, tmp_path):
    """A new database is created from schema.py in one step; it must equal one built by running
    every migration in turn (which is what an existing database goes through)."""
    from alembic import command

    from digest.storage.base import alembic_config, make_engine

    if db_url.startswith("sqlite"):
        migrated_url = f"sqlite:///{tmp_path / 'migrated.db'}"
    else:  # another schema on the same server
        migrated_url = db_url.replace("search_path%3D", "search_path%3Dm").replace(
            "search_path=", "search_path=m"
        )
        schema = sa.engine.make_url(migrated_url).query["options"].split("=")[-1]
        admin = sa.create_engine(db_url)
        with admin.begin() as conn:
            conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    try:
        engine = make_engine(migrated_url)
        with engine.begin() as conn:
            command.upgrade(alembic_config(conn), "head")
        engine.dispose()
        with Store(db_url) as fresh:
            assert fresh.current_revision() == Store.head_revision()
        assert _schema(db_url) == _schema(migrated_url)
        assert _schema(db_url)["partial index"]  # present in both
    finally:
        if not db_url.startswith("sqlite"):
            with admin.begin() as conn:
                conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
            admin.dispose()


def test_upgrading_from_0006_keeps_the_ledger_never_reuses_ids_and_keeps_old_links_working(db_url):
    """0007 rebuilds SQLite's subscribers table (AUTOINCREMENT): the rows that refer to it stay.
    Links signed before salts existed keep working for the subscribers who had them."""
    from alembic import command
    from itsdangerous import URLSafeSerializer

    from digest.mail.tokens import Signer
    from digest.model.subscribers import Subscriber
    from digest.storage.base import alembic_config, make_engine

    t = T0.replace(tzinfo=None)
    engine = make_engine(db_url)
    with engine.begin() as conn:
        command.upgrade(alembic_config(conn), "0006")
        for i in (1, 2, 3):
            conn.execute(
                sa.text(
                    "INSERT INTO subscribers (id, email, topics, tags, cadence, send_time, timezone, format,"
                    " max_stories, show_why, status, bounces, created_at, updated_at) VALUES (:i, :e, '[]',"
                    " '[]', 'daily', '07:00', 'UTC', 'html', 10, false, 'active', 0, :t, :t)"
                ),
                {"i": i, "e": f"s{i}@example.org", "t": t},
            )
            conn.execute(
                sa.text(
                    "INSERT INTO deliveries (subscriber_id, period, message_id, state, attempts,"
                    " story_ids, assembled_at, sent_at)"
                    " VALUES (:i, '2026-03-01', :m, 'sent', 1, '[7]', :t, :t)"
                ),
                {"i": i, "m": f"<m{i}@x>", "t": t},
            )
            conn.execute(
                sa.text(
                    "INSERT INTO sent_stories (subscriber_id, story_id, delivery_id)"
                    " SELECT :i, 7, id FROM deliveries WHERE subscriber_id = :i"
                ),
                {"i": i},
            )
        if conn.dialect.name == "postgresql":  # as if the ids had come from the sequence
            conn.exec_driver_sql("SELECT setval(pg_get_serial_sequence('subscribers', 'id'), 3)")
    engine.dispose()
    with Store(db_url) as store:  # opening migrates to head
        assert store.current_revision() == Store.head_revision()  # 0007 and what came after
        assert store.last_digests([1, 2, 3]) == {1: T0, 2: T0, 3: T0}
        assert store.sent_stories([1, 2, 3], [7]) == {1: {7}, 2: {7}, 3: {7}}
        assert store.remove_subscriber("s3@example.org")
        new_id, created = store.add_subscriber(Subscriber("s4@example.org"), T0)
        assert created and new_id == 4  # not 3: the removed subscriber's id is not handed on
        signer = Signer("k", lambda sid: store.subscriber_salts([sid]).get(sid))
        old_link = URLSafeSerializer("k", salt="unsubscribe").dumps(1)  # signed before 0007
        assert signer.verify(old_link, "unsubscribe") == 1
        assert signer.verify(URLSafeSerializer("k", salt="unsubscribe").dumps(4), "unsubscribe") is None
        assert signer.verify(signer.sign(4, "unsubscribe"), "unsubscribe") == 4
        # claims work on the migrated ledger
        assert store.claim_deliveries([(1, "2026-03-02", "<n1@x>", [8], T0)], "me", T0, 60) == [True]
        assert store.claim_deliveries([(1, "2026-03-02", "<n1@x>", [8], T0)], "other", T0, 60) == [False]
