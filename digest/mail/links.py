"""The signed links in every digest: unsubscribe (also the RFC 8058 one-click target), a mailto
unsubscribe, preferences and the digest's web copy, in one place for the send loop and the web
archive. Pure but for the signing key and the subscription's salt (tokens.Signer)."""

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

    def links(self, subscriber_id: int, period: str | None = None, *, salt: str | None = None) -> Links:
        """`period`: the digest's, for its "View in browser" link (None: no such link). `salt`:
        the subscription's, when the caller has it (else the signer looks it up for each link)."""
        base = self.base

        def sign(purpose: str) -> str:
            return self.signer.sign(subscriber_id, purpose, salt)

        unsubscribe = sign("unsubscribe")
        archive = None
        if period and self.public_archive:
            archive = f"{base}/archive/public/{subscriber_id}/{period}"
        elif period:
            archive = f"{base}/archive/{sign('archive')}/{period}"
        return Links(
            unsubscribe=f"{base}/unsubscribe/{unsubscribe}",
            mailto=f"mailto:unsubscribe@{self.domain}?subject={quote('unsubscribe ' + unsubscribe)}",
            preferences=f"{base}/preferences/{sign('preferences')}",
            archive=archive,
        )
