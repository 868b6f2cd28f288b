"""Faults end in one line and an exit code, never a traceback (issue 12, Deliver 8).

Each case runs the real `digest` command in a process of its own, so that whatever it prints
(an unretrieved task exception, a logged traceback) is seen as an operator would see it.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

from tests.support.worlds import daily_now, offline_config

ROOT = Path(__file__).resolve().parents[2]
SUBSCRIBERS = 40


def digest(cfg: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "digest", "--config", str(cfg), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def assert_one_line(r: subprocess.CompletedProcess[str], code: int, *fragments: str) -> str:
    """Exit `code`, no traceback, exactly one `digest: error:` line holding every fragment."""
    output = r.stdout + r.stderr
    assert "Traceback" not in output and "exception was never retrieved" not in output, output
    errors = [line for line in r.stderr.splitlines() if line.startswith("digest: error:")]
    assert len(errors) == 1, r.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    assert r.returncode == code, output
    return errors[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def site(tmp_path: Path, db_url: str, delivery: str = "  transport: outbox\n") -> Path:
    """examples/offline's feeds, many subscribers due now, fetched: the next `send` has work."""
    addresses = [f"s{i}@example.org" for i in range(SUBSCRIBERS)]
    cfg = offline_config(tmp_path, db_url, delivery=delivery, subscribers=daily_now(addresses))
    r = digest(cfg, "fetch")
    assert r.returncode == 0, r.stderr
    return cfg


class Accepting:
    def __init__(self) -> None:
        self.messages = 0

    async def handle_DATA(self, server, session, envelope):
        self.messages += 1
        return "250 OK"


@pytest.fixture
def smtp_server() -> Iterator[object]:
    """start(authenticator=None) -> port: an aiosmtpd server on loopback, stopped at the end."""
    started: list[Controller] = []

    def start(authenticator=None) -> int:
        kw = {"authenticator": authenticator, "auth_require_tls": False} if authenticator else {}
        controller = Controller(Accepting(), hostname="127.0.0.1", port=free_port(), **kw)
        controller.start()
        started.append(controller)
        return int(controller.port)

    yield start
    for c in started:
        c.stop()


def smtp(port: int, **extra: object) -> str:
    options = ", ".join(f"{k}: {v}" for k, v in extra.items())
    return (
        "  transport: smtp\n"
        f"  smtp: {{host: 127.0.0.1, port: {port}, security: none, retries: 1, retry_delay: 0.05, "
        f"timeout: 5, {options}}}\n"
    )


def test_smtp_auth_not_offered_is_one_line(tmp_path, db_url, smtp_server):
    port = smtp_server()  # no authenticator: the server offers no AUTH
    cfg = site(tmp_path, db_url, smtp(port, username="digest", password="x"))
    assert_one_line(digest(cfg, "send"), 1, f"127.0.0.1:{port}", "AUTH", "delivery.smtp.username")


def test_auth_refused_with_sends_in_flight_is_one_line(tmp_path, db_url, smtp_server):
    logins = []

    def authenticator(server, session, envelope, mechanism, auth_data):
        logins.append(auth_data.login)
        return AuthResult(success=len(logins) <= 2, handled=False)  # the first two connections get in

    port = smtp_server(authenticator)
    cfg = site(tmp_path, db_url, smtp(port, username="digest", password="x", connections=4, per_connection=2))
    assert_one_line(digest(cfg, "send"), 1, "login as 'digest' refused")
    assert len(logins) > 2  # it was refused while the first connections were sending


def test_a_full_disk_under_the_outbox_is_one_line_and_leaves_no_partial_file(tmp_path, db_url):
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    outbox = tmp_path / "outbox"
    outbox.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96k", "tmpfs", str(outbox)], check=False)
    if mounted.returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        cfg = site(tmp_path, db_url, f"  transport: outbox\n  outbox: '{outbox}'\n")
        assert_one_line(digest(cfg, "send"), 1, str(outbox), "No space left on device")
        assert list((outbox / "tmp").iterdir()) == []
        assert 0 < len(list((outbox / "new").iterdir())) < SUBSCRIBERS  # some went, the rest wait
    finally:
        subprocess.run(["umount", str(outbox)], check=False)


def test_a_csv_that_is_not_utf8_is_one_line(tmp_path, db_url):
    cfg = site(tmp_path, db_url)
    bad = tmp_path / "subs.csv"
    bad.write_bytes("email,name\nm@example.org,Müller\n".encode("latin-1"))
    assert_one_line(digest(cfg, "subscribers", "import", str(bad)), 2, str(bad), "UTF-8")


def test_a_csv_with_a_2mb_field_is_one_line(tmp_path, db_url):
    cfg = site(tmp_path, db_url)
    bad = tmp_path / "subs.csv"
    bad.write_text("email,name\nm@example.org," + "x" * 2_000_000 + "\n", encoding="utf-8")
    assert_one_line(digest(cfg, "subscribers", "import", str(bad)), 2, str(bad), "line 2")


def test_a_yaml_alias_bomb_is_refused_before_parsing(tmp_path):
    cfg = tmp_path / "feeds.yaml"
    levels = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    levels += [f"{c}: &{c} [{', '.join(['*' + p] * 9)}]" for p, c in zip("abcdefgh", "bcdefghi", strict=True)]
    cfg.write_text("\n".join(levels) + "\n", encoding="utf-8")
    assert_one_line(digest(cfg, "feeds", "list", timeout=20), 2, str(cfg), "line 1", "anchors")


def test_a_config_over_one_mib_is_refused_before_parsing(tmp_path):
    cfg = tmp_path / "feeds.yaml"
    cfg.write_text("# padding\n" * 120_000 + "feeds: []\n", encoding="utf-8")
    assert_one_line(digest(cfg, "feeds", "list", timeout=20), 2, str(cfg), "1 MiB")
