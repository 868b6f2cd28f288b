#!/usr/bin/env python3
"""Exactly once under faults: real `digest` processes side by side, killed, or facing a dead SMTP
server, against a loopback aiosmtpd server that records every message it stores.

    python bench/faults.py [--runs 10] [--subscribers 300] [--kills 30] [--down 1000]
                           [--postgres postgresql+psycopg://postgres@127.0.0.1:5432/test]

Scenarios (each on SQLite and, given --postgres, PostgreSQL; every run on a fresh database):
  send + run --once    `digest send` and `digest run --once` started together
  send + daemon        `digest send` started beside a running `digest daemon`
  two daemons          two daemons on one database: feeds fetched once, digests sent once, both work
  daemon killed        two daemons sending, one killed with SIGKILL: the other sends the rest
  kill -9 send         `digest send` killed with SIGKILL mid-run, then run again after the lease
  smtp down            N due, a server that never greets: seconds until the run ends (exit 1,
                       one line); then a live server: what arrives

Columns: runs, kills, lost (due subscribers with no copy), duplicated (extra copies), same id
(extra copies with the first copy's Message-ID), and a note.
"""

from __future__ import annotations

import argparse
import re
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import sqlalchemy as sa  # noqa: E402

from tests.support.feedserver import FeedServer, Reply  # noqa: E402
from tests.support.mailfaults import (  # noqa: E402
    Faults,
    MailServer,
    SilentServer,
    Tally,
    build_world,
    digest,
    wait_for,
)

LEASE = "2s"


@dataclass
class Row:
    scenario: str
    backend: str
    runs: int = 0
    kills: int = 0
    lost: int = 0
    duplicated: int = 0
    same_id: int = 0
    notes: list[str] = field(default_factory=list)

    def add(self, t: Tally) -> None:
        self.runs += 1
        self.lost += t.lost
        self.duplicated += t.duplicated
        self.same_id += t.same_id

    def line(self) -> str:
        note = "; ".join(self.notes)
        return (
            f"| {self.scenario:<16} | {self.backend:<10} | {self.runs:>4} | {self.kills:>5} | {self.lost:>4} "
            f"| {self.duplicated:>10} | {self.same_id:>7} | {note} |"
        )


@contextmanager
def database(backend: str, work: Path, pg: str | None) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{work / 'digest.db'}"
        return
    assert pg
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(pg)
    with admin.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    try:
        yield (
            sa.engine.make_url(pg)
            .update_query_dict({"options": f"-csearch_path={schema}"})
            .render_as_string(hide_password=False)
        )
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        admin.dispose()


@contextmanager
def fresh(backend: str, pg: str | None) -> Iterator[tuple[Path, str]]:
    work = Path(tempfile.mkdtemp(prefix="digest-faults-"))
    try:
        with database(backend, work, pg) as url:
            yield work, url
    finally:
        shutil.rmtree(work, ignore_errors=True)


def sent_by(output: str) -> int:
    """`digest send`'s own count of what it sent ("N sent, ...")."""
    found = re.findall(r"(\d+) sent", output)
    return int(found[-1]) if found else 0


def daemon_sent(log: str) -> int:
    return sum(int(n) for n in re.findall(r"send: (\d+) sent", log))


def side_by_side(backend: str, pg: str | None, runs: int, subs: int, other: str) -> Row:
    row = Row(f"send + {other}", backend)
    overlapped = 0
    for _ in range(runs):
        with fresh(backend, pg) as (work, url), MailServer(Faults(delay=0.01)) as srv:
            cfg, due = build_world(work, url, subs, srv.port, lease=LEASE, daemon="daemon: {tick: 1s}\n")
            if other == "run --once":
                a, b = digest(cfg, "send"), digest(cfg, "run", "--once")
                (oa, _), (ob, _) = a.communicate(timeout=300), b.communicate(timeout=300)
                split = (sent_by(oa), sent_by(ob))
            else:
                d = digest(cfg, "daemon")
                time.sleep(0.5)  # the daemon is starting up; its first send meets ours
                a = digest(cfg, "send")
                oa, _ = a.communicate(timeout=300)
                wait_for(lambda: srv.recorder.count() >= subs, 120, step=0.1)
                time.sleep(1.5)  # a tick more: anything extra would show
                d.send_signal(signal.SIGTERM)
                od, ed = d.communicate(timeout=120)
                split = (sent_by(oa), daemon_sent(od + ed))
            overlapped += min(split) > 0
            row.add(srv.recorder.tally(due))
    row.notes.append(f"{overlapped}/{runs} runs with both senders sending part")
    return row


def two_daemons(backend: str, pg: str | None, runs: int, subs: int) -> Row:
    row = Row("two daemons", backend)
    both = fetched_once = 0
    offline = ROOT / "examples" / "offline"
    names = ("wire.xml", "vestnik-ru.xml", "shiping-zh.xml")
    for _ in range(runs):
        with fresh(backend, pg) as (work, url), FeedServer() as feeds, MailServer(Faults(delay=0.01)) as srv:
            served = []
            for n in names:
                feeds.route(f"/{n}", Reply(body=(offline / n).read_bytes()))
                served.append((f"live-{n.split('.')[0]}", feeds.url(f"/{n}")))
            cfg, due = build_world(work, url, subs, srv.port, lease=LEASE, daemon="daemon: {tick: 1s}\n")
            head, rest = cfg.read_text().split("delivery:", 1)
            lines = "".join(f"  - {{name: {n}, url: '{u}', interval: 1h}}\n" for n, u in served)
            cfg.write_text(head + lines + "delivery:" + rest)
            ds = [digest(cfg, "daemon"), digest(cfg, "daemon")]
            wait_for(lambda: srv.recorder.count() >= subs, 120, step=0.1)
            time.sleep(3)  # more ticks: a second fetch or send would show
            for d in ds:
                d.send_signal(signal.SIGTERM)
            logs = [o + e for o, e in (d.communicate(timeout=120) for d in ds)]
            both += all(daemon_sent(log) > 0 for log in logs)
            fetched_once += all(len(feeds.requests_for(f"/{n}")) == 1 for n in names)
            row.add(srv.recorder.tally(due))
    row.notes.append(f"each feed fetched once in {fetched_once}/{runs}; both daemons sent in {both}/{runs}")
    return row


def daemon_killed(backend: str, pg: str | None, runs: int, subs: int) -> Row:
    """Two daemons sending; one is killed with SIGKILL mid-send: the other sends the rest,
    taking over the dead one's claims when their lease runs out."""
    row = Row("daemon killed", backend)
    slowest = 0.0
    for _ in range(runs):
        with fresh(backend, pg) as (work, url), MailServer(Faults(delay=0.05)) as srv:
            cfg, due = build_world(work, url, subs, srv.port, lease=LEASE, daemon="daemon: {tick: 1s}\n")
            victim, survivor = digest(cfg, "daemon"), digest(cfg, "daemon")
            wait_for(lambda: srv.recorder.count() >= subs // 4, 120, step=0.01)
            victim.send_signal(signal.SIGKILL)
            victim.wait()
            row.kills += 1
            killed_at = time.monotonic()
            wait_for(lambda: srv.recorder.count() >= subs, 120, step=0.05)
            slowest = max(slowest, time.monotonic() - killed_at)
            time.sleep(1.5)
            survivor.send_signal(signal.SIGTERM)
            survivor.communicate(timeout=120)
            row.add(srv.recorder.tally(due))
    row.notes.append(
        f"the survivor had sent everything at most {slowest:.1f} s after the kill (lease {LEASE})"
    )
    return row


def kill_during_send(backend: str, pg: str | None, kills: int, subs: int) -> Row:
    row = Row("kill -9 send", backend)
    worst = 0
    for _ in range(kills):
        with fresh(backend, pg) as (work, url), MailServer(Faults(delay=0.01)) as srv:
            cfg, due = build_world(work, url, subs, srv.port, lease=LEASE)
            p = digest(cfg, "send")
            wait_for(lambda: srv.recorder.count() >= subs // 3, 120, step=0.005)
            p.send_signal(signal.SIGKILL)
            p.wait()
            row.kills += 1
            conns = srv.recorder.tally(due).connections
            time.sleep(2.2)  # the lease runs out
            digest(cfg, "send").communicate(timeout=300)
            t = srv.recorder.tally(due)
            worst = max(worst, t.duplicated)  # a fresh database each kill: all of them this kill's
            row.add(t)
            if t.duplicated > conns:
                row.notes.append(f"a kill repeated {t.duplicated} over {conns} connections")
    row.notes.append(f"most duplicates after one kill: {worst} (4 SMTP connections)")
    return row


def smtp_down(backend: str, pg: str | None, runs: int, subs: int) -> Row:
    row = Row("smtp down", backend)
    longest, one_lines = 0.0, 0
    for _ in range(runs):
        with fresh(backend, pg) as (work, url):
            with SilentServer() as silent:
                cfg, due = build_world(work, url, subs, silent.port, lease=LEASE)
                started = time.monotonic()
                p = digest(cfg, "send")
                _, err = p.communicate(timeout=300)
                longest = max(longest, time.monotonic() - started)
                one_line = p.returncode == 1 and len(err.strip().splitlines()) == 1
                one_lines += one_line
                if not one_line:
                    row.notes.append(f"exit {p.returncode}: {err.strip()[:200]}")
            with MailServer(port=silent.port) as srv:  # the server is back
                digest(cfg, "send").communicate(timeout=300)
                row.add(srv.recorder.tally(due))
    row.notes.append(
        f"{subs} due, never greets: the run ended in at most {longest:.1f} s; "
        f"exit 1 with one line in {one_lines}/{runs}"
    )
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--subscribers", type=int, default=300)
    ap.add_argument("--kills", type=int, default=30)
    ap.add_argument("--down", type=int, default=1000, help="subscribers due while SMTP is down")
    ap.add_argument("--down-runs", type=int, default=1)
    ap.add_argument("--postgres", default=None, help="a PostgreSQL URL (a schema per run is made in it)")
    ap.add_argument("--only", default=None, help="one scenario: once, daemon, daemons, takeover, kill, down")
    a = ap.parse_args()
    backends = ["sqlite"] + (["postgresql"] if a.postgres else [])
    print(f"runs {a.runs}, {a.subscribers} subscribers, {a.kills} kills, lease {LEASE}\n")
    print("| scenario         | backend    | runs | kills | lost | duplicated | same id | note |")
    print("|---|---|---:|---:|---:|---:|---:|---|")
    for backend in backends:
        jobs = {
            "once": partial(side_by_side, backend, a.postgres, a.runs, a.subscribers, "run --once"),
            "daemon": partial(side_by_side, backend, a.postgres, a.runs, a.subscribers, "daemon"),
            "daemons": partial(two_daemons, backend, a.postgres, a.runs, a.subscribers),
            "takeover": partial(daemon_killed, backend, a.postgres, a.runs, a.subscribers),
            "kill": partial(kill_during_send, backend, a.postgres, a.kills, a.subscribers),
            "down": partial(smtp_down, backend, a.postgres, a.down_runs, a.down),
        }
        for name, job in jobs.items():
            if a.only and name != a.only:
                continue
            print(job().line(), flush=True)


if __name__ == "__main__":
    main()
