"""Command line: thin doors over digest.Digest. Errors become one line and an exit code.

\b
Exit codes:
  0  done
  1  done, but the work failed (every feed failed; with --strict, any feed; a check found problems)
  2  usage or configuration error (bad option, invalid feeds.yaml, template or address)
  3  database error (cannot open, migrate or write)
  4  another scheduler holds this database's lock (--wait)
"""

from digest.apps.cli import feeds, mail, running, stories, subscribers
from digest.apps.cli.common import accept_config_everywhere, main

__all__ = ["main"]

# every command module above has added its commands to `main`
_ = (feeds, mail, running, stories, subscribers)
accept_config_everywhere(main)
