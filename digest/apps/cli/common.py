"""The `digest` group and what every command shares: the config and service it works on,
output, and how an error becomes one line and an exit code."""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import wraps
from typing import Any, TypeVar

import click
from rich.console import Console

from digest import __version__
from digest.config import LoadedConfig, load_config
from digest.errors import DigestError
from digest.model.settings import parse_duration
from digest.service.api import Digest

F = TypeVar("F", bound=Callable[..., Any])

out = Console(highlight=False, soft_wrap=True)

err = Console(stderr=True, highlight=False, soft_wrap=True)


def fail(message: str, code: int) -> None:
    for line in message.splitlines() or [message]:
        err.print(f"digest: error: {line}", markup=False)
    sys.exit(code)


def warn_base_url(loaded: LoadedConfig) -> None:
    """At the start of the commands whose mail or pages carry links (send, run, daemon, serve)."""
    warning = loaded.config.delivery.base_url_warning()
    if warning:
        err.print(f"digest: warning: {warning}", markup=False)


def handles_errors(fn: F) -> F:
    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except DigestError as exc:
            fail(str(exc), exc.exit_code)
        except KeyboardInterrupt:
            err.print("digest: interrupted")
            sys.exit(130)

    return wrapper  # type: ignore[return-value]


class State:
    """The command's config and service, made on first use and closed when the command ends."""

    def __init__(self, config_path: str | None) -> None:
        self.config_path = config_path
        self._loaded: LoadedConfig | None = None
        self._digest: Digest | None = None

    @property
    def loaded(self) -> LoadedConfig:
        if self._loaded is None:
            self._loaded = load_config(self.config_path)
        return self._loaded

    @property
    def digest(self) -> Digest:
        if self._digest is None:
            self._digest = Digest(self.loaded)
        return self._digest

    def close(self) -> None:
        if self._digest is not None:
            self._digest.close()


pass_state = click.make_pass_decorator(State)

HELP = """Poll news feeds, pick the SCO and Putin–Xi stories, fold them into stories, and mail
digests to subscribers. Start with `digest run --once` (fetch, then send what is due).

\b
Exit codes:
  0  done
  1  done, but the work failed (every feed failed; with --strict, any feed; a check found problems)
  2  usage or configuration error (bad option, invalid feeds.yaml, template or address)
  3  database error (cannot open, migrate or write)
  4  another scheduler holds this database's lock
"""


@click.group(help=HELP, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    envvar="DIGEST_CONFIG",
    help="feeds.yaml to use (default: $DIGEST_CONFIG, ./feeds.yaml, then the built-in one)",
)
@click.version_option(__version__, prog_name="digest")
@click.pass_context
def main(ctx: click.Context, config_path: str | None) -> None:
    ctx.obj = State(config_path)
    ctx.call_on_close(ctx.obj.close)


def fmt_time(t: datetime | None) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if t else "—"


def fmt_age(age: timedelta) -> str:
    """3d, 5h, 40m: the largest unit that fits."""
    seconds = age.total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:,.0f}{unit}"
    return f"{seconds:.0f}s"


# daemon and run --once: the claims keep several schedulers correct; the lock is only asked for
wait_option = click.option(
    "--wait",
    type=float,
    default=None,
    metavar="SECONDS",
    help="be the only scheduler: hold the database's scheduler lock, waiting this long for it",
)


def parse_since(value: str | None, now: datetime) -> datetime | None:
    if not value:
        return None
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}(?:[T ].*)?", value):
        try:
            t = datetime.fromisoformat(value)
        except ValueError:
            raise click.BadParameter(f"{value!r} is not an ISO date; write e.g. 2025-09-01") from None
        return t if t.tzinfo else t.replace(tzinfo=UTC)
    try:
        return now - timedelta(seconds=parse_duration(value))
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def late_config_option(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    state = ctx.find_object(State)
    if value is not None and state is not None:  # parsed before the command runs
        state.config_path, state._loaded = value, None


def accept_config_everywhere(group: click.Group) -> None:
    """`digest status --config x` as well as `digest --config x status`: people type it after."""
    for cmd in group.commands.values():
        if isinstance(cmd, click.Group):
            accept_config_everywhere(cmd)
        elif not any(p.name == "late_config" for p in cmd.params):
            cmd.params.append(
                click.Option(
                    ["--config", "late_config"],
                    type=click.Path(dir_okay=False),
                    expose_value=False,
                    is_eager=True,
                    callback=late_config_option,
                    help="feeds.yaml to use (also accepted before the command)",
                )
            )
