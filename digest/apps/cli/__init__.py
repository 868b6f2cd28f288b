"""Command line: thin doors over digest.Digest. Errors become one line and an exit code (the
table is in `digest --help`: common.HELP)."""

from digest.apps.cli import feeds, mail, running, stories, subscribers
from digest.apps.cli.common import accept_config_everywhere, main

__all__ = ["main"]

# every command module above has added its commands to `main`
_ = (feeds, mail, running, stories, subscribers)
accept_config_everywhere(main)
