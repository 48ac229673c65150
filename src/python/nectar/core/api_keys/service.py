"""API keys: shown once, stored as a SHA-256 hash, scoped to one organization, holding scopes
and, if given, an expiry.

A key reads `nsk_<organization id>_<secret>`: the organization part lets core scope the lookup
to that tenant before it searches (row-level security stays on for API requests too); the secret
is 256 random bits, so a fast hash is safe to store (as GitHub and Stripe do).

Scopes limit what a key may do: `read` (every GET of the API), `workflows:write` (changing
workflows, endpoints, connections and alert rules, and starting, signalling and cancelling runs;
it reads too), `endpoints:call` (calling the organization's endpoints that require a key) and
`admin` (everything, members, invitations and keys included). Keys made before scopes existed
hold `admin`, what every key could do then.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from sqlalchemy import func, or_, select
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
MAX_LIFETIME = timedelta(days=366 * 2)  # an expiry is at most this far off (none: the key never expires)


class Scope(StrEnum):
    READ = "read"
    WORKFLOWS_WRITE = "workflows:write"
    ENDPOINTS_CALL = "endpoints:call"
    ADMIN = "admin"

    @property
    def label(self) -> str:
        """What the scope allows, as the key page offers it."""
        return {
            Scope.READ: "Read everything the API shows",
            Scope.WORKFLOWS_WRITE: "Change workflows, endpoints, connections and alerts; start and cancel runs",
            Scope.ENDPOINTS_CALL: "Call this organization's endpoints that require a key",
            Scope.ADMIN: "Everything, members, invitations and keys included",
        }[self]


# What holding a scope allows besides itself.
_IMPLIED = {Scope.ADMIN: frozenset(Scope), Scope.WORKFLOWS_WRITE: frozenset({Scope.READ})}


def allows(scopes: Iterable[str], needed: Scope) -> bool:
    """Whether a key holding `scopes` may do what needs `needed`."""
    return any(scope == needed or needed in _IMPLIED.get(scope, ()) for scope in scopes)


def checked_scopes(values) -> list[str]:
    """`values` as a key's scopes (known, at least one, each once, in Scope's order); ValueError
    naming what is wrong."""
    if not isinstance(values, list | tuple) or not values:
        raise ValueError(f"Give the key at least one scope: {', '.join(Scope)}.")
    unknown = [str(v)[:40] for v in values if v not in set(Scope)]
    if unknown:
        raise ValueError(f"Unknown scope {unknown[0]!r}; scopes are {', '.join(Scope)}.")
    return [scope.value for scope in Scope if scope in values]


def checked_expiry(expires_at: datetime | None, now: datetime) -> datetime | None:
    """`expires_at` as a key's expiry: in the future and within MAX_LIFETIME; ValueError if not."""
    if expires_at is None:
        return None
    if expires_at.tzinfo is None:
        raise ValueError("Give the expiry with its time zone, e.g. 2027-01-31T00:00:00Z.")
    if not now < expires_at <= now + MAX_LIFETIME:
        raise ValueError(f"A key expires in the future, and within {MAX_LIFETIME.days} days.")
    return expires_at


@dataclass(frozen=True)
class ApiPrincipal:
    """An API request authenticated by key: which organization, which key, and what it may do."""

    org_id: uuid.UUID
    key_id: uuid.UUID
    scopes: tuple[str, ...]
    role: str = "admin"  # a key acts as an admin of its organization, within its scopes


def key_hash(token: str) -> str:
    """What api_keys.key_hash stores for `token`."""
    return hashlib.sha256(token.encode()).hexdigest()


def create_key(
    session: Session,
    ctx: OrgContext,
    user_id: uuid.UUID | None,
    name: str,
    scopes: Iterable[str],
    expires_at: datetime | None = None,
) -> tuple[ApiKey, str]:
    """Returns the stored key and the full token, which is never retrievable again. Raises
    PermissionDenied, FeatureNotIncluded when the organization's plan has no API keys, or
    ValueError for a name, scopes or an expiry it cannot have."""
    if not ctx.at_least("admin"):
        raise PermissionDenied("Only an admin or owner can create API keys.")
    require(ctx.org, Feature.API_KEYS)
    name = (name or "").strip()
    if not 1 <= len(name) <= NAME_MAX:
        raise ValueError(f"Give the key a name of 1 to {NAME_MAX} characters.")
    scopes = checked_scopes(list(scopes))
    expires_at = checked_expiry(expires_at, datetime.now(UTC))
    token = f"{PREFIX}{ctx.org_id.hex}_{secrets.token_urlsafe(32)}"
    key = ApiKey(
        id=uuid.uuid4(),
        org_id=ctx.org_id,
        name=name,
        prefix=token[:8] + "…" + token[-4:],
        key_hash=key_hash(token),
        created_by=user_id,
        scopes=scopes,
        expires_at=expires_at,
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
    """The principal for a bearer token, with the session scoped to its organization; or None
    (unknown, revoked or expired, or its organization suspended). Raises FeatureNotIncluded for a valid key of an organization whose plan no longer includes
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
        select(ApiKey).where(ApiKey.key_hash == key_hash(token), ApiKey.revoked_at.is_(None), usable_now())
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
    return ApiPrincipal(org_id=org_id, key_id=key.id, scopes=tuple(key.scopes))


def usable_now():
    """The condition on api_keys for a key that has not expired."""
    return or_(ApiKey.expires_at.is_(None), ApiKey.expires_at > func.now())
