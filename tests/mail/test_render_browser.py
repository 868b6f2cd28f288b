"""The digest in a real browser (Playwright driving headless Chromium): the mail as a mail client
shows it and the archived copy as `digest serve` serves it, at 375 and 800 px, light and dark.

Each page must look right by what Chromium computed, not by file sizes: the stylesheet applied
(cards, padding, colours), the text set in the sans-serif stack and never the browser's fallback
serif (the font that matters is the one Chromium actually drew with: CSS.getPlatformFontsForNode),
and nothing wider than the screen. Screenshots are kept in artifacts/ to look at.
"""

from __future__ import annotations

import itertools
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from digest.apps.cli import main
from tests.support.browser import CHROMIUM, launch

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "artifacts"
playwright = pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed (pip install playwright)"
)
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium)"
)

# The faces this machine's fontconfig gives for the stylesheet's stack (Arial is Liberation Sans,
# sans-serif DejaVu Sans, the Chinese names WenQuanYi Zen Hei: Debian's fonts-liberation,
# fonts-dejavu, fonts-wqy-zenhei). The fallback of an unstyled page is a serif.
SANS = {"Liberation Sans", "DejaVu Sans", "WenQuanYi Zen Hei"}
WIDTHS = (375, 800)
SCHEMES = ("light", "dark")

FACTS = """() => {
  const q = s => document.querySelector(s);
  const style = s => q(s) ? getComputedStyle(q(s)) : null;
  const wide = [];
  for (const e of document.body.querySelectorAll('*')) {
    const r = e.getBoundingClientRect();
    if (r.width && (r.right > innerWidth + 0.5 || r.left < -0.5))
      wide.push(`${e.tagName}.${e.className} ${Math.round(r.right)}`);
  }
  return {
    innerWidth, scrollWidth: document.documentElement.scrollWidth, wide,
    bodyFont: getComputedStyle(document.body).fontFamily,
    outer: style('.outer').backgroundColor, card: style('.card').backgroundColor,
    cardWidth: q('.card').getBoundingClientRect().width,
    storyPadding: parseFloat(style('.story').paddingLeft),
    headline: style('.headline a').color, section: style('.section').color,
    meta: style('.meta').color, headlineWeight: style('.headline').fontWeight,
    underline: style('.headline a').textDecorationLine, summary: style('.summary') && style('.summary').color,
    metaWrap: style('.meta').whiteSpace, metaHeight: q('.meta').getBoundingClientRect().height,
    text: document.body.innerText,
  };
}"""


def luminance(css_color: str) -> float:
    """Relative luminance (WCAG 2.x) of an rgb()/rgba() computed colour."""
    parts = [float(p) for p in css_color[css_color.index("(") + 1 : -1].split(",")[:3]]
    lin = [(c / 255 / 12.92) if c / 255 <= 0.04045 else ((c / 255 + 0.055) / 1.055) ** 2.4 for c in parts]
    return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]


def contrast(a: str, b: str) -> float:
    la, lb = sorted((luminance(a), luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


def drawn_with(page: Any, selector: str) -> set[str]:
    """The font families Chromium drew the element's text with (DevTools protocol)."""
    cdp = page.context.new_cdp_session(page)
    cdp.send("DOM.enable")
    cdp.send("CSS.enable")
    root = cdp.send("DOM.getDocument", {"depth": -1})["root"]["nodeId"]
    node = cdp.send("DOM.querySelector", {"nodeId": root, "selector": selector})["nodeId"]
    fonts = cdp.send("CSS.getPlatformFontsForNode", {"nodeId": node})["fonts"]
    cdp.detach()
    return {f["familyName"] for f in fonts}


def assert_looks_right(page: Any, width: int, scheme: str) -> dict[str, Any]:
    f = page.evaluate(FACTS)
    # stylesheet applied, font stack intact (an escaped stack computed to `-apple-system, &#34;...`)
    assert f["bodyFont"].startswith('-apple-system, BlinkMacSystemFont, "Segoe UI"'), f["bodyFont"]
    assert f["storyPadding"] >= 12 and f["headlineWeight"] == "700" and f["underline"] == "underline"
    assert f["metaWrap"] == "nowrap" and f["metaHeight"] < 24  # the source line is one line
    for selector in (".brand", ".headline a", ".meta"):
        used = drawn_with(page, selector)
        assert used and used <= SANS, f"{selector} drawn with {used}: a fallback font"
    # nothing wider than the screen
    assert f["scrollWidth"] <= width and not f["wide"], f["wide"][:5]
    assert f["cardWidth"] <= min(600, width)
    # light or dark, and legible in both
    if scheme == "dark":
        assert luminance(f["card"]) < 0.05 and luminance(f["outer"]) < 0.05
    else:
        assert luminance(f["card"]) > 0.95
    assert contrast(f["headline"], f["card"]) >= 4.5
    assert contrast(f["section"], f["card"]) >= 4.5 and contrast(f["meta"], f["card"]) >= 4.5
    if f["summary"]:
        assert contrast(f["summary"], f["card"]) >= 7
    return f


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright.sync_playwright() as p:
        b = launch(p)
        yield b
        b.close()


def view(browser: Any, url: str, width: int, scheme: str, shot: str) -> tuple[Any, list[str]]:
    context = browser.new_context(viewport={"width": width, "height": 900}, color_scheme=scheme)
    page = context.new_page()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type in ("error", "warning") else None)
    page.goto(url)
    page.wait_for_load_state("load")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{shot}-{width}px-{scheme}.png"), full_page=True)
    return page, problems


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The offline example fetched and sent to the outbox, its archive served on loopback."""
    import email
    import email.policy
    import re

    import uvicorn

    from digest.apps.web import create_app
    from digest.config import load_config

    tmp = tmp_path_factory.mktemp("site")
    shutil.copytree(ROOT / "examples" / "offline", tmp / "offline")
    cfg = tmp / "offline" / "feeds.yaml"
    port = _port()
    cfg.write_text(
        cfg.read_text().replace(
            "  secret: offline-example-secret", f"  secret: browser\n  base_url: http://127.0.0.1:{port}"
        )
    )
    runner = CliRunner()
    for args in (
        ["fetch"],
        ["subscribers", "add", "view@example.org", "--why"],
        ["send", "--to", "view@example.org"],
    ):
        # on a thread of its own: Playwright's sync API may hold an event loop on this one
        with ThreadPoolExecutor(1) as pool:
            r = pool.submit(runner.invoke, main, ["--config", str(cfg), *args]).result()
        assert r.exit_code == 0, r.output
    [eml] = [
        p
        for p in (tmp / "offline" / "outbox" / "new").iterdir()
        if b"view@example.org" in p.read_bytes()[:2000]
    ]
    msg = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)
    mail_html = tmp / "mail.html"
    mail_html.write_text(msg.get_body(("html",)).get_content(), encoding="utf-8")  # type: ignore[union-attr]
    text = msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    archive = re.search(r"View in browser: (\S+)", text).group(1)  # type: ignore[union-attr]
    server = uvicorn.Server(
        uvicorn.Config(create_app(load_config(cfg)), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    yield {"mail": mail_html.as_uri(), "archive": archive, "config": cfg}
    server.should_exit = True
    thread.join(10)


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("width", WIDTHS)
def test_the_mail_looks_right_at_both_widths_light_and_dark(browser, site, width, scheme):
    page, _ = view(browser, site["mail"], width, scheme, "digest-mail")
    f = assert_looks_right(page, width, scheme)
    assert "Putin and Xi hail 'unprecedented' ties in talks on summit sidelines" in f["text"]
    assert "Also reported by" in f["text"] and "Unsubscribe" in f["text"] and "View in browser" in f["text"]
    assert page.evaluate("document.querySelectorAll('script').length") == 0
    page.context.close()


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("width", WIDTHS)
def test_view_in_browser_has_the_same_look_under_a_strict_csp(browser, site, width, scheme):
    import httpx

    csp = httpx.get(site["archive"]).headers["content-security-policy"]
    assert "style-src 'self';" in csp and "unsafe-inline" not in csp
    page, problems = view(browser, site["archive"], width, scheme, "digest-archive")
    assert not [p for p in problems if "Content Security Policy" in p], problems
    f = assert_looks_right(page, width, scheme)
    assert "Putin and Xi hail 'unprecedented' ties in talks on summit sidelines" in f["text"]
    page.context.close()


# -- hostile feed text and other languages: digests rendered directly --------------------------


def rendered_page(tmp_path: Path, stories: list[Any], name: str, locale: str = "auto") -> str:
    from digest.mail.render import Renderer
    from tests.mail.test_render import LINKS, digest

    html = Renderer(list_name="SCO & Putin–Xi digest", locale=locale).render(digest(stories), LINKS).html
    path = tmp_path / f"{name}.html"
    path.write_text(html or "", encoding="utf-8")
    return path.as_uri()


def test_hostile_titles_stay_in_their_cards(browser, tmp_path):
    from tests.mail.test_render import story

    stories = [
        story(1, title="A" * 3000, summary="https://example.org/" + "x" * 2000),
        story(2, title="Summit \u202eopens today\u202c in Tianjin", outlet="Wire\u202e"),
        story(3, title="Z" + "\u0301\u0336\u0489" * 500 + "algo"),
        story(4, title="قمة منظمة شنغهاي للتعاون تفتتح في تيانجين"),
    ]
    url = rendered_page(tmp_path, stories, "hostile")
    for width in WIDTHS:
        page, _ = view(browser, url, width, "light", "digest-hostile")
        f = assert_looks_right(page, width, "light")
        metas = page.eval_on_selector_all(".meta", "els => els.map(e => e.innerText)")
        assert metas[1] == "Wire · 2 Mar, 06:58"  # a U+202E reverses nothing after it
        assert (
            page.eval_on_selector_all(".headline", "els => els.map(e => getComputedStyle(e).direction)")[3]
            == "rtl"
        )
        tops = page.eval_on_selector_all(
            ".story", "els => els.map(e => [e.getBoundingClientRect().top, e.getBoundingClientRect().bottom])"
        )
        assert all(a[1] <= b[0] + 0.5 for a, b in itertools.pairwise(tops))  # no card runs into the next
        assert "\u202e" not in f["text"]
        page.context.close()


@pytest.mark.parametrize(
    ("locale", "title", "heading", "font"),
    [
        (
            "ru",
            "Путин и Си Цзиньпин провели переговоры в Тяньцзине",
            "ШАНХАЙСКАЯ ОРГАНИЗАЦИЯ СОТРУДНИЧЕСТВА",
            None,
        ),
        ("zh", "上海合作组织峰会在天津开幕，各国领导人出席", "上海合作组织", "WenQuanYi Zen Hei"),
    ],
)
def test_russian_and_chinese_digests_are_set_in_their_language(
    browser, tmp_path, locale, title, heading, font
):
    from tests.mail.test_render import story

    url = rendered_page(
        tmp_path, [story(i, title=title, summary=title + " " + title) for i in range(3)], locale
    )
    for width, scheme in ((375, "light"), (800, "dark")):
        page, _ = view(browser, url, width, scheme, f"digest-{locale}")
        f = assert_looks_right(page, width, scheme)
        assert heading in f["text"]
        if font:
            assert font in drawn_with(page, ".headline a")
        page.context.close()


def test_outlook_dark_mode_hooks_recolour_the_mail(browser, site):
    """Outlook.com and the Outlook apps ignore prefers-color-scheme; they mark the elements they
    recolour with data-ogsc (text) and data-ogsb (backgrounds), which the head stylesheet uses."""
    context = browser.new_context(viewport={"width": 800, "height": 900}, color_scheme="light")
    page = context.new_page()
    page.goto(site["mail"])
    page.evaluate("for (const a of ['data-ogsc', 'data-ogsb']) document.documentElement.setAttribute(a, '')")
    page.screenshot(path=str(ARTIFACTS / "digest-mail-800px-outlook-dark.png"), full_page=True)
    f = page.evaluate(FACTS)
    assert luminance(f["card"]) < 0.05 and luminance(f["outer"]) < 0.05
    assert contrast(f["headline"], f["card"]) >= 4.5 and contrast(f["summary"], f["card"]) >= 7
    assert contrast(f["section"], f["card"]) >= 4.5 and contrast(f["meta"], f["card"]) >= 4.5
    context.close()
