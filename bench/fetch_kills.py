#!/usr/bin/env python3
"""Kill `digest fetch` while its workers are fetching: how many workers are still alive 2 s later?

A loopback feed server drips every feed slowly, so the workers are mid-fetch when the main
process is killed (kill -9, or SIGTERM). The workers' pids are read from /proc before the kill;
2 s after it, each is either gone or still running. Issue 12 asks for 0 (before: 40 orphans
after 44 kills, blocked writing to a pipe nobody read).

    python bench/fetch_kills.py [--runs 30]

kill_during_fetch() is one run, for other benches (bench/faults.py) and for tests.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.feedserver import FeedServer, Reply, make_items, rss  # noqa: E402

FEEDS = 24  # enough for two workers (workers.MIN_FEEDS_PER_WORKER feeds each)
HOSTS = tuple(f"127.0.0.{i}" for i in range(1, 5))  # one host's feeds stay in one worker: four hosts
GRACE = 2.0  # issue 12: workers exit within 2 s of their parent's death


@dataclass(frozen=True)
class KillResult:
    signal: str
    workers: int  # worker processes seen before the kill
    alive: int  # of those, still running GRACE seconds after it


def children_of(pid: int) -> list[int]:
    """The live (not zombie) processes whose parent is `pid`, from /proc."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            state = _stat(int(entry))
            if state is not None and state[1] == pid and state[0] != "Z":
                out.append(int(entry))
    return out


def running(pid: int) -> bool:
    """True while `pid` runs (a zombie, dead but not yet reaped by its new parent, is not running)."""
    state = _stat(pid)
    return state is not None and state[0] not in ("Z", "X")


def _stat(pid: int) -> tuple[str, int] | None:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return fields[0], int(fields[1])


def write_config(folder: Path, server: FeedServer, database: str | None = None) -> Path:
    body = rss(make_items(0, 20))
    lines = [f"database: '{database or 'sqlite:///' + str(folder / 'digest.db')}'", "http:",
             "  deadline: 60s", "  read_timeout: 30s", "feeds:"]  # fmt: skip
    for i in range(FEEDS):
        server.route(f"/slow{i}.xml", Reply(body=body, drip=0.05))
        url = server.url(f"/slow{i}.xml", HOSTS[i % len(HOSTS)])
        lines.append(f"  - {{name: slow{i}, url: '{url}'}}")
    path = folder / "feeds.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def kill_during_fetch(config: Path, server: FeedServer, sig: signal.Signals = signal.SIGKILL) -> KillResult:
    """Start `digest fetch`, wait until every host is being fetched from, send `sig`, count survivors.

    `server`: a FeedServer(hosts=HOSTS) that `config` (write_config) points at."""
    seen = len(server.log)
    env = {**os.environ, "FORCE_TERMINAL": ""}
    proc = subprocess.Popen(
        [sys.executable, "-m", "digest", "--config", str(config), "fetch"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    try:
        deadline = time.monotonic() + 60
        while len({r.host for r in server.log[seen:]}) < len(HOSTS) and time.monotonic() < deadline:
            time.sleep(0.05)
        workers = children_of(proc.pid)
        proc.send_signal(sig)
        proc.wait(30)
        time.sleep(GRACE)
        alive = [w for w in workers if running(w)]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    for w in alive:  # leave nothing behind for the next run
        with _quiet():
            os.kill(w, signal.SIGKILL)
    return KillResult(sig.name, len(workers), len(alive))


class _quiet:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return isinstance(exc[1], ProcessLookupError)


def row(results: list[KillResult]) -> str:
    """One line of bench/faults.py's table: runs, workers seen, workers alive 2 s after the kill."""
    kinds = ", ".join(sorted({r.signal for r in results}))
    return (
        f"fetch killed ({kinds}): {len(results)} runs, {sum(r.workers for r in results)} workers, "
        f"{sum(r.alive for r in results)} alive {GRACE:g} s later"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=30)
    args = ap.parse_args()
    with FeedServer(hosts=HOSTS) as server, tempfile.TemporaryDirectory() as tmp:
        config = write_config(Path(tmp), server)
        for sig in (signal.SIGKILL, signal.SIGTERM):
            results = [kill_during_fetch(config, server, sig) for _ in range(args.runs)]
            print(row(results), flush=True)


if __name__ == "__main__":
    main()
