"""Every command's error paths: a mistake is answered with an exit code and a line, never a
traceback (issue 13: "0 tracebacks across every command's error paths")."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from digest.apps.cli import main

# What each command needs on its command line to get as far as reading the config
ARGUMENTS = {
    "run": ["--once"],
    "explain": ["1"],
    "feeds import": ["{tmp}/x.opml"],
    "subscribers add": ["ann@example.org"],
    "subscribers remove": ["ann@example.org"],
    "subscribers import": ["{tmp}/x.csv"],
}


def leaf_commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = []
    for name, cmd in sorted(group.commands.items()):
        if isinstance(cmd, click.Group):
            found += leaf_commands(cmd, (*prefix, name))
        else:
            found.append((*prefix, name))
    return found


COMMANDS = leaf_commands(main)


def invoke(args: list[str]):
    result = CliRunner().invoke(main, args)
    traceback = result.exception is not None and not isinstance(result.exception, SystemExit)
    return result, traceback


def test_the_walk_covers_every_command():
    assert len(COMMANDS) >= 20 and ("subscribers", "add") in COMMANDS and ("serve",) in COMMANDS


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
@pytest.mark.parametrize(
    ("config_text", "needle"),
    [
        ("feeds: [\n", "not valid YAML"),
        ("feeds:\n  - {name: a, url: 'http://exa mple.org/'}\n", "contains a space"),
        ("database: mysql://x\n", "SQLite"),
        ("subscribers:\n  - {email: 'not an address'}\n", "subscribers[0].email"),
    ],
    ids=["yaml", "url", "database", "subscriber"],
)
def test_every_command_answers_a_bad_config_with_one_line_and_exit_2(tmp_path, command, config_text, needle):
    cfg = tmp_path / "feeds.yaml"
    cfg.write_text(config_text)
    (tmp_path / "x.csv").write_text("email\nann@example.org\n")
    (tmp_path / "x.opml").write_text('<opml><body><outline xmlUrl="https://x.example.org/"/></body></opml>')
    args = [*command, *(a.format(tmp=tmp_path) for a in ARGUMENTS.get(" ".join(command), []))]
    result, traceback = invoke(["--config", str(cfg), *args])
    assert not traceback, result.exc_info
    assert result.exit_code == 2, (args, result.output)
    errors = [line for line in result.output.splitlines() if line.startswith("digest: error:")]
    assert len(errors) == 1 and needle in errors[0], result.output


@pytest.fixture
def bad_files(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "bad.csv").write_text("name\nann\n")
    (tmp_path / "bad.opml").write_text("<opml><body><outline xmlUrl=")
    (tmp_path / "binary.csv").write_bytes(b"email\n\xff\xfe\n")
    return {k.replace(".", "_"): str(tmp_path / k) for k in ("bad.csv", "bad.opml", "binary.csv")}


# argv (after --config) -> exit code
CASES = [
    (["nosuch"], 2),
    (["run"], 2),  # --once is required
    (["fetch", "--feed", "nosuch"], 2),
    (["entries", "--feed", "nosuch"], 2),
    (["entries", "--since", "yesterday"], 2),
    (["entries", "--since", "2025-13-45"], 2),
    (["entries", "--limit", "many"], 2),
    (["explain", "99999"], 1),
    (["rules", "test", "/nonexistent/feed.xml"], 1),
    (["rules", "test", "--since", "forever"], 2),
    (["subscribers", "add", "not-an-address"], 2),
    (["subscribers", "add", "ann@example.org", "--timezone", "Mars/Base"], 2),
    (["subscribers", "add", "ann@example.org", "--time", "25:00"], 2),
    (["subscribers", "add", "ann@example.org", "--weekday", "someday", "--cadence", "weekly"], 2),
    (["subscribers", "add", "ann@example.org", "--max-stories", "lots"], 2),
    (["subscribers", "add", "ann@example.org", "--tags", "nonsense"], 2),
    (["subscribers", "add", "ann@example.org", "--topics", "sports"], 2),
    (["subscribers", "remove", "nobody@example.org"], 1),
    (["subscribers", "remove", "not an address"], 2),
    (["subscribers", "import", "/nonexistent.csv"], 1),
    (["subscribers", "import", "{bad_csv}"], 2),
    (["subscribers", "import", "{binary_csv}"], 2),
    (["feeds", "import", "/nonexistent.opml"], 2),
    (["feeds", "import", "{bad_opml}"], 2),
    (["preview", "--subscriber", "nobody@example.org"], 1),
    (["preview", "--output", "/nonexistent/x.html"], 2),
    (["preview", "--output", "x.pdf"], 2),
    (["send", "--to", "not an address"], 2),
    (["serve", "--port", "99999"], 2),
    (["daemon", "--metrics-port", "70000"], 2),
    (["serve", "--host", "192.0.2.1"], 2),  # TEST-NET-1 (RFC 5737): not this machine
    (["status", "--config", "/nonexistent.yaml"], 2),
    (["bounces"], 2),  # no bounce mailbox configured
]


@pytest.mark.parametrize(
    ("argv", "code"), CASES, ids=lambda v: " ".join(v) if isinstance(v, list) else str(v)
)
def test_a_mistake_on_the_command_line_is_an_exit_code_and_no_traceback(offline, bad_files, argv, code):
    args = [a.format(**bad_files) if a.startswith("{") else a for a in argv]
    result, traceback = invoke(["--config", str(offline), *args])
    assert not traceback, result.exc_info
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    said = [line for line in result.output.splitlines() if line.strip()]
    assert said, "a failure says why"
