"""One exception hierarchy. Each message names the thing, what went wrong, and the fix.

The CLI turns these into one line and an exit code (see `digest --help`); the daemon into a
log line and a metric. Anything that is not a DigestError is a bug and is never swallowed.
"""

from __future__ import annotations


class DigestError(Exception):
    """Base class: an error a person can act on."""

    exit_code = 1


class ConfigError(DigestError):
    """The configuration file is missing, unreadable or invalid."""

    exit_code = 2


class StorageError(DigestError):
    """The database cannot be opened, migrated or written."""

    exit_code = 3


class LockHeldError(DigestError):
    """Another scheduler holds the lock on this database."""

    exit_code = 4


class FeedError(DigestError):
    """One feed could not be fetched or parsed; never stops a run."""


class TemplateError(DigestError):
    """A digest template is missing or does not render."""

    exit_code = 2


class SubscriberError(DigestError):
    """A subscriber's preferences are not valid (a cadence, zone, topic, CSV row...)."""

    exit_code = 2


class AddressError(SubscriberError):
    """An e-mail address is not valid."""


class DeliveryError(DigestError):
    """A message could not be delivered."""

    def __init__(self, message: str, *, permanent: bool = False, code: int | None = None) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.code = code


class TemporaryDeliveryError(DeliveryError):
    """A failure that may pass (a 4xx reply, a dropped connection): the send loop tries again."""


class TransportSetupError(DigestError):
    """The mail transport cannot be used at all (login refused, TLS failed): stop, blame no subscriber."""


class MailboxError(DigestError):
    """The bounce mailbox cannot be read (no such Maildir, IMAP login refused): nothing is lost,
    its messages are read next time."""
