"""Fetch workers never outlive `digest fetch` (issue 12): kill -9 or SIGTERM mid-fetch, none left."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest

from bench.fetch_kills import GRACE, HOSTS, kill_during_fetch, write_config
from tests.support.feedserver import FeedServer

pytestmark = [
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc"),
    pytest.mark.skipif(
        (os.cpu_count() or 1) < 2, reason="fetch workers are forked only with two cores or more"
    ),
]


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "sigterm"])
def test_no_worker_outlives_a_killed_fetch(tmp_path: Path, sig: signal.Signals):
    with FeedServer(hosts=HOSTS) as server:
        config = write_config(tmp_path, server)
        results = [kill_during_fetch(config, server, sig) for _ in range(2)]
    assert all(r.workers >= 2 for r in results), results  # the workers were there to be killed
    assert [r.alive for r in results] == [0, 0], f"workers alive {GRACE:g} s after the kill: {results}"
