from __future__ import annotations

import contextlib
import os
import shutil
import textwrap
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from starlette.testclient import TestClient

from digest.config import LoadedConfig, load_config
from tests.support.feedserver import FeedServer

PG_URL = os.environ.get("DIGEST_TEST_DATABASE_URL")
BACKENDS = ["sqlite"] + (["postgresql"] if PG_URL else [])


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database: a SQLite file, or a schema of its own on the PostgreSQL server."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'test.db'}"
        return
    assert PG_URL
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    url = sa.engine.make_url(PG_URL).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def offline(tmp_path: Path, db_url: str) -> Path:
    """A copy of examples/offline (config and feed files) using the test database."""
    dest = tmp_path / "offline"
    shutil.copytree(Path(__file__).resolve().parent.parent / "examples" / "offline", dest)
    cfg = dest / "feeds.yaml"
    cfg.write_text(cfg.read_text().replace("sqlite:///digest.db", f"'{db_url}'"))
    return cfg


@pytest.fixture
def started() -> Iterator[Callable[..., TestClient]]:
    """started(app, **kw): a TestClient on `app` after its start-up (Starlette runs an app's
    lifespan only inside `with TestClient(app)`), shut down when the test ends."""
    with contextlib.ExitStack() as stack:
        yield lambda app, **kw: stack.enter_context(TestClient(app, **kw))


@pytest.fixture
def feed_server() -> Iterator[FeedServer]:
    with FeedServer() as srv:
        yield srv


@pytest.fixture
def write_config(tmp_path: Path, db_url: str):
    """write_config(feeds_yaml_fragment, **http) -> LoadedConfig, with the test database."""

    def make(body: str = "feeds: []\n", http: dict[str, object] | None = None) -> LoadedConfig:
        http_settings = {"deadline": "5s", "connect_timeout": "2s", "read_timeout": "2s", **(http or {})}
        http_yaml = "".join(f"  {k}: {v}\n" for k, v in http_settings.items())
        text = f"database: '{db_url}'\nhttp:\n{http_yaml}" + textwrap.dedent(body)
        path = tmp_path / "feeds.yaml"
        path.write_text(text, encoding="utf-8")
        return load_config(path)

    return make


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say so when the PostgreSQL half of the storage tests did not run: a green run on SQLite
    alone is easy to mistake for a green run on both."""
    if not PG_URL:
        terminalreporter.write_line(
            "digest: the PostgreSQL half of the storage tests did not run: DIGEST_TEST_DATABASE_URL "
            "was unset (e.g. postgresql+psycopg://postgres@127.0.0.1:5432/test)",
            yellow=True,
        )
