"""The signed links in a digest (unsubscribe, one-click, preferences, its web copy), in one place
for the send loop and the web archive."""

from __future__ import annotations

from urllib.parse import quote

from digest.config import DeliverySettings
from digest.mail.render import Links, domain_of
from digest.mail.tokens import Signer


def digest_links(
    settings: DeliverySettings,
    signer: Signer,
    subscriber_id: int,
    period: str | None = None,
    *,
    salt: str | None = None,
) -> Links:
    """`period`: the digest's, for its web copy (none: no archive link). `salt`: the
    subscription's, when the caller has it (else the signer looks it up for each link)."""
    base = settings.base_url.rstrip("/")
    unsub = signer.sign(subscriber_id, "unsubscribe", salt)
    if not period:
        archive = None
    elif settings.archive == "public":
        archive = f"{base}/archive/public/{subscriber_id}/{period}"
    else:
        archive = f"{base}/archive/{signer.sign(subscriber_id, 'archive', salt)}/{period}"
    return Links(
        unsubscribe=f"{base}/unsubscribe/{unsub}",
        one_click=f"{base}/unsubscribe/{unsub}",  # RFC 8058 §3.1: the URI the POST goes to
        mailto=f"mailto:unsubscribe@{domain_of(settings.sender)}?subject={quote('unsubscribe ' + unsub)}",
        preferences=f"{base}/preferences/{signer.sign(subscriber_id, 'preferences', salt)}",
        archive=archive,
    )
