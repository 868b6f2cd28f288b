"""Loopback SMTP servers that misbehave on purpose, and a database of due subscribers to send to.

Used by tests/test_faults.py and bench/faults.py. The servers are real (aiosmtpd, or a bare
socket that never greets) on 127.0.0.1; what each stored is recorded with the Message-ID and
the connection it came on, so a test can count lost and duplicated digests and check that every
duplicate carries the same Message-ID.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from aiosmtpd.controller import Controller

ROOT = Path(__file__).resolve().parent.parent.parent
DIGEST = [sys.executable, "-m", "digest"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Stored:
    recipient: str
    message_id: str
    connection: tuple[str, int]  # the client's address and port: one per SMTP connection


@dataclass
class Faults:
    """What the server does, message by message (each counter is used up as it fires)."""

    tempfail: int = 0  # 451 to RCPT
    drop_before: int = 0  # hang up during DATA, storing nothing
    drop_after: int = 0  # store the message, then hang up without the reply (a lost reply)
    delay: float = 0.0  # seconds before each DATA reply (lets senders overlap, or be killed mid-run)


@dataclass
class Recorder:
    """aiosmtpd handler: stores and records messages, with the faults asked for."""

    faults: Faults = field(default_factory=Faults)
    stored: list[Stored] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # type: ignore[no-untyped-def]
        with self.lock:
            if self.faults.tempfail:
                self.faults.tempfail -= 1
                return "451 4.3.0 Try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]
        if self.faults.delay:
            await asyncio.sleep(self.faults.delay)
        with self.lock:
            if self.faults.drop_before:
                self.faults.drop_before -= 1
                server.transport.close()
                return "421 closing"
            msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
            for rcpt in envelope.rcpt_tos:
                self.stored.append(Stored(rcpt, str(msg["Message-ID"]), tuple(session.peer)))
            if self.faults.drop_after:
                self.faults.drop_after -= 1
                server.transport.close()  # stored, but the sender never hears so
                return "421 closing"
        return "250 Message accepted for delivery"

    def count(self) -> int:
        with self.lock:
            return len(self.stored)

    def tally(self, expected: list[str]) -> Tally:
        with self.lock:
            stored = list(self.stored)
        return Tally.of(stored, expected)


@dataclass(frozen=True)
class Tally:
    delivered: int  # distinct recipients who got their digest
    lost: int  # recipients due who got nothing
    duplicated: int  # extra copies
    same_id: int  # extra copies with the first copy's Message-ID
    connections: int  # SMTP connections that carried a message

    @classmethod
    def of(cls, stored: list[Stored], expected: list[str]) -> Tally:
        copies = Counter(s.recipient for s in stored)
        first: dict[str, str] = {}
        same = 0
        for s in stored:
            if s.recipient in first:
                same += s.message_id == first[s.recipient]
            else:
                first[s.recipient] = s.message_id
        return cls(
            delivered=len(copies),
            lost=sum(1 for r in expected if r not in copies),
            duplicated=sum(n - 1 for n in copies.values()),
            same_id=same,
            connections=len({s.connection for s in stored}),
        )


class MailServer:
    """`with MailServer(Faults(...)) as srv:` srv.port, srv.recorder."""

    def __init__(self, faults: Faults | None = None, port: int | None = None) -> None:
        self.recorder = Recorder(faults or Faults())
        self.port = port or free_port()
        # port=0 does not work with aiosmtpd's readiness check: one is picked here
        self.controller = Controller(self.recorder, hostname="127.0.0.1", port=self.port)

    def __enter__(self) -> MailServer:
        self.controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.controller.stop()


class SilentServer:
    """Accepts connections and never says a word (no greeting): the connection is held open."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(512)
        self.port = int(self.sock.getsockname()[1])
        self.held: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def _accept(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.held.append(conn)

    def __enter__(self) -> SilentServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        for c in self.held:
            c.close()
        self.sock.close()


def build_world(
    work: Path,
    db_url: str,
    subscribers: int,
    smtp_port: int,
    *,
    lease: str = "2s",
    connections: int = 4,
    feeds: list[tuple[str, str]] | None = None,
    daemon: str = "",
) -> tuple[Path, list[str]]:
    """A feeds.yaml and a database with `subscribers` subscribers, each with a digest due now
    (the offline example feeds, fetched now) -> (config path, their addresses)."""
    from digest.config import load_config
    from digest.model.subscribers import make_subscriber
    from digest.service.fetching import FetchOptions, fetch_feeds
    from digest.service.organising import organise
    from digest.storage.store import Store

    src = work / "feeds"
    if not src.exists():
        shutil.copytree(ROOT / "examples" / "offline", src)
    feeds = feeds or [
        ("example-wire", f"{src / 'wire.xml'}"),
        ("vestnik-ru", f"{src / 'vestnik-ru.xml'}"),
        ("shiping-zh", f"{src / 'shiping-zh.xml'}"),
    ]
    lines = "".join(f"  - {{name: {n}, url: '{u}'}}\n" for n, u in feeds)
    cfg = work / "feeds.yaml"
    cfg.write_text(
        f"database: '{db_url}'\n"
        "max_age: 3650d\n"  # the example's news is of 2025: not old news here
        f"feeds:\n{lines}"
        "delivery:\n  transport: smtp\n"
        f"  smtp: {{host: 127.0.0.1, port: {smtp_port}, security: none, retries: 2, retry_delay: 0.05,"
        f" connections: {connections}}}\n"
        f"  lease: {lease}\n  secret: faults\n  sender: 'Digest <digest@example.org>'\n"
        "  base_url: https://digest.example.org\n" + daemon,
        encoding="utf-8",
    )
    loaded = load_config(cfg)
    now = datetime.now(UTC)
    addresses = [f"reader{i}@example.org" for i in range(subscribers)]
    with Store(loaded.database_url) as store:
        asyncio.run(fetch_feeds(loaded, store, FetchOptions()))
        organise(loaded, store)
        for a in addresses:  # 00:00 UTC daily: due now, whenever now is
            store.add_subscriber(make_subscriber({"email": a, "send_time": "00:00", "timezone": "UTC"}), now)
    return cfg, addresses


def digest(cfg: Path, *args: str, **kw: object) -> subprocess.Popen[str]:
    """`digest --config cfg ARGS` as a process of its own."""
    # this checkout's digest, whichever interpreter runs the tests
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": path}
    return subprocess.Popen(  # type: ignore[call-overload, no-any-return]
        [*DIGEST, "--config", str(cfg), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=cfg.parent,
        **kw,
    )


def wait_for(predicate: object, timeout: float, step: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(step)
    return False
