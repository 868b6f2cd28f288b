"""Bounces that come back later: DSNs and ARF complaints read from a Maildir of real-shaped
reports (tests/data/bounces), acted on once, moved aside; the VERP return path that names whom
each one is about."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from aiosmtpd.controller import Controller
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from digest.apps.cli import main
from digest.config import LoadedConfig, load_config
from digest.mail.mailbox import MaildirSource
from digest.mail.tokens import Signer, load_secret
from digest.model.bounces import (
    Bounce,
    Report,
    classify_status,
    effects,
    read_report,
    verp_address,
    verp_token,
)
from digest.model.subscribers import Subscriber
from digest.service.api import Digest
from digest.service.bounces import BounceSummary
from digest.service.sending import send_due
from digest.storage.store import Store

DATA = Path(__file__).resolve().parents[1] / "data" / "bounces"
ROOT = Path(__file__).resolve().parents[2]
BASE = "bounces@digest.example.org"
NOW = datetime(2026, 3, 3, 12, 0, tzinfo=UTC)


# -- reading reports (pure) ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "outcome", "addresses"),
    [
        ("postfix-hard.eml", "hard", ["ann@example.org"]),
        ("postfix-delayed.eml", "soft", ["ann@example.org"]),
        ("exim-dsn.eml", "hard", ["ann@example.org"]),
        ("exim-plain.eml", "soft", ["bo@example.org"]),  # 5.2.2 mailbox full
        ("gmail-hard.eml", "hard", ["ann.reader@gmail.com"]),
        ("arf-abuse.eml", "complaint", ["bo@example.org"]),
        ("arf-redacted.eml", "complaint", ["redacted@hotmail.example.com"]),
        ("mangled-dsn.eml", "hard", [None]),  # no fields left: the text's 5.1.1, the token's subscriber
        ("success-dsn.eml", "ignored", []),
        ("arf-auth-failure.eml", "ignored", []),  # a DMARC report, not a complaint
        ("vacation.eml", "unknown", []),
    ],
)
def test_each_real_shaped_report_reads_as_what_it_says(name, outcome, addresses):
    report = read_report((DATA / name).read_bytes(), BASE)
    assert report.outcome == outcome
    assert [b.address for b in report.bounces] == addresses
    assert len(report.key) == 64 and report.note


def test_the_verp_token_is_found_wherever_the_report_keeps_it():
    # To/Delivered-To (Postfix, Gmail), the returned message's Return-Path (ARF, whose own To
    # is the feedback address), nowhere (an old Exim bounce sent to the bare address)
    assert read_report((DATA / "postfix-hard.eml").read_bytes(), BASE).verp == ("verp_token",)
    assert read_report((DATA / "arf-redacted.eml").read_bytes(), BASE).verp == ("verp_token",)
    assert read_report((DATA / "exim-plain.eml").read_bytes(), BASE).verp == ()
    assert read_report((DATA / "postfix-hard.eml").read_bytes(), None).verp == ()


def test_the_diagnostic_code_refines_an_unspecific_status():
    raw = (
        (DATA / "exim-dsn.eml")
        .read_bytes()
        .replace(b"550 5.1.1", b"550 5.7.1")
        .replace(b"User unknown", b"spam")
    )
    report = read_report(raw, BASE)
    assert report.outcome == "soft" and report.note.startswith("5.7.1")  # a block, not a dead address


@pytest.mark.parametrize(
    ("action", "status", "kind"),
    [
        ("failed", "5.1.1", "hard"),  # no such mailbox
        ("failed", "5.1.10", "hard"),  # null MX (RFC 7505)
        ("failed", "5.4.4", "hard"),  # no route to the domain
        ("failed", "5.2.1", "hard"),  # mailbox disabled
        ("failed", "5.0.0", "hard"),
        ("failed", "5.2.2", "soft"),  # mailbox full
        ("failed", "5.7.1", "soft"),  # policy: the operator's to fix
        ("failed", "4.4.7", "soft"),  # gave up after retrying
        ("delayed", "4.4.1", "soft"),
        ("delivered", "2.0.0", None),
        ("relayed", "2.0.0", None),
        ("failed", "", "hard"),
    ],
)
def test_status_codes_classify_as_rfc_3463_says(action, status, kind):
    assert classify_status(status, action) == kind


def test_verp_addresses_round_trip_and_survive_case_folding():
    address = verp_address(BASE, "42-0123456789abcdef")
    assert address == "bounces+42-0123456789abcdef@digest.example.org"
    assert verp_token(address, BASE) == "42-0123456789abcdef"
    assert verp_token(address.upper(), BASE) == "42-0123456789abcdef"
    assert verp_token("<bounces+42-ab@digest.example.org>", BASE) == "42-ab"
    assert verp_token("bounces@digest.example.org", BASE) is None
    assert verp_token("other+42-ab@digest.example.org", BASE) is None
    assert verp_token("bounces+42-ab@elsewhere.example.org", BASE) is None


def test_a_bounce_token_names_its_subscription_and_nothing_else():
    salts = {7: "salt-7", 8: ""}
    signer = Signer("secret", salts.get)
    token = signer.sign_bounce(7)
    assert token.startswith("7-") and token == token.lower()
    assert signer.verify_bounce(token) == 7
    assert signer.verify_bounce(token.upper()) == 7  # a server folded the local part
    assert signer.verify_bounce(token[:-1] + ("0" if token[-1] != "0" else "1")) is None  # forged
    assert signer.verify_bounce("8-" + token[2:]) is None  # another subscriber's id
    salts[7] = "renewed"  # unsubscribed and subscribed again: the old mail's bounces are nobody's
    assert signer.verify_bounce(token) is None
    assert Signer("other secret", salts.get).verify_bounce(signer.sign_bounce(8)) is None


def test_a_token_wins_over_the_addresses_and_each_subscriber_is_acted_on_once():
    report = Report(
        "k",
        None,
        (Bounce("soft", "ann@example.org", "4.4.1"), Bounce("hard", "ann@example.org", "5.1.1")),
        ("t",),
        "hard",
        "",
    )
    ids = {"ann@example.org": 1}
    assert [(e.subscriber_id, e.kind) for e in effects(report, None, ids)] == [(1, "hard")]
    assert [(e.subscriber_id, e.kind) for e in effects(report, 9, ids)] == [(9, "hard")]
    assert effects(report, None, {}) == ()


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2000))
def test_any_bytes_read_as_a_report_without_raising(data):
    report = read_report(data, BASE)
    assert report.outcome in ("hard", "soft", "complaint", "ignored", "unknown")


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 3000), st.binary(min_size=1, max_size=40))
def test_a_cut_or_garbled_report_reads_without_raising(cut, junk):
    raw = (DATA / "postfix-hard.eml").read_bytes()
    read_report(raw[:cut] + junk + raw[cut + len(junk) :], BASE)


# -- the mailbox, the ledger and the subscribers --------------------------------------------------


def make_maildir(root: Path) -> Path:
    for sub in ("new", "cur", "tmp"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    return root


def configure(tmp_path: Path, db_url: str, *, limit: int = 3, extra: str = "") -> LoadedConfig:
    cfg = tmp_path / "feeds.yaml"
    cfg.write_text(
        f"database: '{db_url}'\n"
        "feeds: []\n"
        "delivery:\n"
        "  transport: outbox\n"
        "  secret: bounce-secret\n"
        "  sender: 'Digest <digest@digest.example.org>'\n"
        f"  bounce_address: {BASE}\n"
        f"  bounce_limit: {limit}\n"
        "bounces:\n"
        "  maildir: bounces\n" + extra
    )
    make_maildir(tmp_path / "bounces")
    return load_config(cfg)


def read(loaded: LoadedConfig) -> BounceSummary:
    """What `digest bounces` does: the bounce mailbox read once."""
    with Digest(loaded, clock=lambda: NOW) as d:
        return d.read_bounces()


def add(store: Store, *addresses: str) -> dict[str, int]:
    return {a: store.add_subscriber(Subscriber(email=a), NOW)[0] for a in addresses}


def token_of(loaded: LoadedConfig, store: Store, sid: int) -> str:
    signer = Signer(load_secret(loaded.config.delivery.secret, loaded.base_dir), lambda i: None)
    return signer.sign_bounce(sid, store.subscriber_salts([sid])[sid])


_seq = iter(range(10**9))


def deliver(maildir: Path, name: str, token: str = "", *, variant: str = "") -> Path:
    """A fixture as the MTA would deliver it: its token filled in; `variant` makes the bytes (and
    so the report) distinct, as two bounces of two digests are."""
    data = (DATA / name).read_bytes().replace(b"VERP_TOKEN", token.encode())
    if variant:
        data = data.replace(b"Date: ", f"X-Variant: {variant}\nDate: ".encode(), 1)
    path = maildir / "new" / f"{time.time_ns()}.{next(_seq)}.test"
    path.write_bytes(data)
    return path


def waiting(maildir: Path) -> list[Path]:
    return sorted(p for sub in ("new", "cur") for p in (maildir / sub).iterdir())


def moved(maildir: Path, folder: str) -> list[Path]:
    return sorted((maildir / f".{folder}" / "cur").iterdir())


def status(store: Store, sid: int) -> tuple[str, int]:
    sub = store.subscriber(sid)
    assert sub is not None
    return sub.status, sub.bounces


def ledger_rows(store: Store) -> int:
    with store.engine.connect() as conn:
        return int(conn.execute(sa.text("SELECT count(*) FROM bounce_reports")).scalar_one())


def test_a_maildir_of_reports_marks_each_subscriber_as_its_report_says(tmp_path, db_url):
    loaded = configure(tmp_path, db_url)
    box = tmp_path / "bounces"
    with Store(loaded.database_url) as store:
        ids = add(store, "ann@example.org", "bo@example.org", "cy@example.org", "di@example.org")
        tok = {a: token_of(loaded, store, i) for a, i in ids.items()}
        deliver(box, "postfix-hard.eml", tok["ann@example.org"])
        deliver(box, "arf-abuse.eml", tok["bo@example.org"])
        deliver(box, "postfix-delayed.eml", tok["cy@example.org"])
        deliver(box, "arf-redacted.eml", tok["di@example.org"])  # known by its token alone
        deliver(box, "vacation.eml", tok["cy@example.org"])
        deliver(box, "success-dsn.eml", tok["cy@example.org"])
        summary = read(loaded)
        assert summary.read == 6
        assert dict(summary.outcomes) == {"hard": 1, "complaint": 2, "soft": 1, "unknown": 1, "ignored": 1}
        assert status(store, ids["ann@example.org"]) == ("bouncing", 1)
        assert status(store, ids["bo@example.org"])[0] == "complained"
        assert status(store, ids["cy@example.org"]) == ("active", 1)  # one soft bounce of three
        assert status(store, ids["di@example.org"])[0] == "complained"
        assert waiting(box) == []
        assert len(moved(box, "processed")) == 5 and len(moved(box, "unknown")) == 1
        assert b"Out of office" in moved(box, "unknown")[0].read_bytes()
        assert ledger_rows(store) == 6
        # nothing is left to read: a second run reads nothing and changes nothing
        again = read(loaded)
        assert again.read == 0 and status(store, ids["cy@example.org"]) == ("active", 1)


def test_a_forwarded_address_is_found_by_the_token_and_a_forged_token_names_nobody(tmp_path, db_url):
    loaded = configure(tmp_path, db_url)
    box = tmp_path / "bounces"
    with Store(loaded.database_url) as store:
        ids = add(store, "ann@example.org", "bo@example.org")
        deliver(box, "gmail-hard.eml", token_of(loaded, store, ids["ann@example.org"]))
        forged = f"{ids['bo@example.org']}-0000000000000000"
        deliver(box, "gmail-hard.eml", forged)
        summary = read(loaded)
        assert status(store, ids["ann@example.org"]) == ("bouncing", 1)  # Gmail named ann.reader@gmail.com
        assert status(store, ids["bo@example.org"]) == ("active", 0)
        assert summary.nobody == 1 and summary.changed == {ids["ann@example.org"]: "bouncing"}


def test_without_a_token_the_reports_own_recipient_names_the_subscriber(tmp_path, db_url):
    loaded = configure(tmp_path, db_url, limit=1)
    box = tmp_path / "bounces"
    with Store(loaded.database_url) as store:
        ids = add(store, "Bo@example.org")
        deliver(box, "exim-plain.eml")  # an old Exim bounce to the bare bounce address
        read(loaded)
        assert status(store, ids["Bo@example.org"]) == ("bouncing", 1)  # at a limit of 1


def test_soft_bounces_mark_a_subscriber_bouncing_only_at_the_limit(tmp_path, db_url):
    loaded = configure(tmp_path, db_url, limit=3)
    box = tmp_path / "bounces"
    with Store(loaded.database_url) as store:
        sid = add(store, "ann@example.org")["ann@example.org"]
        token = token_of(loaded, store, sid)
        for day in ("1", "2"):
            deliver(box, "postfix-delayed.eml", token, variant=day)
        read(loaded)
        assert status(store, sid) == ("active", 2)
        deliver(box, "postfix-delayed.eml", token, variant="3")
        assert read(loaded).changed == {sid: "bouncing"}
        assert status(store, sid) == ("bouncing", 3)


def test_the_same_report_delivered_twice_counts_once(tmp_path, db_url):
    loaded = configure(tmp_path, db_url)
    box = tmp_path / "bounces"
    with Store(loaded.database_url) as store:
        sid = add(store, "ann@example.org")["ann@example.org"]
        token = token_of(loaded, store, sid)
        deliver(box, "postfix-delayed.eml", token)
        deliver(box, "postfix-delayed.eml", token)  # the MTA delivered it twice
        summary = read(loaded)
        assert summary.read == 2 and summary.already == 1
        assert status(store, sid) == ("active", 1) and waiting(box) == []


def test_a_crash_between_the_commit_and_the_move_counts_nothing_twice(tmp_path, db_url, monkeypatch):
    loaded = configure(tmp_path, db_url, limit=100)
    box = tmp_path / "bounces"
    with Store(loaded.database_url) as store:
        sid = add(store, "ann@example.org")["ann@example.org"]
        token = token_of(loaded, store, sid)
        for i in range(5):
            deliver(box, "postfix-delayed.eml", token, variant=str(i))

        def killed(self, item, to):
            raise KeyboardInterrupt("killed after the commit, before any move")

        with monkeypatch.context() as m:
            m.setattr(MaildirSource, "move", killed)
            with pytest.raises(KeyboardInterrupt):
                read(loaded)
        assert status(store, sid) == ("active", 5) and len(waiting(box)) == 5  # committed, not moved
        summary = read(loaded)
        assert summary.already == 5 and sum(summary.outcomes.values()) == 0
        assert status(store, sid) == ("active", 5) and waiting(box) == []
        assert len(moved(box, "processed")) == 5


def test_kill_9_mid_way_then_a_rerun_loses_none_and_counts_none_twice(tmp_path, db_url):
    """`digest bounces` killed with SIGKILL while it works through 600 reports, then run again:
    every report is moved aside once, and each subscriber's count is exactly its reports'."""
    loaded = configure(tmp_path, db_url, limit=10_000)
    box = tmp_path / "bounces"
    n_subs, per_sub = 50, 12
    with Store(loaded.database_url) as store:
        ids = add(store, *(f"reader{i}@example.org" for i in range(n_subs)))
        tokens = [token_of(loaded, store, sid) for sid in ids.values()]
    for k in range(per_sub):
        for i, token in enumerate(tokens):
            deliver(box, "postfix-delayed.eml", token, variant=f"{i}.{k}")
    total = n_subs * per_sub
    env = {**os.environ, "DIGEST_CONFIG": str(tmp_path / "feeds.yaml")}
    cmd = [sys.executable, "-m", "digest", "bounces"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    processed = box / ".processed" / "cur"
    while time.monotonic() < deadline and proc.poll() is None:
        if processed.is_dir() and len(os.listdir(processed)) >= 150:
            break
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    left = len(waiting(box))
    assert 0 < left < total, "the kill came before or after the work: nothing was interrupted"
    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    assert waiting(box) == [] and len(moved(box, "processed")) == total
    with Store(loaded.database_url) as store:
        assert ledger_rows(store) == total
        counts = {store.subscriber(sid).bounces for sid in ids.values()}  # type: ignore[union-attr]
        assert counts == {per_sub}


def test_reading_reports_never_mails_and_complained_subscribers_are_never_mailed_again(tmp_path, db_url):
    loaded = configure(tmp_path, db_url)
    box = tmp_path / "bounces"
    with Store(loaded.database_url) as store:
        ids = add(store, "ann@example.org", "bo@example.org")
        bo = ids["bo@example.org"]
        deliver(box, "arf-abuse.eml", token_of(loaded, store, bo))
        read(loaded)
        assert [s.email for s in store.schedules()] == ["ann@example.org"]  # who is due: ann only
        # an import, `subscribers add` or a confirmation link made earlier do not undo it
        store.add_subscriber(Subscriber(email="bo@example.org", cadence="weekly", weekday=0), NOW)
        store.add_subscribers([Subscriber(email="Bo@example.org")], NOW)
        stamp = store.subscriber_stamp(bo)
        assert stamp is not None
        assert not store.confirm_subscriber(bo, stamp, Subscriber(email="bo@example.org"), NOW)
        assert status(store, bo)[0] == "complained"
        reports = asyncio.run(send_due(loaded, store, now=NOW))
        assert {r.email for r in reports} == {"ann@example.org"}


# -- the return path --------------------------------------------------------------------------


class Envelopes:
    def __init__(self) -> None:
        self.seen: list[tuple[str, list[str]]] = []

    async def handle_DATA(self, server, session, envelope):
        self.seen.append((envelope.mail_from, list(envelope.rcpt_tos)))
        return "250 OK"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_each_digest_goes_out_from_its_subscribers_own_verp_address(tmp_path, db_url):
    handler = Envelopes()
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        configure(tmp_path, db_url)
        cfg = tmp_path / "feeds.yaml"
        cfg.write_text(
            cfg.read_text().replace(
                "  transport: outbox\n",
                f"  transport: smtp\n  send_empty: true\n  smtp: {{host: 127.0.0.1, port: {controller.port}, "
                "security: none}\n",
            )
        )
        loaded = load_config(cfg)
        with Store(loaded.database_url) as store:
            ids = add(store, "ann@example.org", "bo@example.org")
            reports = asyncio.run(send_due(loaded, store, now=NOW))
            assert sorted(r.state for r in reports) == ["sent", "sent"]
            signer = Signer("bounce-secret", lambda i: store.subscriber_salts([i]).get(i))
            for mail_from, rcpts in handler.seen:
                token = verp_token(mail_from, BASE)
                assert token is not None and signer.verify_bounce(token) == ids[rcpts[0]]
            assert len({m for m, _ in handler.seen}) == 2
    finally:
        controller.stop()


# -- the command, status and errors -------------------------------------------------------------


def digest(cfg: Path, *args: str):
    return CliRunner().invoke(main, ["--config", str(cfg), *args], catch_exceptions=False)


def test_digest_bounces_reads_once_and_status_counts_them(tmp_path, db_url):
    loaded = configure(tmp_path, db_url)
    box = tmp_path / "bounces"
    with Store(loaded.database_url) as store:
        ids = add(store, "ann@example.org", "bo@example.org")
        deliver(box, "postfix-hard.eml", token_of(loaded, store, ids["ann@example.org"]))
        deliver(box, "arf-abuse.eml", token_of(loaded, store, ids["bo@example.org"]))
        deliver(box, "vacation.eml")
    cfg = tmp_path / "feeds.yaml"
    r = digest(cfg, "bounces")
    assert r.exit_code == 0
    assert "3 messages read: 1 hard, 0 soft, 1 complaints, 0 ignored, 1 unknown" in r.output
    assert "now 1 bouncing, 1 complained" in r.output
    r = digest(cfg, "status")
    assert "0 active, 1 bouncing, 1 complained" in r.output
    assert "bounce mailbox: 3 messages read" in r.output and "1 complaints" in r.output


def test_mailbox_errors_are_one_line(tmp_path, db_url):
    cfg = tmp_path / "feeds.yaml"
    cfg.write_text(f"database: '{db_url}'\nfeeds: []\n")
    r = CliRunner().invoke(main, ["--config", str(cfg), "bounces"])
    assert r.exit_code == 2 and "no bounce mailbox configured; add bounces.maildir" in r.output
    cfg.write_text(f"database: '{db_url}'\nfeeds: []\nbounces: {{maildir: nowhere}}\n")
    r = CliRunner().invoke(main, ["--config", str(cfg), "bounces"])
    assert r.exit_code == 1 and "is not a Maildir (no new, cur, tmp/)" in r.output
    assert len(r.output.strip().splitlines()) == 1
    cfg.write_text(
        f"database: '{db_url}'\nfeeds: []\n"
        "bounces: {imap: {host: 127.0.0.1, username: b, password_env: DIGEST_TEST_UNSET_PASSWORD}}\n"
    )
    r = CliRunner().invoke(main, ["--config", str(cfg), "bounces"])
    assert r.exit_code == 2 and "DIGEST_TEST_UNSET_PASSWORD is not set" in r.output


@pytest.mark.parametrize(
    ("fragment", "message"),
    [
        ("bounces: {maildir: a, imap: {host: h, username: u}}", "give either maildir or imap"),
        (
            "bounces: {imap: {host: h, username: u, password_env: 'p@ss w0rd'}}",
            "not the name of an environment",
        ),
        ("delivery: {bounce_address: 'bounces+x@example.org'}", "write the base address"),
        ("delivery: {bounce_address: 'Bounces <b@example.org>'}", "not a bare ASCII address"),
    ],
)
def test_bounce_settings_errors_name_the_key_and_the_fix(tmp_path, fragment, message):
    cfg = tmp_path / "feeds.yaml"
    cfg.write_text(f"feeds: []\n{fragment}\n")
    r = CliRunner().invoke(main, ["--config", str(cfg), "status"])
    assert r.exit_code == 2 and message in r.output and len(r.output.strip().splitlines()) == 1


# -- the daemon and its metrics ------------------------------------------------------------------


def test_the_daemon_reads_the_mailbox_on_its_schedule_and_the_metrics_count_it(tmp_path, db_url):
    import httpx

    loaded = configure(tmp_path, db_url, extra="  every: 1s\n")
    box = tmp_path / "bounces"
    with Store(loaded.database_url) as store:
        ids = add(store, "ann@example.org", "bo@example.org")
        deliver(box, "postfix-hard.eml", token_of(loaded, store, ids["ann@example.org"]))
        deliver(box, "arf-abuse.eml", token_of(loaded, store, ids["bo@example.org"]))
    port = free_port()
    log = tmp_path / "daemon.log"
    cmd = [sys.executable, "-m", "digest", "--config", str(tmp_path / "feeds.yaml"), "daemon"]
    proc = subprocess.Popen(
        [*cmd, "--log-format", "json", "--metrics-port", str(port)],
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and '"event": "bounces"' not in log.read_text():
            time.sleep(0.05)
        assert '"event": "bounces"' in log.read_text(), log.read_text()
        deliver(box, "postfix-delayed.eml", "no-such-token")  # read at the next tick
        while time.monotonic() < deadline and waiting(box):
            time.sleep(0.05)
        assert waiting(box) == []
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        assert 'digest_bounce_reports_total{outcome="hard"} 1.0' in metrics
        assert 'digest_bounce_reports_total{outcome="complaint"} 1.0' in metrics
        assert 'digest_subscribers{status="bouncing"} 1.0' in metrics
        assert 'digest_subscribers{status="complained"} 1.0' in metrics
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    with Store(loaded.database_url) as store:
        assert status(store, ids["ann@example.org"])[0] == "bouncing"


# -- the web pages: a complaint is for good -------------------------------------------------------


def test_the_web_never_mails_a_complained_address_nor_undoes_the_complaint(tmp_path, db_url):
    import re

    from starlette.testclient import TestClient

    from digest.apps.web import create_app

    loaded = configure(tmp_path, db_url)
    cfg = tmp_path / "feeds.yaml"
    cfg.write_text(cfg.read_text().replace("  secret:", "  base_url: https://digest.example.org\n  secret:"))
    loaded = load_config(cfg)
    with Store(loaded.database_url) as store:
        sid = add(store, "bo@example.org")["bo@example.org"]
        deliver(tmp_path / "bounces", "arf-abuse.eml", token_of(loaded, store, sid))
        read(loaded)
        salt = store.subscriber_salts([sid])[sid]
    with TestClient(create_app(loaded), base_url="https://digest.example.org") as client:

        def csrf(path: str) -> str:
            page = client.get(path)
            return re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]

        form = {"email": "bo@example.org", "topics": ["sco"], "cadence": "daily", "send_time": "07:00"}
        r = client.post("/subscribe", data={"csrf": csrf("/subscribe"), **form, "timezone": "UTC"})
        assert r.status_code == 200 and "Check your inbox" in r.text  # the page reveals nothing
        outbox = tmp_path / "outbox" / "new"
        assert not outbox.exists() or not list(outbox.iterdir())  # and nothing was mailed
        signer = Signer("bounce-secret", {sid: salt}.get)
        prefs = f"/preferences/{signer.sign(sid, 'preferences')}"
        data = {"csrf": csrf(prefs), **form, "timezone": "UTC", "format": "html", "max_stories": "5"}
        assert "Saved" in client.post(prefs, data=data).text  # new preferences, the status kept
        unsub = f"/unsubscribe/{signer.sign(sid, 'unsubscribe')}"
        assert client.post(unsub, content=b"List-Unsubscribe=One-Click").status_code == 200
    with Store(loaded.database_url) as store:
        assert status(store, sid)[0] == "complained"


def test_two_readers_of_one_mailbox_at_once_apply_each_report_once(tmp_path, db_url):
    """The daemon's job and `digest bounces` by hand, side by side on one Maildir."""
    loaded = configure(tmp_path, db_url, limit=10_000)
    box = tmp_path / "bounces"
    with Store(loaded.database_url) as store:
        ids = add(store, *(f"reader{i}@example.org" for i in range(20)))
        tokens = [token_of(loaded, store, sid) for sid in ids.values()]
    for k in range(15):
        for i, token in enumerate(tokens):
            deliver(box, "postfix-delayed.eml", token, variant=f"{i}.{k}")
    env = {**os.environ, "DIGEST_CONFIG": str(tmp_path / "feeds.yaml")}
    cmd = [sys.executable, "-m", "digest", "bounces"]
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    for proc in procs:
        _, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 0, stderr.decode()
    assert waiting(box) == [] and len(moved(box, "processed")) == 300
    with Store(loaded.database_url) as store:
        assert ledger_rows(store) == 300
        assert {store.subscriber(sid).bounces for sid in ids.values()} == {15}  # type: ignore[union-attr]


def test_the_operator_report_counts_the_last_days_bounces(tmp_path, db_url):
    import email
    import email.policy

    loaded = configure(tmp_path, db_url)
    with Store(loaded.database_url) as store:
        ids = add(store, "ann@example.org", "bo@example.org")
        deliver(tmp_path / "bounces", "postfix-hard.eml", token_of(loaded, store, ids["ann@example.org"]))
        deliver(tmp_path / "bounces", "arf-abuse.eml", token_of(loaded, store, ids["bo@example.org"]))
    with Digest(loaded, clock=lambda: NOW) as d:
        d.read_bounces()
        d.mail_operator("ops@example.org")
    (eml,) = (tmp_path / "outbox" / "new").glob("*.eml")
    text = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default).get_content()  # type: ignore[attr-defined]
    assert "1 hard and 0 soft bounces, 1 complaints, 0 unknown messages" in text


def test_a_folder_half_made_by_a_reader_starting_at_the_same_moment_is_completed(tmp_path):
    box = make_maildir(tmp_path / "bounces")
    (box / ".processed").mkdir()  # the other reader made the folder and not yet its cur/
    source = MaildirSource(box)
    source.open()
    deliver(box, "vacation.eml")
    (item,) = source.messages()
    source.move(item, "processed")
    assert len(moved(box, "processed")) == 1 and waiting(box) == []
