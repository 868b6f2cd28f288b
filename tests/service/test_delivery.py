"""Digests to inboxes, against a real SMTP server on 127.0.0.1 (aiosmtpd) and the outbox."""

from __future__ import annotations

import asyncio
import email
import email.policy
import email.utils
import shutil
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from click.testing import CliRunner

from digest.apps.cli import main
from digest.config import load_config
from digest.service.fetching import FetchOptions, fetch_feeds
from digest.service.organising import organise
from digest.service.sending import send_due
from digest.storage.store import Store
from tests.support.certs import self_signed

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


class Sink:
    """An SMTP server that accepts, refuses or hangs up, as told."""

    def __init__(self) -> None:
        self.messages: list[bytes] = []
        self.rcpt_replies: list[str] = []
        self.drop_data = 0

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if self.rcpt_replies:
            return self.rcpt_replies.pop(0)
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.drop_data:
            self.drop_data -= 1
            server.transport.close()  # hang up in the middle of DATA
            return "421 closing"
        self.messages.append(envelope.content)
        return "250 Message accepted for delivery"

    def parsed(self) -> list[email.message.EmailMessage]:
        return [email.message_from_bytes(m, policy=email.policy.default) for m in self.messages]  # type: ignore[misc]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def sink():
    handler = Sink()
    # port=0 does not work with aiosmtpd's readiness check: pick one (notes §4.4)
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield handler, controller.port
    controller.stop()


def make_config(
    tmp_path: Path,
    db_url: str,
    *,
    smtp_port: int | None = None,
    extra: str = "",
    feeds_dir: Path | None = None,
) -> Path:
    src = feeds_dir or tmp_path / "feeds"
    if feeds_dir is None:
        shutil.copytree(ROOT / "examples" / "offline", src)
    transport = (
        "  transport: smtp\n"
        f"  smtp: {{host: 127.0.0.1, port: {smtp_port}, security: none, retries: 2, retry_delay: 0.05}}\n"
        if smtp_port
        else "  transport: outbox\n"
    )
    cfg = tmp_path / "feeds.yaml"
    cfg.write_text(
        f"database: '{db_url}'\n"
        "max_age: 3650d\n"  # the example's news is of 2025: not old news here
        "feeds:\n"
        f"  - {{name: example-wire, url: '{src / 'wire.xml'}', language: en}}\n"
        f"  - {{name: vestnik-ru, url: '{src / 'vestnik-ru.xml'}', language: ru}}\n"
        f"  - {{name: shiping-zh, url: '{src / 'shiping-zh.xml'}', language: zh}}\n"
        "delivery:\n" + transport + "  base_url: https://digest.example.org\n  secret: test-secret\n"
        "  sender: 'Digest <digest@example.org>'\n"
        "subscribers:\n"
        "  - {email: ann@example.org, timezone: Europe/Berlin, send_time: '07:00'}\n"
        "  - {email: bo@example.org, format: text, timezone: Asia/Shanghai}\n" + extra
    )
    return cfg


def fetch_and_send(cfg: Path, now: datetime = NOW, **kw):
    loaded = load_config(cfg)
    store = Store(loaded.database_url)
    asyncio.run(fetch_feeds(loaded, store, FetchOptions(), clock=lambda: NOW))
    organise(loaded, store, clock=lambda: now)
    reports = asyncio.run(send_due(loaded, store, now=now, **kw))
    return reports, store, loaded


def test_each_subscriber_gets_one_digest_that_parses_back_part_by_part(tmp_path, db_url, sink):
    handler, port = sink
    reports, store, _ = fetch_and_send(make_config(tmp_path, db_url, smtp_port=port))
    assert sorted(r.state for r in reports) == ["sent", "sent"]
    msgs = {m["To"]: m for m in handler.parsed()}
    ann = msgs["ann@example.org"]
    assert "\n" not in ann["Subject"] and "digest" in ann["Subject"].lower()
    assert ann["Message-ID"].startswith("<digest.2026-03-02.")
    assert ann["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    unsub = ann["List-Unsubscribe"]
    assert unsub.startswith("<https://digest.example.org/unsubscribe/") and "mailto:" in unsub
    assert "=?" not in unsub  # never folded into encoded-words
    assert ann.get_content_type() == "multipart/alternative"
    text = ann.get_body(("plain",)).get_content()
    html = ann.get_body(("html",)).get_content()
    assert "Putin and Xi hail 'unprecedented' ties" in text
    assert "https://wire.example.org/world/2025/09/01/putin-xi-talks-tianjin" in html
    assert 'style="' in html  # CSS inlined
    assert unsub[1:].split(">")[0] in html  # the unsubscribe link in the footer matches the header
    assert "Also reported by" in html
    bo = msgs["bo@example.org"]
    assert bo.get_content_type() == "text/plain"  # text only, as chosen
    again = asyncio.run(send_due(load_config(tmp_path / "feeds.yaml"), store, now=NOW + timedelta(minutes=5)))
    assert {r.state for r in again} == {"done"} and len(handler.messages) == 2


def test_a_4xx_reply_is_retried_and_one_message_arrives(tmp_path, db_url, sink):
    handler, port = sink
    handler.rcpt_replies = ["451 4.3.0 Try again later"]
    reports, _, _ = fetch_and_send(make_config(tmp_path, db_url, smtp_port=port), only="ann@example.org")
    assert [r.state for r in reports] == ["sent"]
    assert len(handler.messages) == 1


def test_a_5xx_reply_is_recorded_and_the_subscriber_marked_bouncing(tmp_path, db_url, sink):
    handler, port = sink
    handler.rcpt_replies = ["550 5.1.1 No such user"]
    cfg = make_config(tmp_path, db_url, smtp_port=port)
    cfg.write_text(
        cfg.read_text().replace("  secret: test-secret\n", "  secret: test-secret\n  bounce_limit: 1\n")
    )
    reports, store, _ = fetch_and_send(cfg, only="ann@example.org")
    assert [r.state for r in reports] == ["bounced"] and "550" in (reports[0].error or "")
    assert handler.messages == []
    ann = store.list_subscribers(email="ann@example.org")[0]
    assert ann.status == "bouncing"
    assert store.delivery(ann.id, "2026-03-02")["state"] == "failed"


def test_a_connection_dropped_mid_data_is_retried_once(tmp_path, db_url, sink):
    handler, port = sink
    handler.drop_data = 1
    reports, _, _ = fetch_and_send(make_config(tmp_path, db_url, smtp_port=port), only="ann@example.org")
    assert [r.state for r in reports] == ["sent"]
    assert len(handler.messages) == 1


def test_a_crash_after_sending_resends_that_digest_once_with_the_same_message_id(
    tmp_path, db_url, sink, monkeypatch
):
    handler, port = sink
    cfg = make_config(tmp_path, db_url, smtp_port=port)
    loaded = load_config(cfg)
    store = Store(loaded.database_url)
    asyncio.run(fetch_feeds(loaded, store, FetchOptions(), clock=lambda: NOW))
    organise(loaded, store, clock=lambda: NOW)

    def crash(*a, **kw):
        raise KeyboardInterrupt("killed between the server's acceptance and the commit")

    with monkeypatch.context() as m:
        m.setattr(store, "finish_deliveries", crash)
        with pytest.raises(KeyboardInterrupt):
            asyncio.run(send_due(loaded, store, now=NOW, only="ann@example.org"))
    assert len(handler.messages) == 1
    reports = asyncio.run(send_due(loaded, store, now=NOW + timedelta(minutes=1), only="ann@example.org"))
    assert [r.state for r in reports] == ["sent"]
    ids = [m["Message-ID"] for m in handler.parsed()]
    assert len(ids) == 2 and ids[0] == ids[1]  # the one duplicate the window allows, same Message-ID
    assert {r.state for r in asyncio.run(send_due(loaded, store, now=NOW + timedelta(minutes=2)))} <= {
        "done",
        "sent",
    }
    assert len(handler.messages) == 3  # bo's digest, and nothing more for ann


def test_stories_already_mailed_never_appear_in_the_next_digest(tmp_path, db_url):
    cfg = make_config(tmp_path, db_url)
    reports, store, loaded = fetch_and_send(cfg, only="ann@example.org")
    first = {r.state: r.stories for r in reports}
    assert first["sent"] >= 2
    nxt = asyncio.run(send_due(loaded, store, now=NOW + timedelta(days=1), only="ann@example.org"))
    assert [r.state for r in nxt] == ["empty"]  # nothing new since: no mail (delivery.send_empty)


def test_a_crlf_title_injects_no_header_and_script_never_reaches_the_mail(tmp_path, db_url):
    from tests.support.feedserver import rss

    feeds = tmp_path / "evil"
    feeds.mkdir()
    item = {
        "title": "Putin and Xi meet in Tianjin\r\nBcc: victim@example.org",
        "link": "https://e.org/1",
        "guid": "e1",
        "description": '<p onclick="steal()">SCO summit talks.<script>alert(1)</script></p>',
        "pubDate": "Mon, 02 Mar 2026 08:00:00 +0000",
    }
    evil = rss([item])
    for name in ("wire.xml", "vestnik-ru.xml", "shiping-zh.xml"):
        (feeds / name).write_bytes(evil if name == "wire.xml" else rss([]))
    cfg = make_config(tmp_path, db_url, feeds_dir=feeds)
    reports, _, _ = fetch_and_send(cfg, only="ann@example.org")
    assert [r.state for r in reports] == ["sent"]
    [path] = list((tmp_path / "outbox" / "new").glob("*.eml"))
    msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert msg["Bcc"] is None and "victim" not in str(msg["Subject"])
    raw = path.read_text(encoding="utf-8", errors="replace")
    assert "<script" not in raw and "alert(1)" not in raw and "onclick" not in raw
    assert "Putin and Xi meet in Tianjin" in msg.get_body(("html",)).get_content()


def test_the_outbox_keeps_one_file_per_digest_even_when_sent_twice(tmp_path):
    from digest.mail.transports import OutboxTransport

    box = OutboxTransport(tmp_path / "box")

    async def twice() -> None:
        await box.open()
        for _ in range(2):
            await box.send("a@b.org", "c@d.org", b"Subject: x\r\n\r\nbody\r\n", "<same@id>")

    asyncio.run(twice())
    assert len(list((tmp_path / "box" / "new").iterdir())) == 1
    assert list((tmp_path / "box" / "tmp").iterdir()) == []


def test_preview_renders_without_changing_any_state(tmp_path, db_url):
    cfg = make_config(tmp_path, db_url)
    runner = CliRunner()

    def preview(*extra: str):
        r = runner.invoke(main, ["--config", str(cfg), "preview", "--subscriber", "cy@example.org", *extra])
        assert r.exit_code == 0, r.output
        return r.output

    assert runner.invoke(main, ["--config", str(cfg), "fetch"]).exit_code == 0
    assert runner.invoke(main, ["--config", str(cfg), "subscribers", "add", "cy@example.org"]).exit_code == 0
    preview("--output", str(tmp_path / "p.eml"))
    assert b"multipart/alternative" in (tmp_path / "p.eml").read_bytes()
    preview("--output", str(tmp_path / "p.html"))
    page = (tmp_path / "p.html").read_text()
    assert "placeholder" not in page and "cy@example.org" in page and "/unsubscribe/" in page
    text = preview()
    assert "placeholder" not in text and "Unsubscribe: https://digest.example.org/unsubscribe/" in text
    store = Store(load_config(cfg).database_url)
    assert store.deliveries_report() == []
    assert not (tmp_path / "outbox").exists()


def test_run_once_delivers_to_the_outbox_and_a_second_run_sends_nothing(tmp_path, db_url):
    cfg = make_config(tmp_path, db_url)
    runner = CliRunner()
    first = runner.invoke(main, ["--config", str(cfg), "run", "--once"])
    assert first.exit_code == 0, first.output
    assert "2 sent" in first.output
    assert len(list((tmp_path / "outbox" / "new").glob("*.eml"))) == 2
    second = runner.invoke(main, ["--config", str(cfg), "run", "--once"])
    assert "0 sent" in second.output and len(list((tmp_path / "outbox" / "new").glob("*.eml"))) == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["subscribers", "add", "not-an-address"], "is not a valid e-mail address"),
        (["subscribers", "add", "x@example.org", "--timezone", "Mars/Base"], "is not an IANA zone"),
        (["subscribers", "add", "x@example.org", "--topics", "cats"], "unknown topic(s) cats"),
    ],
)
def test_bad_subscriber_input_is_one_line_and_exit_2(tmp_path, db_url, args, message):
    cfg = make_config(tmp_path, db_url)
    r = CliRunner().invoke(main, ["--config", str(cfg), *args])
    assert r.exit_code in (1, 2) and message in r.output
    assert len([line for line in r.output.splitlines() if line.strip()]) == 1


def test_csv_import_names_every_bad_row_and_stores_none(tmp_path, db_url):
    cfg = make_config(tmp_path, db_url)
    csv = tmp_path / "subs.csv"
    csv.write_text(
        "email,timezone,cadence\nok@example.org,UTC,daily\nbad,UTC,daily\nx@example.org,UTC,hourly\n"
    )
    r = CliRunner().invoke(main, ["--config", str(cfg), "subscribers", "import", str(csv)])
    assert r.exit_code == 2 and "line 3" in r.output and "line 4" in r.output
    assert Store(load_config(cfg).database_url).list_subscribers() == []


@pytest.fixture
def tls_sink(tmp_path):
    """aiosmtpd requiring STARTTLS and AUTH, with a certificate for 127.0.0.1 made here."""
    import ssl

    from aiosmtpd.smtp import AuthResult

    cert_file, key_file = self_signed(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)

    def authenticator(server, session, envelope, mechanism, auth_data):
        ok = auth_data.login == b"digest" and auth_data.password == b"s3cret"
        return AuthResult(success=ok, handled=False)  # handled=False: the server sends the 535

    handler = Sink()
    controller = Controller(
        handler,
        hostname="127.0.0.1",
        port=free_port(),
        tls_context=context,
        require_starttls=True,
        authenticator=authenticator,
        auth_required=True,
    )
    controller.start()
    yield handler, controller.port, cert_file
    controller.stop()


@pytest.mark.parametrize("password", ["s3cret", "wrong"])
def test_starttls_and_auth_with_the_password_from_the_environment(
    tmp_path, db_url, tls_sink, monkeypatch, password
):
    handler, port, ca = tls_sink
    monkeypatch.setenv("TEST_SMTP_PASSWORD", password)
    cfg = make_config(tmp_path, db_url, smtp_port=port)
    cfg.write_text(
        cfg.read_text().replace(
            "security: none,",
            "security: starttls, username: digest, password: '${TEST_SMTP_PASSWORD}', "
            f"ca_file: '{ca}', timeout: 5,",
        )
    )
    if password == "s3cret":
        reports, _, _ = fetch_and_send(cfg, only="ann@example.org")
        assert [r.state for r in reports] == ["sent"] and len(handler.messages) == 1
        return
    from digest.errors import TransportSetupError

    with pytest.raises(TransportSetupError, match="login as 'digest' refused"):
        fetch_and_send(cfg, only="ann@example.org")
    store = Store(load_config(cfg).database_url)
    ann = store.list_subscribers(email="ann@example.org")[0]
    assert ann.status == "active" and ann.bounces == 0  # the operator's mistake is not a bounce
    assert store.delivery(ann.id, "2026-03-02")["state"] == "pending"  # sent next run
    assert handler.messages == []


@pytest.mark.parametrize("fmt", ["html", "text"])
@pytest.mark.parametrize("address", ["ann@example.org", "ännä@exämple.org", "ann@exämple.org"])
def test_one_message_builder_writes_what_the_email_package_reads_back(fmt, address):
    """RFC 5322 headers (the List-* of RFC 2369/8058), a multipart/alternative of base64 UTF-8
    parts (RFC 2045/2046), a non-ASCII local part as UTF-8 in To (RFC 6532), an IDN domain as
    A-labels; the subscriber's address and links in both bodies."""
    from digest.mail.render import (
        PLACEHOLDER_EMAIL,
        PLACEHOLDER_LINKS,
        Links,
        Rendered,
        build_message,
        make_template,
    )

    def rendered(address: str, links: Links) -> Rendered:
        html = f'<p>Ünïcode — 上合组织 <a href="{links.unsubscribe}&amp;x">out</a> {address}</p>' * 40
        text = f"Ünïcode — 上合组织\n{links.unsubscribe}\n{links.preferences}\n{address}\n" * 40
        return Rendered("SCO & Putin–Xi digest — Monday (3 stories)", text, html if fmt == "html" else None)

    links = Links(
        "https://d.example.org/unsubscribe/MQ.abc",
        "mailto:unsubscribe@d.example.org?subject=unsubscribe%20MQ.abc",
        "https://d.example.org/preferences/MQ.def",
    )
    template = make_template(
        rendered(PLACEHOLDER_EMAIL, PLACEHOLDER_LINKS),
        sender="Digest “SCO” <digest@example.org>",
        list_id="<sco.d.example.org>",
    )
    mid = "<digest.2026-03-02.7.abc@d.example.org>"
    raw = build_message(template, recipient=address, msg_id=mid, links=links, date=NOW)
    assert b"\r\n" in raw and b"\n" not in raw.replace(b"\r\n", b"")  # CRLF line ends only
    assert all(len(line) <= 998 for line in raw.split(b"\r\n"))  # RFC 5322 §2.1.1
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert not msg.defects
    to = "ann@xn--exmple-cua.org" if address == "ann@exämple.org" else address
    assert str(msg["To"]) == to
    assert str(msg["From"]) == "Digest “SCO” <digest@example.org>"
    assert str(msg["Subject"]) == "SCO & Putin–Xi digest — Monday (3 stories)"
    assert str(msg["Message-ID"]) == mid and str(msg["List-Id"]) == "<sco.d.example.org>"
    assert email.utils.parsedate_to_datetime(str(msg["Date"])) == NOW
    assert str(msg["List-Unsubscribe"]) == f"<{links.unsubscribe}>, <{links.mailto}>"
    assert str(msg["List-Unsubscribe-Post"]) == "List-Unsubscribe=One-Click"
    assert str(msg["Auto-Submitted"]) == "auto-generated"
    want = rendered(address, links)
    assert msg.get_content_type() == ("multipart/alternative" if fmt == "html" else "text/plain")

    def body(kind: str) -> str:  # a text part travels in canonical form, CRLF (RFC 2046 §4.1.1)
        return msg.get_body((kind,)).get_content().replace("\r\n", "\n")  # type: ignore[union-attr]

    assert body("plain") == want.text
    if fmt == "html":
        assert body("html") == (want.html or "") + "\n"
