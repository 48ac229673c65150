"""Customer accounts seen by staff: lists and details read directly (nectar_admin sees every
tenant); every change goes through core's contract so core's rules apply, and is audited."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Select, Text, cast, func, or_, select
from werkzeug.datastructures import MultiDict

from nectar.admin import audit
from nectar.admin.core_link import core_client
from nectar.admin.listing import Sort, like_pattern, read_choice, read_sort, read_text
from nectar.core.contract import CoreUser
from nectar.schema.models import Membership, Organization, User, UserSession
from nectar.shared.database import db

SORTS = {
    "created": User.created_at,
    "email": User.email,
    "name": User.display_name,
    "last_login": User.last_login_at,
}
DEFAULT_SORT = "-created"


@dataclass(frozen=True)
class UserFilters:
    q: str = ""
    status: str = ""  # "", "active", "inactive"
    verified: str = ""  # "", "yes", "no"
    org: str = ""  # an organization id or slug, as typed
    organization: Organization | None = None

    @property
    def any(self) -> bool:
        return bool(self.q or self.status or self.verified or self.org)


def read_filters(args: MultiDict) -> UserFilters:
    org_text = read_text(args, "org", 100)
    return UserFilters(
        q=read_text(args, "q"),
        status=read_choice(args, "status", ("active", "inactive")),
        verified=read_choice(args, "verified", ("yes", "no")),
        org=org_text,
        organization=find_organization(org_text) if org_text else None,
    )


def find_organization(text: str) -> Organization | None:
    """By id or by slug."""
    try:
        return db.session.get(Organization, uuid.UUID(text))
    except ValueError:
        return db.session.scalar(select(Organization).where(Organization.slug == text.lower()))


def list_statement(filters: UserFilters, sort: Sort) -> Select:
    statement = select(User)
    if filters.q:
        pattern = like_pattern(filters.q)
        # email::text, as the trigram index is built (citext's own ILIKE could not use it).
        statement = statement.where(
            or_(cast(User.email, Text).ilike(pattern), User.display_name.ilike(pattern))
        )
    if filters.status:
        statement = statement.where(User.is_active.is_(filters.status == "active"))
    if filters.verified == "yes":
        statement = statement.where(User.email_verified_at.is_not(None))
    elif filters.verified == "no":
        statement = statement.where(User.email_verified_at.is_(None))
    if filters.org:
        # An organization typed but not found lists nobody, rather than everybody.
        org_id = filters.organization.id if filters.organization else None
        statement = statement.where(
            User.id.in_(select(Membership.user_id).where(Membership.org_id == org_id))
        )
    # id breaks ties in the sort's direction, as each sort's index holds it (models: User).
    return statement.order_by(sort.clause, User.id.desc() if sort.descending else User.id)


def sort_of(args: MultiDict) -> Sort:
    return read_sort(args, SORTS, DEFAULT_SORT)


def organization_counts(user_ids: list[uuid.UUID]) -> dict[uuid.UUID, int]:
    """How many organizations each listed user belongs to (one query for the page)."""
    if not user_ids:
        return {}
    rows = db.session.execute(
        select(Membership.user_id, func.count())
        .where(Membership.user_id.in_(user_ids))
        .group_by(Membership.user_id)
    )
    return {key: count for key, count in rows}


@dataclass(frozen=True)
class UserDetail:
    user: User
    memberships: list[tuple[Membership, Organization]]
    live_sessions: int
    all_sessions: int


def detail(user_id: uuid.UUID) -> UserDetail | None:
    user = db.session.get(User, user_id)
    if user is None:
        return None
    memberships = list(
        db.session.execute(
            select(Membership, Organization)
            .join(Organization, Organization.id == Membership.org_id)
            .where(Membership.user_id == user_id)
            .order_by(Organization.name)
        ).all()
    )
    live, total = db.session.execute(
        select(
            func.count().filter(UserSession.revoked_at.is_(None)),
            func.count(),
        ).where(UserSession.user_id == user_id)
    ).one()
    return UserDetail(user, memberships, live, total)


def snapshot(user: User) -> dict:
    return {
        "email": user.email,
        "display_name": user.display_name,
        "is_active": user.is_active,
        "email_verified": user.email_verified_at is not None,
    }


def _after(account: CoreUser) -> dict:
    return {
        "email": account.email,
        "display_name": account.display_name,
        "is_active": account.is_active,
        "email_verified": account.email_verified,
    }


def _target(user_id: uuid.UUID) -> str:
    return f"user:{user_id}"


# Each write below asks core first (CoreRefused / CoreUnavailable propagate to the view, and
# nothing is recorded), then audits what core did, in the request's session: the view commits.


def create(email: str, display_name: str | None, request_id: str) -> CoreUser:
    """Recorded whenever core answers: also when core replays an earlier answer for this request_id
    (a double submit, or a retry after the first answer was lost), since staff asked either way;
    `outcome` in the row says which."""
    account = core_client().create_user(email=email, display_name=display_name or None, request_id=request_id)
    after = _after(account) | {"outcome": "created" if account.created else "replayed"}
    audit.record("user.created", _target(account.user_id), None, after)
    return account


def update(user: User, email: str, display_name: str) -> CoreUser | None:
    """Sends only what changed; None when nothing did."""
    before = snapshot(user)
    changes = {}
    if email.strip().lower() != user.email.lower():
        changes["email"] = email.strip()
    if (display_name or "").strip() != (user.display_name or ""):
        changes["display_name"] = (display_name or "").strip()
    if not changes:
        return None
    account = core_client().update_user(user.id, **changes)
    audit.record("user.updated", _target(user.id), before, _after(account))
    return account


def deactivate(user: User) -> CoreUser:
    before = snapshot(user)
    account = core_client().deactivate_user(user.id)
    audit.record("user.deactivated", _target(user.id), before, _after(account))
    return account


def reactivate(user: User) -> CoreUser:
    before = snapshot(user)
    account = core_client().reactivate_user(user.id)
    audit.record("user.reactivated", _target(user.id), before, _after(account))
    return account


def send_password_reset(user: User) -> None:
    core_client().send_password_reset(user.id)
    audit.record(
        "user.password_reset_sent",
        _target(user.id),
        None,
        {"email": user.email, "sent_at": datetime.now(UTC)},
    )
