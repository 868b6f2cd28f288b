"""The `digest` command's entry point (and `python -m digest`'s).

For `digest fetch` and `digest run`, the fetch workers are forked first, before the config
(pydantic) and the command line (click) are imported: their own warm-up (httpx, the TLS
context) then runs on the core that would otherwise idle while this process imports (a warm
run of 200 feeds spent its first 0.19 s on one core: bench/RESULTS.md). They are handed to the
command (take_workers) and dismissed if it needs fewer. Every other command goes straight on.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .workers import FetchWorkers

_preforked: FetchWorkers | None = None


def command_of(argv: list[str]) -> str | None:
    """The subcommand in `argv`, past the group's options (`--config PATH` takes a value)."""
    args = iter(argv)
    for arg in args:
        if arg == "--config":
            next(args, None)
        elif not arg.startswith("-"):
            return arg
    return None


def take_workers() -> FetchWorkers | None:
    """The workers forked at start-up, once (None if there are none)."""
    global _preforked
    workers, _preforked = _preforked, None
    return workers


def main() -> None:
    global _preforked
    if command_of(sys.argv[1:]) in ("fetch", "run") and (os.cpu_count() or 1) >= 2:
        from .workers import FetchWorkers

        _preforked = FetchWorkers(os.cpu_count() or 1)
    from .cli import main as cli

    cli()
