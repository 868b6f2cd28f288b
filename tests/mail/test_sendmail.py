"""The sendmail transport against a real program: a small fake sendmail the test writes, which
keeps what it is given and exits as told (sysexits.h codes), one message per invocation."""

from __future__ import annotations

import email
import email.policy
import json
import sys
from pathlib import Path

import pytest

from digest.storage.store import Store
from tests.service.test_delivery import fetch_and_send, make_config

FAKE = """#!{python}
import json, os, sys, pathlib
spool = pathlib.Path({spool!r})
argv = sys.argv[1:]
recipient = argv[-1]
codes = json.loads((spool / "codes.json").read_text()) if (spool / "codes.json").exists() else {{}}
code = codes.get(recipient.split("@")[0], 0)
data = sys.stdin.buffer.read()
if code:
    sys.stderr.write("fake sendmail: refusing " + recipient + "\\n")
    sys.exit(code)
# one file per run, named by its pid: runs for different subscribers may overlap
(spool / f"{{os.getpid()}}.json").write_text(json.dumps({{"argv": argv, "data": data.decode("utf-8")}}))
"""


@pytest.fixture
def fake_sendmail(tmp_path: Path):
    spool = tmp_path / "spool"
    spool.mkdir()
    script = tmp_path / "fake-sendmail"
    script.write_text(FAKE.format(python=sys.executable, spool=str(spool)))
    script.chmod(0o755)
    return script, spool


def config(tmp_path: Path, db_url: str, command: str, extra: str = "") -> Path:
    cfg = make_config(tmp_path, db_url, extra=extra)
    cfg.write_text(
        cfg.read_text().replace(
            "  transport: outbox\n", f"  transport: sendmail\n  sendmail_command: '{command} -oi'\n"
        )
    )
    return cfg


def invocations(spool: Path) -> list[dict[str, object]]:
    return [json.loads(p.read_text()) for p in sorted(spool.glob("[0-9]*.json"))]


def test_each_digest_is_one_invocation_with_the_envelope_on_the_command_line(tmp_path, db_url, fake_sendmail):
    script, spool = fake_sendmail
    reports, _, _ = fetch_and_send(config(tmp_path, db_url, str(script)))
    assert sorted(r.state for r in reports) == ["sent", "sent"]
    calls = invocations(spool)
    assert sorted(c["argv"][-1] for c in calls) == ["ann@example.org", "bo@example.org"]  # type: ignore[index]
    for c in calls:
        argv = c["argv"]
        assert argv[:4] == ["-oi", "-f", "digest@example.org", "--"]  # type: ignore[index]
        msg = email.message_from_string(str(c["data"]), policy=email.policy.default)
        assert msg["To"] == argv[-1] and msg["Message-ID"]  # type: ignore[index]
        assert "\r\n" not in str(c["data"])  # a local MTA reads LF line ends


@pytest.mark.parametrize(
    ("code", "state", "status"),
    [
        (75, "failed", "active"),  # EX_TEMPFAIL: try later, no bounce
        (67, "bounced", "bouncing"),  # EX_NOUSER: a bounce (bounce_limit 1)
    ],
)
def test_exit_codes_are_temporary_or_permanent_failures_of_that_subscriber_alone(
    tmp_path, db_url, fake_sendmail, code, state, status
):
    script, spool = fake_sendmail
    (spool / "codes.json").write_text(json.dumps({"ann": code}))
    cfg = config(tmp_path, db_url, str(script))
    cfg.write_text(
        cfg.read_text().replace("  secret: test-secret\n", "  secret: test-secret\n  bounce_limit: 1\n")
    )
    reports, store, _ = fetch_and_send(cfg)
    by = {r.email: r for r in reports}
    assert by["ann@example.org"].state == state and f"exit {code}" in (by["ann@example.org"].error or "")
    assert "refusing ann@example.org" in (by["ann@example.org"].error or "")  # what sendmail said
    assert by["bo@example.org"].state == "sent"  # the others go
    assert store.list_subscribers(email="ann@example.org")[0].status == status


def test_a_missing_program_stops_the_run_with_one_line_and_blames_nobody(tmp_path, db_url):
    from click.testing import CliRunner

    from digest.apps.cli import main

    cfg = config(tmp_path, db_url, str(tmp_path / "no-such-sendmail"))
    assert CliRunner().invoke(main, ["--config", str(cfg), "fetch"]).exit_code == 0
    result = CliRunner().invoke(main, ["--config", str(cfg), "send"])
    assert result.exit_code == 1
    assert "cannot run" in result.output and "sendmail_command" in result.output
    assert "Traceback" not in result.output
    store = Store(f"{db_url}")
    assert all(s.status == "active" for s in store.list_subscribers())
