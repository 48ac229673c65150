"""Signed, expiring tokens for links sent by email (verification, password reset, invitations).

Each purpose has its own salt, so a token made for one cannot be used for another. Single use is
the caller's part: bind the token to state that the action changes (e.g. the password hash).
"""

from __future__ import annotations

import hashlib
import time
from datetime import datetime
from typing import Any

from itsdangerous import BadSignature, SignatureExpired, URLSafeSerializer, URLSafeTimedSerializer


class TokenInvalid(Exception):
    """The token is malformed, forged, expired or already used. `str()` says which, for people."""


class TokenExpired(TokenInvalid):
    """The token is genuine but its time is over (callers that answer 410 Gone tell it apart)."""


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


def make_expiring_token(secret_key: str, purpose: str, payload: dict[str, Any], expires_at: datetime) -> str:
    """A token valid until `expires_at`. Unlike make_token it carries no signing time, so the same
    payload and expiry always give the same token (a workflow run that replays makes it again)."""
    return URLSafeSerializer(secret_key, salt=f"nectar.{purpose}").dumps(
        {**payload, "exp": int(expires_at.timestamp())}
    )


def read_expiring_token(
    secret_key: str, purpose: str, token: str, now: float | None = None
) -> dict[str, Any]:
    """The payload of a token from make_expiring_token; TokenExpired once its time has passed,
    TokenInvalid if it is forged, altered or made for another purpose."""
    try:
        payload = URLSafeSerializer(secret_key, salt=f"nectar.{purpose}").loads(token)
    except BadSignature:
        raise TokenInvalid("This link is not valid. Check that you copied all of it.") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("exp"), int):
        raise TokenInvalid("This link is not valid. Check that you copied all of it.")
    if (time.time() if now is None else now) >= payload["exp"]:
        raise TokenExpired("This link has expired.")
    return payload


def fingerprint(value: str | None) -> str:
    """A short digest of state a token is bound to; when the state changes, the token dies."""
    return hashlib.sha256((value or "").encode()).hexdigest()[:16]
