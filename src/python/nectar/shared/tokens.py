"""Signed, expiring tokens for links sent by email (verification, password reset, invitations).

Each purpose has its own salt, so a token made for one cannot be used for another. Single use is
the caller's part: bind the token to state that the action changes (e.g. the password hash).
"""

from __future__ import annotations

import hashlib
from typing import Any

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer


class TokenInvalid(Exception):
    """The token is malformed, forged, expired or already used. `str()` says which, for people."""


def _serializer(secret_key: str, purpose: str) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(secret_key, salt=f"nectar.{purpose}")


def make_token(secret_key: str, purpose: str, payload: dict[str, Any]) -> str:
    return _serializer(secret_key, purpose).dumps(payload)


def read_token(secret_key: str, purpose: str, token: str, max_age_seconds: int) -> dict[str, Any]:
    try:
        return _serializer(secret_key, purpose).loads(token, max_age=max_age_seconds)
    except SignatureExpired:
        raise TokenInvalid("This link has expired. Ask for a new one.") from None
    except BadSignature:
        raise TokenInvalid("This link is not valid. Check that you copied all of it.") from None


def fingerprint(value: str | None) -> str:
    """A short digest of state a token is bound to; when the state changes, the token dies."""
    return hashlib.sha256((value or "").encode()).hexdigest()[:16]
