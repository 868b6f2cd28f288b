"""Cadence `instant` (issue 15): a story new to the subscriber goes out at the next send after it
is folded, at most one mail per `instant_every` window, never again for later reports of it,
and not during their quiet hours. Real feeds on disk, a real fetch and fold, a loopback SMTP
server, SQLite and PostgreSQL; the clock is the one each step is told."""

from __future__ import annotations

import asyncio
import email
import email.policy
import email.utils
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller

from digest.config import load_config
from digest.service.fetching import FetchOptions, fetch_feeds
from digest.service.organising import organise
from digest.service.sending import send_due
from digest.storage.store import Store
from tests.apps.test_web import _signed_page, csrf, site  # noqa: F401 (site: the web app's fixture)
from tests.service.test_delivery import Sink, free_port
from tests.support.feedserver import rss

T0 = datetime(2026, 3, 2, 12, 1, tzinfo=UTC)  # 13:01 in Berlin
FEEDS = ("wire", "herald", "courier", "gazette")


def report(i: int, feed: str, story: str, at: datetime) -> dict[str, str]:
    """One outlet's report of a story ("talks" or "summit"), told in its own words."""
    titles = {
        "talks": "Putin and Xi hold talks in Tianjin on energy and trade ({})",
        "summit": "SCO summit in Tianjin adopts development bank plan ({})",
        "bank": "SCO members agree on new development bank in Tianjin ({})",
    }
    return {
        "title": titles[story].format(f"{feed} {i}"),
        "link": f"https://{feed}.example.org/{story}/{i}",
        "guid": f"{feed}-{story}-{i}",
        "description": f"Russian President Vladimir Putin and Chinese President Xi Jinping met in "
        f"Tianjin at the Shanghai Cooperation Organisation summit ({story}, {feed}).",
        "pubDate": email.utils.format_datetime(at),
    }


class World:
    """Three feeds on disk and an instant subscriber; `publish` adds items, `poll` fetches and
    folds them, `send` sends what is due at a given time."""

    def __init__(self, tmp_path: Path, db_url: str, port: int, *, quiet: str | None = None) -> None:
        self.dir = tmp_path / "feeds"
        self.dir.mkdir()
        self.items: dict[str, list[dict[str, str]]] = {f: [] for f in FEEDS}
        for f in FEEDS:
            self._write(f)
        quiet_hours = f", quiet_hours: '{quiet}'" if quiet else ""
        cfg = tmp_path / "feeds.yaml"
        cfg.write_text(
            f"database: '{db_url}'\n"
            "feeds:\n"
            + "".join(f"  - {{name: {f}, url: '{self.dir / (f + '.xml')}', language: en}}\n" for f in FEEDS)
            + "delivery:\n  transport: smtp\n"
            f"  smtp: {{host: 127.0.0.1, port: {port}, security: none, retries: 1, retry_delay: 0.05}}\n"
            "  base_url: https://digest.example.org\n  secret: test-secret\n"
            "  sender: 'Digest <digest@example.org>'\n  instant_every: 15m\n  lookback: 12h\n"
            "subscribers:\n"
            f"  - {{email: ina@example.org, cadence: instant, timezone: Europe/Berlin{quiet_hours}}}\n"
        )
        self.loaded = load_config(cfg)
        self.store = Store(self.loaded.database_url)

    def _write(self, feed: str) -> None:
        (self.dir / f"{feed}.xml").write_bytes(rss(self.items[feed], title=feed.title()))

    def publish(self, feed: str, item: dict[str, str]) -> None:
        self.items[feed].insert(0, item)
        self._write(feed)

    def poll(self, at: datetime) -> None:
        asyncio.run(fetch_feeds(self.loaded, self.store, FetchOptions(force=True), clock=lambda: at))
        organise(self.loaded, self.store, clock=lambda: at)

    def send(self, at: datetime) -> list[str]:
        return [r.state for r in asyncio.run(send_due(self.loaded, self.store, now=at))]


@pytest.fixture
def sink():
    handler = Sink()
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield handler, controller.port
    controller.stop()


def mails(handler: Sink) -> list[email.message.EmailMessage]:
    return handler.parsed()


def test_a_new_story_goes_out_at_the_next_send_and_later_reports_never_resend_it(tmp_path, db_url, sink):
    handler, port = sink
    w = World(tmp_path, db_url, port)
    w.publish("wire", report(0, "wire", "talks", T0 - timedelta(minutes=5)))
    w.poll(T0)
    assert w.send(T0 + timedelta(seconds=30)) == ["sent"]
    [first] = mails(handler)
    assert "Putin and Xi hold talks" in first.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert first["Message-ID"].startswith("<digest.2026-03-02T1200.")  # the window's key
    # the same story, reported by the other outlets over the next hour: no second mail (a
    # feed's own second, different headline would be a story of its own: model.fold)
    for k, feed in enumerate(("herald", "courier", "gazette"), start=1):
        at = T0 + timedelta(minutes=15 * k)
        w.publish(feed, report(k, feed, "talks", at - timedelta(minutes=2)))
        w.poll(at)
        assert set(w.send(at + timedelta(seconds=30))) <= {"empty"}
    assert len(handler.messages) == 1


def test_a_burst_is_one_mail_a_window_and_waits_at_most_a_window(tmp_path, db_url, sink):
    handler, port = sink
    w = World(tmp_path, db_url, port)
    w.publish("wire", report(0, "wire", "talks", T0))
    w.poll(T0)
    assert w.send(T0) == ["sent"]  # 12:01: the 12:00 window's mail
    # two new stories a few minutes later, reported by every outlet, polled twice in the window
    for minutes in (4, 9):
        at = T0 + timedelta(minutes=minutes)
        for feed in FEEDS:
            w.publish(feed, report(minutes, feed, "summit" if minutes == 4 else "bank", at))
        w.poll(at)
        assert w.send(at) == ["done"]  # this window's mail has gone: gathered for the next
    assert len(handler.messages) == 1
    at = datetime(2026, 3, 2, 12, 15, tzinfo=UTC)  # the next window: one mail with both
    assert w.send(at) == ["sent"]
    second = mails(handler)[1].get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "adopts development bank plan" in second and "agree on new development bank" in second
    assert "hold talks" not in second  # already mailed
    assert at - (T0 + timedelta(minutes=4)) <= timedelta(minutes=1) + timedelta(minutes=15)


def test_quiet_hours_hold_mail_in_the_subscribers_zone_until_they_end(tmp_path, db_url, sink):
    handler, port = sink
    w = World(tmp_path, db_url, port, quiet="22:00-07:00")  # Berlin: UTC+1 in March
    night = datetime(2026, 3, 2, 22, 30, tzinfo=UTC)  # 23:30 in Berlin
    w.publish("wire", report(0, "wire", "talks", night))
    w.poll(night)
    for minutes in (0, 60, 300):
        assert w.send(night + timedelta(minutes=minutes)) == ["quiet"]  # not even assembled
    assert handler.messages == []
    assert w.send(datetime(2026, 3, 3, 6, 1, tzinfo=UTC)) == ["sent"]  # 07:01 in Berlin
    [mail] = mails(handler)
    assert "Putin and Xi hold talks" in mail.get_body(("plain",)).get_content()  # type: ignore[union-attr]


def test_instant_with_quiet_hours_from_the_cli_and_bad_spans_refused(tmp_path):
    from click.testing import CliRunner

    from digest.apps.cli import main

    cfg = tmp_path / "feeds.yaml"
    cfg.write_text(f"database: sqlite:///{tmp_path / 'd.db'}\nfeeds: []\n")
    run = CliRunner().invoke
    ok = run(main, ["--config", str(cfg), "subscribers", "add", "a@example.org", "--cadence", "instant",
                    "--quiet-hours", "22:00-7:00"])  # fmt: skip
    assert ok.exit_code == 0, ok.output
    with Store(load_config(cfg).database_url) as store:
        [sub] = store.list_subscribers()
    assert (sub.cadence, sub.quiet_hours) == ("instant", "22:00-07:00")
    bad = run(main, ["--config", str(cfg), "subscribers", "add", "a@example.org", "--quiet-hours", "late"])
    assert bad.exit_code == 2 and "quiet_hours: 'late'" in bad.output and "22:00-07:00" in bad.output


def test_the_preferences_page_offers_as_it_happens_with_quiet_hours(site):  # noqa: F811
    client, loaded, src = site
    store, sub, url = _signed_page(client, loaded, src, "ina@example.org", "preferences")
    page = client.get(url).text
    assert 'value="instant"' in page and 'name="quiet_hours"' in page
    data = {"csrf": csrf(client, url), "topics": ["sco"], "cadence": "instant", "weekday": "monday",
            "send_time": "07:00", "timezone": "Europe/Berlin", "format": "html", "max_stories": "10",
            "quiet_hours": "22:30-6:45"}  # fmt: skip
    assert client.post(url, data=data).status_code == 200
    new = store.subscriber(sub.id)
    assert (new.cadence, new.quiet_hours) == ("instant", "22:30-06:45")
    bad = client.post(url, data={**data, "csrf": csrf(client, url), "quiet_hours": "soon"})
    assert bad.status_code == 422 and "quiet_hours" in bad.text
