"""digest as a library: `from digest import Digest`, the calls an embedder makes, on both backends."""

from __future__ import annotations

import email
import email.policy
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import digest
from digest import Digest, DigestError, FetchOptions, FetchStatus
from digest.errors import AddressError, SubscriberError

# 07:30 in Berlin on the day after the example's news: the daily digests at 07:00 are due
MORNING = datetime(2025, 9, 2, 5, 30, tzinfo=UTC)


def test_the_public_names_are_importable_and_typed():
    for name in digest.__all__:
        assert getattr(digest, name) is not None
    assert (Path(digest.__file__).parent / "py.typed").exists()


def test_fetch_organise_stories_explain_and_send_through_the_api(offline: Path):
    with Digest(offline, clock=lambda: MORNING) as d:
        summary = d.fetch()
        assert summary.count(FetchStatus.OK) == 3 and summary.new_entries > 0
        stories = d.stories()
        assert stories and all(s["relevant"] for s in stories)
        assert {s["language"] for s in stories} >= {"en", "ru", "zh"}
        # every selected entry can be explained by its id, and the explanation agrees
        first = stories[0]
        why = d.explain(str(first["id"]))
        assert why.stored.id == first["id"] and why.judged.relevant
        assert why.story_id is not None and f"s{why.story_id}" == first["story"]
        assert d.explain(first["link"]).stored.id == first["id"]  # by link too
        with pytest.raises(DigestError, match="no stored entry"):
            d.explain("no-such-entry")
        # a search finds the stories its words are in
        found = d.search("SCO")
        assert found and all(v.id for v in found)

        reports = d.send_due()
        sent = {r.email for r in reports if r.state == "sent"}
        assert sent == {"reader@example.org", "analyst@example.org"}
        assert not [r for r in d.send_due() if r.state == "sent"]  # exactly once
        outbox = list((offline.parent / "outbox" / "new").glob("*.eml"))
        assert len(outbox) == 2
        msg = email.message_from_bytes(outbox[0].read_bytes(), policy=email.policy.default)
        assert msg["List-Unsubscribe"] and msg["Message-ID"]

        status = d.status()
        assert status.enabled_feeds == 3 and not status.failing
        assert status.count("active") == 2 and status.due_now == 0
        assert {r["email"] for r in status.recent} == sent


def test_subscribe_changes_only_what_is_given_and_says_what_is_wrong(offline: Path):
    with Digest(offline) as d:
        sub, created = d.subscribe("New@Example.org", cadence="weekly", weekday="friday", topics="sco")
        assert created and sub.cadence == "weekly" and sub.topics == ("sco",)
        again, created = d.subscribe("new@example.org", send_time="09:30")
        assert not created and again.email == "New@example.org"  # as first stored; domains lower-cased
        assert (again.cadence, again.topics, again.send_time) == ("weekly", ("sco",), "09:30")
        with pytest.raises(SubscriberError, match="unknown topic"):
            d.subscribe("x@example.org", topics="weather")
        with pytest.raises(SubscriberError, match="cadence"):
            d.subscribe("x@example.org", cadence="hourly")
        with pytest.raises(AddressError, match="not a valid e-mail address"):
            d.subscribe("not an address")
        assert [s.email for s in d.subscribers()] == ["New@example.org"]
        d.unsubscribe("NEW@example.org")  # the row stays, ended
        assert [s.status for s in d.subscribers()] == ["unsubscribed"]
        d.remove_subscriber("NEW@example.org")
        assert d.subscribers() == []
        with pytest.raises(DigestError, match="no subscriber"):
            d.remove_subscriber("new@example.org")


def test_one_feed_by_name_and_an_unknown_one(offline: Path):
    with Digest(offline) as d:
        summary = d.fetch(FetchOptions(only="vestnik-ru"))
        assert [r.feed for r in summary.reports] == ["vestnik-ru"]
        assert {e.entry.feed for e in d.entries()} == {"vestnik-ru"}
        assert len(d.entries(limit=2)) == 2
        with pytest.raises(DigestError, match="no-such-feed"):
            d.entries(feed="no-such-feed")


def test_housekeeping_keeps_old_entries_their_feed_still_serves(offline: Path):
    """Removed, an entry its feed still serves would come back as new and be mailed again."""
    now = [MORNING]
    with Digest(offline, clock=lambda: now[0]) as d:
        d.fetch()
        kept = len(d.entries())
        now[0] = MORNING + timedelta(days=31)
        assert d.housekeeping(timedelta(days=30)) == (0, 0)
        assert len(d.entries()) == kept
        again = d.fetch(FetchOptions(force=True))
        assert again.new_entries == 0  # nothing came back as new


def test_the_readme_example_runs(offline: Path, capsys: pytest.CaptureFixture[str]):
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    code = readme.split("```python\n", 1)[1].split("```", 1)[0]
    exec(compile(code.replace('"feeds.yaml"', repr(str(offline))), "README.md", "exec"), {})  # noqa: S102
    out = capsys.readouterr().out
    assert "reader@example.org" in out and "sco" in out
