"""Signed tokens for the links in every digest: bound to one subscription and one purpose.

A token signs [subscriber id, the subscription's salt] (store.subscriber_salts): the salt is
random per subscription and renewed when an address subscribes again, and ids are never reused,
so a link mailed to someone who left never acts on whoever holds that id or address later.
Tokens of subscribers from before the salt existed sign the bare id; they are honoured while
that subscription's salt is still "" (schema.subscribers).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from itsdangerous import BadSignature, SignatureExpired, URLSafeSerializer, URLSafeTimedSerializer
from itsdangerous.encoding import base64_encode
from itsdangerous.serializer import Serializer

_BOUNCE_TOKEN = re.compile(r"(\d{1,18})-([0-9a-f]{16})")

SaltOf = Callable[[int], "str | None"]  # a subscription's salt; None: no such subscriber


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


def store_salts(open_store: Callable[[], Any]) -> SaltOf:
    """A SaltOf that asks the store (a page's link checks: one subscriber at a time)."""

    def salt_of(subscriber_id: int) -> str | None:
        with open_store() as store:
            return store.subscriber_salts([subscriber_id]).get(subscriber_id)

    return salt_of


class _LinkSerializer(URLSafeSerializer):
    """itsdangerous's URL-safe serializer without its zlib attempt: a payload is an id and a
    32-character salt, which zlib never shortens (it is kept only when shorter), and each attempt
    costs ~60 us (zlib allocates its state per call), three times a digest. The tokens are what
    URLSafeSerializer writes for an uncompressed payload, and it reads them back."""

    def dump_payload(self, obj: Any) -> bytes:
        return base64_encode(Serializer.dump_payload(self, obj))


class Signer:
    def __init__(self, secret: str, salt_of: SaltOf) -> None:
        self._secret = secret
        self._salt_of = salt_of
        self._serializers: dict[str, URLSafeSerializer] = {}  # one per purpose: a send run signs thousands

    def _serializer(self, purpose: str) -> URLSafeSerializer:
        if purpose not in self._serializers:
            self._serializers[purpose] = _LinkSerializer(self._secret, salt=purpose)
        return self._serializers[purpose]

    def _payload(self, subscriber_id: int, salt: str | None) -> list[object]:
        salt = self._salt_of(subscriber_id) if salt is None else salt
        return [subscriber_id, salt or ""]

    def _owner(self, value: object) -> int | None:
        """The subscriber a verified payload names, if it is still the same subscription."""
        if isinstance(value, int) and not isinstance(value, bool):  # signed before salts existed
            return value if self._salt_of(value) == "" else None
        if not (isinstance(value, list) and len(value) == 2):
            return None
        sid, salt = value
        if not isinstance(sid, int) or not isinstance(salt, str):
            return None
        current = self._salt_of(sid)
        return sid if current is not None and hmac.compare_digest(current, salt) else None

    def sign(self, subscriber_id: int, purpose: str, salt: str | None = None) -> str:
        """`salt`: the subscription's, when the caller has it (else salt_of is asked)."""
        return str(self._serializer(purpose).dumps(self._payload(subscriber_id, salt)))

    def verify(self, token: str, purpose: str) -> int | None:
        try:
            value = self._serializer(purpose).loads(token)
        except BadSignature:
            return None
        return self._owner(value)

    def sign_bounce(self, subscriber_id: int, salt: str | None = None) -> str:
        """The VERP token of a subscriber's return path (bounces+TOKEN@domain): `<id>-<16 hex>`.
        Digits, a hyphen and lower-case hex only: a local part may lose its case on the way back
        (RFC 5321 §2.4), and a forged bounce must not name anyone (64 bits of HMAC-SHA256)."""
        salt = self._salt_of(subscriber_id) if salt is None else salt
        return f"{subscriber_id}-{self._bounce_mac(subscriber_id, salt or '')}"

    def verify_bounce(self, token: str) -> int | None:
        """The subscriber a VERP token names, if it is still the same subscription."""
        m = _BOUNCE_TOKEN.fullmatch(token.lower())
        if m is None:
            return None
        sid = int(m.group(1))
        salt = self._salt_of(sid)
        if salt is None or not hmac.compare_digest(self._bounce_mac(sid, salt), m.group(2)):
            return None
        return sid

    @staticmethod
    def bounce_id(token: str) -> int | None:
        """The subscriber id a VERP token claims, unverified (to read salts in one query)."""
        m = _BOUNCE_TOKEN.fullmatch(token.lower())
        return int(m.group(1)) if m else None

    def _bounce_mac(self, subscriber_id: int, salt: str) -> str:
        message = f"bounce:{subscriber_id}:{salt}".encode()
        return hmac.new(self._secret.encode(), message, hashlib.sha256).hexdigest()[:16]

    def sign_timed(self, value: int, purpose: str) -> str:
        """A token that expires (confirmation links): verify_timed checks its age."""
        return str(URLSafeTimedSerializer(self._secret, salt=purpose).dumps(self._payload(value, None)))

    def verify_timed(self, token: str, purpose: str, max_age: float) -> int | None:
        try:
            value = URLSafeTimedSerializer(self._secret, salt=purpose).loads(token, max_age=int(max_age))
        except (BadSignature, SignatureExpired):
            return None
        return self._owner(value)


class SignUps:
    """The token in a confirmation link: the subscriber row, its updated_at when the link was
    made, and the preferences asked for. Nothing is written to a known address's row before its
    owner confirms, and the stamp makes the link work once (confirming changes updated_at, and so
    does anything done since). Expires after `max_age` seconds."""

    def __init__(self, secret: str, max_age: int) -> None:
        self._serializer = URLSafeTimedSerializer(secret, salt="sign-up")
        self._max_age = max_age

    def make(self, subscriber_id: int, stamp: datetime, asked: dict[str, Any]) -> str:
        return str(self._serializer.dumps({"id": subscriber_id, "stamp": stamp.isoformat(), "asked": asked}))

    def read(self, token: str) -> tuple[int, datetime, dict[str, Any]] | None:
        """(subscriber id, stamp, preferences asked for), or None: forged, garbled or expired."""
        try:
            data = self._serializer.loads(token, max_age=self._max_age)
            return int(data["id"]), datetime.fromisoformat(data["stamp"]), dict(data["asked"])
        except (BadSignature, KeyError, TypeError, ValueError):  # SignatureExpired is a BadSignature
            return None
