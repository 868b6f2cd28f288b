#!/usr/bin/env python3
"""Fetch benchmark: `digest fetch` against rss2email 3.14 on the same loopback feed server.

N feeds x M items spread over many loopback addresses (127.0.0.1 ... 127.0.0.H, one port:
real feeds come from many hosts), each answer delayed by a latency, ETag/304 supported; the
server runs in a process of its own. Cold = empty database; warm = nothing new (every feed
answers 304). Each program runs from a throwaway venv of its own: rss2email 3.14 from PyPI,
digest from this checkout (`pip install .`, as a user installs it). Runs each case R times
and prints medians, plus the single-core CPU time feedparser needs for the same bodies.

    python bench/fetch_bench.py                       # 200 feeds x 50 items, 50 ms, with rss2email
    python bench/fetch_bench.py --feeds 1000 --no-r2e # the memory case
"""

from __future__ import annotations

import argparse
import io
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from common import Run, digest_venv, in_project_env, measure, median, rss2email_venv

in_project_env()

from tests.support.feedserver import FeedServer, Reply, etag_of, make_items, rss  # noqa: E402


def build_server(
    n_feeds: int, n_items: int, hosts: int, latency: float
) -> tuple[FeedServer, list[str], list[bytes]]:
    addrs = tuple(f"127.0.0.{i + 1}" for i in range(hosts))
    srv = FeedServer(hosts=addrs, latency=latency)
    bodies = []
    for i in range(n_feeds):
        body = rss(make_items(i, n_items), title=f"Bench feed {i}")
        bodies.append(body)
        srv.route(
            f"/feed{i}.xml",
            Reply(
                body=body, etag=etag_of(body), headers={"Content-Type": "application/rss+xml; charset=utf-8"}
            ),
        )
    srv.__enter__()
    urls = [srv.url(f"/feed{i}.xml", host=addrs[i % hosts]) for i in range(n_feeds)]
    return srv, urls, bodies


def _serve(conn, n_feeds: int, n_items: int, hosts: int, latency: float) -> None:  # type: ignore[no-untyped-def]
    srv, urls, _ = build_server(n_feeds, n_items, hosts, latency)
    conn.send(urls)
    conn.recv()  # until told to stop
    srv.__exit__(None, None, None)


class ServerProcess:
    """The feed server in a process of its own: the bench process's RSS sampler then never
    holds the server's GIL (that delayed answers by ~0.1 s a run, and hurt the program that
    has many requests in flight more than the one that has one)."""

    def __init__(self, n_feeds: int, n_items: int, hosts: int, latency: float) -> None:
        ctx = multiprocessing.get_context("fork")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_serve, args=(child, n_feeds, n_items, hosts, latency), daemon=True)
        self.proc.start()
        self.urls: list[str] = self.conn.recv()

    def close(self) -> None:
        self.conn.send("stop")
        self.proc.join(10)


def digest_config(work: Path, urls: list[str], concurrency: int = 200) -> Path:
    lines = [f"database: sqlite:///{work / 'bench.db'}", f"http:\n  concurrency: {concurrency}", "feeds:"]
    lines += [f"  - name: f{i}\n    url: {u}" for i, u in enumerate(urls)]
    path = work / "feeds.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def r2e_config(work: Path, urls: list[str]) -> tuple[Path, Path]:
    cfg, data = work / "r2e.cfg", work / "r2e.json"
    lines = ["[DEFAULT]", "to = bench@example.org", "from = bench@example.org", ""]
    for i, u in enumerate(urls):
        lines += [f"[feed.f{i}]", f"url = {u}", ""]
    cfg.write_text("\n".join(lines))
    data.unlink(missing_ok=True)
    return cfg, data


def feedparser_cpu(bodies: list[bytes], runs: int = 3) -> tuple[float, float]:
    """Single-core CPU seconds to parse every body (median of `runs`): feedparser as rss2email
    calls it, and digest's parse."""
    import feedparser

    from digest.feeds.parse import parse_feed

    now = datetime.now(UTC)
    plain, ours = [], []
    for _ in range(runs):
        t = time.process_time()
        for b in bodies:
            feedparser.parse(io.BytesIO(b), response_headers={"content-type": "application/rss+xml"})
        plain.append(time.process_time() - t)
        t = time.process_time()
        for i, b in enumerate(bodies):
            parse_feed(f"f{i}", b, content_type="application/rss+xml", fetched_at=now, url=f"http://h/{i}")
        ours.append(time.process_time() - t)
    return median(plain), median(ours)


# The daemon's poll, as it runs it: one long-lived process, every feed polled again and nothing new
_POLL = """
import sys, time
from digest import Digest, FetchOptions
with Digest() as d:
    d.fetch(FetchOptions(isolate=True))
    walls = []
    for _ in range(int(sys.argv[1])):
        t = time.perf_counter()
        d.fetch(FetchOptions(isolate=True))
        d.organise()
        walls.append(time.perf_counter() - t)
print(sorted(walls)[len(walls) // 2])
"""


def daemon_poll_cycle(python: Path, env: dict[str, str], runs: int) -> float:
    """Median wall seconds of a poll cycle (fetch | organise) inside one process, as the daemon
    does it every tick, when every feed answers 304."""
    done = subprocess.run([str(python), "-c", _POLL, str(runs)], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"the poll cycle failed:\n{done.stderr[-2000:]}")
    return float(done.stdout.split()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--feeds", type=int, default=200)
    ap.add_argument("--items", type=int, default=50)
    ap.add_argument("--latency", type=float, default=0.05, help="seconds before each answer")
    ap.add_argument("--hosts", type=int, default=50, help="loopback addresses the feeds are spread over")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--concurrency", type=int, default=200, help="digest's http.concurrency (default 200)")
    ap.add_argument("--no-r2e", action="store_true", help="skip rss2email")
    a = ap.parse_args()

    digest = str(digest_venv())
    srv = ServerProcess(a.feeds, a.items, a.hosts, a.latency)
    urls = srv.urls
    bodies = [rss(make_items(i, a.items), title=f"Bench feed {i}") for i in range(a.feeds)]
    work = Path(tempfile.mkdtemp(prefix="digest-bench-"))
    cfg = digest_config(work, urls, a.concurrency)
    env = dict(os.environ, DIGEST_CONFIG=str(cfg))
    print(
        f"{a.feeds} feeds x {a.items} items over {a.hosts} loopback hosts, "
        f"{a.latency * 1000:.0f} ms latency, digest concurrency {a.concurrency}, "
        f"{sum(map(len, bodies)) / 2**20:.1f} MiB of feeds; {os.cpu_count()} cores; median of {a.runs} runs"
    )

    results: dict[str, list[Run]] = {"digest cold": [], "digest warm": [], "r2e cold": [], "r2e warm": []}
    for _ in range(a.runs):
        (work / "bench.db").unlink(missing_ok=True)
        for case in ("cold", "warm"):
            run = measure([digest, "fetch", "-q"], env=env)
            if run.returncode != 0:
                sys.exit(f"digest fetch failed ({run.returncode}):\n{run.stderr[-2000:]}")
            results[f"digest {case}"].append(run)
    poll = daemon_poll_cycle(Path(digest).parent / "python", env, a.runs)
    if not a.no_r2e:
        r2e = str(rss2email_venv())
        for _ in range(a.runs):
            rcfg, rdata = r2e_config(work, urls)
            for case in ("cold", "warm"):
                run = measure([r2e, "-c", str(rcfg), "-d", str(rdata), "run", "--no-send"])
                results[f"r2e {case}"].append(run)
    srv.close()

    def med(key: str) -> Run:
        runs = results[key]
        return Run(
            median([r.wall for r in runs]),
            median([r.cpu for r in runs]),
            max(r.peak_rss_mb for r in runs),
            0,
            "",
            "",
            max(r.peak_pss_mb for r in runs),
        )

    for key, runs in results.items():
        if runs:
            print(med(key).row(key))
    plain, ours = feedparser_cpu(bodies, runs=min(3, a.runs))
    entries = a.feeds * a.items
    print(f"{'single-core parse, feedparser alone':<34} cpu {plain:7.2f} s  ({entries} entries)")
    print(f"{'single-core parse, digest.feeds.parse':<34} cpu {ours:7.2f} s")
    cold, warm = med("digest cold"), med("digest warm")
    print(f"{'daemon poll cycle, nothing new':<34} wall {poll:7.2f} s  (one process polling again)")
    print(f"cold wall / feedparser single-core CPU: {cold.wall / plain:.2f}")
    if results["r2e cold"]:
        print(
            f"speed-up over rss2email: cold {med('r2e cold').wall / cold.wall:.1f}x, "
            f"warm {med('r2e warm').wall / warm.wall:.1f}x, "
            f"daemon poll cycle {med('r2e warm').wall / poll:.1f}x"
        )
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
