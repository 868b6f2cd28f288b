"""Who holds a claim, and the clock leases run on.

Sends (store.claim_deliveries) and polls (store.claim_feeds) are claimed by one holder until a
lease runs out (`delivery.lease`), so any number of senders and pollers share one database.
"""

from __future__ import annotations

import os
import secrets
import socket
from datetime import UTC, datetime


def holder_id() -> str:
    """Host, process and a random part (a pid is reused after a restart, a host name by clones)."""
    return f"{socket.gethostname()[:40]}:{os.getpid()}:{secrets.token_hex(4)}"


def wall_clock() -> datetime:
    """Leases run on the real clock, whatever time a run is told it is (`now`: whose digest is due).
    Machines sharing a database need their clocks in step (NTP) to within a small part of a lease."""
    return datetime.now(UTC)
