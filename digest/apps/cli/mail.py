"""`digest send`, `digest preview` and `digest bounces`: digests sent when due, or rendered
without sending; the mail that comes back later."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from digest.apps.cli.common import (
    State,
    handles_errors,
    main,
    out,
    pass_state,
    warn_base_url,
)
from digest.errors import ConfigError, DigestError


def print_send(reports: list[Any]) -> int:
    table = Table(title="send")
    for col in ("subscriber", "period", "result", "stories", "note"):
        table.add_column(col)
    for r in sorted(reports, key=lambda r: r.email):
        style = {
            "sent": "green",
            "failed": "red",
            "bounced": "red",
            "empty": "dim",
            "done": "dim",
            "claimed": "dim",
            "quiet": "dim",
        }.get(r.state, "")
        table.add_row(
            r.email, r.period, f"[{style}]{r.state}[/]" if style else r.state, str(r.stories), r.error or ""
        )
    out.print(table)
    # the usual states always, any other a run produced (quiet, dry-run) when it did
    counts = dict.fromkeys(("sent", "empty", "failed", "bounced", "done", "claimed"), 0)
    for r in reports:
        counts[r.state] = counts.get(r.state, 0) + 1
    out.print(", ".join(f"{v} {k}" for k, v in counts.items()))
    return counts["failed"] + counts["bounced"]


@main.command()
@click.option(
    "--dry-run",
    is_flag=True,
    help="assemble and render for stored subscribers; send nothing, write nothing to the database",
)
@click.option("--to", "only", metavar="EMAIL", help="only this subscriber")
@pass_state
@handles_errors
def send(state: State, dry_run: bool, only: str | None) -> None:
    """Send every digest that is due now (each subscriber and period at most once)."""
    warn_base_url(state.loaded)
    reports = state.digest.send_due(dry_run=dry_run, only=only)
    unstored = state.digest.unstored_config_subscribers() if dry_run else []
    if print_send(reports):
        sys.exit(1)
    if unstored:  # said, so that an empty dry run is not mistaken for "nobody is due"
        out.print(
            f"not in this dry run: {', '.join(unstored)} (in feeds.yaml, stored at the first real send)",
            markup=False,
        )


@main.command()
@pass_state
@handles_errors
def bounces(state: State) -> None:
    """Read the bounce mailbox once (bounces: in feeds.yaml): DSNs and complaints mark subscribers
    bouncing or complained; each message is moved aside, so none is read twice."""
    from digest.service.bounces import summary_line

    out.print(summary_line(state.digest.read_bounces()), markup=False)


PREVIEW_KINDS = {".html": "html", ".htm": "html", ".txt": "text", ".eml": "message"}


@main.command()
@click.option(
    "--subscriber", "email", metavar="EMAIL", help="render for this subscriber (default: the first)"
)
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="write FILE.html (the HTML part), FILE.txt (the text part) or FILE.eml (the message as sent)",
)
@pass_state
@handles_errors
def preview(state: State, email: str | None, output: Path | None) -> None:
    """Render a digest as it would be sent now, without sending or recording anything."""
    kind = None
    if output is not None:
        kind = PREVIEW_KINDS.get(output.suffix.lower())
        if kind is None:
            raise ConfigError(f"--output {output}: end the name in .html, .txt or .eml (what to write)")
        if not output.parent.is_dir():
            raise ConfigError(f"--output {output}: no folder {output.parent}; create it or write elsewhere")
    sub, prepared = state.digest.preview(email, part=kind if kind in ("html", "text") else None)
    rendered = prepared.rendered
    try:
        if output is None:
            sys.stdout.write(f"Subject: {rendered.subject}\n\n{rendered.text}")
        elif kind == "message":
            output.write_bytes(prepared.data)
        elif kind == "html":
            output.write_text(rendered.html or "", encoding="utf-8")
        else:
            output.write_text(rendered.text, encoding="utf-8")
    except OSError as exc:
        raise DigestError(f"--output {output}: cannot write it ({exc.strerror or exc})") from None
    if output is not None:
        out.print(f"wrote {output} ({prepared.digest.count} stories for {sub.email})", markup=False)
