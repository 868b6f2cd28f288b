"""The web form under abuse and faults (issue 12): mail failures, replays, strangers, big bodies,
forged proxy headers, stale sign-ups, and an archive that finds one subscriber among many."""

from __future__ import annotations

import asyncio
import re
import socket
import threading
from datetime import timedelta
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from starlette.testclient import TestClient

from digest.apps.web import MAX_BODY, create_app
from digest.config import load_config
from digest.mail.tokens import Signer
from digest.model.subscribers import Subscriber
from digest.service.fetching import FetchOptions, fetch_feeds, utcnow
from digest.service.organising import organise
from digest.storage.store import Store
from tests.apps.test_web import csrf, link_in, mails, site, subscribe  # noqa: F401  (site: a fixture)

BASE = "https://digest.example.org"


def with_settings(started, src: Path, delivery: str = "", top: str = "") -> TestClient:
    cfg = src / "feeds.yaml"
    text = cfg.read_text().replace("  secret: web-secret", "  secret: web-secret\n" + delivery.rstrip("\n"))
    cfg.write_text(top + text)
    return started(create_app(load_config(cfg)), base_url=BASE, client=("127.0.0.1", 40000))


def confirm(client: TestClient, path: str):
    return client.post(path, data={"csrf": csrf(client, path)})


# -- a failed confirmation mail ---------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class HangsUp:
    """Accepts SMTP connections and closes them at once, counting them: a mail server that is down."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_server(("127.0.0.1", port))
        self.accepted = 0
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self.sock.shutdown(socket.SHUT_RDWR)  # wakes the accept() (close alone would not)
        self.sock.close()


class Inbox:
    def __init__(self) -> None:
        self.rcpts: list[str] = []

    async def handle_DATA(self, server, session, envelope):
        self.rcpts += envelope.rcpt_tos
        return "250 OK"


def test_a_failed_confirmation_mail_is_tried_once_and_keeps_the_address_slot(site, started):  # noqa: F811
    _, _, src = site
    port = free_port()
    client = with_settings(
        started,
        src,
        f"  transport: smtp\n  smtp: {{host: 127.0.0.1, port: {port}, security: none, retries: 3}}",
    )
    down = HangsUp(port)
    try:
        r = subscribe(client, "gil@example.org")
    finally:
        down.close()
    assert r.status_code == 503 and "try again later" in r.text
    assert down.accepted == 1  # one try while the visitor waits: not the send loop's retries
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        r = subscribe(client, "gil@example.org")  # at once: the failed try used no rate slot
    finally:
        controller.stop()
    assert r.status_code == 200 and inbox.rcpts == ["gil@example.org"]


# -- strangers and replays --------------------------------------------------------------------------


def test_a_pending_resubscription_changes_nothing_until_it_is_confirmed(site):  # noqa: F811
    client, loaded, src = site
    store = Store(loaded.database_url)
    sid, _ = store.add_subscriber(
        Subscriber("hal@example.org", topics=("sco",), timezone="Europe/Berlin"), utcnow()
    )
    hal = store.subscriber(sid)
    store.set_status(hal.id, "unsubscribed", utcnow())
    before = store.subscriber(hal.id)
    r = subscribe(client, "hal@example.org", topics=["putin-xi"], timezone="Asia/Shanghai", format="text")
    assert r.status_code == 200
    assert store.subscriber(hal.id) == before  # a stranger's form rewrote nothing
    after = store.subscriber(hal.id)
    assert after.status == "unsubscribed" and after.topics == ("sco",)
    assert confirm(client, link_in(mails(src)[-1], "confirm")).status_code == 200  # the owner confirms
    now = store.subscriber(hal.id)
    assert (now.status, now.topics, now.timezone, now.format) == (
        "active",
        ("putin-xi",),
        "Asia/Shanghai",
        "text",
    )


def test_a_confirmation_link_works_once_and_a_replay_after_unsubscribing_does_nothing(site):  # noqa: F811
    client, loaded, src = site
    subscribe(client, "ida@example.org")
    link = link_in(mails(src)[-1], "confirm")
    assert "You are subscribed" in confirm(client, link).text
    store = Store(loaded.database_url)
    [ida] = store.list_subscribers(email="ida@example.org")
    signer = Signer("web-secret", lambda sid: store.subscriber_salts([sid]).get(sid))
    unsubscribe = f"/unsubscribe/{signer.sign(ida.id, 'unsubscribe')}"
    one_click = {"Content-Type": "application/x-www-form-urlencoded"}
    assert (
        client.post(unsubscribe, content=b"List-Unsubscribe=One-Click", headers=one_click).status_code == 200
    )
    replay = confirm(client, link)
    assert replay.status_code == 400 and "used" in replay.text
    assert store.subscriber(ida.id).status == "unsubscribed"


# -- request bodies and proxies ---------------------------------------------------------------------


def test_request_bodies_over_64_kib_are_refused_declared_or_streamed(site):  # noqa: F811
    client, loaded, _ = site
    token = csrf(client, "/subscribe")
    big = f"csrf={token}&email=big%40example.org&name=" + "x" * MAX_BODY
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    assert client.post("/subscribe", content=big.encode(), headers=headers).status_code == 413

    def chunks():  # no Content-Length: sent chunked
        yield f"csrf={token}&email=big%40example.org&name=".encode()
        for _ in range(MAX_BODY // 1024 + 2):
            yield b"x" * 1024

    assert client.post("/subscribe", content=chunks(), headers=headers).status_code == 413
    assert Store(loaded.database_url).list_subscribers() == []
    assert subscribe(client, "small@example.org").status_code == 200  # an ordinary form still goes


@pytest.mark.parametrize("trusted", [False, True])
def test_x_forwarded_for_is_believed_only_from_a_trusted_proxy(site, trusted, started):  # noqa: F811
    _, _, src = site
    client = with_settings(started, src, top="web: {trusted_proxies: ['127.0.0.1']}\n" if trusted else "")
    codes = [_post_as(client, f"p{i}@example.org", f"198.51.100.{i}") for i in range(12)]
    if trusted:  # twelve clients behind the proxy, one sign-up each
        assert codes == [200] * 12
    else:  # one client on 127.0.0.1, whatever it writes in the header: ten an hour
        assert codes == [200] * 10 + [429] * 2


def _post_as(client: TestClient, address: str, forwarded_for: str) -> int:
    token = csrf(client, "/subscribe")
    data = {"csrf": token, "email": address, "timezone": "UTC", "send_time": "07:00"}
    return client.post("/subscribe", data=data, headers={"X-Forwarded-For": forwarded_for}).status_code


def test_a_bad_trusted_proxy_is_one_config_line(tmp_path):
    from digest.config import parse_config
    from digest.errors import ConfigError

    with pytest.raises(ConfigError, match=r"web\.trusted_proxies: 'proxy\.local' is not an IP"):
        parse_config("web: {trusted_proxies: [proxy.local]}\n", "feeds.yaml", tmp_path)


# -- stale sign-ups ---------------------------------------------------------------------------------


def test_pending_sign_ups_are_deleted_once_their_link_has_expired(site):  # noqa: F811
    from digest.apps.daemon import Daemon

    client, loaded, src = site
    store = Store(loaded.database_url)
    long_ago = utcnow() - timedelta(days=3)
    store.add_subscriber(Subscriber("old@example.org", status="pending"), long_ago)
    store.add_subscriber(Subscriber("gone@example.org", status="unsubscribed"), long_ago)
    subscribe(client, "fresh@example.org")
    Daemon(str(src / "feeds.yaml")).housekeeping()
    left = {s.email: s.status for s in store.list_subscribers()}
    assert left == {"gone@example.org": "unsubscribed", "fresh@example.org": "pending"}


# -- the archive --------------------------------------------------------------------------------------


def test_the_archive_finds_the_oldest_subscriber_among_600_digests(site):  # noqa: F811
    from digest.service.sending import send_due

    client, loaded, _ = site
    store = Store(loaded.database_url)
    now = utcnow()
    first, _ = store.add_subscriber(Subscriber("first@example.org", send_time="00:00"), now)
    for i in range(599):
        store.add_subscriber(Subscriber(f"r{i}@example.org", send_time="00:00"), now)
    asyncio.run(fetch_feeds(loaded, store, FetchOptions()))
    organise(loaded, store)
    reports = asyncio.run(send_due(loaded, store, now=utcnow()))  # after the fetch: its entries count
    assert sum(r.state == "sent" for r in reports) == 600
    signer = Signer("web-secret", lambda sid: store.subscriber_salts([sid]).get(sid))
    token = signer.sign(first, "archive")
    page = client.get(f"/archive/{token}")
    [period] = {r.period for r in reports}
    assert page.status_code == 200 and f"/archive/{token}/{period}" in page.text
    assert "No digest sent yet" not in page.text
    other = client.get(f"/archive/{signer.sign(first + 1, 'archive')}")
    assert f"/archive/{token}/" not in other.text  # each archive shows its owner's digests only


def test_the_archive_pages_through_a_long_history(site, started):  # noqa: F811
    from digest.apps.web import ARCHIVE_PAGE
    from digest.service.sending import send_due

    _, _, src = site
    client = with_settings(started, src, "  send_empty: true")
    loaded = load_config(src / "feeds.yaml")
    store = Store(loaded.database_url)
    start = utcnow() - timedelta(days=ARCHIVE_PAGE + 10)
    sid, _ = store.add_subscriber(Subscriber("long@example.org", send_time="00:00"), start)
    for day in range(ARCHIVE_PAGE + 5):
        asyncio.run(send_due(loaded, store, now=start + timedelta(days=day, hours=1)))
    token = Signer("web-secret", lambda i: store.subscriber_salts([i]).get(i)).sign(sid, "archive")
    first = client.get(f"/archive/{token}")
    older = re.search(r'href="(/archive/[^"]+\?page=2)"', first.text)
    assert older and first.text.count(f"/archive/{token}/") == ARCHIVE_PAGE
    second = client.get(older.group(1).replace("&amp;", "&"))
    assert second.text.count(f"/archive/{token}/") == 5 and "?page=3" not in second.text
    periods = re.findall(rf"/archive/{re.escape(token)}/([\d-]+)", first.text + second.text)
    assert len(set(periods)) == ARCHIVE_PAGE + 5  # every digest once, none on both pages
