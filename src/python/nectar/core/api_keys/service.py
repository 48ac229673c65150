"""API keys: shown once, stored as a SHA-256 hash, scoped to one organization.

A key reads `nsk_<organization id>_<secret>`: the organization part lets core scope the lookup
to that tenant before it searches (row-level security stays on for API requests too); the secret
is 256 random bits, so a fast hash is safe to store (as GitHub and Stripe do).
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from nectar.core.access import OrgContext, PermissionDenied
from nectar.core.contract.plans import Feature
from nectar.core.plans import lacking, require
from nectar.schema.models import ApiKey, Organization
from nectar.schema.models.columns import max_length
from nectar.shared.database import scope_session

NAME_MAX = max_length(ApiKey.name)

PREFIX = "nsk_"
LAST_USED_RESOLUTION = timedelta(minutes=1)


@dataclass(frozen=True)
class ApiPrincipal:
    """An API request authenticated by key: which organization, which key."""

    org_id: uuid.UUID
    key_id: uuid.UUID
    role: str = "admin"  # a key acts with admin rights in its organization


def key_hash(token: str) -> str:
    """What api_keys.key_hash stores for `token`."""
    return hashlib.sha256(token.encode()).hexdigest()


def create_key(session: Session, ctx: OrgContext, user_id: uuid.UUID, name: str) -> tuple[ApiKey, str]:
    """Returns the stored key and the full token, which is never retrievable again. Raises
    PermissionDenied, or FeatureNotIncluded when the organization's plan has no API keys."""
    if not ctx.at_least("admin"):
        raise PermissionDenied("Only an admin or owner can create API keys.")
    require(ctx.org, Feature.API_KEYS)
    name = (name or "").strip()
    if not 1 <= len(name) <= NAME_MAX:
        raise ValueError(f"Give the key a name of 1 to {NAME_MAX} characters.")
    token = f"{PREFIX}{ctx.org_id.hex}_{secrets.token_urlsafe(32)}"
    key = ApiKey(
        id=uuid.uuid4(),
        org_id=ctx.org_id,
        name=name,
        prefix=token[:8] + "…" + token[-4:],
        key_hash=key_hash(token),
        created_by=user_id,
    )
    session.add(key)
    session.flush()
    return key, token


def list_keys(session: Session, *, limit: int = 100, offset: int = 0) -> list[ApiKey]:
    return list(
        session.scalars(
            select(ApiKey).order_by(ApiKey.created_at.desc(), ApiKey.id).limit(limit).offset(offset)
        )
    )


def revoke_key(session: Session, ctx: OrgContext, key_id: uuid.UUID) -> ApiKey:
    if not ctx.at_least("admin"):
        raise PermissionDenied("Only an admin or owner can revoke API keys.")
    key = session.get(ApiKey, key_id)
    if key is None:
        raise LookupError("no such key")
    if key.revoked_at is None:
        key.revoked_at = datetime.now(UTC)
    return key


def authenticate(session: Session, token: str) -> ApiPrincipal | None:
    """The principal for a bearer token, with the session scoped to its organization; or None.
    Raises FeatureNotIncluded for a valid key of an organization whose plan no longer includes
    API keys (a downgrade): its keys stay, unused, and work again after an upgrade."""
    if not token.startswith(PREFIX) or len(token) > 200:
        return None
    org_hex, _, secret = token[len(PREFIX) :].partition("_")
    try:
        org_id = uuid.UUID(hex=org_hex)
    except ValueError:
        return None
    if not secret:
        return None
    scope_session(session, org_id=org_id)
    key = session.scalar(
        select(ApiKey).where(ApiKey.key_hash == key_hash(token), ApiKey.revoked_at.is_(None))
    )
    if key is None:
        scope_session(session)
        return None
    org = session.get(Organization, org_id)
    if org is None or org.status != "active":
        scope_session(session)
        return None
    refusal = lacking(org.plan, org.plan_overrides, Feature.API_KEYS)
    if refusal is not None:
        scope_session(session)
        raise refusal
    now = datetime.now(UTC)
    if key.last_used_at is None or now - key.last_used_at > LAST_USED_RESOLUTION:
        key.last_used_at = now
        session.commit()
    return ApiPrincipal(org_id=org_id, key_id=key.id)
