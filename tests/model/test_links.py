"""Only http(s) and mailto links reach a mail, a preview or a page (issue 12); the text stays."""

from __future__ import annotations

import email
import email.policy
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from xml.sax.saxutils import escape

import pytest
from click.testing import CliRunner
from hypothesis import example, given
from hypothesis import strategies as st

from digest.apps.cli import main
from digest.model.links import SAFE_SCHEMES, safe_href

ROOT = Path(__file__).resolve().parents[2]
HOSTILE = [
    "javascript:alert(1)",
    " JaVaScRiPt:alert(2)",
    "java\tscript:alert(3)",
    "data:text/html,<script>alert(4)</script>",
    "vbscript:msgbox(5)",
    "/relative/junk",
    "//evil.example/protocol-relative",
]


def browser_scheme(href: str) -> str | None:
    """The scheme a browser gives an href (WHATWG URL Standard, basic URL parser), or None if relative:
    leading/trailing C0 controls and spaces stripped, tabs and newlines removed, then
    ALPHA *(ALNUM / "+" / "-" / ".") ":"."""
    cleaned = re.sub(r"[\t\n\r]", "", href).strip("".join(chr(i) for i in range(0x21)))
    m = re.match(r"([A-Za-z][A-Za-z0-9+.\-]*):", cleaned)
    return m.group(1).lower() if m else None


url_like = st.one_of(
    st.text(),
    st.builds(
        lambda pre, scheme, sep, rest: pre + scheme + sep + rest,
        st.sampled_from(["", " ", "\t", "\x00", "\n "]),
        st.sampled_from(
            ["http", "HTTPS", "java\tscript", "javascript", "data", "mailto", "vbscript", "ht\ntp"]
        ),
        st.sampled_from([":", "://", ":/", ":\\\\", ""]),
        st.text(),
    ),
)


@given(url_like)
@example("javascript:alert(1)")
@example("https://example.org/a?b=c")
def test_an_href_kept_is_one_a_browser_reads_as_http_or_mailto(url):
    kept = safe_href(url)
    if kept is not None:
        assert browser_scheme(kept) in SAFE_SCHEMES
        assert browser_scheme(url) == browser_scheme(kept)  # cleaning changed nothing a browser sees


@pytest.mark.parametrize("url", HOSTILE)
def test_hostile_and_relative_links_are_dropped(url):
    assert safe_href(url) is None


@pytest.mark.parametrize(
    "url", ["https://example.org/a?b=c&d=e", "http://example.org:8080/", "mailto:desk@example.org"]
)
def test_plain_links_are_kept_as_they_are(url):
    assert safe_href(url) == url


class Anchors(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []
        self.clickable: list[str] = []  # any attribute a browser acts on: href, src, action, on*

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name == "href" and tag == "a":
                self.hrefs.append(value or "")
            if name in ("href", "src", "action", "formaction") or name.startswith("on"):
                self.clickable.append(value or "")


def assert_nothing_hostile_clickable(html: str) -> Anchors:
    parser = Anchors()
    parser.feed(html)
    assert parser.hrefs, "no link at all: the check would prove nothing"
    for value in parser.clickable:
        assert browser_scheme(value) in (*SAFE_SCHEMES, None), value
        assert not value.startswith("/relative") and not value.startswith("//"), value
    return parser


@pytest.fixture
def hostile_site(tmp_path: Path, db_url: str) -> Path:
    """examples/offline with every item link of the wire feed replaced by a hostile one."""
    src = tmp_path / "site"
    shutil.copytree(ROOT / "examples" / "offline", src)
    wire = src / "wire.xml"
    text = wire.read_text(encoding="utf-8")
    links = iter(HOSTILE * 20)
    text = re.sub(
        r"<item>(.*?)<link>[^<]*</link>",
        lambda m: f"<item>{m.group(1)}<link>{escape(next(links)).replace(chr(9), '&#9;')}</link>",
        text,
        flags=re.S,
    )
    wire.write_text(text, encoding="utf-8")
    cfg = src / "feeds.yaml"
    cfg.write_text(cfg.read_text().replace("sqlite:///digest.db", f"'{db_url}'"))
    return cfg


def test_no_hostile_link_reaches_the_mail_the_preview_or_the_archive(hostile_site: Path, tmp_path: Path):
    from starlette.testclient import TestClient

    from digest.apps.web import create_app
    from digest.config import load_config
    from digest.mail.tokens import Signer
    from digest.storage.store import Store

    runner = CliRunner()
    cfg = str(hostile_site)
    assert runner.invoke(main, ["--config", cfg, "fetch"]).exit_code == 0
    assert runner.invoke(main, ["--config", cfg, "subscribers", "add", "reader@example.org"]).exit_code == 0
    page = tmp_path / "preview.html"
    r = runner.invoke(
        main, ["--config", cfg, "preview", "--subscriber", "reader@example.org", "--output", str(page)]
    )
    assert r.exit_code == 0, r.output
    html = page.read_text(encoding="utf-8")
    assert "SCO leaders gather in Tianjin" in html  # the title stays, unlinked
    assert_nothing_hostile_clickable(html)
    assert runner.invoke(main, ["--config", cfg, "send"]).exit_code == 0
    [msg] = [
        m
        for p in sorted((hostile_site.parent / "outbox" / "new").glob("*.eml"))
        if (m := email.message_from_bytes(p.read_bytes(), policy=email.policy.default))["To"]  # type: ignore[arg-type]
        == "reader@example.org"
    ]
    assert_nothing_hostile_clickable(msg.get_body(("html",)).get_content())  # type: ignore[union-attr]
    text = msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "javascript" not in text.lower() and "data:" not in text and "vbscript" not in text
    loaded = load_config(hostile_site)
    store = Store(loaded.database_url)
    sub = store.list_subscribers(email=str(msg["To"]))[0]
    [row] = [r for r in store.deliveries_report() if r["subscriber_id"] == sub.id]
    salt_of = lambda sid: store.subscriber_salts([sid]).get(sid)  # noqa: E731
    token = Signer(loaded.config.delivery.secret or "", salt_of).sign(sub.id, "archive")
    with TestClient(create_app(loaded)) as client:  # `with`: the app's start-up opens its store
        archived = client.get(f"/archive/{token}/{row['period']}")
    assert archived.status_code == 200
    assert_nothing_hostile_clickable(archived.text)
    CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
    if CHROMIUM:  # what a browser builds from the page: the DOM it would let a reader click
        dom = subprocess.run(
            [
                CHROMIUM,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                f"--user-data-dir={tmp_path / 'p'}",
                "--dump-dom",
                page.as_uri(),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        ).stdout
        assert "SCO leaders gather in Tianjin" in dom
        assert_nothing_hostile_clickable(dom)
