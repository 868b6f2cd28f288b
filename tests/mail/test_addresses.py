"""Any address that works: IDNA domains, SMTPUTF8 (RFC 6531), UTF-8 headers (RFC 6532), one
subscriber per address whatever the case of its local part. Real aiosmtpd servers on 127.0.0.1,
one that offers SMTPUTF8 and one that does not."""

from __future__ import annotations

import email
import email.policy
from datetime import UTC, datetime

import pytest
from aiosmtpd.controller import Controller
from click.testing import CliRunner

from digest.apps.cli import main
from digest.config import load_config
from digest.model.subscribers import Subscriber, mail_address, normalise_email
from digest.storage.store import Store
from tests.apps.test_web import site, subscribe  # noqa: F401 (site is a fixture)
from tests.service.test_delivery import NOW, fetch_and_send, free_port, make_config

UTF8_LOCAL = "müller@bücher.de"
IDN_DOMAIN = "info@bücher.de"
EXTRA = f"  - {{email: '{UTF8_LOCAL}'}}\n  - {{email: '{IDN_DOMAIN}'}}\n"


class Recorder:
    """Keeps each accepted message with its envelope, as the server saw them."""

    def __init__(self) -> None:
        self.received: list[tuple[list[str], bytes]] = []

    async def handle_DATA(self, server, session, envelope):
        self.received.append((list(envelope.rcpt_tos), envelope.original_content or envelope.content))
        return "250 OK"

    def by_recipient(self) -> dict[str, email.message.EmailMessage]:
        return {rcpts[0]: parse_utf8(data) for rcpts, data in self.received}


def parse_utf8(data: bytes) -> email.message.EmailMessage:
    """A message with RFC 6532 headers: the stdlib's bytes parser reads 8-bit headers as
    surrogate escapes, so decode first (the body parts are base64, ASCII)."""
    return email.message_from_string(data.decode("utf-8"), policy=email.policy.default)  # type: ignore[return-value]


@pytest.fixture(params=[True, False], ids=["smtputf8", "ascii-only"])
def server(request):
    handler = Recorder()
    controller = Controller(handler, hostname="127.0.0.1", port=free_port(), enable_SMTPUTF8=request.param)
    controller.start()
    yield handler, controller.port, request.param
    controller.stop()


def test_the_domain_is_lowercased_and_the_local_part_kept_as_written():
    assert normalise_email(" Reader@Example.COM ") == "Reader@example.com"
    assert normalise_email("Info@Bücher.DE") == "Info@bücher.de"
    assert mail_address("Info@bücher.de") == "Info@xn--bcher-kva.de"  # any server takes it
    assert mail_address(UTF8_LOCAL) == UTF8_LOCAL  # needs SMTPUTF8


def test_a_non_ascii_address_is_sent_where_smtputf8_is_offered_and_fails_alone_where_not(
    tmp_path, db_url, server
):
    handler, port, smtputf8 = server
    reports, store, _ = fetch_and_send(make_config(tmp_path, db_url, smtp_port=port, extra=EXTRA))
    states = {r.email: r for r in reports}
    # the ASCII addresses and the IDNA domain go whatever the server
    for address in ("ann@example.org", "bo@example.org", IDN_DOMAIN):
        assert states[address].state == "sent", states[address]
    got = handler.by_recipient()
    idn = got["info@xn--bcher-kva.de"]
    assert idn["To"] == "info@xn--bcher-kva.de"
    if smtputf8:
        assert states[UTF8_LOCAL].state == "sent"
        raw = dict((r[0], d) for r, d in handler.received)[UTF8_LOCAL]
        to_line = next(line for line in raw.split(b"\r\n") if line.startswith(b"To:"))
        assert to_line == f"To: {UTF8_LOCAL}".encode()  # RFC 6532: UTF-8, no encoded-word
        assert got[UTF8_LOCAL]["To"].addresses[0].addr_spec == UTF8_LOCAL
    else:
        failed = states[UTF8_LOCAL]
        assert failed.state == "failed" and "SMTPUTF8" in (failed.error or "")
        assert UTF8_LOCAL not in got and len(got) == 3
        # a failure of the server's, not a bounce: the subscriber stays active
        assert store.list_subscribers(email=UTF8_LOCAL)[0].status == "active"


def test_the_outbox_writes_a_utf8_to_header_never_an_encoded_word(tmp_path, db_url):
    fetch_and_send(make_config(tmp_path, db_url, extra=EXTRA))
    raws = [p.read_bytes() for p in (tmp_path / "outbox" / "new").glob("*.eml")]
    heads = [r.split(b"\r\n\r\n", 1)[0] for r in raws]
    to_lines = sorted(line for h in heads for line in h.split(b"\r\n") if line.startswith(b"To:"))
    assert f"To: {UTF8_LOCAL}".encode() in to_lines
    assert b"To: info@xn--bcher-kva.de" in to_lines
    assert not any(b"=?" in line for line in to_lines)


def test_reader_at_example_com_is_the_same_subscriber_on_every_path(tmp_path, db_url):
    cfg = make_config(tmp_path, db_url)
    runner = CliRunner()
    base = ["--config", str(cfg), "subscribers"]
    assert runner.invoke(main, [*base, "add", "reader@example.com"]).exit_code == 0
    again = runner.invoke(main, [*base, "add", "Reader@Example.COM", "--time", "09:00"])
    assert again.exit_code == 0 and "updated" in again.output
    store = Store(load_config(cfg).database_url)
    found = [s for s in store.list_subscribers() if s.email.lower() == "reader@example.com"]
    assert len(found) == 1 and found[0].send_time == "09:00"
    assert store.list_subscribers(email="READER@example.com")[0].id == found[0].id
    # a non-ASCII local part folds its case too
    now = datetime(2026, 3, 2, tzinfo=UTC)
    first = store.add_subscriber(Subscriber("Müller@example.com"), now)
    assert store.add_subscriber(Subscriber("müller@example.com"), now) == (first[0], False)
    # but a different address is a different subscriber
    assert store.add_subscriber(Subscriber("reader2@example.com"), now)[1] is True
    csv = tmp_path / "subs.csv"
    csv.write_text(
        "email,send_time\nREADER@example.com,10:00\nnew@example.com,10:00\nNEW@Example.com,11:00\n"
    )
    imported = runner.invoke(main, [*base, "import", str(csv)])
    assert imported.exit_code == 0 and "1 added, 2 updated" in imported.output
    keys = [s.email.lower() for s in store.list_subscribers()]
    assert keys.count("reader@example.com") == 1 and keys.count("new@example.com") == 1
    assert store.list_subscribers(email="new@example.com")[0].send_time == "11:00"
    removed = runner.invoke(main, [*base, "remove", "READER@example.com"])
    assert removed.exit_code == 0
    assert not [s for s in store.list_subscribers() if s.email.lower() == "reader@example.com"]


def test_the_web_form_accepts_a_non_ascii_address_and_mails_it(site):  # noqa: F811
    client, _, src = site
    page = subscribe(client, "Müller@Bücher.de")
    assert page.status_code == 200, page.text[:300]
    (eml,) = (src / "outbox" / "new").glob("*.eml")
    msg = parse_utf8(eml.read_bytes())
    assert msg["To"].addresses[0].addr_spec == "Müller@bücher.de"
    assert msg["Date"] and msg["Message-ID"]


def test_a_send_to_the_ascii_only_server_reaches_everyone_else_in_the_same_run(tmp_path, db_url):
    handler = Recorder()
    controller = Controller(handler, hostname="127.0.0.1", port=free_port(), enable_SMTPUTF8=False)
    controller.start()
    try:
        # the non-ASCII subscriber first in the table: the run must go on past it
        cfg = make_config(tmp_path, db_url, smtp_port=controller.port)
        cfg.write_text(cfg.read_text().replace("subscribers:\n", "subscribers:\n" + EXTRA))
        reports, _, _ = fetch_and_send(cfg, now=NOW)
    finally:
        controller.stop()
    assert sorted(r.state for r in reports) == ["failed", "sent", "sent", "sent"]


def test_the_web_form_knows_an_address_whatever_the_case_of_its_local_part(site):  # noqa: F811
    from digest.service.fetching import utcnow

    client, loaded, src = site
    store = Store(loaded.database_url)
    store.add_subscriber(Subscriber("bo@example.org"), utcnow())
    assert subscribe(client, "BO@Example.ORG").status_code == 200
    (eml,) = (src / "outbox" / "new").glob("*.eml")
    msg = parse_utf8(eml.read_bytes())
    assert "already subscribed" in msg.get_body(("plain",)).get_content()
    assert [s.email for s in store.list_subscribers()] == ["bo@example.org"]
