#!/usr/bin/env python3
"""The Atom feeds as a feed reader sees them: `digest serve` on loopback (a real uvicorn).

Copies examples/offline, makes its archive public, fetches and folds its feeds, adds a
subscriber, starts `digest serve` on a free port, then for each topic feed and the subscriber's
feed: GET, parse with feedparser (bozo flag, entries), GET again with If-None-Match (expect 304)
and with If-Modified-Since (expect 304). Prints one line per feed and exits 1 if any check fails.

    python bench/feeds_check.py [--repeats 20]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import feedparser
import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from digest.config import load_config  # noqa: E402
from digest.model.subscribers import Subscriber  # noqa: E402
from digest.service.compose import link_signer  # noqa: E402
from digest.service.fetching import utcnow  # noqa: E402
from digest.storage.store import Store  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=20, help="conditional GETs per feed")
    a = ap.parse_args()
    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        site = Path(tmp) / "site"
        shutil.copytree(ROOT / "examples" / "offline", site)
        cfg = site / "feeds.yaml"
        cfg.write_text(
            cfg.read_text().replace(
                "  secret: offline-example-secret", "  secret: bench-secret\n  archive: public"
            )
        )
        digest = [sys.executable, "-m", "digest", "--config", str(cfg)]
        subprocess.run([*digest, "fetch"], check=True, capture_output=True)
        subprocess.run([*digest, "stories"], check=True, capture_output=True)
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        cfg.write_text(cfg.read_text().replace("  archive: public", f"  archive: public\n  base_url: {base}"))
        loaded = load_config(cfg)
        with Store(loaded.database_url) as store:
            sid, _ = store.add_subscriber(Subscriber("feeds@example.org", topics=("putin-xi",)), utcnow())
            sub = store.subscriber(sid)
            assert sub is not None
            preferences = link_signer(loaded, store).links(sub.id).preferences  # the link in every digest
        server = subprocess.Popen(
            [*digest, "serve", "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            for _ in range(100):
                try:
                    httpx.get(f"{base}/subscribe", timeout=1)
                    break
                except httpx.TransportError:
                    time.sleep(0.1)
            with httpx.Client(base_url=base, timeout=5) as client:
                # the subscriber's feed as they find it: preferences, past digests, the feed link
                archive = re.search(r'href="(/archive/[^"]+)"', client.get(preferences).text)
                assert archive, "no archive link on the preferences page"
                own = re.search(r'href="(/feeds/subscriber/[^"]+)"', client.get(archive.group(1)).text)
                assert own, "no feed link on the archive page"
                paths = ["/feeds/sco.atom", "/feeds/putin-xi.atom", own.group(1)]
                for path in paths:
                    r = client.get(path)
                    parsed = feedparser.parse(r.content)
                    etag, modified = r.headers.get("etag"), r.headers.get("last-modified")
                    by_etag = [
                        client.get(path, headers={"If-None-Match": etag or ""}) for _ in range(a.repeats)
                    ]
                    by_date = client.get(path, headers={"If-Modified-Since": modified or ""})
                    codes = {x.status_code for x in by_etag}
                    ok = (
                        r.status_code == 200
                        and parsed.bozo == 0
                        and parsed.entries
                        and codes == {304}
                        and all(x.headers.get("etag") == etag for x in by_etag)
                        and by_date.status_code == 304
                    )
                    failed |= not ok
                    print(
                        f"{path[:40]:<40} {r.status_code} {len(r.content):6,} bytes, "
                        f"{len(parsed.entries)} entries, bozo {parsed.bozo}; "
                        f"{a.repeats} repeats with ETag: {sorted(codes)} "
                        f"({len(by_etag[0].content)} bytes); If-Modified-Since: {by_date.status_code}"
                        f" -> {'ok' if ok else 'FAILED'}"
                    )
        finally:
            server.terminate()
            server.wait(10)
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
