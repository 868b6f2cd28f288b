"""The archive page's search box in a real browser (Playwright driving headless Chromium)."""

from __future__ import annotations

import asyncio

from digest.model.subscribers import Subscriber
from digest.storage.store import Store
from tests.apps.test_web_browser import ARTIFACTS, playwright, pytestmark, served  # noqa: F401
from tests.support.browser import launch


def test_the_search_box_finds_stories_in_chinese_and_russian(served):  # noqa: F811
    from digest.service.fetching import FetchOptions, fetch_feeds, utcnow
    from digest.service.organising import organise

    _, _, loaded = served
    store = Store(loaded.database_url)
    asyncio.run(fetch_feeds(loaded, store, FetchOptions()))
    organise(loaded, store)
    from digest.service.compose import link_signer

    sid, _ = store.add_subscriber(Subscriber("finder@example.org"), utcnow())
    sub = store.subscriber(sid)
    assert sub is not None
    preferences = link_signer(loaded, store).links(sub.id).preferences  # the link in every digest
    ARTIFACTS.mkdir(exist_ok=True)
    with playwright.sync_playwright() as p:
        browser = launch(p)
        page = browser.new_page(viewport={"width": 375, "height": 800})
        complaints: list[str] = []  # a CSP violation is reported on the console
        csp = "Content Security Policy"
        page.on("console", lambda m: complaints.append(m.text) if csp in m.text else None)
        missing: list[str] = []  # a stylesheet or script the page names and cannot load
        page.on(
            "response", lambda r: missing.append(r.url) if r.status >= 400 and "favicon" not in r.url else 0
        )
        page.goto(preferences)
        page.click("text=Past digests")
        page.wait_for_url("**/archive/**")
        page.fill("input[name=q]", "普京")
        page.press("input[name=q]", "Enter")
        page.wait_for_url("**/search/**")
        results = page.locator("ul.results li")
        assert results.count() == 1 and "Putin" in results.first.inner_text()
        assert page.input_value("input[name=q]") == "普京"  # the words stay in the box
        assert page.evaluate("document.documentElement.scrollWidth") <= 375
        page.screenshot(path=str(ARTIFACTS / "web-7-search.png"), full_page=True)
        page.fill("input[name=q]", "Тяньцзине")
        page.press("input[name=q]", "Enter")
        page.wait_for_load_state()
        assert page.locator("ul.results li").count() >= 1
        feeds = page.locator("link[rel=alternate][type='application/atom+xml']")
        assert feeds.count() == 1  # private archive: the subscriber's own feed only
        assert complaints == [] and missing == []
        browser.close()
    store.close()
