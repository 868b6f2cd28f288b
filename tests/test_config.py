"""Config: every bad input gets one line naming the file, the key path and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from digest.config import load_config, parse_config
from digest.errors import ConfigError


def load(text: str, tmp_path: Path):
    p = tmp_path / "feeds.yaml"
    p.write_text(text, encoding="utf-8")
    return load_config(p)


def error_of(text: str, tmp_path: Path) -> str:
    with pytest.raises(ConfigError) as exc:
        load(text, tmp_path)
    return str(exc.value)


def test_shipped_feeds_yaml_is_valid_and_embedded_defaults_load(monkeypatch, tmp_path):
    root = Path(__file__).resolve().parent.parent
    shipped = load_config(root / "feeds.yaml")
    assert len(shipped.config.feeds) >= 8
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DIGEST_CONFIG", raising=False)
    embedded = load_config(None)
    assert embedded.source == "embedded feeds.yaml"
    assert embedded.config.feeds == shipped.config.feeds


def test_unknown_key_names_the_path_and_the_allowed_keys(tmp_path):
    msg = error_of("feeds:\n  - name: a\n    url: https://a.example/f\n    intervall: 5m\n", tmp_path)
    assert "feeds.yaml: feeds[0].intervall: unknown key" in msg
    assert "interval" in msg  # the allowed keys are listed


def test_bad_url_is_named(tmp_path):
    msg = error_of("feeds:\n  - name: a\n    url: htp://x\n", tmp_path)
    assert "feeds[0].url" in msg and "not an http(s) or file URL" in msg


def test_yaml_syntax_error_names_the_line(tmp_path):
    msg = error_of("http:\n  concurrency: [1,\n", tmp_path)
    assert "not valid YAML" in msg and "line" in msg


def test_duplicate_feed_names_are_rejected(tmp_path):
    msg = error_of("feeds:\n  - {name: a, url: 'https://a/f'}\n  - {name: a, url: 'https://b/f'}\n", tmp_path)
    assert "used twice" in msg


def test_durations_and_sizes_are_readable(tmp_path):
    c = load(
        "http:\n  deadline: 1m30s\n  max_body: 2 MiB\nfeeds:\n  - {name: a, url: 'https://a/f', "
        "interval: 2h}\n",
        tmp_path,
    ).config
    assert c.http.deadline == 90 and c.http.max_body == 2 * 2**20 and c.feeds[0].interval == 7200
    assert "is not a duration" in error_of("http:\n  deadline: soon\n", tmp_path)


def test_env_vars_expand_and_a_missing_one_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("DIGEST_TEST_DB", "sqlite:///x.db")
    assert load("database: ${DIGEST_TEST_DB}\n", tmp_path).database_url.endswith("/x.db")
    monkeypatch.delenv("DIGEST_TEST_DB")
    msg = error_of("database: ${DIGEST_TEST_DB}\n", tmp_path)
    assert "database: environment variable DIGEST_TEST_DB is not set" in msg
    assert load("database: ${DIGEST_TEST_DB:-sqlite:///y.db}\n", tmp_path).database_url.endswith("/y.db")


def test_relative_sqlite_path_and_feed_path_resolve_beside_the_config(tmp_path):
    loaded = load("database: sqlite:///data/d.db\n", tmp_path)
    assert loaded.database_url == f"sqlite:///{tmp_path / 'data' / 'd.db'}"
    assert loaded.feed_url("local/f.xml") == (tmp_path / "local" / "f.xml").as_uri()


def test_bad_time_zone_and_too_frequent_polling(tmp_path):
    assert "IANA time zone" in error_of(
        "feeds:\n  - {name: a, url: 'https://a/f', timezone: Mars/Base}\n", tmp_path
    )
    assert "impolite" in error_of("feeds:\n  - {name: a, url: 'https://a/f', interval: 10s}\n", tmp_path)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_top_level_must_be_a_mapping(tmp_path):
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        parse_config("- a\n- b\n", "x.yaml", tmp_path)


def test_commands_that_mail_links_warn_once_when_base_url_is_not_https(offline: Path):
    from click.testing import CliRunner

    from digest.apps.cli import main

    runner = CliRunner()
    sent = runner.invoke(main, ["--config", str(offline), "send", "--dry-run"])
    warnings = [line for line in sent.output.splitlines() if "warning" in line]
    assert warnings == [
        "digest: warning: delivery.base_url is 'http://localhost:8080', not https: Gmail and Yahoo ignore "
        "one-click unsubscribe over http; serve `digest serve` behind https and set base_url to that URL"
    ]
    listing = runner.invoke(main, ["--config", str(offline), "feeds", "list"])
    assert "warning" not in listing.output  # only where links are made
    offline.write_text(
        offline.read_text().replace("delivery:\n", "delivery:\n  base_url: https://news.example\n")
    )
    assert "warning" not in runner.invoke(main, ["--config", str(offline), "send", "--dry-run"]).output
