"""A person in a real browser: Playwright driving headless Chromium against `digest serve` on loopback."""

from __future__ import annotations

import asyncio
import email
import email.policy
import re
import shutil
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller

from digest.config import load_config
from digest.storage.store import Store
from tests.support.browser import CHROMIUM, launch

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "artifacts"
playwright = pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed (pip install playwright)"
)
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium)"
)


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Inbox:
    def __init__(self) -> None:
        self.messages: list[email.message.EmailMessage] = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(email.message_from_bytes(envelope.content, policy=email.policy.default))  # type: ignore[arg-type]
        return "250 OK"

    def wait_for(self, n: int, seconds: float = 20) -> email.message.EmailMessage:
        end = time.monotonic() + seconds
        while len(self.messages) < n and time.monotonic() < end:
            time.sleep(0.05)
        assert len(self.messages) >= n, f"{len(self.messages)} messages"
        return self.messages[n - 1]


def link(msg: email.message.EmailMessage, kind: str) -> str:
    text = msg.get_body(("plain",)).get_content()
    return re.search(rf"http://127\.0\.0\.1:\d+/{kind}/\S+", text).group(0)  # type: ignore[union-attr]


@pytest.fixture
def served(tmp_path: Path, db_url: str):
    import uvicorn

    from digest.apps.web import create_app

    inbox = Inbox()
    smtp = Controller(inbox, hostname="127.0.0.1", port=_port())
    smtp.start()
    web_port = _port()
    src = tmp_path / "site"
    shutil.copytree(ROOT / "examples" / "offline", src)
    cfg = src / "feeds.yaml"
    text = cfg.read_text().replace("sqlite:///digest.db", f"'{db_url}'").split("\nsubscribers:")[0]
    text = text.replace(
        "  transport: outbox\n",
        f"  transport: smtp\n  smtp: {{host: 127.0.0.1, port: {smtp.port}, security: none}}\n",
    ).replace(
        "  secret: offline-example-secret", f"  secret: browser\n  base_url: http://127.0.0.1:{web_port}"
    )
    cfg.write_text(text)
    loaded = load_config(cfg)
    Store(loaded.database_url).close()
    server = uvicorn.Server(
        uvicorn.Config(create_app(loaded), host="127.0.0.1", port=web_port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{web_port}", inbox, loaded
    server.should_exit = True
    thread.join(10)
    smtp.stop()


def test_subscribe_confirm_adjust_receive_and_leave_in_a_browser(served, tmp_path: Path):
    from digest.service.fetching import FetchOptions, fetch_feeds, utcnow
    from digest.service.organising import organise
    from digest.service.sending import send_due

    base, inbox, loaded = served
    ARTIFACTS.mkdir(exist_ok=True)
    with playwright.sync_playwright() as p:
        browser = launch(p)
        page = browser.new_page(viewport={"width": 375, "height": 900})
        page.goto(f"{base}/subscribe")
        assert page.evaluate("document.documentElement.scrollWidth") <= 375  # usable on a phone
        page.screenshot(path=str(ARTIFACTS / "web-1-subscribe.png"), full_page=True)
        page.fill("input[name=email]", "reader@example.org")
        page.fill("input[name=send_time]", "06:45")
        page.click("button[type=submit]")
        assert "Check your inbox" in page.content()
        page.screenshot(path=str(ARTIFACTS / "web-2-check-inbox.png"), full_page=True)

        page.goto(link(inbox.wait_for(1), "confirm"))
        page.screenshot(path=str(ARTIFACTS / "web-3-confirm.png"), full_page=True)
        page.click("button[type=submit]")
        assert "You are subscribed" in page.content()
        store = Store(loaded.database_url)
        sub = store.list_subscribers(email="reader@example.org")[0]
        assert sub.status == "active" and sub.send_time == "06:45" and sub.timezone == "UTC"

        page.click("text=Choose what and when")
        page.uncheck("input[name=topics][value=sco]")
        page.select_option("select[name=format]", "text")
        page.click("button[type=submit]")
        assert "Saved" in page.content()
        page.screenshot(path=str(ARTIFACTS / "web-4-preferences.png"), full_page=True)
        assert store.subscriber(sub.id).topics == ("putin-xi",)

        # Playwright's sync API holds an event loop on this thread: fetch and send on another
        with ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, fetch_feeds(loaded, store, FetchOptions())).result()
            organise(loaded, store)
            [report] = pool.submit(
                asyncio.run, send_due(loaded, store, now=utcnow(), only="reader@example.org")
            ).result()
        assert report.state == "sent"
        digest_mail = inbox.wait_for(2)
        assert digest_mail.get_content_type() == "text/plain" and "Putin and Xi" in digest_mail.get_content()

        # a mailbox provider's one-click: POST to the https URI of List-Unsubscribe, no cookies (RFC 8058)
        import httpx

        one_click = re.search(r"<(http[^>]+)>", str(digest_mail["List-Unsubscribe"])).group(1)  # type: ignore[union-attr]
        assert digest_mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        r = httpx.post(
            one_click,
            content=b"List-Unsubscribe=One-Click",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert r.status_code == 200 and store.subscriber(sub.id).status == "unsubscribed"
        store.set_status(sub.id, "active", utcnow())  # back again, to leave by the button too

        page.goto(link(digest_mail, "unsubscribe"))
        page.screenshot(path=str(ARTIFACTS / "web-5-unsubscribe.png"), full_page=True)
        page.click("button[type=submit]")
        assert "You are unsubscribed" in page.content()
        page.screenshot(path=str(ARTIFACTS / "web-6-unsubscribed.png"), full_page=True)
        assert store.subscriber(sub.id).status == "unsubscribed"
        browser.close()
