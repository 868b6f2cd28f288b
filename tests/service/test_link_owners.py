"""Links act only for their owner: a subscriber's signed links die with the subscription."""

from __future__ import annotations

from starlette.testclient import TestClient

from digest.apps.web import create_app
from digest.model.subscribers import Subscriber
from digest.service.fetching import utcnow
from tests.apps.test_web import _signed_page, csrf, link_in, mails, site, subscribe  # noqa: F401  (site: the fixture)

ONE_CLICK = {
    "content": b"List-Unsubscribe=One-Click",
    "headers": {"Content-Type": "application/x-www-form-urlencoded"},
}


def _one_click(client: TestClient, url: str) -> int:
    fresh = TestClient(client.app, base_url="https://digest.example.org")  # as from a mailbox provider
    return fresh.post(url, **ONE_CLICK).status_code  # type: ignore[arg-type]


def test_a_removed_subscribers_links_never_act_on_the_next_subscriber(site):  # noqa: F811
    client, loaded, src = site
    store, gone, unsubscribe = _signed_page(client, loaded, src, "gone@example.org", "unsubscribe")
    _, _, preferences = _signed_page(client, loaded, src, "gone@example.org", "preferences")
    assert client.get(preferences).status_code == 200
    assert store.remove_subscriber("gone@example.org")
    new_id, _ = store.add_subscriber(Subscriber("next@example.org", status="active"), utcnow())
    assert new_id != gone.id  # ids are never handed on
    assert client.get(preferences).status_code == 400  # the old page shows nobody's preferences
    assert _one_click(client, unsubscribe) == 400
    assert store.subscriber(new_id).status == "active"  # and the old one-click URL unsubscribes nobody


def test_subscribing_again_after_leaving_kills_the_old_links_once_confirmed(site, started):  # noqa: F811
    client, loaded, src = site
    store, sub, unsubscribe = _signed_page(client, loaded, src, "back@example.org", "unsubscribe")
    _, _, preferences = _signed_page(client, loaded, src, "back@example.org", "preferences")
    assert _one_click(client, unsubscribe) == 200
    assert client.get(preferences).status_code == 200  # leaving does not break the page to come back
    # anyone may ask to subscribe it again (later: the form mails one address once in ten minutes)
    later = started(create_app(loaded), base_url="https://digest.example.org")
    assert subscribe(later, "back@example.org").status_code == 200
    assert client.get(preferences).status_code == 200  # asking changes nothing until its owner confirms
    confirm = link_in(mails(src)[-1], "confirm")
    assert later.post(confirm, data={"csrf": csrf(later, confirm)}).status_code == 200
    assert client.get(preferences).status_code == 400
    assert _one_click(client, unsubscribe) == 400
    assert store.subscriber(sub.id).email == "back@example.org"  # the same row, a new subscription
