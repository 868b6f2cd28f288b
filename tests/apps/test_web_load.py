"""The web app under many requests at once: one store for its lifetime, database work off the
event loop. A real uvicorn server on 127.0.0.1 and httpx's async client, on both databases."""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import sqlalchemy as sa
import uvicorn

from digest.apps.web import create_app
from digest.config import LoadedConfig
from digest.model.subscribers import Subscriber
from digest.service.fetching import FetchOptions, fetch_feeds, utcnow
from digest.service.organising import organise
from digest.service.sending import send_due
from digest.storage.store import Store
from tests.apps.test_web import link_in, mails, site  # noqa: F401  (site: a fixture)


@contextlib.contextmanager
def serving(loaded: LoadedConfig) -> Iterator[str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(create_app(loaded), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@contextlib.contextmanager
def statements() -> Iterator[list[tuple[int, str]]]:
    """Every SQL statement any engine in this process runs meanwhile, as (engine id, SQL), through
    SQLAlchemy's public event API (ConnectionEvents.before_cursor_execute on the Engine class)."""
    seen: list[tuple[int, str]] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append((id(conn.engine), statement))

    sa.event.listen(sa.engine.Engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        sa.event.remove(sa.engine.Engine, "before_cursor_execute", record)


def sent_digest(loaded: LoadedConfig, src: Any, address: str) -> str:
    """A subscriber with one digest sent -> the digest's web copy, as linked from the mail."""
    with Store(loaded.database_url) as store:
        store.add_subscriber(Subscriber(address), utcnow())
        asyncio.run(fetch_feeds(loaded, store, FetchOptions()))
        organise(loaded, store)
        [report] = asyncio.run(send_due(loaded, store, now=utcnow(), only=address))
    assert report.state == "sent"
    return link_in(mails(src)[-1], "archive")


async def get_all(base: str, paths: list[str]) -> list[int]:
    limits = httpx.Limits(max_connections=len(paths))
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=60) as client:
        responses = await asyncio.gather(*(client.get(p) for p in paths))
    return [r.status_code for r in responses]


def test_two_hundred_requests_at_once_all_succeed_through_one_engine_checked_once(site):  # noqa: F811
    _, loaded, src = site
    digest = sent_digest(loaded, src, "many@example.org")
    listing = digest.rsplit("/", 1)[0]
    paths = [
        ("/subscribe", listing, digest, f"/search{listing.removeprefix('/archive')}?q=SCO")[i % 4]
        for i in range(200)
    ]
    with statements() as seen, serving(loaded) as base:
        codes = asyncio.run(get_all(base, paths))
    assert codes == [200] * 200
    engines = {engine for engine, _ in seen}
    version_reads = [sql for _, sql in seen if re.search(r"(?i)from\s+alembic_version", sql)]
    assert len(engines) == 1  # one engine (and its pool) for the app's life, not one per request
    assert len(version_reads) == 1  # the schema checked once, at start-up


def test_a_request_waiting_on_the_database_does_not_hold_up_the_others(site, db_url):  # noqa: F811
    _, loaded, _ = site

    async def scenario(base: str, release: Any) -> tuple[int, int, bool]:
        async with httpx.AsyncClient(base_url=base, timeout=60) as client:
            form = await client.get("/subscribe")
            token = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)  # type: ignore[union-attr]
            data = {"csrf": token, "email": "wait@example.org", "topics": ["sco"], "timezone": "UTC"}
            cookie = {"Cookie": f"csrf={token}"}  # the site's cookie is Secure (an https base_url)
            signing_up = asyncio.create_task(client.post("/subscribe", data=data, headers=cookie))
            await asyncio.sleep(0.5)  # let it reach the database, where its write waits
            other = await client.get("/subscribe")  # served meanwhile
            still_waiting = not signing_up.done()
            release()
            return (await signing_up).status_code, other.status_code, still_waiting

    with serving(loaded) as base:
        # another writer holds the database: the sign-up reads, and its write waits
        if db_url.startswith("sqlite"):  # for up to SQLite's busy_timeout, 10 s
            holder = sqlite3.connect(sa.engine.make_url(db_url).database or "", isolation_level=None)
            holder.execute("BEGIN IMMEDIATE")
            signed_up, other, waited = asyncio.run(scenario(base, lambda: holder.execute("COMMIT")))
            holder.close()
        else:  # EXCLUSIVE mode: reads go on, writes wait
            engine = sa.create_engine(db_url)
            with engine.connect() as conn:
                conn.execute(sa.text("LOCK TABLE subscribers IN EXCLUSIVE MODE"))
                signed_up, other, waited = asyncio.run(scenario(base, conn.commit))
            engine.dispose()
    assert other == 200 and waited  # the page was served while the sign-up waited on the database
    assert signed_up == 200  # and the sign-up went through once the lock was gone
    with Store(loaded.database_url) as store:
        assert store.list_subscribers(email="wait@example.org")[0].status == "pending"
