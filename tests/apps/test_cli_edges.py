"""Issue 13's CLI sharp edges, each through the real command: the exit code, one line, no traceback."""

from __future__ import annotations

import email
import email.policy
import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from digest.apps.cli import main
from digest.config import load_config

ROOT = Path(__file__).resolve().parents[2]


def digest(*args: str, config: Path | None = None, env: dict[str, str] | None = None):
    prefix = ["--config", str(config)] if config else []
    result = CliRunner().invoke(main, [*prefix, *args], env=env)
    # anything but a clean exit is an exception the CLI let through: a traceback for the user
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exc_info
    assert "Traceback" not in result.output
    return result


def error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("digest: error:")]


def one_error(result, code: int, *needles: str) -> str:
    assert result.exit_code == code, result.output
    (line,) = error_lines(result.output)
    for needle in needles:
        assert needle in line, line
    return line


def table_dump(cfg: Path) -> dict[str, list[tuple[object, ...]]]:
    """Every row of every table: what "writes nothing" is checked against."""
    engine = sa.create_engine(load_config(cfg).database_url)
    try:
        meta = sa.MetaData()
        meta.reflect(engine)
        with engine.connect() as conn:
            return {
                name: sorted(map(tuple, conn.execute(sa.select(t)).all()), key=repr)
                for name, t in meta.tables.items()
            }
    finally:
        engine.dispose()


def busy_port() -> socket.socket:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    return s


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "digest", *args], capture_output=True, text=True, timeout=timeout
    )


# -- runs ------------------------------------------------------------------------------------------


def test_run_once_exits_1_when_every_feed_failed(tmp_path, db_url):
    cfg = tmp_path / "feeds.yaml"
    cfg.write_text(
        f"database: '{db_url}'\nfeeds:\n"
        f"  - {{name: gone, url: '{tmp_path / 'gone.xml'}'}}\n"
        f"  - {{name: gone-too, url: '{tmp_path / 'gone-too.xml'}'}}\n"
    )
    r = digest("run", "--once", config=cfg)
    assert r.exit_code == 1
    assert "digest: every feed failed (2)" in r.output


def test_run_once_exits_0_when_one_feed_of_several_failed(offline):
    cfg_text = offline.read_text().replace("url: wire.xml", "url: missing.xml")
    offline.write_text(cfg_text)
    assert digest("run", "--once", config=offline).exit_code == 0


def test_a_busy_metrics_port_is_one_line_and_exit_2(offline):
    with busy_port() as s:
        port = s.getsockname()[1]
        r = run_cli("--config", str(offline), "daemon", "--metrics-port", str(port))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert error_lines(r.stderr) == [
        f"digest: error: --metrics-port {port}: cannot listen on 127.0.0.1:{port} (Address already in use); "
        "choose a free port, or stop what holds it"
    ]


def test_serve_on_a_busy_port_is_one_line_and_exit_2_not_a_database_error(offline):
    with busy_port() as s:
        port = s.getsockname()[1]
        r = run_cli("--config", str(offline), "serve", "--port", str(port))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    (line,) = error_lines(r.stderr)
    assert f"--port {port}: cannot listen on 127.0.0.1:{port}" in line and "another --port" in line


# -- feeds import ------------------------------------------------------------------------------------

OPML = """<?xml version="1.0"?><opml version="2.0"><body>
<outline text="A new one" xmlUrl="https://new.example.org/feed?a=1&amp;b=2"/>
<outline text="Known" xmlUrl="{known}"/>
</body></opml>
"""


def test_feeds_import_keeps_the_file_byte_for_byte_outside_what_it_adds(tmp_path):
    cfg = tmp_path / "feeds.yaml"
    shutil.copy(ROOT / "feeds.yaml", cfg)
    original = cfg.read_bytes()
    known = load_config(cfg).config.feeds[-1].url
    opml = tmp_path / "in.opml"
    opml.write_text(OPML.format(known=known.replace("&", "&amp;")))
    r = digest("feeds", "import", str(opml), config=cfg)
    assert r.exit_code == 0 and "added 1 feeds" in r.output
    after = cfg.read_bytes()
    added = [
        line for line in after.splitlines(keepends=True) if line not in original.splitlines(keepends=True)
    ]
    assert added == [b'  - name: "a-new-one"\n', b'    url: "https://new.example.org/feed?a=1&b=2"\n']
    assert after.replace(b"".join(added), b"", 1) == original  # one block inserted, nothing else
    feeds = load_config(cfg).config.feeds
    assert feeds[-1].name == "a-new-one" and feeds[-1].url == "https://new.example.org/feed?a=1&b=2"
    # the feed list ends where it did: the delivery section's comment still opens that section
    assert after.index(b'url: "https://new.example.org') < after.index(b"# Where digests go")


def test_feeds_import_with_nothing_new_does_not_touch_the_file(tmp_path):
    cfg = tmp_path / "feeds.yaml"
    shutil.copy(ROOT / "feeds.yaml", cfg)
    known = [f.url.replace("&", "&amp;") for f in load_config(cfg).config.feeds]
    opml = tmp_path / "in.opml"
    opml.write_text("<opml><body>" + "".join(f'<outline xmlUrl="{u}"/>' for u in known) + "</body></opml>")
    before = (cfg.read_bytes(), cfg.stat().st_mtime_ns)
    r = digest("feeds", "import", str(opml), config=cfg)
    assert r.exit_code == 0 and "added 0 feeds" in r.output
    assert (cfg.read_bytes(), cfg.stat().st_mtime_ns) == before


def test_feeds_import_into_a_flow_style_list_and_a_file_without_a_final_newline(tmp_path):
    cfg = tmp_path / "feeds.yaml"
    cfg.write_text(
        "feeds:\n    -   {name: a, url: 'https://a.example.org/'}   # mine\ndatabase: sqlite:///x.db"
    )
    opml = tmp_path / "in.opml"
    opml.write_text(OPML.format(known="https://a.example.org/"))
    assert digest("feeds", "import", str(opml), config=cfg).exit_code == 0
    assert cfg.read_text() == (
        "feeds:\n    -   {name: a, url: 'https://a.example.org/'}   # mine\n"
        '    - name: "a-new-one"\n      url: "https://new.example.org/feed?a=1&b=2"\n'
        "database: sqlite:///x.db"
    )


@pytest.mark.parametrize(
    ("before", "after"),
    [
        (  # CRLF line ends stay CRLF
            "database: sqlite:///x.db\r\nfeeds:\r\n  - name: a\r\n    url: https://a.example.org/\r\n",
            "database: sqlite:///x.db\r\nfeeds:\r\n  - name: a\r\n    url: https://a.example.org/\r\n"
            '  - name: "a-new-one"\r\n    url: "https://new.example.org/feed?a=1&b=2"\r\n',
        ),
        (  # an empty list
            "feeds: []   # none yet\ndatabase: sqlite:///x.db\n",
            "feeds:  # none yet\n"
            '  - name: "a-new-one"\n    url: "https://new.example.org/feed?a=1&b=2"\n'
            "database: sqlite:///x.db\n",
        ),
        (  # no feeds key at all
            "database: sqlite:///x.db\n",
            "database: sqlite:///x.db\nfeeds:\n"
            '  - name: "a-new-one"\n    url: "https://new.example.org/feed?a=1&b=2"\n',
        ),
    ],
    ids=["crlf", "empty-list", "no-feeds-key"],
)
def test_feeds_import_into_other_shapes_of_file(tmp_path, before, after):
    cfg = tmp_path / "feeds.yaml"
    cfg.write_bytes(before.encode())
    opml = tmp_path / "in.opml"
    opml.write_text(OPML.format(known="https://new.example.org/feed?a=1&amp;b=2"))  # listed twice, added once
    assert digest("feeds", "import", str(opml), config=cfg).exit_code == 0
    assert cfg.read_bytes().decode() == after


# -- subscribers -------------------------------------------------------------------------------------


def test_changing_one_preference_of_a_subscriber_keeps_the_others(offline):
    args = ["subscribers", "add", "ann@example.org"]
    assert (
        digest(
            *args, "--timezone", "Asia/Tokyo", "--topics", "sco", "--tags", "summit", config=offline
        ).exit_code
        == 0
    )
    assert digest(*args, "--format", "text", "--max-stories", "7", config=offline).exit_code == 0
    r = digest(*args, "--time", "8:30", config=offline)
    assert r.exit_code == 0 and "updated ann@example.org" in r.output
    exported = digest("subscribers", "export", config=offline).output
    row = next(line for line in exported.splitlines() if line.startswith("ann@"))
    assert row == "ann@example.org,,sco,summit,daily,,08:30,Asia/Tokyo,text,7,False,active,"


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["--tags", "nonsense"], ["unknown tag(s) nonsense", "known: summit"]),
        (["--topics", "sports"], ["unknown topic(s) sports", "known: sco, putin-xi"]),
        (["--max-stories", "0"], ["max_stories: 0 is outside 1..200"]),
        (["--max-stories", "201"], ["max_stories: 201 is outside 1..200"]),
        (["--weekday", "friday"], ["--weekday friday", "--cadence weekly"]),
    ],
)
def test_subscriber_options_that_would_mean_nothing_are_refused_with_exit_2(offline, args, needles):
    r = digest("subscribers", "add", "ann@example.org", *args, config=offline)
    one_error(r, 2, *needles)
    assert "ann@" not in digest("subscribers", "list", config=offline).output


def test_weekday_with_weekly_is_kept(offline):
    r = digest(
        "subscribers", "add", "ann@example.org", "--cadence", "weekly", "--weekday", "fri", config=offline
    )
    assert r.exit_code == 0
    assert ",weekly,friday," in digest("subscribers", "export", config=offline).output


def test_a_bad_address_under_subscribers_fails_config_loading_in_one_line(offline):
    offline.write_text(offline.read_text().replace("reader@example.org", "reader@@example"))
    for command in (["feeds", "list"], ["status"], ["fetch"]):
        one_error(digest(*command, config=offline), 2, "subscribers[0].email", "reader@@example")


# -- send --dry-run and preview change nothing -----------------------------------------------------------


def test_send_dry_run_and_preview_write_nothing_to_the_database(offline):
    assert digest("fetch", config=offline).exit_code == 0
    before = table_dump(offline)
    assert before["subscribers"] == []  # fetch seeds nobody either
    r = digest("send", "--dry-run", config=offline)
    assert r.exit_code == 0
    assert "not in this dry run: reader@example.org, analyst@example.org (in feeds.yaml" in r.output
    r = digest("preview", config=offline)
    assert r.exit_code == 0 and "Subject:" in r.output
    assert digest("preview", "--output", str(offline.parent / "p.eml"), config=offline).exit_code == 0
    assert table_dump(offline) == before


def test_preview_renders_for_the_configured_subscriber_before_any_send(offline):
    r = digest("preview", "--output", str(offline.parent / "p.eml"), config=offline)
    assert r.exit_code == 0 and "for reader@example.org" in r.output
    r = digest(
        "preview",
        "--subscriber",
        "analyst@example.org",
        "--output",
        str(offline.parent / "a.eml"),
        config=offline,
    )
    assert "for analyst@example.org" in r.output


@pytest.mark.parametrize("who", ["reader@example.org", "analyst@example.org"])  # html and text readers
def test_preview_writes_what_the_file_extension_says(offline, who):
    assert digest("fetch", config=offline).exit_code == 0
    folder = offline.parent
    for name in ("p.html", "p.txt", "p.eml"):
        r = digest("preview", "--subscriber", who, "--output", str(folder / name), config=offline)
        assert r.exit_code == 0, r.output
    html = (folder / "p.html").read_text()
    assert html.lstrip().lower().startswith("<!doctype html") and "</html>" in html
    text = (folder / "p.txt").read_text()
    assert "<" not in text.split("\n", 1)[0] and "<html" not in text.lower() and "http" in text
    msg = email.message_from_bytes((folder / "p.eml").read_bytes(), policy=email.policy.default)
    assert msg["To"] == who  # the message as sent: the subscriber's own format
    expected = "text/plain" if who.startswith("analyst") else "multipart/alternative"
    assert msg.get_content_type() == expected


def test_preview_to_a_missing_folder_or_an_unknown_kind_is_one_line(offline):
    one_error(
        digest("preview", "--output", "/nonexistent/x.html", config=offline), 2, "no folder /nonexistent"
    )
    one_error(
        digest("preview", "--output", str(offline.parent / "x.pdf"), config=offline), 2, ".html, .txt or .eml"
    )


# -- config --------------------------------------------------------------------------------------------


def test_config_is_accepted_after_the_subcommand_too(offline):
    for args in (["status", "--config", str(offline)], ["subscribers", "list", "--config", str(offline)]):
        r = digest(*args)
        assert r.exit_code == 0, r.output
    one_error(
        digest("status", "--config", str(offline.parent / "nope.yaml")), 2, "nope.yaml: config file not found"
    )


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        ("database: mysql://x\n", ["'mysql://x'", "SQLite", "PostgreSQL"]),
        ("feeds:\n  - {name: a, url: 'http://exa mple.org/feed'}\n", ["feeds[0].url", "contains a space"]),
        (
            "feeds:\n  - {name: a, url: 'http://x.org/', language: russian}\n",
            ["feeds[0].language", "write 'ru'"],
        ),
        ("", ["the file is empty"]),
        ("feeds:\n  - {name: a, url: 'http://x.org/', tags: 5}\n", ["feeds[0].tags: 5 is not a list"]),
        ("http:\n  concurrency: lots\n", ["http.concurrency: 'lots' is not a whole number"]),
        ("delivery:\n  transport: pigeon\n", ["delivery.transport: 'pigeon'", "'sendmail'"]),
    ],
)
def test_config_mistakes_are_one_line_naming_the_key_and_the_fix(tmp_path, text, needles):
    cfg = tmp_path / "feeds.yaml"
    cfg.write_text(text)
    line = one_error(digest("status", config=cfg), 2, str(cfg), *needles)
    assert "Input should be" not in line and "digest[postgres]" not in line


def test_help_opens_with_what_digest_does_for_its_user():
    r = digest("--help")
    description = r.output.split("\n\n", 1)[1].strip()
    assert description.startswith("Poll news feeds, pick the SCO and Putin–Xi stories")


# -- entries, stories, rules -----------------------------------------------------------------------------


def test_entries_of_an_unknown_feed_is_exit_2_naming_it(offline):
    one_error(digest("entries", "--feed", "nosuch", config=offline), 2, "'nosuch'", "feeds list")


def test_stories_all_shows_the_same_rows_as_a_table_and_as_jsonl(offline):
    assert digest("fetch", config=offline).exit_code == 0
    wide = {"COLUMNS": "400"}
    for extra in ([], ["--all"]):
        rows = digest("stories", "--format", "jsonl", *extra, config=offline, env=wide).output.splitlines()
        table = digest("stories", *extra, config=offline, env=wide).output
        body = [line for line in table.splitlines() if line.startswith("│")]
        assert len(body) == len(rows), (extra, table)
    assert len(rows) > len(digest("stories", "--format", "jsonl", config=offline).output.splitlines())


def test_rules_test_on_a_file_notes_each_entrys_closest_score(offline):
    r = digest("rules", "test", str(offline.parent / "wire.xml"), config=offline, env={"COLUMNS": "400"})
    assert r.exit_code == 0
    rows = [line for line in r.output.splitlines() if line.startswith("│")]
    assert rows and all(re.search(r"score [\d.]+ [≥<] [\d.]+|no topic", row) for row in rows), r.output
    assert not any(row.rstrip(" │").endswith("test") for row in rows)


# -- the test suite and the README ---------------------------------------------------------------------


def test_pytest_says_when_the_postgresql_half_did_not_run(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "DIGEST_TEST_DATABASE_URL"}
    r = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/model/test_schedule.py"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout[-2000:]
    assert "PostgreSQL half of the storage tests did not run: DIGEST_TEST_DATABASE_URL was unset" in r.stdout


def test_the_readme_points_at_nothing_outside_the_repository():
    text = (ROOT / "README.md").read_text()
    targets = re.findall(r"\]\(([^)]+)\)", text) + re.findall(r"`((?:\.\./|/work/)[^`]*)`", text)
    for target in targets:
        if re.match(r"https?://|mailto:|#", target):
            continue
        path = (ROOT / target.split("#")[0]).resolve()
        assert path.is_relative_to(ROOT) and path.exists(), target
    assert "../" not in text and "/work/" not in text


# -- operator and confirmation mails --------------------------------------------------------------------


def test_the_operator_report_has_a_date_and_a_message_id(offline):
    from digest import Digest

    with Digest(offline) as d:
        d.mail_operator("ops@example.org")
    (eml,) = (offline.parent / "outbox" / "new").glob("*.eml")
    msg = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)
    assert msg["To"] == "ops@example.org" and msg["Date"].datetime is not None
    assert re.fullmatch(r"<operator\.\d{12}@\S+>", msg["Message-ID"])


def test_jsonl_rows_are_json(offline):
    assert digest("fetch", config=offline).exit_code == 0
    for line in digest("stories", "--all", "--format", "jsonl", config=offline).output.splitlines():
        json.loads(line)
