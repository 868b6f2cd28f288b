"""Signed tokens for the links in every digest: bound to one subscriber and one purpose."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from itsdangerous import BadSignature, SignatureExpired, URLSafeSerializer, URLSafeTimedSerializer

PURPOSES = ("unsubscribe", "preferences", "archive")


def load_secret(configured: str | None, base_dir: Path) -> str:
    """`delivery.secret` (from the environment), else a key kept beside feeds.yaml, made once."""
    if configured:
        return configured
    path = base_dir / ".digest-secret"
    try:
        return path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        key = secrets.token_urlsafe(32)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(key + "\n")
        return key


class Signer:
    def __init__(self, secret: str) -> None:
        self._secret = secret

    def sign(self, subscriber_id: int, purpose: str) -> str:
        return str(URLSafeSerializer(self._secret, salt=purpose).dumps(subscriber_id))

    def verify(self, token: str, purpose: str) -> int | None:
        try:
            value = URLSafeSerializer(self._secret, salt=purpose).loads(token)
        except BadSignature:
            return None
        return value if isinstance(value, int) else None

    def sign_timed(self, value: int, purpose: str) -> str:
        """A token that expires (confirmation links): verify_timed checks its age."""
        return str(URLSafeTimedSerializer(self._secret, salt=purpose).dumps(value))

    def verify_timed(self, token: str, purpose: str, max_age: float) -> int | None:
        try:
            value = URLSafeTimedSerializer(self._secret, salt=purpose).loads(token, max_age=int(max_age))
        except (BadSignature, SignatureExpired):
            return None
        return value if isinstance(value, int) else None
