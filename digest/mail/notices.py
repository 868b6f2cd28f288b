"""One short mail to one person who is waiting for it (a confirmation link), sent at once.

Not the send loop: no ledger, no batching, and one short try, since someone is looking at a page
until it is done (SMTP down took a sign-up 14.5 s with the send loop's retries).
"""

from __future__ import annotations

import email.utils
import secrets
from datetime import datetime
from pathlib import Path

from digest.config import DeliverySettings
from digest.mail.render import domain_of, plain_message
from digest.mail.transports import make_transport

NOTICE_TIMEOUT = 5.0  # seconds: the longest a visitor waits for the mail server


async def send_notice(
    settings: DeliverySettings, base_dir: Path, *, to: str, subject: str, text: str, tag: str, now: datetime
) -> None:
    """Mail `text` to `to` through the configured transport; raises DigestError when it failed."""
    msg_id = f"<{tag}.{secrets.token_hex(8)}@{domain_of(settings.sender)}>"
    data = plain_message(
        sender=settings.sender, recipient=to, subject=subject, text=text, msg_id=msg_id, date=now
    )
    smtp = settings.smtp.model_copy(
        update={"retries": 0, "timeout": min(settings.smtp.timeout, NOTICE_TIMEOUT)}
    )
    transport = make_transport(settings.model_copy(update={"smtp": smtp}), base_dir)
    await transport.open()
    try:
        await transport.send(email.utils.parseaddr(settings.sender)[1] or settings.sender, to, data, msg_id)
    finally:
        await transport.close()
