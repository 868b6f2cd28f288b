"""Prometheus metrics for `digest daemon --metrics-port` (prometheus_client)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

from digest.errors import ConfigError

FEEDS = Counter("digest_feeds_polled_total", "Feeds polled, by result", ["result"])
ENTRIES_NEW = Counter("digest_entries_new_total", "New entries stored")
ENTRIES_SELECTED = Counter("digest_entries_selected_total", "New entries selected by the topic rules")
STORIES_NEW = Counter("digest_stories_new_total", "New stories")
DIGESTS = Counter("digest_digests_total", "Digests, by result", ["result"])
POLL_SECONDS = Histogram("digest_poll_seconds", "Duration of a poll cycle")
SEND_SECONDS = Histogram("digest_send_seconds", "Duration of a send tick")
NEXT_SEND = Gauge("digest_next_send_timestamp_seconds", "When the next digest is due (Unix time)")
FAILING_FEEDS = Gauge("digest_failing_feeds", "Enabled feeds whose last poll failed")
BOUNCE_REPORTS = Counter(
    "digest_bounce_reports_total",
    "Messages read from the bounce mailbox, by outcome (hard, soft, complaint, ignored, unknown)",
    ["outcome"],
)
SUBSCRIBERS = Gauge("digest_subscribers", "Subscribers, by status", ["status"])


def serve(port: int, host: str = "127.0.0.1") -> None:

    try:
        start_http_server(port, addr=host)
    except OSError as exc:  # in use, or a port below 1024 without the right
        raise ConfigError(
            f"--metrics-port {port}: cannot listen on {host}:{port} ({exc.strerror or exc}); "
            "choose a free port, or stop what holds it"
        ) from None
