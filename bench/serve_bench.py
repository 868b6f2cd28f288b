#!/usr/bin/env python3
"""`digest serve` under load: requests per second, p50 and p99 at a fixed concurrency.

The bench copies examples/offline into a scratch folder, adds subscribers, runs `digest run
--once` there (fetch, organise, a digest to each subscriber's outbox), then starts `digest serve`
as a user would, in a process of its own on 127.0.0.1, and sends it N requests per page from
C keep-alive connections at once (a plain asyncio client in this process). Pages:

    subscribe   GET /subscribe                   the form (a template, a CSRF cookie; no database)
    archive     GET /archive/{token}             a subscriber's list of sent digests (signed link)
    digest      GET /archive/{token}/{period}    one sent digest as a web page

The machine is shared, so each row also says how busy it was: the server's and the client's CPU
seconds, and the whole machine's busy share of its cores from /proc/stat (the rest of that was
something else running).

    python bench/serve_bench.py [--requests 5000] [--concurrency 50] [--subscribers 50]
                                [--database-url postgresql+psycopg://...] [--pages subscribe,archive]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from common import in_project_env  # noqa: E402

in_project_env()

import httpx  # noqa: E402

from digest.config import load_config  # noqa: E402
from digest.mail.tokens import Signer  # noqa: E402
from digest.storage.store import Store  # noqa: E402

SECRET = "serve-bench-secret"  # noqa: S105 (signs the scratch site's links, nothing else)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def build_site(work: Path, subscribers: int, database_url: str | None) -> Path:
    """The offline example with `subscribers` more readers, each sent one digest."""
    site = work / "site"
    shutil.copytree(ROOT / "examples" / "offline", site)
    cfg = site / "feeds.yaml"
    text = cfg.read_text().replace("secret: offline-example-secret", f"secret: {SECRET}")
    text = text.replace("delivery:\n", "delivery:\n  base_url: http://127.0.0.1\n")
    if database_url:
        text = text.replace("sqlite:///digest.db", f"'{database_url}'")
    readers = "".join(
        f"  - {{email: reader{i}@example.org, topics: [sco, putin-xi], timezone: UTC}}\n"
        for i in range(subscribers)
    )
    cfg.write_text(text.rstrip("\n") + "\n" + readers)
    digest(cfg, "run", "--once")
    return cfg


def digest(cfg: Path, *args: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "digest", "--config", str(cfg), *args],
        check=True,
        stdout=subprocess.DEVNULL,
        cwd=cfg.parent,
    )


def archive_paths(cfg: Path) -> tuple[list[str], list[str]]:
    """Each subscriber's archive list and one sent digest, as the signed links in their mail."""
    loaded = load_config(cfg)
    lists, pages = [], []
    with Store(loaded.database_url, migrate=False) as store:
        salts = store.subscriber_salts([s.id for s in store.list_subscribers() if s.id is not None])
        signer = Signer(SECRET, salts.get)
        for sid in salts:
            token = signer.sign(sid, "archive")
            for row in store.sent_digests(sid, limit=1):
                lists.append(f"/archive/{token}")
                pages.append(f"/archive/{token}/{row['period']}")
    if not lists:
        raise SystemExit("serve_bench: no digest was sent; nothing to put in the archive")
    return lists, pages


def cpu_ticks() -> tuple[int, int]:
    """(busy, total) clock ticks of the whole machine since boot (proc(5), /proc/stat)."""
    with open("/proc/stat") as fh:
        values = [int(v) for v in fh.readline().split()[1:]]
    idle = values[3] + values[4]  # idle, iowait
    return sum(values[:8]) - idle, sum(values[:8])


def tree_cpu(pid: int) -> float:
    """CPU seconds of a process and its children (uvicorn's workers, if any), from /proc."""
    total, todo, tick = 0.0, [pid], os.sysconf("SC_CLK_TCK")
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as fh:
                    todo.extend(int(c) for c in fh.read().split())
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


COLUMNS = (
    "page",
    "requests",
    "failed",
    "requests/s",
    "p50",
    "p99",
    "server CPU",
    "client CPU",
    "machine busy",
)


@dataclass
class Result:
    page: str
    requests: int
    failed: int
    seconds: float
    p50: float
    p99: float
    server_cpu: float
    client_cpu: float
    machine_busy: float  # share of all cores busy during the run, 0..1

    def row(self) -> str:
        return (
            f"| {self.page} | {self.requests} | {self.failed} | **{self.requests / self.seconds:,.0f}** "
            f"| {self.p50 * 1000:.0f} ms | {self.p99 * 1000:.0f} ms | {self.server_cpu:.1f} s "
            f"| {self.client_cpu:.1f} s | {self.machine_busy:.0%} |"
        )


async def one_connection(port: int, paths: list[str], queue: Iterator[int], latencies: list[float]) -> int:
    """Requests over one keep-alive HTTP/1.1 connection, one at a time -> how many failed.
    A plain client, as wrk or ab are: httpx's async client spent 3.7 ms of CPU per request here,
    four times what the subscribe page costs the server, and the bench measures the server."""
    failed = 0
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for i in queue:
            request = f"GET {paths[i % len(paths)]} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n"
            start = time.perf_counter()
            writer.write(request.encode())
            head = await reader.readuntil(b"\r\n\r\n")
            length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
            if length is None:  # every page here has a length (RFC 9112 section 6.3)
                raise SystemExit(f"serve_bench: a response without Content-Length: {head[:200]!r}")
            await reader.readexactly(int(length.group(1)))
            latencies.append(time.perf_counter() - start)
            failed += head[9:12] != b"200"
    finally:
        writer.close()
    return failed


async def hammer(port: int, paths: list[str], n: int, concurrency: int) -> tuple[list[float], int]:
    latencies: list[float] = []
    queue = iter(range(n))  # shared: each connection takes the next request when it is free
    failed = await asyncio.gather(
        *(one_connection(port, paths, queue, latencies) for _ in range(concurrency))
    )
    return latencies, sum(failed)


def measure(page: str, port: int, paths: list[str], n: int, concurrency: int, server: int) -> Result:
    asyncio.run(hammer(port, paths, min(n, 500), concurrency))  # warm: connections, caches, pools
    busy0, total0 = cpu_ticks()
    server0, client0 = tree_cpu(server), time.process_time()
    start = time.perf_counter()
    latencies, failed = asyncio.run(hammer(port, paths, n, concurrency))
    seconds = time.perf_counter() - start
    busy1, total1 = cpu_ticks()
    latencies.sort()
    return Result(
        page,
        n,
        failed,
        seconds,
        latencies[len(latencies) // 2],
        latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
        tree_cpu(server) - server0,
        time.process_time() - client0,
        (busy1 - busy0) / max(1, total1 - total0),
    )


def wait_until_up(base: str, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"serve_bench: digest serve exited with {proc.returncode} before serving")
        try:
            if httpx.get(base + "/subscribe", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"serve_bench: digest serve did not answer on {base} within {timeout:.0f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=5000)
    ap.add_argument("--concurrency", type=int, default=50)
    ap.add_argument("--subscribers", type=int, default=50)
    ap.add_argument(
        "--database-url", help="a PostgreSQL database to fill (default: SQLite in the scratch folder)"
    )
    ap.add_argument("--pages", default="subscribe,archive,digest")
    ap.add_argument("--serve-args", default="", help="more arguments for `digest serve`")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="serve-bench-") as tmp:
        cfg = build_site(Path(tmp), args.subscribers, args.database_url)
        lists, pages = archive_paths(cfg)
        paths = {"subscribe": ["/subscribe"], "archive": lists, "digest": pages}
        port = free_port()
        cmd = [sys.executable, "-m", "digest", "--config", str(cfg), "serve", "--port", str(port)]
        cmd += args.serve_args.split()
        proc = subprocess.Popen(cmd, cwd=cfg.parent, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        base = f"http://127.0.0.1:{port}"
        try:
            wait_until_up(base, proc)
            with open("/proc/loadavg") as fh:
                load = fh.read().split()[:3]
            print(f"load average before: {' '.join(load)}; {os.cpu_count()} cores")
            print("| " + " | ".join(COLUMNS) + " |")
            print("|---" * len(COLUMNS) + "|")
            for page in args.pages.split(","):
                result = measure(page, port, paths[page], args.requests, args.concurrency, proc.pid)
                print(result.row(), flush=True)
        finally:
            proc.terminate()
            _, err = proc.communicate(timeout=30)
            if proc.returncode not in (0, -15):
                print(err.decode(errors="replace")[-2000:], file=sys.stderr)


if __name__ == "__main__":
    main()
