"""The bounce mailbox over IMAP: against a real Dovecot on 127.0.0.1, TLS verified against the
certificate it was given, the password from the environment."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from digest.config import LoadedConfig, load_config
from digest.errors import MailboxError
from digest.mail.mailbox import ImapSource
from digest.storage.store import Store
from tests.service.test_bounces import DATA, add, read, status, token_of
from tests.support.imapserver import DOVECOT, ImapServer

pytestmark = pytest.mark.skipif(
    DOVECOT is None, reason="Dovecot is not installed (apt-get install dovecot-imapd; .ci/run does)"
)

PASSWORD_ENV = "DIGEST_TEST_IMAP_PASSWORD"


@pytest.fixture
def imap(monkeypatch: pytest.MonkeyPatch) -> Iterator[ImapServer]:
    # outside tmp_path: Dovecot's own user must be able to enter the folder
    folder = Path(tempfile.mkdtemp(prefix="digest-imap-"))
    monkeypatch.setenv(PASSWORD_ENV, ImapServer.password)
    try:
        with ImapServer(folder) as server:
            yield server
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def configure(tmp_path: Path, db_url: str, server: ImapServer, **imap: object) -> LoadedConfig:
    settings = {
        "host": "127.0.0.1",
        "port": server.port,
        "username": server.user,
        "password_env": PASSWORD_ENV,
        "ca_file": str(server.cert),
        **imap,
    }
    cfg = tmp_path / "feeds.yaml"
    cfg.write_text(
        f"database: '{db_url}'\nfeeds: []\n"
        "delivery:\n  secret: bounce-secret\n  bounce_address: bounces@digest.example.org\n"
        "  bounce_limit: 100\n"
        "bounces:\n  imap: {" + ", ".join(f"{k}: '{v}'" for k, v in settings.items()) + "}\n"
    )
    return load_config(cfg)


def fixture(name: str, token: str, variant: str = "") -> bytes:
    data = (DATA / name).read_bytes().replace(b"VERP_TOKEN", token.encode())
    return data.replace(b"Date: ", f"X-Variant: {variant}\nDate: ".encode(), 1) if variant else data


def test_reports_in_an_imap_folder_are_acted_on_and_moved_to_their_folders(tmp_path, db_url, imap):
    loaded = configure(tmp_path, db_url, imap)
    with Store(loaded.database_url) as store:
        ids = add(store, "ann@example.org", "bo@example.org", "cy@example.org")
        imap.append(fixture("postfix-hard.eml", token_of(loaded, store, ids["ann@example.org"])))
        imap.append(fixture("arf-abuse.eml", token_of(loaded, store, ids["bo@example.org"])))
        imap.append(fixture("postfix-delayed.eml", token_of(loaded, store, ids["cy@example.org"])))
        imap.append(fixture("vacation.eml", ""))
        summary = read(loaded)
        assert dict(summary.outcomes) == {"hard": 1, "complaint": 1, "soft": 1, "unknown": 1}
        assert status(store, ids["ann@example.org"]) == ("bouncing", 1)
        assert status(store, ids["bo@example.org"])[0] == "complained"
        assert status(store, ids["cy@example.org"]) == ("active", 1)
    assert imap.count("INBOX") == 0 and imap.count("processed") == 3 and imap.count("unknown") == 1


def test_without_move_the_server_gets_copy_and_expunge(tmp_path, db_url, imap, monkeypatch):
    """UID MOVE is RFC 6851; a server without it gets UID COPY, \\Deleted and EXPUNGE."""
    loaded = configure(tmp_path, db_url, imap, processed_folder="Bounces read")
    opened = ImapSource.open

    def without_move(self: ImapSource) -> None:
        opened(self)
        self.can_move = False

    monkeypatch.setattr(ImapSource, "open", without_move)
    with Store(loaded.database_url) as store:
        sid = add(store, "ann@example.org")["ann@example.org"]
        for i in range(3):
            imap.append(fixture("postfix-delayed.eml", token_of(loaded, store, sid), str(i)))
        read(loaded)
        assert status(store, sid) == ("active", 3)
    assert imap.count("INBOX") == 0 and imap.count("Bounces read") == 3


def test_a_crash_before_the_moves_reads_them_again_and_counts_them_once(tmp_path, db_url, imap, monkeypatch):
    loaded = configure(tmp_path, db_url, imap)
    with Store(loaded.database_url) as store:
        sid = add(store, "ann@example.org")["ann@example.org"]
        for i in range(4):
            imap.append(fixture("postfix-delayed.eml", token_of(loaded, store, sid), str(i)))

        def killed(self: ImapSource, item: object, to: str) -> None:
            raise KeyboardInterrupt("killed after the commit")

        with monkeypatch.context() as m:
            m.setattr(ImapSource, "move", killed)
            with pytest.raises(KeyboardInterrupt):
                read(loaded)
        assert imap.count("INBOX") == 4 and status(store, sid) == ("active", 4)
        summary = read(loaded)
        assert summary.already == 4 and status(store, sid) == ("active", 4)
    assert imap.count("INBOX") == 0 and imap.count("processed") == 4


def test_a_wrong_password_or_an_unverified_certificate_is_one_line(tmp_path, db_url, imap, monkeypatch):
    loaded = configure(tmp_path, db_url, imap)
    monkeypatch.setenv(PASSWORD_ENV, "wrong")
    with pytest.raises(MailboxError) as exc:
        read(loaded)
    assert "login as 'bounces' refused" in str(exc.value) and PASSWORD_ENV in str(exc.value)
    monkeypatch.setenv(PASSWORD_ENV, imap.password)
    untrusted = configure(tmp_path, db_url, imap, ca_file="")
    with pytest.raises(MailboxError) as exc:
        read(untrusted)
    assert "TLS failed" in str(exc.value) and "ca_file" in str(exc.value)
    assert "\n" not in str(exc.value)
    refused = configure(tmp_path, db_url, imap, unknown_folder="not/allowed")
    with pytest.raises(MailboxError) as exc:
        read(refused)
    assert "cannot create the folder 'not/allowed'" in str(exc.value)
