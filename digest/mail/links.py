"""The signed links in every digest: unsubscribe (also the RFC 8058 one-click target), a mailto
unsubscribe, preferences and the digest's web copy. Pure but for the signing key and the
subscription's salt, which the caller supplies (tokens.Signer)."""

from __future__ import annotations

from urllib.parse import quote

from digest.config import DeliverySettings
from digest.mail.render import Links, domain_of
from digest.mail.tokens import Signer


class LinkSigner:
    def __init__(self, settings: DeliverySettings, signer: Signer) -> None:
        self.base = settings.base_url.rstrip("/")
        self.public_archive = settings.archive == "public"
        self.domain = domain_of(settings.sender)
        self.signer = signer

    def links(self, subscriber_id: int, period: str | None = None) -> Links:
        """`period`: the digest's, for its "View in browser" link (None: no such link)."""
        base, sign = self.base, self.signer.sign
        unsubscribe = sign(subscriber_id, "unsubscribe")
        archive = None
        if period and self.public_archive:
            archive = f"{base}/archive/public/{subscriber_id}/{period}"
        elif period:
            archive = f"{base}/archive/{sign(subscriber_id, 'archive')}/{period}"
        return Links(
            unsubscribe=f"{base}/unsubscribe/{unsubscribe}",
            mailto=f"mailto:unsubscribe@{self.domain}?subject={quote('unsubscribe ' + unsubscribe)}",
            preferences=f"{base}/preferences/{sign(subscriber_id, 'preferences')}",
            archive=archive,
        )
