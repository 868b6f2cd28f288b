"""The command line: summaries, formats, exit codes and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner
from defusedxml import ElementTree

from digest.apps.cli import main

ROOT = Path(__file__).resolve().parents[2]


def digest(*args: str, config: Path | None = None):
    prefix = ["--config", str(config)] if config else []
    return CliRunner().invoke(main, [*prefix, *args], catch_exceptions=False)


def test_fetch_prints_a_summary_and_entries_come_out_as_jsonl(offline: Path):
    r = digest("fetch", config=offline)
    assert r.exit_code == 0, r.output
    assert "3 ok, 0 not modified, 0 failed" in r.output
    rows = [
        json.loads(line)
        for line in digest("entries", "--format", "jsonl", config=offline).output.splitlines()
    ]
    assert len(rows) == 9
    by_feed = {row["feed"] for row in rows}
    assert by_feed == {"example-wire", "vestnik-ru", "shiping-zh"}
    zh = next(row for row in rows if row["feed"] == "shiping-zh" and "峰会" in row["title"])
    assert zh["published"] == "2025-08-31T02:00:00+00:00" and zh["language"] == "zh"
    assert "0 ok, 3 not modified" in digest("fetch", config=offline).output


def test_invalid_config_is_one_line_and_exit_2(tmp_path: Path):
    cfg = tmp_path / "feeds.yaml"
    cfg.write_text("feeds:\n  - name: a\n    url: htp://x\n")
    r = CliRunner().invoke(main, ["--config", str(cfg), "fetch"])
    assert r.exit_code == 2
    lines = [line for line in r.output.splitlines() if line.strip()]
    assert len(lines) == 1
    assert lines[0].startswith("digest: error: ") and "feeds[0].url" in lines[0]


def test_a_database_that_cannot_be_opened_stops_the_fetch_with_one_line(tmp_path: Path):
    """The store is opened beside the fetch: when it cannot be, the run stops at the first write
    with one line naming the database and the fix (exit 3), whether workers were forked or not."""
    import subprocess
    import sys

    wire = ROOT / "examples" / "offline" / "wire.xml"
    for n in (1, 24):  # one feed: no worker processes; 24: workers
        cfg = tmp_path / f"feeds{n}.yaml"
        feeds = "".join(f"  - {{name: f{i}, url: '{wire}'}}\n" for i in range(n))
        cfg.write_text(f"database: sqlite:////proc/no/such/dir/x.db\nfeeds:\n{feeds}")
        r = subprocess.run(
            [sys.executable, "-m", "digest", "--config", str(cfg), "fetch"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode == 3, r.stderr
        lines = [line for line in r.stderr.splitlines() if line.strip()]
        assert len(lines) == 1, r.stderr  # no traceback, no asyncio noise
        assert "/proc/no/such/dir" in lines[0] and "fix the path in `database:`" in lines[0]


def test_the_command_entry_fetches_and_selects_with_workers_and_without(tmp_path: Path):
    """Through the command's own entry point, a fetch of many feeds (in worker processes: their
    orders are plain data) and of one (in the process itself) stores, selects and folds stories."""
    import subprocess
    import sys

    wire = ROOT / "examples" / "offline" / "wire.xml"
    for n, ok in ((24, "24 ok"), (1, "1 ok")):
        cfg = tmp_path / f"feeds{n}.yaml"
        feeds = "".join(f"  - {{name: f{i}, url: '{wire}', language: en}}\n" for i in range(n))
        cfg.write_text(f"database: sqlite:///{tmp_path / f'{n}.db'}\nfeeds:\n{feeds}")
        run = [sys.executable, "-m", "digest", "--config", str(cfg)]
        r = subprocess.run([*run, "fetch"], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        assert ok in r.stdout and "newly selected" in r.stdout
        stories = subprocess.run([*run, "stories", "--format", "jsonl"], capture_output=True, text=True)
        assert '"relevant": true' in stories.stdout  # selected and folded into stories


def test_all_feeds_failing_exits_1_and_check_reports_them(tmp_path: Path, db_url: str):
    cfg = tmp_path / "feeds.yaml"
    cfg.write_text(f"database: '{db_url}'\nfeeds:\n  - name: gone\n    url: missing.xml\n")
    r = digest("fetch", config=cfg)
    assert r.exit_code == 1 and "does not exist" in r.output
    check = digest("feeds", "check", config=cfg)
    assert check.exit_code == 1 and "1 failing of 1" in check.output


def test_opml_import_keeps_comments_and_export_round_trips(tmp_path: Path, db_url: str):
    cfg = tmp_path / "feeds.yaml"
    cfg.write_text(f"# my comment\ndatabase: '{db_url}'\nfeeds:\n  - name: a\n    url: https://a.example/f\n")
    opml = tmp_path / "in.opml"
    opml.write_text(
        '<?xml version="1.0"?><opml version="2.0"><head/><body><outline text="News">'
        '<outline text="The Diplomat" xmlUrl="https://thediplomat.com/feed/"/>'
        '<outline text="A again" xmlUrl="https://a.example/f"/></outline></body></opml>'
    )
    r = digest("feeds", "import", str(opml), config=cfg)
    assert r.exit_code == 0 and "added 1 feeds" in r.output
    assert cfg.read_text().startswith("# my comment")
    exported = digest("feeds", "export", config=cfg).output
    urls = [o.get("xmlUrl") for o in ElementTree.fromstring(exported.encode()).iter("outline")]
    assert urls == ["https://a.example/f", "https://thediplomat.com/feed/"]


def test_db_upgrade_reports_the_revision(tmp_path: Path, db_url: str):
    cfg = tmp_path / "feeds.yaml"
    cfg.write_text(f"database: '{db_url}'\n")
    first = digest("db", "upgrade", config=cfg)
    assert first.exit_code == 0 and "(was empty)" in first.output
    assert "already current" in digest("db", "upgrade", config=cfg).output


def test_unknown_feed_name_is_a_usage_error(offline: Path):
    r = CliRunner().invoke(main, ["--config", str(offline), "fetch", "--feed", "nope"])
    assert r.exit_code == 2 and "no feed named 'nope'" in r.output


def test_status_names_failing_feeds_who_is_due_and_the_last_sends(offline: Path):
    assert digest("run", "--once", config=offline).exit_code == 0
    text = offline.read_text().replace("feeds:\n", "feeds:\n  - name: gone\n    url: missing.xml\n", 1)
    offline.write_text(text)
    digest("fetch", config=offline)
    r = digest("status", config=offline)
    assert r.exit_code == 0, r.output
    assert "feeds: 4 enabled, 1 failing" in r.output
    assert "gone" in r.output and "does not exist" in r.output
    assert "subscribers: 2 (2 active, 0 bouncing, 0 complained); 0 due now" in r.output  # both were just sent
    assert "reader@example.org" in r.output and "analyst@example.org" in r.output


def test_rules_that_do_not_compile_fail_the_fetch_clearly_but_keep_what_was_fetched(offline: Path):
    offline.write_text(offline.read_text() + "terms:\n  broken: ['re:(']\n")
    r = digest("fetch", config=offline)
    assert r.exit_code == 2
    assert "3 ok" in r.output  # the fetch summary first
    errors = [line for line in r.output.splitlines() if line.startswith("digest: error:")]
    assert len(errors) == 1 and "terms" in errors[0] and "not a valid regex" in errors[0]
    assert len(digest("entries", "--format", "jsonl", config=offline).output.splitlines()) == 9
