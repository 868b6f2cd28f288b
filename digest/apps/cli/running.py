"""`digest run --once`, `daemon`, `status`, `serve`: running unattended and seeing how it goes."""

from __future__ import annotations

import errno
import logging
import socket
import sys

import click
from rich.table import Table

from digest.apps.cli.common import (
    State,
    err,
    fmt_time,
    handles_errors,
    main,
    out,
    pass_state,
    wait_option,
    warn_base_url,
)
from digest.apps.cli.feeds import organise_line, print_fetch_summary, run_fetch
from digest.apps.cli.mail import print_send
from digest.errors import ConfigError
from digest.model.records import FetchStatus
from digest.service.api import Digest
from digest.service.fetching import FetchOptions
from digest.storage.lock import SchedulerLock


@main.command()
@click.option("--once", is_flag=True, required=True, help="one run: fetch due feeds, then send due digests")
@click.option("--dry-run", is_flag=True, help="fetch, but send nothing and record no delivery")
@wait_option
@pass_state
@handles_errors
def run(state: State, once: bool, dry_run: bool, wait: float | None) -> None:
    """Fetch the feeds that are due, then send the digests that are due (for cron).

    Safe beside a daemon, `digest send` or another run: feeds and digests are claimed. With
    --wait it holds the scheduler lock instead, and exits 4 if a --wait daemon keeps it that long."""

    loaded = state.loaded
    warn_base_url(loaded)
    _ = loaded.rules
    if wait is None:
        _run_once(state.digest, dry_run)
        return
    with SchedulerLock(loaded.database_url, wait=wait):
        _run_once(state.digest, dry_run)


def _run_once(d: Digest, dry_run: bool) -> None:
    summary = run_fetch(d, FetchOptions(due_only=True), out)
    organised = d.organise()
    reports = d.send_due(dry_run=dry_run)
    print_fetch_summary(summary, out)
    out.print(organise_line(organised))
    failed = print_send(reports)
    feeds_failed = summary.count(FetchStatus.FAILED)
    attempted = len(summary.reports) - summary.count(FetchStatus.DEFERRED)
    if feeds_failed and feeds_failed == attempted:  # as `fetch`: nothing new could come in
        err.print(f"digest: every feed failed ({feeds_failed}); `digest feeds check` shows why", markup=False)
    if failed or (feeds_failed and feeds_failed == attempted):
        sys.exit(1)


@main.command()
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option(
    "--metrics-port",
    type=click.IntRange(1, 65535),
    default=None,
    help="serve Prometheus metrics on 127.0.0.1:PORT",
)
@wait_option
@click.option("--verbose", "-v", is_flag=True, help="debug logging")
@pass_state
@handles_errors
def daemon(
    state: State, log_format: str, metrics_port: int | None, wait: float | None, verbose: bool
) -> None:
    """Run unattended: poll feeds and send digests when due, until SIGTERM or SIGINT.

    Several daemons may share a database: each feed's poll and each digest is claimed by one.
    SIGHUP reloads feeds.yaml (an invalid file is reported and the old one kept). With --wait
    it holds the scheduler lock, and exits 4 if another holder keeps it that long."""
    # a command's own subsystem is imported when it runs: a cron `digest fetch` has no use for
    # the scheduler, the web framework or the server
    from digest.apps.daemon import Daemon, setup_logging

    warn_base_url(state.loaded)
    setup_logging(log_format, logging.DEBUG if verbose else logging.INFO)
    sys.exit(Daemon(state.config_path, metrics_port=metrics_port, wait=wait).run())


@main.command()
@pass_state
@handles_errors
def status(state: State) -> None:
    """The state of things: feeds (failing ones named), subscribers due, last and next sends."""
    st = state.digest.status()
    out.print(
        f"feeds: {st.enabled_feeds} enabled, {len(st.failing)} failing; last poll {fmt_time(st.last_poll)}; "
        f"{st.entries} entries stored",
        markup=False,
    )
    if st.failing:
        table = Table(title="failing feeds")
        for col in ("feed", "errors", "last ok", "next try", "last error"):
            table.add_column(col, overflow="fold")
        for f in st.failing:
            table.add_row(
                f.name, str(f.error_count), fmt_time(f.last_ok), fmt_time(f.next_poll), f.last_error or ""
            )
        out.print(table)
    out.print(
        f"subscribers: {len(st.subscribers)} ({st.count('active')} active, {st.count('bouncing')} bouncing, "
        f"{st.count('complained')} complained); {st.due_now} due now; next send {fmt_time(st.next_send)}",
        markup=False,
    )
    b = st.bounce_reports
    if b:
        out.print(
            f"bounce mailbox: {sum(b.values())} messages read, last {fmt_time(st.last_bounce_report)} "
            f"({b.get('hard', 0)} hard, {b.get('soft', 0)} soft, {b.get('complaint', 0)} complaints, "
            f"{b.get('ignored', 0)} ignored, {b.get('unknown', 0)} unknown)",
            markup=False,
        )
    recent = st.recent
    if recent:
        table = Table(title="last sends")
        for col in ("subscriber", "period", "state", "attempts", "sent"):
            table.add_column(col, no_wrap=True)  # an address folded in two is no use to anyone
        table.add_column("error", overflow="fold")
        for r in recent:
            table.add_row(
                r["email"],
                r["period"],
                r["state"],
                str(r["attempts"]),
                fmt_time(r["sent_at"]),
                (r["last_error"] or "")[:80],
            )
        out.print(table)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(1, 65535), default=8080, show_default=True)
@pass_state
@handles_errors
def serve(state: State, host: str, port: int) -> None:
    """The subscriber pages: subscribe (double opt-in), unsubscribe (one click), preferences, archive.

    Every link in every digest points at delivery.base_url: put this behind it (HTTPS)."""
    import uvicorn  # the server and the app only when serving (see daemon)

    from digest.apps.web import create_app

    loaded = state.loaded
    warn_base_url(loaded)
    # The store is opened (and migrated) here, once, so that a database error is one line; the
    # app uses it for its lifetime. The socket is bound here so that a port in use is one line
    # too (uvicorn logs it and exits 1 after start-up); uvicorn serves on the socket it is given.
    store = state.digest.store
    sock = _listen(host, port)
    # X-Forwarded-For is read by the app, from web.trusted_proxies only: uvicorn's own reading
    # trusts anyone on 127.0.0.1 by default (forwarded_allow_ips), a client could name any address
    app = create_app(loaded, store=store)
    config = uvicorn.Config(app, host=host, port=port, log_level="info", proxy_headers=False)
    uvicorn.Server(config).run(sockets=[sock])


def _listen(host: str, port: int) -> socket.socket:

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigError(f"--host {host}: not an address of this machine ({exc.strerror})") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRNOTAVAIL:
            raise ConfigError(f"--host {host}: not an address of this machine ({exc.strerror})") from None
        raise ConfigError(
            f"--port {port}: cannot listen on {host}:{port} ({exc.strerror or exc}); "
            "stop what holds it, or choose another --port"
        ) from None
    sock.set_inheritable(True)
    return sock
