"""The subscriber's side on the web: double opt-in, one-click unsubscribe, preferences, archive."""

from __future__ import annotations

import email
import email.policy
import re
import shutil
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from digest.apps.web import create_app
from digest.config import load_config
from digest.storage.store import Store

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def site(tmp_path: Path, db_url: str, started):
    src = tmp_path / "site"
    shutil.copytree(ROOT / "examples" / "offline", src)
    cfg = src / "feeds.yaml"
    text = cfg.read_text().replace("sqlite:///digest.db", f"'{db_url}'").split("\nsubscribers:")[0]
    cfg.write_text(
        text.replace(
            "  secret: offline-example-secret", "  secret: web-secret\n  base_url: https://digest.example.org"
        )
    )
    loaded = load_config(cfg)
    Store(loaded.database_url).close()
    client = started(create_app(loaded), base_url="https://digest.example.org")
    return client, loaded, src


def mails(src: Path) -> list[email.message.EmailMessage]:
    box = src / "outbox" / "new"
    files = sorted(box.glob("*.eml"), key=lambda p: p.stat().st_mtime) if box.exists() else []
    return [email.message_from_bytes(p.read_bytes(), policy=email.policy.default) for p in files]  # type: ignore[misc]


def csrf(client: TestClient, path: str) -> str:
    page = client.get(path)
    assert page.status_code == 200
    return re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]


def subscribe(client: TestClient, address: str, **fields: object):
    token = csrf(client, "/subscribe")
    data = {
        "csrf": token,
        "email": address,
        "topics": ["sco"],
        "cadence": "daily",
        "send_time": "07:00",
        "timezone": "Europe/Berlin",
        "format": "html",
        "max_stories": "10",
        **fields,
    }
    return client.post("/subscribe", data=data)


def link_in(msg: email.message.EmailMessage, kind: str) -> str:
    body = msg.get_body(("plain",)).get_content()
    return re.search(rf"https://digest\.example\.org(/{kind}/\S+)", body).group(1)  # type: ignore[union-attr]


def test_double_opt_in_only_a_post_confirms(site):
    client, loaded, src = site
    r = subscribe(client, "Ann@Example.org")
    assert r.status_code == 200 and "Check your inbox" in r.text
    store = Store(loaded.database_url)
    assert store.list_subscribers(email="Ann@example.org")[0].status == "pending"
    [msg] = mails(src)
    confirm = link_in(msg, "confirm")
    page = client.get(confirm)
    assert "Confirm" in page.text
    assert store.list_subscribers(email="Ann@example.org")[0].status == "pending"  # a GET changes nothing
    r = client.post(confirm, data={"csrf": csrf(client, confirm)})
    assert r.status_code == 200 and "You are subscribed" in r.text
    sub = store.list_subscribers(email="Ann@example.org")[0]
    assert sub.status == "active" and sub.topics == ("sco",) and sub.timezone == "Europe/Berlin"


def test_a_known_address_gets_a_mail_and_the_page_reveals_nothing(site):
    from digest.model.subscribers import Subscriber
    from digest.service.fetching import utcnow

    client, loaded, src = site
    Store(loaded.database_url).add_subscriber(Subscriber("bo@example.org"), utcnow())
    first = subscribe(client, "new@example.org")
    again = subscribe(client, "bo@example.org")
    assert again.status_code == first.status_code == 200
    assert again.text.replace("bo@example.org", "X") == first.text.replace("new@example.org", "X")
    last = mails(src)[-1]
    assert last["To"] == "bo@example.org" and "already subscribed" in last.get_body(("plain",)).get_content()


def test_mail_bombing_is_limited_per_address(site):
    client, _, src = site
    for _ in range(3):
        assert subscribe(client, "target@example.org").status_code == 200
    assert len(mails(src)) == 1


def test_forms_without_the_csrf_token_are_refused(site):
    client, loaded, _ = site
    r = client.post("/subscribe", data={"email": "x@example.org", "timezone": "UTC", "send_time": "07:00"})
    assert r.status_code == 400
    assert Store(loaded.database_url).list_subscribers() == []


def test_bad_input_is_named_on_the_page(site):
    client, _, _ = site
    r = subscribe(client, "not-an-address")
    assert r.status_code == 422 and "not a valid e-mail address" in r.text
    r = subscribe(client, "a@example.org", timezone="Mars/Base")
    assert r.status_code == 422 and "not an IANA zone" in r.text


def _active(client: TestClient, src: Path, address: str) -> None:
    subscribe(client, address)
    confirm = link_in(mails(src)[-1], "confirm")
    client.post(confirm, data={"csrf": csrf(client, confirm)})


def _signed_page(client, loaded, src, email: str, purpose: str):
    """An active subscriber, and the signed link to one of their pages -> (store, subscriber, url)."""
    from digest.mail.tokens import Signer

    _active(client, src, email)
    store = Store(loaded.database_url)
    sub = store.list_subscribers(email=email)[0]
    signer = Signer("web-secret", lambda sid: store.subscriber_salts([sid]).get(sid))
    return store, sub, f"/{purpose}/{signer.sign(sub.id, purpose)}"


def test_rfc8058_one_click_unsubscribes_at_once_and_is_idempotent(site):
    client, loaded, src = site
    store, sub, url = _signed_page(client, loaded, src, "cy@example.org", "unsubscribe")
    assert "Unsubscribe" in client.get(url).text
    assert store.subscriber(sub.id).status == "active"  # a prefetching scanner unsubscribes nobody
    fresh = TestClient(
        client.app, base_url="https://digest.example.org"
    )  # no cookies, as from a mailbox provider
    for _ in range(2):
        r = fresh.post(
            url,
            content=b"List-Unsubscribe=One-Click",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert r.status_code == 200 and "Unsubscribed" in r.text
    assert store.subscriber(sub.id).status == "unsubscribed"
    assert fresh.post("/unsubscribe/forged.token", content=b"List-Unsubscribe=One-Click").status_code == 400


def test_preferences_change_from_the_next_period_and_pause(site):
    client, loaded, src = site
    store, sub, url = _signed_page(client, loaded, src, "di@example.org", "preferences")
    data = {
        "csrf": csrf(client, url),
        "topics": ["putin-xi"],
        "cadence": "weekly",
        "weekday": "friday",
        "send_time": "18:30",
        "timezone": "Asia/Shanghai",
        "format": "text",
        "max_stories": "5",
    }
    r = client.post(url, data=data)
    assert r.status_code == 200 and "Saved" in r.text
    new = store.subscriber(sub.id)
    assert (new.topics, new.cadence, new.weekday, new.send_time, new.timezone, new.format) == (
        ("putin-xi",),
        "weekly",
        4,
        "18:30",
        "Asia/Shanghai",
        "text",
    )
    client.post(url, data={**data, "csrf": csrf(client, url), "paused": "yes"})
    assert store.subscriber(sub.id).status == "unsubscribed"
    assert client.post(url, data={**data, "csrf": "wrong"}).status_code == 400


def test_pages_send_a_strict_content_security_policy(site):
    client, _, _ = site
    r = client.get("/subscribe")
    csp = r.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert (
        "http://" not in r.text.replace("http://www.w3.org", "") and '<script src="/static/app.js">' in r.text
    )


def test_a_sent_digest_is_in_the_archive_at_a_stable_url(site):
    import asyncio

    from digest.service.fetching import FetchOptions, fetch_feeds, utcnow
    from digest.service.organising import organise
    from digest.service.sending import send_due

    client, loaded, src = site
    _active(client, src, "ed@example.org")
    store = Store(loaded.database_url)
    asyncio.run(fetch_feeds(loaded, store, FetchOptions()))
    organise(loaded, store)
    [report] = asyncio.run(send_due(loaded, store, now=utcnow(), only="ed@example.org"))
    assert report.state == "sent"
    digest_mail = mails(src)[-1]
    view = link_in(digest_mail, "archive")
    page = client.get(view)
    assert page.status_code == 200 and "SCO leaders gather in Tianjin" in page.text
    listing = client.get(view.rsplit("/", 1)[0])
    assert report.period in listing.text


@pytest.mark.parametrize("archive", ["private", "public"])
def test_whether_the_archive_needs_the_token_is_a_setting(site, archive, started):
    import asyncio

    from digest.service.fetching import FetchOptions, fetch_feeds, utcnow
    from digest.service.organising import organise
    from digest.service.sending import send_due

    _, _, src = site
    cfg = src / "feeds.yaml"
    cfg.write_text(
        cfg.read_text().replace("  secret: web-secret", f"  secret: web-secret\n  archive: {archive}")
    )
    loaded = load_config(cfg)
    client = started(create_app(loaded), base_url="https://digest.example.org")
    store = Store(loaded.database_url)
    from digest.model.subscribers import Subscriber

    sid, _ = store.add_subscriber(Subscriber("fi@example.org"), utcnow())
    asyncio.run(fetch_feeds(loaded, store, FetchOptions()))
    organise(loaded, store)
    [report] = asyncio.run(send_due(loaded, store, now=utcnow(), only="fi@example.org"))
    view = link_in(mails(src)[-1], "archive")
    assert client.get(view).status_code == 200
    public = client.get(f"/archive/public/{sid}/{report.period}")
    assert public.status_code == (200 if archive == "public" else 404)
    assert ("/archive/public/" in view) == (archive == "public")
