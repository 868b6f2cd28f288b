#!/usr/bin/env python3
"""1,000 DSNs and complaints in a Maildir, read by `digest bounces` (issue 15: <= 5 s).

The messages are the real-shaped reports of tests/data/bounces (Postfix, Exim, Gmail-style DSNs,
ARF complaints, an old Exim bounce with no VERP token, an out-of-office reply), each made
distinct by one header as two bounces of two digests are, spread over `--subscribers`
subscribers with their own VERP tokens. Each run: a fresh database and Maildir, then
`python -m digest bounces` as a subprocess (start-up included) timed from start to exit; then
checked: every message moved aside once, one ledger row each, each subscriber's count exactly
its reports'.

    python bench/bounces_bench.py [--n 1000] [--subscribers 500] [--runs 3] [--postgres URL]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import sqlalchemy as sa

from digest.config import load_config
from digest.mail.tokens import Signer, load_secret
from digest.model.subscribers import Subscriber
from digest.storage.store import Store

DATA = Path(__file__).resolve().parent.parent / "tests" / "data" / "bounces"
NOW = datetime(2026, 3, 3, 12, 0, tzinfo=UTC)
# (fixture, share of the messages, what it does to its subscriber)
MIX = [
    ("postfix-hard.eml", 0.20, "hard"),
    ("postfix-delayed.eml", 0.25, "soft"),
    ("exim-dsn.eml", 0.10, "hard"),
    ("gmail-hard.eml", 0.10, "hard"),
    ("arf-abuse.eml", 0.15, "complaint"),
    ("arf-redacted.eml", 0.05, "complaint"),
    ("mangled-dsn.eml", 0.05, "hard"),
    ("exim-plain.eml", 0.05, "soft"),  # no token: found by X-Failed-Recipients' address
    ("vacation.eml", 0.05, None),
]


def build(folder: Path, url: str, n: int, n_subs: int, seed: int) -> dict[int, int]:
    """The config, subscribers and Maildir -> the soft+hard count each subscriber should end with."""
    (folder / "feeds.yaml").write_text(
        f"database: '{url}'\nfeeds: []\n"
        "delivery:\n  secret: bench-secret\n  bounce_address: bounces@digest.example.org\n"
        "  bounce_limit: 1000000\n"
        "bounces:\n  maildir: bounces\n"
    )
    box = folder / "bounces"
    for sub in ("new", "cur", "tmp"):
        (box / sub).mkdir(parents=True)
    loaded = load_config(folder / "feeds.yaml")
    rng = random.Random(seed)
    with Store(loaded.database_url) as store:
        emails = [f"reader{i}@example.org" for i in range(n_subs)]
        store.add_subscribers([Subscriber(email=e) for e in emails], NOW)
        ids = {e: store.list_subscribers(email=e)[0].id or 0 for e in emails}
        salts = store.subscriber_salts(list(ids.values()))
    signer = Signer(load_secret("bench-secret", folder), salts.get)
    templates = {name: (DATA / name).read_bytes() for name, _, _ in MIX}
    expected: Counter[int] = Counter()
    names = rng.choices([m[0] for m in MIX], weights=[m[1] for m in MIX], k=n)
    effect = {m[0]: m[2] for m in MIX}
    for i, name in enumerate(names):
        email = rng.choice(emails)
        sid = ids[email]
        data = templates[name].replace(b"VERP_TOKEN", signer.sign_bounce(sid).encode())
        data = data.replace(b"ann@example.org", email.encode()).replace(b"bo@example.org", email.encode())
        data = data.replace(b"Date: ", f"X-Bench: {i}\nDate: ".encode(), 1)
        (box / "new" / f"{1772540000 + i}.M{i}P1.bench").write_bytes(data)
        if effect[name] in ("hard", "soft"):
            expected[sid] += 1
    return dict(expected)


def check(folder: Path, url: str, n: int, expected: dict[int, int]) -> Counter[str]:
    box = folder / "bounces"
    left = [p for sub in ("new", "cur") for p in (box / sub).iterdir()]
    done = len(list((box / ".processed" / "cur").iterdir())) + len(list((box / ".unknown" / "cur").iterdir()))
    assert not left and done == n, f"{len(left)} left, {done} moved of {n}"
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT outcome, count(*) FROM bounce_reports GROUP BY outcome")).all()
        counts = dict(conn.execute(sa.text("SELECT id, bounces FROM subscribers")).tuples().all())
    engine.dispose()
    outcomes = Counter({o: int(c) for o, c in rows})
    assert sum(outcomes.values()) == n, outcomes
    wrong = {s: (counts.get(s), want) for s, want in expected.items() if counts.get(s) != want}
    assert not wrong, f"bounce counts differ from the reports: {list(wrong.items())[:5]}"
    return outcomes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--subscribers", type=int, default=500)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--postgres", help="also on this PostgreSQL server (a schema of its own per run)")
    args = ap.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    backends = [("sqlite", None)] + ([("postgresql", args.postgres)] if args.postgres else [])
    for backend, pg in backends:
        times = []
        outcomes: Counter[str] = Counter()
        for run in range(args.runs):
            with tempfile.TemporaryDirectory() as tmp:
                folder = Path(tmp)
                schema = None
                if pg is None:
                    url = f"sqlite:///{folder / 'digest.db'}"
                else:
                    schema = f"bench_{uuid.uuid4().hex[:10]}"
                    admin = sa.create_engine(pg)
                    with admin.begin() as conn:
                        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
                    url = sa.engine.make_url(pg).update_query_dict({"options": f"-csearch_path={schema}"})
                    url = url.render_as_string(hide_password=False)
                try:
                    expected = build(folder, url, args.n, args.subscribers, seed=run)
                    cmd = [sys.executable, "-m", "digest", "--config", str(folder / "feeds.yaml"), "bounces"]
                    start = time.perf_counter()
                    done = subprocess.run(cmd, capture_output=True, text=True)
                    elapsed = time.perf_counter() - start
                    assert done.returncode == 0, done.stderr
                    outcomes = check(folder, url, args.n, expected)
                    times.append(elapsed)
                    print(f"{backend} run {run + 1}: {elapsed:.2f} s  {done.stdout.strip()}")
                finally:
                    if schema is not None:
                        with admin.begin() as conn:
                            conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
                        admin.dispose()
        print(
            f"{backend}: {args.n} messages, `digest bounces` median {statistics.median(times):.2f} s "
            f"(min {min(times):.2f}, max {max(times):.2f}); outcomes {dict(sorted(outcomes.items()))}"
        )
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
