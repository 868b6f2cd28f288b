"""Read the bounce mailbox once: DSNs and complaints become subscriber statuses.

    source.messages()                       # mailbox.py: a Maildir or an IMAP folder
    | bounces.read_report                   # pure: DSN / ARF / Exim -> hard, soft, complaint
    | Signer.verify_bounce (the VERP token), store.subscriber_ids (the report's addresses)
    | bounces.effects                       # pure: whom it acts on, and how
    | store.record_reports                  # one transaction per batch: ledger rows + effects
    | source.move (processed / unknown)     # only after that commit

A reader killed after the commit and before the moves reads those messages again: their ledger
rows are there, so nothing is counted twice, and they are moved this time. Two readers of one
mailbox (the daemon and `digest bounces`) are as safe: the ledger row is written by one of them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from digest.config import LoadedConfig
from digest.errors import ConfigError
from digest.mail.mailbox import BounceSource, Incoming, make_source
from digest.mail.tokens import Signer, load_secret
from digest.model.bounces import Report, effects, read_report
from digest.storage.store import Store

# Messages per transaction: each batch's moves follow its commit, so a kill repeats at most one
# batch's reading (never its effects). 1,000 single-message transactions cost 3x as long on SQLite.
BATCH = 100


@dataclass
class BounceSummary:
    read: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)  # hard, soft, complaint, ignored, unknown
    already: int = 0  # read before (a kill between commit and move): moved now, counted then
    nobody: int = 0  # a bounce or complaint naming no subscriber of ours
    changed: dict[int, str] = field(default_factory=dict)  # subscriber id -> new status


def process_bounces(
    loaded: LoadedConfig,
    store: Store,
    *,
    now: datetime,
    source: BounceSource | None = None,
    stopping: Callable[[], bool] = lambda: False,
) -> BounceSummary:
    """Read every message waiting in the bounce mailbox once, apply it, move it aside."""
    settings = loaded.config.bounces
    source = source or make_source(settings, loaded.base_dir)
    if source is None:
        raise ConfigError(
            f"{loaded.source}: bounces: no bounce mailbox configured; add bounces.maildir (a Maildir "
            "path) or bounces.imap (host, username, password_env)"
        )
    d = loaded.config.delivery
    salts: dict[int, str] = {}
    signer = Signer(load_secret(d.secret, loaded.base_dir), salts.get)
    summary = BounceSummary()
    batch: list[tuple[Incoming, Report]] = []

    def flush() -> None:
        if not batch:
            return
        reports = [r for _, r in batch]
        # the salts of the subscribers the tokens claim, in one query, then each token checked
        claimed = {i for r in reports for t in r.verp if (i := Signer.bounce_id(t)) is not None}
        salts.update(store.subscriber_salts(sorted(claimed)))
        owners = [_owner(signer, r) for r in reports]
        # a report's own addresses are looked up only when no token of ours names its subscriber
        unnamed = [r for r, owner in zip(reports, owners, strict=True) if owner is None]
        addresses = [b.address for r in unnamed for b in r.bounces if b.address]
        ids = store.subscriber_ids(addresses) if addresses else {}
        judged = [(r, effects(r, owner, ids)) for r, owner in zip(reports, owners, strict=True)]
        recorded = store.record_reports(judged, now, d.bounce_limit)
        for (item, report), (_, effs), fresh in zip(batch, judged, recorded.fresh, strict=True):
            if fresh:
                summary.outcomes[report.outcome] += 1
                summary.nobody += bool(report.bounces) and not effs
            else:
                summary.already += 1
            source.move(item, "unknown" if report.outcome == "unknown" else "processed")
        summary.changed.update(recorded.changed)
        batch.clear()

    source.open()
    try:
        for item in source.messages():
            if stopping():
                break
            summary.read += 1
            batch.append((item, read_report(item.data, d.bounce_address)))
            if len(batch) >= BATCH:
                flush()
        flush()
    finally:
        source.close()
    return summary


def _owner(signer: Signer, report: Report) -> int | None:
    """The subscriber the report's first valid VERP token names."""
    return next((sid for t in report.verp if (sid := signer.verify_bounce(t)) is not None), None)


def summary_line(s: BounceSummary) -> str:
    o = s.outcomes
    line = (
        f"bounces: {s.read} messages read: {o['hard']} hard, {o['soft']} soft, {o['complaint']} "
        f"complaints, {o['ignored']} ignored, {o['unknown']} unknown (moved to unknown)"
    )
    if s.already:
        line += f"; {s.already} read before, moved now"
    if s.nobody:
        line += f"; {s.nobody} named no subscriber"
    statuses = Counter(s.changed.values())
    if statuses:
        line += "; now " + ", ".join(f"{n} {status}" for status, n in sorted(statuses.items()))
    return line
